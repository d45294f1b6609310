use std::process::Command;

/// `ingest --check-config` with the defaults and the one setting they
/// cannot hold, the store token.
fn ingest() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ingest"));
    command
        .arg("--check-config")
        .env_clear()
        .env("RAVE_INGEST__STORE__TOKEN", "a-store-token");
    command
}

#[test]
fn check_config_accepts_the_defaults_with_a_store_token() {
    let out = ingest().output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_refuses_a_missing_store_token_without_which_nothing_could_be_stored() {
    let out = ingest()
        .env_remove("RAVE_INGEST__STORE__TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("store.token"), "{stderr}");
}

#[test]
fn check_config_fails_naming_the_bad_key() {
    let out = ingest()
        .env("RAVE_INGEST__LIMITS__MAX_BODY_BYTES", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("limits.max_body_bytes"), "{stderr}");

    let out = ingest()
        .env("RAVE_INGEST__SERVER__PORT", "http")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.port"));
}

#[test]
fn check_config_refuses_a_malformed_secret_without_printing_it() {
    let secret = "whsec_not-base64-at-all!!";
    let out = ingest()
        .env("RAVE_INGEST__SOURCES__BILLING__KIND", "standard")
        .env("RAVE_INGEST__SOURCES__BILLING__SECRET", secret)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sources.billing.secrets"), "{stderr}");
    assert!(
        !stderr.contains("not-base64"),
        "the secret leaked: {stderr}"
    );
}

#[test]
fn a_source_can_be_configured_entirely_from_the_environment_with_a_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gh-secret");
    std::fs::write(&path, "from-a-credential-file\n").unwrap();
    let out = ingest()
        .env("RAVE_INGEST__SOURCES__GH__KIND", "github")
        .env("RAVE_INGEST__SOURCES__GH__SECRET__FILE", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_refuses_an_unknown_key_instead_of_ignoring_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ingest.toml");
    // A top-level key written after a table header lands inside that table.
    std::fs::write(
        &path,
        "[telemetry]\nlog_format = \"json\"\nmax_body_bytes = 10\n",
    )
    .unwrap();
    let out = ingest().arg("--config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_body_bytes"), "{stderr}");
}

#[test]
fn check_config_accepts_a_declared_hmac_source_and_refuses_one_whose_timestamp_is_not_signed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ingest.toml");
    let source = |timestamp_line: &str| {
        format!(
            "[sources.acme]\nkind = \"hmac\"\nsecret = \"acme-secret-value\"\n\n[sources.acme.hmac]\nsignature_headers = [\"Acme-Signature\"]\nsignature_prefix = \"sha256=\"\n{timestamp_line}\ndelivery_id = [\"header:acme-delivery\"]\nevent_type = [\"body:/type\"]\n"
        )
    };
    std::fs::write(&path, source("")).unwrap();
    let out = ingest().arg("--config").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&path, source("timestamp = \"header:acme-time\"")).unwrap();
    let out = ingest().arg("--config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sources.acme"), "{stderr}");
    assert!(stderr.contains("hmac.timestamp: is not signed"), "{stderr}");
    assert!(
        !stderr.contains("acme-secret-value"),
        "the secret leaked: {stderr}"
    );
}

#[test]
fn check_config_refuses_a_scheme_on_a_preset_kind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ingest.toml");
    std::fs::write(
        &path,
        "[sources.pay]\nkind = \"stripe\"\nsecret = \"whsec_x\"\n[sources.pay.hmac]\nsignature_headers = [\"x\"]\ndelivery_id = [\"header:x\"]\n",
    )
    .unwrap();
    let out = ingest().arg("--config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sources.pay.hmac"), "{stderr}");
}
