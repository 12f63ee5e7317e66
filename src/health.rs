//! Counters of what happens on the way: per device, in the pipeline, in the writer.
//!
//! Plain atomics shared by the tasks; the health task turns them into `gateway` points and a
//! log line, and the demo prints them.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering::Relaxed};

/// Up/down state of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Not polled yet.
    Unknown,
    Up,
    Down,
}

#[derive(Debug)]
pub struct DeviceHealth {
    pub id: String,
    pub bus: String,
    pub polls: AtomicU64,
    /// Polls that failed: timeout, link or protocol error, or nothing readable.
    pub poll_errors: AtomicU64,
    /// Modbus exception responses (the device answered, but refused a request).
    pub exceptions: AtomicU64,
    pub timeouts: AtomicU64,
    /// Link faults: the connection could not be opened, or broke under a request.
    pub link_errors: AtomicU64,
    /// Replies that did not fit their request (mismatched header, too few values).
    pub protocol_errors: AtomicU64,
    state: AtomicU8,
    pub last_ok_ms: AtomicI64,
}

impl DeviceHealth {
    pub fn new(id: &str, bus: &str) -> Self {
        Self {
            id: id.to_string(),
            bus: bus.to_string(),
            polls: AtomicU64::new(0),
            poll_errors: AtomicU64::new(0),
            exceptions: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            link_errors: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            state: AtomicU8::new(0),
            last_ok_ms: AtomicI64::new(0),
        }
    }

    pub fn state(&self) -> DeviceState {
        match self.state.load(Relaxed) {
            1 => DeviceState::Up,
            2 => DeviceState::Down,
            _ => DeviceState::Unknown,
        }
    }

    pub fn set_state(&self, s: DeviceState) {
        let v = match s {
            DeviceState::Unknown => 0,
            DeviceState::Up => 1,
            DeviceState::Down => 2,
        };
        self.state.store(v, Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct WriterHealth {
    pub written_points: AtomicU64,
    /// Points rejected by the server and set aside in the dead-letter file.
    pub dead_letter_points: AtomicU64,
    /// Points that could not even be set aside (dead-letter file not writable).
    pub lost_points: AtomicU64,
    pub retries: AtomicU64,
    /// Batches sent and answered 2xx.
    pub batches: AtomicU64,
    pub last_success_ms: AtomicI64,
    pub last_error: std::sync::Mutex<Option<String>>,
    /// Since when (wall ms) the destination (InfluxDB database or bucket) has been missing:
    /// points are held, not written; 0 while it is there.
    pub destination_missing_since_ms: AtomicI64,
}

impl WriterHealth {
    /// Since when the destination has been missing, if it is now.
    pub fn destination_missing_since(&self) -> Option<i64> {
        Some(self.destination_missing_since_ms.load(Relaxed)).filter(|&t| t != 0)
    }
}

#[derive(Debug, Default)]
pub struct Health {
    pub devices: std::sync::Mutex<Vec<Arc<DeviceHealth>>>,
    /// Readings taken (one per value).
    pub readings: AtomicU64,
    /// Values that were NaN or infinite after decoding: not written.
    pub invalid_values: AtomicU64,
    /// Alerts opened since start.
    pub alerts_opened: AtomicU64,
    /// Six-100% violations since start.
    pub violations: AtomicU64,
    /// Actuator switches confirmed by reading the coils back, and those that were not.
    pub switches: AtomicU64,
    pub switch_failures: AtomicU64,
    pub writer: Arc<WriterHealth>,
    /// Alert outputs (MQTT topic, webhooks): name → their writer's counters.
    pub outputs: std::sync::Mutex<Vec<(String, Arc<WriterHealth>)>>,
    pub brokers: std::sync::Mutex<Vec<Arc<BrokerHealth>>>,
    /// The latest value of every device's every metric, for people (demo, status page).
    pub latest: std::sync::Mutex<std::collections::HashMap<String, LatestValues>>,
}

/// One MQTT broker connection.
#[derive(Debug)]
pub struct BrokerHealth {
    pub name: String,
    pub connected: AtomicU8,
    pub connects: AtomicU64,
    pub subscriptions: Vec<SubscriptionHealth>,
}

/// Counters of one `[[mqtt.subscribe]]`.
#[derive(Debug)]
pub struct SubscriptionHealth {
    pub topic: String,
    pub messages: AtomicU64,
    /// Messages that were not JSON, missed their fields or held nonsense (acknowledged, counted).
    pub rejected: AtomicU64,
    pub dead_lettered: AtomicU64,
}

impl BrokerHealth {
    pub fn new(name: &str, topics: &[String]) -> Self {
        Self {
            name: name.to_string(),
            connected: AtomicU8::new(0),
            connects: AtomicU64::new(0),
            subscriptions: topics
                .iter()
                .map(|t| SubscriptionHealth {
                    topic: t.clone(),
                    messages: AtomicU64::new(0),
                    rejected: AtomicU64::new(0),
                    dead_lettered: AtomicU64::new(0),
                })
                .collect(),
        }
    }
}

/// The latest readings of one device, slot by slot: (time in ms, value).
#[derive(Debug, Clone)]
pub struct LatestValues {
    pub device: Arc<crate::model::DeviceMeta>,
    pub values: Vec<Option<(i64, f64)>>,
}

impl Health {
    pub fn add_device(&self, d: Arc<DeviceHealth>) {
        if let Ok(mut v) = self.devices.lock() {
            v.push(d);
        }
    }

    pub fn add_broker(&self, b: Arc<BrokerHealth>) {
        if let Ok(mut v) = self.brokers.lock() {
            v.push(b);
        }
    }

    pub fn brokers(&self) -> Vec<Arc<BrokerHealth>> {
        self.brokers.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn devices(&self) -> Vec<Arc<DeviceHealth>> {
        self.devices.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Records a device's readings as its latest values.
    pub fn record_latest(&self, r: &crate::model::Readings) {
        let Ok(mut latest) = self.latest.lock() else {
            return;
        };
        let entry = match latest.get_mut(&r.device.id) {
            Some(e) => e,
            None => latest
                .entry(r.device.id.clone())
                .or_insert_with(|| LatestValues {
                    device: r.device.clone(),
                    values: vec![None; r.values.len()],
                }),
        };
        for (slot, v) in entry.values.iter_mut().zip(&r.values) {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                *slot = Some((r.time_ms, v));
            }
        }
    }

    /// Every device's latest values, by device id: a copy, so the lock is not held while
    /// they are turned into an answer.
    pub fn latest_sorted(&self) -> Vec<LatestValues> {
        let mut latest: Vec<LatestValues> = self
            .latest
            .lock()
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default();
        latest.sort_by(|a, b| a.device.id.cmp(&b.device.id));
        latest
    }

    /// The latest value of one metric of one device.
    pub fn latest_value(&self, device: &str, metric: &str) -> Option<(i64, f64)> {
        let latest = self.latest.lock().ok()?;
        let l = latest.get(device)?;
        let slot = l.device.slots.iter().position(|s| s.metric == metric)?;
        l.values.get(slot).copied().flatten()
    }

    pub fn devices_up(&self) -> (usize, usize) {
        let d = self.devices();
        let up = d.iter().filter(|d| d.state() == DeviceState::Up).count();
        (up, d.len())
    }
}

use crate::model::{FieldKey, FieldValue, Point, SeriesKey};
use crate::outputs::queue::Depth;

impl Health {
    /// The `gateway` measurement: one point per device, one for the pipeline, one for the
    /// writer and its queue.
    pub fn snapshot_points(
        &self,
        site_id: &str,
        site_tags: &[(String, String)],
        depth: Depth,
        dropped_points: u64,
        time_ms: i64,
    ) -> Vec<Point> {
        let tags = |component: &str, device: &str, bus: Option<&str>| {
            let mut t: Vec<(&str, &str)> = site_tags
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            t.push(("site", site_id));
            t.push(("device", device));
            t.push(("component", component));
            if let Some(b) = bus {
                t.push(("bus", b));
            }
            SeriesKey::new("gateway", &t)
        };
        let f = |name: &str, v: f64| (FieldKey::new(name), FieldValue::Float(v));
        let mut points = Vec::new();
        for d in self.devices() {
            let up = match d.state() {
                DeviceState::Up => 1.0,
                _ => 0.0,
            };
            points.push(Point {
                series: tags("modbus", &d.id, Some(&d.bus)),
                fields: vec![
                    f("device_up", up),
                    f("polls", d.polls.load(Relaxed) as f64),
                    f("poll_errors", d.poll_errors.load(Relaxed) as f64),
                    f("exceptions", d.exceptions.load(Relaxed) as f64),
                    f("timeouts", d.timeouts.load(Relaxed) as f64),
                ],
                time_ms,
            });
        }
        for b in self.brokers() {
            for sub in &b.subscriptions {
                let mut t: Vec<(&str, &str)> = site_tags
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                t.extend([
                    ("site", site_id),
                    ("device", b.name.as_str()),
                    ("component", "mqtt"),
                    ("subscription", sub.topic.as_str()),
                ]);
                points.push(Point {
                    series: SeriesKey::new("gateway", &t),
                    fields: vec![
                        f("connected", f64::from(b.connected.load(Relaxed))),
                        f("connects", b.connects.load(Relaxed) as f64),
                        f("messages_in", sub.messages.load(Relaxed) as f64),
                        f("rejected", sub.rejected.load(Relaxed) as f64),
                        f("dead_lettered", sub.dead_lettered.load(Relaxed) as f64),
                    ],
                    time_ms,
                });
            }
        }
        points.push(Point {
            series: tags("pipeline", "dustgate", None),
            fields: vec![
                f("readings", self.readings.load(Relaxed) as f64),
                f("invalid_values", self.invalid_values.load(Relaxed) as f64),
                f("alerts_opened", self.alerts_opened.load(Relaxed) as f64),
                f("violations", self.violations.load(Relaxed) as f64),
                f("switches", self.switches.load(Relaxed) as f64),
                f("switch_failures", self.switch_failures.load(Relaxed) as f64),
            ],
            time_ms,
        });
        if let Ok(outputs) = self.outputs.lock() {
            for (name, w) in outputs.iter() {
                points.push(Point {
                    series: tags("alerts", name, None),
                    fields: vec![
                        f("delivered", w.written_points.load(Relaxed) as f64),
                        f("retries", w.retries.load(Relaxed) as f64),
                        f("dead_letter", w.dead_letter_points.load(Relaxed) as f64),
                    ],
                    time_ms,
                });
            }
        }
        let lag_s = depth.lag_s();
        let w = &self.writer;
        points.push(Point {
            series: tags("writer", "dustgate", None),
            fields: vec![
                f("queue_points", depth.points as f64),
                f("queue_bytes", depth.bytes as f64),
                f(
                    "dropped_points",
                    (dropped_points + w.lost_points.load(Relaxed)) as f64,
                ),
                f("written_points", w.written_points.load(Relaxed) as f64),
                f(
                    "dead_letter_points",
                    w.dead_letter_points.load(Relaxed) as f64,
                ),
                f("retries", w.retries.load(Relaxed) as f64),
                f("uplink_lag_s", lag_s),
                // Held while it lasts, so it shows in InfluxDB once the database is there.
                f(
                    "destination_missing",
                    f64::from(u8::from(w.destination_missing_since().is_some())),
                ),
            ],
            time_ms,
        });
        points
    }
}
