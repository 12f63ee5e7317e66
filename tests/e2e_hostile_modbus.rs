//! Hostile Modbus servers (tests/peers/hostile_modbus.py, plain sockets) → `dustgate run` →
//! InfluxDB 1.6.7: a reply that does not fit its request is never written.
//!
//! * `extra`: every third FC03 reply carries two registers more than asked (in front), with a
//!   correct byte count. Taken as is, every value shifts.
//! * `duplicate`: over RTU over TCP every reply is sent twice; the copy is still in the socket
//!   when the next request goes out, so without draining it is the "answer" to the next read.
//!
//! Every value in InfluxDB must be what the server's registers hold (pm10 = 111 at holding 0,
//! pm25 = 333 at holding 300); the faults must be counted as protocol errors.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::site::{Gateway, influx_v1, latest_by_device};
use common::{Influx1, Proc, free_port, python, repo_root, scratch_dir};
use serde_json::Value;

/// Two registers far apart: the planner reads them with two FC03 requests of one register each,
/// which match in unit, function and length, so only draining tells their replies apart.
const PROFILE: &str = r#"description = "Test device: two registers, two reads"
source = "dustgate tests"
confidence = "P"
[[register]]
metric = "pm10"
table = "holding"
address = 0
type = "u16"
[[register]]
metric = "pm25"
table = "holding"
address = 300
type = "u16"
"#;

const PM10: f64 = 111.0;
const PM25: f64 = 333.0;

struct Hostile {
    _proc: Proc,
    port: u16,
}

fn start_hostile(mode: &str) -> Hostile {
    let dir = scratch_dir(&format!("hostile-{mode}"));
    let port = free_port();
    let ready = dir.join("ready.json");
    let script: PathBuf = repo_root().join("tests/peers/hostile_modbus.py");
    let mut proc = Proc::spawn(
        &format!("hostile-{mode}"),
        &dir,
        &python(),
        [
            script.display().to_string(),
            "--mode".into(),
            mode.into(),
            "--port".into(),
            port.to_string(),
            "--ready-file".into(),
            ready.display().to_string(),
        ],
    );
    proc.wait_file(&ready, Duration::from_secs(10));
    Hostile { _proc: proc, port }
}

fn site(influx: &str, transport: &str, port: u16) -> String {
    format!(
        "[site]\nid = \"hostile-site\"\nname = \"hostile\"\nhealth_interval = \"1s\"\n\n{influx}\n[store]\ndir = \"store\"\n\n[[modbus]]\nname = \"bus\"\ntransport = \"{transport}\"\naddress = \"127.0.0.1:{port}\"\ntimeout = \"500ms\"\ninterval = \"200ms\"\n\n  [[modbus.device]]\n  id = \"hostile\"\n  unit = 1\n  profile = \"two-reads\"\n"
    )
}

/// (right, wrong) values of pm10 and pm25 written for the device.
async fn tally(influx: &Influx1, db: &str) -> (usize, usize, Vec<String>) {
    let rows = influx
        .query_rows(db, "SELECT pm10, pm25 FROM air WHERE device = 'hostile'")
        .await;
    let (mut right, mut wrong, mut examples) = (0, 0, Vec::new());
    for row in rows {
        for (col, want) in [(1, PM10), (2, PM25)] {
            let Some(v) = row.get(col).and_then(Value::as_f64) else {
                continue;
            };
            if v == want {
                right += 1;
            } else {
                wrong += 1;
                if examples.len() < 5 {
                    examples.push(format!("{} = {v} (want {want})", ["pm10", "pm25"][col - 1]));
                }
            }
        }
    }
    (right, wrong, examples)
}

async fn protocol_errors(influx: &Influx1, db: &str) -> f64 {
    let health = latest_by_device(influx, db, "gateway", "WHERE component = 'modbus'").await;
    health
        .get("hostile")
        .and_then(|r| r.get("protocol_errors"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

async fn run_against(mode: &str, transport: &str) {
    let influx = Influx1::start();
    let db = format!("hostile_{mode}");
    influx.create_db(&db).await;
    let server = start_hostile(mode);
    let dir = scratch_dir(&format!("e2e-hostile-{mode}"));
    let mut gw = Gateway::start(
        &dir,
        &site(&influx_v1(&influx.url(), &db), transport, server.port),
        &[("two-reads", PROFILE.to_string())],
    );
    gw.wait_started();
    let started = Instant::now();

    // Enough polls for the fault to show: 30 values written or refused, or 12 s.
    let deadline = Instant::now() + Duration::from_secs(12);
    let (right, wrong, examples, errors) = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (right, wrong, examples) = tally(&influx, &db).await;
        let errors = protocol_errors(&influx, &db).await;
        if right + wrong + errors as usize >= 30 || Instant::now() >= deadline {
            break (right, wrong, examples, errors);
        }
    };
    eprintln!(
        "{mode}: {right} right values, {wrong} wrong values, {errors} protocol errors in {:?}",
        started.elapsed()
    );
    assert_eq!(
        wrong,
        0,
        "{mode}: {wrong} wrong values in InfluxDB (e.g. {examples:?}); log tail:\n{}",
        gw.proc.log_tail(30)
    );
    assert!(
        right >= 4,
        "{mode}: good replies must still be written: {right} right values"
    );
    assert!(errors >= 5.0, "{mode}: protocol errors counted: {errors}");
    assert!(gw.proc.is_running(), "the gateway keeps running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_with_more_registers_than_asked_is_never_written() {
    run_against("extra", "tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_reply_over_rtu_over_tcp_is_drained_not_taken_for_the_next_answer() {
    run_against("duplicate", "rtu-over-tcp").await;
}
