//! MQTT limits on real peers (issue 11, items 4, 8 and 9): Mosquitto → `dustgate run` →
//! InfluxDB 1.6.7. An oversized message is refused, counted, dead-lettered (topic and size
//! only) and acknowledged while the stream behind it flows; a subscription creates at most
//! `max_devices` devices; a topic cannot speak for another source's device.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::mqtt::{Mosquitto, Subscriber, publish_many};
use common::site::{Gateway, influx_v1, latest_by_device, pm10_count, wait_pm10_count};
use common::{Influx1, eventually, free_port, scratch_dir};
use serde_json::Value;

const BASE_MS: i64 = 1_790_000_000_000;

/// A json-dust-monitor payload with its own millisecond timestamp.
fn reading(i: usize, pm10: f64) -> String {
    format!(
        r#"{{"ts":{},"data":{{"pm10":{pm10},"pm25":20}}}}"#,
        BASE_MS + i as i64
    )
}

fn site(influx: &Influx1, db: &str, body: &str) -> String {
    format!(
        "[site]\nid = \"mq\"\nhealth_interval = \"1s\"\n\n{}\n[store]\ndir = \"store\"\ncommit_interval = \"50ms\"\n\n{body}",
        influx_v1(&influx.url(), db)
    )
}

/// Distinct devices with readings in `air`.
async fn devices(influx: &Influx1, db: &str) -> usize {
    latest_by_device(influx, db, "air", "").await.len()
}

fn field(row: &BTreeMap<String, Value>, k: &str) -> Option<f64> {
    row.get(k).and_then(Value::as_f64)
}

/// The latest health row of broker `b` once `pred` holds for it.
async fn health_when(
    influx: &Influx1,
    db: &str,
    what: &str,
    pred: impl Fn(&BTreeMap<String, Value>) -> bool,
) -> BTreeMap<String, Value> {
    eventually(what, Duration::from_secs(60), || async {
        let rows = latest_by_device(influx, db, "gateway", "WHERE component = 'mqtt'").await;
        let r = rows.get("b").cloned()?;
        pred(&r).then_some(r)
    })
    .await
}

/// Publishes one QoS 1 message whose payload is in a file (`-m` is bounded by the argument
/// size limit of execve).
fn publish_file(port: u16, topic: &str, payload: &[u8], dir: &std::path::Path) {
    publish_file_with(port, topic, payload, dir, &[]);
}

fn publish_file_with(
    port: u16,
    topic: &str,
    payload: &[u8],
    dir: &std::path::Path,
    extra: &[&str],
) {
    let path = dir.join("big-payload");
    std::fs::write(&path, payload).expect("write the payload");
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
        ])
        .args(extra)
        .arg("-f")
        .arg(&path)
        .status()
        .expect("mosquitto_pub");
    assert!(status.success(), "mosquitto_pub -f failed: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_qos1_message_is_refused_acked_and_the_stream_flows() {
    let influx = Influx1::start();
    influx.create_db("big").await;
    let broker_ = Mosquitto::start();
    let mut dead = Subscriber::start(broker_.port_plain(), "dustgate/mq/rejected", 0);
    let dir = scratch_dir("mqtt-oversized");
    // max_message_size is left at its default, 1 MiB.
    let toml = site(
        &influx,
        "big",
        &format!(
            "[[mqtt]]\nname = \"b\"\nurl = \"{}\"\ndead_letter_topic = \"dustgate/{{site}}/rejected\"\n  [[mqtt.subscribe]]\n  topic = \"sensors/+/telemetry\"\n  device = \"{{1}}\"\n  profile = \"json-dust-monitor\"\n",
            broker_.url_plain()
        ),
    );
    let mut gw = Gateway::start(&dir, &toml, &[]);
    gw.wait_log("connected to broker", Duration::from_secs(30));
    let port = broker_.port_plain();
    let topic = "sensors/d1/telemetry";
    publish_many(port, (0..200).map(|i| (topic, reading(i, 50.0))), 1);
    // 2 MiB: a valid reading padded past the cap.
    let mut big = format!(
        r#"{{"ts":{},"data":{{"pm10":777,"pm25":20}},"pad":""#,
        BASE_MS + 100_000
    )
    .into_bytes();
    big.resize(2 << 20, b'x');
    big.extend_from_slice(b"\"}");
    publish_file(port, topic, &big, &dir);
    publish_many(port, (200..400).map(|i| (topic, reading(i, 50.0))), 1);

    wait_pm10_count(&influx, "big", 400, Duration::from_secs(60)).await;
    let h = health_when(&influx, "big", "1 oversized in the health", |r| {
        field(r, "oversized") == Some(1.0)
    })
    .await;
    assert_eq!(field(&h, "dead_lettered"), Some(1.0));
    let connects = field(&h, "connects").unwrap_or(0.0);
    eprintln!("connects: {connects}");
    assert!(connects <= 2.0, "the gateway reconnected {connects} times");
    assert_eq!(pm10_count(&influx, "big", "WHERE pm10 = 777").await, 0);
    assert_eq!(pm10_count(&influx, "big", "").await, 400);
    // The dead letter holds the topic and the size, not the payload.
    let got = dead.wait_for(1, Duration::from_secs(10)).await;
    let record: Value = serde_json::from_str(&got[0].text()).expect("a JSON dead letter");
    assert_eq!(record["topic"], topic);
    assert_eq!(record["size"], big.len());
    assert!(got[0].text().len() < 1000);
    gw.proc.stop();
    assert!(gw.log().contains("message over max_message_size refused"));
}

/// A retained oversized message arrives at every subscription: refused and acknowledged, the
/// messages behind it flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_oversized_message_does_not_block_the_subscription() {
    let influx = Influx1::start();
    influx.create_db("retained").await;
    let broker_ = Mosquitto::start();
    let dir = scratch_dir("mqtt-oversized-retained");
    let port = broker_.port_plain();
    publish_file_with(
        port,
        "sensors/d2/telemetry",
        &vec![b'x'; 3 << 20],
        &dir,
        &["-r"],
    );
    let toml = site(
        &influx,
        "retained",
        &format!(
            "[[mqtt]]\nname = \"b\"\nurl = \"{}\"\nmax_message_size = \"64KiB\"\n  [[mqtt.subscribe]]\n  topic = \"sensors/+/telemetry\"\n  device = \"{{1}}\"\n  profile = \"json-dust-monitor\"\n",
            broker_.url_plain()
        ),
    );
    let mut gw = Gateway::start(&dir, &toml, &[]);
    gw.wait_log("connected to broker", Duration::from_secs(30));
    publish_many(
        port,
        (0..50).map(|i| ("sensors/d1/telemetry", reading(i, 50.0))),
        1,
    );
    wait_pm10_count(&influx, "retained", 50, Duration::from_secs(60)).await;
    let h = health_when(&influx, "retained", "1 oversized in the health", |r| {
        field(r, "oversized") == Some(1.0)
    })
    .await;
    let connects = field(&h, "connects").unwrap_or(0.0);
    assert!(connects <= 2.0, "the gateway reconnected {connects} times");
    gw.proc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_creates_at_most_max_devices_devices() {
    let influx = Influx1::start();
    influx.create_db("devs").await;
    let broker_ = Mosquitto::start();
    let dir = scratch_dir("mqtt-max-devices");
    let toml = site(
        &influx,
        "devs",
        &format!(
            "[[mqtt]]\nname = \"b\"\nurl = \"{}\"\n  [[mqtt.subscribe]]\n  topic = \"sensors/+/telemetry\"\n  device = \"{{1}}\"\n  profile = \"json-dust-monitor\"\n  max_devices = 50\n",
            broker_.url_plain()
        ),
    );
    let mut gw = Gateway::start(&dir, &toml, &[]);
    gw.wait_log("connected to broker", Duration::from_secs(30));
    let msgs: Vec<(String, String)> = (0..120)
        .map(|i| (format!("sensors/dev-{i:03}/telemetry"), reading(i, 50.0)))
        .collect();
    publish_many(broker_.port_plain(), msgs, 1);
    let h = health_when(&influx, "devs", "70 refused by max_devices", |r| {
        field(r, "device_limit") == Some(70.0)
    })
    .await;
    assert_eq!(field(&h, "messages_in"), Some(120.0));
    wait_pm10_count(&influx, "devs", 50, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pm10_count(&influx, "devs", "").await, 50);
    assert_eq!(devices(&influx, "devs").await, 50);
    gw.proc.stop();
    assert!(
        gw.log()
            .contains("the subscription already has max_devices devices")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_cannot_speak_for_a_modbus_device() {
    let influx = Influx1::start();
    influx.create_db("trust").await;
    let broker_ = Mosquitto::start();
    let dir = scratch_dir("mqtt-foreign-id");
    // Nothing listens on the bus's port: its polls fail, which does not matter here.
    let toml = site(
        &influx,
        "trust",
        &format!(
            "[[modbus]]\nname = \"sensors\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\ninterval = \"1s\"\n\n  [[modbus.device]]\n  id = \"dust-01\"\n  unit = 1\n  profile = \"generic-dust-monitor\"\n\n[[mqtt]]\nname = \"b\"\nurl = \"{}\"\n  [[mqtt.subscribe]]\n  topic = \"sensors/+/telemetry\"\n  device = \"{{1}}\"\n  profile = \"json-dust-monitor\"\n",
            free_port(),
            broker_.url_plain()
        ),
    );
    let mut gw = Gateway::start(&dir, &toml, &[]);
    gw.wait_log("connected to broker", Duration::from_secs(30));
    publish_many(
        broker_.port_plain(),
        [
            ("sensors/dust-01/telemetry", reading(1, 999.0)),
            ("sensors/dust-99/telemetry", reading(2, 42.0)),
        ],
        1,
    );
    wait_pm10_count(&influx, "trust", 1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        pm10_count(&influx, "trust", "WHERE device = 'dust-99'").await,
        1
    );
    assert_eq!(
        pm10_count(&influx, "trust", "WHERE device = 'dust-01'").await,
        0
    );
    assert_eq!(pm10_count(&influx, "trust", "WHERE pm10 = 999").await, 0);
    let h = health_when(&influx, "trust", "1 refused as another source's", |r| {
        field(r, "foreign_device") == Some(1.0)
    })
    .await;
    assert_eq!(field(&h, "messages_in"), Some(2.0));
    gw.proc.stop();
    assert!(gw.log().contains("the device id belongs to another source"));
}

/// A packet over even the client's read limit (twice the cap, at least 16 MiB) cannot be
/// acknowledged: the MQTT library drops the connection on its header and the broker delivers it
/// again. It is counted and the reconnects back off instead of spinning at the shortest delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_packet_is_counted_and_the_reconnects_back_off() {
    let influx = Influx1::start();
    influx.create_db("huge").await;
    let broker_ = Mosquitto::start();
    let dir = scratch_dir("mqtt-unreadable");
    let toml = site(
        &influx,
        "huge",
        &format!(
            "[[mqtt]]\nname = \"b\"\nurl = \"{}\"\n  [[mqtt.subscribe]]\n  topic = \"sensors/+/telemetry\"\n  device = \"{{1}}\"\n  profile = \"json-dust-monitor\"\n",
            broker_.url_plain()
        ),
    );
    let mut gw = Gateway::start(&dir, &toml, &[]);
    gw.wait_log("connected to broker", Duration::from_secs(30));
    let huge = vec![b'x'; 17 << 20];
    publish_file(broker_.port_plain(), "sensors/d1/telemetry", &huge, &dir);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let h = health_when(&influx, "huge", "the broker's health", |r| {
        field(r, "connects").is_some()
    })
    .await;
    let connects = field(&h, "connects").unwrap_or(0.0);
    eprintln!("connects in 20 s: {connects}");
    // Backoff 1 s doubling (jittered in the upper half): at most 7 connects in 20 s; the old
    // reset at every ConnAck made about 1.3 a second.
    assert!(
        connects <= 8.0,
        "{connects} connects in 20 s: the backoff is reset at each ConnAck"
    );
    health_when(&influx, "huge", "an unreadable packet counted", |r| {
        field(r, "unreadable").is_some_and(|n| n >= 1.0)
    })
    .await;
    gw.proc.stop();
    assert!(gw.log().contains("a packet too large to read"));
}
