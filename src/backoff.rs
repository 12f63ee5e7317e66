//! Capped exponential backoff with optional jitter, sans IO: it says how long to wait, the
//! caller sleeps. One for every retry loop: the writer's retries, the MQTT reconnects and a
//! failing Modbus device's polls, each with its own initial delay, cap and jitter.

use std::time::Duration;

use crate::rand::Jitter;

/// Doubling from `initial` to `cap`; with jitter, each delay is drawn from
/// `[delay × (1 − jitter), delay]`, so many gateways recovering together do not stampede.
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    jitter: f64,
    attempt: u32,
    rand: Jitter,
}

impl Backoff {
    /// No jitter: `initial`, `2 × initial`, … up to `cap`.
    pub fn new(initial: Duration, cap: Duration) -> Self {
        Self {
            initial,
            cap,
            jitter: 0.0,
            attempt: 0,
            rand: Jitter::new(),
        }
    }

    /// Each delay a random point in its upper `fraction` (0: none, 0.5: the upper half).
    pub fn jittered(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// The wait before the next attempt; each call doubles the next one, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let r = if self.jitter > 0.0 {
            self.rand.next_f64()
        } else {
            1.0
        };
        let d = delay(self.initial, self.cap, self.attempt, self.jitter, r);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// New bounds for the delays to come, keeping the count (a Modbus device's interval is a
    /// site duration, shorter in a demo replay until it catches up with the wall clock).
    pub fn set_bounds(&mut self, initial: Duration, cap: Duration) {
        self.initial = initial;
        self.cap = cap;
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Delays handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// The delay before attempt `attempt` (0-based): `initial × 2^attempt`, at most `cap`, scaled
/// into `[1 − jitter, 1]` by `rand01` (1.0: the full delay).
pub fn delay(initial: Duration, cap: Duration, attempt: u32, jitter: f64, rand01: f64) -> Duration {
    let base = initial
        .saturating_mul(2u32.saturating_pow(attempt.min(30)))
        .min(cap);
    let factor = 1.0 - jitter.clamp(0.0, 1.0) * (1.0 - rand01.clamp(0.0, 1.0));
    if factor >= 1.0 {
        return base;
    }
    // `mul_f64` would panic on a result past Duration::MAX; keep the base then.
    Duration::try_from_secs_f64(base.as_secs_f64() * factor).map_or(base, |d| d.min(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn doubles_to_the_cap_and_jitters_into_the_upper_part() {
        let cap = Duration::from_secs(60);
        assert_eq!(delay(MS(500), cap, 0, 0.5, 1.0), MS(500));
        assert_eq!(delay(MS(500), cap, 0, 0.5, 0.0), MS(250));
        assert_eq!(delay(MS(500), cap, 3, 0.5, 0.999_999).as_millis(), 3999);
        assert_eq!(delay(MS(500), cap, 30, 0.5, 1.0), cap);
        assert_eq!(delay(MS(500), cap, 30, 0.5, 0.0), cap / 2);
        assert_eq!(delay(MS(500), cap, u32::MAX, 0.0, 0.3), cap);
        // No jitter: the random number does not matter.
        assert_eq!(delay(MS(500), cap, 2, 0.0, 0.0), MS(2000));
        // An initial delay above the cap is the cap.
        assert_eq!(delay(Duration::from_secs(90), cap, 0, 0.0, 1.0), cap);
    }

    #[test]
    fn next_delay_walks_the_sequence_and_reset_starts_it_again() {
        // As a failing Modbus device: its interval, doubling, capped at 60 s, no jitter.
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(60));
        let secs: Vec<u64> = (0..6).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 60, 60]);
        assert_eq!(b.attempts(), 6);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.next_delay(), Duration::from_secs(5));
        // New bounds keep the count.
        b.set_bounds(Duration::from_secs(1), Duration::from_secs(3));
        assert_eq!(b.next_delay(), Duration::from_secs(2));
        assert_eq!(b.next_delay(), Duration::from_secs(3));
    }

    #[test]
    fn jittered_delays_stay_in_their_band() {
        // As the MQTT reconnect: 1 s doubling to 30 s, in the upper half.
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).jittered(0.5);
        for _ in 0..200 {
            b.reset();
            for full in [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000] {
                let d = b.next_delay();
                assert!(d >= MS(full / 2) && d <= MS(full), "{d:?} for {full} ms");
            }
        }
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let mut b = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(b.next_delay(), Duration::MAX);
        assert_eq!(b.next_delay(), Duration::MAX);
    }
}
