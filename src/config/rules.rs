//! Rules (`[[rule]]` in site.toml) and the standards packs that ship them (`standards/*.toml`).
//!
//! A pack is data: the limits of a published standard, each rule with its source, effective
//! dates and confidence mark. A site lists the packs it is judged by (`[site].standards`); a
//! site's own `[[rule]]` with the same id patches the pack's: only the keys it gives change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::modbus::BusConfig;
use super::mqtt::{DeviceFrom, MqttConfig};
use super::reader::{Cx, Sp, Span, TableReader, parse_document};
use super::source::{Diagnostic, Diagnostics, SourceFile};

include!(concat!(env!("OUT_DIR"), "/builtin_standards.rs"));

/// How a rule reduces the readings of its window to one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Every reading is judged on its own.
    Each,
    /// Arithmetic mean (particulates).
    Mean,
    /// Energy mean, `10·lg(mean(10^(L/10)))` (noise, GB 12523).
    Leq,
    /// Largest reading (Lmax).
    Max,
}

impl Aggregate {
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Each => "each",
            Aggregate::Mean => "mean",
            Aggregate::Leq => "leq",
            Aggregate::Max => "max",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    Above(f64),
    Below(f64),
    Outside(f64, f64),
}

/// The longest `for` and `repeat` a rule takes.
const DAY_LIMIT: Duration = Duration::from_secs(24 * 3600);

impl Condition {
    /// The one check of a value against the condition: `Some(the limit crossed)` when `v` is
    /// beyond it (for `outside`, the bound on its side), `None` otherwise.
    #[inline]
    pub fn breached(&self, v: f64) -> Option<f64> {
        match *self {
            Condition::Above(a) => (v > a).then_some(a),
            Condition::Below(b) => (v < b).then_some(b),
            Condition::Outside(lo, _) if v < lo => Some(lo),
            Condition::Outside(_, hi) => (v > hi).then_some(hi),
        }
    }

    /// Whether an open alert closes at `v`: back past `clear` (hysteresis) or, without it,
    /// back within the limit.
    #[inline]
    pub fn cleared(&self, v: f64, clear: Option<f64>) -> bool {
        match *self {
            Condition::Above(a) => v <= clear.unwrap_or(a),
            Condition::Below(b) => v >= clear.unwrap_or(b),
            Condition::Outside(..) => self.breached(v).is_none(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// A local-time period of the day (it may wrap midnight) on some days of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Minutes after local midnight.
    pub start: u16,
    pub end: u16,
    /// Monday first.
    pub days: [bool; 7],
}

impl Schedule {
    /// Whether `minute` (of the day) on `weekday` (0 = Monday) is inside. A period that wraps
    /// midnight belongs to the day it starts on.
    pub fn contains(&self, weekday: usize, minute: u16) -> bool {
        if self.start <= self.end {
            self.days[weekday % 7] && minute >= self.start && minute < self.end
        } else if minute >= self.start {
            self.days[weekday % 7]
        } else if minute < self.end {
            self.days[(weekday + 6) % 7]
        } else {
            false
        }
    }

    pub fn parse(s: &str) -> Result<(u16, u16), String> {
        let bad = || format!("\"{s}\" is not a period such as \"22:00-06:00\"");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let hm = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            // `then`, not `then_some`: the argument of `then_some` is computed even when the
            // test fails, and `h * 60` overflows for an hour such as 65535 (found by cargo fuzz).
            (h <= 24 && m < 60 && h * 60 + m <= 1440).then(|| h * 60 + m)
        };
        let (start, end) = (hm(a).ok_or_else(bad)?, hm(b).ok_or_else(bad)?);
        if start == end {
            return Err(format!("\"{s}\" is empty: start and end are the same"));
        }
        Ok((start, end))
    }
}

/// A regional value subtracted before judging (Hebei DB13/2934: the county's hourly PM10).
#[derive(Debug, Clone, PartialEq)]
pub struct Background {
    pub device: String,
    pub metric: String,
    /// Subtract at most this much.
    pub cap: Option<f64>,
}

/// Where a rule comes from, for messages and for `dustgate check`.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    /// The pack id, or "site".
    pub pack: String,
    /// The standard as people cite it: "GB 12523-2011".
    pub standard: Option<String>,
    pub source: Option<String>,
    /// [P], [S] or [U].
    pub mark: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleConfig {
    pub id: String,
    pub metric: String,
    /// Device id globs (`*`, `?`); empty means every device with the metric.
    pub devices: Vec<String>,
    pub window: Option<Duration>,
    pub aggregate: Aggregate,
    pub condition: Condition,
    /// Hysteresis: the alert closes once the value is back past this level.
    pub clear: Option<f64>,
    /// The condition must hold this long before the alert opens.
    pub hold: Duration,
    pub when: Option<Schedule>,
    pub min_coverage: f64,
    pub background: Option<Background>,
    pub max_per_day: Option<u32>,
    pub severity: Severity,
    pub repeat: Option<Duration>,
    /// Local dates (inclusive) between which the rule is in force.
    pub effective_from: Option<jiff::civil::Date>,
    pub effective_until: Option<jiff::civil::Date>,
    pub title_zh: Option<String>,
    pub title_en: Option<String>,
    pub provenance: Provenance,
    /// `enabled = false` in a site's rule switches off the pack's rule of the same id.
    pub enabled: bool,
    /// An `[[actuator]]` switched on while this rule's alert is open.
    pub actuate: Option<String>,
    /// A site's `{ id, enabled = false }` or `{ id, actuate }`: changes the pack's rule of that
    /// id instead of being a rule of its own.
    pub patch: bool,
}

/// Whether `device` is one of `globs` (`*`, `?`); an empty list takes every device.
pub fn matches_any(globs: &[String], device: &str) -> bool {
    globs.is_empty() || globs.iter().any(|g| glob(g, device))
}

impl RuleConfig {
    pub fn matches_device(&self, device: &str) -> bool {
        matches_any(&self.devices, device)
    }

    /// The limit people are told about.
    pub fn threshold(&self) -> f64 {
        match self.condition {
            Condition::Above(x) | Condition::Below(x) => x,
            Condition::Outside(lo, hi) => {
                // Shown as the bound nearest to where values usually are; both are in the text.
                let _ = lo;
                hi
            }
        }
    }

    pub fn in_force(&self, date: jiff::civil::Date) -> bool {
        self.effective_from.is_none_or(|f| date >= f)
            && self.effective_until.is_none_or(|u| date <= u)
    }
}

/// Device ids known at check time: Modbus devices, fixed MQTT ids and HJ 212 stations; and
/// whether that is all of them (an id taken from a topic level, the payload or an unlisted MN
/// is known only at run time, and then a glob that matches none is not reported).
pub(super) fn known_devices<'a>(
    buses: &'a [BusConfig],
    brokers: &'a [MqttConfig],
    hj212: &'a super::hj212::Hj212Config,
) -> (Vec<&'a str>, bool) {
    let mut known: Vec<&str> = buses
        .iter()
        .flat_map(|b| b.devices.iter().map(|d| d.id.as_str()))
        .collect();
    let mut all_known = !hj212.accepts_unknown();
    known.extend(
        hj212
            .listeners
            .iter()
            .flat_map(|l| l.stations.iter().map(|s| s.device.as_str())),
    );
    for s in brokers.iter().flat_map(|b| &b.subscriptions) {
        match &s.device {
            DeviceFrom::Fixed(id) => known.push(id),
            DeviceFrom::TopicLevel(_) | DeviceFrom::Pointer(_) => all_known = false,
        }
    }
    (known, all_known)
}

/// `*` any run, `?` any one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Monday = 0, from a day's short name (any case).
pub fn day_index(name: &str) -> Option<usize> {
    DAYS.iter().position(|x| x.eq_ignore_ascii_case(name))
}

fn parse_date(cx: &mut Cx<'_>, v: Option<Sp<String>>, key: &str) -> Option<jiff::civil::Date> {
    let v = v?;
    match v.value.parse::<jiff::civil::Date>() {
        Ok(d) => Some(d),
        Err(_) => {
            cx.error(
                &v.span,
                key,
                format!("\"{}\" is not a date such as \"2026-03-01\"", v.value),
            );
            None
        }
    }
}

/// Reads one `[[rule]]` table. `background_device` replaces `{background}` in a background's
/// device (packs cannot know the site's regional feed).
pub fn read_rule(
    cx: &mut Cx<'_>,
    t: TableReader<'_, '_>,
    provenance: &Provenance,
    background_device: Option<&str>,
) -> Option<Sp<RuleConfig>> {
    read_rule_over(cx, t, provenance, background_device, None)
}

/// Reads a site's `[[rule]]` whose id is a pack rule's: a patch. Only the keys it gives
/// change; everything else (metric, window, schedule, citation, severity, titles…) is the
/// pack's. Gives the rule in force and what changed, for `check`.
pub fn read_patch(
    cx: &mut Cx<'_>,
    t: TableReader<'_, '_>,
    base: &RuleConfig,
    background_device: Option<&str>,
) -> Option<(Sp<RuleConfig>, RulePatch)> {
    let r = read_rule_over(cx, t, &base.provenance, background_device, Some(base))?;
    let patch = RulePatch::between(base, &r.value);
    Some((r, patch))
}

/// What a site's patch changed in a pack's rule, for `check`.
#[derive(Debug, Clone, PartialEq)]
pub struct RulePatch {
    pub rule: String,
    pub pack: String,
    /// (key, value in force, the pack's value), e.g. ("above", "65", "70").
    pub changes: Vec<(String, String, String)>,
}

impl RulePatch {
    fn between(pack: &RuleConfig, site: &RuleConfig) -> RulePatch {
        let mut changes = Vec::new();
        let mut diff = |key: &str, now: String, was: String| {
            if now != was {
                changes.push((key.to_string(), now, was));
            }
        };
        let cond = |c: &Condition| match c {
            Condition::Above(x) => format!("above {x}"),
            Condition::Below(x) => format!("below {x}"),
            Condition::Outside(lo, hi) => format!("outside [{lo}, {hi}]"),
        };
        let opt = |v: Option<String>| v.unwrap_or_else(|| "none".to_string());
        let dur = |d: Option<Duration>| opt(d.map(|d| format!("{d:?}")));
        let sched = |w: &Option<Schedule>| {
            opt(w.map(|w| {
                let days: Vec<&str> = DAYS
                    .iter()
                    .zip(w.days)
                    .filter_map(|(d, on)| on.then_some(*d))
                    .collect();
                format!(
                    "{:02}:{:02}-{:02}:{:02} {}",
                    w.start / 60,
                    w.start % 60,
                    w.end / 60,
                    w.end % 60,
                    days.join(" ")
                )
            }))
        };
        // The condition is shown as its key and number: "above 65 (… had 70)".
        match (&site.condition, &pack.condition) {
            (Condition::Above(a), Condition::Above(b)) if a != b => {
                diff("above", a.to_string(), b.to_string())
            }
            (Condition::Below(a), Condition::Below(b)) if a != b => {
                diff("below", a.to_string(), b.to_string())
            }
            (a, b) => diff("condition", cond(a), cond(b)),
        }
        diff("metric", site.metric.clone(), pack.metric.clone());
        diff("devices", site.devices.join(" "), pack.devices.join(" "));
        diff("window", dur(site.window), dur(pack.window));
        diff(
            "aggregate",
            site.aggregate.name().into(),
            pack.aggregate.name().into(),
        );
        diff(
            "clear",
            opt(site.clear.map(|c| c.to_string())),
            opt(pack.clear.map(|c| c.to_string())),
        );
        diff("for", dur(Some(site.hold)), dur(Some(pack.hold)));
        diff("when", sched(&site.when), sched(&pack.when));
        diff(
            "min_coverage",
            site.min_coverage.to_string(),
            pack.min_coverage.to_string(),
        );
        diff(
            "max_per_day",
            opt(site.max_per_day.map(|m| m.to_string())),
            opt(pack.max_per_day.map(|m| m.to_string())),
        );
        diff(
            "severity",
            site.severity.name().into(),
            pack.severity.name().into(),
        );
        diff("repeat", dur(site.repeat), dur(pack.repeat));
        diff(
            "background",
            opt(site
                .background
                .as_ref()
                .map(|b| format!("{}/{}", b.device, b.metric))),
            opt(pack
                .background
                .as_ref()
                .map(|b| format!("{}/{}", b.device, b.metric))),
        );
        diff(
            "effective_from",
            opt(site.effective_from.map(|d| d.to_string())),
            opt(pack.effective_from.map(|d| d.to_string())),
        );
        diff(
            "effective_until",
            opt(site.effective_until.map(|d| d.to_string())),
            opt(pack.effective_until.map(|d| d.to_string())),
        );
        diff(
            "title",
            opt(site.title_zh.clone()),
            opt(pack.title_zh.clone()),
        );
        diff(
            "title_en",
            opt(site.title_en.clone()),
            opt(pack.title_en.clone()),
        );
        diff(
            "enabled",
            site.enabled.to_string(),
            pack.enabled.to_string(),
        );
        diff(
            "actuate",
            opt(site.actuate.clone()),
            opt(pack.actuate.clone()),
        );
        diff(
            "standard",
            opt(site.provenance.standard.clone()),
            opt(pack.provenance.standard.clone()),
        );
        diff(
            "confidence",
            opt(site.provenance.mark.clone()),
            opt(pack.provenance.mark.clone()),
        );
        diff(
            "source",
            opt(site.provenance.source.clone()),
            opt(pack.provenance.source.clone()),
        );
        RulePatch {
            rule: site.id.clone(),
            pack: pack.provenance.pack.clone(),
            changes,
        }
    }

    /// One line per change: `above 65 (site patch; pack gb12523-2011 had 70)`.
    pub fn lines(&self) -> Vec<String> {
        self.changes
            .iter()
            .map(|(k, now, was)| {
                let now = if k == "condition" {
                    now.clone()
                } else {
                    format!("{k} {now}")
                };
                format!("{now} (site patch; pack {} had {was})", self.pack)
            })
            .collect()
    }
}

fn read_rule_over(
    cx: &mut Cx<'_>,
    mut t: TableReader<'_, '_>,
    provenance: &Provenance,
    background_device: Option<&str>,
    base: Option<&RuleConfig>,
) -> Option<Sp<RuleConfig>> {
    let span = t.span();
    let key = |k: &str| t.key_path(k);
    let (k_window, k_agg, k_clear, k_when, k_cov, k_bg, k_sev, k_mpd, k_act, k_out) = (
        key("window"),
        key("aggregate"),
        key("clear"),
        key("when"),
        key("min_coverage"),
        key("background"),
        key("severity"),
        key("max_per_day"),
        key("actuate"),
        key("outside"),
    );
    let id = t.req::<String>(cx, "id");
    // `{ id = "...", enabled = false }` alone switches a pack's rule off; `{ id, actuate }`
    // links a pack's rule to an actuator.
    // A patch (`base`) needs none of the keys: what it leaves out is the pack's.
    let switch_off = base.is_none()
        && (t.has("enabled") || t.has("actuate"))
        && !t.has("metric")
        && !t.has("above")
        && !t.has("below")
        && !t.has("outside");
    let metric = if switch_off || base.is_some() {
        t.opt::<String>(cx, "metric")
    } else {
        t.req::<String>(cx, "metric")
    };
    let devices = t.opt::<Vec<String>>(cx, "devices");
    let window = t.opt::<Duration>(cx, "window");
    let aggregate = t.opt::<String>(cx, "aggregate");
    let above = t.opt::<f64>(cx, "above");
    let below = t.opt::<f64>(cx, "below");
    let outside = t.opt::<Vec<f64>>(cx, "outside");
    let clear = t.opt::<f64>(cx, "clear");
    let hold = t.opt::<Duration>(cx, "for");
    let when = t.opt::<String>(cx, "when");
    let days = t.opt::<Vec<String>>(cx, "days");
    let min_coverage = t.opt::<f64>(cx, "min_coverage");
    let max_per_day = t.opt::<i64>(cx, "max_per_day");
    let severity = t.opt::<String>(cx, "severity");
    let repeat = t.opt::<Duration>(cx, "repeat");
    // A reminder more often than a minute floods inspectors' phones; a `for` or `repeat` past a
    // day is a typo (and would overflow timers).
    let hold = hold.filter(|h| {
        let ok = h.value <= DAY_LIMIT;
        if !ok {
            cx.error(&h.span, &t.key_path("for"), "must be at most 24h");
        }
        ok
    });
    let repeat = repeat.filter(|r| {
        let ok = r.value >= Duration::from_secs(60) && r.value <= DAY_LIMIT;
        if !ok {
            cx.error(
                &r.span,
                &t.key_path("repeat"),
                "must be between 1m and 24h (how often a reminder goes out while the alert lasts)",
            );
        }
        ok
    });
    let from = t.opt::<String>(cx, "effective_from");
    let until = t.opt::<String>(cx, "effective_until");
    let title_zh = t.opt::<String>(cx, "title");
    let title_en = t.opt::<String>(cx, "title_en");
    let standard = t.opt::<String>(cx, "standard");
    let mark = t.opt::<String>(cx, "confidence");
    let note = t.opt::<String>(cx, "source");
    let enabled = t.opt::<bool>(cx, "enabled");
    let actuate = t.opt::<String>(cx, "actuate");
    if let Some(a) = &actuate
        && provenance.pack != "site"
        && base.is_none()
    {
        cx.error(&a.span, &k_act, "a standards pack cannot know the site's actuators: link a pack's rule in site.toml with `{ id = \"...\", actuate = \"...\" }`");
    }
    let background = t.table(cx, "background").and_then(|mut b| {
        let device = b.req::<String>(cx, "device");
        let metric = b.req::<String>(cx, "metric");
        let cap = b.opt::<f64>(cx, "cap");
        let bspan = b.span();
        b.finish(cx);
        let device = device?;
        let dev = if device.value == "{background}" {
            match background_device {
                Some(d) => d.to_string(),
                None => {
                    cx.error(&bspan, &k_bg, "this rule subtracts a regional background: name its device with `background = \"<device id>\"` in [site]");
                    return None;
                }
            }
        } else {
            device.value
        };
        Some(Background { device: dev, metric: metric?.value, cap: cap.map(|c| c.value) })
    });
    t.finish(cx);
    if switch_off {
        let id = id?;
        if enabled.as_ref().is_some_and(|e| e.value) {
            cx.error(&span, "rule", "a rule needs `metric` and one of `above`, `below`, `outside` (only `enabled = false` or `actuate` may stand alone)");
            return None;
        }
        return Some(Sp::new(
            RuleConfig {
                id: id.value,
                metric: String::new(),
                devices: Vec::new(),
                window: None,
                aggregate: Aggregate::Each,
                condition: Condition::Above(f64::INFINITY),
                clear: None,
                hold: Duration::ZERO,
                when: None,
                min_coverage: 0.75,
                background: None,
                max_per_day: None,
                severity: Severity::Info,
                repeat: None,
                effective_from: None,
                effective_until: None,
                title_zh: None,
                title_en: None,
                provenance: provenance.clone(),
                enabled: enabled.is_none_or(|e| e.value),
                actuate: actuate.map(|a| a.value),
                patch: true,
            },
            span,
        ));
    }

    let condition = match (&above, &below, &outside) {
        (Some(a), None, None) => Some(Condition::Above(a.value)),
        (None, Some(b), None) => Some(Condition::Below(b.value)),
        (None, None, Some(o)) => match o.value.as_slice() {
            [lo, hi] if lo < hi => Some(Condition::Outside(*lo, *hi)),
            _ => {
                cx.error(
                    &o.span,
                    &k_out,
                    "`outside` takes [low, high] with low < high",
                );
                None
            }
        },
        (None, None, None) if base.is_some() => base.map(|b| b.condition),
        (None, None, None) => {
            cx.error(
                &span,
                "rule",
                "a rule needs one of `above`, `below` or `outside = [low, high]`",
            );
            None
        }
        _ => {
            cx.error(
                &span,
                "rule",
                "give only one of `above`, `below` and `outside`",
            );
            None
        }
    };
    // A patch keeps the pack's `clear`, unless it gives its own.
    let inherited_clear = base.and_then(|b| b.clear).filter(|_| clear.is_none());
    let cond_span = [&above, &below]
        .into_iter()
        .flatten()
        .map(|v| v.span.clone())
        .chain(outside.as_ref().map(|o| o.span.clone()))
        .next()
        .unwrap_or_else(|| span.clone());
    let clear = clear.or_else(|| inherited_clear.map(|c| Sp::new(c, cond_span)));
    if let (Some(c), Some(cond)) = (&clear, &condition) {
        let ok = match cond {
            Condition::Above(a) => c.value <= *a,
            Condition::Below(b) => c.value >= *b,
            Condition::Outside(..) => false,
        };
        if !ok && inherited_clear.is_some() {
            cx.error(&c.span, &k_clear, format!("the pack's `clear = {}` does not fit the new limit: give `clear` in this rule too", c.value));
        } else if !ok {
            cx.error(&c.span, &k_clear, match cond {
                Condition::Outside(..) => "`clear` is for `above` and `below` rules".to_string(),
                Condition::Above(a) => format!("`clear` must not be above the limit {a}: the alert closes once the value falls to it"),
                Condition::Below(b) => format!("`clear` must not be below the limit {b}"),
            });
        }
    }
    let metric = metric.or_else(|| base.map(|b| Sp::new(b.metric.clone(), span.clone())));
    let metric_name = metric.as_ref().map(|m| m.value.clone()).unwrap_or_default();
    let window_given = window.is_some();
    let window = window.or_else(|| {
        base.and_then(|b| b.window)
            .map(|w| Sp::new(w, span.clone()))
    });
    let aggregate = match (&aggregate, &window) {
        (Some(a), _) => match a.value.as_str() {
            "mean" => Some(Aggregate::Mean),
            "leq" => Some(Aggregate::Leq),
            "max" => Some(Aggregate::Max),
            "each" => Some(Aggregate::Each),
            other => {
                cx.error(
                    &a.span,
                    &k_agg,
                    format!("unknown aggregate \"{other}\": mean, leq (noise), max or each"),
                );
                None
            }
        },
        (None, None) => Some(Aggregate::Each),
        // A patch keeps the pack's aggregate, unless it gives a window to a per-reading rule.
        (None, Some(_))
            if base.is_some_and(|b| !window_given || b.aggregate != Aggregate::Each) =>
        {
            base.map(|b| b.aggregate)
        }
        (None, Some(_)) if metric_name == "noise" => Some(Aggregate::Leq),
        (None, Some(_)) => Some(Aggregate::Mean),
    };
    if let (Some(agg), None) = (aggregate, &window)
        && agg != Aggregate::Each
    {
        cx.error(
            &span,
            &k_window,
            format!("aggregate \"{}\" needs a `window`", agg.name()),
        );
    }
    if let Some(w) = &window
        && (w.value.is_zero() || w.value > Duration::from_secs(7 * 86400))
    {
        cx.error(
            &w.span,
            &k_window,
            "a window is longer than zero and at most 7 days",
        );
    }
    let base_when = base.and_then(|b| b.when);
    let when_sched = when.as_ref().and_then(|w| match Schedule::parse(&w.value) {
        Ok((start, end)) => Some((start, end)),
        Err(e) => {
            cx.error(&w.span, &k_when, e);
            None
        }
    });
    // A patch giving only `when` keeps the pack's days, and only `days` the pack's hours.
    let when_sched = when_sched.or_else(|| {
        base_when
            .filter(|w| days.is_some() && (w.start, w.end) != (0, 1440))
            .map(|w| (w.start, w.end))
    });
    let mut day_mask = base_when
        .filter(|_| when.is_some())
        .map_or([true; 7], |w| w.days);
    if let Some(d) = &days {
        day_mask = [false; 7];
        for name in &d.value {
            match DAYS.iter().position(|x| x == &name.to_lowercase().as_str()) {
                Some(i) => day_mask[i] = true,
                None => cx.error(
                    &d.span,
                    "days",
                    format!("unknown day \"{name}\": mon tue wed thu fri sat sun"),
                ),
            }
        }
    }
    let schedule = match (when_sched, days.is_some()) {
        (Some((start, end)), _) => Some(Schedule {
            start,
            end,
            days: day_mask,
        }),
        (None, true) => Some(Schedule {
            start: 0,
            end: 1440,
            days: day_mask,
        }),
        (None, false) if when.is_none() => base_when,
        (None, false) => None,
    };
    let min_coverage = match &min_coverage {
        Some(c) if !(0.0..=1.0).contains(&c.value) => {
            cx.error(&c.span, &k_cov, "a share between 0 and 1 (0.75 = 75 %)");
            0.75
        }
        Some(c) => c.value,
        None => base.map_or(0.75, |b| b.min_coverage),
    };
    let severity = match &severity {
        None => Some(base.map_or(Severity::Warning, |b| b.severity)),
        Some(s) => Severity::parse(&s.value).or_else(|| {
            cx.error(
                &s.span,
                &k_sev,
                format!(
                    "unknown severity \"{}\": info, warning or critical",
                    s.value
                ),
            );
            None
        }),
    };
    let max_per_day = match &max_per_day {
        None => base.and_then(|b| b.max_per_day),
        Some(m) if m.value < 0 || m.value > 10_000 => {
            cx.error(&m.span, &k_mpd, "a count of exceedances a day, 0..=10000");
            None
        }
        Some(m) => Some(m.value as u32),
    };
    let (from_given, until_given) = (from.is_some(), until.is_some());
    let effective_from = parse_date(cx, from, "effective_from")
        .or_else(|| base.filter(|_| !from_given).and_then(|b| b.effective_from));
    let effective_until = parse_date(cx, until, "effective_until").or_else(|| {
        base.filter(|_| !until_given)
            .and_then(|b| b.effective_until)
    });
    let id = id?;
    if id.value.is_empty() || id.value.contains(char::is_whitespace) {
        cx.error(&id.span, "id", "a rule id is one word, e.g. \"pm10-15m\"");
    }
    let mut prov = provenance.clone();
    if standard.is_some() {
        prov.standard = standard.map(|s| s.value);
    }
    if mark.is_some() {
        prov.mark = mark.map(|m| format!("[{}]", m.value.trim_matches(['[', ']'])));
    }
    if note.is_some() {
        prov.source = note.map(|n| n.value);
    }
    let condition = condition?;
    // A pack's titles often state its number ("Leq>70分贝"): a patch that moves the limit
    // and gives no title of its own falls back to the generic one, which shows the limit.
    let limit_moved = base.is_some_and(|b| b.condition != condition);
    let (title_zh, title_en) = match base {
        Some(b) if title_zh.is_none() && title_en.is_none() && !limit_moved => {
            (b.title_zh.clone(), b.title_en.clone())
        }
        _ => (title_zh.map(|t| t.value), title_en.map(|t| t.value)),
    };
    Some(Sp::new(
        RuleConfig {
            id: id.value,
            metric: metric?.value,
            devices: devices
                .map(|d| d.value)
                .or_else(|| base.map(|b| b.devices.clone()))
                .unwrap_or_default(),
            window: window.map(|w| w.value),
            aggregate: aggregate?,
            condition,
            clear: clear.map(|c| c.value),
            hold: hold.map_or_else(|| base.map_or(Duration::ZERO, |b| b.hold), |h| h.value),
            when: schedule,
            min_coverage,
            background: background.or_else(|| base.and_then(|b| b.background.clone())),
            max_per_day,
            severity: severity?,
            repeat: repeat
                .map(|r| r.value)
                .or_else(|| base.and_then(|b| b.repeat)),
            effective_from,
            effective_until,
            title_zh,
            title_en,
            provenance: prov,
            enabled: enabled.map_or_else(|| base.is_none_or(|b| b.enabled), |e| e.value),
            actuate: actuate
                .map(|a| a.value)
                .or_else(|| base.and_then(|b| b.actuate.clone())),
            patch: false,
        },
        span,
    ))
}

/// A standards pack.
#[derive(Debug, Clone)]
pub struct Pack {
    pub id: String,
    pub title: String,
    pub source: String,
    pub mark: String,
    pub origin: String,
    pub rules: Vec<RuleConfig>,
    /// HJ 633 AQI table this pack selects, if it is an AQI pack.
    pub aqi: Option<String>,
}

/// Reads a pack file. Problems go to `diags`.
pub fn parse_pack(
    id: &str,
    file: &Arc<SourceFile>,
    background_device: Option<&str>,
    diags: &mut Diagnostics,
) -> Option<Pack> {
    let mut cx = Cx { file, diags };
    let doc = parse_document(&mut cx, &file.text)?;
    let mut root = TableReader::root(&doc);
    let title = root.req::<String>(&mut cx, "title");
    let standard = root.req::<String>(&mut cx, "standard");
    let source = root.req::<String>(&mut cx, "source");
    let mark = root.req::<String>(&mut cx, "confidence");
    let aqi = root.opt::<String>(&mut cx, "aqi");
    let _ = root.opt::<String>(&mut cx, "note");
    let prov = Provenance {
        pack: id.to_string(),
        standard: standard.as_ref().map(|s| s.value.clone()),
        source: source.as_ref().map(|s| s.value.clone()),
        mark: mark.as_ref().map(|m| format!("[{}]", m.value)),
    };
    let mut rules = Vec::new();
    for t in root.tables(&mut cx, "rule") {
        if let Some(r) = read_rule(&mut cx, t, &prov, background_device) {
            rules.push(r.value);
        }
    }
    root.finish(&mut cx);
    if let Some(m) = &mark
        && !matches!(m.value.as_str(), "P" | "S" | "U")
    {
        cx.error(&m.span, "confidence", "\"P\", \"S\" or \"U\"");
    }
    Some(Pack {
        id: id.to_string(),
        title: title?.value,
        source: source?.value,
        mark: format!("[{}]", mark?.value),
        origin: file.name.clone(),
        rules,
        aqi: aqi.map(|a| a.value),
    })
}

/// Finds packs in a `standards/` folder beside the config, then among the built-in ones.
pub struct PackLoader {
    dirs: Vec<PathBuf>,
    cache: HashMap<String, Option<Arc<Pack>>>,
}

impl PackLoader {
    pub fn for_config(config_path: &Path) -> Self {
        let dir = config_path
            .parent()
            .map_or_else(|| PathBuf::from("standards"), |p| p.join("standards"));
        Self {
            dirs: vec![dir],
            cache: HashMap::new(),
        }
    }

    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTIN_STANDARDS.iter().map(|(n, _)| *n)
    }

    /// Loads a pack; `Err` holds the message for an unknown name.
    pub fn load(
        &mut self,
        id: &str,
        background_device: Option<&str>,
        diags: &mut Diagnostics,
    ) -> Result<Option<Arc<Pack>>, String> {
        if let Some(p) = self.cache.get(id) {
            return Ok(p.clone());
        }
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!(
                "standard \"{id}\" may hold only lowercase letters, digits and '-'"
            ));
        }
        let file = self.find(id).ok_or_else(|| {
            let names: Vec<&str> = Self::builtin_names().collect();
            format!("no standards pack \"{id}\"; built in: {}", names.join(", "))
        });
        let file = match file? {
            Ok(f) => f,
            Err(d) => {
                diags.push(d);
                self.cache.insert(id.to_string(), None);
                return Ok(None);
            }
        };
        let before = diags.len();
        let pack = parse_pack(id, &file, background_device, diags);
        let pack = (diags.len() == before)
            .then_some(pack)
            .flatten()
            .map(Arc::new);
        self.cache.insert(id.to_string(), pack.clone());
        Ok(pack)
    }

    fn find(&self, id: &str) -> Option<Result<Arc<SourceFile>, Diagnostic>> {
        for dir in &self.dirs {
            let path = dir.join(format!("{id}.toml"));
            if path.is_file() {
                return Some(SourceFile::read(&path));
            }
        }
        BUILTIN_STANDARDS
            .iter()
            .find(|(n, _)| *n == id)
            .map(|(n, text)| {
                Ok(SourceFile::new(
                    format!("standards/{n}.toml (built in)"),
                    None,
                    (*text).to_string(),
                ))
            })
    }
}

/// The rules a site is judged by, with what `check` says about them.
pub struct Rules {
    pub rules: Vec<RuleConfig>,
    pub packs: Vec<std::sync::Arc<Pack>>,
    pub patches: Vec<RulePatch>,
    /// Where each `actuate` is written, to point at it if it names no actuator.
    pub actuate_at: Vec<(String, String, Span)>,
    pub warnings: Vec<super::source::Diagnostic>,
}

/// The rules in force: each pack's rules in the order listed, a site rule with a pack rule's
/// id patching it (only the keys it gives change; `enabled = false` switches it off), the
/// site's other rules after.
#[allow(clippy::type_complexity)]
pub fn resolve(
    cx: &mut Cx<'_>,
    standards: &Option<(Option<Sp<Vec<String>>>, Option<String>)>,
    site_rules: Vec<TableReader<'_, '_>>,
    buses: &[BusConfig],
    brokers: &[MqttConfig],
    hj212: &super::hj212::Hj212Config,
    loader: &mut PackLoader,
) -> Rules {
    let mut packs = Vec::new();
    let mut rules: Vec<RuleConfig> = Vec::new();
    if let Some((Some(list), background)) = standards {
        for id in &list.value {
            let before = cx.diags.len();
            match loader.load(id, background.as_deref(), cx.diags) {
                Ok(Some(pack)) => {
                    for r in &pack.rules {
                        if rules.iter().any(|x| x.id == r.id) {
                            cx.error(
                                &list.span,
                                "site.standards",
                                format!(
                                    "rule \"{}\" of pack \"{id}\" is already given by another pack",
                                    r.id
                                ),
                            );
                        } else {
                            rules.push(r.clone());
                        }
                    }
                    packs.push(pack);
                }
                Ok(None) => {
                    let what = if cx.diags.len() == before {
                        "has errors"
                    } else {
                        "has errors, listed with its file"
                    };
                    cx.error(
                        &list.span,
                        "site.standards",
                        format!("standards pack \"{id}\" {what}"),
                    );
                }
                Err(msg) => cx.error(&list.span, "site.standards", msg),
            }
        }
    }
    // Metrics some device can provide: canonical ones, and any a profile maps.
    let mut provided: Vec<String> = super::metrics::Catalog::builtin()
        .metrics
        .iter()
        .map(|m| m.name.clone())
        .collect();
    for b in buses {
        for d in &b.devices {
            provided.extend(d.profile.registers.iter().map(|r| r.metric.clone()));
        }
    }
    for b in brokers {
        for s in &b.subscriptions {
            if let super::json_profile::JsonKind::Readings(f) = &s.profile.kind {
                provided.extend(f.iter().map(|f| f.metric.clone()));
            }
        }
    }
    let background = standards.as_ref().and_then(|(_, b)| b.clone());
    let site_prov = Provenance {
        pack: "site".into(),
        standard: None,
        source: None,
        mark: None,
    };
    let from_packs = rules.len();
    let mut patches = Vec::new();
    let mut actuate_at = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let (known, all_known) = known_devices(buses, brokers, hj212);
    let mut warnings = Vec::new();
    for t in site_rules {
        if all_known && let Some(globs) = t.peek_str_list("devices") {
            for g in globs
                .iter()
                .filter(|g| !known.iter().any(|d| super::rules::glob(g, d)))
            {
                warnings.push(cx.file.diagnostic(
                    &t.table_span("devices"),
                    &t.key_path("devices"),
                    format!(
                        "device glob \"{g}\" matches no configured device (devices: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
        let of_pack = t
            .peek_str("id")
            .and_then(|id| rules[..from_packs].iter().position(|x| x.id == id));
        let (r, patch) = match of_pack {
            Some(i) => match read_patch(cx, t, &rules[i], background.as_deref()) {
                Some((r, p)) => (r, Some(p)),
                None => continue,
            },
            None => match read_rule(cx, t, &site_prov, background.as_deref()) {
                Some(r) => (r, None),
                None => continue,
            },
        };
        if let Some(line) = seen.get(&r.value.id) {
            cx.error(
                &r.span,
                "rule",
                format!("rule id \"{}\" is already used at line {line}", r.value.id),
            );
            continue;
        }
        seen.insert(r.value.id.clone(), cx.file.position(r.span.start).0);
        let metric_changed = patch
            .as_ref()
            .is_some_and(|p| p.changes.iter().any(|(k, _, _)| k == "metric"));
        if (metric_changed || (patch.is_none() && !r.value.patch))
            && !provided.contains(&r.value.metric)
        {
            cx.error(
                &r.span,
                "rule",
                format!(
                    "no device provides metric \"{}\": a canonical metric or one a profile maps",
                    r.value.metric
                ),
            );
            continue;
        }
        if let Some(a) = &r.value.actuate {
            actuate_at.push((r.value.id.clone(), a.clone(), r.span.clone()));
        }
        match (of_pack, patch) {
            (Some(i), Some(p)) => {
                rules[i] = r.value;
                if !p.changes.is_empty() {
                    patches.push(p);
                }
            }
            _ if r.value.patch => cx.error(
                &r.span,
                "rule",
                format!(
                    "rule \"{}\" names no metric or condition, and no pack of [site].standards has it",
                    r.value.id
                ),
            ),
            _ => rules.push(r.value),
        }
    }
    rules.retain(|r| r.enabled);
    Rules {
        rules,
        packs,
        patches,
        actuate_at,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_hour_too_large_for_minutes_is_refused_not_overflowed() {
        // Found by cargo fuzz (config_site, debug assertions): "11393:0" overflowed u16.
        assert!(super::Schedule::parse("11393:0-12:00").is_err());
        assert!(super::Schedule::parse("65535:59-1:00").is_err());
        assert_eq!(super::Schedule::parse("22:00-06:00"), Ok((1320, 360)));
    }

    use super::*;

    #[test]
    fn globs() {
        assert!(glob("dust-*", "dust-01"));
        assert!(glob("*", "anything"));
        assert!(glob("d?st-0*", "dust-01"));
        assert!(!glob("dust-*", "water-01"));
        assert!(glob("*-01", "dust-01"));
        assert!(!glob("dust", "dust-01"));
    }

    #[test]
    fn schedules_wrap_midnight_and_belong_to_their_start_day() {
        let (start, end) = Schedule::parse("22:00-06:00").unwrap();
        let mut days = [false; 7];
        days[4] = true; // Friday nights only
        let s = Schedule { start, end, days };
        assert!(s.contains(4, 23 * 60));
        assert!(
            s.contains(5, 5 * 60),
            "Saturday 05:00 is still Friday night"
        );
        assert!(!s.contains(5, 23 * 60));
        assert!(
            !s.contains(4, 5 * 60),
            "Friday 05:00 belongs to Thursday night"
        );
        assert!(!s.contains(4, 12 * 60));
        let day = Schedule {
            start: 360,
            end: 1320,
            days: [true; 7],
        };
        assert!(day.contains(0, 360) && !day.contains(0, 1320));
        assert!(Schedule::parse("25:00-06:00").is_err());
        assert!(Schedule::parse("06:00-06:00").is_err());
        assert!(Schedule::parse("0600-0700").is_err());
    }

    #[test]
    fn every_builtin_pack_is_valid() {
        let mut loader = PackLoader {
            dirs: vec![],
            cache: HashMap::new(),
        };
        let mut diags = Diagnostics::default();
        let names: Vec<&str> = PackLoader::builtin_names().collect();
        assert!(names.len() >= 10, "{names:?}");
        for n in names {
            let p = loader.load(n, Some("regional"), &mut diags);
            assert!(matches!(p, Ok(Some(_))), "{n}: {diags}");
        }
        assert!(diags.is_empty(), "{diags}");
    }
}
