//! The values that flow from sources to outputs.
//!
//! A poll yields one [`Point`] per measurement: the series key (measurement and tags) is
//! escaped once, when a device is set up, so encoding a point copies bytes instead of
//! re-escaping names on every reading.

use std::fmt;
use std::sync::Arc;

use crate::outputs::line_protocol::{escape_key, escape_measurement};

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
