//! HJ 633 air quality index from rolling 1-hour means of PM2.5 and PM10 (the real-time AQI
//! that city platforms show), with the breakpoint table in force on the reading's date
//! (`data/aqi.toml`). Sans-IO: readings in, `aqi` points out. A mean needs readings in at
//! least 45 of its 60 minutes ([U]: GB 3095's 1-hour validity, reference/domain.md §2.1).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use super::rules::clock::{LocalClock, day_number};
use crate::config::reader::{Cx, TableReader, parse_document};
use crate::config::source::{Diagnostics, SourceFile};
use crate::model::{FieldKey, FieldValue, Point, SeriesKey, device_key};

const AQI_TOML: &str = include_str!("../../data/aqi.toml");
/// At most one `aqi` point per device this often.
const EMIT_EVERY_MS: i64 = 60_000;

#[derive(Debug, Clone)]
pub struct Table {
    pub id: String,
    pub from_day: Option<i64>,
    pub until_day: Option<i64>,
    pub pm25: Vec<f64>,
    pub pm10: Vec<f64>,
}

#[derive(Debug, Clone)]
pub struct Tables {
    pub iaqi: Vec<f64>,
    pub tables: Vec<Table>,
    /// (upper AQI, zh, en)
    pub categories: Vec<(f64, String, String)>,
}

impl Tables {
    /// The built-in tables; the file is part of the binary and checked by a test.
    pub fn builtin() -> &'static Tables {
        static T: OnceLock<Tables> = OnceLock::new();
        T.get_or_init(|| {
            Tables::parse(AQI_TOML).expect("data/aqi.toml is valid (checked by tests)")
        })
    }

    pub fn parse(text: &str) -> Result<Tables, Diagnostics> {
        let file = SourceFile::new("data/aqi.toml (built in)", None, text.to_string());
        let mut diags = Diagnostics::default();
        let mut cx = Cx {
            file: &file,
            diags: &mut diags,
        };
        let mut out = Tables {
            iaqi: Vec::new(),
            tables: Vec::new(),
            categories: Vec::new(),
        };
        if let Some(doc) = parse_document(&mut cx, &file.text) {
            let mut root = TableReader::root(&doc);
            out.iaqi = root
                .req::<Vec<f64>>(&mut cx, "iaqi")
                .map(|v| v.value)
                .unwrap_or_default();
            for mut t in root.tables(&mut cx, "table") {
                let id = t.req::<String>(&mut cx, "id");
                let _ = (
                    t.opt::<String>(&mut cx, "title"),
                    t.opt::<String>(&mut cx, "confidence"),
                );
                let date = |cx: &mut Cx<'_>, t: &mut TableReader<'_, '_>, k: &'static str| {
                    t.opt::<String>(cx, k)
                        .and_then(|d| d.value.parse::<jiff::civil::Date>().ok())
                        .map(day_number)
                };
                let from_day = date(&mut cx, &mut t, "effective_from");
                let until_day = date(&mut cx, &mut t, "effective_until");
                let pm25 = t.req::<Vec<f64>>(&mut cx, "pm25");
                let pm10 = t.req::<Vec<f64>>(&mut cx, "pm10");
                t.finish(&mut cx);
                if let (Some(id), Some(pm25), Some(pm10)) = (id, pm25, pm10) {
                    out.tables.push(Table {
                        id: id.value,
                        from_day,
                        until_day,
                        pm25: pm25.value,
                        pm10: pm10.value,
                    });
                }
            }
            for mut c in root.tables(&mut cx, "category") {
                let max = c.req::<f64>(&mut cx, "max");
                let zh = c.req::<String>(&mut cx, "zh");
                let en = c.req::<String>(&mut cx, "en");
                c.finish(&mut cx);
                if let (Some(m), Some(z), Some(e)) = (max, zh, en) {
                    out.categories.push((m.value, z.value, e.value));
                }
            }
            root.finish(&mut cx);
        }
        let n = out.iaqi.len();
        if n < 2
            || out
                .tables
                .iter()
                .any(|t| t.pm25.len() != n || t.pm10.len() != n)
        {
            diags.push(file.diagnostic(
                &(0..0),
                "",
                "every breakpoint list must be as long as `iaqi`",
            ));
        }
        if diags.is_empty() {
            Ok(out)
        } else {
            Err(diags)
        }
    }

    pub fn by_id(&self, id: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.id == id)
    }

    /// The table in force on a local day.
    pub fn for_day(&self, day: i64) -> Option<&Table> {
        self.tables
            .iter()
            .find(|t| t.from_day.is_none_or(|f| day >= f) && t.until_day.is_none_or(|u| day <= u))
    }

    /// IAQI of a concentration (rounded up, HJ 633 §6.2); 500 at and above the top breakpoint.
    pub fn iaqi(&self, bp: &[f64], c: f64) -> u32 {
        if !c.is_finite() || c <= 0.0 {
            return 0;
        }
        for i in 1..bp.len() {
            if c <= bp[i] {
                let (lo, hi) = (bp[i - 1], bp[i]);
                let (ilo, ihi) = (self.iaqi[i - 1], self.iaqi[i]);
                let v = (ihi - ilo) / (hi - lo) * (c - lo) + ilo;
                // Guard against 106.0000000001 rounding up to 107.
                return (v - 1e-9).ceil().max(0.0) as u32;
            }
        }
        self.iaqi.last().copied().unwrap_or(500.0) as u32
    }

    pub fn category(&self, aqi: u32) -> (&str, &str) {
        self.categories
            .iter()
            .find(|(max, _, _)| f64::from(aqi) <= *max)
            .or(self.categories.last())
            .map_or(("", ""), |(_, z, e)| (z.as_str(), e.as_str()))
    }
}

/// The rolling 1-hour means of a device's PM2.5 and PM10, in the smaller of two forms: a
/// hub holds one for each of thousands of stations, so its size is most of a station's cost.
enum Hour {
    /// While each minute holds at most one reading of each metric, every one a multiple of
    /// 0.1 in 0 ..= 6553.4 (a monitor reporting once a minute in µg/m³ with at most one
    /// decimal, the common case): the readings themselves, 248 bytes.
    Tenths(Box<TenthsRing>),
    /// From the first reading that does not fit (a second one in a minute, a finer value):
    /// per-minute sums and counts, 1.2 KB, for any rate.
    Sums(Box<HourRing>),
}

impl Hour {
    fn new() -> Hour {
        Hour::Tenths(Box::new(TenthsRing {
            newest: i64::MIN,
            tenths: [[TenthsRing::EMPTY; 2]; 60],
        }))
    }

    fn push(&mut self, k: Pm, t: i64, v: f64) {
        match self {
            Hour::Tenths(r) => {
                if !r.push(k, t, v) {
                    let mut wide = r.widen();
                    wide.push(k, t, v);
                    *self = Hour::Sums(wide);
                }
            }
            Hour::Sums(r) => r.push(k, t, v),
        }
    }

    fn mean(&self, k: Pm) -> Option<f64> {
        match self {
            Hour::Tenths(r) => r.mean(k),
            Hour::Sums(r) => r.mean(k),
        }
    }
}

/// The hour as the readings themselves, in tenths (see [`Hour::Tenths`]). Its mean adds the
/// same `f64` values in the same slot order as [`HourRing::mean`] would, so both forms give
/// the same bits: the form never changes an AQI.
struct TenthsRing {
    /// As in [`HourRing::newest`].
    newest: i64,
    /// Per slot (minute `m` in slot `m mod 60`): the reading of PM2.5 and PM10 in tenths,
    /// [`Self::EMPTY`] for none.
    tenths: [[u16; 2]; 60],
}

impl TenthsRing {
    const EMPTY: u16 = u16::MAX;

    /// `v` in tenths, when that holds it exactly: `q / 10` is the one `f64` nearest to the
    /// decimal, as parsing it was, so the comparison is exact.
    fn encode(v: f64) -> Option<u16> {
        let q = (v * 10.0).round();
        if !(0.0..f64::from(Self::EMPTY)).contains(&q) {
            return None;
        }
        let q = q as u16;
        (Self::decode(q) == v).then_some(q)
    }

    fn decode(q: u16) -> f64 {
        f64::from(q) / 10.0
    }

    /// Takes the reading; `false` when it does not fit this form (nothing is changed then
    /// but the minutes that left the hour, which the wider form would drop as well).
    fn push(&mut self, k: Pm, t: i64, v: f64) -> bool {
        let m = t.div_euclid(60_000);
        if m > self.newest {
            let from = if self.newest == i64::MIN {
                m - 59
            } else {
                (self.newest + 1).max(m - 59)
            };
            for x in from..=m {
                self.tenths[HourRing::slot(x)] = [Self::EMPTY; 2];
            }
            self.newest = m;
        } else if m <= self.newest - 60 {
            return true; // older than the hour held: left out, as the wider form does
        }
        let cell = &mut self.tenths[HourRing::slot(m)][k as usize];
        match Self::encode(v) {
            Some(q) if *cell == Self::EMPTY => {
                *cell = q;
                true
            }
            _ => false,
        }
    }

    fn mean(&self, k: Pm) -> Option<f64> {
        let i = k as usize;
        let held = self
            .tenths
            .iter()
            .map(|c| c[i])
            .filter(|&q| q != Self::EMPTY);
        let minutes = held.clone().count();
        if minutes < 45 {
            return None;
        }
        // Empty slots add 0.0 in the wider form: x + 0.0 is x, so skipping them is the same.
        let sum = held.fold(0.0, |s, q| s + Self::decode(q));
        Some(sum / minutes as f64)
    }

    fn widen(&self) -> Box<HourRing> {
        let mut r = HourRing::new();
        r.newest = self.newest;
        for (slot, cells) in self.tenths.iter().enumerate() {
            for (i, &q) in cells.iter().enumerate() {
                if q != Self::EMPTY {
                    r.sum[slot][i] = Self::decode(q);
                    r.count[slot][i] = 1;
                }
            }
        }
        r
    }
}

/// The hour as per-minute sums: 60 minutes whatever the reading rate (a stream of thousands of
/// readings a second must not hold an hour of them in memory), in one fixed ring of 1.2 KB
/// allocated once (two growing queues of minute buckets were 2 KB after an hour).
struct HourRing {
    /// The newest minute held (minutes since the Unix epoch; `i64::MIN`: none yet); minute `m`
    /// is in slot `m mod 60`, and the ring holds the minutes `newest - 59 ..= newest`. An
    /// `i64` costs nothing here (the sums align to 8) and no time of any reading overflows it.
    newest: i64,
    /// Per slot: the sums of PM2.5 and PM10.
    sum: [[f64; 2]; 60],
    /// Per slot: how many readings each sum holds. A minute takes at most 65,535 readings of a
    /// metric (1 kHz); beyond, readings are left out of the mean, sum and count alike.
    count: [[u16; 2]; 60],
}

/// Which of the ring's two metrics.
#[derive(Debug, Clone, Copy)]
enum Pm {
    Pm25 = 0,
    Pm10 = 1,
}

impl HourRing {
    fn new() -> Box<HourRing> {
        Box::new(HourRing {
            newest: i64::MIN,
            sum: [[0.0; 2]; 60],
            count: [[0; 2]; 60],
        })
    }

    fn slot(m: i64) -> usize {
        m.rem_euclid(60) as usize
    }

    fn push(&mut self, k: Pm, t: i64, v: f64) {
        let m = t.div_euclid(60_000);
        if m > self.newest {
            // The minutes after the newest are new: empty them (all 60 after a gap of an hour).
            let from = if self.newest == i64::MIN {
                m - 59
            } else {
                (self.newest + 1).max(m - 59)
            };
            for x in from..=m {
                let s = Self::slot(x);
                self.sum[s] = [0.0; 2];
                self.count[s] = [0; 2];
            }
            self.newest = m;
        } else if m <= self.newest - 60 {
            return; // older than the hour held
        }
        // The newest minute, or a late reading into its minute of the hour.
        let s = Self::slot(m);
        let i = k as usize;
        if self.count[s][i] < u16::MAX {
            self.sum[s][i] += v;
            self.count[s][i] += 1;
        }
    }

    /// The mean of the hour, when at least 45 of its 60 minutes have readings (a 1-hour value
    /// needs 45 minutes of sampling).
    fn mean(&self, k: Pm) -> Option<f64> {
        let i = k as usize;
        let minutes = self.count.iter().filter(|c| c[i] > 0).count();
        if minutes < 45 {
            return None;
        }
        let (sum, n) = self
            .sum
            .iter()
            .zip(&self.count)
            .fold((0.0, 0u64), |(s, n), (v, c)| {
                (s + v[i], n + u64::from(c[i]))
            });
        (n > 0).then(|| sum / n as f64)
    }
}

struct DeviceAqi {
    hour: Hour,
    last_emit: i64,
    series: SeriesKey,
    /// The last AQI written (the `aqi` point), for the status page and the gate board.
    now: Option<Box<AqiNow>>,
}

/// A device's AQI as last written to the `aqi` measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct AqiNow {
    pub time_ms: i64,
    pub aqi: u32,
    pub iaqi_pm25: Option<u32>,
    pub iaqi_pm10: Option<u32>,
    /// The hour means it was computed from (µg/m³).
    pub pm25_1h: Option<f64>,
    pub pm10_1h: Option<f64>,
    /// The HJ 633 table's id.
    pub table: &'static str,
}

/// Rolling AQI per device.
pub struct Aqi {
    forced: Option<String>,
    site_id: String,
    site_tags: Vec<(String, String)>,
    clock: LocalClock,
    devices: HashMap<Arc<str>, DeviceAqi>,
}

impl Aqi {
    /// `forced`: a table id that applies whatever the date (from `[site].standards`).
    pub fn new(
        site_id: &str,
        site_tags: &[(String, String)],
        tz: jiff::tz::TimeZone,
        forced: Option<String>,
    ) -> Self {
        Self {
            forced,
            site_id: site_id.to_string(),
            site_tags: site_tags.to_vec(),
            clock: LocalClock::new(tz),
            devices: HashMap::new(),
        }
    }

    /// Feeds a reading; returns an `aqi` point when one is due.
    /// Every device's AQI as last written, by device id.
    pub fn now(&self) -> Vec<(String, AqiNow)> {
        let mut v: Vec<(String, AqiNow)> = self
            .devices
            .iter()
            .filter_map(|(d, a)| a.now.as_ref().map(|n| (d.to_string(), (**n).clone())))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn reading(&mut self, device: &str, metric: &str, t: i64, v: f64) -> Option<Point> {
        if metric != "pm25" && metric != "pm10" {
            return None;
        }
        let d = match self.devices.get_mut(device) {
            Some(d) => d,
            None => {
                let tags = crate::model::device_tags(&self.site_id, device, &self.site_tags);
                let series = SeriesKey::new("aqi", &tags);
                self.devices.entry(device_key(device)).or_insert(DeviceAqi {
                    hour: Hour::new(),
                    last_emit: i64::MIN,
                    series,
                    now: None,
                })
            }
        };
        let k = if metric == "pm25" { Pm::Pm25 } else { Pm::Pm10 };
        d.hour.push(k, t, v);
        if t.saturating_sub(d.last_emit) < EMIT_EVERY_MS {
            return None;
        }
        let tables = Tables::builtin();
        let day = self.clock.local(t).day;
        let table = match &self.forced {
            Some(id) => tables.by_id(id),
            None => tables.for_day(day),
        }?;
        let (c25, c10) = (d.hour.mean(Pm::Pm25), d.hour.mean(Pm::Pm10));
        let i25 = c25.map(|c| tables.iaqi(&table.pm25, c));
        let i10 = c10.map(|c| tables.iaqi(&table.pm10, c));
        let aqi = i25.max(i10)?;
        d.last_emit = t;
        d.now = Some(Box::new(AqiNow {
            time_ms: t,
            aqi,
            iaqi_pm25: i25,
            iaqi_pm10: i10,
            pm25_1h: c25,
            pm10_1h: c10,
            table: &table.id,
        }));
        let (zh, _) = tables.category(aqi);
        let f = |k: &str, v: FieldValue| (FieldKey::new(k), v);
        let mut fields = vec![
            f("aqi", FieldValue::Float(f64::from(aqi))),
            f("category", FieldValue::Str(zh.to_string())),
        ];
        if let Some(i) = i25 {
            fields.push(f("iaqi_pm25", FieldValue::Float(f64::from(i))));
        }
        if let Some(i) = i10 {
            fields.push(f("iaqi_pm10", FieldValue::Float(f64::from(i))));
        }
        if aqi > 50 {
            let primary = if i25.unwrap_or(0) >= i10.unwrap_or(0) {
                "PM2.5"
            } else {
                "PM10"
            };
            fields.push(f("primary", FieldValue::Str(primary.to_string())));
        }
        fields.push(f("table", FieldValue::Str(table.id.clone())));
        Some(Point {
            series: d.series.clone(),
            fields,
            time_ms: t,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hj633_2012_worked_examples() {
        let t = Tables::builtin();
        let tb = t.by_id("hj633-2012").unwrap();
        assert_eq!(t.iaqi(&tb.pm25, 80.0), 107);
        assert_eq!(t.iaqi(&tb.pm25, 36.0), 52);
        assert_eq!(t.iaqi(&tb.pm25, 120.0), 158);
        assert_eq!(t.iaqi(&tb.pm10, 200.0), 125);
        assert_eq!(t.iaqi(&tb.pm10, 430.0), 313);
        assert_eq!(t.iaqi(&tb.pm25, 35.0), 50);
        assert_eq!(t.iaqi(&tb.pm25, 0.0), 0);
        assert_eq!(t.iaqi(&tb.pm10, 900.0), 500);
        assert_eq!(t.category(107), ("轻度污染", "lightly polluted"));
        assert_eq!(t.category(50), ("优", "good"));
        assert_eq!(t.category(301), ("严重污染", "severely polluted"));
    }

    #[test]
    fn the_2026_table_applies_from_march_2026() {
        let t = Tables::builtin();
        let before = t
            .for_day(day_number(jiff::civil::date(2026, 2, 28)))
            .unwrap();
        let after = t
            .for_day(day_number(jiff::civil::date(2026, 3, 1)))
            .unwrap();
        assert_eq!(
            (before.id.as_str(), after.id.as_str()),
            ("hj633-2012", "hj633-2026")
        );
        assert_eq!(t.iaqi(&after.pm25, 60.0), 100);
        assert_eq!(t.iaqi(&after.pm10, 120.0), 100);
        assert_eq!(t.iaqi(&before.pm25, 60.0), 82);
    }

    #[test]
    fn the_hour_is_the_last_60_minutes_with_45_of_them_covered() {
        let t0 = 1_795_000_000_000 - 1_795_000_000_000 % 60_000;
        let mut h = HourRing::new();
        // 44 minutes: not enough.
        for i in 0..44 {
            h.push(Pm::Pm10, t0 + i * 60_000, 100.0);
        }
        assert_eq!(h.mean(Pm::Pm10), None);
        // The 45th minute, with two readings: the mean is of readings, not of minutes.
        h.push(Pm::Pm10, t0 + 44 * 60_000, 10.0);
        h.push(Pm::Pm10, t0 + 44 * 60_000 + 30_000, 10.0);
        assert_eq!(h.mean(Pm::Pm10), Some((44.0 * 100.0 + 20.0) / 46.0));
        assert_eq!(h.mean(Pm::Pm25), None, "the other metric has none");
        // A late reading goes into its minute; one older than the hour is left out.
        h.push(Pm::Pm10, t0 + 10 * 60_000 + 5_000, 100.0);
        h.push(Pm::Pm10, t0 - 16 * 60_000, 1e9);
        assert_eq!(h.mean(Pm::Pm10), Some((45.0 * 100.0 + 20.0) / 47.0));
        // 60 minutes later than the 45th, all earlier minutes have left the hour.
        for i in 45..105 {
            h.push(Pm::Pm10, t0 + i * 60_000, 50.0);
        }
        assert_eq!(h.mean(Pm::Pm10), Some(50.0), "minutes 45..=104 only");
        // Silent for 16 minutes (the other metric still reporting): under 45 minutes left.
        for i in 105..121 {
            h.push(Pm::Pm25, t0 + i * 60_000, 30.0);
        }
        assert_eq!(h.mean(Pm::Pm10), None);
        // Times at the ends of i64 (any reading's timestamp) neither panic nor overflow.
        let mut e = HourRing::new();
        e.push(Pm::Pm10, i64::from(i32::MIN) * 60_000, 0.5);
        let mut e = HourRing::new();
        e.push(Pm::Pm10, i64::MIN, 1.0);
        e.push(Pm::Pm10, i64::MAX, 2.0);
        e.push(Pm::Pm10, i64::MIN, 3.0);
        assert_eq!(e.count.iter().map(|c| u32::from(c[1])).sum::<u32>(), 1);
        // An hour's gap empties the whole ring.
        h.push(Pm::Pm10, t0 + 500 * 60_000, 7.0);
        assert_eq!(h.count.iter().map(|c| u32::from(c[1])).sum::<u32>(), 1);
        assert_eq!(h.count.iter().map(|c| u32::from(c[0])).sum::<u32>(), 0);
    }

    #[test]
    fn a_once_a_minute_monitor_stays_in_tenths_and_a_second_reading_widens() {
        let t0 = 1_795_000_000_000 - 1_795_000_000_000 % 60_000;
        let mut h = Hour::new();
        for i in 0..120 {
            h.push(
                Pm::Pm25,
                t0 + i * 60_000,
                f64::from(351 + (i as u16 % 7) * 10) / 10.0,
            );
            h.push(Pm::Pm10, t0 + i * 60_000 + 500, 80.0);
        }
        assert!(matches!(h, Hour::Tenths(_)));
        assert_eq!(h.mean(Pm::Pm10), Some(80.0));
        let before = h.mean(Pm::Pm25);
        // A second PM2.5 reading in the newest minute: the sums take over, nothing is lost.
        h.push(Pm::Pm25, t0 + 119 * 60_000 + 30_000, 1000.0);
        assert!(matches!(h, Hour::Sums(_)));
        let want = before.map(|m| (m * 60.0 + 1000.0) / 61.0);
        let got = h.mean(Pm::Pm25);
        assert!(
            got.zip(want).is_some_and(|(g, w)| (g - w).abs() < 1e-9),
            "{got:?} {want:?}"
        );
        // A value finer than a tenth widens too.
        let mut f = Hour::new();
        f.push(Pm::Pm10, t0, 12.34);
        assert!(matches!(f, Hour::Sums(_)));
        for bad in [-0.1, 6553.5, f64::NAN, f64::INFINITY, 0.05] {
            assert_eq!(TenthsRing::encode(bad), None, "{bad}");
        }
        assert_eq!(TenthsRing::encode(6553.4), Some(65534));
        assert_eq!(TenthsRing::encode(0.3), Some(3));
    }

    proptest::proptest! {
        /// Both forms of the hour give the same bits, for any readings, as the rate and the
        /// values move between what the tenths hold and what they do not.
        #[test]
        fn both_forms_of_the_hour_give_the_same_means(
            steps in proptest::collection::vec(
                (0i64..150_000, proptest::bool::ANY, 0u32..30_000, 0u8..8), 1..400),
        ) {
            let mut t = 1_795_000_000_000i64;
            let (mut compact, mut wide) = (Hour::new(), HourRing::new());
            for (dt, pm10, q, kind) in steps {
                // Mostly forward, sometimes late (up to 70 minutes back).
                t += if kind == 0 { -(dt * 28) } else { dt };
                let v = match kind {
                    1 => f64::from(q) / 1000.0,    // finer than tenths
                    2 => -f64::from(q) / 10.0,     // negative
                    _ => f64::from(q) / 10.0,      // tenths
                };
                let k = if pm10 { Pm::Pm10 } else { Pm::Pm25 };
                compact.push(k, t, v);
                wide.push(k, t, v);
                for k in [Pm::Pm25, Pm::Pm10] {
                    let (a, b) = (compact.mean(k), wide.mean(k));
                    proptest::prop_assert_eq!(a.map(f64::to_bits), b.map(f64::to_bits));
                }
            }
        }
    }

    #[test]
    fn rolling_aqi_points() {
        let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
        let mut a = Aqi::new("s", &[], tz, Some("hj633-2012".into()));
        let t0 = 1_795_000_000_000;
        let mut last = None;
        for i in 0..60 {
            let t = t0 + i * 60_000;
            if let Some(p) = a.reading("d", "pm25", t, 80.0) {
                last = Some(p);
            }
            let _ = a.reading("d", "pm10", t, 200.0);
        }
        let p = last.expect("an aqi point once 45 minutes of the hour are in");
        let get = |k: &str| {
            p.fields
                .iter()
                .find(|(f, _)| f.as_str() == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("aqi"), Some(FieldValue::Float(125.0)));
        assert_eq!(get("iaqi_pm25"), Some(FieldValue::Float(107.0)));
        assert_eq!(get("primary"), Some(FieldValue::Str("PM10".into())));
        assert_eq!(get("category"), Some(FieldValue::Str("轻度污染".into())));
        assert_eq!(p.series.as_str(), "aqi,device=d,site=s");
    }
}
