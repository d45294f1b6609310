# The NixOS VM test of the P2 image: `nix build .#checks.x86_64-linux.vm`
# or `./test-vm.sh test`. Two nodes: `server` runs the p2-production host
# (with generated secrets, since the test has no sops key) and `client`
# probes it from the network. The script is tests/rave-vm.py.
{ pkgs, self, sops-nix }:
let
  sshKeys = import "${pkgs.path}/nixos/tests/ssh-keys.nix" pkgs;
  system = pkgs.stdenv.hostPlatform.system;
in
pkgs.testers.runNixOSTest {
  name = "rave-p2";
  globalTimeout = 3600;

  nodes.server = { lib, pkgs, ... }: {
    imports = [
      sops-nix.nixosModules.sops
      ../nixos/hosts/p2-production.nix
    ];
    services.rave.package = self.packages.${system}.default;
    services.rave-security = {
      sops.enable = lib.mkForce false;
      sshAuthorizedKeys = lib.mkForce [ sshKeys.snakeOilPublicKey ];
    };
    services.rave-dev-secrets.enable = lib.mkForce true;
    boot.growPartition = lib.mkForce false;
    virtualisation = {
      memorySize = 2048;
      cores = 2;
      graphics = false;
    };
    # ravectl verify drives nginx with curl and checks TLS with openssl.
    environment.systemPackages = [ pkgs.curl pkgs.openssl pkgs.jq ];
  };

  nodes.client = { pkgs, ... }: {
    virtualisation.memorySize = 512;
    environment.systemPackages = [ pkgs.curl pkgs.netcat-openbsd pkgs.openssh ];
  };

  testScript = ''
    SNAKEOIL_PRIVATE_KEY = """${sshKeys.snakeOilPrivateKey}"""
  '' + builtins.readFile ./rave-vm.py;
}
