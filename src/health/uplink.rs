//! HJ 212 platforms (`[[hj212.upstream]]`) as `/metrics`, `/api/status` and the status page
//! show them: connected, last answer, backlog depth and oldest frame, resent, expired, answers
//! that matched nothing, and readings the platform's feed could not take.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use tokio::sync::watch;

use crate::outputs::hj212::upstream::UpstreamCounts;

#[derive(Debug)]
pub struct UplinkHealth {
    pub name: String,
    pub address: String,
    /// "2017" or "2025".
    pub version: &'static str,
    /// Readings not handed to the platform's task because it was that far behind.
    pub dropped: AtomicU64,
    /// What the task last published.
    pub counts: watch::Receiver<UpstreamCounts>,
    /// Why the task stopped, when it failed (its backlog's disk).
    pub failed: Mutex<Option<String>>,
}

impl UplinkHealth {
    pub fn new(
        name: &str,
        address: &str,
        version: &'static str,
        counts: watch::Receiver<UpstreamCounts>,
    ) -> Self {
        Self {
            name: name.to_string(),
            address: address.to_string(),
            version,
            dropped: AtomicU64::new(0),
            counts,
            failed: Mutex::new(None),
        }
    }

    pub fn counts(&self) -> UpstreamCounts {
        self.counts.borrow().clone()
    }

    pub fn failed(&self) -> Option<String> {
        self.failed.lock().map(|f| f.clone()).unwrap_or_default()
    }
}
