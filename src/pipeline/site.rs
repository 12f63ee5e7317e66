//! The site core: readings, events and time in; one [`Effects`] value out.
//!
//! It drives the rule, compliance, linkage, data-quality and AQI engines and turns what they
//! decide into effects: points to store, alert transitions with their rendered messages, coil
//! writes, "state changed" marks and counters. It holds no lock, clock, socket or file: the
//! caller passes the time and carries the effects out (see `crate::edge`), so a whole site
//! day can be scripted in a unit test.

use std::time::Duration;

use super::actuate::{self, ActuatorStatus, Linkage, Switch};
use super::alerts::{AlertContext, Locale};
use super::aqi::{Aqi, AqiNow};
use super::compliance::{self, Compliance, Detection, ItemFigures, Vehicle};
use super::rules::{self, AlertEvent, AlertKind, AlertState, Engine, Limit, OpenSnapshot};
use super::validate;
use crate::model::{FieldKey, FieldValue, Point, Readings, SeriesKey};

/// A switch to carry out: the coils (addresses) of one device, all to one state.
#[derive(Debug, Clone, PartialEq)]
pub struct CoilWrite {
    pub switch: Switch,
    pub device: String,
    pub coils: Vec<u16>,
}

/// One alert transition as it leaves the core.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertOut {
    pub event: AlertEvent,
    /// In the site's alert language (`[alerts].locale`).
    pub message: String,
    /// The contract's alert JSON, one line, for the MQTT and webhook outboxes.
    pub json: String,
}

/// Which saved state files are out of date.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changed {
    pub open_alerts: bool,
    pub compliance: bool,
}

/// Counts for the health report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Values handed in (not `None`).
    pub readings: u64,
    /// Values that were not finite numbers: never written.
    pub invalid_values: u64,
    pub alerts_opened: u64,
    pub violations: u64,
    pub switches: u64,
    pub switch_failures: u64,
    /// Values (and events) refused because their timestamp was further ahead of the gateway's
    /// clock than `[site].max_future`: never written, never judged.
    pub future_values: u64,
}

/// What the core decided: for the edge to carry out.
#[derive(Debug, Default)]
pub struct Effects {
    pub points: Vec<Point>,
    pub alerts: Vec<AlertOut>,
    pub coil_writes: Vec<CoilWrite>,
    pub changed: Changed,
    pub counters: Counters,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
            && self.alerts.is_empty()
            && self.coil_writes.is_empty()
            && self.changed == Changed::default()
            && self.counters == Counters::default()
    }
}

/// A manual override that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    #[error("no [[actuator]] is configured")]
    NoActuators,
    #[error("an override lasts at most {0}s ([control].max_for)")]
    TooLong(u64),
    #[error("{0}")]
    Refused(String),
}

/// The rule engine, the compliance engine, and what turns their transitions into alerts.
pub struct Judge {
    pub engine: Engine,
    pub compliance: Option<Compliance>,
    pub ctx: AlertContext,
}

impl Judge {
    pub fn new(engine: Engine, ctx: AlertContext) -> Self {
        Self {
            engine,
            compliance: None,
            ctx,
        }
    }

    /// Also judges the six 100%.
    pub fn with_compliance(mut self, c: Compliance) -> Self {
        self.compliance = Some(c);
        self
    }
}

/// What a rebuilt core takes over from the one it replaces (see [`SiteCore::take_over`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Keep {
    /// The AQI's inputs (site, tags, zone, pinned table) did not change.
    pub aqi: bool,
    /// The actuators did not change.
    pub linkage: bool,
}

/// What the core keeps across restarts (the edge writes it to files).
#[derive(Debug, Default)]
pub struct Saved {
    pub windows: Option<rules::WindowsSnapshot>,
    pub open: Vec<OpenSnapshot>,
    pub compliance: Option<compliance::Snapshot>,
}

pub struct SiteCore {
    site_id: String,
    site_tags: Vec<(String, String)>,
    judge: Option<Judge>,
    aqi: Option<Aqi>,
    linkage: Option<Linkage>,
    max_override: Duration,
    /// How far ahead of `now` a timestamp may be.
    max_future_ms: i64,
    /// The engines' transitions, before they become [`AlertOut`]s.
    events: Vec<AlertEvent>,
}

impl SiteCore {
    pub fn new(site_id: &str, site_tags: &[(String, String)]) -> Self {
        Self {
            site_id: site_id.to_string(),
            site_tags: site_tags.to_vec(),
            judge: None,
            aqi: None,
            linkage: None,
            max_override: Duration::from_secs(4 * 3600),
            max_future_ms: 5 * 60_000,
            events: Vec::new(),
        }
    }

    /// With rules (and the six 100%, when the judge has them): readings are judged.
    pub fn with_rules(mut self, judge: Judge) -> Self {
        self.judge = Some(judge);
        self
    }

    /// With the HJ 633 AQI computed from PM2.5 and PM10.
    pub fn with_aqi(mut self, aqi: Aqi) -> Self {
        self.aqi = Some(aqi);
        self
    }

    /// With actuators switched by rules and by hand.
    pub fn with_linkage(mut self, linkage: Linkage, max_override: Duration) -> Self {
        self.linkage = Some(linkage);
        self.max_override = max_override;
        self
    }

    /// Timestamps further ahead of the gateway's clock than this are refused (default 5 min).
    pub fn with_max_future(mut self, d: Duration) -> Self {
        self.max_future_ms = d.as_millis() as i64;
        self
    }

    /// A timestamp from a device's clock that runs too far ahead: a reading stamped in 2099
    /// would otherwise hold its windows and its offline check in the future for ever.
    fn too_far_ahead(&self, t: i64, now_ms: i64) -> bool {
        t > self.future_limit(now_ms)
    }

    /// The latest timestamp accepted at `now_ms`.
    fn future_limit(&self, now_ms: i64) -> i64 {
        now_ms.saturating_add(self.max_future_ms)
    }

    pub fn has_rules(&self) -> bool {
        self.judge.is_some()
    }

    /// Resumes what was saved before a restart: windows as they were, open alerts open (not
    /// announced again), today's compliance counts; then the open alerts ask for their
    /// actuators again.
    pub fn restore(&mut self, mut saved: Saved, now_ms: i64, fx: &mut Effects) {
        // Readings saved from the future (by an older gateway that accepted them) would hold
        // their windows there across the restart: they are left out.
        let limit = self.future_limit(now_ms);
        if let Some(w) = &mut saved.windows {
            let mut dropped = 0;
            for s in &mut w.series {
                let before = s.readings.len();
                s.readings.retain(|(t, _)| *t <= limit);
                dropped += before - s.readings.len();
            }
            for (_, readings) in &mut w.backgrounds {
                let before = readings.len();
                readings.retain(|(t, _)| *t <= limit);
                dropped += before - readings.len();
            }
            if dropped > 0 {
                fx.counters.future_values += dropped as u64;
                tracing::warn!(
                    dropped,
                    "saved window readings stamped in the future were left out"
                );
            }
        }
        if let Some(j) = &mut self.judge {
            j.engine
                .restore(saved.windows, saved.open, now_ms, &mut self.events);
            if let (Some(c), Some(s)) = (&mut j.compliance, saved.compliance) {
                c.restore(s, now_ms);
            }
        }
        self.deliver(now_ms, fx);
        for e in self.open_alerts() {
            self.demand(&e);
        }
        self.actuate(now_ms, fx);
    }

    /// Takes over from `old`, the core of the config before a reload, what it holds: the AQI's
    /// rolling hour when `keep.aqi`, the actuators' states and hand overrides when
    /// `keep.linkage` (otherwise `old`'s actuators go to their safe state and the new ones
    /// start as after a restart); then the rule windows, open alerts (same ids, not announced
    /// again; those of rules now gone are closed) and today's compliance counts.
    pub fn take_over(&mut self, old: &mut SiteCore, keep: Keep, now_ms: i64, fx: &mut Effects) {
        if keep.aqi {
            self.aqi = old.aqi.take();
        }
        if keep.linkage {
            self.linkage = old.linkage.take();
            if let Some(l) = &mut self.linkage {
                l.clear_demands();
            }
        } else {
            old.stop_actuators(now_ms, fx);
        }
        let saved = old.saved(now_ms);
        self.restore(saved, now_ms, fx);
    }

    /// What to keep across a restart, now.
    pub fn saved(&self, now_ms: i64) -> Saved {
        match &self.judge {
            None => Saved::default(),
            Some(j) => Saved {
                windows: Some(j.engine.windows_snapshot(now_ms)),
                open: j.engine.open_snapshot(),
                compliance: j.compliance.as_ref().map(|c| c.snapshot()),
            },
        }
    }

    /// Every device's AQI as last written to the `aqi` measurement.
    pub fn aqi_now(&self) -> Vec<(String, AqiNow)> {
        self.aqi.as_ref().map_or_else(Vec::new, |a| a.now())
    }

    /// The open alerts as saved (the edge writes them whenever they change).
    pub fn open_snapshot(&self) -> Vec<OpenSnapshot> {
        self.judge
            .as_ref()
            .map_or_else(Vec::new, |j| j.engine.open_snapshot())
    }

    /// Today's compliance counts as saved.
    pub fn compliance_snapshot(&self) -> Option<compliance::Snapshot> {
        self.judge
            .as_ref()
            .and_then(|j| j.compliance.as_ref())
            .map(|c| c.snapshot())
    }

    /// One device's readings: validated into points, fed to the AQI and judged. `false`:
    /// refused (stamped too far in the future), nothing written.
    pub fn readings(&mut self, r: &Readings, now_ms: i64, fx: &mut Effects) -> bool {
        if self.too_far_ahead(r.time_ms, now_ms) {
            let n = r.values.iter().flatten().count() as u64;
            fx.counters.future_values += n;
            tracing::warn!(device = %r.device.id, time_ms = r.time_ms, now_ms, "readings stamped too far in the future were refused ([site].max_future)");
            return false;
        }
        let (points, invalid) = validate::to_points(r);
        fx.counters.readings += r.values.iter().flatten().count() as u64;
        if invalid > 0 {
            fx.counters.invalid_values += invalid as u64;
            tracing::warn!(device = %r.device.id, invalid, "values that are not finite numbers after decoding were not written");
        }
        fx.points.extend(points);
        // An impossible value (below the sensor's range) is written flagged, never used.
        // A value the instrument flagged (HJ 212: maintenance, calibration, fault ...) is
        // written with its flag and used for nothing else: not judged, not in the AQI.
        let usable = |i: usize, slot: &crate::model::MetricSlot, v: f64| {
            v.is_finite() && r.flag(i).is_none() && validate::flag(slot, v).judged()
        };
        if let Some(a) = &mut self.aqi {
            for (i, (slot, v)) in r.device.slots.iter().zip(&r.values).enumerate() {
                if let Some(v) = v.filter(|v| usable(i, slot, *v))
                    && let Some(p) = a.reading(&r.device.id, &slot.metric, r.time_ms, v)
                {
                    fx.points.push(p);
                }
            }
        }
        if let Some(j) = &mut self.judge {
            // The device reported now, whatever its data's time (a monitor's clock running
            // behind is common, hj212-field.md): it is not offline.
            if let Some(t) = r.seen_at(now_ms) {
                j.engine.seen(&r.device.id, t, &mut self.events);
            }
            for (i, (slot, v)) in r.device.slots.iter().zip(&r.values).enumerate() {
                if let (Some(_), Some(flag)) = (v, r.flag(i)) {
                    // Flagged by the instrument: the device reports (not offline), the value
                    // is not checked or judged; a flag held for long raises its alert.
                    j.engine.flagged(
                        &r.device.id,
                        &slot.metric,
                        r.time_ms,
                        flag,
                        &mut self.events,
                    );
                    continue;
                }
                if let Some(v) = v {
                    // The quality checks see every value (they raise the out-of-range alert);
                    // the rules only judged ones.
                    j.engine.reading_in_range(
                        &r.device.id,
                        &slot.metric,
                        r.time_ms,
                        *v,
                        validate::range_of(slot),
                        &mut self.events,
                    );
                    if let Some(c) = &mut j.compliance
                        && Compliance::wants(&slot.metric)
                        && usable(i, slot, *v)
                    {
                        c.reading(&r.device.id, &slot.metric, r.time_ms, *v);
                    }
                }
            }
            self.deliver(now_ms, fx);
        }
        true
    }

    /// A device's clock measured against the gateway's (an HJ 212 station's DataTime against
    /// arrival): off by more than `max_ms`, the data-quality alert.
    pub fn clock_drift(
        &mut self,
        device: &str,
        drift_ms: i64,
        max_ms: i64,
        now_ms: i64,
        fx: &mut Effects,
    ) {
        if let Some(j) = &mut self.judge {
            j.engine
                .clock_drift(device, drift_ms, max_ms, now_ms, &mut self.events);
            self.deliver(now_ms, fx);
        }
    }

    /// Time passes: reminders, daily rollovers, linkage guards and expiries.
    pub fn tick(&mut self, now_ms: i64, fx: &mut Effects) {
        if let Some(j) = &mut self.judge {
            j.engine.tick(now_ms, &mut self.events);
            if let Some(c) = &mut j.compliance {
                let figures = c.tick(now_ms, &mut self.events);
                if !figures.is_empty() {
                    let declared = c.paved_declared();
                    for (t, f, done) in &figures {
                        fx.points.extend(compliance_points(
                            &self.site_id,
                            &self.site_tags,
                            *t,
                            f,
                            *done,
                            declared.as_deref(),
                        ));
                    }
                }
            }
            self.deliver(now_ms, fx);
        }
        self.actuate(now_ms, fx);
    }

    /// Vehicles at the gates: judged for washing and cover (exits), stored with the verdict.
    pub fn vehicles(&mut self, vs: &[Vehicle], now_ms: i64, fx: &mut Effects) {
        for v in vs {
            if self.too_far_ahead(v.time_ms, now_ms) {
                fx.counters.future_values += 1;
                continue;
            }
            let verdict = match &mut self.judge {
                Some(Judge {
                    compliance: Some(c),
                    ..
                }) => Some(c.vehicle(v, &mut self.events)),
                _ => None,
            };
            fx.points
                .push(vehicle_point(&self.site_id, &self.site_tags, v, verdict));
        }
        // The day's counts are kept with each vehicle (a few a minute at most), so a crash
        // does not lose them from the running percentages.
        if self.judge.as_ref().is_some_and(|j| j.compliance.is_some()) {
            fx.changed.compliance = true;
        }
        self.deliver(now_ms, fx);
    }

    /// AI detections opened or cleared: events for the compliance engine only; the
    /// violations they lead to are alerts.
    pub fn detections(&mut self, ds: &[Detection], now_ms: i64, fx: &mut Effects) {
        let limit = self.future_limit(now_ms);
        if let Some(Judge {
            compliance: Some(c),
            ..
        }) = &mut self.judge
        {
            for d in ds {
                if d.time_ms > limit {
                    fx.counters.future_values += 1;
                    continue;
                }
                tracing::info!(device = %d.device, kind = %d.kind, id = %d.id, open = d.open, "detection");
                c.detection(d, &mut self.events);
            }
            fx.changed.compliance = true;
        }
        self.deliver(now_ms, fx);
    }

    /// The bus carried out a switch: the coils as read back, or why it failed.
    pub fn switched(
        &mut self,
        sw: &Switch,
        read_back: Result<Vec<bool>, String>,
        now_ms: i64,
        fx: &mut Effects,
    ) {
        let Some(l) = &mut self.linkage else {
            return;
        };
        let o = l.result(sw, read_back, now_ms);
        record_switch(&self.site_id, &self.site_tags, l, &o, now_ms, fx);
        self.actuate(now_ms, fx);
    }

    /// The link to a Modbus device came back or was lost (its actuators go to safe state).
    pub fn device_link(&mut self, device: &str, up: bool, now_ms: i64, fx: &mut Effects) {
        if let Some(l) = &mut self.linkage {
            l.link(device, up);
            if !up {
                self.actuate(now_ms, fx);
            }
        }
    }

    /// A manual override: `Some(on)` for `for_`, or `None` to hand back to the rules.
    /// Returns until when it holds.
    pub fn override_actuator(
        &mut self,
        id: &str,
        on: Option<bool>,
        for_: Duration,
        by: &str,
        now_ms: i64,
        fx: &mut Effects,
    ) -> Result<Option<i64>, OverrideError> {
        let Some(l) = &mut self.linkage else {
            return Err(OverrideError::NoActuators);
        };
        if on.is_some() && for_ > self.max_override {
            return Err(OverrideError::TooLong(self.max_override.as_secs()));
        }
        let until = l
            .manual(id, on, for_.as_millis() as i64, by, now_ms)
            .map_err(OverrideError::Refused)?;
        match on {
            Some(on) => {
                tracing::warn!(actuator = %id, on, by = %by, seconds = for_.as_secs(), "manual override")
            }
            None => tracing::warn!(actuator = %id, by = %by, "manual override released"),
        }
        self.actuate(now_ms, fx);
        Ok(until)
    }

    /// Sends every actuator to its safe state (at shutdown).
    pub fn stop_actuators(&mut self, now_ms: i64, fx: &mut Effects) {
        if let Some(l) = &mut self.linkage {
            l.stop();
            self.actuate(now_ms, fx);
        }
    }

    /// Every actuator confirmed in its safe state (or unreachable).
    pub fn actuators_settled(&self) -> bool {
        self.linkage.as_ref().is_none_or(|l| l.settled())
    }

    pub fn actuators(&self, now_ms: i64) -> Vec<ActuatorStatus> {
        self.linkage
            .as_ref()
            .map_or_else(Vec::new, |l| l.status(now_ms))
    }

    /// The alerts open now.
    pub fn open_alerts(&self) -> Vec<AlertEvent> {
        self.judge
            .as_ref()
            .map_or_else(Vec::new, |j| j.engine.open_alerts())
    }

    /// The alerts open now as the contract's alert JSON, messages in `locale` (the reader's
    /// language; the site's alert language when `None`).
    pub fn open_alerts_json(&self, locale: Option<Locale>) -> Vec<serde_json::Value> {
        let Some(j) = &self.judge else {
            return Vec::new();
        };
        let locale = locale.unwrap_or(j.ctx.locale);
        j.engine
            .open_alerts()
            .iter()
            .map(|e| j.ctx.json_value(e, &j.ctx.message_in(e, locale)))
            .collect()
    }

    /// The limit in force now for a device's metric; `None` without rules or when none
    /// judges it now.
    pub fn limit_in_force(&mut self, device: &str, metric: &str, now_ms: i64) -> Option<Limit> {
        self.judge
            .as_mut()?
            .engine
            .limit_in_force(device, metric, now_ms)
    }

    /// Today's six-100% figures in the order of [`compliance::ITEMS`], with the paving
    /// declaration's date. `None` without `[compliance]`.
    pub fn compliance_today(&self) -> Option<([ItemFigures; 6], Option<String>)> {
        let c = self.judge.as_ref()?.compliance.as_ref()?;
        Some((c.figures(), c.paved_declared()))
    }

    /// Asks the linkage what to switch now.
    fn actuate(&mut self, now_ms: i64, fx: &mut Effects) {
        let Some(l) = &mut self.linkage else {
            return;
        };
        for sw in l.tick(now_ms) {
            let spec = &l.specs()[sw.actuator];
            tracing::info!(actuator = %spec.id, device = %spec.device, on = sw.on, cause = %sw.cause.text(), "switching");
            fx.coil_writes.push(CoilWrite {
                device: spec.device.clone(),
                coils: spec.coils.iter().map(|(_, a)| *a).collect(),
                switch: sw,
            });
        }
    }

    /// An alert of a rule with `actuate` opened or closed: the linkage hears of it.
    fn demand(&mut self, e: &AlertEvent) -> bool {
        let (Some(l), Some(rule)) = (&mut self.linkage, &e.rule) else {
            return false;
        };
        let Some(actuator) = &rule.actuate else {
            return false;
        };
        if e.kind != AlertKind::Threshold {
            return false;
        }
        let open = match e.state {
            AlertState::Open => true,
            AlertState::Closed => false,
            _ => return false,
        };
        l.demand(actuator, &e.alert_id, &e.rule_id, open);
        true
    }

    /// Turns the engines' transitions into alert effects (and linkage demands).
    fn deliver(&mut self, now_ms: i64, fx: &mut Effects) {
        if self.events.is_empty() {
            return;
        }
        let mut events = std::mem::take(&mut self.events);
        let mut demanded = false;
        for e in events.drain(..) {
            demanded |= self.demand(&e);
            let Some(j) = &self.judge else { continue };
            let message = j.ctx.message(&e);
            match e.state {
                AlertState::Open => {
                    fx.counters.alerts_opened += 1;
                    tracing::warn!(alert_id = %e.alert_id, rule = %e.rule_id, device = %e.device, "{message}");
                }
                AlertState::Event => {
                    fx.counters.violations += 1;
                    tracing::warn!(alert_id = %e.alert_id, rule = %e.rule_id, device = %e.device, "{message}");
                }
                _ => {
                    tracing::info!(alert_id = %e.alert_id, rule = %e.rule_id, device = %e.device, state = e.state.name(), "{message}")
                }
            }
            if e.state != AlertState::Reminder {
                fx.changed.open_alerts = true;
            }
            fx.points.push(j.ctx.point(&e, &message));
            let json = j.ctx.json(&e, &message);
            fx.alerts.push(AlertOut {
                event: e,
                message,
                json,
            });
        }
        // The scratch buffer keeps its capacity.
        self.events = events;
        if demanded {
            // At once, not at the next tick: the relay switches within the poll that opened it.
            self.actuate(now_ms, fx);
        }
    }
}

/// The site's tags, `site`, then `extra`.
fn tags<'a>(
    site_id: &'a str,
    site_tags: &'a [(String, String)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut tags: Vec<(&str, &str)> = site_tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    tags.push(("site", site_id));
    tags.extend_from_slice(extra);
    tags
}

fn field(k: &str, v: FieldValue) -> (FieldKey, FieldValue) {
    (FieldKey::new(k), v)
}

/// Logs a switch's outcome and writes it to `equipment` with its cause.
fn record_switch(
    site_id: &str,
    site_tags: &[(String, String)],
    l: &Linkage,
    o: &actuate::Outcome,
    now_ms: i64,
    fx: &mut Effects,
) {
    let spec = &l.specs()[o.actuator];
    let cause = o.cause.text();
    match &o.error {
        None => {
            fx.counters.switches += 1;
            tracing::info!(actuator = %spec.id, device = %spec.device, on = o.requested, cause = %cause, "switched, confirmed by reading back");
        }
        Some(e) => {
            fx.counters.switch_failures += 1;
            tracing::warn!(actuator = %spec.id, device = %spec.device, on = o.requested, cause = %cause, error = %e, "switch not confirmed");
        }
    }
    let mut fields = Vec::with_capacity(spec.coils.len() + 4);
    if let Some(bits) = &o.read_back {
        for ((metric, _), on) in spec.coils.iter().zip(bits) {
            fields.push(field(
                metric,
                FieldValue::Float(if *on { 1.0 } else { 0.0 }),
            ));
        }
    }
    fields.push(field(
        "requested",
        FieldValue::Float(if o.requested { 1.0 } else { 0.0 }),
    ));
    fields.push(field("confirmed", FieldValue::Bool(o.confirmed)));
    fields.push(field("cause", FieldValue::Str(cause)));
    if let Some(e) = &o.error {
        fields.push(field("error", FieldValue::Str(e.clone())));
    }
    fx.points.push(Point {
        series: SeriesKey::new(
            "equipment",
            &tags(
                site_id,
                site_tags,
                &[("device", &spec.device), ("actuator", &spec.id)],
            ),
        ),
        fields,
        time_ms: now_ms,
    });
}

fn vehicle_point(
    site_id: &str,
    site_tags: &[(String, String)],
    v: &Vehicle,
    verdict: Option<compliance::VehicleVerdict>,
) -> Point {
    let mut extra = vec![("device", v.device.as_str())];
    if let Some(g) = &v.gate {
        extra.push(("gate", g));
    }
    if let Some(d) = &v.direction {
        extra.push(("direction", d));
    }
    let mut fields = vec![field("plate", FieldValue::Str(v.plate.clone()))];
    if let Some(c) = v.covered {
        fields.push(field("covered", FieldValue::Bool(c)));
    }
    if let Some(m) = v.muck_truck {
        fields.push(field("muck_truck", FieldValue::Bool(m)));
    }
    if let Some(s) = &v.snapshot {
        fields.push(field("snapshot", FieldValue::Str(s.clone())));
    }
    if let Some(vd) = verdict {
        if let Some(w) = vd.washed {
            fields.push(field("washed", FieldValue::Bool(w)));
        }
        if let Some(s) = vd.wash_seconds {
            fields.push(field("wash_seconds", FieldValue::Float(s)));
        }
    }
    Point {
        series: SeriesKey::new("vehicle", &tags(site_id, site_tags, &extra)),
        fields,
        time_ms: v.time_ms,
    }
}

/// One point per item: `compliance,item=wash percent=..,checked=..,violations=..,final=..`.
fn compliance_points(
    site_id: &str,
    site_tags: &[(String, String)],
    t: i64,
    figures: &[ItemFigures; 6],
    done: bool,
    declared: Option<&str>,
) -> Vec<Point> {
    compliance::ITEMS
        .iter()
        .zip(figures)
        .map(|(item, fig)| {
            let mut fields = Vec::with_capacity(5);
            if fig.percent.is_finite() {
                fields.push(field("percent", FieldValue::Float(fig.percent)));
            }
            fields.push(field("checked", FieldValue::Float(fig.checked)));
            fields.push(field(
                "violations",
                FieldValue::Float(f64::from(fig.violations)),
            ));
            fields.push(field("final", FieldValue::Bool(done)));
            if *item == "hardening"
                && let Some(d) = declared
            {
                fields.push(field("declared", FieldValue::Str(d.to_string())));
            }
            Point {
                series: SeriesKey::new("compliance", &tags(site_id, site_tags, &[("item", item)])),
                fields,
                time_ms: t,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
