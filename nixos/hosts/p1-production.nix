# P1, production security baseline: RAVE with SSH by key only, a firewall
# open on 22 (rate-limited) and 3002, and secrets from sops-nix.
#
# Secrets: secrets/rave.yaml, encrypted with sops for the host's age key
# (docs/deploy.md), and the operators' SSH keys in secrets/authorized-keys.nix.
# Without either the image does not evaluate (nixos/lib/production-checks.nix
# says what to provide), unless services.rave-security.trialImage is set.
{ lib, ... }:
let
  sopsFile = ../../secrets/rave.yaml;
  haveSecrets = builtins.pathExists sopsFile;
in
{
  imports = [ ./common.nix ];
  networking.hostName = lib.mkOverride 1300 "rave-p1";
  services.rave-security = {
    enable = true;
    sshAuthorizedKeys = import ../../secrets/authorized-keys.nix;
    sops.enable = haveSecrets;
  } // lib.optionalAttrs haveSecrets { sops.file = sopsFile; };
  services.rave-dev-secrets.enable = !haveSecrets;
}
