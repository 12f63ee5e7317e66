//! Alerts end to end on real peers: a pymodbus dust monitor whose PM10 is raised and lowered →
//! `dustgate run` → an open then a closed alert on Mosquitto, at webhook receivers started by
//! the test (generic JSON, and DingTalk with its signature), and in InfluxDB's `alert`
//! measurement; a restart while an alert is open; a webhook that fails for a while.

mod common;

use std::time::Duration;

use common::mqtt::{Mosquitto, Subscriber};
use common::site::{Gateway, dust_monitor_unit, influx_v1};
use common::webhook::Receiver;
use common::{Influx1, ModbusSim, eventually, scratch_dir};
use serde_json::{Value, json};

const SECRET: &str = "SECtest-signing-secret";

fn site(influx: &Influx1, broker: &Mosquitto, sim_port: u16, generic_url: &str) -> String {
    format!(
        r#"[site]
id = "alerts-site"
name = "测试工地"
health_interval = "1s"

{}
[store]
dir = "store"
commit_interval = "50ms"

[[mqtt]]
name = "b"
url = "{}"

  [[mqtt.subscribe]]
  topic = "unused/+/telemetry"
  device = "{{1}}"
  profile = "json-dust-monitor"

[[modbus]]
name = "tcp"
transport = "tcp"
address = "127.0.0.1:{sim_port}"
interval = "1s"

  [[modbus.device]]
  id = "dust-01"
  unit = 1
  profile = "generic-dust-monitor"

[[rule]]
id = "pm10-high"
metric = "pm10"
above = 150
clear = 120
severity = "warning"
title = "PM10超标"
title_en = "PM10 over the limit"
standard = "TEST 1-2026"

[alerts]
locale = "zh-CN"
  [alerts.mqtt]
  broker = "b"
  topic = "dustgate/{{site}}/alerts"
  [[alerts.webhook]]
  name = "generic"
  url = "{generic_url}"
  format = "generic"
  [[alerts.webhook]]
  name = "dingtalk"
  url_env = "E2E_DINGTALK_URL"
  format = "dingtalk"
  secret_env = "E2E_DINGTALK_SECRET"
"#,
        influx_v1(&influx.url(), "alerts"),
        broker.url_plain()
    )
}

fn set_pm10(sim: &mut ModbusSim, pm10: u16) {
    let (mut spec, _) = dust_monitor_unit(1);
    spec["holding"]["1"] = json!(pm10);
    sim.update(&json!({ "devices": [spec] }));
}

/// The alerts (JSON) on the MQTT topic, for the rule, in order.
fn mqtt_alerts(sub: &Subscriber) -> Vec<Value> {
    sub.messages()
        .iter()
        .filter_map(|m| serde_json::from_slice::<Value>(&m.payload).ok())
        .filter(|v| v["rule"] == "pm10-high" && v["reminder"] != true)
        .collect()
}

fn states(v: &[Value]) -> Vec<String> {
    v.iter()
        .map(|x| x["state"].as_str().unwrap_or("").to_string())
        .collect()
}

/// HMAC-SHA256, base64 — computed here independently of the gateway's own code.
fn dingtalk_sign(secret: &str, ts: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mac = ring::hmac::sign(&key, format!("{ts}\n{secret}").as_bytes());
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in mac.as_ref().chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

struct Setup {
    influx: Influx1,
    _broker: Mosquitto,
    sim: ModbusSim,
    sub: Subscriber,
    generic: Receiver,
    dingtalk: Receiver,
    gw: Gateway,
}

async fn setup(name: &str) -> Setup {
    let influx = Influx1::start();
    influx.create_db("alerts").await;
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port_plain(), "dustgate/alerts-site/alerts", 1);
    let (spec, _) = dust_monitor_unit(1);
    let sim = ModbusSim::tcp(&json!({ "devices": [spec] }));
    let generic = Receiver::start("ok");
    let dingtalk = Receiver::start(r#"{"errcode":0,"errmsg":"ok"}"#);
    // SAFETY: set before the child starts; the tests of this binary set the same values.
    unsafe {
        std::env::set_var(
            "E2E_DINGTALK_URL",
            dingtalk.url("/robot/send?access_token=tok123"),
        );
        std::env::set_var("E2E_DINGTALK_SECRET", SECRET);
    }
    let dir = scratch_dir(name);
    let mut gw = Gateway::start(
        &dir,
        &site(&influx, &broker, sim.port(), &generic.url("/hook")),
        &[],
    );
    gw.wait_started();
    Setup {
        influx,
        _broker: broker,
        sim,
        sub,
        generic,
        dingtalk,
        gw,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pm10_raised_then_lowered_opens_and_closes_an_alert_everywhere_once() {
    let mut s = setup("alerts-e2e").await;
    set_pm10(&mut s.sim, 300);
    let opened = eventually(
        "the open alert on MQTT",
        Duration::from_secs(30),
        || async {
            let a = mqtt_alerts(&s.sub);
            (!a.is_empty()).then(|| a[0].clone())
        },
    )
    .await;
    assert_eq!(opened["state"], "open");
    assert_eq!(opened["site"], "alerts-site");
    assert_eq!(opened["device"], "dust-01");
    assert_eq!(opened["value"].as_f64(), Some(300.0));
    assert_eq!(opened["threshold"].as_f64(), Some(150.0));
    assert_eq!(opened["standard"], "TEST 1-2026");
    let message = opened["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("【测试工地】dust-01 PM10超标：实测值 300 µg/m³，限值 150 µg/m³，自 "),
        "{message}"
    );
    assert!(
        opened["since"]
            .as_str()
            .unwrap_or_default()
            .ends_with("+08:00")
    );

    set_pm10(&mut s.sim, 50);
    eventually(
        "the closed alert on MQTT",
        Duration::from_secs(30),
        || async { (states(&mqtt_alerts(&s.sub)) == ["open", "closed"]).then_some(()) },
    )
    .await;
    let all = mqtt_alerts(&s.sub);
    assert_eq!(all[1]["alert_id"], opened["alert_id"]);

    // The generic webhook got the same two, as the contract's JSON.
    let generic = eventually(
        "both alerts at the generic webhook",
        Duration::from_secs(30),
        || async {
            let r: Vec<Value> = s
                .generic
                .requests()
                .iter()
                .map(|r| r.json())
                .filter(|v| v["rule"] == "pm10-high")
                .collect();
            (r.len() >= 2).then_some(r)
        },
    )
    .await;
    assert_eq!(states(&generic), ["open", "closed"]);
    assert!(generic.iter().all(|v| v["alert_id"] == opened["alert_id"]));

    // DingTalk: text messages, signed as DingTalk checks them.
    let ding = eventually(
        "both alerts at the DingTalk robot",
        Duration::from_secs(30),
        || async {
            let r = s.dingtalk.requests();
            (r.iter()
                .filter(|r| {
                    r.json()["text"]["content"]
                        .as_str()
                        .is_some_and(|t| t.contains("PM10超标"))
                })
                .count()
                >= 2)
                .then_some(r)
        },
    )
    .await;
    for r in &ding {
        assert_eq!(r.json()["msgtype"], "text");
        assert_eq!(r.query("access_token").as_deref(), Some("tok123"));
        let ts = r.query("timestamp").expect("timestamp");
        assert_eq!(
            r.query("sign").expect("sign"),
            dingtalk_sign(SECRET, &ts),
            "signature of {}",
            r.target
        );
    }
    assert!(ding.iter().any(|r| {
        r.json()["text"]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("已恢复")
    }));

    // InfluxDB's alert measurement: the open and the close, for Grafana's annotations.
    let rows = eventually("alert rows in InfluxDB", Duration::from_secs(30), || async {
        let rows = s
            .influx
            .query_rows("alerts", "SELECT alert_id, \"state\", value, threshold FROM alert WHERE \"rule\" = 'pm10-high'")
            .await;
        (rows.len() >= 2).then_some(rows)
    })
    .await;
    assert_eq!(rows[0][2], json!("open"));
    assert_eq!(rows[0][3].as_f64(), Some(300.0));
    assert_eq!(rows[0][4].as_f64(), Some(150.0));
    assert_eq!(rows[1][2], json!("closed"));
    assert_eq!(rows[0][1], opened["alert_id"]);
    s.gw.proc.stop();
    // Exactly once each on MQTT.
    assert_eq!(states(&mqtt_alerts(&s.sub)), ["open", "closed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_open_does_not_announce_it_again() {
    let mut s = setup("alerts-restart").await;
    set_pm10(&mut s.sim, 300);
    eventually("the open alert", Duration::from_secs(30), || async {
        (states(&mqtt_alerts(&s.sub)) == ["open"]).then_some(())
    })
    .await;
    s.gw.proc.stop();
    s.gw.proc.respawn();
    s.gw.wait_log(
        "alerts still open from before the restart",
        Duration::from_secs(30),
    );
    // Still high for a while after the restart: no second "open".
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(states(&mqtt_alerts(&s.sub)), ["open"]);
    set_pm10(&mut s.sim, 50);
    eventually(
        "the close, with the same id",
        Duration::from_secs(30),
        || async {
            let a = mqtt_alerts(&s.sub);
            (states(&a) == ["open", "closed"] && a[0]["alert_id"] == a[1]["alert_id"]).then_some(())
        },
    )
    .await;
    let opens = s
        .generic
        .requests()
        .iter()
        .filter(|r| r.json()["state"] == "open" && r.json()["rule"] == "pm10-high")
        .count();
    assert_eq!(opens, 1, "the webhook heard of the opening once");
    s.gw.proc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_fails_for_a_while_still_gets_the_alert() {
    let mut s = setup("alerts-failing-hook").await;
    s.generic.set_status(500);
    set_pm10(&mut s.sim, 300);
    eventually(
        "attempts at the failing webhook",
        Duration::from_secs(30),
        || async {
            (s.generic
                .requests()
                .iter()
                .filter(|r| r.json()["rule"] == "pm10-high")
                .count()
                >= 3)
                .then_some(())
        },
    )
    .await;
    let failed_attempts = s.generic.requests().len();
    s.generic.set_status(200);
    eventually(
        "the alert delivered once the webhook is back",
        Duration::from_secs(90),
        || async { (s.generic.requests().len() > failed_attempts).then_some(()) },
    )
    .await;
    let last = s
        .generic
        .requests()
        .last()
        .map(|r| r.json())
        .unwrap_or_default();
    assert_eq!(last["rule"], "pm10-high");
    assert_eq!(last["state"], "open");
    // The gateway's health counts the retries of that output.
    let log = s.gw.log();
    assert!(
        log.contains("write failed; holding points and retrying"),
        "{log}"
    );
    s.gw.proc.stop();
}

/// A broker used only to publish alerts (no `[[mqtt.subscribe]]`) is accepted and delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_subscriptions_publishes_alerts() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port_plain(), "dustgate/pub-only/alerts", 1);
    let (spec, _) = dust_monitor_unit(1);
    let mut sim = ModbusSim::tcp(&json!({ "devices": [spec] }));
    let dir = scratch_dir("alerts-publish-only");
    let site = format!(
        r#"[site]
id = "pub-only"
[store]
dir = "store"
commit_interval = "50ms"
[[mqtt]]
name = "out"
url = "{}"
[[modbus]]
name = "tcp"
transport = "tcp"
address = "127.0.0.1:{}"
interval = "1s"
  [[modbus.device]]
  id = "dust-01"
  unit = 1
  profile = "generic-dust-monitor"
[[rule]]
id = "pm10-high"
metric = "pm10"
above = 150
clear = 120
[alerts.mqtt]
broker = "out"
topic = "dustgate/{{site}}/alerts"
"#,
        broker.url_plain(),
        sim.port()
    );
    let mut gw = Gateway::start(&dir, &site, &[]);
    gw.wait_started();
    set_pm10(&mut sim, 300);
    eventually(
        "the open alert on the topic of a broker with no subscription",
        Duration::from_secs(30),
        || async { (states(&mqtt_alerts(&sub)) == ["open"]).then_some(()) },
    )
    .await;
}
