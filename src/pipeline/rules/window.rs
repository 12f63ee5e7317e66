//! Rolling time windows with O(1) aggregates: arithmetic mean, energy mean (Leq) and max.
//!
//! Readings are kept in time order; a reading older than the window's span (relative to the
//! newest) falls out. Sums are kept running and recomputed from the readings now and then, so
//! float error cannot build up over days of adds and subtracts. A reading with a timestamp the
//! window already holds is a redelivery and is ignored, so at-least-once delivery cannot count
//! a value twice.

use std::collections::VecDeque;

use crate::config::rules::Aggregate;

/// Recompute the running sum from scratch after this many removals.
const RECOMPUTE_EVERY: u32 = 1024;

#[derive(Debug, Clone)]
pub struct Window {
    span_ms: i64,
    agg: Aggregate,
    items: VecDeque<(i64, f64)>,
    /// Sum of values (mean) or of energies 10^(L/10) (Leq).
    sum: f64,
    /// Candidates for the max, decreasing values with increasing times.
    maxq: VecDeque<(i64, f64)>,
    removals: u32,
    /// The last few gaps between readings (ms), to estimate the interval when it is not
    /// known. `u32`: a gap of more than 49 days counts as 49 days, which estimates no coverage
    /// differently, and a hub's windows are 60 bytes smaller each.
    gaps: [u32; GAPS],
    gap_count: u32,
}

/// How many recent gaps the interval estimate looks at (their median).
const GAPS: usize = 15;

fn energy(l: f64) -> f64 {
    10f64.powf(l / 10.0)
}

impl Window {
    pub fn new(span_ms: i64, agg: Aggregate) -> Self {
        Self {
            span_ms: span_ms.max(1),
            agg,
            items: VecDeque::new(),
            sum: 0.0,
            maxq: VecDeque::new(),
            removals: 0,
            gaps: [0; GAPS],
            gap_count: 0,
        }
    }

    fn term(&self, v: f64) -> f64 {
        match self.agg {
            Aggregate::Leq => energy(v),
            _ => v,
        }
    }

    /// Adds a reading and drops the ones that fell out of the window. Returns `false` for a
    /// redelivered reading (same timestamp as one already held).
    pub fn push(&mut self, t: i64, v: f64) -> bool {
        match self.items.back() {
            Some(&(last, _)) if t < last => {
                // Late (backfilled) reading: insert in order, rebuild the max candidates.
                let pos = self.items.partition_point(|&(ti, _)| ti < t);
                if self.items.get(pos).is_some_and(|&(ti, _)| ti == t) {
                    return false;
                }
                if t <= last - self.span_ms {
                    return false;
                }
                self.items.insert(pos, (t, v));
                self.sum += self.term(v);
                self.rebuild_max();
                return true;
            }
            Some(&(last, _)) if t == last => return false,
            _ => {}
        }
        if let Some(&(last, _)) = self.items.back() {
            let gap = u32::try_from(t - last).unwrap_or(u32::MAX);
            self.gaps[self.gap_count as usize % GAPS] = gap;
            // Wrapping: only the last GAPS matter, and GAPS divides no power of two, so keep
            // the count below a multiple of GAPS instead of letting it wrap.
            self.gap_count = if self.gap_count >= 2 * GAPS as u32 {
                self.gap_count - GAPS as u32 + 1
            } else {
                self.gap_count + 1
            };
        }
        self.items.push_back((t, v));
        self.sum += self.term(v);
        if self.agg == Aggregate::Max {
            while self.maxq.back().is_some_and(|&(_, m)| m <= v) {
                self.maxq.pop_back();
            }
            self.maxq.push_back((t, v));
        }
        self.evict(t);
        true
    }

    /// Drops readings at or before `now - span`.
    pub fn evict(&mut self, now: i64) {
        let cutoff = now - self.span_ms;
        let mut largest_removed: f64 = 0.0;
        while let Some(&(t, v)) = self.items.front() {
            if t > cutoff {
                break;
            }
            self.items.pop_front();
            let term = self.term(v);
            self.sum -= term;
            largest_removed = largest_removed.max(term.abs());
            self.removals += 1;
        }
        // Taking a loud 110 dB (10^11) out of a sum of quiet 30 dB terms (10^3) leaves the
        // rounding error of the big one behind: start the sum afresh when that happens.
        if largest_removed > self.sum.abs() * 1e3 {
            self.removals = RECOMPUTE_EVERY;
        }
        while self.maxq.front().is_some_and(|&(t, _)| t <= cutoff) {
            self.maxq.pop_front();
        }
        if self.removals >= RECOMPUTE_EVERY {
            self.sum = self.items.iter().map(|&(_, v)| self.term(v)).sum();
            self.removals = 0;
        }
        if self.items.is_empty() {
            self.sum = 0.0;
        }
    }

    fn rebuild_max(&mut self) {
        if self.agg != Aggregate::Max {
            return;
        }
        self.maxq.clear();
        for &(t, v) in &self.items {
            while self.maxq.back().is_some_and(|&(_, m)| m <= v) {
                self.maxq.pop_back();
            }
            self.maxq.push_back((t, v));
        }
    }

    /// The aggregate of what the window holds.
    pub fn value(&self) -> Option<f64> {
        let n = self.items.len();
        if n == 0 {
            return None;
        }
        Some(match self.agg {
            Aggregate::Mean => self.sum / n as f64,
            Aggregate::Leq => 10.0 * (self.sum.max(f64::MIN_POSITIVE) / n as f64).log10(),
            Aggregate::Max => self.maxq.front().map_or(f64::NAN, |&(_, m)| m),
            Aggregate::Each => self.items.back().map_or(f64::NAN, |&(_, v)| v),
        })
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Share of the expected readings present, given the readings' interval. Without a known
    /// interval it is taken from the median of the last few gaps between readings (cheap, and
    /// not fooled by one long outage).
    pub fn coverage(&self, interval_ms: Option<i64>) -> f64 {
        let n = self.items.len();
        let interval = match interval_ms {
            Some(i) if i > 0 => i,
            _ => {
                let k = (self.gap_count as usize).min(GAPS);
                if k == 0 {
                    return 0.0;
                }
                let mut g = self.gaps;
                let recent = &mut g[..k];
                recent.sort_unstable();
                i64::from(recent[k / 2])
            }
        };
        let expected = (self.span_ms as f64 / interval.max(1) as f64).max(1.0);
        (n as f64 / expected).min(1.0)
    }

    /// The readings, oldest first (for saving the window across a restart).
    pub fn readings(&self) -> impl Iterator<Item = (i64, f64)> + '_ {
        self.items.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(items: &[(i64, f64)], now: i64, span: i64, agg: Aggregate) -> Option<f64> {
        let inside: Vec<f64> = items
            .iter()
            .filter(|(t, _)| *t > now - span && *t <= now)
            .map(|(_, v)| *v)
            .collect();
        if inside.is_empty() {
            return None;
        }
        let n = inside.len() as f64;
        Some(match agg {
            Aggregate::Mean => inside.iter().sum::<f64>() / n,
            Aggregate::Leq => {
                10.0 * (inside.iter().map(|l| 10f64.powf(l / 10.0)).sum::<f64>() / n).log10()
            }
            Aggregate::Max => inside.iter().cloned().fold(f64::MIN, f64::max),
            Aggregate::Each => *inside.last().unwrap_or(&f64::NAN),
        })
    }

    #[test]
    fn leq_is_the_energy_mean() {
        let mut w = Window::new(60_000, Aggregate::Leq);
        w.push(1, 60.0);
        w.push(2, 70.0);
        // 10·lg((10^6 + 10^7)/2) = 67.40 dB
        assert!((w.value().unwrap() - 67.403_626_894_942_44).abs() < 1e-9);
        // The same level always gives that level.
        let mut w = Window::new(60_000, Aggregate::Leq);
        for t in 0..100 {
            w.push(t, 55.0);
        }
        assert!((w.value().unwrap() - 55.0).abs() < 1e-9);
    }

    #[test]
    fn redeliveries_are_not_counted_twice_and_late_readings_fit_in() {
        let mut w = Window::new(10_000, Aggregate::Mean);
        assert!(w.push(1000, 10.0));
        assert!(w.push(2000, 20.0));
        assert!(!w.push(2000, 20.0));
        assert!(!w.push(1000, 10.0));
        assert!(w.push(1500, 30.0));
        assert_eq!(w.len(), 3);
        assert_eq!(w.value(), Some(20.0));
    }

    #[test]
    fn coverage_counts_expected_readings() {
        let mut w = Window::new(60_000, Aggregate::Mean);
        for t in (0..45).map(|i| 15_000 + i * 1000) {
            w.push(t, 1.0);
        }
        assert!((w.coverage(Some(1000)) - 0.75).abs() < 1e-9);
        assert!((w.coverage(None) - 0.75).abs() < 1e-9);
        assert!(w.coverage(Some(500)) < 0.75);
    }

    proptest! {
        /// Running aggregates equal a from-scratch computation over the same readings.
        #[test]
        fn running_aggregates_match_a_naive_reference(
            steps in proptest::collection::vec((1i64..5000, 30.0f64..110.0), 1..400),
            span in 1000i64..60_000,
            which in 0usize..3,
        ) {
            let agg = [Aggregate::Mean, Aggregate::Leq, Aggregate::Max][which];
            let mut w = Window::new(span, agg);
            let mut t = 0;
            let mut all = Vec::new();
            for (dt, v) in steps {
                t += dt;
                w.push(t, v);
                all.push((t, v));
                let want = naive(&all, t, span, agg).unwrap();
                let got = w.value().unwrap();
                // Leq runs on energies (10^(v/10), up to 1e11 for 110 dB): after a loud reading
                // leaves, the running sum keeps ~1e-16 × 1e11 of rounding, which is 1e-7 dB on a
                // quiet 30 dB: far below the 0.1 dB anyone reads, so Leq is held to 1e-6 dB.
                let tolerance = match agg {
                    Aggregate::Leq => 1e-6,
                    _ => 1e-9 * want.abs().max(1.0),
                };
                prop_assert!((got - want).abs() <= tolerance, "{got} vs {want}");
            }
        }
    }
}
