//! Suite 11, exposure: only nginx beyond loopback; internal endpoints not served.

use anyhow::ensure;

use super::Ctx;

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
