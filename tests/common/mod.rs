//! Test harness: real third-party peers for dustgate's integration tests.
//!
//! Every peer is a real process (InfluxDB 1.6.7 `influxd`, `victoria-metrics`,
//! the pymodbus-based `tests/peers/modbus_sim.py`, `socat` pty pairs) started by
//! the test on free loopback ports, with its files in a fresh directory under
//! `target/test-scratch/`, and killed when its guard is dropped (also when the
//! test panics). A missing peer makes the test fail with an install hint.
//!
//! Process management is blocking (std::process, short sleeps); HTTP queries are
//! async (reqwest). Everything is safe to use from tests that run in parallel in
//! one test binary: ports and directories are never handed out twice.
//!
//! Use it from an integration test with `mod common;`.

#![allow(dead_code)]

pub mod mqtt;
pub mod platform;
pub mod site;
pub mod webhook;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

/// How long a peer may take to become ready (generous: CI has 2 cores).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a peer may take to exit after SIGTERM before it gets SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The pymodbus version the simulator is written against.
pub const PYMODBUS_VERSION: &str = "3.16.1";

const POLL: Duration = Duration::from_millis(25);
const LOG_TAIL_LINES: usize = 40;

// ---------------------------------------------------------------------------
// Paths, ports, scratch directories
// ---------------------------------------------------------------------------

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn used_ports() -> &'static Mutex<BTreeSet<u16>> {
    static PORTS: OnceLock<Mutex<BTreeSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(BTreeSet::new()))
}

/// A loopback TCP port that is free now and that this process has never
/// handed out before (nor registered with [`reserve_port`]).
pub fn free_port() -> u16 {
    let mut used = used_ports()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        if used.insert(port) {
            return port;
        }
    }
    panic!("free_port: no unused loopback port found in 1000 tries");
}

/// Marks a port (e.g. one the OS picked for a peer) as taken, so that
/// [`free_port`] never returns it in this process.
pub fn reserve_port(port: u16) {
    used_ports()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(port);
}

/// A fresh, empty directory `target/test-scratch/<name>-<pid>-<n>`. It is kept
/// after the test so that logs can be inspected (CI artefacts).
pub fn scratch_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = repo_root()
        .join("target")
        .join("test-scratch")
        .join(format!("{name}-{}-{n}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot clear scratch dir {}: {e}", dir.display()));
    }
    fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create scratch dir {}: {e}", dir.display()));
    dir
}

/// Looks a program up in PATH (and in the sbin/bin dirs, which a non-root PATH
/// may lack).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    for extra in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        dirs.push(PathBuf::from(extra));
    }
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn require_program(name: &str, missing: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| panic!("{missing}"))
}

/// Quotes a string for TOML (a JSON string is a valid TOML basic string).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn path_str(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("path is not UTF-8: {}", path.display()))
        .to_owned()
}

/// A fixed-offset zone in which it is 23:xx now, so the demo's 24-hour replay holds one whole
/// story day (06:00–23:00) whatever the hour the test runs at.
pub fn zone_where_it_is_late_evening() -> String {
    let utc_hour = (now_ms() / 3_600_000).rem_euclid(24);
    let mut offset = 23 - utc_hour;
    if offset > 14 {
        offset -= 24;
    }
    // The Etc zones' signs are inverted (POSIX): Etc/GMT-7 is UTC+7.
    match offset {
        0 => "Etc/GMT".to_string(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

/// A civil time as HJ 212 writes it (DataTime, N14: `YYYYMMDDhhmmss`). Written here, not
/// taken from `dustgate::hj212::format_time`, so that a test does not build its input with the
/// code it checks.
pub fn hj212_time(dt: jiff::civil::DateTime) -> String {
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("ms fit in i64")
}

// ---------------------------------------------------------------------------
// Proc: a child process guard
// ---------------------------------------------------------------------------

/// A child process with stdout/stderr captured to `<dir>/<name>.stdout.log` and
/// `<dir>/<name>.stderr.log` (appended across restarts). Dropping it kills the
/// process (SIGKILL) and reaps it.
pub struct Proc {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    dir: PathBuf,
    child: Option<Child>,
    last_status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `program args...` with the working directory `dir`, stdin from
    /// /dev/null and the output logged into `dir`.
    pub fn spawn<I, S>(name: &str, dir: &Path, program: &Path, args: I) -> Proc
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut proc = Proc {
            name: name.to_owned(),
            program: program.to_owned(),
            args: args.into_iter().map(Into::into).collect(),
            dir: dir.to_owned(),
            child: None,
            last_status: None,
        };
        proc.respawn();
        proc
    }

    /// Starts the same command again (after [`Proc::stop`] or [`Proc::kill9`]).
    pub fn respawn(&mut self) {
        assert!(
            !self.is_running(),
            "{}: respawn while the process is still running",
            self.name
        );
        let out = self.open_log(&self.stdout_path());
        let err = self.open_log(&self.stderr_path());
        let child = Command::new(&self.program)
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: cannot start {}: {e}",
                    self.name,
                    self.program.display()
                )
            });
        self.child = Some(child);
        self.last_status = None;
    }

    fn open_log(&self, path: &Path) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("{}: cannot open log {}: {e}", self.name, path.display()))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stdout_path(&self) -> PathBuf {
        self.dir.join(format!("{}.stdout.log", self.name))
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.dir.join(format!("{}.stderr.log", self.name))
    }

    /// Everything the process (all its runs) wrote to stdout so far.
    pub fn stdout(&self) -> String {
        fs::read(self.stdout_path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Everything the process (all its runs) wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read(self.stderr_path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of stdout and of stderr, labelled, for panics.
    pub fn log_tail(&self, lines: usize) -> String {
        fn tail(text: &str, lines: usize) -> String {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        format!(
            "--- {} stdout ({}) ---\n{}\n--- {} stderr ({}) ---\n{}\n---",
            self.name,
            self.stdout_path().display(),
            tail(&self.stdout(), lines),
            self.name,
            self.stderr_path().display(),
            tail(&self.stderr(), lines),
        )
    }

    /// The pid of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Has exited? Returns its status (reaping it), or None while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if let Some(child) = self.child.as_mut() {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    self.last_status = Some(status);
                }
                Ok(None) => return None,
                Err(e) => panic!("{}: try_wait failed: {e}", self.name),
            }
        }
        self.last_status
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exit_status().is_none()
    }

    /// Sends a signal by name (TERM, KILL, STOP, CONT, HUP, ...).
    pub fn signal(&mut self, signal: &str) {
        let Some(pid) = self.pid() else {
            return;
        };
        // No libc in this crate's dependencies: use the shell's kill builtin.
        let status = Command::new("sh")
            .args([
                "-c",
                "kill -s \"$1\" \"$2\"",
                "sh",
                signal,
                &pid.to_string(),
            ])
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("{}: cannot run sh to send {signal}: {e}", self.name));
        if !status.success() && self.is_running() {
            panic!("{}: kill -s {signal} {pid} failed: {status}", self.name);
        }
    }

    /// SIGTERM, then waits up to [`STOP_TIMEOUT`] (SIGKILL after that).
    /// Returns the exit status (None if it was not running).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if !self.is_running() {
            return self.last_status;
        }
        self.signal("TERM");
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            std::thread::sleep(POLL);
        }
        eprintln!(
            "{}: still running {STOP_TIMEOUT:?} after SIGTERM, sending SIGKILL",
            self.name
        );
        self.kill9()
    }

    /// SIGKILL and reap. Returns the exit status (None if it was not running).
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let status = child
                .wait()
                .unwrap_or_else(|e| panic!("{}: wait after kill failed: {e}", self.name));
            self.last_status = Some(status);
        }
        self.last_status
    }

    /// Polls `ready` every 25 ms until it returns true. Errors (with the log
    /// tail) if the process exits first or on timeout.
    pub fn try_wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return Ok(());
            }
            if let Some(status) = self.exit_status() {
                return Err(format!(
                    "{} exited ({status}) while waiting for {what}\n{}",
                    self.name,
                    self.log_tail(LOG_TAIL_LINES)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{}: timed out after {timeout:?} waiting for {what}\n{}",
                    self.name,
                    self.log_tail(LOG_TAIL_LINES)
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Like [`Proc::try_wait_until`], panicking on failure.
    pub fn wait_until(&mut self, what: &str, timeout: Duration, ready: impl FnMut() -> bool) {
        if let Err(message) = self.try_wait_until(what, timeout, ready) {
            panic!("{message}");
        }
    }

    /// Waits until 127.0.0.1:`port` accepts a TCP connection.
    pub fn wait_port(&mut self, port: u16, timeout: Duration) {
        self.wait_until(&format!("127.0.0.1:{port} to accept"), timeout, || {
            port_accepts(port)
        });
    }

    /// Waits until `path` exists.
    pub fn wait_file(&mut self, path: &Path, timeout: Duration) {
        self.wait_until(&format!("{} to appear", path.display()), timeout, || {
            path.exists()
        });
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Does 127.0.0.1:`port` accept a TCP connection right now?
pub fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A blocking HTTP/1.0 GET to 127.0.0.1:`port` (for readiness probes, which
/// run outside any async runtime). Returns (status, body).
pub fn http_get_blocking(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Spawns a server, retrying with fresh ports when it died because a port
/// that was free a moment ago got taken meanwhile.
fn spawn_server_with_retry<T>(
    what: &str,
    mut attempt: impl FnMut() -> (Proc, T),
    ready: impl Fn(&T) -> bool,
) -> (Proc, T) {
    let mut last_error = String::new();
    for _ in 0..3 {
        let (mut proc, info) = attempt();
        match proc.try_wait_until(what, START_TIMEOUT, || ready(&info)) {
            Ok(()) => return (proc, info),
            Err(message) => {
                let in_use = proc.stderr().contains("address already in use")
                    || proc.stdout().contains("address already in use");
                if !in_use {
                    panic!("{message}");
                }
                last_error = message;
            }
        }
    }
    panic!("{last_error}");
}

/// An async HTTP client for loopback peers (plain http, no proxy, no
/// keep-alive pool: after a peer restart a pooled connection would fail with
/// "connection closed before message completed").
pub fn http_client() -> reqwest::Client {
    // reqwest is built with rustls-no-provider: make ring the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build reqwest client")
}

/// Polls the async `probe` every 50 ms until it returns Some, and returns that
/// value; panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An error with its chain of causes, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn get_text(http: &reqwest::Client, url: reqwest::Url) -> (u16, String) {
    let shown = url.to_string();
    let response = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {shown}: {}", error_chain(&e)));
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {shown}: reading body: {}", error_chain(&e)));
    (status, body)
}

async fn post_text(http: &reqwest::Client, url: reqwest::Url, body: String) -> (u16, String) {
    let shown = url.to_string();
    let response = http
        .post(url)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {shown}: {}", error_chain(&e)));
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("POST {shown}: reading body: {}", error_chain(&e)));
    (status, text)
}

fn url_with(base: &str, path: &str, params: &[(&str, &str)]) -> reqwest::Url {
    reqwest::Url::parse_with_params(&format!("{base}{path}"), params)
        .unwrap_or_else(|e| panic!("bad url {base}{path}: {e}"))
}

// ---------------------------------------------------------------------------
// InfluxDB 1.6.7
// ---------------------------------------------------------------------------

/// InfluxDB 1.6.7 (`influxd` from Debian's influxdb package) with its own
/// config and data under a scratch dir, HTTP and RPC on free loopback ports.
pub struct Influx1 {
    proc: Proc,
    dir: PathBuf,
    http_port: u16,
    rpc_port: u16,
    http: reqwest::Client,
}

impl Influx1 {
    pub const MISSING: &'static str =
        "InfluxDB 1.6.7 not found: run scripts/test, or apt-get install influxdb";

    /// Starts influxd and waits for `/ping` to answer 204.
    pub fn start() -> Influx1 {
        Self::start_with("")
    }

    /// Like [`Influx1::start`], with extra lines for the `[http]` section of the config
    /// (e.g. `max-body-size = 3000`).
    pub fn start_with(http_extra: &str) -> Influx1 {
        let influxd = require_program("influxd", Self::MISSING);
        let dir = scratch_dir("influx1");
        let (proc, (http_port, rpc_port)) = spawn_server_with_retry(
            "influxd /ping 204",
            || {
                let http_port = free_port();
                let rpc_port = free_port();
                let config = Self::write_config(&dir, http_port, rpc_port, http_extra);
                let config = path_str(&config);
                let proc = Proc::spawn("influxd", &dir, &influxd, ["-config", config.as_str()]);
                (proc, (http_port, rpc_port))
            },
            |(http_port, _)| Self::ping(*http_port),
        );
        Influx1 {
            proc,
            dir,
            http_port,
            rpc_port,
            http: http_client(),
        }
    }

    fn write_config(dir: &Path, http_port: u16, rpc_port: u16, http_extra: &str) -> PathBuf {
        // `http_extra` may turn authentication on; the key must then appear only once.
        let auth = if http_extra.contains("auth-enabled") {
            ""
        } else {
            "  auth-enabled = false"
        };
        let sub = |name: &str| {
            let path = dir.join(name);
            fs::create_dir_all(&path).expect("create influx data dir");
            toml_str(&path_str(&path))
        };
        let config = format!(
            r#"reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = {meta}
  retention-autocreate = true
  logging-enabled = true

[data]
  dir = {data}
  wal-dir = {wal}
  query-log-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
{auth}
  log-enabled = false
  pprof-enabled = false
{http_extra}

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false

[ifql]
  enabled = false

[logging]
  level = "info"
"#,
            meta = sub("meta"),
            data = sub("data"),
            wal = sub("wal"),
        );
        let path = dir.join("influxdb.conf");
        fs::write(&path, config).expect("write influxdb.conf");
        path
    }

    fn ping(port: u16) -> bool {
        matches!(http_get_blocking(port, "/ping"), Some((204, _)))
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn port(&self) -> u16 {
        self.http_port
    }

    pub fn rpc_port(&self) -> u16 {
        self.rpc_port
    }

    /// The scratch dir (config, meta/, data/, wal/, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// `CREATE DATABASE "name"`.
    pub async fn create_db(&self, name: &str) {
        let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
        self.execute("", &format!("CREATE DATABASE \"{quoted}\""))
            .await;
    }

    /// Runs a statement that changes something (POST /query); panics on error.
    pub async fn execute(&self, db: &str, influxql: &str) -> Value {
        let url = url_with(&self.url(), "/query", &[("db", db), ("q", influxql)]);
        let (status, body) = post_text(&self.http, url, String::new()).await;
        Self::check_query(influxql, status, &body)
    }

    /// Runs a read query (GET /query, epoch=ms: times are integer ms); panics
    /// on an HTTP error or any statement error. Returns the whole JSON answer.
    pub async fn query(&self, db: &str, influxql: &str) -> Value {
        let url = url_with(
            &self.url(),
            "/query",
            &[("db", db), ("q", influxql), ("epoch", "ms")],
        );
        let (status, body) = get_text(&self.http, url).await;
        Self::check_query(influxql, status, &body)
    }

    fn check_query(influxql: &str, status: u16, body: &str) -> Value {
        let value: Value = serde_json::from_str(body).unwrap_or_else(|e| {
            panic!("influx query {influxql:?}: HTTP {status}, not JSON ({e}): {body}")
        });
        assert_eq!(
            status, 200,
            "influx query {influxql:?}: HTTP {status}: {body}"
        );
        if let Some(error) = value.get("error") {
            panic!("influx query {influxql:?}: error {error}");
        }
        for result in value["results"].as_array().into_iter().flatten() {
            if let Some(error) = result.get("error") {
                panic!("influx query {influxql:?}: statement error {error}");
            }
        }
        value
    }

    /// The `values` rows of every series of every statement, in order
    /// (columns as the query lists them; time first, as integer ms).
    /// Empty when nothing matched.
    pub async fn query_rows(&self, db: &str, influxql: &str) -> Vec<Vec<Value>> {
        let value = self.query(db, influxql).await;
        let mut rows = Vec::new();
        for result in value["results"].as_array().into_iter().flatten() {
            for series in result["series"].as_array().into_iter().flatten() {
                for row in series["values"].as_array().into_iter().flatten() {
                    rows.push(row.as_array().cloned().unwrap_or_default());
                }
            }
        }
        rows
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.proc.stop()
    }

    /// SIGKILL (a crash).
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        self.proc.kill9()
    }

    /// Starts again with the same config, dirs (data kept) and ports.
    pub fn start_again(&mut self) {
        self.proc.respawn();
        let port = self.http_port;
        self.proc
            .wait_until("influxd /ping 204 (restart)", START_TIMEOUT, || {
                Self::ping(port)
            });
    }
}

// ---------------------------------------------------------------------------
// VictoriaMetrics
// ---------------------------------------------------------------------------

/// VictoriaMetrics (single node, Debian's victoria-metrics package) with a
/// scratch storage dir on a free loopback port; `-search.latencyOffset=1s`.
pub struct Victoria {
    proc: Proc,
    dir: PathBuf,
    port: u16,
    http: reqwest::Client,
}

impl Victoria {
    pub const MISSING: &'static str =
        "VictoriaMetrics not found: run scripts/test, or apt-get install victoria-metrics";

    /// Starts victoria-metrics and waits for `/health` to answer OK.
    pub fn start() -> Victoria {
        let binary = require_program("victoria-metrics", Self::MISSING);
        let dir = scratch_dir("victoria");
        let storage = dir.join("data");
        fs::create_dir_all(&storage).expect("create victoria data dir");
        let (proc, port) = spawn_server_with_retry(
            "victoria-metrics /health OK",
            || {
                let port = free_port();
                let args = [
                    format!("-httpListenAddr=127.0.0.1:{port}"),
                    format!("-storageDataPath={}", path_str(&storage)),
                    "-retentionPeriod=100y".to_owned(),
                    "-search.latencyOffset=1s".to_owned(),
                    "-loggerLevel=INFO".to_owned(),
                ];
                (Proc::spawn("victoria-metrics", &dir, &binary, args), port)
            },
            |port| Self::healthy(*port),
        );
        Victoria {
            proc,
            dir,
            port,
            http: http_client(),
        }
    }

    fn healthy(port: u16) -> bool {
        matches!(http_get_blocking(port, "/health"), Some((200, body)) if body.trim() == "OK")
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// Makes just-written samples searchable now.
    pub async fn force_flush(&self) {
        let url = url_with(&self.url(), "/internal/force_flush", &[]);
        let (status, body) = post_text(&self.http, url, String::new()).await;
        assert_eq!(status, 200, "victoria force_flush: HTTP {status}: {body}");
    }

    /// force_flush, then `/api/v1/export?match[]=selector`: one JSON object per
    /// series, `{"metric":{"__name__":..,labels..},"values":[..],"timestamps":[ms..]}`.
    ///
    /// A snapshot: VictoriaMetrics 1.79 makes accepted samples visible up to
    /// ~1 s later even after force_flush (measured here: 0.25-1.0 s), so to
    /// check what was just written use [`Victoria::export_until`].
    pub async fn export(&self, match_selector: &str) -> Vec<Value> {
        self.force_flush().await;
        let url = url_with(
            &self.url(),
            "/api/v1/export",
            &[("match[]", match_selector)],
        );
        let (status, body) = get_text(&self.http, url).await;
        assert_eq!(
            status, 200,
            "victoria export {match_selector}: HTTP {status}: {body}"
        );
        body.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("victoria export: bad JSON line ({e}): {line}"))
            })
            .collect()
    }

    /// Repeats [`Victoria::export`] until `done(&series)` holds and returns
    /// that export; panics after `timeout` showing the last export.
    pub async fn export_until(
        &self,
        match_selector: &str,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let series = self.export(match_selector).await;
            if done(&series) {
                return series;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "victoria export {match_selector}: condition not met after {timeout:?}; last export: {}",
                    serde_json::to_string(&series).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The number of samples in an export (all series).
    pub fn sample_count(series: &[Value]) -> usize {
        series
            .iter()
            .map(|s| s["values"].as_array().map_or(0, Vec::len))
            .sum()
    }

    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.proc.stop()
    }

    pub fn kill9(&mut self) -> Option<ExitStatus> {
        self.proc.kill9()
    }

    /// Starts again with the same storage dir and port.
    pub fn start_again(&mut self) {
        self.proc.respawn();
        let port = self.port;
        self.proc.wait_until(
            "victoria-metrics /health OK (restart)",
            START_TIMEOUT,
            || Self::healthy(port),
        );
    }
}

// ---------------------------------------------------------------------------
// Modbus simulator (pymodbus)
// ---------------------------------------------------------------------------

const PYMODBUS_MISSING: &str =
    "pymodbus venv missing: run scripts/test (it creates target/peers-venv with pymodbus==3.16.1)";

/// The Python that has pymodbus 3.16.1: `$DUSTGATE_PYTHON`, else
/// `target/peers-venv/bin/python`. Checked once per process; panics with how to
/// create it when missing.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let candidate = match std::env::var_os("DUSTGATE_PYTHON") {
                Some(path) if !path.is_empty() => PathBuf::from(path),
                _ => repo_root().join("target/peers-venv/bin/python"),
            };
            if !candidate.exists() {
                return Err(format!(
                    "{PYMODBUS_MISSING} [{} not found]",
                    candidate.display()
                ));
            }
            let output = Command::new(&candidate)
                .args(["-c", "import pymodbus, serial; print(pymodbus.__version__)"])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| {
                    format!(
                        "{PYMODBUS_MISSING} [cannot run {}: {e}]",
                        candidate.display()
                    )
                })?;
            if !output.status.success() {
                return Err(format!(
                    "{PYMODBUS_MISSING} [{} cannot import pymodbus/serial: {}]",
                    candidate.display(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            if version != PYMODBUS_VERSION {
                return Err(format!(
                    "{PYMODBUS_MISSING} [{} has pymodbus {version}, not {PYMODBUS_VERSION}]",
                    candidate.display()
                ));
            }
            Ok(candidate)
        })
        .clone()
        .unwrap_or_else(|message| panic!("{message}"))
}

/// How the simulator talks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModbusMode {
    /// Modbus TCP (MBAP header).
    Tcp,
    /// RTU frames (with CRC) over a TCP socket.
    RtuOverTcp,
    /// RTU on a serial device (a pty from [`PtyPair`]).
    Rtu { path: PathBuf, baud: u32 },
}

/// `tests/peers/modbus_sim.py` (pymodbus 3.16.1) serving a regs spec:
/// `{"devices": [{"unit": 1, "holding": {"0": 123}, "input": {..},
///   "coils": {"0": true}, "discrete": {..}}], "silent": [7]}`.
/// Unlisted addresses answer exception 2; silent and unknown units never answer.
pub struct ModbusSim {
    proc: Proc,
    dir: PathBuf,
    regs_path: PathBuf,
    ready_path: PathBuf,
    mode: ModbusMode,
    port: Option<u16>,
}

impl ModbusSim {
    /// Modbus TCP on a loopback port the OS picks.
    pub fn tcp(spec: &Value) -> ModbusSim {
        Self::start(spec, ModbusMode::Tcp)
    }

    /// RTU framing over TCP on a loopback port the OS picks.
    pub fn rtu_over_tcp(spec: &Value) -> ModbusSim {
        Self::start(spec, ModbusMode::RtuOverTcp)
    }

    /// RTU on `pty_path` (e.g. `PtyPair::a()`; the client uses the other end).
    pub fn rtu(spec: &Value, pty_path: &Path, baud: u32) -> ModbusSim {
        Self::start(
            spec,
            ModbusMode::Rtu {
                path: pty_path.to_owned(),
                baud,
            },
        )
    }

    fn start(spec: &Value, mode: ModbusMode) -> ModbusSim {
        let python = python();
        let dir = scratch_dir("modbus-sim");
        let regs_path = dir.join("regs.json");
        let ready_path = dir.join("ready.json");
        fs::write(&regs_path, Self::spec_bytes(spec)).expect("write regs.json");
        let script = repo_root().join("tests/peers/modbus_sim.py");
        let mut args = vec![
            path_str(&script),
            "--regs".to_owned(),
            path_str(&regs_path),
            "--ready-file".to_owned(),
            path_str(&ready_path),
        ];
        match &mode {
            // Port 0: the OS picks a free port, the ready file tells which.
            // start_again() reuses it.
            ModbusMode::Tcp => args.extend(["--tcp".to_owned(), "0".to_owned()]),
            ModbusMode::RtuOverTcp => args.extend(["--rtu-over-tcp".to_owned(), "0".to_owned()]),
            ModbusMode::Rtu { path, baud } => args.extend([
                "--rtu".to_owned(),
                path_str(path),
                "--baud".to_owned(),
                baud.to_string(),
            ]),
        }
        let name = match mode {
            ModbusMode::Tcp => "modbus-sim-tcp",
            ModbusMode::RtuOverTcp => "modbus-sim-rtu-over-tcp",
            ModbusMode::Rtu { .. } => "modbus-sim-rtu",
        };
        let proc = Proc::spawn(name, &dir, &python, args);
        let mut sim = ModbusSim {
            proc,
            dir,
            regs_path,
            ready_path,
            mode,
            port: None,
        };
        sim.wait_ready(0);
        if !matches!(sim.mode, ModbusMode::Rtu { .. }) {
            let port = sim.ready_info()["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or_else(|| panic!("modbus sim: no port in ready file\n{}", sim.log_tail()));
            reserve_port(port);
            sim.port = Some(port);
        }
        sim
    }

    fn spec_bytes(spec: &Value) -> Vec<u8> {
        serde_json::to_vec_pretty(spec).expect("regs spec serializes")
    }

    fn count_ready(&self) -> usize {
        self.proc
            .stdout()
            .lines()
            .filter(|line| line.trim() == "READY")
            .count()
    }

    /// Waits for one more READY line than `ready_before` and the ready file.
    fn wait_ready(&mut self, ready_before: usize) {
        let stdout_path = self.proc.stdout_path();
        let ready_path = self.ready_path.clone();
        self.proc
            .wait_until("READY from modbus_sim.py", START_TIMEOUT, || {
                let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
                stdout.lines().filter(|line| line.trim() == "READY").count() > ready_before
                    && ready_path.exists()
            });
    }

    fn ready_info(&self) -> Value {
        let text = fs::read_to_string(&self.ready_path).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// The TCP port (TCP and RTU-over-TCP modes; panics for serial RTU).
    pub fn port(&self) -> u16 {
        self.port.unwrap_or_else(|| {
            panic!("ModbusSim::port(): the serial RTU simulator has no TCP port")
        })
    }

    /// `127.0.0.1:port()`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    pub fn mode(&self) -> &ModbusMode {
        &self.mode
    }

    pub fn regs_path(&self) -> &Path {
        &self.regs_path
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    pub fn log_tail(&self) -> String {
        self.proc.log_tail(LOG_TAIL_LINES)
    }

    /// Replaces the whole spec (atomically: tmp file + rename, with an mtime
    /// newer than the old file's). While the simulator runs, returns only once
    /// it serves the new spec (client writes since are then lost).
    pub fn update(&mut self, spec: &Value) {
        let old_mtime = fs::metadata(&self.regs_path)
            .and_then(|meta| meta.modified())
            .ok();
        let tmp = self.dir.join("regs.json.tmp");
        {
            let mut file = File::create(&tmp).expect("create regs.json.tmp");
            file.write_all(&Self::spec_bytes(spec))
                .expect("write regs.json.tmp");
            file.sync_all().expect("sync regs.json.tmp");
            let mtime = file.metadata().and_then(|m| m.modified()).expect("mtime");
            if let Some(old) = old_mtime
                && mtime <= old
            {
                file.set_modified(old + Duration::from_millis(1))
                    .expect("bump mtime of regs.json.tmp");
            }
        }
        fs::rename(&tmp, &self.regs_path).expect("rename regs.json.tmp -> regs.json");
        if !self.proc.is_running() {
            return;
        }
        let meta = fs::metadata(&self.regs_path).expect("stat regs.json");
        let want = serde_json::json!({
            "mtime_ns": i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            "ino": meta.ino(),
            "size": meta.size(),
        });
        let ready_path = self.ready_path.clone();
        self.proc
            .wait_until("modbus_sim.py to reload regs.json", START_TIMEOUT, || {
                let text = fs::read_to_string(&ready_path).unwrap_or_default();
                serde_json::from_str::<Value>(&text)
                    .map(|info| info["loaded"] == want)
                    .unwrap_or(false)
            });
    }

    /// SIGTERM and wait; the simulator exits 0 on SIGTERM.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.proc.stop()
    }

    pub fn kill9(&mut self) -> Option<ExitStatus> {
        self.proc.kill9()
    }

    /// Starts again on the same port (or pty) with the current spec file.
    pub fn start_again(&mut self) {
        let before = self.count_ready();
        let _ = fs::remove_file(&self.ready_path);
        if let Some(port) = self.port {
            // The first start asked for port 0; now insist on the same port.
            let args = &mut self.proc.args;
            let flag = args
                .iter()
                .position(|arg| arg == "--tcp" || arg == "--rtu-over-tcp")
                .expect("TCP simulator args have --tcp or --rtu-over-tcp");
            args[flag + 1] = OsString::from(port.to_string());
        }
        self.proc.respawn();
        self.wait_ready(before);
    }
}

// ---------------------------------------------------------------------------
// socat pty pair
// ---------------------------------------------------------------------------

/// Two connected pseudo-terminals (a virtual null-modem cable), made by
/// `socat -d -d pty,raw,echo=0,link=<dir>/ttyA pty,raw,echo=0,link=<dir>/ttyB`.
/// Killed (and the links removed) on drop.
pub struct PtyPair {
    proc: Proc,
    a: PathBuf,
    b: PathBuf,
}

impl PtyPair {
    pub const MISSING: &'static str = "socat not found: run scripts/test, or apt-get install socat";

    pub fn start() -> PtyPair {
        let socat = require_program("socat", Self::MISSING);
        let dir = scratch_dir("pty");
        let a = dir.join("ttyA");
        let b = dir.join("ttyB");
        let args = vec![
            "-d".to_owned(),
            "-d".to_owned(),
            format!("pty,raw,echo=0,link={}", path_str(&a)),
            format!("pty,raw,echo=0,link={}", path_str(&b)),
        ];
        let mut proc = Proc::spawn("socat", &dir, &socat, args);
        let (la, lb) = (a.clone(), b.clone());
        proc.wait_until("socat pty links", START_TIMEOUT, || {
            la.exists() && lb.exists()
        });
        PtyPair { proc, a, b }
    }

    /// One end (give it to the device/simulator).
    pub fn a(&self) -> &Path {
        &self.a
    }

    /// The other end (give it to the client/gateway).
    pub fn b(&self) -> &Path {
        &self.b
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}
