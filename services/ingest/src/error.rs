//! ingest's one error type: its codes and classes; rave-service's `error`
//! module turns it into HTTP.

use actix_web::http::StatusCode;
use rave_service::error::{ErrorClass, ServiceError};

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
    #[error("too many requests from this address failed verification; retry later")]
    TooManyFailures { retry_after_secs: u32 },
    #[error("more than {limit} body bytes are in flight; retry later")]
    Overloaded { limit: usize, retry_after_secs: u32 },
    #[error("the event store is unavailable; retry later")]
    StoreUnavailable {
        retry_after_secs: u32,
        #[source]
        cause: anyhow::Error,
    },
    #[error("unexpected error")]
    Unexpected(#[source] anyhow::Error),
}

impl ServiceError for IngestError {
    fn code(&self) -> &'static str {
        match self {
            Self::UnknownSource(_) => "unknown_source",
            Self::TooManyHeaders { .. } => "too_many_headers",
            Self::HeadersTooLarge { .. } => "headers_too_large",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyUnreadable(_) => "body_unreadable",
            Self::Verification(e) => e.code(),
            Self::TooManyFailures { .. } => "too_many_failed_verifications",
            Self::Overloaded { .. } => "overloaded",
            Self::StoreUnavailable { .. } => "store_unavailable",
            Self::Unexpected(_) => "internal",
        }
    }

    fn class(&self) -> ErrorClass<'_> {
        let refused = ErrorClass::Refused;
        match self {
            Self::UnknownSource(_) => refused(StatusCode::NOT_FOUND),
            Self::TooManyHeaders { .. } | Self::HeadersTooLarge { .. } => {
                refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
            }
            Self::BodyTooLarge { .. } => refused(StatusCode::PAYLOAD_TOO_LARGE),
            Self::BodyUnreadable(_) => refused(StatusCode::BAD_REQUEST),
            Self::Verification(e) if e.is_malformed() => refused(StatusCode::BAD_REQUEST),
            // A signature that does not verify: not a bearer token, so no
            // WWW-Authenticate.
            Self::Verification(_) => refused(StatusCode::UNAUTHORIZED),
            Self::TooManyFailures { retry_after_secs } => ErrorClass::Later {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after_secs: *retry_after_secs,
            },
            Self::Overloaded {
                retry_after_secs, ..
            } => ErrorClass::Later {
                status: StatusCode::SERVICE_UNAVAILABLE,
                retry_after_secs: *retry_after_secs,
            },
            Self::StoreUnavailable {
                retry_after_secs,
                cause,
            } => ErrorClass::Unavailable {
                retry_after_secs: *retry_after_secs,
                cause,
            },
            Self::Unexpected(_) => ErrorClass::Unexpected,
        }
    }
}

rave_service::impl_response_error!(IngestError);
