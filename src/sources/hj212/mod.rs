//! HJ 212 in: monitors and data loggers (数采仪) that send HJ 212 to the gateway, on a site box
//! or a bureau hub (`[[hj212.listen]]`).
//!
//! - [`decode`]: sans-IO, one parsed packet of a known station into readings and points.
//! - [`stations`]: the station table (MN → device, factor map, password, SM4 key), the
//!   per-station rate limit, and the stations an `unknown = "accept"` listener adds.
//! - [`listener`]: the TCP listener (connection cap, idle timeout) or serial line, one task per
//!   connection: bytes → framer → parser → station → the ingest handle; a frame that asks for
//!   an answer gets CN=9014 only once what it carried is durable in the store.
//!
//! The codec itself (framing, parsing, encoding, SM4) is `crate::hj212`, shared with the
//! uplink.

pub mod decode;
pub mod listener;
pub mod stations;
mod throttle;

pub use listener::{Hj212Task, SiteContext};
