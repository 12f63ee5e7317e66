//! Smoke tests of the test harness (tests/common) against the real peers:
//! InfluxDB 1.6.7, VictoriaMetrics, the pymodbus simulator over Modbus TCP,
//! RTU over TCP and RTU through a socat pty pair. They check exact values, so a
//! harness or peer that only half works fails here rather than in a gateway test.

mod common;

use std::future::Future;
use std::time::Duration;

use common::{Influx1, ModbusSim, Proc, PtyPair, Victoria, free_port, http_client, now_ms};
use serde_json::{Value, json};
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::prelude::{ExceptionCode, Slave, SlaveContext};

/// A generous bound for a call that must be answered.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long we wait for a unit that must never answer.
const SILENT_WAIT: Duration = Duration::from_millis(600);

// ---------------------------------------------------------------------------
// Harness basics (no peer needed)
// ---------------------------------------------------------------------------

#[test]
fn free_port_never_repeats_across_threads() {
    let handles: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| (0..50).map(|_| free_port()).collect::<Vec<u16>>()))
        .collect();
    let mut all: Vec<u16> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("free_port thread"))
        .collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "free_port returned a port twice");
    assert!(all.iter().all(|&p| p != 0));
}

#[test]
fn proc_guard_stops_and_kills() {
    let dir = common::scratch_dir("proc-guard");
    let sleep = common::find_program("sleep").expect("sleep(1) in PATH");

    // stop(): SIGTERM ends `sleep`, and the status says it was signalled.
    let mut proc = Proc::spawn("sleep-a", &dir, &sleep, ["60"]);
    assert!(proc.is_running());
    let status = proc.stop().expect("was running");
    assert!(!status.success(), "sleep killed by SIGTERM must not exit 0");
    assert!(!proc.is_running());

    // respawn() runs the same command again; Drop kills and reaps it.
    proc.respawn();
    let pid = proc.pid().expect("running again");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(proc);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still exists after the guard was dropped"
    );
}

// ---------------------------------------------------------------------------
// InfluxDB 1.6.7
// ---------------------------------------------------------------------------

#[tokio::test]
async fn influx1_write_line_protocol_and_read_exact_values_back() {
    let mut influx = Influx1::start();
    influx.create_db("smoke").await;
    let http = http_client();
    let ts = now_ms();

    let response = http
        .post(format!("{}/write?db=smoke&precision=ms", influx.url()))
        .body(format!(
            "air,device=dev1,site=lab pm25=35i,noise=65.3 {ts}\n\
             air,device=dev2,site=lab pm25=12i,noise=40.5 {}\n",
            ts + 1
        ))
        .send()
        .await
        .expect("POST /write");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, 204, "write: {body}");

    let query = "SELECT pm25, noise, device FROM air WHERE site = 'lab'";
    let expected = vec![
        vec![json!(ts), json!(35), json!(65.3), json!("dev1")],
        vec![json!(ts + 1), json!(12), json!(40.5), json!("dev2")],
    ];
    assert_eq!(influx.query_rows("smoke", query).await, expected);

    // The raw answer carries the column names in the asked order.
    let raw = influx.query("smoke", query).await;
    assert_eq!(
        raw["results"][0]["series"][0]["columns"],
        json!(["time", "pm25", "noise", "device"])
    );

    // A database that does not exist: 404 with an error (the gateway must see it).
    let response = http
        .post(format!("{}/write?db=nope", influx.url()))
        .body(format!("air pm25=1i {ts}000000\n"))
        .send()
        .await
        .expect("POST /write?db=nope");
    assert_eq!(response.status().as_u16(), 404);

    // stop()/start_again(): same port, same data dir, data kept.
    let status = influx.stop().expect("influxd was running");
    assert!(
        !common::port_accepts(influx.port()),
        "port still open after stop ({status})"
    );
    influx.start_again();
    assert_eq!(influx.query_rows("smoke", query).await, expected);
}

// ---------------------------------------------------------------------------
// VictoriaMetrics
// ---------------------------------------------------------------------------

#[tokio::test]
async fn victoria_v2_write_and_export_exact_values() {
    let mut vm = Victoria::start();
    let http = http_client();
    let ts = now_ms();

    let response = http
        .post(format!(
            "{}/api/v2/write?org=site&bucket=dust&precision=ms",
            vm.url()
        ))
        .header("Authorization", "Token not-checked")
        .body(format!(
            "air,device=dev2,site=lab pm25=12i,noise=40.5 {ts}\n"
        ))
        .send()
        .await
        .expect("POST /api/v2/write");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, 204, "write: {body}");

    let check = |mut series: Vec<Value>| {
        series.sort_by_key(|s| s["metric"]["__name__"].as_str().unwrap_or("").to_owned());
        assert_eq!(series.len(), 2, "{series:?}");
        // /api/v2/write adds no db/org/bucket label; tags become labels.
        assert_eq!(
            series[0]["metric"],
            json!({"__name__": "air_noise", "device": "dev2", "site": "lab"})
        );
        assert_eq!(series[0]["values"], json!([40.5]));
        assert_eq!(series[0]["timestamps"], json!([ts]));
        assert_eq!(
            series[1]["metric"],
            json!({"__name__": "air_pm25", "device": "dev2", "site": "lab"})
        );
        assert_eq!(series[1]["values"], json!([12]));
        assert_eq!(series[1]["timestamps"], json!([ts]));
    };
    let selector = r#"{__name__=~"air_.*"}"#;
    let two_samples = |series: &[Value]| Victoria::sample_count(series) >= 2;
    check(
        vm.export_until(selector, Duration::from_secs(10), two_samples)
            .await,
    );
    assert!(vm.export(r#"{__name__="nothing_here"}"#).await.is_empty());

    // stop()/start_again(): same port and storage, samples kept.
    vm.stop();
    vm.start_again();
    check(vm.export(selector).await);
}

// ---------------------------------------------------------------------------
// Modbus simulator (pymodbus 3.16.1)
// ---------------------------------------------------------------------------

fn spec(holding0: u16, input0: u16) -> Value {
    json!({
        "devices": [
            {
                "unit": 1,
                "holding": {"0": holding0, "1": 65535, "2": 7},
                "input": {"0": input0, "1": 80, "2": 653},
                "coils": {"0": true, "1": false, "2": true},
                "discrete": {"0": false, "1": true}
            },
            {"unit": 2, "input": {"10": 500}}
        ],
        "silent": [7]
    })
}

/// Awaits a Modbus call that must be answered with data.
async fn ok<T, F>(what: &str, call: F) -> T
where
    F: Future<Output = tokio_modbus::Result<T>>,
{
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Err(_) => panic!("{what}: no answer within {CALL_TIMEOUT:?}"),
        Ok(Err(e)) => panic!("{what}: transport/protocol error: {e}"),
        Ok(Ok(Err(code))) => panic!("{what}: exception {code:?}"),
        Ok(Ok(Ok(value))) => value,
    }
}

/// Awaits a Modbus call that must be answered with an exception.
async fn exception<T: std::fmt::Debug, F>(what: &str, call: F) -> ExceptionCode
where
    F: Future<Output = tokio_modbus::Result<T>>,
{
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Err(_) => panic!("{what}: no answer within {CALL_TIMEOUT:?}"),
        Ok(Err(e)) => panic!("{what}: transport/protocol error: {e}"),
        Ok(Ok(Ok(value))) => panic!("{what}: expected an exception, got {value:?}"),
        Ok(Ok(Err(code))) => code,
    }
}

/// Awaits a Modbus call that must never be answered.
async fn no_answer<T: std::fmt::Debug, F>(what: &str, call: F)
where
    F: Future<Output = tokio_modbus::Result<T>>,
{
    if let Ok(answer) = tokio::time::timeout(SILENT_WAIT, call).await {
        panic!("{what}: expected no answer within {SILENT_WAIT:?}, got {answer:?}");
    }
}

/// The same checks on every transport.
async fn exercise(ctx: &mut Context, sim: &mut ModbusSim, transport: &str) {
    let t = transport;
    ctx.set_slave(Slave(1));
    assert_eq!(
        ok(t, ctx.read_holding_registers(0, 3)).await,
        vec![123, 65535, 7]
    );
    assert_eq!(
        ok(t, ctx.read_input_registers(0, 3)).await,
        vec![35, 80, 653]
    );
    assert_eq!(ok(t, ctx.read_coils(0, 3)).await, vec![true, false, true]);
    assert_eq!(
        ok(t, ctx.read_discrete_inputs(0, 2)).await,
        vec![false, true]
    );

    // Unlisted addresses: exception 2, also when only part of the range is listed.
    for code in [
        exception(t, ctx.read_holding_registers(0, 4)).await,
        exception(t, ctx.read_input_registers(100, 1)).await,
        exception(t, ctx.read_coils(1, 3)).await,
        exception(t, ctx.read_discrete_inputs(2, 1)).await,
        exception(t, ctx.write_single_register(3, 1)).await,
        exception(t, ctx.write_single_coil(9, true)).await,
    ] {
        assert_eq!(code, ExceptionCode::IllegalDataAddress, "{t}");
    }

    // Writes are visible to later reads.
    ok(t, ctx.write_single_coil(1, true)).await;
    assert_eq!(ok(t, ctx.read_coils(0, 3)).await, vec![true, true, true]);
    ok(t, ctx.write_multiple_coils(0, &[false, true, false])).await;
    assert_eq!(ok(t, ctx.read_coils(0, 3)).await, vec![false, true, false]);
    ok(t, ctx.write_single_register(2, 4321)).await;
    ok(t, ctx.write_multiple_registers(0, &[1, 2])).await;
    assert_eq!(
        ok(t, ctx.read_holding_registers(0, 3)).await,
        vec![1, 2, 4321]
    );

    // A second device on the same link.
    ctx.set_slave(Slave(2));
    assert_eq!(ok(t, ctx.read_input_registers(10, 1)).await, vec![500]);

    // Silent unit 7 (dead device) and unit 9 (not simulated): never answer.
    ctx.set_slave(Slave(7));
    no_answer(&format!("{t} unit 7"), ctx.read_holding_registers(0, 1)).await;
    ctx.set_slave(Slave(9));
    no_answer(&format!("{t} unit 9"), ctx.read_holding_registers(0, 1)).await;

    // The link still works for unit 1 after those time-outs.
    ctx.set_slave(Slave(1));
    assert_eq!(ok(t, ctx.read_input_registers(0, 1)).await, vec![35]);

    // update(): the simulator serves the new values (and drops client writes).
    sim.update(&spec(999, 36));
    assert_eq!(
        ok(t, ctx.read_holding_registers(0, 3)).await,
        vec![999, 65535, 7]
    );
    assert_eq!(
        ok(t, ctx.read_input_registers(0, 3)).await,
        vec![36, 80, 653]
    );
    assert_eq!(ok(t, ctx.read_coils(0, 3)).await, vec![true, false, true]);
}

#[tokio::test]
async fn modbus_sim_tcp() {
    let mut sim = ModbusSim::tcp(&spec(123, 35));
    let mut ctx = tokio::time::timeout(
        CALL_TIMEOUT,
        tokio_modbus::client::tcp::connect_slave(sim.addr(), Slave(1)),
    )
    .await
    .expect("connect within timeout")
    .expect("connect to the simulator");
    exercise(&mut ctx, &mut sim, "tcp").await;
    drop(ctx);

    // stop() exits cleanly on SIGTERM; start_again() serves the same port
    // with the spec file as last updated.
    let port = sim.port();
    let status = sim.stop().expect("simulator was running");
    assert!(
        status.success(),
        "modbus_sim.py exit on SIGTERM: {status}\n{}",
        sim.log_tail()
    );
    assert!(!common::port_accepts(port));
    sim.start_again();
    assert_eq!(sim.port(), port);
    let mut ctx = tokio_modbus::client::tcp::connect_slave(sim.addr(), Slave(1))
        .await
        .expect("reconnect to the restarted simulator");
    assert_eq!(
        ok("tcp after restart", ctx.read_holding_registers(0, 1)).await,
        vec![999]
    );
}

#[tokio::test]
async fn modbus_sim_rtu_over_tcp() {
    let mut sim = ModbusSim::rtu_over_tcp(&spec(123, 35));
    let stream = tokio::time::timeout(CALL_TIMEOUT, tokio::net::TcpStream::connect(sim.addr()))
        .await
        .expect("connect within timeout")
        .expect("connect to the simulator");
    let mut ctx = tokio_modbus::client::rtu::attach_slave(stream, Slave(1));
    exercise(&mut ctx, &mut sim, "rtu-over-tcp").await;
}

#[tokio::test]
async fn modbus_sim_rtu_through_pty_pair() {
    let pty = PtyPair::start();
    let mut sim = ModbusSim::rtu(&spec(123, 35), pty.a(), 9600);
    let path = pty.b().to_str().expect("utf-8 pty path");
    let serial = tokio_serial::SerialStream::open(&tokio_serial::new(path, 9600))
        .expect("open the client end of the pty pair");
    let mut ctx = tokio_modbus::client::rtu::attach_slave(serial, Slave(1));
    exercise(&mut ctx, &mut sim, "rtu").await;
}
