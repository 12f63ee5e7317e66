//! `dustgate probe modbus`: one read, decoded with a profile or shown raw, for commissioning.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::ArgGroup;
use dustgate::config::metrics::unit_of;
use dustgate::config::profile::{ProfileError, ProfileLoader};
use dustgate::config::reader::parse_duration;
use dustgate::config::{Diagnostics, Parity, SerialLine, Transport};
use dustgate::sources::modbus::link;
use dustgate::sources::modbus::planner::{self, Read};
use dustgate::sources::modbus::registers::Table;
use dustgate::sources::modbus::request::{self, Data};

#[derive(clap::Args)]
#[command(group(ArgGroup::new("link").required(true).args(["tcp", "rtu", "rtu_over_tcp"])))]
#[command(group(ArgGroup::new("what").required(true).args(["profile", "raw"])))]
pub struct ModbusArgs {
    /// Modbus TCP device or gateway, HOST:PORT.
    #[arg(long)]
    tcp: Option<String>,
    /// Serial device for RTU, e.g. /dev/ttyUSB0.
    #[arg(long)]
    rtu: Option<String>,
    /// Serial server in transparent mode (RTU frames over TCP), HOST:PORT.
    #[arg(long = "rtu-over-tcp")]
    rtu_over_tcp: Option<String>,
    #[arg(long, default_value_t = 9600)]
    baud: u32,
    /// none, even or odd.
    #[arg(long, default_value = "none")]
    parity: String,
    #[arg(long, default_value_t = 8)]
    data_bits: u8,
    #[arg(long, default_value_t = 1)]
    stop_bits: u8,
    /// Modbus unit (slave) id.
    #[arg(long)]
    unit: u8,
    /// Decode with this device profile (built in, or in --devices).
    #[arg(long)]
    profile: Option<String>,
    /// Read raw values: TABLE:ADDRESS:COUNT, e.g. holding:0x2600:4.
    #[arg(long)]
    raw: Option<String>,
    #[arg(long, default_value = "1s")]
    timeout: String,
    /// A folder of your own profiles, searched before the built-in ones.
    #[arg(long, default_value = "devices")]
    devices: PathBuf,
}

fn transport(a: &ModbusArgs) -> anyhow::Result<Transport> {
    if let Some(addr) = &a.tcp {
        return Ok(Transport::Tcp {
            address: addr.clone(),
        });
    }
    if let Some(addr) = &a.rtu_over_tcp {
        return Ok(Transport::RtuOverTcp {
            address: addr.clone(),
        });
    }
    let Some(path) = &a.rtu else {
        bail!("give --tcp, --rtu or --rtu-over-tcp");
    };
    let parity = match a.parity.as_str() {
        "none" => Parity::None,
        "even" => Parity::Even,
        "odd" => Parity::Odd,
        other => bail!("unknown parity \"{other}\": none, even or odd"),
    };
    Ok(Transport::Rtu(SerialLine {
        path: path.clone(),
        baud: a.baud,
        parity,
        data_bits: a.data_bits,
        stop_bits: a.stop_bits,
    }))
}

fn parse_u16(s: &str) -> anyhow::Result<u16> {
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => s.parse(),
    };
    v.with_context(|| format!("\"{s}\" is not a number from 0 to 65535"))
}

fn parse_raw(spec: &str) -> anyhow::Result<Read> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [table, start, count] = parts.as_slice() else {
        bail!("--raw wants TABLE:ADDRESS:COUNT, e.g. holding:0:10");
    };
    let table: Table = table.parse().map_err(anyhow::Error::msg)?;
    let count = parse_u16(count)?;
    if count == 0 || count > table.protocol_max_read() {
        bail!(
            "count must be 1..={} for {table}",
            table.protocol_max_read()
        );
    }
    Ok(Read {
        table,
        start: parse_u16(start)?,
        count,
    })
}

pub fn modbus(a: ModbusArgs) -> anyhow::Result<ExitCode> {
    super::init_logging("warn", jiff::tz::TimeZone::system());
    let timeout: Duration = parse_duration(&a.timeout).map_err(anyhow::Error::msg)?;
    let transport = transport(&a)?;
    let profile = match &a.profile {
        None => None,
        Some(name) => {
            let mut loader = ProfileLoader::new(vec![a.devices.clone()]);
            let mut diags = Diagnostics::default();
            match loader.load(name, &mut diags) {
                Ok(p) => Some(p),
                Err(ProfileError::NotFound(msg)) => bail!(msg),
                Err(ProfileError::Invalid) => {
                    bail!("profile \"{name}\" has errors:\n{diags}")
                }
            }
        }
    };
    let reads: Vec<Read> = match (&profile, &a.raw) {
        (Some(p), _) => {
            let spans: Vec<_> = p.registers.iter().map(|r| r.span()).collect();
            planner::plan(&spans, &p.limits()).reads
        }
        (None, Some(raw)) => vec![parse_raw(raw)?],
        (None, None) => bail!("give --profile or --raw"),
    };

    let rt = super::runtime()?;
    rt.block_on(async move {
        println!("unit {} on {}", a.unit, transport.describe());
        if let Some(p) = &profile {
            println!(
                "profile {} {}: {}",
                p.name,
                p.confidence.mark(),
                p.description
            );
        }
        let mut ctx = link::open(&transport, a.unit, timeout).await?;
        let mut failed = false;
        let mut replies: Vec<Option<Data>> = Vec::new();
        for r in &reads {
            let head = format!(
                "FC{:02} {} {}+{}",
                r.table.read_function(),
                r.table,
                r.start,
                r.count
            );
            match tokio::time::timeout(timeout, request::read(&mut ctx, *r)).await {
                Err(_) => {
                    println!("{head}: no reply within {timeout:?}");
                    failed = true;
                    replies.push(None);
                    // The connection may now carry a late reply: start afresh.
                    ctx = link::open(&transport, a.unit, timeout).await?;
                }
                Ok(Err(e)) => {
                    println!("{head}: link error: {e}");
                    failed = true;
                    replies.push(None);
                    ctx = link::open(&transport, a.unit, timeout).await?;
                }
                Ok(Ok(Err(exc))) => {
                    println!("{head}: exception {exc}");
                    failed = true;
                    replies.push(None);
                }
                Ok(Ok(Ok(data))) => {
                    println!("{head}: {}", show_raw(r, &data));
                    replies.push(Some(data));
                }
            }
        }
        if let Some(p) = &profile {
            let spans: Vec<_> = p.registers.iter().map(|r| r.span()).collect();
            let plan = planner::plan(&spans, &p.limits());
            println!();
            for (reg, loc) in p.registers.iter().zip(&plan.locations) {
                let shown = match &replies[loc.read] {
                    Some(data) => {
                        let v = request::value_of(reg, data, usize::from(loc.offset));
                        format!("{v} {}", unit_of(&reg.metric))
                    }
                    None => "(not read)".to_string(),
                };
                println!(
                    "  {:<22} {:<18} {} {} {}{}",
                    reg.metric,
                    shown.trim_end(),
                    reg.table,
                    reg.address,
                    reg.ty,
                    if reg.ty.width() > 1 {
                        format!(" {}", reg.order)
                    } else {
                        String::new()
                    }
                );
            }
        }
        anyhow::Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}

fn show_raw(r: &Read, data: &Data) -> String {
    match data {
        Data::Words(w) => w
            .iter()
            .enumerate()
            .map(|(i, v)| format!("[{}]={v} (0x{v:04X})", u32::from(r.start) + i as u32))
            .collect::<Vec<_>>()
            .join(" "),
        Data::Bits(b) => b
            .iter()
            .enumerate()
            .map(|(i, v)| format!("[{}]={}", u32::from(r.start) + i as u32, u8::from(*v)))
            .collect::<Vec<_>>()
            .join(" "),
    }
}
