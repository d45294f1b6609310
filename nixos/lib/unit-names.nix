# The systemd units of a RAVE service's replicas: `rave-<name>` for one,
# `rave-<name>@1`, `rave-<name>@2`, ... for several. Plain Nix.
name: count:
if count == 1 then [ "rave-${name}" ]
else builtins.genList (i: "rave-${name}@${toString (i + 1)}") count
