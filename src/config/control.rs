//! `[control]`: manual override of actuators, over MQTT and over HTTP with a bearer token.

use std::time::Duration;

use super::common::{Secret, duration};
use super::mqtt::MqttConfig;
use super::reader::{Cx, Sp, Span, TableReader};

#[derive(Debug)]
pub struct RawControl {
    pub span: Span,
    pub broker: Option<Sp<String>>,
    pub topic: Option<Sp<String>>,
    pub token_env: Option<Sp<String>>,
    pub token_file: Option<Sp<String>>,
    pub max_for: Option<Sp<Duration>>,
    pub max_age: Option<Sp<Duration>>,
    pub hmac_env: Option<Sp<String>>,
    pub hmac_file: Option<Sp<String>>,
}

/// `[control]`: manual override of actuators.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// (broker name, command topic) for overrides over MQTT.
    pub mqtt: Option<(String, String)>,
    /// Bearer token for `POST /api/actuators/{id}`; without it the endpoint is off.
    pub token: Option<Secret>,
    /// Longest override anyone may ask for.
    pub max_for: Duration,
    /// A command's `at` may be this far from the gateway's clock (either way); older ones, a
    /// retained "on for 4 h" from yesterday, are refused.
    pub max_age: Duration,
    /// Shared secret of the MQTT command topic: commands must carry `sig`, an HMAC-SHA256 of
    /// their fields (see `crate::control`).
    pub hmac: Option<Secret>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            mqtt: None,
            token: None,
            max_for: Duration::from_secs(4 * 3600),
            max_age: Duration::from_secs(120),
            hmac: None,
        }
    }
}

pub fn read_control(cx: &mut Cx<'_>, mut t: TableReader<'_, '_>) -> RawControl {
    if t.has("token") {
        let _ = t.opt::<String>(cx, "token").map(|v| {
            cx.error(
                &v.span,
                &t.key_path("token"),
                "secrets never go in the config file: name them with token_env or token_file",
            )
        });
    }
    let raw = RawControl {
        span: t.span(),
        broker: t.opt(cx, "broker"),
        topic: t.opt(cx, "topic"),
        token_env: t.opt(cx, "token_env"),
        token_file: t.opt(cx, "token_file"),
        max_for: t.opt(cx, "max_for"),
        max_age: t.opt(cx, "max_age"),
        hmac_env: t.opt(cx, "hmac_env"),
        hmac_file: t.opt(cx, "hmac_file"),
    };
    t.finish(cx);
    raw
}

pub fn control(
    cx: &mut Cx<'_>,
    raw: Option<RawControl>,
    site_id: &str,
    brokers: &[MqttConfig],
    token: Option<Secret>,
    hmac: Option<Secret>,
) -> ControlConfig {
    let mut c = ControlConfig {
        token,
        hmac,
        ..ControlConfig::default()
    };
    let Some(raw) = raw else {
        return c;
    };
    c.max_for = duration(cx, &raw.max_for, "control.max_for", c.max_for);
    c.max_age = duration(cx, &raw.max_age, "control.max_age", c.max_age);
    match (&raw.broker, &raw.topic) {
        (Some(b), Some(t)) => {
            let topic = t.value.replace("{site}", site_id);
            if !brokers.iter().any(|x| x.name == b.value) {
                cx.error(
                    &b.span,
                    "control.broker",
                    format!("no [[mqtt]] broker named \"{}\"", b.value),
                );
            } else if let Err(e) = super::mqtt::check_topic_filter(&topic) {
                cx.error(&t.span, "control.topic", e);
            } else {
                c.mqtt = Some((b.value.clone(), topic));
            }
        }
        (Some(b), None) => cx.error(&b.span, "control.topic", "a command topic to subscribe to"),
        (None, Some(t)) => cx.error(
            &t.span,
            "control.broker",
            "the [[mqtt]] broker to subscribe on",
        ),
        (None, None) => {}
    }
    c
}
