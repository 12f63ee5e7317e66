//! InfluxDB 1.x with authentication: the password comes from the environment or a file, goes
//! in the Authorization header, and never appears in the log; a wrong one is a permanent
//! rejection, set aside in the dead-letter file.

mod common;

use std::time::Duration;

use common::site::{Gateway, dust_monitor_unit};
use common::{Influx1, ModbusSim, eventually, http_client, scratch_dir};
use serde_json::{Value, json};

const PASSWORD: &str = "s3cret-pa55";

fn site(influx_url: &str, secret: &str, sim_port: u16) -> String {
    format!(
        "[site]\nid = \"auth\"\n\n[influx]\nurl = \"{influx_url}\"\napi = \"v1\"\ndatabase = \"auth\"\nusername = \"gw\"\n{secret}\nflush_interval = \"200ms\"\n\n[store]\ndir = \"store\"\n\n[[modbus]]\nname = \"tcp\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{sim_port}\"\ninterval = \"1s\"\n\n  [[modbus.device]]\n  id = \"dust-01\"\n  unit = 1\n  profile = \"generic-dust-monitor\"\n"
    )
}

async fn count_as_admin(influx: &Influx1) -> f64 {
    let mut url = reqwest::Url::parse(&format!("{}/query", influx.url())).unwrap();
    url.query_pairs_mut()
        .append_pair("u", "gw")
        .append_pair("p", PASSWORD)
        .append_pair("db", "auth")
        .append_pair("q", "SELECT count(pm10) FROM air");
    let text = http_client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["results"][0]["series"][0]["values"][0][1]
        .as_f64()
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_credentials_from_the_environment_and_a_file() {
    let influx = Influx1::start_with("  auth-enabled = true");
    // With no user yet, InfluxDB accepts the first admin without credentials.
    influx
        .execute(
            "",
            &format!("CREATE USER \"gw\" WITH PASSWORD '{PASSWORD}' WITH ALL PRIVILEGES"),
        )
        .await;
    let mut url = reqwest::Url::parse(&format!("{}/query", influx.url())).unwrap();
    url.query_pairs_mut()
        .append_pair("u", "gw")
        .append_pair("p", PASSWORD)
        .append_pair("q", "CREATE DATABASE auth");
    assert!(
        http_client()
            .post(url)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );

    let (spec, _) = dust_monitor_unit(1);
    let sim = ModbusSim::tcp(&json!({ "devices": [spec] }));

    // Right password, from the environment.
    // SAFETY: set before the child is spawned; no other thread reads this variable.
    unsafe { std::env::set_var("E2E_INFLUX_PASSWORD", PASSWORD) };
    let dir = scratch_dir("e2e-auth-ok");
    let mut good = Gateway::start(
        &dir,
        &site(
            &influx.url(),
            "password_env = \"E2E_INFLUX_PASSWORD\"",
            sim.port(),
        ),
        &[],
    );
    good.wait_started();
    eventually(
        "rows written with credentials",
        Duration::from_secs(30),
        || async { (count_as_admin(&influx).await >= 2.0).then_some(()) },
    )
    .await;
    good.proc.stop();
    assert!(
        !good.log().contains(PASSWORD),
        "the password must never be logged"
    );

    // Wrong password, from a file: 401 is permanent, so the batch is set aside.
    let dir = scratch_dir("e2e-auth-bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("influx-password"), "wrong\n").unwrap();
    let mut bad = Gateway::start(
        &dir,
        &site(
            &influx.url(),
            "password_file = \"influx-password\"",
            sim.port(),
        ),
        &[],
    );
    bad.wait_started();
    let dl = dir.join("store").join("dead-letter");
    eventually(
        "a 401 in the dead-letter file",
        Duration::from_secs(30),
        || async {
            let text: String = std::fs::read_dir(&dl)
                .ok()?
                .flatten()
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect();
            (text.contains("HTTP 401") && text.contains("air,device=dust-01,site=auth"))
                .then_some(())
        },
    )
    .await;
    bad.proc.stop();
    assert!(
        !bad.log().contains("wrong"),
        "the password must never be logged"
    );
    drop(sim);
}
