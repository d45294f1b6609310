use agent_reporter::{Application, Settings};
use rave_service::cli::{Start, parse_and_load};

fn main() -> anyhow::Result<()> {
    let Start::Run(settings) = parse_and_load::<Settings>() else {
        return Ok(());
    };
    let _telemetry = rave_service::telemetry::init("agent-reporter", &settings.telemetry)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let app = Application::build(settings).await?;
            tracing::info!(port = app.port(), "agent-reporter listening");
            app.run_until_stopped().await
        })
}
