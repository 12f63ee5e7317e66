//! The request planner: turns a device's registers into the fewest Modbus reads.
//!
//! Pure (no I/O). Per table, registers are sorted by address and packed greedily into reads:
//! a read grows while it stays within `max_read` registers (or bits) and the hole it would
//! bridge is at most `max_gap`. For intervals sorted by start, packing each read as far as it
//! goes is optimal (an exchange argument: any plan's first read covers a prefix of the sorted
//! registers, and the greedy read covers the longest such prefix), which the property tests
//! check against an exhaustive dynamic programme.

use crate::register::Table;
pub use crate::register::{Limits, Span, fits_address_space};

/// One Modbus read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    pub table: Table,
    pub start: u16,
    pub count: u16,
}

impl Read {
    fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }
}

/// Where one value's data is found: which read, and its offset in that read's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub read: usize,
    pub offset: u16,
}

/// The reads for one device and, per input span (same order), where its data is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub reads: Vec<Read>,
    pub locations: Vec<Location>,
}

fn table_max(table: Table, limits: &Limits) -> u32 {
    if table.is_bits() {
        u32::from(table.protocol_max_read())
    } else {
        u32::from(limits.max_read.clamp(1, table.protocol_max_read()))
    }
}

/// Plans the reads for a set of spans. Spans may repeat (several bits of one register);
/// a span wider than the limit gets a read of its own width.
pub fn plan(spans: &[Span], limits: &Limits) -> Plan {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| (spans[i].table, spans[i].address, spans[i].count));

    let mut reads: Vec<Read> = Vec::new();
    let mut locations = vec![Location { read: 0, offset: 0 }; spans.len()];
    for &i in &order {
        let s = spans[i];
        let count = s.count.max(1);
        let joined = match reads.last_mut() {
            Some(r) if !limits.read_singly && r.table == s.table => {
                let end = r.end();
                let gap = u32::from(s.address).saturating_sub(end);
                let new_end = end.max(u32::from(s.address) + u32::from(count));
                let fits = new_end - u32::from(r.start) <= table_max(s.table, limits);
                if gap <= u32::from(limits.max_gap) && fits {
                    r.count = (new_end - u32::from(r.start)) as u16;
                    true
                } else {
                    false
                }
            }
            // Identical spans (bits of one register) share a read even when read singly.
            Some(r) if r.table == s.table && r.start == s.address && r.count == count => true,
            _ => false,
        };
        if !joined {
            reads.push(Read {
                table: s.table,
                start: s.address,
                count,
            });
        }
        let read = reads.len() - 1;
        locations[i] = Location {
            read,
            offset: s.address - reads[read].start,
        };
    }
    Plan { reads, locations }
}

impl Plan {
    /// Total registers and bits requested per cycle.
    pub fn total_count(&self) -> u32 {
        self.reads.iter().map(|r| u32::from(r.count)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hs(address: u16, count: u16) -> Span {
        Span {
            table: Table::Holding,
            address,
            count,
        }
    }

    #[test]
    fn contiguous_registers_make_one_read() {
        let p = plan(
            &[hs(0, 1), hs(1, 1), hs(2, 2), hs(4, 4)],
            &Limits::default(),
        );
        assert_eq!(
            p.reads,
            vec![Read {
                table: Table::Holding,
                start: 0,
                count: 8
            }]
        );
        assert_eq!(p.locations[3], Location { read: 0, offset: 4 });
    }

    #[test]
    fn gaps_and_tables_split_reads() {
        let spans = [
            hs(10, 2),
            hs(0, 1),
            Span {
                table: Table::Input,
                address: 0,
                count: 1,
            },
            hs(3, 1),
        ];
        let p = plan(&spans, &Limits::default());
        assert_eq!(p.reads.len(), 4);
        let p = plan(
            &spans,
            &Limits {
                max_gap: 2,
                ..Limits::default()
            },
        );
        // 0 and 3 join across a hole of 2; 10 is 6 away.
        assert_eq!(p.reads.len(), 3);
        assert_eq!(
            p.reads[0],
            Read {
                table: Table::Holding,
                start: 0,
                count: 4
            }
        );
        assert_eq!(p.locations[3], Location { read: 0, offset: 3 });
    }

    #[test]
    fn max_read_splits_and_singly_separates() {
        let spans: Vec<Span> = (0..10).map(|a| hs(a * 2, 2)).collect();
        let p = plan(
            &spans,
            &Limits {
                max_read: 6,
                ..Limits::default()
            },
        );
        assert_eq!(p.reads.len(), 4);
        assert!(p.reads.iter().all(|r| r.count <= 6));
        let p = plan(
            &spans,
            &Limits {
                read_singly: true,
                ..Limits::default()
            },
        );
        assert_eq!(p.reads.len(), 10);
    }

    #[test]
    fn bits_of_one_register_share_a_read() {
        let p = plan(
            &[hs(5, 1), hs(5, 1)],
            &Limits {
                read_singly: true,
                ..Limits::default()
            },
        );
        assert_eq!(p.reads.len(), 1);
    }

    /// Fewest reads for non-overlapping spans, by dynamic programming over sorted spans.
    fn optimal(spans: &[Span], limits: &Limits) -> usize {
        let mut total = 0;
        for table in [Table::Coil, Table::Discrete, Table::Holding, Table::Input] {
            let mut s: Vec<Span> = spans.iter().copied().filter(|x| x.table == table).collect();
            s.sort_by_key(|x| x.address);
            s.dedup();
            let n = s.len();
            let max = table_max(table, limits);
            let mut dp = vec![usize::MAX; n + 1];
            dp[0] = 0;
            for i in 1..=n {
                for j in (0..i).rev() {
                    // spans j..i in one read?
                    let len = s[i - 1].end() - u32::from(s[j].address);
                    let gaps_ok = (j + 1..i).all(|k| {
                        u32::from(s[k].address) - s[k - 1].end() <= u32::from(limits.max_gap)
                    });
                    if len <= max && gaps_ok && dp[j] != usize::MAX {
                        dp[i] = dp[i].min(dp[j] + 1);
                    }
                }
            }
            total += dp[n];
        }
        total
    }

    /// Non-overlapping spans, as a validated profile has.
    fn spans_strategy() -> impl Strategy<Value = Vec<Span>> {
        proptest::collection::vec((0u8..4, 0u16..6, 1u16..=4, 0u8..2), 0..40).prop_map(|items| {
            let mut next = [0u32; 2];
            let mut out = Vec::new();
            for (gap, _, count, t) in items.iter().map(|(g, x, c, t)| (*g as u32 * 3, x, *c, *t)) {
                let table = if t == 0 { Table::Holding } else { Table::Input };
                let addr = next[t as usize] + gap;
                if addr + u32::from(count) > 0xFFFF {
                    continue;
                }
                out.push(Span {
                    table,
                    address: addr as u16,
                    count,
                });
                next[t as usize] = addr + u32::from(count);
            }
            out
        })
    }

    proptest! {
        #[test]
        fn plans_are_complete_bounded_and_minimal(
            spans in spans_strategy(),
            max_read in 4u16..=125,
            max_gap in 0u16..8,
        ) {
            let limits = Limits { max_read, max_gap, read_singly: false };
            let p = plan(&spans, &limits);
            // every register covered, at the location the plan says
            for (s, loc) in spans.iter().zip(&p.locations) {
                let r = p.reads[loc.read];
                prop_assert_eq!(r.table, s.table);
                prop_assert_eq!(u32::from(r.start) + u32::from(loc.offset), u32::from(s.address));
                prop_assert!(s.end() <= r.end());
            }
            for r in &p.reads {
                // no read over the maximum
                prop_assert!(u32::from(r.count) <= table_max(r.table, &limits));
                // no hole over max_gap inside a read
                let mut inside: Vec<&Span> = spans.iter()
                    .filter(|s| s.table == r.table && s.address >= r.start && s.end() <= r.end())
                    .collect();
                inside.sort_by_key(|s| s.address);
                prop_assert_eq!(u32::from(inside[0].address), u32::from(r.start));
                prop_assert_eq!(inside.iter().map(|s| s.end()).max(), Some(r.end()));
                for w in inside.windows(2) {
                    prop_assert!(u32::from(w[1].address).saturating_sub(w[0].end()) <= u32::from(max_gap));
                }
            }
            // minimal count
            prop_assert_eq!(p.reads.len(), optimal(&spans, &limits));
        }
    }
}
