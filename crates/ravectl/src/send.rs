//! `ravectl send`: one correctly signed webhook to the local stack.

use std::path::Path;

use rave_service::sign;
use rave_service::sign::providers;

use crate::cli::SendArgs;
use crate::stack::StackFile;

fn read_secret(dir: &Path, file: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(dir.join(file))?
        .trim_end()
        .to_owned())
}

pub async fn run(args: SendArgs) -> anyhow::Result<i32> {
    let stack = StackFile::read(&args.state_dir)?;
    let delivery = args
        .delivery
        .clone()
        .unwrap_or_else(|| format!("ravectl-{}", crate::secrets::hex_token(8)));
    let now = sign::now_unix();
    let dir = &stack.secrets_dir;
    let client = reqwest::Client::new();
    let (path, body, request) = match args.source.as_str() {
        "github" => {
            let body = args
                .body
                .clone()
                .unwrap_or_else(|| r#"{"ref":"refs/heads/main","after":"0000000"}"#.into());
            let request = client
                .post(format!("{}/hooks/github", stack.ingest_url))
                .header("x-github-event", args.event.as_deref().unwrap_or("push"))
                .header("x-github-delivery", &delivery)
                .header(
                    "x-hub-signature-256",
                    sign::github(&read_secret(dir, "github.secret")?, body.as_bytes()),
                );
            ("github", body, request)
        }
        "gitlab" => {
            let body = args
                .body
                .clone()
                .unwrap_or_else(|| r#"{"object_kind":"push"}"#.into());
            let secret = read_secret(dir, "gitlab-signing.secret")?;
            let request = client
                .post(format!("{}/hooks/gitlab", stack.ingest_url))
                .header(
                    "x-gitlab-event",
                    args.event.as_deref().unwrap_or("Push Hook"),
                )
                .header("idempotency-key", &delivery)
                .header("webhook-id", &delivery)
                .header("webhook-timestamp", now.to_string())
                .header(
                    "webhook-signature",
                    sign::standard(&secret, &delivery, now, body.as_bytes()),
                );
            ("gitlab", body, request)
        }
        "gitlab-token" => {
            let body = args
                .body
                .clone()
                .unwrap_or_else(|| r#"{"object_kind":"push"}"#.into());
            let request = client
                .post(format!("{}/hooks/gitlab", stack.ingest_url))
                .header(
                    "x-gitlab-event",
                    args.event.as_deref().unwrap_or("Push Hook"),
                )
                .header("idempotency-key", &delivery)
                .header("x-gitlab-token", read_secret(dir, "gitlab-token.secret")?);
            ("gitlab", body, request)
        }
        "standard" => {
            let body = args.body.clone().unwrap_or_else(|| {
                r#"{"type":"example.created","timestamp":"2026-11-27T00:00:00Z","data":{}}"#.into()
            });
            let secret = read_secret(dir, "standard.secret")?;
            let request = client
                .post(format!("{}/hooks/standard", stack.ingest_url))
                .header("webhook-id", &delivery)
                .header("webhook-timestamp", now.to_string())
                .header(
                    "webhook-signature",
                    sign::standard(&secret, &delivery, now, body.as_bytes()),
                );
            ("standard", body, request)
        }
        provider if providers::PROVIDERS.contains(&provider) => {
            let secret = read_secret(dir, &format!("{provider}.secret"))?;
            let signed = providers::delivery(
                provider,
                &secret,
                providers::Event {
                    id: &delivery,
                    event_type: args.event.as_deref(),
                    now,
                    body: args.body.as_deref().map(str::as_bytes),
                },
            )
            .expect("a listed provider signs");
            let mut request = client.post(format!("{}/hooks/{provider}", stack.ingest_url));
            // content-type is set below, for every source.
            for (name, value) in signed.headers.iter().filter(|(n, _)| *n != "content-type") {
                request = request.header(*name, value);
            }
            let body = String::from_utf8(signed.body)?;
            (provider, body, request)
        }
        other => {
            anyhow::bail!(
                "unknown source {other:?}; use github, gitlab, gitlab-token, standard or one of {}",
                providers::PROVIDERS.join(", ")
            )
        }
    };
    let response = request
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    println!("POST /hooks/{path} delivery={delivery} -> {status} {text}");
    Ok(if status.is_success() { 0 } else { 1 })
}
