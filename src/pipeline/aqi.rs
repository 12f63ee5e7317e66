//! HJ 633 air quality index from rolling 1-hour means of PM2.5 and PM10 (the real-time AQI
//! that city platforms show), with the breakpoint table in force on the reading's date
//! (`data/aqi.toml`). Sans-IO: readings in, `aqi` points out. A mean needs readings in at
//! least 45 of its 60 minutes ([U]: GB 3095's 1-hour validity, reference/domain.md §2.1).

use std::collections::HashMap;
use std::sync::OnceLock;

use std::collections::VecDeque;

use super::rules::clock::{LocalClock, day_number};
use crate::config::reader::{Cx, TableReader, parse_document};
use crate::config::source::{Diagnostics, SourceFile};
use crate::model::{FieldKey, FieldValue, Point, SeriesKey};

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

/// A rolling 1-hour mean kept as per-minute sums: 60 buckets whatever the reading rate (a
/// stream of thousands of readings a second must not hold an hour of them in memory).
#[derive(Debug, Default)]
struct HourMean {
    /// Oldest first.
    buckets: VecDeque<Bucket>,
}

/// One minute's readings: 16 bytes (a hub holds 60 of them for PM2.5 and PM10 of each of
/// thousands of stations; as `(i64, f64, u32)` it was 24).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Minutes since the Unix epoch (an `i32` spans ±4,000 years).
    minute: i32,
    count: u32,
    sum: f64,
}

impl HourMean {
    fn push(&mut self, t: i64, v: f64) {
        let Ok(m) = i32::try_from(t.div_euclid(60_000)) else {
            return; // not a time of this era: nothing to average
        };
        match self.buckets.back_mut() {
            Some(b) if b.minute == m => {
                b.sum += v;
                b.count += 1;
            }
            Some(b) if b.minute > m => {
                // A late reading: into its minute if still held.
                if let Some(b) = self.buckets.iter_mut().find(|b| b.minute == m) {
                    b.sum += v;
                    b.count += 1;
                }
                return;
            }
            _ => self.buckets.push_back(Bucket {
                minute: m,
                count: 1,
                sum: v,
            }),
        }
        while self
            .buckets
            .front()
            .is_some_and(|b| i64::from(b.minute) <= i64::from(m) - 60)
        {
            self.buckets.pop_front();
        }
    }

    /// The mean, when at least 45 of the hour's 60 minutes have readings (a 1-hour value
    /// needs 45 minutes of sampling).
    fn mean(&self) -> Option<f64> {
        if self.buckets.len() < 45 {
            return None;
        }
        let (sum, n) = self
            .buckets
            .iter()
            .fold((0.0, 0u64), |(s, n), b| (s + b.sum, n + u64::from(b.count)));
        (n > 0).then(|| sum / n as f64)
    }
}

struct DeviceAqi {
    pm25: HourMean,
    pm10: HourMean,
    last_emit: i64,
    series: SeriesKey,
}

/// Rolling AQI per device.
pub struct Aqi {
    forced: Option<String>,
    site_id: String,
    site_tags: Vec<(String, String)>,
    clock: LocalClock,
    devices: HashMap<String, DeviceAqi>,
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
    pub fn reading(&mut self, device: &str, metric: &str, t: i64, v: f64) -> Option<Point> {
        if metric != "pm25" && metric != "pm10" {
            return None;
        }
        let d = match self.devices.get_mut(device) {
            Some(d) => d,
            None => {
                let mut tags: Vec<(&str, &str)> = self
                    .site_tags
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                tags.push(("site", &self.site_id));
                tags.push(("device", device));
                let series = SeriesKey::new("aqi", &tags);
                self.devices.entry(device.to_string()).or_insert(DeviceAqi {
                    pm25: HourMean::default(),
                    pm10: HourMean::default(),
                    last_emit: i64::MIN,
                    series,
                })
            }
        };
        if metric == "pm25" {
            d.pm25.push(t, v);
        } else {
            d.pm10.push(t, v);
        }
        if t.saturating_sub(d.last_emit) < EMIT_EVERY_MS {
            return None;
        }
        let tables = Tables::builtin();
        let day = self.clock.local(t).day;
        let table = match &self.forced {
            Some(id) => tables.by_id(id),
            None => tables.for_day(day),
        }?;
        let i25 = d.pm25.mean().map(|c| tables.iaqi(&table.pm25, c));
        let i10 = d.pm10.mean().map(|c| tables.iaqi(&table.pm10, c));
        let aqi = i25.max(i10)?;
        d.last_emit = t;
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
