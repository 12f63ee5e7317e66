//! `/api/history`: the last 24 h of per-minute means ([`crate::health::history`]) with the
//! limit in force and the alerts of the window, for the status page's charts.
//!
//! - no query: the series of the charted metrics, each of the device its tile shows;
//! - `?device=D`, `?metric=M` or both: every series kept that matches (404 when none is).
//!
//! Each series: `{device, metric, unit, label, limit, points: [[minute start (epoch
//! ms), mean, readings], ...], alerts: [{alert_id, rule, severity, open, opened_ms, closed_ms}]}`; the
//! answer also says how many pairs are kept and how many values the cap refused.
//!
//! The alerts: the ring of transitions the history keeps (the site's edge tells it each open
//! and close as it happens), topped up with the site's open alerts at each request (those open
//! from before a restart).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use super::{Api, board, error, rfc3339};
use crate::config::metrics::Catalog;
use crate::health::history::{self, AlertMark};
use crate::model::now_ms;
use crate::pipeline::rules::AlertEvent;

/// The metrics the page charts, in its order.
pub(super) const CHARTED: [&str; 5] = ["pm25", "pm10", "tsp", "noise", "wind_speed"];
const DAY_MS: i64 = history::MINUTES as i64 * 60_000;

/// Tells the history which alerts are open now (`open`: the site's open alerts).
pub(super) fn observe_alerts(api: &Api, open: &[AlertEvent], now: i64) {
    let open: Vec<AlertMark> = open
        .iter()
        .filter(|a| !a.metric.is_empty())
        .map(|a| AlertMark {
            alert_id: a.alert_id.clone(),
            rule: a.rule_id.clone(),
            device: a.device.clone(),
            metric: a.metric.clone(),
            severity: a.severity.name(),
            opened_ms: a.since_ms,
            closed_ms: None,
        })
        .collect();
    api.health().history.observe_open_alerts(&open, now);
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn series_json(
    api: &Api,
    device: &str,
    metric: &str,
    open: &[AlertEvent],
    now: i64,
) -> Option<Value> {
    let h = &api.health().history;
    let points: Vec<Value> = h
        .series(device, metric, now)?
        .iter()
        .map(|p| json!([p.start_ms, round(p.mean), p.n]))
        .collect();
    let from = now - DAY_MS;
    let open: Vec<&AlertEvent> = open
        .iter()
        .filter(|a| a.device == device && a.metric == metric)
        .collect();
    let mut alerts: Vec<Value> = open
        .iter()
        .map(|a| {
            json!({
                "alert_id": a.alert_id,
                "rule": a.rule_id,
                "severity": a.severity.name(),
                "open": true,
                "opened_ms": a.since_ms,
                "closed_ms": null,
            })
        })
        .collect();
    alerts.extend(
        h.alerts(device, metric, from)
            .into_iter()
            .filter(|m| !open.iter().any(|a| a.alert_id == m.alert_id))
            .filter(|m| m.closed_ms.is_some())
            .map(|m| {
                json!({
                    "alert_id": m.alert_id,
                    "rule": m.rule,
                    "severity": m.severity,
                    "open": false,
                    "opened_ms": m.opened_ms,
                    "closed_ms": m.closed_ms,
                })
            }),
    );
    let info = Catalog::builtin().get(metric);
    let limit = api.site.limit_in_force(device, metric, now);
    Some(json!({
        "device": device,
        "metric": metric,
        "unit": info.map_or("", |i| i.unit.as_str()),
        "label": info.map(|i| json!({"zh": i.zh, "en": i.en})),
        "limit": limit.as_ref().map(super::api::limit_json),
        "points": points,
        "alerts": alerts,
    }))
}

pub(super) async fn history(
    State(api): State<Arc<Api>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let now = now_ms();
    let open = api.site.open_alerts();
    observe_alerts(&api, &open, now);
    let h = &api.health().history;
    let (device, metric) = (q.get("device"), q.get("metric"));
    let pairs: Vec<(String, String)> = if device.is_none() && metric.is_none() {
        let latest = board::site_latest(&api);
        let up = board::up_devices(&api, now);
        board::picks(&api, &latest, &up, &CHARTED, now)
            .into_iter()
            .map(|p| (p.device.to_string(), p.metric.to_string()))
            .collect()
    } else {
        h.pairs()
            .into_iter()
            .filter(|(d, m)| device.is_none_or(|x| **x == **d) && metric.is_none_or(|x| x == m))
            .map(|(d, m)| (d.to_string(), m))
            .collect()
    };
    let series: Vec<Value> = pairs
        .iter()
        .filter_map(|(d, m)| series_json(&api, d, m, &open, now))
        .collect();
    let refused = h.refused_values.load(Relaxed);
    if series.is_empty() && (device.is_some() || metric.is_some()) {
        let what = [("device", device), ("metric", metric)]
            .iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k} \"{}\"", v.escape_debug())))
            .collect::<Vec<_>>()
            .join(", ");
        return error(
            StatusCode::NOT_FOUND,
            &format!(
                "no history of {what}: the gateway keeps the first {} device-metric pairs to report ({} kept, {refused} values refused since start); switch states are not kept",
                history::MAX_SERIES,
                h.len()
            ),
        );
    }
    Json(json!({
        "from": rfc3339(now - DAY_MS, &api.tz),
        "to": rfc3339(now, &api.tz),
        "from_ms": now - DAY_MS,
        "to_ms": now,
        "step_s": 60,
        "series": series,
        "kept_series": h.len(),
        "max_series": history::MAX_SERIES,
        "refused_values": refused,
    }))
    .into_response()
}
