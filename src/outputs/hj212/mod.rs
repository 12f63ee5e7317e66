//! The HJ 212 uplink: the gateway as the site's data logger, reporting to bureau platforms
//! (issue 13; DESIGN.md, `[[hj212.upstream]]`). Sans-IO parts first: the frames a platform
//! receives ([`frames`]), their QNs ([`qn`]), the link's acks, resends and give-ups
//! ([`session`]).

pub mod backlog;
pub mod frames;
pub mod qn;
pub mod session;
pub mod upstream;
