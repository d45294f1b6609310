//! Debian packages the local stack needs, installed when missing.

use std::process::Command;

/// Everything the local stack runs (`ravectl up` starts each of them).
pub const REQUIRED: &[&str] = &[
    "postgresql",
    "nginx",
    "openssl",
    "curl",
    "procps",
    "prometheus",
    "prometheus-pushgateway",
    "prometheus-node-exporter",
    "prometheus-postgres-exporter",
    "prometheus-nginx-exporter",
    // Alerts delivered (Alertmanager, amtool) and probed (blackbox).
    "prometheus-alertmanager",
    "prometheus-blackbox-exporter",
    // The font `ravectl bench` draws its plot's labels with.
    "fonts-dejavu-core",
    // Backups (`ravectl up --backups`, `ravectl backup`, `ravectl restore`).
    "pgbackrest",
];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Installs missing packages as root; otherwise says exactly what to run.
pub fn ensure(allow_install: bool) -> anyhow::Result<()> {
    let missing: Vec<&str> = REQUIRED.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!(
        "apt-get update && apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !is_root() || !allow_install {
        anyhow::bail!(
            "missing Debian packages: {}. Install them with:\n  sudo sh -c '{command}'",
            missing.join(", ")
        );
    }
    eprintln!("installing {} ...", missing.join(" "));
    let status = Command::new("sh")
        .args(["-c", &command])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    anyhow::ensure!(status.success(), "`{command}` failed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::REQUIRED;

    /// scripts/up and scripts/test install the stack's packages before
    /// anything is built; `ravectl up` run by itself installs them too. The
    /// two lists must be the same, or one way of starting the stack fails on
    /// a fresh machine where the other works (a missing amtool did).
    #[test]
    fn ravectl_up_and_the_scripts_install_the_same_packages() {
        let script = include_str!("../../../scripts/lib.sh");
        let line = script
            .lines()
            .find(|l| l.starts_with("RAVE_DEBIAN_PACKAGES=("))
            .expect("scripts/lib.sh lists its packages");
        let listed: std::collections::BTreeSet<&str> = line
            .trim_start_matches("RAVE_DEBIAN_PACKAGES=(")
            .trim_end_matches(')')
            .split_whitespace()
            .collect();
        let required: std::collections::BTreeSet<&str> = REQUIRED.iter().copied().collect();
        assert_eq!(listed, required);
    }
}
