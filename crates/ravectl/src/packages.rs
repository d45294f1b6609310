//! Debian packages the local stack needs, installed when missing.

use std::process::Command;

/// What this stage of RAVE runs locally.
pub const REQUIRED: &[&str] = &[
    "postgresql",
    "prometheus-pushgateway",
    "nginx",
    "openssl",
    "curl",
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

    /// scripts/test installs what the tests need before anything is built;
    /// the full-stack test runs `ravectl up --no-install`, so the two lists
    /// must agree or a fresh machine fails where this one passes.
    #[test]
    fn the_test_script_installs_every_package_the_stack_needs() {
        let script = include_str!("../../../scripts/lib.sh");
        let line = script
            .lines()
            .find(|l| l.starts_with("RAVE_DEBIAN_PACKAGES=("))
            .expect("scripts/lib.sh lists its packages");
        for package in REQUIRED {
            assert!(
                line.split([' ', '(', ')']).any(|p| p == *package),
                "scripts/lib.sh lacks {package}"
            );
        }
    }
}
