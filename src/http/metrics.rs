//! `/metrics`: the gateway's counters in the Prometheus text exposition format 0.0.4, written
//! with `fmt::Write` into one String (no client library: the format is a few lines of rules).
//!
//! Every name starts with `dustgate_`; counters end in `_total`. Per Modbus device:
//! `device_up`, polls, poll errors, exceptions, timeouts, link and protocol errors; the
//! pipeline's readings, invalid values, alerts, violations and switches; the writer and its store; every MQTT subscription;
//! each device's latest value per metric (`dustgate_reading{device,metric,unit}`); actuators.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::Api;
use crate::config::metrics::Catalog;

/// The content type of the text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// A text exposition being written: a family's `# HELP` and `# TYPE` lines, then its samples.
/// The caller keeps each family's samples together, as the format requires.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_name(name), "{name}");
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        write_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A label value: backslash, double quote and line feed escaped.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// HELP text: backslash and line feed escaped (quotes are fine there).
pub fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Go's float syntax as Prometheus parses it: `NaN`, `+Inf`, `-Inf`, or a plain decimal.
fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

pub(super) async fn handler(State(api): State<Arc<Api>>) -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        render(&api, crate::model::now_ms()),
    )
        .into_response()
}

/// The whole exposition, now.
pub fn render(api: &Api, now_ms: i64) -> String {
    use Kind::{Counter, Gauge};
    let mut e = Exposition::default();
    let health = api.health();

    e.family(
        "dustgate_info",
        Gauge,
        "The gateway: its site and version (always 1).",
    );
    e.sample(
        "dustgate_info",
        &[
            ("site", &api.site_id),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1.0,
    );

    // Up or not, for every device (one notion: `health::device_state`); devices that push
    // have no bus label.
    e.family(
        "dustgate_device_up",
        Gauge,
        "1 while the device's data arrives, 0 when down (silent past [alerts].offline_after, or given up by its bus) or not heard from yet.",
    );
    for d in health.device_statuses(now_ms) {
        let up = f64::from(u8::from(d.state == crate::health::DeviceState::Up));
        match &d.bus {
            Some(bus) => e.sample("dustgate_device_up", &[("device", &d.id), ("bus", bus)], up),
            None => e.sample("dustgate_device_up", &[("device", &d.id)], up),
        }
    }
    // Polled (Modbus) devices. Devices that push over MQTT are counted per subscription.
    let devices = health.devices();
    type DeviceFigure = fn(&crate::health::DeviceHealth) -> f64;
    let per_device: [(&str, Kind, &str, DeviceFigure); 7] = [
        (
            "dustgate_polls_total",
            Counter,
            "Poll cycles of the device.",
            |d| d.polls.load(Relaxed) as f64,
        ),
        (
            "dustgate_poll_errors_total",
            Counter,
            "Poll cycles that failed: timeout, link or protocol error, or nothing readable.",
            |d| d.poll_errors.load(Relaxed) as f64,
        ),
        (
            "dustgate_poll_exceptions_total",
            Counter,
            "Modbus exception responses (the device answered but refused a request).",
            |d| d.exceptions.load(Relaxed) as f64,
        ),
        (
            "dustgate_poll_link_errors_total",
            Counter,
            "Link faults: the connection could not be opened or broke under a request.",
            |d| d.link_errors.load(Relaxed) as f64,
        ),
        (
            "dustgate_poll_protocol_errors_total",
            Counter,
            "Replies that did not fit their request (mismatched header, too few values).",
            |d| d.protocol_errors.load(Relaxed) as f64,
        ),
        (
            "dustgate_poll_timeouts_total",
            Counter,
            "Requests the device did not answer in time.",
            |d| d.timeouts.load(Relaxed) as f64,
        ),
        (
            "dustgate_device_last_ok_timestamp_seconds",
            Gauge,
            "When the device last answered a poll (Unix seconds; 0: never).",
            |d| d.last_ok_ms.load(Relaxed) as f64 / 1000.0,
        ),
    ];
    for (name, kind, help, figure) in per_device {
        e.family(name, kind, help);
        for d in &devices {
            e.sample(name, &[("device", &d.id), ("bus", &d.bus)], figure(d));
        }
    }

    let counter = |n: &std::sync::atomic::AtomicU64| n.load(Relaxed) as f64;
    e.single(
        "dustgate_readings_total",
        Counter,
        "Values read from all sources (one per metric per reading).",
        counter(&health.readings),
    );
    e.single(
        "dustgate_invalid_values_total",
        Counter,
        "Values that were NaN or infinite after decoding (not written).",
        counter(&health.invalid_values),
    );
    e.single(
        "dustgate_future_values_total",
        Counter,
        "Values and events refused: stamped further ahead of the gateway's clock than [site].max_future.",
        counter(&health.future_values),
    );
    e.single(
        "dustgate_alerts_opened_total",
        Counter,
        "Alerts opened since start.",
        counter(&health.alerts_opened),
    );
    let config = health.config.get();
    e.family(
        "dustgate_config_reloads_total",
        Counter,
        "Config reloads (SIGHUP, systemctl reload): applied, and refused for errors in the file.",
    );
    e.sample(
        "dustgate_config_reloads_total",
        &[("result", "ok")],
        config.reloads_ok as f64,
    );
    e.sample(
        "dustgate_config_reloads_total",
        &[("result", "failed")],
        config.reloads_failed as f64,
    );
    e.single(
        "dustgate_config_loaded_timestamp_seconds",
        Gauge,
        "When the config in force was loaded (Unix seconds).",
        config.loaded_ms as f64 / 1000.0,
    );
    let open = api.site.open_alerts();
    e.family(
        "dustgate_open_alerts",
        Gauge,
        "Alerts open now, by severity.",
    );
    for sev in ["info", "warning", "critical"] {
        let n = open.iter().filter(|a| a.severity.name() == sev).count();
        e.sample("dustgate_open_alerts", &[("severity", sev)], n as f64);
    }
    e.single(
        "dustgate_violations_total",
        Counter,
        "Six-100% violations since start.",
        counter(&health.violations),
    );
    e.single(
        "dustgate_switches_total",
        Counter,
        "Actuator switches confirmed by reading the coils back.",
        counter(&health.switches),
    );
    e.single(
        "dustgate_switch_failures_total",
        Counter,
        "Actuator switches that were not confirmed.",
        counter(&health.switch_failures),
    );

    let up = api.uplink();
    e.single(
        "dustgate_written_points_total",
        Counter,
        "Points the destination accepted (InfluxDB or the local files).",
        up.written as f64,
    );
    e.single(
        "dustgate_dead_letter_points_total",
        Counter,
        "Points the destination rejected, set aside in the dead-letter file.",
        up.dead_letter as f64,
    );
    e.single(
        "dustgate_write_retries_total",
        Counter,
        "Write attempts that failed and were retried.",
        up.retries as f64,
    );
    e.single(
        "dustgate_write_busy_answers_total",
        Counter,
        "Write answers saying the server is overloaded (HTTP 429, 503): retried after Retry-After or the jittered backoff.",
        counter(&health.writer.busy_answers),
    );
    e.single(
        "dustgate_write_paced_total",
        Counter,
        "Pauses after a write the server took over 2 s to accept: it gets as long again before the next batch.",
        counter(&health.writer.paced),
    );
    e.single(
        "dustgate_queue_points",
        Gauge,
        "Points waiting in the durable store.",
        up.points as f64,
    );
    e.single(
        "dustgate_queue_bytes",
        Gauge,
        "Bytes waiting in the durable store.",
        up.bytes as f64,
    );
    e.single(
        "dustgate_dropped_points_total",
        Counter,
        "Points dropped: the store was full, or the dead-letter file could not take them.",
        up.dropped as f64,
    );
    e.single(
        "dustgate_store_corrupt_chunks_total",
        Counter,
        "Stored chunks that failed their checksum (or could not be read): set aside in dead-letter/corrupt-*.lp, never delivered.",
        crate::outputs::store::CORRUPT_CHUNKS.load(Relaxed) as f64,
    );
    e.single(
        "dustgate_store_write_failures_total",
        Counter,
        "Store commits the disk refused (full disk, I/O error): their readings are held in memory (MQTT not acknowledged) and committed when the disk takes them again.",
        crate::outputs::store::STORE_WRITE_FAILURES.load(Relaxed) as f64,
    );
    e.single(
        "dustgate_store_damaged_files",
        Gauge,
        "Damaged store files moved aside and kept (queue.redb.damaged-*), found at start or moved since.",
        crate::outputs::store::DAMAGED_STORES.load(Relaxed) as f64,
    );
    e.single(
        "dustgate_uplink_lag_seconds",
        Gauge,
        "Age of the oldest point waiting in the store (0 when it is empty).",
        up.lag_s,
    );
    let missing = health.writer.destination_missing_since();
    e.single(
        "dustgate_writer_destination_missing",
        Gauge,
        "1 while the destination (InfluxDB database or bucket) is missing: points are held in the store, not written.",
        f64::from(u8::from(missing.is_some())),
    );
    e.single(
        "dustgate_writer_destination_missing_since_seconds",
        Gauge,
        "Since when the destination has been missing (Unix seconds; 0 while it is there).",
        missing.unwrap_or(0) as f64 / 1000.0,
    );

    // Alert outputs (MQTT topic, webhooks).
    let outputs: Vec<(String, Arc<crate::health::WriterHealth>)> =
        health.outputs.lock().map(|o| o.clone()).unwrap_or_default();
    type OutputFigure = fn(&crate::health::WriterHealth) -> f64;
    let per_output: [(&str, &str, OutputFigure); 3] = [
        (
            "dustgate_alert_deliveries_total",
            "Alert messages delivered by the output.",
            |w| w.written_points.load(Relaxed) as f64,
        ),
        (
            "dustgate_alert_delivery_retries_total",
            "Alert deliveries that failed and were retried.",
            |w| w.retries.load(Relaxed) as f64,
        ),
        (
            "dustgate_alert_dead_letter_total",
            "Alert messages the output rejected, set aside.",
            |w| w.dead_letter_points.load(Relaxed) as f64,
        ),
    ];
    for (name, help, figure) in per_output {
        e.family(name, Counter, help);
        for (output, w) in &outputs {
            e.sample(name, &[("output", output)], figure(w));
        }
    }

    // MQTT: per broker, then per subscription.
    let brokers = health.brokers();
    e.family(
        "dustgate_mqtt_connected",
        Gauge,
        "1 while the broker connection is up.",
    );
    for b in &brokers {
        e.sample(
            "dustgate_mqtt_connected",
            &[("broker", &b.name)],
            f64::from(b.connected.load(Relaxed)),
        );
    }
    e.family(
        "dustgate_mqtt_connects_total",
        Counter,
        "Connections made to the broker.",
    );
    for b in &brokers {
        e.sample(
            "dustgate_mqtt_connects_total",
            &[("broker", &b.name)],
            b.connects.load(Relaxed) as f64,
        );
    }
    type SubFigure = fn(&crate::health::SubscriptionHealth) -> f64;
    let per_sub: [(&str, &str, SubFigure); 6] = [
        (
            "dustgate_mqtt_messages_total",
            "Messages received on the subscription.",
            |s| s.messages.load(Relaxed) as f64,
        ),
        (
            "dustgate_mqtt_rejected_total",
            "Messages that were not JSON, missed their fields or held nonsense (acknowledged).",
            |s| s.rejected.load(Relaxed) as f64,
        ),
        (
            "dustgate_mqtt_dead_lettered_total",
            "Rejected messages kept in the dead-letter file.",
            |s| s.dead_lettered.load(Relaxed) as f64,
        ),
        (
            "dustgate_mqtt_oversized_total",
            "Messages over max_message_size (acknowledged, counted, never stored).",
            |s| s.oversized.load(Relaxed) as f64,
        ),
        (
            "dustgate_mqtt_device_limit_total",
            "Readings refused: their device would pass the subscription's max_devices.",
            |s| s.device_limit.load(Relaxed) as f64,
        ),
        (
            "dustgate_mqtt_foreign_device_total",
            "Readings refused: their device id belongs to another source.",
            |s| s.foreign_device.load(Relaxed) as f64,
        ),
    ];
    for (name, help, figure) in per_sub {
        e.family(name, Counter, help);
        for b in &brokers {
            for s in &b.subscriptions {
                e.sample(name, &[("broker", &b.name), ("topic", &s.topic)], figure(s));
            }
        }
    }

    hj212_metrics(&mut e, health);
    upstream_metrics(&mut e, health);

    let latest = health.latest_sorted();
    let catalog = Catalog::builtin();
    e.family(
        "dustgate_reading",
        Gauge,
        "The latest value of each device's metric, in the metric's canonical unit.",
    );
    for l in &latest {
        for (slot, v) in l.device.slots.iter().zip(l.values()) {
            if let Some((_, v)) = v {
                let unit = catalog.get(&slot.metric).map_or("", |i| i.unit.as_str());
                e.sample(
                    "dustgate_reading",
                    &[
                        ("device", &l.device.id),
                        ("metric", &slot.metric),
                        ("unit", unit),
                    ],
                    v,
                );
            }
        }
    }
    e.family(
        "dustgate_reading_age_seconds",
        Gauge,
        "How old the latest value of each device's metric is (site time).",
    );
    for l in &latest {
        for (slot, v) in l.device.slots.iter().zip(l.values()) {
            if let Some((t, _)) = v {
                e.sample(
                    "dustgate_reading_age_seconds",
                    &[("device", &l.device.id), ("metric", &slot.metric)],
                    (now_ms - t).max(0) as f64 / 1000.0,
                );
            }
        }
    }

    let actuators = api.site.actuators();
    e.family(
        "dustgate_actuator_on",
        Gauge,
        "1 while the actuator's coils are on, 0 off, NaN unknown (not confirmed yet).",
    );
    for a in &actuators {
        e.sample(
            "dustgate_actuator_on",
            &[("actuator", &a.id), ("device", &a.device), ("mode", a.mode)],
            a.on.map_or(f64::NAN, |on| f64::from(u8::from(on))),
        );
    }

    if let Some((figures, _)) = api.site.compliance_today() {
        e.family(
            "dustgate_compliance_percent",
            Gauge,
            "Six 100% today: each item's percentage (NaN: nothing to judge yet).",
        );
        for (item, f) in crate::pipeline::compliance::ITEMS
            .iter()
            .zip(figures.iter())
        {
            e.sample("dustgate_compliance_percent", &[("item", item)], f.percent);
        }
    }
    e.finish()
}

/// HJ 212 platforms: connected, last answer, backlog, what was sent, resent, delivered,
/// expired, answers that matched nothing, readings the feed dropped.
fn upstream_metrics(e: &mut Exposition, health: &crate::health::Health) {
    use Kind::{Counter, Gauge};
    let uplinks = health.uplinks();
    if uplinks.is_empty() {
        return;
    }
    let rows: Vec<(String, crate::outputs::hj212::upstream::UpstreamCounts, u64)> = uplinks
        .iter()
        .map(|u| (u.name.clone(), u.counts(), u.dropped.load(Relaxed)))
        .collect();
    type Figure = fn(&crate::outputs::hj212::upstream::UpstreamCounts, u64) -> Option<f64>;
    let families: [(&str, Kind, &str, Figure); 12] = [
        (
            "dustgate_hj212_upstream_connected",
            Gauge,
            "1 while the platform's connection is open.",
            |c, _| Some(f64::from(u8::from(c.connected))),
        ),
        (
            "dustgate_hj212_upstream_last_ack_timestamp_seconds",
            Gauge,
            "When the platform last answered a frame (Unix seconds).",
            |c, _| c.last_ack_ms.map(|t| t as f64 / 1000.0),
        ),
        (
            "dustgate_hj212_upstream_backlog_frames",
            Gauge,
            "Frames the platform has not received yet (durable, resent after a reconnect).",
            |c, _| Some(c.backlog as f64),
        ),
        (
            "dustgate_hj212_upstream_backlog_oldest_timestamp_seconds",
            Gauge,
            "When the oldest frame waiting was queued (Unix seconds).",
            |c, _| c.oldest_ms.map(|t| t as f64 / 1000.0),
        ),
        (
            "dustgate_hj212_upstream_queued_frames_total",
            Counter,
            "Frames queued for the platform.",
            |c, _| Some(c.queued as f64),
        ),
        (
            "dustgate_hj212_upstream_sent_frames_total",
            Counter,
            "Frames written to the platform (first writes).",
            |c, _| Some(c.link.sent as f64),
        ),
        (
            "dustgate_hj212_upstream_resent_frames_total",
            Counter,
            "Frames written again with the same QN after no answer.",
            |c, _| Some(c.link.resent as f64),
        ),
        (
            "dustgate_hj212_upstream_delivered_frames_total",
            Counter,
            "Frames the platform answered (or, without acks, written while connected).",
            |c, _| Some(c.link.delivered as f64),
        ),
        (
            "dustgate_hj212_upstream_expired_frames_total",
            Counter,
            "Frames deleted unsent because they were older than keep.",
            |c, _| Some(c.expired as f64),
        ),
        (
            "dustgate_hj212_upstream_rejected_answers_total",
            Counter,
            "Answers from the platform that matched no frame in flight or did not read as a frame.",
            |c, _| Some(c.link.stray_answers as f64),
        ),
        (
            "dustgate_hj212_upstream_late_readings_total",
            Counter,
            "Readings left out of periods already closed.",
            |c, _| Some(c.late_readings as f64),
        ),
        (
            "dustgate_hj212_upstream_dropped_readings_total",
            Counter,
            "Readings the platform's task could not take (it was that far behind).",
            |_, d| Some(d as f64),
        ),
    ];
    for (name, kind, help, figure) in families {
        e.family(name, kind, help);
        for (n, c, d) in &rows {
            if let Some(v) = figure(c, *d) {
                e.sample(name, &[("upstream", n)], v);
            }
        }
    }
}

/// HJ 212 listeners: connections, frames, answers, rejects by reason; per station whether it
/// is connected, when it last sent, and its clock drift.
fn hj212_metrics(e: &mut Exposition, health: &crate::health::Health) {
    use Kind::{Counter, Gauge};
    let listeners = health.hj212();
    if listeners.is_empty() {
        return;
    }
    type ListenerFigure = fn(&crate::health::hj212::Hj212Health) -> f64;
    let per_listener: [(&str, Kind, &str, ListenerFigure); 5] = [
        (
            "dustgate_hj212_connections",
            Gauge,
            "Open HJ 212 connections.",
            |l| l.connections.load(Relaxed) as f64,
        ),
        (
            "dustgate_hj212_accepted_connections_total",
            Counter,
            "HJ 212 connections accepted.",
            |l| l.accepted_connections.load(Relaxed) as f64,
        ),
        (
            "dustgate_hj212_frames_total",
            Counter,
            "HJ 212 frames accepted (CRC checked, parsed, from a known station).",
            |l| l.frames.load(Relaxed) as f64,
        ),
        (
            "dustgate_hj212_acks_total",
            Counter,
            "CN=9014/9013 answers sent, each after what its frame carried was durable.",
            |l| l.acks.load(Relaxed) as f64,
        ),
        (
            "dustgate_hj212_unknown_codes_total",
            Counter,
            "Factor codes no factor map knows (kept in hj212_extra, not judged).",
            |l| l.unknown_codes.load(Relaxed) as f64,
        ),
    ];
    for (name, kind, help, figure) in per_listener {
        e.family(name, kind, help);
        for l in &listeners {
            e.sample(name, &[("listener", &l.name)], figure(l));
        }
    }
    e.family(
        "dustgate_hj212_rejected_total",
        Counter,
        "HJ 212 frames (and connections) refused, by reason.",
    );
    for l in &listeners {
        let r = l.rejected();
        for reason in crate::health::hj212::REJECT_REASONS {
            let n = r.get(reason).copied().unwrap_or(0);
            e.sample(
                "dustgate_hj212_rejected_total",
                &[("listener", &l.name), ("reason", reason)],
                n as f64,
            );
        }
    }
    let stations: Vec<(String, Vec<crate::health::hj212::StationHealth>)> = listeners
        .iter()
        .map(|l| (l.name.clone(), l.stations()))
        .collect();
    type StationFigure = fn(&crate::health::hj212::StationHealth) -> Option<f64>;
    let per_station: [(&str, Kind, &str, StationFigure); 4] = [
        (
            "dustgate_hj212_station_connected",
            Gauge,
            "1 while a connection of the station is open.",
            |s| Some(f64::from(u8::from(s.connected > 0))),
        ),
        (
            "dustgate_hj212_station_frames_total",
            Counter,
            "Frames accepted from the station.",
            |s| Some(s.frames as f64),
        ),
        (
            "dustgate_hj212_station_last_frame_timestamp_seconds",
            Gauge,
            "When the station's last accepted frame arrived (Unix seconds; 0: never).",
            |s| Some(s.last_frame_ms as f64 / 1000.0),
        ),
        (
            "dustgate_hj212_station_drift_seconds",
            Gauge,
            "Arrival minus DataTime of the station's last real-time frame (its clock is behind when positive).",
            |s| s.drift_ms.map(|d| d as f64 / 1000.0),
        ),
    ];
    for (name, kind, help, figure) in per_station {
        e.family(name, kind, help);
        for (l, ss) in &stations {
            for s in ss {
                if let Some(v) = figure(s) {
                    e.sample(
                        name,
                        &[
                            ("listener", l),
                            ("mn", &s.mn),
                            ("device", &s.device),
                            ("site", &s.site),
                        ],
                        v,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::SiteEdge;
    use crate::health::{BrokerHealth, DeviceHealth, DeviceState, Health};
    use crate::model::{DeviceMeta, Readings};
    use crate::outputs::queue::MemoryQueue;
    use crate::pipeline::SiteCore;

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nnext"), "line\\nnext");
        assert_eq!(escape_label("µg/m³"), "µg/m³");
        assert_eq!(escape_help("a \\ \"b\"\nc"), "a \\\\ \"b\"\\nc");
        let mut e = Exposition::default();
        e.sample("dustgate_x", &[("topic", "s/\"+\"/t\\\n")], f64::NAN);
        e.sample("dustgate_x", &[], f64::NEG_INFINITY);
        e.sample("dustgate_x", &[], 0.1);
        assert_eq!(
            e.finish(),
            "dustgate_x{topic=\"s/\\\"+\\\"/t\\\\\\n\"} NaN\ndustgate_x -Inf\ndustgate_x 0.1\n"
        );
        assert!(valid_name("dustgate_polls_total") && valid_name("a:b"));
        assert!(!valid_name("9lives") && !valid_name("dust-gate") && !valid_name(""));
    }

    #[test]
    fn a_sample_rendering() {
        let health = Arc::new(Health::default());
        let d = Arc::new(DeviceHealth::new("dust-01", "rs485-a"));
        d.set_state(DeviceState::Up);
        d.polls.store(12, Relaxed);
        d.poll_errors.store(1, Relaxed);
        d.last_ok_ms.store(1_000_000, Relaxed);
        health.add_device(d);
        health.add_broker(Arc::new(BrokerHealth::new(
            "site-broker",
            &["sensors/\"x\"/+".to_string()],
        )));
        health.record_latest(
            &Readings {
                device: Arc::new(DeviceMeta::new(
                    "dust-01",
                    "s1",
                    &[],
                    &[("pm10", "air"), ("noise", "air")],
                )),
                time_ms: 1_000_000,
                values: vec![Some(186.0), Some(65.2)],
                flags: Vec::new(),
            },
            1_000_000,
        );
        let queue = Arc::new(MemoryQueue::new(1 << 20, 100));
        let site = Arc::new(SiteEdge::new(
            SiteCore::new("s1", &[]),
            queue,
            health.clone(),
        ));
        let api = Api {
            site: site.clone(),
            control: site,
            site_id: "s1".into(),
            site_name: "工地".into(),
            site_permit: None,
            tz: jiff::tz::TimeZone::UTC,
            control_token: None,
        };
        let text = render(&api, 1_005_000);
        for line in [
            "# HELP dustgate_device_up 1 while the device's data arrives, 0 when down (silent past [alerts].offline_after, or given up by its bus) or not heard from yet.",
            "# TYPE dustgate_device_up gauge",
            "dustgate_device_up{device=\"dust-01\",bus=\"rs485-a\"} 1",
            "# TYPE dustgate_polls_total counter",
            "dustgate_polls_total{device=\"dust-01\",bus=\"rs485-a\"} 12",
            "dustgate_poll_errors_total{device=\"dust-01\",bus=\"rs485-a\"} 1",
            "dustgate_reading{device=\"dust-01\",metric=\"pm10\",unit=\"µg/m³\"} 186",
            "dustgate_reading{device=\"dust-01\",metric=\"noise\",unit=\"dB(A)\"} 65.2",
            "dustgate_reading_age_seconds{device=\"dust-01\",metric=\"pm10\"} 5",
            "dustgate_mqtt_connected{broker=\"site-broker\"} 0",
            "dustgate_mqtt_messages_total{broker=\"site-broker\",topic=\"sensors/\\\"x\\\"/+\"} 0",
            "dustgate_queue_points 0",
            "dustgate_uplink_lag_seconds 0",
            "dustgate_open_alerts{severity=\"warning\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let info = format!(
            "dustgate_info{{site=\"s1\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.lines().any(|l| l == info), "{text}");
        // Every family declared once, before its samples, and every name prefixed.
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or("");
                assert!(!declared.contains(&name.to_string()), "{name} twice");
                declared.push(name.to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                assert!(name.starts_with("dustgate_"), "{line}");
                assert_eq!(declared.last().map(String::as_str), Some(name), "{line}");
            }
        }
        // No compliance without [compliance].
        assert!(!text.contains("dustgate_compliance_percent"));
    }
}
