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
}

#[test]
fn images_build_on_kvm_runners_and_ship_through_the_package_registry_and_a_gitlab_release() {
    let p = pipeline();
    // Disk images need the `kvm` system feature, like the VM test.
    assert_eq!(p["variables"]["KVM_RUNNER_TAG"].as_str(), Some("kvm"));
    for job in ["build:images", "test:vm"] {
        assert_eq!(
            p[job]["tags"][0],
            Yaml::String("$KVM_RUNNER_TAG".into()),
            "{job}"
        );
    }
    // Published to the generic package registry on tags; the job's
    // artifacts keep only digests, never the image.
    let registry = p["variables"]["PACKAGE_REGISTRY_URL"].as_str().unwrap();
    assert!(registry.contains("/packages/generic/"), "{registry}");
    let build = lines(key(&p, &p["build:images"], "script")).join("\n");
    let upload = build
        .find("--upload-file \"dist/images/rave-$PHASE.qcow2\"")
        .expect("build:images uploads its image");
    assert!(
        build[upload..].contains("$PACKAGE_REGISTRY_URL/$CI_COMMIT_TAG/"),
        "{build}"
    );
    assert!(build.contains("convert -c"), "images are compressed");
    assert!(
        build[upload..].contains("rm \"dist/images/rave-$PHASE.qcow2\""),
        "the image stays out of the artifacts"
    );
    let phases: Vec<_> = p["build:images"]["parallel"]["matrix"][0]["PHASE"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    // A GitLab Release from the tag, linking every image and the manifest.
    let job = &p["release:gitlab"];
    assert_eq!(job["release"]["tag_name"].as_str(), Some("$CI_COMMIT_TAG"));
    assert_eq!(job["needs"][0].as_str(), Some("release"));
    assert!(job["image"].as_str().unwrap().contains("release-cli"));
    let links: Vec<(String, String)> = job["release"]["assets"]["links"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_owned(),
                l["url"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for phase in &phases {
        let name = format!("rave-{phase}.qcow2");
        assert!(
            links
                .iter()
                .any(|(n, u)| *n == name
                    && *u == format!("$PACKAGE_REGISTRY_URL/$CI_COMMIT_TAG/{name}")),
            "the release does not link {name}: {links:?}"
        );
    }
    assert!(links.iter().any(|(n, _)| n == "manifest.json"));
    // The manifest covers the images users download, fetched back and checked.
    let release = lines(key(&p, &p["release"], "script")).join("\n");
    assert!(release.contains("sha256sum -c"), "{release}");
    assert!(
        release.contains("manifest.json\" \"$PACKAGE_REGISTRY_URL")
            || release.contains("--upload-file dist/manifest.json")
    );
    assert!(
        release.contains(&format!("for phase in {}", phases.join(" "))),
        "{release}"
    );
}

#[test]
fn trivy_scans_the_lock_file_and_the_p2_closure_with_a_cached_database() {
    let p = pipeline();
    let fs = lines(key(&p, &p["scan:trivy"], "script")).join("\n");
    assert!(fs.contains("--exit-code 1 Cargo.lock"), "{fs}");
    let closure = lines(key(&p, &p["scan:closure"], "script")).join("\n");
    assert!(
        closure.contains("sbomnix") && closure.contains(".#nixosConfigurations.p2-"),
        "{closure}"
    );
    assert!(closure.contains("trivy -- sbom"), "{closure}");
    for job in ["scan:trivy", "scan:closure"] {
        let script = lines(key(&p, &p[job], "script"));
        assert!(
            script
                .iter()
                .all(|l| !l.contains("trivy") || l.contains("--cache-dir \"$TRIVY_CACHE_DIR\"")),
            "{job}"
        );
        let caches = key(&p, &p[job], "cache").unwrap();
        assert!(
            caches
                .as_vec()
                .unwrap()
                .iter()
                .any(|c| c["key"].as_str() == Some("trivy-db")),
            "{job} does not keep trivy's database"
        );
    }
    assert!(lines(key(&p, &p["release"], "needs")).contains(&"scan:closure".to_owned()));
    // And the pin is checked before anything is built from it.
    let lint = lines(key(&p, &p["lint:nix"], "script"));
    assert_eq!(lint[0], "nix flake metadata");
}
