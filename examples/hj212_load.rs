//! HJ 212 load generator and do-nothing sink for `scripts/bench-hj212` (a benchmark tool, not a
//! test, and not part of dustgate: it shares none of dustgate's code, so that neither checks
//! itself).
//!
//! Build: `cargo build --release --example hj212_load` → `target/release/examples/hj212_load`.
//!
//!   hj212_load sink --port P [--threads 1]
//!       A do-nothing HJ 212 receiver: finds each frame by its `##` + length header (no CRC check,
//!       no parsing beyond QN, PW and MN) and answers it with CN=9014 (ST=91, the frame's QN, PW
//!       and MN, Flag=4, `CP=&&&&`), as a gateway would, with nothing stored. Tokio, one worker
//!       thread by default, as `dustgate run`: only the receiver's work differs.
//!
//!   hj212_load load --port P --stations N [--duration 60] [--warmup 5] [--pid PID]...
//!       N monitors, each on its own TCP connection (all connected before the clock starts), each
//!       sending one CN=2011 dust frame a second (Flag=5: it waits for its CN=9014 before the
//!       next, as real monitors do; a tick missed while waiting is skipped, not caught up). The
//!       stations' ticks are spread evenly over the second. DataTime is the tick's local time in
//!       Asia/Shanghai (UTC+8, no DST since 1991). Distinct MNs: `--mn-prefix` + a number, 24
//!       characters. After `duration` seconds no new frame is sent; the answers still owed are
//!       awaited (up to `--timeout`). Prints one JSON line: sent, acked (total), the acked
//!       frames per second over the steady part [warmup, duration), ack latency percentiles,
//!       and for each `--pid` its CPU seconds (utime + stime) over the steady part and its
//!       peak RSS (VmHWM) at the end; also the generator's own CPU over the steady part.
//!       `--time-step 60`: DataTime steps a minute a frame (an hour of state in a minute).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Sink {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    Load {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        stations: usize,
        #[arg(long, default_value_t = 60)]
        duration: u64,
        #[arg(long, default_value_t = 5)]
        warmup: u64,
        /// Seconds to wait for one answer before the station gives up (counted as failed).
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        #[arg(long, default_value = "BENCH")]
        mn_prefix: String,
        /// Processes to measure (CPU over the steady part, VmHWM at the end).
        #[arg(long)]
        pid: Vec<u32>,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Seconds of DataTime per tick (default 1: real time). With 60, the frames' DataTimes
        /// start `duration` minutes back and step a minute a frame, ending at the present: in
        /// one minute of load each station fills an hour of per-minute state (the AQI's hour),
        /// as a hub holds it after running an hour.
        #[arg(long, default_value_t = 1)]
        time_step: i64,
    },
}

fn main() {
    raise_nofile();
    let cli = Cli::parse();
    let threads = match &cli.cmd {
        Cmd::Sink { threads, .. } | Cmd::Load { threads, .. } => *threads,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("runtime");
    match cli.cmd {
        Cmd::Sink { port, .. } => rt.block_on(sink(port)),
        Cmd::Load {
            port,
            stations,
            duration,
            warmup,
            timeout,
            mn_prefix,
            pid,
            time_step,
            ..
        } => rt.block_on(load(Load {
            port,
            stations,
            duration,
            warmup: warmup.min(duration.saturating_sub(1)),
            timeout: Duration::from_secs(timeout),
            mn_prefix,
            pids: pid,
            time_step: time_step.max(1),
        })),
    }
}

/// One socket per monitor: the soft descriptor limit raised to the hard one.
fn raise_nofile() {
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

// --- the codec: just enough HJ 212 --------------------------------------------------------

/// HJ 212-2017 Appendix A CRC (register 0xFFFF; per byte: reg = (reg >> 8) ^ byte, then eight
/// shifts right with 0xA001), table-driven.
fn crc_hj212(data: &[u8]) -> u16 {
    static TABLE: std::sync::OnceLock<[u16; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u16; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut r = i as u16;
            for _ in 0..8 {
                r = if r & 1 != 0 {
                    (r >> 1) ^ 0xA001
                } else {
                    r >> 1
                };
            }
            *e = r;
        }
        t
    });
    let mut reg: u16 = 0xFFFF;
    for &b in data {
        // (reg >> 8) ^ b, then the 8 shifts of the low byte = table lookup.
        let x = (reg >> 8) ^ b as u16;
        reg = t[(x & 0xFF) as usize] ^ (x >> 8);
    }
    reg
}

/// `##` + 4-digit length + segment + CRC + CR LF, appended to `out`.
fn wrap(segment: &[u8], out: &mut Vec<u8>) {
    use std::io::Write;
    write!(out, "##{:04}", segment.len()).unwrap();
    out.extend_from_slice(segment);
    write!(out, "{:04X}\r\n", crc_hj212(segment)).unwrap();
}

/// The next complete frame in `buf[from..]`: (segment range, end). Garbage before `##` is skipped.
fn next_frame(buf: &[u8], from: usize) -> Option<(std::ops::Range<usize>, usize)> {
    let rel = buf[from..].windows(2).position(|w| w == b"##")?;
    let s = from + rel;
    if buf.len() < s + 6 {
        return None;
    }
    let len: usize = std::str::from_utf8(&buf[s + 2..s + 6]).ok()?.parse().ok()?;
    let end = s + 6 + len + 4 + 2;
    if buf.len() < end {
        return None;
    }
    Some((s + 6..s + 6 + len, end))
}

/// The value of `KEY=` in the header of a segment (before `CP=`).
fn field<'a>(seg: &'a [u8], key: &[u8]) -> &'a [u8] {
    let head_end = seg
        .windows(3)
        .position(|w| w == b"CP=")
        .unwrap_or(seg.len());
    let head = &seg[..head_end];
    for item in head.split(|&b| b == b';') {
        if item.len() > key.len() && item.starts_with(key) && item[key.len()] == b'=' {
            return &item[key.len() + 1..];
        }
    }
    b""
}

// --- the sink -------------------------------------------------------------------------------

async fn sink(port: u16) {
    let l = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    println!("hj212 sink listening on 127.0.0.1:{port}");
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        tokio::spawn(sink_conn(s));
    }
}

async fn sink_conn(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    // Lean on purpose: per connection a 512-byte read buffer that grows only if a read needs it.
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut out: Vec<u8> = Vec::new();
    let mut seg: Vec<u8> = Vec::new();
    loop {
        if buf.capacity() - buf.len() < 256 {
            buf.reserve(512);
        }
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        out.clear();
        let mut at = 0;
        while let Some((r, end)) = next_frame(&buf, at) {
            let f = &buf[r];
            seg.clear();
            seg.extend_from_slice(b"QN=");
            seg.extend_from_slice(field(f, b"QN"));
            seg.extend_from_slice(b";ST=91;CN=9014;PW=");
            seg.extend_from_slice(field(f, b"PW"));
            seg.extend_from_slice(b";MN=");
            seg.extend_from_slice(field(f, b"MN"));
            seg.extend_from_slice(b";Flag=4;CP=&&&&");
            wrap(&seg, &mut out);
            at = end;
        }
        buf.drain(..at);
        if buf.len() > 64 * 1024 {
            buf.clear();
        }
        if !out.is_empty() && s.write_all(&out).await.is_err() {
            return;
        }
    }
}

// --- the load ------------------------------------------------------------------------------

struct Load {
    port: u16,
    stations: usize,
    duration: u64,
    warmup: u64,
    timeout: Duration,
    mn_prefix: String,
    pids: Vec<u32>,
    time_step: i64,
}

#[derive(Default)]
struct Tally {
    connect_failed: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    bad_acks: AtomicU64,
    failed: AtomicU64,
    skipped_ticks: AtomicU64,
    /// Answers received in second s of the run (s from the clock start).
    acks_by_sec: Vec<AtomicU64>,
    /// Ack latency histogram, 1 ms buckets up to 60 s.
    latency_ms: Vec<AtomicU64>,
}

const LAT_BUCKETS: usize = 60_000;

/// YYYYMMDDhhmmss of a Unix time in UTC+8 (Asia/Shanghai).
fn shanghai(unix_s: i64) -> String {
    let t = unix_s + 8 * 3600;
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A CN=2011 frame of an all-in-one dust monitor: PM2.5, PM10, TSP, noise, temperature,
/// humidity, pressure, wind speed and direction, each with its flag; values vary by station
/// and tick (so that no value is "stuck").
fn dust_frame(mn: &str, qn: &str, dt: &str, i: usize, k: u64, out: &mut Vec<u8>) {
    let v = (i as u64)
        .wrapping_mul(7919)
        .wrapping_add(k.wrapping_mul(31));
    let f = |m: u64, d: u64| ((v / d) % m) as f64;
    let pm25 = 20.0 + f(40, 1) + f(10, 3) / 10.0;
    let pm10 = pm25 * 1.8 + f(10, 5) / 10.0;
    let tsp = pm10 * 1.5 + f(10, 7) / 10.0;
    let la = 50.0 + f(200, 11) / 10.0;
    let temp = 10.0 + f(200, 13) / 10.0;
    let hum = 40.0 + f(300, 17) / 10.0;
    let pres = 100.0 + f(2000, 19) / 1000.0;
    let ws = f(80, 23) / 10.0;
    let wd = f(360, 29);
    let seg = format!(
        "QN={qn};ST=39;CN=2011;PW=123456;MN={mn};Flag=5;CP=&&DataTime={dt};\
         a34004-Rtd={pm25:.1},a34004-Flag=N;a34002-Rtd={pm10:.1},a34002-Flag=N;\
         a34001-Rtd={tsp:.1},a34001-Flag=N;LA-Rtd={la:.1},LA-Flag=N;\
         a01001-Rtd={temp:.1},a01001-Flag=N;a01002-Rtd={hum:.1},a01002-Flag=N;\
         a01006-Rtd={pres:.3},a01006-Flag=N;a01007-Rtd={ws:.1},a01007-Flag=N;\
         a01008-Rtd={wd:.0},a01008-Flag=N&&"
    );
    out.clear();
    wrap(seg.as_bytes(), out);
}

fn cpu_s(pid: u32) -> f64 {
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the ")" of the command name: state is field 3, utime 14, stime 15.
    let rest = &s[s.rfind(')').map(|p| p + 2).unwrap_or(0)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| {
        f.get(i - 3)
            .and_then(|x| x.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (t(14) + t(15)) / hz
}

fn self_cpu_s() -> f64 {
    cpu_s(std::process::id())
}

fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|x| x.parse().ok()))
        })
        .unwrap_or(0)
}

async fn load(cfg: Load) {
    let cfg = Arc::new(cfg);
    let secs = (cfg.duration + cfg.timeout.as_secs() + 10) as usize;
    let tally = Arc::new(Tally {
        acks_by_sec: (0..secs).map(|_| AtomicU64::new(0)).collect(),
        latency_ms: (0..LAT_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        ..Default::default()
    });

    // 1. Connect every monitor (at most 200 handshakes at a time) before the clock starts.
    let t_conn = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(200));
    let mut conns = Vec::with_capacity(cfg.stations);
    for _ in 0..cfg.stations {
        let sem = sem.clone();
        let port = cfg.port;
        conns.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await.unwrap();
            for attempt in 0..5 {
                match tokio::time::timeout(
                    Duration::from_secs(10),
                    TcpStream::connect(("127.0.0.1", port)),
                )
                .await
                {
                    Ok(Ok(s)) => {
                        let _ = s.set_nodelay(true);
                        return Some(s);
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await,
                }
            }
            None
        }));
    }
    let mut streams = Vec::with_capacity(cfg.stations);
    for c in conns {
        match c.await.unwrap() {
            Some(s) => streams.push(Some(s)),
            None => {
                tally.connect_failed.fetch_add(1, Relaxed);
                streams.push(None);
            }
        }
    }
    let connect_s = t_conn.elapsed().as_secs_f64();
    eprintln!(
        "hj212_load: {} of {} monitors connected in {connect_s:.1} s",
        cfg.stations - tally.connect_failed.load(Relaxed) as usize,
        cfg.stations
    );

    // 2. The clock: a whole second from now (so DataTime and the ticks line up).
    let now_unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let start_unix = now_unix.as_secs() as i64 + 2;
    let start = Instant::now() + (Duration::from_secs(start_unix as u64) - now_unix);

    // The steady part's CPU samples.
    let meter = {
        let cfg = cfg.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until((start + Duration::from_secs(cfg.warmup)).into()).await;
            let a: Vec<f64> = cfg.pids.iter().map(|&p| cpu_s(p)).collect();
            let me_a = self_cpu_s();
            tokio::time::sleep_until((start + Duration::from_secs(cfg.duration)).into()).await;
            let b: Vec<f64> = cfg.pids.iter().map(|&p| cpu_s(p)).collect();
            let me_b = self_cpu_s();
            (
                a.iter().zip(&b).map(|(a, b)| b - a).collect::<Vec<f64>>(),
                me_b - me_a,
            )
        })
    };

    let mut tasks = Vec::with_capacity(cfg.stations);
    for (i, s) in streams.into_iter().enumerate() {
        let Some(s) = s else { continue };
        let (cfg, tally) = (cfg.clone(), tally.clone());
        tasks.push(tokio::spawn(station(i, s, cfg, tally, start, start_unix)));
    }
    for t in tasks {
        let _ = t.await;
    }
    let (cpu, me_cpu) = meter.await.unwrap();

    // 3. The figures.
    let steady_s = (cfg.duration - cfg.warmup) as f64;
    let steady: u64 = (cfg.warmup as usize..cfg.duration as usize)
        .map(|s| tally.acks_by_sec[s].load(Relaxed))
        .sum();
    let pct = |q: f64| {
        let total: u64 = tally.latency_ms.iter().map(|b| b.load(Relaxed)).sum();
        let want = (total as f64 * q).ceil() as u64;
        let mut acc = 0;
        for (ms, b) in tally.latency_ms.iter().enumerate() {
            acc += b.load(Relaxed);
            if acc >= want && want > 0 {
                return ms as u64;
            }
        }
        0
    };
    let per_sec: Vec<u64> = (0..cfg.duration as usize)
        .map(|s| tally.acks_by_sec[s].load(Relaxed))
        .collect();
    let procs: Vec<serde_json::Value> = cfg
        .pids
        .iter()
        .zip(&cpu)
        .map(|(&p, &c)| {
            serde_json::json!({
                "pid": p,
                "cpu_s_steady": (c * 100.0).round() / 100.0,
                "cpu_s_per_100k": if steady > 0 { (c / steady as f64 * 100_000.0 * 100.0).round() / 100.0 } else { f64::NAN },
                "vm_hwm_kb": vm_hwm_kb(p),
            })
        })
        .collect();
    let out = serde_json::json!({
        "stations": cfg.stations,
        "connect_failed": tally.connect_failed.load(Relaxed),
        "connect_s": (connect_s * 10.0).round() / 10.0,
        "duration_s": cfg.duration,
        "warmup_s": cfg.warmup,
        "sent": tally.sent.load(Relaxed),
        "acked": tally.acked.load(Relaxed),
        "bad_acks": tally.bad_acks.load(Relaxed),
        "failed": tally.failed.load(Relaxed),
        "skipped_ticks": tally.skipped_ticks.load(Relaxed),
        "acked_steady": steady,
        "rate": (steady as f64 / steady_s).round(),
        "latency_ms": { "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0) },
        "acks_per_second": per_sec,
        "procs": procs,
        "generator_cpu_s_steady": (me_cpu * 100.0).round() / 100.0,
    });
    println!("{out}");
}

async fn station(
    i: usize,
    mut s: TcpStream,
    cfg: Arc<Load>,
    tally: Arc<Tally>,
    start: Instant,
    start_unix: i64,
) {
    let mn = format!(
        "{}{:0w$}",
        cfg.mn_prefix,
        i + 1,
        w = 24usize.saturating_sub(cfg.mn_prefix.len())
    );
    // Ticks spread evenly over the second.
    let phase = Duration::from_nanos((i as u64 * 1_000_000_000) / cfg.stations as u64);
    let phase_ms = phase.as_millis() as u64;
    let end = start + Duration::from_secs(cfg.duration);
    let mut frame = Vec::with_capacity(512);
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let mut k: u64 = 0;
    loop {
        let mut tick = start + phase + Duration::from_secs(k);
        let now = Instant::now();
        if now > tick + Duration::from_millis(1000) {
            // Still waiting for the last answer when this tick came: skip to the next one.
            let behind = (now - tick).as_secs();
            tally.skipped_ticks.fetch_add(behind, Relaxed);
            k += behind;
            tick = start + phase + Duration::from_secs(k);
        }
        if tick >= end {
            break;
        }
        tokio::time::sleep_until(tick.into()).await;
        // Tick k of `duration`, stamped `time_step` seconds apart, the last one now.
        let back = (cfg.time_step - 1) * cfg.duration as i64;
        let dt = shanghai(start_unix + k as i64 * cfg.time_step - back);
        let qn = format!("{dt}{phase_ms:03}");
        dust_frame(&mn, &qn, &dt, i, k, &mut frame);
        let sent_at = Instant::now();
        if s.write_all(&frame).await.is_err() {
            tally.failed.fetch_add(1, Relaxed);
            return;
        }
        tally.sent.fetch_add(1, Relaxed);
        // Wait for this frame's CN=9014.
        let deadline = tokio::time::Instant::from(sent_at + cfg.timeout);
        let mut got = false;
        while !got {
            let n = match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => {
                    tally.failed.fetch_add(1, Relaxed);
                    return;
                }
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut at = 0;
            while let Some((r, e)) = next_frame(&buf, at) {
                let seg = &buf[r.clone()];
                let crc_ok = std::str::from_utf8(&buf[r.end..r.end + 4])
                    .ok()
                    .and_then(|x| u16::from_str_radix(x, 16).ok())
                    == Some(crc_hj212(seg));
                if crc_ok
                    && field(seg, b"CN") == b"9014"
                    && field(seg, b"QN") == qn.as_bytes()
                    && field(seg, b"MN") == mn.as_bytes()
                {
                    got = true;
                } else {
                    tally.bad_acks.fetch_add(1, Relaxed);
                }
                at = e;
            }
            buf.drain(..at);
        }
        let acked_at = Instant::now();
        tally.acked.fetch_add(1, Relaxed);
        let lat = (acked_at - sent_at).as_millis() as usize;
        tally.latency_ms[lat.min(LAT_BUCKETS - 1)].fetch_add(1, Relaxed);
        let sec = acked_at.saturating_duration_since(start).as_secs() as usize;
        if let Some(b) = tally.acks_by_sec.get(sec) {
            b.fetch_add(1, Relaxed);
        }
        k += 1;
    }
    let _ = s.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_example() {
        // HJ 212-2017 Appendix A's example frame: CRC 1C80.
        let seg = b"QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&";
        assert_eq!(crc_hj212(seg), 0x1C80);
    }

    #[test]
    fn shanghai_time() {
        // 2026-12-01T13:30:00Z = 21:30:00 in Shanghai.
        assert_eq!(shanghai(1_796_131_800), "20261201213000");
    }
}
