//! One broker connection: subscribe, map each message, store it, acknowledge it once durable.
//!
//! At-least-once, end to end: QoS 1 messages are acknowledged to the broker (manual acks) only
//! after their readings are committed to the durable store, so a crash before the commit means
//! the broker delivers them again. Duplicates do not double-count: a reading's time comes from
//! its payload, so a redelivered reading overwrites itself in InfluxDB.
//!
//! The session is persistent (fixed client id, `clean_session = false`): the broker keeps QoS 1
//! messages while the gateway is away. When the broker says it has no session, the
//! subscriptions are made again. Reconnects back off with jitter (rumqttc itself would spin).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, Publish, QoS, SubscribeReasonCode,
    TlsConfiguration, Transport,
};
use std::collections::VecDeque;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use super::mapping::{self, Mapped};
use super::{tls, topic};
use crate::backoff::Backoff;
use crate::config::{MqttConfig, Subscription};
use crate::health::{BrokerHealth, Health};
use crate::model::{DeviceMeta, MetricSlot, Readings, now_ms};
use crate::outputs::mqtt::PublishRequest;
use crate::outputs::sink::truncate;
use crate::sources::ingest::Ingest;

/// rumqttc drops the connection on a packet over its incoming limit before reading it, and
/// the broker then delivers that packet again at every reconnect. So the client reads packets
/// well over `max_message_size` (at least this much), and our code refuses and acknowledges a
/// payload over the cap.
const MIN_PACKET_LIMIT: usize = 16 << 20;

/// The incoming packet limit for a payload cap: twice the cap, at least [`MIN_PACKET_LIMIT`].
pub fn packet_limit(max_message_size: usize) -> usize {
    max_message_size.saturating_mul(2).max(MIN_PACKET_LIMIT)
}

/// Device ids that belong to other sources (id → which source), for the subscriptions whose
/// device id comes from a topic level or the payload: the Modbus devices' and the fixed ids of
/// every subscription. A message naming one of them is refused (issue 11, item 9).
pub fn reserved_ids(cfg: &crate::config::Config) -> HashMap<String, String> {
    let mut ids = HashMap::new();
    for bus in &cfg.buses {
        for d in &bus.devices {
            ids.insert(d.id.clone(), format!("Modbus bus {}", bus.name));
        }
    }
    for b in &cfg.brokers {
        for s in &b.subscriptions {
            if let crate::config::DeviceFrom::Fixed(id) = &s.device {
                ids.insert(id.clone(), format!("MQTT {} {}", b.name, s.topic));
            }
        }
    }
    ids
}
/// When messages wait for their acknowledgement and none has arrived for this long, the broker
/// has probably hit its in-flight limit (Mosquitto: 20 per client) and waits for us: ask the
/// store to commit now instead of at the end of its interval. While messages keep coming, the
/// interval's group commit is cheaper.
const STALL: Duration = Duration::from_millis(2);

#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    #[error("MQTT broker {broker}: {message}")]
    Setup { broker: String, message: String },
}

/// Logs at most a few lines per minute for one kind of problem; counts the rest.
struct Throttle {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

impl Throttle {
    fn new() -> Self {
        Self {
            window_start: Instant::now(),
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether to log this one; reports what was suppressed when a new window starts.
    fn allow(&mut self, what: &str) -> bool {
        if self.window_start.elapsed() > Duration::from_secs(60) {
            if self.suppressed > 0 {
                warn!(
                    suppressed = self.suppressed,
                    "{what}: more in the last minute, not logged"
                );
            }
            self.window_start = Instant::now();
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged < 5 {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

/// A broker connection, ready to run.
pub struct BrokerTask {
    cfg: MqttConfig,
    site_id: String,
    site_tags: Vec<(String, String)>,
    options: MqttOptions,
    ingest: Arc<dyn Ingest>,
    health: Arc<Health>,
    bh: Arc<BrokerHealth>,
    /// Per subscription: its devices, by id (the key shares the meta's id).
    devices: Vec<HashMap<Arc<str>, Arc<DeviceMeta>>>,
    /// Per subscription: the slots (metric, field key, range) and measurements every device
    /// of its profile shares, so a device costs its id and series keys only (a copy of the
    /// slots for each device was 0.9 KB of a hub's 5.6 KB a device).
    shapes: Vec<(Arc<[MetricSlot]>, Vec<String>)>,
    /// The broker's subscriptions (taken out of `cfg`), shared: a message borrows its
    /// subscription from here while the task is borrowed mutably (a clone of the subscription
    /// a message cost three allocations).
    subs: Arc<[Subscription]>,
    reject_log: Throttle,
    invalid_log: Throttle,
    refuse_log: Throttle,
    /// Device ids of other sources (id → which source): refused on subscriptions that take the
    /// id from the topic or the payload.
    reserved: HashMap<String, String>,
    /// Alerts to publish on this connection (QoS 1, answered at PUBACK).
    publish_rx: Option<mpsc::Receiver<PublishRequest>>,
    /// Manual override commands arrive here (`[control].topic`).
    control_topic: Option<String>,
    /// What a command on it must carry (issue time, signature).
    control_policy: crate::control::MqttPolicy,
}

impl BrokerTask {
    /// Builds the connection options; secrets and TLS files are read now, so a mistake stops
    /// the start instead of looping on reconnects.
    pub fn new(
        mut cfg: MqttConfig,
        site_id: &str,
        site_tags: &[(String, String)],
        ingest: Arc<dyn Ingest>,
        health: Arc<Health>,
    ) -> Result<Self, MqttSetupError> {
        let fail = |message: String| MqttSetupError::Setup {
            broker: cfg.name.clone(),
            message,
        };
        let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
        o.set_keep_alive(cfg.keep_alive);
        o.set_clean_session(cfg.clean_session);
        o.set_manual_acks(true);
        o.set_max_packet_size(packet_limit(cfg.max_message_size), 1 << 20);
        if let Some(user) = &cfg.username {
            let pass = match &cfg.password {
                Some(s) => s.resolve().map_err(fail)?,
                None => String::new(),
            };
            o.set_credentials(user.clone(), pass);
        }
        if let Some(t) = &cfg.tls {
            let config = tls::client_config(t).map_err(fail)?;
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
        }
        let topics: Vec<String> = cfg.subscriptions.iter().map(|s| s.topic.clone()).collect();
        let bh = Arc::new(BrokerHealth::new(&cfg.name, &topics));
        health.add_broker(bh.clone());
        let devices = vec![HashMap::new(); cfg.subscriptions.len()];
        let shapes = cfg.subscriptions.iter().map(shape).collect();
        let subs: Arc<[Subscription]> = std::mem::take(&mut cfg.subscriptions).into();
        Ok(Self {
            subs,
            shapes,
            site_id: site_id.to_string(),
            site_tags: site_tags.to_vec(),
            options: o,
            ingest,
            health,
            bh,
            devices,
            cfg,
            reject_log: Throttle::new(),
            invalid_log: Throttle::new(),
            refuse_log: Throttle::new(),
            reserved: HashMap::new(),
            publish_rx: None,
            control_topic: None,
            control_policy: crate::control::MqttPolicy {
                max_age_ms: 120_000,
                hmac: None,
            },
        })
    }

    /// Device ids that belong to other sources (see [`reserved_ids`]).
    pub fn with_reserved_ids(mut self, ids: HashMap<String, String>) -> Self {
        self.reserved = ids;
        self
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// A handle to publish alerts on this connection.
    pub fn publisher(&mut self) -> mpsc::Sender<PublishRequest> {
        let (tx, rx) = mpsc::channel(16);
        self.publish_rx = Some(rx);
        tx
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let (client, mut eventloop) = AsyncClient::new(self.options.clone(), 4096);
        let generation = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let (ack_tx, ack_rx) = mpsc::unbounded_channel::<(u64, u64, Publish)>();
        let acker = tokio::spawn(ack_loop(
            client.clone(),
            ack_rx,
            self.ingest.clone(),
            generation.clone(),
            received.clone(),
        ));
        info!(broker = %self.cfg.name, url = %crate::redact::url(&self.cfg.url), client_id = %self.cfg.client_id, "MQTT source started");
        // Reconnects: 1 s doubling to 30 s, in the upper half (jitter).
        let mut backoff =
            Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).jittered(0.5);
        let mut last_error = String::new();
        // The backoff is reset once a connection has proved itself (a message or a keep-alive
        // answer after its ConnAck), not at the ConnAck: a broker that accepts and then the
        // same failure at once (a packet we cannot read) is retried ever more slowly.
        let mut proving = false;
        let mut publish_rx = self.publish_rx.take();
        // Our QoS 1 publishes: waiting for their packet id, then for their PUBACK.
        let mut awaiting_id: VecDeque<oneshot::Sender<Result<(), String>>> = VecDeque::new();
        let mut awaiting_ack: HashMap<u16, oneshot::Sender<Result<(), String>>> = HashMap::new();
        loop {
            let event = tokio::select! {
                e = eventloop.poll() => e,
                req = async { match publish_rx.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    match req {
                        Some(req) => {
                            if self.bh.connected.load(Relaxed) == 0 {
                                let _ = req.done.send(Err("not connected".into()));
                            } else {
                                match client.try_publish(req.topic, QoS::AtLeastOnce, false, req.payload) {
                                    Ok(()) => awaiting_id.push_back(req.done),
                                    Err(e) => { let _ = req.done.send(Err(e.to_string())); }
                                }
                            }
                        }
                        None => publish_rx = None,
                    }
                    continue;
                }
                _ = shutdown.changed() => break,
            };
            match &event {
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) if *pkid != 0 => {
                    if let Some(done) = awaiting_id.pop_front() {
                        awaiting_ack.insert(*pkid, done);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(done) = awaiting_ack.remove(&ack.pkid) {
                        let _ = done.send(Ok(()));
                    }
                }
                Err(_) => {
                    for done in awaiting_id
                        .drain(..)
                        .chain(awaiting_ack.drain().map(|(_, d)| d))
                    {
                        let _ = done.send(Err("connection lost".into()));
                    }
                }
                _ => {}
            }
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    proving = ack.code == ConnectReturnCode::Success;
                    generation.fetch_add(1, Relaxed);
                    self.bh.connected.store(1, Relaxed);
                    self.bh.connects.fetch_add(1, Relaxed);
                    if ack.code != ConnectReturnCode::Success {
                        warn!(broker = %self.cfg.name, code = ?ack.code, "broker refused the connection");
                        continue;
                    }
                    info!(broker = %self.cfg.name, session_present = ack.session_present, "connected to broker");
                    if !ack.session_present {
                        self.subscribe(&client);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    for (i, code) in s.return_codes.iter().enumerate() {
                        if matches!(code, SubscribeReasonCode::Failure) {
                            let topic = self.subs.get(i).map_or("?", |s| s.topic.as_str());
                            error!(broker = %self.cfg.name, topic, "the broker refused the subscription (check its ACL)");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if proving {
                        proving = false;
                        backoff.reset();
                        last_error.clear();
                    }
                    received.fetch_add(1, Relaxed);
                    let gen_now = generation.load(Relaxed);
                    self.on_publish(&client, p, gen_now, &ack_tx);
                }
                Ok(Event::Incoming(Packet::Disconnect)) => {
                    self.bh.connected.store(0, Relaxed);
                    warn!(broker = %self.cfg.name, "broker closed the session");
                }
                Ok(Event::Incoming(Packet::PingResp)) => {
                    if proving {
                        proving = false;
                        backoff.reset();
                        last_error.clear();
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    proving = false;
                    self.bh.connected.store(0, Relaxed);
                    let msg = error_chain(&e);
                    if let rumqttc::ConnectionError::MqttState(
                        rumqttc::StateError::Deserialization(
                            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
                        ),
                    ) = &e
                    {
                        // Unreadable, so it cannot be acknowledged: the broker delivers it
                        // again at every reconnect, which the backoff slows down.
                        self.bh.unreadable.fetch_add(1, Relaxed);
                        error!(
                            broker = %self.cfg.name,
                            size,
                            limit = packet_limit(self.cfg.max_message_size),
                            "the broker sent a packet too large to read: it is not acknowledged and comes again after each reconnect; remove it at the broker (or set its message_size_limit)"
                        );
                    }
                    if msg != last_error {
                        warn!(broker = %self.cfg.name, url = %crate::redact::url(&self.cfg.url), error = %msg, "MQTT connection failed; retrying with backoff");
                        last_error = msg;
                    } else {
                        debug!(broker = %self.cfg.name, error = %msg, "MQTT connection failed again");
                    }
                    let wait = backoff.next_delay();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => break,
                    }
                }
            }
        }
        // Let what was read become durable and acknowledged, then leave cleanly. What is not
        // acknowledged the broker delivers again.
        self.ingest.commit_soon();
        drop(ack_tx);
        let flush = async {
            // The event loop keeps running while the last acknowledgements go out.
            let mut acker = acker;
            loop {
                tokio::select! {
                    _ = &mut acker => break,
                    e = eventloop.poll() => if e.is_err() { return; },
                }
            }
            let _ = client.try_disconnect();
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), flush).await;
        self.bh.connected.store(0, Relaxed);
        info!(broker = %self.cfg.name, "MQTT source stopped");
    }

    /// Takes manual override commands on `topic` (a filter; QoS 1).
    pub fn with_control(mut self, topic: &str, policy: crate::control::MqttPolicy) -> Self {
        self.control_topic = Some(topic.to_string());
        self.control_policy = policy;
        self
    }

    /// A manual override command: applied, logged, acknowledged; never stored.
    fn on_command(&self, client: &AsyncClient, p: &Publish) {
        let result = crate::control::check_mqtt(
            &p.payload,
            p.retain,
            crate::model::now_ms(),
            &self.control_policy,
        )
        .and_then(|()| crate::control::parse(&p.payload, None, "mqtt"))
        .and_then(|c| crate::control::apply(self.ingest.as_ref(), &c));
        match result {
            Ok(done) => {
                info!(broker = %self.cfg.name, topic = %p.topic, command = %done, "override command applied")
            }
            Err(e) => warn!(
                broker = %self.cfg.name,
                topic = %p.topic,
                error = %e,
                payload = %truncate(&String::from_utf8_lossy(&p.payload), 200),
                "override command refused"
            ),
        }
        self.ack_now(client, p);
    }

    fn subscribe(&self, client: &AsyncClient) {
        if let Some(t) = &self.control_topic {
            if let Err(e) = client.try_subscribe(t.clone(), QoS::AtLeastOnce) {
                error!(broker = %self.cfg.name, topic = %t, error = %e, "cannot queue the subscription");
            } else {
                info!(broker = %self.cfg.name, topic = %t, "subscribing to override commands");
            }
        }
        for s in self.subs.iter() {
            let qos = if s.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            if let Err(e) = client.try_subscribe(s.topic.clone(), qos) {
                error!(broker = %self.cfg.name, topic = %s.topic, error = %e, "cannot queue the subscription");
            } else {
                info!(broker = %self.cfg.name, topic = %s.topic, qos = s.qos, "subscribing");
            }
        }
    }

    fn on_publish(
        &mut self,
        client: &AsyncClient,
        p: Publish,
        generation: u64,
        ack_tx: &mpsc::UnboundedSender<(u64, u64, Publish)>,
    ) {
        let received_ms = now_ms();
        if p.payload.len() > self.cfg.max_message_size {
            self.on_oversized(client, &p);
            return;
        }
        let topic_name = p.topic.as_str();
        if self
            .control_topic
            .as_ref()
            .is_some_and(|t| topic::matches(t, topic_name))
        {
            self.on_command(client, &p);
            return;
        }
        let subs = self.subs.clone();
        let Some(idx) = subs
            .iter()
            .position(|s| topic::matches(&s.filter, topic_name))
        else {
            // A subscription of an earlier configuration, still in the broker's session.
            debug!(broker = %self.cfg.name, topic = %topic_name, "message on a topic no subscription matches: acknowledged and dropped");
            self.ack_now(client, &p);
            return;
        };
        self.bh.subscriptions[idx].messages.fetch_add(1, Relaxed);
        let sub = &subs[idx];
        match mapping::map(sub, topic_name, &p.payload, received_ms) {
            Ok(mapped) => {
                let ticket = self.store(idx, sub, mapped, topic_name);
                if p.qos != QoS::AtMostOnce {
                    let _ = ack_tx.send((ticket, generation, p));
                }
            }
            Err(reason) => {
                let sh = &self.bh.subscriptions[idx];
                sh.rejected.fetch_add(1, Relaxed);
                if self.reject_log.allow("rejected MQTT messages") {
                    warn!(
                        broker = %self.cfg.name,
                        topic = %topic_name,
                        reason = %reason,
                        payload = %truncate(&String::from_utf8_lossy(&p.payload), 200),
                        "message rejected (acknowledged and counted)"
                    );
                }
                if let Some(dl) = &self.cfg.dead_letter_topic {
                    match client.try_publish(dl.clone(), QoS::AtMostOnce, false, p.payload.to_vec())
                    {
                        Ok(()) => {
                            sh.dead_lettered.fetch_add(1, Relaxed);
                        }
                        Err(e) => debug!(error = %e, "dead-letter publish not queued"),
                    }
                }
                self.ack_now(client, &p);
            }
        }
    }

    /// A payload over `max_message_size`: counted, logged and dead-lettered with its topic and
    /// size only (never the payload), and acknowledged so the broker does not deliver it again.
    fn on_oversized(&mut self, client: &AsyncClient, p: &Publish) {
        let size = p.payload.len();
        let idx = self
            .subs
            .iter()
            .position(|s| topic::matches(&s.filter, &p.topic));
        if let Some(i) = idx {
            let sh = &self.bh.subscriptions[i];
            sh.messages.fetch_add(1, Relaxed);
            sh.oversized.fetch_add(1, Relaxed);
        }
        if self.refuse_log.allow("oversized MQTT messages") {
            warn!(
                broker = %self.cfg.name,
                topic = %truncate(&p.topic, 200),
                size,
                max_message_size = self.cfg.max_message_size,
                "message over max_message_size refused (acknowledged and counted; payload not kept)"
            );
        }
        if let Some(dl) = &self.cfg.dead_letter_topic {
            let record = serde_json::json!({
                "reason": "oversized",
                "topic": p.topic.as_str(),
                "size": size,
                "max_message_size": self.cfg.max_message_size,
            });
            match client.try_publish(dl.clone(), QoS::AtMostOnce, false, record.to_string()) {
                Ok(()) => {
                    if let Some(i) = idx {
                        self.bh.subscriptions[i].dead_lettered.fetch_add(1, Relaxed);
                    }
                }
                Err(e) => debug!(error = %e, "dead-letter publish not queued"),
            }
        }
        self.ack_now(client, p);
    }

    /// Whether a reading's device may be stored by subscription `idx`: not another source's
    /// id, and not a new device past `max_devices`. Refusals are counted and logged (throttled).
    fn admit(&mut self, idx: usize, sub: &Subscription, device: &str, topic_name: &str) -> bool {
        if self.devices[idx].contains_key(device) {
            return true;
        }
        if !matches!(sub.device, crate::config::DeviceFrom::Fixed(_))
            && let Some(owner) = self.reserved.get(device)
        {
            self.bh.subscriptions[idx]
                .foreign_device
                .fetch_add(1, Relaxed);
            if self
                .refuse_log
                .allow("MQTT readings for another source's device")
            {
                warn!(
                    broker = %self.cfg.name,
                    topic = %truncate(topic_name, 200),
                    device = %truncate(device, 100),
                    owner = %owner,
                    "reading refused: the device id belongs to another source (acknowledged and counted)"
                );
            }
            return false;
        }
        if self.devices[idx].len() >= sub.max_devices {
            self.bh.subscriptions[idx]
                .device_limit
                .fetch_add(1, Relaxed);
            if self.refuse_log.allow("MQTT readings past max_devices") {
                warn!(
                    broker = %self.cfg.name,
                    topic = %truncate(topic_name, 200),
                    device = %truncate(device, 100),
                    max_devices = sub.max_devices,
                    "reading refused: the subscription already has max_devices devices (acknowledged and counted)"
                );
            }
            return false;
        }
        true
    }

    /// Acknowledges a message that stores nothing (rejected, or on no subscription).
    fn ack_now(&self, client: &AsyncClient, p: &Publish) {
        if p.qos != QoS::AtMostOnce
            && let Err(e) = client.try_ack(p)
        {
            debug!(error = %e, "acknowledgement not queued; the broker will deliver again");
        }
    }

    /// Hands mapped readings or events to the site; returns the store ticket.
    fn store(&mut self, idx: usize, sub: &Subscription, mapped: Mapped, topic_name: &str) -> u64 {
        match mapped {
            Mapped::Readings(items) => {
                let mut ticket = 0;
                for item in items {
                    if !item.invalid.is_empty() {
                        self.health
                            .invalid_values
                            .fetch_add(item.invalid.len() as u64, Relaxed);
                        if self.invalid_log.allow("MQTT fields that are not numbers") {
                            warn!(broker = %self.cfg.name, topic = %topic_name, fields = ?item.invalid, "fields that are not numbers were not written");
                        }
                    }
                    if !self.admit(idx, sub, &item.device, topic_name) {
                        continue;
                    }
                    let meta = self.device_meta(idx, &item.device);
                    let r = Readings {
                        device: meta,
                        time_ms: item.time_ms,
                        values: item.values,
                        flags: Vec::new(),
                    };
                    ticket = ticket.max(self.ingest.readings(&r));
                }
                ticket
            }
            Mapped::Vehicles(vs) => self.ingest.vehicles(&vs),
            // Kept in the compliance state file (saved before this returns); the violations
            // they lead to are alert points in the store.
            Mapped::Detections(ds) => self.ingest.detections(&ds),
        }
    }

    fn device_meta(&mut self, idx: usize, device: &str) -> Arc<DeviceMeta> {
        if let Some(m) = self.devices[idx].get(device) {
            return m.clone();
        }
        let (slots, measurements) = &self.shapes[idx];
        let meta = Arc::new(DeviceMeta::with_slots(
            device,
            &self.site_id,
            &self.site_tags,
            slots.clone(),
            measurements,
        ));
        // Every admitted device is remembered: [`Self::admit`] bounds them to `max_devices`.
        self.devices[idx].insert(meta.id.clone(), meta.clone());
        meta
    }
}

/// The slots and measurements of a subscription's profile (none for vehicle and detection
/// profiles, whose messages are events, not readings).
fn shape(sub: &Subscription) -> (Arc<[MetricSlot]>, Vec<String>) {
    let crate::config::json_profile::JsonKind::Readings(fields) = &sub.profile.kind else {
        return (Arc::from([]), Vec::new());
    };
    let metrics: Vec<(&str, &str)> = fields
        .iter()
        .map(|f| (f.metric.as_str(), f.measurement.as_str()))
        .collect();
    let (slots, measurements) = DeviceMeta::slots(&metrics);
    let slots: Vec<MetricSlot> = slots
        .iter()
        .zip(fields)
        .map(|(slot, f)| MetricSlot {
            range: f.range,
            ..slot.clone()
        })
        .collect();
    (slots.into(), measurements)
}

/// Acknowledges stored messages once the store says they are durable, in arrival order.
/// Messages of an earlier connection are not acknowledged: the broker delivers them again on
/// the new one (packet ids belong to a connection), and they overwrite themselves when stored.
async fn ack_loop(
    client: AsyncClient,
    mut rx: mpsc::UnboundedReceiver<(u64, u64, Publish)>,
    ingest: Arc<dyn Ingest>,
    generation: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
) {
    let mut durable = ingest.durable();
    while let Some((ticket, gen_of_msg, publish)) = rx.recv().await {
        let mut seen = received.load(Relaxed);
        while *durable.borrow() < ticket {
            match tokio::time::timeout(STALL, durable.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    // Nothing new from the broker: it is waiting for our acknowledgements.
                    let now = received.load(Relaxed);
                    if now == seen {
                        ingest.commit_soon();
                    }
                    seen = now;
                }
            }
        }
        if gen_of_msg != generation.load(Relaxed) {
            continue;
        }
        if client.ack(&publish).await.is_err() {
            return;
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}
