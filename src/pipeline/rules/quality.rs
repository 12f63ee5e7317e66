//! Data-quality alerts: a device with no data, a value stuck at one number, a reading outside
//! the sensor's physical range (flagged, and never judged against a limit).

use std::collections::HashMap;
use std::sync::Arc;

use super::names::{ByMetric, Names};
use super::{AlertEvent, AlertKind, AlertState, OpenAlert};
use crate::config::metrics::{Catalog, MetricInfo};
use crate::config::rules::Severity;
use crate::model::device_key;

#[derive(Debug, Clone, Default)]
struct DeviceQ {
    last_seen: i64,
    interval_ms: Option<i64>,
    /// Boxed (like a value's alerts): nearly always none, and a hub holds thousands.
    offline: Option<Box<OpenAlert>>,
    /// Named in the configuration (a Modbus device): expected to report.
    registered: bool,
    /// Readings seen (saturating): a device only a topic named is expected to report once it
    /// has reported [`ESTABLISHED`] times.
    seen: u32,
    /// Its clock is off by more than the allowance.
    drift: Option<Box<OpenAlert>>,
    /// Per metric: stuck, range and flag state.
    values: ByMetric<ValueQ>,
}

/// Readings after which a device nobody configured (an id from an MQTT topic) counts as one
/// that should keep reporting. A stray or mistyped topic, or a flood of made-up ids, raises no
/// offline alert.
pub const ESTABLISHED: u32 = 3;

#[derive(Debug, Clone)]
struct ValueQ {
    /// The metric in the vocabulary (its default range, its stuck time), looked up once.
    info: Option<&'static MetricInfo>,
    last: f64,
    unchanged_since: i64,
    /// What is nearly always absent: an instrument flag held and the value's open alerts.
    /// Boxed, because a hub holds a `ValueQ` for every metric of thousands of stations
    /// (32 bytes instead of 48).
    rare: Option<Box<Rare>>,
}

#[derive(Debug, Clone, Default)]
struct Rare {
    /// Since when, and with which letter, the instrument flags this metric's values.
    flagged_since: Option<(i64, char)>,
    stuck: Option<OpenAlert>,
    out_of_range: Option<OpenAlert>,
    flagged: Option<OpenAlert>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.flagged_since.is_none()
            && self.stuck.is_none()
            && self.out_of_range.is_none()
            && self.flagged.is_none()
    }
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Stuck,
    OutOfRange,
    Flagged,
}

impl Rare {
    fn slot(&mut self, w: Which) -> &mut Option<OpenAlert> {
        match w {
            Which::Stuck => &mut self.stuck,
            Which::OutOfRange => &mut self.out_of_range,
            Which::Flagged => &mut self.flagged,
        }
    }
}

impl ValueQ {
    fn new(metric: &str, last: f64, t: i64) -> ValueQ {
        ValueQ {
            info: Catalog::builtin().get(metric),
            last,
            unchanged_since: t,
            rare: None,
        }
    }

    fn stuck_after(&self) -> Option<i64> {
        self.info
            .and_then(|i| i.stuck_after)
            .map(|d| d.as_millis() as i64)
    }

    fn flagged_since(&self) -> Option<(i64, char)> {
        self.rare.as_ref().and_then(|r| r.flagged_since)
    }

    fn set_flagged_since(&mut self, since: Option<(i64, char)>) {
        match (since, self.rare.as_deref_mut()) {
            (None, None) => {}
            (since, Some(r)) => {
                r.flagged_since = since;
                self.drop_rare_when_empty();
            }
            (since, None) => {
                self.rare = Some(Box::new(Rare {
                    flagged_since: since,
                    ..Rare::default()
                }))
            }
        }
    }

    fn get(&self, w: Which) -> Option<&OpenAlert> {
        let a = self.rare.as_deref()?;
        match w {
            Which::Stuck => a.stuck.as_ref(),
            Which::OutOfRange => a.out_of_range.as_ref(),
            Which::Flagged => a.flagged.as_ref(),
        }
    }

    fn set(&mut self, w: Which, a: OpenAlert) {
        *self.rare.get_or_insert_with(Box::default).slot(w) = Some(a);
    }

    fn take(&mut self, w: Which) -> Option<OpenAlert> {
        let a = self.rare.as_deref_mut()?.slot(w).take();
        self.drop_rare_when_empty();
        a
    }

    fn drop_rare_when_empty(&mut self) {
        if self.rare.as_deref().is_some_and(Rare::is_empty) {
            self.rare = None;
        }
    }
}

/// The default of `flag_alert_after`: half an hour of flagged data (maintenance, calibration)
/// is normal work; longer, someone should look.
pub const FLAG_ALERT_AFTER_MS: i64 = 30 * 60_000;

pub struct Quality {
    offline_after_ms: i64,
    flag_alert_after_ms: i64,
    devices: HashMap<Arc<str>, DeviceQ>,
    names: Names,
}

fn ev(
    kind: AlertKind,
    device: &str,
    metric: &str,
    state: AlertState,
    a: &OpenAlert,
    at: i64,
) -> AlertEvent {
    let rule_id = match kind {
        AlertKind::Offline => "offline",
        AlertKind::Stuck => "stuck",
        AlertKind::Flagged => "data-flag",
        AlertKind::ClockDrift => "clock-drift",
        _ => "out-of-range",
    };
    // A flag alert's letter is kept in its id (`data-flag/<device>/<metric>/<flag>/<since>`), so
    // that it survives a restart with the id.
    let evidence = match kind {
        AlertKind::Flagged => a
            .alert_id
            .rsplit('/')
            .nth(1)
            .map(|f| vec![("flag".to_string(), f.to_string())])
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    AlertEvent {
        alert_id: a.alert_id.clone(),
        kind,
        rule_id: rule_id.to_string(),
        rule: None,
        device: device.to_string(),
        metric: metric.to_string(),
        severity: Severity::Warning,
        state,
        value: a.value,
        threshold: a.threshold,
        since_ms: a.since_ms,
        at_ms: at,
        evidence,
    }
}

/// How long a device may be silent before it is offline: `[alerts].offline_after`, and at
/// least three of its intervals. The status page's "up" uses the same figure.
pub fn offline_after(offline_after_ms: i64, interval_ms: Option<i64>) -> i64 {
    offline_after_ms.max(interval_ms.map_or(0, |i| 3 * i))
}

impl Quality {
    pub fn new(offline_after_ms: i64) -> Self {
        Self {
            offline_after_ms,
            flag_alert_after_ms: FLAG_ALERT_AFTER_MS,
            devices: HashMap::new(),
            names: Names::default(),
        }
    }

    /// A device known from the configuration: it is expected to report from `now` on.
    pub fn register(&mut self, device: &str, interval_ms: Option<i64>, now: i64) {
        let d = self.devices.entry(device_key(device)).or_default();
        d.interval_ms = interval_ms;
        d.registered = true;
        if d.last_seen == 0 {
            d.last_seen = now;
        }
    }

    fn offline_after(&self, d: &DeviceQ) -> i64 {
        offline_after(self.offline_after_ms, d.interval_ms)
    }

    /// The device reported at `t` (a value, or one its instrument flagged): it is not
    /// offline.
    pub fn seen(&mut self, device: &str, t: i64, out: &mut Vec<AlertEvent>) {
        let d = match self.devices.get_mut(device) {
            Some(d) => d,
            None => self.devices.entry(device_key(device)).or_default(),
        };
        d.last_seen = d.last_seen.max(t);
        d.seen = d.seen.saturating_add(1);
        if let Some(a) = d.offline.take() {
            out.push(ev(
                AlertKind::Offline,
                device,
                "",
                AlertState::Closed,
                &a,
                t,
            ));
        }
    }

    pub fn set_flag_alert_after(&mut self, ms: i64) {
        self.flag_alert_after_ms = ms.max(1);
    }

    /// A value the instrument flagged (`flag` not N): the device is seen; the value is not
    /// checked. Held (any letter but N) longer than `flag_alert_after`, it raises the
    /// data-quality alert; the next unflagged value closes it.
    pub fn flagged(
        &mut self,
        device: &str,
        metric: &str,
        t: i64,
        flag: char,
        out: &mut Vec<AlertEvent>,
    ) {
        self.seen(device, t, out);
        let after = self.flag_alert_after_ms;
        let Some(d) = self.devices.get_mut(device) else {
            return; // not reached: `seen` made it
        };
        let q = d
            .values
            .get_or_insert_with(&mut self.names, metric, || ValueQ::new(metric, f64::NAN, t));
        let since = match q.flagged_since() {
            Some((since, _)) if since <= t => since,
            _ => {
                q.set_flagged_since(Some((t, flag)));
                t
            }
        };
        if q.get(Which::Flagged).is_none() && t - since >= after {
            let a = OpenAlert {
                alert_id: format!("data-flag/{device}/{metric}/{flag}/{since}"),
                since_ms: since,
                value: f64::NAN,
                threshold: after as f64 / 1000.0,
                last_notified_ms: t,
            };
            out.push(ev(
                AlertKind::Flagged,
                device,
                metric,
                AlertState::Open,
                &a,
                t,
            ));
            q.set(Which::Flagged, a);
        }
    }

    /// A device's clock against the gateway's (`drift_ms`: arrival minus its time, positive
    /// when it is behind). Off by more than `max_ms` either way opens the alert; back within
    /// half of it closes it (no flapping around the limit).
    pub fn clock_drift(
        &mut self,
        device: &str,
        drift_ms: i64,
        max_ms: i64,
        now: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        let d = match self.devices.get_mut(device) {
            Some(d) => d,
            None => self.devices.entry(device_key(device)).or_default(),
        };
        let off = drift_ms.abs();
        match &d.drift {
            None if off > max_ms => {
                let a = OpenAlert {
                    alert_id: format!("clock-drift/{device}/{now}"),
                    since_ms: now,
                    value: drift_ms as f64 / 1000.0,
                    threshold: max_ms as f64 / 1000.0,
                    last_notified_ms: now,
                };
                out.push(ev(
                    AlertKind::ClockDrift,
                    device,
                    "",
                    AlertState::Open,
                    &a,
                    now,
                ));
                d.drift = Some(Box::new(a));
            }
            Some(_) if off <= max_ms / 2 => {
                if let Some(mut a) = d.drift.take() {
                    a.value = drift_ms as f64 / 1000.0;
                    out.push(ev(
                        AlertKind::ClockDrift,
                        device,
                        "",
                        AlertState::Closed,
                        &a,
                        now,
                    ));
                }
            }
            _ => {}
        }
    }

    /// Checks one reading; `false` when it must not be judged: below the sensor's range, an
    /// impossible value. Above the range the value is flagged (T) but judged: it is at least
    /// the range's top, so it exceeds every limit below it (PM10 over 1,000 µg/m³ happens in
    /// sand episodes). `range` is the device's own (`None`: the metric's default).
    pub fn reading(
        &mut self,
        device: &str,
        metric: &str,
        t: i64,
        v: f64,
        range: Option<(f64, f64)>,
        out: &mut Vec<AlertEvent>,
    ) -> bool {
        self.seen(device, t, out);
        let Some(d) = self.devices.get_mut(device) else {
            return true; // not reached: `seen` made it
        };
        let q = d
            .values
            .get_or_insert_with(&mut self.names, metric, || ValueQ::new(metric, v, t));
        // An unflagged value: the instrument's flag is over.
        q.set_flagged_since(None);
        if let Some(a) = q.take(Which::Flagged) {
            out.push(ev(
                AlertKind::Flagged,
                device,
                metric,
                AlertState::Closed,
                &a,
                t,
            ));
        }
        // The device's own range, else the metric's.
        let range = range.or_else(|| q.info.and_then(|i| i.range));
        let stuck_after = q.stuck_after();
        if let Some((lo, hi)) = range {
            if v < lo || v > hi {
                if q.get(Which::OutOfRange).is_none() {
                    let a = OpenAlert {
                        alert_id: format!("out-of-range/{device}/{metric}/{t}"),
                        since_ms: t,
                        value: v,
                        threshold: if v < lo { lo } else { hi },
                        last_notified_ms: t,
                    };
                    out.push(ev(
                        AlertKind::OutOfRange,
                        device,
                        metric,
                        AlertState::Open,
                        &a,
                        t,
                    ));
                    q.set(Which::OutOfRange, a);
                }
                if v < lo {
                    return false;
                }
            } else if let Some(a) = q.take(Which::OutOfRange) {
                out.push(ev(
                    AlertKind::OutOfRange,
                    device,
                    metric,
                    AlertState::Closed,
                    &a,
                    t,
                ));
            }
        }
        if let Some(after) = stuck_after {
            if v != q.last || t < q.unchanged_since {
                q.last = v;
                q.unchanged_since = t;
                if let Some(a) = q.take(Which::Stuck) {
                    out.push(ev(
                        AlertKind::Stuck,
                        device,
                        metric,
                        AlertState::Closed,
                        &a,
                        t,
                    ));
                }
            } else if q.get(Which::Stuck).is_none() && t - q.unchanged_since >= after {
                let a = OpenAlert {
                    alert_id: format!("stuck/{device}/{metric}/{}", q.unchanged_since),
                    since_ms: q.unchanged_since,
                    value: v,
                    threshold: after as f64 / 1000.0,
                    last_notified_ms: t,
                };
                out.push(ev(
                    AlertKind::Stuck,
                    device,
                    metric,
                    AlertState::Open,
                    &a,
                    t,
                ));
                q.set(Which::Stuck, a);
            }
        }
        true
    }

    /// Devices silent for too long go offline.
    pub fn tick(&mut self, now: i64, out: &mut Vec<AlertEvent>) {
        let limits: Vec<(Arc<str>, i64)> = self
            .devices
            .iter()
            .filter(|(_, d)| {
                d.offline.is_none() && d.last_seen > 0 && (d.registered || d.seen >= ESTABLISHED)
            })
            .map(|(k, d)| (k.clone(), self.offline_after(d)))
            .collect();
        for (device, after) in limits {
            let Some(d) = self.devices.get_mut(&*device) else {
                continue;
            };
            if now - d.last_seen > after {
                let a = OpenAlert {
                    alert_id: format!("offline/{device}/{}", d.last_seen),
                    since_ms: d.last_seen,
                    value: f64::NAN,
                    threshold: after as f64 / 1000.0,
                    last_notified_ms: now,
                };
                out.push(ev(
                    AlertKind::Offline,
                    &device,
                    "",
                    AlertState::Open,
                    &a,
                    now,
                ));
                d.offline = Some(Box::new(a));
            }
        }
    }

    /// Open data-quality alerts as (kind, device, metric, alert).
    pub fn open(&self) -> Vec<(AlertKind, String, String, OpenAlert)> {
        let mut v = Vec::new();
        for (device, d) in &self.devices {
            if let Some(a) = &d.offline {
                v.push((
                    AlertKind::Offline,
                    device.to_string(),
                    String::new(),
                    (**a).clone(),
                ));
            }
            if let Some(a) = &d.drift {
                v.push((
                    AlertKind::ClockDrift,
                    device.to_string(),
                    String::new(),
                    (**a).clone(),
                ));
            }
        }
        for (device, d) in &self.devices {
            for (metric, q) in d.values.iter() {
                if let Some(a) = q.get(Which::Stuck) {
                    v.push((
                        AlertKind::Stuck,
                        device.to_string(),
                        metric.to_string(),
                        a.clone(),
                    ));
                }
                if let Some(a) = q.get(Which::Flagged) {
                    v.push((
                        AlertKind::Flagged,
                        device.to_string(),
                        metric.to_string(),
                        a.clone(),
                    ));
                }
                if let Some(a) = q.get(Which::OutOfRange) {
                    v.push((
                        AlertKind::OutOfRange,
                        device.to_string(),
                        metric.to_string(),
                        a.clone(),
                    ));
                }
            }
        }
        v
    }

    /// Puts back an alert that was open before a restart (not announced again).
    pub fn restore(&mut self, kind: AlertKind, device: &str, metric: &str, a: OpenAlert) {
        match kind {
            AlertKind::Offline => {
                let d = self.devices.entry(device_key(device)).or_default();
                d.last_seen = d.last_seen.max(a.since_ms);
                d.offline = Some(Box::new(a));
            }
            AlertKind::ClockDrift => {
                self.devices.entry(device_key(device)).or_default().drift = Some(Box::new(a));
            }
            AlertKind::Stuck | AlertKind::OutOfRange | AlertKind::Flagged => {
                let q = self
                    .devices
                    .entry(device_key(device))
                    .or_default()
                    .values
                    .get_or_insert_with(&mut self.names, metric, || {
                        ValueQ::new(metric, a.value, a.since_ms)
                    });
                match kind {
                    AlertKind::Stuck => q.set(Which::Stuck, a),
                    AlertKind::Flagged => {
                        let flag = a.alert_id.rsplit('/').nth(1).and_then(|f| f.chars().next());
                        q.set_flagged_since(flag.map(|f| (a.since_ms, f)));
                        q.set(Which::Flagged, a);
                    }
                    _ => q.set(Which::OutOfRange, a),
                }
            }
            _ => {}
        }
    }

    pub fn to_alert(kind: AlertKind, device: &str, metric: &str, a: &OpenAlert) -> AlertEvent {
        ev(
            kind,
            device,
            metric,
            AlertState::Open,
            a,
            a.last_notified_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn a_flag_held_past_its_limit_opens_an_alert_and_a_normal_value_closes_it() {
        // A hub holds one per metric of every station: the rare parts are boxed.
        assert!(std::mem::size_of::<ValueQ>() <= 32);
        let mut q = Quality::new(10 * MIN);
        let mut out = Vec::new();
        let t0 = 1_780_000_000_000;
        for i in 0..=30 {
            q.flagged("m1", "pm10", t0 + i * MIN, 'M', &mut out);
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].kind, AlertKind::Flagged);
        assert_eq!(out[0].state, AlertState::Open);
        assert_eq!(out[0].since_ms, t0);
        assert!(
            out[0].alert_id.ends_with(&format!("/M/{t0}")),
            "{}",
            out[0].alert_id
        );
        // Still flagged: no second alert.
        q.flagged("m1", "pm10", t0 + 31 * MIN, 'M', &mut out);
        assert_eq!(out.len(), 1);
        assert!(q.reading("m1", "pm10", t0 + 32 * MIN, 40.0, None, &mut out));
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[1].state, AlertState::Closed);
        // Nothing is left of it: no flag, no alert, no box.
        let v = q.devices["m1"].values.get("pm10").expect("state");
        assert!(v.rare.is_none());
        // A new flag starts a new span.
        q.flagged("m1", "pm10", t0 + 40 * MIN, 'C', &mut out);
        assert_eq!(
            q.devices["m1"]
                .values
                .get("pm10")
                .and_then(ValueQ::flagged_since),
            Some((t0 + 40 * MIN, 'C'))
        );
        assert_eq!(out.len(), 2);
    }
}
