//! A log throttle: the first few lines of a kind per window, then one summary of how many were
//! left out. A hub hears thousands of monitors; a broken one must not flood the journal.

/// Lines let through per window.
const PER_WINDOW: u32 = 5;
/// The window, ms.
const WINDOW_MS: i64 = 60_000;

#[derive(Debug, Default)]
pub struct Throttle {
    window_start: i64,
    in_window: u32,
    suppressed: u64,
}

/// What to do with one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `suppressed` lines were left out before it (say so).
    Log { suppressed: u64 },
    /// Leave it out (counted).
    Skip,
}

impl Throttle {
    pub fn check(&mut self, now_ms: i64) -> Verdict {
        if now_ms - self.window_start >= WINDOW_MS {
            self.window_start = now_ms;
            self.in_window = 0;
        }
        if self.in_window < PER_WINDOW {
            self.in_window += 1;
            Verdict::Log {
                suppressed: std::mem::take(&mut self.suppressed),
            }
        } else {
            self.suppressed += 1;
            Verdict::Skip
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_a_minute_then_a_count_of_the_rest() {
        let mut t = Throttle::default();
        let logged = (0..100)
            .filter(|i| matches!(t.check(1_000 + i), Verdict::Log { .. }))
            .count();
        assert_eq!(logged, 5);
        assert_eq!(t.check(61_000), Verdict::Log { suppressed: 95 });
    }
}
