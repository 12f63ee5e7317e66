//! Validation of decoded readings: a value that is not a finite number (NaN, ±inf — a float
//! register holding garbage, a sensor fault pattern) is never written, and is counted.

use crate::model::{FieldValue, Point, Readings};

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
    for (slot, value) in meta.slots.iter().zip(&r.values) {
        let Some(v) = value else { continue };
        if !v.is_finite() {
            invalid += 1;
            continue;
        }
        if let Some(p) = points.get_mut(slot.series) {
            p.fields.push((slot.field.clone(), FieldValue::Float(*v)));
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
        };
        let (points, invalid) = to_points(&r);
        assert_eq!(invalid, 1);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].series.as_str(), "air,device=d1,site=s1");
        assert_eq!(points[0].fields.len(), 2);
    }
}
