//! `[[modbus]]` buses and their `[[modbus.device]]`s: transport, timing, units, profiles and
//! read limits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::common::{check_tags, in_range, positive};
use super::profile::{ModbusProfile, ProfileError, ProfileLoader};
use super::reader::{Cx, Sp, Span, TableReader};
use crate::register::Limits;

#[derive(Debug)]
pub struct RawBus {
    pub span: Span,
    pub path_key: String,
    pub name: Option<Sp<String>>,
    pub transport: Option<Sp<String>>,
    pub address: Option<Sp<String>>,
    pub path: Option<Sp<String>>,
    pub baud: Option<Sp<i64>>,
    pub parity: Option<Sp<String>>,
    pub data_bits: Option<Sp<i64>>,
    pub stop_bits: Option<Sp<i64>>,
    pub timeout: Option<Sp<Duration>>,
    pub interval: Option<Sp<Duration>>,
    pub request_gap: Option<Sp<Duration>>,
    pub max_read: Option<Sp<i64>>,
    pub max_gap: Option<Sp<i64>>,
    pub down_after: Option<Sp<i64>>,
    pub devices: Vec<RawDevice>,
}

#[derive(Debug)]
pub struct RawDevice {
    pub span: Span,
    pub path_key: String,
    pub id: Option<Sp<String>>,
    pub unit: Option<Sp<i64>>,
    pub profile: Option<Sp<String>>,
    pub interval: Option<Sp<Duration>>,
    pub tags: Vec<(Sp<String>, Sp<String>)>,
    pub max_read: Option<Sp<i64>>,
    pub max_gap: Option<Sp<i64>>,
    pub read_singly: Option<Sp<bool>>,
    pub down_after: Option<Sp<i64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

impl Parity {
    pub fn letter(self) -> char {
        match self {
            Parity::None => 'N',
            Parity::Even => 'E',
            Parity::Odd => 'O',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialLine {
    pub path: String,
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Modbus TCP (MBAP header).
    Tcp { address: String },
    /// RTU frames on a serial line (RS-485).
    Rtu(SerialLine),
    /// RTU frames through a TCP socket (a serial server in transparent mode).
    RtuOverTcp { address: String },
}

impl Transport {
    pub fn kind(&self) -> &'static str {
        match self {
            Transport::Tcp { .. } => "tcp",
            Transport::Rtu(_) => "rtu",
            Transport::RtuOverTcp { .. } => "rtu-over-tcp",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Transport::Tcp { address } => format!("Modbus TCP {address}"),
            Transport::RtuOverTcp { address } => format!("RTU over TCP {address}"),
            Transport::Rtu(l) => format!(
                "RTU {} {} {}{}{}",
                l.path,
                l.baud,
                l.data_bits,
                l.parity.letter(),
                l.stop_bits
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BusConfig {
    pub name: String,
    pub transport: Transport,
    pub timeout: Duration,
    /// Silence kept between the end of one exchange and the next request.
    pub request_gap: Duration,
    pub devices: Vec<DeviceConfig>,
}

#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub id: String,
    pub unit: u8,
    pub profile: Arc<ModbusProfile>,
    pub interval: Duration,
    pub tags: Vec<(String, String)>,
    pub limits: Limits,
    /// Consecutive failed polls before the device counts as down.
    pub down_after: u32,
}

/// Reads the section's shape (types, unknown keys, required keys).
pub fn read(cx: &mut Cx<'_>, root: &mut TableReader<'_, '_>) -> Vec<RawBus> {
    let mut raw = Vec::new();
    for mut b in root.tables(cx, "modbus") {
        let mut bus = RawBus {
            span: b.span(),
            path_key: b.path().to_string(),
            name: b.req(cx, "name"),
            transport: b.req(cx, "transport"),
            address: b.opt(cx, "address"),
            path: b.opt(cx, "path"),
            baud: b.opt(cx, "baud"),
            parity: b.opt(cx, "parity"),
            data_bits: b.opt(cx, "data_bits"),
            stop_bits: b.opt(cx, "stop_bits"),
            timeout: b.opt(cx, "timeout"),
            interval: b.opt(cx, "interval"),
            request_gap: b.opt(cx, "request_gap"),
            max_read: b.opt(cx, "max_read"),
            max_gap: b.opt(cx, "max_gap"),
            down_after: b.opt(cx, "down_after"),
            devices: Vec::new(),
        };
        for mut d in b.tables(cx, "device") {
            bus.devices.push(RawDevice {
                span: d.span(),
                path_key: d.path().to_string(),
                id: d.req(cx, "id"),
                unit: d.req(cx, "unit"),
                profile: d.req(cx, "profile"),
                interval: d.opt(cx, "interval"),
                tags: d.string_map(cx, "tags"),
                max_read: d.opt(cx, "max_read"),
                max_gap: d.opt(cx, "max_gap"),
                read_singly: d.opt(cx, "read_singly"),
                down_after: d.opt(cx, "down_after"),
            });
            d.finish(cx);
        }
        b.finish(cx);
        raw.push(bus);
    }
    raw
}

/// Checks the buses and their devices; also gives each device id with the line it is on (ids
/// are unique across buses, and MQTT's fixed ids are checked against them).
pub fn validate(
    cx: &mut Cx<'_>,
    raw: Vec<RawBus>,
    profiles: &mut ProfileLoader,
) -> (Vec<BusConfig>, HashMap<String, usize>) {
    let mut buses = Vec::new();
    let mut bus_names: HashMap<String, usize> = HashMap::new();
    let mut device_ids: HashMap<String, usize> = HashMap::new();
    for b in raw {
        if let Some(name) = &b.name {
            if let Some(line) = bus_names.get(&name.value) {
                cx.error(
                    &name.span,
                    &format!("{}.name", b.path_key),
                    format!("bus name \"{}\" is already used at line {line}", name.value),
                );
            } else {
                bus_names.insert(name.value.clone(), cx.file.position(name.span.start).0);
            }
        }
        if let Some(bus) = bus(cx, b, profiles, &mut device_ids) {
            buses.push(bus);
        }
    }
    (buses, device_ids)
}

fn bus(
    cx: &mut Cx<'_>,
    b: RawBus,
    profiles: &mut ProfileLoader,
    device_ids: &mut HashMap<String, usize>,
) -> Option<BusConfig> {
    let key = |k: &str| format!("{}.{k}", b.path_key);
    let transport = b.transport.as_ref().and_then(|t| {
        let serial_keys = [("path", b.path.is_some()), ("baud", b.baud.is_some()), ("parity", b.parity.is_some()), ("data_bits", b.data_bits.is_some()), ("stop_bits", b.stop_bits.is_some())];
        match t.value.as_str() {
            "tcp" | "rtu-over-tcp" => {
                for (k, present) in serial_keys {
                    if present {
                        cx.error(&t.span, &key(k), format!("`{k}` is for transport = \"rtu\"; a {} bus has `address = \"host:port\"`", t.value));
                    }
                }
                let address = match &b.address {
                    None => {
                        cx.error(&b.span, &key("address"), format!("transport = \"{}\" needs `address = \"host:port\"`", t.value));
                        None
                    }
                    Some(a) => match a.value.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
                        Some((h, Ok(_))) if !h.is_empty() => Some(a.value.clone()),
                        _ => {
                            cx.error(&a.span, &key("address"), format!("\"{}\" is not host:port, e.g. \"192.168.1.20:502\"", a.value));
                            None
                        }
                    },
                }?;
                Some(if t.value == "tcp" {
                    Transport::Tcp { address }
                } else {
                    Transport::RtuOverTcp { address }
                })
            }
            "rtu" => {
                if let Some(a) = &b.address {
                    cx.error(&a.span, &key("address"), "`address` is for tcp and rtu-over-tcp; an rtu bus has `path` (the serial device)");
                }
                let path = match &b.path {
                    Some(p) => Some(p.value.clone()),
                    None => {
                        cx.error(&b.span, &key("path"), "transport = \"rtu\" needs `path`, the serial device such as \"/dev/ttyUSB0\"");
                        None
                    }
                };
                let baud = b.baud.as_ref().map_or(Some(9600), |v| in_range::<u32>(cx, v, &key("baud"), 300, 4_000_000).map(|v| v.value));
                let parity = match b.parity.as_ref().map(|p| (p.value.as_str(), p)) {
                    None | Some(("none", _)) => Some(Parity::None),
                    Some(("even", _)) => Some(Parity::Even),
                    Some(("odd", _)) => Some(Parity::Odd),
                    Some((other, p)) => {
                        cx.error(&p.span, &key("parity"), format!("unknown parity \"{other}\": expected none, even or odd"));
                        None
                    }
                };
                let data_bits = b.data_bits.as_ref().map_or(Some(8), |v| in_range::<u8>(cx, v, &key("data_bits"), 7, 8).map(|v| v.value));
                let stop_bits = b.stop_bits.as_ref().map_or(Some(1), |v| in_range::<u8>(cx, v, &key("stop_bits"), 1, 2).map(|v| v.value));
                Some(Transport::Rtu(SerialLine {
                    path: path?,
                    baud: baud?,
                    parity: parity?,
                    data_bits: data_bits?,
                    stop_bits: stop_bits?,
                }))
            }
            other => {
                cx.error(&t.span, &key("transport"), format!("unknown transport \"{other}\": expected \"tcp\", \"rtu\" or \"rtu-over-tcp\""));
                None
            }
        }
    });
    let is_rtu_framing = !matches!(transport, Some(Transport::Tcp { .. }));
    let timeout = positive(cx, b.timeout, &key("timeout")).unwrap_or(Duration::from_secs(1));
    let interval = positive(cx, b.interval, &key("interval")).unwrap_or(Duration::from_secs(10));
    let request_gap = match b.request_gap {
        Some(g) if g.value > Duration::from_secs(10) => {
            cx.error(&g.span, &key("request_gap"), "must be at most 10s");
            Duration::ZERO
        }
        Some(g) => g.value,
        None if is_rtu_framing => Duration::from_millis(20),
        None => Duration::ZERO,
    };
    let bus_max_read = b
        .max_read
        .as_ref()
        .and_then(|v| in_range::<u16>(cx, v, &key("max_read"), 1, 125))
        .map(|v| v.value);
    let bus_max_gap = b
        .max_gap
        .as_ref()
        .and_then(|v| in_range::<u16>(cx, v, &key("max_gap"), 0, 124))
        .map(|v| v.value);
    let bus_down_after = b
        .down_after
        .as_ref()
        .and_then(|v| in_range::<u32>(cx, v, &key("down_after"), 1, 1000))
        .map(|v| v.value);

    let mut units: HashMap<u8, String> = HashMap::new();
    let mut devices = Vec::new();
    for d in b.devices {
        let dev = device(
            cx,
            &d,
            profiles,
            interval,
            bus_max_read,
            bus_max_gap,
            bus_down_after,
            transport.as_ref(),
        );
        // Two devices on one unit would answer each other's requests: checked on the raw
        // values, so it is reported even when one of the devices has other problems.
        if let (Some(u), Some(id)) = (&d.unit, &d.id)
            && let Ok(unit) = u8::try_from(u.value)
        {
            match units.get(&unit) {
                Some(other) => cx.error(
                    &u.span,
                    &format!("{}.unit", d.path_key),
                    format!("unit {unit} is already used by device \"{other}\" on this bus"),
                ),
                None => {
                    units.insert(unit, id.value.clone());
                }
            }
        }
        if let Some(dev) = dev {
            devices.push(dev);
        }
        if let Some(id) = &d.id {
            if let Some(line) = device_ids.get(&id.value) {
                cx.error(
                    &id.span,
                    &format!("{}.id", d.path_key),
                    format!("device id \"{}\" is already used at line {line}", id.value),
                );
            } else {
                device_ids.insert(id.value.clone(), cx.file.position(id.span.start).0);
            }
        }
    }
    Some(BusConfig {
        name: b.name?.value,
        transport: transport?,
        timeout,
        request_gap,
        devices,
    })
}

#[allow(clippy::too_many_arguments)]
fn device(
    cx: &mut Cx<'_>,
    d: &RawDevice,
    profiles: &mut ProfileLoader,
    bus_interval: Duration,
    bus_max_read: Option<u16>,
    bus_max_gap: Option<u16>,
    bus_down_after: Option<u32>,
    transport: Option<&Transport>,
) -> Option<DeviceConfig> {
    let key = |k: &str| format!("{}.{k}", d.path_key);
    let id = d.id.as_ref().and_then(|id| {
        if id.value.trim().is_empty() || id.value.chars().any(char::is_control) {
            cx.error(
                &id.span,
                &key("id"),
                "device id must be non-empty printable text",
            );
            None
        } else {
            Some(id.value.clone())
        }
    });
    // Unit 0 is broadcast on serial lines (no reply); TCP devices often answer on 0 or 255.
    let (lo, hi) = match transport {
        Some(Transport::Tcp { .. }) => (0, 255),
        _ => (1, 247),
    };
    let unit = d.unit.as_ref().and_then(|u| {
        if u.value < lo || u.value > hi {
            cx.error(
                &u.span,
                &key("unit"),
                format!(
                    "unit {} is out of range: a {} bus takes units {lo}..={hi}",
                    u.value,
                    transport.map_or("Modbus", Transport::kind)
                ),
            );
            None
        } else {
            u8::try_from(u.value).ok()
        }
    });
    let profile = d.profile.as_ref().and_then(|p| {
        let before = cx.diags.len();
        match profiles.load(&p.value, cx.diags) {
            Ok(profile) => Some(profile),
            Err(ProfileError::NotFound(msg)) => {
                cx.error(&p.span, &key("profile"), msg);
                None
            }
            Err(ProfileError::Invalid) => {
                if cx.diags.len() == before {
                    cx.error(
                        &p.span,
                        &key("profile"),
                        format!("profile \"{}\" has errors (reported above)", p.value),
                    );
                } else {
                    cx.error(
                        &p.span,
                        &key("profile"),
                        format!("profile \"{}\" has errors, listed with its file", p.value),
                    );
                }
                None
            }
        }
    });
    let interval = positive(cx, d.interval.clone(), &key("interval")).unwrap_or(bus_interval);
    let tags = check_tags(cx, &d.tags, &key("tags"));
    let max_read = d
        .max_read
        .as_ref()
        .and_then(|v| in_range::<u16>(cx, v, &key("max_read"), 1, 125))
        .map(|v| v.value);
    let max_gap = d
        .max_gap
        .as_ref()
        .and_then(|v| in_range::<u16>(cx, v, &key("max_gap"), 0, 124))
        .map(|v| v.value);
    let down_after = d
        .down_after
        .as_ref()
        .and_then(|v| in_range::<u32>(cx, v, &key("down_after"), 1, 1000))
        .map(|v| v.value);
    let profile = profile?;
    let limits = Limits {
        max_read: max_read
            .or(bus_max_read)
            .or(profile.max_read)
            .unwrap_or(125),
        max_gap: max_gap.or(bus_max_gap).or(profile.max_gap).unwrap_or(0),
        read_singly: d
            .read_singly
            .as_ref()
            .map(|r| r.value)
            .or(profile.read_singly)
            .unwrap_or(false),
    };
    let widest = profile
        .registers
        .iter()
        .filter(|r| !r.table.is_bits())
        .map(|r| r.ty.width())
        .max()
        .unwrap_or(1);
    if limits.max_read < widest {
        let span = d
            .max_read
            .as_ref()
            .map_or(d.span.clone(), |m| m.span.clone());
        cx.error(&span, &key("max_read"), format!("max_read {} is smaller than the widest value of profile \"{}\" ({widest} registers)", limits.max_read, profile.name));
        return None;
    }
    Some(DeviceConfig {
        id: id?,
        unit: unit?,
        profile,
        interval,
        tags,
        limits,
        down_after: down_after.or(bus_down_after).unwrap_or(3),
    })
}
