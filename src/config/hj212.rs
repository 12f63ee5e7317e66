//! `[[hj212.listen]]` and their `[[hj212.listen.station]]`s: where monitors and data loggers
//! send HJ 212 frames to the gateway (a TCP port or a serial line), which CRC forms and MNs are
//! accepted, the limits of a listener, and each station's device, site, factor map and secrets.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::common::{Secret, in_range, positive, secret};
use super::factors::{DEFAULT_FACTOR_MAP, FactorMap};
use super::profile::{ProfileError, ProfileLoader};
use super::reader::{ByteSize, Cx, Sp, Span, TableReader};

#[derive(Debug)]
pub struct RawListener {
    pub span: Span,
    pub path_key: String,
    pub name: Option<Sp<String>>,
    pub listen: Option<Sp<String>>,
    pub public: Option<Sp<bool>>,
    pub path: Option<Sp<String>>,
    pub baud: Option<Sp<i64>>,
    pub crc: Option<Sp<Vec<String>>>,
    pub unknown: Option<Sp<String>>,
    pub factors: Option<Sp<String>>,
    pub max_connections: Option<Sp<i64>>,
    pub idle_timeout: Option<Sp<Duration>>,
    pub max_frame_rate: Option<Sp<f64>>,
    pub max_buffer: Option<Sp<ByteSize>>,
    pub max_drift: Option<Sp<Duration>>,
    pub set_time: Option<Sp<bool>>,
    pub flag_alert_after: Option<Sp<Duration>>,
    pub stations: Vec<RawStation>,
}

#[derive(Debug)]
pub struct RawStation {
    pub span: Span,
    pub path_key: String,
    pub mn: Option<Sp<String>>,
    pub device: Option<Sp<String>>,
    pub site: Option<Sp<String>>,
    pub factors: Option<Sp<String>>,
    pub password_env: Option<Sp<String>>,
    pub password_file: Option<Sp<String>>,
    pub sm4_key_env: Option<Sp<String>>,
    pub sm4_key_file: Option<Sp<String>>,
    pub kind: Option<Sp<String>>,
}

/// Where a listener takes frames from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hj212Endpoint {
    /// A TCP port; `public`: a non-loopback address was opted into with `public = true`.
    Tcp { address: SocketAddr, public: bool },
    /// A serial line (a monitor wired to the box), 8N1.
    Serial { path: String, baud: u32 },
}

impl Hj212Endpoint {
    pub fn describe(&self) -> String {
        match self {
            Hj212Endpoint::Tcp { address, public } => {
                format!("TCP {address}{}", if *public { " (public)" } else { "" })
            }
            Hj212Endpoint::Serial { path, baud } => format!("serial {path} {baud} 8N1"),
        }
    }
}

/// A CRC form a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrcForm {
    /// The standard's CRC (Appendix A).
    Hj212,
    /// CRC-16/MODBUS over the data segment, seen in the field (hj212-field.md §1.3).
    Modbus,
}

impl CrcForm {
    pub fn name(self) -> &'static str {
        match self {
            CrcForm::Hj212 => "hj212",
            CrcForm::Modbus => "modbus",
        }
    }
}

/// What happens to a frame from an MN no station lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownMn {
    /// Refused and counted (no answer).
    Reject,
    /// Taken, with the MN as the device id and the listener's factor map.
    Accept,
}

impl UnknownMn {
    pub fn name(self) -> &'static str {
        match self {
            UnknownMn::Reject => "reject",
            UnknownMn::Accept => "accept",
        }
    }
}

/// Whether a station is an air or a water monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StationKind {
    Air,
    Water,
}

impl StationKind {
    pub fn name(self) -> &'static str {
        match self {
            StationKind::Air => "air",
            StationKind::Water => "water",
        }
    }
}

/// One monitor or data logger, known by its MN.
#[derive(Debug, Clone)]
pub struct Hj212Station {
    pub mn: String,
    /// Tag `device`.
    pub device: String,
    /// Tag `site`: the station's own, or `[site].id`.
    pub site: String,
    /// The station's map, or its listener's.
    pub factors: Arc<FactorMap>,
    /// Frames with another PW are refused. Named, never written in the config.
    pub password: Option<Secret>,
    /// HJ 212-2025 SM4 key (resolve with [`resolve_sm4_key`]).
    pub sm4_key: Option<Secret>,
    /// `None`: from the metrics of the codes received.
    pub kind: Option<StationKind>,
}

/// One `[[hj212.listen]]`.
#[derive(Debug, Clone)]
pub struct Hj212Listener {
    pub name: String,
    pub endpoint: Hj212Endpoint,
    /// Accepted CRC forms, never empty.
    pub crc: Vec<CrcForm>,
    pub unknown: UnknownMn,
    /// The map of stations that name none (and of unknown MNs under `unknown = "accept"`).
    pub factors: Arc<FactorMap>,
    /// TCP connections served at once.
    pub max_connections: usize,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
    /// Frames per second a station may send; more are refused and counted.
    pub max_frame_rate: f64,
    /// The framer's buffer cap per connection, in bytes.
    pub max_buffer: usize,
    /// A monitor's clock off by more than this raises an alert.
    pub max_drift: Duration,
    /// Send CN=1012 (set time) to a monitor whose clock drifts past `max_drift`.
    pub set_time: bool,
    /// A data flag other than N held this long raises the data-quality alert.
    pub flag_alert_after: Duration,
    pub stations: Vec<Hj212Station>,
}

impl Hj212Listener {
    pub fn station(&self, mn: &str) -> Option<&Hj212Station> {
        self.stations.iter().find(|s| s.mn == mn)
    }
}

/// `[hj212]`: ingest listeners and the platforms reported to.
#[derive(Debug, Clone, Default)]
pub struct Hj212Config {
    pub listeners: Vec<Hj212Listener>,
    pub upstreams: Vec<super::upstream::Hj212Upstream>,
}

impl Hj212Config {
    /// Every factor map in use, once each, in order of first use.
    pub fn factor_maps(&self) -> Vec<&Arc<FactorMap>> {
        let mut out: Vec<&Arc<FactorMap>> = Vec::new();
        let listeners = self
            .listeners
            .iter()
            .flat_map(|l| std::iter::once(&l.factors).chain(l.stations.iter().map(|s| &s.factors)));
        for m in listeners.chain(self.upstreams.iter().map(|u| &u.factors)) {
            if !out.iter().any(|o| o.name == m.name) {
                out.push(m);
            }
        }
        out
    }

    /// Whether a listener takes MNs it does not list (then device ids are known only at run time).
    pub fn accepts_unknown(&self) -> bool {
        self.listeners
            .iter()
            .any(|l| l.unknown == UnknownMn::Accept)
    }
}

pub const DEFAULT_MAX_CONNECTIONS: usize = 2048;
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_MAX_FRAME_RATE: f64 = 10.0;
pub const DEFAULT_MAX_BUFFER: usize = 64 << 10;
/// The buffer must hold the longest frame: 9,999 bytes of data segment under 2017's 4-digit
/// length field, and an SM4-encrypted 2025 frame is written out four to five times longer.
const MIN_MAX_BUFFER: u64 = 16 << 10;
const MAX_MAX_BUFFER: u64 = 16 << 20;
pub const DEFAULT_MAX_DRIFT: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_FLAG_ALERT_AFTER: Duration = Duration::from_secs(30 * 60);
/// The standard's MN is 24 characters; the field has 14 (2005) and free-form ones.
const MAX_MN: usize = 64;

/// `[hj212]` as read: its listeners and its platforms.
#[derive(Debug, Default)]
pub struct RawHj212 {
    pub listeners: Vec<RawListener>,
    pub upstreams: Vec<super::upstream::RawUpstream>,
}

/// Reads `[hj212]` (types, unknown keys, required keys).
pub fn read(cx: &mut Cx<'_>, root: &mut TableReader<'_, '_>) -> RawHj212 {
    let mut raw = RawHj212::default();
    let Some(mut h) = root.table(cx, "hj212") else {
        return raw;
    };
    raw.upstreams = super::upstream::read(cx, &mut h);
    for mut l in h.tables(cx, "listen") {
        for k in ["password", "sm4_key"] {
            if l.has(k) {
                cx.error(
                    &l.table_span(k),
                    &l.key_path(k),
                    format!("`{k}` belongs to a [[hj212.listen.station]], as {k}_env or {k}_file"),
                );
            }
        }
        l.skip("password");
        l.skip("sm4_key");
        let mut listener = RawListener {
            span: l.span(),
            path_key: l.path().to_string(),
            name: l.req(cx, "name"),
            listen: l.opt(cx, "listen"),
            public: l.opt(cx, "public"),
            path: l.opt(cx, "path"),
            baud: l.opt(cx, "baud"),
            crc: l.opt(cx, "crc"),
            unknown: l.opt(cx, "unknown"),
            factors: l.opt(cx, "factors"),
            max_connections: l.opt(cx, "max_connections"),
            idle_timeout: l.opt(cx, "idle_timeout"),
            max_frame_rate: l.opt(cx, "max_frame_rate"),
            max_buffer: l.opt(cx, "max_buffer"),
            max_drift: l.opt(cx, "max_drift"),
            set_time: l.opt(cx, "set_time"),
            flag_alert_after: l.opt(cx, "flag_alert_after"),
            stations: Vec::new(),
        };
        for mut s in l.tables(cx, "station") {
            for k in ["password", "sm4_key"] {
                if s.has(k) {
                    cx.error(
                        &s.table_span(k),
                        &s.key_path(k),
                        format!(
                            "secrets never go in the config file: name them with {k}_env or {k}_file"
                        ),
                    );
                }
            }
            s.skip("password");
            s.skip("sm4_key");
            listener.stations.push(RawStation {
                span: s.span(),
                path_key: s.path().to_string(),
                mn: s.req(cx, "mn"),
                device: s.req(cx, "device"),
                site: s.opt(cx, "site"),
                factors: s.opt(cx, "factors"),
                password_env: s.opt(cx, "password_env"),
                password_file: s.opt(cx, "password_file"),
                sm4_key_env: s.opt(cx, "sm4_key_env"),
                sm4_key_file: s.opt(cx, "sm4_key_file"),
                kind: s.opt(cx, "kind"),
            });
            s.finish(cx);
        }
        l.finish(cx);
        raw.listeners.push(listener);
    }
    h.finish(cx);
    raw
}

/// Device ids other sources own, each with its line and the kind of source, so a station
/// cannot take one.
pub struct TakenIds<'a> {
    pub modbus: &'a HashMap<String, usize>,
    /// Fixed MQTT device ids.
    pub mqtt: &'a HashMap<String, usize>,
    /// `[http].listen`: a listener may not take its port.
    pub http_listen: Option<SocketAddr>,
}

/// Whether two listening addresses would take the same port.
fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Checks the listeners and their stations.
pub fn validate(
    cx: &mut Cx<'_>,
    raw: Vec<RawListener>,
    base: &Path,
    site_id: &str,
    profiles: &mut ProfileLoader,
    taken: &TakenIds<'_>,
) -> Hj212Config {
    let mut listeners = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut addresses: HashMap<String, usize> = HashMap::new();
    let mut mns: HashMap<String, usize> = HashMap::new();
    let mut devices: HashMap<String, usize> = HashMap::new();
    for l in raw {
        if let Some(n) = &l.name {
            let key = format!("{}.name", l.path_key);
            let plain = !n.value.is_empty()
                && n.value.len() <= 64
                && n.value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !plain {
                cx.error(
                    &n.span,
                    &key,
                    format!(
                        "\"{}\" is not a listener name: 1 to 64 of A-Z a-z 0-9 - _",
                        n.value
                    ),
                );
            } else if let Some(line) = names.get(&n.value) {
                cx.error(
                    &n.span,
                    &key,
                    format!(
                        "listener name \"{}\" is already used at line {line}",
                        n.value
                    ),
                );
            } else {
                names.insert(n.value.clone(), cx.file.position(n.span.start).0);
            }
        }
        for a in [&l.listen, &l.path].into_iter().flatten() {
            let key = if l.listen.as_ref() == Some(a) {
                "listen"
            } else {
                "path"
            };
            if let Some(line) = addresses.get(&a.value) {
                cx.error(
                    &a.span,
                    &format!("{}.{key}", l.path_key),
                    format!(
                        "\"{}\" is already a listener's (line {line}): one listener per port or line",
                        a.value
                    ),
                );
            } else {
                addresses.insert(a.value.clone(), cx.file.position(a.span.start).0);
            }
        }
        if let Some(listener) = listener(
            cx,
            l,
            base,
            site_id,
            profiles,
            taken,
            &mut mns,
            &mut devices,
        ) {
            listeners.push(listener);
        }
    }
    Hj212Config {
        listeners,
        upstreams: Vec::new(),
    }
}

/// Resolves a `factors = "<name>"` to its map, reporting at the key.
pub(super) fn factor_map(
    cx: &mut Cx<'_>,
    name: &Sp<String>,
    key: &str,
    profiles: &mut ProfileLoader,
) -> Option<Arc<FactorMap>> {
    let before = cx.diags.len();
    match profiles.load_factors(&name.value, cx.diags) {
        Ok(m) => Some(m),
        Err(ProfileError::NotFound(msg)) => {
            cx.error(&name.span, key, msg);
            None
        }
        Err(ProfileError::Invalid) => {
            let what = if cx.diags.len() == before {
                "has errors (reported above)"
            } else {
                "has errors, listed with its file"
            };
            cx.error(
                &name.span,
                key,
                format!("factor map \"{}\" {what}", name.value),
            );
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn listener(
    cx: &mut Cx<'_>,
    l: RawListener,
    base: &Path,
    site_id: &str,
    profiles: &mut ProfileLoader,
    taken: &TakenIds<'_>,
    mns: &mut HashMap<String, usize>,
    devices: &mut HashMap<String, usize>,
) -> Option<Hj212Listener> {
    let key = |k: &str| format!("{}.{k}", l.path_key);
    let endpoint = match (&l.listen, &l.path) {
        (Some(a), Some(p)) => {
            cx.error(
                &p.span,
                &key("path"),
                "give `listen` (a TCP address) or `path` (a serial line), not both",
            );
            let _ = a;
            None
        }
        (None, None) => {
            cx.error(
                &l.span,
                &key("listen"),
                "a listener needs `listen` (a TCP address such as \"127.0.0.1:6000\") or `path` and `baud` (a serial line)",
            );
            None
        }
        (Some(a), None) => {
            if let Some(b) = &l.baud {
                cx.error(
                    &b.span,
                    &key("baud"),
                    "`baud` is for a serial line (`path`)",
                );
            }
            let public = l.public.as_ref().is_some_and(|p| p.value);
            match a.value.parse::<SocketAddr>() {
                Err(_) => {
                    cx.error(
                        &a.span,
                        &key("listen"),
                        format!(
                            "\"{}\" is not an address:port such as \"127.0.0.1:6000\"",
                            a.value
                        ),
                    );
                    None
                }
                Ok(addr) if !addr.ip().is_loopback() && !public => {
                    cx.error(
                        &a.span,
                        &key("listen"),
                        format!(
                            "\"{}\" is reachable from other machines: HJ 212 sends its password in clear text, so say so with `public = true` (and list the stations' MNs and passwords)",
                            a.value
                        ),
                    );
                    None
                }
                Ok(addr) if taken.http_listen.is_some_and(|h| same_port(h, addr)) => {
                    cx.error(
                        &a.span,
                        &key("listen"),
                        format!(
                            "\"{}\" takes the port of [http].listen ({}): give HJ 212 a port of its own",
                            a.value,
                            taken.http_listen.map_or(String::new(), |h| h.to_string())
                        ),
                    );
                    None
                }
                Ok(address) => Some(Hj212Endpoint::Tcp {
                    address,
                    public: public && !address.ip().is_loopback(),
                }),
            }
        }
        (None, Some(p)) => {
            if let Some(pb) = &l.public {
                cx.error(
                    &pb.span,
                    &key("public"),
                    "`public` is for a TCP listener (`listen`)",
                );
            }
            if let Some(m) = &l.max_connections {
                cx.error(
                    &m.span,
                    &key("max_connections"),
                    "`max_connections` is for a TCP listener (`listen`)",
                );
            }
            let baud = match &l.baud {
                None => {
                    cx.error(
                        &p.span,
                        &key("baud"),
                        "a serial line needs its `baud` (such as 9600)",
                    );
                    None
                }
                Some(b) => in_range::<u32>(cx, b, &key("baud"), 300, 4_000_000).map(|b| b.value),
            };
            if p.value.trim().is_empty() || p.value.chars().any(char::is_control) {
                cx.error(
                    &p.span,
                    &key("path"),
                    "a serial device such as \"/dev/ttyS1\"",
                );
                None
            } else {
                baud.map(|baud| Hj212Endpoint::Serial {
                    path: p.value.clone(),
                    baud,
                })
            }
        }
    };
    let crc = match &l.crc {
        None => Some(vec![CrcForm::Hj212]),
        Some(c) if c.value.is_empty() => {
            cx.error(
                &c.span,
                &key("crc"),
                "at least one CRC form: \"hj212\" and/or \"modbus\"",
            );
            None
        }
        Some(c) => {
            let mut forms = Vec::new();
            let mut ok = true;
            for f in &c.value {
                let form = match f.as_str() {
                    "hj212" => CrcForm::Hj212,
                    "modbus" => CrcForm::Modbus,
                    other => {
                        cx.error(
                            &c.span,
                            &key("crc"),
                            format!(
                                "unknown CRC form \"{other}\": \"hj212\" (the standard's) or \"modbus\" (CRC-16/MODBUS, seen in the field)"
                            ),
                        );
                        ok = false;
                        continue;
                    }
                };
                if !forms.contains(&form) {
                    forms.push(form);
                }
            }
            ok.then_some(forms)
        }
    };
    let unknown = match &l.unknown {
        None => Some(UnknownMn::Reject),
        Some(u) => match u.value.as_str() {
            "reject" => Some(UnknownMn::Reject),
            "accept" => Some(UnknownMn::Accept),
            other => {
                cx.error(
                    &u.span,
                    &key("unknown"),
                    format!(
                        "unknown policy \"{other}\": \"reject\" (refused, counted) or \"accept\" (device = MN)"
                    ),
                );
                None
            }
        },
    };
    let factors = match &l.factors {
        Some(f) => factor_map(cx, f, &key("factors"), profiles),
        None => {
            let default = Sp::new(DEFAULT_FACTOR_MAP.to_string(), l.span.clone());
            factor_map(cx, &default, &key("factors"), profiles)
        }
    };
    let max_connections = match &l.max_connections {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(m) => in_range::<usize>(cx, m, &key("max_connections"), 1, 65_536)
            .map_or(DEFAULT_MAX_CONNECTIONS, |m| m.value),
    };
    let idle_timeout =
        positive(cx, l.idle_timeout.clone(), &key("idle_timeout")).unwrap_or(DEFAULT_IDLE_TIMEOUT);
    let max_frame_rate = match &l.max_frame_rate {
        None => DEFAULT_MAX_FRAME_RATE,
        Some(r) if r.value > 0.0 && r.value <= 1000.0 => r.value,
        Some(r) => {
            cx.error(
                &r.span,
                &key("max_frame_rate"),
                format!(
                    "{} frames per second is out of range: above 0, at most 1000",
                    r.value
                ),
            );
            DEFAULT_MAX_FRAME_RATE
        }
    };
    let max_buffer = match &l.max_buffer {
        None => DEFAULT_MAX_BUFFER,
        Some(b) if (MIN_MAX_BUFFER..=MAX_MAX_BUFFER).contains(&b.value.0) => {
            usize::try_from(b.value.0).unwrap_or(DEFAULT_MAX_BUFFER)
        }
        Some(b) => {
            cx.error(
                &b.span,
                &key("max_buffer"),
                format!(
                    "{} bytes is out of range: from 16KiB (the longest frame must fit) to 16MiB",
                    b.value.0
                ),
            );
            DEFAULT_MAX_BUFFER
        }
    };
    let max_drift =
        positive(cx, l.max_drift.clone(), &key("max_drift")).unwrap_or(DEFAULT_MAX_DRIFT);
    let flag_alert_after = positive(cx, l.flag_alert_after.clone(), &key("flag_alert_after"))
        .unwrap_or(DEFAULT_FLAG_ALERT_AFTER);
    let set_time = l.set_time.as_ref().is_some_and(|s| s.value);

    let mut stations = Vec::new();
    for s in &l.stations {
        if let Some(st) = station(
            cx,
            s,
            base,
            site_id,
            profiles,
            taken,
            factors.as_ref(),
            mns,
            devices,
        ) {
            stations.push(st);
        }
    }
    Some(Hj212Listener {
        name: l.name?.value,
        endpoint: endpoint?,
        crc: crc?,
        unknown: unknown?,
        factors: factors?,
        max_connections,
        idle_timeout,
        max_frame_rate,
        max_buffer,
        max_drift,
        set_time,
        flag_alert_after,
        stations,
    })
}

/// An MN as it appears in `MN=...;`: printable ASCII without the separators of the data segment.
pub(super) fn check_mn(mn: &str) -> Result<(), String> {
    if mn.is_empty() {
        return Err("an MN must not be empty".into());
    }
    if mn.chars().count() > MAX_MN {
        return Err(format!(
            "an MN is at most {MAX_MN} characters (the standard's is 24)"
        ));
    }
    if let Some(c) = mn.chars().find(|c| matches!(c, ';' | ',' | '=' | '&')) {
        return Err(format!(
            "\"{mn}\" holds '{c}', which separates fields of an HJ 212 frame: no MN can carry it"
        ));
    }
    if !mn.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!("\"{mn}\": an MN is printable ASCII without spaces"));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn station(
    cx: &mut Cx<'_>,
    s: &RawStation,
    base: &Path,
    site_id: &str,
    profiles: &mut ProfileLoader,
    taken: &TakenIds<'_>,
    listener_factors: Option<&Arc<FactorMap>>,
    mns: &mut HashMap<String, usize>,
    devices: &mut HashMap<String, usize>,
) -> Option<Hj212Station> {
    let key = |k: &str| format!("{}.{k}", s.path_key);
    let mn = s.mn.as_ref().and_then(|m| {
        if let Err(e) = check_mn(&m.value) {
            cx.error(&m.span, &key("mn"), e);
            return None;
        }
        if let Some(line) = mns.get(&m.value) {
            cx.error(
                &m.span,
                &key("mn"),
                format!("MN \"{}\" is already a station's (line {line})", m.value),
            );
            return None;
        }
        mns.insert(m.value.clone(), cx.file.position(m.span.start).0);
        Some(m.value.clone())
    });
    let device = s.device.as_ref().and_then(|d| {
        let v = &d.value;
        let k = key("device");
        if v.trim().is_empty() || v.chars().any(char::is_control) {
            cx.error(&d.span, &k, "device id must be non-empty printable text");
            return None;
        }
        // One device id, one source: their series, "up" and alerts would mix.
        if let Some(line) = taken.modbus.get(v) {
            cx.error(
                &d.span,
                &k,
                format!(
                    "device id \"{v}\" is a Modbus device's (line {line}): an HJ 212 station needs an id of its own"
                ),
            );
            return None;
        }
        if let Some(line) = taken.mqtt.get(v) {
            cx.error(
                &d.span,
                &k,
                format!(
                    "device id \"{v}\" is an MQTT device's (line {line}): an HJ 212 station needs an id of its own"
                ),
            );
            return None;
        }
        if let Some(line) = devices.get(v) {
            cx.error(
                &d.span,
                &k,
                format!("device id \"{v}\" is already a station's (line {line})"),
            );
            return None;
        }
        devices.insert(v.clone(), cx.file.position(d.span.start).0);
        Some(v.clone())
    });
    let site = match &s.site {
        None => Some(site_id.to_string()),
        Some(st) if st.value.trim().is_empty() || st.value.chars().any(char::is_control) => {
            cx.error(
                &st.span,
                &key("site"),
                "site id must be non-empty printable text",
            );
            None
        }
        Some(st) => Some(st.value.clone()),
    };
    let factors = match &s.factors {
        Some(f) => factor_map(cx, f, &key("factors"), profiles),
        None => listener_factors.cloned(),
    };
    let password = secret(
        cx,
        s.password_env.clone(),
        s.password_file.clone(),
        base,
        &key("password"),
    );
    let sm4_key = secret(
        cx,
        s.sm4_key_env.clone(),
        s.sm4_key_file.clone(),
        base,
        &key("sm4_key"),
    );
    let kind = match &s.kind {
        None => Some(None),
        Some(k) => match k.value.as_str() {
            "air" => Some(Some(StationKind::Air)),
            "water" => Some(Some(StationKind::Water)),
            other => {
                cx.error(
                    &k.span,
                    &key("kind"),
                    format!("unknown kind \"{other}\": \"air\" or \"water\""),
                );
                None
            }
        },
    };
    Some(Hj212Station {
        mn: mn?,
        device: device?,
        site: site?,
        factors: factors?,
        password,
        sm4_key,
        kind: kind?,
    })
}

/// Reads an SM4 key (HJ 212-2025): 16 bytes, written as 32 hex digits or 16 ASCII characters.
/// The error says what is wrong and where the key came from, never the value.
pub fn resolve_sm4_key(secret: &Secret) -> Result<[u8; 16], String> {
    parse_sm4_key(&secret.resolve()?, &secret.describe())
}

/// An SM4 key's text (see [`resolve_sm4_key`]); `from` names where it came from.
pub fn parse_sm4_key(text: &str, from: &str) -> Result<[u8; 16], String> {
    let text = text.trim();
    let mut key = [0u8; 16];
    if text.len() == 32 && text.chars().all(|c| c.is_ascii_hexdigit()) {
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("the SM4 key from {from} is not hex"))?;
        }
        return Ok(key);
    }
    if text.len() == 16 && text.is_ascii() {
        key.copy_from_slice(text.as_bytes());
        return Ok(key);
    }
    Err(format!(
        "the SM4 key from {from} is not 16 bytes: write it as 32 hex digits or 16 ASCII characters ({} characters found)",
        text.chars().count()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sm4_keys_are_hex_or_ascii_and_never_echoed() {
        let hex = "30303030303030303030303030303030";
        assert_eq!(parse_sm4_key(hex, "$K"), Ok([0x30; 16]));
        assert_eq!(
            parse_sm4_key("00112233445566778899aabbccddeeff\n", "$K").map(|k| k[15]),
            Ok(0xff)
        );
        assert_eq!(parse_sm4_key("0000000000000000", "$K"), Ok([b'0'; 16]));
        let e = parse_sm4_key("tooshort", "$K").unwrap_err();
        assert_eq!(
            e,
            "the SM4 key from $K is not 16 bytes: write it as 32 hex digits or 16 ASCII characters (8 characters found)"
        );
        // 32 characters that are not all hex are not a key either.
        let e = parse_sm4_key(&"g".repeat(32), "$K").unwrap_err();
        assert!(e.contains("32 characters found"), "{e}");
        assert!(parse_sm4_key("密钥密钥密钥密钥密钥密钥密钥密钥", "$K").is_err());
        // Read through a secret, as `check` and `run` do.
        let file = std::env::temp_dir().join(format!("dustgate-sm4-{}.key", std::process::id()));
        std::fs::write(&file, format!("{hex}\n")).unwrap();
        assert_eq!(resolve_sm4_key(&Secret::File(file.clone())), Ok([0x30; 16]));
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn mns_refuse_the_frame_separators() {
        assert!(check_mn("010000A8900016F000169DC0").is_ok());
        assert!(check_mn("JLYP01_AIR01_0001").is_ok());
        assert!(check_mn("").is_err());
        assert!(check_mn(&"A".repeat(65)).is_err());
        assert!(check_mn(&"A".repeat(64)).is_ok());
        for bad in ["A;B", "A,B", "A=B", "A&B", "A B"] {
            assert!(check_mn(bad).is_err(), "{bad}");
        }
    }
}
