//! Counters of what happens on the way: per device, in the pipeline, in the writer.
//!
//! Plain atomics shared by the tasks; the health task turns them into `gateway` points and a
//! log line, and the demo prints them.

pub mod config;
pub mod history;
pub mod hj212;
pub mod uplink;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering::Relaxed};

/// `[alerts].offline_after` when it is not set.
pub const DEFAULT_OFFLINE_AFTER_MS: i64 = 10 * 60_000;

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
    /// The poll interval (site time), for when it counts as silent.
    pub interval_ms: AtomicI64,
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
            interval_ms: AtomicI64::new(0),
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
    /// Answers that said the server is overloaded (429, 503).
    pub busy_answers: AtomicU64,
    /// Pauses taken after a slow answer (the server is busy: it gets as long again).
    pub paced: AtomicU64,
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
    /// Values and events refused for a timestamp too far in the future.
    pub future_values: AtomicU64,
    pub writer: Arc<WriterHealth>,
    /// Alert outputs (MQTT topic, webhooks): name → their writer's counters.
    pub outputs: std::sync::Mutex<Vec<(String, Arc<WriterHealth>)>>,
    pub brokers: std::sync::Mutex<Vec<Arc<BrokerHealth>>>,
    /// HJ 212 listeners (their stations inside).
    pub hj212: std::sync::Mutex<Vec<Arc<hj212::Hj212Health>>>,
    /// HJ 212 platforms reported to.
    pub uplinks: std::sync::Mutex<Vec<Arc<uplink::UplinkHealth>>>,
    /// The latest value of every device's every metric, for people (demo, status page).
    pub latest: std::sync::Mutex<std::collections::HashMap<Arc<str>, LatestValues>>,
    /// `[alerts].offline_after` in ms (0: the default): silent this long, a device is down.
    pub offline_after_ms: AtomicI64,
    /// The config in force and its reloads.
    pub config: config::ConfigHealth,
    /// The last 24 h of per-minute means, for the status page's charts and the gate board.
    pub history: history::History,
}

/// A device as the status page, `/api/status`, `/metrics` and the `gateway` points show it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceStatus {
    pub id: String,
    /// The Modbus bus; `None` for a device that pushes (MQTT).
    pub bus: Option<String>,
    pub state: DeviceState,
    pub last_ok_ms: Option<i64>,
    pub polls: Option<u64>,
    pub poll_errors: Option<u64>,
}

/// The one notion of "up", for every source: a device is up while its data arrives. It is down
/// once it has been silent longer than the offline alert allows (`[alerts].offline_after`, at
/// least three intervals: [`crate::pipeline::rules::quality::offline_after`]), or, for a polled
/// device, as soon as its bus gives up on it (`down_after` failed polls in a row). So a device
/// with an open offline alert is never shown up. `now` and `last_ok_ms` are site time.
pub fn device_state(
    last_ok_ms: Option<i64>,
    interval_ms: Option<i64>,
    link_down: bool,
    offline_after_ms: i64,
    now: i64,
) -> DeviceState {
    let Some(last) = last_ok_ms else {
        return if link_down {
            DeviceState::Down
        } else {
            DeviceState::Unknown
        };
    };
    let silent_for = now.saturating_sub(last);
    if link_down
        || silent_for
            > crate::pipeline::rules::quality::offline_after(offline_after_ms, interval_ms)
    {
        DeviceState::Down
    } else {
        DeviceState::Up
    }
}

/// One MQTT broker connection.
#[derive(Debug)]
pub struct BrokerHealth {
    pub name: String,
    pub connected: AtomicU8,
    pub connects: AtomicU64,
    /// Packets over the client's read limit: the connection drops, they are not acknowledged.
    pub unreadable: AtomicU64,
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
    /// Messages over the broker's `max_message_size` (acknowledged, counted, never stored).
    pub oversized: AtomicU64,
    /// Readings refused because their device would pass the subscription's `max_devices`.
    pub device_limit: AtomicU64,
    /// Readings refused because their device id belongs to another source (a Modbus device,
    /// another subscription's fixed id).
    pub foreign_device: AtomicU64,
}

impl BrokerHealth {
    pub fn new(name: &str, topics: &[String]) -> Self {
        Self {
            name: name.to_string(),
            connected: AtomicU8::new(0),
            connects: AtomicU64::new(0),
            unreadable: AtomicU64::new(0),
            subscriptions: topics
                .iter()
                .map(|t| SubscriptionHealth {
                    topic: t.clone(),
                    messages: AtomicU64::new(0),
                    rejected: AtomicU64::new(0),
                    dead_lettered: AtomicU64::new(0),
                    oversized: AtomicU64::new(0),
                    device_limit: AtomicU64::new(0),
                    foreign_device: AtomicU64::new(0),
                })
                .collect(),
        }
    }
}

/// The latest readings of one device, slot by slot: (time in ms, value).
#[derive(Debug, Clone)]
pub struct LatestValues {
    pub device: Arc<crate::model::DeviceMeta>,
    /// Slot by slot, up to the last slot that had a value; see [`LatestValues::values`].
    values: Vec<Latest>,
    /// Readings recorded (saturating), for whether a pushed device is established.
    pub readings: u32,
    /// When it was last seen ([`crate::model::Readings::seen_at`]): a device whose clock runs
    /// behind is up while its readings arrive.
    pub seen_ms: i64,
}

/// A slot's latest value: 16 bytes (`Option<(i64, f64)>` is 24, and a hub holds one per slot
/// of its factor map for each of thousands of stations).
#[derive(Debug, Clone, Copy)]
struct Latest {
    /// Its time (ms); [`Latest::NONE`]: no value yet.
    time_ms: i64,
    value: f64,
}

impl Latest {
    const NONE: Latest = Latest {
        time_ms: i64::MIN,
        value: f64::NAN,
    };

    fn get(self) -> Option<(i64, f64)> {
        (self.time_ms != i64::MIN).then_some((self.time_ms, self.value))
    }
}

impl LatestValues {
    /// (time ms, value) of each slot, `None` where none came yet; it may end before the
    /// device's last slot (none came for those either).
    pub fn values(&self) -> impl Iterator<Item = Option<(i64, f64)>> + '_ {
        self.values.iter().map(|l| l.get())
    }
}

impl Health {
    /// Adds a device's health; when the same device of the same bus is there already (its bus
    /// was started again by a reload) that one is kept and returned, so its counters go on.
    pub fn add_device(&self, d: Arc<DeviceHealth>) -> Arc<DeviceHealth> {
        let Ok(mut v) = self.devices.lock() else {
            return d;
        };
        if let Some(known) = v.iter().find(|k| k.id == d.id && k.bus == d.bus) {
            return known.clone();
        }
        v.push(d.clone());
        d
    }

    /// Forgets the devices of `bus` not in `keep` (a reload removed them).
    pub fn remove_devices(&self, bus: &str, keep: &[&str]) {
        if let Ok(mut v) = self.devices.lock() {
            v.retain(|d| d.bus != bus || keep.contains(&d.id.as_str()));
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

    pub fn uplinks(&self) -> Vec<Arc<uplink::UplinkHealth>> {
        self.uplinks.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn hj212(&self) -> Vec<Arc<hj212::Hj212Health>> {
        self.hj212.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn devices(&self) -> Vec<Arc<DeviceHealth>> {
        self.devices.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Records a device's readings, arrived at `now` (site time), as its latest values.
    pub fn record_latest(&self, r: &crate::model::Readings, now: i64) {
        self.history.record(r, now);
        let Ok(mut latest) = self.latest.lock() else {
            return;
        };
        let entry = match latest.get_mut(&r.device.id) {
            Some(e) => e,
            None => latest
                .entry(r.device.id.clone())
                .or_insert_with(|| LatestValues {
                    device: r.device.clone(),
                    values: Vec::new(),
                    readings: 0,
                    seen_ms: 0,
                }),
        };
        entry.readings = entry.readings.saturating_add(1);
        if let Some(t) = r.seen_at(now) {
            entry.seen_ms = entry.seen_ms.max(t);
        }
        // Slots up to the last one the device has reported: a factor map has slots for every
        // code it knows (20 in the standard map), a monitor reports a few of them.
        for (i, v) in r.values.iter().enumerate() {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                if entry.values.len() <= i {
                    entry.values.reserve_exact(i + 1 - entry.values.len());
                    entry.values.resize(i + 1, Latest::NONE);
                }
                entry.values[i] = Latest {
                    time_ms: r.time_ms,
                    value: v,
                };
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
        l.values.get(slot).and_then(|l| l.get())
    }

    fn offline_after(&self) -> i64 {
        match self.offline_after_ms.load(Relaxed) {
            0 => DEFAULT_OFFLINE_AFTER_MS,
            ms => ms,
        }
    }

    /// Every device, polled ones in configuration order then those that push, by id, each
    /// with its state by [`device_state`].
    pub fn device_statuses(&self, now: i64) -> Vec<DeviceStatus> {
        let after = self.offline_after();
        let mut rows: Vec<DeviceStatus> = self
            .devices()
            .iter()
            .map(|d| {
                let last = d.last_ok_ms.load(Relaxed);
                let last = (last > 0).then_some(last);
                let interval = d.interval_ms.load(Relaxed);
                DeviceStatus {
                    id: d.id.clone(),
                    bus: Some(d.bus.clone()),
                    state: device_state(
                        last,
                        (interval > 0).then_some(interval),
                        d.state() == DeviceState::Down,
                        after,
                        now,
                    ),
                    last_ok_ms: last,
                    polls: Some(d.polls.load(Relaxed)),
                    poll_errors: Some(d.poll_errors.load(Relaxed)),
                }
            })
            .collect();
        let mut pushed: Vec<(String, Option<i64>, u32)> = self
            .latest
            .lock()
            .map(|latest| {
                latest
                    .iter()
                    .filter(|(id, _)| !rows.iter().any(|r| *r.id == ***id))
                    .map(|(id, l)| {
                        (
                            id.to_string(),
                            (l.seen_ms > 0).then_some(l.seen_ms),
                            l.readings,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        pushed.sort();
        rows.extend(pushed.into_iter().map(|(id, last, readings)| DeviceStatus {
            id,
            bus: None,
            // As the offline alert: a device only a topic named is "down" once established.
            state: match device_state(last, None, false, after, now) {
                DeviceState::Down if readings < crate::pipeline::rules::quality::ESTABLISHED => {
                    DeviceState::Unknown
                }
                s => s,
            },
            last_ok_ms: last,
            polls: None,
            poll_errors: None,
        }));
        rows
    }

    /// (up, all) devices now.
    pub fn devices_up(&self, now: i64) -> (usize, usize) {
        let d = self.device_statuses(now);
        let up = d.iter().filter(|d| d.state == DeviceState::Up).count();
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
        let devices = self.devices();
        for d in self.device_statuses(time_ms) {
            let up = f("device_up", f64::from(u8::from(d.state == DeviceState::Up)));
            let Some(polled) = devices
                .iter()
                .find(|p| d.bus.as_deref() == Some(&p.bus) && p.id == d.id)
            else {
                // A device that pushes: only whether its data arrives.
                points.push(Point {
                    series: tags("pushed", &d.id, None),
                    fields: vec![up],
                    time_ms,
                });
                continue;
            };
            points.push(Point {
                series: tags("modbus", &d.id, Some(&polled.bus)),
                fields: vec![
                    up,
                    f("polls", polled.polls.load(Relaxed) as f64),
                    f("poll_errors", polled.poll_errors.load(Relaxed) as f64),
                    f("exceptions", polled.exceptions.load(Relaxed) as f64),
                    f("timeouts", polled.timeouts.load(Relaxed) as f64),
                    f("link_errors", polled.link_errors.load(Relaxed) as f64),
                    f(
                        "protocol_errors",
                        polled.protocol_errors.load(Relaxed) as f64,
                    ),
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
                        f("unreadable", b.unreadable.load(Relaxed) as f64),
                        f("messages_in", sub.messages.load(Relaxed) as f64),
                        f("rejected", sub.rejected.load(Relaxed) as f64),
                        f("dead_lettered", sub.dead_lettered.load(Relaxed) as f64),
                        f("oversized", sub.oversized.load(Relaxed) as f64),
                        f("device_limit", sub.device_limit.load(Relaxed) as f64),
                        f("foreign_device", sub.foreign_device.load(Relaxed) as f64),
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
                f("future_values", self.future_values.load(Relaxed) as f64),
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
                f(
                    "store_corrupt_chunks",
                    crate::outputs::store::CORRUPT_CHUNKS.load(Relaxed) as f64,
                ),
                f(
                    "store_write_failures",
                    crate::outputs::store::STORE_WRITE_FAILURES.load(Relaxed) as f64,
                ),
                f(
                    "store_damaged_files",
                    crate::outputs::store::DAMAGED_STORES.load(Relaxed) as f64,
                ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceMeta, Readings};
    use crate::pipeline::rules::{AlertKind, AlertState, Engine};

    const MIN: i64 = 60_000;

    #[test]
    fn latest_values_hold_only_the_slots_reported() {
        let h = Health::default();
        let device = Arc::new(DeviceMeta::new(
            "m1",
            "s",
            &[],
            &[("pm10", "air"), ("noise", "air"), ("tsp", "air")],
        ));
        let r = |values: Vec<Option<f64>>, t: i64| Readings {
            device: device.clone(),
            time_ms: t,
            values,
            flags: Vec::new(),
        };
        h.record_latest(&r(vec![Some(80.0), None, None], 1_000), 1_000);
        assert_eq!(h.latest_sorted()[0].values().count(), 1);
        assert_eq!(h.latest_value("m1", "pm10"), Some((1_000, 80.0)));
        assert_eq!(h.latest_value("m1", "tsp"), None);
        h.record_latest(&r(vec![None, None, Some(120.0)], 2_000), 2_000);
        let l = &h.latest_sorted()[0];
        assert_eq!(
            l.values().collect::<Vec<_>>(),
            [Some((1_000, 80.0)), None, Some((2_000, 120.0))]
        );
        assert_eq!(h.latest_value("m1", "tsp"), Some((2_000, 120.0)));
    }

    fn pushed(h: &Health, device: &str, t: i64) {
        h.record_latest(
            &Readings {
                device: Arc::new(DeviceMeta::new(device, "s", &[], &[("pm10", "air")])),
                time_ms: t,
                values: vec![Some(50.0)],
                flags: Vec::new(),
            },
            t,
        );
    }

    /// The page's "up" and the offline alert are one notion: at every minute of a silence,
    /// the device is down exactly when its offline alert is open.
    #[test]
    fn up_on_the_page_and_the_offline_alert_agree_for_pushed_and_polled_devices() {
        let t0 = 1_800_000_000_000;
        let h = Health::default();
        h.offline_after_ms.store(10 * MIN, Relaxed);
        let polled = Arc::new(DeviceHealth::new("wind-01", "rs485"));
        polled.interval_ms.store(10_000, Relaxed);
        polled.set_state(DeviceState::Up);
        polled.last_ok_ms.store(t0, Relaxed);
        h.add_device(polled.clone());
        for i in 0..3 {
            pushed(&h, "mqtt-dust", t0 - (2 - i) * 10_000);
        }

        let mut engine = Engine::new(vec![], jiff::tz::TimeZone::UTC);
        engine.set_offline_after(10 * MIN);
        engine.register_device("wind-01", Some(10_000), t0);
        let mut events = Vec::new();
        for i in 0..3 {
            engine.reading(
                "mqtt-dust",
                "pm10",
                t0 - (2 - i) * 10_000,
                50.0,
                &mut events,
            );
        }
        engine.reading("wind-01", "wind_speed", t0, 2.0, &mut events);

        // The bus still says "up" (its failed polls have not reached down_after): silence
        // alone must take the device down when the alert opens.
        let mut t = t0;
        while t <= t0 + 15 * MIN {
            engine.tick(t, &mut events);
            let open: Vec<String> = engine
                .open_alerts()
                .into_iter()
                .filter(|a| a.kind == AlertKind::Offline)
                .map(|a| a.device)
                .collect();
            for d in h.device_statuses(t) {
                assert_eq!(
                    d.state == DeviceState::Down,
                    open.contains(&d.id),
                    "{} at +{} min: {:?}, open offline alerts {open:?}",
                    d.id,
                    (t - t0) / MIN,
                    d.state
                );
            }
            t += 30_000;
        }
        assert!(events.iter().any(|e| e.state == AlertState::Open));
        assert_eq!(h.devices_up(t0 + 5 * MIN), (2, 2));
        assert_eq!(h.devices_up(t0 + 15 * MIN), (0, 2));
        // A bus that gave up on its device: down at once, before the silence is long.
        polled.set_state(DeviceState::Down);
        assert_eq!(h.device_statuses(t0 + MIN)[0].state, DeviceState::Down);
        // Never heard of: unknown, not up.
        assert_eq!(
            device_state(None, Some(10_000), false, 10 * MIN, t0),
            DeviceState::Unknown
        );
    }
}
