//! The HTTP side of every service's error type, written once.
//!
//! Each service keeps one error enum of its own codes and messages and says,
//! through [`ServiceError`], which class each variant is in. How a class
//! becomes a response lives here: the JSON body, the status, `Retry-After`
//! on 503, `WWW-Authenticate` on a bearer 401, and the opaque 500 whose cause
//! chain is logged once. [`impl_response_error!`](crate::impl_response_error)
//! turns that into actix-web's `ResponseError`; [`counted`] counts refusals.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, WWW_AUTHENTICATE};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::http::{error_response, internal_error, retry_later};

/// What a service's error says of itself.
pub trait ServiceError: std::error::Error + 'static {
    /// The stable, machine-readable code in the JSON body and the `reason`
    /// label of the service's rejected-requests counter.
    fn code(&self) -> &'static str;
    /// Which class of error it is: that decides the status and the body.
    fn class(&self) -> ErrorClass<'_>;
}

/// How an error becomes a response.
#[derive(Debug)]
pub enum ErrorClass<'a> {
    /// The request is refused for a reason the caller can act on: this
    /// status (4xx), the error's own message.
    Refused(StatusCode),
    /// A missing or unknown bearer token: 401 with `WWW-Authenticate: Bearer`.
    Unauthorized,
    /// A dependency is down: 503 with `Retry-After`; the cause is logged,
    /// never sent.
    Unavailable {
        retry_after_secs: u32,
        cause: &'a anyhow::Error,
    },
    /// Not now: this status (429 past a rate, 503 when full) with
    /// `Retry-After`; nothing failed, so nothing is logged as an error.
    Later {
        status: StatusCode,
        retry_after_secs: u32,
    },
    /// A bug or the unforeseen: an opaque 500, its cause chain logged once.
    Unexpected,
}

/// The status `error`'s class answers with.
pub fn status<E: ServiceError>(error: &E) -> StatusCode {
    match error.class() {
        ErrorClass::Refused(status) => status,
        ErrorClass::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorClass::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Later { status, .. } => status,
        ErrorClass::Unexpected => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The response for `error`: the one place an error becomes HTTP.
pub fn response<E: ServiceError>(error: &E) -> HttpResponse {
    match error.class() {
        ErrorClass::Unexpected => internal_error(error),
        ErrorClass::Unavailable {
            retry_after_secs,
            cause,
        } => retry_later(error.code(), &error.to_string(), retry_after_secs, cause),
        ErrorClass::Unauthorized => {
            let mut response =
                error_response(StatusCode::UNAUTHORIZED, error.code(), &error.to_string());
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
        ErrorClass::Refused(status) => {
            tracing::info!(code = error.code(), error = %error, "request refused");
            error_response(status, error.code(), &error.to_string())
        }
        ErrorClass::Later {
            status,
            retry_after_secs,
        } => {
            tracing::debug!(code = error.code(), "request deferred");
            let mut response = error_response(status, error.code(), &error.to_string());
            response.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs),
            );
            response
        }
    }
}

/// One item's answer inside a batch: its own body when it succeeded; its
/// refusal (`{"status", "error": {"code", "message"}}`, counted in
/// `rejected`) as the same refusal alone would be answered. An error of any
/// other class fails the whole call, through [`response`] (and is counted
/// once there).
pub fn item_answer<E: ServiceError>(
    rejected: &Family<ReasonLabel, Counter>,
    answer: Result<serde_json::Value, E>,
) -> Result<serde_json::Value, E> {
    match answer {
        Ok(body) => Ok(body),
        Err(e) => match item_refusal(&e) {
            Some(body) => {
                let _ = counted(rejected, Err::<(), _>(e));
                Ok(body)
            }
            None => Err(e),
        },
    }
}

fn item_refusal<E: ServiceError>(error: &E) -> Option<serde_json::Value> {
    let ErrorClass::Refused(status) = error.class() else {
        return None;
    };
    tracing::info!(code = error.code(), error = %error, "batch item refused");
    Some(serde_json::json!({
        "status": status.as_u16(),
        "error": { "code": error.code(), "message": error.to_string() },
    }))
}

/// actix-web's `ResponseError` for a [`ServiceError`] (a blanket impl of a
/// foreign trait is not allowed, hence a macro).
#[macro_export]
macro_rules! impl_response_error {
    ($error:ty) => {
        impl ::actix_web::ResponseError for $error {
            fn status_code(&self) -> ::actix_web::http::StatusCode {
                $crate::error::status(self)
            }
            fn error_response(&self) -> ::actix_web::HttpResponse {
                $crate::error::response(self)
            }
        }
    };
}

/// The label of every service's rejected-requests counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// An error and its causes, `: `-separated (what `{:#}` prints of an
/// `anyhow::Error`, for any error).
pub fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

/// Counts a refusal in `rejected` by its code, then passes the result on.
pub fn counted<T, E: ServiceError>(
    rejected: &Family<ReasonLabel, Counter>,
    result: Result<T, E>,
) -> Result<T, E> {
    if let Err(e) = &result {
        rejected
            .get_or_create(&ReasonLabel { reason: e.code() })
            .inc();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Sample {
        #[error("no such thing")]
        Missing,
        #[error("who are you")]
        Anonymous,
        #[error("the store is down")]
        Down(#[source] anyhow::Error),
        #[error("unexpected error")]
        Bug(#[source] anyhow::Error),
    }

    impl ServiceError for Sample {
        fn code(&self) -> &'static str {
            match self {
                Self::Missing => "missing",
                Self::Anonymous => "unauthorized",
                Self::Down(_) => "store_unavailable",
                Self::Bug(_) => "internal",
            }
        }
        fn class(&self) -> ErrorClass<'_> {
            match self {
                Self::Missing => ErrorClass::Refused(StatusCode::NOT_FOUND),
                Self::Anonymous => ErrorClass::Unauthorized,
                Self::Down(cause) => ErrorClass::Unavailable {
                    retry_after_secs: 3,
                    cause,
                },
                Self::Bug(_) => ErrorClass::Unexpected,
            }
        }
    }

    async fn body(response: HttpResponse) -> serde_json::Value {
        let bytes = actix_web::body::to_bytes(response.into_body())
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[actix_web::test]
    async fn a_refusal_answers_its_status_with_its_code_and_message() {
        let response = response(&Sample::Missing);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = body(response).await;
        assert_eq!(body["error"]["code"], "missing");
        assert_eq!(body["error"]["message"], "no such thing");
    }

    #[actix_web::test]
    async fn a_bearer_refusal_asks_for_a_bearer_token() {
        let response = response(&Sample::Anonymous);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers().get(WWW_AUTHENTICATE).unwrap(), "Bearer");
    }

    #[actix_web::test]
    async fn an_outage_says_when_to_retry_and_keeps_its_cause_out_of_the_body() {
        let response = response(&Sample::Down(anyhow::anyhow!("password=hunter2 refused")));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response
                .headers()
                .get(actix_web::http::header::RETRY_AFTER)
                .unwrap(),
            "3"
        );
        let body = body(response).await.to_string();
        assert!(
            body.contains("store_unavailable") && !body.contains("hunter2"),
            "{body}"
        );
    }

    #[actix_web::test]
    async fn an_unexpected_error_is_an_opaque_500() {
        let response = response(&Sample::Bug(anyhow::anyhow!(
            "index out of range in foo.rs"
        )));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body(response).await;
        assert_eq!(body["error"]["code"], "internal");
        assert_eq!(body["error"]["message"], "internal error");
    }

    #[test]
    fn counted_counts_each_refusal_by_its_code_and_passes_the_result_on() {
        let rejected = Family::<ReasonLabel, Counter>::default();
        assert!(counted::<(), _>(&rejected, Err(Sample::Missing)).is_err());
        assert!(counted::<(), _>(&rejected, Err(Sample::Missing)).is_err());
        assert_eq!(counted::<_, Sample>(&rejected, Ok(7)).unwrap(), 7);
        assert_eq!(
            rejected
                .get_or_create(&ReasonLabel { reason: "missing" })
                .get(),
            2
        );
        assert_eq!(
            rejected
                .get_or_create(&ReasonLabel { reason: "internal" })
                .get(),
            0
        );
    }
}
