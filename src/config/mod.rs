//! Configuration: `site.toml` and the device profiles it names.
//!
//! Loading has two stages, after Vector's validate/build split: the TOML tree is read into raw
//! types (`raw.rs`: shape, types, unknown keys), then validated into typed values
//! (`validate.rs`: ranges, references, duplicates, overlaps). Every problem in every file is
//! reported at once, each with file:line:column and key path.

pub mod json_profile;
pub mod linkage;
pub mod metrics;
pub mod profile;
pub mod raw;
pub mod reader;
pub mod rules;
pub mod source;
pub mod types;
pub mod validate;

use std::path::Path;

pub use source::{Diagnostic, Diagnostics, SourceFile};
pub use types::*;

use profile::ProfileLoader;
use reader::{Cx, TableReader, parse_document};

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
    file: &std::sync::Arc<SourceFile>,
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
            let raw = raw::read(&mut cx, &mut root);
            root.finish(&mut cx);
            validate::validate(&mut cx, raw, path, profiles, &mut packs_for(path))
        })
    };
    diags.sort();
    match config {
        Some(c) if diags.is_empty() => Ok(c),
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
    fn gzip_is_off_for_a_local_influxdb_and_on_otherwise() {
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
