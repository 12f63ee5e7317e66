//! Link faults on real peers: a Modbus device that goes away and comes back, an InfluxDB that
//! stops and restarts, a database that is missing (held until it is there, or created), a batch
//! whose content is rejected (set aside).

mod common;

use std::time::Duration;

use common::site::{Gateway, dust_monitor_unit, influx_v1, latest_by_device};
use common::{Influx1, ModbusSim, eventually, now_ms, scratch_dir};
use serde_json::{Value, json};

fn site(output: &str, sim_port: u16) -> String {
    format!(
        "[site]\nid = \"faults\"\nhealth_interval = \"1s\"\n\n{output}\n[store]\ndir = \"store\"\n\n[[modbus]]\nname = \"tcp\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{sim_port}\"\ntimeout = \"300ms\"\ninterval = \"1s\"\n\n  [[modbus.device]]\n  id = \"dust-01\"\n  unit = 1\n  profile = \"generic-dust-monitor\"\n  down_after = 2\n"
    )
}

fn f(row: Option<&std::collections::BTreeMap<String, Value>>, k: &str) -> Option<f64> {
    row.and_then(|r| r.get(k)).and_then(Value::as_f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_loss_and_influxdb_outage_lose_nothing() {
    let mut influx = Influx1::start();
    influx.create_db("faults").await;
    let (spec, _) = dust_monitor_unit(1);
    let mut sim = ModbusSim::tcp(&json!({ "devices": [spec] }));
    let dir = scratch_dir("e2e-faults");
    let mut gw = Gateway::start(
        &dir,
        &site(&influx_v1(&influx.url(), "faults"), sim.port()),
        &[],
    );
    gw.wait_started();
    eventually("first reading", Duration::from_secs(30), || async {
        let rows = latest_by_device(&influx, "faults", "air", "").await;
        rows.contains_key("dust-01").then_some(())
    })
    .await;

    // The device goes away: the gateway notices, marks it down, and keeps running.
    sim.stop();
    eventually(
        "device_up = 0 after the device went away",
        Duration::from_secs(30),
        || async {
            let rows =
                latest_by_device(&influx, "faults", "gateway", "WHERE component = 'modbus'").await;
            (f(rows.get("dust-01"), "device_up") == Some(0.0)).then_some(())
        },
    )
    .await;

    // It comes back with new values: reconnect, up again, the new values arrive.
    sim.start_again();
    let (mut spec, _) = dust_monitor_unit(1);
    spec["holding"]["1"] = json!(123);
    sim.update(&json!({ "devices": [spec] }));
    let back = now_ms();
    eventually("new pm10 after the device came back", Duration::from_secs(60), || async {
        let rows = influx
            .query_rows(
                "faults",
                &format!("SELECT pm10 FROM air WHERE device = 'dust-01' AND time > {back}ms ORDER BY time DESC LIMIT 1"),
            )
            .await;
        (rows.first().and_then(|r| r.get(1)).and_then(Value::as_f64) == Some(123.0)).then_some(())
    })
    .await;
    eventually("device_up = 1 again", Duration::from_secs(30), || async {
        let rows =
            latest_by_device(&influx, "faults", "gateway", "WHERE component = 'modbus'").await;
        (f(rows.get("dust-01"), "device_up") == Some(1.0)).then_some(())
    })
    .await;

    // InfluxDB goes away for a while: readings are held and arrive when it is back.
    let outage_start = now_ms();
    influx.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let outage_end = now_ms();
    influx.start_again();
    let during = eventually("readings taken during the outage", Duration::from_secs(60), || async {
        let rows = influx
            .query_rows(
                "faults",
                &format!(
                    "SELECT count(pm10) FROM air WHERE device = 'dust-01' AND time > {outage_start}ms AND time < {outage_end}ms"
                ),
            )
            .await;
        let n = rows.first().and_then(|r| r.get(1)).and_then(Value::as_f64).unwrap_or(0.0);
        (n >= 4.0).then_some(n)
    })
    .await;
    assert!(
        during <= 6.0,
        "one reading per second during a 5 s outage, got {during}"
    );
    let writer = eventually(
        "writer health after the outage",
        Duration::from_secs(30),
        || async {
            let rows =
                latest_by_device(&influx, "faults", "gateway", "WHERE component = 'writer'").await;
            let w = rows.get("dustgate").cloned()?;
            (f(Some(&w), "retries") >= Some(1.0) && f(Some(&w), "uplink_lag_s") < Some(3.0))
                .then_some(w)
        },
    )
    .await;
    assert_eq!(f(Some(&writer), "dropped_points"), Some(0.0));
    assert_eq!(f(Some(&writer), "dead_letter_points"), Some(0.0));

    gw.proc.stop();
    let log = gw.log();
    for needle in [
        "device down",
        "device up",
        "write failed; holding points and retrying",
        "writes succeed again",
    ] {
        assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    }
}

/// The gateway's `/metrics`.
async fn metrics(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    match common::http_client().get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The value of the first sample whose line starts with `prefix` (a name, or a name and the
/// start of its labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| {
            l.strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with([' ', '{', ',']) || prefix.ends_with('"'))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// What the dead-letter folder holds (empty when it is not there).
fn dead_letters(dir: &std::path::Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(dir.join("store").join("dead-letter"))
        .into_iter()
        .flatten()
        .flatten()
    {
        all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
    }
    all
}

async fn count_pm10(influx: &Influx1, db: &str) -> f64 {
    let rows = influx
        .query_rows(db, "SELECT count(pm10) FROM air WHERE device = 'dust-01'")
        .await;
    rows.first()
        .and_then(|r| r.get(1))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

const MISSING_LINE: &str = "destination missing";

// Before issue 10 a missing database dead-lettered every batch, and this test asserted that.
// That was wrong by design: a missing destination is an operator's mistake to fix, so the
// readings are held in the store until the database is there, and nothing is set aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_holds_the_readings_until_it_is_created() {
    let influx = Influx1::start();
    // The database does not exist: InfluxDB answers 404 "database not found" to every write.
    let (spec, _) = dust_monitor_unit(1);
    let sim = ModbusSim::tcp(&json!({ "devices": [spec] }));
    let dir = scratch_dir("e2e-missing-database");
    let http = common::free_port();
    let toml = format!(
        "{}\n[http]\nlisten = \"127.0.0.1:{http}\"\n",
        site(&influx_v1(&influx.url(), "held"), sim.port())
    );
    let mut gw = Gateway::start(&dir, &toml, &[]);
    gw.wait_started();
    let started = std::time::Instant::now();
    let m = eventually(
        "the destination shown missing",
        Duration::from_secs(30),
        || async {
            let m = metrics(http).await;
            (sample(&m, "dustgate_writer_destination_missing") == Some(1.0)).then_some(m)
        },
    )
    .await;
    let first = sample(&m, "dustgate_queue_points").unwrap_or(0.0);
    // The status API says so too (the page shows it in red from there).
    let status = common::http_client()
        .get(format!("http://127.0.0.1:{http}/api/status"))
        .send()
        .await
        .expect("api/status")
        .text()
        .await
        .expect("body");
    let status: Value = serde_json::from_str(&status).expect("json");
    assert_eq!(
        status["writer"]["destination_missing"],
        json!(true),
        "{status}"
    );
    assert!(
        status["writer"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("database not found")),
        "{status}"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let m = metrics(http).await;
    let held = sample(&m, "dustgate_queue_points").unwrap_or(0.0);
    assert!(
        held > first,
        "the store grows while the database is missing: {first} → {held}"
    );
    assert_eq!(sample(&m, "dustgate_dead_letter_points_total"), Some(0.0));
    assert_eq!(dead_letters(&dir), "", "nothing is set aside");
    let polls = sample(&m, "dustgate_polls_total{device=\"dust-01\"").unwrap_or(0.0);
    assert!(polls >= 8.0, "{polls} polls in about 10 s");
    // Loud but not per batch: one line when it starts, then one a minute.
    let secs = started.elapsed().as_secs();
    let lines = gw
        .log()
        .lines()
        .filter(|l| l.contains(MISSING_LINE))
        .count();
    assert!(
        (1..=2).contains(&lines),
        "{lines} lines about the missing database in {secs} s:\n{}",
        gw.log()
    );

    // Someone creates the database: every held reading arrives, and the gauge goes back to 0.
    influx.create_db("held").await;
    let arrived = eventually(
        "the held readings in InfluxDB",
        Duration::from_secs(30),
        || async {
            let n = count_pm10(&influx, "held").await;
            (n >= polls).then_some(n)
        },
    )
    .await;
    eventually("the gauge back to 0", Duration::from_secs(10), || async {
        (sample(&metrics(http).await, "dustgate_writer_destination_missing") == Some(0.0))
            .then_some(())
    })
    .await;
    gw.wait_log("destination is there again", Duration::from_secs(10));
    // A graceful stop delivers the rest, with a last health point holding the poll count.
    gw.proc.stop();
    let health = latest_by_device(&influx, "held", "gateway", "WHERE component = 'modbus'").await;
    let final_polls = f(health.get("dust-01"), "polls").unwrap_or(0.0);
    let stored = count_pm10(&influx, "held").await;
    // The gateway's own health points were held too: the missing period shows afterwards.
    let flagged = influx
        .query_rows(
            "held",
            "SELECT max(destination_missing) FROM gateway WHERE component = 'writer'",
        )
        .await;
    assert_eq!(
        flagged
            .first()
            .and_then(|r| r.get(1))
            .and_then(Value::as_f64),
        Some(1.0),
        "{flagged:?}"
    );
    eprintln!(
        "held: {held} points queued after ~{secs} s, {polls} readings then, {arrived} arrived after CREATE DATABASE; {stored} stored of {final_polls} polls at stop; {lines} log line(s)"
    );
    assert_eq!(stored, final_polls, "every reading is stored, none lost");
    assert_eq!(dead_letters(&dir), "");
    drop(sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_is_created_when_create_database_is_true() {
    let influx = Influx1::start();
    let (spec, _) = dust_monitor_unit(1);
    let sim = ModbusSim::tcp(&json!({ "devices": [spec] }));
    let dir = scratch_dir("e2e-create-database");
    let output = format!(
        "{}create_database = true\n",
        influx_v1(&influx.url(), "made")
    );
    let mut gw = Gateway::start(&dir, &site(&output, sim.port()), &[]);
    gw.wait_started();
    gw.wait_log("InfluxDB database created", Duration::from_secs(30));
    let databases = influx.query_rows("", "SHOW DATABASES").await;
    assert!(
        databases.iter().any(|r| r.first() == Some(&json!("made"))),
        "{databases:?}"
    );
    eventually(
        "readings in the new database",
        Duration::from_secs(30),
        || async { (count_pm10(&influx, "made").await >= 3.0).then_some(()) },
    )
    .await;
    // Dropped under the running gateway: the next write finds it missing and creates it again.
    influx.execute("", "DROP DATABASE \"made\"").await;
    eventually(
        "readings in the database created again",
        Duration::from_secs(30),
        || async {
            let databases = influx.query_rows("", "SHOW DATABASES").await;
            if !databases.iter().any(|r| r.first() == Some(&json!("made"))) {
                return None;
            }
            (count_pm10(&influx, "made").await >= 2.0).then_some(())
        },
    )
    .await;
    let created = gw
        .log()
        .lines()
        .filter(|l| l.contains("InfluxDB database created"))
        .count();
    assert!(created >= 2, "at start and after the drop: {created}");
    gw.proc.stop();
    let log = gw.log();
    assert!(!log.contains(MISSING_LINE), "{log}");
    assert_eq!(dead_letters(&dir), "");
    drop(sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_is_not_an_excuse_for_bad_content_which_is_still_dead_lettered() {
    let influx = Influx1::start();
    influx.create_db("conflict").await;
    // `pm10` is a string in this shard: the gateway's float pm10 is a field type conflict (400).
    let now = now_ms();
    let write = reqwest::Url::parse_with_params(
        &format!("{}/write", influx.url()),
        &[("db", "conflict"), ("precision", "ms")],
    )
    .expect("url");
    let r = common::http_client()
        .post(write)
        .body(format!(
            "air,device=dust-01,site=faults pm10=\"high\" {now}\n"
        ))
        .send()
        .await
        .expect("write");
    assert_eq!(r.status().as_u16(), 204);
    let (spec, _) = dust_monitor_unit(1);
    let sim = ModbusSim::tcp(&json!({ "devices": [spec] }));
    let dir = scratch_dir("e2e-dead-letter");
    let http = common::free_port();
    let toml = format!(
        "{}\n[http]\nlisten = \"127.0.0.1:{http}\"\n",
        site(&influx_v1(&influx.url(), "conflict"), sim.port())
    );
    let mut gw = Gateway::start(&dir, &toml, &[]);
    gw.wait_started();
    let text = eventually("a dead-letter file with readings", Duration::from_secs(30), || async {
        let all = dead_letters(&dir);
        all.contains("air,device=dust-01,site=faults pm25=35,pm10=80,tsp=136,noise=65.2,temperature=-3.5,humidity=60.9,pressure=101.32,wind_speed=2.3,wind_direction=270 ")
            .then_some(all)
    })
    .await;
    assert!(
        text.lines().any(|l| l.starts_with('#')
            && l.contains("HTTP 400")
            && l.contains("field type conflict")),
        "{text}"
    );
    let m = metrics(http).await;
    assert_eq!(
        sample(&m, "dustgate_writer_destination_missing"),
        Some(0.0),
        "{m}"
    );
    assert!(
        sample(&m, "dustgate_dead_letter_points_total") >= Some(1.0),
        "{m}"
    );
    assert!(gw.proc.is_running(), "the gateway keeps running");
    gw.proc.stop();
    assert!(gw.log().contains("set aside in the dead-letter file"));
    assert!(!gw.log().contains(MISSING_LINE));
    drop(sim);

    // The cause fixed (the string field gone), `dustgate replay` puts the batches in, once.
    let pm10_lines = dead_letters(&dir)
        .lines()
        .filter(|l| l.starts_with("air,device=dust-01,") && l.contains(",pm10="))
        .count();
    assert!(pm10_lines >= 1);
    influx.query("conflict", "DROP MEASUREMENT air").await;
    let pm10_count = || async {
        let rows = influx
            .query_rows("conflict", "SELECT count(pm10) FROM air")
            .await;
        rows.first().and_then(|r| r[1].as_u64()).unwrap_or(0)
    };
    assert_eq!(pm10_count().await, 0);
    let config = dir.join("site.toml");
    let dustgate = |args: &[&str]| {
        let out = std::process::Command::new(Gateway::binary())
            .args(args)
            .arg("--config")
            .arg(&config)
            .current_dir(&dir)
            .output()
            .expect("dustgate");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, status) = dustgate(&["store", "status"]);
    assert!(ok, "{status}");
    assert!(status.contains("influx: 1 files,"), "{status}");
    let (ok, dry) = dustgate(&["replay", "--dry-run"]);
    assert!(ok && dry.contains("nothing sent"), "{dry}");
    assert_eq!(pm10_count().await, 0, "a dry run sends nothing");
    let (ok, out) = dustgate(&["replay"]);
    assert!(ok, "{out}");
    assert!(out.contains(" kept") && out.contains(", 0 kept"), "{out}");
    assert_eq!(pm10_count().await, pm10_lines as u64, "{out}");
    let (ok, again) = dustgate(&["replay"]);
    assert!(
        ok && again.contains("no dead-lettered InfluxDB batches"),
        "{again}"
    );
    assert_eq!(pm10_count().await, pm10_lines as u64, "once");
    let (_, status) = dustgate(&["store", "status"]);
    assert!(status.contains("influx: 0 files,"), "{status}");
    assert!(
        dir.join("store/dead-letter/replayed").exists(),
        "the replayed batches are kept for the record"
    );
    eprintln!("replay: {pm10_lines} dead-lettered readings in InfluxDB once\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_the_servers_body_limit_are_split_and_all_arrive() {
    // InfluxDB refuses bodies over 4000 bytes with 413; the gateway's batches are bigger.
    let influx = Influx1::start_with("  max-body-size = 4000");
    influx.create_db("split").await;
    let at = common::site::all_types();
    let sim =
        ModbusSim::tcp(&json!({ "devices": [at.unit_spec(1), at.unit_spec(2), at.unit_spec(3)] }));
    let toml = format!(
        "[site]\nid = \"split\"\nhealth_interval = \"1s\"\n\n[influx]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"split\"\ngzip = false\nflush_interval = \"3s\"\n\n[store]\ndir = \"store\"\n\n[[modbus]]\nname = \"tcp\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\ninterval = \"500ms\"\n{}",
        influx.url(),
        sim.port(),
        (1..=3)
            .map(|u| format!(
                "\n  [[modbus.device]]\n  id = \"d{u}\"\n  unit = {u}\n  profile = \"all-types\"\n"
            ))
            .collect::<String>()
    );
    let dir = scratch_dir("e2e-split");
    let mut gw = Gateway::start(&dir, &toml, &[("all-types", at.profile.clone())]);
    gw.wait_started();
    gw.wait_log(
        "413 payload too large: splitting the batch",
        Duration::from_secs(30),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A graceful stop flushes everything, including a last health point with the poll counts.
    gw.proc.stop();
    let health = latest_by_device(&influx, "split", "gateway", "WHERE component = 'modbus'").await;
    for d in ["d1", "d2", "d3"] {
        let polls = f(health.get(d), "polls").unwrap_or(0.0);
        let rows = influx
            .query_rows(
                "split",
                &format!("SELECT count(u16_abcd) FROM e2e WHERE device = '{d}'"),
            )
            .await;
        let stored = rows
            .first()
            .and_then(|r| r.get(1))
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        assert!(polls >= 5.0, "{d}: {polls} polls");
        assert_eq!(
            stored, polls,
            "{d}: every poll is stored once the batches are split"
        );
    }
    let writer = latest_by_device(&influx, "split", "gateway", "WHERE component = 'writer'").await;
    assert_eq!(f(writer.get("dustgate"), "dead_letter_points"), Some(0.0));
    drop(sim);
}
