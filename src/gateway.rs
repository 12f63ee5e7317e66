//! Assembles a running gateway from a validated config: sources → pipeline → durable store →
//! writer, plus the health reporter; and takes it down in the same order, so what was read is
//! committed and flushed before the writer stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::diff::{self, Changes};
use crate::config::rules::Severity;
use crate::config::upstream::{Sm4Length, UplinkVersion};
use crate::config::{BusConfig, Config};
use crate::edge::{CoilSender, SiteEdge, UplinkTap};
use crate::health::Health;
use crate::health::uplink::UplinkHealth;
use crate::hj212::segment::Version;
use crate::model::{FieldKey, FieldValue, Point, SeriesKey, now_ms};
use crate::outputs::dead_letter::DeadLetter;
use crate::outputs::files::FileSink;
use crate::outputs::hj212::backlog::Backlog;
use crate::outputs::hj212::frames::Identity;
use crate::outputs::hj212::session::{LinkConfig, Sm4};
use crate::outputs::hj212::upstream::{self, UpReading, UpstreamCounts, UpstreamSpec};
use crate::outputs::influx::{InfluxSetupError, InfluxSink};
use crate::outputs::mqtt::{MqttSink, PublishRequest};
use crate::outputs::queue::PointQueue;
use crate::outputs::store::{DiskStore, StoreError};
use crate::outputs::webhook::WebhookSink;
use crate::outputs::writer::{Writer, WriterOptions};
use crate::pipeline::actuate::Linkage;
use crate::pipeline::alerts::AlertContext;
use crate::pipeline::aqi::Aqi;
use crate::pipeline::compliance::Compliance;
use crate::pipeline::periods::{Level, Policy};
use crate::pipeline::rules::Engine;
use crate::pipeline::{Judge, Keep, SiteCore};
use crate::sources::ingest::Ingest;
use crate::sources::modbus::bus::BusTask;
use crate::sources::mqtt::broker::{BrokerTask, MqttSetupError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Influx(#[from] InfluxSetupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mqtt(#[from] MqttSetupError),
    #[error("alert output: {0}")]
    Output(String),
    #[error("[control]: {0}")]
    Control(String),
    #[error("[[hj212.listen]]: {0}")]
    Hj212(String),
    #[error("[[hj212.upstream]]: {0}")]
    Upstream(String),
}

/// The sink of an alert output.
enum OutputSink {
    Mqtt(MqttSink),
    Webhook(WebhookSink),
}

/// A running gateway.
pub struct Gateway {
    pub health: Arc<Health>,
    pub queue: Arc<dyn PointQueue>,
    /// The site core behind its edge: sources hand readings in through it.
    pub site: Arc<SiteEdge>,
    /// Where points are written, for people.
    pub destination: String,
    store: Arc<DiskStore>,
    sources_stop: watch::Sender<bool>,
    reporter_stop: watch::Sender<bool>,
    writer_stop: watch::Sender<bool>,
    sources: Vec<JoinHandle<()>>,
    /// Modbus buses, each with its own stop so a reload can restart one alone.
    buses: Vec<RunningBus>,
    /// The config running: what a reload applied, and the sections it did not (they wait
    /// for a restart) as they were at start.
    cfg: Config,
    http: JoinHandle<()>,
    http_stop: watch::Sender<bool>,
    ticker: JoinHandle<()>,
    reporter: JoinHandle<()>,
    writer: JoinHandle<()>,
    /// Alert outputs: their writers and queues, each with its own stop.
    outputs: Vec<RunningOutput>,
    /// Each broker's publishing channel, for the MQTT alert output (also after a reload).
    publishers: HashMap<String, mpsc::Sender<PublishRequest>>,
    /// HJ 212 platforms' tasks, stopped after the sources (they take the last readings).
    uplinks: Vec<JoinHandle<()>>,
    uplinks_stop: watch::Sender<bool>,
}

impl Gateway {
    /// Starts every task. Must be called inside a Tokio runtime. Build everything that can
    /// fail first (secrets, URLs, TLS files, the store), then spawn.
    pub fn start(cfg: &Config) -> Result<Gateway, StartError> {
        // Build. Descriptors first: the sources, the store and HTTP share one limit.
        if let Some((before, after)) = crate::http::limits::raise_nofile_limit()
            && after > before
        {
            info!(before, after, "raised the open-files limit");
        }
        let control_token = cfg
            .control
            .token
            .as_ref()
            .map(|t| t.resolve())
            .transpose()
            .map_err(|e| StartError::Control(format!("token: {e}")))?;
        let influx = cfg.influx.as_ref().map(InfluxSink::new).transpose()?;
        let store = open_store(cfg)?;
        let queue: Arc<dyn PointQueue> = store.clone();
        let health = Arc::new(Health::default());
        health
            .offline_after_ms
            .store(cfg.alerts.offline_after.as_millis() as i64, Relaxed);
        let outboxes = output_specs(cfg)
            .into_iter()
            .map(|(name, min, key)| open_outbox(cfg, &name, min).map(|o| (o, key)))
            .collect::<Result<Vec<_>, _>>()?;
        let (taps, uplinks) = build_uplinks(cfg, &health)?;
        let site = Arc::new(build_site(cfg, queue.clone(), health.clone(), taps));
        let control = crate::control::MqttPolicy {
            max_age_ms: cfg.control.max_age.as_millis() as i64,
            hmac: cfg
                .control
                .hmac
                .as_ref()
                .map(|s| s.resolve())
                .transpose()
                .map_err(|e| StartError::Control(format!("hmac: {e}")))?,
        };
        let mut brokers = build_brokers(cfg, &site, &health, &control)?;
        let hj212 = bind_hj212(cfg, &site, &health)?;
        let publishers: HashMap<String, mpsc::Sender<PublishRequest>> = brokers
            .iter_mut()
            .map(|b| (b.name().to_string(), b.publisher()))
            .collect();
        let mut sinks = Vec::new();
        for (o, key) in outboxes {
            let sink = output_sink(cfg, &o.name, &publishers).map_err(StartError::Output)?;
            sinks.push((o, key, sink));
        }

        // Spawn: sources → site → store → writers; the tick, the health report and HTTP.
        let (sources_stop, sources_rx) = watch::channel(false);
        let (writer_stop, writer_rx) = watch::channel(false);
        let (reporter_stop, reporter_rx) = watch::channel(false);
        let (writer, destination) = spawn_writer(cfg, influx, &queue, &health, &writer_rx);
        let outputs: Vec<RunningOutput> = sinks
            .into_iter()
            .map(|(o, key, sink)| RunningOutput::spawn(cfg, o, key, sink, &health))
            .collect();
        site.set_outboxes(outboxes_of(&outputs));
        // Alerts still open from before a restart ask for their actuators again (the coil
        // writes wait in the buses' channels); the others are set to off (their state is
        // unknown until written and read back).
        let prepared: Vec<PreparedBus> = cfg
            .buses
            .iter()
            .map(|b| PreparedBus::new(cfg, b, &site, &health))
            .collect();
        site.set_coil_writers(coil_writers(
            prepared.iter().map(|b| (b.relays.as_slice(), &b.coils)),
        ));
        site.restore();
        let (uplinks_stop, uplinks_rx) = watch::channel(false);
        let uplinks = uplinks
            .into_iter()
            .map(|u| tokio::spawn(u.run(uplinks_rx.clone(), queue.clone())))
            .collect();
        let mut sources = Vec::new();
        for b in brokers {
            sources.push(tokio::spawn(b.run(sources_rx.clone())));
        }
        for l in hj212 {
            sources.push(tokio::spawn(l.run(sources_rx.clone())));
        }
        let buses: Vec<RunningBus> = prepared.into_iter().map(PreparedBus::start).collect();
        let ticker = tokio::spawn(tick(site.clone(), reporter_rx.clone()));
        let reporter = tokio::spawn(report_health(
            cfg.site.id.clone(),
            cfg.site.tags.clone(),
            site_point(&cfg.site),
            cfg.site.health_interval,
            health.clone(),
            site.clone(),
            reporter_rx,
        ));
        let (http_stop, http_rx) = watch::channel(false);
        let api = Arc::new(crate::http::Api {
            site: site.clone(),
            control: site.clone(),
            site_id: cfg.site.id.clone(),
            site_name: cfg.site.name.clone().unwrap_or_default(),
            site_permit: cfg.site.permit.clone(),
            tz: cfg.site.timezone.clone(),
            control_token,
        });
        let http = tokio::spawn(crate::http::serve(cfg.http.clone(), api, http_rx));
        health.config.update(|c| {
            c.file = cfg.file.display().to_string();
            c.sha256 = cfg.sha256.clone();
            c.loaded_ms = now_ms();
        });
        info!(site = %cfg.site.id, buses = cfg.buses.len(), brokers = cfg.brokers.len(), store = %store.path().display(), destination = %destination, "gateway started");
        Ok(Gateway {
            health,
            queue,
            site,
            destination,
            store,
            sources_stop,
            reporter_stop,
            writer_stop,
            sources,
            buses,
            cfg: cfg.clone(),
            http,
            http_stop,
            ticker,
            reporter,
            writer,
            outputs,
            publishers,
            uplinks,
            uplinks_stop,
        })
    }

    /// Applies a new config, already validated, in place: the site core is rebuilt (rules,
    /// standards, thresholds, six 100%, actuators, alert wording), taking over the running
    /// one's windows, open alerts and compliance counts; the Modbus buses whose settings or
    /// devices changed are started again, the others keep polling on their connections.
    /// Sections a reload does not apply are listed and logged; they wait for a restart.
    pub async fn reload(&mut self, new: Config) -> Result<Changes, String> {
        let running = diff::applied(&self.cfg, &new);
        let mut changes = diff::compare(&self.cfg, &running);
        let pending = diff::compare(&running, &new).need_restart;
        // Alert outputs first: a sink or a queue that cannot be made refuses the reload before
        // anything has changed.
        changes.outputs = self.reload_outputs(&running).await?;
        for name in &changes.buses_stopped {
            if let Some(i) = self.buses.iter().position(|b| &b.name == name) {
                self.buses.remove(i).stop().await;
            }
            let keep: Vec<&str> = running
                .buses
                .iter()
                .filter(|b| &b.name == name)
                .flat_map(|b| b.devices.iter().map(|d| d.id.as_str()))
                .collect();
            self.health.remove_devices(name, &keep);
        }
        for name in &changes.buses_started {
            if let Some(b) = running.buses.iter().find(|b| &b.name == name) {
                self.buses
                    .push(PreparedBus::new(&running, b, &self.site, &self.health).start());
            }
        }
        self.site.set_coil_writers(coil_writers(
            self.buses.iter().map(|b| (b.relays.as_slice(), &b.coils)),
        ));
        if changes.core {
            self.health
                .offline_after_ms
                .store(running.alerts.offline_after.as_millis() as i64, Relaxed);
            // The site's id, tags and zone and [control] wait for a restart (`running` has
            // them as they were): only the pinned table and the actuators can differ here.
            let old = &self.cfg;
            let keep = Keep {
                aqi: aqi_table(old) == aqi_table(&running),
                linkage: old.actuators == running.actuators,
            };
            self.site.replace_core(build_core(&running), keep);
        }
        self.health.config.update(|c| {
            c.sha256 = running.sha256.clone();
            c.loaded_ms = now_ms();
            c.reloads_ok += 1;
            c.pending_restart = pending.iter().map(|s| s.to_string()).collect();
        });
        self.cfg = running;
        Ok(changes)
    }

    /// Starts the alert outputs that are new or changed and stops those removed or changed;
    /// the others keep running. A changed output keeps its queue (what waits is delivered
    /// with the new settings); a removed one's queue stays on disk. Returns their names.
    async fn reload_outputs(&mut self, running: &Config) -> Result<Vec<String>, String> {
        let wanted = output_specs(running);
        let same = |o: &RunningOutput| {
            wanted
                .iter()
                .any(|(n, _, k)| n == &o.outbox.name && k == &o.key)
        };
        // Build first: nothing changes unless every new sink and queue could be made.
        let mut built = Vec::new();
        for (name, min, key) in &wanted {
            let running_now = self.outputs.iter().find(|o| &o.outbox.name == name);
            if running_now.is_some_and(|o| &o.key == key) {
                continue;
            }
            let sink = output_sink(running, name, &self.publishers)?;
            let queue = match running_now {
                Some(_) => None,
                None => Some(open_outbox(running, name, *min).map_err(|e| e.to_string())?),
            };
            built.push((name.clone(), *min, key.clone(), sink, queue));
        }
        let mut changed = Vec::new();
        let mut queues: HashMap<String, Outbox> = HashMap::new();
        let mut kept = Vec::new();
        for o in std::mem::take(&mut self.outputs) {
            if same(&o) {
                kept.push(o);
                continue;
            }
            let name = o.outbox.name.clone();
            let outbox = o.stop().await;
            if wanted.iter().any(|(n, _, _)| n == &name) {
                queues.insert(name.clone(), outbox);
            } else {
                let waiting = outbox.store.depth().points;
                crate::outputs::blocking(|| outbox.store.close());
                if let Ok(mut list) = self.health.outputs.lock() {
                    list.retain(|(n, _)| n != &name);
                }
                info!(output = %name, waiting, "alert output removed; what it had not delivered stays in its outbox");
            }
            changed.push(name);
        }
        self.outputs = kept;
        for (name, min, key, sink, queue) in built {
            let Some(mut outbox) = queue.or_else(|| queues.remove(&name)) else {
                continue;
            };
            outbox.min = min;
            self.outputs.push(RunningOutput::spawn(
                running,
                outbox,
                key,
                sink,
                &self.health,
            ));
            if !changed.contains(&name) {
                changed.push(name);
            }
        }
        self.site.set_outboxes(outboxes_of(&self.outputs));
        Ok(changed)
    }

    /// Stops the sources (a poll in progress finishes), writes a last health snapshot (so its
    /// counts match what was read), commits the store, then lets the writer deliver what is
    /// queued within its grace period. What it cannot deliver stays in the store for the next
    /// start.
    pub async fn stop(self) {
        // Actuators to their safe state first, while the buses still run; bounded, since a
        // relay that does not answer cannot be switched anyway.
        self.site.stop_actuators();
        let deadline = tokio::time::Instant::now() + SAFE_STATE_WAIT;
        while !self.site.actuators_settled() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !self.site.actuators_settled() {
            tracing::error!("actuators not confirmed in their safe state at shutdown");
        }
        let _ = self.http_stop.send(true);
        let mut http = self.http;
        if tokio::time::timeout(Duration::from_secs(2), &mut http)
            .await
            .is_err()
        {
            // A client holding its connection open does not hold up the shutdown.
            http.abort();
        }
        let _ = self.sources_stop.send(true);
        for b in &self.buses {
            let _ = b.stop.send(true);
        }
        for s in self.sources {
            let _ = s.await;
        }
        for b in self.buses {
            let _ = b.task.await;
        }
        // The platforms' tasks keep what the sources handed them (open periods) and stop.
        let _ = self.uplinks_stop.send(true);
        for u in self.uplinks {
            let _ = u.await;
        }
        let _ = self.reporter_stop.send(true);
        let _ = self.ticker.await;
        let _ = self.reporter.await;
        crate::outputs::blocking(|| self.store.flush());
        for o in &self.outputs {
            crate::outputs::blocking(|| o.outbox.store.flush());
        }
        let _ = self.writer_stop.send(true);
        for o in &self.outputs {
            let _ = o.stop.send(true);
        }
        // A writer gets its grace (10 s) to deliver; past a bound it is stopped, so a disk or
        // destination that misbehaves cannot hold the shutdown (what it holds stays stored).
        let bounded = |mut w: JoinHandle<()>, what: &'static str| async move {
            if tokio::time::timeout(WRITER_STOP_BOUND, &mut w)
                .await
                .is_err()
            {
                tracing::error!(
                    writer = what,
                    bound_s = WRITER_STOP_BOUND.as_secs(),
                    "writer not stopped within the bound at shutdown: stopped"
                );
                w.abort();
            }
        };
        bounded(self.writer, "series").await;
        for o in self.outputs {
            bounded(o.task, "alerts").await;
            crate::outputs::blocking(|| o.outbox.store.close());
        }
        crate::outputs::blocking(|| self.store.close());
    }
}

/// The AQI table a config pins, if any.
fn aqi_table(cfg: &Config) -> Option<&String> {
    cfg.packs.iter().find_map(|p| p.aqi.as_ref())
}

/// How long shutdown waits for a writer to stop (its grace is 10 s).
const WRITER_STOP_BOUND: Duration = Duration::from_secs(12);

/// How long shutdown waits for actuators to be confirmed in their safe state.
const SAFE_STATE_WAIT: Duration = Duration::from_secs(5);

/// An alert output's durable queue (`[store].dir/outbox/<name>/`), with its name and the
/// lowest severity it takes.
struct Outbox {
    name: String,
    min: Severity,
    store: Arc<DiskStore>,
}

fn open_store(cfg: &Config) -> Result<Arc<DiskStore>, StoreError> {
    let batch_size = cfg.influx.as_ref().map_or(5000, |i| i.batch_size);
    Ok(Arc::new(DiskStore::open(
        &cfg.store.dir,
        cfg.store.max_size,
        batch_size,
        cfg.store.commit_interval,
    )?))
}

/// An alert output's durable queue (`[store].dir/outbox/<name>/`).
fn open_outbox(cfg: &Config, name: &str, min: Severity) -> Result<Outbox, StoreError> {
    DiskStore::open(
        &cfg.store.dir.join("outbox").join(name),
        256 << 20,
        1,
        cfg.store.commit_interval,
    )
    .map(|s| Outbox {
        name: name.to_string(),
        min,
        store: Arc::new(s),
    })
}

/// A Modbus bus built and not yet polling. Its relay channel exists already, so the coil
/// writes the site asks for at start (alerts open from before a restart) wait in it.
struct PreparedBus {
    name: String,
    relays: Vec<String>,
    coils: Option<CoilSender>,
    task: BusTask,
}

impl PreparedBus {
    fn new(cfg: &Config, bus: &BusConfig, site: &Arc<SiteEdge>, health: &Arc<Health>) -> Self {
        let ingest: Arc<dyn Ingest> = site.clone();
        let task = BusTask::new(bus.clone(), &cfg.site.id, &cfg.site.tags, health, ingest);
        let relays: Vec<String> = cfg
            .actuators
            .iter()
            .filter(|a| bus.devices.iter().any(|d| d.id == a.device))
            .map(|a| a.device.clone())
            .collect();
        let (task, coils) = if relays.is_empty() {
            (task, None)
        } else {
            let (tx, rx) = mpsc::unbounded_channel();
            (task.with_commands(rx), Some(tx))
        };
        Self {
            name: bus.name.clone(),
            relays,
            coils,
            task,
        }
    }

    fn start(self) -> RunningBus {
        let (stop, stop_rx) = watch::channel(false);
        RunningBus {
            name: self.name,
            relays: self.relays,
            coils: self.coils,
            stop,
            task: tokio::spawn(self.task.run(stop_rx)),
        }
    }
}

/// A Modbus bus's task, with its own stop and, when it owns relay devices, the channel their
/// switches go through.
struct RunningBus {
    name: String,
    relays: Vec<String>,
    coils: Option<CoilSender>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningBus {
    /// Stops the task: a poll in progress finishes; bounded, since a serial line that hangs
    /// must not hold a reload.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(BUS_STOP_BOUND, &mut task)
            .await
            .is_err()
        {
            tracing::error!(bus = %self.name, "bus not stopped within the bound: stopped");
            task.abort();
        }
    }
}

/// How long a reload waits for a bus it restarts to finish its poll.
const BUS_STOP_BOUND: Duration = Duration::from_secs(10);

/// Per relay device, the channel of the bus that owns it (from each bus's relays and channel).
fn coil_writers<'a>(
    buses: impl Iterator<Item = (&'a [String], &'a Option<CoilSender>)>,
) -> HashMap<String, CoilSender> {
    let mut writers = HashMap::new();
    for (relays, coils) in buses {
        if let Some(tx) = coils {
            for d in relays {
                writers.insert(d.clone(), tx.clone());
            }
        }
    }
    writers
}

/// The site core (rules, six 100%, AQI, linkage) behind its edge.
fn build_site(
    cfg: &Config,
    queue: Arc<dyn PointQueue>,
    health: Arc<Health>,
    taps: Vec<UplinkTap>,
) -> SiteEdge {
    let mut site =
        SiteEdge::new(build_core(cfg), queue, health).with_state_dir(cfg.store.dir.clone());
    for t in taps {
        site = site.with_uplink(t);
    }
    site
}

/// The site core of a config: rules, six 100%, AQI, linkage (at start, and again at a reload).
fn build_core(cfg: &Config) -> SiteCore {
    let mut core = SiteCore::new(&cfg.site.id, &cfg.site.tags).with_max_future(cfg.site.max_future);
    if !cfg.rules.is_empty() || cfg.compliance.is_some() || !cfg.hj212.listeners.is_empty() {
        let mut engine = Engine::new(cfg.rules.clone(), cfg.site.timezone.clone());
        engine.set_background_device(cfg.site.background.clone());
        engine.set_offline_after(cfg.alerts.offline_after.as_millis() as i64);
        let now = now_ms();
        for b in &cfg.buses {
            for d in &b.devices {
                engine.register_device(&d.id, Some(d.interval.as_millis() as i64), now);
            }
        }
        // HJ 212 stations the config names are expected to report (their interval is theirs:
        // the offline allowance alone applies); the shortest flag allowance of the listeners.
        for l in &cfg.hj212.listeners {
            for st in &l.stations {
                engine.register_device(&st.device, None, now);
            }
        }
        if let Some(ms) = cfg
            .hj212
            .listeners
            .iter()
            .map(|l| l.flag_alert_after.as_millis() as i64)
            .min()
        {
            engine.set_flag_alert_after(ms);
        }
        let ctx = AlertContext {
            site_id: cfg.site.id.clone(),
            site_name: cfg.site.name.clone().unwrap_or_default(),
            site_tags: cfg.site.tags.clone(),
            tz: cfg.site.timezone.clone(),
            locale: cfg.alerts.locale,
        };
        let mut judge = Judge::new(engine, ctx);
        if let Some(p) = &cfg.compliance {
            judge = judge.with_compliance(Compliance::new(p.clone(), cfg.site.timezone.clone()));
        }
        core = core.with_rules(judge);
    }
    let forced = cfg.packs.iter().find_map(|p| p.aqi.clone());
    core = core.with_aqi(Aqi::new(
        &cfg.site.id,
        &cfg.site.tags,
        cfg.site.timezone.clone(),
        forced,
    ));
    if !cfg.actuators.is_empty() {
        let linkage = Linkage::new(cfg.actuators.clone(), cfg.site.timezone.clone());
        core = core.with_linkage(linkage, cfg.control.max_for);
    }
    core
}

/// One platform's task, built and not yet spawned.
struct UplinkTask {
    spec: UpstreamSpec,
    backlog: Backlog,
    rx: mpsc::Receiver<UpReading>,
    counts: watch::Sender<UpstreamCounts>,
    health: Arc<UplinkHealth>,
}

impl UplinkTask {
    async fn run(self, stop: watch::Receiver<bool>, queue: Arc<dyn PointQueue>) {
        let name = self.spec.name.clone();
        let ended = upstream::run_with(
            self.spec,
            self.backlog,
            self.rx,
            stop,
            self.counts,
            Some(queue),
        )
        .await;
        if let Err(e) = ended {
            tracing::error!(upstream = %name, error = %e, "HJ 212 platform task stopped: its backlog cannot be written");
            if let Ok(mut f) = self.health.failed.lock() {
                *f = Some(e.to_string());
            }
        }
    }
}

/// Readings a platform's feed holds while its task is busy (a disk write); more are counted
/// as dropped. At a site's rate (tens a second) this is minutes.
const UPLINK_FEED: usize = 8192;

/// The platforms' tasks and the feeds the site hands readings to; passwords are read here, so
/// a missing one stops the start.
fn build_uplinks(
    cfg: &Config,
    health: &Arc<Health>,
) -> Result<(Vec<UplinkTap>, Vec<UplinkTask>), StartError> {
    let mut taps = Vec::new();
    let mut tasks = Vec::new();
    if cfg.hj212.upstreams.is_empty() {
        return Ok((taps, tasks));
    }
    let dir = cfg.store.dir.join("hj212-upstream");
    std::fs::create_dir_all(&dir)
        .map_err(|e| StartError::Upstream(format!("{}: {e}", dir.display())))?;
    let intervals: Vec<(String, Duration)> = cfg
        .buses
        .iter()
        .flat_map(|b| b.devices.iter().map(|d| (d.id.clone(), d.interval)))
        .collect();
    for u in &cfg.hj212.upstreams {
        let pw = u
            .password
            .resolve()
            .map_err(|e| StartError::Upstream(format!("{}: password: {e}", u.name)))?;
        let mut levels = Vec::new();
        if let Some(m) = u.minute.and_then(Level::minutes) {
            levels.push(m);
        }
        if u.hourly {
            levels.push(Level::Hour);
        }
        if u.daily {
            levels.push(Level::Day);
        }
        let spec = UpstreamSpec {
            name: u.name.clone(),
            address: u.address.clone(),
            identity: Identity {
                st: u.st.clone(),
                mn: u.mn.clone(),
                pw,
                version: match u.version {
                    UplinkVersion::V2017 => Version::V2017,
                    UplinkVersion::V2025 => Version::V2025,
                },
                ack: u.ack,
            },
            factors: u.factors.clone(),
            tz: cfg.site.timezone.clone(),
            realtime: u.realtime,
            levels,
            policy: Policy {
                min_coverage: u.min_coverage,
            },
            link: LinkConfig {
                ack: u.ack,
                timeout_ms: u.timeout.as_millis() as i64,
                retries: u.retries,
                window: u.window,
            },
            keep: u.keep,
            backlog: dir.join(format!("{}.redb", u.name)),
            boot_ms: now_ms(),
            grace: u.grace,
            intervals: intervals.clone(),
            sm4: u
                .sm4_key
                .as_ref()
                .map(|k| {
                    crate::config::hj212::resolve_sm4_key(k).map(|key| Sm4 {
                        key,
                        length_of_plaintext: u.sm4_length == Sm4Length::Plaintext,
                    })
                })
                .transpose()
                .map_err(|e| StartError::Upstream(format!("{}: SM4 key: {e}", u.name)))?,
            heartbeat: u.heartbeat,
        };
        let backlog = crate::outputs::blocking(|| Backlog::open(&spec.backlog)).map_err(|e| {
            StartError::Upstream(format!("{}: {}: {e}", u.name, spec.backlog.display()))
        })?;
        let (tx, rx) = mpsc::channel(UPLINK_FEED);
        let (counts, counts_rx) = watch::channel(UpstreamCounts::default());
        let h = Arc::new(UplinkHealth::new(
            &u.name,
            &u.address,
            u.version.name(),
            counts_rx,
        ));
        health
            .uplinks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(h.clone());
        taps.push(UplinkTap::new(u.devices.clone(), tx, h.clone()));
        tasks.push(UplinkTask {
            spec,
            backlog,
            rx,
            counts,
            health: h,
        });
    }
    Ok((taps, tasks))
}

/// Brokers are set up (secrets, TLS files) before any task starts.
fn build_brokers(
    cfg: &Config,
    site: &Arc<SiteEdge>,
    health: &Arc<Health>,
    control: &crate::control::MqttPolicy,
) -> Result<Vec<BrokerTask>, MqttSetupError> {
    cfg.brokers
        .iter()
        .map(|b| {
            let ingest: Arc<dyn Ingest> = site.clone();
            let task = BrokerTask::new(
                b.clone(),
                &cfg.site.id,
                &cfg.site.tags,
                ingest,
                health.clone(),
            )?
            .with_reserved_ids(crate::sources::mqtt::broker::reserved_ids(cfg));
            Ok(match &cfg.control.mqtt {
                Some((broker, topic)) if *broker == b.name => {
                    task.with_control(topic, control.clone())
                }
                _ => task,
            })
        })
        .collect()
}

/// An alert output's sink: the MQTT one publishes through its broker's connection (a broker
/// runs from the start, so one added by a reload waits for a restart).
fn output_sink(
    cfg: &Config,
    name: &str,
    publishers: &HashMap<String, mpsc::Sender<PublishRequest>>,
) -> Result<OutputSink, String> {
    if name == "mqtt" {
        let Some(m) = &cfg.alerts.mqtt else {
            return Err("alerts.mqtt: not configured".into());
        };
        let Some(p) = publishers.get(&m.broker) else {
            return Err(format!(
                "alerts.mqtt: broker {} is not running (a new [[mqtt]] broker needs a restart)",
                m.broker
            ));
        };
        return Ok(OutputSink::Mqtt(MqttSink::new(
            &m.broker,
            &m.topic,
            p.clone(),
        )));
    }
    let Some(w) = cfg.alerts.webhooks.iter().find(|w| w.name == name) else {
        return Err(format!("no webhook {name}"));
    };
    WebhookSink::new(w, Duration::from_secs(10)).map(OutputSink::Webhook)
}

/// The alert outputs a config asks for: name, lowest severity, and its settings as written
/// (to tell whether a reload changed them).
fn output_specs(cfg: &Config) -> Vec<(String, Severity, String)> {
    let mut out = Vec::new();
    if let Some(m) = &cfg.alerts.mqtt {
        out.push(("mqtt".to_string(), m.min_severity, format!("{m:?}")));
    }
    for w in &cfg.alerts.webhooks {
        out.push((w.name.clone(), w.min_severity, format!("{w:?}")));
    }
    out
}

/// An alert output's writer, with its own stop so a reload can restart it alone.
struct RunningOutput {
    outbox: Outbox,
    /// Its settings as written, see [`output_specs`].
    key: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningOutput {
    fn spawn(
        cfg: &Config,
        outbox: Outbox,
        key: String,
        sink: OutputSink,
        health: &Arc<Health>,
    ) -> Self {
        let opts = WriterOptions {
            batch_size: 1,
            flush_interval: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            retry_jitter: crate::config::influx::DEFAULT_RETRY_JITTER,
            shutdown_grace: Duration::from_secs(5),
        };
        // A writer started again by a reload goes on with the same counters.
        let wh = {
            let mut list = health.outputs.lock().unwrap_or_else(|p| p.into_inner());
            match list.iter().find(|(n, _)| n == &outbox.name) {
                Some((_, wh)) => wh.clone(),
                None => {
                    let wh = Arc::new(crate::health::WriterHealth::default());
                    list.push((outbox.name.clone(), wh.clone()));
                    wh
                }
            }
        };
        let dl = DeadLetter::new(cfg.store.dir.join("dead-letter"), "alerts");
        let q: Arc<dyn PointQueue> = outbox.store.clone();
        let (stop, stop_rx) = watch::channel(false);
        let task = match sink {
            OutputSink::Mqtt(s) => tokio::spawn(Writer::new(q, s, opts, dl, wh).run(stop_rx)),
            OutputSink::Webhook(s) => tokio::spawn(Writer::new(q, s, opts, dl, wh).run(stop_rx)),
        };
        Self {
            outbox,
            key,
            stop,
            task,
        }
    }

    /// Stops the writer (what it holds stays in its outbox).
    async fn stop(self) -> Outbox {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(WRITER_STOP_BOUND, &mut task)
            .await
            .is_err()
        {
            tracing::error!(output = %self.outbox.name, "alert writer not stopped within the bound: stopped");
            task.abort();
        }
        self.outbox
    }
}

/// What the site fills: each output's queue with the lowest severity it takes.
fn outboxes_of(outputs: &[RunningOutput]) -> Vec<(Severity, Arc<dyn PointQueue>)> {
    outputs
        .iter()
        .map(|o| {
            let q: Arc<dyn PointQueue> = o.outbox.store.clone();
            (o.outbox.min, q)
        })
        .collect()
}

/// The series writer: to InfluxDB, or to daily line-protocol files without `[influx]`.
/// Binds every HJ 212 listener (and resolves its stations' secrets): a port in use or a
/// missing password stops the start, with what and where.
fn bind_hj212(
    cfg: &Config,
    site: &Arc<SiteEdge>,
    health: &Arc<Health>,
) -> Result<Vec<crate::sources::hj212::Hj212Task>, StartError> {
    let mut out = Vec::new();
    for l in &cfg.hj212.listeners {
        let h = Arc::new(crate::health::hj212::Hj212Health::new(
            &l.name,
            &l.endpoint.describe(),
        ));
        let ingest: Arc<dyn Ingest> = site.clone();
        let task = crate::sources::hj212::Hj212Task::bind(l, &cfg.site, ingest, h.clone())
            .map_err(StartError::Hj212)?;
        health
            .hj212
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(h);
        out.push(task);
    }
    Ok(out)
}

fn spawn_writer(
    cfg: &Config,
    influx: Option<InfluxSink>,
    queue: &Arc<dyn PointQueue>,
    health: &Arc<Health>,
    stop: &watch::Receiver<bool>,
) -> (JoinHandle<()>, String) {
    let dead_letter = DeadLetter::new(cfg.store.dir.join("dead-letter"), "influx");
    let grace = Duration::from_secs(10);
    let writer = |opts: WriterOptions| (queue.clone(), opts, dead_letter, health.writer.clone());
    match (influx, &cfg.influx) {
        (Some(sink), Some(icfg)) => {
            let (q, opts, dl, h) = writer(WriterOptions {
                batch_size: icfg.batch_size,
                flush_interval: icfg.flush_interval,
                retry_max: icfg.retry_max,
                retry_jitter: icfg.retry_jitter,
                shutdown_grace: grace,
            });
            (
                tokio::spawn(Writer::new(q, sink, opts, dl, h).run(stop.clone())),
                format!("InfluxDB {}", crate::redact::url(&icfg.url)),
            )
        }
        _ => {
            let dir = cfg.store.dir.join("series");
            let sink = FileSink::new(dir.clone(), cfg.site.timezone.clone());
            let (q, opts, dl, h) = writer(WriterOptions {
                batch_size: 5000,
                flush_interval: Duration::from_secs(1),
                retry_max: Duration::from_secs(30),
                retry_jitter: crate::config::influx::DEFAULT_RETRY_JITTER,
                shutdown_grace: grace,
            });
            (
                tokio::spawn(Writer::new(q, sink, opts, dl, h).run(stop.clone())),
                format!("line-protocol files in {}", dir.display()),
            )
        }
    }
}

/// The site's clock: reminders, day boundaries and linkage guards once a (site) second, but
/// not more often than every 20 ms of a fast replay; the rule windows saved every 15 minutes
/// and at stop.
async fn tick(site: Arc<SiteEdge>, mut stop: watch::Receiver<bool>) {
    let second = || crate::clock::real(Duration::from_secs(1)).max(Duration::from_millis(20));
    let mut next_second = tokio::time::Instant::now() + second();
    let mut save = tokio::time::interval(Duration::from_secs(15 * 60));
    save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    save.tick().await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_second) => {
                next_second = tokio::time::Instant::now() + second();
                site.tick();
            }
            _ = save.tick() => site.save_state(),
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    site.save_state();
}

/// Every `interval`, stores `gateway` points and logs one health line; once more at stop.
/// The `site` point: the site's name and permit number for the dashboards, written with every
/// health snapshot so any time range finds it. Its `label` tag, "name (id)", is what the
/// dashboards' site picker shows (a regex splits it back into text and value).
fn site_point(site: &crate::config::Site) -> Point {
    let name = site.name.clone().unwrap_or_else(|| site.id.clone());
    let label = format!("{name} ({})", site.id);
    let mut tags: Vec<(&str, &str)> = site
        .tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    tags.push(("site", &site.id));
    tags.push(("label", &label));
    let mut fields = vec![(FieldKey::new("name"), FieldValue::Str(name.clone()))];
    if let Some(p) = &site.permit {
        fields.push((FieldKey::new("permit"), FieldValue::Str(p.clone())));
    }
    Point {
        series: SeriesKey::new("site", &tags),
        fields,
        time_ms: 0,
    }
}

async fn report_health(
    site_id: String,
    site_tags: Vec<(String, String)>,
    site_info: Point,
    interval: Duration,
    health: Arc<Health>,
    site: Arc<SiteEdge>,
    mut stop: watch::Receiver<bool>,
) {
    // Intervals are site durations (see `clock`): outside a demo replay they are plain waits.
    let mut next_health = tokio::time::Instant::now() + crate::clock::real(interval);
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep_until(next_health) => {
                next_health = tokio::time::Instant::now() + crate::clock::real(interval);
                false
            }
            _ = stop.changed() => true,
        };
        let queue = site.queue();
        let depth = queue.depth();
        let mut points = health.snapshot_points(
            &site_id,
            &site_tags,
            depth,
            queue.dropped_points(),
            now_ms(),
        );
        points.push(Point {
            time_ms: now_ms(),
            ..site_info.clone()
        });
        site.points(&points);
        let (up, total) = health.devices_up(now_ms());
        let w = &health.writer;
        let brokers = health.brokers();
        let connected = brokers
            .iter()
            .filter(|b| b.connected.load(Relaxed) == 1)
            .count();
        let (messages, rejected) = brokers
            .iter()
            .flat_map(|b| b.subscriptions.iter())
            .fold((0, 0), |(m, r), s| {
                (m + s.messages.load(Relaxed), r + s.rejected.load(Relaxed))
            });
        let lag_s = depth.lag_s() as u64;
        info!(
            devices_up = up,
            devices = total,
            brokers_connected = connected,
            brokers = brokers.len(),
            messages_in = messages,
            rejected,
            uplink_lag_s = lag_s,
            readings = health.readings.load(Relaxed),
            written = w.written_points.load(Relaxed),
            queued = depth.points,
            queued_bytes = depth.bytes,
            dropped = queue.dropped_points(),
            dead_letter = w.dead_letter_points.load(Relaxed),
            "health"
        );
        if stopping || *stop.borrow() {
            return;
        }
    }
}
