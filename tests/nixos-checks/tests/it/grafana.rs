//! Grafana as the NixOS hosts run it (nixos/lib/grafana.nix, rendered
//! here): its URLs, its one definition of the datasources, its logins.

use serde_json::Value;

use crate::helpers::{nix_eval, repo};

/// `nixos/lib/grafana.nix` with `extra` arguments, one attribute of it.
fn grafana(extra: &str, attribute: &str) -> Value {
    nix_eval(&format!(
        r#"(import ./nixos/lib/grafana.nix {{
            adminPasswordFile = "/run/secrets/grafana/admin-password";
            secretKeyFile = "/run/secrets/grafana/secret-key";
            dashboardsPath = "/nix/store/dashboards";
            {extra}
          }}).{attribute}"#
    ))
}

const OIDC: &str = r#"oidc = {
    name = "SSO";
    clientId = "grafana";
    authUrl = "https://sso.example.org/auth";
    tokenUrl = "https://sso.example.org/token";
    apiUrl = "https://sso.example.org/userinfo";
    scopes = [ "openid" "email" ];
    roleAttributePath = "contains(groups[*], 'ops') && 'Admin' || 'Viewer'";
    roleAttributeStrict = true;
    allowSignUp = false;
    autoLogin = false;
    disableLoginForm = true;
  };"#;

#[test]
fn grafana_s_root_url_is_https_under_grafana_at_the_configured_domain() {
    let server = grafana(r#"domain = "rave.example.org";"#, "settings.server");
    assert_eq!(server["domain"], "rave.example.org");
    assert_eq!(server["root_url"], "https://rave.example.org:3002/grafana/");
    assert_eq!(server["serve_from_sub_path"], true);
    assert_eq!(server["http_addr"], "127.0.0.1", "behind nginx only");
    let standard = grafana(
        r#"domain = "rave.example.org"; publicPort = 443;"#,
        "settings.server.root_url",
    );
    assert_eq!(standard, "https://rave.example.org/grafana/");
    let security = grafana("", "settings.security");
    for key in ["admin_password", "secret_key"] {
        assert!(
            security[key]
                .as_str()
                .unwrap()
                .starts_with("$__file{/run/secrets/"),
            "{key} is read from its file, not written: {security}"
        );
    }
    assert_eq!(security["cookie_secure"], true);
}

#[test]
fn the_prometheus_datasource_s_exemplars_open_their_trace_in_the_tempo_datasource() {
    let provisioned = grafana(r#"tempoUrl = "http://127.0.0.1:3200";"#, "datasources");
    let all = provisioned["datasources"].as_array().unwrap();
    let of_type = |kind: &str| all.iter().find(|d| d["type"] == kind).unwrap();
    let (prometheus, tempo) = (of_type("prometheus"), of_type("tempo"));
    assert_eq!(prometheus["url"], "http://127.0.0.1:9090");
    assert_eq!(tempo["url"], "http://127.0.0.1:3200");
    let link = &prometheus["jsonData"]["exemplarTraceIdDestinations"][0];
    assert_eq!(
        link["name"], "trace_id",
        "the exemplar label the services write"
    );
    assert_eq!(
        link["datasourceUid"], tempo["uid"],
        "an internal link to Tempo"
    );
    assert!(
        link.get("url").is_none(),
        "no link into the reader's own browser"
    );
    // Grafana's step matches Prometheus' scrape interval.
    let config = std::fs::read_to_string(repo().join("prometheus/prometheus.yml")).unwrap();
    let interval = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("scrape_interval: "))
        .unwrap();
    assert_eq!(prometheus["jsonData"]["timeInterval"], interval);
    // Every datasource variable the dashboards have, Grafana has.
    for name in ["project-health", "agent-performance", "system-health"] {
        let text = std::fs::read_to_string(repo().join(format!("grafana/dashboards/{name}.json")))
            .unwrap();
        let dashboard: Value = serde_json::from_str(&text).unwrap();
        for variable in dashboard["templating"]["list"].as_array().unwrap() {
            if variable["type"] == "datasource" {
                let kind = variable["query"].as_str().unwrap();
                assert!(
                    all.iter().any(|d| d["type"] == kind),
                    "{name}: no {kind} datasource is provisioned"
                );
            }
        }
    }
}

#[test]
fn without_tempo_there_is_neither_a_tempo_datasource_nor_a_link_to_one() {
    let provisioned = grafana("", "datasources");
    let all = provisioned["datasources"].as_array().unwrap();
    assert_eq!(all.len(), 1, "{provisioned}");
    assert_eq!(all[0]["type"], "prometheus");
    assert!(
        all[0]["jsonData"]
            .get("exemplarTraceIdDestinations")
            .is_none()
    );
    // What `ravectl up` writes for a Grafana of one's own: the same.
    assert_eq!(
        ravectl::grafana::local_datasources("http://127.0.0.1:9090", "15s").unwrap(),
        provisioned
    );
}

#[test]
fn oidc_logins_take_the_client_secret_from_a_credential_and_the_role_from_a_claim() {
    let oauth = grafana(OIDC, r#"settings."auth.generic_oauth""#);
    assert_eq!(oauth["enabled"], true);
    assert_eq!(oauth["client_id"], "grafana");
    assert_eq!(
        oauth["client_secret"],
        "$__file{/run/credentials/grafana.service/oidc-client-secret}"
    );
    assert_eq!(oauth["auth_url"], "https://sso.example.org/auth");
    assert_eq!(oauth["token_url"], "https://sso.example.org/token");
    assert_eq!(oauth["api_url"], "https://sso.example.org/userinfo");
    assert_eq!(oauth["scopes"], "openid email");
    assert_eq!(oauth["use_pkce"], true);
    assert_eq!(
        oauth["role_attribute_path"],
        "contains(groups[*], 'ops') && 'Admin' || 'Viewer'"
    );
    assert_eq!(oauth["role_attribute_strict"], true);
    assert_eq!(oauth["allow_sign_up"], false);
    assert_eq!(grafana(OIDC, "settings.auth.disable_login_form"), true);
    // The module hands the secret over under the name grafana.nix reads.
    let module = std::fs::read_to_string(repo().join("nixos/modules/observability.nix")).unwrap();
    assert!(
        module.contains(r#""oidc-client-secret:${cfg.grafana.oidc.clientSecretFile}""#),
        "observability.nix loads the credential oidc-client-secret"
    );
    // Off: no OAuth, Grafana's own login form.
    assert_eq!(
        grafana("", r#"settings."auth.generic_oauth".enabled"#),
        false
    );
    assert_eq!(grafana("", "settings.auth.disable_login_form"), false);
}

#[test]
fn grafana_s_nginx_locations_redirect_the_bare_path_and_upgrade_live_s_websocket() {
    let locations = nix_eval("import ./nixos/lib/grafana-location.nix { port = 3000; }");
    let text = locations.as_str().unwrap();
    let block = |start: &str| -> &str {
        let at = text
            .find(start)
            .unwrap_or_else(|| panic!("no {start}:\n{text}"));
        &text[at..at + text[at..].find("\n}").unwrap()]
    };
    assert!(block("location = /grafana {").contains("return 301 /grafana/;"));
    let live = block("location /grafana/api/live/ {");
    for line in [
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection \"upgrade\";",
        "proxy_pass http://127.0.0.1:3000;",
    ] {
        assert!(live.contains(line), "{line} missing:\n{live}");
    }
    for location in [
        "location = /grafana {",
        "location /grafana/ {",
        "location /grafana/api/live/ {",
    ] {
        assert!(
            block(location).contains("Strict-Transport-Security"),
            "{location} keeps the server's headers"
        );
    }
}
