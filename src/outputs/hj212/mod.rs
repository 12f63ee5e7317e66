//! The HJ 212 uplink: the gateway as the site's data logger, reporting to bureau platforms
//! (DESIGN.md, `[[hj212.upstream]]`). Sans-IO parts: the frames a platform receives
//! ([`frames`]), their QNs ([`qn`]), the link's acks, resends and give-ups ([`session`]), the
//! answers to the platform's commands ([`commands`]); then the durable per-platform backlog
//! ([`backlog`]) and the task that runs one platform ([`upstream`]).

pub mod backlog;
pub mod commands;
pub mod frames;
pub mod qn;
pub mod session;
pub mod upstream;
