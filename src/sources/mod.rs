//! Sources: where readings come from. Each hands them in through an [`ingest::Ingest`] handle.

pub mod hj212;
pub mod ingest;
pub mod modbus;
pub mod mqtt;
