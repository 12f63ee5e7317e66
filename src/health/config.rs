//! The configuration in force, for people: which file, its SHA-256 (as `sha256sum` prints it,
//! so a crew can tell which version runs), when it was loaded, and how the reloads went.

use std::sync::Mutex;

#[derive(Debug, Default, Clone)]
pub struct ConfigStatus {
    pub file: String,
    /// Hex SHA-256 of the config file's bytes as loaded.
    pub sha256: String,
    /// When the config in force was loaded (ms since the epoch).
    pub loaded_ms: i64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// The last failed reload: when, and its errors (file:line:col, key path, message).
    pub last_failure_ms: Option<i64>,
    pub last_errors: Vec<String>,
    /// Changed sections the running gateway has not applied (they wait for a restart).
    pub pending_restart: Vec<String>,
}

/// Shared by the reload task (writer) and the HTTP API (readers).
#[derive(Debug, Default)]
pub struct ConfigHealth(Mutex<ConfigStatus>);

impl ConfigHealth {
    pub fn get(&self) -> ConfigStatus {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut ConfigStatus)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}
