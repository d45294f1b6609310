//! Reading Prometheus text exposition in tests.

/// `GET {base_url}/metrics`: a service's exposition, as Prometheus scrapes it.
pub async fn scrape(http: &reqwest::Client, base_url: &str) -> String {
    http.get(format!("{base_url}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the exposition")
}

/// What Prometheus asks for when it wants exemplars: OpenMetrics first.
pub const OPENMETRICS_ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

/// `GET {base_url}/metrics` as Prometheus asks for it with exemplar storage
/// on: the response, to read its content type and body.
pub async fn scrape_openmetrics(http: &reqwest::Client, base_url: &str) -> reqwest::Response {
    http.get(format!("{base_url}/metrics"))
        .header("accept", OPENMETRICS_ACCEPT)
        .send()
        .await
        .expect("GET /metrics")
}

/// The value of the sample `series` (name and labels exactly as exposed),
/// 0 when absent.
pub fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}
