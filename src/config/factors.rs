//! HJ 212 factor maps: pollutant/factor codes (`a34002`, `LA`, the 2005 `011`) to canonical
//! metrics, with a unit factor and the decimals of the standard's data type.
//!
//! A map is data (`devices/hj212-standard.toml`, `devices/hj212-mgm3.toml`); a listener, a station
//! or an upstream names one with `factors = "<name>"`, looked up like a device profile: `devices/`
//! beside the config first, then the maps built into the binary. The file format is described in
//! the header comment of `devices/hj212-standard.toml`.

use std::collections::HashMap;
use std::sync::Arc;

use super::metrics::Catalog;
use super::profile::Confidence;
use super::reader::{Cx, TableReader, parse_document};
use super::source::{Diagnostic, Diagnostics, SourceFile};

/// The map used when none is named.
pub const DEFAULT_FACTOR_MAP: &str = "hj212-standard";

/// What marks a file as a factor map: `format = "hj212-factors"`.
pub const FORMAT: &str = "hj212-factors";

/// One code of a map.
#[derive(Debug, Clone, PartialEq)]
pub struct Factor {
    /// As on the wire, without the `-Rtd` / `-Avg` suffix (case-sensitive).
    pub code: String,
    /// A canonical metric (data/metrics.toml).
    pub metric: String,
    /// canonical value = wire value × factor; the uplink sends canonical ÷ factor.
    pub factor: f64,
    /// Decimals of the standard's data type (N3.3 → 3), for the uplink encoder.
    pub decimals: u8,
}

impl Factor {
    /// A wire value in the canonical unit.
    pub fn to_canonical(&self, wire: f64) -> f64 {
        wire * self.factor
    }

    /// A canonical value in the map's wire unit.
    pub fn to_wire(&self, canonical: f64) -> f64 {
        canonical / self.factor
    }
}

/// A validated factor map.
#[derive(Debug, Clone)]
pub struct FactorMap {
    pub name: String,
    /// The file it came from, as shown in messages (`devices/x.toml (built in)` or a path).
    pub origin: String,
    pub description: String,
    pub source: String,
    pub confidence: Confidence,
    /// In file order: the first code of a metric is the one the uplink sends.
    pub codes: Vec<Factor>,
    by_code: HashMap<String, usize>,
    by_metric: HashMap<String, usize>,
}

impl FactorMap {
    /// The entry of a wire code (`"a34002"`), if the map has it.
    pub fn lookup(&self, code: &str) -> Option<&Factor> {
        self.by_code.get(code).map(|&i| &self.codes[i])
    }

    /// The entry the uplink sends for a metric: the first code listed for it.
    pub fn code_for(&self, metric: &str) -> Option<&Factor> {
        self.by_metric.get(metric).map(|&i| &self.codes[i])
    }

    pub fn len(&self) -> usize {
        self.codes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }
}

/// Whether a file's text is a factor map (so the profile loader can refuse it as a profile, and
/// the built-in profile list leaves it out).
pub fn is_factor_map(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("format") && l.contains(&format!("\"{FORMAT}\""))
    })
}

/// A code on the wire: letters, digits and `_` only (`-` starts the `-Rtd` suffix, and `;`, `,`,
/// `=`, `&` separate fields).
fn valid_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 32
        && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses and validates one factor map file; problems go to `diags` with file:line:col.
pub fn parse_factor_map(
    name: &str,
    file: &Arc<SourceFile>,
    catalog: &Catalog,
    diags: &mut Diagnostics,
    notes: &mut Vec<Diagnostic>,
) -> Option<FactorMap> {
    let mut cx = Cx { file, diags };
    let doc = parse_document(&mut cx, &file.text)?;
    let mut root = TableReader::root(&doc);
    if !root.has("format") && (root.has("register") || root.has("field") || root.has("event")) {
        cx.error(
            &root.span(),
            "",
            format!(
                "\"{name}\" is a device profile, not an HJ 212 factor map (a map has format = \"{FORMAT}\" and [[code]] tables)"
            ),
        );
        return None;
    }
    let format = root.req::<String>(&mut cx, "format");
    if let Some(f) = &format
        && f.value != FORMAT
    {
        cx.error(
            &f.span,
            "format",
            format!(
                "unknown format \"{}\": a factor map has format = \"{FORMAT}\"",
                f.value
            ),
        );
    }
    let description = root.req::<String>(&mut cx, "description");
    let (source, confidence) = super::profile::read_marks(&mut cx, &mut root, name, notes);
    let tables = root.tables(&mut cx, "code");
    if tables.is_empty() {
        cx.error(
            &root.span(),
            "code",
            "a factor map needs at least one [[code]]",
        );
    }
    let mut codes: Vec<Factor> = Vec::new();
    let mut by_code: HashMap<String, usize> = HashMap::new();
    let mut code_lines: HashMap<String, usize> = HashMap::new();
    let mut by_metric: HashMap<String, usize> = HashMap::new();
    for mut t in tables {
        let code = t.req::<String>(&mut cx, "code");
        let metric = t.req::<String>(&mut cx, "metric");
        let factor = t.opt::<f64>(&mut cx, "factor");
        let decimals = t.req::<i64>(&mut cx, "decimals");
        let key = |k: &str| t.key_path(k);
        let (code_key, metric_key, factor_key, decimals_key) =
            (key("code"), key("metric"), key("factor"), key("decimals"));
        t.finish(&mut cx);
        let code = code.and_then(|c| {
            if !valid_code(&c.value) {
                cx.error(
                    &c.span,
                    &code_key,
                    format!(
                        "\"{}\" is not an HJ 212 code: 1 to 32 of A-Z a-z 0-9 _ (no suffix such as -Rtd)",
                        c.value
                    ),
                );
                return None;
            }
            if let Some(line) = code_lines.get(&c.value) {
                cx.error(
                    &c.span,
                    &code_key,
                    format!("code \"{}\" is already mapped at line {line}", c.value),
                );
                return None;
            }
            code_lines.insert(c.value.clone(), file.position(c.span.start).0);
            Some(c.value)
        });
        let metric = metric.and_then(|m| {
            if catalog.get(&m.value).is_none() {
                cx.error(
                    &m.span,
                    &metric_key,
                    format!(
                        "\"{}\" is not a canonical metric (data/metrics.toml): an HJ 212 value always lands in a canonical metric",
                        m.value
                    ),
                );
                return None;
            }
            Some(m.value)
        });
        let factor = match factor {
            None => Some(1.0),
            Some(f) if f.value > 0.0 && f.value.is_finite() => Some(f.value),
            Some(f) => {
                cx.error(
                    &f.span,
                    &factor_key,
                    "factor must be a positive number (canonical = wire × factor)",
                );
                None
            }
        };
        let decimals = decimals.and_then(|d| {
            super::common::in_range::<u8>(&mut cx, &d, &decimals_key, 0, 6).map(|d| d.value)
        });
        if let (Some(code), Some(metric), Some(factor), Some(decimals)) =
            (code, metric, factor, decimals)
        {
            let i = codes.len();
            by_code.insert(code.clone(), i);
            by_metric.entry(metric.clone()).or_insert(i);
            codes.push(Factor {
                code,
                metric,
                factor,
                decimals,
            });
        }
    }
    root.finish(&mut cx);
    format?;
    Some(FactorMap {
        name: name.to_string(),
        origin: file.name.clone(),
        description: description?.value,
        source: source?,
        confidence: confidence?,
        codes,
        by_code,
        by_metric,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::profile::ProfileLoader;

    fn load(name: &str) -> Arc<FactorMap> {
        let mut loader = ProfileLoader::new(vec![]);
        let mut diags = Diagnostics::default();
        match loader.load_factors(name, &mut diags) {
            Ok(m) => m,
            Err(_) => panic!("{name}: {diags}"),
        }
    }

    #[test]
    fn the_standard_map_is_canonical_both_ways() {
        let m = load("hj212-standard");
        assert_eq!(m.origin, "devices/hj212-standard.toml (built in)");
        assert_eq!(m.confidence, Confidence::Primary);
        let pm10 = m.lookup("a34002").unwrap();
        assert_eq!(
            (pm10.metric.as_str(), pm10.factor, pm10.decimals),
            ("pm10", 1.0, 3)
        );
        assert_eq!(m.lookup("a34005").unwrap().metric, "pm1");
        assert_eq!(m.lookup("a50001").unwrap().metric, "noise");
        assert_eq!(m.lookup("a01006").unwrap().decimals, 3);
        assert_eq!(m.lookup("a01008").unwrap().decimals, 0);
        assert_eq!(m.lookup("w01003").unwrap().metric, "turbidity");
        // 2005 codes come in, the 2017 code goes up.
        assert_eq!(m.lookup("011").unwrap().metric, "cod");
        assert_eq!(m.lookup("060").unwrap().metric, "nh3n");
        assert_eq!(m.code_for("cod").unwrap().code, "w01018");
        assert_eq!(m.code_for("ph").unwrap().code, "w01001");
        assert_eq!(m.code_for("noise").unwrap().code, "LA");
        assert!(m.lookup("a34002-Rtd").is_none());
        assert!(m.lookup("la").is_none());
        assert!(m.code_for("spray_on").is_none());
        assert_eq!(m.len(), 27);
        // Every canonical metric with an HJ 212 code in the catalog is in the map, with that code.
        for info in &Catalog::builtin().metrics {
            if let Some(code) = &info.hj212 {
                assert_eq!(
                    m.code_for(&info.name).map(|f| f.code.as_str()),
                    Some(code.as_str()),
                    "{}",
                    info.name
                );
            }
        }
    }

    #[test]
    fn the_mgm3_map_scales_particulates_only() {
        let m = load("hj212-mgm3");
        let pm25 = m.lookup("a34004").unwrap();
        assert_eq!(pm25.to_canonical(0.075), 75.0);
        assert_eq!(pm25.to_wire(75.0), 0.075);
        assert_eq!(m.lookup("a01001").unwrap().factor, 1.0);
        assert_eq!(m.len(), load("hj212-standard").len());
    }

    #[test]
    fn map_problems_have_positions() {
        let text = "format = \"hj212-factors\"\ndescription = \"x\"\nsource = \"y\"\nconfidence = \"U\"\n[[code]]\ncode = \"a34002\"\nmetric = \"pm10\"\ndecimals = 3\n[[code]]\ncode = \"a34002\"\nmetric = \"pm10\"\ndecimals = 3\n[[code]]\ncode = \"a34004-Rtd\"\nmetric = \"pm2.5\"\nfactor = 0\ndecimals = 9\nunit = \"mg\"\n";
        let file = SourceFile::new("m.toml", None, text.to_string());
        let mut diags = Diagnostics::default();
        let m = parse_factor_map("m", &file, Catalog::builtin(), &mut diags, &mut Vec::new());
        assert!(m.is_some());
        diags.sort();
        assert_eq!(
            diags.to_string(),
            "m.toml:10:8: code[1].code: code \"a34002\" is already mapped at line 6\n\
             m.toml:14:8: code[2].code: \"a34004-Rtd\" is not an HJ 212 code: 1 to 32 of A-Z a-z 0-9 _ (no suffix such as -Rtd)\n\
             m.toml:15:10: code[2].metric: \"pm2.5\" is not a canonical metric (data/metrics.toml): an HJ 212 value always lands in a canonical metric\n\
             m.toml:16:10: code[2].factor: factor must be a positive number (canonical = wire × factor)\n\
             m.toml:17:12: code[2].decimals: 9 is out of range: expected 0..=6\n\
             m.toml:18:1: code[2].unit: unknown key `unit`; expected one of: code, decimals, factor, metric"
        );
    }
}
