//! Configuration: `site.toml` and the device profiles and standards packs it names.
//!
//! One file per section, each holding the section's raw shape, its validation and its typed
//! value together: `site`, `influx`, `store`, `http`, `modbus` (buses and devices), `mqtt`
//! (brokers and subscriptions), `rules` (with the standards packs), `alerts`, `linkage`
//! (`[compliance]` and `[[actuator]]`), `control`; helpers they share are in `common`.
//!
//! Loading has two stages, after Vector's validate/build split: the TOML tree is read into raw
//! types (shape, types, unknown keys: [`read`]), then validated into typed values (ranges,
//! references, duplicates, overlaps: [`validate`]). Every problem in every file is reported at
//! once, each with file:line:column and key path.

pub mod alerts;
pub mod common;
pub mod control;
pub mod diff;
pub mod factors;
pub mod hj212;
pub mod http;
pub mod influx;
pub mod json_profile;
pub mod linkage;
pub mod metrics;
pub mod modbus;
pub mod mqtt;
pub mod profile;
pub mod reader;
pub mod rules;
pub mod site;
pub mod source;
pub mod store;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use alerts::{AlertMqtt, AlertsConfig, Locale, Webhook, WebhookFormat};
pub use common::Secret;
pub use factors::{Factor, FactorMap};
pub use hj212::{
    CrcForm, Hj212Config, Hj212Endpoint, Hj212Listener, Hj212Station, StationKind, UnknownMn,
};
pub use http::HttpConfig;
pub use influx::{InfluxApi, InfluxConfig};
pub use modbus::{BusConfig, DeviceConfig, Parity, SerialLine, Transport};
pub use mqtt::{DeviceFrom, MqttConfig, Subscription, TlsFiles};
pub use site::Site;
pub use source::{Diagnostic, Diagnostics, SourceFile};
pub use store::StoreConfig;

use profile::ProfileLoader;
use reader::{Cx, TableReader, parse_document};
use rules::{Pack, PackLoader, RuleConfig};

/// The validated configuration: typed values only, every cross-reference resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from.
    pub file: PathBuf,
    /// Hex SHA-256 of the file's text as loaded (as `sha256sum` prints it), so a crew can tell
    /// which version runs.
    pub sha256: String,
    pub site: Site,
    /// `None`: series go to daily line-protocol files under `[store].dir`.
    pub influx: Option<InfluxConfig>,
    pub store: StoreConfig,
    pub http: HttpConfig,
    pub buses: Vec<BusConfig>,
    pub brokers: Vec<MqttConfig>,
    /// `[[hj212.listen]]`: HJ 212 ingest.
    pub hj212: Hj212Config,
    /// The rules in force: the packs' rules, with the site's own replacing those of the same id.
    pub rules: Vec<RuleConfig>,
    /// The packs named in `[site].standards`.
    pub packs: Vec<Arc<Pack>>,
    pub alerts: AlertsConfig,
    /// `[compliance]`: the six 100% are judged only when the section is present.
    pub compliance: Option<linkage::ComplianceParams>,
    pub actuators: Vec<linkage::ActuatorConfig>,
    pub control: control::ControlConfig,
    /// What the site's patches changed in pack rules, for `check`.
    pub rule_patches: Vec<rules::RulePatch>,
    /// What `check` points out without refusing the config (file:line:col and key path).
    pub warnings: Vec<Diagnostic>,
}

/// Stage one: every section's raw shape, each value with its span.
#[derive(Default)]
pub struct RawConfig<'t, 'i> {
    pub site: Option<site::RawSite>,
    pub influx: Option<influx::RawInflux>,
    pub store: Option<store::RawStore>,
    pub http: Option<http::RawHttp>,
    pub modbus: Vec<modbus::RawBus>,
    pub mqtt: Vec<mqtt::RawBroker>,
    pub hj212: hj212::RawHj212,
    /// The site's own `[[rule]]` tables, read in stage two: one whose id is a pack rule's is a
    /// patch of it, so they are read once the packs are known.
    pub rules: Vec<TableReader<'t, 'i>>,
    pub alerts: Option<alerts::RawAlerts>,
    pub compliance: Option<linkage::RawCompliance>,
    pub actuators: Vec<linkage::RawActuator>,
    pub control: Option<control::RawControl>,
}

/// Stage one: reads each section's shape (types, unknown keys, required keys).
pub fn read<'t, 'i>(cx: &mut Cx<'_>, root: &mut TableReader<'t, 'i>) -> RawConfig<'t, 'i> {
    RawConfig {
        site: site::read(cx, root),
        influx: influx::read(cx, root),
        store: store::read(cx, root),
        http: http::read(cx, root),
        modbus: modbus::read(cx, root),
        mqtt: mqtt::read(cx, root),
        hj212: hj212::read(cx, root),
        rules: root.tables(cx, "rule"),
        alerts: alerts::read(cx, root),
        compliance: root
            .table(cx, "compliance")
            .map(|t| linkage::read_compliance(cx, t)),
        actuators: root
            .tables(cx, "actuator")
            .into_iter()
            .map(|t| linkage::read_actuator(cx, t))
            .collect(),
        control: root
            .table(cx, "control")
            .map(|t| control::read_control(cx, t)),
    }
}

/// Stage two: each section checked for meaning, then the cross-references between them, into
/// the typed [`Config`]. Every problem is recorded; nothing stops at the first.
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
    let site = site::validate(cx, raw.site);
    let influx = raw.influx.and_then(|i| influx::validate(cx, i, base));
    let store = store::validate(cx, raw.store, base);
    let http = http::validate(cx, raw.http);
    let (buses, device_ids) = modbus::validate(cx, raw.modbus, profiles);
    let site_id = site.as_ref().map_or("site", |s| s.id.as_str()).to_string();
    let mqtt_ids = mqtt::fixed_device_ids(cx, &raw.mqtt);
    let (brokers, idle_brokers) =
        mqtt::validate(cx, raw.mqtt, base, &site_id, profiles, &device_ids);
    let mut hj212 = hj212::validate(
        cx,
        raw.hj212.listeners,
        base,
        &site_id,
        profiles,
        &hj212::TakenIds {
            modbus: &device_ids,
            mqtt: &mqtt_ids,
            http_listen: http.as_ref().map(|h| h.listen),
        },
    );
    let mut upstream_warnings = Vec::new();
    {
        let (known, all_known) = rules::known_devices(&buses, &brokers, &hj212);
        let upstreams = upstream::validate(
            cx,
            raw.hj212.upstreams,
            base,
            profiles,
            all_known.then_some(known.as_slice()),
            &mut upstream_warnings,
        );
        hj212.upstreams = upstreams;
    }
    let rules::Rules {
        rules,
        packs,
        patches: rule_patches,
        actuate_at,
        warnings: rule_warnings,
    } = rules::resolve(
        cx,
        &raw_standards,
        raw.rules,
        &buses,
        &brokers,
        &hj212,
        packs,
    );
    let alerts = alerts::validate(cx, raw.alerts, base, &site_id, &brokers);
    let compliance = linkage::compliance(cx, raw.compliance);
    let actuators = linkage::actuators(cx, raw.actuators, &buses, &actuate_at);
    let token = raw.control.as_ref().and_then(|c| {
        common::secret(
            cx,
            c.token_env.clone(),
            c.token_file.clone(),
            base,
            "control.token",
        )
    });
    let hmac = raw.control.as_ref().and_then(|c| {
        common::secret(
            cx,
            c.hmac_env.clone(),
            c.hmac_file.clone(),
            base,
            "control.hmac",
        )
    });
    let control = control::control(cx, raw.control, &site_id, &brokers, token, hmac);
    let mut warnings: Vec<_> = profiles.notes.drain(..).collect();
    warnings.extend(rule_warnings);
    warnings.extend(upstream_warnings);
    warnings.extend(mqtt::unused_brokers(cx, idle_brokers, &alerts, &control));

    Some(Config {
        file: config_path.to_path_buf(),
        sha256: String::new(),
        site: site?,
        influx,
        store,
        http: http?,
        buses,
        brokers,
        hj212,
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

/// Loads and validates a config file, with profiles from `devices/` beside it, then built-ins.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    let file = SourceFile::read(path).map_err(|d| Diagnostics(vec![d]))?;
    let mut profiles = ProfileLoader::for_config(path);
    load_from(&file, path, &mut profiles)
}

/// The standards packs a config sees: `standards/` beside it, then built-ins.
fn packs_for(path: &Path) -> rules::PackLoader {
    rules::PackLoader::for_config(path)
}

/// Loads a config from text already in memory (`dustgate demo` builds its own).
pub fn load_from(
    file: &Arc<SourceFile>,
    path: &Path,
    profiles: &mut ProfileLoader,
) -> Result<Config, Diagnostics> {
    let mut diags = Diagnostics::default();
    let config = {
        let mut cx = Cx {
            file,
            diags: &mut diags,
        };
        parse_document(&mut cx, &file.text).and_then(|doc| {
            let mut root = TableReader::root(&doc);
            let raw = read(&mut cx, &mut root);
            root.finish(&mut cx);
            validate(&mut cx, raw, path, profiles, &mut packs_for(path))
        })
    };
    diags.sort();
    match config {
        Some(mut c) if diags.is_empty() => {
            c.sha256 = source::sha256_hex(file.text.as_bytes());
            Ok(c)
        }
        _ => {
            if diags.is_empty() {
                diags.push(file.diagnostic(&(0..0), "", "configuration is incomplete"));
            }
            Err(diags)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn errors(text: &str) -> String {
        let file = SourceFile::new("t.toml", None, text.to_string());
        let mut profiles = ProfileLoader::new(vec![]);
        match load_from(&file, &PathBuf::from("t.toml"), &mut profiles) {
            Ok(_) => String::new(),
            Err(d) => d.to_string(),
        }
    }

    fn load_ok(text: &str) -> Config {
        let file = SourceFile::new("t.toml", None, text.to_string());
        let mut profiles = ProfileLoader::new(vec![]);
        match load_from(&file, &PathBuf::from("t.toml"), &mut profiles) {
            Ok(c) => c,
            Err(d) => panic!("expected a valid config, got:\n{d}"),
        }
    }

    fn warnings(c: &Config) -> String {
        let w: Vec<String> = c.warnings.iter().map(|d| d.to_string()).collect();
        w.join("\n")
    }

    #[test]
    fn a_broker_may_only_publish_alerts_or_take_commands() {
        let c = load_ok(
            "[site]\nid = \"s\"\n[[mqtt]]\nname = \"out\"\nurl = \"mqtt://127.0.0.1:1883\"\n[[mqtt]]\nname = \"cmd\"\nurl = \"mqtt://127.0.0.1:1884\"\n[[mqtt]]\nname = \"idle\"\nurl = \"mqtt://127.0.0.1:1885\"\n[alerts.mqtt]\nbroker = \"out\"\ntopic = \"a/{site}\"\n[control]\nbroker = \"cmd\"\ntopic = \"c/{site}\"\n",
        );
        assert_eq!(c.brokers.len(), 3);
        assert!(c.brokers.iter().all(|b| b.subscriptions.is_empty()));
        assert_eq!(
            c.alerts.mqtt.as_ref().map(|m| m.broker.as_str()),
            Some("out")
        );
        assert_eq!(c.control.mqtt, Some(("cmd".to_string(), "c/s".to_string())));
        // Only the broker with no use at all is pointed out, as a warning.
        assert_eq!(
            warnings(&c),
            "t.toml:9:1: mqtt[2].subscribe: broker \"idle\" has no [[mqtt.subscribe]] and is not used by [alerts.mqtt] or [control]: it only connects"
        );
    }

    #[test]
    fn webhook_names_are_plain_unique_and_not_reserved() {
        let hook =
            |name: &str| format!("[[alerts.webhook]]\n{name}url = \"http://127.0.0.1:9/h\"\n");
        let text = format!(
            "[site]\nid = \"s\"\n{}{}{}{}{}{}{}",
            hook("name = \"../x\"\n"),                         // 3
            hook("name = \"mqtt\"\n"),                         // 6
            hook("name = \"ops\"\n"),                          // 9
            hook("name = \"ops\"\n"),                          // 12
            hook(""),                                          // 15: webhook-4
            hook("name = \"webhook-4\"\n"),                    // 17
            hook(&format!("name = \"{}\"\n", "x".repeat(65))), // 20
        );
        let e = errors(&text);
        assert!(
            e.contains("t.toml:4:8: alerts.webhook[0].name: \"../x\" is not a webhook name: 1 to 64 of A-Z a-z 0-9 - _"),
            "{e}"
        );
        assert!(
            e.contains("t.toml:7:8: alerts.webhook[1].name: \"mqtt\" is reserved: outbox/mqtt/ holds the [alerts.mqtt] queue"),
            "{e}"
        );
        assert!(
            e.contains("t.toml:13:8: alerts.webhook[3].name: webhook name \"ops\" is already used at line 10"),
            "{e}"
        );
        assert!(
            e.contains("t.toml:18:8: alerts.webhook[5].name: webhook name \"webhook-4\" is already used at line 15"),
            "{e}"
        );
        assert!(
            e.contains("t.toml:21:8: alerts.webhook[6].name: \"xxxx"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 5, "{e}");
        let c = load_ok(&format!(
            "[site]\nid = \"s\"\n{}{}",
            hook(""),
            hook("name = \"Ops_2\"\n")
        ));
        let names: Vec<&str> = c.alerts.webhooks.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["webhook-0", "Ops_2"]);
    }

    const NOISE_SITE: &str = "[site]\nid = \"s\"\nstandards = [\"gb12523-2011\"]\n";

    #[test]
    fn a_site_rule_with_a_pack_rules_id_patches_only_the_keys_it_gives() {
        use rules::{Aggregate, Condition};
        let c = load_ok(&format!(
            "{NOISE_SITE}[[rule]]\nid = \"gb12523-day-leq\"\nabove = 65\n[[rule]]\nid = \"gb12523-night-leq\"\nwhen = \"23:00-06:00\"\nseverity = \"critical\"\n[[rule]]\nid = \"gb12523-night-lmax\"\nenabled = false\n"
        ));
        let ids: Vec<&str> = c.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["gb12523-day-leq", "gb12523-night-leq"]);
        let day = &c.rules[0];
        assert_eq!(day.condition, Condition::Above(65.0));
        assert_eq!(day.threshold(), 65.0);
        // Everything else is the pack's: metric, window, schedule, citation, severity.
        assert_eq!(day.metric, "noise");
        assert_eq!(day.window, Some(std::time::Duration::from_secs(20 * 60)));
        assert_eq!(day.aggregate, Aggregate::Leq);
        let when = day.when.expect("the pack's schedule is kept");
        assert_eq!(
            (when.start, when.end, when.days),
            (6 * 60, 22 * 60, [true; 7])
        );
        assert_eq!(day.provenance.pack, "gb12523-2011");
        assert_eq!(
            day.provenance.standard.as_deref(),
            Some("GB 12523-2011 表1 昼间")
        );
        assert_eq!(day.provenance.mark.as_deref(), Some("[P]"));
        assert_eq!(day.severity.name(), "warning");
        // The pack's titles state its number (">70"): with the limit moved they give way to
        // the generic title, which shows the limit in force.
        assert_eq!(
            (day.title_zh.as_deref(), day.title_en.as_deref()),
            (None, None)
        );
        let night = &c.rules[1];
        assert_eq!(night.condition, Condition::Above(55.0));
        let w = night.when.expect("schedule");
        assert_eq!((w.start, w.end), (23 * 60, 6 * 60));
        assert_eq!(night.severity.name(), "critical");
        assert_eq!(
            night.title_en.as_deref(),
            Some("Night noise over 55 dB(A) (20-min Leq)")
        );
        let lines: Vec<String> = c
            .rule_patches
            .iter()
            .flat_map(|p| p.lines().into_iter().map(|l| format!("{}: {l}", p.rule)))
            .collect();
        assert_eq!(
            lines[0],
            "gb12523-day-leq: above 65 (site patch; pack gb12523-2011 had 70)"
        );
        assert!(
            lines.contains(&"gb12523-night-leq: when 23:00-06:00 mon tue wed thu fri sat sun (site patch; pack gb12523-2011 had 22:00-06:00 mon tue wed thu fri sat sun)".to_string()),
            "{lines:#?}"
        );
        assert!(
            lines.contains(
                &"gb12523-night-leq: severity critical (site patch; pack gb12523-2011 had warning)"
                    .to_string()
            ),
            "{lines:#?}"
        );
        assert!(
            lines.contains(
                &"gb12523-night-lmax: enabled false (site patch; pack gb12523-2011 had true)"
                    .to_string()
            ),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_patch_is_checked_with_positions() {
        let e = errors(&format!(
            "{NOISE_SITE}[[rule]]\nid = \"gb12523-day-leq\"\nabove = 65\nbelow = 30\nclear = 80\nwhen = \"later\"\ncolour = \"red\"\n[[rule]]\nid = \"not-in-any-pack\"\nabove = 1\n[[rule]]\nid = \"also-not\"\nenabled = false\n"
        ));
        assert!(
            e.contains("t.toml:4:1: rule: give only one of `above`, `below` and `outside`"),
            "{e}"
        );
        assert!(
            e.contains("t.toml:9:8: rule[0].when: \"later\" is not a period"),
            "{e}"
        );
        assert!(
            e.contains("t.toml:10:1: rule[0].colour: unknown key `colour`"),
            "{e}"
        );
        // A rule of the site's own still needs its metric.
        assert!(
            e.contains("t.toml:11:1: rule[1].metric: missing required key `metric` in [rule[1]]"),
            "{e}"
        );
        assert!(
            e.contains("t.toml:14:1: rule: rule \"also-not\" names no metric or condition, and no pack of [site].standards has it"),
            "{e}"
        );
        let e = errors(&format!(
            "{NOISE_SITE}[[rule]]\nid = \"gb12523-day-leq\"\nclear = 75\n"
        ));
        assert!(
            e.contains("t.toml:6:9: rule[0].clear: `clear` must not be above the limit 70"),
            "{e}"
        );
    }

    #[test]
    fn an_mqtt_device_id_may_not_be_a_modbus_ones() {
        let e = errors(&format!(
            "{RELAY_SITE}[[mqtt]]\nname = \"m\"\nurl = \"mqtt://127.0.0.1:1883\"\n  [[mqtt.subscribe]]\n  topic = \"x/dust\"\n  device = \"dust-01\"\n  profile = \"json-dust-monitor\"\n"
        ));
        assert_eq!(
            e,
            "t.toml:20:12: mqtt[0].subscribe[0].device: device id \"dust-01\" is a Modbus device's (line 12): an MQTT device needs an id of its own"
        );
    }

    #[test]
    fn mqtt_size_and_device_caps_are_checked_with_their_position() {
        let e = errors(
            "[site]\nid = \"s\"\n[[mqtt]]\nname = \"m\"\nurl = \"mqtt://127.0.0.1:1883\"\nmax_message_size = \"65MiB\"\n  [[mqtt.subscribe]]\n  topic = \"x/+\"\n  device = \"{1}\"\n  profile = \"json-dust-monitor\"\n  max_devices = 0\n",
        );
        assert_eq!(
            e,
            "t.toml:6:20: mqtt[0].max_message_size: 68157440 bytes is out of range: from 1 byte to 64MiB\n\
             t.toml:11:17: mqtt[0].subscribe[0].max_devices: 0 is out of range: expected 1..=100000"
        );
    }

    #[test]
    fn a_shared_subscription_counts_topic_levels_after_its_group() {
        let site = |topic: &str, device: &str| {
            format!(
                "[site]\nid = \"s\"\n[[mqtt]]\nname = \"m\"\nurl = \"mqtt://127.0.0.1:1883\"\n  [[mqtt.subscribe]]\n  topic = \"{topic}\"\n  device = \"{device}\"\n  profile = \"json-dust-monitor\"\n"
            )
        };
        let c = load_ok(&site("$share/hubs/sensors/+/telemetry", "{1}"));
        let s = &c.brokers[0].subscriptions[0];
        assert_eq!(s.topic, "$share/hubs/sensors/+/telemetry");
        assert_eq!(s.filter, "sensors/+/telemetry");
        assert_eq!(
            errors(&site("$share/hubs/sensors/+/telemetry", "{3}")),
            "t.toml:8:12: mqtt[0].subscribe[0].device: topic level 3 does not exist: the topic filter has 3 levels (counted from 0)"
        );
        assert_eq!(
            errors(&site("$share/+/sensors/#", "{1}")),
            "t.toml:7:11: mqtt[0].subscribe[0].topic: \"$share/+/sensors/#\": a shared subscription is \"$share/<group>/<filter>\", the group a name without '+' or '#'"
        );
        assert_eq!(
            errors(&site("$share/hubs/sensors/a#", "{1}")),
            "t.toml:7:11: mqtt[0].subscribe[0].topic: \"sensors/a#\": '#' must be a whole level and the last one"
        );
    }

    #[test]
    fn a_rule_device_glob_that_matches_nothing_is_a_warning() {
        let rule = "[[rule]]\nid = \"r\"\nmetric = \"pm10\"\ndevices = [\"dust-*\", \"dsut-02\"]\nabove = 1\n";
        let fixed = "[[mqtt]]\nname = \"m\"\nurl = \"mqtt://127.0.0.1:1883\"\n  [[mqtt.subscribe]]\n  topic = \"x/air\"\n  device = \"air-01\"\n  profile = \"json-dust-monitor\"\n";
        let c = load_ok(&format!("{RELAY_SITE}{fixed}{rule}"));
        assert_eq!(
            warnings(&c),
            "t.toml:25:11: rule[0].devices: device glob \"dsut-02\" matches no configured device (devices: relay-01, dust-01, air-01)"
        );
        // Ids taken from topics are known only at run time: nothing is said.
        let c = load_ok(&format!(
            "{RELAY_SITE}{}{rule}",
            fixed
                .replace("\"x/air\"", "\"x/+\"")
                .replace("\"air-01\"", "\"{1}\"")
        ));
        assert_eq!(warnings(&c), "");
    }

    #[test]
    fn a_minimal_site_loads_with_defaults() {
        let file = SourceFile::new("t.toml", None, "[site]\nid = \"s\"\n".to_string());
        let c = load_from(
            &file,
            &PathBuf::from("/etc/dg/t.toml"),
            &mut ProfileLoader::new(vec![]),
        )
        .unwrap();
        assert_eq!(c.site.timezone_name, "Asia/Shanghai");
        assert!(c.influx.is_none());
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.store.dir, PathBuf::from("/var/lib/dustgate"));
    }

    #[test]
    fn v2_needs_org_bucket_and_a_token_named_not_written() {
        let e = errors("[site]\nid = \"s\"\n[influx]\nurl = \"http://x:8086\"\n");
        assert!(
            e.contains("t.toml:3:1: influx.token_env: api = \"v2\" needs a token"),
            "{e}"
        );
        assert!(e.contains("influx.org: api = \"v2\" needs `org`"), "{e}");
        assert!(
            e.contains("influx.bucket: api = \"v2\" needs `bucket`"),
            "{e}"
        );
        let e = errors("[site]\nid = \"s\"\n[influx]\nurl = \"ftp://x\"\napi = \"v3\"\n");
        assert!(
            e.contains("t.toml:4:7: influx.url: \"ftp://x\" is not an http:// or https:// URL"),
            "{e}"
        );
        assert!(
            e.contains("t.toml:5:7: influx.api: unknown api \"v3\""),
            "{e}"
        );
    }

    #[test]
    fn gzip_and_a_longer_flush_for_a_remote_influxdb_only() {
        let gzip = |url: &str, extra: &str| {
            let text = format!(
                "[site]\nid = \"s\"\n[influx]\nurl = \"{url}\"\napi = \"v1\"\ndatabase = \"d\"\n{extra}"
            );
            let file = SourceFile::new("t.toml", None, text);
            load_from(
                &file,
                &PathBuf::from("t.toml"),
                &mut ProfileLoader::new(vec![]),
            )
            .unwrap()
            .influx
            .unwrap()
            .gzip
        };
        assert!(!gzip("http://127.0.0.1:8086", ""));
        assert!(!gzip("http://localhost:8086", ""));
        assert!(!gzip("http://[::1]:8086", ""));
        assert!(gzip("https://influx.bureau.example", ""));
        assert!(gzip("http://192.168.1.5:8086", ""));
        assert!(gzip("http://127.0.0.1:8086", "gzip = true"));
        assert!(!gzip("https://influx.bureau.example", "gzip = false"));
        let flush = |url: &str, extra: &str| {
            load_ok(&format!(
                "[site]\nid = \"s\"\n[influx]\nurl = \"{url}\"\napi = \"v1\"\ndatabase = \"d\"\n{extra}"
            ))
            .influx
            .map(|i| i.flush_interval.as_secs_f64())
        };
        assert_eq!(flush("http://127.0.0.1:8086", ""), Some(1.0));
        assert_eq!(flush("https://influx.bureau.example", ""), Some(10.0));
        assert_eq!(
            flush("https://influx.bureau.example", "flush_interval = \"2s\""),
            Some(2.0)
        );
    }

    #[test]
    fn retry_jitter_is_a_share() {
        let site = |extra: &str| {
            format!(
                "[site]\nid = \"s\"\n[influx]\nurl = \"http://x:8086\"\napi = \"v1\"\ndatabase = \"d\"\n{extra}"
            )
        };
        let jitter = |extra: &str| load_ok(&site(extra)).influx.map(|i| i.retry_jitter);
        assert_eq!(jitter(""), Some(0.5));
        assert_eq!(jitter("retry_jitter = 0.0"), Some(0.0));
        assert_eq!(jitter("retry_jitter = 0"), Some(0.0));
        assert_eq!(
            errors(&site("retry_jitter = 1.5")),
            "t.toml:7:16: influx.retry_jitter: 1.5 is not a share: from 0 (no jitter) to 1 (each wait anywhere up to its full length)"
        );
    }

    #[test]
    fn durations_and_transports_are_checked() {
        let e = errors(
            "[site]\nid = \"s\"\n[[modbus]]\nname = \"b\"\ntransport = \"tcp\"\naddress = \"10.0.0.1\"\ninterval = \"100000h\"\nbaud = 9600\n",
        );
        assert!(
            e.contains("t.toml:6:11: modbus[0].address: \"10.0.0.1\" is not host:port"),
            "{e}"
        );
        assert!(
            e.contains("t.toml:7:12: modbus[0].interval: must be at most 24h"),
            "{e}"
        );
        assert!(
            e.contains("modbus[0].baud: `baud` is for transport = \"rtu\""),
            "{e}"
        );
        let e = errors("[site]\nid = \"s\"\n[[modbus]]\nname = \"b\"\ntransport = \"serial\"\n");
        assert!(
            e.contains("t.toml:5:13: modbus[0].transport: unknown transport \"serial\""),
            "{e}"
        );
    }

    const RELAY_SITE: &str = "[site]\nid = \"s\"\n[[modbus]]\nname = \"b\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:502\"\n  [[modbus.device]]\n  id = \"relay-01\"\n  unit = 1\n  profile = \"relay-module-8ch\"\n  [[modbus.device]]\n  id = \"dust-01\"\n  unit = 2\n  profile = \"generic-dust-monitor\"\n";

    #[test]
    fn hj212_listeners_and_stations_are_checked_with_positions() {
        let text = format!(
            "{RELAY_SITE}[[mqtt]]\nname = \"m\"\nurl = \"mqtt://127.0.0.1:1883\"\n  [[mqtt.subscribe]]\n  topic = \"x/air\"\n  device = \"air-01\"\n  profile = \"json-dust-monitor\"\n\
             [[hj212.listen]]\nname = \"monitors\"\nlisten = \"0.0.0.0:6000\"\ncrc = [\"hj212\", \"crc32\"]\nfactors = \"no-such-map\"\n\
             \x20 [[hj212.listen.station]]\n  mn = \"MN-A\"\n  device = \"dust-01\"\n\
             \x20 [[hj212.listen.station]]\n  mn = \"MN-A\"\n  device = \"air-01\"\n\
             \x20 [[hj212.listen.station]]\n  mn = \"MN;B\"\n  device = \"st-03\"\n  password = \"123456\"\n\
             [[hj212.listen]]\nname = \"line\"\nlisten = \"127.0.0.1:6001\"\npath = \"/dev/ttyS1\"\nbaud = 9600\ncrc = []\nunknown = \"maybe\"\n"
        );
        assert_eq!(
            errors(&text),
            "t.toml:24:10: hj212.listen[0].listen: \"0.0.0.0:6000\" is reachable from other machines: HJ 212 sends its password in clear text, so say so with `public = true` (and list the stations' MNs and passwords)\n\
             t.toml:25:7: hj212.listen[0].crc: unknown CRC form \"crc32\": \"hj212\" (the standard's) or \"modbus\" (CRC-16/MODBUS, seen in the field)\n\
             t.toml:26:11: hj212.listen[0].factors: no HJ 212 factor map \"no-such-map\" (looked in the built-in maps); built-in maps: hj212-mgm3, hj212-standard\n\
             t.toml:29:12: hj212.listen[0].station[0].device: device id \"dust-01\" is a Modbus device's (line 12): an HJ 212 station needs an id of its own\n\
             t.toml:31:8: hj212.listen[0].station[1].mn: MN \"MN-A\" is already a station's (line 28)\n\
             t.toml:32:12: hj212.listen[0].station[1].device: device id \"air-01\" is an MQTT device's (line 20): an HJ 212 station needs an id of its own\n\
             t.toml:34:8: hj212.listen[0].station[2].mn: \"MN;B\" holds ';', which separates fields of an HJ 212 frame: no MN can carry it\n\
             t.toml:36:14: hj212.listen[0].station[2].password: secrets never go in the config file: name them with password_env or password_file\n\
             t.toml:40:8: hj212.listen[1].path: give `listen` (a TCP address) or `path` (a serial line), not both\n\
             t.toml:42:7: hj212.listen[1].crc: at least one CRC form: \"hj212\" and/or \"modbus\"\n\
             t.toml:43:11: hj212.listen[1].unknown: unknown policy \"maybe\": \"reject\" (refused, counted) or \"accept\" (device = MN)"
        );
        // Two stations of one device, a listener name twice, a serial line without its baud.
        let e = errors(
            "[site]\nid = \"s\"\n[[hj212.listen]]\nname = \"a\"\nlisten = \"127.0.0.1:8080\"\n  [[hj212.listen.station]]\n  mn = \"M1\"\n  device = \"d\"\n[[hj212.listen]]\nname = \"a\"\npath = \"/dev/ttyS1\"\nidle_timeout = \"0s\"\n  [[hj212.listen.station]]\n  mn = \"M2\"\n  device = \"d\"\n  kind = \"soil\"\n",
        );
        assert_eq!(
            e,
            "t.toml:5:10: hj212.listen[0].listen: \"127.0.0.1:8080\" takes the port of [http].listen (127.0.0.1:8080): give HJ 212 a port of its own\n\
             t.toml:10:8: hj212.listen[1].name: listener name \"a\" is already used at line 4\n\
             t.toml:11:8: hj212.listen[1].baud: a serial line needs its `baud` (such as 9600)\n\
             t.toml:12:16: hj212.listen[1].idle_timeout: must be longer than zero\n\
             t.toml:15:12: hj212.listen[1].station[0].device: device id \"d\" is already a station's (line 8)\n\
             t.toml:16:10: hj212.listen[1].station[0].kind: unknown kind \"soil\": \"air\" or \"water\""
        );
    }

    #[test]
    fn hj212_platforms_are_checked_with_positions_and_take_their_defaults() {
        let text = format!(
            "{RELAY_SITE}[[hj212.upstream]]\nname = \"city\"\naddress = \"platform.example.cn:6653\"\nst = \"39\"\nmn = \"010000A8900016F000169DC0\"\npassword_env = \"HJ212_CITY_PW\"\ndevices = [\"dust-*\"]\n\
             [[hj212.upstream]]\nname = \"city\"\naddress = \"platform.example.cn\"\nversion = \"2019\"\nst = \"039\"\nmn = \"A;B\"\npassword = \"123456\"\nminute = \"7m\"\nrealtime = \"soon\"\nretries = 99\nmin_coverage = 1.5\nwindow = 0\n\
             [[hj212.upstream]]\nname = \"district\"\naddress = \"platform.example.cn:6653\"\nst = \"22\"\nmn = \"010000A8900016F000169DC0\"\npassword_file = \"pw\"\nrealtime = \"off\"\nminute = \"off\"\nhourly = false\ndaily = false\ndevices = [\"nothing-*\"]\nsm4_length = \"both\"\n"
        );
        assert_eq!(
            errors(&text),
            "t.toml:22:1: hj212.upstream[1].password_env: a platform needs the password it issued: password_env = \"VAR\" or password_file = \"path\"\n\
             t.toml:23:8: hj212.upstream[1].name: platform name \"city\" is already used at line 16\n\
             t.toml:24:11: hj212.upstream[1].address: \"platform.example.cn\" is not host:port such as \"platform.example.cn:6653\"\n\
             t.toml:25:11: hj212.upstream[1].version: unknown HJ 212 edition \"2019\": \"2017\" or \"2025\"\n\
             t.toml:26:6: hj212.upstream[1].st: \"039\" is not a system code: two digits, such as \"39\" (construction dust) or \"22\" (air quality)\n\
             t.toml:27:6: hj212.upstream[1].mn: \"A;B\" holds ';', which separates fields of an HJ 212 frame: no MN can carry it\n\
             t.toml:28:12: hj212.upstream[1].password: secrets never go in the config file: name them with password_env or password_file\n\
             t.toml:29:10: hj212.upstream[1].minute: minute values are every whole number of minutes that divides an hour (1m 2m 3m 4m 5m 6m 10m 12m 15m 20m 30m 60m), or \"off\"\n\
             t.toml:30:12: hj212.upstream[1].realtime: invalid duration \"soon\": write it like \"500ms\", \"10s\", \"5m\", \"1h 30m\" or \"7d\", or \"off\"\n\
             t.toml:31:11: hj212.upstream[1].retries: 99 is out of range: expected 0..=20\n\
             t.toml:32:16: hj212.upstream[1].min_coverage: 1.5 is not a share: from 0 to 1 (0.75: three readings of four)\n\
             t.toml:33:10: hj212.upstream[1].window: 0 is out of range: expected 1..=64\n\
             t.toml:34:1: hj212.upstream[2].realtime: realtime and minute are \"off\" and hourly and daily false: this platform would get nothing\n\
             t.toml:38:6: hj212.upstream[2].mn: platform platform.example.cn:6653 already gets MN \"010000A8900016F000169DC0\" (line 19): its data would be counted twice\n\
             t.toml:45:14: hj212.upstream[2].sm4_length: `sm4_length` is HJ 212-2025's: set version = \"2025\" (the platform must speak it)\n\
             t.toml:45:14: hj212.upstream[2].sm4_length: unknown length convention \"both\": \"plaintext\" (the standard's example) or \"transmitted\""
        );
        let c = load_ok(&format!(
            "{RELAY_SITE}[[hj212.upstream]]\nname = \"city\"\naddress = \"platform.example.cn:6653\"\nst = \"39\"\nmn = \"010000A8900016F000169DC0\"\npassword_env = \"HJ212_CITY_PW\"\ndevices = [\"dust-*\", \"wind-*\"]\nrealtime = \"10s\"\n\
             [[hj212.upstream]]\nname = \"district\"\naddress = \"10.0.0.9:6653\"\nversion = \"2025\"\nst = \"22\"\nmn = \"88888880000001\"\npassword_file = \"pw\"\nminute = \"5m\"\nack = false\nkeep = \"2d\"\nfactors = \"hj212-mgm3\"\n"
        ));
        assert_eq!(
            warnings(&c),
            "t.toml:21:11: hj212.upstream[0].devices: device glob \"wind-*\" matches no configured device (devices: relay-01, dust-01)\n\
             t.toml:22:12: hj212.upstream[0].realtime: real-time values every 10s: the standard's default is 30 s (HJ 212-2017 §6.6.2); a platform may count the extra frames against the site"
        );
        let (a, b) = (&c.hj212.upstreams[0], &c.hj212.upstreams[1]);
        assert_eq!(
            (a.version, a.minute, a.hourly, a.daily, a.ack),
            (upstream::UplinkVersion::V2017, Some(10), true, true, true)
        );
        assert_eq!(a.realtime, Some(std::time::Duration::from_secs(10)));
        assert_eq!((a.timeout.as_secs(), a.retries, a.window), (10, 3, 1));
        assert_eq!(
            (a.keep.as_secs(), a.min_coverage, a.grace.as_secs()),
            (7 * 86_400, 0.75, 30)
        );
        assert_eq!(a.factors.name, "hj212-standard");
        assert!(a.takes("dust-01") && !a.takes("relay-01"));
        assert_eq!(a.password, Secret::Env("HJ212_CITY_PW".into()));
        assert_eq!(
            (b.version, b.minute, b.ack),
            (upstream::UplinkVersion::V2025, Some(5), false)
        );
        assert_eq!(b.realtime, Some(std::time::Duration::from_secs(60)));
        assert_eq!(b.keep.as_secs(), 2 * 86_400);
        assert_eq!(b.factors.name, "hj212-mgm3");
        assert!(b.takes("relay-01"));
        assert_eq!(b.password, Secret::File(PathBuf::from("pw")));
    }

    #[test]
    fn a_bureau_hub_loads_with_defaults_and_named_maps() {
        let c = load_ok(
            "[site]\nid = \"hub\"\n[[hj212.listen]]\nname = \"bureau\"\nlisten = \"0.0.0.0:6653\"\npublic = true\ncrc = [\"hj212\", \"modbus\", \"hj212\"]\nfactors = \"hj212-mgm3\"\nset_time = true\n  [[hj212.listen.station]]\n  mn = \"010000A8900016F000169DC0\"\n  device = \"dust-03\"\n  site = \"cd-jj-0018\"\n  password_env = \"HJ212_PW_03\"\n  sm4_key_file = \"keys/03.sm4\"\n  [[hj212.listen.station]]\n  mn = \"88888880000001\"\n  device = \"water-01\"\n  factors = \"hj212-standard\"\n  kind = \"water\"\n[[rule]]\nid = \"r\"\nmetric = \"pm10\"\ndevices = [\"dust-03\"]\nabove = 150\n",
        );
        assert_eq!(warnings(&c), "");
        let l = &c.hj212.listeners[0];
        assert_eq!(
            l.endpoint,
            Hj212Endpoint::Tcp {
                address: "0.0.0.0:6653".parse().unwrap(),
                public: true
            }
        );
        assert_eq!(l.crc, [CrcForm::Hj212, CrcForm::Modbus]);
        assert_eq!(l.unknown, UnknownMn::Reject);
        assert_eq!(l.max_connections, 2048);
        assert_eq!(l.idle_timeout, std::time::Duration::from_secs(300));
        assert_eq!(l.max_frame_rate, 10.0);
        assert_eq!(l.max_buffer, 64 << 10);
        assert_eq!(l.max_drift, std::time::Duration::from_secs(300));
        assert_eq!(l.flag_alert_after, std::time::Duration::from_secs(1800));
        assert!(l.set_time);
        let (a, w) = (&l.stations[0], &l.stations[1]);
        assert_eq!(
            (a.device.as_str(), a.site.as_str()),
            ("dust-03", "cd-jj-0018")
        );
        assert_eq!(a.factors.name, "hj212-mgm3");
        assert_eq!(a.factors.lookup("a34002").unwrap().factor, 1000.0);
        assert_eq!(a.password, Some(Secret::Env("HJ212_PW_03".into())));
        assert_eq!(a.sm4_key, Some(Secret::File(PathBuf::from("keys/03.sm4"))));
        assert_eq!(a.kind, None);
        assert_eq!((w.site.as_str(), w.kind), ("hub", Some(StationKind::Water)));
        assert_eq!(w.factors.name, "hj212-standard");
        assert!(w.password.is_none());
        let maps: Vec<&str> = c
            .hj212
            .factor_maps()
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(maps, ["hj212-mgm3", "hj212-standard"]);
        assert_eq!(
            l.station("88888880000001").map(|s| s.device.as_str()),
            Some("water-01")
        );
        // A serial line.
        let c = load_ok(
            "[site]\nid = \"s\"\n[[hj212.listen]]\nname = \"box\"\npath = \"/dev/ttyS1\"\nbaud = 9600\nunknown = \"accept\"\n",
        );
        let l = &c.hj212.listeners[0];
        assert_eq!(
            l.endpoint,
            Hj212Endpoint::Serial {
                path: "/dev/ttyS1".into(),
                baud: 9600
            }
        );
        assert_eq!(
            (l.unknown, l.factors.name.as_str()),
            (UnknownMn::Accept, "hj212-standard")
        );
        // A platform without its required keys: each named.
        let e = errors("[site]\nid = \"s\"\n[[hj212.upstream]]\nname = \"city\"\n");
        assert_eq!(
            e,
            "t.toml:3:1: hj212.upstream[0].address: missing required key `address` in [hj212.upstream[0]]\n\
             t.toml:3:1: hj212.upstream[0].mn: missing required key `mn` in [hj212.upstream[0]]\n\
             t.toml:3:1: hj212.upstream[0].password_env: a platform needs the password it issued: password_env = \"VAR\" or password_file = \"path\"\n\
             t.toml:3:1: hj212.upstream[0].st: missing required key `st` in [hj212.upstream[0]]"
        );
    }

    #[test]
    fn actuators_switch_only_writable_coils_of_known_devices() {
        let e = errors(&format!(
            "{RELAY_SITE}[[actuator]]\nid = \"a\"\ndevice = \"dust-01\"\ncoil = \"pm10\"\n[[actuator]]\nid = \"b\"\ndevice = \"nope\"\ncoil = \"x\"\n[[actuator]]\nid = \"c\"\ndevice = \"relay-01\"\ncoil = \"fog_cannon_on\"\nmin_on = \"1h\"\nmax_on = \"10m\"\nsafe_state = \"maybe\"\n[[rule]]\nid = \"r\"\nmetric = \"pm10\"\nabove = 1\nactuate = \"ghost\"\n"
        ));
        assert!(
            e.contains("t.toml:18:8: actuator[0].coil: \"pm10\" of device \"dust-01\" is not a writable coil; its profile marks these writable: none"),
            "{e}"
        );
        assert!(
            e.contains("t.toml:21:10: actuator[1].device: no [[modbus.device]] with id \"nope\""),
            "{e}"
        );
        assert!(
            e.contains("actuator[2].min_on: min_on is longer than max_on"),
            "{e}"
        );
        assert!(
            e.contains("actuator[2].safe_state: unknown state \"maybe\""),
            "{e}"
        );
        assert!(
            e.contains("t.toml:30:1: rule: rule \"r\" actuates \"ghost\", but there is no [[actuator]] with that id"),
            "{e}"
        );
    }

    #[test]
    fn compliance_parameters_are_checked() {
        let e = errors(
            "[site]\nid = \"s\"\n[compliance]\nwash_min = \"20m\"\nwash_lookback = \"10m\"\nactivity = [\"7:00-25:00\"]\npaved_percent = 120\npaved_date = \"yesterday\"\nsevere = 1\n",
        );
        assert!(
            e.contains("t.toml:4:12: compliance.wash_min: wash_min is longer than wash_lookback"),
            "{e}"
        );
        assert!(e.contains("t.toml:6:12: compliance.activity:"), "{e}");
        assert!(
            e.contains("t.toml:7:17: compliance.paved_percent: a share from 0 to 100"),
            "{e}"
        );
        assert!(
            e.contains("t.toml:8:14: compliance.paved_date: \"yesterday\" is not a date"),
            "{e}"
        );
        assert!(e.contains("t.toml:9:1: compliance.severe"), "{e}");
        let ok = errors("[site]\nid = \"s\"\n[compliance]\nactivity = [\"07:00-19:00\"]\n");
        assert_eq!(ok, "");
    }

    #[test]
    fn secrets_of_control_are_named_not_written() {
        let e = errors("[site]\nid = \"s\"\n[control]\ntoken = \"abc\"\n");
        assert!(
            e.contains("t.toml:4:9: control.token: secrets never go in the config file"),
            "{e}"
        );
        assert!(!e.contains("abc"), "{e}");
    }

    #[test]
    fn reserved_tags_and_syntax_errors() {
        let e = errors("[site]\nid = \"s\"\ntags = { site = \"x\" }\n");
        assert!(
            e.contains("site.tags.site: tag \"site\" is set by dustgate itself"),
            "{e}"
        );
        let e = errors("[site]\nid = \"s\"\nname = \"unterminated\n");
        assert!(e.contains("t.toml:3:"), "{e}");
        assert!(e.contains("TOML syntax"), "{e}");
    }
}
