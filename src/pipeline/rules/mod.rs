//! The rule engine: readings and time in, alert transitions out. Sans-IO: no clock and no
//! socket of its own, so it is tested with scripted days and benchmarked on its own.
//!
//! Per rule and device it keeps a rolling window (mean, Leq, max, or each reading), judges the
//! window only when it holds at least `min_coverage` of its expected readings (HJ 212's 75 %),
//! optionally after subtracting a regional background (capped), inside its schedule and its
//! effective dates; opens an alert once the condition has held for `for`, closes it past the
//! `clear` level (hysteresis), reminds every `repeat`, and counts exceedances per local day
//! against `max_per_day`.

pub mod clock;
pub mod names;
pub mod quality;
pub mod window;

use std::collections::HashMap;
use std::sync::Arc;

use clock::LocalClock;
use names::{ByMetric, Names};
use quality::Quality;
use window::Window;

use crate::config::rules::{Aggregate, Condition, RuleConfig, Severity};
use crate::model::device_key;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Open,
    Reminder,
    Closed,
    /// A one-off event (a violation): neither opened nor closed.
    Event,
}

impl AlertState {
    pub fn name(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::Reminder => "reminder",
            AlertState::Closed => "closed",
            AlertState::Event => "event",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    /// A rule's condition.
    Threshold,
    /// A rule's exceedances in one local day passed `max_per_day`.
    DailyAllowance,
    /// No data from a device.
    Offline,
    /// A value that has not changed for too long.
    Stuck,
    /// A reading outside the sensor's physical range (flagged, not judged).
    OutOfRange,
    /// The instrument has flagged a metric's values (HJ 212 data flag other than N) for longer
    /// than the allowance: none of them is judged meanwhile.
    Flagged,
    /// A device's clock is off from the gateway's by more than the allowance.
    ClockDrift,
    /// A six-100% violation (an unwashed exit, an uncovered muck truck, ...): one event.
    Violation,
}

/// One transition of one alert.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    /// Stable for the life of the alert: open, reminders and close share it.
    pub alert_id: String,
    pub kind: AlertKind,
    pub rule_id: String,
    pub rule: Option<Arc<RuleConfig>>,
    pub device: String,
    pub metric: String,
    pub severity: Severity,
    pub state: AlertState,
    /// The judged value (after the window's aggregate and any background subtraction).
    pub value: f64,
    pub threshold: f64,
    pub since_ms: i64,
    pub at_ms: i64,
    /// What an inspector needs to act: plate, snapshot URL, gate... (name, value).
    pub evidence: Vec<(String, String)>,
}

/// An alert that is open.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpenAlert {
    pub alert_id: String,
    pub since_ms: i64,
    pub value: f64,
    pub threshold: f64,
    pub last_notified_ms: i64,
}

#[derive(Debug, Clone)]
struct Series {
    rule: usize,
    /// From [`device_key`]: one shared copy of the id.
    device: Arc<str>,
    /// The device's reading interval, if known (for coverage).
    interval: Option<i64>,
    window: Option<Window>,
    /// When the condition started to hold (for `for`).
    breach_since: Option<i64>,
    /// Boxed: an alert is open on few of a hub's series, and the box keeps each closed one
    /// at one word (with `daily`, 96 bytes of a series' 400 were empty alerts).
    open: Option<Box<OpenAlert>>,
    /// Local day number and exceedances (alert openings) in it.
    day: i64,
    day_count: u32,
    daily: Option<Box<OpenAlert>>,
}

/// State of a rule shared by its devices: the regional background.
#[derive(Debug, Clone)]
struct RuleState {
    rule: Arc<RuleConfig>,
    background: Option<Window>,
    /// Its effective dates as local day numbers.
    from_day: Option<i64>,
    until_day: Option<i64>,
}

pub struct Engine {
    rules: Vec<RuleState>,
    series: Vec<Series>,
    /// device → metric → series judged on that reading.
    routes: HashMap<Arc<str>, ByMetric<CachedRoute>>,
    names: Names,
    /// The metrics any rule judges or takes a background of: a reading of another metric has
    /// no route, and no device × metric entry is kept for it (most of a hub's readings).
    routed_metrics: Vec<String>,
    /// What a `None` route gives (cloned: reference counts, no allocation).
    no_route: Route,
    /// Devices' reading intervals (known for Modbus), for the coverage rule.
    intervals: HashMap<Arc<str>, i64>,
    clock: LocalClock,
    /// The regional feed: a background for some rules, never judged as a site monitor unless a
    /// rule names it in `devices`.
    background_device: Option<String>,
    quality: Quality,
}

#[derive(Debug, Clone, Default)]
struct Route {
    series: Arc<[usize]>,
    /// Rules whose background this reading is.
    backgrounds: Arc<[usize]>,
}

/// A cached [`Route`]: `None` for a reading no rule judges (most of a hub's device × metric
/// pairs), so an entry is one pointer.
type CachedRoute = Option<Arc<Route>>;

impl Engine {
    pub fn new(rules: Vec<RuleConfig>, tz: jiff::tz::TimeZone) -> Self {
        let clock = LocalClock::new(tz);
        let rules = rules
            .into_iter()
            .filter(|r| r.enabled)
            .map(|r| RuleState {
                background: r
                    .background
                    .as_ref()
                    .zip(r.window)
                    .map(|(_, w)| Window::new(w.as_millis() as i64, Aggregate::Mean)),
                from_day: r.effective_from.map(clock::day_number),
                until_day: r.effective_until.map(clock::day_number),
                rule: Arc::new(r),
            })
            .collect::<Vec<RuleState>>();
        let mut routed_metrics: Vec<String> = Vec::new();
        for r in &rules {
            let bg = r.rule.background.as_ref().map(|b| b.metric.clone());
            for m in std::iter::once(r.rule.metric.clone()).chain(bg) {
                if !routed_metrics.contains(&m) {
                    routed_metrics.push(m);
                }
            }
        }
        Self {
            rules,
            series: Vec::new(),
            routes: HashMap::new(),
            names: Names::default(),
            routed_metrics,
            no_route: Route::default(),
            intervals: HashMap::new(),
            clock,
            background_device: None,
            quality: Quality::new(10 * 60_000),
        }
    }

    /// How long a device may be silent before it is reported offline (at least three of its
    /// intervals).
    pub fn set_offline_after(&mut self, ms: i64) {
        self.quality = Quality::new(ms);
    }

    /// A device of the configuration: its interval (for coverage), and that it is expected to
    /// report from `now` on (for the offline alert).
    pub fn register_device(&mut self, device: &str, interval_ms: Option<i64>, now: i64) {
        if let Some(i) = interval_ms {
            self.set_interval(device, i);
        }
        self.quality.register(device, interval_ms, now);
    }

    /// The site's regional background device (not judged by rules that do not name it).
    pub fn set_background_device(&mut self, device: Option<String>) {
        self.background_device = device;
    }

    pub fn rules(&self) -> impl Iterator<Item = &Arc<RuleConfig>> {
        self.rules.iter().map(|r| &r.rule)
    }

    /// The poll interval of a device (its readings' expected spacing).
    pub fn set_interval(&mut self, device: &str, interval_ms: i64) {
        self.intervals.insert(device_key(device), interval_ms);
        for s in self.series.iter_mut().filter(|s| *s.device == *device) {
            s.interval = Some(interval_ms);
        }
    }

    /// The series a device's metric feeds (cheap clones: reference counts), so the series can
    /// be judged with `&mut self`. Looked up with one hash of each name on the hot path.
    fn route(&mut self, device: &str, metric: &str) -> Route {
        if !self.routed_metrics.iter().any(|m| m == metric) {
            return self.no_route.clone();
        }
        if let Some(r) = self.routes.get(device).and_then(|m| m.get(metric)) {
            return r.as_deref().unwrap_or(&self.no_route).clone();
        }
        let (mut series, mut backgrounds) = (Vec::new(), Vec::new());
        let interval = self.intervals.get(device).copied();
        for (ri, rs) in self.rules.iter().enumerate() {
            let r = &rs.rule;
            let regional = self.background_device.as_deref() == Some(device)
                && !r
                    .devices
                    .iter()
                    .any(|g| crate::config::rules::glob(g, device));
            if r.metric == metric && r.matches_device(device) && !regional {
                let window = r
                    .window
                    .filter(|_| r.aggregate != Aggregate::Each)
                    .map(|w| Window::new(w.as_millis() as i64, r.aggregate));
                if self.series.len() == self.series.capacity() {
                    // By a quarter, not doubling: the series are most of a hub's rule state
                    // (a device each), and a doubled `Vec` keeps up to twice their room.
                    self.series.reserve_exact((self.series.len() / 4).max(4));
                }
                self.series.push(Series {
                    rule: ri,
                    device: device_key(device),
                    interval,
                    window,
                    breach_since: None,
                    open: None,
                    day: i64::MIN,
                    day_count: 0,
                    daily: None,
                });
                series.push(self.series.len() - 1);
            }
            if r.background
                .as_ref()
                .is_some_and(|b| b.device == device && b.metric == metric)
            {
                backgrounds.push(ri);
            }
        }
        // Most of a hub's device × metric pairs are judged by no rule: they share one empty
        // route instead of two allocations each.
        let cached = (!series.is_empty() || !backgrounds.is_empty()).then(|| {
            Arc::new(Route {
                series: series.into(),
                backgrounds: backgrounds.into(),
            })
        });
        let route = cached.as_deref().unwrap_or(&self.no_route).clone();
        let names = &mut self.names;
        self.routes
            .entry(device_key(device))
            .or_default()
            .get_or_insert_with(names, metric, || cached);
        route
    }

    /// Feeds one reading; transitions are appended to `out`.
    pub fn reading(
        &mut self,
        device: &str,
        metric: &str,
        t: i64,
        v: f64,
        out: &mut Vec<AlertEvent>,
    ) {
        self.reading_in_range(device, metric, t, v, None, out);
    }

    /// Feeds one reading of a device whose own measuring range is `range` (`None`: the
    /// metric's default).
    /// A value its instrument flagged: the device is seen, the value not judged; a flag held
    /// longer than the allowance raises the data-quality alert.
    pub fn flagged(
        &mut self,
        device: &str,
        metric: &str,
        t: i64,
        flag: char,
        out: &mut Vec<AlertEvent>,
    ) {
        self.quality.flagged(device, metric, t, flag, out);
    }

    /// The device reported at `t` (the gateway's time of arrival): it is not offline.
    pub fn seen(&mut self, device: &str, t: i64, out: &mut Vec<AlertEvent>) {
        self.quality.seen(device, t, out);
    }

    /// How long a data flag may be held before its alert ([[hj212.listen]].flag_alert_after).
    pub fn set_flag_alert_after(&mut self, ms: i64) {
        self.quality.set_flag_alert_after(ms);
    }

    /// A device's clock against the gateway's (ms, positive: behind).
    pub fn clock_drift(
        &mut self,
        device: &str,
        drift_ms: i64,
        max_ms: i64,
        now: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        self.quality.clock_drift(device, drift_ms, max_ms, now, out);
    }

    pub fn reading_in_range(
        &mut self,
        device: &str,
        metric: &str,
        t: i64,
        v: f64,
        range: Option<(f64, f64)>,
        out: &mut Vec<AlertEvent>,
    ) {
        if !v.is_finite() {
            return;
        }
        if !self.quality.reading(device, metric, t, v, range, out) {
            // Below the sensor's range (negative dust): impossible, flagged, not judged.
            return;
        }
        let Route {
            series,
            backgrounds,
        } = self.route(device, metric);
        if series.is_empty() && backgrounds.is_empty() {
            return;
        }
        for &ri in backgrounds.iter() {
            if let Some(w) = self.rules[ri].background.as_mut() {
                w.push(t, v);
            }
        }
        if series.is_empty() {
            return;
        }
        let local = self.clock.local(t);
        for &si in series.iter() {
            self.judge(si, local, t, v, out);
        }
    }

    fn judge(&mut self, si: usize, local: clock::Local, t: i64, v: f64, out: &mut Vec<AlertEvent>) {
        let s = &mut self.series[si];
        let rs = &self.rules[s.rule];
        let rule = &rs.rule;
        // The window takes every reading, judged or not, so it is full when judging resumes.
        let fresh = match s.window.as_mut() {
            Some(w) => w.push(t, v),
            None => true,
        };
        if !fresh {
            return;
        }
        let in_force = rs.from_day.is_none_or(|d| local.day >= d)
            && rs.until_day.is_none_or(|d| local.day <= d)
            && rule
                .when
                .is_none_or(|w| w.contains(local.weekday, local.minute));
        if !in_force {
            s.breach_since = None;
            if let Some(open) = s.open.take() {
                out.push(event(
                    rule,
                    &s.device,
                    AlertKind::Threshold,
                    AlertState::Closed,
                    &open,
                    open.value,
                    t,
                ));
            }
            return;
        }
        // The value judged: the window's aggregate when enough of it is there.
        let value = match &s.window {
            None => v,
            Some(w) => {
                if w.coverage(s.interval) < rule.min_coverage {
                    return;
                }
                match w.value() {
                    Some(x) => x,
                    None => return,
                }
            }
        };
        let value = match (&rule.background, &rs.background) {
            (Some(b), Some(bw)) => {
                if bw.coverage(None) < rule.min_coverage {
                    return;
                }
                let Some(bg) = bw.value() else { return };
                value - b.cap.map_or(bg, |c| bg.min(c))
            }
            _ => value,
        };

        if let Some(open) = &mut s.open {
            open.value = value;
            if rule.condition.cleared(value, rule.clear) {
                if let Some(open) = s.open.take() {
                    out.push(event(
                        rule,
                        &s.device,
                        AlertKind::Threshold,
                        AlertState::Closed,
                        &open,
                        value,
                        t,
                    ));
                }
                s.breach_since = None;
            }
            return;
        }
        let Some(threshold) = rule.condition.breached(value) else {
            s.breach_since = None;
            return;
        };
        let since = *s.breach_since.get_or_insert(t);
        if t - since < rule.hold.as_millis() as i64 {
            return;
        }
        let open = OpenAlert {
            alert_id: format!("{}/{}/{}", rule.id, s.device, since),
            since_ms: since,
            value,
            threshold,
            last_notified_ms: t,
        };
        out.push(event(
            rule,
            &s.device,
            AlertKind::Threshold,
            AlertState::Open,
            &open,
            value,
            t,
        ));
        s.open = Some(Box::new(open));
        // Exceedances per local day, against the allowance.
        if s.day != local.day {
            s.day = local.day;
            s.day_count = 0;
        }
        s.day_count += 1;
        if let Some(max) = rule.max_per_day
            && s.day_count > max
            && s.daily.is_none()
        {
            let daily = OpenAlert {
                alert_id: format!("{}:daily/{}/{}", rule.id, s.device, local.day),
                since_ms: t,
                value: f64::from(s.day_count),
                threshold: f64::from(max),
                last_notified_ms: t,
            };
            out.push(event(
                rule,
                &s.device,
                AlertKind::DailyAllowance,
                AlertState::Open,
                &daily,
                daily.value,
                t,
            ));
            s.daily = Some(Box::new(daily));
        } else if let Some(d) = &mut s.daily {
            d.value = f64::from(s.day_count);
        }
    }

    /// Time passes: reminders for open alerts, daily alerts closed at local midnight.
    pub fn tick(&mut self, now: i64, out: &mut Vec<AlertEvent>) {
        self.quality.tick(now, out);
        let today = self.clock.local(now).day;
        for s in &mut self.series {
            let rule = &self.rules[s.rule].rule;
            if let (Some(open), Some(repeat)) = (&mut s.open, rule.repeat)
                && now - open.last_notified_ms >= repeat.as_millis() as i64
            {
                open.last_notified_ms = now;
                out.push(event(
                    rule,
                    &s.device,
                    AlertKind::Threshold,
                    AlertState::Reminder,
                    open,
                    open.value,
                    now,
                ));
            }
            if s.day != today {
                s.day_count = 0;
                s.day = today;
                if let Some(d) = s.daily.take() {
                    out.push(event(
                        rule,
                        &s.device,
                        AlertKind::DailyAllowance,
                        AlertState::Closed,
                        &d,
                        d.value,
                        now,
                    ));
                }
            }
        }
    }

    /// Every open alert (threshold and daily), for the status page and for saving.
    pub fn open_alerts(&self) -> Vec<AlertEvent> {
        let mut v = Vec::new();
        for s in &self.series {
            let rule = &self.rules[s.rule].rule;
            if let Some(o) = &s.open {
                v.push(event(
                    rule,
                    &s.device,
                    AlertKind::Threshold,
                    AlertState::Open,
                    o,
                    o.value,
                    o.last_notified_ms,
                ));
            }
            if let Some(d) = &s.daily {
                v.push(event(
                    rule,
                    &s.device,
                    AlertKind::DailyAllowance,
                    AlertState::Open,
                    d,
                    d.value,
                    d.last_notified_ms,
                ));
            }
        }
        for (kind, device, metric, a) in self.quality.open() {
            v.push(Quality::to_alert(kind, &device, &metric, &a));
        }
        v
    }

    /// The limit a person should see beside a device's latest value: among the enabled rules
    /// on this device and metric that are in force at `now` (effective dates, schedule), the one
    /// with an open alert on this device, else the strictest (lowest `above`, highest `below`),
    /// else the first in configuration order. `None` when no rule judges it now.
    pub fn limit_in_force(&mut self, device: &str, metric: &str, now: i64) -> Option<Limit> {
        let local = self.clock.local(now);
        let regional = self.background_device.as_deref() == Some(device);
        let mut best: Option<(u8, f64, Limit)> = None;
        for (ri, rs) in self.rules.iter().enumerate() {
            let r = &rs.rule;
            if r.metric != metric || !r.matches_device(device) {
                continue;
            }
            // The regional feed is judged only by rules that name it (as `route` does).
            if regional
                && !r
                    .devices
                    .iter()
                    .any(|g| crate::config::rules::glob(g, device))
            {
                continue;
            }
            let in_force = rs.from_day.is_none_or(|d| local.day >= d)
                && rs.until_day.is_none_or(|d| local.day <= d)
                && r.when
                    .is_none_or(|w| w.contains(local.weekday, local.minute));
            if !in_force {
                continue;
            }
            let open = self
                .series
                .iter()
                .any(|s| s.rule == ri && *s.device == *device && s.open.is_some());
            // Lower ranks win: an open alert first, then by strictness within a kind.
            let (rank, strict) = match r.condition {
                Condition::Above(a) => (1, a),
                Condition::Below(b) => (2, -b),
                Condition::Outside(..) => (3, 0.0),
            };
            let rank = if open { 0 } else { rank };
            let limit = Limit {
                rule: r.id.clone(),
                condition: r.condition,
                window: r.window.filter(|_| r.aggregate != Aggregate::Each),
                aggregate: r.aggregate,
                alert_open: open,
            };
            let better = best
                .as_ref()
                .is_none_or(|(br, bs, _)| rank < *br || (rank == *br && strict < *bs));
            if better {
                best = Some((rank, strict, limit));
            }
        }
        best.map(|(_, _, l)| l)
    }

    fn series_of(&mut self, rule: usize, device: &str) -> Option<usize> {
        let metric = self.rules.get(rule)?.rule.metric.clone();
        let route = self.route(device, &metric).series;
        route
            .iter()
            .copied()
            .find(|&si| self.series[si].rule == rule)
    }

    fn rule_index(&self, id: &str) -> Option<usize> {
        self.rules.iter().position(|r| r.rule.id == id)
    }

    /// What is needed to resume the windows after a restart.
    pub fn windows_snapshot(&self, now: i64) -> WindowsSnapshot {
        WindowsSnapshot {
            saved_ms: now,
            series: self
                .series
                .iter()
                .map(|s| SeriesSnapshot {
                    rule: self.rules[s.rule].rule.id.clone(),
                    device: s.device.to_string(),
                    readings: s
                        .window
                        .as_ref()
                        .map(|w| w.readings().collect())
                        .unwrap_or_default(),
                    breach_since: s.breach_since,
                    day: s.day,
                    day_count: s.day_count,
                })
                .collect(),
            backgrounds: self
                .rules
                .iter()
                .filter_map(|r| {
                    r.background
                        .as_ref()
                        .map(|w| (r.rule.id.clone(), w.readings().collect()))
                })
                .collect(),
        }
    }

    /// The alerts open now, to be saved at every change.
    pub fn open_snapshot(&self) -> Vec<OpenSnapshot> {
        let mut v = Vec::new();
        for s in &self.series {
            let rule = &self.rules[s.rule].rule.id;
            for (kind, a) in [("threshold", &s.open), ("daily", &s.daily)] {
                if let Some(a) = a {
                    v.push(OpenSnapshot::new(kind, rule, &s.device, "", a));
                }
            }
        }
        for (kind, device, metric, a) in self.quality.open() {
            let k = match kind {
                AlertKind::Offline => "offline",
                AlertKind::Stuck => "stuck",
                AlertKind::Flagged => "flagged",
                AlertKind::ClockDrift => "clock_drift",
                _ => "out_of_range",
            };
            v.push(OpenSnapshot::new(k, "", &device, &metric, &a));
        }
        v
    }

    /// Resumes after a restart: windows as saved, alerts open as they were (not announced
    /// again). An alert of a rule that no longer exists is closed (the transition goes to `out`).
    pub fn restore(
        &mut self,
        windows: Option<WindowsSnapshot>,
        open: Vec<OpenSnapshot>,
        now: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        if let Some(w) = windows {
            for s in w.series {
                let Some(ri) = self.rule_index(&s.rule) else {
                    continue;
                };
                let Some(si) = self.series_of(ri, &s.device) else {
                    continue;
                };
                let series = &mut self.series[si];
                if let Some(win) = series.window.as_mut() {
                    for (t, v) in s.readings {
                        win.push(t, v);
                    }
                }
                series.breach_since = s.breach_since;
                series.day = s.day;
                series.day_count = s.day_count;
            }
            for (id, readings) in w.backgrounds {
                if let Some(win) = self
                    .rule_index(&id)
                    .and_then(|ri| self.rules[ri].background.as_mut())
                {
                    for (t, v) in readings {
                        win.push(t, v);
                    }
                }
            }
        }
        for o in open {
            let alert = o.alert();
            match o.kind.as_str() {
                "threshold" | "daily" => {
                    let si = self
                        .rule_index(&o.rule)
                        .and_then(|ri| self.series_of(ri, &o.device));
                    match si {
                        Some(si) => {
                            let s = &mut self.series[si];
                            if o.kind == "daily" {
                                s.daily = Some(Box::new(alert));
                            } else {
                                s.open = Some(Box::new(alert));
                            }
                        }
                        None => out.push(AlertEvent {
                            alert_id: alert.alert_id.clone(),
                            kind: if o.kind == "daily" {
                                AlertKind::DailyAllowance
                            } else {
                                AlertKind::Threshold
                            },
                            rule_id: o.rule.clone(),
                            rule: None,
                            device: o.device.clone(),
                            metric: o.metric.clone(),
                            severity: Severity::Info,
                            state: AlertState::Closed,
                            value: alert.value,
                            threshold: alert.threshold,
                            since_ms: alert.since_ms,
                            at_ms: now,
                            evidence: Vec::new(),
                        }),
                    }
                }
                "offline" => self
                    .quality
                    .restore(AlertKind::Offline, &o.device, &o.metric, alert),
                "stuck" => self
                    .quality
                    .restore(AlertKind::Stuck, &o.device, &o.metric, alert),
                "flagged" => self
                    .quality
                    .restore(AlertKind::Flagged, &o.device, &o.metric, alert),
                "clock_drift" => {
                    self.quality
                        .restore(AlertKind::ClockDrift, &o.device, &o.metric, alert)
                }
                _ => self
                    .quality
                    .restore(AlertKind::OutOfRange, &o.device, &o.metric, alert),
            }
        }
    }
}

/// A rule's limit as it applies to one device now (see [`Engine::limit_in_force`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub rule: String,
    pub condition: Condition,
    /// The rolling window the rule judges (its aggregate), `None` for each reading.
    pub window: Option<std::time::Duration>,
    pub aggregate: Aggregate,
    /// An alert of this rule is open on this device.
    pub alert_open: bool,
}

impl Limit {
    /// Whether `v` is beyond the limit. A windowed rule judges its aggregate, not one reading,
    /// so for those this only says that the latest reading is beyond the level.
    pub fn breached_by(&self, v: f64) -> bool {
        self.condition.breached(v).is_some()
    }
}

/// The windows of every rule and device, saved now and then and at shutdown.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct WindowsSnapshot {
    pub saved_ms: i64,
    pub series: Vec<SeriesSnapshot>,
    pub backgrounds: Vec<(String, Vec<(i64, f64)>)>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SeriesSnapshot {
    pub rule: String,
    pub device: String,
    pub readings: Vec<(i64, f64)>,
    pub breach_since: Option<i64>,
    pub day: i64,
    pub day_count: u32,
}

/// An open alert as saved (values that are not numbers saved as null).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpenSnapshot {
    pub kind: String,
    pub rule: String,
    pub device: String,
    pub metric: String,
    pub alert_id: String,
    pub since_ms: i64,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub last_notified_ms: i64,
}

impl OpenSnapshot {
    fn new(kind: &str, rule: &str, device: &str, metric: &str, a: &OpenAlert) -> Self {
        let finite = |x: f64| x.is_finite().then_some(x);
        Self {
            kind: kind.into(),
            rule: rule.into(),
            device: device.into(),
            metric: metric.into(),
            alert_id: a.alert_id.clone(),
            since_ms: a.since_ms,
            value: finite(a.value),
            threshold: finite(a.threshold),
            last_notified_ms: a.last_notified_ms,
        }
    }

    fn alert(&self) -> OpenAlert {
        OpenAlert {
            alert_id: self.alert_id.clone(),
            since_ms: self.since_ms,
            value: self.value.unwrap_or(f64::NAN),
            threshold: self.threshold.unwrap_or(f64::NAN),
            last_notified_ms: self.last_notified_ms,
        }
    }
}

fn event(
    rule: &Arc<RuleConfig>,
    device: &str,
    kind: AlertKind,
    state: AlertState,
    open: &OpenAlert,
    value: f64,
    at_ms: i64,
) -> AlertEvent {
    let (rule_id, severity) = match kind {
        AlertKind::DailyAllowance => (
            format!("{}:daily", rule.id),
            Severity::Critical.max(rule.severity),
        ),
        _ => (rule.id.clone(), rule.severity),
    };
    AlertEvent {
        alert_id: open.alert_id.clone(),
        kind,
        rule_id,
        rule: Some(rule.clone()),
        device: device.to_string(),
        metric: rule.metric.clone(),
        severity,
        state,
        value,
        threshold: open.threshold,
        since_ms: open.since_ms,
        at_ms,
        evidence: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
