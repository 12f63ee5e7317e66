//! The six 100% (六个100%), judged from events and equipment states. Sans-IO: readings,
//! vehicles, detections and time in; percentages, vehicle verdicts and violations out.
//!
//! | item | from | percentage of the local day |
//! |---|---|---|
//! | `wash` | gate exits + wash pump/flow | exits washed at least `wash_min` within `wash_lookback` |
//! | `sealed_transport` | gate exits of muck trucks | those leaving covered |
//! | `wet_work` | earthwork/demolition activity + spray states read back | active time with a spray running |
//! | `cover` | AI detections (uncovered pile, bare soil) | time without an open detection |
//! | `enclosure` | AI detections (hoarding gap) | time without an open detection |
//! | `hardening` | an inspector's declaration | the declared share |

use std::collections::{HashMap, VecDeque};

use super::rules::clock::LocalClock;
use super::rules::{AlertEvent, AlertKind, AlertState};
pub use crate::config::linkage::ComplianceParams;
use crate::config::rules::Severity;
pub use crate::model::{Detection, Vehicle};

pub const ITEMS: [&str; 6] = [
    "enclosure",
    "cover",
    "wash",
    "hardening",
    "wet_work",
    "sealed_transport",
];

/// What the engine made of a vehicle (for the `vehicle` point).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VehicleVerdict {
    /// Only for exits.
    pub washed: Option<bool>,
    pub wash_seconds: Option<f64>,
}

/// One item's figures for the day so far.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ItemFigures {
    pub percent: f64,
    pub checked: f64,
    pub violations: u32,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Day {
    exits: u32,
    unwashed: u32,
    muck_exits: u32,
    uncovered: u32,
    active_ms: i64,
    wet_ms: i64,
    wet_violations: u32,
    observed_ms: i64,
    cover_open_ms: i64,
    enclosure_open_ms: i64,
    cover_violations: u32,
    enclosure_violations: u32,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct OpenDetection {
    since: i64,
    reported: bool,
    snapshot: Option<String>,
    device: String,
}

pub struct Compliance {
    p: ComplianceParams,
    clock: LocalClock,
    day_no: i64,
    day: Day,
    last_tick: Option<i64>,
    // The wash station.
    pump_on: bool,
    flow: f64,
    running_since: Option<i64>,
    runs: VecDeque<(i64, i64)>,
    // Sprays and activity flags, per (device, metric): a few of each on a site, so a list
    // searched without building a key (no allocation per reading).
    sprays: Vec<(String, String, bool)>,
    activity: Vec<(String, String, bool)>,
    gap_since: Option<i64>,
    gap_reported: bool,
    detections: HashMap<(String, String), OpenDetection>,
    paved_reading: Option<(f64, i64)>,
    last_points_minute: i64,
    /// A vehicle, detection or declaration changed the figures since they were last written.
    changed: bool,
}

fn violation(
    item: &str,
    device: &str,
    at: i64,
    severity: Severity,
    evidence: Vec<(String, String)>,
) -> AlertEvent {
    AlertEvent {
        alert_id: format!("compliance:{item}/{device}/{at}"),
        kind: AlertKind::Violation,
        rule_id: format!("six100-{item}"),
        rule: None,
        device: device.to_string(),
        metric: item.to_string(),
        severity,
        state: AlertState::Event,
        value: f64::NAN,
        threshold: f64::NAN,
        since_ms: at,
        at_ms: at,
        evidence,
    }
}

/// Sets a (device, metric) flag, adding it the first time it is seen.
fn set_flag(flags: &mut Vec<(String, String, bool)>, device: &str, metric: &str, on: bool) {
    match flags.iter_mut().find(|f| f.0 == device && f.1 == metric) {
        Some(f) => f.2 = on,
        None => flags.push((device.to_string(), metric.to_string(), on)),
    }
}

fn ev(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}

impl Compliance {
    pub fn new(p: ComplianceParams, tz: jiff::tz::TimeZone) -> Self {
        Self {
            p,
            clock: LocalClock::new(tz),
            day_no: i64::MIN,
            day: Day::default(),
            last_tick: None,
            pump_on: false,
            flow: 0.0,
            running_since: None,
            runs: VecDeque::new(),
            sprays: Vec::new(),
            activity: Vec::new(),
            gap_since: None,
            gap_reported: false,
            detections: HashMap::new(),
            paved_reading: None,
            last_points_minute: i64::MIN,
            changed: false,
        }
    }

    /// Whether a metric is one the engine uses (so the pipeline can skip the others cheaply).
    pub fn wants(metric: &str) -> bool {
        matches!(
            metric,
            "wash_pump_on"
                | "wash_flow"
                | "spray_on"
                | "fog_cannon_on"
                | "fence_spray_on"
                | "earthwork_active"
                | "demolition_active"
                | "paved_percent"
        )
    }

    fn wash_running(&self) -> bool {
        self.pump_on || self.flow > self.p.wash_flow_min
    }

    /// An equipment state, an activity flag or a declaration.
    pub fn reading(&mut self, device: &str, metric: &str, t: i64, v: f64) {
        match metric {
            "wash_pump_on" | "wash_flow" => {
                let before = self.wash_running();
                if metric == "wash_pump_on" {
                    self.pump_on = v >= 0.5;
                } else {
                    self.flow = v;
                }
                match (before, self.wash_running()) {
                    (false, true) => self.running_since = Some(t),
                    (true, false) => {
                        if let Some(s) = self.running_since.take() {
                            self.runs.push_back((s, t));
                        }
                    }
                    _ => {}
                }
                let keep_from = t - self.p.wash_lookback.as_millis() as i64;
                while self.runs.front().is_some_and(|&(_, e)| e < keep_from) {
                    self.runs.pop_front();
                }
            }
            "spray_on" | "fog_cannon_on" | "fence_spray_on" => {
                set_flag(&mut self.sprays, device, metric, v >= 0.5);
            }
            "earthwork_active" | "demolition_active" => {
                set_flag(&mut self.activity, device, metric, v >= 0.5);
            }
            "paved_percent" => {
                self.changed |= self.paved_reading.map(|(p, _)| p) != Some(v.clamp(0.0, 100.0));
                self.paved_reading = Some((v.clamp(0.0, 100.0), t));
            }
            _ => {}
        }
    }

    /// Seconds the wash station ran within the lookback before `t`.
    fn wash_seconds(&self, t: i64) -> f64 {
        let from = t - self.p.wash_lookback.as_millis() as i64;
        let overlap = |s: i64, e: i64| (e.min(t) - s.max(from)).max(0);
        let mut ms: i64 = self.runs.iter().map(|&(s, e)| overlap(s, e)).sum();
        if let Some(s) = self.running_since {
            ms += overlap(s, t);
        }
        ms as f64 / 1000.0
    }

    /// A vehicle at a gate; an exit is judged for washing and, for a muck truck, for its cover.
    pub fn vehicle(&mut self, v: &Vehicle, out: &mut Vec<AlertEvent>) -> VehicleVerdict {
        // Counted into the day the engine is in: only `tick` turns the day (a late message from
        // yesterday must not reset today's counts, nor lose yesterday's final figures).
        if self.day_no == i64::MIN {
            self.day_no = self.clock.local(v.time_ms).day;
        }
        if v.direction.as_deref() != Some("out") {
            return VehicleVerdict {
                washed: None,
                wash_seconds: None,
            };
        }
        let seconds = self.wash_seconds(v.time_ms);
        let washed = seconds >= self.p.wash_min.as_secs_f64();
        self.day.exits += 1;
        self.changed = true;
        let mut evidence = vec![ev("plate", &v.plate)];
        if let Some(g) = &v.gate {
            evidence.push(ev("gate", g));
        }
        if let Some(s) = &v.snapshot {
            evidence.push(ev("snapshot", s));
        }
        if !washed {
            self.day.unwashed += 1;
            let mut e = evidence.clone();
            e.push(ev("wash_seconds", format!("{seconds:.0}")));
            e.push(ev("wash_min", self.p.wash_min.as_secs()));
            out.push(violation("wash", &v.device, v.time_ms, self.p.severity, e));
        }
        if v.muck_truck == Some(true)
            && let Some(covered) = v.covered
        {
            self.day.muck_exits += 1;
            if !covered {
                self.day.uncovered += 1;
                out.push(violation(
                    "sealed_transport",
                    &v.device,
                    v.time_ms,
                    self.p.severity,
                    evidence,
                ));
            }
        }
        VehicleVerdict {
            washed: Some(washed),
            wash_seconds: Some(seconds),
        }
    }

    pub fn detection(&mut self, d: &Detection, out: &mut Vec<AlertEvent>) {
        let key = (d.kind.clone(), d.id.clone());
        if d.open {
            self.detections.entry(key).or_insert(OpenDetection {
                since: d.time_ms,
                reported: false,
                snapshot: d.snapshot.clone(),
                device: d.device.clone(),
            });
        } else {
            self.detections.remove(&key);
        }
        let _ = out;
    }

    fn active(&mut self, t: i64) -> bool {
        if self.activity.iter().any(|a| a.2) {
            return true;
        }
        let local = self.clock.local(t);
        self.p
            .activity
            .iter()
            .any(|s| s.contains(local.weekday, local.minute))
    }

    fn roll_day(&mut self, t: i64, points: &mut Vec<(i64, [ItemFigures; 6], bool)>) {
        let day = self.clock.local(t).day;
        if self.day_no == i64::MIN {
            self.day_no = day;
        } else if day > self.day_no {
            // The day's final figures, stamped at its last millisecond.
            let end = t - 1;
            points.push((end, self.figures(), true));
            self.day = Day::default();
            self.day_no = day;
        }
    }

    /// Time passes: active and spraying time, open detections; violations for a long gap or a
    /// long-open detection. Returns the figures to write: every minute, and the day's final ones
    /// at local midnight (`true`).
    pub fn tick(
        &mut self,
        now: i64,
        out: &mut Vec<AlertEvent>,
    ) -> Vec<(i64, [ItemFigures; 6], bool)> {
        let mut points = Vec::new();
        let Some(last) = self.last_tick.replace(now) else {
            self.roll_day(now, &mut points);
            return points;
        };
        if now <= last {
            return points;
        }
        // A long pause (the process was stopped) is not counted as observed time.
        let dt = (now - last).min(60_000);
        self.roll_day(now, &mut points);
        self.day.observed_ms += dt;
        if self.active(now) {
            self.day.active_ms += dt;
            if self.sprays.iter().any(|s| s.2) {
                self.day.wet_ms += dt;
                self.gap_since = None;
                self.gap_reported = false;
            } else {
                let since = *self.gap_since.get_or_insert(now - dt);
                if !self.gap_reported && now - since >= self.p.wet_gap.as_millis() as i64 {
                    self.gap_reported = true;
                    self.changed = true;
                    self.day.wet_violations += 1;
                    let minutes = (now - since) / 60_000;
                    out.push(violation(
                        "wet_work",
                        "site",
                        now,
                        self.p.severity,
                        vec![ev("minutes", minutes)],
                    ));
                }
            }
        } else {
            self.gap_since = None;
            self.gap_reported = false;
        }
        let (mut cover, mut enclosure) = (false, false);
        let max_open = self.p.max_open.as_millis() as i64;
        for ((kind, _), d) in self.detections.iter_mut() {
            let item = if kind == "hoarding_gap" {
                "enclosure"
            } else {
                "cover"
            };
            if item == "enclosure" {
                enclosure = true;
            } else {
                cover = true;
            }
            if !d.reported && now - d.since >= max_open {
                d.reported = true;
                self.changed = true;
                if item == "enclosure" {
                    self.day.enclosure_violations += 1;
                } else {
                    self.day.cover_violations += 1;
                }
                let what = match kind.as_str() {
                    "uncovered_pile" => "物料堆",
                    "bare_soil" => "裸土",
                    _ => "围挡",
                };
                let mut e = vec![
                    ev("minutes", (now - d.since) / 60_000),
                    ev("detection", what),
                ];
                if let Some(s) = &d.snapshot {
                    e.push(ev("snapshot", s));
                }
                out.push(violation(item, &d.device, now, self.p.severity, e));
            }
        }
        if cover {
            self.day.cover_open_ms += dt;
        }
        if enclosure {
            self.day.enclosure_open_ms += dt;
        }
        // Every minute, and at once when a vehicle or a violation changed them.
        let minute = now.div_euclid(60_000);
        if minute != self.last_points_minute || self.changed {
            self.last_points_minute = minute;
            self.changed = false;
            points.push((now, self.figures(), false));
        }
        points
    }

    /// The day's figures so far, in the order of [`ITEMS`].
    pub fn figures(&self) -> [ItemFigures; 6] {
        let d = &self.day;
        let pct = |ok: f64, all: f64| if all > 0.0 { 100.0 * ok / all } else { 100.0 };
        let share_clear =
            |open: i64| pct((d.observed_ms - open).max(0) as f64, d.observed_ms as f64);
        let paved = match (self.paved_reading, self.p.paved) {
            (Some((v, _)), _) => Some(v),
            (None, Some((v, _))) => Some(v),
            _ => None,
        };
        [
            ItemFigures {
                percent: share_clear(d.enclosure_open_ms),
                checked: (d.observed_ms / 60_000) as f64,
                violations: d.enclosure_violations,
            },
            ItemFigures {
                percent: share_clear(d.cover_open_ms),
                checked: (d.observed_ms / 60_000) as f64,
                violations: d.cover_violations,
            },
            ItemFigures {
                percent: pct(f64::from(d.exits - d.unwashed), f64::from(d.exits)),
                checked: f64::from(d.exits),
                violations: d.unwashed,
            },
            ItemFigures {
                percent: paved.unwrap_or(f64::NAN),
                checked: if paved.is_some() { 1.0 } else { 0.0 },
                violations: 0,
            },
            ItemFigures {
                percent: pct(d.wet_ms as f64, d.active_ms as f64),
                checked: (d.active_ms / 60_000) as f64,
                violations: d.wet_violations,
            },
            ItemFigures {
                percent: pct(
                    f64::from(d.muck_exits - d.uncovered),
                    f64::from(d.muck_exits),
                ),
                checked: f64::from(d.muck_exits),
                violations: d.uncovered,
            },
        ]
    }

    /// When the paving share was declared (config or an inspector's message).
    pub fn paved_declared(&self) -> Option<String> {
        match (self.paved_reading, self.p.paved) {
            (Some((_, t)), _) => jiff::Timestamp::from_millisecond(t)
                .ok()
                .map(|ts| ts.to_string()),
            (None, Some((_, d))) => Some(d.to_string()),
            _ => None,
        }
    }
}

/// What survives a restart: the day's counts so far, open detections, the paving declaration.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    day_no: i64,
    day: Day,
    detections: Vec<(String, String, OpenDetection)>,
    paved: Option<(f64, i64)>,
}

impl Compliance {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            day_no: self.day_no,
            day: self.day.clone(),
            detections: self
                .detections
                .iter()
                .map(|((k, i), d)| (k.clone(), i.clone(), d.clone()))
                .collect(),
            paved: self.paved_reading,
        }
    }

    /// Resumes from a snapshot taken before a restart: the day's counts if it is still the
    /// same local day, open detections and the paving declaration in any case.
    pub fn restore(&mut self, s: Snapshot, now_ms: i64) {
        if self.clock.local(now_ms).day == s.day_no {
            self.day_no = s.day_no;
            self.day = s.day;
        }
        for (k, i, d) in s.detections {
            self.detections.insert((k, i), d);
        }
        self.paved_reading = s.paved;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn at(s: &str) -> i64 {
        let dt: jiff::civil::DateTime = s.parse().unwrap();
        jiff::tz::TimeZone::get("Asia/Shanghai")
            .unwrap()
            .to_timestamp(dt)
            .unwrap()
            .as_millisecond()
    }

    fn exit(t: i64, plate: &str, muck: Option<bool>, covered: Option<bool>) -> Vehicle {
        Vehicle {
            device: "cam-01".into(),
            time_ms: t,
            plate: plate.into(),
            direction: Some("out".into()),
            gate: Some("south".into()),
            muck_truck: muck,
            covered,
            snapshot: Some(format!("http://cam/{plate}.jpg")),
        }
    }

    /// A scripted site day with exact figures for every item.
    #[test]
    fn a_scripted_day() {
        let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
        let params = ComplianceParams {
            activity: vec![],
            paved: Some((95.0, jiff::civil::date(2026, 11, 20))),
            ..ComplianceParams::default()
        };
        let mut c = Compliance::new(params, tz);
        let mut out = Vec::new();
        let t0 = at("2026-11-26T08:00:00");
        let mut t = t0;
        let step = |c: &mut Compliance, t: &mut i64, until: i64, out: &mut Vec<AlertEvent>| {
            while *t < until {
                *t += 1000;
                c.tick(*t, out);
            }
        };
        c.tick(t, &mut out);

        // 08:00–09:00 earthwork, spray on for the first 30 min, then off: a 10-min gap at 08:40
        // is one violation; wet share 30/60.
        c.reading("site", "earthwork_active", t, 1.0);
        c.reading("fog-01", "fog_cannon_on", t, 1.0);
        step(&mut c, &mut t, t0 + 30 * MIN, &mut out);
        c.reading("fog-01", "fog_cannon_on", t, 0.0);
        step(&mut c, &mut t, t0 + 60 * MIN, &mut out);
        c.reading("site", "earthwork_active", t, 0.0);
        let wet: Vec<_> = out.iter().filter(|e| e.metric == "wet_work").collect();
        assert_eq!(wet.len(), 1);
        assert_eq!(wet[0].at_ms, t0 + 40 * MIN);

        // 09:10 wash 60 s, 09:12 truck A out (washed); 09:30 truck B out with no wash
        // (unwashed; muck truck uncovered too); 09:40 wash 30 s, 09:41 truck C out (30 < 45).
        let w = t0 + 70 * MIN;
        c.reading("wash-01", "wash_pump_on", w, 1.0);
        c.reading("wash-01", "wash_pump_on", w + 60_000, 0.0);
        let va = c.vehicle(
            &exit(t0 + 72 * MIN, "川A11111", Some(true), Some(true)),
            &mut out,
        );
        assert_eq!(
            va,
            VehicleVerdict {
                washed: Some(true),
                wash_seconds: Some(60.0)
            }
        );
        let vb = c.vehicle(
            &exit(t0 + 90 * MIN, "川A22222", Some(true), Some(false)),
            &mut out,
        );
        assert_eq!(vb.washed, Some(false));
        c.reading("wash-01", "wash_flow", t0 + 100 * MIN, 80.0);
        c.reading("wash-01", "wash_flow", t0 + 100 * MIN + 30_000, 0.0);
        let vc = c.vehicle(&exit(t0 + 101 * MIN, "川A33333", None, None), &mut out);
        assert_eq!(
            vc,
            VehicleVerdict {
                washed: Some(false),
                wash_seconds: Some(30.0)
            }
        );
        // An entry is not judged.
        let mut entry = exit(t0 + 102 * MIN, "川A44444", Some(true), Some(false));
        entry.direction = Some("in".into());
        assert_eq!(c.vehicle(&entry, &mut out).washed, None);
        let unwashed: Vec<_> = out.iter().filter(|e| e.metric == "wash").collect();
        assert_eq!(unwashed.len(), 2);
        assert!(
            unwashed[0]
                .evidence
                .contains(&("plate".into(), "川A22222".into()))
        );
        assert!(
            unwashed[0]
                .evidence
                .contains(&("snapshot".into(), "http://cam/川A22222.jpg".into()))
        );
        let sealed: Vec<_> = out
            .iter()
            .filter(|e| e.metric == "sealed_transport")
            .collect();
        assert_eq!(sealed.len(), 1);
        assert!(
            sealed[0]
                .evidence
                .contains(&("plate".into(), "川A22222".into()))
        );

        // 10:00 a bare-soil detection for 40 min (over max_open 30: one violation at 10:30),
        // a hoarding gap 10:00–10:15.
        let d0 = t0 + 120 * MIN;
        step(&mut c, &mut t, d0, &mut out);
        let det = |kind: &str, open: bool, time: i64| Detection {
            device: "ai-cam".into(),
            time_ms: time,
            kind: kind.into(),
            id: kind.into(),
            open,
            snapshot: Some("http://ai/1.jpg".into()),
        };
        c.detection(&det("bare_soil", true, d0), &mut out);
        c.detection(&det("hoarding_gap", true, d0), &mut out);
        step(&mut c, &mut t, d0 + 15 * MIN, &mut out);
        c.detection(&det("hoarding_gap", false, t), &mut out);
        step(&mut c, &mut t, d0 + 40 * MIN, &mut out);
        c.detection(&det("bare_soil", false, t), &mut out);
        step(&mut c, &mut t, t0 + 4 * 60 * MIN, &mut out);
        let cover: Vec<_> = out.iter().filter(|e| e.metric == "cover").collect();
        assert_eq!((cover.len(), cover[0].at_ms), (1, d0 + 30 * MIN));

        // Figures at 12:00 (4 h observed).
        let f = c.figures();
        let get = |item: &str| f[ITEMS.iter().position(|i| *i == item).unwrap()];
        assert_eq!(
            get("wet_work"),
            ItemFigures {
                percent: 50.0,
                checked: 60.0,
                violations: 1
            }
        );
        assert_eq!(get("wash").checked, 3.0);
        assert!((get("wash").percent - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(get("wash").violations, 2);
        assert_eq!(
            get("sealed_transport"),
            ItemFigures {
                percent: 50.0,
                checked: 2.0,
                violations: 1
            }
        );
        // 40 of 240 minutes with bare soil open; 15 with the hoarding gap.
        assert!(
            (get("cover").percent - 100.0 * 200.0 / 240.0).abs() < 1e-9,
            "{:?}",
            get("cover")
        );
        assert_eq!(get("cover").violations, 1);
        assert!((get("enclosure").percent - 100.0 * 225.0 / 240.0).abs() < 1e-9);
        assert_eq!(
            get("hardening"),
            ItemFigures {
                percent: 95.0,
                checked: 1.0,
                violations: 0
            }
        );

        // Local midnight: the day's final figures, then a new day.
        let mut points = Vec::new();
        step(&mut c, &mut t, at("2026-11-26T23:59:59"), &mut out);
        t += 2000;
        points.extend(c.tick(t, &mut out));
        let fin: Vec<_> = points.iter().filter(|p| p.2).collect();
        assert_eq!(fin.len(), 1);
        assert_eq!(fin[0].1[2].violations, 2, "the final figures are the day's");
        assert_eq!(c.figures()[2].checked, 0.0, "a new day starts empty");
        // A camera's late message from yesterday counts today, and resets nothing.
        c.vehicle(&exit(t + 1000, "川A55555", None, None), &mut out);
        c.vehicle(
            &exit(at("2026-11-26T23:50:00"), "川A66666", None, None),
            &mut out,
        );
        assert_eq!(c.figures()[2].checked, 2.0);
        let later = c.tick(t + 60_000, &mut out);
        assert!(later.iter().all(|p| !p.2), "no second day's end");
    }

    #[test]
    fn a_spray_commanded_on_that_reads_back_off_counts_as_off() {
        let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
        let mut c = Compliance::new(ComplianceParams::default(), tz);
        let mut out = Vec::new();
        let t0 = at("2026-11-26T08:00:00");
        c.tick(t0, &mut out);
        c.reading("site", "earthwork_active", t0, 1.0);
        // The gateway commanded the fog cannon on, but the relay reads back 0.
        c.reading("relay-01", "fog_cannon_on", t0, 0.0);
        let mut t = t0;
        while t < t0 + 20 * MIN {
            t += 1000;
            c.tick(t, &mut out);
        }
        let f = c.figures();
        assert_eq!(f[4].percent, 0.0);
        assert_eq!(f[4].violations, 1);
    }
}
