//! `[compliance]` (the six 100%) and `[[actuator]]` (dust-suppression linkage): read in stage
//! one, checked against the buses and rules in stage two. `[control]` is in `control.rs`.

use std::time::Duration;

use super::common::{DAY, duration};
use super::modbus::BusConfig;
use super::reader::{Cx, Sp, Span, TableReader};
use super::rules::{Schedule, Severity};
use crate::register::Table;

/// `[compliance]` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ComplianceParams {
    pub wash_min: Duration,
    pub wash_lookback: Duration,
    /// Flow (L/min) above which the wash station counts as running, without a pump signal.
    pub wash_flow_min: f64,
    /// A stretch this long without spray during activity is a violation.
    pub wet_gap: Duration,
    /// A detection open longer than this is a violation.
    pub max_open: Duration,
    /// Activity from the site's schedule, besides `earthwork_active`/`demolition_active` readings.
    pub activity: Vec<Schedule>,
    /// The share of site roads paved, declared by an inspector, and when.
    pub paved: Option<(f64, jiff::civil::Date)>,
    pub severity: Severity,
}

impl Default for ComplianceParams {
    fn default() -> Self {
        Self {
            wash_min: Duration::from_secs(45),
            wash_lookback: Duration::from_secs(600),
            wash_flow_min: 10.0,
            wet_gap: Duration::from_secs(600),
            max_open: Duration::from_secs(1800),
            activity: Vec::new(),
            paved: None,
            severity: Severity::Warning,
        }
    }
}

#[derive(Debug)]
pub struct RawCompliance {
    pub span: Span,
    pub wash_min: Option<Sp<Duration>>,
    pub wash_lookback: Option<Sp<Duration>>,
    pub wash_flow_min: Option<Sp<f64>>,
    pub wet_gap: Option<Sp<Duration>>,
    pub max_open: Option<Sp<Duration>>,
    pub activity: Option<Sp<Vec<String>>>,
    pub activity_days: Option<Sp<Vec<String>>>,
    pub paved_percent: Option<Sp<f64>>,
    pub paved_date: Option<Sp<String>>,
    pub severity: Option<Sp<String>>,
}

#[derive(Debug)]
pub struct RawActuator {
    pub span: Span,
    pub path_key: String,
    pub id: Option<Sp<String>>,
    pub device: Option<Sp<String>>,
    pub coil: Option<Sp<String>>,
    pub coils: Option<Sp<Vec<String>>>,
    pub min_on: Option<Sp<Duration>>,
    pub min_off: Option<Sp<Duration>>,
    pub max_on: Option<Sp<Duration>>,
    pub daily_budget: Option<Sp<Duration>>,
    pub safe_state: Option<Sp<String>>,
}

pub fn read_compliance(cx: &mut Cx<'_>, mut t: TableReader<'_, '_>) -> RawCompliance {
    let raw = RawCompliance {
        span: t.span(),
        wash_min: t.opt(cx, "wash_min"),
        wash_lookback: t.opt(cx, "wash_lookback"),
        wash_flow_min: t.opt(cx, "wash_flow_min"),
        wet_gap: t.opt(cx, "wet_gap"),
        max_open: t.opt(cx, "max_open"),
        activity: t.opt(cx, "activity"),
        activity_days: t.opt(cx, "activity_days"),
        paved_percent: t.opt(cx, "paved_percent"),
        paved_date: t.opt(cx, "paved_date"),
        severity: t.opt(cx, "severity"),
    };
    t.finish(cx);
    raw
}

pub fn read_actuator(cx: &mut Cx<'_>, mut t: TableReader<'_, '_>) -> RawActuator {
    let raw = RawActuator {
        span: t.span(),
        path_key: t.path().to_string(),
        id: t.req(cx, "id"),
        device: t.req(cx, "device"),
        coil: t.opt(cx, "coil"),
        coils: t.opt(cx, "coils"),
        min_on: t.opt(cx, "min_on"),
        min_off: t.opt(cx, "min_off"),
        max_on: t.opt(cx, "max_on"),
        daily_budget: t.opt(cx, "daily_budget"),
        safe_state: t.opt(cx, "safe_state"),
    };
    t.finish(cx);
    raw
}

/// A validated `[[actuator]]`: coils of one relay device switched together.
#[derive(Debug, Clone, PartialEq)]
pub struct ActuatorConfig {
    pub id: String,
    /// The Modbus device (its bus owns every write to it).
    pub device: String,
    /// (metric, coil address), all writable coils of the device's profile.
    pub coils: Vec<(String, u16)>,
    pub min_on: Duration,
    pub min_off: Duration,
    pub max_on: Option<Duration>,
    pub daily_budget: Option<Duration>,
    /// The state on shutdown and after the link to the relay was lost.
    pub safe_on: bool,
}

pub fn compliance(cx: &mut Cx<'_>, raw: Option<RawCompliance>) -> Option<ComplianceParams> {
    let raw = raw?;
    let d = ComplianceParams::default();
    let mut p = ComplianceParams {
        wash_min: duration(cx, &raw.wash_min, "compliance.wash_min", d.wash_min),
        wash_lookback: duration(
            cx,
            &raw.wash_lookback,
            "compliance.wash_lookback",
            d.wash_lookback,
        ),
        wash_flow_min: raw.wash_flow_min.as_ref().map_or(d.wash_flow_min, |f| {
            if f.value.is_nan() || f.value < 0.0 {
                cx.error(
                    &f.span,
                    "compliance.wash_flow_min",
                    "a flow of 0 L/min or more",
                );
            }
            f.value
        }),
        wet_gap: duration(cx, &raw.wet_gap, "compliance.wet_gap", d.wet_gap),
        max_open: duration(cx, &raw.max_open, "compliance.max_open", d.max_open),
        activity: Vec::new(),
        paved: None,
        severity: d.severity,
    };
    if p.wash_min > p.wash_lookback {
        let span = raw
            .wash_min
            .as_ref()
            .map_or(raw.span.clone(), |w| w.span.clone());
        cx.error(
            &span,
            "compliance.wash_min",
            "wash_min is longer than wash_lookback: no exit could ever count as washed",
        );
    }
    let mut days = [true; 7];
    if let Some(list) = &raw.activity_days {
        days = [false; 7];
        for name in &list.value {
            match super::rules::day_index(name) {
                Some(i) => days[i] = true,
                None => cx.error(
                    &list.span,
                    "compliance.activity_days",
                    format!("unknown day \"{name}\": mon tue wed thu fri sat sun"),
                ),
            }
        }
    }
    if let Some(list) = &raw.activity {
        for s in &list.value {
            match Schedule::parse(s) {
                Ok((start, end)) => p.activity.push(Schedule { start, end, days }),
                Err(e) => cx.error(&list.span, "compliance.activity", e),
            }
        }
    }
    match (&raw.paved_percent, &raw.paved_date) {
        (Some(v), Some(date)) => {
            if !(0.0..=100.0).contains(&v.value) {
                cx.error(&v.span, "compliance.paved_percent", "a share from 0 to 100");
            }
            match date.value.parse::<jiff::civil::Date>() {
                Ok(d) => p.paved = Some((v.value.clamp(0.0, 100.0), d)),
                Err(_) => cx.error(
                    &date.span,
                    "compliance.paved_date",
                    format!("\"{}\" is not a date such as \"2026-11-20\"", date.value),
                ),
            }
        }
        (Some(v), None) => cx.error(
            &v.span,
            "compliance.paved_date",
            "a declared paving share needs the date of the inspection (paved_date = \"YYYY-MM-DD\")",
        ),
        (None, Some(d)) => cx.error(
            &d.span,
            "compliance.paved_percent",
            "paved_date without paved_percent",
        ),
        (None, None) => {}
    }
    if let Some(s) = &raw.severity {
        match Severity::parse(&s.value) {
            Some(v) => p.severity = v,
            None => cx.error(
                &s.span,
                "compliance.severity",
                format!(
                    "unknown severity \"{}\": info, warning or critical",
                    s.value
                ),
            ),
        }
    }
    Some(p)
}

pub fn actuators(
    cx: &mut Cx<'_>,
    raw: Vec<RawActuator>,
    buses: &[BusConfig],
    actuate_at: &[(String, String, Span)],
) -> Vec<ActuatorConfig> {
    let mut out: Vec<ActuatorConfig> = Vec::new();
    for a in raw {
        let key = |k: &str| format!("{}.{k}", a.path_key);
        let (Some(id), Some(device)) = (&a.id, &a.device) else {
            continue;
        };
        if out.iter().any(|x| x.id == id.value) {
            cx.error(
                &id.span,
                &key("id"),
                format!("actuator id \"{}\" is already used", id.value),
            );
            continue;
        }
        let Some(dev) = buses
            .iter()
            .flat_map(|b| &b.devices)
            .find(|d| d.id == device.value)
        else {
            cx.error(
                &device.span,
                &key("device"),
                format!("no [[modbus.device]] with id \"{}\"", device.value),
            );
            continue;
        };
        let names: Vec<Sp<String>> = match (&a.coil, &a.coils) {
            (Some(c), None) => vec![c.clone()],
            (None, Some(cs)) if !cs.value.is_empty() => cs
                .value
                .iter()
                .map(|c| Sp::new(c.clone(), cs.span.clone()))
                .collect(),
            (Some(c), Some(_)) => {
                cx.error(&c.span, &key("coil"), "give coil or coils, not both");
                continue;
            }
            _ => {
                cx.error(
                    &a.span,
                    &key("coil"),
                    "an actuator needs `coil` (a writable coil's metric) or `coils` (several)",
                );
                continue;
            }
        };
        let mut coils = Vec::new();
        for n in &names {
            let writable: Vec<&str> = dev
                .profile
                .registers
                .iter()
                .filter(|r| r.writable && r.table == Table::Coil)
                .map(|r| r.metric.as_str())
                .collect();
            match dev.profile.registers.iter().find(|r| r.metric == n.value) {
                Some(r) if r.writable && r.table == Table::Coil => {
                    coils.push((r.metric.clone(), r.address));
                }
                Some(_) => cx.error(
                    &n.span,
                    &key("coil"),
                    format!(
                        "\"{}\" of device \"{}\" is not a writable coil; its profile marks these writable: {}",
                        n.value,
                        dev.id,
                        if writable.is_empty() { "none".to_string() } else { writable.join(", ") }
                    ),
                ),
                None => cx.error(
                    &n.span,
                    &key("coil"),
                    format!(
                        "device \"{}\" has no register \"{}\"; writable coils: {}",
                        dev.id,
                        n.value,
                        if writable.is_empty() { "none".to_string() } else { writable.join(", ") }
                    ),
                ),
            }
        }
        if coils.len() != names.len() {
            continue;
        }
        let min_on = a.min_on.as_ref().map_or(Duration::ZERO, |d| d.value);
        let min_off = a.min_off.as_ref().map_or(Duration::ZERO, |d| d.value);
        for (d, k) in [(&a.min_on, "min_on"), (&a.min_off, "min_off")] {
            if let Some(d) = d
                && d.value > DAY
            {
                cx.error(&d.span, &key(k), "must be at most 24h");
            }
        }
        let max_on = a
            .max_on
            .as_ref()
            .map(|_| duration(cx, &a.max_on, &key("max_on"), DAY));
        let daily_budget = a
            .daily_budget
            .as_ref()
            .map(|_| duration(cx, &a.daily_budget, &key("daily_budget"), DAY));
        if let (Some(max), Some(m)) = (max_on, &a.min_on)
            && m.value > max
        {
            cx.error(&m.span, &key("min_on"), "min_on is longer than max_on");
        }
        let safe_on = match a.safe_state.as_ref().map(|s| s.value.as_str()) {
            None | Some("off") => false,
            Some("on") => true,
            Some(other) => {
                if let Some(s) = &a.safe_state {
                    cx.error(
                        &s.span,
                        &key("safe_state"),
                        format!("unknown state \"{other}\": \"off\" or \"on\""),
                    );
                }
                false
            }
        };
        out.push(ActuatorConfig {
            id: id.value.clone(),
            device: dev.id.clone(),
            coils,
            min_on,
            min_off,
            max_on,
            daily_budget,
            safe_on,
        });
    }
    // Every `actuate` names one.
    for (rule, a, span) in actuate_at {
        if !out.iter().any(|x| &x.id == a) {
            cx.error(
                span,
                "rule",
                format!(
                    "rule \"{rule}\" actuates \"{a}\", but there is no [[actuator]] with that id"
                ),
            );
        }
    }
    out
}
