//! The values that flow from sources to outputs.
//!
//! A poll yields one [`Point`] per measurement: the series key (measurement and tags) is
//! escaped once, when a device is set up, so encoding a point copies bytes instead of
//! re-escaping names on every reading.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

/// Escaping for line protocol (see `crate::outputs::line_protocol` for the rules): done here,
/// once, when a series key or field key is made.
fn push_escaped(s: &str, out: &mut String, special: &[char]) {
    // A name may not end in a backslash (InfluxDB's parsers reject or misread it), so a
    // trailing run of backslashes is written as slashes.
    let body = s.trim_end_matches('\\');
    let trailing = s.len() - body.len();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\r' | '\t' => {
                if special.contains(&' ') {
                    out.push('\\');
                }
                out.push(' ');
            }
            '\\' => {
                out.push('\\');
                match chars.peek() {
                    None => {}
                    Some(n)
                        if *n == '\\' || special.contains(n) || matches!(n, '\n' | '\r' | '\t') =>
                    {
                        out.push('\\')
                    }
                    Some(_) => {}
                }
            }
            c if special.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    for _ in 0..trailing {
        out.push('/');
    }
}

/// Escapes a measurement name.
pub fn escape_measurement(s: &str, out: &mut String) {
    push_escaped(s, out, &[',', ' ']);
}

/// Escapes a tag key, tag value or field key.
pub fn escape_key(s: &str, out: &mut String) {
    push_escaped(s, out, &[',', '=', ' ']);
}

/// Measurement and tag set, already escaped for line protocol, tags sorted by key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey(Arc<str>);

impl SeriesKey {
    /// Tags with empty values are left out: line protocol cannot carry them.
    pub fn new(measurement: &str, tags: &[(&str, &str)]) -> Self {
        let mut sorted: Vec<&(&str, &str)> = tags.iter().filter(|(_, v)| !v.is_empty()).collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        sorted.dedup_by(|a, b| a.0 == b.0);
        let mut s = String::with_capacity(64);
        escape_measurement(measurement, &mut s);
        for (k, v) in sorted {
            s.push(',');
            escape_key(k, &mut s);
            s.push('=');
            escape_key(v, &mut s);
        }
        SeriesKey(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key as [`SeriesKey::as_str`] gave it (read back from a snapshot of our own).
    pub(crate) fn from_escaped(s: &str) -> Self {
        SeriesKey(s.into())
    }

    /// The same tags in the measurement named this one's plus `suffix` (`air` → `air_minute`),
    /// with one more tag (its key and value plain: letters, digits, `-`, `_`).
    pub fn derived(&self, suffix: &str, tag: (&str, &str)) -> SeriesKey {
        // The first comma not escaped ends the measurement; then `,key=value` pairs.
        let bytes = self.0.as_bytes();
        let mut split = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 1,
                b',' => split.push(i),
                _ => {}
            }
            i += 1;
        }
        let end = split.first().copied().unwrap_or(bytes.len());
        let mut pairs: Vec<&str> = split
            .iter()
            .enumerate()
            .map(|(n, &at)| &self.0[at + 1..split.get(n + 1).copied().unwrap_or(bytes.len())])
            .collect();
        let extra = format!("{}={}", tag.0, tag.1);
        pairs.push(&extra);
        let key_of = |p: &&str| {
            let b = p.as_bytes();
            let mut j = 0;
            while j < b.len() && b[j] != b'=' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            p[..j.min(p.len())].to_string()
        };
        pairs.sort_by_key(key_of);
        let mut s = String::with_capacity(self.0.len() + suffix.len() + extra.len() + 1);
        s.push_str(&self.0[..end]);
        s.push_str(suffix);
        for p in pairs {
            s.push(',');
            s.push_str(p);
        }
        SeriesKey(s.into())
    }
}

impl fmt::Debug for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A field name, already escaped for line protocol.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FieldKey(Arc<str>);

impl FieldKey {
    pub fn new(name: &str) -> Self {
        let mut s = String::with_capacity(name.len());
        escape_key(name, &mut s);
        FieldKey(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for FieldKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A field value. Numbers are always floats, so that no field ever changes type in InfluxDB.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Bool(bool),
    Str(String),
}

/// One line of line protocol: a series, its fields and the acquisition time in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub series: SeriesKey,
    pub fields: Vec<(FieldKey, FieldValue)>,
    pub time_ms: i64,
}

/// One value slot of a device: the metric it carries and where it goes.
#[derive(Debug, Clone)]
pub struct MetricSlot {
    pub metric: String,
    pub field: FieldKey,
    /// Index into [`DeviceMeta::series`].
    pub series: usize,
    /// The device's measuring range for this metric; `None`: the metric's default.
    pub range: Option<(f64, f64)>,
}

/// The tags of a device's points: `site`, `device` and the site's own tags (which may not be
/// named `site` or `device`: the configuration refuses them).
pub fn device_tags<'a>(
    site_id: &'a str,
    device: &'a str,
    tags: &'a [(String, String)],
) -> Vec<(&'a str, &'a str)> {
    let mut all: Vec<(&str, &str)> = Vec::with_capacity(tags.len() + 2);
    all.extend([("site", site_id), ("device", device)]);
    all.extend(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    all
}

/// The one shared copy of a device id. A hub keeps per-device state in several tables (data
/// quality, rule intervals, AQI, latest values, stations): keyed by a `String` each, every
/// table held its own heap copy of every id; keyed by this, they share one (16 bytes a key,
/// no allocation of its own). Ids are bounded by the devices configured and the stations
/// accepted, which the tables keep for the life of the process as well.
pub fn device_key(id: &str) -> Arc<str> {
    static IDS: std::sync::OnceLock<std::sync::Mutex<HashSet<Arc<str>>>> =
        std::sync::OnceLock::new();
    let mut ids = IDS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(k) = ids.get(id) {
        return k.clone();
    }
    let k: Arc<str> = id.into();
    ids.insert(k.clone());
    k
}

/// What the pipeline needs to know about a device to turn its readings into points. Built
/// once, when the device is set up.
#[derive(Debug)]
pub struct DeviceMeta {
    /// From [`device_key`].
    pub id: Arc<str>,
    /// Shared by every device of one shape (a hub's stations of one factor map).
    pub slots: Arc<[MetricSlot]>,
    /// One series per measurement the device writes to.
    pub series: Vec<SeriesKey>,
}

impl DeviceMeta {
    /// `metrics` are (metric, measurement) in slot order; tags are the site's and the device's.
    pub fn new(
        id: &str,
        site_id: &str,
        tags: &[(String, String)],
        metrics: &[(&str, &str)],
    ) -> Self {
        let (slots, measurements) = Self::slots(metrics);
        Self::with_slots(id, site_id, tags, slots, &measurements)
    }

    /// The slots of `metrics` (metric, measurement) and the measurements they write to, in
    /// the order of [`MetricSlot::series`]: what every device of one shape shares.
    pub fn slots(metrics: &[(&str, &str)]) -> (Arc<[MetricSlot]>, Vec<String>) {
        let mut measurements: Vec<&str> = Vec::new();
        let mut slots = Vec::with_capacity(metrics.len());
        for (metric, measurement) in metrics {
            let series = match measurements.iter().position(|m| m == measurement) {
                Some(i) => i,
                None => {
                    measurements.push(measurement);
                    measurements.len() - 1
                }
            };
            slots.push(MetricSlot {
                metric: (*metric).to_string(),
                field: FieldKey::new(metric),
                series,
                range: None,
            });
        }
        let measurements = measurements.iter().map(|m| m.to_string()).collect();
        (slots.into(), measurements)
    }

    /// A device with shared `slots` (see [`DeviceMeta::slots`]).
    pub fn with_slots(
        id: &str,
        site_id: &str,
        tags: &[(String, String)],
        slots: Arc<[MetricSlot]>,
        measurements: &[String],
    ) -> Self {
        let all_tags = device_tags(site_id, id, tags);
        let series = measurements
            .iter()
            .map(|m| SeriesKey::new(m, &all_tags))
            .collect();
        Self {
            id: device_key(id),
            slots,
            series,
        }
    }
}

impl DeviceMeta {
    /// The device's own measuring ranges, slot by slot (from its profile).
    pub fn with_ranges(mut self, ranges: impl IntoIterator<Item = Option<(f64, f64)>>) -> Self {
        let mut slots = self.slots.to_vec();
        for (slot, r) in slots.iter_mut().zip(ranges) {
            slot.range = r;
        }
        self.slots = slots.into();
        self
    }
}

/// The values of one device at one instant, slot by slot; `None` where a value was not read.
#[derive(Debug, Clone)]
pub struct Readings {
    pub device: Arc<DeviceMeta>,
    pub time_ms: i64,
    pub values: Vec<Option<f64>>,
    /// The data flag the instrument sent with each value (HJ 212 `-Flag`, domain.md §3.7),
    /// slot by slot; empty when the source has none (Modbus, MQTT). A value flagged other than
    /// `N` is written with its flag (`<metric>_flag`) and never judged.
    pub flags: Vec<Option<char>>,
}

impl Readings {
    /// When its device counts as seen, for readings that arrived at `now_ms`: on arrival (a
    /// monitor whose clock runs behind, or one resending old data, is not silent), or at their
    /// own time when that is later. `None` when they carry no value.
    pub fn seen_at(&self, now_ms: i64) -> Option<i64> {
        self.values
            .iter()
            .any(Option::is_some)
            .then_some(now_ms.max(self.time_ms))
    }

    /// The instrument's flag of slot `i`, when it is not `N` (normal).
    pub fn flag(&self, i: usize) -> Option<char> {
        self.flags.get(i).copied().flatten().filter(|c| *c != 'N')
    }
}

/// Site time in milliseconds since the Unix epoch: the wall clock, except in a demo replay
/// (see [`crate::clock`]).
pub fn now_ms() -> i64 {
    crate::clock::now_ms()
}

/// A vehicle at a gate, as an ANPR / AI camera saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Vehicle {
    pub device: String,
    pub time_ms: i64,
    pub plate: String,
    /// "in" or "out".
    pub direction: Option<String>,
    pub gate: Option<String>,
    pub muck_truck: Option<bool>,
    pub covered: Option<bool>,
    pub snapshot: Option<String>,
}

/// The AI detections the six 100% know.
pub const DETECTION_KINDS: &[&str] = &["uncovered_pile", "bare_soil", "hoarding_gap"];

/// An AI detection (uncovered pile, bare soil, hoarding gap) opened or cleared.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub device: String,
    pub time_ms: i64,
    /// One of [`DETECTION_KINDS`].
    pub kind: String,
    /// Tells several detections of one kind apart (default: the kind).
    pub id: String,
    pub open: bool,
    pub snapshot: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_derived_series_renames_the_measurement_and_keeps_the_tags_sorted() {
        let k = SeriesKey::new(
            "air",
            &[("site", "cd 01"), ("device", "d,1"), ("site-zone", "n")],
        );
        assert_eq!(k.as_str(), "air,device=d\\,1,site=cd\\ 01,site-zone=n");
        assert_eq!(
            k.derived("_minute", ("upstream", "city")).as_str(),
            "air_minute,device=d\\,1,site=cd\\ 01,site-zone=n,upstream=city"
        );
        let k = SeriesKey::new("water", &[("zz", "1"), ("device", "w")]);
        assert_eq!(
            k.derived("_day", ("upstream", "a")).as_str(),
            "water_day,device=w,upstream=a,zz=1"
        );
        assert_eq!(
            SeriesKey::new("air", &[])
                .derived("_hour", ("upstream", "a"))
                .as_str(),
            "air_hour,upstream=a"
        );
    }
}
