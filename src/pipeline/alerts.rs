//! Alert transitions as people and machines receive them: a message for an inspector reading a
//! phone (site, device, what, value, limit, window, since when, the standard; zh-CN or en), a
//! point in the InfluxDB `alert` measurement (Grafana annotations), and the contract's JSON.

use std::fmt::Write as _;

use super::rules::{AlertEvent, AlertKind, AlertState};
use crate::config::metrics::Catalog;
use crate::config::rules::Aggregate;
use crate::model::{FieldKey, FieldValue, Point, SeriesKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Locale {
    #[default]
    ZhCn,
    En,
}

impl Locale {
    pub fn parse(s: &str) -> Option<Locale> {
        match s {
            "zh-CN" | "zh" => Some(Locale::ZhCn),
            "en" | "en-US" | "en-GB" => Some(Locale::En),
            _ => None,
        }
    }
}

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

fn duration_text(ms: i64, locale: Locale) -> String {
    let m = ms / 60_000;
    match locale {
        Locale::ZhCn => {
            if m % 1440 == 0 && m > 0 {
                format!("{}天", m / 1440)
            } else if m % 60 == 0 && m > 0 {
                format!("{}小时", m / 60)
            } else {
                format!("{m}分钟")
            }
        }
        Locale::En => {
            if m % 1440 == 0 && m > 0 {
                format!("{}-day", m / 1440)
            } else if m % 60 == 0 && m > 0 {
                format!("{}-hour", m / 60)
            } else {
                format!("{m}-min")
            }
        }
    }
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
        let info = Catalog::builtin().get(&e.metric);
        let unit = info.map_or("", |i| i.unit.as_str());
        let unit_sp = if unit.is_empty() {
            String::new()
        } else {
            format!(" {unit}")
        };
        let label = info.map_or(e.metric.as_str(), |i| match locale {
            Locale::ZhCn => i.zh.as_str(),
            Locale::En => i.en.as_str(),
        });
        let rule = e.rule.as_deref();
        let standard = rule.and_then(|r| r.provenance.standard.clone());
        let title = rule.and_then(|r| match locale {
            Locale::ZhCn => r.title_zh.clone(),
            Locale::En => r.title_en.clone().or_else(|| r.title_zh.clone()),
        });
        let window = rule.and_then(|r| r.window.map(|w| (w.as_millis() as i64, r.aggregate)));
        let how = match (window, locale) {
            (None, Locale::ZhCn) | (Some((_, Aggregate::Each)), Locale::ZhCn) => {
                "实测值".to_string()
            }
            (None, Locale::En) | (Some((_, Aggregate::Each)), Locale::En) => "reading".to_string(),
            (Some((w, agg)), Locale::ZhCn) => format!(
                "{}{}",
                duration_text(w, Locale::ZhCn),
                match agg {
                    Aggregate::Leq => "等效声级",
                    Aggregate::Max => "最大值",
                    _ => "均值",
                }
            ),
            (Some((w, agg)), Locale::En) => format!(
                "{} {}",
                duration_text(w, Locale::En),
                match agg {
                    Aggregate::Leq => "Leq",
                    Aggregate::Max => "max",
                    _ => "mean",
                }
            ),
        };
        let bg = rule.and_then(|r| r.background.as_ref()).is_some();
        let mut m = String::new();
        let site = if self.site_name.is_empty() {
            &self.site_id
        } else {
            &self.site_name
        };
        match locale {
            Locale::ZhCn => {
                let _ = write!(m, "【{site}】{} ", e.device);
                match (e.kind, e.state) {
                    (AlertKind::Violation, _) => {
                        let ev = |k: &str| {
                            e.evidence
                                .iter()
                                .find(|(n, _)| n == k)
                                .map(|(_, v)| v.as_str())
                                .unwrap_or("")
                        };
                        let gate = if ev("gate").is_empty() {
                            String::new()
                        } else {
                            format!("，{}门", ev("gate"))
                        };
                        let _ = match e.metric.as_str() {
                            "wash" => write!(
                                m,
                                "六个百分百·冲洗：车辆 {} 未冲洗出场{gate}（冲洗 {} 秒，要求至少 {} 秒）",
                                ev("plate"),
                                ev("wash_seconds"),
                                ev("wash_min")
                            ),
                            "sealed_transport" => write!(
                                m,
                                "六个百分百·密闭运输：渣土车 {} 未覆盖出场{gate}",
                                ev("plate")
                            ),
                            "wet_work" => write!(
                                m,
                                "六个百分百·湿法作业：作业中已 {} 分钟未喷淋降尘",
                                ev("minutes")
                            ),
                            "cover" => write!(
                                m,
                                "六个百分百·覆盖：{}未覆盖已持续 {} 分钟",
                                ev("detection"),
                                ev("minutes")
                            ),
                            "enclosure" => {
                                write!(m, "六个百分百·围挡：围挡缺口已持续 {} 分钟", ev("minutes"))
                            }
                            other => write!(m, "六个百分百·{other}：违规"),
                        };
                        if !ev("snapshot").is_empty() {
                            let _ = write!(m, "，抓拍：{}", ev("snapshot"));
                        }
                        let _ = write!(m, "，时间 {}", self.when(e.at_ms, e.at_ms));
                    }
                    (AlertKind::DailyAllowance, AlertState::Closed) => {
                        let _ = write!(
                            m,
                            "{label}当日超标 {} 次，次日已重新计数",
                            fmt_value(e.value)
                        );
                    }
                    (AlertKind::DailyAllowance, _) => {
                        let _ = write!(
                            m,
                            "{label}当日超标已达 {} 次，超过每日允许的 {} 次，当日不达标",
                            fmt_value(e.value),
                            fmt_value(e.threshold)
                        );
                    }
                    (AlertKind::Offline, AlertState::Closed) => {
                        let _ = write!(m, "数据已恢复");
                    }
                    (AlertKind::Offline, _) => {
                        let _ = write!(m, "离线：自 {} 起无数据", self.when(e.since_ms, e.at_ms));
                    }
                    (AlertKind::Stuck, AlertState::Closed) => {
                        let _ = write!(m, "{label}数值已恢复变化");
                    }
                    (AlertKind::Stuck, _) => {
                        let _ = write!(
                            m,
                            "{label}数值 {}{unit_sp} 自 {} 起未变化，请检查传感器",
                            fmt_value(e.value),
                            self.when(e.since_ms, e.at_ms)
                        );
                    }
                    (AlertKind::OutOfRange, AlertState::Closed) => {
                        let _ = write!(m, "{label}读数已回到量程内");
                    }
                    (AlertKind::OutOfRange, _) => {
                        let _ = write!(
                            m,
                            "{label}读数 {}{unit_sp} 超出传感器量程，未参与评价，请检查设备",
                            fmt_value(e.value)
                        );
                    }
                    (AlertKind::Threshold, state) => {
                        let t = title.unwrap_or_else(|| format!("{label}超标"));
                        let net = if bg { "（扣除背景值后）" } else { "" };
                        match state {
                            AlertState::Closed => {
                                let _ = write!(
                                    m,
                                    "{t}已恢复：{how}{net} {}{unit_sp}，限值 {}{unit_sp}，持续 {}（{}–{}）",
                                    fmt_value(e.value),
                                    fmt_value(e.threshold),
                                    duration_text((e.at_ms - e.since_ms).max(0), Locale::ZhCn),
                                    self.when(e.since_ms, e.at_ms),
                                    self.when(e.at_ms, e.at_ms)
                                );
                            }
                            _ => {
                                let _ = write!(
                                    m,
                                    "{}{t}：{how}{net} {}{unit_sp}，限值 {}{unit_sp}，自 {} 起",
                                    if state == AlertState::Reminder {
                                        "仍"
                                    } else {
                                        ""
                                    },
                                    fmt_value(e.value),
                                    fmt_value(e.threshold),
                                    self.when(e.since_ms, e.at_ms)
                                );
                            }
                        }
                    }
                }
                if let Some(s) = standard {
                    let _ = write!(m, "（{s}）");
                }
                m.push('。');
            }
            Locale::En => {
                let _ = write!(m, "[{site}] {}: ", e.device);
                match (e.kind, e.state) {
                    (AlertKind::Violation, _) => {
                        let ev = |k: &str| {
                            e.evidence
                                .iter()
                                .find(|(n, _)| n == k)
                                .map(|(_, v)| v.as_str())
                                .unwrap_or("")
                        };
                        let gate = if ev("gate").is_empty() {
                            String::new()
                        } else {
                            format!(" at the {} gate", ev("gate"))
                        };
                        let _ = match e.metric.as_str() {
                            "wash" => write!(
                                m,
                                "six-100% wash: vehicle {} left unwashed{gate} (washed {} s of the {} s required)",
                                ev("plate"),
                                ev("wash_seconds"),
                                ev("wash_min")
                            ),
                            "sealed_transport" => write!(
                                m,
                                "six-100% sealed transport: muck truck {} left uncovered{gate}",
                                ev("plate")
                            ),
                            "wet_work" => write!(
                                m,
                                "six-100% wet work: {} min of work without spraying",
                                ev("minutes")
                            ),
                            "cover" => write!(
                                m,
                                "six-100% cover: {} uncovered for {} min",
                                ev("detection"),
                                ev("minutes")
                            ),
                            "enclosure" => write!(
                                m,
                                "six-100% enclosure: a gap in the hoarding for {} min",
                                ev("minutes")
                            ),
                            other => write!(m, "six-100% {other}: violation"),
                        };
                        if !ev("snapshot").is_empty() {
                            let _ = write!(m, "; snapshot: {}", ev("snapshot"));
                        }
                        let _ = write!(m, "; at {}", self.when(e.at_ms, e.at_ms));
                    }
                    (AlertKind::DailyAllowance, AlertState::Closed) => {
                        let _ = write!(
                            m,
                            "{label}: {} exceedances yesterday; counting starts again",
                            fmt_value(e.value)
                        );
                    }
                    (AlertKind::DailyAllowance, _) => {
                        let _ = write!(
                            m,
                            "{label} over the limit {} times today, more than the {} allowed: non-compliant today",
                            fmt_value(e.value),
                            fmt_value(e.threshold)
                        );
                    }
                    (AlertKind::Offline, AlertState::Closed) => {
                        let _ = write!(m, "data is back");
                    }
                    (AlertKind::Offline, _) => {
                        let _ = write!(
                            m,
                            "offline: no data since {}",
                            self.when(e.since_ms, e.at_ms)
                        );
                    }
                    (AlertKind::Stuck, AlertState::Closed) => {
                        let _ = write!(m, "{label} is changing again");
                    }
                    (AlertKind::Stuck, _) => {
                        let _ = write!(
                            m,
                            "{label} stuck at {}{unit_sp} since {}: check the sensor",
                            fmt_value(e.value),
                            self.when(e.since_ms, e.at_ms)
                        );
                    }
                    (AlertKind::OutOfRange, AlertState::Closed) => {
                        let _ = write!(m, "{label} readings are back within the sensor's range");
                    }
                    (AlertKind::OutOfRange, _) => {
                        let _ = write!(
                            m,
                            "{label} reading {}{unit_sp} is outside the sensor's range; not judged, check the device",
                            fmt_value(e.value)
                        );
                    }
                    (AlertKind::Threshold, state) => {
                        let t = title.unwrap_or_else(|| format!("{label} over the limit"));
                        let net = if bg { " net of background" } else { "" };
                        match state {
                            AlertState::Closed => {
                                let _ = write!(
                                    m,
                                    "{t}: back to normal, {how}{net} {}{unit_sp}, limit {}{unit_sp}; lasted {} ({}–{})",
                                    fmt_value(e.value),
                                    fmt_value(e.threshold),
                                    duration_text((e.at_ms - e.since_ms).max(0), Locale::En)
                                        .replace('-', " "),
                                    self.when(e.since_ms, e.at_ms),
                                    self.when(e.at_ms, e.at_ms)
                                );
                            }
                            _ => {
                                let _ = write!(
                                    m,
                                    "{}{t}: {how}{net} {}{unit_sp}, limit {}{unit_sp}, since {}",
                                    if state == AlertState::Reminder {
                                        "still: "
                                    } else {
                                        ""
                                    },
                                    fmt_value(e.value),
                                    fmt_value(e.threshold),
                                    self.when(e.since_ms, e.at_ms)
                                );
                            }
                        }
                    }
                }
                if let Some(s) = standard {
                    let _ = write!(m, " ({s})");
                }
                m.push('.');
            }
        }
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
        let mut tags: Vec<(&str, &str)> = self
            .site_tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        tags.extend([
            ("site", self.site_id.as_str()),
            ("device", e.device.as_str()),
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
