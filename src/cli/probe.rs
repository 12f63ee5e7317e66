//! `dustgate probe modbus`: one read, decoded with a profile or shown raw, for commissioning;
//! a device as it stands in `site.toml` (`--config --device`); a 32-bit value in all four byte
//! orders (`--orders`); a warning where a value is outside the sensor's range (a wrong byte
//! order or scale shows so). `dustgate probe mqtt`: a sample payload decoded with a profile.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::ArgGroup;
use dustgate::config::json_profile::JsonKind;
use dustgate::config::metrics::{Catalog, unit_of};
use dustgate::config::profile::{ModbusProfile, ProfileError, ProfileLoader};
use dustgate::config::reader::parse_duration;
use dustgate::config::{DeviceFrom, Diagnostics, Parity, SerialLine, Subscription, Transport};
use dustgate::sources::modbus::link;
use dustgate::sources::modbus::planner::{self, Read};
use dustgate::sources::modbus::registers::{ByteOrder, Table, ValueType, decode};
use dustgate::sources::modbus::request::{self, Data};
use dustgate::sources::mqtt::mapping::{self, Mapped};

#[derive(clap::Args)]
#[command(group(ArgGroup::new("link").args(["tcp", "rtu", "rtu_over_tcp", "config"])))]
#[command(group(ArgGroup::new("what").args(["profile", "raw", "device"])))]
pub struct ModbusArgs {
    /// Probe a device as it stands in this site.toml (with --device): its bus, unit and
    /// profile.
    #[arg(long, requires = "device")]
    config: Option<PathBuf>,
    /// The device's id in --config.
    #[arg(long, requires = "config")]
    device: Option<String>,
    /// Show every 32-bit value in all four byte orders (ABCD, CDAB, BADC, DCBA), to find the
    /// device's.
    #[arg(long)]
    orders: bool,
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
    /// Modbus unit (slave) id, decimal or 0x hex.
    #[arg(long)]
    unit: Option<String>,
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

/// What to read and how: from the command line, or from a device in a site.toml.
struct Target {
    transport: Transport,
    unit: u8,
    profile: Option<Arc<ModbusProfile>>,
    timeout: Duration,
}

/// A profile from `devices/` (then the built-ins) by `load` (Modbus or JSON), or why not.
fn load_profile<T>(
    name: &str,
    devices: &Path,
    load: impl FnOnce(&mut ProfileLoader, &str, &mut Diagnostics) -> Result<T, ProfileError>,
) -> anyhow::Result<T> {
    let mut loader = ProfileLoader::new(vec![devices.to_path_buf()]);
    let mut diags = Diagnostics::default();
    match load(&mut loader, name, &mut diags) {
        Ok(p) => Ok(p),
        Err(ProfileError::NotFound(msg)) => bail!(msg),
        Err(ProfileError::Invalid) => bail!("profile \"{name}\" has errors:\n{diags}"),
    }
}

fn target(a: &ModbusArgs) -> anyhow::Result<Target> {
    if let (Some(path), Some(id)) = (&a.config, &a.device) {
        let cfg = dustgate::config::load(path).map_err(|d| anyhow::anyhow!("{d}"))?;
        let found = cfg
            .buses
            .iter()
            .find_map(|b| b.devices.iter().find(|d| &d.id == id).map(|d| (b, d)));
        let Some((bus, d)) = found else {
            let known: Vec<&str> = cfg
                .buses
                .iter()
                .flat_map(|b| b.devices.iter().map(|d| d.id.as_str()))
                .collect();
            bail!(
                "no Modbus device \"{id}\" in {}; it has: {}",
                path.display(),
                known.join(", ")
            );
        };
        println!("device {id} on bus {} of {}", bus.name, path.display());
        return Ok(Target {
            transport: bus.transport.clone(),
            unit: d.unit,
            profile: Some(d.profile.clone()),
            timeout: bus.timeout,
        });
    }
    if a.tcp.is_none() && a.rtu.is_none() && a.rtu_over_tcp.is_none() {
        bail!("give --tcp, --rtu or --rtu-over-tcp (or --config site.toml --device ID)");
    }
    let Some(unit) = &a.unit else {
        bail!("give --unit (the device's Modbus address)");
    };
    let unit = parse_u16(unit)?;
    let Ok(unit) = u8::try_from(unit) else {
        bail!("--unit {unit}: a Modbus unit is 0 to 255 (247 at most on RS-485)");
    };
    if a.profile.is_none() && a.raw.is_none() {
        bail!("give --profile or --raw");
    }
    Ok(Target {
        transport: transport(a)?,
        unit,
        profile: a
            .profile
            .as_deref()
            .map(|n| load_profile(n, &a.devices, |l, n, d| l.load(n, d)))
            .transpose()?,
        timeout: parse_duration(&a.timeout).map_err(anyhow::Error::msg)?,
    })
}

/// A number short enough to compare by eye: tiny and huge floats (what a wrong byte order
/// makes of a float) in scientific notation.
fn show(v: f64) -> String {
    if v == 0.0 || !v.is_finite() || (1e-4..1e10).contains(&v.abs()) {
        format!("{v}")
    } else {
        format!("{v:.4e}")
    }
}

/// A 32-bit register's two words in every byte order, as its type.
fn in_all_orders(ty: ValueType, words: &[u16]) -> String {
    ByteOrder::ALL
        .iter()
        .map(|&o| format!("{} {}", o.name(), show(decode(words, ty, o, None))))
        .collect::<Vec<_>>()
        .join("   ")
}

/// Two consecutive raw registers read as a 32-bit value in every order and type.
fn raw_orders(r: &Read, words: &[u16]) -> Vec<String> {
    words
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let types = [ValueType::F32, ValueType::U32, ValueType::I32]
                .iter()
                .map(|&t| format!("{}: {}", t.name(), in_all_orders(t, w)))
                .collect::<Vec<_>>()
                .join("\n      ");
            format!(
                "  [{}..{}]\n      {types}",
                u32::from(r.start) + i as u32,
                u32::from(r.start) + i as u32 + 1
            )
        })
        .collect()
}

/// Why a decoded value looks wrong, if it does: outside the device's range, or the metric's
/// physical one (data/metrics.toml).
fn absurd(metric: &str, range: Option<(f64, f64)>, v: f64) -> Option<String> {
    if !v.is_finite() {
        return Some("not a number: check the type and the byte order".into());
    }
    let (lo, hi) = range.or_else(|| Catalog::builtin().get(metric).and_then(|i| i.range))?;
    (v < lo || v > hi).then(|| {
        format!(
            "outside the sensor's range {lo}..{hi}: check the byte order, the scale and the address"
        )
    })
}

pub fn modbus(a: ModbusArgs) -> anyhow::Result<ExitCode> {
    super::init_logging("warn", jiff::tz::TimeZone::system());
    let Target {
        transport,
        unit,
        profile,
        timeout,
    } = target(&a)?;
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
        println!("unit {unit} on {}", transport.describe());
        if let Some(p) = &profile {
            println!(
                "profile {} {}: {}",
                p.name,
                p.confidence.mark(),
                p.description
            );
        }
        let mut ctx = link::open(&transport, unit, timeout).await?;
        let mut failed = false;
        let mut absurd_values = 0;
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
                    ctx = link::open(&transport, unit, timeout).await?;
                }
                Ok(Err(e)) => {
                    println!("{head}: link error: {e}");
                    failed = true;
                    replies.push(None);
                    ctx = link::open(&transport, unit, timeout).await?;
                }
                Ok(Ok(Err(exc))) => {
                    println!("{head}: exception {exc}");
                    failed = true;
                    replies.push(None);
                }
                Ok(Ok(Ok(data))) => {
                    println!("{head}: {}", show_raw(r, &data));
                    if a.orders
                        && profile.is_none()
                        && let Data::Words(w) = &data
                    {
                        println!("  as 32-bit values (registers [n..n+1]):");
                        for line in raw_orders(r, w) {
                            println!("{line}");
                        }
                    }
                    replies.push(Some(data));
                }
            }
        }
        if let Some(p) = &profile {
            let spans: Vec<_> = p.registers.iter().map(|r| r.span()).collect();
            let plan = planner::plan(&spans, &p.limits());
            println!();
            let mut warnings = 0;
            for (reg, loc) in p.registers.iter().zip(&plan.locations) {
                let mut notes = Vec::new();
                let shown = match &replies[loc.read] {
                    Some(data) => {
                        let off = usize::from(loc.offset);
                        let v = request::value_of(reg, data, off);
                        if let Some(why) = absurd(&reg.metric, reg.range, v) {
                            notes.push(format!("WARNING: {why}"));
                            warnings += 1;
                        }
                        if a.orders
                            && reg.ty.width() == 2
                            && let Data::Words(w) = data
                            && let Some(words) = w.get(off..off + 2)
                        {
                            notes.push(format!("byte orders: {}", in_all_orders(reg.ty, words)));
                        }
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
                for n in notes {
                    println!("      {n}");
                }
            }
            if warnings > 0 {
                println!(
                    "\n{warnings} value(s) outside their sensor's range: see the warnings above"
                );
            }
            absurd_values = warnings;
        }
        anyhow::Ok(if failed || absurd_values > 0 {
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

#[derive(clap::Args)]
pub struct MqttArgs {
    /// The JSON profile to decode with (built in, or in --devices).
    #[arg(long)]
    profile: String,
    /// The sample payload: JSON text, or @FILE to read it from a file.
    #[arg(long)]
    payload: String,
    /// The topic it came on (for `device = "{1}"`-style ids).
    #[arg(long, default_value = "sensors/probe/telemetry")]
    topic: String,
    /// Where the device id comes from, as in `[[mqtt.subscribe]]`: `{N}` a topic level,
    /// `/pointer` into the payload, or a fixed id.
    #[arg(long, default_value = "{1}")]
    device: String,
    /// A folder of your own profiles, searched before the built-in ones.
    #[arg(long, default_value = "devices")]
    devices: PathBuf,
}

/// `{N}`, `/pointer` or a fixed id, as the config reads `device`.
fn device_from(s: &str) -> anyhow::Result<DeviceFrom> {
    if let Some(n) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        return Ok(DeviceFrom::TopicLevel(n.parse().with_context(|| {
            format!("--device {s}: a topic level is {{0}}, {{1}}, ...")
        })?));
    }
    if s.starts_with('/') {
        return Ok(DeviceFrom::Pointer(s.to_string()));
    }
    Ok(DeviceFrom::Fixed(s.to_string()))
}

pub fn mqtt(a: MqttArgs) -> anyhow::Result<ExitCode> {
    let payload = match a.payload.strip_prefix('@') {
        Some(file) => std::fs::read(file).with_context(|| format!("reading {file}"))?,
        None => a.payload.clone().into_bytes(),
    };
    let profile = load_profile(&a.profile, &a.devices, |l, n, d| l.load_json(n, d))?;
    let sub = Subscription {
        topic: a.topic.clone(),
        filter: a.topic.clone(),
        device: device_from(&a.device)?,
        profile: profile.clone(),
        qos: 1,
        max_devices: 1,
    };
    println!("profile {}: {}", profile.name, profile.description);
    let now = dustgate::model::now_ms();
    match mapping::map(&sub, &a.topic, &payload, now) {
        Err(why) => {
            println!("REJECTED: {why}");
            Ok(ExitCode::FAILURE)
        }
        Ok(Mapped::Readings(items)) => {
            let JsonKind::Readings(fields) = &profile.kind else {
                bail!("a readings profile gave no fields");
            };
            let mut warnings = 0;
            for item in items {
                let stamp = jiff::Timestamp::from_millisecond(item.time_ms)
                    .map(|t| t.to_string())
                    .unwrap_or_else(|_| item.time_ms.to_string());
                let age_s = (now - item.time_ms) as f64 / 1000.0;
                println!("device {} at {stamp} ({age_s:.0} s ago)", item.device);
                if age_s < -300.0 {
                    println!(
                        "  WARNING: stamped more than 5 min in the future: the gateway refuses it ([site].max_future)"
                    );
                    warnings += 1;
                }
                for (f, v) in fields.iter().zip(&item.values) {
                    let shown = match v {
                        Some(v) => format!("{v} {}", unit_of(&f.metric)),
                        None if item.invalid.contains(&f.metric) => {
                            warnings += 1;
                            "NOT A NUMBER: refused and counted (dustgate_invalid_values_total)"
                                .into()
                        }
                        None => "(absent)".into(),
                    };
                    println!(
                        "  {:<22} {:<18} from {}",
                        f.metric,
                        shown.trim_end(),
                        f.pointer
                    );
                    if let Some(v) = v
                        && let Some(why) = absurd(&f.metric, None, *v)
                    {
                        println!("      WARNING: {why}");
                        warnings += 1;
                    }
                }
            }
            Ok(if warnings == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Ok(other) => {
            println!("{other:#?}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
