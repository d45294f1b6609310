//! Every option the modules set, read with a real Nix parser (rnix) and
//! checked against nixos/options.toml and the modules' own declarations,
//! and the definitions each host would combine.

use nixos_checks::hosts::{Host, Repo, load};

use crate::helpers::repo;

fn host(repo: &Repo, name: &str) -> Host {
    repo.hosts()
        .into_iter()
        .find(|h| h.name == name)
        .unwrap_or_else(|| panic!("no host {name}"))
}

#[test]
fn every_option_the_modules_set_is_listed_or_declared_by_rave() {
    let repo = load(&repo());
    assert!(
        repo.problems.is_empty(),
        "options set that nixos/options.toml does not list (add each from its nixpkgs source):\n{}",
        repo.problems.join("\n")
    );
    // The walk really reached the modules: a sample of what they set.
    for path in [
        "networking.hostName",
        "services.prometheus.pushgateway.web.listen-address",
        "systemd.services.rave-dev-secrets.serviceConfig",
        "users.users.root.openssh.authorizedKeys.keys",
        "services.rave.ingest.sources.github.secretFiles",
    ] {
        assert!(
            repo.definitions.iter().any(|d| d.path == path),
            "no definition of {path} found"
        );
    }
}

#[test]
fn every_listed_option_is_set_somewhere_so_the_list_stays_true() {
    let repo = load(&repo());
    let matches = |pattern: &str, path: &[String]| {
        let p: Vec<_> = pattern.split('.').collect();
        path.len() >= p.len() && p.iter().zip(path).all(|(a, b)| a == b || *a == "<name>")
    };
    let unused: Vec<_> = repo
        .list
        .options
        .iter()
        .filter(|o| {
            !repo
                .definitions
                .iter()
                .any(|d| matches(&o.path, &d.segments))
        })
        .map(|o| o.path.as_str())
        .collect();
    assert!(unused.is_empty(), "listed but set nowhere: {unused:?}");
    for o in &repo.list.options {
        assert!(
            matches!(o.source.as_str(), "nixpkgs" | "sops-nix"),
            "{}: source {}",
            o.path,
            o.source
        );
        if let Some(rev) = &o.read_at {
            assert!(
                rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()),
                "{}: read_at {rev}",
                o.path
            );
        }
    }
    for rule in &repo.list.exclusive {
        for path in &rule.paths {
            let modules: std::collections::BTreeSet<_> = repo
                .definitions
                .iter()
                .filter(|d| &d.path == path)
                .map(|d| &d.module)
                .collect();
            assert!(
                modules.len() >= 2,
                "{path} is called exclusive but is defined only in {modules:?}"
            );
        }
    }
}

#[test]
fn no_host_defines_an_option_twice_at_its_winning_priority_with_values_it_cannot_merge() {
    let repo = load(&repo());
    let hosts = repo.hosts();
    let names: Vec<_> = hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "p0",
            "p1-production",
            "p2-production",
            "vm-test server",
            "vm-test replicas",
            "vm-test client"
        ]
    );
    let collisions: Vec<_> = hosts.iter().flat_map(|h| repo.collisions(h)).collect();
    assert!(collisions.is_empty(), "{}", collisions.join("\n"));
}

#[test]
fn each_host_gets_its_own_name_and_the_vm_test_nodes_their_node_names() {
    let repo = load(&repo());
    for (name, expected) in [
        ("p0", "\"rave-p0\""),
        ("p1-production", "\"rave-p1\""),
        ("p2-production", "\"rave-p2\""),
        // The driver's `server` object and /etc/hosts follow the node name.
        ("vm-test server", "\"server\""),
        ("vm-test replicas", "\"replicas\""),
        ("vm-test client", "\"client\""),
    ] {
        let host = host(&repo, name);
        assert_eq!(
            repo.effective(&host, "networking.hostName").as_deref(),
            Ok(expected),
            "{name}"
        );
    }
}

#[test]
fn the_check_catches_two_host_names_at_one_priority_as_the_tree_once_had() {
    // The tree as it was: common.nix and p1-production.nix both mkDefault.
    let dir = tempfile::tempdir().unwrap();
    let copy = |rel: &str| {
        let to = dir.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(repo().join(rel), &to).unwrap();
        to
    };
    for sub in ["nixos/modules", "nixos/hosts"] {
        for entry in std::fs::read_dir(repo().join(sub)).unwrap() {
            let name = entry.unwrap().file_name();
            copy(&format!("{sub}/{}", name.to_string_lossy()));
        }
    }
    for rel in ["flake.nix", "tests/rave-vm.nix", "nixos/options.toml"] {
        copy(rel);
    }
    let edit = |rel: &str, from: &str, to: &str| {
        let file = dir.path().join(rel);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains(from), "{rel} no longer has {from}");
        std::fs::write(&file, text.replace(from, to)).unwrap();
    };
    edit(
        "nixos/hosts/common.nix",
        "lib.mkOverride 1400 \"rave\"",
        "lib.mkDefault \"rave\"",
    );
    edit(
        "nixos/hosts/p1-production.nix",
        "lib.mkOverride 1300 \"rave-p1\"",
        "lib.mkDefault \"rave-p1\"",
    );
    let old = load(dir.path());
    let p1 = host(&old, "p1-production");
    let found = old.collisions(&p1);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("networking.hostName at priority 1000"),
        "{}",
        found[0]
    );
    // And an option no list names is reported with its module.
    edit(
        "nixos/hosts/p2-production.nix",
        "services.rave-observability.enable = true;",
        "services.rave-observability.enable = true;\n  services.prometheus.retention = \"1d\";",
    );
    let typo = load(dir.path());
    assert!(
        typo.problems
            .iter()
            .any(|p| p
                .contains("nixos/hosts/p2-production.nix: sets services.prometheus.retention,")),
        "{:?}",
        typo.problems
    );
}
