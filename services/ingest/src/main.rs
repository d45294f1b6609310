use ingest::{Application, Settings};
use rave_service::cli::{Start, parse_and_load};

fn main() -> anyhow::Result<()> {
    let Start::Run(settings) = parse_and_load::<Settings>() else {
        return Ok(());
    };
    let _telemetry = rave_service::telemetry::init("ingest", &settings.telemetry)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut app = Application::build(settings).await?;
            app.reload_on_hangup();
            tracing::info!(port = app.port(), "ingest listening");
            app.run_until_stopped().await
        })
}
