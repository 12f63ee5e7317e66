//! The JSON API of the contract: `/api/status`, `/api/readings/latest`, `/api/alerts`,
//! `/api/compliance/today`. Times are RFC 3339 with the site's offset, in site time (the
//! gateway's clock, which a demo replay runs fast).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use super::{Api, error, rfc3339};
use crate::config::metrics::Catalog;
use crate::config::rules::Condition;
use crate::health::DeviceState;
use crate::model::now_ms;
use crate::pipeline::compliance::ITEMS;

/// One device's row on the page.
pub(super) struct DeviceRow {
    pub id: String,
    /// The Modbus bus; `None` for devices that push (MQTT).
    pub bus: Option<String>,
    pub state: &'static str,
    pub last_ok_ms: Option<i64>,
    pub polls: Option<u64>,
    pub poll_errors: Option<u64>,
}

fn state_name(s: DeviceState) -> &'static str {
    match s {
        DeviceState::Up => "up",
        DeviceState::Down => "down",
        DeviceState::Unknown => "unknown",
    }
}

/// Polled devices in configuration order, then devices that push, by id.
pub(super) fn devices(api: &Api, now: i64) -> Vec<DeviceRow> {
    api.health()
        .device_statuses(now)
        .into_iter()
        .map(|d| DeviceRow {
            id: d.id,
            bus: d.bus,
            state: state_name(d.state),
            last_ok_ms: d.last_ok_ms,
            polls: d.polls,
            poll_errors: d.poll_errors,
        })
        .collect()
}

pub(super) async fn status(State(api): State<Arc<Api>>) -> Response {
    let now = now_ms();
    let rows = devices(&api, now);
    let devices: Vec<StatusDevice> = rows
        .iter()
        .map(|d| StatusDevice {
            id: &d.id,
            bus: d.bus.as_deref(),
            state: d.state,
            last_ok: d.last_ok_ms.and_then(|t| rfc3339(t, &api.tz)),
            polls: d.polls,
            poll_errors: d.poll_errors,
        })
        .collect();
    let up = api.uplink();
    let health = api.health();
    let brokers: Vec<Value> = health
        .brokers()
        .iter()
        .map(|b| {
            json!({
                "name": b.name,
                "connected": b.connected.load(Relaxed) == 1,
                "subscriptions": b.subscriptions.iter().map(|s| json!({
                    "topic": s.topic,
                    "messages": s.messages.load(Relaxed),
                    "rejected": s.rejected.load(Relaxed),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let hj212: Vec<Value> = health
        .hj212()
        .iter()
        .map(|l| {
            json!({
                "name": l.name,
                "address": l.address,
                "connections": l.connections.load(Relaxed),
                "frames": l.frames.load(Relaxed),
                "acks": l.acks.load(Relaxed),
                "rejected": l.rejected(),
                "stations": l.stations().iter().map(|s| json!({
                    "mn": &*s.mn,
                    "device": &*s.device,
                    "site": &*s.site,
                    "connected": s.connected > 0,
                    "peer": &*s.peer,
                    "last_frame": (s.last_frame_ms > 0).then(|| rfc3339(s.last_frame_ms, &api.tz)).flatten(),
                    "drift_s": s.drift_ms.map(|d| d as f64 / 1000.0),
                    "frames": s.frames,
                    "rejected": s.rejected,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let upstreams: Vec<Value> = health
        .uplinks()
        .iter()
        .map(|u| {
            let c = u.counts();
            json!({
                "name": u.name,
                "address": u.address,
                "version": u.version,
                "connected": c.connected,
                "last_ack": c.last_ack_ms.and_then(|t| rfc3339(t, &api.tz)),
                "backlog_frames": c.backlog,
                "backlog_oldest": c.oldest_ms.and_then(|t| rfc3339(t, &api.tz)),
                "queued": c.queued,
                "sent": c.link.sent,
                "resent": c.link.resent,
                "delivered": c.link.delivered,
                "gave_up": c.link.gave_up,
                "rejected_answers": c.link.stray_answers,
                "expired": c.expired,
                "connects": c.connects,
                "late_readings": c.late_readings,
                "dropped_readings": u.dropped.load(Relaxed),
                "commands_unanswered": c.commands,
                "no_code": c.no_code,
                "failed": u.failed(),
            })
        })
        .collect();
    let rest = json!({
        "site": api.site_id,
        "name": api.site_name,
        "time": rfc3339(now, &api.tz),
        "timezone": api.tz.iana_name(),
        "version": env!("CARGO_PKG_VERSION"),
        "queue": { "points": up.points, "bytes": up.bytes, "dropped": up.dropped },
        "uplink_lag_s": (up.lag_s * 10.0).round() / 10.0,
        "written_points": up.written,
        "dead_letter_points": up.dead_letter,
        "writer": writer_json(&health.writer, &api.tz),
        "readings": health.readings.load(Relaxed),
        "open_alerts": api.site.open_alerts().len(),
        "compliance": api.site.compliance_today().is_some(),
        "brokers": brokers,
        "hj212": hj212,
        "hj212_upstreams": upstreams,
        "config": config_json(&health.config.get(), &api.tz),
    });
    Json(Status { devices, rest }).into_response()
}

/// `/api/status`: its devices serialized straight from their rows, the rest as a `json!` map.
/// A `json!` object per device was a map with its own copies of six keys: 1.8 KB a device
/// while the answer was built, 18 MB for a hub of 10,000 stations.
#[derive(serde::Serialize)]
struct Status<'a> {
    devices: Vec<StatusDevice<'a>>,
    #[serde(flatten)]
    rest: Value,
}

#[derive(serde::Serialize)]
struct StatusDevice<'a> {
    id: &'a str,
    bus: Option<&'a str>,
    state: &'static str,
    last_ok: Option<String>,
    polls: Option<u64>,
    poll_errors: Option<u64>,
}

/// The config in force: which file, its SHA-256, when it was loaded, the reloads, and what
/// waits for a restart.
fn config_json(c: &crate::health::config::ConfigStatus, tz: &jiff::tz::TimeZone) -> Value {
    json!({
        "file": c.file,
        "sha256": c.sha256,
        "loaded_at": rfc3339(c.loaded_ms, tz),
        "reloads": c.reloads_ok,
        "reloads_failed": c.reloads_failed,
        "last_failure": c.last_failure_ms.and_then(|t| rfc3339(t, tz)),
        "last_errors": c.last_errors,
        "pending_restart": c.pending_restart,
    })
}

/// The writer's state: whether its destination is missing (since when, and the server's
/// words), and its last error.
fn writer_json(w: &crate::health::WriterHealth, tz: &jiff::tz::TimeZone) -> Value {
    let missing = w.destination_missing_since();
    let last_error = w.last_error.lock().ok().and_then(|e| e.clone());
    json!({
        "destination_missing": missing.is_some(),
        "missing_since": missing.and_then(|t| rfc3339(t, tz)),
        "last_error": last_error,
    })
}

/// A limit as JSON: `{value, rule, kind: above | below | outside, low, window_s, aggregate}`.
pub(super) fn limit_json(l: &crate::pipeline::rules::Limit) -> Value {
    let (kind, value, low) = match l.condition {
        Condition::Above(a) => ("above", a, None),
        Condition::Below(b) => ("below", b, None),
        // The band's upper edge as `value`, its lower edge as `low`.
        Condition::Outside(lo, hi) => ("outside", hi, Some(lo)),
    };
    json!({
        "value": value,
        "low": low,
        "kind": kind,
        "rule": l.rule,
        "window_s": l.window.map(|w| w.as_secs()),
        "aggregate": l.window.map(|_| l.aggregate.name()),
    })
}

pub(super) async fn readings_latest(State(api): State<Arc<Api>>) -> Response {
    let now = now_ms();
    // A copy, so the lock on the latest values is not held while the rule engine is asked.
    let latest = api.health().latest_sorted();
    let catalog = Catalog::builtin();
    let mut out = Vec::new();
    for l in &latest {
        for (slot, value) in l.device.slots.iter().zip(l.values()) {
            let Some((t, v)) = value else { continue };
            let info = catalog.get(&slot.metric);
            let limit = api.site.limit_in_force(&l.device.id, &slot.metric, now);
            out.push(json!({
                "device": &*l.device.id,
                "metric": slot.metric,
                "value": v,
                "unit": info.map_or("", |i| i.unit.as_str()),
                "label": info.map(|i| json!({"zh": i.zh, "en": i.en})),
                "time": rfc3339(t, &api.tz),
                "over": limit.as_ref().is_some_and(|l| l.breached_by(v)),
                "alert_open": limit.as_ref().is_some_and(|l| l.alert_open),
                "level": super::board::level(limit.as_ref(), v).0.name(),
                "limit": limit.as_ref().map(limit_json),
            }));
        }
    }
    Json(Value::Array(out)).into_response()
}

pub(super) async fn alerts(
    State(api): State<Arc<Api>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // Messages in the reader's language (`?lang=en`), the site's alert language otherwise.
    let locale = match q.get("lang") {
        None => None,
        Some(l) => match crate::pipeline::alerts::Locale::parse(l) {
            Some(l) => Some(l),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("unknown lang \"{}\": zh-CN or en", l.escape_debug()),
                );
            }
        },
    };
    match q.get("state").map(String::as_str) {
        None | Some("open") => {
            Json(Value::Array(api.site.open_alerts_json(locale))).into_response()
        }
        Some("closed") => error(
            StatusCode::BAD_REQUEST,
            "only open alerts are kept in memory: closed ones are in InfluxDB (measurement alert, state=closed)",
        ),
        Some(other) => error(
            StatusCode::BAD_REQUEST,
            &format!("unknown state \"{other}\": the gateway lists state=open"),
        ),
    }
}

pub(super) async fn compliance_today(State(api): State<Arc<Api>>) -> Response {
    let Some((figures, declared)) = api.site.compliance_today() else {
        return error(
            StatusCode::NOT_FOUND,
            "the six 100% are not judged: add [compliance] to site.toml",
        );
    };
    // Site time: the compliance engine counts days by it.
    let now = now_ms();
    let date = jiff::Timestamp::from_millisecond(now)
        .map(|t| api.tz.to_datetime(t).date().to_string())
        .ok();
    let items: Vec<Value> = ITEMS
        .iter()
        .zip(figures.iter())
        .map(|(item, f)| {
            json!({
                "item": item,
                "percent": f.percent.is_finite().then_some((f.percent * 10.0).round() / 10.0),
                "checked": f.checked,
                "violations": f.violations,
            })
        })
        .collect();
    Json(json!({
        "site": api.site_id,
        "date": date,
        "at": rfc3339(now, &api.tz),
        "items": items,
        "paved_declared": declared,
    }))
    .into_response()
}
