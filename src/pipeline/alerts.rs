//! Alert transitions as people and machines receive them: a message for an inspector reading a
//! phone (site, device, what, value, limit, window, since when, the standard; zh-CN or en), a
//! point in the InfluxDB `alert` measurement (Grafana annotations), and the contract's JSON.

use super::rules::{AlertEvent, AlertKind, AlertState};
pub use crate::config::Locale;
use crate::config::metrics::Catalog;
use crate::config::rules::Aggregate;
use crate::model::{FieldKey, FieldValue, Point, SeriesKey};

/// What every alert of a site shares.
pub struct AlertContext {
    pub site_id: String,
    pub site_name: String,
    pub site_tags: Vec<(String, String)>,
    pub tz: jiff::tz::TimeZone,
    pub locale: Locale,
}

fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let r = (v * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// The words of every message, per language (data/alert-texts.toml).
#[derive(Debug)]
pub struct Texts {
    /// In the order of [`Locale::ALL`]: key → template.
    by_locale: [std::collections::HashMap<String, String>; 2],
}

const TEXTS_TOML: &str = include_str!("../../data/alert-texts.toml");

/// Every key a language's table must have.
pub const TEXT_KEYS: &[&str] = &[
    "flagged_open",
    "flagged_closed",
    "flag_f",
    "flag_m",
    "flag_s",
    "flag_d",
    "flag_c",
    "flag_t",
    "flag_b",
    "flag_other",
    "drift_open",
    "drift_closed",
    "head",
    "end",
    "standard",
    "window_days",
    "window_hours",
    "window_minutes",
    "lasted_days",
    "lasted_hours",
    "lasted_minutes",
    "how_reading",
    "how_window",
    "aggregate_mean",
    "aggregate_leq",
    "aggregate_max",
    "net",
    "title",
    "threshold_open",
    "threshold_reminder",
    "threshold_closed",
    "daily_open",
    "daily_closed",
    "offline_open",
    "offline_closed",
    "stuck_open",
    "stuck_closed",
    "range_open",
    "range_closed",
    "gate",
    "snapshot",
    "violation_at",
    "violation_wash",
    "violation_sealed_transport",
    "violation_wet_work",
    "violation_cover",
    "violation_enclosure",
    "violation_other",
];

impl Texts {
    /// The built-in texts. The file is part of the binary and checked by a unit test, so a
    /// failure here is a build defect, not bad input.
    pub fn builtin() -> &'static Texts {
        static TEXTS: std::sync::OnceLock<Texts> = std::sync::OnceLock::new();
        TEXTS.get_or_init(|| {
            Texts::parse(TEXTS_TOML).expect("data/alert-texts.toml is valid (checked by tests)")
        })
    }

    /// Every language table with every key, and nothing else.
    pub fn parse(text: &str) -> Result<Texts, String> {
        let doc: toml::Table = text.parse().map_err(|e| format!("{e}"))?;
        let mut by_locale: [std::collections::HashMap<String, String>; 2] = Default::default();
        for (slot, locale) in by_locale.iter_mut().zip(Locale::ALL) {
            let name = locale.name();
            let table = doc
                .get(name)
                .and_then(|t| t.as_table())
                .ok_or_else(|| format!("no [\"{name}\"] table"))?;
            for (k, v) in table {
                if !TEXT_KEYS.contains(&k.as_str()) {
                    return Err(format!("{name}.{k}: not a known key"));
                }
                let v = v
                    .as_str()
                    .ok_or_else(|| format!("{name}.{k}: not a string"))?;
                slot.insert(k.clone(), v.to_string());
            }
            if let Some(missing) = TEXT_KEYS.iter().find(|k| !slot.contains_key(**k)) {
                return Err(format!("{name}.{missing}: missing"));
            }
        }
        Ok(Texts { by_locale })
    }

    fn get(&self, locale: Locale, key: &str) -> &str {
        self.by_locale[locale as usize]
            .get(key)
            .map_or("", String::as_str)
    }

    /// The template `key` in `locale`, its `{name}`s filled from `vars` (unknown ones left
    /// as they are).
    fn fill(&self, locale: Locale, key: &str, vars: &[(&str, &str)]) -> String {
        fill(self.get(locale, key), vars)
    }
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let name = &after[..close];
                match vars.iter().find(|(k, _)| *k == name) {
                    Some((_, v)) => out.push_str(v),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// "15分钟" / "15-min" (`kind` "window") or "35分钟" / "35 min" (`kind` "lasted").
fn duration_text(texts: &Texts, locale: Locale, kind: &str, ms: i64) -> String {
    let m = ms / 60_000;
    let (n, unit) = if m % 1440 == 0 && m > 0 {
        (m / 1440, "days")
    } else if m % 60 == 0 && m > 0 {
        (m / 60, "hours")
    } else {
        (m, "minutes")
    };
    texts.fill(locale, &format!("{kind}_{unit}"), &[("n", &n.to_string())])
}

impl AlertContext {
    fn local(&self, ms: i64) -> jiff::civil::DateTime {
        jiff::Timestamp::from_millisecond(ms)
            .map(|t| self.tz.to_datetime(t))
            .unwrap_or_default()
    }

    /// "14:05", or "11-25 14:05" when not today (relative to `at`).
    fn when(&self, ms: i64, at: i64) -> String {
        let (a, b) = (self.local(ms), self.local(at));
        if a.date() == b.date() {
            format!("{:02}:{:02}", a.hour(), a.minute())
        } else {
            format!(
                "{:02}-{:02} {:02}:{:02}",
                a.month(),
                a.day(),
                a.hour(),
                a.minute()
            )
        }
    }

    /// RFC 3339 with the site's offset.
    pub fn rfc3339(&self, ms: i64) -> String {
        let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else {
            return String::new();
        };
        let offset = self.tz.to_offset(ts);
        ts.display_with_offset(offset).to_string()
    }

    /// The message an inspector reads, in the site's alert language.
    pub fn message(&self, e: &AlertEvent) -> String {
        self.message_in(e, self.locale)
    }

    /// The message in `locale` (the status page and the API render in the reader's).
    pub fn message_in(&self, e: &AlertEvent, locale: Locale) -> String {
        let texts = Texts::builtin();
        let t = |key: &str, vars: &[(&str, &str)]| texts.fill(locale, key, vars);
        let info = Catalog::builtin().get(&e.metric);
        let unit = info.map_or(String::new(), |i| {
            if i.unit.is_empty() {
                String::new()
            } else {
                format!(" {}", i.unit)
            }
        });
        let label = info.map_or(e.metric.as_str(), |i| match locale {
            Locale::ZhCn => i.zh.as_str(),
            Locale::En => i.en.as_str(),
        });
        let rule = e.rule.as_deref();
        let site = if self.site_name.is_empty() {
            &self.site_id
        } else {
            &self.site_name
        };
        let (value, threshold) = (fmt_value(e.value), fmt_value(e.threshold));
        let (since, at) = (self.when(e.since_ms, e.at_ms), self.when(e.at_ms, e.at_ms));
        let vars: Vec<(&str, &str)> = vec![
            ("site", site),
            ("device", &e.device),
            ("label", label),
            ("unit", &unit),
            ("value", &value),
            ("threshold", &threshold),
            ("since", &since),
            ("at", &at),
        ];
        let body = match (e.kind, e.state) {
            (AlertKind::Violation, _) => self.violation_text(e, locale, &at),
            (AlertKind::DailyAllowance, AlertState::Closed) => t("daily_closed", &vars),
            (AlertKind::DailyAllowance, _) => t("daily_open", &vars),
            (AlertKind::Offline, AlertState::Closed) => t("offline_closed", &vars),
            (AlertKind::Offline, _) => t("offline_open", &vars),
            (AlertKind::Stuck, AlertState::Closed) => t("stuck_closed", &vars),
            (AlertKind::Stuck, _) => t("stuck_open", &vars),
            (AlertKind::OutOfRange, AlertState::Closed) => t("range_closed", &vars),
            (AlertKind::OutOfRange, _) => t("range_open", &vars),
            (AlertKind::Flagged, state) => {
                let flag = e
                    .evidence
                    .iter()
                    .find(|(k, _)| k == "flag")
                    .map_or("", |(_, v)| v.as_str());
                // The data flags of HJ 212-2017 Table 8 [P] (domain.md §3.7).
                let key = match flag {
                    "F" | "M" | "S" | "D" | "C" | "T" | "B" => {
                        format!("flag_{}", flag.to_ascii_lowercase())
                    }
                    _ => "flag_other".to_string(),
                };
                let meaning = t(&key, &[]);
                let minutes = format!("{}", (e.threshold / 60.0).round());
                let mut vars = vars.clone();
                vars.push(("flag", flag));
                vars.push(("meaning", &meaning));
                vars.push(("minutes", &minutes));
                match state {
                    AlertState::Closed => t("flagged_closed", &vars),
                    _ => t("flagged_open", &vars),
                }
            }
            (AlertKind::ClockDrift, AlertState::Closed) => t("drift_closed", &vars),
            (AlertKind::ClockDrift, _) => t("drift_open", &vars),
            (AlertKind::Threshold, state) => {
                let title = rule
                    .and_then(|r| match locale {
                        Locale::ZhCn => r.title_zh.clone(),
                        Locale::En => r.title_en.clone().or_else(|| r.title_zh.clone()),
                    })
                    .unwrap_or_else(|| t("title", &vars));
                let how = match rule.and_then(|r| r.window.map(|w| (w, r.aggregate))) {
                    None | Some((_, Aggregate::Each)) => t("how_reading", &[]),
                    Some((w, agg)) => t(
                        "how_window",
                        &[
                            (
                                "window",
                                &duration_text(texts, locale, "window", w.as_millis() as i64),
                            ),
                            (
                                "aggregate",
                                &t(
                                    match agg {
                                        Aggregate::Leq => "aggregate_leq",
                                        Aggregate::Max => "aggregate_max",
                                        _ => "aggregate_mean",
                                    },
                                    &[],
                                ),
                            ),
                        ],
                    ),
                };
                let net = if rule.and_then(|r| r.background.as_ref()).is_some() {
                    t("net", &[])
                } else {
                    String::new()
                };
                let lasted = duration_text(texts, locale, "lasted", (e.at_ms - e.since_ms).max(0));
                let mut v = vars.clone();
                v.extend([
                    ("title", title.as_str()),
                    ("how", how.as_str()),
                    ("net", net.as_str()),
                    ("lasted", lasted.as_str()),
                ]);
                let key = match state {
                    AlertState::Closed => "threshold_closed",
                    AlertState::Reminder => "threshold_reminder",
                    _ => "threshold_open",
                };
                t(key, &v)
            }
        };
        let mut m = t("head", &vars);
        m.push_str(&body);
        if let Some(s) = rule.and_then(|r| r.provenance.standard.as_deref()) {
            m.push_str(&t("standard", &[("standard", s)]));
        }
        m.push_str(&t("end", &[]));
        m
    }

    /// A six-100% violation: what, with its evidence (plate, gate, snapshot), and when.
    fn violation_text(&self, e: &AlertEvent, locale: Locale, at: &str) -> String {
        let texts = Texts::builtin();
        let ev = |k: &str| {
            e.evidence
                .iter()
                .find(|(n, _)| n == k)
                .map_or("", |(_, v)| v.as_str())
        };
        let at_gate = if ev("gate").is_empty() {
            String::new()
        } else {
            texts.fill(locale, "gate", &[("gate", ev("gate"))])
        };
        let vars = [
            ("plate", ev("plate")),
            ("wash_seconds", ev("wash_seconds")),
            ("wash_min", ev("wash_min")),
            ("minutes", ev("minutes")),
            ("detection", ev("detection")),
            ("item", e.metric.as_str()),
            ("at_gate", at_gate.as_str()),
        ];
        let key = match e.metric.as_str() {
            "wash" => "violation_wash",
            "sealed_transport" => "violation_sealed_transport",
            "wet_work" => "violation_wet_work",
            "cover" => "violation_cover",
            "enclosure" => "violation_enclosure",
            _ => "violation_other",
        };
        let mut m = texts.fill(locale, key, &vars);
        if !ev("snapshot").is_empty() {
            m.push_str(&texts.fill(locale, "snapshot", &[("snapshot", ev("snapshot"))]));
        }
        m.push_str(&texts.fill(locale, "violation_at", &[("at", at)]));
        m
    }

    /// The `alert` point: tags rule, severity, state (open / closed; reminders are written as
    /// open); fields value, threshold, message, alert_id.
    pub fn point(&self, e: &AlertEvent, message: &str) -> Point {
        let state = match e.state {
            AlertState::Closed => "closed",
            AlertState::Event => "event",
            _ => "open",
        };
        let mut tags = crate::model::device_tags(&self.site_id, &e.device, &self.site_tags);
        tags.extend([
            ("rule", e.rule_id.as_str()),
            ("severity", e.severity.name()),
            ("state", state),
            ("metric", e.metric.as_str()),
        ]);
        let f = |k: &str, v: FieldValue| (FieldKey::new(k), v);
        let mut fields = vec![
            f("message", FieldValue::Str(message.to_string())),
            f("alert_id", FieldValue::Str(e.alert_id.clone())),
        ];
        if e.value.is_finite() {
            fields.push(f("value", FieldValue::Float(e.value)));
        }
        if e.threshold.is_finite() {
            fields.push(f("threshold", FieldValue::Float(e.threshold)));
        }
        // A violation's evidence (plate, snapshot URL, gate...), always as text.
        for (k, v) in &e.evidence {
            fields.push(f(k, FieldValue::Str(v.clone())));
        }
        Point {
            series: SeriesKey::new("alert", &tags),
            fields,
            time_ms: e.at_ms,
        }
    }

    /// The contract's alert JSON (MQTT and the generic webhook).
    pub fn json(&self, e: &AlertEvent, message: &str) -> String {
        self.json_value(e, message).to_string()
    }

    /// The contract's alert JSON as a value (the HTTP API lists open alerts with it).
    pub fn json_value(&self, e: &AlertEvent, message: &str) -> serde_json::Value {
        let rule = e.rule.as_deref();
        let window = rule
            .and_then(|r| r.window)
            .map(|w| format!("{}s", w.as_secs()));
        let num = |v: f64| {
            if v.is_finite() {
                serde_json::json!(v)
            } else {
                serde_json::Value::Null
            }
        };
        let mut j = serde_json::json!({
            "alert_id": e.alert_id,
            "site": self.site_id,
            "device": e.device,
            "rule": e.rule_id,
            "severity": e.severity.name(),
            "state": match e.state { AlertState::Closed => "closed", AlertState::Event => "event", _ => "open" },
            "reminder": e.state == AlertState::Reminder,
            "metric": e.metric,
            "value": num(e.value),
            "threshold": num(e.threshold),
            "window": window,
            "since": self.rfc3339(e.since_ms),
            "at": self.rfc3339(e.at_ms),
            "message": message,
            "standard": rule.and_then(|r| r.provenance.standard.clone()),
        });
        if e.kind == AlertKind::Violation {
            j["kind"] = serde_json::json!("violation");
            for (k, v) in &e.evidence {
                j[k.as_str()] = serde_json::json!(v);
            }
        }
        j
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rules::{Condition, Provenance, RuleConfig, Severity};
    use std::sync::Arc;
    use std::time::Duration;

    fn ctx(locale: Locale) -> AlertContext {
        AlertContext {
            site_id: "cd-jj-0017".into(),
            site_name: "锦江区 B 地块".into(),
            site_tags: vec![],
            tz: jiff::tz::TimeZone::get("Asia/Shanghai").unwrap(),
            locale,
        }
    }

    fn ev(state: AlertState) -> AlertEvent {
        let rule = RuleConfig {
            id: "gb3095-pm10-24h".into(),
            metric: "pm10".into(),
            devices: vec![],
            window: Some(Duration::from_secs(15 * 60)),
            aggregate: Aggregate::Mean,
            condition: Condition::Above(150.0),
            clear: None,
            hold: Duration::ZERO,
            when: None,
            min_coverage: 0.75,
            background: None,
            max_per_day: None,
            severity: Severity::Warning,
            repeat: None,
            effective_from: None,
            effective_until: None,
            title_zh: None,
            title_en: None,
            provenance: Provenance {
                pack: "p".into(),
                standard: Some("GB 3095-2012".into()),
                source: None,
                mark: None,
            },
            enabled: true,
            actuate: None,
            patch: false,
        };
        let since = "2026-11-26T06:05:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_millisecond();
        AlertEvent {
            alert_id: "a1".into(),
            kind: AlertKind::Threshold,
            rule_id: rule.id.clone(),
            rule: Some(Arc::new(rule)),
            device: "dust-01".into(),
            metric: "pm10".into(),
            severity: Severity::Warning,
            state,
            value: 182.04,
            threshold: 150.0,
            since_ms: since,
            at_ms: since + 35 * 60_000,
            evidence: Vec::new(),
        }
    }

    #[test]
    fn messages_for_a_phone() {
        assert_eq!(
            ctx(Locale::ZhCn).message(&ev(AlertState::Open)),
            "【锦江区 B 地块】dust-01 PM10超标：15分钟均值 182 µg/m³，限值 150 µg/m³，自 14:05 起（GB 3095-2012）。"
        );
        assert_eq!(
            ctx(Locale::ZhCn).message(&ev(AlertState::Closed)),
            "【锦江区 B 地块】dust-01 PM10超标已恢复：15分钟均值 182 µg/m³，限值 150 µg/m³，持续 35分钟（14:05–14:40）（GB 3095-2012）。"
        );
        assert_eq!(
            ctx(Locale::En).message(&ev(AlertState::Open)),
            "[锦江区 B 地块] dust-01: PM10 over the limit: 15-min mean 182 µg/m³, limit 150 µg/m³, since 14:05 (GB 3095-2012)."
        );
    }

    #[test]
    fn the_texts_have_every_key_in_every_language() {
        Texts::parse(TEXTS_TOML).unwrap();
        assert!(
            Texts::parse("[\"zh-CN\"]\nhead = \"x\"\n[en]\n")
                .unwrap_err()
                .contains("missing")
        );
        assert_eq!(fill("{a}-{b}-{c", &[("a", "1"), ("b", "2")]), "1-2-{c");
        assert_eq!(fill("{x}", &[]), "{x}");
    }

    #[test]
    fn every_kind_of_message_in_both_languages() {
        let c = ctx(Locale::ZhCn);
        let mut e = ev(AlertState::Reminder);
        assert_eq!(
            c.message_in(&e, Locale::ZhCn),
            "【锦江区 B 地块】dust-01 仍PM10超标：15分钟均值 182 µg/m³，限值 150 µg/m³，自 14:05 起（GB 3095-2012）。"
        );
        assert_eq!(
            c.message_in(&e, Locale::En),
            "[锦江区 B 地块] dust-01: still: PM10 over the limit: 15-min mean 182 µg/m³, limit 150 µg/m³, since 14:05 (GB 3095-2012)."
        );
        e.state = AlertState::Closed;
        assert_eq!(
            c.message_in(&e, Locale::En),
            "[锦江区 B 地块] dust-01: PM10 over the limit: back to normal, 15-min mean 182 µg/m³, limit 150 µg/m³; lasted 35 min (14:05–14:40) (GB 3095-2012)."
        );
        e.kind = AlertKind::Offline;
        e.rule = None;
        e.state = AlertState::Open;
        assert_eq!(
            c.message_in(&e, Locale::ZhCn),
            "【锦江区 B 地块】dust-01 离线：自 14:05 起无数据。"
        );
        e.kind = AlertKind::Violation;
        e.metric = "sealed_transport".into();
        e.evidence = vec![
            ("plate".into(), "川A12345".into()),
            ("gate".into(), "南".into()),
        ];
        assert_eq!(
            c.message_in(&e, Locale::ZhCn),
            "【锦江区 B 地块】dust-01 六个百分百·密闭运输：渣土车 川A12345 未覆盖出场，南门，时间 14:40。"
        );
        assert_eq!(
            c.message_in(&e, Locale::En),
            "[锦江区 B 地块] dust-01: six-100% sealed transport: muck truck 川A12345 left uncovered at the 南 gate; at 14:40."
        );
    }

    #[test]
    fn json_carries_the_contract_fields() {
        let c = ctx(Locale::ZhCn);
        let e = ev(AlertState::Open);
        let v: serde_json::Value = serde_json::from_str(&c.json(&e, "m")).unwrap();
        for k in [
            "alert_id",
            "site",
            "device",
            "rule",
            "severity",
            "state",
            "metric",
            "value",
            "threshold",
            "window",
            "since",
            "at",
            "message",
            "standard",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["since"], "2026-11-26T14:05:00+08:00");
        assert_eq!(v["state"], "open");
        assert_eq!(v["window"], "900s");
    }
}
