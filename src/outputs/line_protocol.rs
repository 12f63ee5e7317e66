//! InfluxDB line protocol encoder, written for the hot path: names are escaped once (see
//! [`crate::model::SeriesKey`]), and a point is appended to a reused buffer without allocating.
//!
//! Escaping follows the line-protocol reference: in the measurement, commas and spaces; in
//! tag keys, tag values and field keys, commas, equals signs and spaces; in string field values,
//! double quotes and backslashes. A backslash in a name is written as is unless it would escape
//! the next character, in which case it is doubled; a name may not end in a backslash, so
//! trailing backslashes are written as slashes. Line protocol cannot carry
//! newlines, carriage returns or tabs in names, nor newlines in string values: they become
//! spaces, so a batch can always be split at `\n`.

use std::io::Write as _;

use crate::model::{FieldValue, Point};

// Names are escaped where series keys are made (`crate::model`), once per device.
pub use crate::model::{escape_key, escape_measurement};

/// Appends one point as a line (with its trailing newline). Fields that are not finite numbers
/// are left out; a point left with no field writes nothing. Returns the number of fields written.
pub fn encode_point(p: &Point, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(p.series.as_str().as_bytes());
    let mut written = 0;
    for (key, value) in &p.fields {
        if let FieldValue::Float(v) = value
            && !v.is_finite()
        {
            continue;
        }
        out.push(if written == 0 { b' ' } else { b',' });
        out.extend_from_slice(key.as_str().as_bytes());
        out.push(b'=');
        match value {
            FieldValue::Float(v) => push_float(*v, out),
            FieldValue::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            FieldValue::Str(s) => push_string_value(s, out),
        }
        written += 1;
    }
    if written == 0 {
        out.truncate(start);
        return 0;
    }
    out.push(b' ');
    push_int(p.time_ms, out);
    out.push(b'\n');
    written
}

/// Shortest text that reads back as the same f64. An integral value is written without a
/// decimal point ("35"), which line protocol reads as a float (integers need an `i`).
///
/// Sensor values are mostly short decimals (60.9, 101.32), so those take a fast path: if
/// `v == m / 10^6` for an integer `m`, the decimal text of `m·10⁻⁶` is written. That text reads
/// back as exactly `v`, because both the division and the parser round the same rational
/// number to the nearest f64. Everything else goes through the standard formatter.
fn push_float(v: f64, out: &mut Vec<u8>) {
    const SCALE: f64 = 1e6;
    if v.fract() == 0.0 && v.abs() < 1e15 {
        push_int(v as i64, out);
        return;
    }
    let m = (v * SCALE).round();
    if m.abs() < 9.0e15 && m / SCALE == v {
        let m = m as i64;
        let (int, mut frac) = (
            (m / 1_000_000).unsigned_abs(),
            (m % 1_000_000).unsigned_abs(),
        );
        if m < 0 {
            out.push(b'-');
        }
        push_int(int as i64, out);
        out.push(b'.');
        let mut digits = 6;
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        let mut buf = [b'0'; 6];
        for i in (0..digits).rev() {
            buf[i] = b'0' + (frac % 10) as u8;
            frac /= 10;
        }
        out.extend_from_slice(&buf[..digits]);
    } else {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{v}");
    }
}

fn push_int(v: i64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let neg = v < 0;
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if neg {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_string_value(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' | '\r' => out.push(b' '),
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FieldKey, SeriesKey};
    use influxdb_line_protocol::{FieldValue as PV, parse_lines};
    use proptest::prelude::*;

    fn line(p: &Point) -> String {
        let mut out = Vec::new();
        encode_point(p, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_per_the_spec() {
        let p = Point {
            series: SeriesKey::new(
                "air quality",
                &[("site", "cd,jj 17"), ("device", "a=b"), ("empty", "")],
            ),
            fields: vec![
                (FieldKey::new("pm 10"), FieldValue::Float(35.0)),
                (
                    FieldKey::new("note"),
                    FieldValue::Str("say \"hi\"\\".into()),
                ),
                (FieldKey::new("on"), FieldValue::Bool(true)),
                (FieldKey::new("bad"), FieldValue::Float(f64::NAN)),
                (FieldKey::new("t"), FieldValue::Float(-0.5)),
            ],
            time_ms: 1_700_000_000_123,
        };
        assert_eq!(
            line(&p),
            "air\\ quality,device=a\\=b,site=cd\\,jj\\ 17 pm\\ 10=35,note=\"say \\\"hi\\\"\\\\\",on=true,t=-0.5 1700000000123\n"
        );
    }

    #[test]
    fn a_point_without_finite_fields_writes_nothing() {
        let p = Point {
            series: SeriesKey::new("air", &[]),
            fields: vec![(FieldKey::new("x"), FieldValue::Float(f64::INFINITY))],
            time_ms: 0,
        };
        let mut out = b"keep\n".to_vec();
        assert_eq!(encode_point(&p, &mut out), 0);
        assert_eq!(out, b"keep\n");
    }

    #[test]
    fn floats_read_back_exactly() {
        for v in [
            0.1,
            1e-7,
            123456.789,
            -1e300,
            5e-324,
            65535.0,
            1e15,
            2f64.powi(60),
        ] {
            let mut out = Vec::new();
            push_float(v, &mut out);
            let s = String::from_utf8(out).unwrap();
            assert_eq!(s.parse::<f64>().unwrap(), v, "{s}");
        }
    }

    proptest! {
        #[test]
        fn any_float_reads_back_exactly(v in any::<f64>().prop_filter("finite", |f| f.is_finite()),
                                        m in -9_000_000_000_000i64..9_000_000_000_000i64) {
            for v in [v, m as f64 / 1e6, m as f64 / 1e3] {
                let mut out = Vec::new();
                push_float(v, &mut out);
                let s = String::from_utf8(out).unwrap();
                prop_assert_eq!(s.parse::<f64>().unwrap(), v, "{}", s);
            }
        }
    }

    fn name() -> impl Strategy<Value = String> {
        // Printable text with every character that needs escaping, and non-ASCII.
        proptest::string::string_regex("[a-z0-9 ,=\\\\\"'_.µ锦-]{1,12}").unwrap()
    }

    proptest! {
        /// Whatever we encode, the reference parser (influxdata's) reads back the same values.
        #[test]
        fn round_trips_through_the_reference_parser(
            m in name(), tk in name(), tv in name(), fk in name(), sv in name(),
            f in any::<f64>().prop_filter("finite", |f| f.is_finite()),
            t in any::<i64>(),
        ) {
            let p = Point {
                series: SeriesKey::new(&m, &[(tk.as_str(), tv.as_str())]),
                fields: vec![
                    (FieldKey::new(&fk), FieldValue::Float(f)),
                    (FieldKey::new("s"), FieldValue::Str(sv.clone())),
                ],
                time_ms: t,
            };
            prop_assume!(fk != "s");
            // What a name reads back as: trailing backslashes become slashes.
            let back = |s: &str| {
                let body = s.trim_end_matches('\\');
                format!("{body}{}", "/".repeat(s.len() - body.len()))
            };
            let (m, tk, tv, fk) = (back(&m), back(&tk), back(&tv), back(&fk));
            let text = line(&p);
            let parsed: Vec<_> = parse_lines(&text).collect();
            prop_assert_eq!(parsed.len(), 1);
            let l = parsed.into_iter().next().unwrap().map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
            prop_assert_eq!(l.series.measurement.as_str(), m.as_str());
            let tags = l.series.tag_set.clone().unwrap_or_default();
            prop_assert_eq!(tags.len(), 1);
            prop_assert_eq!(tags[0].0.as_str(), tk.as_str());
            prop_assert_eq!(tags[0].1.as_str(), tv.as_str());
            let fv = l.field_set.iter().find(|(k, _)| k.as_str() == fk).map(|(_, v)| v.clone());
            match fv {
                Some(PV::F64(x)) => prop_assert_eq!(x, f),
                other => prop_assert!(false, "field {:?} in {}", other, text),
            }
            match l.field_value("s") {
                Some(PV::String(s)) => prop_assert_eq!(s.as_str(), sv.as_str()),
                other => prop_assert!(false, "string field {:?} in {}", other, text),
            }
            prop_assert_eq!(l.timestamp, Some(t));
        }
    }
}
