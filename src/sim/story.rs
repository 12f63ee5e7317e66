//! The demo site's day: what happens when, in local site time.
//!
//! On top of the day's ordinary values (see `scenario`), every day of the demo site brings:
//! - 07:00–12:00 and 13:00–19:00 earthwork, wetted by the spray line — except 15:00–15:40,
//!   when nobody switched it back on after a refill (a wet-work gap);
//! - a muck truck leaving every 45 minutes from 07:20, each washed at the wash station in the
//!   six minutes before — except the 11:05 truck, which leaves unwashed and uncovered;
//! - a dust episode from 08:00 to 09:30 (PM10 up to +170 µg/m³) that trips the site's
//!   15-minute PM10 rule and switches the mist cannons on, which knock it down by two thirds;
//! - an uncovered pile seen by the AI camera from 15:10 until 16:20;
//! - the wind-speed sensor off the bus from 14:00 to 14:40;
//! - night work from 22:10 to 23:00 at 63 dB(A), over GB 12523's night limit.
//!
//! Pure functions of the local hour (0..24, fractional), so the story can be checked without
//! running it.

/// A muck truck leaving through the south gate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exit {
    /// Local hour of the exit.
    pub hour: f64,
    pub plate: &'static str,
    /// Was the wash station run for it (and was it covered)?
    pub washed: bool,
    pub covered: bool,
}

/// An AI camera's detection, open from `open` to `clear` (local hours).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sighting {
    pub open: f64,
    pub clear: f64,
    pub kind: &'static str,
    pub id: &'static str,
}

const PLATES: &[&str] = &[
    "川A·D1234",
    "川A·F5678",
    "川A·K2468",
    "川A·M1357",
    "川A·Q8642",
];

/// The first exit, the gap between exits and the number of exits per day.
const FIRST_EXIT: f64 = 7.0 + 20.0 / 60.0;
const EXIT_EVERY: f64 = 0.75;
const EXITS: usize = 16;
/// The exit that is neither washed nor covered.
const BAD_EXIT: usize = 5;
/// The wash runs from 6 to 1 minutes before a washed exit.
const WASH_FROM: f64 = 6.0 / 60.0;
const WASH_TO: f64 = 1.0 / 60.0;

/// The day's truck exits, in time order.
pub fn exits() -> impl Iterator<Item = Exit> {
    (0..EXITS).map(|i| Exit {
        hour: FIRST_EXIT + EXIT_EVERY * i as f64,
        plate: PLATES[i % PLATES.len()],
        washed: i != BAD_EXIT,
        covered: i != BAD_EXIT,
    })
}

/// The day's AI detections.
pub const SIGHTINGS: &[Sighting] = &[Sighting {
    open: 15.0 + 10.0 / 60.0,
    clear: 16.0 + 20.0 / 60.0,
    kind: "uncovered_pile",
    id: "pile-north",
}];

/// Earthwork hours, as `[compliance].activity` says them.
pub const ACTIVITY: &[&str] = &["07:00-12:00", "13:00-19:00"];

/// The demo's `[compliance].wet_gap`, `max_open`, `wash_min` and `wash_lookback`.
pub const WET_GAP: &str = "20m";
pub const MAX_OPEN: &str = "30m";
pub const WASH_MIN: &str = "3m";
pub const WASH_LOOKBACK: &str = "10m";

/// Is the wash station running?
pub fn washing(h: f64) -> bool {
    exits()
        .filter(|e| e.washed)
        .any(|e| h >= e.hour - WASH_FROM && h < e.hour - WASH_TO)
}

/// Is the spray line on (the site's own timer, not the gateway)?
pub fn spraying(h: f64) -> bool {
    let working = (7.0..12.0).contains(&h) || (13.0..19.0).contains(&h);
    working && !(15.0..15.0 + 40.0 / 60.0).contains(&h)
}

/// How much the dust episode adds to PM10 at the dust monitor; the mist cannons, once on,
/// take two thirds of it away.
pub fn pm10_boost(h: f64, cannons_on: bool) -> f64 {
    if !(8.0..9.5).contains(&h) {
        return 0.0;
    }
    // Up over 20 minutes, a plateau, down over the last 20.
    let ramp = ((h - 8.0) * 3.0).min((9.5 - h) * 3.0).min(1.0);
    let lift = 170.0 * ramp;
    if cannons_on { lift / 3.0 } else { lift }
}

/// Night work: the noise level the sound meter hears instead of the quiet night.
pub fn night_work_noise(h: f64) -> Option<f64> {
    (NIGHT_WORK_FROM..NIGHT_WORK_TO)
        .contains(&h)
        .then_some(63.0)
}

/// Night work, in local hours.
pub const NIGHT_WORK_FROM: f64 = 22.0 + 10.0 / 60.0;
pub const NIGHT_WORK_TO: f64 = 23.0;

/// The device that is off the bus now, if any.
pub fn offline(h: f64) -> Option<&'static str> {
    (14.0..14.0 + 40.0 / 60.0)
        .contains(&h)
        .then_some("wind-speed-01")
}

/// Did the moment `at` (a local hour) fall in the step `(from, to]`, which crosses midnight
/// when `to < from`? Picks the exits and detections due since the last step.
pub fn passed(from: f64, to: f64, at: f64) -> bool {
    if from <= to {
        at > from && at <= to
    } else {
        at > from || at <= to
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_exit_is_unwashed_and_the_others_have_a_wash_before_them() {
        let all: Vec<Exit> = exits().collect();
        assert_eq!(all.len(), 16);
        assert_eq!(all.iter().filter(|e| !e.washed).count(), 1);
        let bad = all[BAD_EXIT];
        assert!(
            (bad.hour - (11.0 + 5.0 / 60.0)).abs() < 1e-9,
            "{}",
            bad.hour
        );
        assert!(!bad.covered);
        for e in &all {
            // Washing 3 minutes before the exit only when the truck was washed.
            assert_eq!(washing(e.hour - 3.0 / 60.0), e.washed, "{e:?}");
            assert!(!washing(e.hour));
        }
        assert!(all.last().is_some_and(|e| e.hour < 19.0));
    }

    #[test]
    fn the_episodes_come_at_their_hours() {
        assert_eq!(pm10_boost(7.9, false), 0.0);
        assert!((pm10_boost(8.75, false) - 170.0).abs() < 1e-9);
        assert!((pm10_boost(8.75, true) - 170.0 / 3.0).abs() < 1e-9);
        assert_eq!(night_work_noise(22.5), Some(63.0));
        assert_eq!(night_work_noise(23.0), None);
        assert_eq!(night_work_noise(21.0), None);
        assert_eq!(offline(14.2), Some("wind-speed-01"));
        assert!(spraying(10.0) && !spraying(15.3) && !spraying(12.5) && !spraying(20.0));
    }

    #[test]
    fn passed_handles_midnight() {
        assert!(passed(10.0, 11.0, 10.5));
        assert!(!passed(10.0, 11.0, 10.0));
        assert!(passed(23.9, 0.1, 0.05));
        assert!(passed(23.9, 0.1, 23.95));
        assert!(!passed(23.9, 0.1, 12.0));
    }
}
