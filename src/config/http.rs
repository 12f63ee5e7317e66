//! `[http]`: where the status page and API listen, and the listener's limits.

use std::net::SocketAddr;
use std::time::Duration;

use super::common::{in_range, positive};
use super::reader::{Cx, Sp, TableReader};

#[derive(Debug)]
pub struct RawHttp {
    pub listen: Option<Sp<String>>,
    pub max_connections: Option<Sp<i64>>,
    pub idle_timeout: Option<Sp<Duration>>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Connections served at once; more wait in the kernel's backlog (so 1,000 idle sockets
    /// cannot take the descriptors the sources need).
    pub max_connections: usize,
    /// A connection that sends nothing for this long (slow headers, an idle keep-alive) is
    /// closed.
    pub idle_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_connections: 64,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Reads the section's shape (types, unknown keys, required keys).
pub fn read(cx: &mut Cx<'_>, root: &mut TableReader<'_, '_>) -> Option<RawHttp> {
    let mut raw = None;
    if let Some(mut t) = root.table(cx, "http") {
        raw = Some(RawHttp {
            listen: t.opt(cx, "listen"),
            max_connections: t.opt(cx, "max_connections"),
            idle_timeout: t.opt(cx, "idle_timeout"),
        });
        t.finish(cx);
    }
    raw
}

/// Checks `[http]` (absent: 127.0.0.1:8080, 64 connections, 30 s idle).
pub fn validate(cx: &mut Cx<'_>, raw: Option<RawHttp>) -> Option<HttpConfig> {
    let d = HttpConfig::default();
    let Some(raw) = raw else { return Some(d) };
    let max_connections = raw
        .max_connections
        .and_then(|m| in_range::<usize>(cx, &m, "http.max_connections", 1, 4096))
        .map_or(d.max_connections, |m| m.value);
    let idle_timeout = positive(cx, raw.idle_timeout, "http.idle_timeout")
        .map_or(d.idle_timeout, |t| t.max(Duration::from_secs(1)));
    let listen = match raw.listen {
        None => d.listen,
        Some(l) => match l.value.parse::<SocketAddr>() {
            Ok(listen) => listen,
            Err(_) => {
                cx.error(
                    &l.span,
                    "http.listen",
                    format!(
                        "\"{}\" is not an address:port such as \"127.0.0.1:8080\"",
                        l.value
                    ),
                );
                return None;
            }
        },
    };
    Some(HttpConfig {
        listen,
        max_connections,
        idle_timeout,
    })
}
