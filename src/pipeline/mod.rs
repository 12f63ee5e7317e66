//! The site core, sans-IO: the engines that judge readings and events (rules, six 100%,
//! linkage, data quality, AQI, period values) and [`site::SiteCore`], which drives them and
//! returns what they decided as [`site::Effects`]. Nothing here locks, reads a clock, opens a
//! socket or a file; `crate::edge` does that around it.

pub mod actuate;
pub mod alerts;
pub mod aqi;
pub mod compliance;
pub mod periods;
pub mod rules;
pub mod site;
pub mod validate;

pub use site::{AlertOut, CoilWrite, Effects, Judge, Keep, OverrideError, Saved, SiteCore};
