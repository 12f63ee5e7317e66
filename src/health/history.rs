//! The last 24 hours of per-minute means of each device's metrics, in memory, for the status
//! page's charts and the gate board's AQI; and a small ring of recent alert transitions, for
//! the charts' markers. InfluxDB keeps the real record: this is what the page can draw with no
//! database at all, and it starts empty at every start of the gateway.
//!
//! Fed from [`super::Health::record_latest`] with the values the rules and the AQI may use (the
//! same test as the pipeline's: finite, no instrument flag, not below the sensor's range), at
//! their acquisition time. Each series sums the readings of its current minute (f64) and, when
//! a reading of a later minute comes, stores that minute's mean (f32: plenty for a chart) and
//! count in a ring of 1440 minutes; a late reading of an earlier minute still in the ring is
//! folded into its minute. Switch states (unit `0/1`) are not kept.
//!
//! **Memory.** One series is 1440 × (4 bytes of mean + 2 of count) = 8,640 bytes on the heap,
//! allocated once when the series is created, plus its 48-byte `Series`, its metric name
//! (a few bytes) and 2 bytes of index: about 8.7 KB. At most [`MAX_SERIES`] (64) device-metric
//! pairs are kept, the first ones to report: 64 × 8.7 KB ≈ 557 KB, and about 60 bytes per
//! device for the index. Values of pairs past the cap are counted ([`History::refused_values`]),
//! not kept. The alert ring holds at most [`MAX_ALERTS`] (128) transitions of 136 bytes plus
//! their four strings (about 25 KB). The unit test `memory_per_series` checks the sizes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::model::Readings;

/// Minutes a series holds: 24 hours.
pub const MINUTES: usize = 1440;
/// Device-metric pairs kept; the first ones to report get them.
pub const MAX_SERIES: usize = 64;
/// Alert transitions kept.
pub const MAX_ALERTS: usize = 128;
const MINUTE_MS: i64 = 60_000;
/// Readings stamped further ahead of the gateway's clock than this are not kept: one from a
/// clock a day fast would empty every minute of the ring. (The pipeline refuses them past
/// `[site].max_future`, 5 minutes by default; `record_latest` sees them before it does.)
const FUTURE_MS: i64 = 5 * MINUTE_MS;
/// The newest minute of a series that has none yet.
const NONE: i64 = i64::MIN;

/// The stored minutes of one series, slot `m mod 1440` for minute `m` (minutes since the Unix
/// epoch). A count of 0 is a minute without readings.
struct Minutes {
    mean: [f32; MINUTES],
    count: [u16; MINUTES],
}

/// One device-metric pair.
struct Series {
    metric: Box<str>,
    /// The newest minute with readings; it is being summed in `sum` / `n` and its slot in
    /// [`Minutes`] is not used until a later minute comes.
    newest: i64,
    sum: f64,
    n: u32,
    minutes: Box<Minutes>,
}

fn slot(m: i64) -> usize {
    m.rem_euclid(MINUTES as i64) as usize
}

impl Series {
    fn new(metric: &str) -> Series {
        Series {
            metric: metric.into(),
            newest: NONE,
            sum: 0.0,
            n: 0,
            minutes: Box::new(Minutes {
                mean: [0.0; MINUTES],
                count: [0; MINUTES],
            }),
        }
    }

    fn push(&mut self, m: i64, v: f64) {
        if self.newest == NONE || m == self.newest {
            self.newest = m;
            self.sum += v;
            self.n = self.n.saturating_add(1);
        } else if m > self.newest {
            // The minute summed so far is done: store its mean.
            let s = slot(self.newest);
            self.minutes.mean[s] = (self.sum / f64::from(self.n)) as f32;
            self.minutes.count[s] = u16::try_from(self.n).unwrap_or(u16::MAX);
            // The minutes in between had no readings (all of the ring after a day's gap), nor
            // has the new one yet: its slot held the minute a day before.
            let from = (self.newest + 1).max(m - MINUTES as i64 + 1);
            for x in from..=m {
                self.minutes.count[slot(x)] = 0;
            }
            self.newest = m;
            self.sum = v;
            self.n = 1;
        } else if m > self.newest - MINUTES as i64 {
            // Late, but still in the ring: folded into its minute.
            let s = slot(m);
            let n = self.minutes.count[s];
            if n < u16::MAX {
                let mean = if n == 0 {
                    v
                } else {
                    (f64::from(self.minutes.mean[s]) * f64::from(n) + v) / f64::from(n + 1)
                };
                self.minutes.mean[s] = mean as f32;
                self.minutes.count[s] = n + 1;
            }
        }
        // Older than the ring: dropped.
    }

    /// (mean, count) of minute `m`, if it had readings and is in the ring.
    fn minute(&self, m: i64) -> Option<(f64, u32)> {
        if self.newest == NONE || m > self.newest || m <= self.newest - MINUTES as i64 {
            return None;
        }
        if m == self.newest {
            return Some((self.sum / f64::from(self.n), self.n));
        }
        let s = slot(m);
        let n = self.minutes.count[s];
        (n > 0).then(|| (f64::from(self.minutes.mean[s]), u32::from(n)))
    }
}

/// One minute's mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinuteMean {
    /// The minute's start (ms since the Unix epoch).
    pub start_ms: i64,
    pub mean: f64,
    /// Readings in it.
    pub n: u32,
}

/// The sample-weighted mean of a series' last 60 minutes (ending at its newest minute).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourMean {
    /// The start of the newest minute in it.
    pub newest_ms: i64,
    pub mean: f64,
    /// Minutes of the 60 that had readings.
    pub minutes: usize,
}

/// An alert as the charts mark it: when it opened and, once it is seen closed, when.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertMark {
    pub alert_id: String,
    pub rule: String,
    pub device: String,
    pub metric: String,
    pub severity: &'static str,
    pub opened_ms: i64,
    /// When it closed (the transition's time; see [`History::observe_open_alerts`] for
    /// alerts no transition announced).
    pub closed_ms: Option<i64>,
}

#[derive(Default)]
struct Inner {
    series: Vec<Series>,
    /// Device id → indices into `series`.
    by_device: HashMap<Arc<str>, Vec<u16>>,
    alerts: VecDeque<AlertMark>,
}

impl Inner {
    /// Keeps `mark`; when the ring is full the oldest closed one goes (the oldest open one if
    /// none is closed).
    fn push_alert(&mut self, mark: AlertMark) {
        if self.alerts.len() >= MAX_ALERTS {
            let oldest = self
                .alerts
                .iter()
                .position(|a| a.closed_ms.is_some())
                .unwrap_or(0);
            self.alerts.remove(oldest);
        }
        self.alerts.push_back(mark);
    }

    fn find(&self, device: &str, metric: &str) -> Option<usize> {
        self.by_device
            .get(device)?
            .iter()
            .map(|&i| usize::from(i))
            .find(|&i| &*self.series[i].metric == metric)
    }
}

/// See the module's documentation.
#[derive(Default)]
pub struct History {
    inner: Mutex<Inner>,
    /// Values not kept because their device-metric pair came past [`MAX_SERIES`].
    pub refused_values: AtomicU64,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("series", &self.len())
            .field("refused_values", &self.refused_values.load(Relaxed))
            .finish()
    }
}

/// Whether the rules and the AQI may use slot `i`'s value (as the pipeline decides).
fn usable(r: &Readings, i: usize, slot: &crate::model::MetricSlot, v: f64) -> bool {
    v.is_finite() && r.flag(i).is_none() && crate::pipeline::validate::flag(slot, v).judged()
}

fn is_switch(metric: &str) -> bool {
    crate::config::metrics::unit_of(metric) == "0/1"
}

impl History {
    /// Adds a device's readings, arrived at `now_ms` (site time).
    pub fn record(&self, r: &Readings, now_ms: i64) {
        if r.time_ms > now_ms.saturating_add(FUTURE_MS) {
            return;
        }
        let m = r.time_ms.div_euclid(MINUTE_MS);
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let mut refused = 0;
        for (i, (slot, v)) in r.device.slots.iter().zip(&r.values).enumerate() {
            let Some(v) = *v else { continue };
            if !usable(r, i, slot, v) {
                continue;
            }
            let at = match inner.find(&r.device.id, &slot.metric) {
                Some(at) => at,
                None if is_switch(&slot.metric) => continue,
                None if inner.series.len() >= MAX_SERIES => {
                    refused += 1;
                    continue;
                }
                None => {
                    let at = inner.series.len();
                    inner.series.push(Series::new(&slot.metric));
                    // At most MAX_SERIES (64), so it fits.
                    let idx = u16::try_from(at).unwrap_or(u16::MAX);
                    inner
                        .by_device
                        .entry(r.device.id.clone())
                        .or_default()
                        .push(idx);
                    at
                }
            };
            inner.series[at].push(m, v);
        }
        if refused > 0 {
            self.refused_values.fetch_add(refused, Relaxed);
        }
    }

    /// Device-metric pairs kept.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.series.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pairs kept: (device, metric), by device then in the order they came.
    pub fn pairs(&self) -> Vec<(Arc<str>, String)> {
        let Ok(inner) = self.inner.lock() else {
            return Vec::new();
        };
        let mut out: Vec<(Arc<str>, String)> = inner
            .by_device
            .iter()
            .flat_map(|(d, idx)| {
                idx.iter()
                    .map(|&i| (d.clone(), inner.series[usize::from(i)].metric.to_string()))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The minutes with readings of one pair among the 24 hours up to `now_ms`, oldest first.
    /// `None`: the pair is not kept.
    pub fn series(&self, device: &str, metric: &str, now_ms: i64) -> Option<Vec<MinuteMean>> {
        let inner = self.inner.lock().ok()?;
        let s = &inner.series[inner.find(device, metric)?];
        let now_m = now_ms.div_euclid(MINUTE_MS);
        let mut out = Vec::new();
        if s.newest == NONE {
            return Some(out);
        }
        // A reading a few minutes ahead of the clock is shown too.
        let to = s.newest;
        let from = (to - MINUTES as i64 + 1).max(now_m - MINUTES as i64 + 1);
        for m in from..=to {
            if let Some((mean, n)) = s.minute(m) {
                out.push(MinuteMean {
                    start_ms: m * MINUTE_MS,
                    mean,
                    n,
                });
            }
        }
        Some(out)
    }

    /// The sample-weighted mean of a pair's last 60 minutes, ending at its newest minute (as
    /// the AQI's rolling hour in [`crate::pipeline::aqi`]).
    pub fn hour_mean(&self, device: &str, metric: &str) -> Option<HourMean> {
        let inner = self.inner.lock().ok()?;
        let s = &inner.series[inner.find(device, metric)?];
        if s.newest == NONE {
            return None;
        }
        let (mut sum, mut n, mut minutes) = (0.0, 0u64, 0);
        for m in s.newest - 59..=s.newest {
            if let Some((mean, k)) = s.minute(m) {
                sum += mean * f64::from(k);
                n += u64::from(k);
                minutes += 1;
            }
        }
        (n > 0).then(|| HourMean {
            newest_ms: s.newest * MINUTE_MS,
            mean: sum / n as f64,
            minutes,
        })
    }

    /// Tells the ring which alerts are open at `now_ms` (at each chart request): alerts open
    /// from before a restart, which no transition announced, are added; one the ring holds
    /// open that is no longer is marked closed now (a transition normally did it already, at
    /// its exact time). Only alerts of a kept pair are kept; when the ring is full the oldest
    /// closed one goes (the oldest open one if none is closed).
    pub fn observe_open_alerts(&self, open: &[AlertMark], now_ms: i64) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        for known in inner.alerts.iter_mut() {
            if known.closed_ms.is_none() && !open.iter().any(|o| o.alert_id == known.alert_id) {
                known.closed_ms = Some(now_ms);
            }
        }
        for o in open {
            let seen = inner
                .alerts
                .iter()
                .any(|a| a.closed_ms.is_none() && a.alert_id == o.alert_id);
            if seen || inner.find(&o.device, &o.metric).is_none() {
                continue;
            }
            let mut mark = o.clone();
            mark.closed_ms = None;
            inner.push_alert(mark);
        }
    }

    /// An alert opened (`closed_ms` None) or closed, as it happens: the site's edge tells
    /// every transition. Only alerts of a kept pair are kept.
    pub fn alert_transition(&self, mark: AlertMark) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(closed) = mark.closed_ms {
            if let Some(known) = inner
                .alerts
                .iter_mut()
                .find(|a| a.alert_id == mark.alert_id && a.closed_ms.is_none())
            {
                known.closed_ms = Some(closed);
            }
            return;
        }
        let seen = inner.alerts.iter().any(|a| a.alert_id == mark.alert_id);
        if seen || inner.find(&mark.device, &mark.metric).is_none() {
            return;
        }
        inner.push_alert(mark);
    }

    /// The transitions kept of one pair that were open at some time since `since_ms`.
    pub fn alerts(&self, device: &str, metric: &str, since_ms: i64) -> Vec<AlertMark> {
        let Ok(inner) = self.inner.lock() else {
            return Vec::new();
        };
        inner
            .alerts
            .iter()
            .filter(|a| a.device == device && a.metric == metric)
            .filter(|a| a.closed_ms.is_none_or(|c| c >= since_ms))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeviceMeta;

    const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % MINUTE_MS;

    fn device(id: &str, metrics: &[&str]) -> Arc<DeviceMeta> {
        let m: Vec<(&str, &str)> = metrics.iter().map(|m| (*m, "air")).collect();
        Arc::new(DeviceMeta::new(id, "s", &[], &m))
    }

    fn reading(d: &Arc<DeviceMeta>, t: i64, values: &[Option<f64>]) -> Readings {
        Readings {
            device: d.clone(),
            time_ms: t,
            values: values.to_vec(),
            flags: Vec::new(),
        }
    }

    fn means(h: &History, d: &str, m: &str, now: i64) -> Vec<(i64, f64, u32)> {
        h.series(d, m, now)
            .expect("kept")
            .iter()
            .map(|p| ((p.start_ms - T0) / MINUTE_MS, p.mean, p.n))
            .collect()
    }

    #[test]
    fn a_minute_is_the_mean_of_its_readings_and_rolls_when_the_next_one_comes() {
        let h = History::default();
        let d = device("d1", &["pm10", "noise"]);
        for (s, v) in [(0, 10.0), (20, 20.0), (40, 60.0)] {
            h.record(&reading(&d, T0 + s * 1000, &[Some(v), None]), T0);
        }
        // The current minute, summed so far.
        assert_eq!(means(&h, "d1", "pm10", T0), [(0, 30.0, 3)]);
        assert_eq!(h.series("d1", "noise", T0), None, "no noise came");
        h.record(
            &reading(&d, T0 + MINUTE_MS, &[Some(50.0), Some(65.5)]),
            T0 + MINUTE_MS,
        );
        assert_eq!(
            means(&h, "d1", "pm10", T0 + MINUTE_MS),
            [(0, 30.0, 3), (1, 50.0, 1)]
        );
        assert_eq!(means(&h, "d1", "noise", T0 + MINUTE_MS), [(1, 65.5, 1)]);
        // A late reading of minute 0 is folded into it.
        h.record(
            &reading(&d, T0 + 50_000, &[Some(70.0), None]),
            T0 + MINUTE_MS,
        );
        assert_eq!(
            means(&h, "d1", "pm10", T0 + MINUTE_MS),
            [(0, 40.0, 4), (1, 50.0, 1)]
        );
    }

    #[test]
    fn gaps_stay_empty_and_a_day_later_the_ring_has_moved_on() {
        let h = History::default();
        let d = device("d1", &["pm25"]);
        let rec = |t: i64, v: f64| h.record(&reading(&d, t, &[Some(v)]), t);
        rec(T0, 1.0);
        rec(T0 + 10 * MINUTE_MS, 2.0);
        rec(T0 + 11 * MINUTE_MS, 3.0);
        let now = T0 + 11 * MINUTE_MS;
        assert_eq!(
            means(&h, "d1", "pm25", now),
            [(0, 1.0, 1), (10, 2.0, 1), (11, 3.0, 1)]
        );
        // Minute 1441 takes minute 1's slot, and minute 0 is out of the 24 hours.
        let later = T0 + 1441 * MINUTE_MS;
        rec(later, 4.0);
        assert_eq!(
            means(&h, "d1", "pm25", later),
            [(10, 2.0, 1), (11, 3.0, 1), (1441, 4.0, 1)]
        );
        // Too old for the ring: dropped. Far ahead of the clock: not kept.
        h.record(&reading(&d, T0 + MINUTE_MS, &[Some(9.0)]), later);
        h.record(&reading(&d, later + 3_600_000, &[Some(9.0)]), later);
        assert_eq!(means(&h, "d1", "pm25", later).len(), 3);
        // Two days of silence: nothing of the old day is shown, whatever the ring holds.
        let silent = later + 2 * 1440 * MINUTE_MS;
        assert_eq!(means(&h, "d1", "pm25", silent), []);
        rec(silent, 5.0);
        assert_eq!(means(&h, "d1", "pm25", silent), [(1441 + 2880, 5.0, 1)]);
    }

    #[test]
    fn values_the_rules_would_not_use_are_not_kept() {
        let h = History::default();
        let d = device("d1", &["pm10", "fog_cannon_on"]);
        let mut r = reading(&d, T0, &[Some(-5.0), Some(1.0)]);
        h.record(&r, T0);
        // Below the sensor's range: flagged "D" by the pipeline, not judged. A switch: not a
        // series at all.
        assert_eq!(h.series("d1", "pm10", T0), None);
        assert_eq!(h.series("d1", "fog_cannon_on", T0), None);
        r.values = vec![Some(80.0), None];
        r.flags = vec![Some('M'), None];
        h.record(&r, T0);
        assert_eq!(
            h.series("d1", "pm10", T0),
            None,
            "flagged by the instrument"
        );
        r.flags = vec![Some('N'), None];
        h.record(&r, T0);
        assert_eq!(means(&h, "d1", "pm10", T0), [(0, 80.0, 1)]);
    }

    #[test]
    fn the_cap_keeps_the_first_pairs_and_counts_what_it_refused() {
        let h = History::default();
        let metrics = ["pm25", "pm10", "tsp", "noise"];
        let values = [Some(35.0), Some(80.0), Some(136.0), Some(65.2)];
        for i in 0..(MAX_SERIES / metrics.len() + 2) {
            let d = device(&format!("d{i:02}"), &metrics);
            h.record(&reading(&d, T0, &values), T0);
        }
        assert_eq!(h.len(), MAX_SERIES);
        assert_eq!(
            h.refused_values.load(Relaxed),
            8,
            "two devices of four metrics"
        );
        assert!(h.series("d00", "pm25", T0).is_some());
        assert!(h.series("d15", "noise", T0).is_some());
        assert_eq!(h.series("d16", "pm25", T0), None);
        // A kept pair goes on being kept.
        let d = device("d00", &metrics);
        h.record(&reading(&d, T0 + MINUTE_MS, &values), T0);
        assert_eq!(means(&h, "d00", "tsp", T0 + MINUTE_MS).len(), 2);
        assert_eq!(h.refused_values.load(Relaxed), 8);
        assert_eq!(h.pairs().len(), MAX_SERIES);
    }

    #[test]
    fn the_hour_mean_weighs_minutes_by_their_readings() {
        let h = History::default();
        let d = device("d1", &["pm25"]);
        // 70 minutes: the first 10 (value 1000) are outside the hour.
        let rec = |t: i64, v: f64| h.record(&reading(&d, t, &[Some(v)]), t);
        for m in 0..70 {
            rec(T0 + m * MINUTE_MS, if m < 10 { 1000.0 } else { 30.0 });
        }
        // Minute 69 gets three more readings of 70: (60 × 30 + 3 × 70) / 63.
        for s in 1..4 {
            rec(T0 + 69 * MINUTE_MS + s * 1000, 70.0);
        }
        let hm = h.hour_mean("d1", "pm25").expect("an hour");
        assert_eq!(hm.minutes, 60);
        assert_eq!(hm.newest_ms, T0 + 69 * MINUTE_MS);
        assert!(
            (hm.mean - (60.0 * 30.0 + 3.0 * 70.0) / 63.0).abs() < 1e-4,
            "{hm:?}"
        );
    }

    fn mark(id: &str, metric: &str, opened: i64) -> AlertMark {
        AlertMark {
            alert_id: id.into(),
            rule: "r".into(),
            device: "d1".into(),
            metric: metric.into(),
            severity: "warning",
            opened_ms: opened,
            closed_ms: None,
        }
    }

    #[test]
    fn alert_transitions_are_marked_open_then_closed_and_bounded() {
        let h = History::default();
        let d = device("d1", &["pm10"]);
        h.record(&reading(&d, T0, &[Some(1.0)]), T0);
        let a = mark("a1", "pm10", T0);
        h.observe_open_alerts(&[a.clone(), mark("x", "noise", T0)], T0 + 1000);
        assert_eq!(h.alerts("d1", "pm10", T0), std::slice::from_ref(&a));
        assert_eq!(h.alerts("d1", "noise", T0), [], "not a kept pair");
        h.observe_open_alerts(std::slice::from_ref(&a), T0 + 2000);
        h.observe_open_alerts(&[], T0 + 3000);
        let closed = h.alerts("d1", "pm10", T0);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].closed_ms, Some(T0 + 3000));
        assert_eq!(h.alerts("d1", "pm10", T0 + 4000), [], "closed before");
        // Full: the closed ones go first, then the oldest open ones.
        let many: Vec<AlertMark> = (0..MAX_ALERTS + 5)
            .map(|i| mark(&format!("b{i}"), "pm10", T0 + i as i64))
            .collect();
        h.observe_open_alerts(&many, T0 + 5000);
        let kept = h.alerts("d1", "pm10", 0);
        assert_eq!(kept.len(), MAX_ALERTS);
        assert!(kept.iter().all(|k| k.closed_ms.is_none()));
        assert_eq!(kept[0].alert_id, "b5");
    }

    #[test]
    fn a_transition_closes_at_its_exact_time_and_an_open_one_is_kept_once() {
        let h = History::default();
        let d = device("d1", &["pm10"]);
        h.record(&reading(&d, T0, &[Some(1.0)]), T0);
        let a = mark("a1", "pm10", T0 + 500);
        h.alert_transition(a.clone());
        h.alert_transition(a.clone());
        h.observe_open_alerts(std::slice::from_ref(&a), T0 + 1000);
        assert_eq!(h.alerts("d1", "pm10", T0), std::slice::from_ref(&a));
        h.alert_transition(AlertMark {
            closed_ms: Some(T0 + 1234),
            ..a.clone()
        });
        let closed = h.alerts("d1", "pm10", T0);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].closed_ms, Some(T0 + 1234), "the close's own time");
        h.alert_transition(mark("x", "noise", T0));
        assert_eq!(h.alerts("d1", "noise", T0), [], "not a kept pair");
    }

    /// The figures of the module's documentation.
    #[test]
    fn memory_per_series() {
        assert_eq!(std::mem::size_of::<Minutes>(), MINUTES * (4 + 2));
        assert_eq!(std::mem::size_of::<Minutes>(), 8_640);
        assert_eq!(std::mem::size_of::<Series>(), 48);
        assert_eq!(std::mem::size_of::<AlertMark>(), 136);
        // A series with a 16-byte metric name and its index entry.
        let per_series = 8_640 + 48 + 16 + 2;
        assert!(per_series <= 8_710);
        assert!(
            MAX_SERIES * per_series <= 557_500,
            "{}",
            MAX_SERIES * per_series
        );
    }
}
