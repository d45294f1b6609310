# The four RAVE services as a NixOS host runs them: system user, socket
# families, systemd credentials (id -> file to load), and each replica's
# unit, port and settings. The module renders a replica's `settings` to its
# TOML after merging `services.rave.<name>.settings` over them.
#
# Replicas: with one (the default) a service runs as `rave-<name>`; with
# several, as `rave-<name>@1`, `rave-<name>@2`, ..., replica k on the port
# + (k - 1) × replicaPortStep. Replica k of ingest calls replica k of
# dedup-store first and the others when it refuses (likewise dedup-store's
# relay to task-dispatcher); each ingest replica has its own spool and
# replays the others' while they are down.
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
, # PostgreSQL: the local socket directory (peer authentication), or a
  # remote host with TLS (sslmode = "verify-full", sslrootcert = a CA file)
  # and a password file per service (passwordFiles.<name>).
  database ? { host = "/run/postgresql"; port = 5432; }
, ports ? { }
, # name -> number of replicas (1 when absent).
  replicas ? { }
, replicaPortStep ? 100
, # ingest: name -> { kind; secretFiles ? [ ]; tokenFiles ? [ ]; requireSignature ? false; hmac ? null; timestampToleranceSecs ? null; }
  sources ? { }
, # task-dispatcher and agent-reporter: name -> { kinds; tokenSha256; }
  agents ? { }
, # A TOML file with more agents (`ravectl agents create` writes to one).
  agentsFile ? null
, operatorTokenFiles ? [ ]
, # The token dedup-store's relay presents to task-dispatcher.
  relayTokenFile
, # The token ingest presents to dedup-store to store events.
  ingestTokenFile
, pushgatewayUrl ? "http://127.0.0.1:9091"
, # task-dispatcher's routing rules, first match wins.
  routes ? [{ kind = "webhook"; }]
, # OTLP/HTTP traces endpoint, e.g. "http://127.0.0.1:4318/v1/traces".
  otlpEndpoint ? null
, # dedup-store's reconciler: source name -> { provider; apiUrl; hookOwner;
  # hookId ? null; appId ? null; tokenFile; requestPauseMs ? null; } (the
  # sender's API token, or a GitHub App's private key, in a file loaded as a
  # credential).
  reconcile ? { }
}:
let
  portOf = {
    ingest = 3001;
    dedup-store = 3010;
    task-dispatcher = 3020;
    agent-reporter = 3030;
  } // ports;

  countOf = name: replicas.${name} or 1;
  replicaLib = import ./replicas.nix;
  portOfReplica = name: replicaLib.port portOf.${name} replicaPortStep;
  urlOf = name: k: "http://127.0.0.1:${toString (portOfReplica name k)}";
  mod = a: b: a - (a / b) * b;
  # The replica of `name` that replica k of its caller prefers, and the
  # others in turn after it.
  preferred = name: k: mod (k - 1) (countOf name) + 1;
  othersOf = name: k:
    let n = countOf name; first = preferred name k;
    in builtins.genList (i: urlOf name (mod (first + i) n + 1)) (n - 1);

  # `prefix-0`, `prefix-1`, ... for a list of files.
  numbered = prefix: files: builtins.listToAttrs (builtins.genList
    (i: { name = "${prefix}-${toString i}"; value = builtins.elemAt files i; })
    (builtins.length files));

  credential = unit: id: { file = "${credentialsDir unit}/${id}"; };
  credentialFiles = unit: ids: map (credential unit) (builtins.attrNames ids);

  telemetry = { log_format = "json"; }
    // (if otlpEndpoint == null then { } else { otlp_endpoint = otlpEndpoint; });

  server = port: { host = "127.0.0.1"; inherit port; };

  # One database per service, named after its role and system user: peer
  # authentication over the local socket needs no password; a remote server
  # gets TLS and the service's password file.
  passwordFiles = database.passwordFiles or { };
  databaseCredential = name:
    if passwordFiles ? ${name} then { db-password = passwordFiles.${name}; } else { };
  databaseOf = name: user: unit: {
    inherit (database) host port;
    inherit user;
    dbname = user;
  }
  // (if (database.sslmode or "disable") == "disable" then { } else {
    inherit (database) sslmode sslrootcert;
  })
  // (if passwordFiles ? ${name} then { password = credential unit "db-password"; } else { });

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
  sourceSettings = unit: name: source:
    let
      secrets = numbered "source-${name}-secret" (source.secretFiles or [ ]);
      tokens = numbered "source-${name}-token" (source.tokenFiles or [ ]);
    in
    { inherit (source) kind; secrets = credentialFiles unit secrets; }
    // (if tokens == { } then { } else { tokens = credentialFiles unit tokens; })
    // (if source.kind == "gitlab" then { require_signature = source.requireSignature or false; } else { })
    // (if (source.hmac or null) == null then { } else { inherit (source) hmac; })
    // (if (source.timestampToleranceSecs or null) == null then { } else { timestamp_tolerance_secs = source.timestampToleranceSecs; });

  operatorTokens = numbered "operator-token" operatorTokenFiles;

  reconcileCredentials = builtins.listToAttrs (map
    (name: { name = "reconcile-${name}-token"; value = reconcile.${name}.tokenFile; })
    (builtins.attrNames reconcile));
  reconcileSettings = unit: name: r:
    let
      optional = key: value: if value == null then { } else { ${key} = value; };
    in
    {
      inherit (r) provider;
      api_url = r.apiUrl;
      hook_owner = r.hookOwner;
      token = credential unit "reconcile-${name}-token";
    }
    // optional "hook_id" (r.hookId or null)
    // optional "app_id" (r.appId or null)
    // optional "request_pause_ms" (r.requestPauseMs or null);

  # The spool directory of ingest replica k, and every replica's.
  spoolOf = k: if countOf "ingest" == 1 then "spool" else "spool-${toString k}";
  spools = builtins.genList (i: spoolOf (i + 1)) (countOf "ingest");

  # A service: `common` fields plus one instance per replica (`instance k
  # unit port` gives its extra fields and settings). The service's own
  # unit, port and settings are replica 1's.
  service = name: common: instance:
    let
      units = replicaLib.units name (countOf name);
      instances = builtins.genList
        (i:
          let
            k = i + 1;
            unit = builtins.elemAt units i;
            port = portOfReplica name k;
          in
          {
            index = k;
            name = if countOf name == 1 then name else "${name}@${toString k}";
            inherit unit port;
          } // instance k unit port)
        (countOf name);
    in
    common // builtins.head instances // { inherit instances; replicas = countOf name; };
in
{
  ingest = service "ingest"
    {
      user = "rave_ingest";
      database = null;
      # AF_UNIX for READY=1 on systemd's notify socket (Type=notify).
      addressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
      credentials = builtins.foldl' (acc: name: acc // sourceCredentials name sources.${name})
        { store-token = ingestTokenFile; }
        (builtins.attrNames sources);
    }
    (k: unit: port: {
      # The spools (verified events waiting out a store outage) live here;
      # every replica may write every replica's, to replay a dead one's.
      stateDirectory = if countOf "ingest" == 1 then "rave-ingest" else map (s: "rave-ingest/${s}") spools;
      settings = {
        server = server port;
        spool = {
          dir = "/var/lib/rave-ingest/${spoolOf k}";
          peer_dirs = map (s: "/var/lib/rave-ingest/${s}") (builtins.filter (s: s != spoolOf k) spools);
        };
        store = {
          url = urlOf "dedup-store" (preferred "dedup-store" k);
          fallback_urls = othersOf "dedup-store" k;
          token = credential unit "store-token";
        };
        inherit telemetry;
        sources = builtins.mapAttrs (sourceSettings unit) sources;
      };
    });

  dedup-store = service "dedup-store"
    rec {
      user = "rave_dedup_store";
      database = user;
      addressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
      # Only ingest stores events; only operators read them.
      credentials = { relay-token = relayTokenFile; ingest-token = ingestTokenFile; }
        // operatorTokens // reconcileCredentials // databaseCredential "dedup-store";
    }
    (k: unit: port: {
      settings = {
        ingest_tokens = [ (credential unit "ingest-token") ];
        operator_tokens = credentialFiles unit operatorTokens;
        server = server port;
        database = databaseOf "dedup-store" "rave_dedup_store" unit;
        relay = {
          dispatcher_url = urlOf "task-dispatcher" (preferred "task-dispatcher" k);
          fallback_urls = othersOf "task-dispatcher" k;
          token = credential unit "relay-token";
        };
        reconcile.sources = builtins.mapAttrs (reconcileSettings unit) reconcile;
        inherit telemetry;
      };
    });

  task-dispatcher = service "task-dispatcher"
    rec {
      user = "rave_task_dispatcher";
      database = user;
      addressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
      credentials = { relay-token = relayTokenFile; } // operatorTokens // agentsFileCredential
        // databaseCredential "task-dispatcher";
    }
    (k: unit: port: {
      settings = {
        agents = agentList;
        relay_tokens = [ (credential unit "relay-token") ];
        operator_tokens = credentialFiles unit operatorTokens;
        server = server port;
        database = databaseOf "task-dispatcher" "rave_task_dispatcher" unit;
        inherit telemetry;
        inherit routes;
      } // agentsFileSetting unit
      # Replays and what-if routing read dedup-store's search as an
      # operator (docs/adr/0019): with the first operator token, which both
      # services accept.
      // (if operatorTokenFiles == [ ] then { } else {
        events_store = {
          url = urlOf "dedup-store" (preferred "dedup-store" k);
          fallback_urls = othersOf "dedup-store" k;
          token = credential unit "operator-token-0";
        };
      });
    });

  agent-reporter = service "agent-reporter"
    rec {
      user = "rave_agent_reporter";
      database = user;
      addressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
      credentials = agentsFileCredential // databaseCredential "agent-reporter";
    }
    (_: unit: port: {
      settings = {
        agents = agentList;
        server = server port;
        database = databaseOf "agent-reporter" "rave_agent_reporter" unit;
        pushgateway.url = pushgatewayUrl;
        inherit telemetry;
      } // agentsFileSetting unit;
    });
}
