//! The pipeline between sources and outputs: readings in, validated points into the store.
//!
//! It is called directly by every source task (no task of its own), so a source learns the
//! store ticket of what it handed over and can acknowledge it upstream once it is durable.
//! The rule engine and the compliance engine join it here.

pub mod rules;
pub mod validate;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::health::Health;
use crate::model::{Point, Readings};
use crate::outputs::line_protocol::encode_point;
use crate::outputs::queue::PointQueue;

pub struct Pipeline {
    queue: Arc<dyn PointQueue>,
    health: Arc<Health>,
}

impl Pipeline {
    pub fn new(queue: Arc<dyn PointQueue>, health: Arc<Health>) -> Self {
        Self { queue, health }
    }

    /// Validates one device's readings and stores them. Returns the store ticket.
    pub fn readings(&self, r: &Readings) -> u64 {
        let (points, invalid) = validate::to_points(r);
        self.health.record_latest(r);
        self.health
            .readings
            .fetch_add(r.values.iter().flatten().count() as u64, Relaxed);
        if invalid > 0 {
            self.health
                .invalid_values
                .fetch_add(invalid as u64, Relaxed);
            tracing::warn!(device = %r.device.id, invalid, "values that are not finite numbers after decoding were not written");
        }
        self.points(&points)
    }

    /// Stores ready-made points (events, health). Returns the store ticket.
    pub fn points(&self, points: &[Point]) -> u64 {
        let mut lines = Vec::with_capacity(64 * points.len());
        let n = points
            .iter()
            .filter(|p| encode_point(p, &mut lines) > 0)
            .count();
        self.queue.append(lines, n)
    }

    pub fn queue(&self) -> &Arc<dyn PointQueue> {
        &self.queue
    }
}
