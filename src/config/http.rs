//! `[http]`: where the status page and API listen.

use std::net::SocketAddr;

use super::reader::{Cx, Sp, TableReader};

#[derive(Debug)]
pub struct RawHttp {
    pub listen: Option<Sp<String>>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

/// Reads the section's shape (types, unknown keys, required keys).
pub fn read(cx: &mut Cx<'_>, root: &mut TableReader<'_, '_>) -> Option<RawHttp> {
    let mut raw = None;
    if let Some(mut t) = root.table(cx, "http") {
        raw = Some(RawHttp {
            listen: t.opt(cx, "listen"),
        });
        t.finish(cx);
    }
    raw
}

/// Checks `[http]` (absent: 127.0.0.1:8080).
pub fn validate(cx: &mut Cx<'_>, raw: Option<RawHttp>) -> Option<HttpConfig> {
    let listen = raw.and_then(|h| h.listen);
    match listen {
        None => Some(HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }),
        Some(l) => match l.value.parse::<SocketAddr>() {
            Ok(listen) => Some(HttpConfig { listen }),
            Err(_) => {
                cx.error(
                    &l.span,
                    "http.listen",
                    format!(
                        "\"{}\" is not an address:port such as \"127.0.0.1:8080\"",
                        l.value
                    ),
                );
                None
            }
        },
    }
}
