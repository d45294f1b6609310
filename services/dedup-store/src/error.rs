//! dedup-store's one error type, turned into HTTP here and nowhere else.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use rave_service::http::{error_response, internal_error, retry_later};

#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("no event {event_uuid} from source {source_name}")]
    NotFound {
        source_name: String,
        event_uuid: String,
    },
    #[error("the event store is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("unexpected error")]
    Unexpected(#[source] anyhow::Error),
}

impl DedupError {
    /// The stable, machine-readable code in the JSON body and the `reason` label.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::NotFound { .. } => "event_not_found",
            Self::Unavailable(_) => "store_unavailable",
            Self::Unexpected(_) => "internal",
        }
    }
}

impl ResponseError for DedupError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Unexpected(_) => internal_error(self),
            // The store recovers in about a second (reconnect or commit retry).
            Self::Unavailable(cause) => retry_later(self.code(), &self.to_string(), 1, cause),
            _ => error_response(self.status_code(), self.code(), &self.to_string()),
        }
    }
}

impl From<rave_service::http::BodyError> for DedupError {
    fn from(e: rave_service::http::BodyError) -> Self {
        match e {
            rave_service::http::BodyError::TooLarge { limit } => Self::BodyTooLarge { limit },
            rave_service::http::BodyError::Read(m) => Self::InvalidRequest(m),
        }
    }
}
