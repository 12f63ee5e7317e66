//! HJ 212 ingest end to end: `dustgate run` with `[[hj212.listen]]`, a real InfluxDB 1.6.7, and
//! the monitor side written independently in Python (tests/peers/hj212_monitor.py: its own CRC,
//! framing and sockets).
//!
//! - Every vector of tests/data/hj212-vectors.tsv behaves as marked, sent whole, byte by byte,
//!   cut at random places and glued into garbage; values read back from InfluxDB exactly.
//! - An answer (CN=9014) only after the commit: kill -9 under load loses nothing acknowledged.
//! - A hub: 1,000 monitors connected at once, every reading lands.
//! - A station's password, and data flags written with the value.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::site::{Gateway, influx_v1, metric_value};
use common::{Influx1, free_port, repo_root, scratch_dir};
use serde_json::Value;

const TZ: &str = "Asia/Shanghai";

/// (id, mark, frame) of the vector file; frames with `\r\n` written literally.
fn vectors() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(repo_root().join("tests/data/hj212-vectors.tsv"))
        .expect("tests/data/hj212-vectors.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut it = l.splitn(3, '\t');
            let id = it.next().unwrap_or("").to_string();
            let mark = it.next().unwrap_or("").to_string();
            let frame = it.next().unwrap_or("").to_string();
            (id, mark, frame)
        })
        .collect()
}

fn peer() -> Command {
    let mut c = Command::new(common::python());
    c.arg(repo_root().join("tests/peers/hj212_monitor.py"));
    c
}

/// A CN=2011 frame (Flag=5) built by the Python peer, as one line (CR LF written `\r\n`).
fn frame_2011(mn: &str, pw: &str, qn: &str, cp: &str) -> String {
    let out = peer()
        .args([
            "frame", "--mn", mn, "--cn", "2011", "--pw", pw, "--qn", qn, "--cp", cp,
        ])
        .output()
        .expect("hj212_monitor.py frame");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Sends `frames` (one a line) on one connection to `port` as `mode` says; the replies.
fn send(port: u16, mode: &str, frames: &[String], wait_s: f64) -> Vec<Value> {
    let mut child = peer()
        .args(["send", "--port", &port.to_string(), "--mode", mode])
        .args(["--seed", "7", "--wait", &wait_s.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs tests/peers/hj212_monitor.py");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(frames.join("\n").as_bytes())
        .expect("frames to the peer");
    let out = child.wait_with_output().expect("the peer finishes");
    assert!(
        out.status.success(),
        "hj212_monitor.py send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON reply line"))
        .collect()
}

/// `MN=` of a frame, when it has a usable one.
fn mn_of(frame: &str) -> Option<&str> {
    let i = frame.find("MN=")?;
    let rest = &frame[i + 3..];
    let mn = &rest[..rest.find(';').unwrap_or(rest.len())];
    (!mn.is_empty()).then_some(mn)
}

/// A labelled sample of `/metrics`.
fn sample(http: u16, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, body) = common::http_get_blocking(http, "/metrics").expect("/metrics");
    let want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| want.iter().all(|w| l.contains(w.as_str())))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn zone() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get(TZ).expect("zone")
}

/// DataTime (site local, 14 digits) as ms.
fn local_ms(datatime: &str) -> i64 {
    let d = datatime;
    let iso = format!(
        "{}-{}-{}T{}:{}:{}",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[8..10],
        &d[10..12],
        &d[12..14]
    );
    let dt: jiff::civil::DateTime = iso.parse().expect("a DataTime");
    zone()
        .to_timestamp(dt)
        .expect("a time in the zone")
        .as_millisecond()
}

/// ms as a DataTime (site local, 14 digits).
fn local_datatime(ms: i64) -> String {
    let t = jiff::Timestamp::from_millisecond(ms).expect("a time");
    common::hj212_time(zone().to_datetime(t))
}

/// The row of `measurement` for `device` at `t` (ms), column → value.
async fn row_at(
    influx: &Influx1,
    db: &str,
    measurement: &str,
    device: &str,
    t: i64,
) -> BTreeMap<String, Value> {
    let q = format!("SELECT * FROM \"{measurement}\" WHERE device = '{device}' AND time = {t}ms");
    let v = influx.query(db, &q).await;
    let series = &v["results"][0]["series"][0];
    let cols: Vec<String> = series["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c.as_str().unwrap_or("").to_string())
        .collect();
    let row = series["values"][0].as_array().cloned().unwrap_or_default();
    cols.into_iter().zip(row).collect()
}

/// [`row_at`], waiting for the writer (an answer means durable in the store, not yet written).
async fn row_eventually(
    influx: &Influx1,
    db: &str,
    measurement: &str,
    device: &str,
    t: i64,
) -> BTreeMap<String, Value> {
    let t0 = std::time::Instant::now();
    loop {
        let r = row_at(influx, db, measurement, device, t).await;
        if !r.is_empty() || t0.elapsed() > Duration::from_secs(30) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn site_toml(influx: &Influx1, db: &str, http: u16, listeners: &str) -> String {
    format!(
        "[site]\nid = \"hj-site\"\ntimezone = \"{TZ}\"\nhealth_interval = \"1s\"\n\n{}\n[store]\ndir = \"store\"\ncommit_interval = \"50ms\"\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n{listeners}",
        influx_v1(&influx.url(), db)
    )
}

async fn wait_for<F, Fut>(what: &str, probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut probe = probe;
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        if probe().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vector_behaves_as_marked_whole_bytewise_cut_and_in_garbage() {
    let influx = Influx1::start();
    influx.create_db("hjv").await;
    let http = free_port();
    let (strict, lenient) = (free_port(), free_port());
    let listeners = format!(
        "[[hj212.listen]]\nname = \"strict\"\nlisten = \"127.0.0.1:{strict}\"\nunknown = \"accept\"\nmax_frame_rate = 1000\n\n[[hj212.listen]]\nname = \"lenient\"\nlisten = \"127.0.0.1:{lenient}\"\ncrc = [\"hj212\", \"modbus\"]\nunknown = \"accept\"\nmax_frame_rate = 1000\n"
    );
    let dir = scratch_dir("e2e-hj212-vectors");
    let mut gw = Gateway::start(&dir, &site_toml(&influx, "hjv", http, &listeners), &[]);
    gw.wait_log("HJ 212 listener listening", Duration::from_secs(20));

    let all = vectors();
    let frames: Vec<String> = all.iter().map(|(_, _, f)| f.clone()).collect();
    // Valid frames with an MN are accepted (V12 has an empty MN, W10 none: refused as `mn`).
    let accepted = all
        .iter()
        .filter(|(_, m, f)| m == "valid" && mn_of(f).is_some())
        .count();
    let refused = all.iter().filter(|(_, m, _)| m != "valid").count();
    assert_eq!((accepted, refused), (13, 14), "the vector file changed");

    let modes = ["whole", "bytes", "cuts", "garbage"];
    for (i, mode) in modes.iter().enumerate() {
        let replies = send(strict, mode, &frames, 2.0);
        // Answers: the uploads that asked for one, V7 (2081, Flag=5) and W2, W3 (2051, Flag=9,
        // one QN): each a checked CN=9014 with ST=91, the same QN and the ack bit cleared.
        let mut got: Vec<(String, String)> = replies
            .iter()
            .map(|r| {
                assert_eq!(r["crc_ok"], true, "{r}");
                assert_eq!(
                    (r["cn"].as_str(), r["st"].as_str()),
                    (Some("9014"), Some("91")),
                    "{r}"
                );
                (
                    r["qn"].as_str().unwrap_or("").to_string(),
                    r["flag"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("20231008130452757".to_string(), "4".to_string()),
                ("20240520210700000".to_string(), "8".to_string()),
                ("20240520210700000".to_string(), "8".to_string()),
            ],
            "mode {mode}"
        );
        let frames_total = sample(
            http,
            "dustgate_hj212_frames_total",
            &[("listener", "strict")],
        );
        assert_eq!(
            frames_total,
            ((i + 1) * accepted) as f64,
            "mode {mode}: every valid frame, and nothing else, accepted\n{}",
            gw.log()
        );
    }
    let refusals: f64 = ["crc", "length", "header"]
        .iter()
        .map(|r| {
            sample(
                http,
                "dustgate_hj212_rejected_total",
                &[("listener", "strict"), ("reason", r)],
            )
        })
        .sum();
    assert!(
        refusals >= (modes.len() * refused) as f64,
        "{refusals} CRC/length refusals for {refused} bad frames × {} modes",
        modes.len()
    );
    assert_eq!(
        sample(
            http,
            "dustgate_hj212_rejected_total",
            &[("listener", "strict"), ("reason", "mn")]
        ),
        (modes.len() * 2) as f64,
        "V12 and W10 refused for their MN in each mode"
    );

    // The lenient listener also takes the CRC-16/MODBUS frames: X7 (9013), X8 (1062), X10
    // (2081) are accepted; X5 (a 2051 history request) and X6 (2011 with an empty CP) carry no
    // DataTime and are refused for it, never stamped with the arrival time.
    send(lenient, "whole", &frames, 1.0);
    assert_eq!(
        sample(
            http,
            "dustgate_hj212_frames_total",
            &[("listener", "lenient")]
        ),
        (accepted + 3) as f64
    );
    assert_eq!(
        sample(
            http,
            "dustgate_hj212_rejected_total",
            &[("listener", "lenient"), ("reason", "datatime")]
        ),
        2.0
    );

    // Values, exactly, at the DataTime in the site's zone.
    let v10 = local_ms("20180821142509");
    wait_for("V10 in InfluxDB", || async {
        !row_at(&influx, "hjv", "air", "690000D5800028F889221AC0", v10)
            .await
            .is_empty()
    })
    .await;
    let r = row_eventually(&influx, "hjv", "air", "690000D5800028F889221AC0", v10).await;
    for m in [
        "pm25",
        "pm10",
        "tsp",
        "noise",
        "temperature",
        "humidity",
        "pressure",
        "wind_speed",
        "wind_direction",
    ] {
        assert_eq!(
            r.get(m).and_then(Value::as_f64),
            Some(0.0),
            "V10 {m}: {r:?}"
        );
    }
    let v2 = local_ms("20220513162600");
    wait_for("V2 in air_minute", || async {
        !row_at(&influx, "hjv", "air_minute", "JLYP01_AIR01_0001", v2)
            .await
            .is_empty()
    })
    .await;
    let r = row_eventually(&influx, "hjv", "air_minute", "JLYP01_AIR01_0001", v2).await;
    for (m, want) in [
        ("pm25", 14.0),
        ("pm10", 31.0),
        ("wind_speed", 1.0),
        ("wind_direction", 11.0),
        ("temperature", 17.0),
        ("humidity", 85.0),
        ("pressure", 95.0),
    ] {
        assert_eq!(
            r.get(m).and_then(Value::as_f64),
            Some(want),
            "V2 {m}: {r:?}"
        );
    }
    // Its gases are no canonical metric: kept, not judged, in hj212_extra.
    let x = row_eventually(&influx, "hjv", "hj212_extra", "JLYP01_AIR01_0001", v2).await;
    assert_eq!(
        x.get("a21004_avg").and_then(Value::as_f64),
        Some(4.0),
        "{x:?}"
    );
    assert_eq!(x.get("cn").and_then(Value::as_str), Some("2051"), "{x:?}");
    let v4 = local_ms("20210301111100");
    let r = row_eventually(&influx, "hjv", "water", "ZLDSZ20210127", v4).await;
    for (m, want) in [
        ("ph", 8.33),
        ("do", 10.15),
        ("water_temperature", 9.7),
        ("conductivity", 1425.0),
        ("turbidity", 13.10),
        ("tp", 0.0),
        ("tn", 3.563168),
        ("nh3n", 0.09055002),
    ] {
        assert_eq!(
            r.get(m).and_then(Value::as_f64),
            Some(want),
            "V4 {m}: {r:?}"
        );
    }
    assert!(gw.proc.is_running(), "{}", gw.log());
    gw.proc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stations_password_and_its_data_flags() {
    let influx = Influx1::start();
    influx.create_db("hjpw").await;
    let http = free_port();
    let port = free_port();
    // SAFETY: set before the child starts; only this test of the binary uses it.
    unsafe { std::env::set_var("E2E_HJ212_PW", "654321") };
    let listeners = format!(
        "[[hj212.listen]]\nname = \"site\"\nlisten = \"127.0.0.1:{port}\"\n\n  [[hj212.listen.station]]\n  mn = \"010000A8900016F000169DC0\"\n  device = \"dust-03\"\n  password_env = \"E2E_HJ212_PW\"\n"
    );
    let dir = scratch_dir("e2e-hj212-password");
    let mut gw = Gateway::start(&dir, &site_toml(&influx, "hjpw", http, &listeners), &[]);
    gw.wait_log("HJ 212 listener listening", Duration::from_secs(20));
    let frame = |pw: &str, dt: &str, pm10: &str, flag: &str| {
        let cp = format!(
            "DataTime={dt};a34002-Rtd={pm10},a34002-Flag={flag};a34004-Rtd=40,a34004-Flag=N"
        );
        frame_2011("010000A8900016F000169DC0", pw, &format!("{dt}000"), &cp)
    };
    let now = common::now_ms();
    let dt = |secs_ago: i64| local_datatime(now - secs_ago * 1000);
    let (t1, t2, t3) = (dt(30), dt(20), dt(10));
    let replies = send(
        port,
        "whole",
        &[
            frame("123456", &t1, "80", "N"), // wrong password: refused, no answer
            frame("654321", &t2, "300", "M"), // maintenance: written with its flag
            frame("654321", &t3, "85", "N"),
        ],
        1.5,
    );
    let qns: Vec<String> = replies
        .iter()
        .filter_map(|r| r["qn"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        qns,
        vec![format!("{t2}000"), format!("{t3}000")],
        "{replies:?}"
    );
    assert_eq!(
        sample(
            http,
            "dustgate_hj212_rejected_total",
            &[("listener", "site"), ("reason", "password")]
        ),
        1.0
    );
    let r = row_eventually(&influx, "hjpw", "air", "dust-03", local_ms(&t2)).await;
    assert_eq!(r.get("pm10").and_then(Value::as_f64), Some(300.0), "{r:?}");
    assert_eq!(
        r.get("pm10_flag").and_then(Value::as_str),
        Some("M"),
        "{r:?}"
    );
    assert!(r.get("pm25_flag").is_none_or(Value::is_null), "{r:?}");
    assert!(
        row_at(&influx, "hjpw", "air", "dust-03", local_ms(&t1))
            .await
            .is_empty()
    );
    // The station on /api/status: connected once, its frames, its refusal, its drift.
    let (_, body) = common::http_get_blocking(http, "/api/status").expect("/api/status");
    let status: Value = serde_json::from_str(&body).expect("JSON");
    let st = &status["hj212"][0]["stations"][0];
    assert_eq!(st["device"], "dust-03", "{status}");
    assert_eq!(st["frames"], 2, "{status}");
    assert_eq!(st["rejected"]["password"], 1, "{status}");
    let drift = st["drift_s"].as_f64().unwrap_or(-1.0);
    assert!((9.0..60.0).contains(&drift), "drift {drift} s: {status}");
    assert!(!gw.log().contains("654321"), "the password is never logged");
    gw.proc.stop();
}

/// Runs the peer's hub mode; its JSON tally.
fn hub(
    port: u16,
    stations: usize,
    frames: usize,
    start: i64,
    acked_file: Option<&std::path::Path>,
) -> std::process::Child {
    let mut c = peer();
    c.args([
        "hub",
        "--port",
        &port.to_string(),
        "--stations",
        &stations.to_string(),
    ])
    .args([
        "--frames",
        &frames.to_string(),
        "--start",
        &start.to_string(),
    ])
    .args(["--timeout", "60"])
    .env("TZ", TZ)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(f) = acked_file {
        c.arg("--acked-file").arg(f).args(["--interval-ms", "20"]);
    }
    c.spawn().expect("hj212_monitor.py hub")
}

fn tally(child: std::process::Child) -> Value {
    let out = child.wait_with_output().expect("the hub finishes");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("hub tally {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

async fn count_pm10(influx: &Influx1, db: &str) -> usize {
    let rows = influx.query_rows(db, "SELECT count(pm10) FROM air").await;
    rows.first()
        .and_then(|r| r.get(1))
        .and_then(Value::as_f64)
        .unwrap_or(0.0) as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_of_1000_monitors_connected_at_once_loses_no_reading() {
    let influx = Influx1::start();
    influx.create_db("hjhub").await;
    let http = free_port();
    let port = free_port();
    let listeners = format!(
        "[[hj212.listen]]\nname = \"hub\"\nlisten = \"127.0.0.1:{port}\"\nunknown = \"accept\"\n"
    );
    let dir = scratch_dir("e2e-hj212-hub");
    let mut gw = Gateway::start(&dir, &site_toml(&influx, "hjhub", http, &listeners), &[]);
    gw.wait_log("HJ 212 listener listening", Duration::from_secs(20));
    let start = common::now_ms() / 1000 - 3600;
    let t = tally(hub(port, 1000, 3, start, None));
    assert_eq!(
        (
            t["sent"].as_u64(),
            t["acked"].as_u64(),
            t["failed"].as_u64(),
            t["bad_acks"].as_u64()
        ),
        (Some(3000), Some(3000), Some(0), Some(0)),
        "{t}\n{}",
        gw.log()
    );
    // Acknowledged means durable: every one reaches InfluxDB.
    wait_for("3,000 readings in InfluxDB", || async {
        count_pm10(&influx, "hjhub").await >= 3000
    })
    .await;
    assert_eq!(count_pm10(&influx, "hjhub").await, 3000);
    assert_eq!(
        metric_value(http, "dustgate_dropped_points_total"),
        Some(0.0)
    );
    gw.proc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_reading() {
    let influx = Influx1::start();
    influx.create_db("hjkill").await;
    let http = free_port();
    let port = free_port();
    let listeners = format!(
        "[[hj212.listen]]\nname = \"hub\"\nlisten = \"127.0.0.1:{port}\"\nunknown = \"accept\"\nmax_frame_rate = 1000\n"
    );
    let dir = scratch_dir("e2e-hj212-kill");
    let mut gw = Gateway::start(&dir, &site_toml(&influx, "hjkill", http, &listeners), &[]);
    gw.wait_log("HJ 212 listener listening", Duration::from_secs(20));
    let acked = dir.join("acked.txt");
    let start = common::now_ms() / 1000 - 7200;
    let monitors = hub(port, 50, 200, start, Some(&acked));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.proc.kill9();
    let t = tally(monitors);
    let acked: Vec<(String, i64)> = std::fs::read_to_string(&acked)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (mn, dt) = l.split_once(' ')?;
            Some((mn.to_string(), local_ms(dt)))
        })
        .collect();
    assert!(
        acked.len() > 50 && (acked.len() as u64) < 10_000,
        "the kill came mid-run: {} acknowledged ({t})",
        acked.len()
    );
    gw.proc.respawn();
    // Until every acknowledged reading is there, or long enough that the missing are lost.
    let t0 = std::time::Instant::now();
    while count_pm10(&influx, "hjkill").await < acked.len()
        && t0.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = influx
        .query("hjkill", "SELECT pm10 FROM air GROUP BY device")
        .await;
    let mut stored = std::collections::HashSet::new();
    for s in rows["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let dev = s["tags"]["device"].as_str().unwrap_or("").to_string();
        for v in s["values"].as_array().into_iter().flatten() {
            stored.insert((dev.clone(), v[0].as_i64().unwrap_or(0)));
        }
    }
    let lost: Vec<&(String, i64)> = acked.iter().filter(|a| !stored.contains(*a)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged readings lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    eprintln!(
        "kill -9 under load: {} acknowledged, all in InfluxDB ({} stored)",
        acked.len(),
        stored.len()
    );
    gw.proc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_whose_clock_is_ten_minutes_slow_is_alerted_and_set() {
    let influx = Influx1::start();
    influx.create_db("hjclk").await;
    let http = free_port();
    let port = free_port();
    let listeners = format!(
        "[[hj212.listen]]\nname = \"site\"\nlisten = \"127.0.0.1:{port}\"\nmax_drift = \"2m\"\nset_time = true\n\n  [[hj212.listen.station]]\n  mn = \"HJZB0XH0150109\"\n  device = \"dust-04\"\n"
    );
    let dir = scratch_dir("e2e-hj212-clock");
    let mut gw = Gateway::start(&dir, &site_toml(&influx, "hjclk", http, &listeners), &[]);
    gw.wait_log("HJ 212 listener listening", Duration::from_secs(20));
    let sent_at = common::now_ms();
    let dt = local_datatime(sent_at - 600_000);
    let frame = frame_2011(
        "HJZB0XH0150109",
        "123456",
        &format!("{dt}000"),
        &format!("DataTime={dt};a34002-Rtd=70,a34002-Flag=N"),
    );
    let replies = send(port, "whole", &[frame], 1.5);
    // The data answer, and the set-time command with the gateway's local time (sent as soon
    // as the drift is seen; the answer waits for the store).
    let mut cns: Vec<&str> = replies.iter().filter_map(|r| r["cn"].as_str()).collect();
    cns.sort();
    assert_eq!(cns, vec!["1012", "9014"], "{replies:?}");
    let set = replies
        .iter()
        .find(|r| r["cn"] == "1012")
        .expect("the 1012");
    assert_eq!(set["crc_ok"], true);
    let system = set["cp"]
        .as_str()
        .and_then(|cp| cp.strip_prefix("SystemTime="))
        .expect("SystemTime in the 1012");
    let off = (local_ms(system) - sent_at).abs();
    assert!(
        off < 5_000,
        "SystemTime {system} is {off} ms from the gateway's clock"
    );
    // The reading keeps its DataTime (the station's clock), never the arrival time.
    let r = row_eventually(&influx, "hjclk", "air", "dust-04", local_ms(&dt)).await;
    assert_eq!(r.get("pm10").and_then(Value::as_f64), Some(70.0), "{r:?}");
    // The drift on /metrics and the data-quality alert in InfluxDB.
    let drift = sample(
        http,
        "dustgate_hj212_station_drift_seconds",
        &[("mn", "HJZB0XH0150109")],
    );
    assert!((599.0..620.0).contains(&drift), "drift {drift}");
    wait_for("the clock-drift alert in InfluxDB", || async {
        !influx
            .query_rows(
                "hjclk",
                "SELECT message FROM alert WHERE rule = 'clock-drift' AND state = 'open'",
            )
            .await
            .is_empty()
    })
    .await;
    let rows = influx
        .query_rows(
            "hjclk",
            "SELECT message FROM alert WHERE rule = 'clock-drift'",
        )
        .await;
    let msg = rows[0][1].as_str().unwrap_or("");
    assert!(msg.contains("dust-04 时钟偏差 6"), "{msg}");
    gw.proc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_wired_to_a_serial_line_is_read_and_answered() {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let influx = Influx1::start();
    influx.create_db("hjser").await;
    let http = free_port();
    let pty = common::PtyPair::start();
    let listeners = format!(
        "[[hj212.listen]]\nname = \"rs232\"\npath = \"{}\"\nbaud = 9600\n\n  [[hj212.listen.station]]\n  mn = \"010000A8900016F000169DC0\"\n  device = \"dust-05\"\n",
        pty.b().display()
    );
    let dir = scratch_dir("e2e-hj212-serial");
    let mut gw = Gateway::start(&dir, &site_toml(&influx, "hjser", http, &listeners), &[]);
    gw.wait_log("HJ 212 serial line open", Duration::from_secs(20));
    let dt = local_datatime(common::now_ms() - 5_000);
    let frame = frame_2011(
        "010000A8900016F000169DC0",
        "123456",
        &format!("{dt}123"),
        &format!("DataTime={dt};a34002-Rtd=66.6,a34002-Flag=N;LA-Rtd=58.2"),
    )
    .replace("\\r\\n", "\r\n");
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(pty.a())
        .expect("the monitor's end of the line");
    // Some garbage on the line first (a monitor powering up), then the frame in two writes.
    tty.write_all(b"\x00\xff junk ").expect("write");
    let (head, tail) = frame.as_bytes().split_at(40);
    tty.write_all(head).expect("write");
    std::thread::sleep(Duration::from_millis(50));
    tty.write_all(tail).expect("write");
    let mut got = Vec::new();
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(10) && !String::from_utf8_lossy(&got).contains("\r\n")
    {
        let mut buf = [0u8; 256];
        match tty.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let answer = String::from_utf8_lossy(&got).to_string();
    assert!(
        answer.contains(&format!("QN={dt}123;ST=91;CN=9014;")),
        "answer on the line: {answer:?}\n{}",
        gw.log()
    );
    let r = row_eventually(&influx, "hjser", "air", "dust-05", local_ms(&dt)).await;
    assert_eq!(r.get("pm10").and_then(Value::as_f64), Some(66.6), "{r:?}");
    assert_eq!(r.get("noise").and_then(Value::as_f64), Some(58.2), "{r:?}");
    gw.proc.stop();
}
