//! The edge around the site core: the one lock, the clock, the store, the alert outboxes, the
//! buses' coil channels and the state files.
//!
//! Every call takes the lock, asks the [`SiteCore`] what to do, and carries out the
//! [`Effects`] it returns: coil writes are handed to the buses while the lock is held (a
//! channel send; a bus that is gone is reported back to the core at once), the state that
//! changed is serialized; then, with the lock released, points are encoded and appended (the
//! caller gets the store ticket back, so a source acks after the commit with no extra hop),
//! alerts go into the outboxes, counters into the health, and state files are written.
//!
//! Sources see it as an [`Ingest`] handle, HTTP as a read-only [`SiteView`], control as
//! [`Overrides`].

pub mod state;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::rules::Severity;
use crate::control::Overrides;
use crate::health::Health;
use crate::health::history::AlertMark;
use crate::http::SiteView;
use crate::model::{Detection, Point, Readings, Vehicle, now_ms};
use crate::outputs::blocking;
use crate::outputs::hj212::upstream::{UpReading, UpValue};
use crate::outputs::line_protocol::encode_point;
use crate::outputs::queue::{Depth, PointQueue};
use crate::pipeline::actuate::{ActuatorStatus, Switch};
use crate::pipeline::alerts::Locale;
use crate::pipeline::compliance::ItemFigures;
use crate::pipeline::rules::AlertState;
use crate::pipeline::rules::{AlertEvent, Limit};
use crate::pipeline::{CoilWrite, Effects, Keep, Saved, SiteCore};
use crate::sources::ingest::Ingest;

pub type CoilSender = mpsc::UnboundedSender<CoilWrite>;

/// An HJ 212 platform's feed: the accepted readings of the devices it takes, handed to its
/// upstream task.
pub struct UplinkTap {
    /// Device id globs; empty: every device.
    globs: Vec<String>,
    tx: mpsc::Sender<UpReading>,
    /// Counts readings not handed over because the platform's task was that far behind (its
    /// channel full): never silent.
    health: Arc<crate::health::uplink::UplinkHealth>,
}

impl UplinkTap {
    pub fn new(
        globs: Vec<String>,
        tx: mpsc::Sender<UpReading>,
        health: Arc<crate::health::uplink::UplinkHealth>,
    ) -> Self {
        Self { globs, tx, health }
    }

    fn takes(&self, device: &str) -> bool {
        crate::config::rules::matches_any(&self.globs, device)
    }
}

/// A device's readings as an uplink takes them: finite values with their data flag (the
/// instrument's, else the range check's `T`/`D`, else `N`) and their series.
fn up_reading(r: &Readings) -> UpReading {
    let mut values = Vec::with_capacity(r.values.len());
    for (i, (slot, v)) in r.device.slots.iter().zip(&r.values).enumerate() {
        let Some(v) = v.filter(|v| v.is_finite()) else {
            continue;
        };
        let flag = r.flag(i).unwrap_or_else(|| {
            crate::pipeline::validate::flag(slot, v)
                .code()
                .and_then(|c| c.chars().next())
                .unwrap_or('N')
        });
        let Some(series) = r.device.series.get(slot.series) else {
            continue;
        };
        values.push(UpValue {
            metric: crate::model::device_key(&slot.metric),
            value: v,
            flag,
            series: series.clone(),
        });
    }
    UpReading {
        device: r.device.id.clone(),
        time_ms: r.time_ms,
        values,
    }
}

const OPEN_FILE: &str = "alerts-open.json";
const WINDOWS_FILE: &str = "rules-windows.json";
const COMPLIANCE_FILE: &str = "compliance-today.json";

/// Reads what the core saved before a restart from `dir` (missing or damaged files: nothing).
pub fn load_saved(dir: &std::path::Path) -> Saved {
    Saved {
        windows: state::load(&dir.join(WINDOWS_FILE)),
        open: state::load(&dir.join(OPEN_FILE)).unwrap_or_default(),
        compliance: state::load(&dir.join(COMPLIANCE_FILE)),
    }
}

/// State serialized under the lock, to be written after it is released.
#[derive(Default)]
struct PendingState {
    generation: u64,
    files: Vec<(&'static str, Vec<u8>)>,
}

/// The state files asked for, serialized now under the lock (cheap, in memory) and stamped
/// with a new generation; the caller writes them after releasing it. `windows_at`: also the
/// rule windows, as of that time.
fn snapshot(l: &mut Locked, windows_at: Option<i64>, open: bool, compliance: bool) -> PendingState {
    l.generation += 1;
    let mut files = Vec::new();
    if let Some(now) = windows_at
        && let Some(w) = l.core.saved(now).windows
        && let Ok(b) = serde_json::to_vec(&w)
    {
        files.push((WINDOWS_FILE, b));
    }
    if open && let Ok(b) = serde_json::to_vec(&l.core.open_snapshot()) {
        files.push((OPEN_FILE, b));
    }
    if compliance
        && let Some(c) = l.core.compliance_snapshot()
        && let Ok(b) = serde_json::to_vec(&c)
    {
        files.push((COMPLIANCE_FILE, b));
    }
    PendingState {
        generation: l.generation,
        files,
    }
}

/// Where the state files go, and which generation of each was written last, so a slow writer
/// never puts an older snapshot over a newer one.
struct StateFiles {
    dir: PathBuf,
    written: Mutex<HashMap<&'static str, u64>>,
}

struct Locked {
    core: SiteCore,
    /// Counts the snapshots taken, for [`StateFiles::written`].
    generation: u64,
}

pub struct SiteEdge {
    locked: Mutex<Locked>,
    queue: Arc<dyn PointQueue>,
    health: Arc<Health>,
    /// Alert outputs besides InfluxDB (MQTT topic, webhooks): their durable queues, each with
    /// the lowest severity it takes.
    outboxes: Mutex<Vec<(Severity, Arc<dyn PointQueue>)>>,
    /// Per relay device, the channel to the bus that owns it (replaced when a reload
    /// restarts a bus).
    coil_writers: Mutex<HashMap<String, CoilSender>>,
    state: Option<StateFiles>,
    uplinks: Vec<UplinkTap>,
}

impl SiteEdge {
    pub fn new(core: SiteCore, queue: Arc<dyn PointQueue>, health: Arc<Health>) -> Self {
        Self {
            locked: Mutex::new(Locked {
                core,
                generation: 0,
            }),
            queue,
            health,
            outboxes: Mutex::new(Vec::new()),
            coil_writers: Mutex::new(HashMap::new()),
            state: None,
            uplinks: Vec::new(),
        }
    }

    /// Accepted readings of the devices `tap` takes also go to its platform's task.
    pub fn with_uplink(mut self, tap: UplinkTap) -> Self {
        self.uplinks.push(tap);
        self
    }

    /// The alert outputs' queues, each with the lowest severity it takes (at start, and
    /// after a reload changed them).
    pub fn set_outboxes(&self, outboxes: Vec<(Severity, Arc<dyn PointQueue>)>) {
        *self.outboxes.lock().unwrap_or_else(|p| p.into_inner()) = outboxes;
    }

    /// Keeps the core's state in `dir` (open alerts, windows, today's compliance).
    pub fn with_state_dir(mut self, dir: PathBuf) -> Self {
        self.state = Some(StateFiles {
            dir,
            written: Mutex::new(HashMap::new()),
        });
        self
    }

    fn lock(&self) -> MutexGuard<'_, Locked> {
        self.locked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the core under the lock and carries out its effects. Returns what `f`
    /// returned and the store ticket of the points.
    fn run<R>(&self, f: impl FnOnce(&mut SiteCore, i64, &mut Effects) -> R) -> (R, u64) {
        let now = now_ms();
        let mut fx = Effects::default();
        let (r, pending) = {
            let mut l = self.lock();
            let r = f(&mut l.core, now, &mut fx);
            self.send_coil_writes(&mut l.core, now, &mut fx);
            let pending = self.serialize_changed(&mut l, &fx);
            (r, pending)
        };
        let ticket = self.apply(fx);
        self.write_state(pending);
        (r, ticket)
    }

    /// Hands the coil writes to their buses; a bus that is not running is reported back to
    /// the core as a failed switch (which may ask for more switches, hence the loop; the
    /// linkage asks at most once per actuator and call, so it ends).
    fn send_coil_writes(&self, core: &mut SiteCore, now: i64, fx: &mut Effects) {
        for _ in 0..16 {
            if fx.coil_writes.is_empty() {
                return;
            }
            for w in std::mem::take(&mut fx.coil_writes) {
                let sw = w.switch.clone();
                let sent = self
                    .coil_writers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&w.device)
                    .is_some_and(|tx| tx.send(w).is_ok());
                if !sent {
                    core.switched(
                        &sw,
                        Err("the bus of this device is not running".into()),
                        now,
                        fx,
                    );
                }
            }
        }
    }

    /// The state files the effects made stale, serialized now (cheap, in memory), written
    /// after the lock is released.
    fn serialize_changed(&self, l: &mut Locked, fx: &Effects) -> PendingState {
        if self.state.is_none() || !(fx.changed.open_alerts || fx.changed.compliance) {
            return PendingState::default();
        }
        snapshot(l, None, fx.changed.open_alerts, fx.changed.compliance)
    }

    fn write_state(&self, pending: PendingState) {
        let Some(st) = &self.state else { return };
        if pending.files.is_empty() {
            return;
        }
        let mut written = st.written.lock().unwrap_or_else(|p| p.into_inner());
        for (name, body) in pending.files {
            let last = written.entry(name).or_insert(0);
            if *last >= pending.generation {
                continue; // a newer snapshot is already on disk
            }
            match blocking(|| state::save_bytes(&st.dir.join(name), &body)) {
                Ok(()) => *last = pending.generation,
                Err(e) => tracing::error!(file = name, error = %e, "cannot save state"),
            }
        }
    }

    /// Stores points, fills the outboxes, counts. Returns the store ticket.
    fn apply(&self, fx: Effects) -> u64 {
        let c = fx.counters;
        let h = &self.health;
        for (counter, n) in [
            (&h.readings, c.readings),
            (&h.invalid_values, c.invalid_values),
            (&h.alerts_opened, c.alerts_opened),
            (&h.violations, c.violations),
            (&h.switches, c.switches),
            (&h.switch_failures, c.switch_failures),
            (&h.future_values, c.future_values),
        ] {
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
        for a in &fx.alerts {
            let e = &a.event;
            let closed = match e.state {
                AlertState::Open => Some(None),
                AlertState::Closed => Some(Some(e.at_ms)),
                _ => None,
            };
            if let Some(closed_ms) = closed
                && !e.metric.is_empty()
            {
                h.history.alert_transition(AlertMark {
                    alert_id: e.alert_id.clone(),
                    rule: e.rule_id.clone(),
                    device: e.device.clone(),
                    metric: e.metric.clone(),
                    severity: e.severity.name(),
                    opened_ms: e.since_ms,
                    closed_ms,
                });
            }
            let mut line: Option<Vec<u8>> = None;
            let outboxes = self.outboxes.lock().unwrap_or_else(|p| p.into_inner());
            for (min, q) in outboxes.iter() {
                if a.event.severity >= *min {
                    let l = line.get_or_insert_with(|| {
                        let mut l = a.json.clone().into_bytes();
                        l.push(b'\n');
                        l
                    });
                    q.append(l.clone(), 1);
                }
            }
        }
        self.points(&fx.points)
    }

    /// Stores ready-made points (health). Returns the store ticket.
    pub fn points(&self, points: &[Point]) -> u64 {
        if points.is_empty() {
            return 0;
        }
        let mut lines = Vec::with_capacity(64 * points.len());
        let n = points
            .iter()
            .filter(|p| encode_point(p, &mut lines) > 0)
            .count();
        self.queue.append(lines, n)
    }

    /// Resumes what the core saved in the state dir before a restart (at start, before the
    /// sources run: coil writes wait in the buses' channels).
    pub fn restore(&self) {
        let saved = self
            .state
            .as_ref()
            .map(|s| load_saved(&s.dir))
            .unwrap_or_default();
        if !saved.open.is_empty() {
            tracing::info!(
                open = saved.open.len(),
                "alerts still open from before the restart"
            );
        }
        self.run(|core, now, fx| core.restore(saved, now, fx));
    }

    /// After a reload: `core`, built from the new config, takes the place of the running one
    /// and takes over its state (see [`SiteCore::take_over`]).
    pub fn replace_core(&self, mut core: SiteCore, keep: Keep) {
        self.run(|running, now, fx| {
            core.take_over(running, keep, now, fx);
            std::mem::swap(running, &mut core);
        });
        // The open alerts and the windows as the new rules hold them.
        self.save_state();
    }

    /// Per relay device, the bus channel its switches go through (at start, and after a
    /// reload restarted some buses).
    pub fn set_coil_writers(&self, writers: HashMap<String, CoilSender>) {
        *self.coil_writers.lock().unwrap_or_else(|p| p.into_inner()) = writers;
    }

    /// Time passes: reminders, daily rollovers, linkage guards.
    pub fn tick(&self) {
        self.run(|core, now, fx| core.tick(now, fx));
    }

    /// Saves everything the core keeps across restarts (every few minutes and at stop).
    pub fn save_state(&self) {
        if self.state.is_none() {
            return;
        }
        let pending = {
            let mut l = self.lock();
            if !l.core.has_rules() {
                return; // no windows, no alerts, no compliance counts
            }
            snapshot(&mut l, Some(now_ms()), true, true)
        };
        self.write_state(pending);
    }

    /// Sends every actuator to its safe state (at shutdown).
    pub fn stop_actuators(&self) {
        self.run(|core, now, fx| core.stop_actuators(now, fx));
    }

    /// Every actuator confirmed in its safe state (or unreachable).
    pub fn actuators_settled(&self) -> bool {
        self.lock().core.actuators_settled()
    }

    pub fn queue(&self) -> &Arc<dyn PointQueue> {
        &self.queue
    }
}

impl Ingest for SiteEdge {
    fn readings(&self, r: &Readings) -> u64 {
        self.health.record_latest(r, crate::model::now_ms());
        let (accepted, ticket) = self.run(|core, now, fx| core.readings(r, now, fx));
        if accepted {
            let mut up: Option<UpReading> = None;
            for tap in self.uplinks.iter().filter(|t| t.takes(&r.device.id)) {
                let reading = up.get_or_insert_with(|| up_reading(r)).clone();
                if tap.tx.try_send(reading).is_err() {
                    tap.health.dropped.fetch_add(1, Relaxed);
                }
            }
        }
        ticket
    }

    fn points(&self, points: &[Point]) -> u64 {
        SiteEdge::points(self, points)
    }

    fn vehicles(&self, vs: &[Vehicle]) -> u64 {
        self.run(|core, now, fx| core.vehicles(vs, now, fx)).1
    }

    fn detections(&self, ds: &[Detection]) -> u64 {
        self.run(|core, now, fx| core.detections(ds, now, fx)).1
    }

    fn switched(&self, sw: &Switch, read_back: Result<Vec<bool>, String>) {
        self.run(|core, now, fx| core.switched(sw, read_back, now, fx));
    }

    fn clock_drift(&self, device: &str, drift_ms: i64, max_ms: i64) {
        self.run(|core, now, fx| core.clock_drift(device, drift_ms, max_ms, now, fx));
    }

    fn device_link(&self, device: &str, up: bool) {
        self.run(|core, now, fx| core.device_link(device, up, now, fx));
    }

    fn durable(&self) -> watch::Receiver<u64> {
        self.queue.durable()
    }

    fn commit_soon(&self) {
        self.queue.commit_soon();
    }
}

impl Overrides for SiteEdge {
    fn override_actuator(
        &self,
        id: &str,
        on: Option<bool>,
        for_: Duration,
        by: &str,
    ) -> Result<Option<i64>, String> {
        self.run(|core, now, fx| core.override_actuator(id, on, for_, by, now, fx))
            .0
            .map_err(|e| e.to_string())
    }
}

impl SiteView for SiteEdge {
    fn health(&self) -> &Arc<Health> {
        &self.health
    }

    fn depth(&self) -> Depth {
        self.queue.depth()
    }

    fn dropped_points(&self) -> u64 {
        self.queue.dropped_points()
    }

    fn open_alerts(&self) -> Vec<AlertEvent> {
        self.lock().core.open_alerts()
    }

    fn open_alerts_json(&self, locale: Option<Locale>) -> Vec<serde_json::Value> {
        self.lock().core.open_alerts_json(locale)
    }

    fn limit_in_force(&self, device: &str, metric: &str, now_ms: i64) -> Option<Limit> {
        self.lock().core.limit_in_force(device, metric, now_ms)
    }

    fn compliance_today(&self) -> Option<([ItemFigures; 6], Option<String>)> {
        self.lock().core.compliance_today()
    }

    fn actuators(&self) -> Vec<ActuatorStatus> {
        self.lock().core.actuators(now_ms())
    }

    fn aqi_now(&self) -> Vec<(String, crate::pipeline::aqi::AqiNow)> {
        self.lock().core.aqi_now()
    }
}
