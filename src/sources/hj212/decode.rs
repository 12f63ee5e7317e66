//! One parsed HJ 212 packet from a known station, turned into what the gateway keeps: sans-IO
//! (the packet, the station's setup, the site's zone and "now" in; readings and points out).
//!
//! - CN=2011 (real-time, `-Rtd`): one [`Readings`] of the station's device, judged by the
//!   rules like any other source. Some senders put `-Avg` under 2011 (hj212-field.md §3.2,
//!   W7 [S]): used when there is no `-Rtd`.
//! - CN=2051 / 2061 / 2031 (minute / hour / day): points in `<air|water>_<minute|hour|day>` at
//!   the period start (DataTime, domain.md §3.4 [P]) with `<metric>` (the Avg),
//!   `<metric>_min`, `<metric>_max` and `<metric>_flag` when the flag is not N. Not judged:
//!   the rules judge the real-time values.
//! - A code the station's factor map does not know is kept, not judged, in `hj212_extra`
//!   (`<code>_<suffix>` fields, tag `cn`), and counted.
//! - DataTime is the station's local time in the site's zone; a frame without a readable
//!   DataTime is refused, never stamped with the arrival time (hj212-field.md §1.4.5 [S]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use jiff::tz::TimeZone;

use crate::config::factors::FactorMap;
use crate::config::metrics::Catalog;
use crate::hj212::Packet;
use crate::model::{DeviceMeta, FieldKey, FieldValue, MetricSlot, Point, Readings, SeriesKey};

/// The data CNs this decoder knows.
pub const REALTIME: &str = "2011";
const PERIODS: [(&str, &str); 3] = [("2051", "minute"), ("2061", "hour"), ("2031", "day")];

/// A station as the listener knows it once set up: its device, and where each code goes.
#[derive(Debug)]
pub struct Station {
    pub mn: Arc<str>,
    pub device: Arc<DeviceMeta>,
    factors: Arc<FactorMap>,
    /// What every station of the factor map shares (a hub holds thousands of them).
    shape: Arc<Shape>,
    /// The station's site id and the site's tags (shared by the stations of a listener).
    site: Arc<str>,
    tags: Arc<[(String, String)]>,
    /// Built when first used: most stations send only CN=2011 and only known codes, and the
    /// seven keys of a station were ~900 bytes of a hub's ~9 KB a station.
    period_series: OnceLock<Box<[[SeriesKey; 3]]>>,
    extra_series: OnceLock<Box<[SeriesKey; 4]>>,
}

/// Where a factor map's codes go: the same for every station of the map, so built once per
/// map (see [`shape_of`]).
#[derive(Debug)]
struct Shape {
    /// Code → (slot of the device, unit factor).
    slot_of: HashMap<String, (usize, f64)>,
    /// Per slot: index into `kinds` (and a station's `period_series`).
    kind_of_slot: Vec<usize>,
    /// The measurements of the slots (`air`, `water`, ...).
    kinds: Vec<String>,
    slots: Arc<[MetricSlot]>,
}

impl Shape {
    fn new(factors: &FactorMap) -> Shape {
        let catalog = Catalog::builtin();
        let mut metrics: Vec<(String, String)> = Vec::new();
        let mut slot_of = HashMap::new();
        for f in &factors.codes {
            let measurement = catalog
                .get(&f.metric)
                .map_or_else(|| "air".to_string(), |m| m.measurement.clone());
            let slot = match metrics.iter().position(|(m, _)| *m == f.metric) {
                Some(i) => i,
                None => {
                    metrics.push((f.metric.clone(), measurement));
                    metrics.len() - 1
                }
            };
            slot_of.insert(f.code.clone(), (slot, f.factor));
        }
        slot_of.shrink_to_fit();
        let pairs: Vec<(&str, &str)> = metrics
            .iter()
            .map(|(m, k)| (m.as_str(), k.as_str()))
            .collect();
        // The device's series are in the order of first appearance, as `kinds` are.
        let (slots, kinds) = DeviceMeta::slots(&pairs);
        let kind_of_slot = slots.iter().map(|s| s.series).collect();
        Shape {
            slot_of,
            kind_of_slot,
            kinds,
            slots,
        }
    }
}

/// The shape of a factor map, built once while any station of the map lives.
fn shape_of(factors: &Arc<FactorMap>) -> Arc<Shape> {
    static SHAPES: Mutex<Vec<(Weak<FactorMap>, Weak<Shape>)>> = Mutex::new(Vec::new());
    let mut shapes = SHAPES.lock().unwrap_or_else(|p| p.into_inner());
    shapes.retain(|(m, s)| m.strong_count() > 0 && s.strong_count() > 0);
    let me = Arc::downgrade(factors);
    if let Some(shape) = shapes
        .iter()
        .find(|(m, _)| Weak::ptr_eq(m, &me))
        .and_then(|(_, s)| s.upgrade())
    {
        return shape;
    }
    let shape = Arc::new(Shape::new(factors));
    shapes.push((me, Arc::downgrade(&shape)));
    shape
}

impl Station {
    /// `tags` are the site's tags; `site` is the station's site id (a hub receives many).
    pub fn new(
        mn: &str,
        device_id: &str,
        site: Arc<str>,
        tags: Arc<[(String, String)]>,
        factors: Arc<FactorMap>,
    ) -> Station {
        let shape = shape_of(&factors);
        let device = Arc::new(DeviceMeta::with_slots(
            device_id,
            &site,
            &tags,
            shape.slots.clone(),
            &shape.kinds,
        ));
        Station {
            // Shared with the device id (the same text for an accepted station).
            mn: crate::model::device_key(mn),
            device,
            factors,
            shape,
            site,
            tags,
            period_series: OnceLock::new(),
            extra_series: OnceLock::new(),
        }
    }

    fn all_tags(&self) -> Vec<(&str, &str)> {
        crate::model::device_tags(&self.site, &self.device.id, &self.tags)
    }

    /// Per measurement kind of the map (`air`, `water`): its minute, hour and day series.
    fn period_series(&self) -> &[[SeriesKey; 3]] {
        self.period_series.get_or_init(|| {
            let tags = self.all_tags();
            self.shape
                .kinds
                .iter()
                .map(|k| PERIODS.map(|(_, p)| SeriesKey::new(&format!("{k}_{p}"), &tags)))
                .collect()
        })
    }

    /// `hj212_extra` of CN 2011, 2051, 2061, 2031 (codes the map does not know).
    fn extra_series(&self, i: usize) -> SeriesKey {
        let keys = self.extra_series.get_or_init(|| {
            let tags = self.all_tags();
            let extra = |cn: &str| {
                let mut t = tags.clone();
                t.push(("cn", cn));
                SeriesKey::new("hj212_extra", &t)
            };
            Box::new([
                extra(REALTIME),
                extra(PERIODS[0].0),
                extra(PERIODS[1].0),
                extra(PERIODS[2].0),
            ])
        });
        keys[i.min(3)].clone()
    }

    /// The station's site id.
    pub fn site(&self) -> &Arc<str> {
        &self.site
    }

    /// The factor map's name (for the status page).
    pub fn factor_map(&self) -> &str {
        &self.factors.name
    }
}

/// What one packet became.
#[derive(Debug, Default)]
pub struct Decoded {
    /// CN=2011: the real-time values (judged).
    pub readings: Option<Readings>,
    /// Period values and unknown codes (not judged).
    pub points: Vec<Point>,
    /// Codes the factor map does not know (kept in `hj212_extra`).
    pub unknown_codes: usize,
    /// Values that were not numbers (or not finite): not written.
    pub bad_values: usize,
    /// DataTime in ms (the frame's acquisition time or period start).
    pub time_ms: Option<i64>,
}

/// Why a data packet was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No DataTime, or not a time: the arrival time is never substituted.
    DataTime,
    /// DataTime further ahead of the gateway's clock than `[site].max_future`.
    Future,
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::DataTime => "datatime",
            Refusal::Future => "future",
        }
    }
}

/// Whether `cn` carries data this decoder turns into readings or points.
pub fn is_data(cn: &str) -> bool {
    cn == REALTIME || PERIODS.iter().any(|(c, _)| *c == cn)
}

/// DataTime in the site's zone, as ms since the epoch.
pub fn data_time_ms(p: &Packet, tz: &TimeZone) -> Option<i64> {
    let dt = p.data_time()?;
    tz.to_timestamp(dt).ok().map(|t| t.as_millisecond())
}

/// Decodes a data packet (see [`is_data`]); any other CN gives an empty [`Decoded`].
pub fn decode(
    p: &Packet,
    st: &Station,
    tz: &TimeZone,
    now_ms: i64,
    max_future_ms: i64,
) -> Result<Decoded, Refusal> {
    let cn = p.cn();
    let period = PERIODS.iter().position(|(c, _)| *c == cn);
    if cn != REALTIME && period.is_none() {
        return Ok(Decoded::default());
    }
    let t = data_time_ms(p, tz).ok_or(Refusal::DataTime)?;
    if t > now_ms.saturating_add(max_future_ms) {
        return Err(Refusal::Future);
    }
    let mut out = Decoded {
        time_ms: Some(t),
        ..Decoded::default()
    };
    // A stray `Flag=X` item in CP is the flag of the values that have none of their own.
    let cp_flag =
        p.cp.cp_flag
            .as_deref()
            .and_then(|f| f.chars().next())
            .map(|c| c.to_ascii_uppercase());
    // The fields of codes the map does not know; their series only when there are some.
    let mut extra: Vec<(FieldKey, FieldValue)> = Vec::new();
    match period {
        None => {
            let n = st.device.slots.len();
            let mut values = vec![None; n];
            let mut flags = vec![None; n];
            for f in p.factors() {
                let Some(&(slot, factor)) = st.shape.slot_of.get(f.code.as_ref()) else {
                    out.unknown_codes += 1;
                    keep_extra(f, &mut extra, &mut out.bad_values);
                    continue;
                };
                let raw = f.get("Rtd").or_else(|| f.get("Avg"));
                match raw.map(crate::hj212::number) {
                    Some(Some(v)) => {
                        values[slot] = Some(v * factor);
                        flags[slot] = f.flag().or(cp_flag);
                    }
                    Some(None) => out.bad_values += 1,
                    None => {}
                }
            }
            if values.iter().any(Option::is_some) {
                out.readings = Some(Readings {
                    device: st.device.clone(),
                    time_ms: t,
                    values,
                    flags,
                });
            }
        }
        Some(pi) => {
            let mut points: Vec<Point> = st
                .period_series()
                .iter()
                .map(|s| Point {
                    series: s[pi].clone(),
                    fields: Vec::new(),
                    time_ms: t,
                })
                .collect();
            for f in p.factors() {
                let Some(&(slot, factor)) = st.shape.slot_of.get(f.code.as_ref()) else {
                    out.unknown_codes += 1;
                    keep_extra(f, &mut extra, &mut out.bad_values);
                    continue;
                };
                let metric = &st.device.slots[slot].metric;
                let point = &mut points[st.shape.kind_of_slot[slot]];
                let mut any = false;
                for (suffix, name) in [
                    ("Avg", metric.clone()),
                    ("Min", format!("{metric}_min")),
                    ("Max", format!("{metric}_max")),
                ] {
                    match f.get(suffix).map(crate::hj212::number) {
                        Some(Some(v)) => {
                            point
                                .fields
                                .push((FieldKey::new(&name), FieldValue::Float(v * factor)));
                            any = true;
                        }
                        Some(None) => out.bad_values += 1,
                        None => {}
                    }
                }
                if any && let Some(flag) = f.flag().or(cp_flag).filter(|c| *c != 'N') {
                    point.fields.push((
                        FieldKey::new(&format!("{metric}_flag")),
                        FieldValue::Str(flag.to_string()),
                    ));
                }
            }
            out.points
                .extend(points.into_iter().filter(|p| !p.fields.is_empty()));
        }
    }
    if !extra.is_empty() {
        out.points.push(Point {
            series: st.extra_series(period.map_or(0, |i| i + 1)),
            fields: extra,
            time_ms: t,
        });
    }
    Ok(out)
}

/// A code the map does not know: its numbers as `<code>_<suffix>` floats, its flags as
/// strings (so that no field ever changes type).
fn keep_extra(
    f: &crate::hj212::Factor<'_>,
    extra: &mut Vec<(FieldKey, FieldValue)>,
    bad: &mut usize,
) {
    for (suffix, value) in &f.fields {
        let name = format!("{}_{}", f.code, suffix.to_ascii_lowercase());
        if suffix.ends_with("Flag") {
            extra.push((FieldKey::new(&name), FieldValue::Str(value.to_string())));
        } else if let Some(v) = crate::hj212::number(value) {
            extra.push((FieldKey::new(&name), FieldValue::Float(v)));
        } else {
            *bad += 1;
        }
    }
}

/// The measurements a station writes (for the status page and tests).
pub fn kinds(st: &Station) -> &[String] {
    &st.shape.kinds
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::Diagnostics;
    use crate::config::profile::ProfileLoader;

    pub fn standard_map() -> Arc<FactorMap> {
        ProfileLoader::for_config(std::path::Path::new("/nonexistent/site.toml"))
            .load_factors("hj212-standard", &mut Diagnostics::default())
            .unwrap_or_else(|_| panic!("the built-in map"))
    }

    fn station() -> Station {
        Station::new(
            "MN1",
            "dust-03",
            "cd-jj-0018".into(),
            Vec::new().into(),
            standard_map(),
        )
    }

    fn packet(seg: &str) -> Packet<'_> {
        crate::hj212::parse(seg).expect("a segment")
    }

    fn tz() -> TimeZone {
        TimeZone::get("Asia/Shanghai").expect("zone")
    }

    fn lines(points: &[Point]) -> Vec<String> {
        let mut out = Vec::new();
        for p in points {
            let mut lp = Vec::new();
            crate::outputs::line_protocol::encode_point(p, &mut lp);
            out.push(String::from_utf8_lossy(&lp).trim_end().to_string());
        }
        out
    }

    /// 2022-05-13 16:26:00 in Asia/Shanghai.
    const V2_MS: i64 = 1_652_430_360_000;
    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn realtime_values_become_readings_in_canonical_units_with_their_flags() {
        let st = station();
        let p = packet(
            "QN=1;ST=39;CN=2011;PW=123456;MN=MN1;Flag=5;CP=&&DataTime=20220513162600;a34002-Rtd=80.5,a34002-Flag=N;a34004-Rtd=40,a34004-Flag=m;a50001-Rtd=65.2;a21004-Rtd=12,a21004-Flag=N&&",
        );
        let d = decode(&p, &st, &tz(), NOW, 300_000).expect("decoded");
        let r = d.readings.expect("readings");
        assert_eq!(r.time_ms, V2_MS);
        let get = |m: &str| {
            let i = st.device.slots.iter().position(|s| s.metric == m).expect(m);
            (r.values[i], r.flag(i))
        };
        assert_eq!(get("pm10"), (Some(80.5), None));
        assert_eq!(
            get("pm25"),
            (Some(40.0), Some('M')),
            "lower-case flags are upper-cased"
        );
        assert_eq!(get("noise"), (Some(65.2), None), "a50001 is noise");
        assert_eq!(d.unknown_codes, 1);
        assert_eq!(
            lines(&d.points),
            vec![format!(
                "hj212_extra,cn=2011,device=dust-03,site=cd-jj-0018 a21004_rtd=12,a21004_flag=\"N\" {V2_MS}"
            )]
        );
    }

    #[test]
    fn period_values_land_at_the_period_start_with_min_max_and_flag() {
        let st = station();
        let p = packet(
            "QN=1;ST=39;CN=2061;MN=MN1;Flag=4;CP=&&DataTime=20220513162600;a34002-Min=20,a34002-Avg=31,a34002-Max=44,a34002-Flag=T;w01001-Avg=7.1&&",
        );
        let d = decode(&p, &st, &tz(), NOW, 300_000).expect("decoded");
        assert!(d.readings.is_none(), "period values are not judged");
        assert_eq!(
            lines(&d.points),
            vec![
                format!(
                    "air_hour,device=dust-03,site=cd-jj-0018 pm10=31,pm10_min=20,pm10_max=44,pm10_flag=\"T\" {V2_MS}"
                ),
                format!("water_hour,device=dust-03,site=cd-jj-0018 ph=7.1 {V2_MS}"),
            ]
        );
    }

    #[test]
    fn no_datatime_and_a_future_one_are_refused_never_stamped_now() {
        let st = station();
        let none = packet("QN=1;ST=39;CN=2011;MN=MN1;Flag=4;CP=&&a34002-Rtd=80&&");
        assert_eq!(
            decode(&none, &st, &tz(), NOW, 300_000).err(),
            Some(Refusal::DataTime)
        );
        let bad = packet("QN=1;ST=39;CN=2011;MN=MN1;CP=&&DataTime=2022051316;a34002-Rtd=80&&");
        assert_eq!(
            decode(&bad, &st, &tz(), NOW, 300_000).err(),
            Some(Refusal::DataTime)
        );
        // V2's time, seen from 10 minutes before it with a 5-minute allowance.
        let p = packet("QN=1;ST=39;CN=2011;MN=MN1;CP=&&DataTime=20220513162600;a34002-Rtd=80&&");
        assert_eq!(
            decode(&p, &st, &tz(), V2_MS - 600_000, 300_000).err(),
            Some(Refusal::Future)
        );
        assert!(decode(&p, &st, &tz(), V2_MS - 60_000, 300_000).is_ok());
    }

    #[test]
    fn a_unit_factor_converts_to_the_canonical_unit() {
        let map = ProfileLoader::for_config(std::path::Path::new("/nonexistent/site.toml"))
            .load_factors("hj212-mgm3", &mut Diagnostics::default())
            .unwrap_or_else(|_| panic!("the mg/m³ map"));
        let st = Station::new("MN2", "dust-d-01", "s".into(), Vec::new().into(), map);
        let p = packet("QN=1;ST=39;CN=2011;MN=MN2;CP=&&DataTime=20220513162600;a34002-Rtd=0.085&&");
        let r = decode(&p, &st, &tz(), NOW, 0)
            .expect("decoded")
            .readings
            .expect("readings");
        let i = st
            .device
            .slots
            .iter()
            .position(|s| s.metric == "pm10")
            .expect("pm10");
        assert!((r.values[i].expect("pm10") - 85.0).abs() < 1e-9);
    }

    #[test]
    fn commands_are_not_data() {
        let st = station();
        let p = packet("QN=1;ST=32;CN=1062;MN=MN1;Flag=5;CP=&&RtdInterval=30&&");
        let d = decode(&p, &st, &tz(), NOW, 0).expect("not refused");
        assert!(d.readings.is_none() && d.points.is_empty());
        assert!(!is_data("1062") && is_data("2031"));
    }
}
