use std::path::PathBuf;

#[derive(Debug, clap::Parser)]
#[command(name = "ravectl", about = "RAVE's operator CLI")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Start PostgreSQL, dedup-store and ingest locally; stop them on Ctrl-C.
    Up(UpArgs),
    /// Send a correctly signed webhook to a running local stack.
    Send(SendArgs),
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Private state directory: database cluster, secrets, configs, logs.
    #[arg(long, default_value = ".rave")]
    pub state_dir: PathBuf,
    /// Where the service binaries are (default: next to ravectl itself).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 3001)]
    pub ingest_port: u16,
    #[arg(long, default_value_t = 3010)]
    pub store_port: u16,
    #[arg(long, default_value_t = 5433)]
    pub pg_port: u16,
    /// Do not install missing Debian packages, even as root.
    #[arg(long)]
    pub no_install: bool,
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The source to send to: github, gitlab, gitlab-token or standard.
    pub source: String,
    /// The delivery id (default: a random one). Reuse it to see deduplication.
    #[arg(long)]
    pub delivery: Option<String>,
    /// The JSON body (default: a small example for the source).
    #[arg(long)]
    pub body: Option<String>,
    /// The event type header for github (default push) and gitlab (default Push Hook).
    #[arg(long)]
    pub event: Option<String>,
    #[arg(long, default_value = ".rave")]
    pub state_dir: PathBuf,
}
