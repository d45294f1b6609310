# What a production image must have before it evaluates: someone who can
# log in, and secrets that are managed rather than generated on the machine.
# Plain Nix (security.nix turns these into NixOS assertions); the README's
# test command evaluates it.
{ sshAuthorizedKeys, sopsEnabled, devSecretsEnabled, trialImage }:
[
  {
    assertion = sshAuthorizedKeys != [ ] || trialImage;
    message = ''
      services.rave-security.sshAuthorizedKeys is empty: with passwords off
      and users immutable, nobody could ever log in to this machine. Put your
      SSH public keys in secrets/authorized-keys.nix (and `git add` it), or
      set services.rave-security.trialImage = true for a throwaway trial
      image.'';
  }
  {
    assertion = sopsEnabled || trialImage;
    message = ''
      services.rave-security.sops is off: this production image would
      generate its secrets on first boot, unmanaged and different on every
      machine. Provide secrets/rave.yaml, encrypted with sops for the host's
      age key (docs/deploy.md), and `git add` it (a flake sees only files Git
      tracks), or set services.rave-security.trialImage = true for a
      throwaway trial image.'';
  }
  {
    assertion = !(sopsEnabled && devSecretsEnabled);
    message = "services.rave-security.sops and services.rave-dev-secrets are both on: RAVE's secrets would come from two places.";
  }
]
