//! The edge: every component healthy, TLS as configured, HTTP status codes,
//! only nginx exposed beyond loopback, memory within limits.

use std::process::{Command, Stdio};

use anyhow::{Context as _, ensure};

use super::{Ctx, expect};

pub(super) async fn healthy(ctx: &Ctx) -> anyhow::Result<String> {
    let s = &ctx.stack;
    let mut urls: Vec<String> = crate::stack::RAVE_SERVICES
        .iter()
        .flat_map(|service| s.service_urls(service))
        .map(|u| format!("{u}/readyz"))
        .collect();
    urls.extend(s.pushgateway_url.iter().map(|u| format!("{u}/-/ready")));
    urls.extend(s.prometheus_url.iter().map(|u| format!("{u}/-/ready")));
    for url in &urls {
        let status = ctx
            .http
            .get(url)
            .send()
            .await
            .with_context(|| format!("{url} unreachable"))?
            .status();
        ensure!(status.is_success(), "{url} answered {status}");
    }
    expect(
        &ctx.https("GET", "/healthz", &[], b"")?,
        200,
        "nginx /healthz",
    )?;
    Ok(format!("{} components ready, nginx answering", urls.len()))
}

pub(super) fn tls(ctx: &Ctx) -> anyhow::Result<String> {
    let answer = ctx.https("GET", "/healthz", &[], b"")?;
    let hsts = answer
        .headers
        .get("strict-transport-security")
        .context("no Strict-Transport-Security header")?;
    let host = ctx.public.trim_start_matches("https://");
    for old in ["-tls1", "-tls1_1"] {
        let out = Command::new("openssl")
            .args(["s_client", old, "-connect", host])
            .stdin(Stdio::null())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            !text.contains("Cipher is ECDHE") && !text.contains("Cipher is TLS"),
            "{old} was accepted"
        );
    }
    Ok(format!(
        "certificate verified, TLS 1.0/1.1 refused, HSTS {hsts}"
    ))
}

pub(super) fn http_codes(ctx: &Ctx) -> anyhow::Result<String> {
    let unknown = ctx.https("POST", "/hooks/nope", &[], b"{}")?;
    expect(&unknown, 404, "unknown source")?;
    ensure!(
        unknown.json()["error"]["code"] == "unknown_source",
        "unknown source: {}",
        unknown.body
    );
    let unsigned = ctx.https(
        "POST",
        "/hooks/github",
        &[("x-github-event", "push".into())],
        b"{}",
    )?;
    expect(&unsigned, 400, "unsigned github delivery")?;
    expect(
        &ctx.https("GET", "/no/such/route", &[], b"")?,
        404,
        "unknown route",
    )?;
    let claim = ctx.https("POST", "/v1/agents/claim", &[], b"{}")?;
    expect(&claim, 401, "claim without a token")?;
    Ok("404 unknown source, 400 unsigned, 404 unknown route, 401 without token".into())
}

/// Internal endpoints nginx must answer 404 for: metrics, the relay's
/// hand-off, operators' reads, readiness.
pub const NOT_PUBLIC: [&str; 6] = [
    "/metrics",
    "/v1/internal/events",
    "/v1/tasks",
    "/v1/events",
    "/readyz",
    "/v1/ignored-events",
];

pub(super) fn exposure(ctx: &Ctx) -> anyhow::Result<String> {
    for path in NOT_PUBLIC {
        let answer = ctx.https("GET", path, &[], b"")?;
        ensure!(
            answer.status == 404,
            "{path} is reachable through nginx ({})",
            answer.status
        );
    }
    // Every port but nginx's listens on loopback only.
    let listening = listening_sockets()?;
    let public_port: u16 = ctx
        .public
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let mut checked = 0;
    for pid_port in ctx.stack.components.values() {
        let port = pid_port.1;
        if port == public_port {
            continue;
        }
        for (addr, p) in &listening {
            if *p == port {
                ensure!(
                    addr.is_loopback(),
                    "port {port} listens on {addr}, not loopback"
                );
                checked += 1;
            }
        }
    }
    Ok(format!(
        "internal routes 404 through nginx; {checked} internal listeners on loopback only"
    ))
}

/// (address, port) of every listening TCP socket, from /proc.
fn listening_sockets() -> anyhow::Result<Vec<(std::net::IpAddr, u16)>> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 4 || fields[3] != "0A" {
                continue; // not LISTEN
            }
            let Some((addr, port)) = fields[1].split_once(':') else {
                continue;
            };
            let port = u16::from_str_radix(port, 16)?;
            let bytes = hex::decode(addr)?;
            let ip = if v6 {
                let mut b = [0u8; 16];
                for (i, chunk) in bytes.chunks(4).enumerate() {
                    b[i * 4..i * 4 + 4].copy_from_slice(&[chunk[3], chunk[2], chunk[1], chunk[0]]);
                }
                std::net::IpAddr::from(b)
            } else {
                std::net::IpAddr::from([bytes[3], bytes[2], bytes[1], bytes[0]])
            };
            out.push((ip, port));
        }
    }
    Ok(out)
}

pub(super) fn resources(ctx: &Ctx) -> anyhow::Result<String> {
    let mut seen = Vec::new();
    for (name, (pid, _)) in &ctx.stack.components {
        if !crate::stack::is_rave_service(name) {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("{name} (pid {pid}) is not running"))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS")?;
        let mib = kib / 1024;
        ensure!(
            mib < ctx.memory_limit_mb,
            "{name} uses {mib} MiB, over the {} MiB limit",
            ctx.memory_limit_mb
        );
        seen.push(format!("{name} {mib} MiB"));
    }
    ensure!(!seen.is_empty(), "no RAVE service pids in the stack file");
    Ok(format!(
        "{} (limit {} MiB)",
        seen.join(", "),
        ctx.memory_limit_mb
    ))
}
