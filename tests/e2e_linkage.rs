//! Dust-suppression linkage end to end on real peers: a pymodbus dust monitor on one bus, a
//! pymodbus relay module on another, `dustgate run` between them, Mosquitto for alerts and
//! override commands, InfluxDB for the `equipment` points. The relay's coils are read straight
//! from the simulator by the test (its own Modbus client), not through the gateway.

mod common;

/// The MQTT command topic's shared secret.
const HMAC_KEY: &str = "e2e-hmac-key";

/// A command as a console would send it: stamped `at` (ms) and signed with the shared secret.
/// The HMAC is computed by the openssl CLI, independently of dustgate's code.
fn signed(mut cmd: serde_json::Value, at_ms: i64) -> String {
    cmd["at"] = serde_json::json!(at_ms);
    let text = |k: &str| match &cmd[k] {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let msg = format!(
        "{}|{}|{}|{}|{}",
        text("at"),
        text("actuator"),
        text("state"),
        text("for"),
        text("by")
    );
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", HMAC_KEY])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().expect("stdin").write_all(msg.as_bytes())?;
            c.wait_with_output()
        })
        .expect("openssl dgst runs (scripts/test installs openssl)");
    let hex = String::from_utf8_lossy(&out.stdout)
        .rsplit(' ')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    cmd["sig"] = serde_json::json!(hex);
    cmd.to_string()
}

use std::time::Duration;

use common::mqtt::{Mosquitto, Subscriber, publish};
use common::site::{Gateway, dust_monitor_unit, influx_v1};
use common::{Influx1, ModbusSim, eventually, http_client, scratch_dir};
use serde_json::{Value, json};
use tokio_modbus::client::Reader;
use tokio_modbus::slave::Slave;

const TOKEN: &str = "e2e-control-token-7f3a";
const DB: &str = "linkage";

fn site(influx: &Influx1, broker: &Mosquitto, sensors: u16, relays: u16, http: u16) -> String {
    format!(
        r#"[site]
id = "link-site"
name = "联动测试工地"
health_interval = "1s"

{}
[store]
dir = "store"
commit_interval = "50ms"

[http]
listen = "127.0.0.1:{http}"

[[mqtt]]
name = "b"
url = "{}"

  [[mqtt.subscribe]]
  topic = "unused/+/telemetry"
  device = "{{1}}"
  profile = "json-dust-monitor"

[[modbus]]
name = "sensors"
transport = "tcp"
address = "127.0.0.1:{sensors}"
interval = "1s"

  [[modbus.device]]
  id = "dust-01"
  unit = 1
  profile = "generic-dust-monitor"

[[modbus]]
name = "relays"
transport = "tcp"
address = "127.0.0.1:{relays}"
interval = "1s"

  [[modbus.device]]
  id = "relay-01"
  unit = 1
  profile = "relay-module-8ch"

[[rule]]
id = "pm10-high"
metric = "pm10"
above = 150
clear = 120
severity = "warning"
actuate = "mist-cannons"

[[rule]]
id = "pm25-high"
metric = "pm25"
above = 100
severity = "warning"
actuate = "spray-line"

[[actuator]]
id = "mist-cannons"
device = "relay-01"
coil = "fog_cannon_on"
min_on = "5s"
min_off = "1s"
max_on = "10m"

[[actuator]]
id = "spray-line"
device = "relay-01"
coil = "spray_on"
max_on = "3s"

[[actuator]]
id = "fence-and-wash"
device = "relay-01"
coils = ["fence_spray_on", "wash_pump_on"]

[control]
broker = "b"
topic = "dustgate/{{site}}/control"
token_env = "E2E_CONTROL_TOKEN"
hmac_env = "E2E_CONTROL_HMAC"
max_for = "1h"

[alerts]
  [alerts.mqtt]
  broker = "b"
  topic = "dustgate/{{site}}/alerts"
"#,
        influx_v1(&influx.url(), DB),
        broker.url_plain()
    )
}

fn relay_spec() -> Value {
    let coils: serde_json::Map<String, Value> =
        (0..8).map(|i| (i.to_string(), json!(false))).collect();
    json!({ "devices": [{ "unit": 1, "coils": coils }] })
}

fn sensors_spec(pm25: u16, pm10: u16) -> Value {
    let (mut spec, _) = dust_monitor_unit(1);
    spec["holding"]["0"] = json!(pm25);
    spec["holding"]["1"] = json!(pm10);
    json!({ "devices": [spec] })
}

struct Setup {
    influx: Influx1,
    broker: Mosquitto,
    sensors: ModbusSim,
    relays: ModbusSim,
    alerts: Subscriber,
    gw: Gateway,
    http: u16,
}

async fn setup(name: &str) -> Setup {
    let influx = Influx1::start();
    influx.create_db(DB).await;
    let broker = Mosquitto::start();
    let alerts = Subscriber::start(broker.port_plain(), "dustgate/link-site/alerts", 1);
    let sensors = ModbusSim::tcp(&sensors_spec(35, 80));
    let relays = ModbusSim::tcp(&relay_spec());
    // SAFETY: set before the child starts; every test of this binary sets the same value.
    unsafe {
        std::env::set_var("E2E_CONTROL_TOKEN", TOKEN);
        std::env::set_var("E2E_CONTROL_HMAC", HMAC_KEY);
    };
    let http = common::free_port();
    let dir = scratch_dir(name);
    let mut gw = Gateway::start(
        &dir,
        &site(&influx, &broker, sensors.port(), relays.port(), http),
        &[],
    );
    gw.wait_started();
    gw.wait_log("HTTP API listening", Duration::from_secs(10));
    Setup {
        influx,
        broker,
        sensors,
        relays,
        alerts,
        gw,
        http,
    }
}

/// The relay's coils 0..8, read from the simulator (unit 1) with the test's own Modbus client.
async fn coils(relays: &ModbusSim) -> Vec<bool> {
    let read = async {
        let mut ctx = tokio_modbus::client::tcp::connect_slave(relays.addr(), Slave(1))
            .await
            .expect("connect to the relay simulator");
        let bits = ctx
            .read_coils(0, 8)
            .await
            .expect("read coils")
            .expect("no exception");
        let _ = tokio_modbus::client::Client::disconnect(&mut ctx).await;
        bits
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("the relay simulator answers within 5 s")
}

async fn wait_coil(relays: &ModbusSim, coil: usize, on: bool, what: &str) {
    eventually(what, Duration::from_secs(30), || async {
        (coils(relays).await[coil] == on).then_some(())
    })
    .await;
}

/// `equipment` points of one actuator: (time ms, requested, confirmed, cause).
async fn switches(influx: &Influx1, actuator: &str) -> Vec<(i64, f64, bool, String)> {
    influx
        .query_rows(
            DB,
            &format!(
                "SELECT requested, confirmed, cause FROM equipment WHERE actuator = '{actuator}'"
            ),
        )
        .await
        .into_iter()
        .map(|r| {
            (
                r[0].as_i64().unwrap_or(0),
                r[1].as_f64().unwrap_or(-1.0),
                r[2].as_bool().unwrap_or(false),
                r[3].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn switches_until(
    influx: &Influx1,
    actuator: &str,
    n: usize,
    what: &str,
) -> Vec<(i64, f64, bool, String)> {
    eventually(what, Duration::from_secs(30), || async {
        let s = switches(influx, actuator).await;
        (s.len() >= n).then_some(s)
    })
    .await
}

fn alert_states(sub: &Subscriber, rule: &str) -> Vec<String> {
    sub.messages()
        .iter()
        .filter_map(|m| serde_json::from_slice::<Value>(&m.payload).ok())
        .filter(|v| v["rule"] == rule)
        .map(|v| v["state"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pm10_over_the_rule_switches_the_mist_cannons_on_within_a_poll_and_off_after_min_on() {
    let mut s = setup("linkage-rule").await;
    // At start every actuator is set to a known state: off, confirmed.
    let start = switches_until(&s.influx, "mist-cannons", 1, "the start-up switch").await;
    assert_eq!(
        (start[0].1, start[0].2, start[0].3.as_str()),
        (0.0, true, "start-up")
    );

    // min_off (1 s) counts from that start-up switch: past it, nothing holds the switch back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.sensors.update(&sensors_spec(35, 300));
    wait_coil(&s.relays, 0, true, "the fog cannon coil on at the relay").await;
    let opened = eventually("the open alert in InfluxDB", Duration::from_secs(30), || async {
        let rows = s
            .influx
            .query_rows(DB, "SELECT alert_id FROM alert WHERE \"rule\" = 'pm10-high' AND \"state\" = 'open'")
            .await;
        rows.first().and_then(|r| r[0].as_i64())
    })
    .await;
    let sw = switches_until(&s.influx, "mist-cannons", 2, "the switch on").await;
    let (t_on, requested, confirmed, cause) = sw[1].clone();
    assert_eq!(
        (requested, confirmed, cause.as_str()),
        (1.0, true, "rule pm10-high")
    );
    // Within one poll interval (1 s) of the reading that opened the alert.
    assert!(
        (0..=1000).contains(&(t_on - opened)),
        "switched {} ms after the alert opened",
        t_on - opened
    );
    // The other actuators were not touched.
    let c = coils(&s.relays).await;
    assert_eq!(&c[1..4], &[false, false, false]);

    // PM10 back down at once: the alert closes within a poll, the cannons run out min_on.
    s.sensors.update(&sensors_spec(35, 60));
    eventually("the closed alert", Duration::from_secs(30), || async {
        (alert_states(&s.alerts, "pm10-high") == ["open", "closed"]).then_some(())
    })
    .await;
    wait_coil(&s.relays, 0, false, "the fog cannon coil off at the relay").await;
    let sw = switches_until(&s.influx, "mist-cannons", 3, "the switch off").await;
    let (t_off, requested, confirmed, cause) = sw[2].clone();
    assert_eq!(
        (requested, confirmed, cause.as_str()),
        (0.0, true, "rule cleared")
    );
    assert!(
        t_off - t_on >= 5000,
        "off {} ms after on; min_on is 5 s",
        t_off - t_on
    );
    assert!(t_off - t_on < 8000, "off {} ms after on", t_off - t_on);
    s.gw.proc.stop();
    let _ = &s.broker;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_on_cuts_the_pump_of_an_alert_that_stays_open() {
    let mut s = setup("linkage-max-on").await;
    s.sensors.update(&sensors_spec(250, 80));
    wait_coil(&s.relays, 1, true, "the spray coil on").await;
    let sw = switches_until(&s.influx, "spray-line", 3, "the guard's cut").await;
    assert_eq!(sw[1].3, "rule pm25-high");
    assert_eq!(
        (sw[2].1, sw[2].2, sw[2].3.as_str()),
        (0.0, true, "guard max_on")
    );
    let ran = sw[2].0 - sw[1].0;
    assert!((3000..5000).contains(&ran), "ran {ran} ms; max_on is 3 s");
    // The alert is still open, and the spray stays off.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!coils(&s.relays).await[1], "the spray is off again");
    assert_eq!(alert_states(&s.alerts, "pm25-high"), ["open"]);
    assert_eq!(switches(&s.influx, "spray-line").await.len(), 3);
    let api: Value = http_client()
        .get(format!(
            "http://127.0.0.1:{}/api/actuators/spray-line",
            s.http
        ))
        .send()
        .await
        .expect("GET actuator")
        .text()
        .await
        .map(|t| serde_json::from_str::<Value>(&t).unwrap_or_default())
        .expect("body");
    assert_eq!(api["mode"], "guard");
    assert_eq!(api["on"], false);
    assert_eq!(api["guard"], "guard max_on");
    s.gw.proc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_override_over_http_and_mqtt_switches_and_expires_and_shutdown_goes_safe() {
    let mut s = setup("linkage-override").await;
    let url = format!("http://127.0.0.1:{}/api/actuators/fence-and-wash", s.http);
    let client = http_client();
    let body = json!({"state": "on", "for": "3s", "by": "tester"}).to_string();

    // No token, a wrong token: refused, nothing switched.
    let r = client
        .post(&url)
        .body(body.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 401);
    let r = client
        .post(&url)
        .bearer_auth("wrong")
        .body(body.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 401);
    // Longer than max_for: refused.
    let r = client
        .post(&url)
        .bearer_auth(TOKEN)
        .body(json!({"state": "on", "for": "2h"}).to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(&coils(&s.relays).await[2..4], &[false, false]);

    // With the token: both coils on (FC15), then off when the override expires.
    let r = client
        .post(&url)
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 200);
    let answer: Value = serde_json::from_str(&r.text().await.expect("body")).expect("JSON");
    assert_eq!(answer["state"], "on");
    eventually("both coils on", Duration::from_secs(30), || async {
        (coils(&s.relays).await[2..4] == [true, true]).then_some(())
    })
    .await;
    let api: Value = client
        .get(&url)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .map(|t| serde_json::from_str::<Value>(&t).unwrap_or_default())
        .expect("body");
    assert_eq!(api["mode"], "manual");
    assert_eq!(api["manual_by"], "tester");
    eventually(
        "both coils off after the override",
        Duration::from_secs(30),
        || async { (coils(&s.relays).await[2..4] == [false, false]).then_some(()) },
    )
    .await;
    let sw = switches_until(&s.influx, "fence-and-wash", 3, "the override's switches").await;
    assert!(
        sw[1].3.starts_with("manual by tester until "),
        "{}",
        sw[1].3
    );
    assert_eq!(sw[2].3, "manual override ended");
    let held = sw[2].0 - sw[1].0;
    assert!(
        (2500..4500).contains(&held),
        "held {held} ms for a 3 s override"
    );

    // Over MQTT: on for an hour; "auto" hands it back to the rules (off).
    let topic = "dustgate/link-site/control";
    publish(
        s.broker.port_plain(),
        topic,
        &signed(
            json!({"actuator": "fence-and-wash", "state": "on", "for": "1h", "by": "值班员"}),
            common::now_ms(),
        ),
        1,
    );
    eventually("both coils on by MQTT", Duration::from_secs(30), || async {
        (coils(&s.relays).await[2..4] == [true, true]).then_some(())
    })
    .await;
    publish(s.broker.port_plain(), topic, "{not json", 1);
    // Refused, and the coils stay on: unsigned, and signed but a day old. (A retained command
    // reaches a live subscriber without its retain flag; the flag is checked by the control
    // unit tests: it is set when a broker hands retained commands to a fresh start.)
    let off = json!({"actuator": "fence-and-wash", "state": "off", "for": "1h"});
    let mut unsigned = off.clone();
    unsigned["at"] = json!(common::now_ms());
    publish(s.broker.port_plain(), topic, &unsigned.to_string(), 1);
    publish(
        s.broker.port_plain(),
        topic,
        &signed(off.clone(), common::now_ms() - 86_400_000),
        1,
    );
    s.gw.wait_log("more than [control].max_age", Duration::from_secs(10));
    s.gw.wait_log("missing or wrong \"sig\"", Duration::from_secs(10));
    assert_eq!(
        &coils(&s.relays).await[2..4],
        &[true, true],
        "no refused command switched anything"
    );
    publish(
        s.broker.port_plain(),
        topic,
        &signed(
            json!({"actuator": "fence-and-wash", "state": "auto"}),
            common::now_ms(),
        ),
        1,
    );
    eventually(
        "both coils off by MQTT",
        Duration::from_secs(30),
        || async { (coils(&s.relays).await[2..4] == [false, false]).then_some(()) },
    )
    .await;
    s.gw.wait_log("override command refused", Duration::from_secs(10));

    // A manual override on, then the gateway stops: the coils go to the safe state (off).
    publish(
        s.broker.port_plain(),
        topic,
        &signed(
            json!({"actuator": "fence-and-wash", "state": "on", "for": "1h"}),
            common::now_ms(),
        ),
        1,
    );
    eventually(
        "on again before the shutdown",
        Duration::from_secs(30),
        || async { (coils(&s.relays).await[2..4] == [true, true]).then_some(()) },
    )
    .await;
    let status = s.gw.proc.stop();
    assert!(status.is_some_and(|st| st.success()), "{}", s.gw.log());
    assert_eq!(
        &coils(&s.relays).await[2..4],
        &[false, false],
        "safe state after shutdown"
    );
    let sw = switches(&s.influx, "fence-and-wash").await;
    assert_eq!(
        sw.last().map(|x| x.3.as_str()),
        Some("safe state: shutdown")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_command_is_ignored_at_a_fresh_start() {
    // A console once published "on for 4 h" with the retain flag, correctly signed and fresh:
    // the broker keeps it and hands it, flagged retained, to the gateway when it starts.
    let influx = Influx1::start();
    influx.create_db(DB).await;
    let broker = Mosquitto::start();
    let sensors = ModbusSim::tcp(&sensors_spec(35, 80));
    let relays = ModbusSim::tcp(&relay_spec());
    // SAFETY: set before the child starts; every test of this binary sets the same value.
    unsafe {
        std::env::set_var("E2E_CONTROL_TOKEN", TOKEN);
        std::env::set_var("E2E_CONTROL_HMAC", HMAC_KEY);
    };
    common::mqtt::publish_retained(
        broker.port_plain(),
        "dustgate/link-site/control",
        &signed(
            json!({"actuator": "fence-and-wash", "state": "on", "for": "4h", "by": "old console"}),
            common::now_ms(),
        ),
        1,
    );
    let http = common::free_port();
    let dir = scratch_dir("retained-control");
    let mut gw = Gateway::start(
        &dir,
        &site(&influx, &broker, sensors.port(), relays.port(), http),
        &[],
    );
    gw.wait_started();
    gw.wait_log("retained commands are ignored", Duration::from_secs(20));
    // Several polls of the relay bus later, still off: the retained command switched nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        &coils(&relays).await[2..4],
        &[false, false],
        "a retained command must not switch at start; log:\n{}",
        gw.log()
    );
    // The same command without the retain flag switches: the refusal was the flag, nothing else.
    publish(
        broker.port_plain(),
        "dustgate/link-site/control",
        &signed(
            json!({"actuator": "fence-and-wash", "state": "on", "for": "1h", "by": "值班员"}),
            common::now_ms(),
        ),
        1,
    );
    eventually("both coils on by MQTT", Duration::from_secs(30), || async {
        (coils(&relays).await[2..4] == [true, true]).then_some(())
    })
    .await;
}
