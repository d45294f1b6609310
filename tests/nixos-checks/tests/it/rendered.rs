//! What the modules render from the plain-Nix libraries, given to the
//! programs that read it: each service's `--check-config`, `nginx -t`, and
//! the repository's own prometheus.yml.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::helpers::{SERVICES, binary, nix_eval, repo, run, services, services_expr_with, tool};

/// Plausible content for a credential: whatever its service parses it as.
fn credential_content(id: &str) -> String {
    if id == "agents" {
        format!(
            "agents = [{{ name = \"ops-bot\", token_sha256 = \"{}\", kinds = [\"ops\"] }}]\n",
            "cd".repeat(32)
        )
    } else if id.starts_with("source-gitlab-secret") || id.starts_with("source-billing-secret") {
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n".to_owned()
    } else {
        format!("secret-for-{id}\n")
    }
}

/// Runs each replica's `--check-config` on the settings NixOS renders for
/// it, with its credentials where LoadCredential= would put them.
fn check_every_replica(defs: &Value, credentials: &Path, dir: &Path) {
    for name in SERVICES {
        let def = &defs[name];
        for instance in def["instances"].as_array().unwrap() {
            check_config(name, def, instance, credentials, dir);
        }
    }
}

fn check_config(name: &str, def: &Value, instance: &Value, credentials: &Path, dir: &Path) {
    {
        let unit = instance["unit"].as_str().unwrap();
        // What LoadCredential= would put in the unit's credentials directory.
        let unit_dir = credentials.join(unit);
        std::fs::create_dir_all(&unit_dir).unwrap();
        let mut secrets = Vec::new();
        for id in def["credentials"].as_object().unwrap().keys() {
            let content = credential_content(id);
            std::fs::write(unit_dir.join(id), &content).unwrap();
            secrets.push(content.trim().to_owned());
        }
        // As pkgs.formats.toml renders settings.
        let toml = toml::to_string(&instance["settings"]).expect("settings render as TOML");
        for secret in &secrets {
            assert!(
                !toml.contains(secret),
                "{name}: a secret is in its settings"
            );
        }
        let file = dir.join(format!("{unit}.toml"));
        std::fs::write(&file, &toml).unwrap();
        let out = Command::new(binary(name))
            .arg("--check-config")
            .arg("--config")
            .arg(&file)
            .env_clear()
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{unit} refuses the NixOS settings:\n{}\n{toml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_services_check_config_accepts_the_settings_nixos_renders() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    let defs = services(credentials.to_str().unwrap());
    check_every_replica(&defs, &credentials, dir.path());
    // The secrets are read from the credentials, in the services' own terms.
    let ingest = &defs["ingest"]["settings"]["sources"];
    assert_eq!(ingest["github"]["secrets"].as_array().unwrap().len(), 2);
    assert_eq!(ingest["gitlab"]["tokens"].as_array().unwrap().len(), 1);
    // A preset and a declared HMAC scheme pass through as ingest reads them.
    assert_eq!(ingest["payments"]["kind"], "stripe");
    assert_eq!(ingest["payments"]["timestamp_tolerance_secs"], 120);
    assert_eq!(ingest["acme"]["hmac"]["signature_list"]["key"], "v1");
    assert_eq!(ingest["acme"]["hmac"]["signed"], "{timestamp}.{body}");
    assert!(ingest["billing"].get("hmac").is_none());
    assert!(
        defs["dedup-store"]["settings"]["database"]["host"] == "/run/postgresql",
        "peer authentication over the socket"
    );
}

#[test]
fn two_replicas_of_each_over_a_remote_database_with_tls_each_pass_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = self_signed(dir.path());
    let credentials = dir.path().join("credentials");
    let extra = format!(
        r#"replicas = {{ ingest = 2; dedup-store = 2; task-dispatcher = 2; agent-reporter = 2; }};
           database = {{
             host = "db.internal.example"; port = 5432;
             sslmode = "verify-full"; sslrootcert = "{}";
             passwordFiles = {{
               dedup-store = "/run/secrets/db-dedup";
               task-dispatcher = "/run/secrets/db-tasks";
               agent-reporter = "/run/secrets/db-reports";
             }};
           }};"#,
        ca.display()
    );
    let defs = nix_eval(&services_expr_with(credentials.to_str().unwrap(), &extra));
    check_every_replica(&defs, &credentials, dir.path());

    let ingest = defs["ingest"]["instances"].as_array().unwrap();
    let units: Vec<&str> = ingest.iter().map(|i| i["unit"].as_str().unwrap()).collect();
    assert_eq!(units, ["rave-ingest@1", "rave-ingest@2"]);
    let ports: Vec<u64> = ingest.iter().map(|i| i["port"].as_u64().unwrap()).collect();
    assert_eq!(ports, [3001, 3101]);
    // Each ingest prefers its own dedup-store and falls back to the other,
    // owns one spool and replays the other's.
    assert_eq!(
        ingest[1]["settings"]["store"]["url"],
        "http://127.0.0.1:3110"
    );
    assert_eq!(
        ingest[1]["settings"]["store"]["fallback_urls"],
        serde_json::json!(["http://127.0.0.1:3010"])
    );
    assert_eq!(
        ingest[0]["settings"]["spool"]["peer_dirs"],
        serde_json::json!([ingest[1]["settings"]["spool"]["dir"]])
    );
    assert_eq!(ingest[0]["stateDirectory"].as_array().unwrap().len(), 2);
    // The database: TLS, and the password through a credential.
    let store = &defs["dedup-store"]["instances"][1];
    let database = &store["settings"]["database"];
    assert_eq!(database["sslmode"], "verify-full");
    assert_eq!(
        database["password"]["file"].as_str().unwrap(),
        credentials
            .join("rave-dedup-store@2/db-password")
            .to_str()
            .unwrap()
    );
    assert_eq!(
        defs["dedup-store"]["credentials"]["db-password"],
        "/run/secrets/db-dedup"
    );
}

#[test]
fn the_nixos_scrape_jobs_list_every_replica() {
    let jobs = nix_eval(
        "import ./nixos/lib/prometheus.nix { replicas = { ingest = 3; task-dispatcher = 2; }; }",
    );
    let targets = |job: &str| -> Vec<String> {
        jobs.as_array()
            .unwrap()
            .iter()
            .find(|j| j["job_name"] == job)
            .unwrap()["static_configs"][0]["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        targets("ingest"),
        ["127.0.0.1:3001", "127.0.0.1:3101", "127.0.0.1:3201"]
    );
    assert_eq!(
        targets("task-dispatcher"),
        ["127.0.0.1:3020", "127.0.0.1:3120"]
    );
    assert_eq!(targets("dedup-store"), ["127.0.0.1:3010"]);
}

/// The local stack's certificate: what nginx is given there too.
fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    ravectl::tls::ensure_certificate(dir).expect("openssl makes a certificate")
}

#[test]
fn nginx_accepts_the_sites_nixos_renders_with_grafana_and_the_operators_api() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let render = |operators: &str| {
        nix_eval(&format!(
            r#"import ./nixos/lib/nginx.nix {{
                ports = {{ ingest = 3001; dedup-store = 3010; task-dispatcher = 3020; agent-reporter = 3030; }};
                replicas = {{ ingest = 2; task-dispatcher = 3; }};
                certificate = "{}";
                key = "{}";
                extraLocations = import ./nixos/lib/grafana-location.nix {{ }};
                {operators}
              }}"#,
            cert.display(),
            key.display()
        ))
        .as_str()
        .unwrap()
        .to_owned()
    };
    // Off by default: no operator route is served.
    let closed = render("");
    assert!(!closed.contains("zone=operators burst"), "{closed}");
    assert!(!closed.contains("proxy_pass http://store;"), "{closed}");
    let sites = render("operatorApi = true; operatorsRate = 7;");
    let sites = sites.as_str();
    assert!(
        sites.contains("limit_req zone=operators burst=14 nodelay;"),
        "{sites}"
    );
    assert!(sites.contains("proxy_pass http://store;"));
    assert!(!sites.contains("{{"), "a placeholder is left:\n{sites}");
    assert!(sites.contains("location /grafana/"));
    assert!(sites.contains("listen 3002 ssl;"));
    // Every replica is an upstream server with passive health checks.
    for port in [3001, 3101, 3010, 3020, 3120, 3220, 3030] {
        assert!(
            sites.contains(&format!(
                "server 127.0.0.1:{port} max_fails=2 fail_timeout=5s;"
            )),
            "{port} is not an upstream:\n{sites}"
        );
    }
    let d = dir.path().display();
    // The parts of NixOS's generated http block that could clash with the sites.
    let conf = format!(
        "pid {d}/nginx.pid;\nerror_log {d}/error.log;\ndaemon off;\nevents {{ }}\n\
         http {{\n  include /etc/nginx/mime.types;\n  default_type application/octet-stream;\n\
         server_tokens off;\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n{sites}\n}}\n"
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    run(Command::new(tool("nginx", "apt-get install nginx"))
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(dir.path().join("error.log")));
}

#[test]
fn the_nixos_scrape_jobs_are_prometheus_yml_s() {
    let nix = nix_eval("import ./nixos/lib/prometheus.nix { }");
    let text = std::fs::read_to_string(repo().join("prometheus/prometheus.yml")).unwrap();
    let yaml = &yaml_rust2::YamlLoader::load_from_str(&text).unwrap()[0];
    let from_yaml: Vec<(String, Vec<String>, bool)> = yaml["scrape_configs"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|job| {
            (
                job["job_name"].as_str().unwrap().to_owned(),
                job["static_configs"][0]["targets"]
                    .as_vec()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_owned())
                    .collect(),
                job["honor_labels"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let from_nix: Vec<(String, Vec<String>, bool)> = nix
        .as_array()
        .unwrap()
        .iter()
        .map(|job| {
            (
                job["job_name"].as_str().unwrap().to_owned(),
                job["static_configs"][0]["targets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_owned())
                    .collect(),
                job["honor_labels"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(from_nix, from_yaml);
    assert_eq!(from_nix.len(), 11);
}

#[test]
fn the_hardening_set_names_every_option_the_seed_requires() {
    let set = nix_eval("import ./nixos/lib/hardening.nix { }");
    for key in [
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateUsers",
        "PrivateMounts",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "ProtectProc",
        "ProcSubset",
        "RestrictAddressFamilies",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "RemoveIPC",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "NoNewPrivileges",
        "CapabilityBoundingSet",
        "SystemCallArchitectures",
        "SystemCallFilter",
        "UMask",
        "IPAddressDeny",
        "IPAddressAllow",
        "MemoryMax",
        "CPUQuota",
    ] {
        assert!(
            set.get(key).is_some(),
            "{key} missing from nixos/lib/hardening.nix"
        );
    }
    assert_eq!(set["ProtectSystem"], "strict");
    assert_eq!(set["MemoryMax"], "256M");
    assert_eq!(set["CPUQuota"], "50%");
    assert_eq!(
        set["SystemCallFilter"],
        Value::from(vec!["@system-service", "~@privileged", "~@resources"])
    );
}
