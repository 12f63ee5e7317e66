//! `/api/board`: the site's main values now, one per metric, each judged against the limit in
//! force (for the status page's tiles and the gate board), the wind in words, the AQI, the
//! site's name and construction permit number.
//!
//! A site with several monitors shows, per metric, the device that is worst off: up before
//! down, then over the limit before near it before under it, then the highest share of its
//! limit, then by id. A crew or a passer-by reading one number should see the one that matters.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use super::{Api, rfc3339};
use crate::config::metrics::Catalog;
use crate::config::rules::Condition;
use crate::health::{DeviceState, LatestValues};
use crate::model::{SeriesKey, now_ms};
use crate::pipeline::aqi::Tables;
use crate::pipeline::rules::Limit;

/// The metrics of the tiles and the board.
pub(super) const MAIN: [&str; 7] = [
    "pm25",
    "pm10",
    "tsp",
    "noise",
    "temperature",
    "humidity",
    "wind_speed",
];

/// A value against the limit in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Level {
    /// No limit in force, or no data.
    None,
    /// Under 80 % of the limit.
    Ok,
    /// 80–100 % of an upper limit, or one reading beyond a level that is judged on a mean.
    Near,
    /// Beyond the limit, or its alert is open.
    Over,
}

impl Level {
    pub(super) fn name(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Ok => "ok",
            Level::Near => "near",
            Level::Over => "over",
        }
    }
}

/// Where `v` stands against `limit`, and its share of an upper limit. As on the page's table:
/// red with an open alert, and a single reading beyond a level judged on a window's mean or
/// Leq is near, not over (one reading over a 24-h limit is not an exceedance).
pub(super) fn level(limit: Option<&Limit>, v: f64) -> (Level, Option<f64>) {
    let Some(l) = limit else {
        return (Level::None, None);
    };
    let ratio = match l.condition {
        Condition::Above(a) if a > 0.0 => Some(v / a),
        _ => None,
    };
    let level = if l.alert_open {
        Level::Over
    } else if l.breached_by(v) {
        if l.window.is_some() {
            Level::Near
        } else {
            Level::Over
        }
    } else if ratio.is_some_and(|r| r >= 0.8) {
        Level::Near
    } else {
        Level::Ok
    };
    (level, ratio)
}

/// 风力等级 (GB/T 28591-2012, the Beaufort scale) of a wind speed in m/s: the lower bounds of
/// levels 1 to 17.
pub(super) fn wind_level(speed: f64) -> u8 {
    const FROM: [f64; 17] = [
        0.3, 1.6, 3.4, 5.5, 8.0, 10.8, 13.9, 17.2, 20.8, 24.5, 28.5, 32.7, 37.0, 41.5, 46.2, 51.0,
        56.1,
    ];
    // Readings come to 0.1 m/s; a float a hair under a bound is that bound.
    let v = (speed * 10.0).round() / 10.0;
    FROM.iter().take_while(|&&b| v >= b).count() as u8
}

/// The eight-point name of the direction the wind blows from (meteorological convention:
/// 0° = from the north, clockwise), in Chinese and English.
pub(super) fn wind_from(deg: f64) -> (&'static str, &'static str) {
    const NAMES: [(&str, &str); 8] = [
        ("北风", "N"),
        ("东北风", "NE"),
        ("东风", "E"),
        ("东南风", "SE"),
        ("南风", "S"),
        ("西南风", "SW"),
        ("西风", "W"),
        ("西北风", "NW"),
    ];
    let i = (deg.rem_euclid(360.0) / 45.0).round() as usize % 8;
    NAMES[i]
}

/// The plain value of tag `name` in a series key (line protocol, escaped).
pub(super) fn tag(series: &SeriesKey, name: &str) -> Option<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = series.as_str().chars();
    while let Some(c) = chars.next() {
        match c {
            // Kept escaped until the pair is split at its '='.
            '\\' => {
                cur.push('\\');
                cur.extend(chars.next());
            }
            ',' => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    parts.iter().skip(1).find_map(|p| {
        let mut at = None;
        let b = p.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 1,
                b'=' => {
                    at = Some(i);
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let at = at?;
        (unescape(&p[..at]) == name).then(|| unescape(&p[at + 1..]))
    })
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&n) = chars.peek()
            && matches!(n, ',' | '=' | ' ' | '\\')
        {
            out.push(n);
            chars.next();
        } else {
            out.push(c);
        }
    }
    out
}

/// The latest values of this site's devices (a hub's stations of other sites are not its).
pub(super) fn site_latest(api: &Api) -> Vec<LatestValues> {
    api.health()
        .latest_sorted()
        .into_iter()
        .filter(|l| {
            l.device
                .series
                .first()
                .is_none_or(|s| tag(s, "site").is_none_or(|id| id == api.site_id))
        })
        .collect()
}

/// One metric's value as the tiles and the board show it.
pub(super) struct Pick {
    pub device: Arc<str>,
    pub metric: &'static str,
    pub time_ms: i64,
    pub value: f64,
    pub limit: Option<Limit>,
    pub level: Level,
    pub ratio: Option<f64>,
    pub up: bool,
}

fn value_of(l: &LatestValues, metric: &str) -> Option<(i64, f64)> {
    let i = l.device.slots.iter().position(|s| s.metric == metric)?;
    l.values().nth(i).flatten()
}

/// The ids of the devices up now.
pub(super) fn up_devices(api: &Api, now: i64) -> Vec<String> {
    api.health()
        .device_statuses(now)
        .into_iter()
        .filter(|d| d.state == DeviceState::Up)
        .map(|d| d.id)
        .collect()
}

/// For each of `metrics`, the device worst off (see the module's documentation).
pub(super) fn picks(
    api: &Api,
    latest: &[LatestValues],
    up: &[String],
    metrics: &[&'static str],
    now: i64,
) -> Vec<Pick> {
    let mut out = Vec::new();
    for &metric in metrics {
        let best = latest
            .iter()
            .filter_map(|l| {
                let (t, v) = value_of(l, metric)?;
                let limit = api.site.limit_in_force(&l.device.id, metric, now);
                let (level, ratio) = level(limit.as_ref(), v);
                Some(Pick {
                    device: l.device.id.clone(),
                    metric,
                    time_ms: t,
                    value: v,
                    limit,
                    level,
                    ratio,
                    up: up.iter().any(|u| **u == *l.device.id),
                })
            })
            // `latest` is by id, and max_by keeps the last of equals: so compare ids reversed.
            .max_by(|a, b| {
                (a.up, a.level)
                    .cmp(&(b.up, b.level))
                    .then(a.ratio.unwrap_or(0.0).total_cmp(&b.ratio.unwrap_or(0.0)))
                    .then(b.device.cmp(&a.device))
            });
        out.extend(best);
    }
    out
}

fn pick_json(api: &Api, p: &Pick) -> Value {
    let info = Catalog::builtin().get(p.metric);
    json!({
        "device": &*p.device,
        "value": p.value,
        "unit": info.map_or("", |i| i.unit.as_str()),
        "label": info.map(|i| json!({"zh": i.zh, "en": i.en})),
        "time": rfc3339(p.time_ms, &api.tz),
        "limit": p.limit.as_ref().map(super::api::limit_json),
        "level": p.level.name(),
        "ratio": p.ratio.map(|r| (r * 1000.0).round() / 1000.0),
        "alert_open": p.limit.as_ref().is_some_and(|l| l.alert_open),
        "up": p.up,
    })
}

/// The AQI of one device as the pipeline last wrote it to the `aqi` measurement (HJ 633 from
/// the rolling hours of PM2.5 and PM10, the table in force or the one `[site].standards` pins):
/// the board shows the very value InfluxDB holds.
fn aqi_of(api: &Api, device: &str, now: &crate::pipeline::aqi::AqiNow) -> (u32, Value) {
    let tables = Tables::builtin();
    let (zh, en) = tables.category(now.aqi);
    let primary = (now.aqi > 50).then(|| {
        if now.iaqi_pm25.unwrap_or(0) >= now.iaqi_pm10.unwrap_or(0) {
            "PM2.5"
        } else {
            "PM10"
        }
    });
    let round = |v: f64| (v * 10.0).round() / 10.0;
    (
        now.aqi,
        json!({
            "device": device,
            "value": now.aqi,
            "category": {"zh": zh, "en": en},
            "primary": primary,
            "iaqi_pm25": now.iaqi_pm25,
            "iaqi_pm10": now.iaqi_pm10,
            "pm25_1h": now.pm25_1h.map(round),
            "pm10_1h": now.pm10_1h.map(round),
            "table": now.table,
            "time": rfc3339(now.time_ms, &api.tz),
        }),
    )
}

pub(super) async fn board(State(api): State<Arc<Api>>) -> Response {
    let now = now_ms();
    let latest = site_latest(&api);
    let up = up_devices(&api, now);
    let picks = picks(&api, &latest, &up, &MAIN, now);
    let mut values = serde_json::Map::new();
    for p in &picks {
        values.insert(p.metric.to_string(), pick_json(&api, p));
    }
    let wind = picks.iter().find(|p| p.metric == "wind_speed").map(|p| {
        let dir = latest
            .iter()
            .find(|l| l.device.id == p.device)
            .and_then(|l| value_of(l, "wind_direction"))
            .map(|(_, d)| d);
        json!({
            "device": &*p.device,
            "speed": p.value,
            "level": wind_level(p.value),
            "direction_deg": dir,
            "from": dir.map(|d| {
                let (zh, en) = wind_from(d);
                json!({"zh": zh, "en": en})
            }),
        })
    });
    // The worst AQI of the devices that are up (a monitor that went silent has none).
    let aqi = api
        .site
        .aqi_now()
        .iter()
        .filter(|(d, _)| up.iter().any(|u| **u == **d))
        .map(|(d, now)| aqi_of(&api, d, now))
        .max_by_key(|(aqi, _)| *aqi)
        .map(|(_, v)| v);
    Json(json!({
        "site": api.site_id,
        "name": api.site_name,
        "permit": api.site_permit,
        "time": rfc3339(now, &api.tz),
        "timezone": api.tz.iana_name(),
        "values": values,
        "wind": wind,
        "aqi": aqi,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rules::Aggregate;

    fn limit(c: Condition, window: bool, open: bool) -> Limit {
        Limit {
            rule: "r".into(),
            condition: c,
            window: window.then(|| std::time::Duration::from_secs(900)),
            aggregate: if window {
                Aggregate::Mean
            } else {
                Aggregate::Each
            },
            alert_open: open,
        }
    }

    #[test]
    fn levels_against_the_limit_in_force() {
        let above = limit(Condition::Above(150.0), false, false);
        assert_eq!(level(None, 80.0), (Level::None, None));
        assert_eq!(level(Some(&above), 80.0).0, Level::Ok);
        assert_eq!(level(Some(&above), 119.0).0, Level::Ok);
        assert_eq!(level(Some(&above), 120.0), (Level::Near, Some(0.8)));
        assert_eq!(level(Some(&above), 150.0).0, Level::Near, "at the limit");
        assert_eq!(level(Some(&above), 151.0).0, Level::Over);
        // A level judged on a mean: one reading over is near; the alert open is over.
        let mean = limit(Condition::Above(150.0), true, false);
        assert_eq!(level(Some(&mean), 300.0).0, Level::Near);
        let open = limit(Condition::Above(150.0), true, true);
        assert_eq!(level(Some(&open), 100.0).0, Level::Over);
        let band = limit(Condition::Outside(6.0, 9.0), false, false);
        assert_eq!(level(Some(&band), 7.0), (Level::Ok, None));
        assert_eq!(level(Some(&band), 5.5).0, Level::Over);
        assert!(Level::Over > Level::Near && Level::Near > Level::Ok && Level::Ok > Level::None);
    }

    #[test]
    fn wind_in_words() {
        assert_eq!(wind_level(0.0), 0);
        assert_eq!(wind_level(0.2), 0);
        assert_eq!(wind_level(0.3), 1);
        assert_eq!(wind_level(2.3), 2);
        assert_eq!(wind_level(3.3), 2);
        assert_eq!(wind_level(3.4), 3);
        assert_eq!(
            wind_level(3.4 - 1e-12),
            3,
            "a hair under, from a scale factor"
        );
        assert_eq!(wind_level(10.8), 6);
        assert_eq!(wind_level(70.0), 17);
        assert_eq!(wind_from(0.0), ("北风", "N"));
        assert_eq!(wind_from(22.0), ("北风", "N"));
        assert_eq!(wind_from(23.0), ("东北风", "NE"));
        assert_eq!(wind_from(270.0), ("西风", "W"));
        assert_eq!(wind_from(359.0), ("北风", "N"));
        assert_eq!(wind_from(-45.0), ("西北风", "NW"));
    }

    #[test]
    fn tags_read_back_from_a_series_key() {
        let s = SeriesKey::new(
            "air",
            &[
                ("site", "cd-jj-0017"),
                ("device", "dust-01"),
                ("permit", "成建施 2026,第 17=号"),
                ("permit", "a device's own"),
                ("z", "1"),
            ],
        );
        assert_eq!(tag(&s, "permit").as_deref(), Some("成建施 2026,第 17=号"));
        assert_eq!(tag(&s, "site").as_deref(), Some("cd-jj-0017"));
        assert_eq!(tag(&s, "z").as_deref(), Some("1"));
        assert_eq!(tag(&s, "air"), None);
        assert_eq!(tag(&s, "nope"), None);
    }
}
