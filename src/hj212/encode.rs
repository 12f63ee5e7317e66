//! The strict encoder: the standard's field order `QN;ST;CN;PW;MN;Flag;[PNUM;PNO;][RF=1;]CP=&&...&&`
//! (domain.md §3.2 [P], RF from 2025 [S]), `##` + 4-digit zero-padded BYTE length + segment +
//! upper-case CRC (HJ 212 form) + CR LF. Header keys the parser did not know are written after RF,
//! before CP (*choice*). In CP the params come first, then the factors (`code-Suffix=value`
//! joined by `,` within a code, `;` between codes), then a stray data `Flag` (*choice*: the
//! parser does not keep the interleaving of params and factors).

use std::borrow::Cow;

use super::crc::hj212;
use super::segment::{Flag, Packet};

fn push_cp(out: &mut String, p: &Packet<'_>, factors: &[super::segment::Factor<'_>]) {
    let mut first = true;
    let mut sep = |out: &mut String| {
        if !first {
            out.push(';');
        }
        first = false;
    };
    for (k, v) in &p.cp.params {
        sep(out);
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    for f in factors {
        sep(out);
        for (i, (s, v)) in f.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&f.code);
            out.push('-');
            out.push_str(s);
            out.push('=');
            out.push_str(v);
        }
    }
    if let Some(fl) = &p.cp.cp_flag {
        sep(out);
        out.push_str("Flag=");
        out.push_str(fl);
    }
}

fn push_kv(out: &mut String, k: &str, v: &str) {
    out.push_str(k);
    out.push('=');
    out.push_str(v);
    out.push(';');
}

fn head(out: &mut String, p: &Packet<'_>, flag: Option<Flag>, parts: Option<(u32, u32)>) {
    if let Some(v) = &p.qn {
        push_kv(out, "QN", v);
    }
    if let Some(v) = &p.st {
        push_kv(out, "ST", v);
    }
    push_kv(out, "CN", &p.cn);
    if let Some(v) = &p.pw {
        push_kv(out, "PW", v);
    }
    if let Some(v) = &p.mn {
        push_kv(out, "MN", v);
    }
    if let Some(f) = flag {
        push_kv(out, "Flag", &f.0.to_string());
    }
    match parts {
        Some((n, i)) => {
            push_kv(out, "PNUM", &format!("{n:04}"));
            push_kv(out, "PNO", &format!("{i:04}"));
        }
        None => {
            if let Some(n) = p.pnum {
                push_kv(out, "PNUM", &format!("{n:04}"));
            }
            if let Some(n) = p.pno {
                push_kv(out, "PNO", &format!("{n:04}"));
            }
        }
    }
    if let Some(v) = &p.rf {
        push_kv(out, "RF", v);
    }
    for (k, v) in &p.unknown {
        push_kv(out, k, v);
    }
}

fn segment_with(
    p: &Packet<'_>,
    flag: Option<Flag>,
    parts: Option<(u32, u32)>,
    factors: &[super::segment::Factor<'_>],
) -> String {
    let mut s = String::with_capacity(256);
    head(&mut s, p, flag, parts);
    if p.has_cp {
        s.push_str("CP=&&");
        push_cp(&mut s, p, factors);
        s.push_str("&&");
    } else if s.ends_with(';') {
        // A packet without CP (a login frame) ends its header with `&&` (W10 [S]).
        s.pop();
        s.push_str("&&");
    }
    s
}

/// The data segment of `p` (no envelope).
pub fn segment(p: &Packet<'_>) -> String {
    segment_with(p, p.flag, None, &p.cp.factors)
}

/// `##` + length + `seg` + CRC + CR LF around a segment.
pub fn wrap(seg: &str) -> String {
    format!("##{:04}{seg}{:04X}\r\n", seg.len(), hj212(seg.as_bytes()))
}

/// The whole frame of `p`.
pub fn encode(p: &Packet<'_>) -> String {
    wrap(&segment(p))
}

/// The CN=9014 data answer to `p` [P] (domain.md §3.8): QN echoed, ST=91, PW and MN echoed,
/// the Flag's version bits kept with the ack and split bits cleared (4 for 2017, 8 for 2025; no
/// Flag for a 2005-style packet without one), `CP=&&&&`.
pub fn ack_9014(p: &Packet<'_>) -> String {
    answer(p, "9014")
}

/// The CN=9013 notify answer to `p` (a 1013 time-calibration request, a 2025 heartbeat 9015)
/// [P]/[S]: as [`ack_9014`] with CN=9013.
pub fn answer_9013(p: &Packet<'_>) -> String {
    answer(p, "9013")
}

fn answer(p: &Packet<'_>, cn: &'static str) -> String {
    let a = Packet {
        qn: p.qn().map(Cow::Borrowed),
        st: Some("91".into()),
        cn: cn.into(),
        pw: p.pw.clone(),
        mn: p.mn.clone(),
        flag: p.flag.map(|f| Flag(f.0 & !0b11)),
        has_cp: true,
        ..Packet::default()
    };
    encode(&a)
}

/// Frames for `p` whose segments are at most `max_segment` bytes (the standard's 1024 [P]):
/// one frame as it is when it fits; otherwise the parts of [`split_packets`].
pub fn split(p: &Packet<'_>, max_segment: usize) -> Vec<String> {
    split_packets(p, max_segment)
        .iter()
        .map(|part| wrap(&segment(part)))
        .collect()
}

/// `p` as packets whose segments are at most `max_segment` bytes: `p` itself when it fits;
/// otherwise the factors split at code boundaries into parts with `PNUM`/`PNO` (4 digits), the
/// Flag's split bit set (Flag 2 when the packet had none) and every CP param (DataTime above
/// all, hj212-field.md §4.5 [S]) repeated in each part. A single code that does not fit alone
/// still gets a part of its own (over the limit). Each part is a packet of its own (its own QN
/// when sent, its own answer: domain.md §3.8 [P]).
pub fn split_packets<'a>(p: &Packet<'a>, max_segment: usize) -> Vec<Packet<'a>> {
    let whole = segment(p);
    if whole.len() <= max_segment || p.cp.factors.len() < 2 {
        return vec![p.clone()];
    }
    let flag = Some(Flag(p.flag.map_or(0, |f| f.0) | 0b10));
    let fits = |fs: &[super::segment::Factor<'_>]| {
        segment_with(p, flag, Some((9999, 9999)), fs).len() <= max_segment
    };
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0;
    for end in 1..=p.cp.factors.len() {
        if end - start > 1 && !fits(&p.cp.factors[start..end]) {
            groups.push(start..end - 1);
            start = end - 1;
        }
    }
    groups.push(start..p.cp.factors.len());
    let n = groups.len() as u32;
    groups
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let mut part = p.clone();
            part.flag = flag;
            part.pnum = Some(n);
            part.pno = Some(i as u32 + 1);
            part.cp.factors = p.cp.factors[r].to_vec();
            part
        })
        .collect()
}

/// The frame of `p` with its CP data area SM4-encrypted (HJ 212-2025 §6.4, App. A.2 [S]): the
/// length and CRC are computed over the plaintext segment first, then every full 16-byte group
/// of the area is encrypted (ECB, no padding) and written as `{0x..,..}`, the tail in plaintext.
pub fn encode_encrypted(p: &Packet<'_>, key: &[u8; 16]) -> String {
    let seg = segment(p);
    encrypt_segment(&seg, key)
}

/// As [`encode_encrypted`], for a segment already built.
pub fn encrypt_segment(seg: &str, key: &[u8; 16]) -> String {
    let crc = hj212(seg.as_bytes());
    let wire = encrypted_text(seg, key);
    format!("##{:04}{wire}{crc:04X}\r\n", seg.len())
}

/// As [`encrypt_segment`], with the length and the CRC of the segment as sent (the
/// convention some platforms use, hj212-field.md §2.5 [S/U]).
pub fn encrypt_segment_transmitted(seg: &str, key: &[u8; 16]) -> String {
    wrap(&encrypted_text(seg, key))
}

/// The segment with its CP data area encrypted.
fn encrypted_text(seg: &str, key: &[u8; 16]) -> String {
    match seg.find("CP=&&") {
        Some(i) if seg.ends_with("&&") && seg.len() >= i + 7 => {
            let area = &seg.as_bytes()[i + 5..seg.len() - 2];
            let enc = super::sm4::encrypt_area(key, area);
            let mut w = String::with_capacity(i + 7 + enc.len());
            w.push_str(&seg[..i + 5]);
            // The encrypted text is ASCII; the plaintext tail is a suffix of a &str, but may
            // start inside a UTF-8 character, hence lossy (such a tail is not valid anyway).
            w.push_str(&String::from_utf8_lossy(&enc));
            w.push_str("&&");
            w
        }
        _ => seg.to_string(),
    }
}
