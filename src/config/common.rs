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
            Secret::Env(var) => match std::env::var(var) {
                Ok(v) if v.is_empty() => Err(format!("environment variable {var} is empty")),
                Ok(v) => Ok(v),
                Err(_) => Err(format!("environment variable {var} is not set")),
            },
            Secret::File(path) => read_secret_file(path),
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

/// A secret is a few hundred bytes at most; a bigger file is a mistake (a log, an image).
pub const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Reads a secret file: a regular file only (a FIFO would block `check` for ever, `/dev/zero`
/// would be read without end), at most [`MAX_SECRET_FILE`] bytes, UTF-8, trailing newline
/// trimmed, not empty.
fn read_secret_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read as _;
    let shown = path.display();
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read secret file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "secret file {shown} is not a regular file (a pipe, a device or a folder)"
        ));
    }
    if meta.len() > MAX_SECRET_FILE {
        return Err(format!(
            "secret file {shown} holds {} bytes: a secret is at most {MAX_SECRET_FILE}",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET_FILE + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read secret file {shown}: {e}"))?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(format!(
            "secret file {shown} is longer than {MAX_SECRET_FILE} bytes"
        ));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| format!("secret file {shown} is not UTF-8 text"))?;
    let value = text.trim_end_matches(['\r', '\n']).to_string();
    if value.is_empty() {
        return Err(format!("secret file {shown} is empty"));
    }
    Ok(value)
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
        if k.value.is_empty() {
            cx.error(
                &k.span,
                &format!("{path}.\"\""),
                "a tag key must not be empty (InfluxDB rejects every point that has one)",
            );
        } else if matches!(k.value.as_str(), "site" | "device" | "component") {
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
        (Some(e), None) if e.value.trim().is_empty() => {
            cx.error(
                &e.span,
                &format!("{path}_env"),
                "names no environment variable",
            );
            None
        }
        (None, Some(f)) if f.value.trim().is_empty() => {
            cx.error(&f.span, &format!("{path}_file"), "names no file");
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
