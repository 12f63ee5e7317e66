//! Device profiles: how a vendor's registers map to canonical metrics.
//!
//! A profile named in a config is looked up in a `devices/` folder beside the config file
//! first, then among the profiles built into the binary (this repository's `devices/`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::common::in_range;
use super::factors::{FactorMap, is_factor_map, parse_factor_map};
use super::json_profile::{JsonProfile, parse_json_profile};
use super::metrics::Catalog;
use super::reader::{Cx, Sp, TableReader, parse_document};
use super::source::{Diagnostic, Diagnostics, SourceFile};
use crate::register::{ByteOrder, Limits, Span, Table, ValueType, fits_address_space};

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// How sure we are of a profile's register map (reference/domain.md's marks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confidence {
    /// From the primary document.
    Primary,
    /// From vendor pages or other people's code.
    Secondary,
    /// Representative or unconfirmed: check against the vendor's manual.
    Unconfirmed,
}

impl Confidence {
    pub fn mark(self) -> &'static str {
        match self {
            Confidence::Primary => "[P]",
            Confidence::Secondary => "[S]",
            Confidence::Unconfirmed => "[U]",
        }
    }
}

/// `raw * scale + offset`. A decimal scale such as 0.1 is applied as a division by 10, so 609
/// reads as 60.9 and not as 60.900000000000006.
pub fn apply_scale(raw: f64, scale: f64, offset: f64) -> f64 {
    let inv = 1.0 / scale;
    let scaled = if scale.abs() < 1.0 && (inv - inv.round()).abs() < 1e-9 {
        raw / inv.round()
    } else {
        raw * scale
    };
    scaled + offset
}

/// One value a device holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Register {
    pub metric: String,
    pub measurement: String,
    pub table: Table,
    pub address: u16,
    pub ty: ValueType,
    pub order: ByteOrder,
    /// For a bool in a 16-bit register: the bit (0 = least significant).
    pub bit: Option<u8>,
    pub scale: f64,
    pub offset: f64,
    pub writable: bool,
    pub note: Option<String>,
    /// The device's measuring range `[lo, hi]` (`range = [0, 1000]`); `None`: the metric's
    /// default (data/metrics.toml). Above it a value is flagged T and still judged; below it
    /// (negative dust) it is impossible: flagged and not judged.
    pub range: Option<(f64, f64)>,
}

/// Reads a `range = [lo, hi]` key: two finite numbers, lo below hi.
pub(crate) fn read_range(
    cx: &mut Cx<'_>,
    v: Option<Sp<Vec<f64>>>,
    path: &str,
) -> Option<(f64, f64)> {
    let v = v?;
    match v.value.as_slice() {
        [lo, hi] if lo.is_finite() && hi.is_finite() && lo < hi => Some((*lo, *hi)),
        _ => {
            cx.error(
                &v.span,
                path,
                "range must be [low, high]: two numbers, low below high (the sensor's measuring range)",
            );
            None
        }
    }
}

impl Register {
    /// `raw * scale + offset`, see [`apply_scale`].
    pub fn apply_scale(&self, raw: f64) -> f64 {
        apply_scale(raw, self.scale, self.offset)
    }

    pub fn span(&self) -> Span {
        Span {
            table: self.table,
            address: self.address,
            count: self.ty.width(),
        }
    }
}

/// A validated Modbus device profile.
#[derive(Debug, Clone)]
pub struct ModbusProfile {
    pub name: String,
    /// The file it came from, as shown in messages.
    pub origin: String,
    pub description: String,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub source: String,
    pub confidence: Confidence,
    pub line: Option<String>,
    pub max_read: Option<u16>,
    pub max_gap: Option<u16>,
    pub read_singly: Option<bool>,
    pub registers: Vec<Register>,
}

impl ModbusProfile {
    /// The read limits the profile asks for (a device's config may override them).
    pub fn limits(&self) -> Limits {
        Limits {
            max_read: self.max_read.unwrap_or(125),
            max_gap: self.max_gap.unwrap_or(0),
            read_singly: self.read_singly.unwrap_or(false),
        }
    }
}

/// Where profiles are looked up, with a cache so each file is read and reported once.
pub struct ProfileLoader {
    dirs: Vec<PathBuf>,
    cache: HashMap<String, Option<Arc<ModbusProfile>>>,
    json_cache: HashMap<String, Option<Arc<JsonProfile>>>,
    factor_cache: HashMap<String, Option<Arc<FactorMap>>>,
    /// Notes for `check` (a site's own profile without `source` or `confidence`), each once.
    pub notes: Vec<Diagnostic>,
}

/// Why a profile could not be used.
pub enum ProfileError {
    /// No file by that name; the message lists the places searched.
    NotFound(String),
    /// The file exists but has problems (already recorded in the diagnostics).
    Invalid,
}

impl ProfileLoader {
    /// `dirs` are searched in order before the built-in profiles.
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self {
            dirs,
            cache: HashMap::new(),
            json_cache: HashMap::new(),
            factor_cache: HashMap::new(),
            notes: Vec::new(),
        }
    }

    /// The loader for a config file: `devices/` beside it, then built-ins.
    pub fn for_config(config_path: &Path) -> Self {
        let dir = config_path
            .parent()
            .map_or_else(|| PathBuf::from("devices"), |p| p.join("devices"));
        Self::new(vec![dir])
    }

    /// The built-in device profiles (the HJ 212 factor maps of devices/ are not profiles).
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTIN_DEVICES
            .iter()
            .filter(|(_, text)| !is_factor_map(text))
            .map(|(n, _)| *n)
    }

    /// The built-in HJ 212 factor maps.
    pub fn builtin_factor_names() -> impl Iterator<Item = &'static str> {
        BUILTIN_DEVICES
            .iter()
            .filter(|(_, text)| is_factor_map(text))
            .map(|(n, _)| *n)
    }

    /// Loads (once) and validates an HJ 212 factor map, recording its problems in `diags`.
    pub fn load_factors(
        &mut self,
        name: &str,
        diags: &mut Diagnostics,
    ) -> Result<Arc<FactorMap>, ProfileError> {
        if let Some(cached) = self.factor_cache.get(name) {
            return cached.clone().ok_or(ProfileError::Invalid);
        }
        let file = match self.locate_as(name, diags, "HJ 212 factor map", "maps") {
            Ok(f) => f,
            Err(ProfileError::NotFound(msg)) => {
                let builtin: Vec<&str> = Self::builtin_factor_names().collect();
                return Err(ProfileError::NotFound(format!(
                    "{msg}; built-in maps: {}",
                    builtin.join(", ")
                )));
            }
            Err(e) => return Err(e),
        };
        let before = diags.len();
        let map = parse_factor_map(name, &file, Catalog::builtin(), diags, &mut self.notes);
        let result = (diags.len() == before)
            .then_some(map)
            .flatten()
            .map(Arc::new);
        self.factor_cache.insert(name.to_string(), result.clone());
        result.ok_or(ProfileError::Invalid)
    }

    /// A factor map is not a device profile.
    fn refuse_factor_map(name: &str, file: &SourceFile, diags: &mut Diagnostics) -> bool {
        if is_factor_map(&file.text) {
            diags.push(file.diagnostic(
                &(0..0),
                "",
                format!("\"{name}\" is an HJ 212 factor map (factors = \"{name}\"), not a device profile"),
            ));
            return true;
        }
        false
    }

    /// Loads (once) and validates a Modbus profile, recording its problems in `diags`.
    pub fn load(
        &mut self,
        name: &str,
        diags: &mut Diagnostics,
    ) -> Result<Arc<ModbusProfile>, ProfileError> {
        if let Some(cached) = self.cache.get(name) {
            return cached.clone().ok_or(ProfileError::Invalid);
        }
        let file = self.locate(name, diags)?;
        if Self::refuse_factor_map(name, &file, diags) {
            self.cache.insert(name.to_string(), None);
            return Err(ProfileError::Invalid);
        }
        let before = diags.len();
        let profile = parse_profile(name, &file, Catalog::builtin(), diags, &mut self.notes);
        let result = (diags.len() == before)
            .then_some(profile)
            .flatten()
            .map(Arc::new);
        self.cache.insert(name.to_string(), result.clone());
        result.ok_or(ProfileError::Invalid)
    }

    /// Loads (once) and validates a JSON profile (for MQTT payloads).
    pub fn load_json(
        &mut self,
        name: &str,
        diags: &mut Diagnostics,
    ) -> Result<Arc<JsonProfile>, ProfileError> {
        if let Some(cached) = self.json_cache.get(name) {
            return cached.clone().ok_or(ProfileError::Invalid);
        }
        let file = self.locate(name, diags)?;
        if Self::refuse_factor_map(name, &file, diags) {
            self.json_cache.insert(name.to_string(), None);
            return Err(ProfileError::Invalid);
        }
        let before = diags.len();
        let profile = parse_json_profile(name, &file, Catalog::builtin(), diags, &mut self.notes);
        let result = (diags.len() == before)
            .then_some(profile)
            .flatten()
            .map(Arc::new);
        self.json_cache.insert(name.to_string(), result.clone());
        result.ok_or(ProfileError::Invalid)
    }

    /// Finds and reads a profile file by name.
    fn locate(&self, name: &str, diags: &mut Diagnostics) -> Result<Arc<SourceFile>, ProfileError> {
        match self.locate_as(name, diags, "device profile", "profiles") {
            Err(ProfileError::NotFound(msg)) if !msg.contains("may hold only") => {
                let builtin: Vec<&str> = Self::builtin_names().collect();
                Err(ProfileError::NotFound(format!(
                    "{msg}; built-in profiles: {}",
                    builtin.join(", ")
                )))
            }
            other => other,
        }
    }

    /// Finds and reads a file of devices/ by name; `what` names it in messages.
    fn locate_as(
        &self,
        name: &str,
        diags: &mut Diagnostics,
        what: &str,
        whats: &str,
    ) -> Result<Arc<SourceFile>, ProfileError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(ProfileError::NotFound(format!(
                "{what} name \"{name}\" may hold only lowercase letters, digits, '-' and '_'"
            )));
        }
        match self.find(name) {
            Some(Ok(f)) => Ok(f),
            Some(Err(d)) => {
                diags.push(d);
                Err(ProfileError::Invalid)
            }
            None => {
                let mut places: Vec<String> = self
                    .dirs
                    .iter()
                    .map(|d| d.join(format!("{name}.toml")).display().to_string())
                    .collect();
                places.push(format!("the built-in {whats}"));
                Err(ProfileError::NotFound(format!(
                    "no {what} \"{name}\" (looked in {})",
                    places.join(", ")
                )))
            }
        }
    }

    fn find(&self, name: &str) -> Option<Result<Arc<SourceFile>, Diagnostic>> {
        for dir in &self.dirs {
            let path = dir.join(format!("{name}.toml"));
            if path.is_file() {
                return Some(SourceFile::read(&path));
            }
        }
        BUILTIN_DEVICES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, text)| {
                Ok(SourceFile::new(
                    format!("devices/{n}.toml (built in)"),
                    None,
                    (*text).to_string(),
                ))
            })
    }
}

fn is_snake_case(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `source` and `confidence` of a profile. Both are required in the shipped library (a
/// profile built into the binary); a site's own profile (a file on disk) may leave them out:
/// unmarked counts as [U], and a note for `check` says so.
pub(crate) fn read_marks(
    cx: &mut Cx<'_>,
    root: &mut TableReader<'_, '_>,
    name: &str,
    notes: &mut Vec<Diagnostic>,
) -> (Option<String>, Option<Confidence>) {
    let shipped = cx.file.path.is_none();
    let (source, confidence) = if shipped {
        (
            root.req::<String>(cx, "source"),
            root.req::<String>(cx, "confidence"),
        )
    } else {
        (
            root.opt::<String>(cx, "source"),
            root.opt::<String>(cx, "confidence"),
        )
    };
    let mut missing = Vec::new();
    if !root.has("source") {
        missing.push("`source`");
    }
    if !root.has("confidence") {
        missing.push("`confidence`");
    }
    if !shipped && !missing.is_empty() {
        notes.push(cx.file.diagnostic(
            &(0..0),
            "",
            format!(
                "the site's profile \"{name}\" gives no {}: it counts as [U] (unconfirmed: check its registers against the vendor's manual)",
                missing.join(" and ")
            ),
        ));
    }
    let confidence = match confidence {
        None if !shipped && !root.has("confidence") => Some(Confidence::Unconfirmed),
        None => None,
        Some(c) => match c.value.as_str() {
            "P" => Some(Confidence::Primary),
            "S" => Some(Confidence::Secondary),
            "U" => Some(Confidence::Unconfirmed),
            other => {
                cx.error(
                    &c.span,
                    "confidence",
                    format!("unknown confidence \"{other}\": expected \"P\", \"S\" or \"U\""),
                );
                None
            }
        },
    };
    let source = match source {
        None if !shipped && !root.has("source") => Some(String::new()),
        s => s.map(|s| s.value),
    };
    (source, confidence)
}

/// Parses and validates one profile file. Problems go to `diags`, notes for `check` to `notes`.
pub fn parse_profile(
    name: &str,
    file: &Arc<SourceFile>,
    catalog: &Catalog,
    diags: &mut Diagnostics,
    notes: &mut Vec<Diagnostic>,
) -> Option<ModbusProfile> {
    let mut cx = Cx { file, diags };
    let doc = parse_document(&mut cx, &file.text)?;
    let mut root = TableReader::root(&doc);

    if root.has("field") || root.has("event") {
        cx.error(
            &root.span(),
            "",
            format!(
                "profile \"{name}\" maps JSON payloads (MQTT); a Modbus device needs a profile with [[register]]"
            ),
        );
        return None;
    }

    let description = root.req::<String>(&mut cx, "description");
    let vendor = root.opt::<String>(&mut cx, "vendor");
    let model = root.opt::<String>(&mut cx, "model");
    let (source, confidence) = read_marks(&mut cx, &mut root, name, notes);
    let line = root.opt::<String>(&mut cx, "line");
    let max_read = root
        .opt::<i64>(&mut cx, "max_read")
        .and_then(|v| in_range(&mut cx, &v, "max_read", 1, 125));
    let max_gap = root
        .opt::<i64>(&mut cx, "max_gap")
        .and_then(|v| in_range(&mut cx, &v, "max_gap", 0, 124));
    let read_singly = root.opt::<bool>(&mut cx, "read_singly");
    let default_measurement = root.opt::<String>(&mut cx, "measurement");

    let mut registers: Vec<(Register, Sp<()>)> = Vec::new();
    let tables = root.tables(&mut cx, "register");
    if tables.is_empty() {
        cx.error(
            &root.span(),
            "register",
            "a Modbus profile needs at least one [[register]]",
        );
    }
    for mut t in tables {
        let path = t.path().to_string();
        let metric = t.req::<String>(&mut cx, "metric");
        let table = t.req::<String>(&mut cx, "table").and_then(|s| {
            s.value
                .parse::<Table>()
                .map_err(|e| cx.error(&s.span, &t.key_path("table"), e))
                .ok()
                .map(|v| Sp::new(v, s.span))
        });
        let address = t
            .req::<i64>(&mut cx, "address")
            .and_then(|v| in_range(&mut cx, &v, &t.key_path("address"), 0, 65535));
        let ty = t.req::<String>(&mut cx, "type").and_then(|s| {
            s.value
                .parse::<ValueType>()
                .map_err(|e| cx.error(&s.span, &t.key_path("type"), e))
                .ok()
                .map(|v| Sp::new(v, s.span))
        });
        let order = t.opt::<String>(&mut cx, "order").and_then(|s| {
            s.value
                .parse::<ByteOrder>()
                .map_err(|e| cx.error(&s.span, &t.key_path("order"), e))
                .ok()
        });
        let bit = t
            .opt::<i64>(&mut cx, "bit")
            .and_then(|v| in_range(&mut cx, &v, &t.key_path("bit"), 0, 15));
        let scale = t.opt::<f64>(&mut cx, "scale");
        let offset = t.opt::<f64>(&mut cx, "offset");
        let writable = t.opt::<bool>(&mut cx, "writable");
        let measurement = t.opt::<String>(&mut cx, "measurement");
        let note = t.opt::<String>(&mut cx, "note");
        let range_key = t.key_path("range");
        let range = t.opt::<Vec<f64>>(&mut cx, "range");
        let range = read_range(&mut cx, range, &range_key);
        let span = t.span();
        t.finish(&mut cx);

        let (Some(metric), Some(table), Some(address), Some(ty)) = (metric, table, address, ty)
        else {
            continue;
        };
        let key = |k: &str| format!("{path}.{k}");
        if !is_snake_case(&metric.value) {
            cx.error(
                &metric.span,
                &key("metric"),
                format!(
                    "metric \"{}\" must be snake_case (lowercase letters, digits, '_')",
                    metric.value
                ),
            );
        }
        if table.value.is_bits() && ty.value != ValueType::Bool {
            cx.error(
                &ty.span,
                &key("type"),
                format!(
                    "a {} holds single bits: its type must be \"bool\", not \"{}\"",
                    table.value, ty.value
                ),
            );
        }
        if bit.is_some() && (ty.value != ValueType::Bool || table.value.is_bits()) {
            cx.error(
                &span,
                &key("bit"),
                "`bit` selects one bit of a holding or input register and needs type = \"bool\"",
            );
        }
        if let Some(w) = &writable
            && w.value
            && !matches!(table.value, Table::Coil | Table::Holding)
        {
            cx.error(
                &w.span,
                &key("writable"),
                format!(
                    "only coils and holding registers can be written, not a {} register",
                    table.value
                ),
            );
        }
        if let Some(s) = &scale
            && s.value == 0.0
        {
            cx.error(&s.span, &key("scale"), "scale must not be 0");
        }
        let span_regs = Span {
            table: table.value,
            address: address.value,
            count: ty.value.width(),
        };
        if !fits_address_space(&span_regs) {
            cx.error(
                &address.span,
                &key("address"),
                format!(
                    "a {} at address {} runs past the last address 65535",
                    ty.value, address.value
                ),
            );
        }
        let canonical = catalog.get(&metric.value);
        let measurement = match (canonical, measurement, &default_measurement) {
            (Some(info), Some(m), _) if m.value != info.measurement => {
                cx.error(
                    &m.span,
                    &key("measurement"),
                    format!(
                        "\"{}\" is a canonical metric and always goes to measurement \"{}\"",
                        metric.value, info.measurement
                    ),
                );
                info.measurement.clone()
            }
            (Some(info), _, _) => info.measurement.clone(),
            (None, Some(m), _) => m.value,
            (None, None, Some(m)) => m.value.clone(),
            (None, None, None) => {
                cx.error(
                    &metric.span,
                    &key("metric"),
                    format!(
                        "\"{}\" is not a canonical metric, so it needs a measurement: set `measurement` on the register or the profile",
                        metric.value
                    ),
                );
                String::new()
            }
        };
        let reg = Register {
            metric: metric.value,
            measurement,
            table: table.value,
            address: address.value,
            ty: ty.value,
            order: order.unwrap_or_default(),
            bit: bit.map(|b| b.value),
            scale: scale.map_or(1.0, |s| s.value),
            offset: offset.map_or(0.0, |s| s.value),
            writable: writable.is_some_and(|w| w.value),
            note: note.map(|n| n.value),
            range,
        };
        // One metric once; registers must not overlap (bits of one register may share it).
        for (other, other_span) in &registers {
            if other.metric == reg.metric {
                cx.error(
                    &span,
                    &key("metric"),
                    format!(
                        "metric \"{}\" is already mapped at line {}",
                        reg.metric,
                        file.position(other_span.span.start).0
                    ),
                );
            }
            let a = other.span();
            let b = reg.span();
            let overlap = a.table == b.table
                && u32::from(a.address) < u32::from(b.address) + u32::from(b.count)
                && u32::from(b.address) < u32::from(a.address) + u32::from(a.count);
            let shared_bits = other.bit.is_some() && reg.bit.is_some() && a == b;
            if overlap && !shared_bits {
                cx.error(
                    &span,
                    &key("address"),
                    format!(
                        "registers overlap: {} {} ({} at {}, {} register(s)) and {} ({} at {}, line {})",
                        reg.table,
                        reg.metric,
                        reg.ty,
                        reg.address,
                        reg.ty.width(),
                        other.metric,
                        other.ty,
                        other.address,
                        file.position(other_span.span.start).0
                    ),
                );
            }
        }
        registers.push((reg, Sp::new((), span)));
    }
    root.finish(&mut cx);

    Some(ModbusProfile {
        name: name.to_string(),
        origin: file.name.clone(),
        description: description?.value,
        vendor: vendor.map(|v| v.value),
        model: model.map(|v| v.value),
        source: source?,
        confidence: confidence?,
        line: line.map(|v| v.value),
        max_read: max_read.map(|v| v.value),
        max_gap: max_gap.map(|v| v.value),
        read_singly: read_singly.map(|v| v.value),
        registers: registers.into_iter().map(|(r, _)| r).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_scales_give_the_decimal_value() {
        let mut r = Register {
            metric: "humidity".into(),
            measurement: "air".into(),
            table: Table::Holding,
            address: 0,
            ty: ValueType::U16,
            order: ByteOrder::Abcd,
            bit: None,
            scale: 0.1,
            offset: 0.0,
            writable: false,
            note: None,
            range: None,
        };
        assert_eq!(r.apply_scale(609.0), 60.9);
        r.scale = 0.01;
        assert_eq!(r.apply_scale(10132.0), 101.32);
        r.scale = 2.5;
        r.offset = -40.0;
        assert_eq!(r.apply_scale(20.0), 10.0);
    }

    #[test]
    fn every_builtin_profile_is_valid() {
        let mut loader = ProfileLoader::new(vec![]);
        let mut diags = Diagnostics::default();
        let names: Vec<&str> = ProfileLoader::builtin_names().collect();
        assert!(names.len() >= 12, "{names:?}");
        for (name, text) in BUILTIN_DEVICES {
            let ok = if is_factor_map(text) {
                loader.load_factors(name, &mut diags).is_ok()
            } else if text.contains("[[field]]") {
                loader.load_json(name, &mut diags).is_ok()
            } else {
                loader.load(name, &mut diags).is_ok()
            };
            assert!(ok, "{name}: {diags}");
        }
        assert!(diags.is_empty(), "{diags}");
        let ph = loader.load("phg-2091-ph", &mut diags).ok().unwrap();
        let r = ph.registers.iter().find(|r| r.metric == "ph").unwrap();
        assert_eq!(
            (r.address, r.ty, r.order),
            (0x2602, ValueType::F32, ByteOrder::Dcba)
        );
        let relay = loader.load("relay-module-8ch", &mut diags).ok().unwrap();
        assert!(
            relay
                .registers
                .iter()
                .any(|r| r.metric == "fog_cannon_on" && r.writable)
        );
        // A JSON profile is not a Modbus profile, and the other way round.
        assert!(loader.load("gate-camera", &mut diags).is_err());
        assert!(diags.to_string().contains("maps JSON payloads"), "{diags}");
        let mut d2 = Diagnostics::default();
        assert!(loader.load_json("phg-2091-ph", &mut d2).is_err());
        assert!(d2.to_string().contains("maps Modbus registers"), "{d2}");
    }

    #[test]
    fn a_sites_own_profile_may_leave_out_source_and_confidence() {
        let modbus = "description = \"x\"\n[[register]]\nmetric = \"pm10\"\ntable = \"holding\"\naddress = 0\ntype = \"u16\"\n";
        let json = "description = \"x\"\nsource = \"vendor sheet\"\n[[field]]\nmetric = \"pm10\"\npointer = \"/pm10\"\n";
        // On disk beside the config: accepted as [U], with a note naming the profile.
        let own = SourceFile::new(
            "site/devices/m.toml",
            Some(PathBuf::from("site/devices/m.toml")),
            modbus.to_string(),
        );
        let (mut diags, mut notes) = (Diagnostics::default(), Vec::new());
        let p = parse_profile("m", &own, Catalog::builtin(), &mut diags, &mut notes);
        assert!(diags.is_empty(), "{diags}");
        let p = p.expect("a site's unmarked profile loads");
        assert_eq!(p.confidence, Confidence::Unconfirmed);
        let notes: Vec<String> = notes.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            notes,
            [
                "site/devices/m.toml:1:1: the site's profile \"m\" gives no `source` and `confidence`: it counts as [U] (unconfirmed: check its registers against the vendor's manual)"
            ]
        );
        let own_json = SourceFile::new(
            "site/devices/j.toml",
            Some(PathBuf::from("site/devices/j.toml")),
            json.to_string(),
        );
        let mut notes = Vec::new();
        let j = parse_json_profile("j", &own_json, Catalog::builtin(), &mut diags, &mut notes);
        assert!(diags.is_empty() && j.is_some(), "{diags}");
        assert!(
            notes[0]
                .to_string()
                .contains("gives no `confidence`: it counts as [U]")
        );
        // The shipped library (built into the binary) still needs both marks.
        let shipped = SourceFile::new("devices/m.toml (built in)", None, modbus.to_string());
        let mut notes = Vec::new();
        assert!(parse_profile("m", &shipped, Catalog::builtin(), &mut diags, &mut notes).is_none());
        let all = diags.to_string();
        assert!(all.contains("missing required key `source`"), "{all}");
        assert!(all.contains("missing required key `confidence`"), "{all}");
        assert!(notes.is_empty());
    }

    #[test]
    fn profile_problems_are_all_reported_with_positions() {
        let text = r#"description = "x"
source = "y"
confidence = "Q"
[[register]]
metric = "pm10"
table = "holding"
address = 0
type = "u32"
[[register]]
metric = "pm25"
table = "holding"
address = 1
type = "u16"
[[register]]
metric = "relay"
table = "coil"
address = 0
type = "u16"
writable = true
colour = "red"
"#;
        let file = SourceFile::new("p.toml", None, text.to_string());
        let mut diags = Diagnostics::default();
        parse_profile("p", &file, Catalog::builtin(), &mut diags, &mut Vec::new());
        let all = diags.to_string();
        assert!(
            all.contains("p.toml:3:14: confidence: unknown confidence \"Q\""),
            "{all}"
        );
        assert!(
            all.contains("p.toml:9:1: register[1].address: registers overlap"),
            "{all}"
        );
        assert!(
            all.contains("register[2].type: a coil holds single bits"),
            "{all}"
        );
        assert!(
            all.contains("register[2].metric: \"relay\" is not a canonical metric"),
            "{all}"
        );
        assert!(
            all.contains("p.toml:20:1: register[2].colour: unknown key `colour`"),
            "{all}"
        );
        assert_eq!(diags.len(), 5, "{all}");
    }
}
