use std::process::Command;

use yaml_rust2::Yaml;

use crate::helpers::{jobs, key, lines, pipeline, repo};

#[test]
fn the_pipeline_validates_against_gitlabs_ci_schema() {
    let out = Command::new("check-jsonschema")
        .args(["--builtin-schema", "vendor.gitlab-ci"])
        .arg(repo().join(".gitlab-ci.yml"))
        .output()
        .expect("check-jsonschema (pip install check-jsonschema; scripts/test does)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_stages_run_lint_build_test_scan_release_in_order() {
    let p = pipeline();
    let stages: Vec<&str> = p["stages"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(stages, ["lint", "build", "test", "scan", "release"]);
    for (name, job) in jobs(&p) {
        let stage = job["stage"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no stage"));
        assert!(stages.contains(&stage), "{name}: stage {stage}");
        assert!(
            !job["needs"].is_badvalue(),
            "{name} has no `needs`: it would wait for its whole previous stage"
        );
    }
}

#[test]
fn every_job_fits_a_4_gb_runner() {
    let p = pipeline();
    let vars = &p["variables"];
    let nix = vars["NIX_CONFIG"].as_str().unwrap();
    assert!(nix.contains("max-jobs = 2"), "{nix}");
    assert!(nix.contains("cores = 4"), "{nix}");
    assert_eq!(vars["CARGO_BUILD_JOBS"].as_str(), Some("4"));
    let limit = vars["NIX_BUILD_MEMORY"].as_str().unwrap();
    let mib: u64 = limit
        .trim_end_matches('M')
        .parse()
        .expect("NIX_BUILD_MEMORY in M");
    assert!(mib < 4096, "NIX_BUILD_MEMORY {limit} does not fit 4 GB");
    // Every `nix build` (through test-vm.sh) runs under that limit.
    for (name, job) in jobs(&p) {
        for line in lines(key(&p, &job, "script")) {
            if line.contains("./test-vm.sh build") || line.contains("./test-vm.sh test") {
                assert!(
                    line.contains("with-memory-limit \"$NIX_BUILD_MEMORY\""),
                    "{name}: `{line}` runs a Nix build without the memory limit"
                );
            }
        }
    }
}

#[test]
fn merge_requests_run_the_checks_and_only_version_tags_release() {
    let p = pipeline();
    let workflow: Vec<&str> = p["workflow"]["rules"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|r| r["if"].as_str().unwrap())
        .collect();
    assert!(workflow.iter().any(|r| r.contains("merge_request_event")));
    assert!(workflow.iter().any(|r| r.contains("CI_COMMIT_TAG")));
    for (name, job) in jobs(&p) {
        let release = job["stage"].as_str() == Some("release");
        let rules = job["rules"].as_vec().cloned().unwrap_or_default();
        if release {
            assert!(
                !rules.is_empty()
                    && rules.iter().all(|r| r["if"]
                        .as_str()
                        .is_some_and(|c| c.contains("CI_COMMIT_TAG"))),
                "{name} must run on version tags only"
            );
            assert_eq!(
                job["interruptible"].as_bool(),
                Some(false),
                "{name}: a release is never interrupted"
            );
        } else {
            assert!(
                rules.is_empty(),
                "{name} has its own rules; merge requests must run it"
            );
        }
    }
    assert_eq!(p["default"]["interruptible"].as_bool(), Some(true));
}

#[test]
fn artifacts_expire_images_in_7_days_and_releases_in_a_year() {
    let p = pipeline();
    let expiry = |job: &str| p[job]["artifacts"]["expire_in"].as_str().map(str::to_owned);
    assert_eq!(expiry("build:images").as_deref(), Some("7 days"));
    assert_eq!(expiry("build:workspace").as_deref(), Some("7 days"));
    assert_eq!(expiry("release").as_deref(), Some("1 year"));
    assert_eq!(
        p["scan:trivy"]["artifacts"]["paths"][0].as_str(),
        Some("trivy-report.json")
    );
    // Caches are keyed on the lock files.
    for template in [".rust", ".nix"] {
        let files = &p[template]["cache"][0]["key"]["files"];
        assert!(
            files
                .as_vec()
                .unwrap()
                .iter()
                .any(|f| f.as_str() == Some("Cargo.lock")),
            "{template} cache is not keyed on Cargo.lock"
        );
    }
    assert_eq!(p["test:vm"]["tags"][0], Yaml::String("kvm".into()));
}
