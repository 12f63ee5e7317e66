//! `[store]`: the durable queue's folder, bound and commit interval.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::reader::{ByteSize, Cx, Sp, TableReader};

#[derive(Debug)]
pub struct RawStore {
    pub dir: Option<Sp<String>>,
    pub max_size: Option<Sp<ByteSize>>,
    pub commit_interval: Option<Sp<Duration>>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub dir: PathBuf,
    /// Bound of the queued line protocol on disk; past it the oldest points go, counted.
    pub max_size: u64,
    /// How often appends are committed to disk as a group (and MQTT messages acknowledged).
    pub commit_interval: Duration,
}

/// Reads the section's shape (types, unknown keys, required keys).
pub fn read(cx: &mut Cx<'_>, root: &mut TableReader<'_, '_>) -> Option<RawStore> {
    let mut raw = None;
    if let Some(mut t) = root.table(cx, "store") {
        raw = Some(RawStore {
            dir: t.opt(cx, "dir"),
            max_size: t.opt(cx, "max_size"),
            commit_interval: t.opt(cx, "commit_interval"),
        });
        t.finish(cx);
    }
    raw
}

/// Checks `[store]` (absent: the defaults); `base` is the config file's folder.
pub fn validate(cx: &mut Cx<'_>, raw: Option<RawStore>, base: &Path) -> StoreConfig {
    let (dir, max_size, commit_interval) = match raw {
        Some(s) => (s.dir, s.max_size, s.commit_interval),
        None => (None, None, None),
    };
    let max_size = match max_size {
        Some(m) if m.value.0 < (1 << 20) => {
            cx.error(&m.span, "store.max_size", "must be at least 1MiB");
            1 << 20
        }
        Some(m) => m.value.0,
        None => 2 << 30,
    };
    let commit_interval = match commit_interval {
        Some(c) if c.value < Duration::from_millis(1) || c.value > Duration::from_secs(1) => {
            cx.error(
                &c.span,
                "store.commit_interval",
                "must be between 1ms and 1s (a reading waits this long to be durable)",
            );
            Duration::from_millis(100)
        }
        Some(c) => c.value,
        None => Duration::from_millis(100),
    };
    StoreConfig {
        dir: dir.map_or_else(
            || PathBuf::from("/var/lib/dustgate"),
            |d| base.join(d.value),
        ),
        max_size,
        commit_interval,
    }
}
