//! `[[mqtt]]` brokers and their `[[mqtt.subscribe]]`s: URL, TLS, credentials, session, topics,
//! device ids and JSON profiles.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::alerts::AlertsConfig;
use super::common::{Secret, in_range, positive, secret};
use super::control::ControlConfig;
use super::json_profile::JsonProfile;
use super::profile::{ProfileError, ProfileLoader};
use super::reader::{ByteSize, Cx, Sp, Span, TableReader};
use super::source::Diagnostic;

#[derive(Debug)]
pub struct RawBroker {
    pub span: Span,
    pub path_key: String,
    pub name: Option<Sp<String>>,
    pub url: Option<Sp<String>>,
    pub client_id: Option<Sp<String>>,
    pub username: Option<Sp<String>>,
    pub password_env: Option<Sp<String>>,
    pub password_file: Option<Sp<String>>,
    pub ca_file: Option<Sp<String>>,
    pub cert_file: Option<Sp<String>>,
    pub key_file: Option<Sp<String>>,
    pub keep_alive: Option<Sp<Duration>>,
    pub clean_session: Option<Sp<bool>>,
    pub dead_letter_topic: Option<Sp<String>>,
    pub max_message_size: Option<Sp<ByteSize>>,
    pub subscribe: Vec<RawSubscription>,
}

#[derive(Debug)]
pub struct RawSubscription {
    pub span: Span,
    pub path_key: String,
    pub topic: Option<Sp<String>>,
    pub device: Option<Sp<String>>,
    pub profile: Option<Sp<String>>,
    pub qos: Option<Sp<i64>>,
    pub max_devices: Option<Sp<i64>>,
}

/// TLS settings of an `mqtts://` broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Trust this CA (PEM); without it, the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM), for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Where a message's device id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceFrom {
    /// A level of the topic, 0-based: `device = "{1}"`.
    TopicLevel(usize),
    /// A JSON pointer into the payload (or item): `device = "/id"`.
    Pointer(String),
    /// A fixed id: `device = "dust-01"`.
    Fixed(String),
}

#[derive(Debug, Clone)]
pub struct Subscription {
    /// What is subscribed to, as written: a filter, or a shared subscription
    /// `$share/<group>/<filter>`.
    pub topic: String,
    /// The filter messages' topics are matched against and `{N}` levels count in: `topic`
    /// without a shared subscription's `$share/<group>/` (the broker delivers messages under
    /// their own topics).
    pub filter: String,
    pub device: DeviceFrom,
    pub profile: Arc<JsonProfile>,
    pub qos: u8,
    /// Distinct device ids this subscription may create (topic levels and payloads name them);
    /// messages for more are refused, acknowledged and counted.
    pub max_devices: usize,
}

/// `max_message_size` when not set: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;
/// The largest `max_message_size` accepted: 64 MiB.
pub const MAX_MAX_MESSAGE_SIZE: u64 = 64 << 20;
/// `max_devices` when not set.
pub const DEFAULT_MAX_DEVICES: usize = 1000;
/// The largest `max_devices` accepted.
pub const MAX_MAX_DEVICES: i64 = 100_000;

#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub name: String,
    /// As written, for messages.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub tls: Option<TlsFiles>,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub keep_alive: Duration,
    /// `false` (the default): a persistent session, so the broker keeps QoS 1 messages while
    /// the gateway is away.
    pub clean_session: bool,
    /// Rejected payloads are republished here (QoS 0), if set.
    pub dead_letter_topic: Option<String>,
    /// Payloads longer than this are refused: counted, dead-lettered (topic and size only) and
    /// acknowledged.
    pub max_message_size: usize,
    pub subscriptions: Vec<Subscription>,
}

/// Reads the section's shape (types, unknown keys, required keys).
pub fn read(cx: &mut Cx<'_>, root: &mut TableReader<'_, '_>) -> Vec<RawBroker> {
    let mut raw = Vec::new();
    for mut b in root.tables(cx, "mqtt") {
        if b.has("password") {
            let _ = b.opt::<String>(cx, "password").map(|v| {
                cx.error(
                    &v.span,
                    &b.key_path("password"),
                    "secrets never go in the config file: name them with password_env or password_file",
                )
            });
        }
        let mut broker = RawBroker {
            span: b.span(),
            path_key: b.path().to_string(),
            name: b.req(cx, "name"),
            url: b.req(cx, "url"),
            client_id: b.opt(cx, "client_id"),
            username: b.opt(cx, "username"),
            password_env: b.opt(cx, "password_env"),
            password_file: b.opt(cx, "password_file"),
            ca_file: b.opt(cx, "ca_file"),
            cert_file: b.opt(cx, "cert_file"),
            key_file: b.opt(cx, "key_file"),
            keep_alive: b.opt(cx, "keep_alive"),
            clean_session: b.opt(cx, "clean_session"),
            dead_letter_topic: b.opt(cx, "dead_letter_topic"),
            max_message_size: b.opt(cx, "max_message_size"),
            subscribe: Vec::new(),
        };
        for mut t in b.tables(cx, "subscribe") {
            broker.subscribe.push(RawSubscription {
                span: t.span(),
                path_key: t.path().to_string(),
                topic: t.req(cx, "topic"),
                device: t.req(cx, "device"),
                profile: t.req(cx, "profile"),
                qos: t.opt(cx, "qos"),
                max_devices: t.opt(cx, "max_devices"),
            });
            t.finish(cx);
        }
        b.finish(cx);
        raw.push(broker);
    }
    raw
}

/// Fixed device ids of the subscriptions (`device = "dust-01"`), each with its line (the
/// first): HJ 212 stations may not take them.
pub fn fixed_device_ids(cx: &Cx<'_>, raw: &[RawBroker]) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for d in raw
        .iter()
        .flat_map(|b| &b.subscribe)
        .filter_map(|s| s.device.as_ref())
    {
        let v = d.value.as_str();
        if v.is_empty() || v.starts_with('/') || (v.starts_with('{') && v.ends_with('}')) {
            continue;
        }
        ids.entry(d.value.clone())
            .or_insert_with(|| cx.file.position(d.span.start).0);
    }
    ids
}

/// Brokers without a subscription: (name, span, key path of `subscribe`).
pub type IdleBrokers = Vec<(String, Span, String)>;

/// Checks the brokers and their subscriptions. `device_ids` are the Modbus devices' (with
/// their lines): a fixed MQTT device id must not be one of them.
pub fn validate(
    cx: &mut Cx<'_>,
    raw: Vec<RawBroker>,
    base: &Path,
    site_id: &str,
    profiles: &mut ProfileLoader,
    device_ids: &HashMap<String, usize>,
) -> (Vec<MqttConfig>, IdleBrokers) {
    // Brokers without a subscription: (name, span, key path), to warn about those with no use.
    let idle_brokers: Vec<(String, Span, String)> = raw
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
    for s in raw.iter().flat_map(|b| &b.subscribe) {
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
    for b in raw {
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
        if let Some(broker) = broker(cx, b, base, site_id, profiles) {
            brokers.push(broker);
        }
    }
    (brokers, idle_brokers)
}

/// A broker without subscriptions may publish alerts or take `[control]` commands; one that
/// does neither only connects, which `check` points out.
pub fn unused_brokers(
    cx: &mut Cx<'_>,
    idle_brokers: IdleBrokers,
    alerts: &AlertsConfig,
    control: &ControlConfig,
) -> Vec<Diagnostic> {
    let mut warnings = Vec::new();
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
    warnings
}

/// Checks an MQTT topic filter: `+` and `#` only as whole levels, `#` only last.
/// Longest client id accepted: MQTT allows 65,535 bytes, brokers far fewer (3.1.1 guarantees
/// only 23); 256 is plenty for `dustgate-<site>-<broker>`.
const MAX_CLIENT_ID: usize = 256;

/// A shared subscription's group and filter: `$share/<group>/<filter>` (MQTT 5 §4.8.2, which
/// Mosquitto and EMQX also accept from MQTT 3.1.1 clients [P: their manuals]); `None` for a
/// plain filter. The group must be a non-empty level without `+` or `#`.
pub fn split_shared(topic: &str) -> Option<Result<(&str, &str), String>> {
    let rest = topic.strip_prefix("$share/")?;
    Some(match rest.split_once('/') {
        Some((group, filter))
            if !group.is_empty() && !group.contains(['+', '#']) && !filter.is_empty() =>
        {
            Ok((group, filter))
        }
        _ => Err(format!(
            "\"{topic}\": a shared subscription is \"$share/<group>/<filter>\", the group a name without '+' or '#'"
        )),
    })
}

pub fn check_topic_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("a topic filter must not be empty".into());
    }
    if filter.contains('\0') {
        return Err("a topic must not contain a NUL character (MQTT forbids it)".into());
    }
    if filter.len() > 65_535 {
        return Err("a topic is at most 65,535 bytes (MQTT's limit)".into());
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
                format!(
                    "\"{}\" is not an mqtt:// or mqtts:// URL",
                    crate::redact::url(&u.value)
                ),
            );
            return None;
        };
        if crate::redact::has_userinfo(&u.value) {
            cx.error(
                &u.span,
                &key("url"),
                format!(
                    "\"{}\" carries credentials (user:password@): they never go in the config file; use username and password_env or password_file",
                    crate::redact::url(&u.value)
                ),
            );
            return None;
        }
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
                format!(
                    "\"{}\" has no host: write mqtt://host:port",
                    crate::redact::url(&u.value)
                ),
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
    if let Some(c) = &b.client_id {
        if client_id.is_empty() {
            cx.error(
                &c.span,
                &key("client_id"),
                "a persistent session needs a non-empty client id",
            );
        } else if client_id.len() > MAX_CLIENT_ID || client_id.contains('\0') {
            cx.error(
                &c.span,
                &key("client_id"),
                format!(
                    "a client id is at most {MAX_CLIENT_ID} bytes, without NUL (brokers refuse longer ones)"
                ),
            );
        }
    }
    let dead_letter_topic = b.dead_letter_topic.as_ref().and_then(|t| {
        let topic = t.value.replace("{site}", site_id);
        if topic.is_empty() || topic.contains(['+', '#', '\0']) {
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
        let topic = s.topic.as_ref().and_then(|t| {
            let filter = match split_shared(&t.value) {
                None => Ok(t.value.as_str()),
                Some(shared) => shared.map(|(_, filter)| filter),
            };
            match filter.and_then(|f| check_topic_filter(f).map(|()| f)) {
                Ok(f) => Some((t.value.clone(), f.to_string())),
                Err(e) => {
                    cx.error(&t.span, &skey("topic"), e);
                    None
                }
            }
        });
        let device = s.device.as_ref().and_then(|d| {
            let v = d.value.as_str();
            if let Some(n) = v.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                match n.parse::<usize>() {
                    Ok(level) => {
                        // Levels of the filter the messages arrive under (without `$share/<group>/`).
                        let filter = topic.as_ref().map(|(_, f)| f.as_str());
                        let levels = filter.map_or(usize::MAX, |f| f.split('/').count());
                        let hash_last = filter.is_some_and(|f| f.ends_with('#'));
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
        let max_devices = match &s.max_devices {
            None => Some(DEFAULT_MAX_DEVICES),
            Some(m) => {
                in_range::<usize>(cx, m, &skey("max_devices"), 1, MAX_MAX_DEVICES).map(|v| v.value)
            }
        };
        if let (Some((topic, filter)), Some(device), Some(profile), Some(qos), Some(max_devices)) =
            (topic, device, profile, qos, max_devices)
        {
            subscriptions.push(Subscription {
                topic,
                filter,
                device,
                profile,
                qos,
                max_devices,
            });
        }
    }
    let max_message_size = match &b.max_message_size {
        None => DEFAULT_MAX_MESSAGE_SIZE,
        Some(m) if m.value.0 == 0 || m.value.0 > MAX_MAX_MESSAGE_SIZE => {
            cx.error(
                &m.span,
                &key("max_message_size"),
                format!("{} bytes is out of range: from 1 byte to 64MiB", m.value.0),
            );
            DEFAULT_MAX_MESSAGE_SIZE
        }
        Some(m) => usize::try_from(m.value.0).unwrap_or(DEFAULT_MAX_MESSAGE_SIZE),
    };
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
        max_message_size,
        subscriptions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_subscriptions_split_into_group_and_filter() {
        assert_eq!(
            split_shared("$share/hubs/sites/+/air"),
            Some(Ok(("hubs", "sites/+/air")))
        );
        assert_eq!(split_shared("sites/+/air"), None);
        // `$share` without the slash is an ordinary (if odd) topic level.
        assert_eq!(split_shared("$shared/x"), None);
        for bad in [
            "$share/",
            "$share/hubs",
            "$share/hubs/",
            "$share//a",
            "$share/+/a",
            "$share/h#/a",
        ] {
            let e = split_shared(bad).expect("a $share topic").unwrap_err();
            assert!(e.contains("$share/<group>/<filter>"), "{bad}: {e}");
        }
    }
}
