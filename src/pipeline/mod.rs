//! The pipeline between sources and outputs: readings in, validated points into the store.
//!
//! It is called directly by every source task (no task of its own), so a source learns the
//! store ticket of what it handed over and can acknowledge it upstream once it is durable.
//! The rule engine and the compliance engine join it here.

pub mod actuate;
pub mod alerts;
pub mod aqi;
pub mod compliance;
pub mod rules;
pub mod state;
pub mod validate;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use crate::health::Health;
use crate::model::{FieldKey, FieldValue, Point, Readings, SeriesKey};
use crate::outputs::line_protocol::encode_point;
use crate::outputs::queue::PointQueue;

pub struct Pipeline {
    queue: Arc<dyn PointQueue>,
    health: Arc<Health>,
    /// The site's id and tags, for event points (vehicles, compliance).
    site_id: String,
    site_tags: Vec<(String, String)>,
    judge: Option<Mutex<Judge>>,
    aqi: Option<Mutex<aqi::Aqi>>,
    /// Alert outputs besides InfluxDB (MQTT topic, webhooks): their durable queues, each with
    /// the lowest severity it takes.
    outboxes: Vec<(crate::config::rules::Severity, Arc<dyn PointQueue>)>,
    /// Dust-suppression linkage, and per relay device the channel to the bus that owns it.
    linkage: Option<Mutex<actuate::Linkage>>,
    coil_writers: std::collections::HashMap<String, CoilSender>,
    max_override: std::time::Duration,
}

/// A switch to carry out: the coils (addresses) of one device, all to one state.
#[derive(Debug, Clone)]
pub struct CoilWrite {
    pub switch: actuate::Switch,
    pub device: String,
    pub coils: Vec<u16>,
}

pub type CoilSender = tokio::sync::mpsc::UnboundedSender<CoilWrite>;

/// The rule engine, the compliance engine, and what turns their transitions into alerts.
pub struct Judge {
    pub engine: rules::Engine,
    pub compliance: Option<compliance::Compliance>,
    pub ctx: alerts::AlertContext,
    events: Vec<rules::AlertEvent>,
    /// Where open alerts and windows are kept across restarts.
    state_dir: Option<std::path::PathBuf>,
}

const OPEN_FILE: &str = "alerts-open.json";
const WINDOWS_FILE: &str = "rules-windows.json";
const COMPLIANCE_FILE: &str = "compliance-today.json";

impl Judge {
    pub fn new(engine: rules::Engine, ctx: alerts::AlertContext) -> Self {
        Self {
            engine,
            compliance: None,
            ctx,
            events: Vec::new(),
            state_dir: None,
        }
    }

    /// Also judges the six 100%.
    pub fn with_compliance(mut self, c: compliance::Compliance) -> Self {
        self.compliance = Some(c);
        self
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
        if let Some(c) = &mut self.compliance
            && let Some(snap) = state::load(&dir.join(COMPLIANCE_FILE))
        {
            c.restore(snap, now_ms);
        }
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

    fn save_compliance(&self) {
        if let (Some(dir), Some(c)) = (&self.state_dir, &self.compliance)
            && let Err(e) = state::save(&dir.join(COMPLIANCE_FILE), &c.snapshot())
        {
            tracing::error!(error = %e, "cannot save today's compliance counts");
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
            site_id: String::new(),
            site_tags: Vec::new(),
            judge: None,
            aqi: None,
            outboxes: Vec::new(),
            linkage: None,
            coil_writers: std::collections::HashMap::new(),
            max_override: std::time::Duration::from_secs(4 * 3600),
        }
    }

    /// The site's id and tags, for event points.
    pub fn with_site(mut self, id: &str, tags: &[(String, String)]) -> Self {
        self.site_id = id.to_string();
        self.site_tags = tags.to_vec();
        self
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

    /// With actuators switched by rules and by hand; `writers` reach the buses that own the
    /// relay devices.
    pub fn with_linkage(
        mut self,
        linkage: actuate::Linkage,
        writers: std::collections::HashMap<String, CoilSender>,
        max_override: std::time::Duration,
    ) -> Self {
        self.linkage = Some(Mutex::new(linkage));
        self.coil_writers = writers;
        self.max_override = max_override;
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
                    if let Some(c) = &mut j.compliance
                        && compliance::Compliance::wants(&slot.metric)
                        && v.is_finite()
                    {
                        c.reading(&r.device.id, &slot.metric, r.time_ms, *v);
                    }
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
            if let Some(c) = &mut j.compliance {
                let figures = c.tick(now_ms, &mut j.events);
                if !figures.is_empty() {
                    let declared = c.paved_declared();
                    let points: Vec<Point> = figures
                        .iter()
                        .flat_map(|(t, f, done)| {
                            self.compliance_points(*t, f, *done, declared.as_deref())
                        })
                        .collect();
                    self.points(&points);
                }
            }
            self.deliver(j);
        }
        self.actuate(now_ms);
    }

    /// Asks the linkage what to switch now and hands the switches to the buses.
    fn actuate(&self, now_ms: i64) {
        let Some(linkage) = &self.linkage else {
            return;
        };
        let mut l = linkage.lock().unwrap_or_else(|p| p.into_inner());
        for sw in l.tick(now_ms) {
            let spec = &l.specs()[sw.actuator];
            tracing::info!(actuator = %spec.id, device = %spec.device, on = sw.on, cause = %sw.cause.text(), "switching");
            let w = CoilWrite {
                switch: sw.clone(),
                device: spec.device.clone(),
                coils: spec.coils.iter().map(|(_, a)| *a).collect(),
            };
            let sent = self
                .coil_writers
                .get(&w.device)
                .is_some_and(|tx| tx.send(w).is_ok());
            if !sent {
                let o = l.result(
                    &sw,
                    Err("the bus of this device is not running".into()),
                    now_ms,
                );
                self.record_switch(&l, &o, now_ms);
            }
        }
    }

    /// The bus carried out a switch: the coils read back, or why it failed.
    pub fn switched(&self, sw: &actuate::Switch, read_back: Result<Vec<bool>, String>) {
        let Some(linkage) = &self.linkage else {
            return;
        };
        let now = crate::model::now_ms();
        {
            let mut l = linkage.lock().unwrap_or_else(|p| p.into_inner());
            let o = l.result(sw, read_back, now);
            self.record_switch(&l, &o, now);
        }
        self.actuate(now);
    }

    /// Logs a switch's outcome and writes it to `equipment` with its cause.
    fn record_switch(&self, l: &actuate::Linkage, o: &actuate::Outcome, now_ms: i64) {
        let spec = &l.specs()[o.actuator];
        let cause = o.cause.text();
        match &o.error {
            None => {
                self.health.switches.fetch_add(1, Relaxed);
                tracing::info!(actuator = %spec.id, device = %spec.device, on = o.requested, cause = %cause, "switched, confirmed by reading back");
            }
            Some(e) => {
                self.health.switch_failures.fetch_add(1, Relaxed);
                tracing::warn!(actuator = %spec.id, device = %spec.device, on = o.requested, cause = %cause, error = %e, "switch not confirmed");
            }
        }
        let f = |k: &str, v: FieldValue| (FieldKey::new(k), v);
        let mut fields = Vec::with_capacity(spec.coils.len() + 4);
        if let Some(bits) = &o.read_back {
            for ((metric, _), on) in spec.coils.iter().zip(bits) {
                fields.push(f(metric, FieldValue::Float(if *on { 1.0 } else { 0.0 })));
            }
        }
        fields.push(f(
            "requested",
            FieldValue::Float(if o.requested { 1.0 } else { 0.0 }),
        ));
        fields.push(f("confirmed", FieldValue::Bool(o.confirmed)));
        fields.push(f("cause", FieldValue::Str(cause)));
        if let Some(e) = &o.error {
            fields.push(f("error", FieldValue::Str(e.clone())));
        }
        let point = Point {
            series: SeriesKey::new(
                "equipment",
                &self.tags(&[("device", &spec.device), ("actuator", &spec.id)]),
            ),
            fields,
            time_ms: now_ms,
        };
        self.points(std::slice::from_ref(&point));
    }

    /// The link to a Modbus device came back or was lost (actuators on it go to safe state).
    pub fn device_link(&self, device: &str, up: bool) {
        if let Some(linkage) = &self.linkage {
            linkage
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .link(device, up);
            if !up {
                self.actuate(crate::model::now_ms());
            }
        }
    }

    /// A manual override: `Some(on)` for `for_`, or `None` to hand back to the rules. Returns
    /// until when it holds.
    pub fn override_actuator(
        &self,
        id: &str,
        on: Option<bool>,
        for_: std::time::Duration,
        by: &str,
    ) -> Result<Option<i64>, String> {
        let Some(linkage) = &self.linkage else {
            return Err("no [[actuator]] is configured".into());
        };
        if on.is_some() && for_ > self.max_override {
            return Err(format!(
                "an override lasts at most {}s ([control].max_for)",
                self.max_override.as_secs()
            ));
        }
        let now = crate::model::now_ms();
        let until = linkage.lock().unwrap_or_else(|p| p.into_inner()).manual(
            id,
            on,
            for_.as_millis() as i64,
            by,
            now,
        )?;
        match on {
            Some(on) => {
                tracing::warn!(actuator = %id, on, by = %by, seconds = for_.as_secs(), "manual override")
            }
            None => tracing::warn!(actuator = %id, by = %by, "manual override released"),
        }
        self.actuate(now);
        Ok(until)
    }

    pub fn actuators(&self) -> Vec<actuate::ActuatorStatus> {
        self.linkage.as_ref().map_or_else(Vec::new, |l| {
            l.lock()
                .unwrap_or_else(|p| p.into_inner())
                .status(crate::model::now_ms())
        })
    }

    /// Sends every actuator to its safe state (at shutdown).
    pub fn stop_actuators(&self) {
        if let Some(linkage) = &self.linkage {
            linkage.lock().unwrap_or_else(|p| p.into_inner()).stop();
            self.actuate(crate::model::now_ms());
        }
    }

    /// Every actuator confirmed in its safe state (or unreachable).
    pub fn actuators_settled(&self) -> bool {
        self.linkage
            .as_ref()
            .is_none_or(|l| l.lock().unwrap_or_else(|p| p.into_inner()).settled())
    }

    /// Alerts that were open before a restart ask for their actuators again.
    pub fn resume_demands(&self) {
        for e in self.open_alerts() {
            self.demand(&e);
        }
        self.actuate(crate::model::now_ms());
    }

    /// An alert of a rule with `actuate` opened or closed.
    fn demand(&self, e: &rules::AlertEvent) -> bool {
        let (Some(linkage), Some(rule)) = (&self.linkage, &e.rule) else {
            return false;
        };
        let Some(actuator) = &rule.actuate else {
            return false;
        };
        if e.kind != rules::AlertKind::Threshold {
            return false;
        }
        let open = match e.state {
            rules::AlertState::Open => true,
            rules::AlertState::Closed => false,
            _ => return false,
        };
        linkage.lock().unwrap_or_else(|p| p.into_inner()).demand(
            actuator,
            &e.alert_id,
            &e.rule_id,
            open,
        );
        true
    }

    /// Vehicles at the gates: judged for washing and cover (exits), stored with the verdict.
    pub fn vehicles(&self, vs: &[compliance::Vehicle]) -> u64 {
        let mut points = Vec::with_capacity(vs.len());
        let mut judge = self
            .judge
            .as_ref()
            .map(|j| j.lock().unwrap_or_else(|p| p.into_inner()));
        for v in vs {
            let verdict = match judge.as_deref_mut() {
                Some(Judge {
                    compliance: Some(c),
                    events,
                    ..
                }) => Some(c.vehicle(v, events)),
                _ => None,
            };
            points.push(self.vehicle_point(v, verdict));
        }
        let ticket = self.points(&points);
        if let Some(j) = judge.as_deref_mut() {
            // The day's counts are kept with the vehicle (a few a minute at most), so a crash
            // does not lose them from the running percentages.
            if j.compliance.is_some() {
                crate::outputs::blocking(|| j.save_compliance());
            }
            self.deliver(j);
        }
        ticket
    }

    /// AI detections opened or cleared. They are events for the compliance engine only; the
    /// violations they lead to are stored as alerts.
    pub fn detections(&self, ds: &[compliance::Detection]) {
        let Some(judge) = &self.judge else {
            return;
        };
        let mut j = judge.lock().unwrap_or_else(|p| p.into_inner());
        let j = &mut *j;
        if let Some(c) = &mut j.compliance {
            for d in ds {
                tracing::info!(device = %d.device, kind = %d.kind, id = %d.id, open = d.open, "detection");
                c.detection(d, &mut j.events);
            }
            crate::outputs::blocking(|| j.save_compliance());
        }
        self.deliver(j);
    }

    /// Today's six-100% figures: (item, figures) in the order of [`compliance::ITEMS`], with
    /// the paving declaration's date. `None` without `[compliance]`.
    pub fn compliance_today(&self) -> Option<([compliance::ItemFigures; 6], Option<String>)> {
        let j = self
            .judge
            .as_ref()?
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let c = j.compliance.as_ref()?;
        Some((c.figures(), c.paved_declared()))
    }

    fn tags<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut tags: Vec<(&str, &str)> = self
            .site_tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        tags.push(("site", &self.site_id));
        tags.extend_from_slice(extra);
        tags
    }

    fn vehicle_point(
        &self,
        v: &compliance::Vehicle,
        verdict: Option<compliance::VehicleVerdict>,
    ) -> Point {
        let mut extra = vec![("device", v.device.as_str())];
        if let Some(g) = &v.gate {
            extra.push(("gate", g));
        }
        if let Some(d) = &v.direction {
            extra.push(("direction", d));
        }
        let f = |k: &str, v: FieldValue| (FieldKey::new(k), v);
        let mut fields = vec![f("plate", FieldValue::Str(v.plate.clone()))];
        if let Some(c) = v.covered {
            fields.push(f("covered", FieldValue::Bool(c)));
        }
        if let Some(m) = v.muck_truck {
            fields.push(f("muck_truck", FieldValue::Bool(m)));
        }
        if let Some(s) = &v.snapshot {
            fields.push(f("snapshot", FieldValue::Str(s.clone())));
        }
        if let Some(vd) = verdict {
            if let Some(w) = vd.washed {
                fields.push(f("washed", FieldValue::Bool(w)));
            }
            if let Some(s) = vd.wash_seconds {
                fields.push(f("wash_seconds", FieldValue::Float(s)));
            }
        }
        Point {
            series: SeriesKey::new("vehicle", &self.tags(&extra)),
            fields,
            time_ms: v.time_ms,
        }
    }

    /// One point per item: `compliance,item=wash percent=..,checked=..,violations=..,final=..`.
    fn compliance_points(
        &self,
        t: i64,
        figures: &[compliance::ItemFigures; 6],
        done: bool,
        declared: Option<&str>,
    ) -> Vec<Point> {
        let f = |k: &str, v: FieldValue| (FieldKey::new(k), v);
        compliance::ITEMS
            .iter()
            .zip(figures)
            .map(|(item, fig)| {
                let mut fields = Vec::with_capacity(5);
                if fig.percent.is_finite() {
                    fields.push(f("percent", FieldValue::Float(fig.percent)));
                }
                fields.push(f("checked", FieldValue::Float(fig.checked)));
                fields.push(f(
                    "violations",
                    FieldValue::Float(f64::from(fig.violations)),
                ));
                fields.push(f("final", FieldValue::Bool(done)));
                if *item == "hardening"
                    && let Some(d) = declared
                {
                    fields.push(f("declared", FieldValue::Str(d.to_string())));
                }
                Point {
                    series: SeriesKey::new("compliance", &self.tags(&[("item", item)])),
                    fields,
                    time_ms: t,
                }
            })
            .collect()
    }

    /// Saves the rule windows (every few minutes and at shutdown).
    pub fn save_state(&self, now_ms: i64) {
        if let Some(judge) = &self.judge {
            let j = judge.lock().unwrap_or_else(|p| p.into_inner());
            crate::outputs::blocking(|| {
                j.save_windows(now_ms);
                j.save_open();
                j.save_compliance();
            });
        }
    }

    /// The limit in force now for a device's metric (see [`rules::Engine::limit_in_force`]);
    /// `None` without rules or when none judges it now.
    pub fn limit_in_force(&self, device: &str, metric: &str, now_ms: i64) -> Option<rules::Limit> {
        self.judge
            .as_ref()?
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .engine
            .limit_in_force(device, metric, now_ms)
    }

    /// The alerts open now as the contract's alert JSON, messages in the site's alert language.
    pub fn open_alerts_json(&self) -> Vec<serde_json::Value> {
        let Some(judge) = &self.judge else {
            return Vec::new();
        };
        let j = judge.lock().unwrap_or_else(|p| p.into_inner());
        j.engine
            .open_alerts()
            .iter()
            .map(|e| j.ctx.json_value(e, &j.ctx.message(e)))
            .collect()
    }

    /// The counters the pipeline writes to (for the status page and `/metrics`).
    pub fn health(&self) -> &Arc<Health> {
        &self.health
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
        let mut demanded = false;
        for e in j.events.drain(..) {
            demanded |= self.demand(&e);
            let message = j.ctx.message(&e);
            match e.state {
                rules::AlertState::Open => {
                    self.health.alerts_opened.fetch_add(1, Relaxed);
                    tracing::warn!(alert_id = %e.alert_id, rule = %e.rule_id, device = %e.device, "{message}");
                }
                rules::AlertState::Event => {
                    self.health.violations.fetch_add(1, Relaxed);
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
        if demanded {
            // At once, not at the next tick: the relay switches within the poll that opened it.
            self.actuate(crate::model::now_ms());
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
