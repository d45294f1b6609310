# P1, production security baseline: RAVE with SSH by key only, a firewall
# open on 22 (rate-limited) and 3002, and secrets from sops-nix.
#
# Secrets: secrets/rave.yaml, encrypted with sops for the host's age key
# (docs/deploy.md). Without it the image still builds, generating its secrets
# at first boot, and says so in a build warning: fine for trying the image,
# not for production.
{ lib, ... }:
let
  sopsFile = ../../secrets/rave.yaml;
  haveSecrets = builtins.pathExists sopsFile;
in
{
  imports = [ ./common.nix ];
  networking.hostName = lib.mkDefault "rave-p1";
  services.rave-security = {
    enable = true;
    sshAuthorizedKeys = import ../../secrets/authorized-keys.nix;
    sops.enable = haveSecrets;
  } // lib.optionalAttrs haveSecrets { sops.file = sopsFile; };
  services.rave-dev-secrets.enable = !haveSecrets;
}
