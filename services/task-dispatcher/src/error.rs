//! task-dispatcher's one error type, turned into HTTP here and nowhere else.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use rave_service::http::{error_response, internal_error, retry_later};

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("missing or unknown bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("no task {0}")]
    TaskNotFound(String),
    #[error("the lease is not held with this token (expired, reclaimed or finished)")]
    LeaseLost,
    #[error("{0}")]
    Conflict(String),
    #[error("the task database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("unexpected error")]
    Unexpected(#[source] anyhow::Error),
}

impl DispatchError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::InvalidRequest(_) => "invalid_request",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::TaskNotFound(_) => "task_not_found",
            Self::LeaseLost => "lease_lost",
            Self::Conflict(_) => "conflict",
            Self::Unavailable(_) => "store_unavailable",
            Self::Unexpected(_) => "internal",
        }
    }
}

impl ResponseError for DispatchError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TaskNotFound(_) => StatusCode::NOT_FOUND,
            Self::LeaseLost | Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Unexpected(_) => internal_error(self),
            Self::Unavailable(cause) => retry_later(self.code(), &self.to_string(), 1, cause),
            Self::Unauthorized => {
                let mut response =
                    error_response(self.status_code(), self.code(), &self.to_string());
                response.headers_mut().insert(
                    actix_web::http::header::WWW_AUTHENTICATE,
                    actix_web::http::header::HeaderValue::from_static("Bearer"),
                );
                response
            }
            _ => error_response(self.status_code(), self.code(), &self.to_string()),
        }
    }
}

impl From<rave_service::http::BodyError> for DispatchError {
    fn from(e: rave_service::http::BodyError) -> Self {
        match e {
            rave_service::http::BodyError::TooLarge { limit } => Self::BodyTooLarge { limit },
            rave_service::http::BodyError::Read(m) => Self::InvalidRequest(m),
        }
    }
}
