//! A dustgate process under test, and the register fixtures the simulators serve.
//!
//! The fixtures are built here from first principles (`to_be_bytes` and the byte-order
//! definitions), not with dustgate's own encoder, so a decoding bug cannot cancel itself out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Proc, START_TIMEOUT};

/// `dustgate run` on a generated site.toml, with profiles in `devices/` beside it.
pub struct Gateway {
    pub proc: Proc,
    pub dir: PathBuf,
    pub config: PathBuf,
}

impl Gateway {
    pub fn binary() -> PathBuf {
        PathBuf::from(env!("CARGO_BIN_EXE_dustgate"))
    }

    /// Writes the files and starts `dustgate run --config site.toml`.
    /// Without an `[http]` section, the API listens on a free port (not the default 8080, which
    /// parallel tests and a running demo would share).
    pub fn start(dir: &Path, site_toml: &str, profiles: &[(&str, String)]) -> Gateway {
        let mut toml = site_toml.to_string();
        if !toml.contains("[http]") {
            let _ = write!(
                toml,
                "\n[http]\nlisten = \"127.0.0.1:{}\"\n",
                super::free_port()
            );
        }
        let config = write_site(dir, &toml, profiles);
        let proc = Proc::spawn(
            "dustgate",
            dir,
            &Self::binary(),
            ["run", "--config", config.to_str().expect("utf-8 path")],
        );
        Gateway {
            proc,
            dir: dir.to_path_buf(),
            config,
        }
    }

    /// The gateway's log so far (it logs to stderr).
    pub fn log(&self) -> String {
        self.proc.stderr()
    }

    /// Waits until the log holds `needle`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let path = self.proc.stderr_path();
        self.proc
            .wait_until(&format!("log line {needle:?}"), timeout, || {
                std::fs::read_to_string(&path).is_ok_and(|l| l.contains(needle))
            });
    }

    pub fn wait_started(&mut self) {
        self.wait_log("gateway started", START_TIMEOUT);
    }
}

/// Writes site.toml and devices/*.toml into `dir`; returns the site.toml path.
pub fn write_site(dir: &Path, site_toml: &str, profiles: &[(&str, String)]) -> PathBuf {
    std::fs::create_dir_all(dir.join("devices")).expect("create devices dir");
    for (name, text) in profiles {
        std::fs::write(dir.join("devices").join(format!("{name}.toml")), text)
            .expect("write profile");
    }
    let config = dir.join("site.toml");
    std::fs::write(&config, site_toml).expect("write site.toml");
    config
}

/// The wire bytes of a big-endian value in a byte order, by the definition: `ABCD` as is,
/// `CDAB` with the 16-bit words in reverse order, `BADC` with the bytes of each word swapped,
/// `DCBA` fully reversed.
pub fn wire_bytes(be: &[u8], order: &str) -> Vec<u8> {
    let words: Vec<[u8; 2]> = be.chunks(2).map(|c| [c[0], c[1]]).collect();
    let words: Vec<[u8; 2]> = match order {
        "ABCD" => words,
        "CDAB" => words.into_iter().rev().collect(),
        "BADC" => words.into_iter().map(|[a, b]| [b, a]).collect(),
        "DCBA" => words.into_iter().rev().map(|[a, b]| [b, a]).collect(),
        other => panic!("unknown order {other}"),
    };
    words.into_iter().flatten().collect()
}

fn to_registers(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

/// A device holding every type in every byte order, plus bits, a scaled value and a NaN.
pub struct AllTypes {
    /// The profile that maps it.
    pub profile: String,
    /// The register spec for one unit (merge into a ModbusSim spec).
    pub holding: BTreeMap<u16, u16>,
    pub input: BTreeMap<u16, u16>,
    pub coils: BTreeMap<u16, bool>,
    pub discrete: BTreeMap<u16, bool>,
    /// What InfluxDB must hold: metric → exact value.
    pub expected: Vec<(String, f64)>,
    /// Metrics that must never be written (not finite).
    pub never: Vec<String>,
}

impl AllTypes {
    pub fn unit_spec(&self, unit: u8) -> Value {
        let words = |m: &BTreeMap<u16, u16>| {
            Value::Object(m.iter().map(|(k, v)| (k.to_string(), json!(v))).collect())
        };
        let bits = |m: &BTreeMap<u16, bool>| {
            Value::Object(m.iter().map(|(k, v)| (k.to_string(), json!(v))).collect())
        };
        json!({
            "unit": unit,
            "holding": words(&self.holding),
            "input": words(&self.input),
            "coils": bits(&self.coils),
            "discrete": bits(&self.discrete),
        })
    }
}

/// Values whose bytes all differ, so any byte-order mistake changes the value; the 64-bit ones
/// stay below 2^53 so that a float holds them exactly.
pub fn all_types() -> AllTypes {
    let cases: Vec<(&str, Vec<u8>, f64)> = vec![
        ("u16", 0xA1B2u16.to_be_bytes().to_vec(), 41394.0),
        ("i16", (-15404i16).to_be_bytes().to_vec(), -15404.0),
        (
            "u32",
            3_000_000_123u32.to_be_bytes().to_vec(),
            3_000_000_123.0,
        ),
        (
            "i32",
            (-2_000_000_123i32).to_be_bytes().to_vec(),
            -2_000_000_123.0,
        ),
        (
            "u64",
            0x0012_3456_789A_BCDEu64.to_be_bytes().to_vec(),
            0x0012_3456_789A_BCDEu64 as f64,
        ),
        (
            "i64",
            (-0x0012_3456_789A_BCDEi64).to_be_bytes().to_vec(),
            -0x0012_3456_789A_BCDEi64 as f64,
        ),
        (
            "f32",
            std::f32::consts::PI.to_be_bytes().to_vec(),
            f64::from(std::f32::consts::PI),
        ),
        (
            "f64",
            (-std::f64::consts::E * 1000.0).to_be_bytes().to_vec(),
            -std::f64::consts::E * 1000.0,
        ),
    ];
    let mut profile = String::from(
        "description = \"Test device: every type in every byte order\"\nsource = \"dustgate tests\"\nconfidence = \"P\"\nmeasurement = \"e2e\"\n",
    );
    let mut holding = BTreeMap::new();
    let mut expected = Vec::new();
    let mut addr: u16 = 0;
    for (ty, be, value) in &cases {
        for order in ["ABCD", "CDAB", "BADC", "DCBA"] {
            let metric = format!("{ty}_{}", order.to_lowercase());
            let _ = write!(
                profile,
                "\n[[register]]\nmetric = \"{metric}\"\ntable = \"holding\"\naddress = {addr}\ntype = \"{ty}\"\norder = \"{order}\"\n"
            );
            for w in to_registers(&wire_bytes(be, order)) {
                holding.insert(addr, w);
                addr += 1;
            }
            expected.push((metric, *value));
        }
    }
    // Bits of one register, a scaled value with an offset, and a NaN, after a hole.
    holding.insert(100, 0b1010);
    holding.insert(101, 1234);
    holding.insert(102, 0x7FC0);
    holding.insert(103, 0x0000);
    profile.push_str(
        r#"
[[register]]
metric = "bit1"
table = "holding"
address = 100
type = "bool"
bit = 1

[[register]]
metric = "bit2"
table = "holding"
address = 100
type = "bool"
bit = 2

[[register]]
metric = "scaled"
table = "holding"
address = 101
type = "u16"
scale = 0.01
offset = -10.0

[[register]]
metric = "nan_f32"
table = "holding"
address = 102
type = "f32"

[[register]]
metric = "input_i16"
table = "input"
address = 0
type = "i16"

[[register]]
metric = "input_f32_cdab"
table = "input"
address = 1
type = "f32"
order = "CDAB"

[[register]]
metric = "coil0"
table = "coil"
address = 0
type = "bool"

[[register]]
metric = "coil1"
table = "coil"
address = 1
type = "bool"

[[register]]
metric = "discrete0"
table = "discrete"
address = 0
type = "bool"
"#,
    );
    expected.push(("bit1".into(), 1.0));
    expected.push(("bit2".into(), 0.0));
    expected.push(("scaled".into(), 1234.0 / 100.0 - 10.0));
    let mut input = BTreeMap::new();
    input.insert(0, (-2i16) as u16);
    for (i, w) in to_registers(&wire_bytes(&(-1.5f32).to_be_bytes(), "CDAB"))
        .into_iter()
        .enumerate()
    {
        input.insert(1 + i as u16, w);
    }
    expected.push(("input_i16".into(), -2.0));
    expected.push(("input_f32_cdab".into(), -1.5));
    let coils = BTreeMap::from([(0, true), (1, false)]);
    let discrete = BTreeMap::from([(0, true)]);
    expected.push(("coil0".into(), 1.0));
    expected.push(("coil1".into(), 0.0));
    expected.push(("discrete0".into(), 1.0));
    AllTypes {
        profile,
        holding,
        input,
        coils,
        discrete,
        expected,
        never: vec!["nan_f32".into()],
    }
}

/// The generic dust monitor's map (devices/generic-dust-monitor.toml) with plausible raw values.
pub fn dust_monitor_unit(unit: u8) -> (Value, Vec<(&'static str, f64)>) {
    let raw: [u16; 9] = [35, 80, 136, 652, (-35i16) as u16, 609, 10132, 23, 270];
    let spec = json!({
        "unit": unit,
        "holding": raw.iter().enumerate().map(|(i, v)| (i.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    });
    let expected = vec![
        ("pm25", 35.0),
        ("pm10", 80.0),
        ("tsp", 136.0),
        ("noise", 65.2),
        ("temperature", -3.5),
        ("humidity", 60.9),
        ("pressure", 101.32),
        ("wind_speed", 2.3),
        ("wind_direction", 270.0),
    ];
    (spec, expected)
}

/// `[influx]` for InfluxDB 1.x. gzip is asked for explicitly: on loopback it would be off by
/// default, and the tests are to exercise the path a real site's uplink takes.
pub fn influx_v1(url: &str, db: &str) -> String {
    format!(
        "[influx]\nurl = \"{url}\"\napi = \"v1\"\ndatabase = \"{db}\"\nflush_interval = \"200ms\"\nretry_max = \"2s\"\ngzip = true\n"
    )
}

/// The latest row of every series of `measurement` per device, as column → value.
pub async fn latest_by_device(
    influx: &super::Influx1,
    db: &str,
    measurement: &str,
    filter: &str,
) -> BTreeMap<String, BTreeMap<String, Value>> {
    let q = format!(
        "SELECT * FROM \"{measurement}\" {filter} GROUP BY \"device\" ORDER BY time DESC LIMIT 1"
    );
    let v = influx.query(db, &q).await;
    let mut out = BTreeMap::new();
    for result in v["results"].as_array().into_iter().flatten() {
        for series in result["series"].as_array().into_iter().flatten() {
            let device = series["tags"]["device"].as_str().unwrap_or("").to_string();
            let cols: Vec<String> = series["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c.as_str().unwrap_or("").to_string())
                .collect();
            if let Some(row) = series["values"].as_array().and_then(|r| r.first()) {
                let row: BTreeMap<String, Value> = cols
                    .iter()
                    .cloned()
                    .zip(row.as_array().cloned().unwrap_or_default())
                    .collect();
                out.insert(device, row);
            }
        }
    }
    out
}

/// How many `pm10` values InfluxDB holds in `air` (`filter`: a WHERE clause or "").
pub async fn pm10_count(influx: &super::Influx1, db: &str, filter: &str) -> usize {
    let rows = influx
        .query_rows(db, &format!("SELECT count(pm10) FROM air {filter}"))
        .await;
    rows.first()
        .and_then(|r| r.get(1))
        .and_then(Value::as_f64)
        .unwrap_or(0.0) as usize
}

/// Waits until InfluxDB holds at least `n` `pm10` values in `air`; fails with how many it had.
pub async fn wait_pm10_count(influx: &super::Influx1, db: &str, n: usize, timeout: Duration) {
    let t0 = std::time::Instant::now();
    let mut last = 0;
    while t0.elapsed() < timeout {
        last = pm10_count(influx, db, "").await;
        if last >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{last} of {n} readings in InfluxDB after {timeout:?}");
}

/// One unlabelled sample of the gateway's `/metrics` on `port`.
pub fn metric_value(port: u16, name: &str) -> Option<f64> {
    let (status, body) = super::http_get_blocking(port, "/metrics")?;
    if status != 200 {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}
