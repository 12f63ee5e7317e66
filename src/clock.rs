//! The gateway's clock: the wall clock, or — in the demo — a replay of the past.
//!
//! `dustgate demo --speed N` replays the last day of a simulated site: site time starts a day
//! back and runs N times faster than the wall clock until it has caught up, then runs on with
//! it. Everything that judges a site reads site time ([`now_ms`]): reading timestamps, rule
//! windows, the six 100%, the linkage's guards. Intervals in the config are site durations
//! (a poll "every minute" of the replay is a minute between two timestamps), so the tasks that
//! wait for them convert with [`real`]. What measures the gateway itself keeps the wall clock
//! ([`wall_ms`]): the store's append times (uplink lag is a real delay), the writers' outage
//! timings, webhook signatures.
//!
//! `run` never starts a replay: there, site time is the wall clock.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Replay {
    /// Site time at `started`.
    from_ms: i64,
    started: Instant,
    speed: f64,
}

static REPLAY: OnceLock<Replay> = OnceLock::new();

/// The wall clock, in ms since the Unix epoch.
pub fn wall_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Starts a replay from `from_ms` at `speed` times the wall clock. Once per process (the demo
/// calls it before the gateway starts); `false` if a replay was already running.
pub fn start_replay(from_ms: i64, speed: f64) -> bool {
    let speed = if speed.is_finite() && speed >= 1.0 {
        speed
    } else {
        1.0
    };
    REPLAY
        .set(Replay {
            from_ms,
            started: Instant::now(),
            speed,
        })
        .is_ok()
}

/// Site time, in ms since the Unix epoch: the wall clock, or the replay's time until it has
/// caught up with it.
pub fn now_ms() -> i64 {
    let wall = wall_ms();
    match REPLAY.get() {
        None => wall,
        Some(r) => replay_time(r, wall),
    }
}

fn replay_time(r: &Replay, wall: i64) -> i64 {
    let ran = r.started.elapsed().as_secs_f64() * 1000.0 * r.speed;
    (r.from_ms.saturating_add(ran as i64)).min(wall)
}

/// How many times faster than the wall clock site time runs now (1 outside a replay, and once
/// the replay has caught up).
pub fn speed() -> f64 {
    match REPLAY.get() {
        Some(r) if replay_time(r, wall_ms()) < wall_ms() => r.speed,
        _ => 1.0,
    }
}

/// The wall-clock wait for a site duration `d` (at least 1 ms, so a loop never spins).
pub fn real(d: Duration) -> Duration {
    let s = speed();
    if s == 1.0 {
        d
    } else {
        d.div_f64(s).max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_runs_fast_then_meets_the_wall_clock() {
        let wall = 1_000_000_000;
        let r = Replay {
            from_ms: wall - 86_400_000,
            started: Instant::now() - Duration::from_secs(30),
            speed: 1440.0,
        };
        // 30 s at 1440x: 12 h of site time.
        let t = replay_time(&r, wall);
        assert!((t - (wall - 43_200_000)).abs() < 2_000, "{t}");
        let done = Replay {
            started: Instant::now() - Duration::from_secs(61),
            ..r
        };
        assert_eq!(replay_time(&done, wall), wall);
    }

    #[test]
    fn without_a_replay_site_time_is_the_wall_clock() {
        // No test in this binary starts a replay.
        assert!((now_ms() - wall_ms()).abs() < 1_000);
        assert_eq!(real(Duration::from_secs(5)), Duration::from_secs(5));
    }
}
