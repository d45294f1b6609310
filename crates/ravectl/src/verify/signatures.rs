//! Suite 4, signatures: every scheme's signatures accepted, forgeries refused.

use super::{Ctx, expect};

pub(super) fn signatures(ctx: &Ctx) -> anyhow::Result<String> {
    let body = br#"{"verify":"signatures"}"#;
    let now = rave_service::sign::now_unix();
    let run = &ctx.run;
    let github = ctx.secret("github.secret")?;
    expect(
        &ctx.github(&format!("verify-gh-{run}"), body, &github)?,
        202,
        "signed github",
    )?;
    expect(
        &ctx.github(&format!("verify-gh2-{run}"), body, "wrong-secret")?,
        401,
        "github with a wrong secret",
    )?;
    let standard = ctx.secret("standard.secret")?;
    let id = format!("verify-std-{run}");
    let signed =
        |secret: &str, id: &str, body: &[u8]| rave_service::sign::standard(secret, id, now, body);
    let std_headers = |sig: String| {
        vec![
            ("webhook-id", id.clone()),
            ("webhook-timestamp", now.to_string()),
            ("webhook-signature", sig),
        ]
    };
    expect(
        &ctx.https(
            "POST",
            "/hooks/standard",
            &std_headers(signed(&standard, &id, body)),
            body,
        )?,
        202,
        "signed standard",
    )?;
    let tampered = ctx.https(
        "POST",
        "/hooks/standard",
        &std_headers(signed(&standard, &id, body)),
        b"{\"verify\":\"tampered\"}",
    )?;
    expect(&tampered, 401, "tampered standard")?;
    let gitlab = ctx.secret("gitlab-signing.secret")?;
    let gid = format!("verify-gl-{run}");
    let gl_headers = vec![
        ("x-gitlab-event", "Push Hook".to_owned()),
        ("idempotency-key", gid.clone()),
        ("webhook-id", gid.clone()),
        ("webhook-timestamp", now.to_string()),
        ("webhook-signature", signed(&gitlab, &gid, body)),
    ];
    expect(
        &ctx.https("POST", "/hooks/gitlab", &gl_headers, body)?,
        202,
        "gitlab signing token",
    )?;
    let token = ctx.secret("gitlab-token.secret")?;
    let tok_headers = vec![
        ("x-gitlab-event", "Push Hook".to_owned()),
        ("idempotency-key", format!("verify-gl2-{run}")),
        ("x-gitlab-token", token),
    ];
    expect(
        &ctx.https("POST", "/hooks/gitlab", &tok_headers, body)?,
        202,
        "gitlab secret token",
    )?;
    // One HMAC preset: Stripe's scheme (timestamp and id signed).
    let stripe = ctx.secret("stripe.secret")?;
    for (secret, status, what) in [
        (stripe.as_str(), 202, "signed stripe"),
        ("wrong-secret", 401, "stripe with a wrong secret"),
    ] {
        let delivery = rave_service::sign::providers::delivery(
            "stripe",
            secret,
            rave_service::sign::providers::Event {
                id: &format!("evt_verify_{run}_{status}"),
                event_type: None,
                now,
                body: None,
            },
        )
        .expect("stripe signs");
        expect(
            &ctx.https("POST", "/hooks/stripe", &delivery.headers, &delivery.body)?,
            status,
            what,
        )?;
    }
    Ok("github, standard, gitlab signing token, gitlab token and stripe accepted; forged and tampered refused".into())
}
