//! `dustgate demo`: a simulated site on loopback, polled by the same code as `run`.
//!
//! Simulated Modbus devices (a dust monitor, wind sensors, a PM meter, a water probe, a pH
//! meter and a relay module) answer on a loopback port; a site.toml for them is written and
//! loaded like any other; the gateway polls them and writes to InfluxDB if asked, or to
//! line-protocol files. A one-line summary is printed every few seconds.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{Context as _, bail};
use dustgate::config::profile::{ModbusProfile, ProfileLoader};
use dustgate::config::reader::parse_duration;
use dustgate::config::{self, Diagnostics};
use dustgate::gateway::Gateway;
use dustgate::sim::scenario::{DEVICES, Scenario};
use dustgate::sim::{self, Bank};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Simulated time runs this many times faster than the clock (a site day in minutes).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Write to this InfluxDB (with --influx-db for v1, or --influx-org/--influx-bucket/--influx-token-env for v2).
    #[arg(long)]
    influx_url: Option<String>,
    /// InfluxDB 1.x database (created if missing).
    #[arg(long)]
    influx_db: Option<String>,
    #[arg(long)]
    influx_org: Option<String>,
    #[arg(long)]
    influx_bucket: Option<String>,
    /// Environment variable that holds the InfluxDB v2 token.
    #[arg(long)]
    influx_token_env: Option<String>,
    /// Poll interval of the simulated devices.
    #[arg(long, default_value = "2s")]
    interval: String,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long)]
    duration: Option<String>,
    /// Where the demo keeps its files (default: a new folder under the system temp dir).
    #[arg(long)]
    store: Option<PathBuf>,
}

fn influx_section(a: &DemoArgs) -> anyhow::Result<String> {
    let Some(url) = &a.influx_url else {
        if a.influx_db.is_some() || a.influx_org.is_some() || a.influx_bucket.is_some() {
            bail!("--influx-db/--influx-org/--influx-bucket need --influx-url");
        }
        return Ok(String::new());
    };
    let mut s = format!("[influx]\nurl = {url:?}\nflush_interval = \"1s\"\n");
    match (
        &a.influx_db,
        &a.influx_org,
        &a.influx_bucket,
        &a.influx_token_env,
    ) {
        (Some(db), None, None, None) => {
            let _ = write!(s, "api = \"v1\"\ndatabase = {db:?}\n");
        }
        (None, Some(org), Some(bucket), Some(env)) => {
            let _ = write!(
                s,
                "api = \"v2\"\norg = {org:?}\nbucket = {bucket:?}\ntoken_env = {env:?}\n"
            );
        }
        _ => bail!(
            "with --influx-url give either --influx-db (InfluxDB 1.x) or all of --influx-org, --influx-bucket and --influx-token-env (v2)"
        ),
    }
    Ok(s)
}

fn site_toml(a: &DemoArgs, port: u16, store: &std::path::Path) -> anyhow::Result<String> {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Written by `dustgate demo`: a simulated site on loopback.\n\n[site]\nid = \"demo-site\"\nname = \"演示工地 Demo site\"\ntimezone = \"Asia/Shanghai\"\ntags = {{ district = \"demo\" }}\nhealth_interval = \"10s\"\n"
    );
    t.push_str(&influx_section(a)?);
    let _ = writeln!(t, "\n[store]\ndir = {:?}\n", store.display().to_string());
    let _ = writeln!(
        t,
        "[[modbus]]\nname = \"sim-bus\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ntimeout = \"500ms\"\ninterval = {:?}\n",
        a.interval
    );
    for d in DEVICES {
        let _ = writeln!(
            t,
            "  [[modbus.device]]\n  id = {:?}\n  unit = {}\n  profile = {:?}\n",
            d.id, d.unit, d.profile
        );
    }
    Ok(t)
}

/// Creates the 1.x database, so a newcomer's first run does not dead-letter everything.
async fn create_v1_database(url: &str, db: &str) {
    let client = reqwest::Client::new();
    let q = format!("CREATE DATABASE \"{}\"", db.replace('"', ""));
    let Ok(mut u) = reqwest::Url::parse(&format!("{}/query", url.trim_end_matches('/'))) else {
        return;
    };
    u.query_pairs_mut().append_pair("q", &q);
    match client.post(u).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => eprintln!("demo: could not create database {db}: HTTP {}", r.status()),
        Err(e) => eprintln!("demo: could not reach {url} to create database {db}: {e}"),
    }
}

pub fn demo(a: DemoArgs) -> anyhow::Result<ExitCode> {
    super::init_logging("warn");
    super::install_crypto();
    if !(a.speed.is_finite() && a.speed > 0.0) {
        bail!("--speed must be a positive number");
    }
    let duration = a
        .duration
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    parse_duration(&a.interval).map_err(anyhow::Error::msg)?;
    let store = a.store.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("dustgate-demo-{}", std::process::id()))
    });
    std::fs::create_dir_all(&store).with_context(|| format!("creating {}", store.display()))?;

    let rt = super::runtime()?;
    rt.block_on(async move {
        // The simulated devices, through their own profiles.
        let mut loader = ProfileLoader::new(vec![]);
        let mut diags = Diagnostics::default();
        let mut profiles: Vec<Arc<ModbusProfile>> = Vec::new();
        for d in DEVICES {
            match loader.load(d.profile, &mut diags) {
                Ok(p) => profiles.push(p),
                Err(_) => bail!("built-in profile {} is broken: {diags}", d.profile),
            }
        }
        let bank = Arc::new(Bank::default());
        let mut scenario = Scenario::new();
        let clock = SimClock::new(a.speed);
        fill(&bank, &profiles, &mut scenario, clock.hour());
        // Coils start off; nothing switches them yet.
        for (d, p) in DEVICES.iter().zip(&profiles) {
            for r in p.registers.iter().filter(|r| r.table.is_bits()) {
                bank.set(d.unit, r, 0.0);
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let server = tokio::spawn(sim::serve(listener, bank.clone()));
        let updater = {
            let bank = bank.clone();
            let profiles = profiles.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    fill(&bank, &profiles, &mut scenario, clock.hour());
                }
            })
        };

        if let (Some(url), Some(db)) = (&a.influx_url, &a.influx_db) {
            create_v1_database(url, db).await;
        }
        let toml = site_toml(&a, port, &store)?;
        let cfg_path = store.join("demo-site.toml");
        std::fs::write(&cfg_path, &toml)?;
        let cfg = match config::load(&cfg_path) {
            Ok(c) => c,
            Err(d) => bail!("the demo's own config does not load:\n{d}"),
        };
        let gw = Gateway::start(&cfg)?;
        println!(
            "dustgate demo: {} simulated devices on Modbus TCP 127.0.0.1:{port}, polled every {}; site config {}",
            DEVICES.len(),
            a.interval,
            cfg_path.display()
        );
        println!("writing to {}; Ctrl-C to stop.", gw.destination);

        let started = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        let stop_at = duration.map(|d| started + d);
        loop {
            let stop = tokio::select! {
                _ = tick.tick() => false,
                _ = super::shutdown_signal() => true,
                _ = async { match stop_at { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => true,
            };
            if stop {
                break;
            }
            println!("{}", summary(&gw, clock.hour()));
        }
        let (health, destination) = (gw.health.clone(), gw.destination.clone());
        gw.stop().await;
        println!("{}", summary_final(&health, &destination));
        updater.abort();
        server.abort();
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Simulated local time of day.
#[derive(Clone, Copy)]
struct SimClock {
    start: std::time::Instant,
    start_hour: f64,
    speed: f64,
}

impl SimClock {
    fn new(speed: f64) -> Self {
        let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap_or(jiff::tz::TimeZone::UTC);
        let t = tz.to_datetime(jiff::Timestamp::now());
        let start_hour =
            f64::from(t.hour()) + f64::from(t.minute()) / 60.0 + f64::from(t.second()) / 3600.0;
        Self {
            start: std::time::Instant::now(),
            start_hour,
            speed,
        }
    }

    fn hour(&self) -> f64 {
        (self.start_hour + self.start.elapsed().as_secs_f64() * self.speed / 3600.0)
            .rem_euclid(24.0)
    }
}

fn fill(bank: &Bank, profiles: &[Arc<ModbusProfile>], scenario: &mut Scenario, hour: f64) {
    for (d, p) in DEVICES.iter().zip(profiles) {
        for r in &p.registers {
            if let Some(v) = scenario.value(d.id, &r.metric, hour) {
                bank.set(d.unit, r, v);
            }
        }
    }
}

fn summary(gw: &Gateway, hour: f64) -> String {
    let h = &gw.health;
    let (up, total) = h.devices_up();
    let w = &h.writer;
    let pm10 = h
        .latest_value("dust-01", "pm10")
        .map_or("-".into(), |(_, v)| format!("{v:.0}"));
    let noise = h
        .latest_value("dust-01", "noise")
        .map_or("-".into(), |(_, v)| format!("{v:.1}"));
    format!(
        "[{}] site {:02}:{:02} | devices up {up}/{total} | readings {} | points written {} | queued {} | dropped {} | PM10 {pm10} µg/m³, noise {noise} dB(A)",
        jiff::tz::TimeZone::system()
            .to_datetime(jiff::Timestamp::now())
            .strftime("%H:%M:%S"),
        hour as u32,
        ((hour.fract()) * 60.0) as u32,
        h.readings.load(Relaxed),
        w.written_points.load(Relaxed),
        gw.queue.depth().points,
        gw.queue.dropped_points() + w.lost_points.load(Relaxed),
    )
}

fn summary_final(h: &dustgate::health::Health, destination: &str) -> String {
    let w = &h.writer;
    format!(
        "demo stopped: {} readings, {} points written to {}, {} set aside as rejected.",
        h.readings.load(Relaxed),
        w.written_points.load(Relaxed),
        destination,
        w.dead_letter_points.load(Relaxed)
    )
}
