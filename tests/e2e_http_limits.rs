//! The HTTP listener's limits on the real binary (issue 11 item 12): idle sockets can neither
//! exhaust the gateway's file descriptors nor keep `/healthz` from answering, idle connections
//! are closed, and refused override attempts are logged escaped and throttled.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::site::Gateway;
use common::{free_port, http_get_blocking, scratch_dir};

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn idle_sockets_cannot_take_the_descriptors_or_the_healthz() {
    let dir = scratch_dir("http-limits");
    let port = free_port();
    let toml = format!(
        "[site]\nid = \"h1\"\ntimezone = \"Asia/Shanghai\"\n[store]\ndir = \"store\"\n[http]\nlisten = \"127.0.0.1:{port}\"\nmax_connections = 8\nidle_timeout = \"2s\"\n[control]\ntoken_env = \"E2E_HTTP_TOKEN\"\n"
    );
    // SAFETY: set before the child starts; no other thread of this test reads it.
    unsafe { std::env::set_var("E2E_HTTP_TOKEN", "the-token") };
    let mut gw = Gateway::start(&dir, &toml, &[]);
    gw.wait_started();
    let pid = gw.proc.pid().expect("running");
    let before = open_fds(pid);

    // 300 sockets that connect and say nothing (the fault run used 1,100 against a 1,024 limit);
    // past the cap the gateway closes them as they come, so some connects may be refused.
    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    println!("{} of 300 idle sockets connected", idle.len());
    assert!(idle.len() >= 8, "at least the cap's worth connect");
    std::thread::sleep(Duration::from_millis(500));
    let during = open_fds(pid);
    println!("descriptors: {before} before, {during} with the idle sockets");
    assert!(
        during <= before + 8 + 2,
        "at most max_connections (8) more descriptors: {before} → {during}"
    );

    // /healthz is answered while they sit there: past the cap new connections are closed at
    // once (the backlog does not fill), and the 8 idle ones are closed after 2 s.
    let started = Instant::now();
    let answer = loop {
        if let Some((status, body)) = http_get_blocking(port, "/healthz") {
            break (status, body);
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "/healthz never answered"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("/healthz answered after {:?}", started.elapsed());
    assert_eq!(answer.0, 200);

    // An idle connection is closed by the gateway: reading it gives end of file.
    let mut one = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    one.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = one.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "within the idle timeout: {:?}",
        t.elapsed()
    );
    drop(idle);

    // 50 refused overrides with a hostile path: logged escaped, and not 50 times.
    for _ in 0..50 {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(
                b"POST /api/actuators/mist%0Aforged%20line HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            );
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
            assert!(
                String::from_utf8_lossy(&sink).starts_with("HTTP/1.1 401"),
                "{}",
                String::from_utf8_lossy(&sink)
            );
        }
    }
    gw.proc.stop();
    let log = gw.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("override refused"))
        .collect();
    assert!(
        !refused.is_empty() && refused.len() <= 2,
        "throttled: {refused:?}"
    );
    assert!(
        refused.iter().all(|l| l.contains("mist\\nforged")),
        "escaped: {refused:?}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("forged")),
        "no forged line"
    );
}
