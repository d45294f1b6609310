//! `alertmanager`: Alertmanager's webhook receiver. Alertmanager signs
//! nothing; it sends the bearer token of its `http_config.authorization`,
//! compared here in constant time against every configured token.
//!
//! A notification has no delivery id, and Alertmanager sends the same one
//! again on every `repeat_interval` and on retries. The id is derived from
//! what makes a notification new: its group, its status and every alert's
//! fingerprint, status and start (and end, once resolved: a firing alert's
//! `endsAt` is only how long Prometheus's last send is valid, refreshed on
//! every evaluation). A resend of the same state is the same event; an
//! alert joining, firing again or resolving is a new one.

use actix_web::http::header::HeaderMap;
use rave_service::ids::{EventType, EventUuid};
use rave_service::settings::Secret;
use ring::digest;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Verified, VerifyError, malformed, required};

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Firing,
    Resolved,
}

impl Status {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// The parts of Alertmanager's webhook payload (version 4) the id needs.
#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "groupKey")]
    group_key: String,
    status: Status,
    alerts: Vec<Alert>,
}

#[derive(Deserialize)]
struct Alert {
    status: Status,
    fingerprint: String,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt")]
    ends_at: String,
}

fn body_error(reason: impl Into<String>) -> VerifyError {
    VerifyError::MalformedBody(reason.into())
}

/// A timestamp as Unix nanoseconds, so two spellings of one instant agree.
fn instant(value: &str, field: &str) -> Result<i128, VerifyError> {
    OffsetDateTime::parse(value, &Rfc3339)
        .map(OffsetDateTime::unix_timestamp_nanos)
        .map_err(|_| body_error(format!("alerts[].{field} is not an RFC 3339 time")))
}

pub(super) fn verify(
    tokens: &[Secret],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Verified, VerifyError> {
    const HEADER: &str = "authorization";
    let value = required(headers, &[HEADER])?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or_else(|| malformed(HEADER, "expected Bearer <token>"))?;
    if !super::any_token_matches(tokens, token) {
        return Err(VerifyError::InvalidToken);
    }
    // Authenticated: only now is the body parsed.
    let notification: Notification = serde_json::from_slice(body)
        .map_err(|e| body_error(format!("not an Alertmanager notification: {e}")))?;
    if notification.alerts.is_empty() {
        return Err(body_error("the notification has no alerts"));
    }
    let mut alerts = Vec::with_capacity(notification.alerts.len());
    for alert in &notification.alerts {
        let ends = instant(&alert.ends_at, "endsAt")?;
        alerts.push((
            alert.fingerprint.as_str(),
            alert.status.as_str(),
            instant(&alert.starts_at, "startsAt")?,
            match alert.status {
                Status::Firing => 0,
                Status::Resolved => ends,
            },
        ));
    }
    // Alertmanager orders a group's alerts as it likes: the id must not.
    alerts.sort_unstable();
    let mut context = digest::Context::new(&digest::SHA256);
    for part in [
        notification.group_key.as_str(),
        notification.status.as_str(),
    ] {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part.as_bytes());
    }
    for (fingerprint, status, starts, ends) in alerts {
        context.update(&(fingerprint.len() as u64).to_be_bytes());
        context.update(fingerprint.as_bytes());
        context.update(status.as_bytes());
        context.update(&starts.to_be_bytes());
        context.update(&ends.to_be_bytes());
    }
    let id = format!("am-{}", hex::encode(context.finish()));
    Ok(Verified {
        event_uuid: EventUuid::parse(id).expect("a hex digest is a valid delivery id"),
        event_type: EventType::parse(format!("alert.{}", notification.status.as_str()))
            .expect("a valid event type"),
    })
}

#[cfg(test)]
mod tests;
