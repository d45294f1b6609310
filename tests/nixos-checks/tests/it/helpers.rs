//! This crate's own helpers; the shared ones come from repo-test-support.

pub use repo_test_support::{
    binary, flake_outputs, nix_eval, nix_files, nix_parse, repo, run, tool,
};

/// The services as nixos/lib/services.nix defines them for a host with
/// every kind of source, an agent, an agents file and an operator token.
pub fn services(credentials_dir: &str) -> serde_json::Value {
    nix_eval(&services_expr(credentials_dir))
}

/// The Nix expression [`services`] evaluates.
pub fn services_expr(credentials_dir: &str) -> String {
    services_expr_with(credentials_dir, "")
}

/// [`services_expr`] with more arguments (`extra`: Nix attribute bindings).
pub fn services_expr_with(credentials_dir: &str, extra: &str) -> String {
    format!(
        r#"import ./nixos/lib/services.nix {{
            {extra}
            credentialsDir = unit: "{credentials_dir}/${{unit}}";
            relayTokenFile = "/run/secrets/rave/relay-token";
            ingestTokenFile = "/run/secrets/rave/ingest-token";
            operatorTokenFiles = [ "/run/secrets/rave/operator-token" ];
            agentsFile = "/var/lib/rave/agents.toml";
            agents.review-bot = {{ kinds = [ "review" ]; tokenSha256 = "{digest}"; }};
            sources = {{
              github = {{ kind = "github"; secretFiles = [ "/run/secrets/gh-new" "/run/secrets/gh-old" ]; }};
              gitlab = {{ kind = "gitlab"; secretFiles = [ "/run/secrets/gl" ]; tokenFiles = [ "/run/secrets/gl-token" ]; requireSignature = false; }};
              billing = {{ kind = "standard"; secretFiles = [ "/run/secrets/billing" ]; }};
              payments = {{ kind = "stripe"; secretFiles = [ "/run/secrets/stripe" ]; timestampToleranceSecs = 120; }};
              acme = {{
                kind = "hmac";
                secretFiles = [ "/run/secrets/acme" ];
                hmac = {{
                  signature_headers = [ "acme-signature" ];
                  signature_list = {{ separator = ","; key = "v1"; }};
                  signed = "{{timestamp}}.{{body}}";
                  timestamp = "signature:t";
                  delivery_id = [ "body:/id" ];
                  event_type = [ "header:acme-event" ];
                }};
              }};
            }};
            otlpEndpoint = "http://127.0.0.1:4318/v1/traces";
            reconcile.github = {{ provider = "github"; apiUrl = "https://api.github.com"; hookOwner = "acme/app"; hookId = 123456; tokenFile = "/run/secrets/rave/github-api-token"; }};
          }}"#,
        digest = "ab".repeat(32),
    )
}

pub const SERVICES: [&str; 4] = ["ingest", "dedup-store", "task-dispatcher", "agent-reporter"];
