//! Debian packages the local stack needs, installed when missing.

use std::process::Command;

/// What this stage of RAVE runs locally.
pub const REQUIRED: &[&str] = &[
    "postgresql",
    "prometheus-pushgateway",
    "nginx",
    "openssl",
    "curl",
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
