//! Bytes on the wire of an RTU bus, with the test itself as the device at the far end of a
//! socat pty pair: the exact request frame, and recovery from a reply with a bad CRC.

mod common;

use std::time::Duration;

use common::site::{Gateway, influx_v1, latest_by_device};
use common::{Influx1, PtyPair, eventually, scratch_dir};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// CRC-16/MODBUS, written out here so the test does not lean on the code under test.
fn crc16(data: &[u8]) -> [u8; 2] {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc.to_le_bytes()
}

#[test]
fn crc_matches_the_verified_vectors() {
    // reference/domain.md §3.9/§4: verified frames.
    assert_eq!(crc16(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x01]), [0x84, 0x0A]);
    assert_eq!(crc16(&[0x01, 0x03, 0x02, 0x00, 0x56]), [0x38, 0x7A]);
    assert_eq!(crc16(&[0x01, 0x03, 0x26, 0x00, 0x00, 0x04]), [0x4F, 0x41]);
}

async fn read_frame(port: &mut tokio_serial::SerialStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(20), port.read_exact(&mut buf))
        .await
        .expect("a request from the gateway within 20 s")
        .expect("read from the pty");
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renke_wind_speed_request_bytes_and_a_bad_crc() {
    let influx = Influx1::start();
    influx.create_db("wire").await;
    let pty = PtyPair::start();
    let mut device = tokio_serial::SerialStream::open(&tokio_serial::new(
        pty.a().to_str().expect("utf-8 path"),
        4800,
    ))
    .expect("open the device end of the pty");

    let toml = format!(
        "[site]\nid = \"wire\"\nhealth_interval = \"1s\"\n\n{}\n[store]\ndir = \"store\"\n\n[[modbus]]\nname = \"rs485\"\ntransport = \"rtu\"\npath = \"{}\"\nbaud = 4800\ntimeout = \"400ms\"\ninterval = \"1s\"\n\n  [[modbus.device]]\n  id = \"wind-01\"\n  unit = 1\n  profile = \"renke-rs-fsjt-n01\"\n",
        influx_v1(&influx.url(), "wire"),
        pty.b().display()
    );
    let dir = scratch_dir("rtu-wire");
    let mut gw = Gateway::start(&dir, &toml, &[]);

    // The request of the Renke manual, byte for byte: read 1 holding register at 0 of unit 1.
    let expected_request = [0x01, 0x03, 0x00, 0x00, 0x00, 0x01, 0x84, 0x0A];
    let first = read_frame(&mut device, 8).await;
    assert_eq!(first, expected_request, "first request on the wire");
    // A reply whose CRC is wrong (0x7B instead of 0x7A): must not be taken as 8.6 m/s.
    device
        .write_all(&[0x01, 0x03, 0x02, 0x00, 0x56, 0x38, 0x7B])
        .await
        .expect("write the corrupted reply");

    // The gateway gives up on that exchange, reopens the line and asks again.
    let second = read_frame(&mut device, 8).await;
    assert_eq!(second, expected_request, "request after the bad CRC");
    let good = [0x01, 0x03, 0x02, 0x00, 0x56];
    let mut reply = good.to_vec();
    reply.extend_from_slice(&crc16(&good));
    device
        .write_all(&reply)
        .await
        .expect("write the good reply");

    let rows = eventually("8.6 m/s in InfluxDB", Duration::from_secs(30), || async {
        let rows = influx
            .query_rows(
                "wire",
                "SELECT wind_speed FROM air WHERE device = 'wind-01'",
            )
            .await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert!(
        rows.iter()
            .all(|r| r.get(1).and_then(Value::as_f64) == Some(8.6)),
        "only the good reply is written: {rows:?}"
    );
    // Keep answering, so the health point shows the device up with the error counted.
    let answer = tokio::spawn(async move {
        loop {
            let req = read_frame(&mut device, 8).await;
            if req != expected_request {
                break;
            }
            if device.write_all(&reply).await.is_err() {
                break;
            }
        }
    });
    let health = eventually(
        "the CRC failure counted",
        Duration::from_secs(30),
        || async {
            let rows =
                latest_by_device(&influx, "wire", "gateway", "WHERE component = 'modbus'").await;
            let r = rows.get("wind-01").cloned()?;
            (r.get("device_up").and_then(Value::as_f64) == Some(1.0)).then_some(r)
        },
    )
    .await;
    assert!(
        health.get("poll_errors").and_then(Value::as_f64) >= Some(1.0),
        "{health:?}"
    );
    answer.abort();
    gw.proc.stop();
}
