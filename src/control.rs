//! Manual override of actuators, as people ask for it: a JSON command on the MQTT command topic
//! or in the body of `POST /api/actuators/{id}`.
//!
//! ```json
//! {"actuator": "mist-cannons", "state": "on", "for": "20m", "by": "王工"}
//! ```
//! `state` is `on`, `off` or `auto` (hand back to the rules); `for` is a duration ("20m") or
//! seconds, default 30 minutes, at most `[control].max_for`; `by` names who asked, for the log
//! and the `equipment` point. Over HTTP the actuator comes from the path.

use std::time::Duration;

use serde_json::Value;

/// Whoever can apply a manual override (the site edge): the MQTT command topic and the HTTP
/// endpoint both go through it.
pub trait Overrides: Send + Sync {
    /// `Some(on)` for `for_`, or `None` to hand back to the rules. Returns until when it holds.
    fn override_actuator(
        &self,
        id: &str,
        on: Option<bool>,
        for_: Duration,
        by: &str,
    ) -> Result<Option<i64>, String>;
}

const DEFAULT_FOR: Duration = Duration::from_secs(30 * 60);

/// A parsed command.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub actuator: String,
    /// `None`: back to the rules.
    pub on: Option<bool>,
    pub for_: Duration,
    pub by: String,
}

/// Parses a command; `actuator` (from an HTTP path) wins over the body's.
pub fn parse(body: &[u8], actuator: Option<&str>, default_by: &str) -> Result<Command, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::trim);
    let actuator = match actuator {
        Some(a) => a.to_string(),
        None => text("actuator")
            .filter(|a| !a.is_empty())
            .ok_or("no \"actuator\"")?
            .to_string(),
    };
    let on = match text("state").map(str::to_ascii_lowercase).as_deref() {
        Some("on") => Some(true),
        Some("off") => Some(false),
        Some("auto") => None,
        _ => return Err("\"state\" is \"on\", \"off\" or \"auto\"".into()),
    };
    let for_ = match v.get("for") {
        None | Some(Value::Null) => DEFAULT_FOR,
        Some(Value::String(s)) => crate::config::reader::parse_duration(s.trim())?,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(s) if s > 0.0 && s < 1e7 => Duration::from_secs_f64(s),
            _ => return Err("\"for\" is a positive number of seconds or a duration".into()),
        },
        Some(_) => return Err("\"for\" is a duration such as \"20m\" or seconds".into()),
    };
    let by = text("by")
        .filter(|b| !b.is_empty())
        .unwrap_or(default_by)
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    Ok(Command {
        actuator,
        on,
        for_,
        by,
    })
}

/// Applies a command. `Ok` says what happens, for the caller's answer.
pub fn apply(site: &dyn Overrides, c: &Command) -> Result<Value, String> {
    let until = site.override_actuator(&c.actuator, c.on, c.for_, &c.by)?;
    Ok(serde_json::json!({
        "actuator": c.actuator,
        "state": match c.on { Some(true) => "on", Some(false) => "off", None => "auto" },
        "until": until.and_then(|t| jiff::Timestamp::from_millisecond(t).ok()).map(|t| t.to_string()),
        "by": c.by,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_nonsense_is_refused() {
        let c = parse(
            r#"{"actuator":"mist","state":"ON","for":"20m","by":"王工"}"#.as_bytes(),
            None,
            "mqtt",
        )
        .unwrap();
        assert_eq!(
            c,
            Command {
                actuator: "mist".into(),
                on: Some(true),
                for_: Duration::from_secs(1200),
                by: "王工".into()
            }
        );
        let c = parse(br#"{"state":"auto"}"#, Some("spray"), "http").unwrap();
        assert_eq!(
            (c.actuator.as_str(), c.on, c.by.as_str()),
            ("spray", None, "http")
        );
        assert_eq!(
            parse(br#"{"state":"off","for":90}"#, Some("x"), "h")
                .unwrap()
                .for_,
            Duration::from_secs(90)
        );
        assert!(parse(b"{", None, "m").is_err());
        assert!(parse(br#"{"state":"on"}"#, None, "m").is_err());
        assert!(parse(br#"{"actuator":"a","state":"maybe"}"#, None, "m").is_err());
        assert!(parse(br#"{"actuator":"a","state":"on","for":-1}"#, None, "m").is_err());
        assert!(parse(br#"{"actuator":"a","state":"on","for":"soon"}"#, None, "m").is_err());
    }
}
