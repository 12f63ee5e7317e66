//! Where points go: InfluxDB over HTTP, or daily line-protocol files.

pub mod line_protocol;
