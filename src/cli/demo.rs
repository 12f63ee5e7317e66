//! `dustgate demo`: a simulated site on loopback, polled by the same code as `run`.
//!
//! Simulated Modbus devices (a dust monitor, wind sensors, a PM meter, a water probe, a pH
//! meter and a relay module) answer on a loopback port; a site.toml for them is written and
//! loaded like any other; the gateway polls them and writes to InfluxDB if asked, or to
//! line-protocol files; the status page is on http://127.0.0.1:8080. A one-line summary is
//! printed every few seconds, and each moment of the story as it happens.
//!
//! The story is the site's day (`sim::story`): a dust episode that trips the 15-minute PM10
//! rule and switches the mist cannons, muck trucks at the gate (one unwashed and uncovered),
//! a wet-work gap, an uncovered pile, a sensor off the bus and back, night-time noise.
//! `--speed N` replays the last 24 hours N times faster (a day in 24 minutes at 60, in a
//! minute at 1440) and then runs on in real time, so the dashboards show a whole day that
//! ends now.

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
use dustgate::http::SiteView as _;
use dustgate::sim::scenario::{DEVICES, Scenario};
use dustgate::sim::story;
use dustgate::sim::{self, Bank};
use dustgate::sources::ingest::Ingest as _;
use dustgate::sources::modbus::registers::Table;

/// The fastest replay: the rule engine's clock ticks at most every 20 ms, and a tick may
/// stand for at most a minute of site time.
const MAX_SPEED: f64 = 2880.0;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Replay the last 24 hours this many times faster than the clock (60: a day in 24
    /// minutes; 1440: in one), then run on in real time. 1: real time from now.
    #[arg(long, default_value_t = 60.0)]
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
    /// Poll interval of the simulated devices, in site time (default: 2s in real time, up to
    /// 1m when replaying fast).
    #[arg(long)]
    interval: Option<String>,
    /// An MQTT broker (mqtt://host:port): the gate camera and the AI camera then publish their
    /// events there, the gateway subscribes to them, and alerts are also published to
    /// `dustgate/demo-site/alerts`. Without it the events are handed over in-process.
    #[arg(long)]
    mqtt_url: Option<String>,
    /// The simulated site's time zone (its day, its nights).
    #[arg(long, default_value = "Asia/Shanghai")]
    timezone: String,
    /// The status page and API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Stop after this long, in real time (default: until Ctrl-C).
    #[arg(long)]
    duration: Option<String>,
    /// Where the demo keeps its files (default: a new folder under the system temp dir).
    #[arg(long)]
    store: Option<PathBuf>,
}

/// A poll every real second while replaying (but at least every minute of site time, so the
/// 15-minute windows are covered), every 2 s in real time.
fn default_interval(speed: f64) -> Duration {
    Duration::from_secs_f64(speed.clamp(2.0, 60.0))
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

fn site_toml(
    a: &DemoArgs,
    port: u16,
    hj212_port: u16,
    store: &std::path::Path,
    interval: Duration,
    today: jiff::civil::Date,
) -> anyhow::Result<String> {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Written by `dustgate demo`: a simulated site on loopback.\n\n[site]\nid = \"demo-site\"\nname = \"演示工地 Demo site\"\npermit = \"510104202604150101\"\ntimezone = {:?}\ntags = {{ district = \"demo\" }}\nhealth_interval = \"5m\"\nstandards = [\"gb3095-2026\", \"gb12523-2011\", \"gb3838-2002-class-3\"]\n",
        a.timezone
    );
    t.push_str(&influx_section(a)?);
    let _ = writeln!(t, "\n[store]\ndir = {:?}\n", store.display().to_string());
    let _ = writeln!(t, "[http]\nlisten = {:?}\n", a.listen);
    let _ = writeln!(
        t,
        "[[modbus]]\nname = \"sim-bus\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ntimeout = \"300ms\"\ninterval = \"{}ms\"\n",
        interval.as_millis()
    );
    for d in DEVICES {
        let _ = writeln!(
            t,
            "  [[modbus.device]]\n  id = {:?}\n  unit = {}\n  profile = {:?}\n",
            d.id, d.unit, d.profile
        );
    }
    if let Some(url) = &a.mqtt_url {
        let _ = writeln!(
            t,
            "[[mqtt]]\nname = \"site-broker\"\nurl = {url:?}\nclient_id = \"dustgate-demo-site\"\n\n  [[mqtt.subscribe]]\n  topic = \"gate/+/vehicle\"\n  device = \"{{1}}\"\n  profile = \"gate-camera\"\n\n  [[mqtt.subscribe]]\n  topic = \"ai/+/detection\"\n  device = \"{{1}}\"\n  profile = \"ai-detector\"\n\n[alerts.mqtt]\nbroker = \"site-broker\"\ntopic = \"dustgate/{{site}}/alerts\"\n"
        );
    }
    // The north gate's HJ 212 monitor (dustgate::sim::hj212_monitor) reports to this.
    let _ = writeln!(
        t,
        "[[hj212.listen]]\nname = \"north-gate\"\nlisten = \"127.0.0.1:{hj212_port}\"\n# a fast replay sends a day of frames in minutes\nmax_frame_rate = 1000\n\n  [[hj212.listen.station]]\n  mn = {:?}\n  device = {:?}\n",
        sim::hj212_monitor::MN,
        sim::hj212_monitor::DEVICE
    );
    t.push_str(DEMO_LINKAGE);
    let quoted: Vec<String> = story::ACTIVITY.iter().map(|a| format!("{a:?}")).collect();
    let _ = writeln!(
        t,
        "\n[compliance]\nwash_min = {:?}\nwash_lookback = {:?}\nwet_gap = {:?}\nmax_open = {:?}\nactivity = [{}]\npaved_percent = 96.0\npaved_date = \"{today}\"",
        story::WASH_MIN,
        story::WASH_LOOKBACK,
        story::WET_GAP,
        story::MAX_OPEN,
        quoted.join(", ")
    );
    Ok(t)
}

/// The demo's own rule and the mist cannons it switches.
const DEMO_LINKAGE: &str = r#"# Many cities warn construction sites on a 15-minute PM10 mean; 150 µg/m³ is the demo's
# value, not a published limit [U].
[[rule]]
id = "site-pm10-15m"
metric = "pm10"
devices = ["dust-01"]
window = "15m"
aggregate = "mean"
above = 150
clear = 120
for = "5m"
severity = "warning"
title = "PM10 15分钟均值超150（工地预警）"
title_en = "PM10 15-min mean over 150 (site early warning)"
actuate = "mist-cannons"

[[actuator]]
id = "mist-cannons"
device = "relay-01"
coil = "fog_cannon_on"
min_on = "20m"
min_off = "10m"
max_on = "3h"
"#;

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
        Err(e) => eprintln!(
            "demo: could not reach {} to create database {db}: {}",
            dustgate::redact::url(url),
            dustgate::redact::http_error(e)
        ),
    }
}

pub fn demo(a: DemoArgs) -> anyhow::Result<ExitCode> {
    super::init_logging("warn", jiff::tz::TimeZone::system());
    super::install_crypto();
    if !(a.speed.is_finite() && (1.0..=MAX_SPEED).contains(&a.speed)) {
        bail!("--speed must be between 1 and {MAX_SPEED} (a day in 30 s)");
    }
    let duration = a
        .duration
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let interval = match &a.interval {
        Some(i) => parse_duration(i).map_err(anyhow::Error::msg)?,
        None => default_interval(a.speed),
    };
    let store = a.store.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("dustgate-demo-{}", std::process::id()))
    });
    std::fs::create_dir_all(&store).with_context(|| format!("creating {}", store.display()))?;
    let tz = jiff::tz::TimeZone::get(&a.timezone)
        .with_context(|| format!("--timezone {}: not a known time zone", a.timezone))?;
    if a.speed > 1.0 {
        dustgate::clock::start_replay(dustgate::clock::wall_ms() - 86_400_000, a.speed);
    }

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
        let mut site = Site {
            bank: bank.clone(),
            profiles: profiles.clone(),
            scenario: Scenario::new(),
        };
        let h0 = local_hour(&tz, dustgate::clock::now_ms());
        site.fill(h0);
        // Coils start off.
        for (d, p) in DEVICES.iter().zip(&profiles) {
            for r in p.registers.iter().filter(|r| r.table.is_bits()) {
                bank.set(d.unit, r, 0.0);
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let server = tokio::spawn(sim::serve(listener, bank.clone()));

        if let (Some(url), Some(db)) = (&a.influx_url, &a.influx_db) {
            create_v1_database(url, db).await;
        }
        let today = tz.to_datetime(jiff::Timestamp::now()).date();
        // A free loopback port for the HJ 212 listener (taken back at once; the gateway binds it).
        let hj212_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let toml = site_toml(&a, port, hj212_port, &store, interval, today)?;
        let cfg_path = store.join("demo-site.toml");
        std::fs::write(&cfg_path, &toml)?;
        let cfg = match config::load(&cfg_path) {
            Ok(c) => c,
            Err(d) => bail!("the demo's own config does not load:\n{d}"),
        };
        let gw = Gateway::start(&cfg)?;
        println!(
            "dustgate demo: {} simulated devices on Modbus TCP 127.0.0.1:{port}, polled every {:?} of site time; site config {}",
            DEVICES.len(),
            interval,
            cfg_path.display()
        );
        if a.speed > 1.0 {
            println!(
                "replaying the last 24 hours at {}x (a day in {:.0} s), then on in real time",
                a.speed,
                86_400.0 / (a.speed - 1.0)
            );
        }
        println!("status page: http://{}/", a.listen);
        println!("writing to {}; Ctrl-C to stop.", gw.destination);

        let (monitor_stop, monitor_rx) = tokio::sync::watch::channel(false);
        let monitor = tokio::spawn(sim::hj212_monitor::run(hj212_port, tz.clone(), monitor_rx));
        println!(
            "north gate: an HJ 212 dust monitor ({}) sends CN=2011 every 30 s and CN=2051 every minute to 127.0.0.1:{hj212_port}",
            sim::hj212_monitor::DEVICE
        );
        let mqtt = match &a.mqtt_url {
            Some(url) => Some(camera_client(url)?),
            None => None,
        };
        let started = tokio::time::Instant::now();
        let stop_at = duration.map(|d| started + d);
        let mut report = tokio::time::interval(Duration::from_secs(5));
        report.tick().await;
        let mut last_h = h0;
        let mut step = tokio::time::interval(Duration::from_millis(20));
        step.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_fill = tokio::time::Instant::now();
        // Made once, outside the loop: a signal that comes between two steps is not missed.
        let shutdown = super::shutdown_signal();
        tokio::pin!(shutdown);
        let deadline = async {
            match stop_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        loop {
            let stop = tokio::select! {
                _ = step.tick() => {
                    let now = dustgate::clock::now_ms();
                    let h = local_hour(&tz, now);
                    site.moments(&gw, mqtt.as_ref(), &tz, (last_h, h), now);
                    last_h = h;
                    // New values about twice per poll (and at least once a real second).
                    if tokio::time::Instant::now() >= next_fill {
                        site.fill(h);
                        next_fill = tokio::time::Instant::now()
                            + (dustgate::clock::real(interval) / 2).min(Duration::from_secs(1));
                    }
                    continue;
                }
                _ = report.tick() => false,
                _ = &mut shutdown => true,
                _ = &mut deadline => true,
            };
            if stop {
                break;
            }
            println!("{}", summary(&gw, &tz));
        }
        let _ = monitor_stop.send(true);
        let _ = monitor.await;
        let (health, destination) = (gw.health.clone(), gw.destination.clone());
        gw.stop().await;
        println!("{}", summary_final(&health, &destination));
        server.abort();
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Local hour of day (0..24, fractional) at `ms`.
fn local_hour(tz: &jiff::tz::TimeZone, ms: i64) -> f64 {
    let Ok(t) = jiff::Timestamp::from_millisecond(ms) else {
        return 0.0;
    };
    let d = tz.to_datetime(t);
    f64::from(d.hour()) + f64::from(d.minute()) / 60.0 + f64::from(d.second()) / 3600.0
}

fn hhmm(tz: &jiff::tz::TimeZone, ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| tz.to_datetime(t).strftime("%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// The simulated site: its devices' registers, the day's values and the story on top.
struct Site {
    bank: Arc<Bank>,
    profiles: Vec<Arc<ModbusProfile>>,
    scenario: Scenario,
}

impl Site {
    /// The register of `metric` on the demo device `device`: (unit, register).
    fn register(
        &self,
        device: &str,
        metric: &str,
    ) -> Option<(u8, &dustgate::config::profile::Register)> {
        DEVICES
            .iter()
            .zip(&self.profiles)
            .find(|(d, _)| d.id == device)
            .and_then(|(d, p)| {
                p.registers
                    .iter()
                    .find(|r| r.metric == metric)
                    .map(|r| (d.unit, r))
            })
    }

    /// The mist cannons' coil as the relay module has it (switched by the gateway).
    fn cannons_on(&self) -> bool {
        self.register("relay-01", "fog_cannon_on")
            .and_then(|(unit, r)| self.bank.bit(unit, Table::Coil, r.address))
            .unwrap_or(false)
    }

    /// The day's values at local hour `h`, with the story's episodes on top.
    fn fill(&mut self, h: f64) {
        let boost = story::pm10_boost(h, self.cannons_on());
        let night_work = story::night_work_noise(h);
        for (d, p) in DEVICES.iter().zip(&self.profiles) {
            for r in &p.registers {
                let Some(mut v) = self.scenario.value(d.id, &r.metric, h) else {
                    continue;
                };
                if d.id == "dust-01" {
                    match r.metric.as_str() {
                        "pm10" => v += boost,
                        "pm25" => v += 0.3 * boost,
                        "tsp" => v += 1.5 * boost,
                        "noise" => v = night_work.map_or(v, |n| n + (v - 47.0) / 3.0),
                        _ => {}
                    }
                }
                self.bank.set(d.unit, r, v);
            }
        }
        // The site's own controllers: the wash station and the spray line's timer.
        for (metric, on) in [
            ("wash_pump_on", story::washing(h)),
            ("spray_on", story::spraying(h)),
        ] {
            if let Some((unit, r)) = self.register("relay-01", metric) {
                self.bank.set(unit, r, f64::from(u8::from(on)));
            }
        }
        let off = story::offline(h);
        for d in DEVICES {
            self.bank.set_silent(d.unit, off == Some(d.id));
        }
    }

    /// The moments of the story between local hours `from` and `to`: trucks at the gate and
    /// the AI camera's detections, published on the broker (`mqtt`) or handed to the gateway
    /// as its MQTT sources would.
    fn moments(
        &self,
        gw: &Gateway,
        mqtt: Option<&rumqttc::AsyncClient>,
        tz: &jiff::tz::TimeZone,
        (from, to): (f64, f64),
        now: i64,
    ) {
        if from == to {
            return;
        }
        for e in story::exits().filter(|e| story::passed(from, to, e.hour)) {
            let v = dustgate::model::Vehicle {
                device: "gate-cam-01".into(),
                time_ms: now,
                plate: e.plate.into(),
                direction: Some("out".into()),
                gate: Some("南".into()),
                muck_truck: Some(true),
                covered: Some(e.covered),
                snapshot: Some(format!(
                    "http://127.0.0.1/demo/snap/{}.jpg",
                    e.plate.replace('·', "")
                )),
            };
            println!(
                "[{}] gate: muck truck {} leaves{}",
                hhmm(tz, now),
                e.plate,
                if e.washed {
                    " after the wash"
                } else {
                    " without washing, uncovered"
                }
            );
            match mqtt {
                Some(c) => publish(
                    c,
                    "gate/gate-cam-01/vehicle",
                    serde_json::json!({
                        "time": v.time_ms, "plate": v.plate, "direction": v.direction,
                        "gate": v.gate, "muck_truck": v.muck_truck, "covered": v.covered,
                        "snapshot": v.snapshot,
                    }),
                ),
                None => {
                    gw.site.vehicles(std::slice::from_ref(&v));
                }
            }
        }
        for s in story::SIGHTINGS {
            for (at, open) in [(s.open, true), (s.clear, false)] {
                if !story::passed(from, to, at) {
                    continue;
                }
                println!(
                    "[{}] AI camera: {} {} {}",
                    hhmm(tz, now),
                    s.kind,
                    s.id,
                    if open { "seen" } else { "cleared" }
                );
                let snapshot = format!("http://127.0.0.1/demo/snap/{}.jpg", s.id);
                match mqtt {
                    Some(c) => publish(
                        c,
                        "ai/ai-cam-01/detection",
                        serde_json::json!({
                            "time": now, "type": s.kind, "target": s.id, "image": snapshot,
                            "event": if open { "open" } else { "cleared" },
                        }),
                    ),
                    None => {
                        gw.site.detections(&[dustgate::model::Detection {
                            device: "ai-cam-01".into(),
                            time_ms: now,
                            kind: s.kind.into(),
                            id: s.id.into(),
                            open,
                            snapshot: Some(snapshot),
                        }]);
                    }
                }
            }
        }
        for (at, what) in [
            (8.0, "dust episode begins (earthwork in a dry wind)"),
            (9.5, "dust episode over"),
            (14.0, "wind-speed-01 falls off the bus"),
            (14.0 + 40.0 / 60.0, "wind-speed-01 is back"),
            (15.0, "the spray line stays off after a refill"),
            (story::NIGHT_WORK_FROM, "night work begins (63 dB(A))"),
            (story::NIGHT_WORK_TO, "night work ends"),
        ] {
            if story::passed(from, to, at) {
                println!("[{}] {what}", hhmm(tz, now));
            }
        }
    }
}

/// The cameras' MQTT connection (QoS 1, its event loop on a task of its own).
fn camera_client(url: &str) -> anyhow::Result<rumqttc::AsyncClient> {
    let rest = url
        .strip_prefix("mqtt://")
        .with_context(|| format!("--mqtt-url {url}: give mqtt://host:port"))?;
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .unwrap_or_else(|| (rest.trim_end_matches('/').to_string(), 1883));
    let mut o = rumqttc::MqttOptions::new("dustgate-demo-cameras", host, port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = rumqttc::AsyncClient::new(o, 256);
    tokio::spawn(async move {
        loop {
            if let Err(e) = events.poll().await {
                tracing::warn!(error = %e, "demo cameras: MQTT connection");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    Ok(client)
}

fn publish(c: &rumqttc::AsyncClient, topic: &str, payload: serde_json::Value) {
    if let Err(e) = c.try_publish(
        topic,
        rumqttc::QoS::AtLeastOnce,
        false,
        payload.to_string().into_bytes(),
    ) {
        eprintln!("demo: could not publish on {topic}: {e}");
    }
}

fn summary(gw: &Gateway, tz: &jiff::tz::TimeZone) -> String {
    let h = &gw.health;
    let (up, total) = h.devices_up(dustgate::model::now_ms());
    let w = &h.writer;
    let pm10 = h
        .latest_value("dust-01", "pm10")
        .map_or("-".into(), |(_, v)| format!("{v:.0}"));
    let noise = h
        .latest_value("dust-01", "noise")
        .map_or("-".into(), |(_, v)| format!("{v:.1}"));
    let cannons = gw
        .site
        .actuators()
        .into_iter()
        .find(|a| a.id == "mist-cannons")
        .map_or("-".to_string(), |a| match a.on {
            Some(true) => format!("ON ({})", a.demanded_by.join(", ")),
            Some(false) => "off".into(),
            None => "?".into(),
        });
    let wash = gw
        .site
        .compliance_today()
        .map_or("-".to_string(), |(f, _)| {
            if f[2].checked > 0.0 {
                format!("{:.0}% of {} exits", f[2].percent, f[2].checked)
            } else {
                "- (no exits yet)".to_string()
            }
        });
    format!(
        "[{}] devices up {up}/{total} | readings {} | points written {} | queued {} | dropped {} | PM10 {pm10} µg/m³, noise {noise} dB(A) | open alerts {} | mist cannons {cannons} | washed {wash}",
        hhmm(tz, dustgate::clock::now_ms()),
        h.readings.load(Relaxed),
        w.written_points.load(Relaxed),
        gw.queue.depth().points,
        gw.queue.dropped_points() + w.lost_points.load(Relaxed),
        gw.site.open_alerts().len(),
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
