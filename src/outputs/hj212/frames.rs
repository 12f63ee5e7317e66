//! The frames a platform receives, as packets for the strict encoder
//! ([`crate::hj212::encode`], which writes the standard's field order, the length and the
//! CRC): CN=2011 real-time values (`-Rtd`, `-Flag`), CN=2051 / 2061 / 2031 minute, hour and
//! day values (`-Avg`, `-Min`, `-Max`, `-Flag`; DataTime is the period's start) and CN=2081
//! boot time (domain.md §3.4, §3.6 [P]).
//!
//! - Codes, units and decimals come from the platform's factor map: the first code listed
//!   for a metric, the value divided by the code's factor, written with the decimals of the
//!   standard's data type (N3.3 → 3). A metric the map has no code for is not sent; it is
//!   returned, so that the caller counts it and `check` can show it.
//! - Codes are written in the map's order (the standard's tables), whatever order the
//!   values came in, so that one site's frames always look alike.
//! - DataTime is the site's local time without an offset (domain.md §3.2 [P]).
//! - A period whose readings were all flagged has no value: only its `-Flag` is sent (*choice*:
//!   a platform then sees why the period is empty, where leaving the code out says nothing).

use std::borrow::Cow;

use jiff::tz::TimeZone;

use crate::config::factors::FactorMap;
use crate::hj212::segment::{Cp, Factor, Flag, Packet, Version, format_time};
use crate::pipeline::periods::{Level, PeriodValue};

/// Who the gateway is to one platform.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The system code the platform expects (39 construction dust, 22 air quality).
    pub st: String,
    /// The MN the platform issued.
    pub mn: String,
    pub pw: String,
    /// 2017 or 2025 (the Flag's version bits).
    pub version: Version,
    /// Ask for CN=9014 (Flag bit 0).
    pub ack: bool,
}

impl Identity {
    fn flag(&self) -> Flag {
        let version = match self.version {
            Version::V2025 => 2,
            _ => 1,
        };
        Flag(version << 2 | u8::from(self.ack))
    }
}

/// What a frame for one platform is built with.
#[derive(Debug, Clone, Copy)]
pub struct Platform<'a> {
    pub id: &'a Identity,
    /// The site's zone: DataTime is its local time.
    pub tz: &'a TimeZone,
    /// The platform's codes, units and decimals.
    pub factors: &'a FactorMap,
}

/// The CN of a period level (2051 for any minute level).
pub fn period_cn(level: Level) -> &'static str {
    match level {
        Level::Minutes(_) => "2051",
        Level::Hour => "2061",
        Level::Day => "2031",
    }
}

/// A packet to encode, and the metrics that were left out because the map has no code.
#[derive(Debug, Clone)]
pub struct Built {
    pub packet: Packet<'static>,
    pub no_code: Vec<String>,
}

/// One real-time value: a metric in canonical units and its data flag (`N`, `T`, `M`, …).
#[derive(Debug, Clone, Copy)]
pub struct Rtd<'a> {
    pub metric: &'a str,
    pub value: f64,
    pub flag: char,
}

/// `YYYYMMDDhhmmss` of `ms` on the site's clock.
pub fn data_time(tz: &TimeZone, ms: i64) -> String {
    let ts = jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format_time(tz.to_datetime(ts))
}

/// `v` with `decimals` decimals; never `-0.000` (a platform may read the sign as a value).
/// Rust rounds the exact binary value, a tie to even: GB/T 8170's 四舍六入五成双 for the
/// halves a float holds exactly [U].
fn number(v: f64, decimals: u8) -> String {
    let s = format!("{:.*}", usize::from(decimals), v);
    if s.starts_with('-') && s[1..].bytes().all(|b| b == b'0' || b == b'.') {
        s[1..].to_string()
    } else {
        s
    }
}

fn text(s: impl Into<String>) -> Cow<'static, str> {
    Cow::Owned(s.into())
}

fn packet(id: &Identity, qn: String, cn: &str, params: Vec<(&str, String)>) -> Packet<'static> {
    Packet {
        qn: Some(text(qn)),
        st: Some(text(id.st.as_str())),
        cn: text(cn),
        pw: Some(text(id.pw.as_str())),
        mn: Some(text(id.mn.as_str())),
        flag: Some(id.flag()),
        has_cp: true,
        cp: Cp {
            params: params
                .into_iter()
                .map(|(k, v)| (text(k), text(v)))
                .collect(),
            ..Cp::default()
        },
        ..Packet::default()
    }
}

/// Values in the map's order, each with its index in the map; one value a code.
fn in_map_order<T>(
    factors: &FactorMap,
    values: impl IntoIterator<Item = (T, String)>,
    no_code: &mut Vec<String>,
) -> Vec<(usize, T)> {
    let mut out: Vec<(usize, T)> = Vec::new();
    for (v, metric) in values {
        match factors.codes.iter().position(|f| f.metric == metric) {
            Some(i) => out.push((i, v)),
            None => {
                if !no_code.contains(&metric) {
                    no_code.push(metric);
                }
            }
        }
    }
    // Stable: of a metric given twice (two devices report it), the first given is sent.
    out.sort_by_key(|(i, _)| *i);
    out.dedup_by_key(|(i, _)| *i);
    out
}

/// CN=2011: the values of `data_ms` (their acquisition time).
pub fn realtime(to: Platform<'_>, qn: String, data_ms: i64, values: &[Rtd<'_>]) -> Built {
    let factors = to.factors;
    let mut no_code = Vec::new();
    let mut p = packet(
        to.id,
        qn,
        "2011",
        vec![("DataTime", data_time(to.tz, data_ms))],
    );
    let ordered = in_map_order(
        factors,
        values.iter().map(|r| (r, r.metric.to_string())),
        &mut no_code,
    );
    for (i, r) in ordered {
        let f = &factors.codes[i];
        p.cp.factors.push(Factor {
            code: text(f.code.as_str()),
            fields: vec![
                (text("Rtd"), text(number(f.to_wire(r.value), f.decimals))),
                (text("Flag"), text(r.flag.to_string())),
            ],
        });
    }
    Built { packet: p, no_code }
}

/// CN=2051 / 2061 / 2031: the period values of one period (`values` all of `level`, all
/// starting at `start_ms`). `resend`: the frame is sent again after an outage (补传): `RF=1`
/// under 2025 (hj212-field.md §2.4 [S]); 2017 has no such mark.
pub fn period(
    to: Platform<'_>,
    qn: String,
    level: Level,
    start_ms: i64,
    values: &[&PeriodValue],
    resend: bool,
) -> Built {
    let factors = to.factors;
    let mut no_code = Vec::new();
    let mut p = packet(
        to.id,
        qn,
        period_cn(level),
        vec![("DataTime", data_time(to.tz, start_ms))],
    );
    if resend && to.id.version == Version::V2025 {
        p.rf = Some(text("1"));
    }
    let ordered = in_map_order(
        factors,
        values.iter().map(|v| (*v, v.metric.to_string())),
        &mut no_code,
    );
    for (i, v) in ordered {
        let f = &factors.codes[i];
        let mut fields = Vec::with_capacity(4);
        for (suffix, x) in [("Avg", v.avg), ("Min", v.min), ("Max", v.max)] {
            if let Some(x) = x {
                fields.push((text(suffix), text(number(f.to_wire(x), f.decimals))));
            }
        }
        fields.push((text("Flag"), text(v.flag.to_string())));
        p.cp.factors.push(Factor {
            code: text(f.code.as_str()),
            fields,
        });
    }
    Built { packet: p, no_code }
}

/// CN=2081: the logger's boot time, sent on every connect (domain.md §3.6 [P]).
pub fn boot_time(to: Platform<'_>, qn: String, now_ms: i64, boot_ms: i64) -> Packet<'static> {
    packet(
        to.id,
        qn,
        "2081",
        vec![
            ("DataTime", data_time(to.tz, now_ms)),
            ("RestartTime", data_time(to.tz, boot_ms)),
        ],
    )
}

/// CN=9015: HJ 212-2025's heartbeat, `CP=&&&&`, no answer asked (hj212-field.md §2.6 [S]).
pub fn heartbeat(to: Platform<'_>, qn: String) -> Packet<'static> {
    let mut p = packet(to.id, qn, "9015", Vec::new());
    p.flag = p.flag.map(|f| Flag(f.0 & !1));
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Diagnostics;
    use crate::config::profile::ProfileLoader;
    use crate::hj212::{encode, segment};
    use std::sync::Arc;

    fn map(name: &str) -> Arc<FactorMap> {
        let mut diags = Diagnostics::default();
        match ProfileLoader::new(vec![]).load_factors(name, &mut diags) {
            Ok(m) => m,
            Err(_) => panic!("{name}: {diags}"),
        }
    }

    fn tz() -> TimeZone {
        TimeZone::get("Asia/Shanghai").expect("tz")
    }

    fn city(version: Version, ack: bool) -> Identity {
        Identity {
            st: "39".into(),
            mn: "010000A8900016F000169DC0".into(),
            pw: "123456".into(),
            version,
            ack,
        }
    }

    fn to<'a>(id: &'a Identity, tz: &'a TimeZone, factors: &'a FactorMap) -> Platform<'a> {
        Platform { id, tz, factors }
    }

    // 2026-12-01T02:30:00Z = 10:30:00 in Shanghai.
    const T: i64 = 1_796_092_200_000;

    #[test]
    fn a_realtime_frame_in_the_standards_order_units_and_decimals() {
        let values = [
            Rtd {
                metric: "noise",
                value: 61.25,
                flag: 'N',
            },
            Rtd {
                metric: "pm10",
                value: 85.0,
                flag: 'N',
            },
            Rtd {
                metric: "pm25",
                value: 40.12345,
                flag: 'T',
            },
            Rtd {
                metric: "pm10",
                value: 999.0,
                flag: 'N',
            },
            Rtd {
                metric: "spray_on",
                value: 1.0,
                flag: 'N',
            },
        ];
        let (id, tz, m) = (city(Version::V2017, true), tz(), map("hj212-standard"));
        let b = realtime(to(&id, &tz, &m), "20261201103000123".into(), T, &values);
        assert_eq!(b.no_code, ["spray_on"]);
        let seg = encode::segment(&b.packet);
        let cp = seg.split("CP=&&").nth(1).expect("cp");
        assert!(
            seg.starts_with(
                "QN=20261201103000123;ST=39;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20261201103000;"
            ),
            "{seg}"
        );
        // Each code once, with its data flag; PM with 3 decimals (N3.3), noise with 1.
        for part in [
            "a34002-Rtd=85.000,a34002-Flag=N",
            "a34004-Rtd=40.123,a34004-Flag=T",
            "LA-Rtd=61.2,LA-Flag=N",
        ] {
            assert!(cp.contains(part), "{part} in {cp}");
        }
        // The whole frame reads back (length and CRC) as the same values.
        let frame = encode::encode(&b.packet);
        let mut framer = crate::hj212::framer::Framer::new();
        framer.push(frame.as_bytes());
        let f = framer.next_frame().expect("a frame").expect("valid");
        let text = f.text().expect("ASCII");
        let p = segment::parse(&text).expect("parses");
        // pm10 given twice: the first given, once.
        assert_eq!(p.cp.factors.len(), 3);
        assert!(!seg.contains("999"), "{seg}");
        assert_eq!(p.flag.map(Flag::ack_wanted), Some(true));
    }

    #[test]
    fn a_platform_in_mg_per_m3_gets_its_unit() {
        let (id, tz, m) = (city(Version::V2017, false), tz(), map("hj212-mgm3"));
        let pm10 = Rtd {
            metric: "pm10",
            value: 85.0,
            flag: 'N',
        };
        let b = realtime(to(&id, &tz, &m), "20261201103000123".into(), T, &[pm10]);
        let seg = encode::segment(&b.packet);
        assert!(seg.contains(";Flag=4;"), "no ack asked: {seg}");
        assert!(seg.contains("a34002-Rtd=0.085"), "{seg}");
    }

    fn pv(
        metric: &str,
        avg: Option<f64>,
        min: Option<f64>,
        max: Option<f64>,
        flag: char,
    ) -> PeriodValue {
        PeriodValue {
            device: "dust-01".into(),
            metric: metric.into(),
            level: Level::Minutes(10),
            start_ms: T,
            avg,
            min,
            max,
            valid: 10,
            total: 10,
            expected: Some(10),
            flag,
        }
    }

    #[test]
    fn a_minute_frame_resent_under_2025() {
        let pm10 = pv("pm10", Some(80.0), Some(70.5), Some(90.25), 'N');
        let pm25 = pv("pm25", None, None, None, 'M');
        let (tz, m) = (tz(), map("hj212-standard"));
        let id = city(Version::V2025, true);
        let b = period(
            to(&id, &tz, &m),
            "20261201104000001".into(),
            Level::Minutes(10),
            T,
            &[&pm25, &pm10],
            true,
        );
        let seg = encode::segment(&b.packet);
        assert!(
            seg.starts_with(
                "QN=20261201104000001;ST=39;CN=2051;PW=123456;MN=010000A8900016F000169DC0;Flag=9;RF=1;CP=&&DataTime=20261201103000;"
            ),
            "{seg}"
        );
        assert!(
            seg.ends_with(
                "a34002-Avg=80.000,a34002-Min=70.500,a34002-Max=90.250,a34002-Flag=N;a34004-Flag=M&&"
            ),
            "{seg}"
        );
        // The same frame under 2017: no RF, version bits 1.
        let id = city(Version::V2017, false);
        let b = period(
            to(&id, &tz, &m),
            "20261201104000002".into(),
            Level::Hour,
            T,
            &[&pm10],
            true,
        );
        let seg = encode::segment(&b.packet);
        assert!(
            seg.contains(";CN=2061;") && seg.contains(";Flag=4;CP=") && !seg.contains("RF="),
            "{seg}"
        );
    }

    #[test]
    fn boot_time_and_signed_zero() {
        let (id, tz, m) = (city(Version::V2017, true), tz(), map("hj212-standard"));
        let p = boot_time(
            to(&id, &tz, &m),
            "20261201103000999".into(),
            T,
            T - 3_600_000,
        );
        assert!(
            encode::segment(&p)
                .ends_with("CP=&&DataTime=20261201103000;RestartTime=20261201093000&&"),
            "{}",
            encode::segment(&p)
        );
        assert_eq!(number(-0.0001, 3), "0.000");
        assert_eq!(number(-0.5, 1), "-0.5");
        assert_eq!(number(12.0, 0), "12");
    }
}
