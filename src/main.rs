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
}

#[derive(Subcommand)]
enum Probe {
    /// Read a Modbus device once.
    Modbus(cli::probe::ModbusArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Run { config } => cli::run::run(&config),
        Command::Check { config } => cli::check::check(&config),
        Command::Demo(a) => cli::demo::demo(a),
        Command::Probe {
            what: Probe::Modbus(a),
        } => cli::probe::modbus(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dustgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
