//! A tolerant parser of the data segment (`QN=..;ST=..;CN=..;...;CP=&&...&&`), per domain.md
//! §3.2–3.4 [P] and the field deviations of hj212-field.md §1.3–1.4 [S]:
//! - header fields in any order, separated by `;` or `,` (the standard's own C.48 typo [P]);
//! - QN optional, or inside CP as `QN=`; Flag optional (2005 style); MN free text, empty allowed;
//! - PNUM/PNO in any order; `RF=1` (2025 resend [S]), another RF value = live + a warning;
//! - unknown header keys kept verbatim, in order;
//! - `CP=&&...&&` optional (a login frame such as W10 has none);
//! - CP items split on `;` then `,`, empty items (trailing separators) and spaces after a
//!   separator accepted; `code-Suffix=value` grouped per code in order of first appearance;
//!   plain keys kept as params; a stray `Flag=N` item in CP is a data flag (`cp_flag`), never the
//!   header Flag; data flags upper-cased;
//! - a malformed item (`LA-Rtd-Rtd=71.0`, no `=`) goes into [`Packet::errors`]; the packet is
//!   refused only when its header is unusable (no CN, an unreadable Flag/PNUM/PNO, an unclosed CP).

use std::borrow::Cow;

use jiff::civil::DateTime;
use thiserror::Error;

/// Why a segment could not be used at all.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The segment has no `CN=`.
    #[error("no CN in the header")]
    NoCn,
    /// A header value that must be a number is not.
    #[error("header field {0} is not a number in range: {1:?}")]
    BadNumber(&'static str, String),
    /// `CP=&&` without the closing `&&`.
    #[error("CP=&& is not closed by &&")]
    UnclosedCp,
}

/// The header Flag, read by bit position (never by letter: 2025 swapped the letters [S]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flag(pub u8);

/// The standard version in Flag bits 7..2 [P]/[S].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// HJ/T 212-2005 (version bits 0, or no Flag at all).
    V2005,
    /// HJ 212-2017 (version bits 1) [P].
    V2017,
    /// HJ 212-2025 (version bits 2) [S].
    V2025,
    /// Any other version bits.
    Other(u8),
}

impl Flag {
    /// Bit 0: the sender wants an answer.
    pub fn ack_wanted(self) -> bool {
        self.0 & 1 != 0
    }
    /// Bit 1: a split packet (PNUM/PNO).
    pub fn split(self) -> bool {
        self.0 & 2 != 0
    }
    /// `Flag >> 2` as a version.
    pub fn version(self) -> Version {
        match self.0 >> 2 {
            0 => Version::V2005,
            1 => Version::V2017,
            2 => Version::V2025,
            v => Version::Other(v),
        }
    }
}

/// A field as sent: borrowed from the segment text by [`parse`] (owned only where the parser
/// changed it, e.g. a lower-case data flag upper-cased, or where a caller built the packet).
pub type Text<'a> = Cow<'a, str>;

/// One pollutant or factor code with its fields in the order sent (`Rtd`, `Flag`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Factor<'a> {
    /// The code (`a34002`, `LA`, `w01001`, `B01`, ...).
    pub code: Text<'a>,
    /// `(suffix, value)`; a `Flag` value is upper-cased.
    pub fields: Vec<(Text<'a>, Text<'a>)>,
}

impl Factor<'_> {
    /// The value of `suffix` as sent.
    pub fn get(&self, suffix: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == suffix)
            .map(|(_, v)| v.as_ref())
    }
    /// `-Rtd` as a number.
    pub fn rtd(&self) -> Option<f64> {
        self.get("Rtd").and_then(number)
    }
    /// `-Avg` as a number.
    pub fn avg(&self) -> Option<f64> {
        self.get("Avg").and_then(number)
    }
    /// `-Min` as a number.
    pub fn min(&self) -> Option<f64> {
        self.get("Min").and_then(number)
    }
    /// `-Max` as a number.
    pub fn max(&self) -> Option<f64> {
        self.get("Max").and_then(number)
    }
    /// The data flag (`-Flag`, Table 8 [P]), upper-cased; `None` when absent or not one char.
    pub fn flag(&self) -> Option<char> {
        let v = self.get("Flag")?;
        let mut c = v.chars();
        match (c.next(), c.next()) {
            (Some(f), None) => Some(f),
            _ => None,
        }
    }
    /// The same factor owning its text (to keep it past the segment it was parsed from).
    pub fn into_owned(self) -> Factor<'static> {
        Factor {
            code: owned(self.code),
            fields: owned_pairs(self.fields),
        }
    }
}

/// The CP data area.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cp<'a> {
    /// Plain keys (`DataTime`, `QnRtn`, `RtdInterval`, `QN`, ...) in order.
    pub params: Vec<(Text<'a>, Text<'a>)>,
    /// Codes in order of first appearance.
    pub factors: Vec<Factor<'a>>,
    /// A stray `Flag=N` item in CP (a data flag, hj212-field.md §1.3 [S]), upper-cased.
    pub cp_flag: Option<Text<'a>>,
}

/// A parsed data segment. Fields are the strings as sent (borrowed from the segment text);
/// accessors interpret them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Packet<'a> {
    /// `QN=` in the header.
    pub qn: Option<Text<'a>>,
    /// `ST=`.
    pub st: Option<Text<'a>>,
    /// `CN=` (always present after [`parse`]).
    pub cn: Text<'a>,
    /// `PW=`.
    pub pw: Option<Text<'a>>,
    /// `MN=` (may be empty).
    pub mn: Option<Text<'a>>,
    /// `Flag=`; `None` = 2005 style.
    pub flag: Option<Flag>,
    /// `PNUM=`.
    pub pnum: Option<u32>,
    /// `PNO=`.
    pub pno: Option<u32>,
    /// `RF=` as sent (2025: `1` = resend).
    pub rf: Option<Text<'a>>,
    /// Header keys this parser does not know, verbatim, in order.
    pub unknown: Vec<(Text<'a>, Text<'a>)>,
    /// Whether the segment had a `CP=&&...&&` (a login frame has none).
    pub has_cp: bool,
    /// The data area.
    pub cp: Cp<'a>,
    /// Items that could not be read (kept out of `cp`), with why.
    pub errors: Vec<String>,
    /// Oddities that did not stop the parse (an unknown RF value, ...).
    pub warnings: Vec<String>,
}

fn owned(t: Text<'_>) -> Text<'static> {
    Cow::Owned(t.into_owned())
}

fn owned_pairs(v: Vec<(Text<'_>, Text<'_>)>) -> Vec<(Text<'static>, Text<'static>)> {
    v.into_iter().map(|(k, v)| (owned(k), owned(v))).collect()
}

impl Packet<'_> {
    /// The same packet owning its text (to keep it past the segment it was parsed from).
    pub fn into_owned(self) -> Packet<'static> {
        Packet {
            qn: self.qn.map(owned),
            st: self.st.map(owned),
            cn: owned(self.cn),
            pw: self.pw.map(owned),
            mn: self.mn.map(owned),
            flag: self.flag,
            pnum: self.pnum,
            pno: self.pno,
            rf: self.rf.map(owned),
            unknown: owned_pairs(self.unknown),
            has_cp: self.has_cp,
            cp: Cp {
                params: owned_pairs(self.cp.params),
                factors: self
                    .cp
                    .factors
                    .into_iter()
                    .map(Factor::into_owned)
                    .collect(),
                cp_flag: self.cp.cp_flag.map(owned),
            },
            errors: self.errors,
            warnings: self.warnings,
        }
    }
}

impl Packet<'_> {
    /// The command code.
    pub fn cn(&self) -> &str {
        &self.cn
    }
    /// The station id (MN), if sent.
    pub fn mn(&self) -> Option<&str> {
        self.mn.as_deref()
    }
    /// The QN from the header, else from a `QN=` item in CP (2005 style).
    pub fn qn(&self) -> Option<&str> {
        self.qn.as_deref().or_else(|| self.param("QN"))
    }
    /// The header Flag (`None`: 2005 style, no Flag).
    pub fn flag(&self) -> Option<Flag> {
        self.flag
    }
    /// The version: from the Flag, 2005 when there is none.
    pub fn version(&self) -> Version {
        self.flag.map_or(Version::V2005, Flag::version)
    }
    /// `RF=1`: a 2025 resend (补传) [S].
    pub fn resend(&self) -> bool {
        self.rf.as_deref() == Some("1")
    }
    /// A CP parameter as sent.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.cp
            .params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }
    /// `DataTime` as a civil time (no zone: the site's local time); `None` when absent or not a
    /// time of 14 or 17 digits. Never replaced by "now" (hj212-field.md §1.4.5).
    pub fn data_time(&self) -> Option<DateTime> {
        self.param("DataTime").and_then(parse_time)
    }
    /// The factors in order.
    pub fn factors(&self) -> &[Factor<'_>] {
        &self.cp.factors
    }
    /// One factor by code.
    pub fn factor(&self, code: &str) -> Option<&Factor<'_>> {
        self.cp.factors.iter().find(|f| f.code == code)
    }
}

/// A value as a finite number; `None` for anything else (NaN and infinities included).
pub fn number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty()
        || !t
            .bytes()
            .all(|c| c.is_ascii_digit() || b"+-.eE".contains(&c))
    {
        return None;
    }
    t.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A civil time as DataTime / SystemTime / the first 14 digits of a QN: `YYYYMMDDhhmmss` (N14
/// [P]), the inverse of [`parse_time`] for 14 digits.
pub fn format_time(dt: DateTime) -> String {
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// `YYYYMMDDhhmmss` (N14 [P]) or `YYYYMMDDhhmmsszzz` (17 digits, with ms, as in W9 [S]).
pub fn parse_time(s: &str) -> Option<DateTime> {
    let b = s.as_bytes();
    if !(b.len() == 14 || b.len() == 17) || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| -> i32 {
        b[r].iter().fold(0i32, |a, &c| a * 10 + i32::from(c - b'0'))
    };
    let ms = if b.len() == 17 { n(14..17) } else { 0 };
    DateTime::new(
        i16::try_from(n(0..4)).ok()?,
        i8::try_from(n(4..6)).ok()?,
        i8::try_from(n(6..8)).ok()?,
        i8::try_from(n(8..10)).ok()?,
        i8::try_from(n(10..12)).ok()?,
        i8::try_from(n(12..14)).ok()?,
        ms * 1_000_000,
    )
    .ok()
}

fn small_number(name: &'static str, v: &str) -> Result<u32, ParseError> {
    let t = v.trim();
    if t.is_empty() || t.len() > 4 || !t.bytes().all(|c| c.is_ascii_digit()) {
        return Err(ParseError::BadNumber(name, v.to_string()));
    }
    t.parse()
        .map_err(|_| ParseError::BadNumber(name, v.to_string()))
}

/// The items of a header or CP area: the text between `;` or `,` separators (both ASCII, so
/// every cut is a char boundary), the same pieces as `str::split([';', ','])`.
fn items(s: &str) -> impl Iterator<Item = &str> {
    let mut pos = Some(0);
    std::iter::from_fn(move || {
        let from = pos?;
        let rest = s.get(from..)?;
        match separator(rest.as_bytes()) {
            Some(i) => {
                pos = Some(from + i + 1);
                rest.get(..i)
            }
            None => {
                pos = None;
                Some(rest)
            }
        }
    })
}

/// `s.split_once(c)` for an ASCII `c`, by bytes (no char decoding; an ASCII byte is always a
/// char boundary).
fn split_at_byte(s: &str, c: u8) -> Option<(&str, &str)> {
    let i = s.bytes().position(|b| b == c)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// Whether `b` is a printable ASCII byte (so neither whitespace nor part of a multi-byte char).
fn graphic(b: Option<&u8>) -> bool {
    b.is_some_and(|&b| (0x21..0x7F).contains(&b))
}

/// `s.trim_start()`, without the Unicode scan when `s` starts with a printable ASCII byte.
fn trim_start(s: &str) -> &str {
    if graphic(s.as_bytes().first()) {
        s
    } else {
        s.trim_start()
    }
}

/// `s.trim_end()`, without the Unicode scan when `s` ends with a printable ASCII byte.
fn trim_end(s: &str) -> &str {
    if graphic(s.as_bytes().last()) {
        s
    } else {
        s.trim_end()
    }
}

/// `a == b`, inlined and from the end: codes are short and share prefixes (`a01001`,
/// `a01002`), so they mostly differ in the last byte (no `memcmp` call).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().rev().zip(b.bytes().rev()).all(|(x, y)| x == y)
}

/// The first `;` or `,` in `b`: eight bytes at a time (a SWAR zero-byte test tells whether a
/// word holds one), then byte by byte inside the word that does.
fn separator(b: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(LO) & !x & HI != 0;
    let mut i = 0;
    while let Some(c) = b.get(i..i + 8) {
        let Ok(a) = <[u8; 8]>::try_from(c) else {
            break;
        };
        let w = u64::from_le_bytes(a);
        if has_zero(w ^ (LO * u64::from(b';'))) || has_zero(w ^ (LO * u64::from(b','))) {
            break;
        }
        i += 8;
    }
    let p = b.get(i..)?.iter().position(|&c| c == b';' || c == b',')?;
    Some(i + p)
}

/// `v` upper-cased, borrowed when it has no lower-case ASCII letter.
fn upper(v: &str) -> Text<'_> {
    if v.bytes().any(|c| c.is_ascii_lowercase()) {
        Cow::Owned(v.to_ascii_uppercase())
    } else {
        Cow::Borrowed(v)
    }
}

/// Where the last `&&` in `b` starts.
fn rfind_amps(b: &[u8]) -> Option<usize> {
    b.windows(2).rposition(|w| w == b"&&")
}

/// Parses a data segment (the checked text between the length field and the CRC). The packet
/// borrows its fields from `seg` ([`Packet::into_owned`] to keep it longer).
pub fn parse(seg: &str) -> Result<Packet<'_>, ParseError> {
    let mut p = Packet::default();
    let (head, cp) = match super::framer::find(seg.as_bytes(), b"CP=&&", 0) {
        Some(i) => {
            let body = seg.get(i + 5..).unwrap_or_default();
            let close = rfind_amps(body.as_bytes()).ok_or(ParseError::UnclosedCp)?;
            let rest = body.get(close + 2..).unwrap_or_default();
            if !rest.trim().is_empty() {
                p.errors.push(format!("text after CP: {rest:?}"));
            }
            p.has_cp = true;
            (
                seg.get(..i).unwrap_or_default(),
                Some(body.get(..close).unwrap_or_default()),
            )
        }
        // A login frame (W10) ends its header with `&&`.
        None => (seg.strip_suffix("&&").unwrap_or(seg), None),
    };
    let mut cn = None;
    for item in items(head) {
        // After trim_start, an item that is all whitespace is empty.
        let item = trim_start(item);
        if item.is_empty() {
            continue;
        }
        let Some((k, v)) = split_at_byte(item, b'=') else {
            p.errors.push(format!("header item without '=': {item:?}"));
            continue;
        };
        match k {
            "QN" => p.qn = Some(v.into()),
            "ST" => p.st = Some(v.into()),
            "CN" => cn = Some(v.into()),
            "PW" => p.pw = Some(v.into()),
            "MN" => p.mn = Some(v.into()),
            "Flag" => {
                let t = v.trim();
                let f = (!t.is_empty() && t.len() <= 3 && t.bytes().all(|c| c.is_ascii_digit()))
                    .then(|| t.parse::<u8>().ok())
                    .flatten()
                    .ok_or_else(|| ParseError::BadNumber("Flag", v.to_string()))?;
                p.flag = Some(Flag(f));
            }
            "PNUM" => p.pnum = Some(small_number("PNUM", v)?),
            "PNO" => p.pno = Some(small_number("PNO", v)?),
            "RF" => {
                if v != "1" {
                    p.warnings
                        .push(format!("RF={v}: not 1, taken as live data"));
                }
                p.rf = Some(v.into());
            }
            _ => p.unknown.push((k.into(), v.into())),
        }
    }
    p.cn = cn.ok_or(ParseError::NoCn)?;
    if let Some(cp) = cp {
        parse_cp(cp, &mut p);
    }
    Ok(p)
}

fn parse_cp<'a>(cp: &'a str, p: &mut Packet<'a>) {
    for item in items(cp) {
        let item = trim_start(item);
        if item.is_empty() {
            continue;
        }
        let Some((k, v)) = split_at_byte(item, b'=') else {
            p.errors.push(format!("CP item without '=': {item:?}"));
            continue;
        };
        let k = trim_end(k);
        match split_at_byte(k, b'-') {
            None if k == "Flag" => p.cp.cp_flag = Some(upper(v)),
            None if !k.is_empty() && !k.contains(char::is_whitespace) => {
                p.cp.params.push((k.into(), v.into()))
            }
            None => p.errors.push(format!("bad CP key: {item:?}")),
            Some((code, suffix)) => {
                let ok_code = !code.is_empty()
                    && code.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
                let ok_suffix =
                    !suffix.is_empty() && suffix.bytes().all(|c| c.is_ascii_alphanumeric());
                if !ok_code || !ok_suffix {
                    p.errors.push(format!("bad field name: {item:?}"));
                    continue;
                }
                let v = if suffix == "Flag" {
                    upper(v)
                } else {
                    Cow::Borrowed(v)
                };
                let factors = &mut p.cp.factors;
                let i = match factors.iter().rposition(|f| same(&f.code, code)) {
                    Some(i) => i,
                    None => {
                        if factors.capacity() == 0 {
                            // One allocation for a typical packet (9–16 codes) instead of 3.
                            factors.reserve(16);
                        }
                        factors.push(Factor {
                            code: code.into(),
                            fields: Vec::new(),
                        });
                        factors.len() - 1
                    }
                };
                if let Some(f) = factors.get_mut(i) {
                    f.fields.push((suffix.into(), v));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separator_and_items_match_the_std_split() {
        let text = "a;b,,cc;;ddd,eeeeeeeeeeeeeeeeee;f;,;x\u{e9};,\u{4e2d}a,bbbbbbbbbbbbbbbbbbbbbb";
        for start in 0..text.len() {
            for end in start..=text.len() {
                let Some(t) = text.get(start..end) else {
                    continue;
                };
                let want = t.bytes().position(|c| c == b';' || c == b',');
                assert_eq!(separator(t.as_bytes()), want, "{t:?}");
                assert_eq!(
                    items(t).collect::<Vec<_>>(),
                    t.split([';', ',']).collect::<Vec<_>>()
                );
            }
        }
    }
}
