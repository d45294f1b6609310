// Shared by the signature targets (included with `include!`): the input is
// NUL-separated fields, each a header value, then the body.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

pub const GITHUB_SECRET: &str = "fuzz-github-secret";
pub const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const GITLAB_TOKEN: &str = "fuzz-gitlab-token";
/// The verifiers' clock in these targets.
pub const NOW: i64 = 1_800_000_000;

/// Splits `data` into `n` header fields and the body.
pub fn fields(data: &[u8], n: usize) -> (Vec<&[u8]>, &[u8]) {
    let mut parts = data.splitn(n + 1, |b| *b == 0);
    let fields = (0..n).map(|_| parts.next().unwrap_or(b"")).collect();
    (fields, parts.next().unwrap_or(b""))
}

/// A header map of the named fields that are valid header values (the HTTP
/// layer never delivers others); an empty field means the header is absent.
pub fn headers(named: &[(&'static str, &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in named {
        if value.is_empty() {
            continue;
        }
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append(HeaderName::from_static(name), value);
        }
    }
    map
}

/// ingest's verifiers for a github, a standard and a gitlab source.
pub fn sources() -> ingest::sources::Sources {
    let settings: ingest::Settings = rave_service::settings::load_with_env(
        None,
        Some(std::collections::HashMap::from([
            ("RAVE_INGEST__STORE__TOKEN".to_owned(), "fuzz-store-token".to_owned()),
            ("RAVE_INGEST__SOURCES__GITHUB__KIND".to_owned(), "github".to_owned()),
            ("RAVE_INGEST__SOURCES__GITHUB__SECRET".to_owned(), GITHUB_SECRET.to_owned()),
            ("RAVE_INGEST__SOURCES__BILLING__KIND".to_owned(), "standard".to_owned()),
            ("RAVE_INGEST__SOURCES__BILLING__SECRET".to_owned(), STANDARD_SECRET.to_owned()),
            ("RAVE_INGEST__SOURCES__GITLAB__KIND".to_owned(), "gitlab".to_owned()),
            ("RAVE_INGEST__SOURCES__GITLAB__SECRET".to_owned(), STANDARD_SECRET.to_owned()),
            ("RAVE_INGEST__SOURCES__GITLAB__TOKEN".to_owned(), GITLAB_TOKEN.to_owned()),
        ])),
    )
    .expect("fuzz settings load");
    ingest::sources::Sources::from_settings(&settings).expect("fuzz sources build")
}
