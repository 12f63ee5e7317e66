//! Helpers every section uses: durations, tags, secrets and integer ranges.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::reader::{Cx, Sp};

/// A secret is named in the config, never written in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    Env(String),
    File(PathBuf),
    /// Written in the config (for values that are not secret, such as a plain webhook URL).
    Literal(String),
}

impl Secret {
    /// Reads the secret. The error names where it was looked for, never the value.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Secret::Env(var) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
            }
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display())),
            Secret::Literal(s) => Ok(s.clone()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Secret::Env(var) => format!("${var}"),
            Secret::File(path) => format!("file {}", path.display()),
            Secret::Literal(_) => "the config file".to_string(),
        }
    }
}

/// Longest duration any setting takes: longer ones are typos (and would overflow timers).
pub(super) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

pub(super) fn positive(cx: &mut Cx<'_>, d: Option<Sp<Duration>>, key: &str) -> Option<Duration> {
    let d = d?;
    if d.value.is_zero() {
        cx.error(&d.span, key, "must be longer than zero");
        return None;
    }
    if d.value > MAX_DURATION {
        cx.error(&d.span, key, "must be at most 24h");
        return None;
    }
    Some(d.value)
}

pub(super) fn check_tags(
    cx: &mut Cx<'_>,
    tags: &[(Sp<String>, Sp<String>)],
    path: &str,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in tags {
        if matches!(k.value.as_str(), "site" | "device" | "component") {
            cx.error(
                &k.span,
                &format!("{path}.{}", k.value),
                format!("tag \"{}\" is set by dustgate itself", k.value),
            );
        } else if v.value.is_empty() {
            cx.error(
                &v.span,
                &format!("{path}.{}", k.value),
                "a tag value must not be empty",
            );
        } else {
            out.push((k.value.clone(), v.value.clone()));
        }
    }
    out
}

pub(super) fn secret(
    cx: &mut Cx<'_>,
    env: Option<Sp<String>>,
    file: Option<Sp<String>>,
    base: &Path,
    path: &str,
) -> Option<Secret> {
    match (env, file) {
        (Some(e), Some(f)) => {
            cx.error(
                &f.span,
                path,
                format!("set {path}_env or {path}_file, not both"),
            );
            let _ = e;
            None
        }
        (Some(e), None) => Some(Secret::Env(e.value)),
        (None, Some(f)) => Some(Secret::File(base.join(f.value))),
        (None, None) => None,
    }
}

pub(super) const DAY: Duration = Duration::from_secs(24 * 3600);

pub(super) fn duration(
    cx: &mut Cx<'_>,
    d: &Option<Sp<Duration>>,
    key: &str,
    default: Duration,
) -> Duration {
    match d {
        None => default,
        Some(d) if d.value.is_zero() || d.value > DAY => {
            cx.error(&d.span, key, "must be longer than zero and at most 24h");
            default
        }
        Some(d) => d.value,
    }
}

/// Checks an integer's range and narrows it.
pub fn in_range<T: TryFrom<i64>>(
    cx: &mut Cx<'_>,
    v: &Sp<i64>,
    key_path: &str,
    lo: i64,
    hi: i64,
) -> Option<Sp<T>> {
    if v.value < lo || v.value > hi {
        cx.error(
            &v.span,
            key_path,
            format!("{} is out of range: expected {lo}..={hi}", v.value),
        );
        return None;
    }
    T::try_from(v.value)
        .ok()
        .map(|x| Sp::new(x, v.span.clone()))
}
