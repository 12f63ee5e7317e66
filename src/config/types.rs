//! The validated configuration: typed values only, every cross-reference resolved.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::json_profile::JsonProfile;
use super::profile::ModbusProfile;
use super::rules::{Pack, RuleConfig, Severity};
use crate::register::Limits;

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from.
    pub file: PathBuf,
    pub site: Site,
    /// `None`: series go to daily line-protocol files under `[store].dir`.
    pub influx: Option<InfluxConfig>,
    pub store: StoreConfig,
    pub http: HttpConfig,
    pub buses: Vec<BusConfig>,
    pub brokers: Vec<MqttConfig>,
    /// The rules in force: the packs' rules, with the site's own replacing those of the same id.
    pub rules: Vec<RuleConfig>,
    /// The packs named in `[site].standards`.
    pub packs: Vec<Arc<Pack>>,
    pub alerts: AlertsConfig,
    /// `[compliance]`: the six 100% are judged only when the section is present.
    pub compliance: Option<super::linkage::ComplianceParams>,
    pub actuators: Vec<super::linkage::ActuatorConfig>,
    pub control: super::linkage::ControlConfig,
    /// What the site's patches changed in pack rules, for `check`.
    pub rule_patches: Vec<super::rules::RulePatch>,
    /// What `check` points out without refusing the config (file:line:col and key path).
    pub warnings: Vec<super::source::Diagnostic>,
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

#[derive(Debug, Clone)]
pub struct Site {
    pub id: String,
    pub name: Option<String>,
    pub timezone: jiff::tz::TimeZone,
    pub timezone_name: String,
    /// Extra tags on every point.
    pub tags: Vec<(String, String)>,
    pub standards: Vec<String>,
    /// The device carrying the regional background, if any.
    pub background: Option<String>,
    /// How often gateway health points are written and the health line is logged.
    pub health_interval: Duration,
}

/// A secret is named in the config, never written in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    Env(String),
    File(PathBuf),
    /// Written in the config (for values that are not secret, such as a plain webhook URL).
    Literal(String),
}

impl Secret {
    /// Reads the secret. The error names where it was looked for, never the value.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Secret::Env(var) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
            }
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display())),
            Secret::Literal(s) => Ok(s.clone()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Secret::Env(var) => format!("${var}"),
            Secret::File(path) => format!("file {}", path.display()),
            Secret::Literal(_) => "the config file".to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum InfluxApi {
    /// `/write?db=..&rp=..` (InfluxDB 1.x, and 2.x/3.x compatibility endpoints).
    V1 {
        database: String,
        retention_policy: Option<String>,
        username: Option<String>,
        password: Option<Secret>,
    },
    /// `/api/v2/write?org=..&bucket=..` with `Authorization: Token` (2.x, 3.x, Cloud).
    V2 {
        org: String,
        bucket: String,
        token: Secret,
    },
}

#[derive(Debug, Clone)]
pub struct InfluxConfig {
    pub url: String,
    pub api: InfluxApi,
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// Per HTTP request.
    pub timeout: Duration,
    pub gzip: bool,
    /// Ceiling of the retry backoff.
    pub retry_max: Duration,
    /// v1: `CREATE DATABASE` at start when the database is missing (as Telegraf does).
    pub create_database: bool,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub dir: PathBuf,
    /// Bound of the queued line protocol on disk; past it the oldest points go, counted.
    pub max_size: u64,
    /// How often appends are committed to disk as a group (and MQTT messages acknowledged).
    pub commit_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
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
    pub topic: String,
    pub device: DeviceFrom,
    pub profile: Arc<JsonProfile>,
    pub qos: u8,
}

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
    pub subscriptions: Vec<Subscription>,
}
