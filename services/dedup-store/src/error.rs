//! dedup-store's one error type: its codes and classes; rave-service's
//! `error` module turns it into HTTP.

use actix_web::http::StatusCode;
use rave_service::error::{ErrorClass, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("the request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("no event {event_uuid} from source {source_name}")]
    NotFound {
        source_name: String,
        event_uuid: String,
    },
    #[error("source {0} has no reconciler: configure reconcile.sources.{0}")]
    NotReconciled(String),
    /// A value PostgreSQL would refuse (NUL in a stored header).
    #[error("{0}")]
    Unstorable(#[from] rave_service::content::Unstorable),
    #[error("the event store is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("unexpected error")]
    Unexpected(#[source] anyhow::Error),
}

impl ServiceError for DedupError {
    fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::Unauthorized => "unauthorized",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::NotFound { .. } => "event_not_found",
            Self::NotReconciled(_) => "source_not_reconciled",
            Self::Unstorable(_) => "unstorable_value",
            Self::Unavailable(_) => "store_unavailable",
            Self::Unexpected(_) => "internal",
        }
    }

    fn class(&self) -> ErrorClass<'_> {
        match self {
            Self::InvalidRequest(_) => ErrorClass::Refused(StatusCode::BAD_REQUEST),
            Self::Unauthorized => ErrorClass::Unauthorized,
            Self::BodyTooLarge { .. } => ErrorClass::Refused(StatusCode::PAYLOAD_TOO_LARGE),
            Self::NotFound { .. } => ErrorClass::Refused(StatusCode::NOT_FOUND),
            Self::NotReconciled(_) => ErrorClass::Refused(StatusCode::NOT_FOUND),
            Self::Unstorable(_) => ErrorClass::Refused(StatusCode::BAD_REQUEST),
            // The store recovers in about a second (reconnect or commit retry).
            Self::Unavailable(cause) => ErrorClass::Unavailable {
                retry_after_secs: 1,
                cause,
            },
            Self::Unexpected(_) => ErrorClass::Unexpected,
        }
    }
}

rave_service::impl_response_error!(DedupError);

impl From<rave_service::http::BodyError> for DedupError {
    fn from(e: rave_service::http::BodyError) -> Self {
        match e {
            rave_service::http::BodyError::TooLarge { limit } => Self::BodyTooLarge { limit },
            rave_service::http::BodyError::Read(m) => Self::InvalidRequest(m),
        }
    }
}
