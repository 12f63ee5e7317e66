//! Where points go: InfluxDB over HTTP, or daily line-protocol files; and the queue and writer
//! in front of them.

pub mod dead_letter;
pub mod files;
pub mod influx;
pub mod line_protocol;
pub mod queue;
pub mod retry;
pub mod sink;
pub mod store;
pub mod writer;
