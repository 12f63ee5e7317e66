//! Compact per-device state keyed by metric name. A hub holds state for every metric of
//! thousands of stations: a `HashMap<String, _>` per device cost its table (16 buckets for 9
//! metrics) and a heap copy of each name. Here a device's metrics are a `Vec` of exactly its
//! length, searched linearly (a device has a handful of metrics), and each name is one shared
//! `Arc<str>` from an interner, so a device × metric entry costs no allocation of its own.

use std::collections::HashSet;
use std::sync::Arc;

/// Metric names seen, each kept once. Bounded by the distinct names of the configuration's
/// profiles and factor maps (what devices can report), as the per-device copies were before.
#[derive(Debug, Default)]
pub struct Names {
    set: HashSet<Arc<str>>,
}

impl Names {
    /// The shared copy of `name`.
    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.set.get(name) {
            return n.clone();
        }
        let n: Arc<str> = name.into();
        self.set.insert(n.clone());
        n
    }
}

/// A small map from metric name to `V`, in insertion order.
#[derive(Debug, Clone)]
pub struct ByMetric<V> {
    entries: Vec<(Arc<str>, V)>,
}

impl<V> Default for ByMetric<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<V> ByMetric<V> {
    pub fn get(&self, metric: &str) -> Option<&V> {
        self.entries
            .iter()
            .find(|(k, _)| &**k == metric)
            .map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, metric: &str) -> Option<&mut V> {
        self.entries
            .iter_mut()
            .find(|(k, _)| &**k == metric)
            .map(|(_, v)| v)
    }

    /// The value of `metric`, inserting `make()` under the shared name first when absent.
    pub fn get_or_insert_with(
        &mut self,
        names: &mut Names,
        metric: &str,
        make: impl FnOnce() -> V,
    ) -> &mut V {
        let i = match self.entries.iter().position(|(k, _)| &**k == metric) {
            Some(i) => i,
            None => {
                // Exactly one more: a device's metrics arrive once each, and a doubling
                // `Vec` would hold up to twice the room for ever.
                self.entries.reserve_exact(1);
                self.entries.push((names.get(metric), make()));
                self.entries.len() - 1
            }
        };
        &mut self.entries[i].1
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries.iter().map(|(k, v)| (&**k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shared_and_entries_exact() {
        let mut names = Names::default();
        let mut a: ByMetric<u32> = ByMetric::default();
        let mut b: ByMetric<u32> = ByMetric::default();
        for (i, m) in ["pm10", "pm2_5", "tsp"].iter().enumerate() {
            *a.get_or_insert_with(&mut names, m, || 0) += i as u32;
            *b.get_or_insert_with(&mut names, m, || 10) += 1;
        }
        *a.get_or_insert_with(&mut names, "pm10", || 99) += 5;
        assert_eq!(a.get("pm10"), Some(&5));
        assert_eq!(a.get("tsp"), Some(&2));
        assert_eq!(b.get("pm2_5"), Some(&11));
        assert_eq!(a.get("noise"), None);
        assert_eq!(a.entries.capacity(), 3);
        assert!(Arc::ptr_eq(&a.entries[1].0, &b.entries[1].0));
        assert_eq!(
            a.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["pm10", "pm2_5", "tsp"]
        );
    }
}
