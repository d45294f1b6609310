//! Development secrets: generated once, stored with mode 0600.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Reads the secret at `path`, creating it with `generate` if missing.
/// Returns the value and whether it was just created.
pub fn ensure(path: &Path, generate: impl FnOnce() -> String) -> anyhow::Result<(String, bool)> {
    if path.exists() {
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "{} is readable by others (mode {mode:o}); chmod 600 it",
                path.display()
            );
        }
        let value = std::fs::read_to_string(path)?;
        return Ok((value.trim_end().to_owned(), false));
    }
    let value = generate();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(value.as_bytes())?;
    file.write_all(b"\n")?;
    Ok((value, true))
}

/// A random hex token of `bytes` bytes.
pub fn hex_token(bytes: usize) -> String {
    (0..bytes.div_ceil(8))
        .map(|_| hex::encode(rave_service::crypto::random_bytes::<8>()))
        .collect::<String>()[..bytes * 2]
        .to_owned()
}

/// Creates `dir` (and parents) with mode 0700.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}
