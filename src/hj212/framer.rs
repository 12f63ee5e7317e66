//! Frames out of a byte stream: `##` + 4 decimal digits of length + data segment + 4 hex digits
//! of CRC + optional CR LF (domain.md §3.1 [P]; tolerance per hj212-field.md §1.3–1.4 [S]).
//!
//! Rules (choices where the standard is silent are marked *choice*):
//! - The length is the segment's BYTE count; the standard allows 0..=1024 [P], senders exceed
//!   it, so anything a 4-digit field can say (0..=9999) is accepted. The declared length must
//!   match: a frame whose CRC checks only at another length (vector X1) is a Length reject.
//! - The CRC is compared case-insensitively against the forms this framer accepts (default
//!   only [`CrcForm::Hj212`]); a frame records which form matched.
//! - CR LF after the CRC is optional; if it is there (now or in the next push) it is consumed.
//! - An incomplete frame is waited for, except when a new header (`##` + up to 4 digits) shows
//!   up inside its declared span: then it is given up as a Length reject (*choice*: a `##` not
//!   followed by digits, which could be data, does not count).
//! - After any failure the bytes up to the next `##` after the failed one are consumed (a
//!   trailing single `#` is kept) and returned as a [`Reject`] with a copy of at most 120 bytes.
//! - Bytes before a `##` are skipped: one [`RejectReason::Garbage`] reject per run of skipped
//!   bytes found in one call (*choice*; a run split across pushes can give more than one), and
//!   [`Framer::garbage_bytes`] counts them all.
//! - The buffer is capped (default 64 KiB); beyond it the oldest bytes are dropped and
//!   reported as one [`RejectReason::Overflow`] reject.
//! - HJ 212-2025 encrypted frames (hj212-field.md §2.5 [S]): the area after `CP=&&` may be SM4
//!   ciphertext written as `{0x..,..}`, and the length and CRC refer to the decrypted plaintext
//!   [S/U], so when the length-based extraction fails such a frame is found by its delimiter (`&&` + 4 hex digits, then CR LF, `##` or the
//!   end of the buffered bytes) and handed out with `encrypted() == true` and no checked segment;
//!   [`decrypt_frame`] decrypts and then checks length and CRC.

use std::borrow::Cow;

use thiserror::Error;

use super::crc::{CrcForm, parse_hex4};

/// Default buffer cap.
pub const DEFAULT_CAP: usize = 64 * 1024;
/// At most this many bytes of a rejected run are kept for the log.
pub const REJECT_COPY: usize = 120;

/// Why bytes were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// `##` not followed by 4 decimal digits.
    BadHeader,
    /// The declared length does not fit the bytes (no CRC where it should be, a new header
    /// inside the frame, the stream ended inside it, or a decrypted area of another length).
    Length,
    /// The CRC does not check in any accepted form.
    Crc,
    /// The buffer cap was exceeded; the oldest bytes were dropped.
    Overflow,
    /// Bytes outside any frame.
    Garbage,
    /// An encrypted area that is not `{0x..,..}` text of whole blocks, or a missing `&&`.
    Cipher,
}

/// Refused bytes, for the log and the counters.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "hj212 reject {reason:?}: {len} bytes: {}",
    String::from_utf8_lossy(bytes)
)]
pub struct Reject {
    /// Why.
    pub reason: RejectReason,
    /// How many bytes were consumed.
    pub len: usize,
    /// The first (at most [`REJECT_COPY`]) of them.
    pub bytes: Vec<u8>,
}

impl Reject {
    fn new(reason: RejectReason, run: &[u8]) -> Reject {
        Reject {
            reason,
            len: run.len(),
            bytes: run[..run.len().min(REJECT_COPY)].to_vec(),
        }
    }
}

/// The set of accepted CRC forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrcForms {
    hj212: bool,
    modbus: bool,
    modbus_swapped: bool,
}

impl CrcForms {
    /// A set of the given forms (empty: nothing checks).
    pub fn of(forms: &[CrcForm]) -> CrcForms {
        CrcForms {
            hj212: forms.contains(&CrcForm::Hj212),
            modbus: forms.contains(&CrcForm::Modbus),
            modbus_swapped: forms.contains(&CrcForm::ModbusSwapped),
        }
    }

    /// Whether `form` is in the set.
    pub fn contains(self, form: CrcForm) -> bool {
        match form {
            CrcForm::Hj212 => self.hj212,
            CrcForm::Modbus => self.modbus,
            CrcForm::ModbusSwapped => self.modbus_swapped,
        }
    }

    /// The first accepted form under which `seg` has CRC `crc` (the standard's form first).
    pub fn check(self, seg: &[u8], crc: u16) -> Option<CrcForm> {
        [CrcForm::Hj212, CrcForm::Modbus, CrcForm::ModbusSwapped]
            .into_iter()
            .find(|&f| self.contains(f) && f.compute(seg) == crc)
    }
}

impl Default for CrcForms {
    fn default() -> Self {
        CrcForms::of(&[CrcForm::Hj212])
    }
}

/// One frame. Its segment is only readable when its CRC (and length) checked: an encrypted
/// frame carries the wire text until [`decrypt_frame`] turns it into a checked one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    wire: Vec<u8>,
    declared_len: usize,
    crc: u16,
    crc_form: Option<CrcForm>,
    encrypted: bool,
    forms: CrcForms,
}

impl Frame {
    /// The checked data segment (bytes between the length and the CRC); `None` while encrypted.
    pub fn segment(&self) -> Option<&[u8]> {
        (!self.encrypted).then_some(&self.wire[..])
    }

    /// The checked segment as text; bytes that are not UTF-8 (e.g. GBK log text) become U+FFFD.
    /// `None` while encrypted.
    pub fn text(&self) -> Option<Cow<'_, str>> {
        // The strict check first: it is much faster than the lossy one on (valid) ASCII.
        self.segment().map(|s| match std::str::from_utf8(s) {
            Ok(t) => Cow::Borrowed(t),
            Err(_) => String::from_utf8_lossy(s),
        })
    }

    /// The bytes between the length field and the CRC as received (ciphertext text included).
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// Whether the data area is still SM4 ciphertext (length and CRC not yet checked).
    pub fn encrypted(&self) -> bool {
        self.encrypted
    }

    /// The CRC form that matched; `None` while encrypted.
    pub fn crc_form(&self) -> Option<CrcForm> {
        self.crc_form
    }

    /// The CRC as sent.
    pub fn crc(&self) -> u16 {
        self.crc
    }

    /// The length field as sent.
    pub fn declared_len(&self) -> usize {
        self.declared_len
    }

    /// The MN from the clear header (also readable while encrypted, to find the station's key).
    pub fn mn(&self) -> Option<String> {
        let end = find(&self.wire, b"CP=&&", 0).unwrap_or(self.wire.len());
        let head = String::from_utf8_lossy(&self.wire[..end]);
        head.split([';', ','])
            .find_map(|i| i.trim_start().strip_prefix("MN="))
            .map(str::to_string)
    }
}

/// Decrypts an encrypted frame's data area with the station's SM4 key, then checks the declared
/// length and the CRC on the plaintext (hj212-field.md §2.5 [S/U]). A frame that is not encrypted
/// is returned as it is (it was checked already).
pub fn decrypt_frame(frame: &Frame, key: &[u8; 16]) -> Result<Frame, Reject> {
    if !frame.encrypted {
        return Ok(frame.clone());
    }
    let w = &frame.wire;
    let bad = |reason| Reject::new(reason, w);
    let start = find(w, b"CP=&&{", 0).ok_or_else(|| bad(RejectReason::Cipher))? + 5;
    if w.len() < start + 2 || !w.ends_with(b"&&") {
        return Err(bad(RejectReason::Cipher));
    }
    let area = &w[start..w.len() - 2];
    let plain = super::sm4::decrypt_area(key, area).ok_or_else(|| bad(RejectReason::Cipher))?;
    let mut seg = Vec::with_capacity(start + plain.len() + 2);
    seg.extend_from_slice(&w[..start]);
    seg.extend_from_slice(&plain);
    seg.extend_from_slice(b"&&");
    if seg.len() != frame.declared_len {
        return Err(bad(RejectReason::Length));
    }
    let form = frame
        .forms
        .check(&seg, frame.crc)
        .ok_or_else(|| bad(RejectReason::Crc))?;
    Ok(Frame {
        wire: seg,
        declared_len: frame.declared_len,
        crc: frame.crc,
        crc_form: Some(form),
        encrypted: false,
        forms: frame.forms,
    })
}

/// What may still follow the last frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    None,
    Cr,
    Lf,
}

/// A sans-IO framer: push bytes in, take frames and rejects out.
#[derive(Debug, Clone)]
pub struct Framer {
    buf: Vec<u8>,
    pos: usize,
    cap: usize,
    forms: CrcForms,
    tail: Tail,
    overflow: Option<Reject>,
    garbage: u64,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new()
    }
}

/// Where `pat` first occurs in `hay` at or after `from`.
pub(crate) fn find(hay: &[u8], pat: &[u8], from: usize) -> Option<usize> {
    if pat.is_empty() || hay.len() < pat.len() {
        return None;
    }
    let last = hay.len() - pat.len();
    let mut i = from;
    while i <= last {
        let rel = hay[i..=last].iter().position(|&c| c == pat[0])?;
        i += rel;
        if &hay[i..i + pat.len()] == pat {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Whether a new header (`##` + up to 4 digits, all that is there) starts at or after `from`
/// and before `until`; its position.
fn new_header(d: &[u8], from: usize, until: usize) -> Option<usize> {
    let mut i = from;
    while let Some(h) = find(&d[..until.min(d.len())], b"##", i) {
        let digits = &d[h + 2..(h + 6).min(d.len())];
        if digits.iter().all(u8::is_ascii_digit) {
            return Some(h);
        }
        i = h + 1;
    }
    None
}

enum Step {
    Wait,
    Out(Result<Frame, Reject>),
}

impl Framer {
    /// A framer accepting only the standard's CRC, with the default cap.
    pub fn new() -> Framer {
        Framer::with(CrcForms::default(), DEFAULT_CAP)
    }

    /// A framer accepting `forms`, buffering at most `cap` bytes (at least 16).
    pub fn with(forms: CrcForms, cap: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            pos: 0,
            cap: cap.max(16),
            forms,
            tail: Tail::None,
            overflow: None,
            garbage: 0,
        }
    }

    /// Bytes skipped outside frames since the framer was made.
    pub fn garbage_bytes(&self) -> u64 {
        self.garbage
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Forgets everything buffered (on reconnect).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.tail = Tail::None;
        self.overflow = None;
    }

    /// Gives the buffer's memory back when nothing is buffered (a hub calls it after each read:
    /// an idle connection then holds no buffer; the next push allocates one frame's worth).
    pub fn shrink(&mut self) {
        if self.pos == self.buf.len() {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    /// The buffer's capacity (what [`Framer::shrink`] gives back).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.buf.capacity()
    }

    /// Appends received bytes. Beyond the cap the oldest bytes are dropped (one Overflow reject).
    pub fn push(&mut self, bytes: &[u8]) {
        // Consumed bytes are dropped from the front only when that is cheap: all of them, or
        // at least 4 KiB and no fewer than are left to move (amortized O(1) per byte; draining
        // at every 4 KiB moved up to the whole 64 KiB cap each time).
        let left = self.buf.len() - self.pos;
        if self.pos > 0 && (left == 0 || (self.pos >= 4096 && self.pos >= left)) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
        let have = self.buf.len() - self.pos;
        if have > self.cap {
            let drop = have - self.cap;
            let run = &self.buf[self.pos..self.pos + drop];
            match &mut self.overflow {
                Some(r) => {
                    r.len += drop;
                    let room = REJECT_COPY - r.bytes.len();
                    r.bytes.extend_from_slice(&run[..run.len().min(room)]);
                }
                None => self.overflow = Some(Reject::new(RejectReason::Overflow, run)),
            }
            self.pos += drop;
            self.tail = Tail::None;
        }
    }

    /// The next frame or reject; call until `None` (then push more bytes).
    pub fn next_frame(&mut self) -> Option<Result<Frame, Reject>> {
        if let Some(r) = self.overflow.take() {
            return Some(Err(r));
        }
        loop {
            self.skip_tail();
            match self.step() {
                Some(Step::Out(o)) => return Some(o),
                Some(Step::Wait) => return None,
                None => continue,
            }
        }
    }

    /// The end of the stream (EOF, or an idle timeout the caller measured): whatever is buffered
    /// is refused (an incomplete frame as Length, anything else as Garbage) and the buffer emptied.
    pub fn finish(&mut self) -> Option<Reject> {
        let d = &self.buf[self.pos..];
        let r = if d.is_empty() {
            None
        } else if d.starts_with(b"##") {
            Some(Reject::new(RejectReason::Length, d))
        } else {
            self.garbage += d.len() as u64;
            Some(Reject::new(RejectReason::Garbage, d))
        };
        self.reset();
        r
    }

    fn skip_tail(&mut self) {
        while self.pos < self.buf.len() {
            match (self.tail, self.buf[self.pos]) {
                (Tail::Cr, b'\r') => self.tail = Tail::Lf,
                (Tail::Cr | Tail::Lf, b'\n') => self.tail = Tail::None,
                _ => {
                    self.tail = Tail::None;
                    return;
                }
            }
            self.pos += 1;
        }
    }

    /// Consumes `n` bytes as a reject.
    fn reject(&mut self, reason: RejectReason, n: usize) -> Step {
        let r = Reject::new(reason, &self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Step::Out(Err(r))
    }

    /// Consumes a failed frame: up to the next `##` after its own, keeping a trailing `#`.
    fn fail(&mut self, reason: RejectReason) -> Step {
        let d = &self.buf[self.pos..];
        let n = match find(d, b"##", 1) {
            Some(h) => h,
            None if d.len() > 2 && d.ends_with(b"#") => d.len() - 1,
            None => d.len(),
        };
        // A CR LF that ends the failed frame is part of it, not garbage.
        self.tail = Tail::Cr;
        self.reject(reason, n)
    }

    /// Consumes a frame of `n` bytes and what follows it of CR LF.
    fn emit(&mut self, n: usize, f: Frame) -> Step {
        self.pos += n;
        self.tail = Tail::Cr;
        Step::Out(Ok(f))
    }

    /// One step: `None` = something was consumed silently, go on.
    fn step(&mut self) -> Option<Step> {
        let d = &self.buf[self.pos..];
        if d.is_empty() {
            return Some(Step::Wait);
        }
        let h = match find(d, b"##", 0) {
            Some(h) => h,
            None => {
                let keep = usize::from(d.ends_with(b"#"));
                let n = d.len() - keep;
                if n == 0 {
                    return Some(Step::Wait);
                }
                self.garbage += n as u64;
                return Some(self.reject(RejectReason::Garbage, n));
            }
        };
        if h > 0 {
            self.garbage += h as u64;
            return Some(self.reject(RejectReason::Garbage, h));
        }
        let digits = &d[2..d.len().min(6)];
        if !digits.iter().all(u8::is_ascii_digit) {
            return Some(self.fail(RejectReason::BadHeader));
        }
        if d.len() < 6 {
            return Some(Step::Wait);
        }
        let len = digits
            .iter()
            .fold(0usize, |a, &c| a * 10 + usize::from(c - b'0'));
        let end = 6 + len;
        if d.len() < end + 4 {
            if new_header(d, 6, d.len()).is_some() {
                return Some(self.fail(RejectReason::Length));
            }
            return Some(Step::Wait);
        }
        let seg = &d[6..end];
        let crc = parse_hex4(&d[end..end + 4]);
        if let Some(form) = crc.and_then(|c| self.forms.check(seg, c)) {
            let f = Frame {
                wire: seg.to_vec(),
                declared_len: len,
                crc: crc.unwrap_or_default(),
                crc_form: Some(form),
                encrypted: false,
                forms: self.forms,
            };
            return Some(self.emit(end + 4, f));
        }
        // Length-based extraction failed: an encrypted area (2025) is framed by its delimiter.
        let scan_to = new_header(d, 2, d.len()).unwrap_or(d.len());
        if let Some(cp) = find(&d[..scan_to], b"CP=&&{0x", 6) {
            return Some(self.encrypted(len, cp));
        }
        Some(self.fail(if crc.is_some() {
            RejectReason::Crc
        } else {
            RejectReason::Length
        }))
    }

    /// An encrypted frame whose data area starts at `cp` + 5: its end is the first `}` after it,
    /// then `&&` + 4 hex digits followed by CR, `##` or the end of the buffered bytes.
    fn encrypted(&mut self, len: usize, cp: usize) -> Step {
        let d = &self.buf[self.pos..];
        let limit = new_header(d, cp, d.len()).unwrap_or(d.len());
        let Some(close) = find(&d[..limit], b"}", cp) else {
            return if limit < d.len() {
                self.fail(RejectReason::Cipher)
            } else {
                Step::Wait
            };
        };
        let mut i = close + 1;
        while let Some(a) = find(&d[..limit], b"&&", i) {
            let after = a + 6;
            if after > limit {
                break;
            }
            if let Some(crc) = parse_hex4(&d[a + 2..after]) {
                let next = d.get(after).copied();
                if matches!(next, None | Some(b'\r') | Some(b'#')) {
                    let f = Frame {
                        wire: d[6..a + 2].to_vec(),
                        declared_len: len,
                        crc,
                        crc_form: None,
                        encrypted: true,
                        forms: self.forms,
                    };
                    return self.emit(after, f);
                }
            }
            i = a + 1;
        }
        if limit < d.len() {
            self.fail(RejectReason::Length)
        } else {
            Step::Wait
        }
    }
}
