//! The local stack's limits as a sender meets them through nginx: a burst
//! of genuine deliveries from one address is all accepted; a forged flood
//! from one address is refused cheaply once its failures pile up.

use ravectl::bench::http::{Target, request};
use ravectl::stack::StackFile;

use super::{free_port, up};

fn delivery(host: &str, secret: &str, id: &str) -> Vec<u8> {
    let body = format!("{{\"id\":\"{id}\"}}");
    request(
        "POST",
        host,
        "/hooks/github",
        &[
            ("content-type", "application/json"),
            ("x-github-event", "push"),
            ("x-github-delivery", id),
            (
                "x-hub-signature-256",
                &rave_service::sign::github(secret, body.as_bytes()),
            ),
        ],
        body.as_bytes(),
    )
}

#[tokio::test]
async fn a_thousand_signed_deliveries_at_once_from_one_address_are_all_accepted_and_a_forged_flood_is_not()
 {
    let dir = tempfile::tempdir().unwrap();
    let _stack = up(dir.path(), std::array::from_fn(|_| free_port()));
    let stack = StackFile::read(dir.path()).unwrap();
    let nginx = Target::new(
        stack.public_url.as_deref().unwrap(),
        stack.tls_cert.as_deref(),
    )
    .await
    .unwrap();
    let secret = stack.secret("github.secret").unwrap();

    // 1,000 at once over 50 connections from 127.0.0.1, with nginx's and
    // RAVE's default limits.
    let mut senders = tokio::task::JoinSet::new();
    for connection in 0..50 {
        let (nginx, secret) = (nginx.clone(), secret.clone());
        senders.spawn(async move {
            let mut conn = nginx.connect().await.unwrap();
            let mut statuses = Vec::new();
            for i in 0..20 {
                let raw = delivery(nginx.host(), &secret, &format!("burst-{connection}-{i}"));
                let response = conn.send(&raw).await.unwrap();
                statuses.push(response.status);
                if response.close {
                    conn = nginx.connect().await.unwrap();
                }
            }
            statuses
        });
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(answers) = senders.join_next().await {
        for status in answers.unwrap() {
            *statuses.entry(status).or_insert(0) += 1;
        }
    }
    assert_eq!(
        statuses,
        [(202, 1000)].into(),
        "every genuine delivery accepted"
    );

    // Forged deliveries from the same address: refused by ingest (401),
    // then, past the address's failure budget, before their bodies are
    // read (429 with ingest's own code, not nginx's page).
    let mut conn = nginx.connect().await.unwrap();
    let mut forged = std::collections::BTreeMap::new();
    for i in 0..60 {
        let raw = delivery(nginx.host(), "not-the-secret", &format!("forged-{i}"));
        let response = conn.send(&raw).await.unwrap();
        let code = serde_json::from_slice::<serde_json::Value>(&response.body)
            .ok()
            .and_then(|b| b["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        *forged.entry((response.status, code)).or_insert(0) += 1;
        if response.close {
            conn = nginx.connect().await.unwrap();
        }
    }
    let refused_cheaply = forged
        .get(&(429, "too_many_failed_verifications".to_owned()))
        .copied()
        .unwrap_or(0);
    let verified_and_refused = forged
        .get(&(401, "invalid_signature".to_owned()))
        .copied()
        .unwrap_or(0);
    assert_eq!(refused_cheaply + verified_and_refused, 60, "{forged:?}");
    assert!((30..=35).contains(&verified_and_refused), "{forged:?}");
}
