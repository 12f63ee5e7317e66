//! MQTT ingest with the durable store, on real peers: Mosquitto (plain, password, TLS and
//! mutual-TLS listeners, certificates made with openssl) → `dustgate run` → InfluxDB 1.6.7.
//! Nothing acknowledged is ever lost: kill -9, InfluxDB outages, broker restarts; anything
//! dropped on purpose is counted exactly.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::mqtt::{Mosquitto, Subscriber, publish_many};
use common::site::{Gateway, influx_v1, latest_by_device, pm10_count, wait_pm10_count};
use common::{Influx1, eventually, scratch_dir};
use serde_json::Value;

const BASE_MS: i64 = 1_790_000_000_000;

/// A json-dust-monitor payload with its own millisecond timestamp.
fn reading(i: usize) -> String {
    format!(
        r#"{{"ts":{},"data":{{"pm10":{},"pm25":{}}}}}"#,
        BASE_MS + i as i64,
        60 + i % 90,
        20 + i % 50
    )
}

fn messages(topic: &str, range: std::ops::Range<usize>) -> Vec<(String, String)> {
    range.map(|i| (topic.to_string(), reading(i))).collect()
}

/// A site with one broker block (or several) and InfluxDB v1.
fn site(influx: &Influx1, db: &str, extra_site: &str, brokers: &str) -> String {
    format!(
        "[site]\nid = \"mq\"\n{extra_site}\n\n{}\n[store]\ndir = \"store\"\ncommit_interval = \"50ms\"\n\n{brokers}",
        influx_v1(&influx.url(), db)
    )
}

fn broker(name: &str, url: &str, topic: &str, extra: &str) -> String {
    format!(
        "[[mqtt]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n  [[mqtt.subscribe]]\n  topic = \"{topic}\"\n  device = \"{{1}}\"\n  profile = \"json-dust-monitor\"\n\n"
    )
}

fn field(row: Option<&BTreeMap<String, Value>>, k: &str) -> Option<f64> {
    row.and_then(|r| r.get(k)).and_then(Value::as_f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_5000_qos1_messages_loses_nothing() {
    let influx = Influx1::start();
    influx.create_db("kill").await;
    let broker_ = Mosquitto::start();
    let dir = scratch_dir("mqtt-kill9");
    let toml = site(
        &influx,
        "kill",
        "health_interval = \"1s\"",
        &broker("b", &broker_.url_plain(), "sensors/+/telemetry", ""),
    );
    let mut gw = Gateway::start(&dir, &toml, &[]);
    gw.wait_log("connected to broker", Duration::from_secs(30));

    // 5,000 QoS 1 readings in 10 bursts, so the crash lands in the middle of the stream.
    let port = broker_.port_plain();
    let publisher = std::thread::spawn(move || {
        for burst in 0..10 {
            publish_many(
                port,
                messages("sensors/d1/telemetry", burst * 500..(burst + 1) * 500),
                1,
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    wait_pm10_count(&influx, "kill", 1000, Duration::from_secs(60)).await;
    gw.proc.kill9();
    let at_crash = pm10_count(&influx, "kill", "").await;
    gw.proc.respawn();
    publisher.join().expect("publisher");
    wait_pm10_count(&influx, "kill", 5000, Duration::from_secs(120)).await;
    // Every reading exactly once: 5,000 distinct timestamps, none extra, none missing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pm10_count(&influx, "kill", "").await, 5000);
    let span = influx
        .query_rows("kill", "SELECT min(pm10), max(pm10) FROM air")
        .await;
    assert!(!span.is_empty());
    let first = influx
        .query_rows("kill", "SELECT first(pm10) FROM air")
        .await;
    let last = influx
        .query_rows("kill", "SELECT last(pm10) FROM air")
        .await;
    assert_eq!(first[0][0], Value::from(BASE_MS));
    assert_eq!(last[0][0], Value::from(BASE_MS + 4999));
    assert!(
        at_crash < 5000,
        "the crash came after everything was written ({at_crash})"
    );
    gw.proc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_down_for_a_minute_then_everything_arrives_oldest_first() {
    let mut influx = Influx1::start();
    influx.create_db("outage").await;
    let broker_ = Mosquitto::start();
    let dir = scratch_dir("mqtt-outage");
    let toml = site(
        &influx,
        "outage",
        "health_interval = \"1s\"",
        &broker("b", &broker_.url_plain(), "sensors/+/telemetry", ""),
    );
    let mut gw = Gateway::start(&dir, &toml, &[]);
    gw.wait_log("connected to broker", Duration::from_secs(30));

    // Ten readings a second, for 70 s.
    let port = broker_.port_plain();
    let publisher = std::thread::spawn(move || {
        for s in 0..70 {
            publish_many(
                port,
                messages("sensors/d1/telemetry", s * 10..(s + 1) * 10),
                1,
            );
            std::thread::sleep(Duration::from_millis(1000));
        }
    });
    wait_pm10_count(&influx, "outage", 20, Duration::from_secs(30)).await;
    influx.stop();
    tokio::time::sleep(Duration::from_secs(60)).await;
    influx.start_again();
    // While the backlog drains, what has arrived is always the oldest part: one query gives
    // every timestamp stored so far, and they must be exactly the first n of the stream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut partial_seen = 0;
    loop {
        let rows = influx.query_rows("outage", "SELECT pm10 FROM air").await;
        let times: Vec<i64> = rows
            .iter()
            .filter_map(|r| r.first().and_then(Value::as_i64))
            .collect();
        let n = times.len();
        let expected: Vec<i64> = (0..n as i64).map(|i| BASE_MS + i).collect();
        assert_eq!(
            times, expected,
            "what has arrived is not the oldest {n} readings"
        );
        if n > 20 && n < 600 {
            partial_seen += 1;
        }
        if n >= 600 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("drain observed part-way {partial_seen} times");
    publisher.join().expect("publisher");
    wait_pm10_count(&influx, "outage", 700, Duration::from_secs(60)).await;
    // The uplink lag, high during the outage, goes back to about zero.
    let lag_high = influx
        .query_rows(
            "outage",
            "SELECT max(uplink_lag_s) FROM gateway WHERE component = 'writer'",
        )
        .await;
    assert!(
        lag_high[0][1].as_f64() > Some(30.0),
        "lag during the outage: {lag_high:?}"
    );
    eventually(
        "uplink_lag_s back to about zero",
        Duration::from_secs(30),
        || async {
            let rows =
                latest_by_device(&influx, "outage", "gateway", "WHERE component = 'writer'").await;
            (field(rows.get("dustgate"), "uplink_lag_s") < Some(2.0)).then_some(())
        },
    )
    .await;
    gw.proc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_and_gateway_downtime_lose_nothing() {
    let influx = Influx1::start();
    influx.create_db("restart").await;
    let mut broker_ = Mosquitto::start();
    let dir = scratch_dir("mqtt-restart");
    let toml = site(
        &influx,
        "restart",
        "",
        &broker("b", &broker_.url_plain(), "sensors/+/telemetry", ""),
    );
    let mut gw = Gateway::start(&dir, &toml, &[]);
    gw.wait_log("connected to broker", Duration::from_secs(30));
    let port = broker_.port_plain();
    publish_many(port, messages("sensors/d1/telemetry", 0..100), 1);
    wait_pm10_count(&influx, "restart", 100, Duration::from_secs(30)).await;

    // The broker restarts; messages published before the gateway is back are kept in its
    // persistent session.
    broker_.stop();
    broker_.start_again();
    publish_many(port, messages("sensors/d1/telemetry", 100..300), 1);
    wait_pm10_count(&influx, "restart", 300, Duration::from_secs(90)).await;

    // The gateway is away (stopped) while readings keep coming: they wait in the session.
    gw.proc.stop();
    publish_many(port, messages("sensors/d1/telemetry", 300..500), 1);
    gw.proc.respawn();
    wait_pm10_count(&influx, "restart", 500, Duration::from_secs(90)).await;
    let log = gw.log();
    assert!(
        log.contains("session_present=true"),
        "the persistent session was resumed:\n{log}"
    );
    gw.proc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_drops_the_oldest_and_counts_them_exactly() {
    let mut influx = Influx1::start();
    influx.create_db("full").await;
    let broker_ = Mosquitto::start();
    let dir = scratch_dir("mqtt-full");
    // No health points until the end, so the store holds readings only.
    let toml = site(
        &influx,
        "full",
        "health_interval = \"1h\"",
        &broker("b", &broker_.url_plain(), "sensors/+/telemetry", ""),
    )
    .replace(
        "commit_interval = \"50ms\"",
        "commit_interval = \"50ms\"\nmax_size = \"1MiB\"",
    );
    let mut gw = Gateway::start(&dir, &toml, &[]);
    gw.wait_log("connected to broker", Duration::from_secs(30));
    influx.stop();
    let total = 40_000;
    publish_many(
        broker_.port_plain(),
        messages("sensors/d1/telemetry", 0..total),
        1,
    );
    gw.wait_log("store full: oldest points dropped", Duration::from_secs(60));
    // Wait until the gateway has taken all of them (the broker's queue for it is empty).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(gw.proc.is_running(), "the gateway keeps running");
    influx.start_again();
    // Everything taken in is delivered once InfluxDB is back: wait until the count holds
    // still for two seconds.
    let mut last = usize::MAX;
    for _ in 0..120 {
        let now = pm10_count(&influx, "full", "").await;
        if now > 0 && now == last {
            break;
        }
        last = now;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // A graceful stop writes a last health point with the drop count, and delivers it.
    gw.proc.stop();
    let writer = eventually("the last health point", Duration::from_secs(30), || async {
        let rows = latest_by_device(&influx, "full", "gateway", "WHERE component = 'writer'").await;
        rows.get("dustgate").cloned()
    })
    .await;
    let dropped = field(Some(&writer), "dropped_points").unwrap_or(-1.0) as usize;
    let stored = pm10_count(&influx, "full", "").await;
    assert!(
        dropped > 0 && stored > 0,
        "stored {stored}, dropped {dropped}"
    );
    assert_eq!(
        stored + dropped,
        total,
        "stored {stored} + dropped {dropped}"
    );
    // The oldest went: what is stored is the newest readings, plus the batch the writer held
    // in its hands when InfluxDB went away (it still delivers that copy, and it is not counted
    // as dropped). So the stored timestamps are one run from the start, at most a batch long,
    // and one run to the end.
    let rows = influx.query_rows("full", "SELECT pm10 FROM air").await;
    let times: Vec<i64> = rows
        .iter()
        .filter_map(|r| r.first().and_then(Value::as_i64))
        .collect();
    let head = times
        .iter()
        .zip(BASE_MS..)
        .take_while(|(t, want)| **t == *want)
        .count();
    let tail = &times[head..];
    let expected_tail: Vec<i64> =
        (BASE_MS + (total - tail.len()) as i64..BASE_MS + total as i64).collect();
    assert_eq!(
        tail,
        expected_tail.as_slice(),
        "after the writer's batch of {head}, the newest readings"
    );
    assert!(
        head <= 5000,
        "the writer's batch holds at most batch_size points: {head}"
    );
    // The store stayed within its bound: 1 MiB of line protocol of ~45 bytes a reading, and
    // the writer's batch beside it.
    assert!(
        tail.len() <= (1 << 20) / 40,
        "{} readings kept in a 1 MiB store",
        tail.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_counted_dead_lettered_and_never_blocks_the_good() {
    let influx = Influx1::start();
    influx.create_db("garbage").await;
    let broker_ = Mosquitto::start();
    let mut dead = Subscriber::start(broker_.port_plain(), "dustgate/mq/rejected", 0);
    let dir = scratch_dir("mqtt-garbage");
    let toml = site(
        &influx,
        "garbage",
        "health_interval = \"1s\"",
        &broker(
            "b",
            &broker_.url_plain(),
            "sensors/+/telemetry",
            "dead_letter_topic = \"dustgate/{site}/rejected\"",
        ),
    );
    let mut gw = Gateway::start(&dir, &toml, &[]);
    gw.wait_log("connected to broker", Duration::from_secs(30));
    let garbage = [
        "not json at all",
        r#"{"ts":1790000000000}"#,
        r#"{"ts":1790000000000,"data":{"pm10":"lots"}}"#,
        r#"{"data":{"pm10":5}}"#,
        r#"{"ts":"yesterday","data":{"pm10":5}}"#,
        "[1,2,3]",
        "",
        r#"{"ts":1790000000000,"data":{"pm10":{"nested":1}}}"#,
        "\u{7f}\u{1}binary",
        r#"{"ts":12,"data":{"pm10":5}}"#,
    ];
    let mut all = Vec::new();
    for i in 0..100 {
        all.push(("sensors/d1/telemetry".to_string(), reading(i)));
        if i % 2 == 0 {
            all.push((
                "sensors/d1/telemetry".to_string(),
                garbage[(i / 2) % garbage.len()].to_string(),
            ));
        }
    }
    publish_many(broker_.port_plain(), all, 1);
    wait_pm10_count(&influx, "garbage", 100, Duration::from_secs(30)).await;
    let got = dead.wait_for(50, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 50);
    let health = eventually(
        "50 rejected in the gateway's health",
        Duration::from_secs(30),
        || async {
            let rows =
                latest_by_device(&influx, "garbage", "gateway", "WHERE component = 'mqtt'").await;
            let r = rows.get("b").cloned()?;
            (field(Some(&r), "rejected") == Some(50.0)).then_some(r)
        },
    )
    .await;
    assert_eq!(field(Some(&health), "messages_in"), Some(150.0));
    assert_eq!(field(Some(&health), "dead_lettered"), Some(50.0));
    assert_eq!(pm10_count(&influx, "garbage", "").await, 100);
    gw.proc.stop();
    assert!(
        gw.log()
            .contains("message rejected (acknowledged and counted)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_tls_and_mutual_tls_work_and_their_mistakes_are_clear() {
    let influx = Influx1::start();
    influx.create_db("tls").await;
    let broker_ = Mosquitto::start();
    let c = broker_.certs();
    let path = |p: &std::path::Path| p.display().to_string();
    // SAFETY: set before the child starts; no other thread reads these variables.
    unsafe {
        std::env::set_var("E2E_MQTT_GOOD", Mosquitto::PASSWORD);
        std::env::set_var("E2E_MQTT_BAD", "not-the-password");
    }
    let brokers = [
        broker(
            "pw-good",
            &broker_.url_password(),
            "pw/+",
            &format!(
                "username = \"{}\"\npassword_env = \"E2E_MQTT_GOOD\"",
                Mosquitto::USER
            ),
        ),
        broker(
            "pw-bad",
            &broker_.url_password(),
            "pwbad/+",
            &format!(
                "username = \"{}\"\npassword_env = \"E2E_MQTT_BAD\"",
                Mosquitto::USER
            ),
        ),
        broker(
            "tls-good",
            &broker_.url_tls(),
            "tls/+",
            &format!("ca_file = \"{}\"", path(&c.ca)),
        ),
        broker(
            "tls-wrong-ca",
            &broker_.url_tls(),
            "tlsbad/+",
            &format!("ca_file = \"{}\"", path(&c.other_ca)),
        ),
        broker(
            "mtls-good",
            &broker_.url_mtls(),
            "mtls/+",
            &format!(
                "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
                path(&c.ca),
                path(&c.client_cert),
                path(&c.client_key)
            ),
        ),
        broker(
            "mtls-no-cert",
            &broker_.url_mtls(),
            "mtlsbad/+",
            &format!("ca_file = \"{}\"", path(&c.ca)),
        ),
    ]
    .concat();
    let dir = scratch_dir("mqtt-tls");
    let mut gw = Gateway::start(
        &dir,
        &site(&influx, "tls", "health_interval = \"1s\"", &brokers),
        &[],
    );
    gw.wait_started();
    // Published on the plain listener: all listeners share one topic tree.
    let port = broker_.port_plain();
    eventually(
        "readings through the password, TLS and mutual-TLS connections",
        Duration::from_secs(60),
        || async {
            let mut msgs = Vec::new();
            for (i, t) in ["pw/a", "tls/b", "mtls/c"].iter().enumerate() {
                msgs.extend(messages(t, i * 10..i * 10 + 3));
            }
            publish_many(port, msgs, 1);
            let rows = latest_by_device(&influx, "tls", "air", "").await;
            (rows.contains_key("a") && rows.contains_key("b") && rows.contains_key("c"))
                .then_some(())
        },
    )
    .await;
    let health = eventually(
        "health of the six connections",
        Duration::from_secs(30),
        || async {
            let rows =
                latest_by_device(&influx, "tls", "gateway", "WHERE component = 'mqtt'").await;
            (rows.len() == 6).then_some(rows)
        },
    )
    .await;
    for good in ["pw-good", "tls-good", "mtls-good"] {
        assert_eq!(
            field(health.get(good), "connected"),
            Some(1.0),
            "{good}: {:?}",
            health.get(good)
        );
    }
    for bad in ["pw-bad", "tls-wrong-ca", "mtls-no-cert"] {
        assert_eq!(field(health.get(bad), "connected"), Some(0.0), "{bad}");
    }
    assert!(
        gw.proc.is_running(),
        "bad credentials never stop the gateway"
    );
    let log = gw.log();
    let line = |name: &str| {
        log.lines()
            .find(|l| {
                l.contains("MQTT connection failed") && l.contains(&format!("broker={name} "))
            })
            .unwrap_or_else(|| panic!("no connection error logged for {name}:\n{log}"))
            .to_string()
    };
    assert!(
        line("pw-bad").contains("NotAuthorized"),
        "{}",
        line("pw-bad")
    );
    assert!(
        line("tls-wrong-ca").contains("UnknownIssuer"),
        "{}",
        line("tls-wrong-ca")
    );
    let nocert = line("mtls-no-cert");
    assert!(
        nocert.contains("CertificateRequired") || nocert.contains("certificate"),
        "{nocert}"
    );
    assert!(
        !log.contains("not-the-password") && !log.contains(Mosquitto::PASSWORD),
        "passwords are never logged"
    );
    gw.proc.stop();
}

/// A device whose clock says 2099 (issue 11 item 7): its readings are refused and counted, and
/// the good ones around them arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_stamped_in_the_future_are_refused_and_counted() {
    let influx = Influx1::start();
    influx.create_db("future").await;
    let broker_ = Mosquitto::start();
    let dir = scratch_dir("mqtt-future");
    let toml = site(
        &influx,
        "future",
        "health_interval = \"1s\"",
        &broker("b", &broker_.url_plain(), "sensors/+/telemetry", ""),
    );
    let mut gw = Gateway::start(&dir, &toml, &[]);
    gw.wait_log("connected to broker", Duration::from_secs(30));
    let y2099: i64 = 4_070_908_800_000;
    let mut all = messages("sensors/d1/telemetry", 0..20);
    for i in 0..10 {
        all.push((
            "sensors/d1/telemetry".to_string(),
            format!(r#"{{"ts":{},"data":{{"pm10":999,"pm25":999}}}}"#, y2099 + i),
        ));
    }
    publish_many(broker_.port_plain(), all, 1);
    wait_pm10_count(&influx, "future", 20, Duration::from_secs(30)).await;
    let health = eventually(
        "20 future values counted",
        Duration::from_secs(30),
        || async {
            let rows =
                latest_by_device(&influx, "future", "gateway", "WHERE component = 'pipeline'")
                    .await;
            let r = rows.values().next().cloned()?;
            (field(Some(&r), "future_values") == Some(20.0)).then_some(r)
        },
    )
    .await;
    assert_eq!(field(Some(&health), "future_values"), Some(20.0));
    assert_eq!(pm10_count(&influx, "future", "").await, 20);
    assert_eq!(pm10_count(&influx, "future", "WHERE pm10 = 999").await, 0);
    gw.proc.stop();
    assert!(gw.log().contains("stamped too far in the future"));
}

/// Two hubs in one shared subscription (`$share/hubs/...`) split a feed of 20 devices: every
/// message is stored once across the group (each hub writes under its own site id, so a
/// message delivered to both would show as two rows), both hubs take part, and while one hub
/// is stopped nothing is lost (Mosquitto gives its share to the other or keeps it in the
/// stopped hub's persistent session until it is back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_delivers_each_message_once_across_the_group() {
    const DEVICES: usize = 20;
    let influx = Influx1::start();
    influx.create_db("share").await;
    let mosq = Mosquitto::start();
    let hub_toml = |id: &str| {
        format!(
            "[site]\nid = \"{id}\"\n\n{}\n[store]\ndir = \"store\"\ncommit_interval = \"50ms\"\n\n{}",
            influx_v1(&influx.url(), "share"),
            broker(
                "bureau",
                &mosq.url_plain(),
                "$share/hubs/sensors/+/telemetry",
                ""
            )
        )
    };
    let mut hubs: Vec<Gateway> = ["hub-a", "hub-b"]
        .iter()
        .map(|id| {
            let mut g = Gateway::start(
                &scratch_dir(&format!("mqtt-share-{id}")),
                &hub_toml(id),
                &[],
            );
            g.wait_log("subscribing", Duration::from_secs(30));
            g
        })
        .collect();
    // Both hubs' SUBSCRIBE reached the broker before the first message.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let feed = |range: std::ops::Range<usize>| -> Vec<(String, String)> {
        range
            .map(|i| (format!("sensors/d{:02}/telemetry", i % DEVICES), reading(i)))
            .collect()
    };
    let port = mosq.port_plain();
    publish_many(port, feed(0..2000), 1);
    wait_pm10_count(&influx, "share", 2000, Duration::from_secs(60)).await;

    // One hub stopped, 500 more messages, the hub back: all 2,500 once.
    hubs[1].proc.stop();
    publish_many(port, feed(2000..2500), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let while_down = pm10_count(
        &influx,
        "share",
        "WHERE site = 'hub-a' AND time >= 1790000002000ms",
    )
    .await;
    hubs[1].proc.respawn();
    wait_pm10_count(&influx, "share", 2500, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let a = pm10_count(&influx, "share", "WHERE site = 'hub-a'").await;
    let b = pm10_count(&influx, "share", "WHERE site = 'hub-b'").await;
    assert_eq!(
        a + b,
        2500,
        "hub-a {a} + hub-b {b}: a message stored twice or lost"
    );
    assert!(
        a > 0 && b > 0,
        "one hub took everything: hub-a {a}, hub-b {b}"
    );
    // Every message's own timestamp once: 2,500 distinct times, the expected ones.
    let rows = influx
        .query_rows("share", "SELECT pm10, device FROM air")
        .await;
    let mut seen: Vec<i64> = rows
        .iter()
        .filter_map(|r| r.first().and_then(Value::as_i64))
        .collect();
    seen.sort_unstable();
    let expected: Vec<i64> = (0..2500).map(|i| BASE_MS + i).collect();
    assert_eq!(seen, expected, "each message's timestamp exactly once");
    eprintln!(
        "shared subscription: hub-a {a}, hub-b {b}; of the 500 sent while hub-b was stopped, hub-a stored {while_down} at once"
    );
    for h in &mut hubs {
        h.proc.stop();
    }
}
