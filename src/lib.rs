//! dustgate: a site gateway for construction-site and environmental monitoring.
//!
//! Data flows one way, and the modules are laid out the same way:
//! `sources` (Modbus polling) → `pipeline` (validation) → `outputs` (InfluxDB or local files),
//! with `config` (site.toml and device profiles) feeding all of them and `health` counting
//! what happens on the way.

pub mod backoff;
pub mod clock;
pub mod config;
pub mod control;
pub mod gateway;
pub mod health;
pub mod http;
pub mod model;
pub mod outputs;
pub mod pipeline;
pub mod rand;
pub mod sim;
pub mod sources;
