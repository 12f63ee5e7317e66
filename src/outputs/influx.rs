//! The InfluxDB HTTP sink: v1 `/write` or v2 `/api/v2/write`, millisecond precision, gzip.
//!
//! One code path for both APIs: only the URL and the credentials differ. The `influxdb2`
//! crate is not used (rust-crates.md §1.4): it brings a second, outdated HTTP/TLS stack, has
//! no v1 support and cannot tell a retryable failure from a permanent one.

use std::io::Write as _;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, RETRY_AFTER};

use super::base64;
use super::retry::parse_retry_after;
use super::sink::{SendOutcome, Sink, classify_write, names_missing_database, truncate};
use crate::config::{InfluxApi, InfluxConfig};
use tracing::{debug, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum InfluxSetupError {
    #[error("InfluxDB credentials: {0}")]
    Secret(String),
    #[error("InfluxDB URL: {0}")]
    Url(String),
    #[error("HTTP client: {0}")]
    Client(String),
}

pub struct InfluxSink {
    client: reqwest::Client,
    write_url: reqwest::Url,
    /// Shown in logs: the URL without credentials (there are none in it).
    shown: String,
    auth: Option<HeaderValue>,
    gzip: bool,
    /// v1 with `create_database`: `POST /query?q=CREATE DATABASE "<db>"`, at start and after a
    /// "database not found".
    create: Option<CreateDatabase>,
}

/// How to create the v1 database, and what came of the last try (so a failure that repeats
/// is logged once, not at every retry).
struct CreateDatabase {
    url: reqwest::Url,
    database: String,
    last_error: Option<String>,
}

impl InfluxSink {
    /// Builds the sink, reading secrets from the environment or files now.
    pub fn new(cfg: &InfluxConfig) -> Result<Self, InfluxSetupError> {
        let mut create = None;
        let (path, params, auth) = match &cfg.api {
            InfluxApi::V1 {
                database,
                retention_policy,
                username,
                password,
            } => {
                let mut params = vec![("db", database.clone())];
                if let Some(rp) = retention_policy {
                    params.push(("rp", rp.clone()));
                }
                let auth = match username {
                    Some(user) => {
                        let pass = match password {
                            Some(s) => s.resolve().map_err(InfluxSetupError::Secret)?,
                            None => String::new(),
                        };
                        Some(basic_auth(user, &pass))
                    }
                    None => None,
                };
                if cfg.create_database {
                    let mut url = reqwest::Url::parse(&format!("{}/query", cfg.url))
                        .map_err(|e| InfluxSetupError::Url(e.to_string()))?;
                    url.query_pairs_mut()
                        .append_pair("q", &create_database_statement(database));
                    create = Some(CreateDatabase {
                        url,
                        database: database.clone(),
                        last_error: None,
                    });
                }
                ("/write", params, auth)
            }
            InfluxApi::V2 { org, bucket, token } => {
                let token = token.resolve().map_err(InfluxSetupError::Secret)?;
                let mut value = HeaderValue::from_str(&format!("Token {token}")).map_err(|_| {
                    InfluxSetupError::Secret("token holds invalid characters".into())
                })?;
                value.set_sensitive(true);
                (
                    "/api/v2/write",
                    vec![("org", org.clone()), ("bucket", bucket.clone())],
                    Some(value),
                )
            }
        };
        let mut url = reqwest::Url::parse(&format!("{}{path}", cfg.url))
            .map_err(|e| InfluxSetupError::Url(e.to_string()))?;
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in &params {
                q.append_pair(k, v);
            }
            q.append_pair("precision", "ms");
        }
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| InfluxSetupError::Client(e.to_string()))?;
        Ok(Self {
            client,
            shown: url.to_string(),
            write_url: url,
            auth,
            gzip: cfg.gzip,
            create,
        })
    }

    /// One write request, classified.
    async fn write(&self, body: &[u8]) -> SendOutcome {
        let mut req = self
            .client
            .post(self.write_url.clone())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8");
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        req = if self.gzip {
            req.header(CONTENT_ENCODING, "gzip").body(gzip(body))
        } else {
            req.body(body.to_vec())
        };
        match req.send().await {
            Err(e) => SendOutcome::Retry {
                after: None,
                busy: false,
                reason: crate::redact::http_error(e),
            },
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()));
                let text = if (200..300).contains(&status) {
                    String::new()
                } else {
                    resp.text().await.unwrap_or_default()
                };
                classify_write(status, retry_after, &truncate(&text, 500))
            }
        }
    }

    /// `CREATE DATABASE "<db>"` (v1 with `create_database`), with the write's credentials. It
    /// does nothing when the database exists. Returns whether it succeeded.
    async fn create_database(&mut self) -> bool {
        let Some(c) = self.create.as_mut() else {
            return false;
        };
        let mut req = self.client.post(c.url.clone());
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let result = match req.send().await {
            Err(e) => Err(crate::redact::http_error(e)),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                query_outcome(status, &text)
            }
        };
        match result {
            Ok(()) => {
                info!(database = %c.database, "InfluxDB database created (or already there): CREATE DATABASE");
                c.last_error = None;
                true
            }
            Err(e) => {
                if c.last_error.as_deref() != Some(e.as_str()) {
                    warn!(database = %c.database, error = %e, "CREATE DATABASE failed (create_database = true); will try again when a write finds the database missing");
                } else {
                    debug!(database = %c.database, error = %e, "CREATE DATABASE failed again");
                }
                c.last_error = Some(e);
                false
            }
        }
    }
}

/// `CREATE DATABASE "<name>"`, the name quoted as an InfluxQL identifier.
fn create_database_statement(database: &str) -> String {
    let quoted = database.replace('\\', "\\\\").replace('"', "\\\"");
    format!("CREATE DATABASE \"{quoted}\"")
}

/// What a `/query` answer says: 200 without an `error` in it (at the top or in a statement's
/// result) is success.
fn query_outcome(status: u16, body: &str) -> Result<(), String> {
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let error = json.as_ref().and_then(|v| {
        v.get("error")
            .or_else(|| {
                v.get("results")
                    .and_then(|r| r.as_array())
                    .and_then(|r| r.iter().find_map(|s| s.get("error")))
            })
            .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
    });
    match (status, error) {
        (200..=299, None) if json.is_some() => Ok(()),
        (200..=299, None) => Err(format!(
            "HTTP {status}: not a /query answer: {}",
            truncate(body, 200)
        )),
        (_, Some(e)) => Err(format!("HTTP {status}: {}", truncate(&e, 300))),
        (_, None) => Err(format!("HTTP {status}: {}", truncate(body, 300))),
    }
}

fn basic_auth(user: &str, pass: &str) -> HeaderValue {
    let raw = format!("{user}:{pass}");
    let mut v = HeaderValue::from_str(&format!("Basic {}", base64(raw.as_bytes())))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

/// gzip at the fastest level: on a small ARM box the CPU is scarcer than the 4G bytes saved
/// between the fastest and best levels.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

impl Sink for InfluxSink {
    async fn send(&mut self, body: &[u8]) -> SendOutcome {
        let outcome = self.write(body).await;
        match outcome {
            // v1 with `create_database`: create it, and if that worked send the batch again
            // at once (no backoff, no "missing" shown for a database the gateway may create).
            SendOutcome::DestinationMissing { ref reason }
                if self.create.is_some()
                    && names_missing_database(reason)
                    && self.create_database().await =>
            {
                self.write(body).await
            }
            other => other,
        }
    }

    async fn prepare(&mut self) {
        if self.create.is_some() {
            self.create_database().await;
        }
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn create_database_quotes_the_name() {
        assert_eq!(
            create_database_statement("dust"),
            r#"CREATE DATABASE "dust""#
        );
        assert_eq!(
            create_database_statement(r#"a"b\c"#),
            r#"CREATE DATABASE "a\"b\\c""#
        );
    }

    #[test]
    fn query_answers() {
        assert_eq!(
            query_outcome(200, r#"{"results":[{"statement_id":0}]}"#),
            Ok(())
        );
        assert!(
            query_outcome(200, r#"{"results":[{"statement_id":0,"error":"nope"}]}"#)
                .is_err_and(|e| e.contains("nope"))
        );
        assert!(
            query_outcome(403, r#"{"error":"requires admin privilege"}"#)
                .is_err_and(|e| e.contains("HTTP 403") && e.contains("admin"))
        );
        assert!(query_outcome(200, "<html>").is_err());
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let body = b"air,site=a pm10=35 1\n".repeat(100);
        let z = gzip(&body);
        assert!(z.len() < body.len() / 5);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, body);
    }
}
