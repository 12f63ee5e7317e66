//! dustgate: a site gateway for construction-site and environmental monitoring.
//!
//! Data flows one way, and the modules are laid out the same way:
//! `sources` (Modbus, MQTT) hand readings and events through an ingest handle to `edge`, which
//! runs the sans-IO site core in `pipeline` (validation, rules, six 100%, linkage, AQI) and
//! carries its effects out to `outputs` (the durable store, InfluxDB or local files, alert
//! outboxes). `config` (site.toml and device profiles) feeds all of them, `health` counts what
//! happens on the way, `http` reads a view of it, and `gateway` wires it together.

pub mod backoff;
pub mod clock;
pub mod config;
pub mod control;
pub mod edge;
pub mod gateway;
pub mod health;
pub mod hj212;
pub mod http;
pub mod model;
pub mod outputs;
pub mod pipeline;
pub mod rand;
pub mod redact;
pub mod register;
pub mod sim;
pub mod sources;
