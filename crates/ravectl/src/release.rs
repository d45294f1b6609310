//! `ravectl release-manifest`: what a release is made of. Written by the
//! pipeline's release job, checked by anyone who downloads the artifacts.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::cli::ReleaseManifestArgs;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: String,
    pub commit: String,
    /// The workspace's version (Cargo.toml) of the binaries.
    pub rave_version: String,
    /// Path relative to the artifact directory → lower-case hex SHA-256.
    pub artifacts: BTreeMap<String, Artifact>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub sha256: String,
    pub bytes: u64,
}

pub fn run(args: &ReleaseManifestArgs) -> anyhow::Result<i32> {
    if args.verify {
        let text = std::fs::read_to_string(&args.manifest)
            .with_context(|| format!("reading {}", args.manifest.display()))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a release manifest", args.manifest.display()))?;
        verify(&manifest, &args.dir, &args.manifest)?;
        println!(
            "{}: {} artifacts match (release {}, commit {})",
            args.manifest.display(),
            manifest.artifacts.len(),
            manifest.version,
            manifest.commit
        );
    } else {
        let (Some(version), Some(commit)) = (&args.version, &args.commit) else {
            bail!("--version and --commit are required to write a manifest");
        };
        let manifest = build(&args.dir, version, commit, &args.manifest)?;
        std::fs::write(
            &args.manifest,
            serde_json::to_string_pretty(&manifest)? + "\n",
        )?;
        println!(
            "{}: {} artifacts",
            args.manifest.display(),
            manifest.artifacts.len()
        );
    }
    Ok(0)
}

/// A manifest of every file under `dir` (but `manifest` itself).
pub fn build(dir: &Path, version: &str, commit: &str, manifest: &Path) -> anyhow::Result<Manifest> {
    ensure!(
        commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "--commit must be a full 40-hex-digit commit id"
    );
    ensure!(!version.trim().is_empty(), "--version must not be empty");
    let mut artifacts = BTreeMap::new();
    for path in files(dir)? {
        if same_file(&path, manifest) {
            continue;
        }
        artifacts.insert(relative(dir, &path)?, hash(&path)?);
    }
    ensure!(!artifacts.is_empty(), "no artifacts in {}", dir.display());
    Ok(Manifest {
        version: version.to_owned(),
        commit: commit.to_ascii_lowercase(),
        rave_version: env!("CARGO_PKG_VERSION").to_owned(),
        artifacts,
    })
}

/// Every listed artifact is present with its hash and size, and nothing
/// unlisted sits beside them.
pub fn verify(manifest: &Manifest, dir: &Path, manifest_path: &Path) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let present: BTreeMap<String, PathBuf> = files(dir)?
        .into_iter()
        .filter(|p| !same_file(p, manifest_path))
        .map(|p| Ok((relative(dir, &p)?, p)))
        .collect::<anyhow::Result<_>>()?;
    for (name, expected) in &manifest.artifacts {
        match present.get(name) {
            None => problems.push(format!("{name}: missing")),
            Some(path) => {
                let actual = hash(path)?;
                if &actual != expected {
                    problems.push(format!(
                        "{name}: sha256 {} ({} bytes), manifest says {} ({} bytes)",
                        actual.sha256, actual.bytes, expected.sha256, expected.bytes
                    ));
                }
            }
        }
    }
    for name in present.keys() {
        if !manifest.artifacts.contains_key(name) {
            problems.push(format!("{name}: not in the manifest"));
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(())
}

fn files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn relative(dir: &Path, path: &Path) -> anyhow::Result<String> {
    Ok(path
        .strip_prefix(dir)?
        .to_str()
        .context("artifact names must be UTF-8")?
        .to_owned())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn hash(path: &Path) -> anyhow::Result<Artifact> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
        bytes += n as u64;
    }
    Ok(Artifact {
        sha256: hex::encode(context.finish()),
        bytes,
    })
}
