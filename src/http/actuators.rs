//! `/api/actuators`: each actuator's state, and the manual override behind a bearer token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use super::{Api, error, rfc3339};

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

pub(super) async fn list(State(api): State<Arc<Api>>) -> Response {
    let list: Vec<Value> = api
        .site
        .actuators()
        .iter()
        .map(|s| actuator_json(&api, s))
        .collect();
    Json(Value::Array(list)).into_response()
}

pub(super) async fn one(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    match api.site.actuators().iter().find(|s| s.id == id) {
        Some(s) => Json(actuator_json(&api, s)).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("no actuator \"{id}\"")),
    }
}

pub(super) async fn override_actuator(
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
        refused_log(&id);
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
    match crate::control::apply(api.control.as_ref(), &command) {
        Ok(v) => Json(v).into_response(),
        Err(e) if e.starts_with("no actuator") => error(StatusCode::NOT_FOUND, &e),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

/// Compares without leaking, through timing, how much of the token was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refused override attempts are logged at most once every 10 s (an attacker's loop must not
/// flood the journal), with the path's actuator escaped (`?`: no newlines or control
/// characters reach the log) and cut, and the count of those not logged.
fn refused_log(id: &str) {
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
    static LAST_MS: AtomicI64 = AtomicI64::new(i64::MIN);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let now = crate::clock::wall_ms();
    let last = LAST_MS.load(Relaxed);
    if last != i64::MIN && now.saturating_sub(last) < 10_000 {
        SUPPRESSED.fetch_add(1, Relaxed);
        return;
    }
    if LAST_MS
        .compare_exchange(last, now, Relaxed, Relaxed)
        .is_err()
    {
        SUPPRESSED.fetch_add(1, Relaxed);
        return;
    }
    let shown: String = id.chars().take(64).collect();
    let suppressed = SUPPRESSED.swap(0, Relaxed);
    tracing::warn!(actuator = ?shown, suppressed, "override refused: missing or wrong bearer token");
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
