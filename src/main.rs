//! The `dustgate` command: run, check, demo, probe.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dustgate",
    version,
    about = "Construction-site and environmental monitoring gateway: Modbus sensors to InfluxDB"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text, or as one JSON object a line (journald, log shippers).
    #[arg(long, global = true, value_enum, default_value_t)]
    log_format: cli::logging::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway until SIGINT or SIGTERM.
    Run {
        /// The site configuration (site.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration and print the poll plan; exit 1 on any problem.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// A simulated site on loopback, through the same code as `run`.
    Demo(cli::demo::DemoArgs),
    /// One read from a device, decoded, for commissioning.
    Probe {
        #[command(subcommand)]
        what: Probe,
    },
    /// What the store holds: queues, outboxes, HJ 212 backlogs, dead letters.
    Store {
        #[command(subcommand)]
        what: Store,
    },
    /// Send dead-lettered InfluxDB batches again, once their cause is fixed.
    Replay(cli::store::ReplayArgs),
}

#[derive(Subcommand)]
enum Store {
    /// Depth, oldest, outboxes and dead letters, per destination.
    Status {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum Probe {
    /// Read a Modbus device once.
    Modbus(cli::probe::ModbusArgs),
    /// Decode a sample MQTT payload with a JSON profile.
    Mqtt(cli::probe::MqttArgs),
}

/// glibc's malloc gives threads that allocate at once arenas of their own (up to 8 a core);
/// memory freed into one is not reused by another, so a hub's many small long-lived
/// allocations, made on the runtime's threads and the store's, spread and fragment. One
/// arena keeps a small box's RSS down: at 10,000 HJ 212 monitors two arenas peaked 4-6 MB
/// higher than one, at the same CPU per frame (BENCHMARKS.md, "HJ 212 ingest"); the
/// gateway's few threads seldom allocate at the same moment. `MALLOC_ARENA_MAX` in the
/// environment wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt sets an allocator parameter; it is called before any other thread
        // exists and has no memory-safety precondition.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let args = Args::parse();
    let _ = cli::logging::FORMAT.set(args.log_format);
    let result = match args.command {
        Command::Run { config } => cli::run::run(&config),
        Command::Check { config } => cli::check::check(&config),
        Command::Demo(a) => cli::demo::demo(a),
        Command::Probe {
            what: Probe::Modbus(a),
        } => cli::probe::modbus(a),
        Command::Probe {
            what: Probe::Mqtt(a),
        } => cli::probe::mqtt(a),
        Command::Store {
            what: Store::Status { config },
        } => cli::store::status(&config),
        Command::Replay(a) => cli::store::replay(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dustgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
