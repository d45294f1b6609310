//! agent-reporter's one error type, turned into HTTP here and nowhere else.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use rave_service::http::{error_response, internal_error, retry_later};

use crate::report::Invalid;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("missing or unknown bearer token")]
    Unauthorized,
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

impl ReportError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidReport(_) => "invalid_report",
            Self::TooManySeries(_) => "too_many_series",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::Unavailable(_) => "store_unavailable",
            Self::Unexpected(_) => "internal",
        }
    }
}

impl ResponseError for ReportError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::InvalidJson(_) => StatusCode::BAD_REQUEST,
            Self::InvalidReport(_) | Self::TooManySeries(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Unexpected(_) => internal_error(self),
            Self::Unavailable(cause) => retry_later(self.code(), &self.to_string(), 1, cause),
            _ => error_response(self.status_code(), self.code(), &self.to_string()),
        }
    }
}
