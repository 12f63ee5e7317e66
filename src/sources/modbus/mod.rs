//! Modbus polling: one owner task per bus, a pure request planner, pure decoders.

pub mod bus;
pub mod link;
pub mod planner;
pub mod registers;
pub mod request;
