//! The command-line edges: configuration errors are printed here, runtimes built here.

pub mod check;
pub mod demo;
pub mod logging;
pub mod notify;
pub mod probe;
pub mod run;
pub mod store;

use std::path::Path;

use dustgate::config::{self, Config};

/// Logs to stderr, stamped in `tz` (the site's zone; the machine's for commands without a
/// site), as `--log-format` asks; `DUSTGATE_LOG` (or `RUST_LOG`) overrides the default level,
/// e.g. `DUSTGATE_LOG=dustgate=debug`.
pub fn init_logging(default: &str, tz: jiff::tz::TimeZone) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DUSTGATE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let format = logging::FORMAT.get().copied().unwrap_or_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .event_format(logging::SiteFormat::new(tz, format))
        .try_init();
}

/// rustls is built without a default crypto provider (ring only, no aws-lc C build).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Loads a config, or prints every problem and returns `None`.
pub fn load_or_report(path: &Path) -> Option<Config> {
    match config::load(path) {
        Ok(c) => Some(c),
        Err(diags) => {
            for d in &diags.0 {
                eprintln!("{d}");
            }
            let n = diags.len();
            eprintln!(
                "\n{} problem{} found in {}; nothing started.",
                n,
                if n == 1 { "" } else { "s" },
                path.display()
            );
            None
        }
    }
}

/// One worker thread: the gateway's tasks are many but light, and on a small box keeping them
/// on one thread saves the cross-thread wake-ups that otherwise cost more than the work (an
/// MQTT message and its acknowledgement would bounce between threads). Blocking work (disk
/// commits, reading a backlog) steps aside with `block_in_place`, which needs this
/// multi-thread flavour.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("dustgate")
        .build()?)
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
