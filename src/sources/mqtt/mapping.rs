//! From an MQTT payload to readings or events, by a JSON profile. Pure: payload and time in,
//! values out, every way of being wrong named.

use serde_json::Value;

use super::topic;
use crate::config::json_profile::{JsonKind, JsonProfile, Pointer};
use crate::config::{DeviceFrom, Subscription};

/// One reading of one device: values slot by slot (the profile's fields), and the names of
/// fields that held something that is not a number.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub device: String,
    pub time_ms: i64,
    pub values: Vec<Option<f64>>,
    pub invalid: Vec<String>,
}

pub use crate::model::{Detection, Vehicle};

#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    Readings(Vec<Item>),
    Vehicles(Vec<Vehicle>),
    Detections(Vec<Detection>),
}

/// A JSON pointer lookup (RFC 6901), as `Value::pointer` but without allocating a string for
/// every token: this runs for every field of every message.
pub fn lookup<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() {
        return Some(v);
    }
    let mut cur = v;
    for token in pointer.strip_prefix('/')?.split('/') {
        let unescaped;
        let t = if token.contains('~') {
            unescaped = token.replace("~1", "/").replace("~0", "~");
            unescaped.as_str()
        } else {
            token
        };
        cur = step(cur, t)?;
    }
    Some(cur)
}

/// One token of a pointer: an object's member, or an array's element by its decimal index.
fn step<'a>(cur: &'a Value, t: &str) -> Option<&'a Value> {
    match cur {
        Value::Object(m) => m.get(t),
        Value::Array(a) => {
            if t.starts_with('+') || (t.len() > 1 && t.starts_with('0')) {
                return None;
            }
            a.get(t.parse::<usize>().ok()?)
        }
        _ => None,
    }
}

/// A lookup by a pointer split when its profile was loaded (see [`Pointer`]): the hot path.
pub fn lookup_tokens<'a>(v: &'a Value, pointer: &Pointer) -> Option<&'a Value> {
    let mut cur = v;
    for t in pointer.tokens() {
        cur = step(cur, t)?;
    }
    Some(cur)
}

/// Timestamps outside 2000..2100 are taken as wrong units or garbage.
const MIN_MS: i64 = 946_684_800_000;
const MAX_MS: i64 = 4_102_444_800_000;

/// A number: JSON numbers, numeric strings, booleans (1/0). `Err` for anything else.
fn number(v: &Value) -> Result<f64, ()> {
    let x = match v {
        Value::Number(n) => n.as_f64().ok_or(())?,
        Value::String(s) => s.trim().parse::<f64>().map_err(|_| ())?,
        Value::Bool(b) => f64::from(u8::from(*b)),
        _ => return Err(()),
    };
    if x.is_finite() { Ok(x) } else { Err(()) }
}

/// Epoch seconds or milliseconds (told apart by size), or RFC 3339 text.
fn timestamp_ms(v: &Value) -> Result<i64, String> {
    let ms = match v {
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(x) => epoch_ms(x),
            Err(_) => s
                .trim()
                .parse::<jiff::Timestamp>()
                .map(|t| t.as_millisecond())
                .map_err(|_| {
                    format!("timestamp \"{s}\" is neither epoch time nor RFC 3339 with an offset")
                })?,
        },
        other => epoch_ms(number(other).map_err(|_| format!("timestamp {other} is not a time"))?),
    };
    if (MIN_MS..MAX_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(format!("timestamp {v} is out of range"))
    }
}

fn epoch_ms(x: f64) -> i64 {
    if x.abs() >= 1e11 {
        x.round() as i64
    } else {
        (x * 1000.0).round() as i64
    }
}

fn device_of(sub: &Subscription, topic_name: &str, item: &Value) -> Result<String, String> {
    match &sub.device {
        DeviceFrom::Fixed(d) => Ok(d.clone()),
        DeviceFrom::TopicLevel(n) => topic::level(topic_name, *n)
            .map(str::to_string)
            .ok_or_else(|| format!("topic {topic_name} has no level {n} for the device id")),
        DeviceFrom::Pointer(p) => match lookup(item, p) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(format!("no device id at {p}")),
        },
    }
}

fn time_of(profile: &JsonProfile, item: &Value, received_ms: i64) -> Result<i64, String> {
    match &profile.timestamp {
        None => Ok(received_ms),
        Some(p) => match lookup_tokens(item, p) {
            None | Some(Value::Null) => Err(format!("no timestamp at {p}")),
            Some(v) => timestamp_ms(v),
        },
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn flag(v: Option<&Value>) -> Result<Option<bool>, ()> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(0.0) => Ok(Some(false)),
            Some(1.0) => Ok(Some(true)),
            _ => Err(()),
        },
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "是" => Ok(Some(true)),
            "false" | "0" | "no" | "否" => Ok(Some(false)),
            _ => Err(()),
        },
        _ => Err(()),
    }
}

fn direction(v: Option<&Value>) -> Result<Option<String>, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let s = match v {
        Value::String(s) => s.trim().to_ascii_lowercase(),
        other => other.to_string(),
    };
    match s.as_str() {
        "in" | "entry" | "enter" | "入" | "进" => Ok(Some("in".into())),
        "out" | "exit" | "leave" | "出" => Ok(Some("out".into())),
        _ => Err(format!("direction {v} is neither in nor out")),
    }
}

/// Maps one message. `Err` is the reason it is rejected (not JSON, no fields, nonsense).
pub fn map(
    sub: &Subscription,
    topic_name: &str,
    payload: &[u8],
    received_ms: i64,
) -> Result<Mapped, String> {
    let doc: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let profile = &sub.profile;
    let items: Vec<&Value> = match &profile.items {
        None => vec![&doc],
        Some(p) => match lookup(&doc, p) {
            Some(Value::Array(a)) if !a.is_empty() => a.iter().collect(),
            Some(Value::Array(_)) => return Err(format!("{p} is an empty array")),
            _ => return Err(format!("no array at {p}")),
        },
    };
    match &profile.kind {
        JsonKind::Readings(fields) => {
            let mut out = Vec::with_capacity(items.len());
            let mut reasons = Vec::new();
            for item in items {
                let device = match device_of(sub, topic_name, item) {
                    Ok(d) => d,
                    Err(e) => {
                        reasons.push(e);
                        continue;
                    }
                };
                let time_ms = match time_of(profile, item, received_ms) {
                    Ok(t) => t,
                    Err(e) => {
                        reasons.push(e);
                        continue;
                    }
                };
                let mut invalid = Vec::new();
                let values: Vec<Option<f64>> = fields
                    .iter()
                    .map(|f| match lookup_tokens(item, &f.pointer) {
                        None | Some(Value::Null) => None,
                        Some(v) => match number(v) {
                            Ok(x) => Some(f.apply_scale(x)),
                            Err(()) => {
                                invalid.push(f.metric.clone());
                                None
                            }
                        },
                    })
                    .collect();
                if values.iter().all(Option::is_none) {
                    reasons.push(if invalid.is_empty() {
                        "none of the profile's fields is in the payload".to_string()
                    } else {
                        format!("no field holds a number ({})", invalid.join(", "))
                    });
                    continue;
                }
                out.push(Item {
                    device,
                    time_ms,
                    values,
                    invalid,
                });
            }
            if out.is_empty() {
                Err(reasons.join("; "))
            } else {
                Ok(Mapped::Readings(out))
            }
        }
        JsonKind::Vehicle(fields) => {
            let get = |item, name| named(fields, item, name);
            let mut out = Vec::new();
            for item in items {
                let device = device_of(sub, topic_name, item)?;
                let time_ms = time_of(profile, item, received_ms)?;
                let plate = text(get(item, "plate")).ok_or("no plate")?;
                let muck_truck = flag(get(item, "muck_truck"))
                    .map_err(|()| "muck_truck is not true or false".to_string())?;
                let covered = flag(get(item, "covered"))
                    .map_err(|()| "covered is not true or false".to_string())?;
                out.push(Vehicle {
                    device,
                    time_ms,
                    plate,
                    direction: direction(get(item, "direction"))?,
                    gate: text(get(item, "gate")),
                    muck_truck,
                    covered,
                    snapshot: text(get(item, "snapshot")),
                });
            }
            Ok(Mapped::Vehicles(out))
        }
        JsonKind::Detection {
            fields,
            kinds,
            kind: fixed,
        } => {
            let get = |item, name| named(fields, item, name);
            let mut out = Vec::new();
            for item in items {
                let device = device_of(sub, topic_name, item)?;
                let time_ms = time_of(profile, item, received_ms)?;
                let kind = match fixed {
                    Some(k) => k.clone(),
                    None => {
                        let label = text(get(item, "kind")).ok_or("no detection kind")?;
                        detection_kind(&label, kinds)?
                    }
                };
                let open = detection_state(get(item, "state"))?;
                out.push(Detection {
                    device,
                    time_ms,
                    id: text(get(item, "id")).unwrap_or_else(|| kind.clone()),
                    kind,
                    open,
                    snapshot: text(get(item, "snapshot")),
                });
            }
            Ok(Mapped::Detections(out))
        }
    }
}

/// The value an event profile's field `name` points at in `item`.
fn named<'a>(fields: &[(String, String)], item: &'a Value, name: &str) -> Option<&'a Value> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, p)| lookup(item, p))
}

/// A vendor's label, translated by the profile's `kinds`, or already one of ours.
fn detection_kind(label: &str, kinds: &[(String, String)]) -> Result<String, String> {
    if let Some((_, k)) = kinds.iter().find(|(l, _)| l == label) {
        return Ok(k.clone());
    }
    if crate::model::DETECTION_KINDS.contains(&label) {
        return Ok(label.to_string());
    }
    Err(format!(
        "detection kind \"{label}\" is not one of {} (translate it with `kinds` in the profile)",
        crate::model::DETECTION_KINDS.join(", ")
    ))
}

/// Open (true) or cleared (false).
fn detection_state(v: Option<&Value>) -> Result<bool, String> {
    let v = v.filter(|v| !v.is_null()).ok_or("no detection state")?;
    if let Ok(Some(b)) = flag(Some(v)) {
        return Ok(b);
    }
    let s = match v {
        Value::String(s) => s.trim().to_ascii_lowercase(),
        other => other.to_string(),
    };
    match s.as_str() {
        "open" | "opened" | "detected" | "alarm" | "start" => Ok(true),
        "cleared" | "clear" | "closed" | "resolved" | "end" | "normal" => Ok(false),
        _ => Err(format!("detection state {v} is neither open nor cleared")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::json_profile::{JsonField, JsonProfile};
    use std::sync::Arc;

    fn sub(profile: JsonProfile, device: DeviceFrom) -> Subscription {
        Subscription {
            topic: "sensors/+/telemetry".into(),
            filter: "sensors/+/telemetry".into(),
            device,
            profile: Arc::new(profile),
            qos: 1,
            max_devices: 1000,
        }
    }

    fn dust(items: Option<&str>, ts: Option<&str>) -> JsonProfile {
        let f = |m: &str, p: &str, scale: f64| JsonField {
            metric: m.into(),
            measurement: "air".into(),
            pointer: Pointer::new(p),
            scale,
            offset: 0.0,
            range: None,
        };
        JsonProfile {
            name: "t".into(),
            origin: "t".into(),
            description: "t".into(),
            source: "t".into(),
            timestamp: ts.map(Pointer::new),
            items: items.map(Into::into),
            kind: JsonKind::Readings(vec![f("pm10", "/pm10", 1.0), f("noise", "/noise", 0.1)]),
        }
    }

    #[test]
    fn lookup_agrees_with_serde_json() {
        let v: Value =
            serde_json::from_str(r#"{"a":{"b":[10,{"c/d":1,"e~f":2}]},"":{"":3},"01":4}"#).unwrap();
        for p in [
            "",
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/1/c~1d",
            "/a/b/1/e~0f",
            "/a/b/2",
            "/a/b/01",
            "/a/b/+1",
            "/",
            "//",
            "/01",
            "/x/y",
            "a",
            "/a/b/-",
        ] {
            assert_eq!(lookup(&v, p), v.pointer(p), "{p}");
            if p.is_empty() || p.starts_with('/') {
                assert_eq!(lookup_tokens(&v, &Pointer::new(p)), v.pointer(p), "{p}");
            }
        }
    }

    #[test]
    fn numbers_strings_booleans_scale_and_topic_device() {
        let s = sub(dust(None, Some("/ts")), DeviceFrom::TopicLevel(1));
        let m = map(
            &s,
            "sensors/d1/telemetry",
            br#"{"pm10":"82","noise":652,"ts":1795000000}"#,
            0,
        )
        .unwrap();
        assert_eq!(
            m,
            Mapped::Readings(vec![Item {
                device: "d1".into(),
                time_ms: 1_795_000_000_000,
                values: vec![Some(82.0), Some(65.2)],
                invalid: vec![],
            }])
        );
    }

    #[test]
    fn timestamps_in_every_form() {
        let s = sub(dust(None, Some("/ts")), DeviceFrom::Fixed("d".into()));
        for (ts, want) in [
            ("1795000000", 1_795_000_000_000),
            ("1795000000123", 1_795_000_000_123),
            ("1795000000.5", 1_795_000_000_500),
            ("\"2026-11-26T20:00:00+08:00\"", 1_795_694_400_000),
            ("\"2026-11-26T12:00:00.250Z\"", 1_795_694_400_250),
            ("\"1795000000\"", 1_795_000_000_000),
        ] {
            let payload = format!(r#"{{"pm10":1,"ts":{ts}}}"#);
            match map(&s, "x", payload.as_bytes(), 0) {
                Ok(Mapped::Readings(items)) => assert_eq!(items[0].time_ms, want, "{ts}"),
                other => panic!("{ts}: {other:?}"),
            }
        }
        for bad in [
            "\"yesterday\"",
            "12",
            "\"2026-11-26 20:00:00\"",
            "null",
            "{}",
        ] {
            let payload = format!(r#"{{"pm10":1,"ts":{bad}}}"#);
            assert!(map(&s, "x", payload.as_bytes(), 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn items_and_pointer_devices() {
        let s = sub(
            dust(Some("/readings"), Some("/t")),
            DeviceFrom::Pointer("/id".into()),
        );
        let m = map(
            &s,
            "x",
            br#"{"readings":[{"id":"a","t":1795000000,"pm10":1},{"id":7,"t":1795000001,"pm10":2,"noise":"loud"},{"t":1795000002,"pm10":3}]}"#,
            0,
        )
        .unwrap();
        let Mapped::Readings(items) = m else { panic!() };
        assert_eq!(items.len(), 2, "the element without an id is skipped");
        assert_eq!(items[1].device, "7");
        assert_eq!(items[1].invalid, vec!["noise".to_string()]);
    }

    #[test]
    fn rejections_say_why() {
        let s = sub(dust(None, None), DeviceFrom::TopicLevel(1));
        let e = |p: &[u8]| map(&s, "sensors/d1/telemetry", p, 5).unwrap_err();
        assert!(e(b"not json").starts_with("not JSON"));
        assert_eq!(
            e(br#"{"other":1}"#),
            "none of the profile's fields is in the payload"
        );
        assert_eq!(
            e(br#"{"pm10":"high","noise":[1]}"#),
            "no field holds a number (pm10, noise)"
        );
        assert!(
            map(&s, "sensors//telemetry", br#"{"pm10":1}"#, 5)
                .unwrap_err()
                .contains("no level 1")
        );
        let s2 = sub(dust(Some("/r"), None), DeviceFrom::Fixed("d".into()));
        assert_eq!(
            map(&s2, "x", br#"{"r":5}"#, 5).unwrap_err(),
            "no array at /r"
        );
    }

    #[test]
    fn vehicles() {
        let profile = JsonProfile {
            kind: JsonKind::Vehicle(vec![
                ("plate".into(), "/plate".into()),
                ("direction".into(), "/dir".into()),
                ("covered".into(), "/covered".into()),
                ("muck_truck".into(), "/muck".into()),
                ("gate".into(), "/gate".into()),
            ]),
            ..dust(None, Some("/time"))
        };
        let s = sub(profile, DeviceFrom::Fixed("cam-01".into()));
        let m = map(
            &s,
            "x",
            r#"{"plate":"川A12345","dir":"出","covered":0,"muck":"true","gate":"south","time":"2026-11-26T08:00:00+08:00"}"#.as_bytes(),
            0,
        )
        .unwrap();
        let Mapped::Vehicles(v) = m else { panic!() };
        assert_eq!(v[0].plate, "川A12345");
        assert_eq!(v[0].direction.as_deref(), Some("out"));
        assert_eq!((v[0].covered, v[0].muck_truck), (Some(false), Some(true)));
        assert!(map(&s, "x", br#"{"dir":"out","time":1795000000}"#, 0).is_err());
        assert!(
            map(
                &s,
                "x",
                br#"{"plate":"A","dir":"sideways","time":1795000000}"#,
                0
            )
            .is_err()
        );
    }
}
