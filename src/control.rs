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

/// What an MQTT command must carry besides its fields. Over MQTT anyone who can publish on the
/// topic is heard (HTTP has its bearer token), and a broker keeps retained or queued messages:
/// an "on for 4 h" from yesterday must not run at today's start.
#[derive(Debug, Clone)]
pub struct MqttPolicy {
    /// `at` (when the command was issued: epoch milliseconds or RFC 3339) may be this far from
    /// the gateway's clock, either way.
    pub max_age_ms: i64,
    /// With a shared secret, `sig` must be the lower-case hex HMAC-SHA256 of
    /// `"{at}|{actuator}|{state}|{for}|{by}"` (each as written in the JSON; `for` and `by`
    /// empty when absent).
    pub hmac: Option<String>,
}

/// Checks an MQTT command's freshness and signature; `Err` says why it is refused.
pub fn check_mqtt(
    body: &[u8],
    retained: bool,
    now_ms: i64,
    policy: &MqttPolicy,
) -> Result<(), String> {
    if retained {
        return Err(
            "retained commands are ignored (publish commands without the retain flag)".into(),
        );
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let raw = |k: &str| match v.get(k) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let at_ms = match v.get("at") {
        Some(Value::Number(n)) => n.as_i64().ok_or("\"at\" is epoch milliseconds")?,
        Some(Value::String(s)) => s
            .parse::<jiff::Timestamp>()
            .map_err(|_| "\"at\" is epoch milliseconds or RFC 3339 with an offset")?
            .as_millisecond(),
        _ => return Err("no \"at\": a command carries the time it was issued".into()),
    };
    let age = now_ms.saturating_sub(at_ms);
    // unsigned_abs: a saturated age (i64::MIN) has no i64 absolute value (cargo fuzz with
    // debug assertions found `abs` overflowing there).
    if age.unsigned_abs() > policy.max_age_ms.unsigned_abs() {
        return Err(format!(
            "issued {}s {} the gateway's clock, more than [control].max_age ({}s)",
            age.unsigned_abs() / 1000,
            if age >= 0 { "before" } else { "ahead of" },
            policy.max_age_ms / 1000
        ));
    }
    if let Some(secret) = &policy.hmac {
        let msg = format!(
            "{}|{}|{}|{}|{}",
            raw("at"),
            raw("actuator"),
            raw("state"),
            raw("for"),
            raw("by")
        );
        let given = raw("sig");
        if !same_text(&given.to_ascii_lowercase(), &sign(secret, &msg)) {
            return Err("missing or wrong \"sig\" (HMAC-SHA256 of the command)".into());
        }
    }
    Ok(())
}

/// Lower-case hex HMAC-SHA256 of `msg`.
pub fn sign(secret: &str, msg: &str) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&k, msg.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Equal without an early exit (the signature is a secret's proof).
fn same_text(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

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
    fn an_age_that_saturates_is_refused_not_overflowed() {
        // Found by cargo fuzz (control_body, debug assertions): now − at saturating at
        // i64::MIN overflowed `abs`.
        let p = MqttPolicy {
            max_age_ms: i64::MAX,
            hmac: None,
        };
        let body = br#"{"actuator": "sprinklers", "state": "auto", "at": 1795694400000}"#;
        assert!(check_mqtt(body, false, i64::MIN, &p).is_err());
    }

    #[test]
    fn mqtt_commands_must_be_fresh_signed_and_not_retained() {
        let now = 1_800_000_000_000;
        let p = MqttPolicy {
            max_age_ms: 120_000,
            hmac: Some("k3y".into()),
        };
        let body = |at: &str, sig: &str| {
            format!(
                r#"{{"actuator":"mist","state":"on","for":"4h","by":"x","at":{at},"sig":"{sig}"}}"#
            )
        };
        let good_sig = sign("k3y", &format!("{now}|mist|on|4h|x"));
        assert_eq!(
            check_mqtt(body(&now.to_string(), &good_sig).as_bytes(), false, now, &p),
            Ok(())
        );
        // Retained, yesterday's, from the future, unsigned, wrongly signed: refused.
        assert!(
            check_mqtt(body(&now.to_string(), &good_sig).as_bytes(), true, now, &p)
                .unwrap_err()
                .contains("retained")
        );
        let old = now - 86_400_000;
        let old_sig = sign("k3y", &format!("{old}|mist|on|4h|x"));
        assert!(
            check_mqtt(body(&old.to_string(), &old_sig).as_bytes(), false, now, &p)
                .unwrap_err()
                .contains("max_age")
        );
        let ahead = now + 600_000;
        let ahead_sig = sign("k3y", &format!("{ahead}|mist|on|4h|x"));
        assert!(
            check_mqtt(
                body(&ahead.to_string(), &ahead_sig).as_bytes(),
                false,
                now,
                &p
            )
            .unwrap_err()
            .contains("ahead")
        );
        assert!(
            check_mqtt(br#"{"actuator":"mist","state":"on"}"#, false, now, &p)
                .unwrap_err()
                .contains("no \"at\"")
        );
        assert!(
            check_mqtt(body(&now.to_string(), "00").as_bytes(), false, now, &p)
                .unwrap_err()
                .contains("sig")
        );
        // RFC 3339 works; without a secret no signature is asked for.
        let p2 = MqttPolicy {
            max_age_ms: 120_000,
            hmac: None,
        };
        let at = jiff::Timestamp::from_millisecond(now).unwrap().to_string();
        assert_eq!(
            check_mqtt(
                format!(r#"{{"actuator":"mist","state":"off","at":"{at}"}}"#).as_bytes(),
                false,
                now,
                &p2
            ),
            Ok(())
        );
    }

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
