//! The command line as a site engineer meets it: `check` on good and bad files, `probe`
//! against a real (pymodbus) device, and `demo` into files and into InfluxDB.

mod common;

use std::process::Command;
use std::time::Duration;

use common::site::{Gateway, dust_monitor_unit, latest_by_device, write_site};
use common::{Influx1, ModbusSim, eventually, repo_root, scratch_dir};
use serde_json::json;

fn dustgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(Gateway::binary())
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run dustgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_prints_the_poll_plan_of_the_example() {
    let (code, out, err) = dustgate(&["check", "--config", "examples/site.toml"]);
    assert_eq!(code, 0, "stderr: {err}");
    for needle in [
        "examples/site.toml is valid.",
        "bus gate-rs485: RTU /dev/ttyUSB0 9600 8N1",
        "FC03 holding 0..8 (9 registers): pm25 [µg/m³], pm10 [µg/m³]",
        "FC01 coil 0..7 (8 bits): fog_cannon_on [0/1]",
        "bus tank-serial-server: RTU over TCP 192.168.10.20:8899",
        "FC03 holding 9728..9731 = 0x2600..0x2603 (4 registers): water_temperature [°C], ph",
        "plan: 2 bus(es), 6 device(s), 6 request(s) per cycle",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[test]
fn check_reports_every_problem_at_once_with_positions() {
    let dir = scratch_dir("check-bad");
    let profile = "description = \"x\"\nsource = \"y\"\nconfidence = \"U\"\n[[register]]\nmetric = \"pm10\"\ntable = \"holding\"\naddress = 0\ntype = \"u32\"\n[[register]]\nmetric = \"pm25\"\ntable = \"holding\"\naddress = 1\ntype = \"u16\"\n";
    let site = r#"[site]
id = "s1"
timezone = "Asia/Shangai"
[influx]
url = "http://127.0.0.1:8086"
api = "v1"
database = "dust"
token = "abc"
batch_size = "many"
[[modbus]]
name = "a"
transport = "rtu"
path = "/dev/ttyUSB0"
intervall = "5s"
  [[modbus.device]]
  id = "d1"
  unit = 300
  profile = "generic-dust-monitor"
  [[modbus.device]]
  id = "d1"
  unit = 2
  profile = "no-such-thing"
  [[modbus.device]]
  id = "d3"
  unit = 2
  profile = "my-meter"
"#;
    let config = write_site(&dir, site, &[("my-meter", profile.to_string())]);
    let path = config.display().to_string();
    let (code, out, err) = dustgate(&["check", "--config", &path]);
    assert_eq!(code, 1, "stdout: {out}");
    let prof = dir
        .join("devices")
        .join("my-meter.toml")
        .display()
        .to_string();
    let expected = [
        format!("{prof}:9:1: register[1].address: registers overlap"),
        format!("{path}:3:12: site.timezone: unknown time zone \"Asia/Shangai\""),
        format!("{path}:8:9: influx.token: secrets never go in the config file"),
        format!("{path}:9:14: influx.batch_size: expected an integer, found a string"),
        format!(
            "{path}:14:1: modbus[0].intervall: unknown key `intervall`; did you mean `interval`?"
        ),
        format!("{path}:17:10: modbus[0].device[0].unit: unit 300 is out of range"),
        format!("{path}:20:8: modbus[0].device[1].id: device id \"d1\" is already used at line 16"),
        format!("{path}:22:13: modbus[0].device[1].profile: no device profile \"no-such-thing\""),
        format!("{path}:25:10: modbus[0].device[2].unit: unit 2 is already used by device \"d1\""),
        format!("{path}:26:13: modbus[0].device[2].profile: profile \"my-meter\" has errors"),
    ];
    for e in &expected {
        assert!(err.contains(e.as_str()), "missing\n  {e}\nin:\n{err}");
    }
    assert!(
        err.contains(&format!("{} problems found", expected.len())),
        "{err}"
    );
}

#[test]
fn check_accepts_a_sites_own_profile_without_marks_and_says_so() {
    let dir = scratch_dir("check-unmarked");
    let profile = "description = \"our meter\"\n[[register]]\nmetric = \"pm10\"\ntable = \"holding\"\naddress = 0\ntype = \"u16\"\n";
    let site = "[site]\nid = \"s1\"\n[[modbus]]\nname = \"a\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:502\"\n  [[modbus.device]]\n  id = \"d1\"\n  unit = 1\n  profile = \"my-meter\"\n";
    let config = write_site(&dir, site, &[("my-meter", profile.to_string())]);
    let path = config.display().to_string();
    let (code, out, err) = dustgate(&["check", "--config", &path]);
    assert_eq!(code, 0, "stderr: {err}");
    let prof = dir
        .join("devices")
        .join("my-meter.toml")
        .display()
        .to_string();
    let note = format!(
        "warning: {prof}:1:1: the site's profile \"my-meter\" gives no `source` and `confidence`: it counts as [U]"
    );
    assert!(out.contains(&note), "missing {note:?} in:\n{out}");
    assert!(out.contains("profile my-meter [U]"), "{out}");
}

#[test]
fn check_shows_a_patched_pack_rule_and_its_origin() {
    let dir = scratch_dir("check-patch");
    let site = "[site]\nid = \"s1\"\nstandards = [\"gb12523-2011\"]\n[[rule]]\nid = \"gb12523-day-leq\"\nabove = 65\n";
    let config = write_site(&dir, site, &[]);
    let path = config.display().to_string();
    let (code, out, err) = dustgate(&["check", "--config", &path]);
    assert_eq!(code, 0, "stderr: {err}");
    for needle in [
        "noise 20m leq > 65 dB(A) (06:00–22:00), warning — GB 12523-2011 表1 昼间 [P]",
        "site patches of pack rules:\n  gb12523-day-leq: above 65 (site patch; pack gb12523-2011 had 70)\n",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[test]
fn probe_reads_a_device_with_its_profile_and_raw() {
    let (spec, _) = dust_monitor_unit(1);
    let sim = ModbusSim::tcp(&json!({ "devices": [spec] }));
    let addr = format!("127.0.0.1:{}", sim.port());
    let (code, out, err) = dustgate(&[
        "probe",
        "modbus",
        "--tcp",
        &addr,
        "--unit",
        "1",
        "--profile",
        "generic-dust-monitor",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    for needle in [
        "FC03 holding 0+9: [0]=35 (0x0023) [1]=80 (0x0050)",
        "pm10                   80 µg/m³",
        "temperature            -3.5 °C",
        "pressure               101.32 kPa",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let (code, out, _) = dustgate(&[
        "probe",
        "modbus",
        "--tcp",
        &addr,
        "--unit",
        "1",
        "--raw",
        "holding:0x3:2",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("[3]=652 (0x028C) [4]=65501 (0xFFDD)"), "{out}");
    // A read of registers the device does not have: the exception is shown, exit 1.
    let (code, out, _) = dustgate(&[
        "probe",
        "modbus",
        "--tcp",
        &addr,
        "--unit",
        "1",
        "--raw",
        "holding:500:1",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("exception"), "{out}");
}

#[test]
fn probe_shows_byte_orders_warns_on_absurd_values_reads_a_configured_device_and_decodes_mqtt() {
    // pm10 at 60000 µg/m³ (a wrong scale or address shows so); a float 25.5 at 20..21 (ABCD).
    let (mut spec, _) = dust_monitor_unit(1);
    spec["holding"]["1"] = json!(60000);
    spec["holding"]["20"] = json!(0x41CC);
    spec["holding"]["21"] = json!(0);
    let sim = ModbusSim::tcp(&json!({ "devices": [spec] }));
    let addr = format!("127.0.0.1:{}", sim.port());
    let (code, out, err) = dustgate(&[
        "probe",
        "modbus",
        "--tcp",
        &addr,
        "--unit",
        "0x01",
        "--raw",
        "holding:0x14:2",
        "--orders",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    for needle in [
        "[20]=16844 (0x41CC) [21]=0 (0x0000)",
        "f32: ABCD 25.5   CDAB 2.3603e-41   BADC -50593792   DCBA 7.3272e-41",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }

    let dir = scratch_dir("probe-config");
    let config = write_site(
        &dir,
        &format!(
            "[site]\nid = \"probe\"\n\n[store]\ndir = \"store\"\n\n[[modbus]]\nname = \"gate\"\ntransport = \"tcp\"\naddress = \"{addr}\"\n  [[modbus.device]]\n  id = \"dust-01\"\n  unit = 1\n  profile = \"generic-dust-monitor\"\n"
        ),
        &[],
    );
    let config = config.to_str().expect("utf-8 path");
    let (code, out, _) = dustgate(&[
        "probe", "modbus", "--config", config, "--device", "dust-01", "--orders",
    ]);
    assert_eq!(code, 1, "an absurd value exits 1:\n{out}");
    for needle in [
        "device dust-01 on bus gate",
        "pm10                   60000 µg/m³",
        "WARNING: outside the sensor's range 0..1000",
        "temperature            -3.5 °C",
        "1 value(s) outside their sensor's range",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let (code, _, err) = dustgate(&["probe", "modbus", "--config", config, "--device", "dust-09"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no Modbus device \"dust-09\"") && err.contains("it has: dust-01"),
        "{err}"
    );

    let (code, out, err) = dustgate(&[
        "probe",
        "mqtt",
        "--profile",
        "json-dust-monitor",
        "--topic",
        "sensors/d7/telemetry",
        "--payload",
        r#"{"ts": 1790000000000, "data": {"pm10": 81.5, "pm25": "n/a"}}"#,
    ]);
    assert_eq!(
        code, 1,
        "a field that is not a number exits 1:\n{out}\n{err}"
    );
    for needle in [
        "device d7 at 2026-09-21T",
        "pm10                   81.5 µg/m³",
        "pm25                   NOT A NUMBER",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let (code, out, _) = dustgate(&[
        "probe",
        "mqtt",
        "--profile",
        "json-dust-monitor",
        "--payload",
        "{not json",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("REJECTED: not JSON"), "{out}");
}

/// The demo's day, replayed at 1440x: the dust episode trips the 15-minute PM10 rule and the
/// mist cannons switch on and off with it; sixteen trucks leave, one unwashed and uncovered;
/// the wet-work gap, the uncovered pile, the sensor outage and the night work each raise their
/// alert.
#[test]
fn demo_replays_its_day_into_line_protocol_files() {
    let dir = scratch_dir("demo-files");
    let store = dir.display().to_string();
    let zone = common::zone_where_it_is_late_evening();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let (code, out, err) = dustgate(&[
        "demo",
        "--speed",
        "1440",
        "--duration",
        "62s",
        "--timezone",
        &zone,
        "--listen",
        &listen,
        "--store",
        &store,
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("7 simulated devices"), "{out}");
    assert!(
        out.contains("replaying the last 24 hours at 1440x"),
        "{out}"
    );
    // 7 on the Modbus bus and the north gate's HJ 212 monitor.
    assert!(out.contains("devices up 8/8"), "{out}");
    assert!(out.contains("leaves without washing, uncovered"), "{out}");
    assert!(out.contains("washed 94% of 16 exits"), "15 of 16: {out}");
    for logged in [
        "未冲洗出场",
        "未覆盖出场",
        "离线",
        "夜间施工噪声超标",
        "湿法作业",
        "物料堆未覆盖",
    ] {
        assert!(err.contains(logged), "{logged} is logged: {err}");
    }
    let series = dir.join("series");
    let text: String = std::fs::read_dir(&series)
        .expect("series dir")
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    let lines =
        |prefix: &str| -> Vec<&str> { text.lines().filter(|l| l.starts_with(prefix)).collect() };
    let vehicles = lines("vehicle,");
    assert_eq!(vehicles.len(), 16, "{vehicles:#?}");
    let unwashed: Vec<_> = vehicles
        .iter()
        .filter(|l| l.contains("washed=false"))
        .collect();
    assert_eq!(unwashed.len(), 1, "{vehicles:#?}");
    assert!(
        unwashed[0].contains("plate=\"川A·D1234\"") && unwashed[0].contains("covered=false"),
        "{unwashed:?}"
    );
    // The cannons: on by the rule, then off once it cleared (in this order).
    let cannons = lines("equipment,actuator=mist-cannons,");
    let on = cannons
        .iter()
        .position(|l| l.contains("fog_cannon_on=1") && l.contains("cause=\"rule site-pm10-15m\""))
        .unwrap_or_else(|| panic!("{cannons:#?}"));
    assert!(
        cannons[on..]
            .iter()
            .any(|l| l.contains("fog_cannon_on=0") && l.contains("cause=\"rule cleared\"")),
        "{cannons:#?}"
    );
    let alerts = lines("alert,");
    for (rule, state) in [
        ("site-pm10-15m", "open"),
        ("site-pm10-15m", "closed"),
        ("offline", "open"),
        ("offline", "closed"),
        ("gb12523-night-leq", "open"),
        ("six100-wash", "event"),
        ("six100-sealed_transport", "event"),
        ("six100-wet_work", "event"),
        ("six100-cover", "event"),
    ] {
        assert!(
            alerts
                .iter()
                .any(|l| l.contains(&format!("rule={rule},"))
                    && l.contains(&format!("state={state} "))),
            "no {state} alert of {rule}: {alerts:#?}"
        );
    }
    for needle in [
        "air,device=dust-01,",
        "water,device=water-01,",
        "equipment,device=relay-01,",
        "aqi,device=dust-01,",
        "compliance,district=demo,item=wash,",
        "compliance,district=demo,item=wet_work,",
        "gateway,",
        "air,device=dust-02,",
        "air_minute,device=dust-02,",
    ] {
        assert!(text.contains(needle), "no {needle:?} in the demo's files");
    }
    // The north gate's HJ 212 monitor: a 2011 every 30 s and a 2051 every minute of the day
    // (a replayed day: 2,880 and 1,440; the first and last minutes of the run may fall short).
    let rtd = lines("air,device=dust-02,").len();
    let minutes = lines("air_minute,device=dust-02,").len();
    assert!((2700..=3000).contains(&rtd), "{rtd} real-time frames");
    assert!((1350..=1500).contains(&minutes), "{minutes} minute frames");
    // The wind sensor's outage, in the gateway's health.
    let wind = lines("gateway,")
        .into_iter()
        .filter(|l| l.contains("device=wind-speed-01,"))
        .collect::<Vec<_>>();
    assert!(wind.iter().any(|l| l.contains("device_up=0")), "{wind:#?}");
    assert!(
        wind.last().is_some_and(|l| l.contains("device_up=1")),
        "{wind:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_fills_influxdb() {
    let influx = Influx1::start();
    let url = influx.url();
    let store = scratch_dir("demo-influx").display().to_string();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let child = tokio::task::spawn_blocking(move || {
        dustgate(&[
            "demo",
            "--speed",
            "1",
            "--duration",
            "6s",
            "--interval",
            "1s",
            "--listen",
            &listen,
            "--store",
            &store,
            "--influx-url",
            &url,
            "--influx-db",
            "demo",
        ])
    });
    let rows = eventually("demo rows in InfluxDB", Duration::from_secs(30), || async {
        let dbs = influx.query_rows("", "SHOW DATABASES").await;
        if !dbs.iter().any(|r| r.first() == Some(&json!("demo"))) {
            return None;
        }
        let rows = latest_by_device(&influx, "demo", "air", "").await;
        (rows.len() >= 4).then_some(rows)
    })
    .await;
    assert!(
        rows.contains_key("dust-01") && rows.contains_key("wind-speed-01"),
        "{rows:?}"
    );
    let (code, out, err) = child.await.expect("demo thread");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("0 set aside as rejected"), "{out}");
}

/// Credentials in a URL are refused with their position, and never printed: not by `check`,
/// not in the error that refuses them (issue 11, secrets in logs).
#[test]
fn check_refuses_credentials_in_urls_and_never_prints_them() {
    let dir = scratch_dir("check-userinfo");
    let site = r#"[site]
id = "s1"
timezone = "Asia/Shanghai"
[influx]
url = "http://admin:s3cretpw@127.0.0.1:8086"
api = "v1"
database = "dust"
[[mqtt]]
name = "b"
url = "mqtt://dg:brokerpw@127.0.0.1:1883"
client_id = "c1"
  [[mqtt.subscribe]]
  topic = "s/+/t"
  device = "{1}"
  profile = "json-dust-monitor"
"#;
    let config = write_site(&dir, site, &[]);
    let path = config.display().to_string();
    let (code, out, err) = dustgate(&["check", "--config", &path]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    let all = format!("{out}{err}");
    assert!(
        all.contains(&format!("{path}:5:7: influx.url:")) && all.contains("carries credentials"),
        "{all}"
    );
    assert!(all.contains(&format!("{path}:10:7: mqtt[0].url:")), "{all}");
    for secret in ["s3cretpw", "brokerpw", "admin:", "dg:"] {
        assert!(!all.contains(secret), "{secret} printed: {all}");
    }
}

/// Config that passed `check` and then failed at run time (issue 11 item 13): each is now a
/// `check` error with its position, all at once; a FIFO or a device as a secret file is
/// refused without being read (it used to hang `check`).
#[test]
fn check_refuses_what_used_to_pass_and_fail_later() {
    let dir = scratch_dir("check-later");
    let long_id = "x".repeat(70_000);
    let site = format!(
        r#"[site]
id = "s1"
timezone = "Asia/Shanghai"
tags = {{ "" = "x" }}
[store]
commit_interval = "1ns"
[[mqtt]]
name = "b"
url = "mqtt://127.0.0.1:1883"
client_id = "{long_id}"
  [[mqtt.subscribe]]
  topic = "s/+/t\u0000"
  device = "{{1}}"
  profile = "json-dust-monitor"
[[rule]]
id = "r1"
metric = "pm10"
above = 150
repeat = "0s"
for = "48h"
[control]
mqtt_broker = "b"
topic = "dustgate/control"
token_env = ""
"#
    );
    let config = write_site(&dir, &site, &[]);
    let path = config.display().to_string();
    let (code, out, err) = dustgate(&["check", "--config", &path]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    let all = format!("{out}{err}");
    for want in [
        format!("{path}:4:10: site.tags.\"\": a tag key must not be empty"),
        format!("{path}:6:19: store.commit_interval:"),
        format!("{path}:10:13: mqtt[0].client_id: a client id is at most 256 bytes"),
        format!("{path}:12:11: mqtt[0].subscribe[0].topic:"),
        format!("{path}:19:10: rule[0].repeat: must be between 1m and 24h"),
        format!("{path}:20:7: rule[0].for: must be at most 24h"),
        format!("{path}:24:13: control.token_env: names no environment variable"),
    ] {
        assert!(
            all.contains(&want),
            "missing {want:?} in\n{}",
            &all[..all.len().min(4000)]
        );
    }
}

#[test]
fn a_secret_file_that_is_a_fifo_or_a_device_is_refused_at_once() {
    let dir = scratch_dir("check-fifo");
    let fifo = dir.join("token.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo (coreutils) runs");
    assert!(made.success());
    for file in [fifo.display().to_string(), "/dev/zero".to_string()] {
        let site = format!(
            "[site]\nid = \"s1\"\ntimezone = \"Asia/Shanghai\"\n[influx]\nurl = \"http://127.0.0.1:8086\"\napi = \"v2\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = \"{file}\"\n"
        );
        let config = write_site(&dir, &site, &[]);
        let path = config.display().to_string();
        let started = std::time::Instant::now();
        let (_, out, err) = dustgate(&["check", "--config", &path]);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "check returned (it used to block on a FIFO or read /dev/zero for ever)"
        );
        assert!(
            format!("{out}{err}").contains("is not a regular file"),
            "{file}: {out}{err}"
        );
    }
}

#[test]
fn a_config_that_is_not_utf8_gets_a_position() {
    let dir = scratch_dir("check-utf8");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let config = dir.join("site.toml");
    // "锦江" in GBK, as an editor set to the local code page would save it.
    let mut bytes = b"[site]\nid = \"s1\"\nname = \"".to_vec();
    bytes.extend_from_slice(&[0xbd, 0xf5, 0xbd, 0xad]);
    bytes.extend_from_slice(b"\"\n");
    std::fs::write(&config, bytes).expect("write site.toml");
    let path = config.display().to_string();
    let (code, out, err) = dustgate(&["check", "--config", &path]);
    assert_eq!(code, 1);
    assert!(
        format!("{out}{err}").contains(&format!("{path}:3:9: not UTF-8 text (byte 0xbd")),
        "{out}{err}"
    );
}

fn dustgate_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(Gateway::binary())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(repo_root())
        .output()
        .expect("run dustgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_lists_the_hj212_hub_example_without_its_secrets() {
    let secrets = [
        ("HJ212_PW_0018", "pw0018x"),
        ("HJ212_PW_0021", "pw0021y"),
        ("HJ212_SM4_0021", "k0k1k2k3k4k5k6k7"),
        ("INFLUX_TOKEN", "tok-hub"),
    ];
    let (code, out, err) =
        dustgate_env(&["check", "--config", "examples/hj212-hub.toml"], &secrets);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    for needle in [
        "examples/hj212-hub.toml is valid.",
        "hj212 listener district: TCP 0.0.0.0:6653 (public), crc hj212 modbus, unknown MNs rejected (counted), map hj212-standard",
        "  up to 256 connections, idle timeout 5m, at most 10 frames/s per station, buffer 64 KiB; clock drift over 5m alerts; a data flag other than N held 30m alerts",
        "  station 010000A8900016F000169DC0 → device dust-c-01, site cd-jj-0018, map hj212-standard, air; password from $HJ212_PW_0018 (found); no SM4 key",
        "  station HJZB0XH0150109 → device dust-d-01, site cd-jj-0021, map hj212-mgm3, kind from its codes; password from $HJ212_PW_0021 (found); SM4 key from $HJ212_SM4_0021 (found, 16 bytes)",
        "HJ 212 factor maps:\n  hj212-standard [P]: 27 codes, devices/hj212-standard.toml (built in)",
        "  hj212-mgm3 [S]: 27 codes, devices/hj212-mgm3.toml (built in)",
        "1 HJ 212 listener(s), 2 station(s)",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let all = format!("{out}{err}");
    for (_, secret) in secrets {
        assert!(!all.contains(secret), "{secret} printed:\n{all}");
    }
    // Without the environment it is still valid, and says what `run` will miss.
    let (code, out, _) = dustgate(&["check", "--config", "examples/hj212-hub.toml"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("password from $HJ212_PW_0018 (NOT USABLE here: environment variable HJ212_PW_0018 is not set"),
        "{out}"
    );
}

#[test]
fn check_reports_hj212_problems_and_a_sites_own_factor_map() {
    let dir = scratch_dir("check-hj212");
    let map = "format = \"hj212-factors\"\ndescription = \"our platform\"\n[[code]]\ncode = \"a34002\"\nmetric = \"pm10\"\nfactor = 1000\ndecimals = 3\n[[code]]\ncode = \"a99999\"\nmetric = \"radon\"\ndecimals = 1\n";
    let site = r#"[site]
id = "s1"
[[hj212.listen]]
name = "monitors"
listen = "0.0.0.0:6000"
factors = "our-platform"
  [[hj212.listen.station]]
  mn = "MN;01"
  device = "dust-01"
  password = "123456"
  sm4_key_env = "HJ212_SM4"
  sm4_key_file = "sm4.key"
"#;
    let config = write_site(&dir, site, &[("our-platform", map.to_string())]);
    let path = config.display().to_string();
    let (code, out, err) = dustgate(&["check", "--config", &path]);
    assert_eq!(code, 1, "stdout: {out}");
    let map_path = dir
        .join("devices")
        .join("our-platform.toml")
        .display()
        .to_string();
    let expected = [
        format!(
            "{map_path}:10:10: code[1].metric: \"radon\" is not a canonical metric (data/metrics.toml)"
        ),
        format!(
            "{path}:5:10: hj212.listen[0].listen: \"0.0.0.0:6000\" is reachable from other machines"
        ),
        format!(
            "{path}:6:11: hj212.listen[0].factors: factor map \"our-platform\" has errors, listed with its file"
        ),
        format!("{path}:8:8: hj212.listen[0].station[0].mn: \"MN;01\" holds ';'"),
        format!(
            "{path}:10:14: hj212.listen[0].station[0].password: secrets never go in the config file"
        ),
        format!(
            "{path}:12:18: hj212.listen[0].station[0].sm4_key: set hj212.listen[0].station[0].sm4_key_env or hj212.listen[0].station[0].sm4_key_file, not both"
        ),
    ];
    for e in &expected {
        assert!(err.contains(e.as_str()), "missing\n  {e}\nin:\n{err}");
    }
    assert!(
        err.contains(&format!("{} problems found", expected.len())),
        "{err}"
    );
    assert!(!err.contains("123456"), "{err}");
}
