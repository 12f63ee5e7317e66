//! A sans-IO HJ 212 codec (HJ/T 212-2005, HJ 212-2017 [P], HJ 212-2025 [S]), used by the ingest
//! listener and by the uplink. No sockets, files, clock or tokio here (tests/layout.rs checks).
//!
//! Data flow, ingest: bytes from a socket or serial line → [`Framer::push`] → [`Framer::next_frame`]
//! (until `None`) gives checked [`Frame`]s or [`Reject`]s (counted and logged, a copy of at most 120
//! bytes) → an `encrypted()` frame is decrypted with the station's key (found by [`Frame::mn`],
//! which is in the clear header) through [`decrypt_frame`] → [`Frame::text`] → [`parse`] gives a
//! [`Packet`] (header fields, CP params, factors) → the listener stores it and, if
//! [`Flag::ack_wanted`], answers with [`ack_9014`]. Split parts (PNUM/PNO) are parsed on their
//! own, each carries its DataTime; the listener merges by MN + CN + DataTime.
//! Uplink: a [`Packet`] → [`encode`] / [`split`] / [`encode_encrypted`] → bytes to write.
//!
//! Tolerance: the framer is strict about what makes a frame trustworthy (the declared length
//! must match, the CRC must check in a configured form) and lenient about the envelope
//! (missing CR LF, lengths above 1024, lower-case CRC, garbage between frames). The segment
//! parser is lenient about everything but an unusable header: fields in any order, `,` for `;`,
//! optional QN/Flag/CP, unknown keys kept, malformed items listed in [`Packet::errors`] instead
//! of failing the frame. The encoder is strict: the standard's order and forms only.

pub mod crc;
pub mod encode;
pub mod framer;
pub mod segment;
pub mod sm4;

#[cfg(test)]
mod tests;

pub use crc::CrcForm;
pub use encode::{
    ack_9014, encode, encode_encrypted, encrypt_segment, segment as encode_segment, split, wrap,
};
pub use framer::{CrcForms, Frame, Framer, Reject, RejectReason, decrypt_frame};
pub use segment::{
    Cp, Factor, Flag, Packet, ParseError, Text, Version, format_time, number, parse, parse_time,
};
