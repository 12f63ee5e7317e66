//! The station table of one listener: MN → the station's device, factor map, password and
//! SM4 key (secrets resolved once, at start), a per-station rate limit, and the stations an
//! `unknown = "accept"` listener adds as they appear (capped: a flood of made-up MNs must not
//! grow memory without bound).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::hj212::{Hj212Listener, UnknownMn, resolve_sm4_key};
use crate::config::site::Site;

use super::decode::Station;

/// Stations an `unknown = "accept"` listener adds at most (beyond: refused, counted as `mn`).
pub const MAX_ADDED: usize = 10_000;

/// A station at run time.
#[derive(Debug)]
pub struct StationRt {
    pub station: Station,
    pub password: Option<String>,
    pub sm4_key: Option<[u8; 16]>,
    bucket: Mutex<Bucket>,
    clock: Mutex<Clock>,
}

/// The station's clock as its last real-time frames show it.
#[derive(Debug, Default)]
struct Clock {
    /// Arrival minus DataTime of the last few live 2011 frames (ms).
    recent: std::collections::VecDeque<i64>,
    /// When the gateway last sent it CN=1012 (set time).
    last_set_ms: i64,
}

/// Live frames the drift estimate looks at.
const DRIFT_FRAMES: usize = 5;

/// A token bucket: `rate` frames a second, bursts of up to `burst`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last_ms: i64,
}

impl StationRt {
    /// Records one live real-time frame's lag and returns the station's drift: of the last
    /// few, the one nearest zero. A clock that is really off shows in every frame; a frame
    /// that was held back (a monitor resending after an outage without RF=1) only looks late.
    pub fn drift(&self, lag_ms: i64) -> i64 {
        let mut c = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        if c.recent.len() == DRIFT_FRAMES {
            c.recent.pop_front();
        }
        c.recent.push_back(lag_ms);
        c.recent
            .iter()
            .copied()
            .min_by_key(|d| d.unsigned_abs())
            .unwrap_or(lag_ms)
    }

    /// Whether to send the station CN=1012 now (at most once an hour).
    pub fn time_to_set_clock(&self, now_ms: i64) -> bool {
        let mut c = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        if now_ms - c.last_set_ms < 3_600_000 {
            return false;
        }
        c.last_set_ms = now_ms;
        true
    }

    /// Takes one frame's token; `false`: over the station's rate.
    pub fn allow(&self, now_ms: i64, rate: f64) -> bool {
        let burst = (rate * 2.0).max(5.0);
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let dt = (now_ms - b.last_ms).max(0) as f64 / 1000.0;
        b.tokens = (b.tokens + dt * rate).min(burst);
        b.last_ms = now_ms;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn rt(station: Station, password: Option<String>, key: Option<[u8; 16]>) -> StationRt {
    StationRt {
        station,
        password,
        sm4_key: key,
        bucket: Mutex::new(Bucket {
            tokens: 5.0,
            last_ms: 0,
        }),
        clock: Mutex::new(Clock::default()),
    }
}

pub struct Stations {
    known: HashMap<Arc<str>, Arc<StationRt>>,
    accept: bool,
    added: Mutex<HashMap<Arc<str>, Arc<StationRt>>>,
    cfg_site: Arc<str>,
    tags: Arc<[(String, String)]>,
    factors: Arc<crate::config::factors::FactorMap>,
}

/// What an MN is to this listener.
pub enum Lookup {
    Known(Arc<StationRt>),
    /// Not in the table, refused (`unknown = "reject"`, or the cap of added stations).
    Refused,
}

impl Stations {
    /// Resolves every station's secrets: a missing password or key is an error at start, not
    /// a station that silently accepts anything.
    pub fn build(cfg: &Hj212Listener, site: &Site) -> Result<Stations, String> {
        let mut known = HashMap::new();
        let tags: Arc<[(String, String)]> = site.tags.clone().into();
        for s in &cfg.stations {
            let password = s
                .password
                .as_ref()
                .map(|p| p.resolve())
                .transpose()
                .map_err(|e| format!("station {}: password: {e}", s.mn))?;
            let key = s
                .sm4_key
                .as_ref()
                .map(resolve_sm4_key)
                .transpose()
                .map_err(|e| format!("station {}: sm4 key: {e}", s.mn))?;
            let station = Station::new(
                &s.mn,
                &s.device,
                s.site.as_str().into(),
                tags.clone(),
                s.factors.clone(),
            );
            known.insert(station.mn.clone(), Arc::new(rt(station, password, key)));
        }
        Ok(Stations {
            known,
            accept: cfg.unknown == UnknownMn::Accept,
            added: Mutex::new(HashMap::new()),
            cfg_site: site.id.as_str().into(),
            tags,
            factors: cfg.factors.clone(),
        })
    }

    pub fn known(&self) -> impl Iterator<Item = &Arc<StationRt>> {
        self.known.values()
    }

    /// The station of `mn`; with `unknown = "accept"` an unlisted MN becomes a station whose
    /// device id is the MN, on the gateway's site, with the listener's factor map.
    pub fn get(&self, mn: &str) -> Lookup {
        if let Some(s) = self.known.get(mn) {
            return Lookup::Known(s.clone());
        }
        if !self.accept || mn.is_empty() || !valid_device_id(mn) {
            return Lookup::Refused;
        }
        let mut added = self.added.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = added.get(mn) {
            return Lookup::Known(s.clone());
        }
        if added.len() >= MAX_ADDED {
            return Lookup::Refused;
        }
        let station = Station::new(
            mn,
            mn,
            self.cfg_site.clone(),
            self.tags.clone(),
            self.factors.clone(),
        );
        let s = Arc::new(rt(station, None, None));
        added.insert(s.station.mn.clone(), s.clone());
        Lookup::Known(s)
    }
}

/// An MN used as a device id (an accepted, unlisted station): printable ASCII without the
/// characters line protocol or topics would need escaped.
fn valid_device_id(mn: &str) -> bool {
    mn.len() <= 64
        && mn
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn station() -> StationRt {
        let map = super::super::decode::tests::standard_map();
        rt(
            Station::new("MN1", "d", "s".into(), Vec::new().into(), map),
            None,
            None,
        )
    }

    #[test]
    fn the_bucket_lets_a_burst_through_then_the_rate() {
        let s = station();
        let t = 1_000_000;
        let burst = (0..100).filter(|_| s.allow(t, 1.0)).count();
        assert_eq!(burst, 5);
        assert!(!s.allow(t + 500, 1.0));
        assert!(s.allow(t + 1500, 1.0));
    }

    #[test]
    fn the_drift_is_the_lag_nearest_zero_of_the_last_frames() {
        let s = station();
        // A clock 6 minutes slow, and one frame resent an hour late.
        assert_eq!(s.drift(360_000), 360_000);
        assert_eq!(s.drift(3_960_000), 360_000);
        assert_eq!(s.drift(361_000), 360_000);
        // Set right: the next frame shows it.
        assert_eq!(s.drift(200), 200);
        assert!(s.time_to_set_clock(10_000_000));
        assert!(!s.time_to_set_clock(10_000_000 + 60_000));
    }
}
