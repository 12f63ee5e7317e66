//! One platform's link, sans-IO: which frame goes out next, which frame an answer
//! acknowledges, when a frame is sent again with the same QN, and when the connection is
//! given up. The I/O shell (the upstream task) connects, writes what it is told to, feeds
//! what it reads and the time, and deletes from the platform's backlog what is acknowledged.
//!
//! - **With acks** (`ack = true`, Flag bit 0): a frame is delivered when the platform's
//!   CN=9014 with its QN comes back (domain.md §3.8 [P]). Without one within `timeout` it is
//!   written again, byte for byte (the same QN, hj212-field.md §4.3 [S]), `retries` times;
//!   then the connection is closed (the shell reconnects with backoff, hj212-field.md §4.4
//!   [S]) and the frames in flight are forgotten here: they are still in the backlog and go
//!   again after the reconnect, with a new QN.
//! - **Without acks**: a frame is delivered once the shell has written it to the socket.
//! - **A window** of frames may be in flight at once (1: strictly one request at a time, as the
//!   standard's flows draw it; more, so that a backlog drains over a slow link in less than
//!   one round trip a frame).
//! - An answer whose QN matches no frame in flight (late, after a resend was acknowledged, or
//!   from a confused platform) is counted and changes nothing.

use super::qn::Qns;
use crate::hj212::encode;
use crate::hj212::framer::Framer;
use crate::hj212::segment::{self, Packet};

/// How one platform is talked to.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    pub ack: bool,
    pub timeout_ms: i64,
    /// Writes of a frame after its first, before the connection is given up.
    pub retries: u32,
    /// Frames in flight at once (at least 1).
    pub window: usize,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write these bytes (a whole frame).
    Write(String),
    /// The backlog entry `id` reached the platform: delete it.
    Delivered(u64),
    /// Close the connection (and reconnect with backoff).
    Close,
}

#[derive(Debug, Clone)]
struct InFlight {
    id: u64,
    qn: String,
    frame: String,
    sent_at: i64,
    writes: u32,
}

/// Counts for the status page and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounts {
    pub sent: u64,
    pub resent: u64,
    pub delivered: u64,
    pub gave_up: u64,
    /// Answers that matched no frame in flight, or did not read as a frame.
    pub stray_answers: u64,
}

/// The link's state between connects; [`Link::connected`] starts each connection afresh.
/// HJ 212-2025 encryption of the data area of CN 2000-2999 (§6.4 [S]): the key, and whether
/// the length field counts the plaintext (the standard's example) or what is sent.
#[derive(Debug, Clone, Copy)]
pub struct Sm4 {
    pub key: [u8; 16],
    pub length_of_plaintext: bool,
}

pub struct Link {
    cfg: LinkConfig,
    sm4: Option<Sm4>,
    qns: Qns,
    framer: Framer,
    in_flight: Vec<InFlight>,
    counts: LinkCounts,
}

impl Link {
    pub fn new(cfg: LinkConfig, tz: jiff::tz::TimeZone) -> Link {
        Link {
            cfg: LinkConfig {
                window: cfg.window.max(1),
                ..cfg
            },
            sm4: None,
            qns: Qns::new(tz),
            framer: Framer::new(),
            in_flight: Vec::new(),
            counts: LinkCounts::default(),
        }
    }

    /// Frames of CN 2000-2999 go with their data area SM4-encrypted.
    pub fn with_sm4(mut self, sm4: Sm4) -> Link {
        self.sm4 = Some(sm4);
        self
    }

    pub fn counts(&self) -> LinkCounts {
        self.counts
    }

    /// A QN for a frame sent outside the window (a heartbeat): unique on this link too.
    pub fn next_qn(&mut self, now: i64) -> String {
        self.qns.next(now)
    }

    /// The bytes of `p` on this link: encrypted when it is a data frame and a key is set.
    fn wire(&self, p: &Packet<'_>) -> String {
        let data = p
            .cn()
            .parse::<u16>()
            .is_ok_and(|cn| (2000..3000).contains(&cn));
        match self.sm4 {
            Some(k) if data => {
                let seg = encode::segment(p);
                if k.length_of_plaintext {
                    encode::encrypt_segment(&seg, &k.key)
                } else {
                    encode::encrypt_segment_transmitted(&seg, &k.key)
                }
            }
            _ => encode::encode(p),
        }
    }

    /// A new connection: nothing in flight, no half-read answer (hj212-field.md §4.4 [S]).
    pub fn connected(&mut self) {
        self.in_flight.clear();
        self.framer.reset();
    }

    /// Whether another frame may go out now.
    pub fn has_room(&self) -> bool {
        !self.cfg.ack || self.in_flight.len() < self.cfg.window
    }

    /// Sends backlog entry `id`, built as `template` (its QN is given here): the frame to
    /// write, or `None` when the window is full (offer it again after an answer).
    pub fn send(&mut self, now: i64, id: u64, template: &Packet<'static>) -> Option<Action> {
        if !self.has_room() {
            return None;
        }
        let qn = self.qns.next(now);
        let mut p = template.clone();
        p.qn = Some(qn.clone().into());
        let frame = self.wire(&p);
        self.counts.sent += 1;
        if self.cfg.ack {
            self.in_flight.push(InFlight {
                id,
                qn,
                frame: frame.clone(),
                sent_at: now,
                writes: 1,
            });
        }
        Some(Action::Write(frame))
    }

    /// The shell wrote backlog entry `id` to the socket: without acks, that is delivery.
    pub fn written(&mut self, id: u64, out: &mut Vec<Action>) {
        if !self.cfg.ack {
            self.counts.delivered += 1;
            out.push(Action::Delivered(id));
        }
    }

    /// Bytes read from the platform. Commands (anything but an answer) are returned for the
    /// command handler.
    pub fn read(&mut self, bytes: &[u8], out: &mut Vec<Action>) -> Vec<Packet<'static>> {
        self.framer.push(bytes);
        let mut commands = Vec::new();
        while let Some(next) = self.framer.next_frame() {
            let Some(text) = next.ok().and_then(|f| f.text().map(|t| t.into_owned())) else {
                self.counts.stray_answers += 1;
                continue;
            };
            let Ok(p) = segment::parse(&text) else {
                self.counts.stray_answers += 1;
                continue;
            };
            match p.cn() {
                "9014" => {}
                // A notification's answer (to a heartbeat, HJ 212-2025 [S]): nothing to do.
                "9013" => continue,
                cn if cn.starts_with('9') => {
                    self.counts.stray_answers += 1;
                    continue;
                }
                _ => {
                    commands.push(p.into_owned());
                    continue;
                }
            }
            let hit = p
                .qn()
                .and_then(|qn| self.in_flight.iter().position(|f| f.qn == qn));
            match hit {
                Some(i) => {
                    let f = self.in_flight.remove(i);
                    self.counts.delivered += 1;
                    out.push(Action::Delivered(f.id));
                }
                None => self.counts.stray_answers += 1,
            }
        }
        commands
    }

    /// The time passed: frames unanswered for `timeout` are written again, or, after
    /// `retries` such writes, the connection is given up.
    pub fn tick(&mut self, now: i64, out: &mut Vec<Action>) {
        let due = |f: &InFlight| now - f.sent_at >= self.cfg.timeout_ms;
        if self
            .in_flight
            .iter()
            .any(|f| due(f) && f.writes > self.cfg.retries)
        {
            self.counts.gave_up += 1;
            self.in_flight.clear();
            out.push(Action::Close);
            return;
        }
        for f in self.in_flight.iter_mut() {
            if now - f.sent_at >= self.cfg.timeout_ms {
                f.writes += 1;
                f.sent_at = now;
                self.counts.resent += 1;
                out.push(Action::Write(f.frame.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn tz() -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get("Asia/Shanghai").expect("tz")
    }

    fn template() -> Packet<'static> {
        let seg = "ST=39;CN=2051;PW=123456;MN=MN01;Flag=5;CP=&&DataTime=20261201103000;a34002-Avg=80.000,a34002-Flag=N&&";
        segment::parse(seg).expect("template").into_owned()
    }

    fn qn_of(frame: &str) -> String {
        let seg = &frame[6..frame.len() - 6];
        segment::parse(seg)
            .expect("frame")
            .qn()
            .expect("qn")
            .to_string()
    }

    /// The platform's answer to a frame of QN `qn`.
    fn ack(qn: &str) -> String {
        let p = Packet {
            qn: Some(Cow::Owned(qn.to_string())),
            st: Some("91".into()),
            cn: "9014".into(),
            pw: Some("123456".into()),
            mn: Some("MN01".into()),
            flag: Some(segment::Flag(4)),
            has_cp: true,
            ..Packet::default()
        };
        encode::encode(&p)
    }

    fn link(ack: bool, window: usize) -> Link {
        Link::new(
            LinkConfig {
                ack,
                timeout_ms: 10_000,
                retries: 3,
                window,
            },
            tz(),
        )
    }

    fn write_of(a: Option<Action>) -> String {
        match a {
            Some(Action::Write(f)) => f,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn an_answered_frame_is_delivered_and_a_stray_answer_changes_nothing() {
        let mut l = link(true, 1);
        let t0 = 1_796_092_200_000;
        let f = write_of(l.send(t0, 7, &template()));
        assert!(f.contains(";CN=2051;") && f.ends_with("\r\n"));
        assert!(!l.has_room(), "a window of one");
        assert_eq!(l.send(t0, 8, &template()), None);
        let mut out = Vec::new();
        let cmds = l.read(ack("20000101000000000").as_bytes(), &mut out);
        assert!(cmds.is_empty() && out.is_empty());
        assert_eq!(l.counts().stray_answers, 1);
        // The right answer, cut in two reads.
        let a = ack(&qn_of(&f));
        l.read(&a.as_bytes()[..10], &mut out);
        l.read(&a.as_bytes()[10..], &mut out);
        assert_eq!(out, [Action::Delivered(7)]);
        assert!(l.has_room());
    }

    #[test]
    fn an_unanswered_frame_is_resent_with_its_qn_then_the_link_is_given_up() {
        let mut l = link(true, 1);
        let t0 = 1_796_092_200_000;
        let f = write_of(l.send(t0, 1, &template()));
        let mut out = Vec::new();
        l.tick(t0 + 9_999, &mut out);
        assert!(out.is_empty());
        for k in 1..=3 {
            l.tick(t0 + k * 10_000, &mut out);
        }
        // Three writes again, the same bytes (the same QN).
        assert_eq!(out, vec![Action::Write(f.clone()); 3]);
        out.clear();
        l.tick(t0 + 40_000, &mut out);
        assert_eq!(out, [Action::Close]);
        assert_eq!((l.counts().resent, l.counts().gave_up), (3, 1));
        // After the reconnect the same entry goes with a new QN; the old QN's answer is stray.
        l.connected();
        let g = write_of(l.send(t0 + 41_000, 1, &template()));
        assert_ne!(qn_of(&g), qn_of(&f));
        out.clear();
        l.read(ack(&qn_of(&f)).as_bytes(), &mut out);
        assert!(out.is_empty());
        l.read(ack(&qn_of(&g)).as_bytes(), &mut out);
        assert_eq!(out, [Action::Delivered(1)]);
    }

    #[test]
    fn a_window_takes_answers_in_any_order_and_qns_are_unique() {
        let mut l = link(true, 3);
        let t0 = 1_796_092_200_000;
        let frames: Vec<String> = (0..3)
            .map(|id| write_of(l.send(t0, id, &template())))
            .collect();
        let qns: Vec<String> = frames.iter().map(|f| qn_of(f)).collect();
        assert!(
            qns[0] < qns[1] && qns[1] < qns[2],
            "{qns:?}: one millisecond, three QNs"
        );
        assert_eq!(l.send(t0, 9, &template()), None);
        let mut out = Vec::new();
        l.read(
            format!("{}{}", ack(&qns[2]), ack(&qns[0])).as_bytes(),
            &mut out,
        );
        assert_eq!(out, [Action::Delivered(2), Action::Delivered(0)]);
        // A command from the platform is handed on, not taken for an answer.
        let cmd = "QN=20261201103000001;ST=39;CN=1012;PW=123456;MN=MN01;Flag=5;CP=&&SystemTime=20261201103000&&";
        let cmds = l.read(encode::wrap(cmd).as_bytes(), &mut out);
        assert_eq!(cmds.len(), 1);
        assert_eq!(cmds[0].cn(), "1012");
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn without_acks_a_written_frame_is_delivered() {
        let mut l = link(false, 1);
        let t0 = 1_796_092_200_000;
        for id in 0..5 {
            let f = write_of(l.send(t0, id, &template()));
            assert!(f.contains(";Flag=5;"), "the template's Flag is kept: {f}");
            let mut out = Vec::new();
            l.written(id, &mut out);
            assert_eq!(out, [Action::Delivered(id)]);
        }
        let mut out = Vec::new();
        l.tick(t0 + 3_600_000, &mut out);
        assert!(out.is_empty(), "nothing waits for an answer");
    }
}
