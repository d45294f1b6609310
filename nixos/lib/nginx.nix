# RAVE's nginx sites for a NixOS host, rendered from the template the local
# stack uses (crates/ravectl/templates/nginx-sites.conf): same routes, same
# body limits, same rate limits, same TLS settings.
#
# Plain Nix with no nixpkgs: the README's test command renders it and runs
# `nginx -t` on the result (tests/nixos-checks).
{ listen ? "3002"
, statusPort ? 3003
, # Replica 1's port per service; replica k's is + (k - 1) × replicaPortStep.
  ports
, replicas ? { }
, replicaPortStep ? 100
, # Passive health checks: a replica failing maxFails times within
  # failTimeout sits out failTimeout.
  maxFails ? 2
, failTimeout ? "5s"
, certificate
, key
, # Extra `location` blocks inside the public server (Grafana on P2).
  extraLocations ? ""
, # Per-address flood ceilings, requests per second (burst twice that;
  # beyond it, 429). Far above a genuine sender: RAVE never refuses a
  # verified delivery for rate, and limits agents per token itself.
  hooksRate ? 2000
, agentsRate ? 2000
, # The operators' API through nginx (crates/ravectl/templates/
  # nginx-operators.conf), behind the operator tokens and its own
  # per-address limit. Off by default.
  operatorApi ? false
, operatorsRate ? 10
}:
let
  template = builtins.readFile ../../crates/ravectl/templates/nginx-sites.conf;
  operatorLocations = builtins.replaceStrings [ "{{OPERATORS_BURST}}" ] [ (toString (operatorsRate * 2)) ]
    (builtins.readFile ../../crates/ravectl/templates/nginx-operators.conf);
  servers = name: builtins.concatStringsSep "" (map
    (port: "    server 127.0.0.1:${toString port} max_fails=${toString maxFails} fail_timeout=${failTimeout};\n")
    ((import ./replicas.nix).ports ports.${name} (replicas.${name} or 1) replicaPortStep));
  values = {
    NGINX_LISTEN = listen;
    NGINX_STATUS_PORT = toString statusPort;
    INGEST_SERVERS = servers "ingest";
    DISPATCHER_SERVERS = servers "task-dispatcher";
    REPORTER_SERVERS = servers "agent-reporter";
    STORE_SERVERS = servers "dedup-store";
    TLS_CERT = toString certificate;
    TLS_KEY = toString key;
    EXTRA_LOCATIONS = extraLocations;
    OPERATOR_LOCATIONS = if operatorApi then operatorLocations else "";
    OPERATORS_RATE = toString operatorsRate;
    HOOKS_RATE = toString hooksRate;
    HOOKS_BURST = toString (hooksRate * 2);
    AGENTS_RATE = toString agentsRate;
    AGENTS_BURST = toString (agentsRate * 2);
  };
  names = builtins.attrNames values;
in
builtins.replaceStrings (map (n: "{{${n}}}") names) (map (n: values.${n}) names) template
