//! HJ 212 uplink benchmark for `scripts/bench-uplink` (a benchmark, not a test): dustgate's
//! upstream tasks (the library's `outputs::hj212::upstream::run`, as `dustgate run` starts
//! them) against do-nothing TCP sinks, side by side with the limit of this machine.
//!
//! Build: `cargo build --release --example uplink_bench`.
//!
//!   uplink_bench --platforms 10 --devices 50 --backlog 10080 [--dir DIR]
//!
//! 1. The limit: one writer writes the very bytes of a minute frame to a do-nothing sink as
//!    fast as the loopback takes them (frames/s).
//! 2. A 7-day outage: each platform's backlog is filled with `--backlog` minute frames (one a
//!    minute for a week, DataTime and queue time a week back), committed as the task would.
//! 3. The platforms come back: one task a platform (no answers asked, so a frame written is
//!    delivered and deleted), each fed the readings of `--devices` devices every second
//!    (PM2.5, PM10, TSP) with real-time frames every second, all into one process; each sink
//!    reads and counts frames, and for each real-time frame (live, sent before the backlog)
//!    how long after its DataTime it arrived.
//!
//! 4. Then `--seconds` of steady state: the same readings, real-time frames every second and
//!    minute frames as minutes end.
//!
//! Prints one JSON line: the limit, the fill time, the drain time and rate (backlog frames a
//! second, all platforms), live frames' delay during the drain (p50 / p99 / max, ms: DataTime
//! is truncated to the second, so the figures include up to 1 s of that), readings taken, the
//! process's CPU seconds in the drain, the steady state's readings a second and CPU (percent
//! of one core, µs a reading), and the peak RSS.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Parser;
use dustgate::config::Diagnostics;
use dustgate::config::profile::ProfileLoader;
use dustgate::hj212::segment::Version;
use dustgate::model::SeriesKey;
use dustgate::outputs::hj212::backlog::Backlog;
use dustgate::outputs::hj212::frames::{self, Identity, Platform};
use dustgate::outputs::hj212::session::LinkConfig;
use dustgate::outputs::hj212::upstream::{UpReading, UpValue, UpstreamCounts, UpstreamSpec, run};
use dustgate::pipeline::periods::{Level, PeriodValue, Policy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10)]
    platforms: usize,
    #[arg(long, default_value_t = 50)]
    devices: usize,
    #[arg(long, default_value_t = 10_080)]
    backlog: usize,
    #[arg(long, default_value = "target/bench-uplink")]
    dir: std::path::PathBuf,
    /// Seconds of steady state after the drain (readings in, real-time and minute frames out).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

/// What a sink saw.
#[derive(Default)]
struct Seen {
    frames: AtomicU64,
    bytes: AtomicU64,
    /// Real-time frames and their delays (ms after DataTime), for percentiles.
    live: std::sync::Mutex<Vec<i64>>,
}

fn tz() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get("Asia/Shanghai").expect("tz")
}

/// A do-nothing sink: reads, counts frames (CR LF), and notes the delay of each CN=2011.
async fn sink(listener: TcpListener, seen: Arc<Seen>) {
    while let Ok((mut s, _)) = listener.accept().await {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 16];
            let mut carry: Vec<u8> = Vec::new();
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                seen.bytes.fetch_add(n as u64, Relaxed);
                carry.extend_from_slice(&buf[..n]);
                let mut start = 0;
                while let Some(i) = carry[start..].windows(2).position(|w| w == b"\r\n") {
                    let frame = &carry[start..start + i];
                    seen.frames.fetch_add(1, Relaxed);
                    if let Some(at) = find(frame, b";CN=2011;")
                        && let Some(dt) = find(&frame[at..], b"DataTime=")
                    {
                        let p = at + dt + 9;
                        if let Some(t) = frame
                            .get(p..p + 14)
                            .and_then(|d| std::str::from_utf8(d).ok())
                            .and_then(|d| jiff::civil::DateTime::strptime("%Y%m%d%H%M%S", d).ok())
                            .and_then(|c| tz().to_timestamp(c).ok())
                        {
                            let now = jiff::Timestamp::now().as_millisecond();
                            if let Ok(mut l) = seen.live.lock() {
                                l.push(now - t.as_millisecond());
                            }
                        }
                    }
                    start += i + 2;
                }
                carry.drain(..start);
            }
        });
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn identity(i: usize) -> Identity {
    Identity {
        st: "39".into(),
        mn: format!("BENCH{i:019}"),
        pw: "123456".into(),
        version: Version::V2017,
        ack: false,
    }
}

fn value(metric: &str, start_ms: i64) -> PeriodValue {
    PeriodValue {
        device: "dust-00".into(),
        metric: metric.into(),
        level: Level::Minutes(1),
        start_ms,
        avg: Some(85.125),
        min: Some(40.0),
        max: Some(130.0),
        valid: 60,
        total: 60,
        expected: Some(60),
        flag: 'N',
    }
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(v: &mut [i64], p: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let mut diags = Diagnostics::default();
    let factors = ProfileLoader::new(vec![])
        .load_factors("hj212-standard", &mut diags)
        .map_err(|_| anyhow::anyhow!("hj212-standard: {diags}"))?;
    let tz = tz();
    let now = jiff::Timestamp::now().as_millisecond();
    let week_ago = now / 60_000 * 60_000 - args.backlog as i64 * 60_000;
    let metrics = [
        "pm25",
        "pm10",
        "tsp",
        "noise",
        "temperature",
        "humidity",
        "pressure",
        "wind_speed",
        "wind_direction",
    ];
    let minute_frame = |i: usize, start: i64| {
        let values: Vec<PeriodValue> = metrics.iter().map(|m| value(m, start)).collect();
        let refs: Vec<&PeriodValue> = values.iter().collect();
        let id = identity(i);
        frames::period(
            Platform {
                id: &id,
                tz: &tz,
                factors: &factors,
            },
            String::new(),
            Level::Minutes(1),
            start,
            &refs,
            false,
        )
        .packet
    };

    // 1. The limit: the bytes of a minute frame, written as fast as the loopback takes them.
    let limit_seen = Arc::new(Seen::default());
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(sink(l, limit_seen.clone()));
    let mut one = minute_frame(0, week_ago);
    one.qn = Some("20261201103000000".into());
    let bytes = dustgate::hj212::encode::encode(&one);
    let n_limit = 200_000usize;
    let mut batch = Vec::with_capacity(bytes.len() * 256);
    for _ in 0..256 {
        batch.extend_from_slice(bytes.as_bytes());
    }
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    let t0 = Instant::now();
    for _ in 0..n_limit / 256 {
        s.write_all(&batch).await?;
    }
    drop(s);
    while limit_seen.frames.load(Relaxed) < (n_limit / 256 * 256) as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let limit_fps = (n_limit / 256 * 256) as f64 / t0.elapsed().as_secs_f64();

    // 2. A week's backlog a platform, as the task commits it (a frame a minute: here in
    //    batches of 1,000, each one commit).
    let t_fill = Instant::now();
    for i in 0..args.platforms {
        let mut b = Backlog::open(&args.dir.join(format!("p{i}.redb")))?;
        let mut k = 0;
        while k < args.backlog {
            let n = (args.backlog - k).min(1000);
            let frames: Vec<_> = (k..k + n)
                .map(|m| minute_frame(i, week_ago + m as i64 * 60_000))
                .collect();
            b.push_all(week_ago + k as i64 * 60_000, &frames, None)?;
            k += n;
        }
    }
    let fill_s = t_fill.elapsed().as_secs_f64();

    // 3. The platforms come back, with live readings.
    let cpu0 = cpu_seconds();
    let mut seen = Vec::new();
    let mut stops = Vec::new();
    let mut counts = Vec::new();
    let mut feeds = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..args.platforms {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let port = l.local_addr()?.port();
        let s = Arc::new(Seen::default());
        tokio::spawn(sink(l, s.clone()));
        seen.push(s);
        let spec = UpstreamSpec {
            name: format!("p{i}"),
            address: format!("127.0.0.1:{port}"),
            identity: identity(i),
            factors: factors.clone(),
            tz: tz.clone(),
            realtime: Some(Duration::from_secs(1)),
            levels: vec![Level::Minutes(1)],
            policy: Policy::default(),
            link: LinkConfig {
                ack: false,
                timeout_ms: 10_000,
                retries: 3,
                window: 1,
            },
            keep: Duration::from_secs(8 * 86_400),
            backlog: args.dir.join(format!("p{i}.redb")),
            boot_ms: now,
            grace: Duration::from_secs(5),
            intervals: vec![],
            sm4: None,
            heartbeat: None,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(8192);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (c_tx, c_rx) = tokio::sync::watch::channel(UpstreamCounts::default());
        tasks.push(tokio::spawn(run(spec, rx, stop_rx, c_tx, None)));
        stops.push(stop_tx);
        counts.push(c_rx);
        feeds.push(tx);
    }
    let taken = Arc::new(AtomicU64::new(0));
    let feeding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let feeder = {
        let (taken, feeding) = (taken.clone(), feeding.clone());
        let devices = args.devices;
        tokio::spawn(async move {
            let series = SeriesKey::new("air", &[("site", "bench")]);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while feeding.load(Relaxed) {
                tick.tick().await;
                let t = jiff::Timestamp::now().as_millisecond();
                for tx in &feeds {
                    for d in 0..devices {
                        let r = UpReading {
                            device: format!("dust-{d:02}").into(),
                            time_ms: t,
                            values: ["pm25", "pm10", "tsp"]
                                .iter()
                                .map(|m| UpValue {
                                    metric: (*m).into(),
                                    value: 50.0 + d as f64,
                                    flag: 'N',
                                    series: series.clone(),
                                })
                                .collect(),
                        };
                        if tx.try_send(r).is_ok() {
                            taken.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
        })
    };
    let t_drain = Instant::now();
    let total = (args.platforms * args.backlog) as u64;
    loop {
        let delivered: u64 = counts.iter().map(|c| c.borrow().link.delivered).sum();
        let backlog: usize = counts.iter().map(|c| c.borrow().backlog).sum();
        if delivered >= total && backlog <= args.platforms * 2 {
            break;
        }
        if t_drain.elapsed() > Duration::from_secs(1800) {
            anyhow::bail!("not drained in 30 min: {delivered} of {total}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_s = t_drain.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    // 4. Steady state: the readings of every device to every platform, a second apart.
    let (cpu1, taken1) = (cpu_seconds(), taken.load(Relaxed));
    let frames1: u64 = seen.iter().map(|s| s.frames.load(Relaxed)).sum();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let steady_cpu = cpu_seconds() - cpu1;
    let steady_readings = taken.load(Relaxed) - taken1;
    let steady_frames: u64 = seen.iter().map(|s| s.frames.load(Relaxed)).sum::<u64>() - frames1;
    feeding.store(false, Relaxed);
    let _ = feeder.await;
    for s in &stops {
        let _ = s.send(true);
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut live: Vec<i64> = seen
        .iter()
        .flat_map(|s| s.live.lock().map(|l| l.clone()).unwrap_or_default())
        .collect();
    let frames_at_sinks: u64 = seen.iter().map(|s| s.frames.load(Relaxed)).sum();
    let bytes_at_sinks: u64 = seen.iter().map(|s| s.bytes.load(Relaxed)).sum();
    println!(
        "{}",
        serde_json::json!({
            "platforms": args.platforms,
            "devices": args.devices,
            "backlog_per_platform": args.backlog,
            "frame_bytes": bytes.len(),
            "limit_frames_per_s": limit_fps.round(),
            "fill_s": (fill_s * 100.0).round() / 100.0,
            "drain_s": (drain_s * 100.0).round() / 100.0,
            "drain_frames_per_s": (total as f64 / drain_s).round(),
            "ratio_to_limit": ((total as f64 / drain_s) / limit_fps * 1000.0).round() / 1000.0,
            "frames_at_sinks": frames_at_sinks,
            "bytes_at_sinks": bytes_at_sinks,
            "live_frames": live.len(),
            "live_delay_ms_p50": percentile(&mut live, 0.5),
            "live_delay_ms_p99": percentile(&mut live, 0.99),
            "live_delay_ms_max": live.iter().max().copied().unwrap_or(0),
            "readings_taken": taken.load(Relaxed),
            "steady_s": args.seconds,
            "steady_readings_per_s": (steady_readings as f64 / args.seconds as f64).round(),
            "steady_frames_out": steady_frames,
            "steady_cpu_percent": (steady_cpu / args.seconds as f64 * 1000.0).round() / 10.0,
            "steady_cpu_us_per_reading": if steady_readings > 0 { (steady_cpu * 1e6 / steady_readings as f64).round() } else { 0.0 },
            "cpu_s_during_drain": (cpu * 100.0).round() / 100.0,
            "peak_rss_mb": (peak_rss_mb() * 10.0).round() / 10.0,
        })
    );
    Ok(())
}
