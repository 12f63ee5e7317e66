//! What a reload changes: two validated configs compared section by section, so the gateway
//! rebuilds what changed in place, restarts only the Modbus buses whose settings changed, and
//! says which changes wait for a restart.
//!
//! Sections are compared through their `Debug` form: the validated types hold no positions
//! (spans stay in the raw layer), so two configs print the same exactly when they mean the
//! same, and no `PartialEq` has to be kept in step across every nested type (profiles, packs,
//! secrets by reference).

use std::fmt::Debug;

use super::{BusConfig, Config};

/// The result of comparing the running config with a new one.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Rules, standards, thresholds, six 100%, actuators, alert wording or devices changed:
    /// the site core is rebuilt, keeping windows, open alerts and compliance counts.
    pub core: bool,
    /// Modbus buses to stop (removed, or changed: they are started again with the new
    /// settings).
    pub buses_stopped: Vec<String>,
    /// Modbus buses to start (new, or changed).
    pub buses_started: Vec<String>,
    /// Alert outputs started again (new or changed settings) or stopped (removed): filled by
    /// the gateway, which holds them.
    pub outputs: Vec<String>,
    /// Changed sections a reload does not apply (their connections, listeners or files are
    /// opened at start): they take effect at the next restart.
    pub need_restart: Vec<&'static str>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        !self.core
            && self.buses_stopped.is_empty()
            && self.buses_started.is_empty()
            && self.outputs.is_empty()
            && self.need_restart.is_empty()
    }
}

fn same<T: Debug + ?Sized>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// A bus and the relay devices on it: a bus whose actuators changed is started again too, so
/// its command channel matches the new linkage.
fn bus_key(cfg: &Config, bus: &BusConfig) -> String {
    let relays: Vec<&str> = cfg
        .actuators
        .iter()
        .filter(|a| bus.devices.iter().any(|d| d.id == a.device))
        .map(|a| a.device.as_str())
        .collect();
    format!("{bus:?} {relays:?}")
}

/// What changes from `old` to `new`.
pub fn compare(old: &Config, new: &Config) -> Changes {
    let mut c = Changes::default();
    let (o, n) = (&old.site, &new.site);
    // The site's identity goes into every series key, its zone into every period: a restart.
    if o.id != n.id
        || o.name != n.name
        || o.permit != n.permit
        || o.tags != n.tags
        || o.timezone_name != n.timezone_name
        || o.health_interval != n.health_interval
    {
        c.need_restart
            .push("[site] id, name, permit, tags, timezone, health_interval");
    }
    for (changed, what) in [
        (!same(&old.influx, &new.influx), "[influx]"),
        (!same(&old.store, &new.store), "[store]"),
        (!same(&old.http, &new.http), "[http]"),
        (!same(&old.brokers, &new.brokers), "[[mqtt]]"),
        (
            !same(&old.hj212, &new.hj212),
            "[[hj212.listen]] / [[hj212.upstream]]",
        ),
        (!same(&old.control, &new.control), "[control]"),
    ] {
        if changed {
            c.need_restart.push(what);
        }
    }
    c.core = !same(&old.rules, &new.rules)
        || !same(&old.packs, &new.packs)
        || o.standards != n.standards
        || o.background != n.background
        || o.max_future != n.max_future
        || old.alerts.locale != new.alerts.locale
        || old.alerts.offline_after != new.alerts.offline_after
        || !same(&old.compliance, &new.compliance)
        || !same(&old.actuators, &new.actuators)
        || !same(&old.buses, &new.buses);
    for b in &old.buses {
        let kept = new
            .buses
            .iter()
            .any(|nb| nb.name == b.name && bus_key(new, nb) == bus_key(old, b));
        if !kept {
            c.buses_stopped.push(b.name.clone());
        }
    }
    for b in &new.buses {
        let kept = old
            .buses
            .iter()
            .any(|ob| ob.name == b.name && bus_key(old, ob) == bus_key(new, b));
        if !kept {
            c.buses_started.push(b.name.clone());
        }
    }
    c
}

/// The config a reload runs: `file`'s, but for the sections a reload does not apply, which
/// stay as `running` has them (they wait for a restart).
pub fn applied(running: &Config, file: &Config) -> Config {
    let mut c = file.clone();
    let (site, old) = (&mut c.site, &running.site);
    site.id = old.id.clone();
    site.name = old.name.clone();
    site.permit = old.permit.clone();
    site.tags = old.tags.clone();
    site.timezone = old.timezone.clone();
    site.timezone_name = old.timezone_name.clone();
    site.health_interval = old.health_interval;
    c.influx = running.influx.clone();
    c.store = running.store.clone();
    c.http = running.http.clone();
    c.brokers = running.brokers.clone();
    c.hj212 = running.hj212.clone();
    c.control = running.control.clone();
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceFile;
    use crate::config::profile::ProfileLoader;
    use std::path::PathBuf;

    fn load(text: &str) -> Config {
        let file = SourceFile::new("t.toml", None, text.to_string());
        let mut profiles = ProfileLoader::new(vec![]);
        match crate::config::load_from(&file, &PathBuf::from("t.toml"), &mut profiles) {
            Ok(c) => c,
            Err(d) => panic!("{d}"),
        }
    }

    const BASE: &str = r#"
[site]
id = "s1"

[[modbus]]
name = "a"
transport = "tcp"
address = "127.0.0.1:1502"
  [[modbus.device]]
  id = "dust-01"
  unit = 1
  profile = "generic-dust-monitor"

[[modbus]]
name = "b"
transport = "tcp"
address = "127.0.0.1:1503"
  [[modbus.device]]
  id = "dust-02"
  unit = 1
  profile = "generic-dust-monitor"

[[rule]]
id = "pm10-high"
metric = "pm10"
above = 150
"#;

    #[test]
    fn the_same_text_with_comments_moved_changes_nothing() {
        let a = load(BASE);
        let b = load(&format!("# a comment\n\n{BASE}\n# another\n"));
        assert!(compare(&a, &b).is_empty(), "{:?}", compare(&a, &b));
    }

    #[test]
    fn a_threshold_rebuilds_the_core_and_restarts_no_bus() {
        let a = load(BASE);
        let b = load(&BASE.replace("above = 150", "above = 80"));
        assert_eq!(
            compare(&a, &b),
            Changes {
                core: true,
                ..Changes::default()
            }
        );
    }

    #[test]
    fn a_device_change_restarts_its_bus_only() {
        let a = load(BASE);
        let b = load(&BASE.replace(
            "address = \"127.0.0.1:1503\"",
            "address = \"127.0.0.1:1504\"",
        ));
        let c = compare(&a, &b);
        assert!(c.core);
        assert_eq!(c.buses_stopped, vec!["b"]);
        assert_eq!(c.buses_started, vec!["b"]);
        assert!(c.need_restart.is_empty());
    }

    #[test]
    fn a_new_bus_starts_and_a_removed_one_stops() {
        let a = load(BASE);
        let cut = BASE.find("[[modbus]]\nname = \"b\"").unwrap_or(0);
        let rules = BASE.find("[[rule]]").unwrap_or(0);
        let without_b = format!("{}{}", &BASE[..cut], &BASE[rules..]);
        let b = load(&without_b);
        let c = compare(&a, &b);
        assert_eq!(c.buses_stopped, vec!["b"]);
        assert!(c.buses_started.is_empty());
        let back = compare(&b, &a);
        assert_eq!(back.buses_started, vec!["b"]);
        assert!(back.buses_stopped.is_empty());
    }

    #[test]
    fn the_http_listener_and_the_site_id_wait_for_a_restart() {
        let a = load(BASE);
        let b = load(&format!(
            "{}\n[http]\nlisten = \"127.0.0.1:9999\"\n",
            BASE.replace("id = \"s1\"", "id = \"s2\"")
        ));
        let c = compare(&a, &b);
        assert_eq!(
            c.need_restart,
            vec![
                "[site] id, name, permit, tags, timezone, health_interval",
                "[http]"
            ]
        );
        assert!(!c.core);
        // Applied, they stay as they run, and are still pending against the file.
        let running = applied(&a, &b);
        assert!(compare(&a, &running).is_empty());
        assert_eq!(compare(&running, &b).need_restart, c.need_restart);
    }
}
