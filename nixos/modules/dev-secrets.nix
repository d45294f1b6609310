# services.rave-dev-secrets: for P0 and the VM test only. Generates every
# secret RAVE needs at first boot (random, 0400, outside the Nix store) and a
# self-signed certificate for localhost, and points the services at them.
# Production takes them from sops-nix instead (services.rave-security).
{ config, lib, pkgs, ... }:
let
  cfg = config.services.rave-dev-secrets;
  dir = "/var/lib/rave-secrets";
  inherit (lib) mkEnableOption mkIf;
  grafana = config.services.rave-observability.enable && config.services.rave-observability.grafana.enable;
  file = name: "${dir}/${name}";
  raveUnits = lib.concatMap
    (name: map (u: "${u}.service") ((import ../lib/replicas.nix).units name config.services.rave.${name}.replicas))
    [ "ingest" "dedup-store" "task-dispatcher" "agent-reporter" ];
in
{
  options.services.rave-dev-secrets.enable = mkEnableOption ''
    secrets generated at first boot (development and tests; never production)
  '';

  config = mkIf cfg.enable {
    warnings = [ "services.rave-dev-secrets is on: secrets are generated on this machine, not managed (development only)." ];

    systemd.services.rave-dev-secrets = {
      description = "Generate RAVE's development secrets";
      wantedBy = [ "multi-user.target" ];
      before = raveUnits ++ [ "nginx.service" "grafana.service" ];
      requiredBy = raveUnits ++ [ "nginx.service" ];
      path = [ pkgs.openssl pkgs.coreutils ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        UMask = "0077";
        StateDirectory = "rave-secrets";
        StateDirectoryMode = "0700";
      };
      # Existing files are kept: secrets survive reboots.
      script = ''
        set -eu
        cd ${dir}
        hex() { [ -s "$1" ] || openssl rand -hex "$2" > "$1"; }
        whsec() { [ -s "$1" ] || echo "whsec_$(openssl rand -base64 32)" > "$1"; }
        hex relay.token 24
        hex ingest.token 24
        hex alertmanager.token 24
        hex operator.token 24
        hex github.secret 20
        whsec gitlab-signing.secret
        hex gitlab-token.secret 20
        whsec standard.secret
        if [ ! -s agent-dev.token ]; then
          echo "rave_agent_$(openssl rand -hex 24)" > agent-dev.token
        fi
        digest=$(tr -d '\n' < agent-dev.token | sha256sum | cut -d' ' -f1)
        printf 'agents = [{ name = "dev", token_sha256 = "%s", kinds = ["webhook"] }]\n' "$digest" > agents.toml
        if [ ! -s tls.key ]; then
          openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
            -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
            -addext "basicConstraints=critical,CA:FALSE" -addext "extendedKeyUsage=serverAuth" \
            -keyout tls.key -out tls.crt
        fi
        chgrp nginx tls.key && chmod 0440 tls.key
        chmod 0444 tls.crt
        ${lib.optionalString grafana ''
          hex grafana-admin.password 16
          hex grafana-secret.key 32
          chown grafana grafana-admin.password grafana-secret.key
        ''}
        chmod 0711 ${dir}
      '';
    };

    services.rave = {
      relayTokenFile = file "relay.token";
      ingestTokenFile = file "ingest.token";
      agentsFile = file "agents.toml";
      task-dispatcher.operatorTokenFiles = [ (file "operator.token") ];
      ingest.sources = {
        github = { kind = "github"; secretFiles = [ (file "github.secret") ]; };
        gitlab = {
          kind = "gitlab";
          secretFiles = [ (file "gitlab-signing.secret") ];
          tokenFiles = [ (file "gitlab-token.secret") ];
        };
        standard = { kind = "standard"; secretFiles = [ (file "standard.secret") ]; };
      };
      tls = {
        certificateFile = file "tls.crt";
        keyFile = file "tls.key";
      };
      verify.secrets = lib.genAttrs
        [ "github.secret" "gitlab-signing.secret" "gitlab-token.secret" "standard.secret" "agent-dev.token" "operator.token" ]
        file;
    };

    services.rave-observability.alerting.tokenFile = file "alertmanager.token";
    services.rave-observability.grafana = mkIf grafana {
      adminPasswordFile = file "grafana-admin.password";
      secretKeyFile = file "grafana-secret.key";
    };
  };
}
