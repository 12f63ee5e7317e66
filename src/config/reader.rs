//! Reads a parsed TOML tree with spans into raw values, collecting every problem.
//!
//! serde stops at the first error; a site engineer fixing a config over a slow link wants all of
//! them at once. So the document is parsed with `toml`'s spanned tree (`DeTable`) and walked
//! here: each key that is asked for is checked for type, each key never asked for is reported as
//! unknown (with a suggestion), and each problem carries file, line, column and key path.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::source::{Diagnostics, SourceFile};

pub type Span = Range<usize>;

/// A value with the byte range it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sp<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Sp<T> {
    pub fn new(value: T, span: Span) -> Self {
        Self { value, span }
    }
}

/// The file being read and where its problems go.
pub struct Cx<'a> {
    pub file: &'a Arc<SourceFile>,
    pub diags: &'a mut Diagnostics,
}

impl Cx<'_> {
    pub fn error(&mut self, span: &Span, key_path: &str, message: impl Into<String>) {
        self.diags
            .push(self.file.diagnostic(span, key_path, message));
    }
}

/// Parses a document. Syntax errors are reported (all the parser could recover from); `None`
/// when the document is unusable.
pub fn parse_document<'i>(cx: &mut Cx<'_>, text: &'i str) -> Option<Spanned<DeTable<'i>>> {
    let (doc, errors) = DeTable::parse_recoverable(text);
    if errors.is_empty() {
        return Some(doc);
    }
    for e in errors {
        let span = e.span().unwrap_or(0..0);
        cx.error(&span, "", format!("TOML syntax: {}", e.message().trim()));
    }
    None
}

/// A view of one TOML table that remembers which keys were asked for.
pub struct TableReader<'t, 'i> {
    table: &'t DeTable<'i>,
    span: Span,
    path: String,
    asked: Vec<&'static str>,
}

impl<'t, 'i> TableReader<'t, 'i> {
    pub fn root(doc: &'t Spanned<DeTable<'i>>) -> Self {
        Self::new(doc.get_ref(), doc.span(), String::new())
    }

    fn new(table: &'t DeTable<'i>, span: Span, path: String) -> Self {
        Self {
            table,
            span,
            path,
            asked: Vec::new(),
        }
    }

    /// Key path of this table, e.g. `modbus[0].device[2]`.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn span(&self) -> Span {
        self.span.clone()
    }

    /// The key path of a key in this table.
    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.table.get(key).is_some()
    }

    /// A string value, if the key holds one, without marking the key as read.
    pub fn peek_str(&self, key: &str) -> Option<&str> {
        match self.table.get(key)?.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            _ => None,
        }
    }

    /// An array of strings, if the key holds one, without marking the key as read.
    pub fn peek_str_list(&self, key: &str) -> Option<Vec<String>> {
        match self.table.get(key)?.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .map(|i| match i.get_ref() {
                    DeValue::String(s) => Some(s.to_string()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }

    /// The span of a key's value (the table's span if absent).
    pub fn table_span(&self, key: &str) -> Span {
        self.table.get(key).map_or(self.span.clone(), |v| v.span())
    }

    /// Marks a key as known without reading it.
    pub fn skip(&mut self, key: &'static str) {
        if !self.asked.contains(&key) {
            self.asked.push(key);
        }
    }

    fn take(&mut self, key: &'static str) -> Option<&'t Spanned<DeValue<'i>>> {
        if !self.asked.contains(&key) {
            self.asked.push(key);
        }
        self.table.get(key)
    }

    /// An optional value; a wrong type or bad value is reported and gives `None`.
    pub fn opt<T: FromToml>(&mut self, cx: &mut Cx<'_>, key: &'static str) -> Option<Sp<T>> {
        let v = self.take(key)?;
        match T::from_toml(v.get_ref()) {
            Ok(value) => Some(Sp::new(value, v.span())),
            Err(msg) => {
                cx.error(&v.span(), &self.key_path(key), msg);
                None
            }
        }
    }

    /// A required value; its absence is reported at the table.
    pub fn req<T: FromToml>(&mut self, cx: &mut Cx<'_>, key: &'static str) -> Option<Sp<T>> {
        if self.table.get(key).is_none() {
            self.asked.push(key);
            let where_ = if self.path.is_empty() {
                "the top level".to_string()
            } else {
                format!("[{}]", self.path)
            };
            cx.error(
                &self.span,
                &self.key_path(key),
                format!("missing required key `{key}` in {where_}"),
            );
            return None;
        }
        self.opt(cx, key)
    }

    /// An optional sub-table.
    pub fn table(&mut self, cx: &mut Cx<'_>, key: &'static str) -> Option<TableReader<'t, 'i>> {
        let v = self.take(key)?;
        let path = self.key_path(key);
        match v.get_ref() {
            DeValue::Table(t) => Some(TableReader::new(t, v.span(), path)),
            other => {
                cx.error(
                    &v.span(),
                    &path,
                    format!("expected a table, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An array of tables (`[[key]]`); absent means empty.
    pub fn tables(&mut self, cx: &mut Cx<'_>, key: &'static str) -> Vec<TableReader<'t, 'i>> {
        let Some(v) = self.take(key) else {
            return Vec::new();
        };
        let path = self.key_path(key);
        let DeValue::Array(items) = v.get_ref() else {
            cx.error(
                &v.span(),
                &path,
                format!(
                    "expected an array of tables ([[{key}]]), found {}",
                    type_name(v.get_ref())
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            match item.get_ref() {
                DeValue::Table(t) => out.push(TableReader::new(t, item.span(), item_path)),
                other => cx.error(
                    &item.span(),
                    &item_path,
                    format!("expected a table, found {}", type_name(other)),
                ),
            }
        }
        out
    }

    /// A table of string values, e.g. `tags = { district = "jinjiang" }`, in file order.
    pub fn string_map(
        &mut self,
        cx: &mut Cx<'_>,
        key: &'static str,
    ) -> Vec<(Sp<String>, Sp<String>)> {
        let Some(t) = self.table(cx, key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in t.table.iter() {
            let path = t.key_path(k.get_ref());
            match v.get_ref() {
                DeValue::String(s) => out.push((
                    Sp::new(k.get_ref().to_string(), k.span()),
                    Sp::new(s.to_string(), v.span()),
                )),
                other => cx.error(
                    &v.span(),
                    &path,
                    format!("expected a string, found {}", type_name(other)),
                ),
            }
        }
        // Every key of a free-form map is known, so `t` is not finished.
        out
    }

    /// Reports every key that was never asked for.
    pub fn finish(self, cx: &mut Cx<'_>) {
        for (k, _) in self.table.iter() {
            let key = k.get_ref().as_ref();
            if self.asked.contains(&key) {
                continue;
            }
            let mut msg = format!("unknown key `{key}`");
            if let Some(s) = closest(key, &self.asked) {
                msg.push_str(&format!("; did you mean `{s}`?"));
            } else if !self.asked.is_empty() {
                let mut known = self.asked.clone();
                known.sort_unstable();
                msg.push_str(&format!("; expected one of: {}", known.join(", ")));
            }
            cx.error(&k.span(), &self.key_path(key), msg);
        }
    }
}

/// The known key nearest to a misspelt one, if it is near enough to be a typo.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

pub fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// A leaf value that can be read from TOML; the error is the message shown to the user.
pub trait FromToml: Sized {
    fn from_toml(v: &DeValue<'_>) -> Result<Self, String>;
}

impl FromToml for String {
    fn from_toml(v: &DeValue<'_>) -> Result<Self, String> {
        match v {
            DeValue::String(s) => Ok(s.to_string()),
            other => Err(format!("expected a string, found {}", type_name(other))),
        }
    }
}

impl FromToml for bool {
    fn from_toml(v: &DeValue<'_>) -> Result<Self, String> {
        match v {
            DeValue::Boolean(b) => Ok(*b),
            other => Err(format!(
                "expected a boolean (true or false), found {}",
                type_name(other)
            )),
        }
    }
}

impl FromToml for i64 {
    fn from_toml(v: &DeValue<'_>) -> Result<Self, String> {
        match v {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| format!("integer {i} is out of range")),
            other => Err(format!("expected an integer, found {}", type_name(other))),
        }
    }
}

impl FromToml for f64 {
    fn from_toml(v: &DeValue<'_>) -> Result<Self, String> {
        match v {
            DeValue::Float(f) => {
                let x: f64 = f
                    .as_str()
                    .parse()
                    .map_err(|_| format!("invalid number {f}"))?;
                if x.is_finite() {
                    Ok(x)
                } else {
                    Err(format!("expected a finite number, found {f}"))
                }
            }
            DeValue::Integer(_) => i64::from_toml(v).map(|i| i as f64),
            other => Err(format!("expected a number, found {}", type_name(other))),
        }
    }
}

impl<T: FromToml> FromToml for Vec<T> {
    fn from_toml(v: &DeValue<'_>) -> Result<Self, String> {
        match v {
            DeValue::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| T::from_toml(item.get_ref()).map_err(|e| format!("item {i}: {e}")))
                .collect(),
            other => Err(format!("expected an array, found {}", type_name(other))),
        }
    }
}

/// A duration written as text: `"500ms"`, `"10s"`, `"1m 30s"`, `"PT5S"`.
impl FromToml for Duration {
    fn from_toml(v: &DeValue<'_>) -> Result<Self, String> {
        let DeValue::String(s) = v else {
            return Err(format!(
                "expected a duration such as \"10s\" or \"500ms\", found {}",
                type_name(v)
            ));
        };
        parse_duration(s)
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid duration \"{s}\": write it like \"500ms\", \"10s\", \"5m\", \"1h 30m\" or \"7d\""
        )
    };
    let d: jiff::SignedDuration = match s.trim().parse() {
        Ok(d) => d,
        // Days (`keep = "7d"`) are a calendar unit to jiff: here a day is 24 hours.
        Err(_) => s
            .trim()
            .parse::<jiff::Span>()
            .ok()
            .filter(|sp| sp.get_years() == 0 && sp.get_months() == 0 && sp.get_weeks() == 0)
            .and_then(|sp| {
                sp.to_duration(jiff::SpanRelativeTo::days_are_24_hours())
                    .ok()
            })
            .ok_or_else(invalid)?,
    };
    Duration::try_from(d).map_err(|_| format!("duration \"{s}\" must not be negative"))
}

/// A size in bytes: an integer, or text such as `"64MiB"`, `"2GiB"`, `"500 MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromToml for ByteSize {
    fn from_toml(v: &DeValue<'_>) -> Result<Self, String> {
        match v {
            DeValue::Integer(_) => {
                let n = i64::from_toml(v)?;
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| "a size must not be negative".to_string())
            }
            DeValue::String(s) => parse_byte_size(s).map(ByteSize),
            other => Err(format!(
                "expected a size such as \"64MiB\", found {}",
                type_name(other)
            )),
        }
    }
}

pub fn parse_byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("invalid size \"{s}\": write it like \"512MiB\" or \"2GiB\"");
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = n * mult as f64;
    if !(0.0..=u64::MAX as f64).contains(&bytes) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_byte_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_byte_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_byte_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_byte_size("1000"), Ok(1000));
        assert!(parse_byte_size("2 gigs").is_err());
        assert!(parse_byte_size("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn typo_suggestions() {
        assert_eq!(
            closest("intervall", &["interval", "unit"]),
            Some("interval")
        );
        assert_eq!(closest("zzz", &["interval", "unit"]), None);
    }
}
