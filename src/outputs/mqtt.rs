//! Alerts published on an MQTT topic, through a broker connection of an `[[mqtt]]` source.
//!
//! The sink hands each alert to the broker task and waits for the broker's PUBACK: only then is
//! the alert deleted from its queue, so an alert survives a broker outage and a restart.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::sink::{SendOutcome, Sink};

/// A QoS 1 publish the broker task performs; `done` is answered at PUBACK (or failure).
#[derive(Debug)]
pub struct PublishRequest {
    pub topic: String,
    pub payload: Vec<u8>,
    pub done: oneshot::Sender<Result<(), String>>,
}

pub struct MqttSink {
    broker: String,
    topic: String,
    handle: mpsc::Sender<PublishRequest>,
    timeout: Duration,
}

impl MqttSink {
    pub fn new(broker: &str, topic: &str, handle: mpsc::Sender<PublishRequest>) -> Self {
        Self {
            broker: broker.to_string(),
            topic: topic.to_string(),
            handle,
            timeout: Duration::from_secs(10),
        }
    }
}

impl Sink for MqttSink {
    async fn send(&mut self, line: &[u8]) -> SendOutcome {
        let payload = line.strip_suffix(b"\n").unwrap_or(line).to_vec();
        let (done, answer) = oneshot::channel();
        let req = PublishRequest {
            topic: self.topic.clone(),
            payload,
            done,
        };
        if self.handle.send(req).await.is_err() {
            return SendOutcome::Retry {
                after: None,
                busy: false,
                reason: format!("broker {} is stopping", self.broker),
            };
        }
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(Ok(()))) => SendOutcome::Accepted,
            Ok(Ok(Err(e))) => SendOutcome::Retry {
                after: None,
                busy: false,
                reason: format!("broker {}: {e}", self.broker),
            },
            Ok(Err(_)) => SendOutcome::Retry {
                after: None,
                busy: false,
                reason: format!("broker {}: connection reset", self.broker),
            },
            Err(_) => SendOutcome::Retry {
                after: None,
                busy: false,
                reason: format!(
                    "broker {}: no PUBACK within {:?}",
                    self.broker, self.timeout
                ),
            },
        }
    }

    fn describe(&self) -> String {
        format!("MQTT {} on broker {}", self.topic, self.broker)
    }
}
