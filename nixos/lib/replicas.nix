# How a RAVE service's replicas are named and where they listen, shared by
# services.nix, nginx.nix, prometheus.nix and the modules. Plain Nix.
rec {
  # systemd units: `rave-<name>` for one replica, `rave-<name>@1`, ... for several.
  units = name: count:
    if count == 1 then [ "rave-${name}" ]
    else builtins.genList (i: "rave-${name}@${toString (i + 1)}") count;

  # Replica k (from 1) listens on `base` + (k - 1) × `step`.
  port = base: step: k: base + (k - 1) * step;
  ports = base: count: step: builtins.genList (i: port base step (i + 1)) count;
}
