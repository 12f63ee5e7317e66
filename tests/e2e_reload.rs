//! `dustgate run` reloads its config on SIGHUP (issue 14 item 2), with a real pymodbus dust
//! monitor and InfluxDB:
//!
//! - a changed threshold takes effect: a rule that did not fire opens once its limit is lowered;
//! - an open alert of a rule the reload did not change stays open with its id, and InfluxDB's
//!   `alert` measurement holds one "open" of it and no "closed";
//! - the Modbus bus keeps polling on its connection when only rules change, and is started again
//!   when its own settings change;
//! - a webhook added by a reload receives the alerts opened after it;
//! - a broken file changes nothing: every error is logged with file:line:col, the config's
//!   hash stays, the alerts stay;
//! - `/api/status` shows the hash (as `sha256sum` prints it) and the reloads.

mod common;

use std::path::Path;
use std::time::Duration;

use common::site::{Gateway, dust_monitor_unit, influx_v1, metric_value};
use common::webhook::Receiver;
use common::{Influx1, ModbusSim, eventually, free_port, http_get_blocking, scratch_dir};
use serde_json::Value;

fn site_toml(
    influx: &Influx1,
    sim_port: u16,
    http: u16,
    pm10_above: u32,
    interval: &str,
) -> String {
    format!(
        r#"[site]
id = "reload-site"
health_interval = "1s"

{}
[store]
dir = "store"
commit_interval = "50ms"

[http]
listen = "127.0.0.1:{http}"

[[modbus]]
name = "tcp"
transport = "tcp"
address = "127.0.0.1:{sim_port}"
interval = "{interval}"

  [[modbus.device]]
  id = "dust-01"
  unit = 1
  profile = "generic-dust-monitor"

[[rule]]
id = "pm25-high"
metric = "pm25"
above = 30
severity = "warning"
title = "PM2.5超标"

[[rule]]
id = "pm10-high"
metric = "pm10"
above = {pm10_above}
severity = "warning"
title = "PM10超标"
"#,
        influx_v1(&influx.url(), "reload")
    )
}

fn status(http: u16) -> Value {
    let (code, body) = http_get_blocking(http, "/api/status").expect("GET /api/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status JSON")
}

/// rule id → alert id of the alerts open now.
fn open_alerts(http: u16) -> Vec<(String, String)> {
    let Some((200, body)) = http_get_blocking(http, "/api/alerts?state=open") else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).expect("alerts JSON");
    let list = v.as_array().cloned().unwrap_or_default();
    let mut out: Vec<(String, String)> = list
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap_or_default().to_string(),
                a["alert_id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn sha256sum(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("running sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_threshold_keeps_open_alerts_and_refuses_a_broken_file() {
    let influx = Influx1::start();
    influx.create_db("reload").await;
    let (spec, _) = dust_monitor_unit(1); // pm25 35, pm10 80
    let sim = ModbusSim::tcp(&serde_json::json!({ "devices": [spec] }));
    let dir = scratch_dir("e2e-reload");
    let http = free_port();
    let mut gw = Gateway::start(&dir, &site_toml(&influx, sim.port(), http, 150, "1s"), &[]);
    gw.wait_started();
    let file = dir.join("site.toml");

    // pm25 35 > 30 opens; pm10 80 is under 150.
    let first = eventually("the pm25 alert open", Duration::from_secs(30), || async {
        let open = open_alerts(http);
        (open.len() == 1 && open[0].0 == "pm25-high").then_some(open)
    })
    .await;
    let pm25_id = first[0].1.clone();
    let st = status(http);
    assert_eq!(st["config"]["sha256"], sha256sum(&file).as_str(), "{st}");
    assert_eq!(st["config"]["reloads"], 0);

    // The pm10 limit lowered to 60: it opens; the pm25 alert stays open with its id; the bus
    // keeps its connection.
    let polls_before = metric_value(http, "dustgate_readings_total").unwrap_or(0.0);
    std::fs::write(&file, site_toml(&influx, sim.port(), http, 60, "1s")).expect("new site.toml");
    gw.proc.signal("HUP");
    let open = eventually(
        "the pm10 alert open after the reload",
        Duration::from_secs(30),
        || async {
            let open = open_alerts(http);
            (open.len() == 2).then_some(open)
        },
    )
    .await;
    assert_eq!(
        open[1],
        ("pm25-high".to_string(), pm25_id.clone()),
        "{open:?}"
    );
    assert_eq!(open[0].0, "pm10-high");
    let pm10_id = open[0].1.clone();
    let st = status(http);
    assert_eq!(st["config"]["sha256"], sha256sum(&file).as_str(), "{st}");
    assert_eq!(st["config"]["reloads"], 1, "{st}");
    let log = gw.log();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert_eq!(
        count(&log, "bus started"),
        1,
        "a rules-only reload kept the bus\n{log}"
    );
    assert!(
        metric_value(http, "dustgate_readings_total").unwrap_or(0.0) > polls_before,
        "polling went on"
    );

    // A broken file: two errors, both logged with their positions; nothing changes.
    let good_sha = sha256sum(&file);
    let broken = site_toml(&influx, sim.port(), http, 60, "1s")
        .replace("above = 30", "above = \"thirty\"")
        .replace(
            "severity = \"warning\"\ntitle = \"PM10超标\"",
            "severity = \"loud\"\ntitle = \"PM10超标\"",
        );
    std::fs::write(&file, &broken).expect("broken site.toml");
    gw.proc.signal("HUP");
    gw.wait_log("reload refused", Duration::from_secs(20));
    let log = gw.log();
    let line_of = |needle: &str| {
        broken
            .lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
    };
    for needle in ["above = \"thirty\"", "severity = \"loud\""] {
        let line = line_of(needle).expect("the broken line");
        assert!(
            log.contains(&format!("site.toml:{line}:")),
            "the error at line {line} ({needle}) is logged with its position\n{log}"
        );
    }
    let st = status(http);
    assert_eq!(st["config"]["sha256"], good_sha.as_str(), "{st}");
    assert_eq!(st["config"]["reloads_failed"], 1, "{st}");
    let errors = st["config"]["last_errors"]
        .as_array()
        .map_or(0, |a| a.len());
    assert!(errors >= 2, "both errors listed: {st}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        open_alerts(http),
        vec![
            ("pm10-high".to_string(), pm10_id.clone()),
            ("pm25-high".to_string(), pm25_id.clone())
        ]
    );

    // The bus's own settings change, a webhook and a TSP rule are added: the bus is started
    // again, the webhook gets the new rule's alert (tsp 136 > 100); the open alerts stay.
    let hook = Receiver::start("ok");
    let with_hook = format!(
        "{}\n[[rule]]\nid = \"tsp-high\"\nmetric = \"tsp\"\nabove = 100\nseverity = \"warning\"\n\n[alerts]\n  [[alerts.webhook]]\n  name = \"crew\"\n  url = \"{}\"\n  format = \"generic\"\n",
        site_toml(&influx, sim.port(), http, 60, "500ms"),
        hook.url("/hook")
    );
    std::fs::write(&file, with_hook).expect("site.toml");
    gw.proc.signal("HUP");
    eventually("the bus started again", Duration::from_secs(20), || async {
        (count(&gw.log(), "bus started") == 2).then_some(())
    })
    .await;
    let delivered = eventually(
        "the tsp alert at the new webhook",
        Duration::from_secs(30),
        || async {
            let r = hook.requests();
            r.iter()
                .any(|r| r.json()["rule"] == "tsp-high" && r.json()["state"] == "open")
                .then_some(r)
        },
    )
    .await;
    assert!(
        delivered.iter().all(|r| r.json()["rule"] == "tsp-high"),
        "only the new alert goes out (the open ones were announced before): {:?}",
        delivered.iter().map(|r| r.json()).collect::<Vec<_>>()
    );
    assert_eq!(status(http)["config"]["reloads"], 2);
    let open = open_alerts(http);
    assert!(
        open.contains(&("pm10-high".to_string(), pm10_id.clone())),
        "{open:?}"
    );
    assert!(
        open.contains(&("pm25-high".to_string(), pm25_id.clone())),
        "{open:?}"
    );
    assert_eq!(open.len(), 3, "{open:?}");

    // InfluxDB: the pm25 alert opened once and never closed across the three reloads.
    let rows = eventually(
        "alert rows in InfluxDB",
        Duration::from_secs(30),
        || async {
            let rows = influx
                .query_rows(
                    "reload",
                    "SELECT alert_id, \"state\" FROM alert WHERE \"rule\" = 'pm25-high'",
                )
                .await;
            (!rows.is_empty()).then_some(rows)
        },
    )
    .await;
    let states: Vec<&Value> = rows.iter().map(|r| &r[2]).collect();
    assert_eq!(states, vec!["open"], "{rows:?}");
    assert_eq!(rows[0][1], pm25_id.as_str());
    eprintln!(
        "reload: threshold applied, pm25 alert {pm25_id} kept open through 3 reloads, broken file refused with 2 positioned errors"
    );
    gw.proc.stop();
}

/// The readiness protocol the unit's `Type=notify` and `WatchdogSec=` rely on, on a socket the
/// test binds as systemd would: READY=1 once running, WATCHDOG=1 at half the period asked for,
/// RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1 at SIGTERM.
#[test]
fn systemd_hears_ready_watchdog_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = scratch_dir("e2e-notify");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("the notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout");
    let http = free_port();
    let config = common::site::write_site(
        &dir,
        &format!(
            "[site]\nid = \"notify\"\n\n[store]\ndir = \"store\"\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n"
        ),
        &[],
    );
    let stderr = std::fs::File::create(dir.join("dustgate.stderr.log")).expect("log file");
    let mut child = std::process::Command::new(Gateway::binary())
        .args(["run", "--config"])
        .arg(&config)
        .current_dir(&dir)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdin(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("dustgate run");
    let pid = child.id().to_string();
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = sock.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no notification in 20 s ({e}); log:\n{}",
                std::fs::read_to_string(dir.join("dustgate.stderr.log")).unwrap_or_default()
            )
        });
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let mut seen = Vec::new();
    // Ready, then watchdog pings (every 0.5 s).
    let first = next();
    assert!(first.starts_with("READY=1"), "{first}");
    let mut pings = 0;
    while pings < 2 {
        let m = next();
        assert_eq!(m, "WATCHDOG=1");
        pings += 1;
    }
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args(["-s", sig, &pid])
            .status()
            .expect("kill");
    };
    signal("HUP");
    // Pings may interleave; the order of the others is the protocol.
    while seen.len() < 2 {
        let m = next();
        if m != "WATCHDOG=1" {
            seen.push(m.lines().next().unwrap_or_default().to_string());
        }
    }
    assert_eq!(seen, ["RELOADING=1", "READY=1"]);
    signal("TERM");
    let stopping = loop {
        let m = next();
        if m != "WATCHDOG=1" {
            break m;
        }
    };
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    let status = child.wait().expect("exit");
    assert!(status.success(), "{status}");
}
