# The blackbox exporter's module on a RAVE host: the public HTTPS endpoint as
# a sender sees it, as in crates/ravectl/templates/blackbox.yml. Plain Nix;
# the README's test command checks it with `blackbox_exporter --config.check`.
# `caFile`: what the probe trusts; null for the system's CAs.
{ caFile }:
{
  modules.rave_https = {
    prober = "http";
    timeout = "5s";
    http = {
      preferred_ip_protocol = "ip4";
      fail_if_not_ssl = true;
    } // (if caFile == null then { } else { tls_config.ca_file = caFile; });
  };
}
