//! Small state files (open alerts, rule windows) written so that a power cut leaves either
//! the old or the new file, never half of one: write a temporary file, fsync, rename, fsync
//! the folder.

use std::io::Write as _;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{error, warn};

/// Writes `value` as JSON to `path`, atomically.
pub fn save<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    save_bytes(path, &body)
}

/// Writes `body` (already serialized) to `path`, atomically.
pub fn save_bytes(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a state file; a missing file is `None`, an unreadable one is moved aside (kept) and
/// `None`, so a damaged file never stops the gateway.
pub fn load<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            error!(path = %path.display(), error = %e, "cannot read state file");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            let aside = path.with_extension(format!("corrupt-{}", crate::model::now_ms()));
            warn!(path = %path.display(), error = %e, moved_to = %aside.display(), "state file is damaged: set aside, starting afresh");
            let _ = std::fs::rename(path, aside);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damaged_files() {
        let dir = std::env::temp_dir().join(format!("dustgate-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.json");
        save(&p, &vec![1, 2, 3]).unwrap();
        assert_eq!(load::<Vec<i32>>(&p), Some(vec![1, 2, 3]));
        std::fs::write(&p, b"{half").unwrap();
        assert_eq!(load::<Vec<i32>>(&p), None);
        assert!(!p.exists(), "set aside");
        assert_eq!(load::<Vec<i32>>(&dir.join("missing.json")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
