# The `serviceConfig` of a RAVE unit: the hardening set plus how the service
# starts, as services.rave renders it for `systemd.services.<unit>`.
#
# Plain Nix with no nixpkgs: the README's test command renders it into a
# .service file and scores it with `systemd-analyze security --offline=true`.
{
  # One entry of nixos/lib/services.nix.
  def
, execStart
, allowedAddresses ? [ ]
, memoryMax ? "256M"
, cpuQuota ? "50%"
}:
import ./hardening.nix
  {
    inherit (def) addressFamilies;
    inherit allowedAddresses memoryMax cpuQuota;
  } // {
  Type = "exec";
  ExecStart = execStart;
  User = def.user;
  Group = def.user;
  # systemd reads each secret as root and hands the unit a private copy in
  # $CREDENTIALS_DIRECTORY, which only the unit's user can read.
  LoadCredential = map (id: "${id}:${def.credentials.${id}}") (builtins.attrNames def.credentials);
  Restart = "on-failure";
  RestartSec = "2s";
  # Exit status 2 is invalid settings: restarting cannot fix them.
  RestartPreventExitStatus = 2;
  TimeoutStopSec = "45s";
}
  // (if def ? stateDirectory then {
  # The one place the service may write (ProtectSystem=strict elsewhere).
  StateDirectory = def.stateDirectory;
  StateDirectoryMode = "0700";
} else { })
