//! The uplink's frames and link against a platform written independently in Python
//! (tests/peers/hj212_platform.py: its own parser and CRC, strict on length, CRC case and the
//! header's field order). The uplink is not in `dustgate run` yet (issue 13): these tests
//! drive the library's parts (`outputs::hj212`) and its upstream task over real TCP.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::platform::PlatformPeer;
use common::{free_port, repo_root, scratch_dir};
use dustgate::config::Diagnostics;
use dustgate::config::factors::FactorMap;
use dustgate::config::profile::ProfileLoader;
use dustgate::hj212::encode;
use dustgate::hj212::segment::Version;
use dustgate::outputs::hj212::frames::{self, Identity, Platform, Rtd};
use dustgate::outputs::hj212::qn::Qns;
use dustgate::outputs::hj212::session::{Action, Link, LinkConfig};
use dustgate::outputs::hj212::upstream::{UpReading, UpstreamCounts, UpstreamSpec, run};
use dustgate::pipeline::periods::{Level, PeriodValue, Policy};
use serde_json::Value;

const PEER: &str = "tests/peers/hj212_platform.py";

fn map(name: &str) -> Arc<FactorMap> {
    let mut diags = Diagnostics::default();
    match ProfileLoader::new(vec![]).load_factors(name, &mut diags) {
        Ok(m) => m,
        Err(_) => panic!("{name}: {diags}"),
    }
}

fn tz() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get("Asia/Shanghai").expect("tz")
}

fn city(version: Version, ack: bool) -> Identity {
    Identity {
        st: "39".into(),
        mn: "010000A8900016F000169DC0".into(),
        pw: "123456".into(),
        version,
        ack,
    }
}

/// 2026-12-01T10:30:00 in Shanghai.
const T: i64 = 1_796_092_200_000;

fn period_value(metric: &str, avg: f64, flag: char) -> PeriodValue {
    PeriodValue {
        device: "dust-01".into(),
        metric: metric.into(),
        level: Level::Minutes(10),
        start_ms: T,
        avg: Some(avg),
        min: Some(avg - 5.0),
        max: Some(avg + 5.0),
        valid: 10,
        total: 10,
        expected: Some(10),
        flag,
    }
}

/// The platform's verdict on each frame.
fn check(frames: &[String]) -> Vec<Value> {
    check_with(frames, &[])
}

/// As [`check`], with more arguments for the peer (an SM4 key).
fn check_with(frames: &[String], args: &[&str]) -> Vec<Value> {
    let mut child = Command::new(common::python())
        .arg(repo_root().join(PEER))
        .arg("check")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs tests/peers/hj212_platform.py");
    let text: String = frames
        .iter()
        .map(|f| f.replace("\r\n", "\\r\\n") + "\n")
        .collect();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("frames to the peer");
    let out = child.wait_with_output().expect("the peer finishes");
    assert!(out.status.success(), "hj212_platform.py check failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON verdict"))
        .collect()
}

#[test]
fn the_uplinks_frames_pass_a_strict_independent_platform() {
    let tz = tz();
    let mut qns = Qns::new(tz.clone());
    let (std_map, mg) = (map("hj212-standard"), map("hj212-mgm3"));
    let v2017 = city(Version::V2017, true);
    let v2025 = city(Version::V2025, false);
    let to = |id, factors| Platform {
        id,
        tz: &tz,
        factors,
    };
    let rtd = [
        Rtd {
            metric: "pm10",
            value: 85.0,
            flag: 'N',
        },
        Rtd {
            metric: "noise",
            value: 61.25,
            flag: 'N',
        },
        Rtd {
            metric: "wind_direction",
            value: 270.0,
            flag: 'N',
        },
    ];
    let pm10 = period_value("pm10", 80.0, 'N');
    let pm25 = period_value("pm25", 40.5, 'N');
    let built = [
        frames::realtime(to(&v2017, &std_map), qns.next(T), T, &rtd).packet,
        frames::realtime(to(&v2017, &mg), qns.next(T), T, &rtd).packet,
        frames::period(
            to(&v2025, &std_map),
            qns.next(T),
            Level::Minutes(10),
            T,
            &[&pm10, &pm25],
            true,
        )
        .packet,
        frames::boot_time(to(&v2017, &std_map), qns.next(T), T, T - 60_000),
    ];
    let wire: Vec<String> = built.iter().map(encode::encode).collect();
    let v = check(&wire);
    assert_eq!(v.len(), 4);
    for (x, f) in v.iter().zip(&wire) {
        assert_eq!(x["ok"], true, "{f}: {}", x["errors"]);
        assert_eq!(x["mn"], "010000A8900016F000169DC0");
        assert_eq!(x["st"], "39");
    }
    // Four QNs in one millisecond, all different.
    let mut q: Vec<&str> = v.iter().map(|x| x["qn"].as_str().expect("qn")).collect();
    q.dedup();
    assert_eq!(q.len(), 4);
    assert_eq!(v[0]["cn"], "2011");
    assert_eq!(v[0]["flag"], "5");
    assert_eq!(v[0]["cp"]["DataTime"], "20261201103000");
    assert_eq!(v[0]["factors"]["a34002"]["Rtd"], "85.000");
    assert_eq!(v[0]["factors"]["LA"]["Rtd"], "61.2");
    assert_eq!(v[0]["factors"]["a01008"]["Flag"], "N");
    assert_eq!(v[1]["factors"]["a34002"]["Rtd"], "0.085", "mg/m³");
    assert_eq!(v[2]["cn"], "2051");
    assert_eq!((&v[2]["flag"], &v[2]["rf"]), (&"8".into(), &"1".into()));
    assert_eq!(v[2]["factors"]["a34004"]["Avg"], "40.500");
    assert_eq!(v[2]["factors"]["a34004"]["Min"], "35.500");
    assert_eq!(v[2]["factors"]["a34002"]["Max"], "85.000");
    assert_eq!(v[3]["cn"], "2081");
    assert_eq!(v[3]["cp"]["RestartTime"], "20261201102900");
}

/// Drives `link` over `sock` until `until` holds or `limit` passes: writes what it says,
/// feeds what the platform answers and the time. The actions seen, in order.
fn drive(
    link: &mut Link,
    sock: &mut TcpStream,
    first: Vec<Action>,
    limit: Duration,
    until: impl Fn(&[Action]) -> bool,
) -> Vec<Action> {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut todo = first;
    let mut buf = [0u8; 4096];
    loop {
        for a in todo.drain(..) {
            if let Action::Write(f) = &a {
                sock.write_all(f.as_bytes()).expect("write to the platform");
            }
            seen.push(a);
        }
        if until(&seen) || start.elapsed() > limit {
            return seen;
        }
        match sock.read(&mut buf) {
            Ok(0) => return seen,
            Ok(n) => {
                link.read(&buf[..n], &mut todo);
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read from the platform: {e}"),
        }
        link.tick(common::now_ms(), &mut todo);
    }
}

#[test]
fn a_withheld_answer_brings_the_same_qn_again_and_then_delivery() {
    let peer = PlatformPeer::start("hj212-uplink-withhold", &["--withhold", "1"]);
    let tz = tz();
    let factors = map("hj212-standard");
    let id = city(Version::V2017, true);
    let to = Platform {
        id: &id,
        tz: &tz,
        factors: &factors,
    };
    let pm10 = period_value("pm10", 80.0, 'N');
    let template = frames::period(to, String::new(), Level::Minutes(10), T, &[&pm10], false).packet;
    let mut link = Link::new(
        LinkConfig {
            ack: true,
            timeout_ms: 700,
            retries: 3,
            window: 1,
        },
        tz.clone(),
    );
    let mut sock = TcpStream::connect(("127.0.0.1", peer.port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    link.connected();
    let first = vec![link.send(common::now_ms(), 42, &template).expect("room")];
    let seen = drive(&mut link, &mut sock, first, Duration::from_secs(10), |s| {
        s.contains(&Action::Delivered(42))
    });
    assert_eq!(seen.last(), Some(&Action::Delivered(42)), "{seen:?}");
    let writes: Vec<&Action> = seen
        .iter()
        .filter(|a| matches!(a, Action::Write(_)))
        .collect();
    assert_eq!(writes.len(), 2, "the frame, then once again: {seen:?}");
    assert_eq!(writes[0], writes[1], "resent byte for byte");
    // The platform saw the same QN twice: the first time withheld, then answered.
    let v = peer.verdicts();
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0]["qn"], v[1]["qn"]);
    assert_eq!(
        (&v[0]["withheld"], &v[1]["acked"]),
        (&true.into(), &true.into())
    );
    assert!(v.iter().all(|x| x["ok"] == true), "{v:?}");
    assert_eq!(link.counts().resent, 1);
    assert_eq!(link.counts().delivered, 1);
}

#[test]
fn a_platform_that_never_answers_gets_retries_then_the_link_is_given_up() {
    let peer = PlatformPeer::start("hj212-uplink-silent", &["--no-ack"]);
    let tz = tz();
    let factors = map("hj212-standard");
    let id = city(Version::V2017, true);
    let to = Platform {
        id: &id,
        tz: &tz,
        factors: &factors,
    };
    let template = frames::boot_time(to, String::new(), T, T - 60_000);
    let mut link = Link::new(
        LinkConfig {
            ack: true,
            timeout_ms: 300,
            retries: 2,
            window: 1,
        },
        tz.clone(),
    );
    let mut sock = TcpStream::connect(("127.0.0.1", peer.port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let first = vec![link.send(common::now_ms(), 1, &template).expect("room")];
    let seen = drive(&mut link, &mut sock, first, Duration::from_secs(10), |s| {
        s.contains(&Action::Close)
    });
    let writes = seen
        .iter()
        .filter(|a| matches!(a, Action::Write(_)))
        .count();
    assert_eq!((writes, seen.last()), (3, Some(&Action::Close)), "{seen:?}");
    assert!(!seen.iter().any(|a| matches!(a, Action::Delivered(_))));
    // Give the peer a moment to log the last write.
    std::thread::sleep(Duration::from_millis(200));
    let v = peer.verdicts();
    assert_eq!(v.len(), 3);
    assert!(
        v.iter().all(|x| x["qn"] == v[0]["qn"] && x["ok"] == true),
        "{v:?}"
    );
}

fn minute_frames(v: &[Value]) -> Vec<(String, String)> {
    v.iter()
        .filter(|x| x["cn"] == "2051")
        .map(|x| {
            (
                x["cp"]["DataTime"].as_str().unwrap_or("").to_string(),
                x["factors"]["a34002"]["Avg"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

/// Site time replays the last hour 60 times faster (as `dustgate demo --speed 60`): a minute
/// passes in a second of a test, and periods close by the clock as they would on a site. The
/// link's timeouts and the backlog's times stay on the wall clock. Once per process.
fn replay() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        assert!(dustgate::clock::start_replay(
            common::now_ms() - 3_600_000,
            60.0
        ));
    });
}

/// One platform's task on a replayed clock: the city, 2017 with answers, minute values only,
/// five site seconds of grace, a window of two frames, dust-01 read every 15 s.
fn task_spec(port: u16, dir: &std::path::Path) -> UpstreamSpec {
    UpstreamSpec {
        name: "city".into(),
        address: format!("127.0.0.1:{port}"),
        identity: city(Version::V2017, true),
        factors: map("hj212-standard"),
        tz: tz(),
        realtime: None,
        levels: vec![Level::Minutes(1)],
        policy: Policy::default(),
        link: LinkConfig {
            ack: true,
            timeout_ms: 1000,
            retries: 2,
            window: 2,
        },
        keep: Duration::from_secs(3600),
        backlog: dir.join("city.redb"),
        boot_ms: dustgate::model::now_ms(),
        // Five site seconds (a twelfth of a wall second) for late readings.
        grace: Duration::from_secs(5),
        intervals: vec![("dust-01".into(), Duration::from_secs(15))],
        sm4: None,
        heartbeat: None,
    }
}

type Task = (
    tokio::sync::mpsc::Sender<UpReading>,
    tokio::sync::watch::Sender<bool>,
    tokio::sync::watch::Receiver<UpstreamCounts>,
    tokio::task::JoinHandle<Result<(), dustgate::outputs::hj212::backlog::BacklogError>>,
);

/// Starts the task: its feed, its stop, its counts and its handle.
fn start_task(spec: UpstreamSpec) -> Task {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (counts_tx, counts_rx) = tokio::sync::watch::channel(UpstreamCounts::default());
    let task = tokio::spawn(run(spec, rx, stop_rx, counts_tx, None));
    (tx, stop_tx, counts_rx, task)
}

async fn wait_for(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_task_sends_each_minute_once_and_resends_what_an_outage_missed() {
    use dustgate::model::SeriesKey;
    use dustgate::outputs::hj212::upstream::UpValue;

    replay();
    let site_now = dustgate::model::now_ms;
    let name = "hj212-uplink-task";
    let port = free_port();
    let peer = PlatformPeer::start_on(name, port, &[]);
    let dir = scratch_dir(&format!("{name}-gw"));
    let tz = tz();
    let spec = task_spec(port, &dir);
    let (tx, stop_tx, counts_rx, task) = start_task(spec);
    // Minute m holds the readings 10 + m, 20 + m, 30 + m (at :00, :15, :30), whose mean is
    // 20 + m; each is fed when site time reaches it.
    let base = site_now() / 60_000 * 60_000 + 60_000;
    let series = SeriesKey::new("air", &[("device", "dust-01"), ("site", "s")]);
    let feed = |m: i64| {
        let tx = tx.clone();
        let series = series.clone();
        async move {
            for (k, v) in [10.0, 20.0, 30.0].into_iter().enumerate() {
                let t = base + m * 60_000 + k as i64 * 15_000;
                while site_now() < t {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let r = UpReading {
                    device: "dust-01".into(),
                    time_ms: t,
                    values: vec![UpValue {
                        metric: "pm10".into(),
                        value: v + m as f64,
                        flag: 'N',
                        series: series.clone(),
                    }],
                };
                tx.send(r).await.expect("the task takes readings");
            }
        }
    };
    for m in 0..3 {
        feed(m).await;
    }
    let local = |m: i64| frames::data_time(&tz, base + m * 60_000);
    wait_for(
        "three minutes at the platform",
        Duration::from_secs(20),
        || minute_frames(&peer.verdicts()).len() >= 3,
    )
    .await;
    // The platform goes away; three more minutes happen meanwhile.
    let before = peer.verdicts();
    assert_eq!(minute_frames(&before).len(), 3, "{before:?}");
    drop(peer);
    for m in 3..6 {
        feed(m).await;
    }
    wait_for(
        "three frames in the backlog",
        Duration::from_secs(20),
        || counts_rx.borrow().backlog >= 3,
    )
    .await;
    let peer = PlatformPeer::start_on(&format!("{name}-again"), port, &[]);
    wait_for(
        "the three missed minutes at the platform",
        Duration::from_secs(30),
        || minute_frames(&peer.verdicts()).len() >= 3,
    )
    .await;
    wait_for("an empty backlog", Duration::from_secs(10), || {
        counts_rx.borrow().backlog == 0
    })
    .await;
    stop_tx.send(true).expect("stop");
    task.await.expect("joins").expect("the backlog worked");

    let after = peer.verdicts();
    let v: Vec<Value> = before.iter().chain(&after).cloned().collect();
    assert!(v.iter().all(|x| x["ok"] == true), "{v:?}");
    let got = minute_frames(&v);
    // Each minute once, with its original DataTime and its mean.
    let mut sorted = got.clone();
    sorted.sort();
    let want: Vec<(String, String)> = (0..6)
        .map(|m| (local(m), format!("{:.3}", 20.0 + m as f64)))
        .collect();
    assert_eq!(sorted, want, "{got:?}");
    // After the reconnect: the boot time (live) first, then the missed minutes newest first.
    let after: Vec<&Value> = v.iter().skip_while(|x| x["cn"] != "2051").collect();
    let second_2081 = after
        .iter()
        .position(|x| x["cn"] == "2081")
        .expect("a 2081 on the reconnect");
    let resent: Vec<String> = after[second_2081 + 1..]
        .iter()
        .filter(|x| x["cn"] == "2051")
        .map(|x| x["cp"]["DataTime"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(resent, [local(5), local(4), local(3)]);
    assert_eq!(counts_rx.borrow().late_readings, 0);
    // One boot time a connection, never one from an earlier connection.
    let boots: Vec<&Value> = v.iter().filter(|x| x["cn"] == "2081").collect();
    assert_eq!(boots.len(), 2, "{boots:?}");
    assert_ne!(boots[0]["cp"]["DataTime"], Value::Null);
    let qns: std::collections::HashSet<&str> = v.iter().filter_map(|x| x["qn"].as_str()).collect();
    assert_eq!(qns.len(), v.len(), "every frame its own QN");
}

#[test]
fn a_minute_frame_over_1024_characters_goes_as_parts_each_with_its_datatime() {
    let tz = tz();
    let mut qns = Qns::new(tz.clone());
    let std_map = map("hj212-standard");
    let id = city(Version::V2017, true);
    let to = Platform {
        id: &id,
        tz: &tz,
        factors: &std_map,
    };
    // Every metric the map has a code for, as a logger with all of a site's kit behind one
    // MN would send.
    let mut metrics: Vec<&str> = std_map.codes.iter().map(|f| f.metric.as_str()).collect();
    metrics.dedup();
    let values: Vec<PeriodValue> = metrics
        .iter()
        .map(|m| period_value(m, 123.456, 'N'))
        .collect();
    let refs: Vec<&PeriodValue> = values.iter().collect();
    let whole = frames::period(to, String::new(), Level::Minutes(10), T, &refs, false).packet;
    assert!(
        encode::segment(&whole).len() > 1024,
        "the test needs a long frame"
    );
    // The upstream splits its templates (no QN yet) at 1000 characters, leaving room for the
    // QN each send adds.
    let parts = encode::split_packets(&whole, 1000);
    assert!(parts.len() >= 2);
    let wire: Vec<String> = parts
        .iter()
        .map(|p| {
            let mut p = p.clone();
            p.qn = Some(qns.next(T).into());
            encode::encode(&p)
        })
        .collect();
    let v = check(&wire);
    let mut codes = Vec::new();
    for (i, x) in v.iter().enumerate() {
        assert_eq!(x["ok"], true, "{}: {}", wire[i], x["errors"]);
        assert_eq!(x["pnum"], format!("{:04}", parts.len()));
        assert_eq!(x["pno"], format!("{:04}", i + 1));
        assert_eq!(x["flag"], "7", "version 1, answer asked, split");
        assert_eq!(x["cp"]["DataTime"], "20261201103000");
        codes.extend(x["factors"].as_object().expect("factors").keys().cloned());
    }
    let mut want: Vec<String> = whole
        .cp
        .factors
        .iter()
        .map(|f| f.code.to_string())
        .collect();
    want.sort();
    codes.sort();
    assert_eq!(codes, want, "every code once, across the parts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platforms_commands_are_answered_kept_and_history_is_sent_again() {
    use dustgate::model::SeriesKey;
    use dustgate::outputs::hj212::upstream::UpValue;

    replay();
    let site_now = dustgate::model::now_ms;
    let name = "hj212-uplink-commands";
    let port = free_port();
    let dir = scratch_dir(&format!("{name}-gw"));
    let tz = tz();
    let mut spec = task_spec(port, &dir);
    spec.link.window = 1;
    spec.intervals = Vec::new();
    let start = start_task;
    // Two minutes of readings, sent and archived.
    let peer = PlatformPeer::start_on(name, port, &[]);
    let (tx, stop_tx, counts_rx, task) = start(spec.clone());
    let base = site_now() / 60_000 * 60_000 + 60_000;
    let series = SeriesKey::new("air", &[("device", "dust-01"), ("site", "s")]);
    for m in 0..2i64 {
        for k in 0..3i64 {
            let t = base + m * 60_000 + k * 15_000;
            while site_now() < t {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let r = UpReading {
                device: "dust-01".into(),
                time_ms: t,
                values: vec![UpValue {
                    metric: "pm10".into(),
                    value: 50.0 + m as f64,
                    flag: 'N',
                    series: series.clone(),
                }],
            };
            tx.send(r).await.expect("readings");
        }
    }
    wait_for("two minutes", Duration::from_secs(20), || {
        minute_frames(&peer.verdicts()).len() >= 2
    })
    .await;
    drop(peer);

    // The platform comes back with its commands.
    let begin = frames::data_time(&tz, base);
    let end = frames::data_time(&tz, base + 60_000);
    let later = frames::data_time(&tz, site_now() + 2 * 3_600_000);
    let cmds = [
        "1011:".to_string(),
        "1062:RtdInterval=40".into(),
        "1061:".into(),
        "1064:MinInterval=2".into(),
        "1063:".into(),
        format!("2051:BeginTime={begin},EndTime={end}"),
        format!("1012:SystemTime={later}"),
        "2012:".into(),
        "3011:".into(),
        "1072:NewPW=newpw1".into(),
    ];
    let mut args: Vec<&str> = Vec::new();
    for c in &cmds {
        args.push("--command");
        args.push(c);
    }
    let peer = PlatformPeer::start_on(&format!("{name}-cmd"), port, &args);
    wait_for("every command answered", Duration::from_secs(40), || {
        let v = peer.verdicts();
        let sent = v.iter().filter(|x| x["sent"].is_string()).count();
        let finals = v
            .iter()
            .filter(|x| {
                ["9012", "9013"].contains(&x["cn"].as_str().unwrap_or(""))
                    || (x["cn"] == "9011" && x["cp"]["QnRtn"] != "1")
            })
            .count();
        sent == cmds.len() && finals == cmds.len()
    })
    .await;
    // A frame after the password change carries the new one.
    tx.send(UpReading {
        device: "dust-01".into(),
        time_ms: site_now(),
        values: vec![UpValue {
            metric: "pm10".into(),
            value: 70.0,
            flag: 'N',
            series: series.clone(),
        }],
    })
    .await
    .expect("reading");
    wait_for(
        "a frame with the new password",
        Duration::from_secs(30),
        || {
            peer.verdicts()
                .iter()
                .any(|x| x["cn"] == "2051" && x["pw"] == "newpw1")
        },
    )
    .await;
    let v = peer.verdicts();
    let counts = counts_rx.borrow().clone();
    stop_tx.send(true).expect("stop");
    task.await.expect("joins").expect("backlog");

    let by_qn = |qn: &str| -> Vec<&Value> {
        v.iter()
            .filter(|x| x["qn"] == qn && x["sent"].is_null())
            .collect()
    };
    let sent: Vec<(&str, &str)> = v
        .iter()
        .filter_map(|x| Some((x["sent"].as_str()?, x["qn"].as_str()?)))
        .collect();
    let answers = |cn: &str| by_qn(sent.iter().find(|(c, _)| *c == cn).expect("sent").1);
    let shape = |xs: &[&Value]| -> Vec<String> {
        xs.iter()
            .map(|x| {
                let cp = x["cp"].as_object().map(|o| {
                    o.iter()
                        .filter(|(k, _)| *k != "SystemTime")
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                });
                format!(
                    "{} {}",
                    x["cn"].as_str().unwrap_or(""),
                    cp.unwrap_or_default()
                )
            })
            .collect()
    };
    assert!(
        v.iter()
            .filter(|x| x["sent"].is_null())
            .all(|x| x["ok"] == true),
        "{v:?}"
    );
    assert_eq!(
        shape(&answers("1011")),
        ["9011 QnRtn=1", "1011 ", "9012 ExeRtn=1"]
    );
    assert!(
        answers("1011")[1]["cp"]["SystemTime"]
            .as_str()
            .is_some_and(|t| t.len() == 14)
    );
    assert_eq!(shape(&answers("1062")), ["9011 QnRtn=1", "9012 ExeRtn=1"]);
    assert_eq!(
        shape(&answers("1061")),
        ["9011 QnRtn=1", "1061 RtdInterval=40", "9012 ExeRtn=1"]
    );
    assert_eq!(shape(&answers("1064")), ["9011 QnRtn=1", "9012 ExeRtn=1"]);
    assert_eq!(
        shape(&answers("1063")),
        ["9011 QnRtn=1", "1063 MinInterval=2", "9012 ExeRtn=1"]
    );
    assert_eq!(
        shape(&answers("1012")),
        ["9011 QnRtn=1", "9012 ExeRtn=2"],
        "a clock two hours off is not set"
    );
    assert_eq!(shape(&answers("2012")), ["9013 "]);
    assert_eq!(shape(&answers("3011")), ["9011 QnRtn=8"]);
    assert_eq!(shape(&answers("1072")), ["9011 QnRtn=1", "9012 ExeRtn=1"]);
    // History: ready, then the two archived minutes again (new QNs, their DataTimes), then done.
    let hist_qn = sent
        .iter()
        .find(|(c, _)| *c == "2051")
        .expect("2051 sent")
        .1;
    assert_eq!(shape(&by_qn(hist_qn)), ["9011 QnRtn=1", "9012 ExeRtn=1"]);
    let ready_at = v
        .iter()
        .position(|x| x["qn"] == hist_qn && x["cn"] == "9011")
        .expect("9011");
    let done_at = v
        .iter()
        .position(|x| x["qn"] == hist_qn && x["cn"] == "9012")
        .expect("9012");
    let again: Vec<&str> = v[ready_at..done_at]
        .iter()
        .filter(|x| x["cn"] == "2051")
        .filter_map(|x| x["cp"]["DataTime"].as_str())
        .collect();
    assert_eq!(again, [begin.as_str(), end.as_str()], "{v:?}");
    // The offset recorded: two hours, less the site minutes the replay ran before the command.
    let offset_min = counts.clock_offset_ms.map_or(0, |o| o / 60_000);
    assert!((100..=120).contains(&offset_min), "{offset_min}");
    assert_eq!(
        (counts.realtime_s, counts.minutes),
        (None, Some(2)),
        "2012 stopped real-time; minutes every 2"
    );

    // What the platform set is kept across a restart: the new password and intervals.
    drop(peer);
    let peer = PlatformPeer::start_on(&format!("{name}-after"), port, &[]);
    let (_tx, stop_tx, counts_rx, task) = start(spec);
    wait_for(
        "a connect after the restart",
        Duration::from_secs(20),
        || peer.verdicts().iter().any(|x| x["cn"] == "2081"),
    )
    .await;
    let boot = peer
        .verdicts()
        .into_iter()
        .find(|x| x["cn"] == "2081")
        .expect("2081");
    assert_eq!(boot["pw"], "newpw1");
    let c = counts_rx.borrow().clone();
    assert_eq!((c.realtime_s, c.minutes), (None, Some(2)));
    stop_tx.send(true).expect("stop");
    task.await.expect("joins").expect("backlog");
}

#[test]
fn a_2025_platform_gets_its_data_frames_sm4_encrypted_in_either_length_convention() {
    use dustgate::outputs::hj212::session::Sm4;

    let tz = tz();
    let std_map = map("hj212-standard");
    let id = city(Version::V2025, true);
    let to = Platform {
        id: &id,
        tz: &tz,
        factors: &std_map,
    };
    // HJ 212-2025 Appendix A.2's test key: sixteen 0x30 [S].
    let key = [0x30u8; 16];
    let key_hex = "30303030303030303030303030303030";
    let pm10 = period_value("pm10", 80.0, 'N');
    let pm25 = period_value("pm25", 40.5, 'N');
    let minute = frames::period(
        to,
        String::new(),
        Level::Minutes(10),
        T,
        &[&pm10, &pm25],
        false,
    )
    .packet;
    let boot = frames::boot_time(to, String::new(), T, T - 60_000);
    let beat = frames::heartbeat(to, String::new());
    for (plaintext, convention) in [(true, "plaintext"), (false, "transmitted")] {
        let mut link = Link::new(
            LinkConfig {
                ack: true,
                timeout_ms: 1000,
                retries: 1,
                window: 8,
            },
            tz.clone(),
        )
        .with_sm4(Sm4 {
            key,
            length_of_plaintext: plaintext,
        });
        let wire: Vec<String> = [(1, &minute), (2, &boot)]
            .into_iter()
            .map(|(i, p)| match link.send(T, i, p) {
                Some(Action::Write(f)) => f,
                other => panic!("{other:?}"),
            })
            .collect();
        let mut beat = beat.clone();
        beat.qn = Some(link.next_qn(T).into());
        let mut all = wire.clone();
        all.push(encode::encode(&beat));
        assert!(
            all[0].contains("CP=&&{0x"),
            "the data area is encrypted: {}",
            all[0]
        );
        assert!(!all[0].contains("a34002"), "no code in clear: {}", all[0]);
        let v = check_with(&all, &["--sm4-key", key_hex, "--sm4-length", convention]);
        for (x, f) in v.iter().zip(&all) {
            assert_eq!(x["ok"], true, "{convention}: {f}: {}", x["errors"]);
        }
        assert_eq!(v[0]["encrypted"], true);
        assert_eq!(v[0]["factors"]["a34002"]["Avg"], "80.000");
        assert_eq!(v[0]["flag"], "9", "version 2 with an answer asked");
        assert_eq!(v[1]["cn"], "2081");
        // 2081 is a data command too (CN 2000-2999, §6.4.4 [S]): encrypted.
        assert_eq!(v[1]["encrypted"], true);
        assert_eq!(v[1]["cp"]["RestartTime"], "20261201102900");
        assert_eq!(
            (v[2]["cn"].as_str(), v[2]["flag"].as_str()),
            (Some("9015"), Some("8"))
        );
        assert!(v[2]["encrypted"].is_null());
        // The other convention's reader refuses the frame: the choice matters.
        let other = if plaintext {
            "transmitted"
        } else {
            "plaintext"
        };
        let v = check_with(&wire[..1], &["--sm4-key", key_hex, "--sm4-length", other]);
        assert_eq!(v[0]["ok"], false, "{other} reader on a {convention} frame");
    }
}
