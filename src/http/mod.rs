//! The HTTP API on `[http].listen` (loopback by default): the status page, health, metrics,
//! what the gateway reads and judges, today's six-100% figures, actuators and their override.
//!
//! | route | module | |
//! |---|---|---|
//! | `GET /` (+ `/status.css`, `/status.js`) | [`page`] | the status page for the site crew (zh-CN / en): tiles, equipment, 24-h charts, tables |
//! | `GET /board` (+ `/board.css`, `/board.js`) | [`page`] | the gate board (公示牌), full screen, for the TV or LED screen at the gate |
//! | `GET /healthz` | here | `ok` while the gateway runs |
//! | `GET /metrics` | [`metrics`] | Prometheus text exposition 0.0.4, every name `dustgate_…` |
//! | `GET /api/status` | [`api`] | site, gateway time, devices, store depth, uplink lag, brokers |
//! | `GET /api/readings/latest` | [`api`] | every device's latest value per metric, with the limit in force and its `level` |
//! | `GET /api/board` | [`board`] | the main values (one device per metric), levels, wind in words, AQI, name, permit |
//! | `GET /api/history` (`?device=`, `?metric=`) | [`charts`] | 24 h of per-minute means, the limit, the alerts of the window |
//! | `GET /api/alerts?state=open` | [`api`] | the open alerts as the contract's alert JSON |
//! | `GET /api/compliance/today` | [`api`] | each item's percentage, checked count and violations today |
//! | `GET /api/actuators` | [`actuators`] | each actuator: on/off, mode (auto, manual, guard, link-lost), why |
//! | `POST /api/actuators/{id}` | [`actuators`] | manual override, `Authorization: Bearer <[control] token>` |

mod actuators;
mod api;
mod board;
mod charts;
pub mod limits;
pub mod metrics;
mod page;
mod view;

pub use view::SiteView;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::watch;

use crate::control::Overrides;
use crate::health::Health;

pub struct Api {
    /// The site as it is now (read only).
    pub site: Arc<dyn SiteView>,
    /// Where manual overrides go.
    pub control: Arc<dyn Overrides>,
    pub site_id: String,
    /// The site's name for people (`[site].name`; may be empty).
    pub site_name: String,
    /// The construction permit number (`[site].permit`), for the gate board.
    pub site_permit: Option<String>,
    pub tz: jiff::tz::TimeZone,
    /// The bearer token of `POST /api/actuators/{id}`; `None`: the endpoint is off.
    pub control_token: Option<String>,
}

impl Api {
    fn health(&self) -> &Health {
        self.site.health()
    }

    /// The writer's side as the page and `/metrics` show it.
    fn uplink(&self) -> Uplink {
        let depth = self.site.depth();
        let w = &self.health().writer;
        Uplink {
            points: depth.points,
            bytes: depth.bytes,
            // As in the `gateway` measurement: dropped at the store, and lost by the writer.
            dropped: self.site.dropped_points() + w.lost_points.load(Relaxed),
            lag_s: depth.lag_s(),
            written: w.written_points.load(Relaxed),
            dead_letter: w.dead_letter_points.load(Relaxed),
            retries: w.retries.load(Relaxed),
        }
    }
}

/// The store and the uplink, now.
struct Uplink {
    points: u64,
    bytes: u64,
    dropped: u64,
    lag_s: f64,
    written: u64,
    dead_letter: u64,
    retries: u64,
}

pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/status.css", get(page::css))
        .route("/status.js", get(page::js))
        .route("/board", get(page::board))
        .route("/board.css", get(page::board_css))
        .route("/board.js", get(page::board_js))
        // No icon: an empty answer keeps browsers from logging a 404 on every visit.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::handler))
        .route("/api/status", get(api::status))
        .route("/api/readings/latest", get(api::readings_latest))
        .route("/api/board", get(board::board))
        .route("/api/history", get(charts::history))
        .route("/api/alerts", get(api::alerts))
        .route("/api/compliance/today", get(api::compliance_today))
        .route("/api/actuators", get(actuators::list))
        .route(
            "/api/actuators/{id}",
            get(actuators::one).post(actuators::override_actuator),
        )
        .with_state(api)
}

/// Serves until `stop` turns true. A port already taken is reported and the gateway runs on
/// without its API: readings matter more than the status page.
pub async fn serve(cfg: crate::config::HttpConfig, api: Arc<Api>, mut stop: watch::Receiver<bool>) {
    let listen = cfg.listen;
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %listen, error = %e, "cannot listen for HTTP: the API is off (set [http].listen to a free address)");
            return;
        }
    };
    tracing::info!(listen = %listen, max_connections = cfg.max_connections, idle_timeout_s = cfg.idle_timeout.as_secs(), "HTTP API listening");
    let listener = limits::LimitedListener::new(listener, cfg.max_connections, cfg.idle_timeout);
    // The charts' closed alerts: only the HTTP layer asks the site which alerts are open.
    let shutdown = async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    if let Err(e) = axum::serve(listener, router(api))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "HTTP API stopped");
    }
}

/// RFC 3339 with the site's offset.
fn rfc3339(ms: i64, tz: &jiff::tz::TimeZone) -> Option<String> {
    jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.display_with_offset(tz.to_offset(t)).to_string())
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
