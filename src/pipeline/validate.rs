//! Validation of decoded readings: a value that is not a finite number (NaN, ±inf — a float
//! register holding garbage, a sensor fault pattern) is never written, and is counted. A value
//! outside the sensor's measuring range is written with a data flag beside it
//! (`<metric>_flag`), so the bureau can filter it: HJ 212's `T` above the range (still judged:
//! it exceeds every limit below the range), `D` below it (an impossible value such as negative
//! dust: an instrument fault, never judged).

use crate::config::metrics::Catalog;
use crate::model::{FieldKey, FieldValue, MetricSlot, Point, Readings};

/// A value against its sensor's measuring range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeFlag {
    Normal,
    /// HJ 212 flag T: above the measuring range [P] (domain.md §3.7).
    Above,
    /// Below the range: impossible; HJ 212 flag D, instrument fault [P].
    Impossible,
}

impl RangeFlag {
    /// The HJ 212 data flag written with the point, if any.
    pub fn code(self) -> Option<&'static str> {
        match self {
            RangeFlag::Normal => None,
            RangeFlag::Above => Some("T"),
            RangeFlag::Impossible => Some("D"),
        }
    }

    /// Whether the rules, the AQI and the six 100% may use the value.
    pub fn judged(self) -> bool {
        self != RangeFlag::Impossible
    }
}

/// The device's range for this slot, or the metric's default (data/metrics.toml).
pub fn range_of(slot: &MetricSlot) -> Option<(f64, f64)> {
    slot.range
        .or_else(|| Catalog::builtin().get(&slot.metric).and_then(|i| i.range))
}

pub fn flag(slot: &MetricSlot, v: f64) -> RangeFlag {
    match range_of(slot) {
        Some((_, hi)) if v > hi => RangeFlag::Above,
        Some((lo, _)) if v < lo => RangeFlag::Impossible,
        _ => RangeFlag::Normal,
    }
}

/// Groups one device's readings into one point per measurement. Returns the points and the
/// number of values dropped as not finite.
pub fn to_points(r: &Readings) -> (Vec<Point>, usize) {
    let meta = &r.device;
    let mut points: Vec<Point> = meta
        .series
        .iter()
        .map(|s| Point {
            series: s.clone(),
            fields: Vec::new(),
            time_ms: r.time_ms,
        })
        .collect();
    let mut invalid = 0;
    for (i, (slot, value)) in meta.slots.iter().zip(&r.values).enumerate() {
        let Some(v) = value else { continue };
        if !v.is_finite() {
            invalid += 1;
            continue;
        }
        if let Some(p) = points.get_mut(slot.series) {
            p.fields.push((slot.field.clone(), FieldValue::Float(*v)));
            // The instrument's own flag (HJ 212) first: it knows why (maintenance,
            // calibration); our range check only sees the number.
            let code = match r.flag(i) {
                Some(c) => Some(c.to_string()),
                None => flag(slot, *v).code().map(str::to_string),
            };
            if let Some(code) = code {
                p.fields.push((
                    FieldKey::new(&format!("{}_flag", slot.metric)),
                    FieldValue::Str(code),
                ));
            }
        }
    }
    points.retain(|p| !p.fields.is_empty());
    (points, invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeviceMeta;
    use std::sync::Arc;

    #[test]
    fn groups_by_measurement_and_drops_non_finite() {
        let meta = Arc::new(DeviceMeta::new(
            "d1",
            "s1",
            &[],
            &[
                ("pm10", "air"),
                ("ph", "water"),
                ("pm25", "air"),
                ("x", "air"),
            ],
        ));
        let r = Readings {
            device: meta,
            time_ms: 5,
            values: vec![Some(35.0), Some(f64::NAN), Some(12.0), None],
            flags: Vec::new(),
        };
        let (points, invalid) = to_points(&r);
        assert_eq!(invalid, 1);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].series.as_str(), "air,device=d1,site=s1");
        assert_eq!(points[0].fields.len(), 2);
    }

    #[test]
    fn values_outside_the_range_are_flagged_t_above_and_d_below() {
        let meta = Arc::new(
            DeviceMeta::new("d1", "s1", &[], &[("pm10", "air"), ("pm25", "air")])
                .with_ranges([Some((0.0, 2000.0)), None]),
        );
        let r = Readings {
            device: meta.clone(),
            time_ms: 5,
            // pm10 within this device's range (2,000), pm25 above the default (1,000).
            values: vec![Some(1500.0), Some(1200.0)],
            flags: Vec::new(),
        };
        let (points, _) = to_points(&r);
        let mut b = Vec::new();
        crate::outputs::line_protocol::encode_point(&points[0], &mut b);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "air,device=d1,site=s1 pm10=1500,pm25=1200,pm25_flag=\"T\" 5\n"
        );
        assert_eq!(flag(&meta.slots[0], -3.0), RangeFlag::Impossible);
        assert!(!RangeFlag::Impossible.judged() && RangeFlag::Above.judged());
        assert_eq!(flag(&meta.slots[0], 2500.0), RangeFlag::Above);
        assert_eq!(flag(&meta.slots[1], 999.0), RangeFlag::Normal);
    }
}
