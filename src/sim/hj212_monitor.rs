//! The demo's HJ 212 dust monitor at the north gate: an all-in-one monitor whose data logger
//! (数采仪) sends CN=2011 every 30 s and CN=2051 every minute of site time to the gateway's
//! HJ 212 listener, as a monitor on a real site reports to its platform. Each frame asks for
//! an answer (Flag=5) and the gateway's CN=9014 comes back once the frame is stored.
//!
//! The values follow the demo's day (a little cleaner than at the south gate, further from the
//! earthworks). The frames are built with the gateway's own encoder: this is a demo, not a
//! test (the tests use tests/peers/hj212_monitor.py, written independently).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::scenario::Scenario;
use crate::hj212::{self, Cp, Factor, Flag, Packet};

/// The north-gate monitor's MN and device id in the demo's config.
pub const MN: &str = "DEMO00000000000000NG0001";
pub const DEVICE: &str = "dust-02";

const CODES: &[(&str, &str, f64)] = &[
    // (HJ 212 code, metric, share of the south gate's value)
    ("a34004", "pm25", 0.85),
    ("a34002", "pm10", 0.85),
    ("a34001", "tsp", 0.85),
    ("LA", "noise", 0.95),
    ("a01001", "temperature", 1.0),
    ("a01002", "humidity", 1.0),
    ("a01007", "wind_speed", 1.0),
    ("a01008", "wind_direction", 1.0),
];

/// Local `YYYYMMDDhhmmss` of `ms` (site time).
fn datatime(tz: &jiff::tz::TimeZone, ms: i64) -> String {
    let t = jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    hj212::format_time(tz.to_datetime(t))
}

fn hour_of(tz: &jiff::tz::TimeZone, ms: i64) -> f64 {
    let t = jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let d = tz.to_datetime(t);
    f64::from(d.hour()) + f64::from(d.minute()) / 60.0 + f64::from(d.second()) / 3600.0
}

fn frame(
    cn: &str,
    qn_ms: i64,
    tz: &jiff::tz::TimeZone,
    at_ms: i64,
    factors: Vec<Factor>,
) -> String {
    let p = Packet {
        qn: Some(format!("{}{:03}", datatime(tz, qn_ms), qn_ms.rem_euclid(1000)).into()),
        st: Some("39".into()),
        cn: cn.into(),
        pw: Some("123456".into()),
        mn: Some(MN.into()),
        flag: Some(Flag(5)),
        has_cp: true,
        cp: Cp {
            params: vec![("DataTime".into(), datatime(tz, at_ms).into())],
            factors,
            cp_flag: None,
        },
        ..Packet::default()
    };
    hj212::encode::encode(&p)
}

fn num(v: f64) -> String {
    format!("{}", (v * 10.0).round() / 10.0)
}

/// Runs the monitor until `stop`: connects (again, after the gateway went away) and sends.
pub async fn run(port: u16, tz: jiff::tz::TimeZone, mut stop: watch::Receiver<bool>) {
    let mut scenario = Scenario::new();
    // The minute's real-time values per code, for its 2051.
    let mut minute: Vec<Vec<f64>> = vec![Vec::new(); CODES.len()];
    let mut next_rtd = crate::clock::now_ms();
    let mut minute_start = next_rtd - next_rtd.rem_euclid(60_000);
    loop {
        let Ok(sock) = TcpStream::connect(("127.0.0.1", port)).await else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                _ = stop.changed() => return,
            }
        };
        let (mut rd, mut wr) = sock.into_split();
        // The gateway's answers are read and dropped (a real logger would resend an
        // unanswered frame; the demo does not need to).
        let drain = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        loop {
            let now = crate::clock::now_ms();
            let mut out = String::new();
            // A fast replay passes several of them in one step.
            let mut sent = 0;
            while now >= next_rtd && sent < 16 {
                sent += 1;
                let at = next_rtd - next_rtd.rem_euclid(1000);
                let h = hour_of(&tz, at);
                let mut factors = Vec::new();
                for (i, (code, metric, share)) in CODES.iter().enumerate() {
                    let Some(v) = scenario.value("dust-01", metric, h) else {
                        continue;
                    };
                    let v = v * share;
                    minute[i].push(v);
                    factors.push(Factor {
                        code: (*code).into(),
                        fields: vec![("Rtd".into(), num(v).into()), ("Flag".into(), "N".into())],
                    });
                }
                out.push_str(&frame("2011", now, &tz, at, factors));
                next_rtd += 30_000;
            }
            while now >= minute_start + 60_000 && sent < 32 {
                sent += 1;
                let mut factors = Vec::new();
                for (i, (code, _, _)) in CODES.iter().enumerate() {
                    let vs = std::mem::take(&mut minute[i]);
                    if vs.is_empty() {
                        continue;
                    }
                    let avg = vs.iter().sum::<f64>() / vs.len() as f64;
                    let min = vs.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = vs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    factors.push(Factor {
                        code: (*code).into(),
                        fields: vec![
                            ("Min".into(), num(min).into()),
                            ("Avg".into(), num(avg).into()),
                            ("Max".into(), num(max).into()),
                            ("Flag".into(), "N".into()),
                        ],
                    });
                }
                if !factors.is_empty() {
                    out.push_str(&frame("2051", now + 1, &tz, minute_start, factors));
                }
                minute_start += 60_000;
            }
            if !out.is_empty() && wr.write_all(out.as_bytes()).await.is_err() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = stop.changed() => {
                    drain.abort();
                    return;
                }
            }
        }
        drain.abort();
    }
}
