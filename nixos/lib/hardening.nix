# The systemd hardening every RAVE unit runs with, as `serviceConfig` values.
#
# Plain Nix with no nixpkgs: the README's test command evaluates it, renders
# it into a unit per service and scores it with `systemd-analyze security
# --offline=true` (tests/nixos-checks), so what CI scores is what NixOS runs.
{
  # Socket families the service opens; AF_UNIX for systemd's notify socket
  # (Type=notify) and PostgreSQL's.
  addressFamilies ? [ "AF_INET" "AF_INET6" ]
, # Peers besides loopback (a remote PostgreSQL or OTLP collector).
  allowedAddresses ? [ ]
, memoryMax ? "256M"
, cpuQuota ? "50%"
}:
{
  # Filesystem: read-only everywhere; no home, own /tmp, no devices.
  ProtectSystem = "strict";
  ProtectHome = true;
  PrivateTmp = true;
  PrivateDevices = true;
  DevicePolicy = "closed";
  DeviceAllow = [ "" ];
  PrivateMounts = true;
  PrivateUsers = true;
  UMask = "0077";

  # Kernel and host: nothing to tune, load, read or set.
  ProtectKernelTunables = true;
  ProtectKernelModules = true;
  ProtectKernelLogs = true;
  ProtectControlGroups = true;
  ProtectClock = true;
  ProtectHostname = true;
  ProtectProc = "invisible";
  ProcSubset = "pid";

  # Privileges: none to gain, keep or pass on.
  NoNewPrivileges = true;
  CapabilityBoundingSet = [ "" ];
  AmbientCapabilities = [ "" ];
  RestrictSUIDSGID = true;
  RemoveIPC = true;
  LockPersonality = true;
  MemoryDenyWriteExecute = true;
  RestrictRealtime = true;
  RestrictNamespaces = true;

  # System calls: the service set, minus privileged and resource-changing ones.
  SystemCallArchitectures = "native";
  SystemCallFilter = [ "@system-service" "~@privileged" "~@resources" ];

  # Network: only the families it needs, only loopback (plus allowedAddresses).
  RestrictAddressFamilies = addressFamilies;
  IPAddressDeny = "any";
  IPAddressAllow = [ "localhost" ] ++ allowedAddresses;

  # The seed's budget per service.
  MemoryMax = memoryMax;
  CPUQuota = cpuQuota;
}
