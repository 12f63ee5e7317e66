//! MQTT ingest: subscriptions → JSON mapping → pipeline, acknowledged once durable.

pub mod broker;
pub mod mapping;
pub mod tls;
pub mod topic;
