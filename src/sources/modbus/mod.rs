//! Modbus polling: one owner task per bus, a pure request planner, pure decoders.

pub mod bus;
pub mod link;
pub mod planner;
/// The register types live at the crate root (config uses them too); the path is kept.
pub use crate::register as registers;
pub mod request;
