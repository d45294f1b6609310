# services.rave-security: the P1 production baseline. SSH by key only (root
# by key only), a firewall open on 22 and the public port only with SSH rate
# limiting, and RAVE's secrets and TLS certificate from sops-nix.
# Importable on its own (nixosModules.rave-security) next to sops-nix's module.
{ config, lib, ... }:
let
  cfg = config.services.rave-security;
  rave = config.services.rave;
  inherit (lib) mkOption mkEnableOption mkIf types;
  # A sops secret readable only by root: LoadCredential= reads it as root
  # and hands the unit its own copy.
  rootOnly = { mode = "0400"; };
in
{
  options.services.rave-security = {
    enable = mkEnableOption "RAVE's P1 security baseline";
    sshAuthorizedKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Public keys allowed to log in as root (the only login).";
    };
    trialImage = mkOption {
      type = types.bool;
      default = false;
      description = ''
        A throwaway trial image: allow secrets generated at first boot and no
        SSH keys (nobody can log in over SSH). Never for a machine that keeps
        data or faces a network you do not control.
      '';
    };
    sshRateLimit = mkOption {
      type = types.str;
      default = "4/minute";
      description = "New SSH connections per source address (nftables limit), beyond a burst of 4.";
    };
    sops = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Take RAVE's secrets and TLS key from sops-nix (secrets/rave.yaml).";
      };
      file = mkOption {
        type = types.path;
        description = "The sops-encrypted YAML with RAVE's secrets (see docs/deploy.md).";
      };
      ageKeyFile = mkOption {
        type = types.str;
        default = "/var/lib/sops-nix/key.txt";
        description = "The host's age key, provisioned out of band.";
      };
    };
  };

  config = mkIf cfg.enable (lib.mkMerge [
    {
      assertions = import ../lib/production-checks.nix {
        inherit (cfg) sshAuthorizedKeys trialImage;
        sopsEnabled = cfg.sops.enable;
        devSecretsEnabled = config.services.rave-dev-secrets.enable;
      };
      warnings = lib.optional cfg.trialImage
        "services.rave-security.trialImage is on: a throwaway trial image, not for production.";

      services.openssh = {
        enable = true;
        openFirewall = false;
        settings = {
          PasswordAuthentication = false;
          KbdInteractiveAuthentication = false;
          PermitRootLogin = "prohibit-password";
          X11Forwarding = false;
          MaxAuthTries = 3;
        };
      };
      users.users.root.openssh.authorizedKeys.keys = cfg.sshAuthorizedKeys;
      users.mutableUsers = false;

      networking.nftables.enable = true;
      networking.firewall = {
        enable = true;
        # SSH is opened below with a rate limit; nothing else but HTTPS.
        allowedTCPPorts = [ rave.nginx.port ];
        allowedUDPPorts = [ ];
        extraInputRules = ''
          tcp dport 22 ct state new meter rave-ssh { ip saddr limit rate ${cfg.sshRateLimit} burst 4 packets } accept
          tcp dport 22 ct state new meter rave-ssh6 { ip6 saddr limit rate ${cfg.sshRateLimit} burst 4 packets } accept
        '';
        logRefusedConnections = true;
      };

      security.sudo.enable = false;
      boot.kernel.sysctl = {
        "kernel.kptr_restrict" = 2;
        "kernel.dmesg_restrict" = 1;
        "net.ipv4.conf.all.rp_filter" = 1;
        "net.ipv4.conf.all.accept_redirects" = 0;
        "net.ipv6.conf.all.accept_redirects" = 0;
        "net.ipv4.tcp_syncookies" = 1;
      };
    }

    (mkIf cfg.sops.enable {
      sops = {
        defaultSopsFile = cfg.sops.file;
        age.keyFile = cfg.sops.ageKeyFile;
        secrets = {
          "rave/relay-token" = rootOnly;
          "rave/ingest-token" = rootOnly;
          "rave/alertmanager-token" = rootOnly;
          "rave/operator-token" = rootOnly;
          "rave/github-secret" = rootOnly;
          "rave/gitlab-signing-secret" = rootOnly;
          "rave/standard-secret" = rootOnly;
          "rave/tls-key" = { owner = "nginx"; mode = "0400"; restartUnits = [ "nginx.service" ]; };
          "rave/tls-certificate" = { owner = "nginx"; mode = "0444"; restartUnits = [ "nginx.service" ]; };
        } // lib.optionalAttrs config.services.rave-observability.enable {
          "grafana/admin-password" = { owner = "grafana"; mode = "0400"; };
          "grafana/secret-key" = { owner = "grafana"; mode = "0400"; };
        } // lib.optionalAttrs config.services.rave-observability.grafana.oidc.enable {
          "grafana/oidc-client-secret" = rootOnly;
        };
      };

      services.rave = {
        relayTokenFile = config.sops.secrets."rave/relay-token".path;
        ingestTokenFile = config.sops.secrets."rave/ingest-token".path;
        task-dispatcher.operatorTokenFiles = [ config.sops.secrets."rave/operator-token".path ];
        ingest.sources = {
          github = { kind = "github"; secretFiles = [ config.sops.secrets."rave/github-secret".path ]; };
          gitlab = { kind = "gitlab"; secretFiles = [ config.sops.secrets."rave/gitlab-signing-secret".path ]; };
          standard = { kind = "standard"; secretFiles = [ config.sops.secrets."rave/standard-secret".path ]; };
        };
        tls = {
          certificateFile = config.sops.secrets."rave/tls-certificate".path;
          keyFile = config.sops.secrets."rave/tls-key".path;
        };
      };

      services.rave-observability.grafana = mkIf config.services.rave-observability.enable {
        adminPasswordFile = config.sops.secrets."grafana/admin-password".path;
        secretKeyFile = config.sops.secrets."grafana/secret-key".path;
        oidc.clientSecretFile = mkIf config.services.rave-observability.grafana.oidc.enable
          (lib.mkDefault config.sops.secrets."grafana/oidc-client-secret".path);
      };
      services.rave-observability.alerting.tokenFile = config.sops.secrets."rave/alertmanager-token".path;
    })
  ]);
}
