# RAVE's nginx sites for a NixOS host, rendered from the template the local
# stack uses (crates/ravectl/templates/nginx-sites.conf): same routes, same
# body limits, same rate limits, same TLS settings.
#
# Plain Nix with no nixpkgs: the README's test command renders it and runs
# `nginx -t` on the result (tests/nixos-checks).
{ listen ? "3002"
, statusPort ? 3003
, ports
, certificate
, key
, # Extra `location` blocks inside the public server (Grafana on P2).
  extraLocations ? ""
, # Per-address limits, requests per second (beyond the burst: 429).
  hooksRate ? 100
, agentsRate ? 50
}:
let
  template = builtins.readFile ../../crates/ravectl/templates/nginx-sites.conf;
  values = {
    NGINX_LISTEN = listen;
    NGINX_STATUS_PORT = toString statusPort;
    INGEST_PORT = toString ports.ingest;
    DISPATCHER_PORT = toString ports.task-dispatcher;
    REPORTER_PORT = toString ports.agent-reporter;
    TLS_CERT = toString certificate;
    TLS_KEY = toString key;
    EXTRA_LOCATIONS = extraLocations;
    HOOKS_RATE = toString hooksRate;
    AGENTS_RATE = toString agentsRate;
  };
  names = builtins.attrNames values;
in
builtins.replaceStrings (map (n: "{{${n}}}") names) (map (n: values.${n}) names) template
