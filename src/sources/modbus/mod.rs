//! Modbus polling: one owner task per bus, a pure request planner, pure decoders.

pub mod planner;
pub mod registers;
