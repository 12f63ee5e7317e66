//! `[[hj212.upstream]]`: the platforms the gateway reports to as the site's data logger — where
//! each is, who the site is to it (ST, MN, password), whose readings go up, how often, with or
//! without acks, how long missed data is kept, and the platform's factor map.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::common::{Secret, in_range, secret};
use super::factors::{DEFAULT_FACTOR_MAP, FactorMap};
use super::profile::ProfileLoader;
use super::reader::{Cx, Sp, Span, TableReader, parse_duration};

#[derive(Debug)]
pub struct RawUpstream {
    pub span: Span,
    pub path_key: String,
    pub name: Option<Sp<String>>,
    pub address: Option<Sp<String>>,
    pub version: Option<Sp<String>>,
    pub st: Option<Sp<String>>,
    pub mn: Option<Sp<String>>,
    pub password_env: Option<Sp<String>>,
    pub password_file: Option<Sp<String>>,
    pub devices: Option<Sp<Vec<String>>>,
    pub realtime: Option<Sp<String>>,
    pub minute: Option<Sp<String>>,
    pub hourly: Option<Sp<bool>>,
    pub daily: Option<Sp<bool>>,
    pub ack: Option<Sp<bool>>,
    pub timeout: Option<Sp<Duration>>,
    pub retries: Option<Sp<i64>>,
    pub window: Option<Sp<i64>>,
    pub keep: Option<Sp<Duration>>,
    pub factors: Option<Sp<String>>,
    pub min_coverage: Option<Sp<f64>>,
    pub grace: Option<Sp<Duration>>,
    pub sm4_key_env: Option<Sp<String>>,
    pub sm4_key_file: Option<Sp<String>>,
    pub sm4_length: Option<Sp<String>>,
    pub heartbeat: Option<Sp<String>>,
}

/// What the length field of an SM4-encrypted frame counts (hj212-field.md §2.5: the
/// standard's example prints the plaintext's length [S]; some implementations count what is
/// sent [S]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sm4Length {
    /// The length and the CRC of the plaintext segment (HJ 212-2025 Appendix A.2's example).
    Plaintext,
    /// The length and the CRC of the segment as sent (encrypted).
    Transmitted,
}

/// The HJ 212 edition a platform speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkVersion {
    V2017,
    V2025,
}

impl UplinkVersion {
    pub fn name(self) -> &'static str {
        match self {
            UplinkVersion::V2017 => "2017",
            UplinkVersion::V2025 => "2025",
        }
    }
}

/// One `[[hj212.upstream]]`: a platform.
#[derive(Debug, Clone)]
pub struct Hj212Upstream {
    pub name: String,
    /// `host:port` (a name is resolved at each connect).
    pub address: String,
    pub version: UplinkVersion,
    pub st: String,
    pub mn: String,
    pub password: Secret,
    /// Device id globs whose readings go up; empty: every device.
    pub devices: Vec<String>,
    /// CN=2011 this often (`None`: off).
    pub realtime: Option<Duration>,
    /// CN=2051 every this many minutes (a divisor of 60; `None`: off).
    pub minute: Option<u32>,
    pub hourly: bool,
    pub daily: bool,
    pub ack: bool,
    pub timeout: Duration,
    pub retries: u32,
    /// Frames sent before the first is answered (with acks).
    pub window: usize,
    pub keep: Duration,
    pub factors: Arc<FactorMap>,
    /// Share of the expected readings a period needs for the flag N.
    pub min_coverage: f64,
    /// How long a period waits for readings that arrive after it ends.
    pub grace: Duration,
    /// HJ 212-2025: the SM4 key that encrypts the data area of CN 2000-2999 (resolve with
    /// [`super::hj212::resolve_sm4_key`]).
    pub sm4_key: Option<Secret>,
    pub sm4_length: Sm4Length,
    /// HJ 212-2025: CN=9015 after this long without a frame (`None`: off).
    pub heartbeat: Option<Duration>,
}

impl Hj212Upstream {
    /// Whether the readings of `device` go to this platform.
    pub fn takes(&self, device: &str) -> bool {
        super::rules::matches_any(&self.devices, device)
    }
}

pub const DEFAULT_REALTIME: Duration = Duration::from_secs(60);
pub const DEFAULT_MINUTE: u32 = 10;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_RETRIES: u32 = 3;
pub const DEFAULT_WINDOW: usize = 1;
pub const DEFAULT_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_MIN_COVERAGE: f64 = 0.75;
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// HJ 212-2017 §6.6.2: real-time data every 30 s by default [P]; faster is allowed, with a warning.
const STANDARD_REALTIME: Duration = Duration::from_secs(30);
/// A commercial data logger feeds up to eight platforms; more than this is a typo or a hub
/// (which is not a data logger).
const MAX_UPSTREAMS: usize = 32;
const MAX_KEEP: Duration = Duration::from_secs(90 * 24 * 3600);

/// Reads `[[hj212.upstream]]` (types, unknown keys, required keys) from `[hj212]`.
pub fn read(cx: &mut Cx<'_>, h: &mut TableReader<'_, '_>) -> Vec<RawUpstream> {
    let mut raw = Vec::new();
    for mut u in h.tables(cx, "upstream") {
        for k in ["password", "sm4_key"] {
            if u.has(k) {
                cx.error(
                    &u.table_span(k),
                    &u.key_path(k),
                    format!(
                        "secrets never go in the config file: name them with {k}_env or {k}_file"
                    ),
                );
            }
        }
        u.skip("password");
        u.skip("sm4_key");
        raw.push(RawUpstream {
            span: u.span(),
            path_key: u.path().to_string(),
            name: u.req(cx, "name"),
            address: u.req(cx, "address"),
            version: u.opt(cx, "version"),
            st: u.req(cx, "st"),
            mn: u.req(cx, "mn"),
            password_env: u.opt(cx, "password_env"),
            password_file: u.opt(cx, "password_file"),
            devices: u.opt(cx, "devices"),
            realtime: u.opt(cx, "realtime"),
            minute: u.opt(cx, "minute"),
            hourly: u.opt(cx, "hourly"),
            daily: u.opt(cx, "daily"),
            ack: u.opt(cx, "ack"),
            timeout: u.opt(cx, "timeout"),
            retries: u.opt(cx, "retries"),
            window: u.opt(cx, "window"),
            keep: u.opt(cx, "keep"),
            factors: u.opt(cx, "factors"),
            min_coverage: u.opt(cx, "min_coverage"),
            grace: u.opt(cx, "grace"),
            sm4_key_env: u.opt(cx, "sm4_key_env"),
            sm4_key_file: u.opt(cx, "sm4_key_file"),
            sm4_length: u.opt(cx, "sm4_length"),
            heartbeat: u.opt(cx, "heartbeat"),
        });
        u.finish(cx);
    }
    raw
}

/// `"off"` or a duration.
fn off_or_duration(cx: &mut Cx<'_>, v: &Sp<String>, key: &str) -> Option<Option<Duration>> {
    if v.value.trim() == "off" {
        return Some(None);
    }
    match parse_duration(&v.value) {
        Ok(d) => Some(Some(d)),
        Err(e) => {
            cx.error(&v.span, key, format!("{e}, or \"off\""));
            None
        }
    }
}

/// A `host:port` the gateway connects to.
fn check_address(a: &str) -> Result<(), String> {
    let Some((host, port)) = a.rsplit_once(':') else {
        return Err(format!(
            "\"{a}\" is not host:port such as \"platform.example.cn:6653\""
        ));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("\"{a}\": the host part is empty or holds spaces"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("\"{a}\": the port must be 1 to 65535")),
    }
}

/// Checks every platform. `known`: device ids known now (`None`: some are known only at run
/// time, so a glob that matches none is not reported).
#[allow(clippy::too_many_arguments)]
pub fn validate(
    cx: &mut Cx<'_>,
    raw: Vec<RawUpstream>,
    base: &Path,
    profiles: &mut ProfileLoader,
    known: Option<&[&str]>,
    warnings: &mut Vec<super::Diagnostic>,
) -> Vec<Hj212Upstream> {
    let mut out = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut identities: HashMap<(String, String), usize> = HashMap::new();
    if raw.len() > MAX_UPSTREAMS
        && let Some(u) = raw.get(MAX_UPSTREAMS)
    {
        cx.error(
            &u.span,
            &u.path_key,
            format!("at most {MAX_UPSTREAMS} platforms (a data logger feeds up to eight)"),
        );
    }
    for u in raw {
        let key = |k: &str| format!("{}.{k}", u.path_key);
        let name = u.name.as_ref().and_then(|n| {
            let plain = !n.value.is_empty()
                && n.value.len() <= 64
                && n.value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !plain {
                cx.error(
                    &n.span,
                    &key("name"),
                    format!(
                        "\"{}\" is not a platform name: 1 to 64 of A-Z a-z 0-9 - _ (it names the backlog's file)",
                        n.value
                    ),
                );
                return None;
            }
            if let Some(line) = names.get(&n.value) {
                cx.error(
                    &n.span,
                    &key("name"),
                    format!("platform name \"{}\" is already used at line {line}", n.value),
                );
                return None;
            }
            names.insert(n.value.clone(), cx.file.position(n.span.start).0);
            Some(n.value.clone())
        });
        let address = u
            .address
            .as_ref()
            .and_then(|a| match check_address(&a.value) {
                Ok(()) => Some(a.value.clone()),
                Err(e) => {
                    cx.error(&a.span, &key("address"), e);
                    None
                }
            });
        let version = match &u.version {
            None => Some(UplinkVersion::V2017),
            Some(v) => match v.value.as_str() {
                "2017" => Some(UplinkVersion::V2017),
                "2025" => Some(UplinkVersion::V2025),
                other => {
                    cx.error(
                        &v.span,
                        &key("version"),
                        format!("unknown HJ 212 edition \"{other}\": \"2017\" or \"2025\""),
                    );
                    None
                }
            },
        };
        let st = u.st.as_ref().and_then(|s| {
            if s.value.len() == 2 && s.value.chars().all(|c| c.is_ascii_digit()) {
                Some(s.value.clone())
            } else {
                cx.error(
                    &s.span,
                    &key("st"),
                    format!(
                        "\"{}\" is not a system code: two digits, such as \"39\" (construction dust) or \"22\" (air quality)",
                        s.value
                    ),
                );
                None
            }
        });
        let mn =
            u.mn.as_ref()
                .and_then(|m| match super::hj212::check_mn(&m.value) {
                    Ok(()) => Some(m.value.clone()),
                    Err(e) => {
                        cx.error(&m.span, &key("mn"), e);
                        None
                    }
                });
        if let (Some(a), Some(m), Some(sp)) = (&address, &mn, &u.mn) {
            let id = (a.clone(), m.clone());
            if let Some(line) = identities.get(&id) {
                cx.error(
                    &sp.span,
                    &key("mn"),
                    format!("platform {a} already gets MN \"{m}\" (line {line}): its data would be counted twice"),
                );
            } else {
                identities.insert(id, cx.file.position(sp.span.start).0);
            }
        }
        let password = match secret(
            cx,
            u.password_env.clone(),
            u.password_file.clone(),
            base,
            &key("password"),
        ) {
            Some(p) => Some(p),
            None if u.password_env.is_none() && u.password_file.is_none() => {
                cx.error(
                    &u.span,
                    &key("password_env"),
                    "a platform needs the password it issued: password_env = \"VAR\" or password_file = \"path\"",
                );
                None
            }
            None => None,
        };
        let devices = match &u.devices {
            None => Some(Vec::new()),
            Some(d) if d.value.is_empty() => {
                cx.error(
                    &d.span,
                    &key("devices"),
                    "an empty list sends nothing: list device ids or globs, or leave the key out for every device",
                );
                None
            }
            Some(d) => {
                if let Some(known) = known {
                    for g in d
                        .value
                        .iter()
                        .filter(|g| !known.iter().any(|k| super::rules::glob(g, k)))
                    {
                        warnings.push(cx.file.diagnostic(
                            &d.span,
                            &key("devices"),
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
                Some(d.value.clone())
            }
        };
        let realtime = match &u.realtime {
            None => Some(Some(DEFAULT_REALTIME)),
            Some(r) => match off_or_duration(cx, r, &key("realtime")) {
                Some(Some(d)) if d < Duration::from_secs(1) || d > Duration::from_secs(3600) => {
                    cx.error(&r.span, &key("realtime"), "from 1s to 1h, or \"off\"");
                    None
                }
                Some(Some(d)) if d < STANDARD_REALTIME => {
                    warnings.push(cx.file.diagnostic(
                        &r.span,
                        &key("realtime"),
                        format!(
                            "real-time values every {}s: the standard's default is 30 s (HJ 212-2017 §6.6.2); a platform may count the extra frames against the site",
                            d.as_secs_f64()
                        ),
                    ));
                    Some(Some(d))
                }
                other => other,
            },
        };
        let minute = match &u.minute {
            None => Some(Some(DEFAULT_MINUTE)),
            Some(m) => match off_or_duration(cx, m, &key("minute")) {
                None => None,
                Some(None) => Some(None),
                Some(Some(d)) => {
                    let whole = d.as_secs() % 60 == 0 && d.subsec_nanos() == 0;
                    let mins = d.as_secs() / 60;
                    if whole && mins > 0 && 60 % mins == 0 {
                        Some(Some(mins as u32))
                    } else {
                        cx.error(
                            &m.span,
                            &key("minute"),
                            "minute values are every whole number of minutes that divides an hour (1m 2m 3m 4m 5m 6m 10m 12m 15m 20m 30m 60m), or \"off\"",
                        );
                        None
                    }
                }
            },
        };
        let hourly = u.hourly.as_ref().is_none_or(|h| h.value);
        let daily = u.daily.as_ref().is_none_or(|h| h.value);
        if let (Some(None), Some(None), false, false) = (&realtime, &minute, hourly, daily) {
            cx.error(
                &u.span,
                &key("realtime"),
                "realtime and minute are \"off\" and hourly and daily false: this platform would get nothing",
            );
        }
        let ack = u.ack.as_ref().is_none_or(|a| a.value);
        let timeout = match &u.timeout {
            None => Some(DEFAULT_TIMEOUT),
            Some(t)
                if t.value >= Duration::from_millis(100) && t.value <= Duration::from_secs(600) =>
            {
                Some(t.value)
            }
            Some(t) => {
                cx.error(&t.span, &key("timeout"), "from 100ms to 10m");
                None
            }
        };
        let retries = match &u.retries {
            None => Some(DEFAULT_RETRIES),
            Some(r) => in_range::<u32>(cx, r, &key("retries"), 0, 20).map(|r| r.value),
        };
        let window = match &u.window {
            None => Some(DEFAULT_WINDOW),
            Some(w) => in_range::<usize>(cx, w, &key("window"), 1, 64).map(|w| w.value),
        };
        let keep = match &u.keep {
            None => Some(DEFAULT_KEEP),
            Some(k) if k.value >= Duration::from_secs(60) && k.value <= MAX_KEEP => Some(k.value),
            Some(k) => {
                cx.error(&k.span, &key("keep"), "from 1m to 90d");
                None
            }
        };
        let factors = {
            let name = u
                .factors
                .clone()
                .unwrap_or_else(|| Sp::new(DEFAULT_FACTOR_MAP.to_string(), u.span.clone()));
            super::hj212::factor_map(cx, &name, &key("factors"), profiles)
        };
        let min_coverage = match &u.min_coverage {
            None => Some(DEFAULT_MIN_COVERAGE),
            Some(c) if (0.0..=1.0).contains(&c.value) => Some(c.value),
            Some(c) => {
                cx.error(
                    &c.span,
                    &key("min_coverage"),
                    format!(
                        "{} is not a share: from 0 to 1 (0.75: three readings of four)",
                        c.value
                    ),
                );
                None
            }
        };
        let grace = match &u.grace {
            None => Some(DEFAULT_GRACE),
            Some(g) if g.value <= Duration::from_secs(3600) => Some(g.value),
            Some(g) => {
                cx.error(&g.span, &key("grace"), "at most 1h");
                None
            }
        };
        let sm4_key = secret(
            cx,
            u.sm4_key_env.clone(),
            u.sm4_key_file.clone(),
            base,
            &key("sm4_key"),
        );
        let v2025 = version == Some(UplinkVersion::V2025);
        for (given, k) in [
            (u.sm4_key_env.as_ref().map(|v| &v.span), "sm4_key_env"),
            (u.sm4_key_file.as_ref().map(|v| &v.span), "sm4_key_file"),
            (u.sm4_length.as_ref().map(|v| &v.span), "sm4_length"),
            (u.heartbeat.as_ref().map(|v| &v.span), "heartbeat"),
        ] {
            if let Some(span) = given
                && version.is_some()
                && !v2025
            {
                cx.error(span, &key(k), format!("`{k}` is HJ 212-2025's: set version = \"2025\" (the platform must speak it)"));
            }
        }
        let sm4_length = match &u.sm4_length {
            None => Some(Sm4Length::Plaintext),
            Some(l) => match l.value.as_str() {
                "plaintext" => Some(Sm4Length::Plaintext),
                "transmitted" => Some(Sm4Length::Transmitted),
                other => {
                    cx.error(
                        &l.span,
                        &key("sm4_length"),
                        format!("unknown length convention \"{other}\": \"plaintext\" (the standard's example) or \"transmitted\""),
                    );
                    None
                }
            },
        };
        let heartbeat = match &u.heartbeat {
            None => Some(None),
            Some(h) => match off_or_duration(cx, h, &key("heartbeat")) {
                Some(Some(d)) if d < Duration::from_secs(5) || d > Duration::from_secs(3600) => {
                    cx.error(&h.span, &key("heartbeat"), "from 5s to 1h, or \"off\"");
                    None
                }
                other => other,
            },
        };
        let (Some(name), Some(address), Some(version), Some(st), Some(mn), Some(password)) =
            (name, address, version, st, mn, password)
        else {
            continue;
        };
        let (Some(sm4_length), Some(heartbeat)) = (sm4_length, heartbeat) else {
            continue;
        };
        let (
            Some(devices),
            Some(realtime),
            Some(minute),
            Some(timeout),
            Some(retries),
            Some(window),
            Some(keep),
            Some(factors),
            Some(min_coverage),
            Some(grace),
        ) = (
            devices,
            realtime,
            minute,
            timeout,
            retries,
            window,
            keep,
            factors,
            min_coverage,
            grace,
        )
        else {
            continue;
        };
        out.push(Hj212Upstream {
            name,
            address,
            version,
            st,
            mn,
            password,
            devices,
            realtime,
            minute,
            hourly,
            daily,
            ack,
            timeout,
            retries,
            window,
            keep,
            factors,
            min_coverage,
            grace,
            sm4_key,
            sm4_length,
            heartbeat,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_port() {
        assert!(check_address("platform.example.cn:6653").is_ok());
        assert!(check_address("10.1.2.3:6653").is_ok());
        assert!(check_address("[::1]:6653").is_ok());
        assert!(check_address("platform.example.cn").is_err());
        assert!(check_address(":6653").is_err());
        assert!(check_address("a b:6653").is_err());
        assert!(check_address("host:0").is_err());
        assert!(check_address("host:70000").is_err());
    }
}
