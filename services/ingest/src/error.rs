//! ingest's one error type, turned into HTTP here and nowhere else.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use rave_service::http::{error_response, internal_error, retry_later};

use crate::verify::VerifyError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no webhook source named {0:?} is configured")]
    UnknownSource(String),
    #[error("the request has more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("the request's header fields exceed {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("the request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the request body could not be read: {0}")]
    BodyUnreadable(String),
    #[error(transparent)]
    Verification(#[from] VerifyError),
    #[error("the event store is unavailable; retry later")]
    StoreUnavailable {
        retry_after_secs: u32,
        #[source]
        cause: anyhow::Error,
    },
    #[error("unexpected error")]
    Unexpected(#[source] anyhow::Error),
}

impl IngestError {
    /// The stable code in the JSON body and the `reason` metric label.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownSource(_) => "unknown_source",
            Self::TooManyHeaders { .. } => "too_many_headers",
            Self::HeadersTooLarge { .. } => "headers_too_large",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyUnreadable(_) => "body_unreadable",
            Self::Verification(e) => e.code(),
            Self::StoreUnavailable { .. } => "store_unavailable",
            Self::Unexpected(_) => "internal",
        }
    }
}

impl ResponseError for IngestError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::UnknownSource(_) => StatusCode::NOT_FOUND,
            Self::TooManyHeaders { .. } | Self::HeadersTooLarge { .. } => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyUnreadable(_) => StatusCode::BAD_REQUEST,
            Self::Verification(e) if e.is_malformed() => StatusCode::BAD_REQUEST,
            Self::Verification(_) => StatusCode::UNAUTHORIZED,
            Self::StoreUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Unexpected(_) => internal_error(self),
            Self::StoreUnavailable {
                retry_after_secs,
                cause,
            } => retry_later(self.code(), &self.to_string(), *retry_after_secs, cause),
            _ => {
                tracing::info!(code = self.code(), error = %self, "webhook refused");
                error_response(self.status_code(), self.code(), &self.to_string())
            }
        }
    }
}
