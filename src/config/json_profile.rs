//! JSON profiles: how an MQTT payload maps to canonical metrics, or to an event.
//!
//! ```toml
//! description = "..."
//! timestamp = "/ts"          # optional: epoch seconds, epoch milliseconds or RFC 3339
//! items = "/readings"        # optional: an array, one reading per element
//! [[field]]
//! metric = "pm10"
//! pointer = "/data/pm10"     # JSON pointer; numbers, numeric strings, booleans
//! scale = 1.0
//! ```
//! With `items`, the field and timestamp pointers are taken inside each element.
//! An event profile has `event = "vehicle"` or `event = "detection"` and fields with a `name`
//! instead of a metric. A detection profile may translate the vendor's labels:
//! `kinds = { "物料未覆盖" = "uncovered_pile" }`, or fix one kind: `kind = "hoarding_gap"`.

use std::sync::Arc;

use super::metrics::Catalog;
use super::reader::{Cx, TableReader, parse_document};
use super::source::{Diagnostics, SourceFile};

/// The kinds of event a profile can produce, and the fields each has.
pub const VEHICLE_FIELDS: &[&str] = &[
    "plate",
    "direction",
    "gate",
    "muck_truck",
    "covered",
    "snapshot",
];

pub const DETECTION_FIELDS: &[&str] = &["kind", "state", "id", "snapshot"];

#[derive(Debug, Clone, PartialEq)]
pub struct JsonField {
    pub metric: String,
    pub measurement: String,
    pub pointer: Pointer,
    pub scale: f64,
    pub offset: f64,
    /// The sensor's measuring range (see [`super::profile::Register::range`]).
    pub range: Option<(f64, f64)>,
}

/// A JSON pointer (RFC 6901) split into its unescaped tokens when the profile is loaded, so
/// that looking a field up in a message is a walk through the document, with no scan of the
/// pointer's text: it runs for every field of every message (`~1`/`~0` undone once here).
#[derive(Debug, Clone, PartialEq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    /// `text` is a checked pointer: empty (the whole document) or starting with '/'.
    pub fn new(text: &str) -> Pointer {
        let tokens = match text.strip_prefix('/') {
            None => Vec::new(),
            Some(rest) => rest
                .split('/')
                .map(|t| t.replace("~1", "/").replace("~0", "~"))
                .collect(),
        };
        Pointer {
            text: text.to_string(),
            tokens,
        }
    }

    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }
}

impl std::fmt::Display for Pointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl JsonField {
    /// `raw * scale + offset`, decimal scales applied as divisions.
    pub fn apply_scale(&self, raw: f64) -> f64 {
        super::profile::apply_scale(raw, self.scale, self.offset)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum JsonKind {
    /// Readings of canonical (or custom) metrics.
    Readings(Vec<JsonField>),
    /// A vehicle at a gate: (event field name, pointer).
    Vehicle(Vec<(String, String)>),
    /// An AI detection opened or cleared: fields, the vendor's labels translated to
    /// [`crate::model::DETECTION_KINDS`], and the kind when the profile fixes it.
    Detection {
        fields: Vec<(String, String)>,
        kinds: Vec<(String, String)>,
        kind: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct JsonProfile {
    pub name: String,
    pub origin: String,
    pub description: String,
    pub source: String,
    pub timestamp: Option<Pointer>,
    pub items: Option<String>,
    pub kind: JsonKind,
}

fn check_pointer(cx: &mut Cx<'_>, p: &super::reader::Sp<String>, path: &str) -> bool {
    if p.value.is_empty() || p.value.starts_with('/') {
        true
    } else {
        cx.error(
            &p.span,
            path,
            format!(
                "\"{}\" is not a JSON pointer: it starts with '/', e.g. \"/data/pm10\"",
                p.value
            ),
        );
        false
    }
}

/// The `[[field]]`s of an event profile: (name, pointer), names from `allowed`.
fn named_fields(
    cx: &mut Cx<'_>,
    tables: Vec<TableReader<'_, '_>>,
    what: &str,
    allowed: &[&str],
) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    for mut t in tables {
        let fname = t.req::<String>(cx, "name");
        let pointer = t.req::<String>(cx, "pointer");
        let path = t.path().to_string();
        t.finish(cx);
        let (Some(fname), Some(pointer)) = (fname, pointer) else {
            continue;
        };
        if !allowed.contains(&fname.value.as_str()) {
            cx.error(
                &fname.span,
                &format!("{path}.name"),
                format!(
                    "{what} has no field \"{}\": expected one of {}",
                    fname.value,
                    allowed.join(", ")
                ),
            );
            continue;
        }
        if check_pointer(cx, &pointer, &format!("{path}.pointer")) {
            fields.push((fname.value, pointer.value));
        }
    }
    fields
}

/// Parses and validates a JSON profile. Problems go to `diags`.
pub fn parse_json_profile(
    name: &str,
    file: &Arc<SourceFile>,
    catalog: &Catalog,
    diags: &mut Diagnostics,
    notes: &mut Vec<super::source::Diagnostic>,
) -> Option<JsonProfile> {
    let mut cx = Cx { file, diags };
    let doc = parse_document(&mut cx, &file.text)?;
    let mut root = TableReader::root(&doc);
    if root.has("register") {
        cx.error(
            &root.span(),
            "",
            format!("profile \"{name}\" maps Modbus registers; an MQTT subscription needs a profile with [[field]]"),
        );
        return None;
    }
    let description = root.req::<String>(&mut cx, "description");
    let (source, _confidence) = super::profile::read_marks(&mut cx, &mut root, name, notes);
    let _ = (
        root.opt::<String>(&mut cx, "vendor"),
        root.opt::<String>(&mut cx, "model"),
    );
    let timestamp = root.opt::<String>(&mut cx, "timestamp");
    let items = root.opt::<String>(&mut cx, "items");
    let event = root.opt::<String>(&mut cx, "event");
    let default_measurement = root.opt::<String>(&mut cx, "measurement");
    for p in [&timestamp, &items].into_iter().flatten() {
        check_pointer(
            &mut cx,
            p,
            if Some(p) == timestamp.as_ref() {
                "timestamp"
            } else {
                "items"
            },
        );
    }

    let tables = root.tables(&mut cx, "field");
    if tables.is_empty() {
        cx.error(
            &root.span(),
            "field",
            "a JSON profile needs at least one [[field]]",
        );
    }
    let kind = match &event {
        Some(e) if e.value == "vehicle" => {
            let fields = named_fields(&mut cx, tables, "a vehicle", VEHICLE_FIELDS);
            if !fields.iter().any(|(n, _)| n == "plate") {
                cx.error(
                    &root.span(),
                    "field",
                    "a vehicle profile needs a field named \"plate\"",
                );
            }
            JsonKind::Vehicle(fields)
        }
        Some(e) if e.value == "detection" => {
            let fields = named_fields(&mut cx, tables, "a detection", DETECTION_FIELDS);
            let fixed = root.opt::<String>(&mut cx, "kind");
            let labels = root.string_map(&mut cx, "kinds");
            let known = crate::model::DETECTION_KINDS;
            let mut kinds = Vec::new();
            for (label, kind) in &labels {
                if known.contains(&kind.value.as_str()) {
                    kinds.push((label.value.clone(), kind.value.clone()));
                } else {
                    cx.error(
                        &kind.span,
                        &format!("kinds.{}", label.value),
                        format!(
                            "unknown detection \"{}\": expected one of {}",
                            kind.value,
                            known.join(", ")
                        ),
                    );
                }
            }
            if let Some(k) = &fixed
                && !known.contains(&k.value.as_str())
            {
                cx.error(
                    &k.span,
                    "kind",
                    format!(
                        "unknown detection \"{}\": expected one of {}",
                        k.value,
                        known.join(", ")
                    ),
                );
            }
            if !fields.iter().any(|(n, _)| n == "state") {
                cx.error(
                    &root.span(),
                    "field",
                    "a detection profile needs a field named \"state\" (open / cleared)",
                );
            }
            if fixed.is_none() && !fields.iter().any(|(n, _)| n == "kind") {
                cx.error(
                    &root.span(),
                    "kind",
                    "a detection profile needs a field named \"kind\", or `kind = \"...\"` for all its messages",
                );
            }
            JsonKind::Detection {
                fields,
                kinds,
                kind: fixed.map(|k| k.value),
            }
        }
        Some(e) => {
            cx.error(
                &e.span,
                "event",
                format!(
                    "unknown event \"{}\": expected \"vehicle\" or \"detection\"",
                    e.value
                ),
            );
            return None;
        }
        None => {
            let mut fields: Vec<JsonField> = Vec::new();
            for mut t in tables {
                let metric = t.req::<String>(&mut cx, "metric");
                let pointer = t.req::<String>(&mut cx, "pointer");
                let scale = t.opt::<f64>(&mut cx, "scale");
                let offset = t.opt::<f64>(&mut cx, "offset");
                let measurement = t.opt::<String>(&mut cx, "measurement");
                let path = t.path().to_string();
                let range = t.opt::<Vec<f64>>(&mut cx, "range");
                let range = super::profile::read_range(&mut cx, range, &format!("{path}.range"));
                t.finish(&mut cx);
                let (Some(metric), Some(pointer)) = (metric, pointer) else {
                    continue;
                };
                if !check_pointer(&mut cx, &pointer, &format!("{path}.pointer")) {
                    continue;
                }
                if let Some(s) = &scale
                    && s.value == 0.0
                {
                    cx.error(&s.span, &format!("{path}.scale"), "scale must not be 0");
                }
                if fields.iter().any(|f| f.metric == metric.value) {
                    cx.error(
                        &metric.span,
                        &format!("{path}.metric"),
                        format!("metric \"{}\" is mapped twice", metric.value),
                    );
                    continue;
                }
                let measurement = match (
                    catalog.get(&metric.value),
                    measurement,
                    &default_measurement,
                ) {
                    (Some(info), _, _) => info.measurement.clone(),
                    (None, Some(m), _) => m.value,
                    (None, None, Some(m)) => m.value.clone(),
                    (None, None, None) => {
                        cx.error(
                            &metric.span,
                            &format!("{path}.metric"),
                            format!("\"{}\" is not a canonical metric, so it needs a measurement: set `measurement` on the field or the profile", metric.value),
                        );
                        continue;
                    }
                };
                fields.push(JsonField {
                    metric: metric.value,
                    measurement,
                    pointer: Pointer::new(&pointer.value),
                    scale: scale.map_or(1.0, |s| s.value),
                    offset: offset.map_or(0.0, |s| s.value),
                    range,
                });
            }
            JsonKind::Readings(fields)
        }
    };
    root.finish(&mut cx);
    Some(JsonProfile {
        name: name.to_string(),
        origin: file.name.clone(),
        description: description?.value,
        source: source?,
        timestamp: timestamp.map(|t| Pointer::new(&t.value)),
        items: items.map(|t| t.value),
        kind,
    })
}
