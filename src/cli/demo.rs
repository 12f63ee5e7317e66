//! `dustgate demo`: a simulated site on loopback, polled by the same code as `run`.
//!
//! Simulated Modbus devices (a dust monitor, wind sensors, a PM meter, a water probe, a pH
//! meter and a relay module) answer on a loopback port; a site.toml for them is written and
//! loaded like any other; the gateway polls them and writes to InfluxDB if asked, or to
//! line-protocol files. A one-line summary is printed every few seconds.
//!
//! A 90-second story repeats on top of the day's values, in real time whatever `--speed`: the
//! wash station runs and a truck leaves washed; a second truck leaves unwashed (a six-100%
//! violation, logged with its plate); a dust episode lifts PM10 over the demo's rule, and the
//! mist cannons on the relay module switch on, and off again once it is over and `min_on` has
//! run out.

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
    t.push_str(DEMO_LINKAGE);
    Ok(t)
}

/// The demo's rule, actuator and six-100% parameters (short, so the story fits in minutes).
const DEMO_LINKAGE: &str = r#"[[rule]]
id = "demo-pm10"
metric = "pm10"
devices = ["dust-01"]
above = 150
clear = 120
severity = "warning"
title = "PM10超标（演示）"
title_en = "PM10 over the demo limit"
actuate = "mist-cannons"

[[actuator]]
id = "mist-cannons"
device = "relay-01"
coil = "fog_cannon_on"
min_on = "20s"
min_off = "10s"
max_on = "10m"

[compliance]
wash_min = "8s"
wash_lookback = "13s"
activity = ["07:00-19:00"]
"#;

/// Plates of the demo's muck trucks.
const PLATES: &[&str] = &["川A·D1234", "川A·F5678", "川A·K2468", "川A·M1357"];

/// The story's 90-second cycle, in real seconds: (wash pump on, PM10 episode, truck exits).
struct Story {
    started: tokio::time::Instant,
    trucks: u64,
}

impl Story {
    const CYCLE: u64 = 90;

    fn second(&self) -> u64 {
        self.started.elapsed().as_secs() % Self::CYCLE
    }

    fn cycle(&self) -> u64 {
        self.started.elapsed().as_secs() / Self::CYCLE
    }

    /// The wash station runs from 1 s to 13 s of each cycle (the first truck's wash).
    fn washing(&self) -> bool {
        (1..13).contains(&self.second())
    }

    /// PM10 is lifted from 18 s to 40 s.
    fn pm10_boost(&self) -> f64 {
        if (18..40).contains(&self.second()) {
            140.0
        } else {
            0.0
        }
    }

    /// Trucks leave at 15 s (washed) and 30 s (no wash: a violation).
    fn exits_due(&mut self) -> Vec<(&'static str, bool)> {
        let due =
            self.cycle() * 2 + u64::from(self.second() >= 15) + u64::from(self.second() >= 30);
        let mut out = Vec::new();
        while self.trucks < due {
            let plate = PLATES[(self.trucks as usize) % PLATES.len()];
            // The second truck of a cycle leaves uncovered too.
            out.push((plate, self.trucks.is_multiple_of(2)));
            self.trucks += 1;
        }
        out
    }
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
        fill(&bank, &profiles, &mut scenario, clock.hour(), 0.0);
        // Coils start off; nothing switches them yet.
        for (d, p) in DEVICES.iter().zip(&profiles) {
            for r in p.registers.iter().filter(|r| r.table.is_bits()) {
                bank.set(d.unit, r, 0.0);
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let server = tokio::spawn(sim::serve(listener, bank.clone()));
        let story = Arc::new(std::sync::Mutex::new(Story {
            started: tokio::time::Instant::now(),
            trucks: 0,
        }));
        let updater = {
            let bank = bank.clone();
            let profiles = profiles.clone();
            let story = story.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let (boost, washing) = {
                        let s = story.lock().unwrap_or_else(|p| p.into_inner());
                        (s.pm10_boost(), s.washing())
                    };
                    fill(&bank, &profiles, &mut scenario, clock.hour(), boost);
                    wash_station(&bank, &profiles, washing);
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
        let mut gate = tokio::time::interval(Duration::from_secs(1));
        let stop_at = duration.map(|d| started + d);
        loop {
            let stop = tokio::select! {
                _ = gate.tick() => {
                    let exits = story.lock().unwrap_or_else(|p| p.into_inner()).exits_due();
                    for (plate, washed_one) in exits {
                        let v = dustgate::model::Vehicle {
                            device: "gate-cam-01".into(),
                            time_ms: dustgate::model::now_ms(),
                            plate: plate.into(),
                            direction: Some("out".into()),
                            gate: Some("南".into()),
                            muck_truck: Some(true),
                            covered: Some(washed_one),
                            snapshot: Some(format!("http://127.0.0.1/demo/snap/{}.jpg", plate.replace('·', ""))),
                        };
                        println!("gate: muck truck {plate} leaves{}", if washed_one { " after the wash" } else { " without washing, uncovered" });
                        gw.pipeline.vehicles(std::slice::from_ref(&v));
                    }
                    continue;
                }
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

/// The day's values; `boost` lifts the dust monitor's PM10 (the story's dust episode).
fn fill(
    bank: &Bank,
    profiles: &[Arc<ModbusProfile>],
    scenario: &mut Scenario,
    hour: f64,
    boost: f64,
) {
    for (d, p) in DEVICES.iter().zip(profiles) {
        for r in &p.registers {
            if let Some(v) = scenario.value(d.id, &r.metric, hour) {
                let lift = if d.id == "dust-01" && r.metric == "pm10" {
                    boost
                } else {
                    0.0
                };
                bank.set(d.unit, r, v + lift);
            }
        }
    }
}

/// The wash pump's relay is closed while the wash station runs (not an actuator of the demo:
/// the station's own controller switches it; the gateway reads it back for the six 100%).
fn wash_station(bank: &Bank, profiles: &[Arc<ModbusProfile>], washing: bool) {
    for (d, p) in DEVICES.iter().zip(profiles) {
        for r in p.registers.iter().filter(|r| r.metric == "wash_pump_on") {
            bank.set(d.unit, r, f64::from(u8::from(washing)));
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
    let cannons = gw
        .pipeline
        .actuators()
        .into_iter()
        .find(|a| a.id == "mist-cannons")
        .map_or("-".to_string(), |a| match a.on {
            Some(true) => format!("ON ({})", a.demanded_by.join(", ")),
            Some(false) => "off".into(),
            None => "?".into(),
        });
    let wash = gw
        .pipeline
        .compliance_today()
        .map_or("-".to_string(), |(f, _)| {
            if f[2].checked > 0.0 {
                format!("{:.0}% of {} exits", f[2].percent, f[2].checked)
            } else {
                "- (no exits yet)".to_string()
            }
        });
    format!(
        "[{}] site {:02}:{:02} | devices up {up}/{total} | readings {} | points written {} | queued {} | dropped {} | PM10 {pm10} µg/m³, noise {noise} dB(A) | mist cannons {cannons} | washed {wash}",
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
