# P2, production with observability: P1 plus Prometheus, the Pushgateway,
# the exporters and Grafana (under /grafana/ on 3002), each memory-limited.
{ lib, ... }:
{
  imports = [ ./p1-production.nix ];
  networking.hostName = lib.mkOverride 1200 "rave-p2";
  services.rave-observability.enable = true;
}
