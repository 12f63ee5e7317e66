//! `dustgate run` on a damaged store (issue 11, items 3 and 6), with a real InfluxDB.
//!
//! - A `queue.redb` whose pages were zeroed (redb panics reading it): the gateway starts,
//!   answers `/healthz`, keeps the damaged file as `queue.redb.damaged-*`, and counts it in
//!   `/metrics` — also after the next restart.
//! - One bit flipped in a stored value on disk while the gateway was stopped ("pm10=80" →
//!   "pm10=90"): the chunk fails its checksum, is set aside in `dead-letter/corrupt-*.lp` and
//!   counted; InfluxDB gets the other readings and never the wrong value.

mod common;

use std::path::Path;
use std::time::Duration;

use common::site::{Gateway, influx_v1, metric_value};
use common::{Influx1, eventually, free_port, http_get_blocking, now_ms, scratch_dir};
use dustgate::outputs::queue::PointQueue;
use dustgate::outputs::store::DiskStore;

/// A store holding `lines`, one chunk each, as the gateway would leave it.
fn make_store(dir: &Path, lines: &[String]) {
    let s = DiskStore::open(dir, 1 << 30, 1, Duration::from_millis(5)).expect("open the store");
    for l in lines {
        s.append(l.clone().into_bytes(), 1);
        s.flush();
    }
    assert_eq!(s.depth().points, lines.len() as u64);
    s.close();
}

fn site(influx: &str, port: u16) -> String {
    format!(
        "[site]\nid = \"damage\"\nhealth_interval = \"1s\"\n\n{influx}\n[store]\ndir = \"store\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n"
    )
}

fn damaged_files(store: &Path) -> usize {
    std::fs::read_dir(store)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("queue.redb.damaged-")
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn the_gateway_starts_on_a_damaged_queue_redb_keeps_it_and_counts_it() {
    let dir = scratch_dir("e2e-store-damaged");
    let store = dir.join("store");
    let t = now_ms();
    let lines: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "air,device=dust-01 pm10={}i {}\n",
                50 + i % 40,
                t - 200_000 + i * 1000
            )
        })
        .collect();
    make_store(&store, &lines);
    // Every page after the header zeroed: redb 4.6 panics reading this (btree.rs).
    let path = store.join("queue.redb");
    let mut f = std::fs::read(&path).expect("read the store");
    for b in &mut f[4096..] {
        *b = 0;
    }
    std::fs::write(&path, &f).expect("write the damaged store");

    let port = free_port();
    // An InfluxDB that is not there: this is about starting, not delivering.
    let cfg = site(
        &influx_v1(&format!("http://127.0.0.1:{}", free_port()), "d"),
        port,
    );
    let mut gw = Gateway::start(&dir, &cfg, &[]);
    gw.wait_started();
    gw.proc
        .wait_until("/healthz answers", Duration::from_secs(30), || {
            http_get_blocking(port, "/healthz").is_some_and(|(s, _)| s == 200)
        });
    std::thread::sleep(Duration::from_secs(2));
    assert!(gw.proc.is_running(), "the gateway stays up\n{}", gw.log());
    let log = gw.log();
    assert!(log.contains("STORE FILE DAMAGED"), "logged loudly:\n{log}");
    assert_eq!(damaged_files(&store), 1, "the damaged file is kept");
    assert_eq!(
        metric_value(port, "dustgate_store_damaged_files"),
        Some(1.0)
    );
    let status = gw.proc.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "clean stop: {status:?}"
    );

    // Restarted: the fresh store opens, and the damage is still counted.
    let mut gw = Gateway::start(&dir, &cfg, &[]);
    gw.wait_started();
    gw.proc.wait_until(
        "/metrics after the restart",
        Duration::from_secs(30),
        || metric_value(port, "dustgate_store_damaged_files").is_some(),
    );
    assert_eq!(
        metric_value(port, "dustgate_store_damaged_files"),
        Some(1.0)
    );
    assert_eq!(damaged_files(&store), 1, "nothing more moved aside");
    eprintln!("started on a damaged queue.redb; moved aside, counted 1 before and after a restart");
    gw.proc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bit_flipped_in_queue_redb_while_stopped_never_reaches_influxdb() {
    let influx = Influx1::start();
    influx.create_db("rot").await;
    let dir = scratch_dir("e2e-store-rot");
    let store = dir.join("store");
    let t = now_ms() - 60_000;
    let lines = vec![
        format!("air,device=dust-01 pm10=80 {t}\n"),
        format!("air,device=dust-01 pm10=81 {}\n", t + 1000),
        format!("air,device=dust-01 pm10=82 {}\n", t + 2000),
    ];
    make_store(&store, &lines);
    // One bit on disk: the '8' of "pm10=80" (0x38) becomes '9' (0x39).
    let path = store.join("queue.redb");
    let mut f = std::fs::read(&path).expect("read the store");
    let needle = b"pm10=80 ";
    let at = f
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the value is stored as is");
    f[at + 5] ^= 0x01;
    std::fs::write(&path, &f).expect("write the rotted store");

    let port = free_port();
    let mut gw = Gateway::start(&dir, &site(&influx_v1(&influx.url(), "rot"), port), &[]);
    gw.wait_started();
    let rows = eventually("the good readings", Duration::from_secs(30), || async {
        let rows = influx
            .query_rows("rot", "SELECT pm10 FROM air WHERE device = 'dust-01'")
            .await;
        (rows.len() >= 2).then_some(rows)
    })
    .await;
    // Give a wrong value every chance to arrive.
    std::thread::sleep(Duration::from_secs(2));
    let rows = {
        let again = influx
            .query_rows("rot", "SELECT pm10 FROM air WHERE device = 'dust-01'")
            .await;
        if again.len() > rows.len() {
            again
        } else {
            rows
        }
    };
    let values: Vec<f64> = rows.iter().filter_map(|r| r.get(1)?.as_f64()).collect();
    assert_eq!(
        values,
        [81.0, 82.0],
        "never the rotted 90 (nor the 80 it was)"
    );
    assert_eq!(
        metric_value(port, "dustgate_store_corrupt_chunks_total"),
        Some(1.0)
    );
    let record: String = std::fs::read_dir(store.join("dead-letter"))
        .expect("a dead-letter directory")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("corrupt-"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    assert!(
        record.contains("corrupt chunk seq 1") && record.contains("checksum mismatch"),
        "{record}"
    );
    eprintln!("InfluxDB got {values:?}; the rotted chunk was set aside:\n{record}");
    gw.proc.stop();
}
