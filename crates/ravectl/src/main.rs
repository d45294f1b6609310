use clap::Parser as _;
use ravectl::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    // Agents' job spans go to --otlp-endpoint, else to the local stack's
    // trace receiver when the agent works for that stack.
    let telemetry = match &cli.command {
        Command::Agent(args) => ravectl::agent::telemetry(args),
        _ => None,
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(async { ravectl::run(cli.command).await }));
    // Exporting the last spans: process::exit runs no destructors.
    drop(telemetry);
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // A sentence for the operator, not a backtrace.
            eprintln!("ravectl: {e:#}");
            std::process::exit(1)
        }
    }
}
