//! End to end on real peers: pymodbus devices over TCP, RTU over TCP and RTU (through a socat
//! pty pair) → `dustgate run` → InfluxDB 1.6.7 (v1 API) and VictoriaMetrics (v2 API); exact
//! values read back for every type in every byte order.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::site::{AllTypes, Gateway, all_types, dust_monitor_unit, influx_v1, latest_by_device};
use common::{Influx1, ModbusSim, PtyPair, Victoria, eventually, scratch_dir};
use serde_json::{Value, json};

const PARTLY_MISSING: &str = r#"description = "Test device: pm25 sits where the device has nothing"
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
address = 500
type = "u16"
"#;

struct Sims {
    tcp: ModbusSim,
    rtu_over_tcp: ModbusSim,
    _pty: PtyPair,
    _rtu: ModbusSim,
    rtu_path: String,
}

fn start_sims(spec: &Value) -> Sims {
    let tcp = ModbusSim::tcp(spec);
    let rtu_over_tcp = ModbusSim::rtu_over_tcp(spec);
    let pty = PtyPair::start();
    let rtu = ModbusSim::rtu(spec, pty.a(), 19200);
    let rtu_path = pty.b().display().to_string();
    Sims {
        tcp,
        rtu_over_tcp,
        _pty: pty,
        _rtu: rtu,
        rtu_path,
    }
}

/// A site with three buses, one per transport, each with an all-types device (unit 1) and a
/// dust monitor (unit 2); `extra` adds devices per bus (kind → TOML).
fn site_toml(output: &str, sims: &Sims, extra: &BTreeMap<&str, &str>) -> String {
    let bus = |name: &str, link: String| {
        format!(
            "\n[[modbus]]\nname = \"{name}\"\n{link}timeout = \"500ms\"\ninterval = \"1s\"\n\n  [[modbus.device]]\n  id = \"alltypes-{name}\"\n  unit = 1\n  profile = \"all-types\"\n\n  [[modbus.device]]\n  id = \"dust-{name}\"\n  unit = 2\n  profile = \"generic-dust-monitor\"\n  tags = {{ location = \"gate {name}\" }}\n{}",
            extra.get(name).copied().unwrap_or("")
        )
    };
    format!(
        "[site]\nid = \"e2e-site\"\nname = \"测试工地\"\ntags = {{ district = \"test\" }}\nhealth_interval = \"1s\"\n\n{output}\n[store]\ndir = \"store\"\n{}{}{}",
        bus(
            "tcp",
            format!(
                "transport = \"tcp\"\naddress = \"127.0.0.1:{}\"\n",
                sims.tcp.port()
            )
        ),
        bus(
            "rot",
            format!(
                "transport = \"rtu-over-tcp\"\naddress = \"127.0.0.1:{}\"\n",
                sims.rtu_over_tcp.port()
            )
        ),
        bus(
            "rtu",
            format!(
                "transport = \"rtu\"\npath = \"{}\"\nbaud = 19200\n",
                sims.rtu_path
            )
        ),
    )
}

fn num(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
}

fn check_exact(device: &str, row: &BTreeMap<String, Value>, expected: &[(String, f64)]) {
    for (metric, want) in expected {
        let got = num(row.get(metric));
        assert_eq!(
            got,
            Some(*want),
            "{device}.{metric}: read back {got:?}, expected {want}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_byte_order_over_three_transports_into_influxdb_1() {
    let influx = Influx1::start();
    influx.create_db("e2e").await;
    let at: AllTypes = all_types();
    let (dust, dust_expected) = dust_monitor_unit(2);
    let spec = json!({
        "devices": [at.unit_spec(1), dust, {"unit": 3, "holding": {"0": 77}}],
        "silent": [7],
    });
    let sims = start_sims(&spec);
    let extra = BTreeMap::from([
        (
            "tcp",
            "\n  [[modbus.device]]\n  id = \"partial-tcp\"\n  unit = 3\n  profile = \"partly-missing\"\n",
        ),
        (
            "rtu",
            "\n  [[modbus.device]]\n  id = \"ghost-rtu\"\n  unit = 7\n  profile = \"renke-rs-fsjt-n01\"\n",
        ),
    ]);
    let toml = site_toml(&influx_v1(&influx.url(), "e2e"), &sims, &extra);
    let dir = scratch_dir("e2e-influx1");
    let mut gw = Gateway::start(
        &dir,
        &toml,
        &[
            ("all-types", at.profile.clone()),
            ("partly-missing", PARTLY_MISSING.to_string()),
        ],
    );
    gw.wait_started();
    let started = std::time::Instant::now();

    let devices = ["alltypes-tcp", "alltypes-rot", "alltypes-rtu"];
    let rows = eventually(
        "all-types rows from the three transports",
        Duration::from_secs(60),
        || async {
            let rows = latest_by_device(&influx, "e2e", "e2e", "").await;
            devices
                .iter()
                .all(|d| {
                    rows.get(*d)
                        .is_some_and(|r| at.expected.iter().all(|(m, _)| num(r.get(m)).is_some()))
                })
                .then_some(rows)
        },
    )
    .await;
    for d in devices {
        check_exact(d, &rows[d], &at.expected);
        for m in &at.never {
            assert!(
                rows[d].get(m).is_none_or(Value::is_null),
                "{d}.{m} is not a finite number and must not be written: {:?}",
                rows[d].get(m)
            );
        }
    }

    let dust_expected: Vec<(String, f64)> = dust_expected
        .iter()
        .map(|(m, v)| (m.to_string(), *v))
        .collect();
    let air = eventually(
        "dust monitor rows and the partly readable device",
        Duration::from_secs(30),
        || async {
            let rows = latest_by_device(&influx, "e2e", "air", "").await;
            ["dust-tcp", "dust-rot", "dust-rtu", "partial-tcp"]
                .iter()
                .all(|d| rows.contains_key(*d))
                .then_some(rows)
        },
    )
    .await;
    for d in ["dust-tcp", "dust-rot", "dust-rtu"] {
        check_exact(d, &air[d], &dust_expected);
    }
    // Every point carries the site's and the device's tags.
    let tagged = influx
        .query_rows(
            "e2e",
            "SELECT pm10, district, location, site FROM air WHERE device = 'dust-rot' LIMIT 1",
        )
        .await;
    assert_eq!(tagged[0][2], json!("test"));
    assert_eq!(tagged[0][3], json!("gate rot"));
    assert_eq!(tagged[0][4], json!("e2e-site"));
    // The device that refuses one read still delivers the other.
    assert_eq!(num(air["partial-tcp"].get("pm10")), Some(77.0));
    assert!(air["partial-tcp"].get("pm25").is_none_or(Value::is_null));

    // Health: up/down, exceptions counted, timeouts of the silent unit, invalid values.
    let health = eventually(
        "gateway health with the silent device down",
        Duration::from_secs(30),
        || async {
            let rows =
                latest_by_device(&influx, "e2e", "gateway", "WHERE component = 'modbus'").await;
            let ghost_down = rows.get("ghost-rtu").is_some_and(|r| {
                num(r.get("device_up")) == Some(0.0) && num(r.get("timeouts")) >= Some(1.0)
            });
            let partial_counted = rows
                .get("partial-tcp")
                .is_some_and(|r| num(r.get("exceptions")) >= Some(1.0));
            (ghost_down && partial_counted).then_some(rows)
        },
    )
    .await;
    for d in [
        "alltypes-tcp",
        "alltypes-rot",
        "alltypes-rtu",
        "dust-tcp",
        "dust-rot",
        "dust-rtu",
        "partial-tcp",
    ] {
        assert_eq!(
            num(health[d].get("device_up")),
            Some(1.0),
            "{d} should be up: {:?}",
            health[d]
        );
    }
    assert_eq!(num(health["dust-rtu"].get("poll_errors")), Some(0.0));
    let pipeline =
        latest_by_device(&influx, "e2e", "gateway", "WHERE component = 'pipeline'").await;
    assert!(
        num(pipeline["dustgate"].get("invalid_values")) >= Some(3.0),
        "NaN values are counted: {:?}",
        pipeline["dustgate"]
    );
    // A silent device on the RTU bus does not starve its neighbours: the dust monitor there
    // keeps being read while the silent unit times out.
    let since_start = started.elapsed();
    if since_start < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_secs(8) - since_start).await;
    }
    let recent = influx
        .query_rows(
            "e2e",
            "SELECT count(pm10) FROM air WHERE device = 'dust-rtu' AND time > now() - 6s",
        )
        .await;
    let n = recent
        .first()
        .and_then(|r| r.get(1))
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    assert!(
        n >= 3.0,
        "dust-rtu read {n} times in 6 s beside a silent unit"
    );

    gw.proc.stop();
    let log = gw.log();
    assert!(
        log.contains("device down") && log.contains("ghost-rtu"),
        "log: {log}"
    );
    assert!(log.contains("writer stopped"), "graceful stop: {log}");
    drop(sims);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_byte_order_over_three_transports_into_victoriametrics_v2() {
    let vm = Victoria::start();
    let at = all_types();
    let (dust, _) = dust_monitor_unit(2);
    let spec = json!({ "devices": [at.unit_spec(1), dust] });
    let sims = start_sims(&spec);
    let output = format!(
        "[influx]\nurl = \"{}\"\napi = \"v2\"\norg = \"bureau\"\nbucket = \"dust\"\ntoken_env = \"E2E_VM_TOKEN\"\nflush_interval = \"200ms\"\ngzip = true\n",
        vm.url()
    );
    let toml = site_toml(&output, &sims, &BTreeMap::new());
    let dir = scratch_dir("e2e-victoria");
    // The token comes from the environment, never the file.
    unsafe_env_for_child(&dir);
    let mut gw = Gateway::start(&dir, &toml, &[("all-types", at.profile.clone())]);
    gw.wait_started();

    let series = vm
        .export_until(r#"{__name__=~"e2e_.*"}"#, Duration::from_secs(60), |s| {
            s.len() >= 3 * at.expected.len()
        })
        .await;
    let mut got: BTreeMap<(String, String), f64> = BTreeMap::new();
    for s in &series {
        let name = s["metric"]["__name__"].as_str().unwrap_or("").to_string();
        let device = s["metric"]["device"].as_str().unwrap_or("").to_string();
        assert_eq!(s["metric"]["site"], json!("e2e-site"));
        let last = s["values"]
            .as_array()
            .and_then(|v| v.last())
            .and_then(Value::as_f64);
        if let Some(v) = last {
            got.insert((device, name), v);
        }
    }
    for d in ["alltypes-tcp", "alltypes-rot", "alltypes-rtu"] {
        for (metric, want) in &at.expected {
            let v = got.get(&(d.to_string(), format!("e2e_{metric}")));
            // VictoriaMetrics stores values as decimals of about 12 significant digits, so
            // fractions read back rounded (3.1415927410125732 → 3.141592741012); integral values
            // come back exactly. The InfluxDB test checks every value to the last bit.
            let ok = match v {
                Some(v) if want.fract() == 0.0 => v == want,
                Some(v) => (v - want).abs() <= 1e-11 * want.abs(),
                None => false,
            };
            assert!(
                ok,
                "{d}.{metric} in VictoriaMetrics: {v:?}, expected {want}"
            );
        }
        assert!(!got.contains_key(&(d.to_string(), "e2e_nan_f32".to_string())));
    }
    gw.proc.stop();
    drop(sims);
}

/// The v2 token for the VictoriaMetrics test. VictoriaMetrics ignores it; the gateway refuses to
/// start without it, which is what this proves is read from the environment.
fn unsafe_env_for_child(_dir: &std::path::Path) {
    // SAFETY: set before the child is spawned, from the test's own thread; no other thread of
    // this test binary reads E2E_VM_TOKEN.
    unsafe { std::env::set_var("E2E_VM_TOKEN", "test-token") };
}
