//! Where readings come from.

pub mod modbus;
