//! MQTT peers: a real Mosquitto 2.0.11 broker with four listeners, a test PKI
//! made with the `openssl` CLI, and publishers/subscribers driven through
//! `mosquitto_pub` / `mosquitto_sub` (Debian's mosquitto-clients).
//!
//! Like the rest of the harness, process management is blocking (std::process,
//! short sleeps): [`publish`] and [`publish_many`] return once the broker has
//! the messages. Waiting for an outcome is async ([`Subscriber::wait_for`]),
//! like [`super::eventually`].
//!
//! Every broker and subscriber has its files under `target/test-scratch/` and
//! is killed when its guard is dropped.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{
    LOG_TAIL_LINES, POLL, Proc, START_TIMEOUT, STOP_TIMEOUT, free_port, path_str, require_program,
    scratch_dir,
};

/// The user of the password listener.
pub const USER: &str = "gw";
/// The password of [`USER`] on the password listener.
pub const PASSWORD: &str = "gw-secret";

/// Shown when a Mosquitto program is missing.
pub const MOSQUITTO_MISSING: &str =
    "mosquitto not found: run scripts/test, or apt-get install mosquitto mosquitto-clients";
/// Shown when `openssl` is missing.
pub const OPENSSL_MISSING: &str = "openssl not found: run scripts/test, or apt-get install openssl";
const STDBUF_MISSING: &str =
    "stdbuf not found (it is in coreutils): run scripts/test, or apt-get install coreutils";

/// How long one `mosquitto_pub` may take before it is killed.
const PUB_TIMEOUT: Duration = Duration::from_secs(30);
/// [`publish_many`] fails when no acknowledgement arrived for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Topics under this prefix are the harness's own readiness probes.
const PROBE_PREFIX: &str = "dustgate-harness/probe/";
/// `mosquitto_sub -F`: hex payload, QoS, retain flag, then the topic (which
/// may hold spaces) to the end of the line.
const SUB_FORMAT: &str = "%x %q %r %t";

fn mosquitto_program(name: &str) -> PathBuf {
    require_program(name, MOSQUITTO_MISSING)
}

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// The openssl config: every extension is spelled out, so that the system
/// openssl.cnf does not matter. What rustls (webpki) insists on:
/// - X.509 v3. `openssl x509 -req` without `-extfile` makes a v1 certificate,
///   which webpki rejects as a server or client certificate
///   (UnsupportedCertVersion; only a trust anchor may be v1).
/// - The CA: basicConstraints CA:TRUE and keyUsage keyCertSign.
/// - The server: CA:FALSE (a CA used as an end entity is refused), a
///   subjectAltName matching the name dialled (the CN is ignored): DNS:localhost
///   for `localhost`, IP:127.0.0.1 for `127.0.0.1`, and extendedKeyUsage
///   serverAuth (clientAuth for the client certificate).
const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no

[dn]

[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer

[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
";

/// A throwaway PKI made with the `openssl` CLI: EC P-256 keys (PEM, PKCS#8,
/// unencrypted), certificates valid for 30 days from now.
///
/// Keys keep the mode openssl gives them (0600, owned by whoever runs the
/// tests): [`Mosquitto`] runs as that same user (`user root` in its config),
/// so it can read them.
#[derive(Clone, Debug)]
pub struct Certs {
    pub dir: PathBuf,
    /// The test CA (`CN=dustgate test CA`).
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    /// `CN=localhost`, SAN `DNS:localhost, IP:127.0.0.1`, signed by [`Certs::ca`].
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// `CN=dustgate-test` (clientAuth), signed by [`Certs::ca`].
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// An unrelated CA (`CN=dustgate other CA`) that signed nothing here:
    /// trusting it instead of [`Certs::ca`] must fail.
    pub other_ca: PathBuf,
}

impl Certs {
    /// The server certificate's names (dial either).
    pub const SERVER_NAMES: [&'static str; 2] = ["localhost", "127.0.0.1"];
    /// The client certificate's CN (Mosquitto's username on the mTLS listener).
    pub const CLIENT_CN: &'static str = "dustgate-test";

    /// Makes the CA, server, client and other-CA files in `dir` (created).
    pub fn make(dir: &Path) -> Certs {
        let openssl = require_program("openssl", OPENSSL_MISSING);
        fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("cannot create cert dir {}: {e}", dir.display()));
        let cnf = dir.join("openssl.cnf");
        fs::write(&cnf, OPENSSL_CNF).expect("write openssl.cnf");
        let file = |name: &str| dir.join(name);
        let certs = Certs {
            dir: dir.to_owned(),
            ca: file("ca.crt"),
            ca_key: file("ca.key"),
            server_cert: file("server.crt"),
            server_key: file("server.key"),
            client_cert: file("client.crt"),
            client_key: file("client.key"),
            other_ca: file("other-ca.crt"),
        };
        // openssl runs in `dir`: the file names are relative.
        let ec_key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        let self_signed_ca = |cn: &str, name: &str| {
            let args = format!(
                "req -config openssl.cnf -x509 -extensions ca {ec_key} -days 30 \
                 -keyout {name}.key -out {name}.crt"
            );
            run_openssl(&openssl, dir, &args, cn);
        };
        let signed = |cn: &str, name: &str| {
            let args =
                format!("req -config openssl.cnf -new {ec_key} -keyout {name}.key -out {name}.csr");
            run_openssl(&openssl, dir, &args, cn);
            let args = format!(
                "x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -CAserial ca.srl \
                 -days 30 -extfile openssl.cnf -extensions {name} -out {name}.crt"
            );
            run_openssl(&openssl, dir, &args, "");
        };
        self_signed_ca("dustgate test CA", "ca");
        signed("localhost", "server");
        signed(Self::CLIENT_CN, "client");
        self_signed_ca("dustgate other CA", "other-ca");
        certs
    }
}

/// Runs `openssl` in `dir` with the whitespace-separated `args`, plus
/// `-subj /CN=cn` unless `cn` is empty.
fn run_openssl(openssl: &Path, dir: &Path, args: &str, cn: &str) {
    let mut args: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
    if !cn.is_empty() {
        args.extend(["-subj".to_owned(), format!("/CN={cn}")]);
    }
    let output = Command::new(openssl)
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", openssl.display()));
    assert!(
        output.status.success(),
        "openssl {} failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------
// Connection options for mosquitto_pub / mosquitto_sub
// ---------------------------------------------------------------------------

/// Where and how a client connects: host 127.0.0.1 (or another name for TLS
/// name checks), a port, and optional credentials, CA and client certificate.
/// The [`Mosquitto`] `conn_*` methods give the right one for each listener.
#[derive(Clone, Debug)]
pub struct Conn {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Trust this CA (`--cafile`): makes the connection TLS.
    pub cafile: Option<PathBuf>,
    /// `--cert`, `--key`.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl Conn {
    /// Anonymous plain MQTT to 127.0.0.1:`port`.
    pub fn plain(port: u16) -> Conn {
        Conn {
            host: "127.0.0.1".to_owned(),
            port,
            username: None,
            password: None,
            cafile: None,
            client_cert: None,
        }
    }

    pub fn with_host(mut self, host: &str) -> Conn {
        host.clone_into(&mut self.host);
        self
    }

    pub fn with_password(mut self, username: &str, password: &str) -> Conn {
        self.username = Some(username.to_owned());
        self.password = Some(password.to_owned());
        self
    }

    pub fn with_cafile(mut self, cafile: &Path) -> Conn {
        self.cafile = Some(cafile.to_owned());
        self
    }

    pub fn with_client_cert(mut self, cert: &Path, key: &Path) -> Conn {
        self.client_cert = Some((cert.to_owned(), key.to_owned()));
        self
    }

    /// The connection arguments shared by mosquitto_pub and mosquitto_sub.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "-h".into(),
            self.host.clone().into(),
            "-p".into(),
            self.port.to_string().into(),
        ];
        if let Some(username) = &self.username {
            args.extend(["-u".into(), username.into()]);
        }
        if let Some(password) = &self.password {
            args.extend(["-P".into(), password.into()]);
        }
        if let Some(cafile) = &self.cafile {
            args.extend(["--cafile".into(), cafile.into()]);
        }
        if let Some((cert, key)) = &self.client_cert {
            args.extend(["--cert".into(), cert.into(), "--key".into(), key.into()]);
        }
        args
    }
}

// ---------------------------------------------------------------------------
// Mosquitto broker
// ---------------------------------------------------------------------------

/// The four listeners' ports.
#[derive(Clone, Copy, Debug)]
struct Ports {
    plain: u16,
    password: u16,
    tls: u16,
    mtls: u16,
}

/// Mosquitto 2.0.11 (Debian) with its config, password file, certificates and
/// persistence under a scratch dir, and four loopback listeners sharing one
/// topic tree:
/// - plain, anonymous ([`Mosquitto::port_plain`]);
/// - plain, [`USER`]/[`PASSWORD`] only ([`Mosquitto::port_password`]);
/// - TLS with the [`Certs`] server certificate, anonymous ([`Mosquitto::port_tls`]);
/// - mutual TLS: a client certificate signed by [`Certs::ca`] is required, its
///   CN becomes the username ([`Mosquitto::port_mtls`]).
///
/// Persistence is on (`data/mosquitto.db`, saved every ~2 s and at SIGTERM),
/// so persistent sessions and their queued QoS 1/2 messages survive
/// [`Mosquitto::stop`] + [`Mosquitto::start_again`]; `max_queued_messages 0`
/// (unlimited: the default of 1000 drops messages for a slow subscriber
/// silently).
pub struct Mosquitto {
    proc: Proc,
    dir: PathBuf,
    config: PathBuf,
    certs: Certs,
    ports: Ports,
}

impl Mosquitto {
    pub const MISSING: &'static str = MOSQUITTO_MISSING;
    pub const USER: &'static str = USER;
    pub const PASSWORD: &'static str = PASSWORD;

    /// Makes the certificates and password file, starts the broker and waits
    /// for its "mosquitto version ... running" log line (printed once every
    /// listener is open).
    pub fn start() -> Mosquitto {
        let mosquitto = mosquitto_program("mosquitto");
        let dir = scratch_dir("mosquitto");
        let certs = Certs::make(&dir.join("certs"));
        let passwd = dir.join("passwd");
        let output = Command::new(mosquitto_program("mosquitto_passwd"))
            .args(["-c", "-b"])
            .arg(&passwd)
            .args([USER, PASSWORD])
            .stdin(Stdio::null())
            .output()
            .expect("run mosquitto_passwd");
        assert!(
            output.status.success(),
            "mosquitto_passwd failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let data = dir.join("data");
        fs::create_dir_all(&data).expect("create mosquitto data dir");
        let config = dir.join("mosquitto.conf");

        // A port that was free a moment ago may be taken by the time the broker
        // binds it: then retry with fresh ports.
        let mut last_error = String::new();
        for _ in 0..3 {
            let ports = Ports {
                plain: free_port(),
                password: free_port(),
                tls: free_port(),
                mtls: free_port(),
            };
            let text = Self::config_text(&ports, &data, &passwd, &certs);
            fs::write(&config, text).expect("write mosquitto.conf");
            let args = [OsString::from("-c"), config.clone().into()];
            let mut proc = Proc::spawn("mosquitto", &dir, &mosquitto, args);
            match Self::wait_running(&mut proc, 0) {
                Ok(()) => {
                    return Mosquitto {
                        proc,
                        dir,
                        config,
                        certs,
                        ports,
                    };
                }
                Err(message) => {
                    if !proc
                        .stderr()
                        .to_lowercase()
                        .contains("address already in use")
                    {
                        panic!("{message}");
                    }
                    last_error = message;
                }
            }
        }
        panic!("{last_error}");
    }

    fn config_text(ports: &Ports, data: &Path, passwd: &Path, certs: &Certs) -> String {
        let tls = format!(
            "cafile {}\ncertfile {}\nkeyfile {}",
            path_str(&certs.ca),
            path_str(&certs.server_cert),
            path_str(&certs.server_key)
        );
        // `user root`: started as root, Mosquitto would otherwise switch to the
        // `mosquitto` user before opening its files, and then could not write
        // the pid file or the persistence dir, nor read the 0600 keys, all owned
        // by root under target/ (chown/chgrp would be needed, and that user must
        // also be able to traverse the work tree). With `user root` it keeps the
        // identity it was started with: root in CI (it logs "Mosquitto should
        // not be run as root/administrator"), and the option is ignored when a
        // developer runs the tests as themselves.
        format!(
            "# dustgate test broker (tests/common/mqtt.rs)
user root
per_listener_settings true

persistence true
persistence_location {data}/
autosave_interval 2
max_queued_messages 0

log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp true
log_timestamp_format %Y-%m-%dT%H:%M:%S

listener {plain} 127.0.0.1
allow_anonymous true

listener {password} 127.0.0.1
allow_anonymous false
password_file {passwd}

listener {tls_port} 127.0.0.1
allow_anonymous true
{tls}

listener {mtls} 127.0.0.1
allow_anonymous false
{tls}
require_certificate true
use_identity_as_username true
",
            data = path_str(data),
            plain = ports.plain,
            password = ports.password,
            passwd = path_str(passwd),
            tls_port = ports.tls,
            mtls = ports.mtls,
        )
    }

    /// How many times the log says the broker was up.
    fn runs(log: &str) -> usize {
        log.lines()
            .filter(|line| line.contains("mosquitto version") && line.ends_with(" running"))
            .count()
    }

    fn wait_running(proc: &mut Proc, runs_before: usize) -> Result<(), String> {
        let log = proc.stderr_path();
        proc.try_wait_until(
            "the \"mosquitto version ... running\" log line",
            START_TIMEOUT,
            || Self::runs(&fs::read_to_string(&log).unwrap_or_default()) > runs_before,
        )
    }

    pub fn port_plain(&self) -> u16 {
        self.ports.plain
    }

    pub fn port_password(&self) -> u16 {
        self.ports.password
    }

    pub fn port_tls(&self) -> u16 {
        self.ports.tls
    }

    pub fn port_mtls(&self) -> u16 {
        self.ports.mtls
    }

    /// `mqtt://127.0.0.1:PORT` (anonymous).
    pub fn url_plain(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.ports.plain)
    }

    /// `mqtt://127.0.0.1:PORT` (needs [`USER`]/[`PASSWORD`]).
    pub fn url_password(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.ports.password)
    }

    /// `mqtts://127.0.0.1:PORT` (trust [`Certs::ca`]).
    pub fn url_tls(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.ports.tls)
    }

    /// `mqtts://127.0.0.1:PORT` (trust [`Certs::ca`], present the client cert).
    pub fn url_mtls(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.ports.mtls)
    }

    pub fn conn_plain(&self) -> Conn {
        Conn::plain(self.ports.plain)
    }

    pub fn conn_password(&self) -> Conn {
        Conn::plain(self.ports.password).with_password(USER, PASSWORD)
    }

    pub fn conn_tls(&self) -> Conn {
        Conn::plain(self.ports.tls).with_cafile(&self.certs.ca)
    }

    pub fn conn_mtls(&self) -> Conn {
        Conn::plain(self.ports.mtls)
            .with_cafile(&self.certs.ca)
            .with_client_cert(&self.certs.client_cert, &self.certs.client_key)
    }

    pub fn certs(&self) -> &Certs {
        &self.certs
    }

    /// The scratch dir (mosquitto.conf, passwd, certs/, data/, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The persistence file (written every ~2 s and at SIGTERM).
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("data").join("mosquitto.db")
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// The broker's log so far, all runs (it logs to stderr).
    pub fn log(&self) -> String {
        self.proc.stderr()
    }

    pub fn log_tail(&self) -> String {
        self.proc.log_tail(LOG_TAIL_LINES)
    }

    /// Waits until the log holds `needle` (log lines can lag the client's exit).
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let path = self.proc.stderr_path();
        self.proc
            .wait_until(&format!("broker log line {needle:?}"), timeout, || {
                fs::read_to_string(&path).is_ok_and(|log| log.contains(needle))
            });
    }

    /// SIGTERM and wait: Mosquitto saves its database, then exits 0.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.proc.stop()
    }

    /// SIGKILL (a crash): what changed since the last autosave is lost.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        self.proc.kill9()
    }

    /// Starts again with the same config, ports and data dir, and waits until
    /// it runs (persistent sessions and their queued messages are restored).
    pub fn start_again(&mut self) {
        let before = Self::runs(&self.proc.stderr());
        self.proc.respawn();
        if let Err(message) = Self::wait_running(&mut self.proc, before) {
            panic!("{message}");
        }
    }
}

// ---------------------------------------------------------------------------
// Publishing
// ---------------------------------------------------------------------------

/// What one `mosquitto_pub` run ended with.
#[derive(Debug)]
pub struct PubOutcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl PubOutcome {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code (None if killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Kills and reaps a child that is still running when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn check_qos(qos: u8) {
    assert!(qos <= 2, "MQTT QoS is 0, 1 or 2, not {qos}");
}

/// Publishes one message with `mosquitto_pub` on `conn` and returns how it
/// ended (for tests that expect a refusal). Killed after 30 s.
pub fn try_publish(conn: &Conn, topic: &str, payload: &str, qos: u8) -> PubOutcome {
    try_publish_flags(conn, topic, payload, qos, &[])
}

/// [`try_publish`] with extra mosquitto_pub flags (`-r` for a retained message).
pub fn try_publish_flags(
    conn: &Conn,
    topic: &str,
    payload: &str,
    qos: u8,
    flags: &[&str],
) -> PubOutcome {
    check_qos(qos);
    let mut command = Command::new(mosquitto_program("mosquitto_pub"));
    command
        .args(conn.args())
        .args(["-t", topic, "-q", &qos.to_string()])
        .args(flags);
    if payload.is_empty() {
        command.arg("-n");
    } else {
        command.args(["-m", payload]);
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start mosquitto_pub: {e}"));
    let mut child = ChildGuard(child);
    // The outputs are a few lines: they fit in the pipes until the exit.
    let deadline = Instant::now() + PUB_TIMEOUT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait mosquitto_pub") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "mosquitto_pub {topic} to {}:{} still running after {PUB_TIMEOUT:?}",
            conn.host,
            conn.port
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = String::new();
    if let Some(mut pipe) = child.0.stdout.take() {
        let _ = pipe.read_to_string(&mut stdout);
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.0.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    PubOutcome {
        status,
        stdout,
        stderr,
    }
}

/// Publishes one message on `conn`; panics if mosquitto_pub fails. With QoS
/// 1/2 it returns once the broker has acknowledged the message.
pub fn publish_with(conn: &Conn, topic: &str, payload: &str, qos: u8) {
    let outcome = try_publish(conn, topic, payload, qos);
    assert!(
        outcome.success(),
        "mosquitto_pub -t {topic} to {}:{} failed ({}): {}{}",
        conn.host,
        conn.port,
        outcome.status,
        outcome.stdout,
        outcome.stderr
    );
}

/// Publishes one message on the anonymous plain listener at `port`.
pub fn publish(port: u16, topic: &str, payload: &str, qos: u8) {
    publish_with(&Conn::plain(port), topic, payload, qos);
}

/// Publishes one retained message on the anonymous plain listener at `port`: the broker keeps
/// it and hands it to every later subscriber with the retain flag set.
pub fn publish_retained(port: u16, topic: &str, payload: &str, qos: u8) {
    let outcome = try_publish_flags(&Conn::plain(port), topic, payload, qos, &["-r"]);
    assert!(
        outcome.success(),
        "mosquitto_pub -r -t {topic} to 127.0.0.1:{port} failed ({}): {}{}",
        outcome.status,
        outcome.stdout,
        outcome.stderr
    );
}

/// Publishes many messages on the anonymous plain listener at `port`; see
/// [`publish_many_with`].
pub fn publish_many<I, T, P>(port: u16, messages: I, qos: u8) -> Duration
where
    I: IntoIterator<Item = (T, P)>,
    T: Into<String>,
    P: Into<String>,
{
    publish_many_with(&Conn::plain(port), messages, qos)
}

/// Publishes `(topic, payload)` messages and returns once the broker has all
/// of them: every QoS 1 message PUBACKed (QoS 2: PUBCOMPed; QoS 0: written).
/// Returns how long that took.
///
/// One `mosquitto_pub -l -d` per topic (`-l` publishes each stdin line to its
/// one `-t` topic), up to [`PUBLISHERS_AT_ONCE`] topics at a time, so order is
/// kept per topic only. Each is fed through a pipe that stays open until its
/// `-d` output shows an acknowledgement for every line: at EOF mosquitto_pub
/// sends DISCONNECT even while messages are still queued in the client (they
/// are then lost). `stdbuf -oL` makes that output line-buffered.
///
/// Payloads must not contain a newline.
pub fn publish_many_with<I, T, P>(conn: &Conn, messages: I, qos: u8) -> Duration
where
    I: IntoIterator<Item = (T, P)>,
    T: Into<String>,
    P: Into<String>,
{
    check_qos(qos);
    let started = Instant::now();
    let mut by_topic: Vec<(String, Vec<String>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (topic, payload) in messages {
        let (topic, payload) = (topic.into(), payload.into());
        assert!(
            !payload.contains('\n'),
            "publish_many: a payload contains a newline (mosquitto_pub -l sends one message per line): {payload:?}"
        );
        let slot = *index.entry(topic.clone()).or_insert_with(|| {
            by_topic.push((topic, Vec::new()));
            by_topic.len() - 1
        });
        by_topic[slot].1.push(payload);
    }
    let mut topics = by_topic.into_iter().peekable();
    while topics.peek().is_some() {
        let running: Vec<LinePublisher> = topics
            .by_ref()
            .take(PUBLISHERS_AT_ONCE)
            .map(|(topic, payloads)| LinePublisher::start(conn, topic, payloads, qos))
            .collect();
        for publisher in running {
            publisher.finish();
        }
    }
    started.elapsed()
}

/// How many `mosquitto_pub -l` run at once in [`publish_many_with`]. Each
/// spends ~0.2 s sleeping (100 ms after CONNACK before it reads stdin, 100 ms
/// after EOF before it disconnects), so topics go in parallel.
pub const PUBLISHERS_AT_ONCE: usize = 16;

/// One `stdbuf -oL mosquitto_pub -l -d -t topic` being fed its lines.
struct LinePublisher {
    child: ChildGuard,
    host: String,
    port: u16,
    topic: String,
    total: usize,
    writer: std::thread::JoinHandle<std::io::Result<ChildStdin>>,
    acked: Arc<AtomicUsize>,
    tail: Arc<Mutex<VecDeque<String>>>,
    reader: std::thread::JoinHandle<()>,
    stderr: std::thread::JoinHandle<String>,
}

impl LinePublisher {
    fn start(conn: &Conn, topic: String, payloads: Vec<String>, qos: u8) -> LinePublisher {
        // The -d line that proves a message is with the broker.
        let ack = match qos {
            0 => " sending PUBLISH ",
            1 => " received PUBACK ",
            _ => " received PUBCOMP ",
        };
        let child = Command::new(require_program("stdbuf", STDBUF_MISSING))
            .arg("-oL")
            .arg(mosquitto_program("mosquitto_pub"))
            .args(conn.args())
            .args(["-t", &topic, "-q", &qos.to_string(), "-l", "-d"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start stdbuf mosquitto_pub: {e}"));
        let mut child = ChildGuard(child);
        let total = payloads.len();

        let stdin = child.0.stdin.take().expect("piped stdin");
        let writer = std::thread::spawn(move || -> std::io::Result<ChildStdin> {
            let mut out = BufWriter::with_capacity(64 * 1024, stdin);
            for payload in &payloads {
                out.write_all(payload.as_bytes())?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            // Returned, not dropped: EOF only once everything is acknowledged.
            out.into_inner().map_err(|e| e.into_error())
        });

        let acked = Arc::new(AtomicUsize::new(0));
        let tail = Arc::new(Mutex::new(VecDeque::<String>::new()));
        let stdout = child.0.stdout.take().expect("piped stdout");
        let reader = {
            let (acked, tail) = (Arc::clone(&acked), Arc::clone(&tail));
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line.contains(ack) {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                    if tail.len() == LOG_TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            })
        };
        let mut stderr_pipe = child.0.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            text
        });
        LinePublisher {
            child,
            host: conn.host.clone(),
            port: conn.port,
            topic,
            total,
            writer,
            acked,
            tail,
            reader,
            stderr,
        }
    }

    /// Kills mosquitto_pub and panics with what it said.
    fn fail(mut self, what: &str) -> ! {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        let _ = self.reader.join();
        let stderr = self.stderr.join().unwrap_or_default();
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        panic!(
            "publish_many: mosquitto_pub -t {} to {}:{}: {what} ({} of {} acknowledged)\n--- stdout tail (-d) ---\n{}\n--- stderr ---\n{stderr}",
            self.topic,
            self.host,
            self.port,
            self.acked.load(Ordering::SeqCst),
            self.total,
            Vec::from(tail.clone()).join("\n"),
        );
    }

    /// Waits for every acknowledgement, then closes stdin and waits for a
    /// clean exit.
    fn finish(mut self) {
        let mut last_count = 0;
        let mut last_progress = Instant::now();
        loop {
            let count = self.acked.load(Ordering::SeqCst);
            if count >= self.total {
                break;
            }
            if count != last_count {
                last_count = count;
                last_progress = Instant::now();
            }
            if let Some(status) = self.child.0.try_wait().expect("try_wait mosquitto_pub") {
                self.fail(&format!("exited early ({status})"));
            }
            if last_progress.elapsed() > STALL_TIMEOUT {
                self.fail(&format!("no acknowledgement for {STALL_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }

        // Everything is with the broker: EOF makes mosquitto_pub disconnect.
        match self.writer.join().expect("publish_many writer thread") {
            Ok(stdin) => drop(stdin),
            Err(e) => panic!("publish_many: writing to mosquitto_pub failed: {e}"),
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.0.try_wait().expect("try_wait mosquitto_pub") {
                break status;
            }
            if Instant::now() >= deadline {
                // (The guard kills it.)
                panic!(
                    "publish_many: mosquitto_pub -t {} still running {STOP_TIMEOUT:?} after EOF",
                    self.topic
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let _ = self.reader.join();
        let stderr = self.stderr.join().unwrap_or_default();
        assert!(
            status.success(),
            "publish_many: mosquitto_pub -t {} exited with {status} after all {} were acknowledged: {stderr}",
            self.topic,
            self.total
        );
    }
}

// ---------------------------------------------------------------------------
// Subscriber
// ---------------------------------------------------------------------------

/// One message as a subscriber received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    /// The QoS it was delivered with (the lower of published and subscribed).
    pub qos: u8,
    /// Set for a retained message delivered because of the subscription.
    pub retained: bool,
}

impl Message {
    /// The payload as text (invalid UTF-8 replaced).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.payload)
    }

    /// Parses one `mosquitto_sub -F "%x %q %r %t"` line.
    fn parse(line: &str) -> Option<Message> {
        let (hex, rest) = line.split_once(' ')?;
        let (qos, rest) = rest.split_once(' ')?;
        let (retained, topic) = rest.split_once(' ')?;
        if hex.len() % 2 != 0 {
            return None;
        }
        let payload = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        Some(Message {
            topic: topic.to_owned(),
            payload,
            qos: qos.parse().ok()?,
            retained: retained == "1",
        })
    }
}

/// How a [`Subscriber`]'s session lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Session {
    /// A fresh client id, clean session.
    Clean,
    /// `-c -i client_id`: the broker keeps the subscription and queues QoS 1/2
    /// messages while the client is away (also across broker restarts).
    Persistent { client_id: String },
}

/// `mosquitto_sub` collecting messages in the background into its log
/// (`-F "%x %q %r %t"`: binary-safe, one line per message, flushed per
/// message). [`Subscriber::start`] returns once the subscription is active.
///
/// Readiness: the client also subscribes to a private probe topic (in the same
/// SUBSCRIBE packet), and the harness publishes probes until one arrives. The
/// probes are left out of [`Subscriber::messages`].
pub struct Subscriber {
    proc: Proc,
    conn: Conn,
    client_id: String,
    topic: String,
    probe_topic: String,
    probes: usize,
}

impl Subscriber {
    /// Subscribes to `topic` (filters allowed) on the anonymous plain
    /// listener at `port`, clean session.
    pub fn start(port: u16, topic: &str, qos: u8) -> Subscriber {
        Self::start_with(&Conn::plain(port), topic, qos, Session::Clean)
    }

    /// Like [`Subscriber::start`] with a persistent session under `client_id`.
    pub fn persistent(port: u16, topic: &str, qos: u8, client_id: &str) -> Subscriber {
        let session = Session::Persistent {
            client_id: client_id.to_owned(),
        };
        Self::start_with(&Conn::plain(port), topic, qos, session)
    }

    /// Subscribes on any listener (`conn` carries credentials and TLS files).
    pub fn start_with(conn: &Conn, topic: &str, qos: u8, session: Session) -> Subscriber {
        check_qos(qos);
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let (client_id, persistent) = match session {
            Session::Clean => (
                format!(
                    "dustgate-sub-{}-{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::SeqCst)
                ),
                false,
            ),
            Session::Persistent { client_id } => (client_id, true),
        };
        let probe_topic = format!("{PROBE_PREFIX}{client_id}");
        let mut args = conn.args();
        let qos = qos.to_string();
        for arg in [
            "-i",
            &client_id,
            "-q",
            &qos,
            "-t",
            topic,
            "-t",
            &probe_topic,
            "-F",
            SUB_FORMAT,
        ] {
            args.push(arg.into());
        }
        if persistent {
            args.push("-c".into());
        }
        let dir = scratch_dir("mqtt-sub");
        let proc = Proc::spawn(
            "mosquitto_sub",
            &dir,
            &mosquitto_program("mosquitto_sub"),
            args,
        );
        let mut subscriber = Subscriber {
            proc,
            conn: conn.clone(),
            client_id,
            topic: topic.to_owned(),
            probe_topic,
            probes: 0,
        };
        subscriber.wait_subscribed();
        subscriber
    }

    /// Publishes probes until one comes back through the subscription.
    fn wait_subscribed(&mut self) {
        self.probes += 1;
        let nonce = format!("probe-{}", self.probes);
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_pub = String::new();
        loop {
            let outcome = try_publish(&self.conn, &self.probe_topic, &nonce, 0);
            if !outcome.success() {
                last_pub = format!("{}: {}", outcome.status, outcome.stderr.trim());
            }
            let until = Instant::now() + Duration::from_millis(250);
            while Instant::now() < until {
                if self.all_messages().iter().any(|message| {
                    message.topic == self.probe_topic && message.payload == nonce.as_bytes()
                }) {
                    return;
                }
                if let Some(status) = self.proc.exit_status() {
                    panic!(
                        "mosquitto_sub {} exited ({status}) before it was subscribed to {}\n{}",
                        self.client_id,
                        self.topic,
                        self.log_tail()
                    );
                }
                std::thread::sleep(POLL);
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto_sub {}: no probe came back within {START_TIMEOUT:?} (last probe publish: {last_pub})\n{}",
                self.client_id,
                self.log_tail()
            );
        }
    }

    fn all_messages(&self) -> Vec<Message> {
        let out = self.proc.stdout();
        // Only whole lines: the last one may still be being written.
        let complete = out.rfind('\n').map_or("", |end| &out[..end]);
        complete
            .lines()
            .map(|line| {
                Message::parse(line).unwrap_or_else(|| {
                    panic!(
                        "mosquitto_sub {}: unexpected output line {line:?}",
                        self.client_id
                    )
                })
            })
            .collect()
    }

    /// Everything received so far, in order, over all runs (probes left out).
    pub fn messages(&self) -> Vec<Message> {
        self.all_messages()
            .into_iter()
            .filter(|message| !message.topic.starts_with(PROBE_PREFIX))
            .collect()
    }

    pub fn count(&self) -> usize {
        self.messages().len()
    }

    /// Waits until at least `n` messages arrived and returns them all; panics
    /// after `timeout` (or when mosquitto_sub exits) with what did arrive.
    pub async fn wait_for(&mut self, n: usize, timeout: Duration) -> Vec<Message> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            if let Some(status) = self.proc.exit_status() {
                panic!(
                    "mosquitto_sub {} exited ({status}) with {} of {n} messages\n{}",
                    self.client_id,
                    messages.len(),
                    self.log_tail()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                let last: Vec<String> = messages
                    .iter()
                    .rev()
                    .take(5)
                    .map(|m| format!("{} {}", m.topic, m.text()))
                    .collect();
                panic!(
                    "mosquitto_sub {} on {}: {} of {n} messages after {timeout:?} (last: {last:?})\n{}",
                    self.client_id,
                    self.topic,
                    messages.len(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    pub fn log_tail(&self) -> String {
        self.proc.log_tail(LOG_TAIL_LINES)
    }

    /// SIGTERM and wait. A persistent session stays on the broker.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.proc.stop()
    }

    pub fn kill9(&mut self) -> Option<ExitStatus> {
        self.proc.kill9()
    }

    /// Starts the same mosquitto_sub again (same client id: a persistent
    /// session resumes and gets what was queued) and waits until subscribed.
    pub fn start_again(&mut self) {
        self.proc.respawn();
        self.wait_subscribed();
    }
}
