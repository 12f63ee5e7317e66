//! Assembles a running gateway from a validated config: bus tasks → pipeline → queue →
//! writer, plus the health reporter; and takes it down in the same order, so what was read is
//! flushed before the writer stops.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::Config;
use crate::health::Health;
use crate::model::now_ms;
use crate::outputs::dead_letter::DeadLetter;
use crate::outputs::files::FileSink;
use crate::outputs::influx::{InfluxSetupError, InfluxSink};
use crate::outputs::line_protocol::encode_point;
use crate::outputs::queue::{MemoryQueue, PointQueue};
use crate::outputs::writer::{Writer, WriterOptions};
use crate::sources::modbus::bus::BusTask;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Influx(#[from] InfluxSetupError),
    #[error("cannot create the store directory {dir}: {source}")]
    StoreDir { dir: String, source: std::io::Error },
}

/// A running gateway.
pub struct Gateway {
    pub health: Arc<Health>,
    pub queue: Arc<dyn PointQueue>,
    /// Where points are written, for people.
    pub destination: String,
    sources_stop: watch::Sender<bool>,
    reporter_stop: watch::Sender<bool>,
    writer_stop: watch::Sender<bool>,
    sources: Vec<JoinHandle<()>>,
    pipeline: JoinHandle<()>,
    reporter: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Gateway {
    /// Starts every task. Must be called inside a Tokio runtime.
    pub fn start(cfg: &Config) -> Result<Gateway, StartError> {
        std::fs::create_dir_all(&cfg.store.dir).map_err(|source| StartError::StoreDir {
            dir: cfg.store.dir.display().to_string(),
            source,
        })?;
        let health = Arc::new(Health::default());
        let batch_size = cfg.influx.as_ref().map_or(5000, |i| i.batch_size);
        let queue: Arc<dyn PointQueue> =
            Arc::new(MemoryQueue::new(cfg.store.memory_max, batch_size));
        let (sources_stop, sources_rx) = watch::channel(false);
        let (writer_stop, writer_rx) = watch::channel(false);
        let (reporter_stop, reporter_rx) = watch::channel(false);

        let dead_letter = DeadLetter::new(cfg.store.dir.join("dead-letter"), "influx");
        let (writer, destination) = match &cfg.influx {
            Some(icfg) => {
                let sink = InfluxSink::new(icfg)?;
                let dest = format!("InfluxDB {}", icfg.url);
                let opts = WriterOptions {
                    batch_size: icfg.batch_size,
                    flush_interval: icfg.flush_interval,
                    retry_max: icfg.retry_max,
                    shutdown_grace: Duration::from_secs(10),
                };
                let w = Writer::new(queue.clone(), sink, opts, dead_letter, health.clone());
                (tokio::spawn(w.run(writer_rx)), dest)
            }
            None => {
                let dir = cfg.store.dir.join("series");
                let sink = FileSink::new(dir.clone(), cfg.site.timezone.clone());
                let opts = WriterOptions {
                    batch_size: 5000,
                    flush_interval: Duration::from_secs(1),
                    retry_max: Duration::from_secs(30),
                    shutdown_grace: Duration::from_secs(10),
                };
                let w = Writer::new(queue.clone(), sink, opts, dead_letter, health.clone());
                (
                    tokio::spawn(w.run(writer_rx)),
                    format!("line-protocol files in {}", dir.display()),
                )
            }
        };

        let (tx, rx) = mpsc::channel(1024);
        let pipeline = tokio::spawn(crate::pipeline::run(rx, queue.clone(), health.clone()));
        let mut sources = Vec::new();
        for bus in &cfg.buses {
            let task = BusTask::new(
                bus.clone(),
                &cfg.site.id,
                &cfg.site.tags,
                &health,
                tx.clone(),
            );
            sources.push(tokio::spawn(task.run(sources_rx.clone())));
        }
        drop(tx);

        let reporter = tokio::spawn(report_health(
            cfg.site.id.clone(),
            cfg.site.tags.clone(),
            cfg.site.health_interval,
            health.clone(),
            queue.clone(),
            reporter_rx,
        ));
        info!(site = %cfg.site.id, buses = cfg.buses.len(), destination = %destination, "gateway started");
        Ok(Gateway {
            health,
            queue,
            destination,
            sources_stop,
            reporter_stop,
            writer_stop,
            sources,
            pipeline,
            reporter,
            writer,
        })
    }

    /// Stops the sources, lets the pipeline empty, writes a last health snapshot (so its
    /// counts match what was read), then lets the writer deliver what is queued (within its
    /// grace period).
    pub async fn stop(self) {
        let _ = self.sources_stop.send(true);
        for s in self.sources {
            let _ = s.await;
        }
        let _ = self.pipeline.await;
        let _ = self.reporter_stop.send(true);
        let _ = self.reporter.await;
        let _ = self.writer_stop.send(true);
        let _ = self.writer.await;
    }
}

/// Every `interval`, appends `gateway` points and logs one health line; once more at stop.
async fn report_health(
    site_id: String,
    site_tags: Vec<(String, String)>,
    interval: Duration,
    health: Arc<Health>,
    queue: Arc<dyn PointQueue>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.changed() => true,
        };
        let depth = queue.depth();
        let points = health.snapshot_points(
            &site_id,
            &site_tags,
            depth,
            queue.dropped_points(),
            now_ms(),
        );
        let mut lines = Vec::new();
        let n = points
            .iter()
            .filter(|p| encode_point(p, &mut lines) > 0)
            .count();
        queue.append(lines, n);
        let (up, total) = health.devices_up();
        let w = &health.writer;
        use std::sync::atomic::Ordering::Relaxed;
        info!(
            devices_up = up,
            devices = total,
            readings = health.readings.load(Relaxed),
            written = w.written_points.load(Relaxed),
            queued = depth.points,
            dropped = queue.dropped_points(),
            dead_letter = w.dead_letter_points.load(Relaxed),
            "health"
        );
        if stopping || *stop.borrow() {
            return;
        }
    }
}
