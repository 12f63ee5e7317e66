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
        /// The server said it is overloaded (429 Too Many Requests, 503 Service Unavailable):
        /// counted apart, as what a city of gateways coming back must keep low.
        busy: bool,
        reason: String,
    },
    /// 413: the batch is too large; send it in smaller parts.
    TooLarge,
    /// Any other 4xx: it will never be accepted as it is. Set aside, counted.
    Rejected { status: u16, reason: String },
    /// The destination itself is not there (InfluxDB 404: database or bucket not found). An
    /// operator's mistake, not the batch's: held in the store and retried with backoff until
    /// someone creates it, and shown loudly meanwhile.
    DestinationMissing { reason: String },
}

/// A destination for line-protocol batches.
pub trait Sink: Send {
    fn send(&mut self, body: &[u8]) -> impl std::future::Future<Output = SendOutcome> + Send;
    /// Called once when the writer starts, before the first batch (InfluxDB v1 with
    /// `create_database`: creates the database). Nothing by default.
    fn prepare(&mut self) -> impl std::future::Future<Output = ()> + Send {
        async {}
    }
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
            busy: matches!(status, 429 | 503),
            reason: format!("HTTP {status}: {}", truncate(body, 300)),
        },
        _ => SendOutcome::Rejected {
            status,
            reason: format!("HTTP {status}: {}", truncate(body, 300)),
        },
    }
}

/// Classifies the answer to an InfluxDB write (v1 `/write`, v2 `/api/v2/write`, and the
/// servers that speak them): as [`classify`], except that a 404 means the database, the bucket
/// or the write endpoint is missing (`database not found`, `bucket "x" not found`), which says
/// nothing about the batch: [`SendOutcome::DestinationMissing`], never dead-lettered.
pub fn classify_write(status: u16, retry_after: Option<Duration>, body: &str) -> SendOutcome {
    if status == 404 {
        return SendOutcome::DestinationMissing {
            reason: format!("HTTP 404: {}", truncate(body, 300)),
        };
    }
    classify(status, retry_after, body)
}

/// Whether an answer body names a missing database or bucket (then `create_database` may help;
/// any 404 to a write is held either way).
pub fn names_missing_database(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    b.contains("database not found") || (b.contains("bucket") && b.contains("not found"))
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
        for (s, overloaded) in [(408, false), (429, true), (500, false), (503, true)] {
            assert!(
                matches!(classify(s, None, "x"), SendOutcome::Retry { busy, .. } if busy == overloaded),
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

    #[test]
    fn a_missing_database_or_bucket_is_held_not_rejected() {
        // InfluxDB 1.x, 2.x (bucket), 2.x's v1 compatibility API.
        for body in [
            r#"{"error":"database not found: \"nowhere\""}"#,
            r#"{"code":"not found","message":"bucket \"dust\" not found"}"#,
            r#"{"code":"not found","message":"database not found"}"#,
        ] {
            assert!(
                matches!(
                    classify_write(404, None, body),
                    SendOutcome::DestinationMissing { ref reason } if reason.contains("not found")
                ),
                "{body}"
            );
            assert!(names_missing_database(body), "{body}");
        }
        // Content problems are still rejected; the rest as for any HTTP destination.
        assert!(matches!(
            classify_write(400, None, "partial write: field type conflict"),
            SendOutcome::Rejected { status: 400, .. }
        ));
        assert!(matches!(
            classify_write(503, None, ""),
            SendOutcome::Retry { .. }
        ));
        assert_eq!(classify_write(204, None, ""), SendOutcome::Accepted);
        assert!(!names_missing_database(
            "unable to parse 'x': missing fields"
        ));
    }
}
