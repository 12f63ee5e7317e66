//! Period values of a device's readings: the minute, hour and day values an HJ 212 uplink
//! sends (CN=2051 / 2061 / 2031) and the gateway writes to `air_minute` / `air_hour` /
//! `air_day`. Sans-IO: readings and times in, closed periods out.
//!
//! - **Sample-weighted**: a period's mean is the sum of its valid readings over their count,
//!   at every level. An hour is not the mean of its minute means (those weigh a minute of 3
//!   readings like a minute of 60; hj212-field.md §4.1 [S]), so each level keeps its own sums.
//! - **Local time**: periods are aligned to the site's clock (a 10-minute period starts at
//!   :00, :10, …; a day at local midnight), and a period is known by its start. A day is
//!   taken as 24 hours: in a zone with daylight saving the day of a change closes an hour
//!   early or late (China has none).
//! - **Valid readings** are those flagged `N` (or not flagged) and `T` (above the measuring
//!   range: the value is at least the range's top, domain.md §3.7 [P]). Readings with another
//!   flag (M maintenance, C calibration, D fault, …) are counted but not averaged.
//! - **The period's flag** follows the 75 % rule of HJ 212's flue-gas aggregation (domain.md
//!   §3.7 [P]; nothing is specified for ambient data [U], so the rule is a policy with this
//!   default): `N` when the valid readings are at least `min_coverage` of the readings expected
//!   (from the device's interval, when it has one) and of those received; otherwise the
//!   commonest other flag of its readings when flagged readings are what is missing, and `B`
//!   (no data from the instrument) when readings are missing.
//! - **Nothing invented**: a period without a reading gives nothing; one whose readings are
//!   all flagged gives its flag and no value.
//! - **Late readings** (for a period already closed) are counted and left out: a value sent
//!   to a platform or written is never changed afterwards.

use std::collections::HashMap;
use std::sync::Arc;

use super::rules::clock::LocalClock;
use crate::model::device_key;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

/// The length of a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// A divisor of 60 minutes (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60).
    Minutes(u8),
    Hour,
    Day,
}

impl Level {
    /// A minute level of `m` minutes, when `m` divides an hour.
    pub fn minutes(m: u32) -> Option<Level> {
        (m > 0 && 60 % m == 0).then_some(Level::Minutes(m as u8))
    }

    /// The level's length in milliseconds (a day: 24 hours).
    pub fn len_ms(self) -> i64 {
        match self {
            Level::Minutes(m) => i64::from(m) * MINUTE_MS,
            Level::Hour => 60 * MINUTE_MS,
            Level::Day => DAY_MS,
        }
    }
}

/// How a period's flag is decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// The share of expected readings that must be valid for the flag `N` (default 0.75).
    pub min_coverage: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { min_coverage: 0.75 }
    }
}

/// One closed period of one device's metric.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodValue {
    pub device: Arc<str>,
    pub metric: Arc<str>,
    pub level: Level,
    /// The period's start (ms since the epoch; the local clock's boundary).
    pub start_ms: i64,
    /// Mean, minimum and maximum of the valid readings (`None`: none was valid).
    pub avg: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Readings averaged, and readings received (valid or not).
    pub valid: u32,
    pub total: u32,
    /// Readings the device's interval makes due in the period (`None`: no interval known).
    pub expected: Option<u32>,
    /// `N`, or why the period is not a normal value (see the module's comment).
    pub flag: char,
}

/// The running sums of one open period.
#[derive(Debug, Clone)]
struct Acc {
    /// The period's number on the local clock (local ms / its length).
    number: i64,
    start_ms: i64,
    sum: f64,
    min: f64,
    max: f64,
    valid: u32,
    total: u32,
    /// Readings left out, by flag.
    flagged: Vec<(char, u32)>,
}

impl Acc {
    fn new(number: i64, start_ms: i64) -> Acc {
        Acc {
            number,
            start_ms,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            valid: 0,
            total: 0,
            flagged: Vec::new(),
        }
    }

    fn add(&mut self, v: f64, flag: Option<char>) {
        match flag {
            None | Some('N') | Some('T') => {
                if !v.is_finite() {
                    return; // not a reading (the pipeline passes none such)
                }
                self.total = self.total.saturating_add(1);
                self.sum += v;
                self.min = self.min.min(v);
                self.max = self.max.max(v);
                self.valid = self.valid.saturating_add(1);
            }
            Some(f) => {
                self.total = self.total.saturating_add(1);
                match self.flagged.iter_mut().find(|(c, _)| *c == f) {
                    Some((_, n)) => *n = n.saturating_add(1),
                    None => self.flagged.push((f, 1)),
                }
            }
        }
    }
}

/// One level of one device's metric: its open period and the last it closed.
#[derive(Debug, Clone)]
struct Slot {
    level: Level,
    /// The highest period number closed (`i64::MIN`: none): a reading for it or an earlier
    /// one is late.
    closed_through: i64,
    open: Option<Acc>,
}

/// A metric's name and its slots, one per level. A device's metrics (a handful) are searched
/// linearly; the device's table entry also holds its shared id.
type MetricSlots = (Arc<str>, Vec<Slot>);

/// Period values of every device and metric, at the configured levels.
pub struct Periods {
    levels: Vec<Level>,
    policy: Policy,
    clock: LocalClock,
    devices: HashMap<Arc<str>, (Arc<str>, Vec<MetricSlots>)>,
    intervals: HashMap<Arc<str>, i64>,
    late: u64,
}

impl Periods {
    pub fn new(tz: jiff::tz::TimeZone, levels: &[Level], policy: Policy) -> Periods {
        let mut uniq: Vec<Level> = Vec::new();
        for l in levels {
            if !uniq.contains(l) {
                uniq.push(*l);
            }
        }
        Periods {
            levels: uniq,
            policy,
            clock: LocalClock::new(tz),
            devices: HashMap::new(),
            intervals: HashMap::new(),
            late: 0,
        }
    }

    /// The spacing of a device's readings (its poll interval): the readings a period expects.
    pub fn set_interval(&mut self, device: &str, interval_ms: i64) {
        if interval_ms > 0 {
            self.intervals.insert(device_key(device), interval_ms);
        }
    }

    /// Readings left out because their period was already closed (counted once per level).
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Feeds one reading (`flag`: the instrument's data flag; `None`: it sends none). Periods
    /// it closes (it belongs to a later one) are appended to `out`.
    pub fn reading(
        &mut self,
        device: &str,
        metric: &str,
        t: i64,
        v: f64,
        flag: Option<char>,
        out: &mut Vec<PeriodValue>,
    ) {
        let local = t.saturating_add(self.clock.offset_ms(t));
        let interval = self.intervals.get(device).copied();
        let (device, metrics) = match self.devices.get_mut(device) {
            Some(d) => d,
            None => {
                let id = device_key(device);
                self.devices.entry(id.clone()).or_insert((id, Vec::new()))
            }
        };
        let i = match metrics.iter().position(|(m, _)| &**m == metric) {
            Some(i) => i,
            None => {
                let slots = self
                    .levels
                    .iter()
                    .map(|&level| Slot {
                        level,
                        closed_through: i64::MIN,
                        open: None,
                    })
                    .collect();
                metrics.push((Arc::from(metric), slots));
                metrics.len() - 1
            }
        };
        let (name, slots) = &mut metrics[i];
        for slot in slots.iter_mut() {
            let len = slot.level.len_ms();
            let number = local.div_euclid(len);
            if number <= slot.closed_through {
                self.late += 1;
                continue;
            }
            match &slot.open {
                Some(acc) if acc.number > number => {
                    // Older than the open period: its own period was closed when this opened.
                    self.late += 1;
                    continue;
                }
                Some(acc) if acc.number < number => {
                    let done = slot.open.take().map(|a| (a.number, a));
                    if let Some((n, acc)) = done {
                        slot.closed_through = n;
                        out.push(close(device, name, slot.level, acc, interval, self.policy));
                    }
                }
                _ => {}
            }
            slot.open
                .get_or_insert_with(|| Acc::new(number, t - local.rem_euclid(len)))
                .add(v, flag);
        }
    }

    /// Closes every period that ended at or before `now`; they are appended to `out`, in no
    /// particular order across devices. A caller that allows readings to arrive late passes
    /// `now` less that allowance.
    pub fn tick(&mut self, now: i64, out: &mut Vec<PeriodValue>) {
        for (device, metrics) in self.devices.values_mut() {
            let interval = self.intervals.get(device).copied();
            for (name, slots) in metrics.iter_mut() {
                for slot in slots.iter_mut() {
                    let due = slot
                        .open
                        .as_ref()
                        .is_some_and(|a| a.start_ms + slot.level.len_ms() <= now);
                    if let Some(acc) = slot.open.take_if(|_| due) {
                        slot.closed_through = acc.number;
                        out.push(close(device, name, slot.level, acc, interval, self.policy));
                    }
                }
            }
        }
    }
}

/// What [`Periods`] holds, for keeping across a restart: every open period (its sums), what
/// each level closed last, and closed values the caller still holds (`held`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PeriodsSnapshot {
    slots: Vec<SlotSnap>,
    held: Vec<HeldValue>,
    late: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct SlotSnap {
    device: String,
    metric: String,
    level: String,
    closed_through: i64,
    open: Option<AccSnap>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct AccSnap {
    number: i64,
    start_ms: i64,
    sum: f64,
    /// `None` while no reading was valid (the sums' infinities have no JSON form).
    min: Option<f64>,
    max: Option<f64>,
    valid: u32,
    total: u32,
    flagged: Vec<(char, u32)>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct HeldValue {
    device: String,
    metric: String,
    level: String,
    start_ms: i64,
    avg: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    valid: u32,
    total: u32,
    expected: Option<u32>,
    flag: char,
}

impl Level {
    /// The level's name in a snapshot.
    fn code(self) -> String {
        match self {
            Level::Minutes(m) => format!("{m}m"),
            Level::Hour => "hour".into(),
            Level::Day => "day".into(),
        }
    }

    fn from_code(s: &str) -> Option<Level> {
        match s {
            "hour" => Some(Level::Hour),
            "day" => Some(Level::Day),
            m => m.strip_suffix('m')?.parse().ok().and_then(Level::minutes),
        }
    }
}

impl Periods {
    /// Everything open now, and the closed values `held` by the caller.
    pub fn snapshot(&self, held: &[PeriodValue]) -> PeriodsSnapshot {
        let mut slots = Vec::new();
        for (device, metrics) in self.devices.values() {
            for (metric, ss) in metrics {
                for slot in ss {
                    slots.push(SlotSnap {
                        device: device.to_string(),
                        metric: metric.to_string(),
                        level: slot.level.code(),
                        closed_through: slot.closed_through,
                        open: slot.open.as_ref().map(|a| AccSnap {
                            number: a.number,
                            start_ms: a.start_ms,
                            sum: a.sum,
                            min: (a.valid > 0).then_some(a.min),
                            max: (a.valid > 0).then_some(a.max),
                            valid: a.valid,
                            total: a.total,
                            flagged: a.flagged.clone(),
                        }),
                    });
                }
            }
        }
        let held = held
            .iter()
            .map(|v| HeldValue {
                device: v.device.to_string(),
                metric: v.metric.to_string(),
                level: v.level.code(),
                start_ms: v.start_ms,
                avg: v.avg,
                min: v.min,
                max: v.max,
                valid: v.valid,
                total: v.total,
                expected: v.expected,
                flag: v.flag,
            })
            .collect();
        PeriodsSnapshot {
            slots,
            held,
            late: self.late,
        }
    }

    /// Takes up what a snapshot held; returns its held values. Slots of a level no longer
    /// configured are left out (their periods are not sent).
    pub fn restore(&mut self, snap: PeriodsSnapshot) -> Vec<PeriodValue> {
        self.late = snap.late;
        for s in snap.slots {
            let Some(level) = Level::from_code(&s.level).filter(|l| self.levels.contains(l)) else {
                continue;
            };
            let id = device_key(&s.device);
            let (_, metrics) = self
                .devices
                .entry(id.clone())
                .or_insert_with(|| (id, Vec::new()));
            let i = match metrics.iter().position(|(m, _)| **m == *s.metric) {
                Some(i) => i,
                None => {
                    metrics.push((Arc::from(s.metric.as_str()), Vec::new()));
                    metrics.len() - 1
                }
            };
            let slots = &mut metrics[i].1;
            slots.retain(|x| x.level != level);
            slots.push(Slot {
                level,
                closed_through: s.closed_through,
                open: s.open.map(|a| Acc {
                    number: a.number,
                    start_ms: a.start_ms,
                    sum: a.sum,
                    min: a.min.unwrap_or(f64::INFINITY),
                    max: a.max.unwrap_or(f64::NEG_INFINITY),
                    valid: a.valid,
                    total: a.total,
                    flagged: a.flagged,
                }),
            });
        }
        // A metric restored without every configured level gets the missing ones fresh.
        for (_, metrics) in self.devices.values_mut() {
            for (_, slots) in metrics.iter_mut() {
                for l in &self.levels {
                    if !slots.iter().any(|s| s.level == *l) {
                        slots.push(Slot {
                            level: *l,
                            closed_through: i64::MIN,
                            open: None,
                        });
                    }
                }
            }
        }
        snap.held
            .into_iter()
            .filter_map(|h| {
                Some(PeriodValue {
                    device: device_key(&h.device),
                    metric: Arc::from(h.metric.as_str()),
                    level: Level::from_code(&h.level)?,
                    start_ms: h.start_ms,
                    avg: h.avg,
                    min: h.min,
                    max: h.max,
                    valid: h.valid,
                    total: h.total,
                    expected: h.expected,
                    flag: h.flag,
                })
            })
            .collect()
    }
}

fn close(
    device: &Arc<str>,
    metric: &Arc<str>,
    level: Level,
    acc: Acc,
    interval: Option<i64>,
    policy: Policy,
) -> PeriodValue {
    let expected = interval.map(|i| (level.len_ms() / i).clamp(1, i64::from(u32::MAX)) as u32);
    // More readings than the interval makes due (a device polled faster): those received.
    let due = expected.unwrap_or(acc.total).max(acc.total);
    let enough = f64::from(acc.valid) >= policy.min_coverage * f64::from(due);
    let flagged: u32 = acc.flagged.iter().map(|(_, n)| n).sum();
    let missing = due - acc.total;
    let flag = if enough {
        'N'
    } else if flagged >= missing {
        // The commonest flag; on a tie, the first seen.
        let mut best: Option<(char, u32)> = None;
        for &(c, n) in &acc.flagged {
            if best.is_none_or(|(_, b)| n > b) {
                best = Some((c, n));
            }
        }
        best.map_or('B', |(c, _)| c)
    } else {
        'B'
    };
    let any = acc.valid > 0;
    PeriodValue {
        device: device.clone(),
        metric: metric.clone(),
        level,
        start_ms: acc.start_ms,
        avg: any.then(|| acc.sum / f64::from(acc.valid)),
        min: any.then_some(acc.min),
        max: any.then_some(acc.max),
        valid: acc.valid,
        total: acc.total,
        expected,
        flag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: i64 = 1000;
    const MIN: i64 = 60 * SEC;

    fn shanghai() -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get("Asia/Shanghai").expect("tz")
    }

    /// Milliseconds of a local Shanghai time.
    fn at(s: &str) -> i64 {
        let civil: jiff::civil::DateTime = s.parse().expect("civil time");
        shanghai()
            .to_timestamp(civil)
            .expect("in range")
            .as_millisecond()
    }

    fn periods(levels: &[Level]) -> Periods {
        Periods::new(shanghai(), levels, Policy::default())
    }

    #[test]
    fn an_hour_is_weighted_by_its_readings_not_by_its_minutes() {
        let mut p = periods(&[Level::Minutes(1), Level::Hour]);
        let mut out = Vec::new();
        let t0 = at("2026-12-01T10:00:00");
        for s in [0, 20, 40] {
            p.reading("d", "pm10", t0 + s * SEC, 10.0, None, &mut out);
        }
        p.reading("d", "pm10", t0 + MIN, 50.0, Some('N'), &mut out);
        assert_eq!(out.len(), 1, "minute 10:00 closed by a reading of 10:01");
        assert_eq!(out[0].avg, Some(10.0));
        p.tick(t0 + 60 * MIN, &mut out);
        let hour = out.iter().find(|v| v.level == Level::Hour).expect("hour");
        // (3 × 10 + 50) / 4 = 20, where the mean of the minute means would be 30.
        assert_eq!(hour.avg, Some(20.0));
        assert_eq!((hour.min, hour.max), (Some(10.0), Some(50.0)));
        assert_eq!((hour.valid, hour.total), (4, 4));
        assert_eq!(hour.start_ms, t0);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn periods_start_on_the_local_clock() {
        let mut p = periods(&[Level::Minutes(10), Level::Day]);
        let mut out = Vec::new();
        p.reading("d", "pm25", at("2026-12-01T10:07:30"), 30.0, None, &mut out);
        p.reading("d", "pm25", at("2026-12-01T23:59:59"), 40.0, None, &mut out);
        p.reading("d", "pm25", at("2026-12-02T00:00:01"), 50.0, None, &mut out);
        let starts: Vec<(Level, i64)> = out.iter().map(|v| (v.level, v.start_ms)).collect();
        assert_eq!(
            starts,
            [
                (Level::Minutes(10), at("2026-12-01T10:00:00")),
                (Level::Minutes(10), at("2026-12-01T23:50:00")),
                // Local midnight, 16:00 UTC the day before.
                (Level::Day, at("2026-12-01T00:00:00")),
            ]
        );
        assert_eq!(at("2026-12-01T00:00:00") % (24 * 60 * MIN), 16 * 60 * MIN);
        assert_eq!(out[2].avg, Some(35.0));
    }

    #[test]
    fn the_flag_says_what_a_short_period_lacks() {
        let mut p = periods(&[Level::Minutes(10)]);
        for d in ["full", "short", "maint", "all-flagged"] {
            p.set_interval(d, MIN);
        }
        let t0 = at("2026-12-01T10:00:00");
        let mut out = Vec::new();
        for i in 0..10 {
            let t = t0 + i * MIN;
            // 8 of 10 valid: 80 % ≥ 75 %, normal (the other two were never sent).
            if i < 8 {
                p.reading("full", "pm10", t, 60.0, None, &mut out);
            }
            // 7 of 10, 3 never sent: no data from the instrument.
            if i < 7 {
                p.reading("short", "pm10", t, 60.0, None, &mut out);
            }
            // 5 valid, 4 in maintenance, 1 missing: maintenance.
            match i {
                0..5 => p.reading("maint", "pm10", t, 60.0, None, &mut out),
                5..9 => p.reading("maint", "pm10", t, 999.0, Some('M'), &mut out),
                _ => {}
            }
            p.reading("all-flagged", "pm10", t, 1.0, Some('C'), &mut out);
        }
        p.tick(t0 + 10 * MIN, &mut out);
        let by = |d: &str| out.iter().find(|v| &*v.device == d).expect(d).clone();
        assert_eq!((by("full").flag, by("full").expected), ('N', Some(10)));
        assert_eq!(by("short").flag, 'B');
        let m = by("maint");
        assert_eq!((m.flag, m.valid, m.total), ('M', 5, 9));
        assert_eq!(m.max, Some(60.0), "a flagged value is never averaged");
        let c = by("all-flagged");
        assert_eq!((c.flag, c.avg, c.min, c.max), ('C', None, None, None));
    }

    #[test]
    fn nothing_is_invented_and_nothing_is_sent_twice() {
        let mut p = periods(&[Level::Minutes(5)]);
        let mut out = Vec::new();
        let t0 = at("2026-12-01T10:00:00");
        p.tick(t0 + 60 * MIN, &mut out);
        assert!(out.is_empty(), "no reading, no period");
        p.reading("d", "noise", t0 + MIN, 60.0, None, &mut out);
        // Nothing for 10:05-10:20: the next reading is at 10:21.
        p.reading("d", "noise", t0 + 21 * MIN, 62.0, None, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].start_ms, t0);
        // A late reading of the closed 10:00 period is counted, not added or sent again.
        p.reading("d", "noise", t0 + 2 * MIN, 99.0, None, &mut out);
        assert_eq!(p.late(), 1);
        p.tick(t0 + 25 * MIN, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!((out[1].start_ms, out[1].avg), (t0 + 20 * MIN, Some(62.0)));
        // The period closed by the tick is closed for good.
        p.reading("d", "noise", t0 + 24 * MIN, 70.0, None, &mut out);
        p.tick(t0 + 60 * MIN, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(p.late(), 2);
    }

    #[test]
    fn a_period_still_running_is_not_closed() {
        let mut p = periods(&[Level::Hour]);
        let mut out = Vec::new();
        let t0 = at("2026-12-01T10:00:00");
        p.reading("d", "tsp", t0 + 30 * MIN, 100.0, None, &mut out);
        p.tick(t0 + 60 * MIN - 1, &mut out);
        assert!(out.is_empty());
        p.tick(t0 + 60 * MIN, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn minute_levels_divide_the_hour() {
        assert_eq!(Level::minutes(10), Some(Level::Minutes(10)));
        assert_eq!(Level::minutes(60), Some(Level::Minutes(60)));
        for m in [0, 7, 25, 90] {
            assert_eq!(Level::minutes(m), None, "{m}");
        }
    }

    proptest! {
        /// A restart anywhere in a stream of readings (the snapshot through JSON, as the uplink
        /// keeps it) changes nothing: the same periods close with the same values, and the
        /// values held at the snapshot come back.
        #[test]
        fn a_snapshot_restored_gives_the_same_periods(
            steps in proptest::collection::vec((0i64..200_000, 0.0f64..500.0, 0u8..10), 1..200),
            cut in 0usize..200,
        ) {
            let levels = [Level::Minutes(5), Level::Hour];
            let flag_of = |f: u8| match f { 0 => Some('M'), 1 => Some('T'), _ => None };
            let mut whole = periods(&levels);
            whole.set_interval("d", 20_000);
            let mut expect = Vec::new();
            let mut t = at("2026-12-01T09:00:00");
            let mut times = Vec::new();
            for (dt, v, f) in &steps {
                t += dt;
                times.push(t);
                whole.reading("d", "pm10", t, *v, flag_of(*f), &mut expect);
            }
            whole.tick(t + 2 * 3_600_000, &mut expect);

            let cut = cut.min(steps.len());
            let mut first = periods(&levels);
            first.set_interval("d", 20_000);
            let mut got = Vec::new();
            for (i, (_, v, f)) in steps[..cut].iter().enumerate() {
                first.reading("d", "pm10", times[i], *v, flag_of(*f), &mut got);
            }
            let json = serde_json::to_string(&first.snapshot(&got)).expect("json");
            let mut second = periods(&levels);
            second.set_interval("d", 20_000);
            let mut got = second.restore(serde_json::from_str(&json).expect("back"));
            for (i, (_, v, f)) in steps.iter().enumerate().skip(cut) {
                second.reading("d", "pm10", times[i], *v, flag_of(*f), &mut got);
            }
            second.tick(t + 2 * 3_600_000, &mut got);
            let key = |x: &PeriodValue| (x.start_ms, x.level == Level::Hour);
            expect.sort_by_key(key);
            got.sort_by_key(key);
            prop_assert_eq!(got, expect);
        }

        /// Readings in time order, some flagged: every reading lands in exactly one period of
        /// each level, and each period's values equal a from-scratch computation over the
        /// valid readings of its span.
        #[test]
        fn periods_equal_a_naive_reference(
            steps in proptest::collection::vec((0i64..200_000, 0.0f64..500.0, 0u8..10), 1..300),
        ) {
            let levels = [Level::Minutes(5), Level::Hour];
            let mut p = periods(&levels);
            let mut out = Vec::new();
            let mut t = at("2026-12-01T09:00:00");
            let mut all = Vec::new();
            for (dt, v, f) in steps {
                t += dt;
                let flag = match f { 0 => Some('M'), 1 => Some('T'), 2 => Some('N'), _ => None };
                p.reading("d", "pm10", t, v, flag, &mut out);
                all.push((t, v, flag));
            }
            p.tick(t + 2 * 3_600_000, &mut out);
            prop_assert_eq!(p.late(), 0);
            for level in levels {
                let mine: Vec<&PeriodValue> = out.iter().filter(|x| x.level == level).collect();
                let total: u32 = mine.iter().map(|x| x.total).sum();
                prop_assert_eq!(total as usize, all.len());
                for x in mine {
                    let end = x.start_ms + level.len_ms();
                    let valid: Vec<f64> = all
                        .iter()
                        .filter(|(t, _, f)| *t >= x.start_ms && *t < end && *f != Some('M'))
                        .map(|(_, v, _)| *v)
                        .collect();
                    prop_assert_eq!(x.valid as usize, valid.len());
                    if valid.is_empty() {
                        prop_assert_eq!(x.avg, None);
                        prop_assert_eq!(x.flag, 'M');
                    } else {
                        let mean = valid.iter().sum::<f64>() / valid.len() as f64;
                        let avg = x.avg.unwrap_or(f64::NAN);
                        prop_assert!((avg - mean).abs() <= 1e-9 * mean.abs().max(1.0));
                        prop_assert_eq!(x.min, valid.iter().copied().reduce(f64::min));
                        prop_assert_eq!(x.max, valid.iter().copied().reduce(f64::max));
                    }
                }
            }
        }
    }
}
