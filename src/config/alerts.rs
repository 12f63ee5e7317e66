//! `[alerts]`: the language of alert texts, when a silent device is offline, and where alerts
//! go besides InfluxDB (`[alerts.mqtt]`, `[[alerts.webhook]]`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::common::{Secret, positive, secret};
use super::mqtt::MqttConfig;
use super::reader::{Cx, Sp, Span, TableReader};
use super::rules::Severity;

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

/// The language of alert texts (`[alerts].locale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Locale {
    #[default]
    ZhCn,
    En,
}

impl Locale {
    /// Every language, in the order of the text tables.
    pub const ALL: [Locale; 2] = [Locale::ZhCn, Locale::En];

    /// The tag people write: `zh-CN`, `en`.
    pub fn name(self) -> &'static str {
        match self {
            Locale::ZhCn => "zh-CN",
            Locale::En => "en",
        }
    }

    pub fn parse(s: &str) -> Option<Locale> {
        match s {
            "zh-CN" | "zh" => Some(Locale::ZhCn),
            "en" | "en-US" | "en-GB" => Some(Locale::En),
            _ => None,
        }
    }
}

/// Where alerts go besides InfluxDB's `alert` measurement.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    pub locale: Locale,
    /// A device silent this long (and at least three of its intervals) is reported offline.
    pub offline_after: Duration,
    pub mqtt: Option<AlertMqtt>,
    pub webhooks: Vec<Webhook>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            locale: Locale::default(),
            offline_after: Duration::from_secs(600),
            mqtt: None,
            webhooks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AlertMqtt {
    /// An `[[mqtt]]` name.
    pub broker: String,
    /// `{site}` already replaced.
    pub topic: String,
    pub min_severity: Severity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    Generic,
    DingTalk,
    WeCom,
    Feishu,
}

impl WebhookFormat {
    pub fn name(self) -> &'static str {
        match self {
            WebhookFormat::Generic => "generic",
            WebhookFormat::DingTalk => "dingtalk",
            WebhookFormat::WeCom => "wecom",
            WebhookFormat::Feishu => "feishu",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Webhook {
    /// A name for logs and the queue file (`webhook-0`, or the configured one).
    pub name: String,
    /// The URL holds tokens (DingTalk's access_token, WeCom's key), so it is a secret.
    pub url: Secret,
    pub format: WebhookFormat,
    /// DingTalk and Feishu signing secret.
    pub secret: Option<Secret>,
    pub min_severity: Severity,
}

/// Reads the section's shape (types, unknown keys, required keys).
pub fn read(cx: &mut Cx<'_>, root: &mut TableReader<'_, '_>) -> Option<RawAlerts> {
    let mut raw = None;
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
        raw = Some(alerts);
    }
    raw
}

pub fn validate(
    cx: &mut Cx<'_>,
    raw: Option<RawAlerts>,
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
        if t.is_empty() || t.contains(['+', '#', '\0']) {
            cx.error(
                &topic.span,
                "alerts.mqtt.topic",
                "a topic to publish to, without wildcards or NUL",
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

/// Outbox folders under `[store].dir/outbox/` that are not webhooks'.
const RESERVED_OUTBOX_NAMES: &[&str] = &["mqtt"];

/// A webhook's name (`webhook-<i>` when none is given): it names its outbox folder, so it is
/// a plain word, unique among webhooks and not one of the other outboxes.
fn webhook_name(
    cx: &mut Cx<'_>,
    w: &RawWebhook,
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
