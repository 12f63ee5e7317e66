//! The canonical metric vocabulary, read from `data/metrics.toml` (built into the binary).

use std::sync::OnceLock;

use super::reader::{Cx, TableReader, parse_document};
use super::source::{Diagnostics, SourceFile};

/// One canonical metric: fixed unit and measurement.
#[derive(Debug, Clone)]
pub struct MetricInfo {
    pub name: String,
    pub unit: String,
    pub measurement: String,
    pub hj212: Option<String>,
    /// How alert messages name it.
    pub zh: String,
    pub en: String,
    /// Physical range of a typical sensor: outside it a reading is flagged, not judged.
    pub range: Option<(f64, f64)>,
    /// A value unchanged for this long is suspect.
    pub stuck_after: Option<std::time::Duration>,
}

#[derive(Debug, Default)]
pub struct Catalog {
    pub metrics: Vec<MetricInfo>,
}

const METRICS_TOML: &str = include_str!("../../data/metrics.toml");

impl Catalog {
    /// The built-in vocabulary. The file is part of the binary and checked by a unit test, so
    /// a failure here is a build defect, not bad input.
    pub fn builtin() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            Catalog::parse(METRICS_TOML).expect("data/metrics.toml is valid (checked by tests)")
        })
    }

    pub fn parse(text: &str) -> Result<Catalog, Diagnostics> {
        let file = SourceFile::new("data/metrics.toml (built in)", None, text.to_string());
        let mut diags = Diagnostics::default();
        let mut cx = Cx {
            file: &file,
            diags: &mut diags,
        };
        let mut metrics = Vec::new();
        if let Some(doc) = parse_document(&mut cx, &file.text) {
            let mut root = TableReader::root(&doc);
            for mut t in root.tables(&mut cx, "metric") {
                let name = t.req::<String>(&mut cx, "name");
                let unit = t.req::<String>(&mut cx, "unit");
                let measurement = t.req::<String>(&mut cx, "measurement");
                let hj212 = t.opt::<String>(&mut cx, "hj212");
                let zh = t.req::<String>(&mut cx, "zh");
                let en = t.req::<String>(&mut cx, "en");
                let range = t.opt::<Vec<f64>>(&mut cx, "range");
                let stuck_after = t.opt::<std::time::Duration>(&mut cx, "stuck_after");
                t.finish(&mut cx);
                if let (Some(name), Some(unit), Some(measurement), Some(zh), Some(en)) =
                    (name, unit, measurement, zh, en)
                {
                    metrics.push(MetricInfo {
                        name: name.value,
                        unit: unit.value,
                        measurement: measurement.value,
                        hj212: hj212.map(|h| h.value),
                        zh: zh.value,
                        en: en.value,
                        range: range.and_then(|r| match r.value.as_slice() {
                            [lo, hi] => Some((*lo, *hi)),
                            _ => None,
                        }),
                        stuck_after: stuck_after.map(|d| d.value),
                    });
                }
            }
            root.finish(&mut cx);
        }
        if diags.is_empty() {
            Ok(Catalog { metrics })
        } else {
            Err(diags)
        }
    }

    pub fn get(&self, name: &str) -> Option<&MetricInfo> {
        self.metrics.iter().find(|m| m.name == name)
    }
}

/// Unit text of a metric for display; empty for custom metrics.
pub fn unit_of(name: &str) -> &'static str {
    Catalog::builtin().get(name).map_or("", |m| m.unit.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses_and_holds_the_contract_vocabulary() {
        let c = Catalog::parse(METRICS_TOML).unwrap();
        assert_eq!(c.get("pm10").unwrap().measurement, "air");
        assert_eq!(c.get("pm25").unwrap().hj212.as_deref(), Some("a34004"));
        assert_eq!(c.get("cod").unwrap().measurement, "water");
        assert_eq!(c.get("wash_flow").unwrap().measurement, "equipment");
        assert_eq!(c.get("earthwork_active").unwrap().measurement, "activity");
        assert_eq!(c.metrics.len(), 28);
        assert_eq!(c.get("pm1").unwrap().hj212.as_deref(), Some("a34005"));
    }
}
