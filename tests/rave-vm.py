# The P2 VM test's script, run by the NixOS test driver (tests/rave-vm.nix
# prepends SNAKEOIL_PRIVATE_KEY). `server`, `replicas`, `client`,
# `start_all` and `subtest` come from the driver. The README's test command
# lints it with pyflakes and type-checks it with mypy as the driver does
# (tests/nixos-checks, against tests/nixos-driver-stub).
import json

RAVE_UNITS = [
    "rave-ingest.service",
    "rave-dedup-store.service",
    "rave-task-dispatcher.service",
    "rave-agent-reporter.service",
]
OBSERVABILITY_UNITS = [
    "postgresql.service",
    "nginx.service",
    "prometheus.service",
    "pushgateway.service",
    "grafana.service",
    "prometheus-node-exporter.service",
    "prometheus-nginx-exporter.service",
    "prometheus-postgres-exporter.service",
    "prometheus-blackbox-exporter.service",
    "alertmanager.service",
    "rave-alert-inbox.service",
    "tempo.service",
]
# RAVE's, then the observability stack's: Prometheus, the Pushgateway,
# Grafana, PostgreSQL, the exporters, Alertmanager, the blackbox exporter,
# the alert inbox, Tempo (HTTP, OTLP, gRPC, memberlist).
INTERNAL_PORTS = [
    3001, 3010, 3020, 3030,
    9090, 9091, 3000, 5432, 9100, 9113, 9187, 9093, 9115, 9097,
    3200, 4318, 9096, 7946,
]
CURL = "curl -sS --fail --cacert /var/lib/rave-secrets/tls.crt"


def fails_because(machine, command: str, *reasons: str) -> str:
    """Runs a command that must fail, for one of `reasons` (text in its
    output): a bare `fail` also passes on "command not found"."""
    status, out = machine.execute(f"{command} 2>&1")
    assert status != 0, f"`{command}` succeeded: {out}"
    assert any(r in out for r in reasons), f"`{command}` failed, but not because {reasons}: {out}"
    return out


def finds_nothing(machine, command: str) -> None:
    """A grep that must find nothing: exit 1, not 2 (an error)."""
    status, out = machine.execute(command)
    assert status == 1, f"`{command}` exited {status} (1 = nothing found): {out}"


def http_code(machine, args: str) -> str:
    return machine.succeed(f"curl -s -o /dev/null -w '%{{http_code}}' {args}").strip()


start_all()

with subtest("the system boots and every unit is active"):
    server.wait_for_unit("multi-user.target")
    for unit in ["rave-dev-secrets.service"] + RAVE_UNITS + OBSERVABILITY_UNITS:
        server.wait_for_unit(unit)
    for port in [3001, 3010, 3020, 3030, 3002, 9090, 9091, 3000, 9093, 9115, 9097, 3200, 4318]:
        server.wait_for_open_port(port)
    failed = server.succeed("systemctl list-units --failed --plain --no-legend").strip()
    assert failed == "", f"failed units: {failed}"

with subtest("each RAVE unit runs hardened"):
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "PrivateUsers": "yes",
        "PrivateMounts": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "ProtectProc": "invisible",
        "ProcSubset": "pid",
        "RestrictNamespaces": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "RemoveIPC": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "SystemCallArchitectures": "native",
        "UMask": "0077",
        "MemoryMax": str(256 * 1024 * 1024),
        "CPUQuotaPerSecUSec": "500ms",
    }
    for unit in RAVE_UNITS:
        props = ",".join(expected)
        shown = dict(
            line.split("=", 1)
            for line in server.succeed(f"systemctl show {unit} --property={props}").splitlines()
            if "=" in line
        )
        for key, value in expected.items():
            assert shown.get(key) == value, f"{unit}: {key}={shown.get(key)!r}, expected {value!r}"
        # The real renderer, scored by systemd itself: 1.0 or lower is SAFE.
        print(server.succeed(f"systemd-analyze security --threshold=10 {unit} | tail -n 1"))

with subtest("HTTP endpoints answer on loopback only"):
    for port in [3001, 3010, 3020, 3030]:
        server.succeed(f"curl -sS --fail http://127.0.0.1:{port}/readyz")
        metrics = server.succeed(f"curl -sS --fail http://127.0.0.1:{port}/metrics")
        assert "process_resident_memory_bytes" in metrics, f"no process metrics on {port}"
    listening = server.succeed("ss -Htln")
    for port in INTERNAL_PORTS:
        for line in listening.splitlines():
            local = line.split()[3]
            if local.endswith(f":{port}"):
                assert local.startswith(("127.0.0.1:", "[::1]:")), f"{local} is not loopback"
    server.succeed(f"{CURL} https://localhost:3002/healthz")
    status = http_code(server, "--cacert /var/lib/rave-secrets/tls.crt https://localhost:3002/metrics")
    assert status == "404", f"/metrics through nginx answered {status}"

with subtest("TLS: 1.2 and 1.3 only, with HSTS"):
    server.succeed("openssl s_client -connect localhost:3002 -tls1_3 </dev/null")
    server.succeed("openssl s_client -connect localhost:3002 -tls1_2 </dev/null")
    # The client offers TLS 1.1 (security level 0); nginx refuses it with
    # alert 70, protocol_version.
    fails_because(
        server,
        "openssl s_client -connect localhost:3002 -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' </dev/null",
        "alert protocol version",
    )
    headers = server.succeed(f"{CURL} -D - -o /dev/null https://localhost:3002/healthz").lower()
    assert "strict-transport-security" in headers, headers

with subtest("SSH takes keys only"):
    client.succeed("mkdir -p -m 700 /root/.ssh")
    client.succeed(f"cat > /root/.ssh/id_ed25519 <<'EOF'\n{SNAKEOIL_PRIVATE_KEY}\nEOF")
    client.succeed("chmod 600 /root/.ssh/id_ed25519")
    ssh = "ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10"
    client.wait_until_succeeds(f"{ssh} root@server true", timeout=60)
    effective = server.succeed("sshd -T").lower()
    for setting in ["passwordauthentication no", "kbdinteractiveauthentication no", "permitrootlogin without-password"]:
        assert setting in effective, f"sshd: expected {setting}"
    fails_because(
        client,
        f"{ssh} -o PubkeyAuthentication=no -o PreferredAuthentications=password,keyboard-interactive"
        " -o BatchMode=yes root@server true",
        "Permission denied (publickey)",
    )

with subtest("the firewall opens 22 and 3002 only"):
    client.succeed("nc -z -w 5 server 22")
    client.succeed("nc -z -w 5 server 3002")
    # Dropped by the firewall (a timeout), not refused by a closed port.
    for port in INTERNAL_PORTS + [80, 443]:
        fails_because(client, f"nc -vz -w 3 server {port}", "timed out")

with subtest("secrets are readable only by their service"):
    for name in ["relay.token", "ingest.token", "operator.token", "github.secret", "agent-dev.token"]:
        mode = server.succeed(f"stat -c '%a %U' /var/lib/rave-secrets/{name}").strip()
        assert mode == "600 root", f"{name}: {mode}"
    server.succeed("id rave_ingest && id rave_dedup_store")
    fails_because(server, "runuser -u rave_ingest -- cat /var/lib/rave-secrets/github.secret", "Permission denied")
    server.succeed("test -r /run/credentials/rave-ingest.service/source-github-secret-0")
    fails_because(
        server,
        "runuser -u rave_dedup_store -- cat /run/credentials/rave-ingest.service/source-github-secret-0",
        "Permission denied",
    )
    fails_because(
        server,
        "runuser -u rave_ingest -- cat /run/credentials/rave-dedup-store.service/relay-token",
        "Permission denied",
    )
    # dedup-store stores only for ingest and shows events only to operators.
    for request in ["-X POST -H 'content-type: application/json' -d '{}'", ""]:
        code = http_code(server, f"{request} http://127.0.0.1:3010/v1/events")
        assert code == "401", f"unauthenticated dedup-store call answered {code}"
    secret = server.succeed("cat /var/lib/rave-secrets/github.secret").strip()
    # Not in any unit's settings, not in the store, not in the journal.
    finds_nothing(server, f"grep -rqF '{secret}' /etc/systemd/system/rave-*.service")
    finds_nothing(server, f"journalctl -b --no-pager | grep -qF '{secret}'")

with subtest("ravectl verify passes: signatures, dedup, agents, reporting, scraping, alert delivery, dashboards"):
    out = server.succeed("ravectl verify --state-dir /etc/rave 2>&1")
    print(out)
    assert "FAIL" not in out, out
    # An alert went through Alertmanager to the inbox people read.
    assert "a test alert was delivered through Alertmanager" in out, out
    server.succeed("journalctl -u rave-alert-inbox --no-pager | grep -q RaveVerifyDelivery")

with subtest("a pgBackRest backup runs and its result reaches the Pushgateway"):
    # The events verify stored are in it; the restore drill itself runs in
    # the test command against the local stack (docs/deploy.md, "Backups").
    server.succeed("systemctl start pgbackrest-default-full.service")
    info = json.loads(
        server.succeed("runuser -u pgbackrest -- pgbackrest --stanza=default info --output=json")
    )
    assert info[0]["backup"][-1]["type"] == "full", info
    server.wait_until_succeeds(
        "curl -sf http://127.0.0.1:9091/metrics | grep -q '^rave_backup_last_ok{.*} 1$'", timeout=60
    )
    archived = server.succeed(
        "runuser -u postgres -- psql -tAc 'SELECT failed_count FROM pg_stat_archiver'"
    ).strip()
    assert archived == "0", f"WAL archiving failed {archived} times"

with subtest("Grafana lists the three provisioned dashboards"):
    password = server.succeed("cat /var/lib/rave-secrets/grafana-admin.password").strip()
    found = json.loads(
        server.succeed(
            f"{CURL} -u admin:{password} 'https://localhost:3002/grafana/api/search?type=dash-db'"
        )
    )
    titles = sorted(d["title"] for d in found)
    assert len(titles) == 3, titles
    code = http_code(
        server, "--cacert /var/lib/rave-secrets/tls.crt 'https://localhost:3002/grafana/api/search?type=dash-db'"
    )
    assert code == "401", f"Grafana without a login answered {code}"

with subtest("Grafana: /grafana redirects, its root URL is HTTPS, Tempo is provisioned, OIDC is offered"):
    answer = server.succeed(
        f"{CURL} -o /dev/null -w '%{{http_code}} %{{redirect_url}}' https://localhost:3002/grafana"
    ).strip()
    assert answer == "301 https://localhost:3002/grafana/", answer
    admin = f"{CURL} -u admin:{password} https://localhost:3002/grafana/api"
    settings = json.loads(server.succeed(f"{admin}/frontend/settings"))
    assert settings["appUrl"] == "https://localhost:3002/grafana/", settings["appUrl"]
    assert "generic_oauth" in settings["oauth"], settings["oauth"]
    sources = json.loads(server.succeed(f"{admin}/datasources"))
    assert sorted(d["type"] for d in sources) == ["prometheus", "tempo"], sources
    prometheus = next(d for d in sources if d["type"] == "prometheus")
    link = prometheus["jsonData"]["exemplarTraceIdDestinations"][0]
    assert link["datasourceUid"] == "rave-tempo", link
    server.succeed(f"{admin}/datasources/uid/rave-tempo/health | jq -e '.status == \"OK\"'")
    # Grafana Live's websocket is upgraded through nginx.
    _, live = server.execute(
        "curl -sS -i -N --max-time 3 --cacert /var/lib/rave-secrets/tls.crt"
        f" -u admin:{password} -H 'Connection: Upgrade' -H 'Upgrade: websocket'"
        " -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='"
        " https://localhost:3002/grafana/api/live/ws"
    )
    assert "HTTP/1.1 101" in live, live

with subtest("a webhook's trace opens by task id in Tempo"):
    # ravectl verify's traces suite found one; here the same, by hand.
    secret = server.succeed("cat /var/lib/rave-secrets/github.secret").strip()
    body = '{"zen":"traced"}'
    signature = server.succeed(
        f"printf %s '{body}' | openssl dgst -sha256 -hmac '{secret}' | sed 's/^.* //'"
    ).strip()
    receipt = json.loads(
        server.succeed(
            f"{CURL} -X POST https://localhost:3002/hooks/github -H 'x-github-event: push'"
            f" -H 'x-github-delivery: vm-trace-1' -H 'x-hub-signature-256: sha256={signature}'"
            f" -d '{body}'"
        )
    )
    tree = server.wait_until_succeeds(
        f"ravectl trace {receipt['task_id']} --state-dir /etc/rave | grep -q task.create"
        f" && ravectl trace {receipt['task_id']} --state-dir /etc/rave",
        timeout=120,
    )
    assert receipt["trace_id"] in tree, tree
    for service in ["ingest", "dedup-store", "task-dispatcher"]:
        assert service in tree, tree

with subtest("Prometheus scrapes every target and loads the rules"):
    server.wait_until_succeeds(
        "curl -sS http://127.0.0.1:9090/api/v1/targets"
        " | jq -e '[.data.activeTargets[] | select(.health != \"up\")] | length == 0'",
        timeout=120,
    )
    server.succeed(
        "curl -sS http://127.0.0.1:9090/api/v1/rules"
        " | jq -e '[.data.groups[].rules[] | select(.type == \"alerting\")] | length >= 14'"
    )

with subtest("memory limits are enforced by the cgroups"):
    limits = {unit: 256 for unit in RAVE_UNITS}
    limits.update({"prometheus.service": 512, "grafana.service": 256})
    for unit, mib in limits.items():
        value = server.succeed(f"cat /sys/fs/cgroup/system.slice/{unit}/memory.max").strip()
        assert value == str(mib * 1024 * 1024), f"{unit}: memory.max={value}"
    # A process past the limit in such a unit is killed, not the host.
    # `tail` holds a newline-free stream in memory: 300 MB against 32 MB.
    fails_because(
        server,
        "systemd-run --wait --pipe -p MemoryMax=32M -p MemorySwapMax=0"
        " sh -c 'head -c 300000000 /dev/zero | tail -c 1 >/dev/null'",
        "oom-kill",
    )

with subtest("a killed service is restarted by systemd"):
    before = server.succeed("systemctl show -p MainPID --value rave-ingest.service").strip()
    server.succeed("systemctl kill -s KILL rave-ingest.service")
    server.wait_until_succeeds(
        f"test \"$(systemctl show -p MainPID --value rave-ingest.service)\" != {before}"
        " && test \"$(systemctl show -p MainPID --value rave-ingest.service)\" != 0",
        timeout=30,
    )
    server.wait_until_succeeds("curl -sS --fail http://127.0.0.1:3001/readyz", timeout=30)

with subtest("a restart refuses no connection, and a reload applies in place"):
    # Requests through nginx to ingest for the whole restart, in the
    # background: each socket is systemd's, so every one is answered.
    server.succeed(
        "(for i in $(seq 300); do curl -s -o /dev/null -w '%{http_code}\\n'"
        " --cacert /var/lib/rave-secrets/tls.crt https://localhost:3002/healthz;"
        " done > /tmp/codes 2>/dev/null; touch /tmp/load.done) >/dev/null 2>&1 &"
    )
    server.succeed("systemctl restart rave-ingest.service rave-task-dispatcher.service")
    server.wait_until_succeeds("test -e /tmp/load.done", timeout=180)
    codes = server.succeed("sort /tmp/codes | uniq -c").strip()
    assert codes.split()[1:] == ["200"], f"answers while ingest restarted: {codes}"
    server.succeed("systemctl reload rave-task-dispatcher.service")
    server.wait_until_succeeds(
        "curl -sS http://127.0.0.1:3020/metrics"
        " | grep -q '^rave_config_reloads_total{result=\"applied\"} 1'",
        timeout=30,
    )

with subtest("two replicas of every service run, and nginx balances over them"):
    replicas.wait_for_unit("multi-user.target")
    for service in ["ingest", "dedup-store", "task-dispatcher", "agent-reporter"]:
        for k in [1, 2]:
            replicas.wait_for_unit(f"rave-{service}@{k}.service")
    out = replicas.succeed("ravectl verify --state-dir /etc/rave 2>&1")
    print(out)
    assert "FAIL" not in out, out
    # Unsigned deliveries through nginx: each replica of ingest answers some.
    for _ in range(40):
        replicas.succeed(
            "curl -s -o /dev/null --cacert /var/lib/rave-secrets/tls.crt"
            " -X POST -d '{}' https://localhost:3002/hooks/github"
        )
    for port in [3001, 3101]:
        answered = replicas.succeed(
            f"curl -sS --fail http://127.0.0.1:{port}/metrics"
            " | awk '/^webhook_requests_total/ {s += $2} END {print s + 0}'"
        ).strip()
        assert float(answered) > 0, f"the ingest replica on {port} answered no webhook"
