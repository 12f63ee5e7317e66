//! QNs: the request number of a frame, `YYYYMMDDhhmmsszzz` in the site's local time
//! (domain.md §3.2 [P]). A platform matches its CN=9014 to a frame by QN, so QNs must be
//! unique per connection even when several CNs fire in the same millisecond (a clock-derived
//! QN collides then; hj212-field.md §4.3 [S]): each QN is at least one millisecond after the
//! last one given out, so the "time" in a QN may run a few ms ahead of the clock in a burst.

use jiff::tz::TimeZone;

/// Gives out strictly increasing QNs.
#[derive(Debug, Clone)]
pub struct Qns {
    tz: TimeZone,
    last_ms: i64,
}

impl Qns {
    pub fn new(tz: TimeZone) -> Qns {
        Qns {
            tz,
            last_ms: i64::MIN,
        }
    }

    /// The next QN at `now_ms` (the gateway's clock).
    pub fn next(&mut self, now_ms: i64) -> String {
        let ms = now_ms.max(self.last_ms.saturating_add(1));
        self.last_ms = ms;
        format_qn(&self.tz, ms)
    }
}

/// `YYYYMMDDhhmmsszzz` of `ms` in `tz`: DataTime's digits and the milliseconds.
pub fn format_qn(tz: &TimeZone, ms: i64) -> String {
    format!(
        "{}{:03}",
        super::frames::data_time(tz, ms),
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qns_are_local_and_never_repeat_within_a_millisecond() {
        let tz = TimeZone::get("Asia/Shanghai").expect("tz");
        let mut q = Qns::new(tz);
        // 2025-12-01T02:03:04.005Z is 10:03:04.005 in Shanghai.
        let t = 1_764_554_584_005;
        assert_eq!(q.next(t), "20251201100304005");
        assert_eq!(q.next(t), "20251201100304006");
        assert_eq!(
            q.next(t - 1000),
            "20251201100304007",
            "a clock stepped back"
        );
        assert_eq!(q.next(t + 10), "20251201100304015");
    }
}
