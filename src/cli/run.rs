//! `dustgate run`

use std::path::Path;
use std::process::ExitCode;

use dustgate::gateway::Gateway;
use tracing::info;

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let Some(cfg) = super::load_or_report(path) else {
        return Ok(ExitCode::FAILURE);
    };
    super::init_logging("info");
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    super::install_crypto();
    let rt = super::runtime()?;
    rt.block_on(async {
        let gw = Gateway::start(&cfg)?;
        super::shutdown_signal().await;
        info!("shutting down: flushing");
        gw.stop().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
