//! Suite 2, tls: nginx serves TLS as configured.

use std::process::{Command, Stdio};

use anyhow::{Context as _, ensure};

use super::Ctx;

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
