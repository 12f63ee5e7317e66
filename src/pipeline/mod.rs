//! The pipeline between sources and outputs: readings in, validated points out.
//!
//! Today it validates and encodes; the rule engine and compliance engine join it here.

pub mod validate;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::mpsc;

use crate::health::Health;
use crate::model::Readings;
use crate::outputs::line_protocol::encode_point;
use crate::outputs::queue::PointQueue;

/// Consumes readings until every source has stopped.
pub async fn run(
    mut rx: mpsc::Receiver<Readings>,
    queue: Arc<dyn PointQueue>,
    health: Arc<Health>,
) {
    while let Some(r) = rx.recv().await {
        let (points, invalid) = validate::to_points(&r);
        health.record_latest(&r);
        health
            .readings
            .fetch_add(r.values.iter().flatten().count() as u64, Relaxed);
        if invalid > 0 {
            health.invalid_values.fetch_add(invalid as u64, Relaxed);
            tracing::warn!(device = %r.device.id, invalid, "values that are not finite numbers after decoding were not written");
        }
        let mut lines = Vec::with_capacity(64 * points.len());
        let mut n = 0;
        for p in &points {
            if encode_point(p, &mut lines) > 0 {
                n += 1;
            }
        }
        queue.append(lines, n);
    }
}
