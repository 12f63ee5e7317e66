//! What a destination answers to a batch, classified for the writer.

use std::time::Duration;

/// The answer to one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Stored (2xx).
    Accepted,
    /// Try again later: 408, 429, 5xx, or the network. `after` is the server's Retry-After.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// 413: the batch is too large; send it in smaller parts.
    TooLarge,
    /// Any other 4xx: it will never be accepted as it is. Set aside, counted.
    Rejected { status: u16, reason: String },
}

/// A destination for line-protocol batches.
pub trait Sink: Send {
    fn send(&mut self, body: &[u8]) -> impl std::future::Future<Output = SendOutcome> + Send;
    /// Where it writes, for logs (never with secrets).
    fn describe(&self) -> String;
}

/// Classifies an HTTP status per the InfluxDB write API (and Vector's retry logic): 2xx
/// accepted; 408, 429 and 5xx retried; 413 split; every other 4xx permanent.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> SendOutcome {
    match status {
        200..=299 => SendOutcome::Accepted,
        413 => SendOutcome::TooLarge,
        408 | 429 | 500..=599 => SendOutcome::Retry {
            after: retry_after,
            reason: format!("HTTP {status}: {}", truncate(body, 300)),
        },
        _ => SendOutcome::Rejected {
            status,
            reason: format!("HTTP {status}: {}", truncate(body, 300)),
        },
    }
}

/// At most `max` bytes of `s`, cut at a character boundary, on one line.
pub fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut t = s[..end].replace(['\n', '\r'], " ");
    if end < s.len() {
        t.push('…');
    }
    t.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(classify(204, None, ""), SendOutcome::Accepted);
        assert_eq!(classify(413, None, ""), SendOutcome::TooLarge);
        for s in [408, 429, 500, 503] {
            assert!(
                matches!(classify(s, None, "x"), SendOutcome::Retry { .. }),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 422] {
            assert!(
                matches!(classify(s, None, "x"), SendOutcome::Rejected { .. }),
                "{s}"
            );
        }
        assert_eq!(truncate("锦江区", 4), "锦…");
    }
}
