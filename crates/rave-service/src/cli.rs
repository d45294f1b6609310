//! The command line every service binary shares.

use std::path::PathBuf;

use crate::settings::{self, ServiceSettings};

/// The `--config` file the process started with: a reload reads it again.
static CONFIG_FILE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

/// The settings file given on the command line, if any.
pub fn config_file() -> Option<PathBuf> {
    CONFIG_FILE.get().cloned().flatten()
}

/// `SERVICE [--config PATH] [--check-config]`
#[derive(Debug, clap::Parser)]
pub struct Cli {
    /// TOML settings file; environment variables `RAVE_<SERVICE>__...` override it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Load and validate the settings, then exit: 0 when valid.
    #[arg(long)]
    pub check_config: bool,
}

/// What `main` should do after parsing the command line.
#[derive(Debug)]
pub enum Start<S> {
    Run(S),
    /// `--check-config` succeeded.
    Exit,
}

/// Parses the command line and loads settings. On invalid settings prints
/// the error (naming the key) and exits with status 2.
pub fn parse_and_load<S: ServiceSettings>() -> Start<S> {
    let cli = <Cli as clap::Parser>::parse();
    let _ = CONFIG_FILE.set(cli.config.clone());
    match settings::load::<S>(cli.config.as_deref()) {
        Ok(_) if cli.check_config => {
            eprintln!("{}: settings are valid", S::SERVICE);
            Start::Exit
        }
        Ok(s) => Start::Run(s),
        Err(e) => {
            eprintln!("{}: {e}", S::SERVICE);
            std::process::exit(2);
        }
    }
}
