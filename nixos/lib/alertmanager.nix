# Alertmanager's configuration on a RAVE host, from the routing and
# inhibition `ravectl up` uses too (prometheus/alertmanager/routing.json):
# every alert reaches people (the alert inbox, and a webhook or mail when
# given) without going through RAVE; with `asTasks`, critical and warning
# alerts also reach ingest's alertmanager source. Plain Nix; the README's
# test command checks it with amtool and against ravectl's rendering.
{ inboxPort ? 9097
, webhookUrl ? null
, # { to; from; smarthost; username ? null; passwordFile ? null; }
  email ? null
, asTasks ? false
, publicUrl ? "https://localhost:3002"
, # Where Alertmanager reads its bearer token for RAVE, and the CA of nginx.
  tokenFile ? null
, caFile ? null
, groupWait ? "30s"
, groupInterval ? "5m"
}:
let
  routing = builtins.fromJSON (builtins.readFile ../../prometheus/alertmanager/routing.json);
  route = routing.route // {
    group_wait = groupWait;
    group_interval = groupInterval;
    routes = (if asTasks then [ routing.rave_route ] else [ ]) ++ routing.route.routes;
  };
  smtp =
    if email == null then { }
    else {
      smtp_smarthost = email.smarthost;
      smtp_from = email.from;
      smtp_require_tls = true;
    } // (if (email.username or null) == null then { }
    else {
      smtp_auth_username = email.username;
      smtp_auth_password_file = email.passwordFile;
    });
  people = {
    name = "people";
    webhook_configs = [{ url = "http://127.0.0.1:${toString inboxPort}/alerts"; send_resolved = true; }]
      ++ (if webhookUrl == null then [ ] else [{ url = webhookUrl; send_resolved = true; }]);
  } // (if email == null then { } else { email_configs = [{ inherit (email) to; send_resolved = true; }]; });
  rave = {
    name = "rave";
    webhook_configs = [{
      url = "${publicUrl}/hooks/alertmanager";
      send_resolved = true;
      http_config = {
        authorization.credentials_file = tokenFile;
        tls_config.ca_file = caFile;
      };
    }];
  };
in
{
  global = { resolve_timeout = "5m"; } // smtp;
  inherit route;
  inherit (routing) inhibit_rules;
  receivers = [ people ] ++ (if asTasks then [ rave ] else [ ]);
}
