//! task-dispatcher's one error type: its codes and classes; rave-service's
//! `error` module turns it into HTTP.

use actix_web::http::StatusCode;
use rave_service::error::{ErrorClass, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("missing or unknown bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("this agent sends requests faster than its limit; retry later")]
    RateLimited { retry_after_secs: u32 },
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("no task {0}")]
    TaskNotFound(String),
    #[error("no replay {0}")]
    ReplayNotFound(String),
    #[error("no quarantine record {0}")]
    QuarantineRecordNotFound(i64),
    /// A value PostgreSQL would refuse (NUL, a value past its limit).
    #[error("{0}")]
    Unstorable(#[from] rave_service::content::Unstorable),
    #[error("the lease is not held with this token (expired, reclaimed or finished)")]
    LeaseLost,
    #[error("{0}")]
    Conflict(String),
    #[error("replays need dedup-store's search: configure [events_store]")]
    ReplayNotConfigured,
    #[error("dedup-store's search is unavailable")]
    EventsStoreUnavailable(#[source] anyhow::Error),
    #[error("the task database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("unexpected error")]
    Unexpected(#[source] anyhow::Error),
}

impl ServiceError for DispatchError {
    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
            Self::InvalidRequest(_) => "invalid_request",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::TaskNotFound(_) => "task_not_found",
            Self::QuarantineRecordNotFound(_) => "quarantine_record_not_found",
            Self::ReplayNotFound(_) => "replay_not_found",
            Self::Unstorable(_) => "unstorable_value",
            Self::LeaseLost => "lease_lost",
            Self::Conflict(_) => "conflict",
            Self::ReplayNotConfigured => "replay_not_configured",
            Self::EventsStoreUnavailable(_) => "events_store_unavailable",
            Self::Unavailable(_) => "store_unavailable",
            Self::Unexpected(_) => "internal",
        }
    }

    fn class(&self) -> ErrorClass<'_> {
        let refused = ErrorClass::Refused;
        match self {
            Self::Unauthorized => ErrorClass::Unauthorized,
            Self::Forbidden(_) => refused(StatusCode::FORBIDDEN),
            Self::RateLimited { retry_after_secs } => ErrorClass::Later {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after_secs: *retry_after_secs,
            },
            Self::InvalidRequest(_) => refused(StatusCode::BAD_REQUEST),
            Self::BodyTooLarge { .. } => refused(StatusCode::PAYLOAD_TOO_LARGE),
            Self::TaskNotFound(_) | Self::QuarantineRecordNotFound(_) | Self::ReplayNotFound(_) => {
                refused(StatusCode::NOT_FOUND)
            }
            Self::Unstorable(_) => refused(StatusCode::BAD_REQUEST),
            Self::LeaseLost | Self::Conflict(_) => refused(StatusCode::CONFLICT),
            Self::ReplayNotConfigured => refused(StatusCode::NOT_FOUND),
            Self::EventsStoreUnavailable(cause) => ErrorClass::Unavailable {
                retry_after_secs: 5,
                cause,
            },
            Self::Unavailable(cause) => ErrorClass::Unavailable {
                retry_after_secs: 1,
                cause,
            },
            Self::Unexpected(_) => ErrorClass::Unexpected,
        }
    }
}

rave_service::impl_response_error!(DispatchError);

impl From<rave_service::http::BodyError> for DispatchError {
    fn from(e: rave_service::http::BodyError) -> Self {
        match e {
            rave_service::http::BodyError::TooLarge { limit } => Self::BodyTooLarge { limit },
            rave_service::http::BodyError::Read(m) => Self::InvalidRequest(m),
        }
    }
}
