# The four RAVE services as a NixOS host runs them: unit, system user, port,
# socket families, systemd credentials (id -> file to load) and the settings
# each starts with. The module renders `settings` to the service's TOML after
# merging `services.rave.<name>.settings` over it.
#
# Secrets never enter the settings or the Nix store: a setting names the file
# systemd's LoadCredential= exposes, and systemd reads the real file (given
# as a path outside the store) when the unit starts.
#
# Plain Nix with no nixpkgs: the README's test command evaluates it and runs
# each binary's `--check-config` on the result (tests/nixos-checks).
{
  # Where LoadCredential= puts a unit's credentials.
  credentialsDir ? unit: "/run/credentials/${unit}.service"
, # PostgreSQL: the local socket directory (peer authentication), or a host.
  database ? { host = "/run/postgresql"; port = 5432; }
, ports ? { }
, # ingest: name -> { kind; secretFiles ? [ ]; tokenFiles ? [ ]; requireSignature ? false; }
  sources ? { }
, # task-dispatcher and agent-reporter: name -> { kinds; tokenSha256; }
  agents ? { }
, # A TOML file with more agents (`ravectl agents create` writes to one).
  agentsFile ? null
, operatorTokenFiles ? [ ]
, # The token dedup-store's relay presents to task-dispatcher.
  relayTokenFile
, pushgatewayUrl ? "http://127.0.0.1:9091"
, # OTLP/HTTP traces endpoint, e.g. "http://127.0.0.1:4318/v1/traces".
  otlpEndpoint ? null
}:
let
  portOf = {
    ingest = 3001;
    dedup-store = 3010;
    task-dispatcher = 3020;
    agent-reporter = 3030;
  } // ports;

  # `prefix-0`, `prefix-1`, ... for a list of files.
  numbered = prefix: files: builtins.listToAttrs (builtins.genList
    (i: { name = "${prefix}-${toString i}"; value = builtins.elemAt files i; })
    (builtins.length files));

  credential = unit: id: { file = "${credentialsDir unit}/${id}"; };
  credentialFiles = unit: ids: map (credential unit) (builtins.attrNames ids);

  telemetry = { log_format = "json"; }
    // (if otlpEndpoint == null then { } else { otlp_endpoint = otlpEndpoint; });

  server = name: { host = "127.0.0.1"; port = portOf.${name}; };

  # One database per service, named after its role and system user, so peer
  # authentication over the socket needs no password.
  databaseOf = user: {
    inherit (database) host port;
    inherit user;
    dbname = user;
  };

  agentList = map
    (name: {
      inherit name;
      token_sha256 = agents.${name}.tokenSha256;
      inherit (agents.${name}) kinds;
    })
    (builtins.attrNames agents);
  agentsFileCredential = if agentsFile == null then { } else { agents = agentsFile; };
  agentsFileSetting = unit:
    if agentsFile == null then { } else { agents_file = "${credentialsDir unit}/agents"; };

  sourceCredentials = name: source:
    numbered "source-${name}-secret" (source.secretFiles or [ ])
    // numbered "source-${name}-token" (source.tokenFiles or [ ]);
  sourceSettings = name: source:
    let
      secrets = numbered "source-${name}-secret" (source.secretFiles or [ ]);
      tokens = numbered "source-${name}-token" (source.tokenFiles or [ ]);
    in
    { inherit (source) kind; secrets = credentialFiles "rave-ingest" secrets; }
    // (if tokens == { } then { } else { tokens = credentialFiles "rave-ingest" tokens; })
    // (if source.kind == "gitlab" then { require_signature = source.requireSignature or false; } else { });

  operatorTokens = numbered "operator-token" operatorTokenFiles;
in
{
  ingest = rec {
    unit = "rave-ingest";
    user = "rave_ingest";
    port = portOf.ingest;
    database = null;
    addressFamilies = [ "AF_INET" "AF_INET6" ];
    credentials = builtins.foldl' (acc: name: acc // sourceCredentials name sources.${name}) { }
      (builtins.attrNames sources);
    # The spool (verified events waiting out a store outage) lives here.
    stateDirectory = "rave-ingest";
    settings = {
      server = server "ingest";
      spool.dir = "/var/lib/rave-ingest/spool";
      store.url = "http://127.0.0.1:${toString portOf.dedup-store}";
      inherit telemetry;
      sources = builtins.mapAttrs sourceSettings sources;
    };
  };

  dedup-store = rec {
    unit = "rave-dedup-store";
    user = "rave_dedup_store";
    port = portOf.dedup-store;
    database = user;
    addressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
    credentials = { relay-token = relayTokenFile; };
    settings = {
      server = server "dedup-store";
      database = databaseOf user;
      relay = {
        dispatcher_url = "http://127.0.0.1:${toString portOf.task-dispatcher}";
        token = credential unit "relay-token";
      };
      inherit telemetry;
    };
  };

  task-dispatcher = rec {
    unit = "rave-task-dispatcher";
    user = "rave_task_dispatcher";
    port = portOf.task-dispatcher;
    database = user;
    addressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
    credentials = { relay-token = relayTokenFile; } // operatorTokens // agentsFileCredential;
    settings = {
      agents = agentList;
      relay_tokens = [ (credential unit "relay-token") ];
      operator_tokens = credentialFiles unit operatorTokens;
      server = server "task-dispatcher";
      database = databaseOf user;
      inherit telemetry;
      # Every event becomes a `webhook` task until routes are configured.
      routes = [{ kind = "webhook"; }];
    } // agentsFileSetting unit;
  };

  agent-reporter = rec {
    unit = "rave-agent-reporter";
    user = "rave_agent_reporter";
    port = portOf.agent-reporter;
    database = user;
    addressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
    credentials = agentsFileCredential;
    settings = {
      agents = agentList;
      server = server "agent-reporter";
      database = databaseOf user;
      pushgateway.url = pushgatewayUrl;
      inherit telemetry;
    } // agentsFileSetting unit;
  };
}
