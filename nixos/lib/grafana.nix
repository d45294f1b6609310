# Grafana for RAVE: its settings (grafana.ini as Nix), its datasources and
# its dashboards provider. Plain Nix with no nixpkgs, so the test command
# renders and checks it (tests/nixos-checks, grafana.rs).
#
# The datasources have one definition, grafana/datasources.json, which
# `ravectl up` also writes for a Grafana of your own: Prometheus, whose
# `trace_id` exemplars open the trace in Tempo, and Tempo. Without a Tempo
# (tempoUrl = null) both the Tempo datasource and the exemplar link go.
{ domain ? "localhost"
, # nginx's public HTTPS port; 443 leaves it out of the URL.
  publicPort ? 3002
, httpPort ? 3000
, prometheusUrl ? "http://127.0.0.1:9090"
, tempoUrl ? null
, scrapeInterval ? "15s"
, adminPasswordFile
, secretKeyFile
, # null: Grafana's own logins only. Else the generic OAuth (OIDC) client:
  # { name, clientId, authUrl, tokenUrl, apiUrl, scopes, roleAttributePath,
  #   roleAttributeStrict, allowSignUp, autoLogin, disableLoginForm }.
  oidc ? null
, # Where Grafana reads the client secret (a systemd credential).
  oidcClientSecretFile ? "/run/credentials/grafana.service/oidc-client-secret"
, dashboardsPath ? ../../grafana/dashboards
}:
let
  text = builtins.replaceStrings
    [ "@PROMETHEUS_URL@" "@TEMPO_URL@" "@SCRAPE_INTERVAL@" ]
    [ prometheusUrl (if tempoUrl == null then "" else tempoUrl) scrapeInterval ]
    (builtins.readFile ../../grafana/datasources.json);
  defined = builtins.fromJSON text;
  withoutTempo = ds:
    if ds.type == "prometheus" then
      ds // { jsonData = removeAttrs ds.jsonData [ "exemplarTraceIdDestinations" ]; }
    else ds;
  datasources =
    if tempoUrl != null then defined.datasources
    else map withoutTempo (builtins.filter (ds: ds.type != "tempo") defined.datasources);
  port = if publicPort == 443 then "" else ":${toString publicPort}";
  sso = oidc != null;
in
{
  settings = {
    server = {
      http_addr = "127.0.0.1";
      http_port = httpPort;
      inherit domain;
      # nginx serves Grafana only over HTTPS, under /grafana/.
      root_url = "https://${domain}${port}/grafana/";
      serve_from_sub_path = true;
    };
    security = {
      admin_user = "admin";
      admin_password = "$__file{${adminPasswordFile}}";
      secret_key = "$__file{${secretKeyFile}}";
      cookie_secure = true;
      cookie_samesite = "lax";
      disable_gravatar = true;
    };
    analytics = {
      reporting_enabled = false;
      check_for_updates = false;
    };
    "auth.anonymous".enabled = false;
    auth = {
      disable_login_form = sso && oidc.disableLoginForm;
      oauth_auto_login = sso && oidc.autoLogin;
    };
    "auth.generic_oauth" =
      if !sso then { enabled = false; } else {
        enabled = true;
        inherit (oidc) name;
        client_id = oidc.clientId;
        client_secret = "$__file{${oidcClientSecretFile}}";
        scopes = builtins.concatStringsSep " " oidc.scopes;
        auth_url = oidc.authUrl;
        token_url = oidc.tokenUrl;
        api_url = oidc.apiUrl;
        use_pkce = true;
        allow_sign_up = oidc.allowSignUp;
        role_attribute_path = oidc.roleAttributePath;
        role_attribute_strict = oidc.roleAttributeStrict;
        # Grafana's own admin stays with the admin login, not a claim.
        allow_assign_grafana_admin = false;
      };
  };

  datasources = {
    inherit (defined) apiVersion;
    inherit datasources;
  };

  dashboards = {
    apiVersion = 1;
    providers = [{
      name = "rave";
      orgId = 1;
      folder = "RAVE";
      folderUid = "rave";
      type = "file";
      disableDeletion = true;
      allowUiUpdates = false;
      options.path = dashboardsPath;
    }];
  };
}
