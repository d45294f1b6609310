//! Suite 11, exposure: only nginx beyond loopback; internal endpoints not served.

use anyhow::ensure;

use super::Ctx;

/// Internal endpoints nginx must answer 404 for, always: metrics, the
/// relay's hand-off, event inserts (ingest's), readiness.
pub const NOT_PUBLIC: [&str; 4] = ["/metrics", "/v1/internal/events", "/v1/events", "/readyz"];

/// Operators' routes: 404 through nginx unless the operators' API is
/// served, and then refused without an operator token.
pub const OPERATORS: [(&str, &str); 4] = [
    ("GET", "/v1/tasks"),
    ("GET", "/v1/ignored-events"),
    ("POST", "/v1/events/search"),
    ("POST", "/v1/replays"),
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
    let json = [("content-type", "application/json".to_owned())];
    for (method, path) in OPERATORS {
        let answer = ctx.https(method, path, &json, b"{}")?;
        let want = if ctx.stack.operator_api { 401 } else { 404 };
        ensure!(
            answer.status == want,
            "{method} {path} through nginx answered {} (the operators' API is {}: {want} expected)",
            answer.status,
            if ctx.stack.operator_api {
                "served"
            } else {
                "not served"
            }
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
        "internal routes 404 through nginx; operators' routes {}; {checked} internal listeners on loopback only",
        if ctx.stack.operator_api {
            "served, 401 without a token"
        } else {
            "404"
        }
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
