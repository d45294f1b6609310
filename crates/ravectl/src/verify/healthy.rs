//! Suite 1, healthy: every component answers its health check.

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
