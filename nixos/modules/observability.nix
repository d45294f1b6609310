# services.rave-observability: Prometheus (30 days, exemplars, the repo's
# rules), the Pushgateway, the node/nginx/postgres exporters, Alertmanager,
# Tempo (every service's traces) and Grafana (under /grafana/ on the public
# port, set up by nixos/lib/grafana.nix, optionally with OIDC logins), each
# with a memory limit. Importable on its own (nixosModules.rave-observability).
{ config, lib, pkgs, ... }:
let
  cfg = config.services.rave-observability;
  rules = import ../lib/rules.nix { inherit (cfg) runbookBaseUrl; };
  rave = config.services.rave;
  grafana = import ../lib/grafana.nix {
    inherit (cfg.grafana) domain adminPasswordFile secretKeyFile;
    publicPort = rave.nginx.port;
    tempoUrl = if cfg.tempo.enable then "http://${loopback}:3200" else null;
    oidc = if cfg.grafana.oidc.enable then cfg.grafana.oidc else null;
  };
  inherit (lib) mkOption mkEnableOption mkIf types;
  loopback = "127.0.0.1";
in
{
  options.services.rave-observability = {
    enable = mkEnableOption "RAVE's Prometheus, Pushgateway, exporters and Grafana";
    retention = mkOption { type = types.str; default = "30d"; description = "How long Prometheus keeps samples."; };
    runbookBaseUrl = mkOption {
      type = types.str;
      default = "file://${rave.package}/share/doc/rave/runbook.md";
      defaultText = lib.literalExpression ''"file://''${config.services.rave.package}/share/doc/rave/runbook.md"'';
      example = "https://git.example.org/ops/rave/-/blob/main/docs/runbook.md";
      description = ''
        Where the alerts' runbook links point (docs/runbook.md, without `#`):
        Alertmanager's notifications and Grafana carry them. The default is
        the copy in the package, which opens only on this machine; set your
        wiki's or repository's URL.
      '';
    };
    alerting = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Run Alertmanager (routing and inhibition from
          prometheus/alertmanager/routing.json), the alert inbox every alert
          reaches (`journalctl -u rave-alert-inbox`), and the blackbox
          exporter probing the public HTTPS endpoint.
        '';
      };
      webhookUrl = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Also send every alert to this webhook (a pager's or chat relay's incoming webhook).";
      };
      email = mkOption {
        type = types.nullOr (types.submodule {
          options = {
            to = mkOption { type = types.str; description = "Where alerts are mailed."; };
            from = mkOption { type = types.str; default = "rave-alerts@${config.networking.hostName}"; defaultText = lib.literalExpression ''"rave-alerts@''${config.networking.hostName}"''; description = "The sender address."; };
            smarthost = mkOption { type = types.str; example = "smtp.example.org:587"; description = "SMTP server, host:port (TLS required)."; };
            username = mkOption { type = types.nullOr types.str; default = null; description = "SMTP user, if the server wants one."; };
            passwordFile = mkOption {
              type = types.nullOr (types.strMatching "/.+");
              default = null;
              description = "File with the SMTP password (no trailing newline), e.g. a sops secret; handed to Alertmanager as a credential.";
            };
          };
        });
        default = null;
        description = "Also mail every alert.";
      };
      asTasks = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Also send critical and warning alerts to RAVE's own ingest
          (`/hooks/alertmanager`, bearer token `tokenFile`): firing alerts
          become `sre` tasks for an agent. People get every alert either way.
        '';
      };
      tokenFile = mkOption {
        type = types.strMatching "/.+";
        description = "The bearer token Alertmanager presents to ingest's alertmanager source.";
      };
      probeUrl = mkOption {
        type = types.str;
        default = "https://localhost:${toString rave.nginx.port}/healthz";
        defaultText = lib.literalExpression ''"https://localhost:''${toString config.services.rave.nginx.port}/healthz"'';
        example = "https://hooks.example.org:3002/healthz";
        description = ''
          What the blackbox exporter probes: the public endpoint under the
          name its certificate carries (RaveHttpsProbeFailing,
          RaveTlsCertificateExpiring). The default suits the self-signed
          certificate of trial images; set your public name with a real one.
        '';
      };
      probeCaFile = mkOption {
        type = types.nullOr types.str;
        default = rave.tls.certificateFile;
        defaultText = lib.literalExpression "config.services.rave.tls.certificateFile";
        description = "CA (or the certificate itself) the probe trusts; null: the system's CAs.";
      };
    };
    grafana = {
      enable = mkOption { type = types.bool; default = true; description = "Run Grafana with RAVE's three dashboards."; };
      adminPasswordFile = mkOption {
        type = types.strMatching "/.+";
        description = "File with Grafana's admin password; readable by the grafana user.";
      };
      secretKeyFile = mkOption {
        type = types.strMatching "/.+";
        description = "File with Grafana's secret key (signs cookies, encrypts datasource secrets).";
      };
      domain = mkOption {
        type = types.str;
        default = "localhost";
        example = "rave.example.org";
        description = ''
          The public name people open Grafana at: its root URL is
          `https://<domain>:<services.rave.nginx.port>/grafana/` (the port is
          left out for 443), which OIDC redirects and links use.
        '';
      };
      oidc = {
        enable = mkEnableOption "logins through an OpenID Connect provider (Grafana's generic OAuth)";
        name = mkOption { type = types.str; default = "SSO"; description = "The login button's label."; };
        issuer = mkOption {
          type = types.str;
          example = "https://sso.example.org/realms/ops";
          description = "The provider's issuer URL; the endpoints below default to Keycloak's layout under it.";
        };
        clientId = mkOption { type = types.str; description = "The client id registered for this Grafana (redirect URI: the root URL + `login/generic_oauth`)."; };
        clientSecretFile = mkOption {
          type = types.strMatching "/.+";
          description = "File with the client secret (a sops secret by default); handed to Grafana as a credential.";
        };
        authUrl = mkOption {
          type = types.str;
          default = "${cfg.grafana.oidc.issuer}/protocol/openid-connect/auth";
          defaultText = lib.literalExpression ''"''${issuer}/protocol/openid-connect/auth"'';
          description = "`authorization_endpoint` of the provider's `/.well-known/openid-configuration`.";
        };
        tokenUrl = mkOption {
          type = types.str;
          default = "${cfg.grafana.oidc.issuer}/protocol/openid-connect/token";
          defaultText = lib.literalExpression ''"''${issuer}/protocol/openid-connect/token"'';
          description = "`token_endpoint` of the provider's discovery document.";
        };
        apiUrl = mkOption {
          type = types.str;
          default = "${cfg.grafana.oidc.issuer}/protocol/openid-connect/userinfo";
          defaultText = lib.literalExpression ''"''${issuer}/protocol/openid-connect/userinfo"'';
          description = "`userinfo_endpoint` of the provider's discovery document.";
        };
        scopes = mkOption { type = types.listOf types.str; default = [ "openid" "email" "profile" ]; description = "Scopes requested."; };
        roleAttributePath = mkOption {
          type = types.str;
          default = "contains(groups[*], 'rave-admins') && 'Admin' || contains(groups[*], 'rave-editors') && 'Editor' || 'Viewer'";
          description = "JMESPath over the ID token or userinfo claims giving the Grafana role (Admin, Editor, Viewer).";
        };
        roleAttributeStrict = mkOption { type = types.bool; default = false; description = "Refuse a login whose claims map to no role (instead of Viewer)."; };
        allowSignUp = mkOption { type = types.bool; default = true; description = "Create a Grafana user at a person's first login."; };
        autoLogin = mkOption { type = types.bool; default = false; description = "Send people straight to the provider, without Grafana's login page."; };
        disableLoginForm = mkOption { type = types.bool; default = false; description = "Hide the user and password form (the admin login stays possible through the API)."; };
      };
    };
    tempo = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Run Grafana Tempo on loopback: every RAVE service exports its spans
          to it (services.rave.otlpEndpoint), Grafana opens them by trace id
          or task id, and `ravectl trace TASK_ID` reads them.
        '';
      };
      retention = mkOption { type = types.str; default = "336h"; description = "How long Tempo keeps traces."; };
    };
  };

  config = mkIf cfg.enable {
    assertions = map
      (path: {
        assertion = !lib.hasPrefix "${builtins.storeDir}/" path;
        message = "services.rave-observability: the secret ${path} is in the Nix store.";
      })
      (lib.optionals cfg.grafana.enable ([ cfg.grafana.adminPasswordFile cfg.grafana.secretKeyFile ]
        ++ lib.optional cfg.grafana.oidc.enable cfg.grafana.oidc.clientSecretFile));

    services.prometheus = {
      enable = true;
      listenAddress = loopback;
      port = 9090;
      retentionTime = cfg.retention;
      extraFlags = [ "--enable-feature=exemplar-storage" ];
      globalConfig = {
        scrape_interval = "15s";
        evaluation_interval = "15s";
      };
      ruleFiles = [
        (pkgs.writeText "rave-alerts.yml" rules.alerts)
        ../../prometheus/rules/rave-recording.yml
      ];
      scrapeConfigs = import ../lib/prometheus.nix {
        ports = {
          node = config.services.prometheus.exporters.node.port;
          nginx = config.services.prometheus.exporters.nginx.port;
          postgres = config.services.prometheus.exporters.postgres.port;
          ingest = rave.ingest.port;
          dedup-store = rave.dedup-store.port;
          task-dispatcher = rave.task-dispatcher.port;
          agent-reporter = rave.agent-reporter.port;
        };
        # Every replica is a target.
        replicas = lib.genAttrs [ "ingest" "dedup-store" "task-dispatcher" "agent-reporter" ]
          (name: rave.${name}.replicas);
        inherit (rave) replicaPortStep;
        publicHealthz = cfg.alerting.probeUrl;
      };

      pushgateway = {
        enable = true;
        web.listen-address = "${loopback}:9091";
      };

      exporters = {
        node = {
          enable = true;
          listenAddress = loopback;
          port = 9100;
          enabledCollectors = [ "systemd" ];
        };
        nginx = {
          enable = true;
          listenAddress = loopback;
          port = 9113;
          scrapeUri = "http://${loopback}:${toString rave.nginx.statusPort}/stub_status";
        };
        postgres = {
          enable = true;
          listenAddress = loopback;
          port = 9187;
          runAsLocalSuperUser = true;
        };
      };
    };

    # Alerting: Alertmanager (its secrets as credentials: it runs as a
    # DynamicUser), the inbox, the HTTPS probe.
    services.prometheus.alertmanagers = mkIf cfg.alerting.enable [{
      static_configs = [{ targets = [ "${loopback}:9093" ]; }];
    }];
    services.prometheus.alertmanager = mkIf cfg.alerting.enable {
      enable = true;
      listenAddress = loopback;
      port = 9093;
      webExternalUrl = "http://${loopback}:9093";
      configuration = import ../lib/alertmanager.nix {
        inherit (cfg.alerting) webhookUrl asTasks;
        email = if cfg.alerting.email == null then null else
        cfg.alerting.email // { passwordFile = "/run/credentials/alertmanager.service/smtp-password"; };
        publicUrl = "https://localhost:${toString rave.nginx.port}";
        tokenFile = "/run/credentials/alertmanager.service/rave-token";
        caFile = rave.tls.certificateFile;
      };
    };
    systemd.services.alertmanager.serviceConfig = mkIf cfg.alerting.enable {
      LoadCredential = lib.optional cfg.alerting.asTasks "rave-token:${cfg.alerting.tokenFile}"
        ++ lib.optional (cfg.alerting.email != null && cfg.alerting.email.passwordFile != null)
        "smtp-password:${cfg.alerting.email.passwordFile}";
      MemoryMax = "128M";
      CPUQuota = "25%";
    };
    systemd.services.rave-alert-inbox = mkIf cfg.alerting.enable {
      description = "RAVE's alert inbox: every alert, for people";
      wantedBy = [ "multi-user.target" ];
      before = [ "alertmanager.service" ];
      serviceConfig = {
        ExecStart = "${rave.package}/bin/ravectl alert-inbox --port 9097 --log /var/lib/rave-alert-inbox/alerts.jsonl";
        DynamicUser = true;
        StateDirectory = "rave-alert-inbox";
        Restart = "always";
        MemoryMax = "64M";
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateDevices = true;
        NoNewPrivileges = true;
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" ];
        IPAddressDeny = "any";
        IPAddressAllow = "localhost";
      };
    };
    services.prometheus.exporters.blackbox = mkIf cfg.alerting.enable {
      enable = true;
      listenAddress = loopback;
      port = 9115;
      configFile = pkgs.writeText "rave-blackbox.yml"
        (builtins.toJSON (import ../lib/blackbox.nix { caFile = cfg.alerting.probeCaFile; }));
      # The check reads the CA file, which exists only on the host.
      enableConfigCheck = false;
    };
    services.rave.ingest.sources.alertmanager = mkIf (cfg.alerting.enable && cfg.alerting.asTasks) {
      kind = "alertmanager";
      tokenFiles = [ cfg.alerting.tokenFile ];
    };
    services.rave.task-dispatcher.routes = mkIf (cfg.alerting.enable && cfg.alerting.asTasks)
      (lib.mkBefore [{ kind = "sre"; source = "alertmanager"; event_types = [ "alert.firing" ]; }]);

    # The seed's limits for the observability stack.
    systemd.services.prometheus.serviceConfig = { MemoryMax = "512M"; CPUQuota = "50%"; };
    systemd.services.pushgateway.serviceConfig = { MemoryMax = "128M"; CPUQuota = "25%"; };
    systemd.services.grafana.serviceConfig = mkIf cfg.grafana.enable {
      MemoryMax = "256M";
      CPUQuota = "25%";
      LoadCredential = lib.optional cfg.grafana.oidc.enable "oidc-client-secret:${cfg.grafana.oidc.clientSecretFile}";
    };

    services.grafana = mkIf cfg.grafana.enable {
      enable = true;
      settings = grafana.settings;
      provision = {
        enable = true;
        datasources.settings = grafana.datasources;
        dashboards.settings = grafana.dashboards;
      };
    };

    # Traces: Tempo on loopback, OTLP/HTTP in, Grafana's API out.
    services.tempo = mkIf cfg.tempo.enable {
      enable = true;
      settings = {
        server = {
          http_listen_address = loopback;
          http_listen_port = 3200;
          grpc_listen_address = loopback;
          grpc_listen_port = 9096;
        };
        distributor.receivers.otlp.protocols.http.endpoint = "${loopback}:4318";
        # One process on loopback: its rings stay in memory, each member
        # at 127.0.0.1 (Tempo otherwise looks for eth0/en0 and may not
        # start), and memberlist gossips on loopback only.
        ingester.lifecycler = {
          address = loopback;
          ring = { kvstore.store = "inmemory"; replication_factor = 1; };
        };
        distributor.ring.instance_addr = loopback;
        compactor.ring.instance_addr = loopback;
        metrics_generator.ring.instance_addr = loopback;
        memberlist.bind_addr = [ loopback ];
        storage.trace = {
          backend = "local";
          local.path = "/var/lib/tempo/blocks";
          wal.path = "/var/lib/tempo/wal";
        };
        compactor.compaction.block_retention = cfg.tempo.retention;
        usage_report.reporting_enabled = false;
      };
    };
    systemd.services.tempo.serviceConfig = mkIf cfg.tempo.enable { MemoryMax = "256M"; CPUQuota = "25%"; };
    services.rave.otlpEndpoint = mkIf cfg.tempo.enable (lib.mkDefault "http://${loopback}:4318/v1/traces");

    # Grafana behind the public port.
    services.rave.nginx.extraLocations = mkIf cfg.grafana.enable (import ../lib/grafana-location.nix { port = 3000; });
  };
}
