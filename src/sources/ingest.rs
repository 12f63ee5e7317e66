//! What a source sees of the gateway: a handle to hand readings and events in, and the
//! durable watermark of what it handed over. Never the store itself: the MQTT source acks a
//! message once the ticket it got back is durable, and asks for an early commit when a
//! broker waits for acks; that is all it needs.

use tokio::sync::watch;

use crate::control::Overrides;
use crate::model::{Detection, Point, Readings, Vehicle};
use crate::pipeline::actuate::Switch;

pub trait Ingest: Overrides + Send + Sync {
    /// One device's readings. Returns the store ticket of what they became.
    fn readings(&self, r: &Readings) -> u64;
    /// Ready-made points that are not judged (HJ 212 period values, codes no map knows).
    /// Returns the store ticket.
    fn points(&self, points: &[Point]) -> u64;
    /// Vehicles at the gates. Returns the store ticket.
    fn vehicles(&self, vs: &[Vehicle]) -> u64;
    /// AI detections opened or cleared. Returns the store ticket.
    fn detections(&self, ds: &[Detection]) -> u64;
    /// A switch a bus carried out: the coils as read back, or why it failed.
    fn switched(&self, sw: &Switch, read_back: Result<Vec<bool>, String>);
    /// A device's clock against the gateway's (ms, positive when it is behind); off by more
    /// than `max_ms`, the data-quality alert.
    fn clock_drift(&self, device: &str, drift_ms: i64, max_ms: i64);
    /// The link to a Modbus device came back or was lost.
    fn device_link(&self, device: &str, up: bool);
    /// The highest ticket whose append is durable.
    fn durable(&self) -> watch::Receiver<u64>;
    /// Someone waits for durability (an MQTT message to acknowledge): commit soon.
    fn commit_soon(&self);
}
