use clap::Parser as _;
use ravectl::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    // Agents' job spans are exported only when an OTLP endpoint is given.
    let _telemetry = match &cli.command {
        Command::Agent(args) if args.otlp_endpoint.is_some() => {
            let settings = rave_service::settings::TelemetrySettings {
                otlp_endpoint: args.otlp_endpoint.clone(),
                log_filter: "warn".into(),
                log_format: rave_service::settings::LogFormat::Pretty,
                ..Default::default()
            };
            rave_service::telemetry::init("ravectl-agent", &settings).ok()
        }
        _ => None,
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(async { ravectl::run(cli.command).await }));
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // A sentence for the operator, not a backtrace.
            eprintln!("ravectl: {e:#}");
            std::process::exit(1)
        }
    }
}
