//! Suite 3, http: the status codes senders and agents get through nginx.

use anyhow::ensure;

use super::{Ctx, expect};

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
