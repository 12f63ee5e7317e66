//! Retry timing: capped exponential backoff with jitter, and the `Retry-After` header.

use std::time::Duration;

/// Longest wait taken from a server's `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Backoff before retry number `attempt` (0-based): 500 ms doubling to `cap`, then a random
/// point in the upper half of that, so many gateways recovering together do not stampede.
pub fn backoff(attempt: u32, cap: Duration, rand01: f64) -> Duration {
    let base = Duration::from_millis(500)
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(cap);
    base.mul_f64(0.5 + 0.5 * rand01.clamp(0.0, 1.0))
}

/// Parses `Retry-After`: delay-seconds, or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let v = value.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = jiff::fmt::rfc2822::DateTimeParser::new()
            .parse_timestamp(v)
            .ok()?;
        let wait = at.duration_since(now);
        Duration::try_from(wait).unwrap_or(Duration::ZERO)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let cap = Duration::from_secs(60);
        assert_eq!(backoff(0, cap, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(0, cap, 0.0), Duration::from_millis(250));
        assert_eq!(backoff(3, cap, 0.999_999).as_millis(), 3999);
        assert_eq!(backoff(30, cap, 1.0), cap);
        assert_eq!(backoff(30, cap, 0.0), cap / 2);
    }

    #[test]
    fn retry_after_forms() {
        let now: jiff::Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Thu, 26 Nov 2026 12:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Thu, 26 Nov 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("99999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
