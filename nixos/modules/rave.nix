# services.rave: the four RAVE services, their PostgreSQL databases and the
# nginx front door on 3002. Importable on its own (nixosModules.rave).
{ config, lib, pkgs, ... }:
let
  cfg = config.services.rave;
  inherit (lib) mkOption mkEnableOption mkIf types;
  settingsFormat = pkgs.formats.toml { };
  names = [ "ingest" "dedup-store" "task-dispatcher" "agent-reporter" ];
  enabled = builtins.filter (name: cfg.${name}.enable) names;

  defs = import ../lib/services.nix {
    database = {
      inherit (cfg.database) host port sslmode passwordFiles;
      sslrootcert = cfg.database.sslRootCertFile;
    };
    ports = lib.genAttrs names (name: cfg.${name}.port);
    replicas = lib.genAttrs names (name: cfg.${name}.replicas);
    inherit (cfg) replicaPortStep;
    sources = lib.mapAttrs
      (_: s: { inherit (s) kind secretFiles tokenFiles requireSignature hmac timestampToleranceSecs; })
      cfg.ingest.sources;
    agents = lib.mapAttrs (_: a: { inherit (a) kinds tokenSha256; }) cfg.agents;
    inherit (cfg) agentsFile relayTokenFile ingestTokenFile otlpEndpoint;
    inherit (cfg.task-dispatcher) operatorTokenFiles;
    reconcile = cfg.dedup-store.reconcile;
    routes = cfg.task-dispatcher.routes ++ [{ kind = "webhook"; }];
    pushgatewayUrl = cfg.agent-reporter.pushgatewayUrl;
  };

  # A secret is a path outside the Nix store, read by systemd at start.
  secretPath = types.strMatching "/.+";
  secretFiles = [ cfg.relayTokenFile cfg.ingestTokenFile cfg.tls.keyFile ]
    ++ lib.optional (cfg.agentsFile != null) cfg.agentsFile
    ++ cfg.task-dispatcher.operatorTokenFiles
    ++ lib.attrValues cfg.database.passwordFiles
    ++ lib.concatMap (s: s.secretFiles ++ s.tokenFiles) (lib.attrValues cfg.ingest.sources)
    ++ map (r: r.tokenFile) (lib.attrValues cfg.dedup-store.reconcile);

  # One file per replica (store path names allow no `@`).
  configFile = name: instance: settingsFormat.generate
    "${lib.replaceStrings [ "@" ] [ "-" ] instance.name}.toml"
    (lib.recursiveUpdate instance.settings cfg.${name}.settings);

  serviceOptions = name: default: {
    enable = mkEnableOption "RAVE's ${name}" // { default = cfg.enable; defaultText = lib.literalExpression "config.services.rave.enable"; };
    package = mkOption {
      type = types.package;
      default = cfg.package;
      defaultText = lib.literalExpression "config.services.rave.package";
      description = "The package providing `bin/${name}`.";
    };
    port = mkOption {
      type = types.port;
      inherit default;
      description = "Port ${name} (its first replica) listens on, on loopback.";
    };
    replicas = mkOption {
      type = types.ints.between 1 16;
      default = 1;
      description = ''
        Replicas of ${name}, all over the one database. One runs as
        `rave-${name}.service`; several as `rave-${name}@1.service`,
        `rave-${name}@2.service`, ..., replica k on `port` + (k - 1) ×
        `services.rave.replicaPortStep`. nginx and Prometheus follow.
      '';
    };
    settings = mkOption {
      type = types.submodule { freeformType = settingsFormat.type; };
      default = { };
      description = ''
        Settings merged over the module's own (nixos/lib/services.nix) and
        rendered to ${name}'s TOML; see services/${name}/config/default.toml.
        Never put secrets here: they would land in the Nix store.
      '';
    };
    memoryMax = mkOption { type = types.str; default = "256M"; description = "MemoryMax= of the unit."; };
    cpuQuota = mkOption { type = types.str; default = "50%"; description = "CPUQuota= of the unit."; };
  };

  unitFor = name: instance:
    let
      def = defs.${name} // instance;
      svc = cfg.${name};
    in
    {
      description = "RAVE ${instance.name}";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ]
        ++ lib.optional (def.database != null) "postgresql.service"
        ++ lib.optionals (name == "ingest") (map (i: "${i.unit}.service") defs.dedup-store.instances)
        ++ [ "${instance.unit}.socket" ];
      requires = lib.optional (def.database != null && cfg.database.createLocally) "postgresql.service"
        ++ [ "${instance.unit}.socket" ];
      # A changed unit is restarted in one step, its socket left open (with
      # stopIfChanged, switch-to-configuration would stop the socket too and
      # refuse connections until it is started again).
      stopIfChanged = false;
      # Replicas after the first are restarted in turn by
      # rave-<name>-rolling.service, never together.
      restartIfChanged = instance.index == 1;
      serviceConfig = import ../lib/unit.nix {
        inherit def;
        execStart = "${svc.package}/bin/${name} --config ${configFile name instance}";
        execReload =
          if builtins.elem name [ "ingest" "task-dispatcher" ]
          then "${pkgs.coreutils}/bin/kill -HUP $MAINPID" else null;
        allowedAddresses = cfg.allowedAddresses;
        inherit (svc) memoryMax cpuQuota;
      };
    };
  # The listening socket of a replica, held by systemd (not the service), so
  # a restart refuses no connection.
  socketFor = instance: {
    description = "RAVE ${instance.name}'s listening socket";
    wantedBy = [ "sockets.target" ];
    listenStreams = [ "127.0.0.1:${toString instance.port}" ];
  };

  # After a switch that changed them, replicas 2..n restart one at a time,
  # each serving (READY=1) before the next stops; replica 1 restarts in the
  # switch itself, before this runs. At boot it only records the generation.
  rollingFor = name:
    let
      rest = builtins.tail defs.${name}.instances;
      triggers = [ cfg.${name}.package ] ++ map (i: configFile name i) rest;
      generation = builtins.hashString "sha256" (toString triggers);
    in
    {
      description = "RAVE ${name}: restart replicas 2..n in turn after a switch";
      wantedBy = [ "multi-user.target" ];
      after = [ "${(builtins.head defs.${name}.instances).unit}.service" ];
      restartTriggers = triggers;
      path = [ config.systemd.package pkgs.coreutils ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      script = ''
        mark=/run/rave-rolling/${name}
        mkdir -p /run/rave-rolling
        if [ -e "$mark" ] && [ "$(cat "$mark")" != "${generation}" ]; then
          for unit in ${toString (map (i: "${i.unit}.service") rest)}; do
            # Blocks until the new process reports READY=1.
            systemctl restart "$unit"
          done
        fi
        echo "${generation}" > "$mark"
      '';
    };
in
{
  options.services.rave = {
    enable = mkEnableOption "RAVE, the webhook-to-agent pipeline";
    package = mkOption {
      type = types.package;
      description = "The RAVE workspace package (all service binaries and ravectl).";
    };

    replicaPortStep = mkOption {
      type = types.ints.between 1 1000;
      default = 100;
      description = "Replica k of a service listens on its port + (k - 1) × this.";
    };

    ingest = serviceOptions "ingest" 3001 // {
      sources = mkOption {
        description = "Webhook senders: /hooks/<name> on the public port.";
        default = { };
        type = types.attrsOf (types.submodule {
          options = {
            kind = mkOption {
              type = types.enum [
                "github"
                "gitlab"
                "standard"
                "alertmanager"
                "hmac"
                "gitea"
                "forgejo"
                "bitbucket"
                "stripe"
                "slack"
                "shopify"
                "linear"
                "sentry"
                "pagerduty"
                "jira"
              ];
              description = "The sender's scheme: its own kind, a provider's preset, or `hmac` with `hmac` below (docs/api.md).";
            };
            hmac = mkOption {
              type = types.nullOr (types.attrsOf (types.oneOf [ types.str (types.listOf types.str) (types.attrsOf types.str) ]));
              default = null;
              example = lib.literalExpression ''{ signature_headers = [ "acme-signature" ]; signature_prefix = "sha256="; delivery_id = [ "header:acme-delivery" ]; }'';
              description = "kind = hmac only: the declared scheme, `[sources.NAME.hmac]` of ingest's settings (docs/api.md, \"Declared HMAC sources\").";
            };
            timestampToleranceSecs = mkOption {
              type = types.nullOr types.ints.unsigned;
              default = null;
              description = "Seconds a signed timestamp may be off, for this source (default: ingest's `verification.timestamp_tolerance_secs`).";
            };
            secretFiles = mkOption {
              type = types.listOf secretPath;
              default = [ ];
              description = "Signing secrets, one per file; several during a rotation.";
            };
            tokenFiles = mkOption {
              type = types.listOf secretPath;
              default = [ ];
              description = "gitlab: `X-Gitlab-Token` values, for GitLab before 19; alertmanager: the bearer tokens Alertmanager sends.";
            };
            requireSignature = mkOption {
              type = types.bool;
              default = false;
              description = "gitlab only: refuse requests without `webhook-signature`.";
            };
          };
        });
      };
    };
    dedup-store = serviceOptions "dedup-store" 3010 // {
      reconcile = mkOption {
        description = ''
          Sources whose sender's delivery log dedup-store reads, to have what
          RAVE missed redelivered (docs/deploy.md, "Never miss a delivery").
          The API's addresses (and a non-local DNS server) go in
          allowedAddresses; the schedule is `settings.reconcile`.
        '';
        default = { };
        example = { github = { provider = "github"; apiUrl = "https://api.github.com"; hookOwner = "acme/app"; hookId = 123456; tokenFile = "/run/secrets/rave/github-api-token"; }; };
        type = types.attrsOf (types.submodule {
          options = {
            provider = mkOption { type = types.enum [ "github" "gitlab" ]; };
            apiUrl = mkOption {
              type = types.strMatching "https://.+";
              description = "`https://api.github.com`, a GitHub Enterprise Server's `https://HOST/api/v3`, or GitLab's `https://HOST/api/v4`.";
            };
            hookOwner = mkOption {
              type = types.str;
              description = "GitHub: `owner/repo`, `org:NAME`, or `app` (a GitHub App's own webhook); GitLab: a project id or path, or `group:ID`.";
            };
            hookId = mkOption {
              type = types.nullOr types.ints.positive;
              default = null;
              description = "The webhook's id at the provider (none for a GitHub App's webhook).";
            };
            appId = mkOption {
              type = types.nullOr types.str;
              default = null;
              description = "`hookOwner = \"app\"`: the GitHub App's client ID (or app ID), the issuer of its tokens.";
            };
            tokenFile = mkOption {
              type = secretPath;
              description = "The API token (GitHub: webhooks read and write; GitLab: api scope, Maintainer), or a GitHub App's private key (PEM), in a file outside the store.";
            };
            requestPauseMs = mkOption {
              type = types.nullOr types.ints.unsigned;
              default = null;
              description = "Pause between two redelivery requests (default: 1000 on GitHub, 12000 on GitLab).";
            };
          };
        });
      };
    };
    task-dispatcher = serviceOptions "task-dispatcher" 3020 // {
      routes = mkOption {
        type = types.listOf types.attrs;
        default = [ ];
        example = [{ kind = "review"; source = "gitlab"; event_types = [ "Merge Request Hook" ]; }];
        description = ''
          Routing rules (services/task-dispatcher/config/default.toml), first
          match wins; a last rule makes every other event a `webhook` task.
        '';
      };
      operatorTokenFiles = mkOption {
        type = types.listOf secretPath;
        default = [ ];
        description = "Tokens for the operator API (GET/POST /v1/tasks...), one per file.";
      };
    };
    agent-reporter = serviceOptions "agent-reporter" 3030 // {
      pushgatewayUrl = mkOption {
        type = types.str;
        default = "http://127.0.0.1:9091";
        description = "Where agents' job metrics are pushed.";
      };
    };

    agents = mkOption {
      description = "Agents allowed to claim tasks and report; tokens as SHA-256 hex digests.";
      default = { };
      type = types.attrsOf (types.submodule {
        options = {
          kinds = mkOption { type = types.listOf types.str; };
          tokenSha256 = mkOption { type = types.strMatching "[0-9a-f]{64}"; };
        };
      });
    };
    agentsFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      description = "A TOML file with more agents (`agents = [...]`), read at start.";
    };
    relayTokenFile = mkOption {
      type = secretPath;
      description = "The token dedup-store's relay presents to task-dispatcher.";
    };
    ingestTokenFile = mkOption {
      type = secretPath;
      description = "The token ingest presents to dedup-store, which stores events for no one else.";
    };
    otlpEndpoint = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "http://127.0.0.1:4318/v1/traces";
      description = "OTLP/HTTP endpoint for traces; add its address to allowedAddresses when not local.";
    };
    allowedAddresses = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Addresses besides loopback the services may reach (IPAddressAllow=).";
    };

    database = {
      createLocally = mkOption {
        type = types.bool;
        default = true;
        description = "Run PostgreSQL here with one database and role per service (peer authentication).";
      };
      host = mkOption {
        type = types.str;
        default = "/run/postgresql";
        description = "Socket directory, or the host of a remote or managed PostgreSQL (set createLocally = false).";
      };
      port = mkOption { type = types.port; default = 5432; };
      sslmode = mkOption {
        type = types.enum [ "disable" "verify-full" ];
        default = "disable";
        description = ''
          TLS to PostgreSQL. `verify-full` checks the server's certificate
          against sslRootCertFile and its name against `host`; use it for
          any server not on this machine.
        '';
      };
      sslRootCertFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        description = "PEM CA certificate(s) the server's certificate must chain to (public, may be in the store).";
      };
      passwordFiles = mkOption {
        type = types.attrsOf secretPath;
        default = { };
        example = { dedup-store = "/run/secrets/rave/dedup-store-db"; };
        description = ''
          Per service (dedup-store, task-dispatcher, agent-reporter): a file
          holding its database role's password, for a remote server (the
          role and database are named as the service's system user, e.g.
          rave_dedup_store).
        '';
      };
    };

    tls = {
      certificateFile = mkOption { type = types.str; description = "PEM certificate (chain) nginx serves on the public port."; };
      keyFile = mkOption { type = secretPath; description = "Its private key; readable by nginx."; };
    };
    nginx = {
      enable = mkOption { type = types.bool; default = true; description = "Serve RAVE through nginx with TLS."; };
      port = mkOption { type = types.port; default = 3002; description = "The public HTTPS port."; };
      statusPort = mkOption { type = types.port; default = 3003; description = "stub_status, on loopback, for the exporter."; };
      upstreamMaxFails = mkOption {
        type = types.ints.positive;
        default = 2;
        description = "Passive health check: failures of a replica within upstreamFailTimeout before nginx leaves it out.";
      };
      upstreamFailTimeout = mkOption {
        type = types.str;
        default = "5s";
        description = "How long nginx leaves a failing replica out (and the window its failures are counted in).";
      };
      extraLocations = mkOption {
        type = types.lines;
        default = "";
        description = "nginx `location` blocks added to the public server.";
      };
      operatorApi = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Serve the operators' API (task reads, cancel, retry, quarantine,
          replays, what-if routing, event search, erasure, reconcile) on the
          public port too, behind the operator tokens and a per-address rate
          limit of its own (docs/api.md). Off: only on loopback.
        '';
      };
      operatorsRate = mkOption {
        type = types.ints.positive;
        default = 10;
        description = "Requests per second per address on the operators' API through nginx (burst twice that).";
      };
    };

    verify.secrets = mkOption {
      type = types.attrsOf secretPath;
      default = { };
      description = ''
        Secret files `ravectl verify --state-dir /etc/rave` signs and
        authenticates with (github.secret, agent-dev.token, ...). Development
        and test machines only.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = map
      (path: {
        assertion = !lib.hasPrefix "${builtins.storeDir}/" path;
        message = "services.rave: the secret ${path} is in the Nix store, readable by every user; give a path outside it (sops-nix, a credential).";
      })
      secretFiles
    ++ [{
      assertion = cfg.ingest.enable -> cfg.ingest.sources != { };
      message = "services.rave.ingest.sources is empty: ingest would refuse every webhook.";
    }
      {
        assertion = cfg.database.sslmode == "verify-full" -> cfg.database.sslRootCertFile != null;
        message = "services.rave.database.sslmode = \"verify-full\" needs database.sslRootCertFile.";
      }
      {
        assertion = !cfg.database.createLocally -> lib.hasPrefix "/" cfg.database.host || cfg.database.sslmode == "verify-full";
        message = "services.rave.database: a remote PostgreSQL (${cfg.database.host}) needs sslmode = \"verify-full\"; passwords and events would cross the network in the clear.";
      }];

    users.users = lib.listToAttrs (map
      (name: lib.nameValuePair defs.${name}.user {
        isSystemUser = true;
        group = defs.${name}.user;
        description = "RAVE ${name}";
      })
      enabled);
    users.groups = lib.listToAttrs (map (name: lib.nameValuePair defs.${name}.user { }) enabled);

    systemd.services = lib.listToAttrs
      (lib.concatMap
        (name: map (instance: lib.nameValuePair instance.unit (unitFor name instance)) defs.${name}.instances)
        enabled)
    // lib.listToAttrs (map
      (name: lib.nameValuePair "rave-${name}-rolling" (rollingFor name))
      (builtins.filter (name: cfg.${name}.replicas > 1) enabled));

    systemd.sockets = lib.listToAttrs (lib.concatMap
      (name: map (instance: lib.nameValuePair instance.unit (socketFor instance)) defs.${name}.instances)
      enabled);

    services.postgresql = mkIf cfg.database.createLocally (
      let databases = builtins.filter (d: d != null) (map (name: defs.${name}.database) enabled);
      in {
        enable = true;
        ensureDatabases = databases;
        ensureUsers = map (name: { inherit name; ensureDBOwnership = true; }) databases;
      }
    );

    services.nginx = mkIf cfg.nginx.enable {
      enable = true;
      # The sites are the local stack's template; no NixOS virtual hosts.
      virtualHosts = { };
      appendHttpConfig = import ../lib/nginx.nix {
        listen = toString cfg.nginx.port;
        inherit (cfg.nginx) statusPort extraLocations operatorApi operatorsRate;
        ports = lib.genAttrs names (name: cfg.${name}.port);
        replicas = lib.genAttrs names (name: cfg.${name}.replicas);
        inherit (cfg) replicaPortStep;
        maxFails = cfg.nginx.upstreamMaxFails;
        failTimeout = cfg.nginx.upstreamFailTimeout;
        certificate = cfg.tls.certificateFile;
        key = cfg.tls.keyFile;
      };
    };

    environment.systemPackages = [ cfg.package ];

    # What `ravectl verify --state-dir /etc/rave` checks on this host.
    environment.etc."rave/stack.json".text = builtins.toJSON ({
      public_url = "https://localhost:${toString cfg.nginx.port}";
      tls_cert = cfg.tls.certificateFile;
      ingest_url = "http://127.0.0.1:${toString cfg.ingest.port}";
      store_url = "http://127.0.0.1:${toString cfg.dedup-store.port}";
      dispatcher_url = "http://127.0.0.1:${toString cfg.task-dispatcher.port}";
      reporter_url = "http://127.0.0.1:${toString cfg.agent-reporter.port}";
      postgres = cfg.database.host;
      secrets_dir = "/var/empty";
      secrets = cfg.verify.secrets;
      operator_api = cfg.nginx.operatorApi;
      systemd_units = lib.listToAttrs (lib.concatMap
        (name: map (i: lib.nameValuePair i.name [ i.unit i.port ]) defs.${name}.instances)
        enabled);
      replicas = lib.genAttrs enabled
        (name: map (i: "http://127.0.0.1:${toString i.port}") defs.${name}.instances);
    } // lib.optionalAttrs config.services.prometheus.enable {
      prometheus_url = "http://127.0.0.1:${toString config.services.prometheus.port}";
    } // lib.optionalAttrs config.services.prometheus.pushgateway.enable {
      pushgateway_url = cfg.agent-reporter.pushgatewayUrl;
    } // lib.optionalAttrs config.services.tempo.enable {
      tempo_url = "http://127.0.0.1:3200";
    } // lib.optionalAttrs config.services.prometheus.alertmanager.enable {
      alertmanager_url = "http://127.0.0.1:${toString config.services.prometheus.alertmanager.port}";
      alert_inbox_log = "/var/lib/rave-alert-inbox/alerts.jsonl";
    });
  };
}
