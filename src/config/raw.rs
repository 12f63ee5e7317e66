//! Stage one of loading: the TOML tree read into raw types, each value with its span.
//!
//! Only shape is checked here (types, unknown keys, required keys); meaning and
//! cross-references are stage two (`validate.rs`).

use std::time::Duration;

use super::reader::{ByteSize, Cx, Sp, Span, TableReader};

#[derive(Default)]
pub struct RawConfig<'t, 'i> {
    pub site: Option<RawSite>,
    pub influx: Option<RawInflux>,
    pub store: Option<RawStore>,
    pub http: Option<RawHttp>,
    pub modbus: Vec<RawBus>,
    pub mqtt: Vec<RawBroker>,
    /// The site's own `[[rule]]` tables, read in stage two: one whose id is a pack rule's is a
    /// patch of it, so they are read once the packs are known.
    pub rules: Vec<TableReader<'t, 'i>>,
    pub alerts: Option<RawAlerts>,
    pub compliance: Option<super::linkage::RawCompliance>,
    pub actuators: Vec<super::linkage::RawActuator>,
    pub control: Option<super::linkage::RawControl>,
}

#[derive(Debug, Default)]
pub struct RawAlerts {
    pub locale: Option<Sp<String>>,
    pub offline_after: Option<Sp<Duration>>,
    pub mqtt: Option<RawAlertMqtt>,
    pub webhooks: Vec<RawWebhook>,
}

#[derive(Debug)]
pub struct RawAlertMqtt {
    pub span: Span,
    pub broker: Option<Sp<String>>,
    pub topic: Option<Sp<String>>,
    pub min_severity: Option<Sp<String>>,
}

#[derive(Debug)]
pub struct RawWebhook {
    pub span: Span,
    pub path_key: String,
    pub name: Option<Sp<String>>,
    pub url: Option<Sp<String>>,
    pub url_env: Option<Sp<String>>,
    pub url_file: Option<Sp<String>>,
    pub format: Option<Sp<String>>,
    pub secret_env: Option<Sp<String>>,
    pub secret_file: Option<Sp<String>>,
    pub min_severity: Option<Sp<String>>,
}

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
}

#[derive(Debug)]
pub struct RawSite {
    pub span: Span,
    pub id: Option<Sp<String>>,
    pub name: Option<Sp<String>>,
    pub timezone: Option<Sp<String>>,
    pub tags: Vec<(Sp<String>, Sp<String>)>,
    pub standards: Option<Sp<Vec<String>>>,
    pub health_interval: Option<Sp<Duration>>,
    /// The device that carries the regional background (`{background}` in packs).
    pub background: Option<Sp<String>>,
}

#[derive(Debug)]
pub struct RawInflux {
    pub span: Span,
    pub url: Option<Sp<String>>,
    pub api: Option<Sp<String>>,
    pub org: Option<Sp<String>>,
    pub bucket: Option<Sp<String>>,
    pub token_env: Option<Sp<String>>,
    pub token_file: Option<Sp<String>>,
    pub database: Option<Sp<String>>,
    pub retention_policy: Option<Sp<String>>,
    pub username: Option<Sp<String>>,
    pub password_env: Option<Sp<String>>,
    pub password_file: Option<Sp<String>>,
    pub batch_size: Option<Sp<i64>>,
    pub flush_interval: Option<Sp<Duration>>,
    pub timeout: Option<Sp<Duration>>,
    pub gzip: Option<Sp<bool>>,
    pub retry_max: Option<Sp<Duration>>,
    pub create_database: Option<Sp<bool>>,
}

#[derive(Debug)]
pub struct RawStore {
    pub dir: Option<Sp<String>>,
    pub max_size: Option<Sp<ByteSize>>,
    pub commit_interval: Option<Sp<Duration>>,
}

#[derive(Debug)]
pub struct RawHttp {
    pub listen: Option<Sp<String>>,
}

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

pub fn read<'t, 'i>(cx: &mut Cx<'_>, root: &mut TableReader<'t, 'i>) -> RawConfig<'t, 'i> {
    let mut raw = RawConfig::default();
    if let Some(mut t) = root.table(cx, "site") {
        raw.site = Some(RawSite {
            span: t.span(),
            id: t.req(cx, "id"),
            name: t.opt(cx, "name"),
            timezone: t.opt(cx, "timezone"),
            tags: t.string_map(cx, "tags"),
            standards: t.opt(cx, "standards"),
            health_interval: t.opt(cx, "health_interval"),
            background: t.opt(cx, "background"),
        });
        t.finish(cx);
    }
    if let Some(mut t) = root.table(cx, "influx") {
        for (key, instead) in [
            ("token", "token_env or token_file"),
            ("password", "password_env or password_file"),
        ] {
            if t.has(key) {
                let _ = t.opt::<String>(cx, key).map(|v| {
                    cx.error(
                        &v.span,
                        &t.key_path(key),
                        format!("secrets never go in the config file: name them with {instead}"),
                    )
                });
            }
        }
        raw.influx = Some(RawInflux {
            span: t.span(),
            url: t.req(cx, "url"),
            api: t.opt(cx, "api"),
            org: t.opt(cx, "org"),
            bucket: t.opt(cx, "bucket"),
            token_env: t.opt(cx, "token_env"),
            token_file: t.opt(cx, "token_file"),
            database: t.opt(cx, "database"),
            retention_policy: t.opt(cx, "retention_policy"),
            username: t.opt(cx, "username"),
            password_env: t.opt(cx, "password_env"),
            password_file: t.opt(cx, "password_file"),
            batch_size: t.opt(cx, "batch_size"),
            flush_interval: t.opt(cx, "flush_interval"),
            timeout: t.opt(cx, "timeout"),
            gzip: t.opt(cx, "gzip"),
            retry_max: t.opt(cx, "retry_max"),
            create_database: t.opt(cx, "create_database"),
        });
        t.finish(cx);
    }
    if let Some(mut t) = root.table(cx, "store") {
        raw.store = Some(RawStore {
            dir: t.opt(cx, "dir"),
            max_size: t.opt(cx, "max_size"),
            commit_interval: t.opt(cx, "commit_interval"),
        });
        t.finish(cx);
    }
    if let Some(mut t) = root.table(cx, "http") {
        raw.http = Some(RawHttp {
            listen: t.opt(cx, "listen"),
        });
        t.finish(cx);
    }
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
        raw.modbus.push(bus);
    }
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
            });
            t.finish(cx);
        }
        b.finish(cx);
        raw.mqtt.push(broker);
    }
    raw.rules = root.tables(cx, "rule");
    if let Some(mut a) = root.table(cx, "alerts") {
        let mut alerts = RawAlerts {
            locale: a.opt(cx, "locale"),
            offline_after: a.opt(cx, "offline_after"),
            ..RawAlerts::default()
        };
        if let Some(mut m) = a.table(cx, "mqtt") {
            alerts.mqtt = Some(RawAlertMqtt {
                span: m.span(),
                broker: m.req(cx, "broker"),
                topic: m.req(cx, "topic"),
                min_severity: m.opt(cx, "min_severity"),
            });
            m.finish(cx);
        }
        for mut w in a.tables(cx, "webhook") {
            if w.has("secret") {
                let _ = w.opt::<String>(cx, "secret").map(|v| {
                    cx.error(&v.span, &w.key_path("secret"), "secrets never go in the config file: name them with secret_env or secret_file")
                });
            }
            alerts.webhooks.push(RawWebhook {
                span: w.span(),
                path_key: w.path().to_string(),
                name: w.opt(cx, "name"),
                url: w.opt(cx, "url"),
                url_env: w.opt(cx, "url_env"),
                url_file: w.opt(cx, "url_file"),
                format: w.opt(cx, "format"),
                secret_env: w.opt(cx, "secret_env"),
                secret_file: w.opt(cx, "secret_file"),
                min_severity: w.opt(cx, "min_severity"),
            });
            w.finish(cx);
        }
        a.finish(cx);
        raw.alerts = Some(alerts);
    }
    if let Some(t) = root.table(cx, "compliance") {
        raw.compliance = Some(super::linkage::read_compliance(cx, t));
    }
    for t in root.tables(cx, "actuator") {
        raw.actuators.push(super::linkage::read_actuator(cx, t));
    }
    if let Some(t) = root.table(cx, "control") {
        raw.control = Some(super::linkage::read_control(cx, t));
    }
    raw
}
