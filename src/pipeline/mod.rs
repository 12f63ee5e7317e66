//! The pipeline between sources and outputs: readings in, validated points into the store.
//!
//! It is called directly by every source task (no task of its own), so a source learns the
//! store ticket of what it handed over and can acknowledge it upstream once it is durable.
//! The rule engine and the compliance engine join it here.

pub mod alerts;
pub mod aqi;
pub mod compliance;
pub mod rules;
pub mod state;
pub mod validate;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use crate::health::Health;
use crate::model::{Point, Readings};
use crate::outputs::line_protocol::encode_point;
use crate::outputs::queue::PointQueue;

pub struct Pipeline {
    queue: Arc<dyn PointQueue>,
    health: Arc<Health>,
    judge: Option<Mutex<Judge>>,
    aqi: Option<Mutex<aqi::Aqi>>,
    /// Alert outputs besides InfluxDB (MQTT topic, webhooks): their durable queues, each with
    /// the lowest severity it takes.
    outboxes: Vec<(crate::config::rules::Severity, Arc<dyn PointQueue>)>,
}

/// The rule engine and what turns its transitions into alerts.
pub struct Judge {
    pub engine: rules::Engine,
    pub ctx: alerts::AlertContext,
    events: Vec<rules::AlertEvent>,
    /// Where open alerts and windows are kept across restarts.
    state_dir: Option<std::path::PathBuf>,
}

const OPEN_FILE: &str = "alerts-open.json";
const WINDOWS_FILE: &str = "rules-windows.json";

impl Judge {
    pub fn new(engine: rules::Engine, ctx: alerts::AlertContext) -> Self {
        Self {
            engine,
            ctx,
            events: Vec::new(),
            state_dir: None,
        }
    }

    /// Keeps state in `dir`, resuming what was saved there: windows as they were, open alerts
    /// open (not announced again).
    pub fn with_state(mut self, dir: &std::path::Path, now_ms: i64) -> Self {
        let windows = state::load(&dir.join(WINDOWS_FILE));
        let open: Vec<rules::OpenSnapshot> = state::load(&dir.join(OPEN_FILE)).unwrap_or_default();
        if !open.is_empty() {
            tracing::info!(
                open = open.len(),
                "alerts still open from before the restart"
            );
        }
        self.engine.restore(windows, open, now_ms, &mut self.events);
        self.state_dir = Some(dir.to_path_buf());
        self
    }

    fn save_open(&self) {
        if let Some(dir) = &self.state_dir
            && let Err(e) = state::save(&dir.join(OPEN_FILE), &self.engine.open_snapshot())
        {
            tracing::error!(error = %e, "cannot save the open alerts");
        }
    }

    fn save_windows(&self, now_ms: i64) {
        if let Some(dir) = &self.state_dir
            && let Err(e) = state::save(
                &dir.join(WINDOWS_FILE),
                &self.engine.windows_snapshot(now_ms),
            )
        {
            tracing::error!(error = %e, "cannot save the rule windows");
        }
    }
}

impl Pipeline {
    pub fn new(queue: Arc<dyn PointQueue>, health: Arc<Health>) -> Self {
        Self {
            queue,
            health,
            judge: None,
            aqi: None,
            outboxes: Vec::new(),
        }
    }

    /// Alerts of at least `min` severity also go, as JSON lines, into `queue`.
    pub fn with_outbox(
        mut self,
        min: crate::config::rules::Severity,
        queue: Arc<dyn PointQueue>,
    ) -> Self {
        self.outboxes.push((min, queue));
        self
    }

    /// With the HJ 633 AQI computed from PM2.5 and PM10.
    pub fn with_aqi(mut self, aqi: aqi::Aqi) -> Self {
        self.aqi = Some(Mutex::new(aqi));
        self
    }

    /// With rules: readings are judged on their way to the store.
    pub fn with_rules(mut self, judge: Judge) -> Self {
        self.judge = Some(Mutex::new(judge));
        self
    }

    /// Validates one device's readings and stores them. Returns the store ticket.
    pub fn readings(&self, r: &Readings) -> u64 {
        let (points, invalid) = validate::to_points(r);
        self.health.record_latest(r);
        self.health
            .readings
            .fetch_add(r.values.iter().flatten().count() as u64, Relaxed);
        if invalid > 0 {
            self.health
                .invalid_values
                .fetch_add(invalid as u64, Relaxed);
            tracing::warn!(device = %r.device.id, invalid, "values that are not finite numbers after decoding were not written");
        }
        let mut ticket = self.points(&points);
        if let Some(aqi) = &self.aqi {
            let mut a = aqi.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            for (slot, v) in r.device.slots.iter().zip(&r.values) {
                if let Some(v) = v.filter(|v| v.is_finite())
                    && let Some(p) = a.reading(&r.device.id, &slot.metric, r.time_ms, v)
                {
                    out.push(p);
                }
            }
            if !out.is_empty() {
                ticket = ticket.max(self.points(&out));
            }
        }
        if let Some(judge) = &self.judge {
            let mut j = judge.lock().unwrap_or_else(|p| p.into_inner());
            let j = &mut *j;
            for (slot, v) in r.device.slots.iter().zip(&r.values) {
                if let Some(v) = v {
                    j.engine
                        .reading(&r.device.id, &slot.metric, r.time_ms, *v, &mut j.events);
                }
            }
            self.deliver(j);
        }
        ticket
    }

    /// Time passes: reminders, daily rollovers.
    pub fn tick(&self, now_ms: i64) {
        if let Some(judge) = &self.judge {
            let mut j = judge.lock().unwrap_or_else(|p| p.into_inner());
            let j = &mut *j;
            j.engine.tick(now_ms, &mut j.events);
            self.deliver(j);
        }
    }

    /// Saves the rule windows (every few minutes and at shutdown).
    pub fn save_state(&self, now_ms: i64) {
        if let Some(judge) = &self.judge {
            let j = judge.lock().unwrap_or_else(|p| p.into_inner());
            crate::outputs::blocking(|| {
                j.save_windows(now_ms);
                j.save_open();
            });
        }
    }

    /// The alerts open now.
    pub fn open_alerts(&self) -> Vec<rules::AlertEvent> {
        self.judge.as_ref().map_or_else(Vec::new, |j| {
            j.lock()
                .unwrap_or_else(|p| p.into_inner())
                .engine
                .open_alerts()
        })
    }

    /// Turns the engine's transitions into alert points (and, later, other outputs).
    fn deliver(&self, j: &mut Judge) {
        if j.events.is_empty() {
            return;
        }
        let mut points = Vec::with_capacity(j.events.len());
        let changed = j
            .events
            .iter()
            .any(|e| e.state != rules::AlertState::Reminder);
        for e in j.events.drain(..) {
            let message = j.ctx.message(&e);
            match e.state {
                rules::AlertState::Open => {
                    self.health.alerts_opened.fetch_add(1, Relaxed);
                    tracing::warn!(alert_id = %e.alert_id, rule = %e.rule_id, device = %e.device, "{message}");
                }
                _ => {
                    tracing::info!(alert_id = %e.alert_id, rule = %e.rule_id, device = %e.device, state = e.state.name(), "{message}")
                }
            }
            points.push(j.ctx.point(&e, &message));
            let mut json: Option<Vec<u8>> = None;
            for (min, q) in &self.outboxes {
                if e.severity >= *min {
                    let line = json.get_or_insert_with(|| {
                        let mut l = j.ctx.json(&e, &message).into_bytes();
                        l.push(b'\n');
                        l
                    });
                    q.append(line.clone(), 1);
                }
            }
        }
        self.points(&points);
        if changed {
            crate::outputs::blocking(|| j.save_open());
        }
    }

    /// Stores ready-made points (events, health). Returns the store ticket.
    pub fn points(&self, points: &[Point]) -> u64 {
        let mut lines = Vec::with_capacity(64 * points.len());
        let n = points
            .iter()
            .filter(|p| encode_point(p, &mut lines) > 0)
            .count();
        self.queue.append(lines, n)
    }

    pub fn queue(&self) -> &Arc<dyn PointQueue> {
        &self.queue
    }
}
