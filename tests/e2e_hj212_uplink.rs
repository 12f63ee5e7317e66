//! The HJ 212 uplink end to end: a pymodbus dust monitor whose PM10 moves → `dustgate run` with
//! two `[[hj212.upstream]]` platforms → the platform written independently in Python
//! (tests/peers/hj212_platform.py: its own parser, strict on length, CRC, CR LF and header
//! order), and a real InfluxDB 1.6.7.
//!
//! - `dustgate check` shows each platform's plan.
//! - Two platforms at once: "city" under HJ 212-2017 asking for answers, "district" under
//!   2025 without answers, SM4-encrypted, with heartbeats and particulates in mg/m³.
//! - Each minute's Avg / Min / Max at the platform equal the mean / min / max of the PM10
//!   readings InfluxDB holds for that minute, and `air_minute` (tag `upstream`) holds the same.
//! - The city platform goes down for over two minutes and the gateway is killed (-9) inside the
//!   outage; when the platform returns every minute arrives exactly once, with its original
//!   DataTime, the boot time first and the missed minutes newest first.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::platform::PlatformPeer;
use common::site::{Gateway, dust_monitor_unit, influx_v1};
use common::{Influx1, ModbusSim, free_port, scratch_dir};
use serde_json::{Value, json};

const TZ: &str = "Asia/Shanghai";
const CITY_MN: &str = "010000A8900016F000169DC0";
const DISTRICT_MN: &str = "88888880000001";
const SM4_KEY: &str = "0123456789abcdeffedcba9876543210";
/// How long the city platform is down: over two minutes, so that at least two minutes close
/// inside the outage whatever its phase (an 85 s outage closed only one in one run of four).
const OUTAGE_S: u64 = 125;

fn site(influx: &Influx1, sim_port: u16, city: u16, district: u16, http: u16) -> String {
    format!(
        r#"[site]
id = "uplink-site"
timezone = "{TZ}"
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
interval = "1s"

  [[modbus.device]]
  id = "dust-01"
  unit = 1
  profile = "generic-dust-monitor"

[[hj212.upstream]]
name = "city"
address = "127.0.0.1:{city}"
st = "39"
mn = "{CITY_MN}"
password_file = "city.pw"
realtime = "30s"
minute = "1m"
grace = "2s"
timeout = "2s"
retries = 2

[[hj212.upstream]]
name = "district"
address = "127.0.0.1:{district}"
version = "2025"
st = "22"
mn = "{DISTRICT_MN}"
password_file = "district.pw"
ack = false
realtime = "30s"
minute = "1m"
grace = "2s"
factors = "hj212-mgm3"
sm4_key_file = "district.sm4"
heartbeat = "10s"
"#,
        influx_v1(&influx.url(), "uplink"),
    )
}

/// The site's local time of a DataTime, in ms.
fn data_time_ms(dt: &str) -> i64 {
    let civil = jiff::civil::DateTime::strptime("%Y%m%d%H%M%S", dt).expect("a DataTime");
    jiff::tz::TimeZone::get(TZ)
        .expect("tz")
        .to_timestamp(civil)
        .expect("in range")
        .as_millisecond()
}

/// The 2051 frames among `v`.
fn minutes(v: &[Value]) -> Vec<&Value> {
    v.iter().filter(|x| x["cn"] == "2051").collect()
}

fn factor<'a>(frame: &'a Value, code: &str, suffix: &str) -> &'a str {
    frame["factors"][code][suffix].as_str().unwrap_or("")
}

/// The platform's row of /api/status.
async fn upstream_status(http: u16, name: &str) -> Option<Value> {
    let text = common::http_client()
        .get(format!("http://127.0.0.1:{http}/api/status"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let body: Value = serde_json::from_str(&text).ok()?;
    body["hj212_upstreams"]
        .as_array()?
        .iter()
        .find(|u| u["name"] == name)
        .cloned()
}

/// Mean, min, max and count of the PM10 readings InfluxDB holds in [start, start + 1 min).
async fn influx_minute(influx: &Influx1, start: i64) -> (f64, f64, f64, u64) {
    let rows = influx
        .query_rows(
            "uplink",
            &format!(
                "SELECT mean(pm10), min(pm10), max(pm10), count(pm10) FROM air WHERE device = 'dust-01' AND time >= {start}ms AND time < {}ms",
                start + 60_000
            ),
        )
        .await;
    let r = rows.first().cloned().unwrap_or_default();
    let f = |i: usize| r.get(i).and_then(Value::as_f64).unwrap_or(f64::NAN);
    (
        f(1),
        f(2),
        f(3),
        r.get(4).and_then(Value::as_u64).unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_platforms_get_minutes_equal_to_influx_and_an_outage_with_a_kill_loses_nothing() {
    let dir = scratch_dir("e2e-hj212-uplink");
    let influx = Influx1::start();
    influx.create_db("uplink").await;
    let (unit, _) = dust_monitor_unit(1);
    let spec = json!({ "devices": [unit.clone()] });
    let mut sim = ModbusSim::tcp(&spec);
    // PM10 (holding 1) moves every 300 ms, so that a minute's mean, min and max differ.
    let moving = Arc::new(AtomicBool::new(true));
    let mover = {
        let moving = moving.clone();
        let mut unit = unit.clone();
        let regs = sim.regs_path().to_path_buf();
        std::thread::spawn(move || {
            let mut i: u64 = 0;
            while moving.load(Ordering::Relaxed) {
                i += 1;
                unit["holding"]["1"] = json!(40 + (i * 37) % 91);
                let tmp = regs.with_extension("tmp");
                let text = serde_json::to_vec(&json!({ "devices": [unit] })).expect("json");
                if std::fs::write(&tmp, text).is_ok() {
                    let _ = std::fs::rename(&tmp, &regs);
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let (city_port, district_port, http) = (free_port(), free_port(), free_port());
    let city = PlatformPeer::start_on("e2e-uplink-city", city_port, &[]);
    // The district platform decrypts with its own SM4 (OpenSSL's, through `cryptography`).
    let district = PlatformPeer::start_on(
        "e2e-uplink-district",
        district_port,
        &["--sm4-key", SM4_KEY],
    );
    let toml = site(&influx, sim.port(), city_port, district_port, http);
    common::site::write_site(&dir, &toml, &[]);
    std::fs::write(dir.join("city.pw"), "city-pw\n").expect("pw");
    std::fs::write(dir.join("district.pw"), "district-pw\n").expect("pw");
    std::fs::write(dir.join("district.sm4"), format!("{SM4_KEY}\n")).expect("key");

    // The plan, as a crew would read it before starting.
    let check = std::process::Command::new(Gateway::binary())
        .args(["check", "--config"])
        .arg(dir.join("site.toml"))
        .output()
        .expect("dustgate check");
    let plan = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{plan}");
    for want in [
        format!(
            "hj212 platform city: 127.0.0.1:{city_port} (HJ 212-2017), ST 39, MN {CITY_MN}, password from file"
        ),
        "sends real-time 2011 every 30s, minute 2051 every 1m, hourly 2061, daily 2031".into(),
        "asks for 9014 answers: resent after 2s up to 2 time(s)".into(),
        "device dust-01: pm25→a34004 (µg/m³, 3 dp), pm10→a34002 (µg/m³, 3 dp)".into(),
        format!("hj212 platform district: 127.0.0.1:{district_port} (HJ 212-2025), ST 22"),
        "no answers asked".into(),
        "pm10→a34002 (µg/m³ ÷ 1000, 3 dp)".into(),
        "data frames (CN 2000-2999) SM4-encrypted with the key from file".into(),
        "heartbeat 9015 after 10s without a frame".into(),
    ] {
        assert!(plan.contains(&want), "{want:?} not in the plan:\n{plan}");
    }

    let mut gw = Gateway::start(&dir, &toml, &[]);
    gw.wait_started();
    // Phase 1: both platforms get at least one whole minute (the first may be partial).
    let full = |v: &[Value]| minutes(v).len() >= 2;
    let deadline = Instant::now() + Duration::from_secs(200);
    while !(full(&city.verdicts()) && full(&district.verdicts())) {
        assert!(
            Instant::now() < deadline,
            "no two minutes at both platforms:\n{}",
            gw.proc.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Phase 2: the city platform goes away; the gateway is killed inside the outage and
    // started again; the platform comes back after more than a minute.
    let outage_start = Instant::now();
    // The peer logs to a new file when started again: what it got before, kept.
    let city_before = city.verdicts();
    drop(city);
    tokio::time::sleep(Duration::from_secs(25)).await;
    gw.proc.kill9();
    let killed_ms = common::now_ms();
    gw.proc.respawn();
    gw.wait_log("gateway started", Duration::from_secs(30));
    let restarted_ms = common::now_ms();
    while outage_start.elapsed() < Duration::from_secs(OUTAGE_S) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let back_ms = common::now_ms();
    let city = PlatformPeer::start_on("e2e-uplink-city", city_port, &[]);
    let status = common::eventually(
        "the city backlog drained",
        Duration::from_secs(60),
        || async {
            upstream_status(http, "city").await.filter(|u| {
                u["connected"] == true
                    && u["backlog_frames"] == 0
                    && u["delivered"].as_u64() > Some(0)
            })
        },
    )
    .await;
    // One more minute after the return, so that live frames follow the resent ones.
    let resent_count = minutes(&city.verdicts())
        .iter()
        .filter(|x| x["t"].as_f64().unwrap_or(0.0) * 1000.0 >= back_ms as f64)
        .count();
    common::eventually(
        "a live minute after the return",
        Duration::from_secs(90),
        || {
            let v = city.verdicts();
            async move {
                (minutes(&v)
                    .iter()
                    .filter(|x| x["t"].as_f64().unwrap_or(0.0) * 1000.0 >= back_ms as f64)
                    .count()
                    > resent_count)
                    .then_some(())
            }
        },
    )
    .await;
    let district_status = upstream_status(http, "district")
        .await
        .expect("district status");
    let metrics = common::http_get_blocking(http, "/metrics")
        .map(|(_, b)| b)
        .unwrap_or_default();
    gw.proc.stop();
    moving.store(false, Ordering::Relaxed);
    let _ = mover.join();
    sim.stop();

    let city_v: Vec<Value> = city_before.into_iter().chain(city.verdicts()).collect();
    let district_v = district.verdicts();
    // Every frame passes the strict platform, with this site's identity and Flag bits.
    for (v, st, mn, pw, flag) in [
        (&city_v, "39", CITY_MN, "city-pw", "5"),
        (&district_v, "22", DISTRICT_MN, "district-pw", "8"),
    ] {
        assert!(!v.is_empty());
        for x in v.iter() {
            assert_eq!(x["ok"], true, "{x}");
            assert_eq!(
                (x["st"].as_str(), x["mn"].as_str(), x["pw"].as_str()),
                (Some(st), Some(mn), Some(pw)),
                "{x}"
            );
            assert_eq!(x["flag"].as_str(), Some(flag), "{x}");
        }
        assert!(
            v.iter()
                .any(|x| x["cn"] == "2011" && !factor(x, "a34002", "Rtd").is_empty()),
            "real-time values"
        );
        assert!(v.iter().any(|x| x["cn"] == "2081"), "the boot time");
    }

    // City: each minute exactly once, from the first to the last, none missing.
    let city_minutes: Vec<&Value> = minutes(&city_v);
    let mut starts: Vec<i64> = city_minutes
        .iter()
        .map(|x| data_time_ms(x["cp"]["DataTime"].as_str().unwrap_or("")))
        .collect();
    let unique: HashSet<i64> = starts.iter().copied().collect();
    assert_eq!(
        unique.len(),
        starts.len(),
        "a minute sent twice: {starts:?}"
    );
    starts.sort();
    let first = starts[0];
    let last = *starts.last().expect("minutes");
    assert_eq!(
        starts,
        (0..=(last - first) / 60_000)
            .map(|i| first + i * 60_000)
            .collect::<Vec<_>>(),
        "every minute once, none missing"
    );
    assert!(
        starts
            .iter()
            .filter(|s| **s + 60_000 > killed_ms - 25_000 && **s < back_ms)
            .count()
            >= 2,
        "the outage spans minutes"
    );
    // After the return: the boot time first, then what was missed, newest first.
    let after: Vec<&Value> = city_v
        .iter()
        .filter(|x| x["t"].as_f64().unwrap_or(0.0) * 1000.0 >= back_ms as f64)
        .collect();
    assert_eq!(after[0]["cn"], "2081", "{:?}", after[0]);
    // The minutes that ended before the connect came from the backlog: newest first.
    let connected_ms = (after[0]["t"].as_f64().unwrap_or(0.0) * 1000.0) as i64;
    let missed: Vec<i64> = after
        .iter()
        .filter(|x| x["cn"] == "2051")
        .map(|x| data_time_ms(x["cp"]["DataTime"].as_str().unwrap_or("")))
        .take_while(|s| *s + 60_000 <= connected_ms)
        .collect();
    assert!(missed.len() >= 2, "missed minutes resent: {missed:?}");
    assert!(
        missed.windows(2).all(|w| w[0] > w[1]),
        "newest first: {missed:?}"
    );

    // The values: each minute at the platform is the mean / min / max InfluxDB holds, and
    // air_minute (tag upstream) the same; the minute of the kill and restart is left out (a
    // kill -9 can cut the last second of readings from the open period).
    let kill_minute = |s: i64| s + 60_000 > killed_ms && s <= restarted_ms;
    let mut compared = 0;
    for x in &city_minutes {
        let start = data_time_ms(x["cp"]["DataTime"].as_str().unwrap_or(""));
        let (mean, min, max, n) = influx_minute(&influx, start).await;
        if kill_minute(start) || n == 0 {
            continue;
        }
        assert_eq!(
            factor(x, "a34002", "Avg"),
            format!("{mean:.3}"),
            "minute {start}: {x}"
        );
        assert_eq!(
            factor(x, "a34002", "Min"),
            format!("{min:.3}"),
            "minute {start}"
        );
        assert_eq!(
            factor(x, "a34002", "Max"),
            format!("{max:.3}"),
            "minute {start}"
        );
        assert!(min < max, "the monitor's PM10 moved within the minute");
        if n >= 45 {
            assert_eq!(factor(x, "a34002", "Flag"), "N", "{x}");
        }
        let stored = influx
            .query_rows(
                "uplink",
                &format!("SELECT pm10, pm10_min, pm10_max FROM air_minute WHERE upstream = 'city' AND time = {start}ms"),
            )
            .await;
        let row = stored.first().cloned().unwrap_or_default();
        let got = |i: usize| row.get(i).and_then(Value::as_f64).unwrap_or(f64::NAN);
        assert!(
            (got(1) - mean).abs() < 1e-6 && got(2) == min && got(3) == max,
            "air_minute {start}: {row:?} vs {mean} {min} {max}"
        );
        compared += 1;
    }
    assert!(compared >= 3, "compared {compared} minutes");

    // District (2025, SM4, particulates in mg/m³): its minutes hold the same means / 1000, it
    // saw no outage, its data frames came encrypted and its quiet link got heartbeats.
    assert!(district_v.iter().any(|x| x["cn"] == "9015"), "a heartbeat");
    for x in district_v
        .iter()
        .filter(|x| x["cn"].as_str().is_some_and(|c| c.starts_with('2')))
    {
        assert_eq!(x["encrypted"], true, "{x}");
    }
    let mut district_by_start: BTreeMap<i64, &Value> = BTreeMap::new();
    for x in minutes(&district_v) {
        district_by_start.insert(data_time_ms(x["cp"]["DataTime"].as_str().unwrap_or("")), x);
        assert!(x["rf"].is_null() || x["rf"] == "1", "{x}");
    }
    let mut both = 0;
    for x in &city_minutes {
        let start = data_time_ms(x["cp"]["DataTime"].as_str().unwrap_or(""));
        if let Some(d) = district_by_start.get(&start) {
            let city_avg: f64 = factor(x, "a34002", "Avg").parse().unwrap_or(f64::NAN);
            let district_avg: f64 = factor(d, "a34002", "Avg").parse().unwrap_or(f64::NAN);
            assert!(
                (district_avg - city_avg / 1000.0).abs() <= 0.0005 + 1e-9,
                "{x} vs {d}"
            );
            both += 1;
        }
    }
    assert!(both >= 3, "minutes at both platforms: {both}");

    // Counted and visible: nothing expired or dropped, answers matched.
    for (name, s) in [("city", &status), ("district", &district_status)] {
        assert_eq!(s["expired"], 0, "{name}: {s}");
        assert_eq!(s["dropped_readings"], 0, "{name}: {s}");
        assert_eq!(s["rejected_answers"], 0, "{name}: {s}");
    }
    // The backlog gauge: at most the frame in flight (a window of one) once drained.
    let gauge = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let city_backlog = gauge("dustgate_hj212_upstream_backlog_frames{upstream=\"city\"}");
    assert!(city_backlog.is_some_and(|b| b <= 1.0), "{metrics}");
    assert_eq!(
        gauge("dustgate_hj212_upstream_connected{upstream=\"district\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        gauge("dustgate_hj212_upstream_expired_frames_total{upstream=\"city\"}"),
        Some(0.0),
        "{metrics}"
    );
}
