//! The tools `scripts/install` keeps in RAVE's tool directory
//! (`$RAVE_TOOLS_DIR`, else `$CARGO_TARGET_DIR/rave-tools`, else
//! `target/rave-tools`): scripts/lib.sh's `rave_tools_dir`.

use std::path::PathBuf;

pub fn dir() -> PathBuf {
    std::env::var_os("RAVE_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("rave-tools"))
        })
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/rave-tools")
        })
}

/// The venv's Python, with the PyPI packages of `RAVE_PIP_TOOLS`
/// (the providers' webhook libraries among them).
///
/// # Panics
/// When the venv is missing: the test needs `scripts/install` first.
pub fn venv_python() -> PathBuf {
    let python = dir().join("venv/bin/python3");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install (scripts/test does)",
        python.display()
    );
    python
}
