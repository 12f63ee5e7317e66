//! Dust-suppression linkage (联动): which actuator should be on, and when it may switch. Sans-IO:
//! demands (open alerts of rules with `actuate`), manual overrides, write results and time in;
//! switch commands out. The bus that owns the relay carries them out and reports back.
//!
//! Precedence: shutdown and a lost link → the safe state; then a manual override until it
//! expires; then the rules (on while any of its alerts is open). Guards protect the pump:
//! `min_off` before switching on again, `min_on` before a rule may switch it off (a person, a
//! guard or the safe state may always switch off), `max_on` and the daily budget cut a run and
//! keep it off until the demand that asked for it has cleared.

use std::collections::BTreeMap;

use super::rules::clock::LocalClock;
use crate::config::linkage::ActuatorConfig;

/// After a failed or unanswered switch, wait this long before trying again.
const RETRY_MS: i64 = 5_000;

/// Why an actuator was switched; written to `equipment` as `cause`.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// An alert of this rule is open.
    Rule(String),
    /// No alert asks for it any more.
    Cleared,
    Manual {
        by: String,
        until_ms: i64,
    },
    /// A manual override ended (expired or released): back to the rules.
    ManualEnded,
    MaxOn,
    Budget,
    Shutdown,
    LinkLost,
    /// The state is unknown (start-up): set it.
    Initial,
}

impl Cause {
    pub fn text(&self) -> String {
        match self {
            Cause::Rule(r) => format!("rule {r}"),
            Cause::Cleared => "rule cleared".into(),
            Cause::Manual { by, until_ms } => {
                let until = jiff::Timestamp::from_millisecond(*until_ms)
                    .map_or_else(|_| until_ms.to_string(), |t| t.to_string());
                format!("manual by {by} until {until}")
            }
            Cause::ManualEnded => "manual override ended".into(),
            Cause::MaxOn => "guard max_on".into(),
            Cause::Budget => "guard daily_budget".into(),
            Cause::Shutdown => "safe state: shutdown".into(),
            Cause::LinkLost => "safe state: link to the relay lost".into(),
            Cause::Initial => "start-up".into(),
        }
    }
}

/// A command for the bus: set the actuator's coils.
#[derive(Debug, Clone, PartialEq)]
pub struct Switch {
    pub actuator: usize,
    pub on: bool,
    pub cause: Cause,
}

/// What a switch came to, for the log and the `equipment` point.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub actuator: usize,
    pub requested: bool,
    /// The coils as read back after the write.
    pub read_back: Option<Vec<bool>>,
    pub confirmed: bool,
    pub cause: Cause,
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
struct Manual {
    on: bool,
    until_ms: i64,
    by: String,
}

#[derive(Debug)]
struct State {
    /// Confirmed by reading back; `None` until the first confirmation.
    on: Option<bool>,
    since_ms: i64,
    pending: Option<(Switch, i64)>,
    /// Open alerts asking for it: alert id → rule id.
    demand: BTreeMap<String, String>,
    manual: Option<Manual>,
    /// Cut by max_on or the budget: stays off until the demand clears.
    tripped: Option<Cause>,
    lost: bool,
    retry_after: i64,
    ran_today_ms: i64,
    day_no: i64,
    last_ms: Option<i64>,
}

/// One actuator's state, for the API and the status page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActuatorStatus {
    pub id: String,
    pub device: String,
    pub on: Option<bool>,
    pub since_ms: i64,
    pub mode: &'static str,
    pub manual_until_ms: Option<i64>,
    pub manual_by: Option<String>,
    pub demanded_by: Vec<String>,
    pub tripped: Option<String>,
    pub link_lost: bool,
    pub ran_today_s: i64,
}

pub struct Linkage {
    specs: Vec<ActuatorConfig>,
    states: Vec<State>,
    clock: LocalClock,
    stopping: bool,
}

impl Linkage {
    pub fn new(specs: Vec<ActuatorConfig>, tz: jiff::tz::TimeZone) -> Self {
        let states = specs
            .iter()
            .map(|_| State {
                on: None,
                since_ms: i64::MIN / 2,
                pending: None,
                demand: BTreeMap::new(),
                manual: None,
                tripped: None,
                lost: false,
                retry_after: i64::MIN,
                ran_today_ms: 0,
                day_no: i64::MIN,
                last_ms: None,
            })
            .collect();
        Self {
            specs,
            states,
            clock: LocalClock::new(tz),
            stopping: false,
        }
    }

    pub fn specs(&self) -> &[ActuatorConfig] {
        &self.specs
    }

    pub fn index(&self, id: &str) -> Option<usize> {
        self.specs.iter().position(|s| s.id == id)
    }

    /// An alert of `rule` asks for `actuator` (open = true) or stops asking.
    pub fn demand(&mut self, actuator: &str, alert_id: &str, rule: &str, open: bool) {
        let Some(i) = self.index(actuator) else {
            return;
        };
        let s = &mut self.states[i];
        if open {
            s.demand.insert(alert_id.to_string(), rule.to_string());
        } else {
            s.demand.remove(alert_id);
            if s.demand.is_empty() {
                s.tripped = None;
            }
        }
    }

    /// A manual override: `Some(on)` for `for_ms`, or `None` to hand back to the rules.
    pub fn manual(
        &mut self,
        actuator: &str,
        on: Option<bool>,
        for_ms: i64,
        by: &str,
        now_ms: i64,
    ) -> Result<Option<i64>, String> {
        let i = self
            .index(actuator)
            .ok_or_else(|| format!("no actuator \"{actuator}\""))?;
        let s = &mut self.states[i];
        match on {
            Some(on) => {
                if for_ms <= 0 {
                    return Err("an override needs a duration longer than zero".into());
                }
                let until_ms = now_ms.saturating_add(for_ms);
                s.manual = Some(Manual {
                    on,
                    until_ms,
                    by: by.to_string(),
                });
                // A person's decision starts afresh: a guard's cut no longer holds.
                s.tripped = None;
                Ok(Some(until_ms))
            }
            None => {
                s.manual = None;
                Ok(None)
            }
        }
    }

    /// The link to an actuator's device came back (`true`) or was lost.
    pub fn link(&mut self, device: &str, up: bool) {
        for (spec, s) in self.specs.iter().zip(&mut self.states) {
            if spec.device == device && !up && !s.lost {
                s.lost = true;
                s.on = None;
            }
        }
    }

    /// From now on every actuator goes to its safe state.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// Forgets which alerts hold each actuator on (after a reload the open alerts ask again,
    /// perhaps for other actuators); states and hand overrides stay.
    pub fn clear_demands(&mut self) {
        for s in &mut self.states {
            s.demand.clear();
        }
    }

    /// Whether every actuator is confirmed in its safe state (or cannot be reached).
    pub fn settled(&self) -> bool {
        self.specs
            .iter()
            .zip(&self.states)
            .all(|(spec, s)| s.on == Some(spec.safe_on) || (s.pending.is_none() && s.lost))
    }

    /// What each actuator should be, and why (before the timing guards).
    fn want(&mut self, i: usize, now: i64) -> (bool, Cause) {
        let spec = &self.specs[i];
        let s = &mut self.states[i];
        if self.stopping {
            return (spec.safe_on, Cause::Shutdown);
        }
        if s.lost {
            return (spec.safe_on, Cause::LinkLost);
        }
        let mut ended = false;
        if let Some(m) = &s.manual {
            if now < m.until_ms {
                return (
                    m.on,
                    Cause::Manual {
                        by: m.by.clone(),
                        until_ms: m.until_ms,
                    },
                );
            }
            s.manual = None;
            ended = true;
        }
        if let Some(c) = &s.tripped {
            return (false, c.clone());
        }
        match s.demand.values().next() {
            Some(rule) => (true, Cause::Rule(rule.clone())),
            None if ended => (false, Cause::ManualEnded),
            None => (false, Cause::Cleared),
        }
    }

    /// Time passes: the switches to make now.
    pub fn tick(&mut self, now: i64) -> Vec<Switch> {
        let mut out = Vec::new();
        for i in 0..self.specs.len() {
            // Running time against the daily budget.
            let day = self.clock.local(now).day;
            let s = &mut self.states[i];
            if s.day_no != day {
                s.day_no = day;
                s.ran_today_ms = 0;
                if s.tripped == Some(Cause::Budget) {
                    s.tripped = None;
                }
            }
            if let Some(last) = s.last_ms
                && s.on == Some(true)
            {
                s.ran_today_ms += (now - last).clamp(0, 60_000);
            }
            s.last_ms = Some(now);

            let (mut want, mut cause) = self.want(i, now);
            let spec = &self.specs[i];
            let s = &mut self.states[i];
            let ruled = matches!(cause, Cause::Rule(_) | Cause::Manual { .. });
            if want && ruled {
                let over_max = spec.max_on.is_some_and(|m| {
                    s.on == Some(true) && now - s.since_ms >= m.as_millis() as i64
                });
                let over_budget = spec
                    .daily_budget
                    .is_some_and(|b| s.ran_today_ms >= b.as_millis() as i64);
                if over_max || over_budget {
                    let guard = if over_max {
                        Cause::MaxOn
                    } else {
                        Cause::Budget
                    };
                    if s.manual.take().is_none() {
                        s.tripped = Some(guard.clone());
                    }
                    want = false;
                    cause = guard;
                }
            }
            let cause = match s.on {
                // Unknown (start-up, or after a lost link): set it, guards do not apply.
                None => {
                    if s.pending.is_some() || now < s.retry_after {
                        continue;
                    }
                    if matches!(cause, Cause::Cleared) {
                        Cause::Initial
                    } else {
                        cause
                    }
                }
                Some(on) => {
                    if let Some((_, sent)) = &s.pending {
                        if now - sent < 4 * RETRY_MS {
                            continue;
                        }
                        // No answer from the bus for long: ask again.
                        s.pending = None;
                    }
                    if want == on || now < s.retry_after {
                        continue;
                    }
                    let held = now - s.since_ms;
                    let allowed = if want {
                        held >= spec.min_off.as_millis() as i64
                    } else {
                        // Only the rules wait for min_on; a person, a guard or safety does not.
                        !matches!(cause, Cause::Cleared | Cause::ManualEnded)
                            || held >= spec.min_on.as_millis() as i64
                    };
                    if !allowed {
                        continue;
                    }
                    cause
                }
            };
            let sw = Switch {
                actuator: i,
                on: want,
                cause,
            };
            s.pending = Some((sw.clone(), now));
            out.push(sw);
        }
        out
    }

    /// The bus's answer to a switch: the coils as read back, or why it failed.
    pub fn result(
        &mut self,
        sw: &Switch,
        read_back: Result<Vec<bool>, String>,
        now: i64,
    ) -> Outcome {
        let s = &mut self.states[sw.actuator];
        if s.pending.as_ref().is_some_and(|(p, _)| p == sw) {
            s.pending = None;
        }
        match read_back {
            Ok(bits) => {
                let all_on = !bits.is_empty() && bits.iter().all(|b| *b);
                let all_off = bits.iter().all(|b| !*b);
                let confirmed = if sw.on { all_on } else { all_off };
                let actual = if confirmed { sw.on } else { all_on };
                if s.on != Some(actual) {
                    s.since_ms = now;
                }
                s.on = Some(actual);
                if confirmed {
                    s.lost = false;
                } else {
                    s.retry_after = now + RETRY_MS;
                }
                Outcome {
                    actuator: sw.actuator,
                    requested: sw.on,
                    read_back: Some(bits),
                    confirmed,
                    cause: sw.cause.clone(),
                    error: (!confirmed).then(|| "the coils read back do not match".to_string()),
                }
            }
            Err(e) => {
                s.retry_after = now + RETRY_MS;
                if !s.lost {
                    s.lost = true;
                    s.on = None;
                }
                Outcome {
                    actuator: sw.actuator,
                    requested: sw.on,
                    read_back: None,
                    confirmed: false,
                    cause: sw.cause.clone(),
                    error: Some(e),
                }
            }
        }
    }

    pub fn status(&self, now: i64) -> Vec<ActuatorStatus> {
        self.specs
            .iter()
            .zip(&self.states)
            .map(|(spec, s)| {
                let manual = s.manual.as_ref().filter(|m| now < m.until_ms);
                ActuatorStatus {
                    id: spec.id.clone(),
                    device: spec.device.clone(),
                    on: s.on,
                    since_ms: s.since_ms.max(0),
                    mode: if self.stopping {
                        "stopping"
                    } else if s.lost {
                        "link-lost"
                    } else if manual.is_some() {
                        "manual"
                    } else if s.tripped.is_some() {
                        "guard"
                    } else {
                        "auto"
                    },
                    manual_until_ms: manual.map(|m| m.until_ms),
                    manual_by: manual.map(|m| m.by.clone()),
                    demanded_by: s.demand.values().cloned().collect(),
                    tripped: s.tripped.as_ref().map(Cause::text),
                    link_lost: s.lost,
                    ran_today_s: s.ran_today_ms / 1000,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const S: i64 = 1000;

    fn spec() -> ActuatorConfig {
        ActuatorConfig {
            id: "mist".into(),
            device: "relay-01".into(),
            coils: vec![("fog_cannon_on".into(), 0)],
            min_on: Duration::from_secs(120),
            min_off: Duration::from_secs(60),
            max_on: Some(Duration::from_secs(1800)),
            daily_budget: Some(Duration::from_secs(3600)),
            safe_on: false,
        }
    }

    /// Ticks, confirming every switch as the relay would; returns the switches made.
    fn run(l: &mut Linkage, t: &mut i64, until: i64) -> Vec<(i64, bool, Cause)> {
        let mut seen = Vec::new();
        while *t < until {
            for sw in l.tick(*t) {
                seen.push((*t, sw.on, sw.cause.clone()));
                let n = l.specs[sw.actuator].coils.len();
                l.result(&sw, Ok(vec![sw.on; n]), *t);
            }
            *t += S;
        }
        seen
    }

    /// [`run`] for `d` from now.
    fn run_for(l: &mut Linkage, t: &mut i64, d: i64) -> Vec<(i64, bool, Cause)> {
        let until = *t + d;
        run(l, t, until)
    }

    fn linkage() -> (Linkage, i64) {
        let mut l = Linkage::new(vec![spec()], jiff::tz::TimeZone::UTC);
        let mut t = 1_795_683_600_000; // 2026-11-26 09:00 UTC
        let first = run(&mut l, &mut t, 1_795_683_600_000 + 1);
        assert_eq!(first, vec![(1_795_683_600_000, false, Cause::Initial)]);
        (l, t)
    }

    #[test]
    fn a_rule_switches_on_at_once_and_off_after_min_on() {
        let (mut l, mut t) = linkage();
        // min_off counts from start-up's confirmed off.
        t += 60 * S;
        l.demand("mist", "a1", "pm10-15m", true);
        let on = run_for(&mut l, &mut t, S);
        assert_eq!(on, vec![(t - S, true, Cause::Rule("pm10-15m".into()))]);
        let t_on = t - S;
        l.demand("mist", "a1", "pm10-15m", false);
        let off = run(&mut l, &mut t, t_on + 200 * S);
        assert_eq!(off, vec![(t_on + 120 * S, false, Cause::Cleared)]);
    }

    #[test]
    fn max_on_cuts_a_stuck_alert_and_it_stays_off_until_the_alert_clears() {
        let (mut l, mut t) = linkage();
        t += 60 * S;
        l.demand("mist", "a1", "pm10-15m", true);
        let t0 = t;
        let seen = run(&mut l, &mut t, t0 + 3600 * S);
        assert_eq!(
            seen,
            vec![
                (t0, true, Cause::Rule("pm10-15m".into())),
                (t0 + 1800 * S, false, Cause::MaxOn)
            ]
        );
        assert_eq!(l.status(t)[0].mode, "guard");
        // The alert clears and opens again: a new run.
        l.demand("mist", "a1", "pm10-15m", false);
        l.demand("mist", "a2", "pm10-15m", true);
        let again = run_for(&mut l, &mut t, 2 * S);
        assert_eq!(again.len(), 1);
        assert!(again[0].1);
    }

    #[test]
    fn the_daily_budget_stops_the_pump_and_resets_at_midnight() {
        let mut specs = spec();
        specs.max_on = None;
        let mut l = Linkage::new(vec![specs], jiff::tz::TimeZone::UTC);
        let mut t = 1_795_651_200_000 - 3 * 3600 * S; // 21:00 UTC
        run_for(&mut l, &mut t, 61 * S);
        l.demand("mist", "a1", "r", true);
        let seen = run_for(&mut l, &mut t, 2 * 3600 * S);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[1].2, Cause::Budget);
        assert_eq!(seen[1].0 - seen[0].0, 3600 * S);
        // Past midnight the budget is new and the alert still asks.
        let after = run(&mut l, &mut t, 1_795_651_200_000 + 2 * S);
        assert_eq!(after.len(), 1, "{after:?}");
        assert!(after[0].1);
    }

    #[test]
    fn a_manual_override_wins_and_expires() {
        let (mut l, mut t) = linkage();
        t += 60 * S;
        let until = l
            .manual("mist", Some(true), 600 * S, "inspector", t)
            .unwrap();
        assert_eq!(until, Some(t + 600 * S));
        let t0 = t;
        let seen = run(&mut l, &mut t, t0 + 700 * S);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(matches!(seen[0].2, Cause::Manual { .. }));
        assert_eq!(seen[1], (t0 + 600 * S, false, Cause::ManualEnded));
        assert!(l.manual("nope", Some(true), 1, "x", t).is_err());
    }

    #[test]
    fn a_switch_that_reads_back_wrong_is_retried_and_a_lost_link_goes_to_the_safe_state() {
        let (mut l, mut t) = linkage();
        t += 60 * S;
        l.demand("mist", "a1", "r", true);
        let sw = l.tick(t);
        assert_eq!(sw.len(), 1);
        let o = l.result(&sw[0], Ok(vec![false]), t);
        assert!(!o.confirmed);
        assert!(l.tick(t + S).is_empty(), "waits before retrying");
        let again = l.tick(t + 6 * S);
        assert_eq!(again.len(), 1);
        // The write fails: the link is lost; the next attempt is the safe state.
        l.result(&again[0], Err("no valid reply within 1s".into()), t + 6 * S);
        assert!(l.tick(t + 7 * S).is_empty());
        let safe = l.tick(t + 12 * S);
        assert_eq!(
            safe,
            vec![Switch {
                actuator: 0,
                on: false,
                cause: Cause::LinkLost
            }]
        );
        l.result(&safe[0], Ok(vec![false]), t + 12 * S);
        // Confirmed: back to the rules (after min_off).
        let mut t2 = t + 13 * S;
        let back = run(&mut l, &mut t2, t + 80 * S);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0, t + 72 * S);
    }

    #[test]
    fn shutdown_goes_to_the_safe_state_at_once() {
        let (mut l, mut t) = linkage();
        t += 60 * S;
        l.demand("mist", "a1", "r", true);
        run_for(&mut l, &mut t, 2 * S);
        assert!(!l.settled());
        l.stop();
        let sw = l.tick(t);
        assert_eq!(
            sw,
            vec![Switch {
                actuator: 0,
                on: false,
                cause: Cause::Shutdown
            }]
        );
        l.result(&sw[0], Ok(vec![false]), t);
        assert!(l.settled());
    }
}
