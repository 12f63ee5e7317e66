//! The six 100% end to end on real peers: a wash station, a gate camera and an AI box publish on
//! Mosquitto; `dustgate run` judges them; violation alerts (with plates and snapshots) arrive
//! on the alert topic, vehicles and compliance figures in InfluxDB, and `/api/compliance/today`
//! answers the same numbers.

mod common;

use std::time::Duration;

use common::mqtt::{Mosquitto, Subscriber, publish};
use common::site::{Gateway, influx_v1};
use common::{Influx1, eventually, http_client, now_ms, scratch_dir};
use serde_json::{Value, json};

const DB: &str = "six100";

fn site(influx: &Influx1, broker: &Mosquitto, http: u16) -> String {
    format!(
        r#"[site]
id = "six-site"
name = "六个百分百测试工地"
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
  topic = "wash/+/state"
  device = "{{1}}"
  profile = "wash-station"

  [[mqtt.subscribe]]
  topic = "gate/+/vehicle"
  device = "{{1}}"
  profile = "gate-camera"

  [[mqtt.subscribe]]
  topic = "ai/+/detection"
  device = "{{1}}"
  profile = "ai-detector"

[compliance]
wash_min = "45s"
wash_lookback = "2m"
max_open = "2s"
paved_percent = 95
paved_date = "2026-11-20"

[alerts]
  [alerts.mqtt]
  broker = "b"
  topic = "dustgate/{{site}}/alerts"
"#,
        influx_v1(&influx.url(), DB),
        broker.url_plain()
    )
}

fn violations(sub: &Subscriber) -> Vec<Value> {
    sub.messages()
        .iter()
        .filter_map(|m| serde_json::from_slice::<Value>(&m.payload).ok())
        .filter(|v| v["kind"] == "violation")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwashed_exit_and_an_uncovered_muck_truck_are_violations_with_their_plates() {
    let influx = Influx1::start();
    influx.create_db(DB).await;
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port_plain(), "dustgate/six-site/alerts", 1);
    let http = common::free_port();
    let dir = scratch_dir("six100-e2e");
    let mut gw = Gateway::start(&dir, &site(&influx, &broker, http), &[]);
    gw.wait_started();
    gw.wait_log(
        "subscribing broker=b topic=ai/+/detection",
        Duration::from_secs(30),
    );

    let port = broker.port_plain();
    // Today, local time: a few minutes ago, so that everything counts for today.
    let base = now_ms() - 6 * 60_000;
    publish(
        port,
        "wash/wash-01/state",
        &json!({"ts": base, "pump": 1, "flow_lpm": 110}).to_string(),
        1,
    );
    publish(
        port,
        "wash/wash-01/state",
        &json!({"ts": base + 60_000, "pump": 0, "flow_lpm": 0}).to_string(),
        1,
    );
    // A: washed 60 s, ten seconds before leaving; covered.
    publish(
        port,
        "gate/cam-01/vehicle",
        &json!({"time": base + 70_000, "plate": "川A11111", "direction": "out", "gate": "south",
                "muck_truck": true, "covered": true, "snapshot": "http://cam/1.jpg"})
        .to_string(),
        1,
    );
    // An entry is not judged.
    publish(
        port,
        "gate/cam-01/vehicle",
        &json!({"time": base + 100_000, "plate": "川A33333", "direction": "in", "gate": "south"})
            .to_string(),
        1,
    );
    // B: leaves four minutes after the last wash (lookback 2 min), uncovered.
    publish(
        port,
        "gate/cam-01/vehicle",
        &json!({"time": base + 300_000, "plate": "川A22222", "direction": "out", "gate": "south",
                "muck_truck": true, "covered": false, "snapshot": "http://cam/2.jpg"})
        .to_string(),
        1,
    );
    // An AI box sees an uncovered pile; it stays open past max_open (2 s).
    publish(
        port,
        "ai/box-01/detection",
        &json!({"time": now_ms(), "type": "物料未覆盖", "event": "open", "target": "pile-n",
                "image": "http://ai/1.jpg"})
        .to_string(),
        1,
    );

    let v = eventually(
        "three violations on the alert topic",
        Duration::from_secs(30),
        || async {
            let v = violations(&sub);
            (v.len() >= 3).then_some(v)
        },
    )
    .await;
    let rule_of = |r: &str| {
        v.iter()
            .find(|x| x["rule"] == r)
            .cloned()
            .unwrap_or_default()
    };
    let wash = rule_of("six100-wash");
    assert_eq!(wash["plate"], "川A22222");
    assert_eq!(wash["snapshot"], "http://cam/2.jpg");
    assert_eq!(wash["gate"], "south");
    assert_eq!(wash["state"], "event");
    assert_eq!(wash["device"], "cam-01");
    let msg = wash["message"].as_str().unwrap_or_default();
    assert!(msg.contains("川A22222") && msg.contains("未冲洗"), "{msg}");
    let sealed = rule_of("six100-sealed_transport");
    assert_eq!(sealed["plate"], "川A22222");
    let cover = rule_of("six100-cover");
    assert_eq!(cover["snapshot"], "http://ai/1.jpg");
    assert_eq!(cover["device"], "box-01");
    assert!(
        !v.iter()
            .any(|x| x["plate"] == "川A11111" || x["plate"] == "川A33333"),
        "{v:?}"
    );

    // Vehicles in InfluxDB, with the verdict.
    let rows = eventually(
        "three vehicles in InfluxDB",
        Duration::from_secs(30),
        || async {
            let r = influx
                .query_rows(
                    DB,
                    "SELECT plate, washed, wash_seconds, covered, direction FROM vehicle",
                )
                .await;
            (r.len() >= 3).then_some(r)
        },
    )
    .await;
    assert_eq!(rows[0][1], json!("川A11111"));
    assert_eq!(rows[0][2], json!(true));
    assert_eq!(rows[0][3].as_f64(), Some(60.0));
    assert_eq!(rows[1][1], json!("川A33333"));
    assert_eq!(rows[1][2], Value::Null);
    assert_eq!(rows[2][1], json!("川A22222"));
    assert_eq!(rows[2][2], json!(false));
    assert_eq!(rows[2][3].as_f64(), Some(0.0));
    assert_eq!(rows[2][4], json!(false), "not covered");
    assert_eq!(rows[2][5], json!("out"));

    // The day's figures: wash 1 of 2, sealed 1 of 2, paving as declared.
    let latest = |item: &str| {
        format!(
            "SELECT last(percent), last(checked), last(violations) FROM compliance WHERE item = '{item}'"
        )
    };
    for (item, percent, checked, violations) in [
        ("wash", 50.0, 2.0, 1.0),
        ("sealed_transport", 50.0, 2.0, 1.0),
        ("hardening", 95.0, 1.0, 0.0),
    ] {
        eventually(
            &format!("compliance {item} in InfluxDB"),
            Duration::from_secs(30),
            || async {
                let r = influx.query_rows(DB, &latest(item)).await;
                let row = r.first()?;
                (row[1].as_f64() == Some(percent)
                    && row[2].as_f64() == Some(checked)
                    && row[3].as_f64() == Some(violations))
                .then_some(())
            },
        )
        .await;
    }

    // The API says the same.
    let body = http_client()
        .get(format!("http://127.0.0.1:{http}/api/compliance/today"))
        .send()
        .await
        .expect("GET /api/compliance/today")
        .text()
        .await
        .expect("body");
    let today: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(today["site"], "six-site");
    let item = |name: &str| {
        today["items"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["item"] == name).cloned())
            .unwrap_or_default()
    };
    assert_eq!(item("wash")["percent"].as_f64(), Some(50.0));
    assert_eq!(item("wash")["violations"].as_u64(), Some(1));
    assert_eq!(item("sealed_transport")["percent"].as_f64(), Some(50.0));
    assert_eq!(item("hardening")["percent"].as_f64(), Some(95.0));
    assert_eq!(item("cover")["violations"].as_u64(), Some(1));
    assert_eq!(today["paved_declared"], "2026-11-20");

    // The pile is covered: the detection clears; no further violation.
    publish(
        port,
        "ai/box-01/detection",
        &json!({"time": now_ms(), "type": "物料未覆盖", "event": "cleared", "target": "pile-n"})
            .to_string(),
        1,
    );
    gw.wait_log("open=false", Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(violations(&sub).len(), 3);
    gw.proc.stop();
}
