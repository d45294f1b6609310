//! agent-reporter's one error type: its codes and classes; rave-service's
//! `error` module turns it into HTTP.

use actix_web::http::StatusCode;
use rave_service::error::{ErrorClass, ServiceError};

use crate::report::Invalid;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("missing or unknown bearer token")]
    Unauthorized,
    #[error("this agent sends reports faster than its limit; retry later")]
    RateLimited { retry_after_secs: u32 },
    #[error("the body is not JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidReport(Invalid),
    #[error(
        "this report would give the agent more than {0} series; drop custom labels with many values"
    )]
    TooManySeries(i64),
    #[error("the request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the report store is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("unexpected error")]
    Unexpected(#[source] anyhow::Error),
}

impl ServiceError for ReportError {
    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::RateLimited { .. } => "rate_limited",
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidReport(_) => "invalid_report",
            Self::TooManySeries(_) => "too_many_series",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::Unavailable(_) => "store_unavailable",
            Self::Unexpected(_) => "internal",
        }
    }

    fn class(&self) -> ErrorClass<'_> {
        match self {
            Self::Unauthorized => ErrorClass::Unauthorized,
            Self::RateLimited { retry_after_secs } => ErrorClass::Later {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after_secs: *retry_after_secs,
            },
            Self::InvalidJson(_) => ErrorClass::Refused(StatusCode::BAD_REQUEST),
            Self::InvalidReport(_) | Self::TooManySeries(_) => {
                ErrorClass::Refused(StatusCode::UNPROCESSABLE_ENTITY)
            }
            Self::BodyTooLarge { .. } => ErrorClass::Refused(StatusCode::PAYLOAD_TOO_LARGE),
            Self::Unavailable(cause) => ErrorClass::Unavailable {
                retry_after_secs: 1,
                cause,
            },
            Self::Unexpected(_) => ErrorClass::Unexpected,
        }
    }
}

rave_service::impl_response_error!(ReportError);
