//! Doubles of the senders' REST APIs, written from the providers' own
//! descriptions: they send deliveries to a receiver, keep a delivery log,
//! and serve the endpoints RAVE's reconciler calls. No real GitHub or
//! GitLab can run here.

pub mod github;
pub mod gitlab;

use std::future::Future;
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::Value;

/// One request a double answered, and its answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exchange {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    /// The answer's headers, lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Exchange {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, Default)]
pub struct Transcript(Arc<Mutex<Vec<Exchange>>>);

impl Transcript {
    pub fn record(&self, exchange: Exchange) {
        self.0.lock().unwrap().push(exchange);
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.0.lock().unwrap().clone()
    }
}

/// The answer to `req`: `status`, `headers` and the JSON `body`, kept in
/// `transcript` as it went out.
fn respond(
    transcript: &Transcript,
    req: &HttpRequest,
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
) -> HttpResponse {
    let mut response =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("a status code"));
    for (k, v) in &headers {
        response.insert_header((k.as_str(), v.as_str()));
    }
    let bytes = serde_json::to_vec(&body).expect("JSON");
    transcript.record(Exchange {
        method: req.method().as_str().to_owned(),
        path: req.path().to_owned(),
        query: req.query_string().to_owned(),
        status,
        headers,
        body,
    });
    response.body(bytes)
}

/// Serves `handle` on a loopback port it picks, one worker; its base URL.
async fn serve<F, Fut>(handle: F) -> String
where
    F: Fn(HttpRequest, web::Bytes) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = HttpResponse> + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("bound").port();
    let server = HttpServer::new(move || {
        let handle = handle.clone();
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            handle(req, body)
        }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("listen")
    .run();
    tokio::spawn(server);
    format!("http://127.0.0.1:{port}")
}
