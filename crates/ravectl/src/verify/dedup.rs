//! Suite 5, dedup: a repeated delivery is stored once.

use anyhow::ensure;

use super::{Ctx, expect};

pub(super) async fn dedup(ctx: &Ctx) -> anyhow::Result<String> {
    let secret = ctx.secret("github.secret")?;
    let delivery = format!("verify-dup-{}", ctx.run);
    let first = ctx.github(&delivery, b"{}", &secret)?;
    expect(&first, 202, "first delivery")?;
    let again = ctx.github(&delivery, b"{}", &secret)?;
    expect(&again, 200, "repeated delivery")?;
    let (a, b) = (
        first.json()["task_id"].clone(),
        again.json()["task_id"].clone(),
    );
    ensure!(a == b && a.is_string(), "task ids differ: {a} vs {b}");
    let operator = ctx.secret("operator.token")?;
    let stored: serde_json::Value = ctx
        .http
        .get(format!(
            "{}/v1/events/github/{delivery}",
            ctx.stack.store_url
        ))
        .bearer_auth(operator.trim())
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        stored["task_id"] == a,
        "dedup-store holds {}, answers said {a}",
        stored["task_id"]
    );
    Ok(format!("stored once, both answers name task {a}"))
}
