# Prometheus's scrape jobs on a RAVE host: the job names the alerting rules
# and dashboards use, as in prometheus/prometheus.yml (the test command
# checks the two agree).
#
# Plain Nix with no nixpkgs.
{ ports ? { }
, # What the blackbox exporter probes: nginx's health endpoint.
  publicHealthz ? "https://localhost:3002/healthz"
, # RAVE services with several replicas: name -> count; replica k listens
  # on the port + (k - 1) × replicaPortStep, and each is a target.
  replicas ? { }
, replicaPortStep ? 100
}:
let
  port = {
    prometheus = 9090;
    node = 9100;
    nginx = 9113;
    postgres = 9187;
    pushgateway = 9091;
    ingest = 3001;
    dedup-store = 3010;
    task-dispatcher = 3020;
    agent-reporter = 3030;
    alertmanager = 9093;
    blackbox = 9115;
  } // ports;
  job = name: {
    job_name = name;
    static_configs = [{
      targets = map (p: "127.0.0.1:${toString p}")
        ((import ./replicas.nix).ports port.${name} (replicas.${name} or 1) replicaPortStep);
    }];
  };
in
map job [ "prometheus" "node" "nginx" "postgres" ]
++ [
  # Agents' job metrics arrive through the Pushgateway: keep their labels.
  (job "pushgateway" // { honor_labels = true; })
]
++ map job [ "ingest" "dedup-store" "task-dispatcher" "agent-reporter" ]
++ [
  (job "alertmanager")
  # The public endpoint through the blackbox exporter: target → ?target=.
  {
    job_name = "blackbox";
    metrics_path = "/probe";
    params.module = [ "rave_https" ];
    static_configs = [{ targets = [ publicHealthz ]; }];
    relabel_configs = [
      { source_labels = [ "__address__" ]; target_label = "__param_target"; }
      { source_labels = [ "__param_target" ]; target_label = "instance"; }
      { target_label = "__address__"; replacement = "127.0.0.1:${toString port.blackbox}"; }
    ];
  }
]
