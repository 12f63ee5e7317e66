//! HJ 212 listeners and their stations as `/metrics`, `/api/status` and the status page show
//! them: connections, frames, answers, rejects by reason, and per station when it last sent,
//! how far its clock is off and what was refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a frame (or a connection) was refused; the label of `dustgate_hj212_rejected_total`.
pub const REJECT_REASONS: &[&str] = &[
    "garbage",
    "header",
    "length",
    "crc",
    "overflow",
    "encrypted",
    "parse",
    "mn",
    "password",
    "rate",
    "datatime",
    "future",
    "connections",
];

/// One station (MN) of a listener.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StationHealth {
    /// Shared with the station (and the site with every station of the site): a hub holds
    /// one of these for each of thousands of stations.
    pub mn: Arc<str>,
    pub device: Arc<str>,
    pub site: Arc<str>,
    /// Open connections that sent this MN last.
    pub connected: u32,
    /// Where it last connected from (shared with its connection).
    pub peer: Arc<str>,
    /// When its last accepted frame arrived (ms; 0: never).
    pub last_frame_ms: i64,
    /// Arrival minus DataTime of its last real-time frame (ms): its clock is behind when
    /// positive.
    pub drift_ms: Option<i64>,
    pub frames: u64,
    pub rejected: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Default)]
pub struct Hj212Health {
    pub name: String,
    pub address: String,
    /// Open connections now.
    pub connections: AtomicU64,
    pub accepted_connections: AtomicU64,
    /// Frames accepted (checked, parsed, from a known or accepted station).
    pub frames: AtomicU64,
    /// CN=9014 answers sent (each after its readings were committed).
    pub acks: AtomicU64,
    /// Codes no factor map knows (kept in `hj212_extra`).
    pub unknown_codes: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    stations: Mutex<HashMap<Arc<str>, StationHealth>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StationHealth {
    fn new(mn: &Arc<str>, device: &str, site: &Arc<str>) -> Self {
        StationHealth {
            mn: mn.clone(),
            // An accepted station's device id is its MN: one copy.
            device: if device == &**mn {
                mn.clone()
            } else {
                device.into()
            },
            site: site.clone(),
            ..StationHealth::default()
        }
    }
}

impl Hj212Health {
    pub fn new(name: &str, address: &str) -> Self {
        Self {
            name: name.to_string(),
            address: address.to_string(),
            ..Self::default()
        }
    }

    /// A station the config names: listed (never seen) from the start.
    pub fn expect(&self, mn: &Arc<str>, device: &str, site: &Arc<str>) {
        lock(&self.stations)
            .entry(mn.clone())
            .or_insert_with(|| StationHealth::new(mn, device, site));
    }

    /// A refused frame; `mn` when the station is known (its own count too).
    pub fn reject(&self, reason: &'static str, mn: Option<&str>) {
        *lock(&self.rejected).entry(reason).or_insert(0) += 1;
        if let Some(mn) = mn
            && let Some(s) = lock(&self.stations).get_mut(mn)
        {
            *s.rejected.entry(reason).or_insert(0) += 1;
        }
    }

    pub fn rejected(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.rejected).clone()
    }

    /// Applies `f` to the station's entry, creating it for an MN the config does not name
    /// (a listener with `unknown = "accept"`).
    pub fn station(
        &self,
        mn: &Arc<str>,
        device: &str,
        site: &Arc<str>,
        f: impl FnOnce(&mut StationHealth),
    ) {
        let mut st = lock(&self.stations);
        let e = match st.get_mut(&**mn) {
            Some(e) => e,
            None => st
                .entry(mn.clone())
                .or_insert_with(|| StationHealth::new(mn, device, site)),
        };
        f(e);
    }

    /// Every station, sorted by MN: a copy, so the lock is not held while it is rendered.
    pub fn stations(&self) -> Vec<StationHealth> {
        let mut v: Vec<StationHealth> = lock(&self.stations).values().cloned().collect();
        v.sort_by(|a, b| a.mn.cmp(&b.mn));
        v
    }

    pub fn load(n: &AtomicU64) -> u64 {
        n.load(Relaxed)
    }
}
