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
  # `kill -HUP $MAINPID` for the services that reload settings in place.
, execReload ? null
, memoryMax ? "256M"
, cpuQuota ? "50%"
}:
import ./hardening.nix
  {
    inherit (def) addressFamilies;
    inherit allowedAddresses memoryMax cpuQuota;
  } // {
  # The service says READY=1 once it serves (rave_service::systemd), so
  # ordering waits for it and a replica restarted in turn is serving before
  # the next one stops. Its socket comes from rave-<name>.socket, held by
  # systemd across restarts: connections wait in the backlog, none is refused.
  Type = "notify";
  NotifyAccess = "main";
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
  # glibc's malloc gives each thread an arena of its own, up to 8 per core,
  # and each keeps what it freed: under job reports in batches that held
  # agent-reporter at twice its memory goal for a heap a third as large
  # (docs/performance.md). Two arenas keep RSS near the heap.
  Environment = [ "MALLOC_ARENA_MAX=2" ];
}
// (if execReload != null then { ExecReload = execReload; } else { })
  // (if def ? stateDirectory then {
  # The one place the service may write (ProtectSystem=strict elsewhere).
  StateDirectory = def.stateDirectory;
  StateDirectoryMode = "0700";
} else { })
