use rave_service::cli::{Start, parse_and_load};
use task_dispatcher::{Application, Settings};

fn main() -> anyhow::Result<()> {
    let Start::Run(settings) = parse_and_load::<Settings>() else {
        return Ok(());
    };
    let _telemetry = rave_service::telemetry::init("task-dispatcher", &settings.telemetry)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut app = Application::build(settings).await?;
            app.reload_on_hangup();
            tracing::info!(port = app.port(), "task-dispatcher listening");
            app.run_until_stopped().await
        })
}
