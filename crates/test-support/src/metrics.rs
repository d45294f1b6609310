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
