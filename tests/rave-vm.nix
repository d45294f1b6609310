# The NixOS VM test of the P2 image: `nix build .#checks.x86_64-linux.vm`
# or `./test-vm.sh test` (`nix run .#tests.rave-vm` runs its driver outside
# the sandbox). Three nodes: `server` runs the p2-production host (with
# generated secrets, since the test has no sops key), `replicas` the same
# host with two replicas of every service, and `client` probes `server`
# from the network. The script is tests/rave-vm.py. Memory: 3072 + 3584 +
# 512 MiB of guests (docs/ci.md).
{ pkgs, self, sops-nix }:
let
  sshKeys = import "${pkgs.path}/nixos/tests/ssh-keys.nix" pkgs;
  system = pkgs.stdenv.hostPlatform.system;
  # The p2-production host with generated secrets (the test has no sops key).
  p2 = { lib, pkgs, ... }: {
    imports = [
      sops-nix.nixosModules.sops
      ../nixos/hosts/p2-production.nix
    ];
    services.rave.package = self.packages.${system}.default;
    services.rave-security = {
      trialImage = true;
      sops.enable = lib.mkForce false;
      sshAuthorizedKeys = lib.mkForce [ sshKeys.snakeOilPublicKey ];
    };
    services.rave-dev-secrets.enable = lib.mkForce true;
    # OIDC logins, against a provider the test does not run: Grafana must
    # start with them and offer the login.
    services.rave-observability.grafana.oidc = {
      enable = true;
      issuer = "https://sso.invalid/realms/rave";
      clientId = "rave-grafana";
      clientSecretFile = "/var/lib/rave-vm-test/oidc-client-secret";
    };
    systemd.tmpfiles.rules = [
      "d /var/lib/rave-vm-test 0700 root root -"
      "f /var/lib/rave-vm-test/oidc-client-secret 0400 root root - vm-test-client-secret"
    ];
    boot.growPartition = lib.mkForce false;
    virtualisation = {
      memorySize = lib.mkDefault 3072;
      cores = 2;
      graphics = false;
    };
    # ravectl verify drives nginx with curl and checks TLS with openssl.
    environment.systemPackages = [ pkgs.curl pkgs.openssl pkgs.jq ];
  };
in
pkgs.testers.runNixOSTest {
  name = "rave-p2";
  globalTimeout = 3600;

  nodes.server = p2;

  # P2 again, with two replicas of every service behind nginx, as deployed
  # when one replica is not enough.
  nodes.replicas = {
    imports = [ p2 ];
    services.rave = {
      ingest.replicas = 2;
      dedup-store.replicas = 2;
      task-dispatcher.replicas = 2;
      agent-reporter.replicas = 2;
    };
    virtualisation.memorySize = 3584;
  };

  nodes.client = { pkgs, ... }: {
    virtualisation.memorySize = 512;
    environment.systemPackages = [ pkgs.curl pkgs.netcat-openbsd pkgs.openssh ];
  };

  testScript = ''
    SNAKEOIL_PRIVATE_KEY = """${sshKeys.snakeOilPrivateKey}"""
  '' + builtins.readFile ./rave-vm.py;
}
