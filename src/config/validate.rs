//! Stage two of loading: raw values checked for meaning and cross-references, and turned into
//! the typed [`Config`]. Every problem is recorded; nothing stops at the first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::profile::{ProfileError, ProfileLoader, in_range};
use super::raw::{RawBroker, RawBus, RawConfig, RawDevice, RawInflux};
use super::reader::TableReader;
use super::reader::{Cx, Sp, Span};
use super::rules::{
    Pack, PackLoader, Provenance, RuleConfig, RulePatch, Severity, read_patch, read_rule,
};
use super::types::*;
use crate::register::Limits;

const DEFAULT_TIMEZONE: &str = "Asia/Shanghai";

pub fn validate(
    cx: &mut Cx<'_>,
    raw: RawConfig,
    config_path: &Path,
    profiles: &mut ProfileLoader,
    packs: &mut PackLoader,
) -> Option<Config> {
    let base = config_path.parent().unwrap_or(Path::new("."));
    let raw_standards = raw.site.as_ref().map(|s| {
        (
            s.standards.clone(),
            s.background.as_ref().map(|b| b.value.clone()),
        )
    });

    let site = match raw.site {
        None => {
            cx.error(
                &(0..0),
                "site",
                "missing [site] section: at least `id` is required",
            );
            None
        }
        Some(s) => {
            let id = s.id.and_then(|id| {
                if id.value.trim().is_empty() || id.value.chars().any(char::is_control) {
                    cx.error(
                        &id.span,
                        "site.id",
                        "site id must be non-empty printable text",
                    );
                    None
                } else {
                    Some(id.value)
                }
            });
            let tz_name = s
                .timezone
                .clone()
                .map_or(DEFAULT_TIMEZONE.to_string(), |t| t.value);
            let timezone = match jiff::tz::TimeZone::get(&tz_name) {
                Ok(tz) => Some(tz),
                Err(_) => {
                    let span = s.timezone.map_or(s.span.clone(), |t| t.span);
                    cx.error(
                        &span,
                        "site.timezone",
                        format!("unknown time zone \"{tz_name}\": use an IANA name such as \"Asia/Shanghai\""),
                    );
                    None
                }
            };
            let tags = check_tags(cx, &s.tags, "site.tags");
            let health_interval = positive(cx, s.health_interval, "site.health_interval")
                .unwrap_or(Duration::from_secs(30));
            match (id, timezone) {
                (Some(id), Some(timezone)) => Some(Site {
                    id,
                    name: s.name.map(|n| n.value),
                    timezone,
                    timezone_name: tz_name,
                    tags,
                    standards: s
                        .standards
                        .as_ref()
                        .map(|s| s.value.clone())
                        .unwrap_or_default(),
                    background: s.background.as_ref().map(|b| b.value.clone()),
                    health_interval,
                }),
                _ => None,
            }
        }
    };

    let influx = raw.influx.and_then(|i| influx(cx, i, base));

    let store = {
        let (dir, max_size, commit_interval) = match raw.store {
            Some(s) => (s.dir, s.max_size, s.commit_interval),
            None => (None, None, None),
        };
        let max_size = match max_size {
            Some(m) if m.value.0 < (1 << 20) => {
                cx.error(&m.span, "store.max_size", "must be at least 1MiB");
                1 << 20
            }
            Some(m) => m.value.0,
            None => 2 << 30,
        };
        let commit_interval = match commit_interval {
            Some(c) if c.value.is_zero() || c.value > Duration::from_secs(1) => {
                cx.error(
                    &c.span,
                    "store.commit_interval",
                    "must be between 1ms and 1s (a reading waits this long to be durable)",
                );
                Duration::from_millis(100)
            }
            Some(c) => c.value,
            None => Duration::from_millis(100),
        };
        StoreConfig {
            dir: dir.map_or_else(
                || PathBuf::from("/var/lib/dustgate"),
                |d| base.join(d.value),
            ),
            max_size,
            commit_interval,
        }
    };

    let http = {
        let listen = raw.http.and_then(|h| h.listen);
        match listen {
            None => Some(HttpConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            }),
            Some(l) => match l.value.parse::<SocketAddr>() {
                Ok(listen) => Some(HttpConfig { listen }),
                Err(_) => {
                    cx.error(
                        &l.span,
                        "http.listen",
                        format!(
                            "\"{}\" is not an address:port such as \"127.0.0.1:8080\"",
                            l.value
                        ),
                    );
                    None
                }
            },
        }
    };

    let mut buses = Vec::new();
    let mut bus_names: HashMap<String, usize> = HashMap::new();
    let mut device_ids: HashMap<String, usize> = HashMap::new();
    for b in raw.modbus {
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

    let site_id = site.as_ref().map_or("site", |s| s.id.as_str()).to_string();
    // Brokers without a subscription: (name, span, key path), to warn about those with no use.
    let idle_brokers: Vec<(String, Span, String)> = raw
        .mqtt
        .iter()
        .filter(|b| b.subscribe.is_empty())
        .filter_map(|b| {
            let n = b.name.as_ref()?;
            Some((
                n.value.clone(),
                b.span.clone(),
                format!("{}.subscribe", b.path_key),
            ))
        })
        .collect();
    // A fixed MQTT device id must not be a Modbus device's: their series, "up" and alerts
    // would mix.
    for s in raw.mqtt.iter().flat_map(|b| &b.subscribe) {
        if let Some(d) = &s.device
            && let Some(line) = device_ids.get(&d.value)
        {
            cx.error(
                &d.span,
                &format!("{}.device", s.path_key),
                format!(
                    "device id \"{}\" is a Modbus device's (line {line}): an MQTT device needs an id of its own",
                    d.value
                ),
            );
        }
    }
    let mut brokers = Vec::new();
    let mut broker_names: HashMap<String, usize> = HashMap::new();
    for b in raw.mqtt {
        if let Some(name) = &b.name {
            if let Some(line) = broker_names.get(&name.value) {
                cx.error(
                    &name.span,
                    &format!("{}.name", b.path_key),
                    format!(
                        "broker name \"{}\" is already used at line {line}",
                        name.value
                    ),
                );
            } else {
                broker_names.insert(name.value.clone(), cx.file.position(name.span.start).0);
            }
        }
        if let Some(broker) = broker(cx, b, base, &site_id, profiles) {
            brokers.push(broker);
        }
    }

    let Rules {
        rules,
        packs,
        patches: rule_patches,
        actuate_at,
        warnings: rule_warnings,
    } = rules(cx, &raw_standards, raw.rules, &buses, &brokers, packs);
    let alerts = alerts(cx, raw.alerts, base, &site_id, &brokers);
    let compliance = super::linkage::compliance(cx, raw.compliance);
    let actuators = super::linkage::actuators(cx, raw.actuators, &buses, &actuate_at);
    let token = raw.control.as_ref().and_then(|c| {
        secret(
            cx,
            c.token_env.clone(),
            c.token_file.clone(),
            base,
            "control.token",
        )
    });
    let control = super::linkage::control(cx, raw.control, &site_id, &brokers, token);
    let mut warnings: Vec<_> = profiles.notes.drain(..).collect();
    warnings.extend(rule_warnings);
    for (name, span, key) in idle_brokers {
        let publishes = alerts.mqtt.as_ref().is_some_and(|m| m.broker == name);
        let commands = control.mqtt.as_ref().is_some_and(|(b, _)| *b == name);
        if !publishes && !commands {
            warnings.push(cx.file.diagnostic(
                &span,
                &key,
                format!("broker \"{name}\" has no [[mqtt.subscribe]] and is not used by [alerts.mqtt] or [control]: it only connects"),
            ));
        }
    }

    Some(Config {
        file: config_path.to_path_buf(),
        site: site?,
        influx,
        store,
        http: http?,
        buses,
        brokers,
        rules,
        packs,
        alerts,
        compliance,
        actuators,
        control,
        rule_patches,
        warnings,
    })
}

/// Longest duration any setting takes: longer ones are typos (and would overflow timers).
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

fn positive(cx: &mut Cx<'_>, d: Option<Sp<Duration>>, key: &str) -> Option<Duration> {
    let d = d?;
    if d.value.is_zero() {
        cx.error(&d.span, key, "must be longer than zero");
        return None;
    }
    if d.value > MAX_DURATION {
        cx.error(&d.span, key, "must be at most 24h");
        return None;
    }
    Some(d.value)
}

fn check_tags(
    cx: &mut Cx<'_>,
    tags: &[(Sp<String>, Sp<String>)],
    path: &str,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in tags {
        if matches!(k.value.as_str(), "site" | "device" | "component") {
            cx.error(
                &k.span,
                &format!("{path}.{}", k.value),
                format!("tag \"{}\" is set by dustgate itself", k.value),
            );
        } else if v.value.is_empty() {
            cx.error(
                &v.span,
                &format!("{path}.{}", k.value),
                "a tag value must not be empty",
            );
        } else {
            out.push((k.value.clone(), v.value.clone()));
        }
    }
    out
}

fn secret(
    cx: &mut Cx<'_>,
    env: Option<Sp<String>>,
    file: Option<Sp<String>>,
    base: &Path,
    path: &str,
) -> Option<Secret> {
    match (env, file) {
        (Some(e), Some(f)) => {
            cx.error(
                &f.span,
                path,
                format!("set {path}_env or {path}_file, not both"),
            );
            let _ = e;
            None
        }
        (Some(e), None) => Some(Secret::Env(e.value)),
        (None, Some(f)) => Some(Secret::File(base.join(f.value))),
        (None, None) => None,
    }
}

fn influx(cx: &mut Cx<'_>, i: RawInflux, base: &Path) -> Option<InfluxConfig> {
    let url = i.url.and_then(|u| {
        let ok = (u.value.starts_with("http://") || u.value.starts_with("https://"))
            && reqwest::Url::parse(&u.value).is_ok();
        if ok {
            Some(u.value.trim_end_matches('/').to_string())
        } else {
            cx.error(
                &u.span,
                "influx.url",
                format!("\"{}\" is not an http:// or https:// URL", u.value),
            );
            None
        }
    });
    let api_name = i.api.clone().map_or("v2".to_string(), |a| a.value);
    let api = match api_name.as_str() {
        "v2" => {
            for (k, v) in [
                ("database", &i.database),
                ("retention_policy", &i.retention_policy),
                ("username", &i.username),
            ] {
                if let Some(v) = v {
                    cx.error(
                        &v.span,
                        &format!("influx.{k}"),
                        format!("`{k}` is for api = \"v1\"; v2 uses org and bucket"),
                    );
                }
            }
            let token = secret(cx, i.token_env, i.token_file, base, "influx.token");
            if token.is_none() {
                cx.error(&i.span, "influx.token_env", "api = \"v2\" needs a token: set token_env (an environment variable) or token_file");
            }
            let org = i.org.map(|o| o.value);
            let bucket = i.bucket.map(|b| b.value);
            if org.is_none() {
                cx.error(&i.span, "influx.org", "api = \"v2\" needs `org`");
            }
            if bucket.is_none() {
                cx.error(&i.span, "influx.bucket", "api = \"v2\" needs `bucket`");
            }
            match (org, bucket, token) {
                (Some(org), Some(bucket), Some(token)) => {
                    Some(InfluxApi::V2 { org, bucket, token })
                }
                _ => None,
            }
        }
        "v1" => {
            for (k, v) in [
                ("org", &i.org),
                ("bucket", &i.bucket),
                ("token_env", &i.token_env),
                ("token_file", &i.token_file),
            ] {
                if let Some(v) = v {
                    cx.error(
                        &v.span,
                        &format!("influx.{k}"),
                        format!("`{k}` is for api = \"v2\"; v1 uses database"),
                    );
                }
            }
            let password = secret(cx, i.password_env, i.password_file, base, "influx.password");
            match i.database {
                None => {
                    cx.error(&i.span, "influx.database", "api = \"v1\" needs `database`");
                    None
                }
                Some(db) => Some(InfluxApi::V1 {
                    database: db.value,
                    retention_policy: i.retention_policy.map(|r| r.value),
                    username: i.username.map(|u| u.value),
                    password,
                }),
            }
        }
        other => {
            let span = i.api.map_or(i.span.clone(), |a| a.span);
            cx.error(
                &span,
                "influx.api",
                format!("unknown api \"{other}\": expected \"v1\" or \"v2\""),
            );
            None
        }
    };
    let batch_size = i
        .batch_size
        .and_then(|b| in_range::<usize>(cx, &b, "influx.batch_size", 1, 1_000_000))
        .map_or(5000, |b| b.value);
    let flush_interval =
        positive(cx, i.flush_interval, "influx.flush_interval").unwrap_or(Duration::from_secs(1));
    let timeout = positive(cx, i.timeout, "influx.timeout").unwrap_or(Duration::from_secs(10));
    let retry_max =
        positive(cx, i.retry_max, "influx.retry_max").unwrap_or(Duration::from_secs(60));
    let gzip = i
        .gzip
        .map_or_else(|| !url_is_loopback(url.as_deref()), |g| g.value);
    // Creating a database is a v1 operation (`CREATE DATABASE`); a v2 bucket is the
    // platform's to create, with its retention and its token's rights.
    if let (Some(c), Some("v2")) = (&i.create_database, Some(api_name.as_str())) {
        cx.error(
            &c.span,
            "influx.create_database",
            "`create_database` is for api = \"v1\"; a v2 bucket is created on the server",
        );
    }
    let create_database = i.create_database.is_some_and(|c| c.value);
    Some(InfluxConfig {
        url: url?,
        api: api?,
        create_database,
        batch_size,
        flush_interval,
        timeout,
        gzip,
        retry_max,
    })
}

/// Whether a URL points at this machine: gzip saves no uplink there and costs CPU on both sides.
fn url_is_loopback(url: Option<&str>) -> bool {
    let Some(host) = url
        .and_then(|u| reqwest::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_string))
    else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

/// Checks an MQTT topic filter: `+` and `#` only as whole levels, `#` only last.
pub fn check_topic_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("a topic filter must not be empty".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i + 1 != levels.len()) {
            return Err(format!(
                "\"{filter}\": '#' must be a whole level and the last one"
            ));
        }
        if l.contains('+') && *l != "+" {
            return Err(format!("\"{filter}\": '+' must be a whole level"));
        }
    }
    Ok(())
}

fn broker(
    cx: &mut Cx<'_>,
    b: RawBroker,
    base: &Path,
    site_id: &str,
    profiles: &mut ProfileLoader,
) -> Option<MqttConfig> {
    let key = |k: &str| format!("{}.{k}", b.path_key);
    let parsed = b.url.as_ref().and_then(|u| {
        let (tls, rest) = if let Some(r) = u.value.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = u.value.strip_prefix("mqtt://") {
            (false, r)
        } else {
            cx.error(
                &u.span,
                &key("url"),
                format!("\"{}\" is not an mqtt:// or mqtts:// URL", u.value),
            );
            return None;
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => match p.parse::<u16>() {
                Ok(p) => (h.to_string(), p),
                Err(_) => {
                    cx.error(
                        &u.span,
                        &key("url"),
                        format!("\"{p}\" is not a port number"),
                    );
                    return None;
                }
            },
            None => (rest.to_string(), if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() || host.contains('/') {
            cx.error(
                &u.span,
                &key("url"),
                format!("\"{}\" has no host: write mqtt://host:port", u.value),
            );
            return None;
        }
        Some((tls, host, port))
    });
    let tls_keys = [
        ("ca_file", &b.ca_file),
        ("cert_file", &b.cert_file),
        ("key_file", &b.key_file),
    ];
    let tls = match &parsed {
        Some((false, _, _)) => {
            for (k, v) in tls_keys {
                if let Some(v) = v {
                    cx.error(&v.span, &key(k), format!("`{k}` is for mqtts:// URLs"));
                }
            }
            None
        }
        Some((true, _, _)) => {
            let client = match (&b.cert_file, &b.key_file) {
                (Some(c), Some(k)) => Some((base.join(&c.value), base.join(&k.value))),
                (None, None) => None,
                (Some(c), None) => {
                    cx.error(
                        &c.span,
                        &key("key_file"),
                        "a client certificate needs its key_file",
                    );
                    None
                }
                (None, Some(k)) => {
                    cx.error(
                        &k.span,
                        &key("cert_file"),
                        "a client key needs its cert_file",
                    );
                    None
                }
            };
            Some(TlsFiles {
                ca_file: b.ca_file.as_ref().map(|c| base.join(&c.value)),
                client,
            })
        }
        None => None,
    };
    let password = secret(
        cx,
        b.password_env.clone(),
        b.password_file.clone(),
        base,
        &key("password"),
    );
    if password.is_some() && b.username.is_none() {
        cx.error(&b.span, &key("username"), "a password needs a username");
    }
    let keep_alive =
        positive(cx, b.keep_alive.clone(), &key("keep_alive")).unwrap_or(Duration::from_secs(30));
    if keep_alive < Duration::from_secs(5)
        && let Some(k) = &b.keep_alive
    {
        cx.error(&k.span, &key("keep_alive"), "must be at least 5s");
    }
    let name = b.name.as_ref().map(|n| n.value.clone());
    let client_id = b.client_id.as_ref().map_or_else(
        || format!("dustgate-{site_id}-{}", name.as_deref().unwrap_or("mqtt")),
        |c| c.value.clone(),
    );
    if client_id.is_empty()
        && let Some(c) = &b.client_id
    {
        cx.error(
            &c.span,
            &key("client_id"),
            "a persistent session needs a non-empty client id",
        );
    }
    let dead_letter_topic = b.dead_letter_topic.as_ref().and_then(|t| {
        let topic = t.value.replace("{site}", site_id);
        if topic.is_empty() || topic.contains('+') || topic.contains('#') {
            cx.error(
                &t.span,
                &key("dead_letter_topic"),
                "a topic to publish to, without wildcards",
            );
            None
        } else {
            Some(topic)
        }
    });
    // A broker without subscriptions may still publish alerts or take `[control]` commands;
    // one with no use at all is a warning (see `validate`).
    let mut subscriptions = Vec::new();
    for s in &b.subscribe {
        let skey = |k: &str| format!("{}.{k}", s.path_key);
        let topic = s
            .topic
            .as_ref()
            .and_then(|t| match check_topic_filter(&t.value) {
                Ok(()) => Some(t.value.clone()),
                Err(e) => {
                    cx.error(&t.span, &skey("topic"), e);
                    None
                }
            });
        let device = s.device.as_ref().and_then(|d| {
            let v = d.value.as_str();
            if let Some(n) = v.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                match n.parse::<usize>() {
                    Ok(level) => {
                        let levels = topic.as_deref().map_or(usize::MAX, |t| t.split('/').count());
                        let hash_last = topic.as_deref().is_some_and(|t| t.ends_with('#'));
                        if level >= levels && !hash_last {
                            cx.error(&d.span, &skey("device"), format!("topic level {level} does not exist: the topic filter has {levels} levels (counted from 0)"));
                            None
                        } else {
                            Some(DeviceFrom::TopicLevel(level))
                        }
                    }
                    Err(_) => {
                        cx.error(&d.span, &skey("device"), format!("\"{v}\": write a topic level as \"{{1}}\""));
                        None
                    }
                }
            } else if v.starts_with('/') {
                Some(DeviceFrom::Pointer(v.to_string()))
            } else if v.is_empty() || v.chars().any(char::is_control) {
                cx.error(&d.span, &skey("device"), "a device id, a topic level \"{N}\" or a JSON pointer \"/id\"");
                None
            } else {
                Some(DeviceFrom::Fixed(v.to_string()))
            }
        });
        let qos = match &s.qos {
            None => Some(1),
            Some(q) if q.value == 0 || q.value == 1 => Some(q.value as u8),
            Some(q) => {
                cx.error(
                    &q.span,
                    &skey("qos"),
                    format!(
                        "qos {} is not supported: 0 or 1 (1 is acknowledged only once stored)",
                        q.value
                    ),
                );
                None
            }
        };
        let profile = s.profile.as_ref().and_then(|p| {
            let before = cx.diags.len();
            match profiles.load_json(&p.value, cx.diags) {
                Ok(pr) => Some(pr),
                Err(ProfileError::NotFound(msg)) => {
                    cx.error(&p.span, &skey("profile"), msg);
                    None
                }
                Err(ProfileError::Invalid) => {
                    let what = if cx.diags.len() == before {
                        "has errors (reported above)"
                    } else {
                        "has errors, listed with its file"
                    };
                    cx.error(
                        &p.span,
                        &skey("profile"),
                        format!("profile \"{}\" {what}", p.value),
                    );
                    None
                }
            }
        });
        if let (Some(topic), Some(device), Some(profile), Some(qos)) = (topic, device, profile, qos)
        {
            subscriptions.push(Subscription {
                topic,
                device,
                profile,
                qos,
            });
        }
    }
    let (tls_on, host, port) = parsed?;
    let _ = tls_on;
    Some(MqttConfig {
        name: name?,
        url: b.url.as_ref().map(|u| u.value.clone()).unwrap_or_default(),
        host,
        port,
        tls,
        client_id,
        username: b.username.as_ref().map(|u| u.value.clone()),
        password,
        keep_alive,
        clean_session: b.clean_session.as_ref().is_some_and(|c| c.value),
        dead_letter_topic,
        subscriptions,
    })
}

struct Rules {
    rules: Vec<RuleConfig>,
    packs: Vec<std::sync::Arc<Pack>>,
    patches: Vec<RulePatch>,
    /// Where each `actuate` is written, to point at it if it names no actuator.
    actuate_at: Vec<(String, String, Span)>,
    warnings: Vec<super::source::Diagnostic>,
}

/// The rules in force: each pack's rules in the order listed, a site rule with a pack rule's
/// id patching it (only the keys it gives change; `enabled = false` switches it off), the
/// site's other rules after.
#[allow(clippy::type_complexity)]
fn rules(
    cx: &mut Cx<'_>,
    standards: &Option<(Option<Sp<Vec<String>>>, Option<String>)>,
    site_rules: Vec<TableReader<'_, '_>>,
    buses: &[BusConfig],
    brokers: &[MqttConfig],
    loader: &mut PackLoader,
) -> Rules {
    let mut packs = Vec::new();
    let mut rules: Vec<RuleConfig> = Vec::new();
    if let Some((Some(list), background)) = standards {
        for id in &list.value {
            let before = cx.diags.len();
            match loader.load(id, background.as_deref(), cx.diags) {
                Ok(Some(pack)) => {
                    for r in &pack.rules {
                        if rules.iter().any(|x| x.id == r.id) {
                            cx.error(
                                &list.span,
                                "site.standards",
                                format!(
                                    "rule \"{}\" of pack \"{id}\" is already given by another pack",
                                    r.id
                                ),
                            );
                        } else {
                            rules.push(r.clone());
                        }
                    }
                    packs.push(pack);
                }
                Ok(None) => {
                    let what = if cx.diags.len() == before {
                        "has errors"
                    } else {
                        "has errors, listed with its file"
                    };
                    cx.error(
                        &list.span,
                        "site.standards",
                        format!("standards pack \"{id}\" {what}"),
                    );
                }
                Err(msg) => cx.error(&list.span, "site.standards", msg),
            }
        }
    }
    // Metrics some device can provide: canonical ones, and any a profile maps.
    let mut provided: Vec<String> = super::metrics::Catalog::builtin()
        .metrics
        .iter()
        .map(|m| m.name.clone())
        .collect();
    for b in buses {
        for d in &b.devices {
            provided.extend(d.profile.registers.iter().map(|r| r.metric.clone()));
        }
    }
    for b in brokers {
        for s in &b.subscriptions {
            if let super::json_profile::JsonKind::Readings(f) = &s.profile.kind {
                provided.extend(f.iter().map(|f| f.metric.clone()));
            }
        }
    }
    let background = standards.as_ref().and_then(|(_, b)| b.clone());
    let site_prov = Provenance {
        pack: "site".into(),
        standard: None,
        source: None,
        mark: None,
    };
    let from_packs = rules.len();
    let mut patches = Vec::new();
    let mut actuate_at = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    // Device ids known at check time: Modbus devices and fixed MQTT ids. An id taken from a
    // topic level or the payload is known only at run time; then no glob is reported.
    let mut known: Vec<&str> = buses
        .iter()
        .flat_map(|b| b.devices.iter().map(|d| d.id.as_str()))
        .collect();
    let mut all_known = true;
    for s in brokers.iter().flat_map(|b| &b.subscriptions) {
        match &s.device {
            DeviceFrom::Fixed(id) => known.push(id),
            DeviceFrom::TopicLevel(_) | DeviceFrom::Pointer(_) => all_known = false,
        }
    }
    let mut warnings = Vec::new();
    for t in site_rules {
        if all_known && let Some(globs) = t.peek_str_list("devices") {
            for g in globs
                .iter()
                .filter(|g| !known.iter().any(|d| super::rules::glob(g, d)))
            {
                warnings.push(cx.file.diagnostic(
                    &t.table_span("devices"),
                    &t.key_path("devices"),
                    format!(
                        "device glob \"{g}\" matches no configured device (devices: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
        let of_pack = t
            .peek_str("id")
            .and_then(|id| rules[..from_packs].iter().position(|x| x.id == id));
        let (r, patch) = match of_pack {
            Some(i) => match read_patch(cx, t, &rules[i], background.as_deref()) {
                Some((r, p)) => (r, Some(p)),
                None => continue,
            },
            None => match read_rule(cx, t, &site_prov, background.as_deref()) {
                Some(r) => (r, None),
                None => continue,
            },
        };
        if let Some(line) = seen.get(&r.value.id) {
            cx.error(
                &r.span,
                "rule",
                format!("rule id \"{}\" is already used at line {line}", r.value.id),
            );
            continue;
        }
        seen.insert(r.value.id.clone(), cx.file.position(r.span.start).0);
        let metric_changed = patch
            .as_ref()
            .is_some_and(|p| p.changes.iter().any(|(k, _, _)| k == "metric"));
        if (metric_changed || (patch.is_none() && !r.value.patch))
            && !provided.contains(&r.value.metric)
        {
            cx.error(
                &r.span,
                "rule",
                format!(
                    "no device provides metric \"{}\": a canonical metric or one a profile maps",
                    r.value.metric
                ),
            );
            continue;
        }
        if let Some(a) = &r.value.actuate {
            actuate_at.push((r.value.id.clone(), a.clone(), r.span.clone()));
        }
        match (of_pack, patch) {
            (Some(i), Some(p)) => {
                rules[i] = r.value;
                if !p.changes.is_empty() {
                    patches.push(p);
                }
            }
            _ if r.value.patch => cx.error(
                &r.span,
                "rule",
                format!(
                    "rule \"{}\" names no metric or condition, and no pack of [site].standards has it",
                    r.value.id
                ),
            ),
            _ => rules.push(r.value),
        }
    }
    rules.retain(|r| r.enabled);
    Rules {
        rules,
        packs,
        patches,
        actuate_at,
        warnings,
    }
}

fn severity(cx: &mut Cx<'_>, s: &Option<Sp<String>>, key: &str) -> Severity {
    match s {
        None => Severity::Info,
        Some(v) => Severity::parse(&v.value).unwrap_or_else(|| {
            cx.error(
                &v.span,
                key,
                format!(
                    "unknown severity \"{}\": info, warning or critical",
                    v.value
                ),
            );
            Severity::Info
        }),
    }
}

fn alerts(
    cx: &mut Cx<'_>,
    raw: Option<super::raw::RawAlerts>,
    base: &Path,
    site_id: &str,
    brokers: &[MqttConfig],
) -> AlertsConfig {
    let Some(raw) = raw else {
        return AlertsConfig::default();
    };
    let locale = match &raw.locale {
        None => Locale::ZhCn,
        Some(l) => Locale::parse(&l.value).unwrap_or_else(|| {
            cx.error(
                &l.span,
                "alerts.locale",
                format!("unknown locale \"{}\": zh-CN or en", l.value),
            );
            Locale::ZhCn
        }),
    };
    let mqtt = raw.mqtt.and_then(|m| {
        let min_severity = severity(cx, &m.min_severity, "alerts.mqtt.min_severity");
        let broker = m.broker?;
        if !brokers.iter().any(|b| b.name == broker.value) {
            cx.error(
                &broker.span,
                "alerts.mqtt.broker",
                format!("no [[mqtt]] broker named \"{}\"", broker.value),
            );
            return None;
        }
        let topic = m.topic?;
        let t = topic.value.replace("{site}", site_id);
        if t.is_empty() || t.contains('+') || t.contains('#') {
            cx.error(
                &topic.span,
                "alerts.mqtt.topic",
                "a topic to publish to, without wildcards",
            );
            return None;
        }
        Some(AlertMqtt {
            broker: broker.value,
            topic: t,
            min_severity,
        })
    });
    let mut webhooks = Vec::new();
    // Each name becomes `[store].dir/outbox/<name>/`: (lowercased name, line) of those taken.
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, w) in raw.webhooks.into_iter().enumerate() {
        let key = |k: &str| format!("{}.{k}", w.path_key);
        let name = webhook_name(cx, &w, i, &mut names);
        let min_severity = severity(cx, &w.min_severity, &key("min_severity"));
        let format = match w.format.as_ref().map(|f| f.value.as_str()) {
            None | Some("generic") => Some(WebhookFormat::Generic),
            Some("dingtalk") => Some(WebhookFormat::DingTalk),
            Some("wecom") => Some(WebhookFormat::WeCom),
            Some("feishu") => Some(WebhookFormat::Feishu),
            Some(other) => {
                if let Some(f) = &w.format {
                    cx.error(
                        &f.span,
                        &key("format"),
                        format!("unknown format \"{other}\": generic, dingtalk, wecom or feishu"),
                    );
                }
                None
            }
        };
        let url = match (
            &w.url,
            secret(cx, w.url_env.clone(), w.url_file.clone(), base, &key("url")),
        ) {
            (Some(u), None) => {
                if !(u.value.starts_with("http://") || u.value.starts_with("https://")) {
                    cx.error(&u.span, &key("url"), "an http:// or https:// URL");
                }
                Some(Secret::Literal(u.value.clone()))
            }
            (None, Some(s)) => Some(s),
            (Some(u), Some(_)) => {
                cx.error(
                    &u.span,
                    &key("url"),
                    "give url, url_env or url_file, not several",
                );
                None
            }
            (None, None) => {
                cx.error(
                    &w.span,
                    &key("url_env"),
                    "a webhook needs url_env (the URL often holds a token), url_file or url",
                );
                None
            }
        };
        let secret = secret(
            cx,
            w.secret_env.clone(),
            w.secret_file.clone(),
            base,
            &key("secret"),
        );
        if secret.is_some() && matches!(format, Some(WebhookFormat::Generic | WebhookFormat::WeCom))
        {
            cx.error(
                &w.span,
                &key("secret_env"),
                "a signing secret is for the dingtalk and feishu formats",
            );
        }
        if let (Some(url), Some(format), Some(name)) = (url, format, name) {
            webhooks.push(Webhook {
                name,
                url,
                format,
                secret,
                min_severity,
            });
        }
    }
    let offline_after =
        positive(cx, raw.offline_after, "alerts.offline_after").unwrap_or(Duration::from_secs(600));
    AlertsConfig {
        locale,
        offline_after,
        mqtt,
        webhooks,
    }
}

/// Outbox folders under `[store].dir/outbox/` that are not webhooks'.
const RESERVED_OUTBOX_NAMES: &[&str] = &["mqtt"];

/// A webhook's name (`webhook-<i>` when none is given): it names its outbox folder, so it is
/// a plain word, unique among webhooks and not one of the other outboxes.
fn webhook_name(
    cx: &mut Cx<'_>,
    w: &super::raw::RawWebhook,
    i: usize,
    taken: &mut HashMap<String, usize>,
) -> Option<String> {
    let key = format!("{}.name", w.path_key);
    let (name, span, given) = match &w.name {
        Some(n) => (n.value.clone(), n.span.clone(), true),
        None => (format!("webhook-{i}"), w.span.clone(), false),
    };
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !plain {
        cx.error(
            &span,
            &key,
            format!("\"{name}\" is not a webhook name: 1 to 64 of A-Z a-z 0-9 - _ (it names the folder outbox/<name>/ of the store)"),
        );
        return None;
    }
    let folded = name.to_ascii_lowercase();
    if RESERVED_OUTBOX_NAMES.contains(&folded.as_str()) {
        cx.error(
            &span,
            &key,
            format!("\"{name}\" is reserved: outbox/{folded}/ holds the [alerts.mqtt] queue"),
        );
        return None;
    }
    let line = cx.file.position(span.start).0;
    if let Some(other) = taken.get(&folded) {
        let what = if given {
            String::new()
        } else {
            " (the name given to an unnamed webhook): give this one a `name`".to_string()
        };
        cx.error(
            &span,
            &key,
            format!("webhook name \"{name}\" is already used at line {other}{what}"),
        );
        return None;
    }
    taken.insert(folded, line);
    Some(name)
}
