//! Alert webhooks: the contract's JSON as is (`generic`), or the robot formats of DingTalk (with
//! its HMAC-SHA256 signature), WeCom and Feishu (with its signature). Each queued alert is one
//! request; the answer is classified like InfluxDB's, plus the robots' own error codes (their
//! "too many messages" codes are retried, others set aside).

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};

use super::base64;
use super::retry::parse_retry_after;
use super::sink::{SendOutcome, Sink, classify, truncate};
use crate::config::{Webhook, WebhookFormat};

pub struct WebhookSink {
    client: reqwest::Client,
    name: String,
    url: String,
    format: WebhookFormat,
    secret: Option<String>,
}

/// HMAC-SHA256, base64.
fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    base64(ring::hmac::sign(&k, msg).as_ref())
}

/// DingTalk: sign = base64(HMAC-SHA256(key = secret, "{timestamp_ms}\n{secret}")), sent as URL
/// parameters `timestamp` and `sign`.
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    hmac_b64(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    )
}

/// Feishu: sign = base64(HMAC-SHA256(key = "{timestamp_s}\n{secret}", empty message)), sent in
/// the body with `timestamp`.
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    hmac_b64(format!("{timestamp_s}\n{secret}").as_bytes(), b"")
}

/// The request body for a format, from the alert's contract JSON.
pub fn body(format: WebhookFormat, alert: &Value, secret: Option<&str>, now_ms: i64) -> Value {
    let text = alert["message"].as_str().unwrap_or_default().to_string();
    match format {
        WebhookFormat::Generic => alert.clone(),
        WebhookFormat::DingTalk | WebhookFormat::WeCom => {
            json!({ "msgtype": "text", "text": { "content": text } })
        }
        WebhookFormat::Feishu => {
            let mut b = json!({ "msg_type": "text", "content": { "text": text } });
            if let Some(s) = secret {
                let ts = now_ms / 1000;
                b["timestamp"] = json!(ts.to_string());
                b["sign"] = json!(feishu_sign(s, ts));
            }
            b
        }
    }
}

/// The robots answer 200 with an error code inside. Their rate limits are worth retrying;
/// anything else (bad token, bad signature, keyword filter) will not get better by itself.
pub fn classify_robot(format: WebhookFormat, body: &str) -> SendOutcome {
    if format == WebhookFormat::Generic {
        return SendOutcome::Accepted;
    }
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = v
        .get("errcode")
        .or_else(|| v.get("code"))
        .or_else(|| v.get("StatusCode"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if code == 0 {
        return SendOutcome::Accepted;
    }
    let throttled = match format {
        // DingTalk 130101: sending too fast; WeCom 45009: API frequency limit; Feishu 9499 and
        // 11232: too many requests.
        WebhookFormat::DingTalk => code == 130101,
        WebhookFormat::WeCom => code == 45009,
        WebhookFormat::Feishu => code == 9499 || code == 11232,
        WebhookFormat::Generic => false,
    };
    let reason = format!("{} error {code}: {}", format.name(), truncate(body, 200));
    if throttled {
        SendOutcome::Retry {
            after: Some(Duration::from_secs(60)),
            busy: false,
            reason,
        }
    } else {
        SendOutcome::Rejected {
            status: 200,
            reason,
        }
    }
}

impl WebhookSink {
    /// Reads the URL and the signing secret now, so a missing one stops the start.
    pub fn new(w: &Webhook, timeout: Duration) -> Result<Self, String> {
        let url = w
            .url
            .resolve()
            .map_err(|e| format!("webhook {}: URL: {e}", w.name))?;
        reqwest::Url::parse(&url)
            .map_err(|e| format!("webhook {}: URL {}: {e}", w.name, crate::redact::url(&url)))?;
        let secret = w
            .secret
            .as_ref()
            .map(|s| {
                s.resolve()
                    .map_err(|e| format!("webhook {}: secret: {e}", w.name))
            })
            .transpose()?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("webhook {}: {}", w.name, crate::redact::http_error(e)))?;
        Ok(Self {
            client,
            name: w.name.clone(),
            url,
            format: w.format,
            secret,
        })
    }

    fn url_now(&self, now_ms: i64) -> String {
        match (&self.secret, self.format) {
            (Some(secret), WebhookFormat::DingTalk) => {
                let mut u = match reqwest::Url::parse(&self.url) {
                    Ok(u) => u,
                    Err(_) => return self.url.clone(),
                };
                u.query_pairs_mut()
                    .append_pair("timestamp", &now_ms.to_string())
                    .append_pair("sign", &dingtalk_sign(secret, now_ms));
                u.to_string()
            }
            _ => self.url.clone(),
        }
    }
}

impl Sink for WebhookSink {
    async fn send(&mut self, line: &[u8]) -> SendOutcome {
        let alert: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                return SendOutcome::Rejected {
                    status: 0,
                    reason: format!("queued alert is not JSON: {e}"),
                };
            }
        };
        let now = crate::clock::wall_ms();
        let body = body(self.format, &alert, self.secret.as_deref(), now);
        let req = self
            .client
            .post(self.url_now(now))
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body.to_string());
        match req.send().await {
            // reqwest's error names the URL, and a robot's URL holds its access token.
            Err(e) => SendOutcome::Retry {
                after: None,
                busy: false,
                reason: format!(
                    "webhook {} ({}): {}",
                    self.name,
                    crate::redact::url(&self.url),
                    crate::redact::http_error(e)
                ),
            },
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()));
                let text = resp.text().await.unwrap_or_default();
                match classify(status, retry_after, &truncate(&text, 300)) {
                    SendOutcome::Accepted => classify_robot(self.format, &text),
                    other => other,
                }
            }
        }
    }

    fn describe(&self) -> String {
        // Never the URL: it holds the robot's token.
        format!("webhook {} ({})", self.name, self.format.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231() {
        // RFC 4231 test case 2: key "Jefe", "what do ya want for nothing?"
        let mac = hmac_b64(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            mac,
            base64(&[
                0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
                0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9,
                0x64, 0xec, 0x38, 0x43,
            ])
        );
    }

    #[test]
    fn signatures_follow_each_robots_recipe() {
        let secret = "SEC0123";
        assert_eq!(
            dingtalk_sign(secret, 1_700_000_000_000),
            hmac_b64(secret.as_bytes(), b"1700000000000\nSEC0123")
        );
        assert_eq!(
            feishu_sign(secret, 1_700_000_000),
            hmac_b64(b"1700000000\nSEC0123", b"")
        );
        let alert = json!({"message": "【工地】PM10超标", "alert_id": "a"});
        let b = body(
            WebhookFormat::Feishu,
            &alert,
            Some(secret),
            1_700_000_000_999,
        );
        assert_eq!(b["timestamp"], "1700000000");
        assert_eq!(b["sign"], json!(feishu_sign(secret, 1_700_000_000)));
        assert_eq!(b["content"]["text"], "【工地】PM10超标");
        assert_eq!(
            body(WebhookFormat::DingTalk, &alert, None, 0)["text"]["content"],
            "【工地】PM10超标"
        );
        assert_eq!(
            body(WebhookFormat::WeCom, &alert, None, 0)["msgtype"],
            "text"
        );
        assert_eq!(body(WebhookFormat::Generic, &alert, None, 0), alert);
    }

    #[test]
    fn robot_error_codes() {
        assert_eq!(
            classify_robot(WebhookFormat::DingTalk, r#"{"errcode":0,"errmsg":"ok"}"#),
            SendOutcome::Accepted
        );
        assert!(matches!(
            classify_robot(WebhookFormat::DingTalk, r#"{"errcode":130101}"#),
            SendOutcome::Retry { .. }
        ));
        assert!(matches!(
            classify_robot(
                WebhookFormat::DingTalk,
                r#"{"errcode":310000,"errmsg":"sign not match"}"#
            ),
            SendOutcome::Rejected { .. }
        ));
        assert!(matches!(
            classify_robot(
                WebhookFormat::Feishu,
                r#"{"code":19021,"msg":"sign match fail"}"#
            ),
            SendOutcome::Rejected { .. }
        ));
        assert_eq!(
            classify_robot(WebhookFormat::Feishu, r#"{"StatusCode":0}"#),
            SendOutcome::Accepted
        );
        assert_eq!(
            classify_robot(WebhookFormat::Generic, "whatever"),
            SendOutcome::Accepted
        );
    }

    /// A network error never shows the robot's access token (reqwest's own error text names
    /// the whole URL).
    #[tokio::test]
    async fn a_network_error_does_not_show_the_access_token() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9);
        let w = Webhook {
            name: "robot".into(),
            url: crate::config::Secret::Literal(format!(
                "http://127.0.0.1:{port}/robot/send?access_token=TOPSECRET"
            )),
            format: WebhookFormat::DingTalk,
            secret: Some(crate::config::Secret::Literal("SIGNSECRET".into())),
            min_severity: crate::config::rules::Severity::Info,
        };
        let mut sink = WebhookSink::new(&w, Duration::from_secs(2)).unwrap();
        let line = br#"{"alert_id":"a","message":"m","state":"open"}"#;
        match sink.send(line).await {
            SendOutcome::Retry { reason, .. } => {
                assert!(
                    reason.contains("robot") && reason.contains("127.0.0.1"),
                    "{reason}"
                );
                for secret in ["TOPSECRET", "SIGNSECRET", "sign="] {
                    assert!(!reason.contains(secret), "{secret} in {reason}");
                }
            }
            other => panic!("a refused connection is retried: {other:?}"),
        }
    }
}
