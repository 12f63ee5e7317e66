//! `dustgate run`: starts the gateway, reloads its config on SIGHUP, stops on SIGINT/SIGTERM.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use dustgate::gateway::Gateway;
use dustgate::model::now_ms;
use tracing::{error, info, warn};

use super::notify;

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let Some(cfg) = super::load_or_report(path) else {
        return Ok(ExitCode::FAILURE);
    };
    super::init_logging("info", cfg.site.timezone.clone());
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    super::install_crypto();
    let rt = super::runtime()?;
    rt.block_on(async {
        let mut gw = Gateway::start(&cfg)?;
        notify::ready();
        let watchdog =
            notify::watchdog_interval().map(|every| tokio::spawn(watchdog(gw.site.clone(), every)));
        let shutdown = super::shutdown_signal();
        tokio::pin!(shutdown);
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = hup.recv() => {
                    notify::reloading();
                    reload(&mut gw, path).await;
                    notify::ready();
                }
            }
        }
        notify::stopping();
        if let Some(w) = watchdog {
            w.abort();
        }
        info!("shutting down: flushing");
        gw.stop().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A reload that changed nothing: counted, its errors kept for `/api/status`.
fn refused(gw: &Gateway, errors: Vec<String>) {
    error!(
        problems = errors.len(),
        "reload refused: the running configuration stays"
    );
    gw.health.config.update(|c| {
        c.reloads_failed += 1;
        c.last_failure_ms = Some(now_ms());
        c.last_errors = errors;
    });
}

/// Reads and checks the file again; on any error the running config stays and every problem
/// is logged with its position.
async fn reload(gw: &mut Gateway, path: &Path) {
    info!(file = %path.display(), "reloading the configuration");
    let cfg = match dustgate::config::load(path) {
        Ok(cfg) => cfg,
        Err(diags) => {
            for d in &diags.0 {
                error!("{d}");
            }
            refused(gw, diags.0.iter().map(|d| d.to_string()).collect());
            return;
        }
    };
    for w in &cfg.warnings {
        warn!("{w}");
    }
    let sha = cfg.sha256.clone();
    let changes = match gw.reload(cfg).await {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "cannot apply the configuration");
            refused(gw, vec![e]);
            return;
        }
    };
    if changes.is_empty() {
        info!(sha256 = %sha, "configuration reloaded: nothing changed");
    } else {
        info!(
            sha256 = %sha,
            core = changes.core,
            buses_stopped = ?changes.buses_stopped,
            buses_started = ?changes.buses_started,
            alert_outputs = ?changes.outputs,
            "configuration reloaded"
        );
    }
    for section in gw.health.config.get().pending_restart {
        warn!(section = %section, "changed in the file: takes effect at the next restart");
    }
}

/// Tells systemd the gateway is alive while its core answers: a core stuck behind its lock
/// stops the pings, and systemd restarts the service (`WatchdogSec=`).
async fn watchdog(site: Arc<dustgate::edge::SiteEdge>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let site = site.clone();
        if tokio::task::spawn_blocking(move || site.actuators_settled())
            .await
            .is_ok()
        {
            notify::watchdog();
        }
    }
}
