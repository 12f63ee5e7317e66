//! Commands from a platform, answered to that platform only (domain.md §3.8 [P]). Sans-IO: a
//! request packet and the task's settings in; the frames to write and what to change out.
//!
//! - A request (Flag bit 0 asks for answers, but requests are answered either way) gets
//!   CN=9011 with `QnRtn` (1 ready; 3 password, 4 MN, 8 CN refused), same QN, ST=91; a get
//!   request then its data frame (same CN, same QN); and CN=9012 with `ExeRtn` (1 done, 3 the
//!   request's values are wrong, 2 not done, 100 no data).
//! - A notification (2012 stop real-time) gets CN=9013.
//! - 1011 get the time: `SystemTime` in site time. 1012 set the time: the gateway never sets
//!   the system clock; it records the platform's offset and answers 1 when the clocks agree
//!   within a minute, else 2 (not done; logged with the offset).
//! - 1061/1062 real-time interval (`RtdInterval`, 30 s to 1 h), 1063/1064 minute interval
//!   (`MinInterval`, a divisor of 60), 1072 password (`NewPW`), 2011/2012 start/stop real-time:
//!   changes the caller keeps in the backlog's file.
//! - 2051/2061/2031 with `BeginTime`/`EndTime`: history, which the caller takes from its archive
//!   of sent periods; 9012 follows once those frames are delivered.

use std::borrow::Cow;

use jiff::tz::TimeZone;

use super::frames::{self, Identity};
use crate::hj212::segment::{Cp, Flag, Packet, Version};

/// What the task runs with now, as a platform may read or change it.
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    /// Seconds between CN=2011 frames; `None`: real-time values are off.
    pub rtd_interval_s: Option<u64>,
    /// The minute level's minutes (`None`: minute values off).
    pub min_interval_m: Option<u32>,
}

/// A change a command asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// CN=1062 / 2011 / 2012: real-time values every this many seconds, or off.
    Realtime(Option<u64>),
    /// CN=1064.
    Minutes(u32),
    /// CN=1072: the password from now on (never logged).
    Password(String),
    /// CN=1012: the platform's clock minus the gateway's (ms).
    ClockOffset(i64),
    /// CN=2051 / 2061 / 2031: the periods of this CN that start in [begin, end] (ms), then
    /// `result` (the 9012) once they are delivered (`None` when nothing matched: sent already).
    History {
        cn: String,
        begin_ms: i64,
        end_ms: i64,
        result: Box<Packet<'static>>,
    },
}

/// What to do about one command.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reply {
    /// Frames to write now, in order.
    pub write: Vec<Packet<'static>>,
    pub change: Option<Change>,
}

fn text(s: impl Into<String>) -> Cow<'static, str> {
    Cow::Owned(s.into())
}

/// An answer frame to `req`: ST=91, the request's QN, the Flag's version bits without an
/// answer asked (domain.md §3.8 [P]).
fn answer(
    id: &Identity,
    req: &Packet<'_>,
    cn: &str,
    params: Vec<(&str, String)>,
) -> Packet<'static> {
    let version = match id.version {
        Version::V2025 => 2,
        _ => 1,
    };
    Packet {
        qn: req.qn().map(|q| text(q)),
        st: Some(text("91")),
        cn: text(cn),
        pw: Some(text(id.pw.as_str())),
        mn: Some(text(id.mn.as_str())),
        flag: Some(Flag(version << 2)),
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

/// A data frame answering a get request: the request's CN and QN, the site's ST.
fn data(id: &Identity, req: &Packet<'_>, params: Vec<(&str, String)>) -> Packet<'static> {
    let mut p = answer(id, req, req.cn(), params);
    p.st = Some(text(id.st.as_str()));
    p
}

fn qn_rtn(id: &Identity, req: &Packet<'_>, code: u16) -> Packet<'static> {
    answer(id, req, "9011", vec![("QnRtn", code.to_string())])
}

fn exe_rtn(id: &Identity, req: &Packet<'_>, code: u16) -> Packet<'static> {
    answer(id, req, "9012", vec![("ExeRtn", code.to_string())])
}

/// A `YYYYMMDDhhmmss` site time, in ms.
fn parse_time(tz: &TimeZone, s: &str) -> Option<i64> {
    let civil = jiff::civil::DateTime::strptime("%Y%m%d%H%M%S", s.get(..14)?).ok()?;
    tz.to_timestamp(civil).ok().map(|t| t.as_millisecond())
}

/// Answers `req` (a frame from the platform other than 9014). `now`: site time.
pub fn handle(
    req: &Packet<'_>,
    id: &Identity,
    tz: &TimeZone,
    now: i64,
    current: &Current,
) -> Reply {
    let mut r = Reply::default();
    if req.mn().is_some_and(|m| m != id.mn) {
        r.write.push(qn_rtn(id, req, 4));
        return r;
    }
    if req.pw.as_deref().is_some_and(|p| p != id.pw) {
        r.write.push(qn_rtn(id, req, 3));
        return r;
    }
    let ready = |r: &mut Reply| r.write.push(qn_rtn(id, req, 1));
    match req.cn() {
        "1011" => {
            ready(&mut r);
            r.write.push(data(
                id,
                req,
                vec![("SystemTime", frames::data_time(tz, now))],
            ));
            r.write.push(exe_rtn(id, req, 1));
        }
        "1012" => {
            ready(&mut r);
            match req.param("SystemTime").and_then(|s| parse_time(tz, s)) {
                None => r.write.push(exe_rtn(id, req, 3)),
                Some(t) => {
                    let offset = t - now;
                    r.change = Some(Change::ClockOffset(offset));
                    r.write
                        .push(exe_rtn(id, req, if offset.abs() <= 60_000 { 1 } else { 2 }));
                }
            }
        }
        "1061" => {
            ready(&mut r);
            let s = current.rtd_interval_s.unwrap_or(0);
            r.write
                .push(data(id, req, vec![("RtdInterval", s.to_string())]));
            r.write.push(exe_rtn(id, req, 1));
        }
        "1062" => {
            ready(&mut r);
            match req
                .param("RtdInterval")
                .and_then(|s| s.trim().parse::<u64>().ok())
            {
                Some(s) if (30..=3600).contains(&s) => {
                    r.change = Some(Change::Realtime(Some(s)));
                    r.write.push(exe_rtn(id, req, 1));
                }
                _ => r.write.push(exe_rtn(id, req, 3)),
            }
        }
        "1063" => {
            ready(&mut r);
            let m = current.min_interval_m.unwrap_or(0);
            r.write
                .push(data(id, req, vec![("MinInterval", m.to_string())]));
            r.write.push(exe_rtn(id, req, 1));
        }
        "1064" => {
            ready(&mut r);
            match req
                .param("MinInterval")
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                Some(m) if m > 0 && 60 % m == 0 => {
                    r.change = Some(Change::Minutes(m));
                    r.write.push(exe_rtn(id, req, 1));
                }
                _ => r.write.push(exe_rtn(id, req, 3)),
            }
        }
        "1072" => {
            ready(&mut r);
            match req.param("NewPW") {
                Some(pw) if valid_password(pw) => {
                    r.change = Some(Change::Password(pw.to_string()));
                    r.write.push(exe_rtn(id, req, 1));
                }
                _ => r.write.push(exe_rtn(id, req, 3)),
            }
        }
        "2011" => {
            ready(&mut r);
            r.change = Some(Change::Realtime(Some(current.rtd_interval_s.unwrap_or(30))));
            r.write.push(exe_rtn(id, req, 1));
        }
        "2012" => {
            r.write.push(answer(id, req, "9013", Vec::new()));
            r.change = Some(Change::Realtime(None));
        }
        "2051" | "2061" | "2031" => {
            let begin = req.param("BeginTime").and_then(|s| parse_time(tz, s));
            let end = req.param("EndTime").and_then(|s| parse_time(tz, s));
            ready(&mut r);
            match (begin, end) {
                (Some(b), Some(e)) if b <= e => {
                    r.change = Some(Change::History {
                        cn: req.cn().to_string(),
                        begin_ms: b,
                        end_ms: e,
                        result: Box::new(exe_rtn(id, req, 1)),
                    });
                }
                _ => r.write.push(exe_rtn(id, req, 3)),
            }
        }
        _ => r.write.push(qn_rtn(id, req, 8)),
    }
    r
}

/// The 9012 for a history request that found nothing (ExeRtn 100, "no data").
pub fn no_data(result: &Packet<'static>) -> Packet<'static> {
    let mut p = result.clone();
    p.cp.params = vec![(text("ExeRtn"), text("100"))];
    p
}

/// A password a frame can carry: 1 to 32 printable ASCII characters without the separators.
fn valid_password(pw: &str) -> bool {
    !pw.is_empty()
        && pw.len() <= 32
        && pw
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, ';' | ',' | '=' | '&'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hj212::{encode, segment};

    fn tz() -> TimeZone {
        TimeZone::get("Asia/Shanghai").expect("tz")
    }

    fn id() -> Identity {
        Identity {
            st: "39".into(),
            mn: "010000A8900016F000169DC0".into(),
            pw: "123456".into(),
            version: Version::V2017,
            ack: true,
        }
    }

    /// 2026-12-01 10:30:00 in Shanghai.
    const NOW: i64 = 1_796_092_200_000;

    fn req(cn: &str, cp: &str) -> Packet<'static> {
        let seg = format!(
            "QN=20261201103000123;ST=39;CN={cn};PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&{cp}&&"
        );
        segment::parse(&seg).expect("a request").into_owned()
    }

    fn frames(r: &Reply) -> Vec<String> {
        r.write.iter().map(|p| encode::segment(p)).collect()
    }

    fn current() -> Current {
        Current {
            rtd_interval_s: Some(60),
            min_interval_m: Some(10),
        }
    }

    #[test]
    fn a_get_request_gets_ready_its_data_and_done_with_its_qn() {
        let r = handle(&req("1011", ""), &id(), &tz(), NOW, &current());
        assert_eq!(
            frames(&r),
            [
                "QN=20261201103000123;ST=91;CN=9011;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&QnRtn=1&&",
                "QN=20261201103000123;ST=39;CN=1011;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&SystemTime=20261201103000&&",
                "QN=20261201103000123;ST=91;CN=9012;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&ExeRtn=1&&",
            ]
        );
        let r = handle(&req("1063", ""), &id(), &tz(), NOW, &current());
        assert!(frames(&r)[1].contains("CN=1063;") && frames(&r)[1].contains("MinInterval=10"));
        assert_eq!(r.change, None);
    }

    #[test]
    fn set_requests_change_what_is_valid_and_refuse_the_rest() {
        let r = handle(
            &req("1062", "RtdInterval=120"),
            &id(),
            &tz(),
            NOW,
            &current(),
        );
        assert_eq!(r.change, Some(Change::Realtime(Some(120))));
        assert!(frames(&r)[1].ends_with("CP=&&ExeRtn=1&&"));
        let r = handle(&req("1062", "RtdInterval=5"), &id(), &tz(), NOW, &current());
        assert_eq!(r.change, None);
        assert!(frames(&r)[1].ends_with("CP=&&ExeRtn=3&&"));
        let r = handle(&req("1064", "MinInterval=7"), &id(), &tz(), NOW, &current());
        assert!(frames(&r)[1].ends_with("ExeRtn=3&&"));
        assert_eq!(r.change, None);
        let r = handle(&req("1064", "MinInterval=5"), &id(), &tz(), NOW, &current());
        assert_eq!(r.change, Some(Change::Minutes(5)));
        let r = handle(&req("1072", "NewPW=654321"), &id(), &tz(), NOW, &current());
        assert_eq!(r.change, Some(Change::Password("654321".into())));
        let long = format!("NewPW={}", "9".repeat(33));
        let r = handle(&req("1072", &long), &id(), &tz(), NOW, &current());
        assert_eq!(r.change, None);
        // The clock: recorded, never set; 2 when the clocks disagree by more than a minute.
        let r = handle(
            &req("1012", "SystemTime=20261201103005"),
            &id(),
            &tz(),
            NOW,
            &current(),
        );
        assert_eq!(r.change, Some(Change::ClockOffset(5_000)));
        assert!(frames(&r)[1].ends_with("ExeRtn=1&&"));
        let r = handle(
            &req("1012", "SystemTime=20261201110000"),
            &id(),
            &tz(),
            NOW,
            &current(),
        );
        assert!(frames(&r)[1].ends_with("ExeRtn=2&&"));
        // Stop real-time: a notification, answered with 9013; start: 9011 and 9012.
        let r = handle(&req("2012", ""), &id(), &tz(), NOW, &current());
        assert_eq!(r.change, Some(Change::Realtime(None)));
        assert_eq!(frames(&r).len(), 1);
        assert!(frames(&r)[0].contains("CN=9013;") && frames(&r)[0].ends_with("CP=&&&&"));
        let r = handle(&req("2011", ""), &id(), &tz(), NOW, &current());
        assert_eq!(r.change, Some(Change::Realtime(Some(60))));
    }

    #[test]
    fn a_wrong_password_or_mn_or_an_unknown_cn_is_refused() {
        let mut bad = req("1011", "");
        bad.pw = Some("000000".into());
        let r = handle(&bad, &id(), &tz(), NOW, &current());
        assert_eq!(
            frames(&r),
            [
                "QN=20261201103000123;ST=91;CN=9011;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&QnRtn=3&&"
            ]
        );
        let mut other = req("1011", "");
        other.mn = Some("OTHER".into());
        assert!(frames(&handle(&other, &id(), &tz(), NOW, &current()))[0].ends_with("QnRtn=4&&"));
        let r = handle(&req("3011", ""), &id(), &tz(), NOW, &current());
        assert!(frames(&r)[0].ends_with("QnRtn=8&&"));
        assert_eq!(r.change, None);
    }

    #[test]
    fn a_history_request_names_its_span_and_its_result() {
        let r = handle(
            &req("2051", "BeginTime=20261201000000,EndTime=20261201100000"),
            &id(),
            &tz(),
            NOW,
            &current(),
        );
        assert_eq!(frames(&r).len(), 1, "ready now; the result after the data");
        match r.change {
            Some(Change::History {
                cn,
                begin_ms,
                end_ms,
                result,
            }) => {
                assert_eq!(cn, "2051");
                assert_eq!(end_ms - begin_ms, 10 * 3_600_000);
                assert_eq!(frames::data_time(&tz(), begin_ms), "20261201000000");
                assert!(encode::segment(&result).ends_with(
                    "CN=9012;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&ExeRtn=1&&"
                ));
                assert!(encode::segment(&no_data(&result)).ends_with("ExeRtn=100&&"));
            }
            other => panic!("expected history, got {other:?}"),
        }
        let r = handle(
            &req("2061", "BeginTime=20261201100000"),
            &id(),
            &tz(),
            NOW,
            &current(),
        );
        assert!(frames(&r)[1].ends_with("ExeRtn=3&&"));
    }
}
