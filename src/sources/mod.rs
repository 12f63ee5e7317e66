//! Where readings come from.

pub mod modbus;
pub mod mqtt;
