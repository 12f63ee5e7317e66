//! Smoke tests of the MQTT harness (tests/common/mqtt.rs) against a real
//! Mosquitto 2.0.11: every listener accepts what it should and refuses what it
//! should, bulk QoS 1 publishing loses nothing, persistent sessions survive a
//! broker restart, and rustls (the gateway's TLS stack) accepts the test PKI.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mqtt::{
    Certs, Conn, Message, Mosquitto, Session, Subscriber, USER, publish, publish_many,
    publish_with, try_publish,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A generous bound for messages that must arrive.
const ARRIVE: Duration = Duration::from_secs(30);

fn texts(messages: &[Message]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| (m.topic.clone(), m.text().into_owned()))
        .collect()
}

fn pair(topic: &str, payload: &str) -> (String, String) {
    (topic.to_owned(), payload.to_owned())
}

#[tokio::test]
async fn plain_listener_delivers_a_message() {
    let broker = Mosquitto::start();
    assert_eq!(
        broker.url_plain(),
        format!("mqtt://127.0.0.1:{}", broker.port_plain())
    );
    let mut sub = Subscriber::start(broker.port_plain(), "sensors/#", 1);
    let payload = r#"{"pm25":35,"pm10":80,"noise":65.3}"#;
    publish(broker.port_plain(), "sensors/dev1", payload, 1);
    publish(broker.port_plain(), "sensors/dev2", "", 0);
    publish(broker.port_plain(), "other/dev1", "not subscribed", 1);

    let got = sub.wait_for(2, ARRIVE).await;
    assert_eq!(
        texts(&got),
        vec![pair("sensors/dev1", payload), pair("sensors/dev2", "")]
    );
    assert_eq!((got[0].qos, got[0].retained), (1, false));
    assert_eq!(got[1].qos, 0);
}

#[tokio::test]
async fn password_listener_refuses_wrong_credentials_and_accepts_right_ones() {
    let mut broker = Mosquitto::start();
    let port = broker.port_password();
    let mut sub = Subscriber::start_with(&broker.conn_password(), "auth/#", 1, Session::Clean);

    let wrong = try_publish(
        &Conn::plain(port).with_password(USER, "not-the-password"),
        "auth/x",
        "wrong",
        1,
    );
    assert!(!wrong.success(), "wrong password accepted: {wrong:?}");
    assert!(
        wrong.stderr.contains("not authorised"),
        "wrong password: {wrong:?}"
    );

    let anonymous = try_publish(&Conn::plain(port), "auth/x", "anonymous", 1);
    assert!(!anonymous.success(), "anonymous accepted: {anonymous:?}");
    assert!(
        anonymous.stderr.contains("not authorised"),
        "anonymous: {anonymous:?}"
    );
    broker.wait_log("disconnected, not authorised", ARRIVE);

    publish_with(&broker.conn_password(), "auth/x", "right", 1);
    // All listeners share one topic tree.
    publish(broker.port_plain(), "auth/y", "from the plain listener", 1);
    let got = sub.wait_for(2, ARRIVE).await;
    assert_eq!(
        texts(&got),
        vec![
            pair("auth/x", "right"),
            pair("auth/y", "from the plain listener")
        ]
    );
    broker.wait_log(&format!("u'{USER}')"), ARRIVE);
}

#[tokio::test]
async fn tls_listener_needs_the_right_ca() {
    let mut broker = Mosquitto::start();
    assert_eq!(
        broker.url_tls(),
        format!("mqtts://127.0.0.1:{}", broker.port_tls())
    );
    let mut sub = Subscriber::start_with(&broker.conn_tls(), "tls/#", 1, Session::Clean);
    let certs = broker.certs().clone();
    let port = broker.port_tls();

    let other = try_publish(
        &Conn::plain(port).with_cafile(&certs.other_ca),
        "tls/x",
        "other ca",
        1,
    );
    assert!(!other.success(), "other CA accepted: {other:?}");
    assert!(other.stderr.contains("TLS error"), "other CA: {other:?}");
    broker.wait_log("unknown ca", ARRIVE);

    let plain = try_publish(&Conn::plain(port), "tls/x", "no tls", 1);
    assert!(!plain.success(), "plain MQTT accepted on TLS: {plain:?}");

    publish_with(&broker.conn_tls(), "tls/x", "by ip", 1);
    // The certificate also names localhost.
    publish_with(
        &broker.conn_tls().with_host("localhost"),
        "tls/x",
        "by name",
        1,
    );
    let got = sub.wait_for(2, ARRIVE).await;
    assert_eq!(
        texts(&got),
        vec![pair("tls/x", "by ip"), pair("tls/x", "by name")]
    );
}

#[tokio::test]
async fn mtls_listener_needs_a_client_certificate() {
    let mut broker = Mosquitto::start();
    let mut sub = Subscriber::start_with(&broker.conn_mtls(), "mtls/#", 1, Session::Clean);
    let certs = broker.certs().clone();
    let port = broker.port_mtls();

    let without = try_publish(
        &Conn::plain(port).with_cafile(&certs.ca),
        "mtls/x",
        "no cert",
        1,
    );
    assert!(!without.success(), "no client cert accepted: {without:?}");
    broker.wait_log("peer did not return a certificate", ARRIVE);

    publish_with(&broker.conn_mtls(), "mtls/x", "with cert", 1);
    let got = sub.wait_for(1, ARRIVE).await;
    assert_eq!(texts(&got), vec![pair("mtls/x", "with cert")]);
    // The certificate's CN is the username.
    broker.wait_log(&format!("u'{}')", Certs::CLIENT_CN), ARRIVE);
}

#[tokio::test]
async fn publish_many_delivers_5000_qos1_messages() {
    const DEVICES: usize = 5;
    const PER_DEVICE: usize = 1000;
    let broker = Mosquitto::start();
    let mut sub = Subscriber::start(broker.port_plain(), "bulk/#", 1);
    let messages: Vec<(String, String)> = (0..PER_DEVICE)
        .flat_map(|seq| {
            (0..DEVICES).map(move |dev| {
                (
                    format!("bulk/dev{dev}"),
                    format!(r#"{{"dev":"dev{dev}","seq":{seq},"pm25":{}}}"#, seq % 300),
                )
            })
        })
        .collect();
    let total = messages.len();

    let started = Instant::now();
    let published = publish_many(broker.port_plain(), messages.clone(), 1);
    let got = sub.wait_for(total, Duration::from_secs(120)).await;
    eprintln!(
        "publish_many: {total} QoS 1 messages acknowledged in {published:?}, all received after {:?}",
        started.elapsed()
    );

    assert_eq!(got.len(), total, "duplicates or extra messages");
    assert!(got.iter().all(|m| m.qos == 1));
    let sent: BTreeSet<(String, String)> = messages.into_iter().collect();
    let received: BTreeSet<(String, String)> = texts(&got).into_iter().collect();
    assert_eq!(received, sent);
    // Per topic, in publishing order.
    let mut per_topic: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for message in &got {
        let value: serde_json::Value =
            serde_json::from_slice(&message.payload).expect("JSON payload");
        let seq = value["seq"].as_u64().expect("seq") as usize;
        per_topic
            .entry(message.topic.clone())
            .or_default()
            .push(seq);
    }
    assert_eq!(per_topic.len(), DEVICES);
    for (topic, seqs) in per_topic {
        assert_eq!(
            seqs,
            (0..PER_DEVICE).collect::<Vec<_>>(),
            "order on {topic}"
        );
    }
}

#[tokio::test]
async fn persistent_session_keeps_messages_across_a_broker_restart() {
    let mut broker = Mosquitto::start();
    let port = broker.port_plain();
    let mut sub = Subscriber::persistent(port, "site/#", 1, "fixed-id");
    publish(port, "site/a", "while online", 1);
    sub.wait_for(1, ARRIVE).await;

    let status = sub.stop().expect("mosquitto_sub was running");
    eprintln!("mosquitto_sub stopped: {status}");
    let away: Vec<(String, String)> = (0..20)
        .map(|i| (format!("site/{}", ["a", "b"][i % 2]), format!("away {i}")))
        .collect();
    publish_many(port, away.clone(), 1);

    let status = broker.stop().expect("mosquitto was running");
    assert!(status.success(), "mosquitto exit on SIGTERM: {status}");
    assert!(
        broker.db_path().exists(),
        "no {} after stop",
        broker.db_path().display()
    );
    assert!(!common::port_accepts(port), "port still open after stop");
    broker.start_again();

    sub.start_again();
    let got = sub.wait_for(1 + away.len(), ARRIVE).await;
    let after: Vec<(String, String)> = texts(&got[1..]);
    // Per topic in order; the two topics come one after the other.
    let ordered = |topic: &str, list: &[(String, String)]| -> Vec<String> {
        list.iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| p.clone())
            .collect()
    };
    for topic in ["site/a", "site/b"] {
        assert_eq!(ordered(topic, &after), ordered(topic, &away), "{topic}");
    }
    assert_eq!(after.len(), away.len(), "duplicates: {after:?}");
    // Both connections asked for a persistent session (c0).
    let resumed = broker.log().matches(" as fixed-id (p2, c0, ").count();
    assert_eq!(resumed, 2, "{}", broker.log_tail());
}

// ---------------------------------------------------------------------------
// rustls (the gateway's TLS stack) against the test PKI
// ---------------------------------------------------------------------------

fn rustls_config(ca: &Path, client: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read CA file") {
        roots
            .add(cert.expect("CA PEM"))
            .expect("rustls takes the CA as a trust anchor");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .expect("read client cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("client cert PEM");
            let key = PrivateKeyDer::from_pem_file(key).expect("client key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("rustls takes the client cert and key")
        }
    };
    Arc::new(config)
}

/// TLS to 127.0.0.1:`port` as `server_name`, an MQTT 3.1.1 CONNECT, and the
/// CONNACK return code; or the error text.
fn rustls_mqtt_connect(
    port: u16,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<u8, String> {
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let client_id = b"rustls-check";
    let mut connect = vec![0x10, 12 + client_id.len() as u8];
    connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60]);
    connect.extend_from_slice(&[0, client_id.len() as u8]);
    connect.extend_from_slice(client_id);
    tls.write_all(&connect).map_err(|e| e.to_string())?;
    tls.flush().map_err(|e| e.to_string())?;
    let mut connack = [0u8; 4];
    tls.read_exact(&mut connack).map_err(|e| e.to_string())?;
    assert_eq!(connack[..2], [0x20, 0x02], "not a CONNACK: {connack:?}");
    Ok(connack[3])
}

#[test]
fn rustls_accepts_the_test_certificates() {
    let broker = Mosquitto::start();
    let certs = broker.certs();
    let server_auth = rustls_config(&certs.ca, None);
    for name in Certs::SERVER_NAMES {
        assert_eq!(
            rustls_mqtt_connect(broker.port_tls(), name, server_auth.clone()),
            Ok(0),
            "TLS as {name}"
        );
    }
    let wrong_name = rustls_mqtt_connect(broker.port_tls(), "dustgate.invalid", server_auth);
    assert!(
        wrong_name
            .as_ref()
            .is_err_and(|e| e.contains("not valid for name")),
        "{wrong_name:?}"
    );
    let other = rustls_mqtt_connect(
        broker.port_tls(),
        "localhost",
        rustls_config(&certs.other_ca, None),
    );
    assert!(
        other.as_ref().is_err_and(|e| e.contains("UnknownIssuer")),
        "{other:?}"
    );

    let mutual = rustls_config(&certs.ca, Some((&certs.client_cert, &certs.client_key)));
    assert_eq!(
        rustls_mqtt_connect(broker.port_mtls(), "localhost", mutual),
        Ok(0)
    );
    let no_cert = rustls_mqtt_connect(
        broker.port_mtls(),
        "localhost",
        rustls_config(&certs.ca, None),
    );
    assert!(no_cert.is_err(), "mTLS without a client cert: {no_cert:?}");
    eprintln!("rustls errors: other CA {other:?}; mTLS without a client cert {no_cert:?}");
}
