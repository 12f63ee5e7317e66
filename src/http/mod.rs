//! The HTTP API on `[http].listen` (loopback by default): health, today's six-100% figures,
//! actuators and their manual override.
//!
//! | route | |
//! |---|---|
//! | `GET /healthz` | `ok` while the gateway runs |
//! | `GET /api/compliance/today` | each item's percentage, checked count and violations today |
//! | `GET /api/actuators` | each actuator: on/off, mode (auto, manual, guard, link-lost), why |
//! | `POST /api/actuators/{id}` | manual override, `Authorization: Bearer <[control] token>` |

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::pipeline::Pipeline;
use crate::pipeline::compliance::ITEMS;

pub struct Api {
    pub pipeline: Arc<Pipeline>,
    pub site_id: String,
    pub tz: jiff::tz::TimeZone,
    /// The bearer token of `POST /api/actuators/{id}`; `None`: the endpoint is off.
    pub control_token: Option<String>,
}

pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/compliance/today", get(compliance_today))
        .route("/api/actuators", get(actuators))
        .route("/api/actuators/{id}", get(actuator).post(override_actuator))
        .with_state(api)
}

/// Serves until `stop` turns true. A port already taken is reported and the gateway runs on
/// without its API: readings matter more than the status page.
pub async fn serve(listen: SocketAddr, api: Arc<Api>, mut stop: watch::Receiver<bool>) {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %listen, error = %e, "cannot listen for HTTP: the API is off (set [http].listen to a free address)");
            return;
        }
    };
    tracing::info!(listen = %listen, "HTTP API listening");
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

async fn compliance_today(State(api): State<Arc<Api>>) -> Response {
    let Some((figures, declared)) = api.pipeline.compliance_today() else {
        return error(
            StatusCode::NOT_FOUND,
            "the six 100% are not judged: add [compliance] to site.toml",
        );
    };
    let now_ts = jiff::Timestamp::now();
    let date = api.tz.to_datetime(now_ts).date();
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
        "date": date.to_string(),
        "at": rfc3339(now_ts.as_millisecond(), &api.tz),
        "items": items,
        "paved_declared": declared,
    }))
    .into_response()
}

fn actuator_json(api: &Api, s: &crate::pipeline::actuate::ActuatorStatus) -> Value {
    json!({
        "id": s.id,
        "device": s.device,
        "on": s.on,
        "since": (s.since_ms > 0).then(|| rfc3339(s.since_ms, &api.tz)).flatten(),
        "mode": s.mode,
        "manual_until": s.manual_until_ms.and_then(|t| rfc3339(t, &api.tz)),
        "manual_by": s.manual_by,
        "demanded_by": s.demanded_by,
        "guard": s.tripped,
        "link_lost": s.link_lost,
        "ran_today_s": s.ran_today_s,
    })
}

async fn actuators(State(api): State<Arc<Api>>) -> Response {
    let list: Vec<Value> = api
        .pipeline
        .actuators()
        .iter()
        .map(|s| actuator_json(&api, s))
        .collect();
    Json(Value::Array(list)).into_response()
}

async fn actuator(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    match api.pipeline.actuators().iter().find(|s| s.id == id) {
        Some(s) => Json(actuator_json(&api, s)).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("no actuator \"{id}\"")),
    }
}

async fn override_actuator(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = &api.control_token else {
        return error(
            StatusCode::FORBIDDEN,
            "manual override over HTTP is off: set [control].token_env (or token_file)",
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
        tracing::warn!(actuator = %id, "override refused: missing or wrong bearer token");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "a valid bearer token is required"})),
        )
            .into_response();
    }
    let command = match crate::control::parse(&body, Some(&id), "http") {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    match crate::control::apply(&api.pipeline, &command) {
        Ok(v) => Json(v).into_response(),
        Err(e) if e.starts_with("no actuator") => error(StatusCode::NOT_FOUND, &e),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Compares without leaking, through timing, how much of the token was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_whole() {
        assert!(super::same(b"abc", b"abc"));
        assert!(!super::same(b"abc", b"abd"));
        assert!(!super::same(b"abc", b"abcd"));
    }
}
