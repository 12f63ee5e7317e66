//! The status page as a person sees it, in a real headless Chromium driven over the W3C
//! WebDriver protocol (chromedriver, plain JSON over HTTP with reqwest): a pymodbus dust
//! monitor and relay module, `dustgate run` with a PM10 rule that switches the mist cannons.
//! The page shows the device up and its latest values with the limit in force; when the
//! simulator raises PM10 the open alert appears without a reload; the language switch turns
//! every label; a screenshot is kept for review (target/status-page.png). `/metrics` is parsed strictly as Prometheus text, and the `/api/*` answers carry the
//! contract's fields.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::site::{Gateway, dust_monitor_unit};
use common::{ModbusSim, Proc, eventually, free_port, http_client, scratch_dir};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL: &str = "apt-get install chromium chromium-driver";
/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long the page may take to show a change (it refreshes every second in this test).
const PAGE: Duration = Duration::from_secs(30);
const ACTUATOR_STATE: &str = "#actuators tr[data-actuator=\"mist-cannons\"] td:nth-child(3)";
const ACTUATOR_MODE: &str = "#actuators tr[data-actuator=\"mist-cannons\"] td:nth-child(4)";

fn site(sensors: u16, relays: u16, http: u16) -> String {
    format!(
        r#"[site]
id = "page-site"
name = "状态页测试工地"
health_interval = "1s"

[store]
dir = "store"
commit_interval = "50ms"

[http]
listen = "127.0.0.1:{http}"

[[modbus]]
name = "sensors"
transport = "tcp"
address = "127.0.0.1:{sensors}"
interval = "1s"

  [[modbus.device]]
  id = "dust-01"
  unit = 1
  profile = "generic-dust-monitor"

[[modbus]]
name = "relays"
transport = "tcp"
address = "127.0.0.1:{relays}"
interval = "1s"

  [[modbus.device]]
  id = "relay-01"
  unit = 1
  profile = "relay-module-8ch"

[[rule]]
id = "pm10-high"
metric = "pm10"
above = 150
clear = 120
severity = "warning"
actuate = "mist-cannons"

[[actuator]]
id = "mist-cannons"
device = "relay-01"
coil = "fog_cannon_on"
min_on = "5s"
min_off = "1s"

[compliance]
paved_percent = 100
paved_date = "2026-01-10"
"#
    )
}

fn sensors_spec(pm10: u16) -> Value {
    let (mut spec, _) = dust_monitor_unit(1);
    spec["holding"]["1"] = json!(pm10);
    json!({ "devices": [spec] })
}

fn relay_spec() -> Value {
    let coils: serde_json::Map<String, Value> =
        (0..8).map(|i| (i.to_string(), json!(false))).collect();
    json!({ "devices": [{ "unit": 1, "coils": coils }] })
}

// ---------------------------------------------------------------------------
// WebDriver
// ---------------------------------------------------------------------------

/// chromedriver and one Chromium session. Dropping it ends the session first (chromedriver
/// then closes Chromium), and only then kills chromedriver: killed first, it would leave the
/// browser running.
struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    port: u16,
    _driver: Proc,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Blocking on purpose: drop may run while a panic unwinds, outside any runtime.
        use std::io::{Read, Write};
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                self.session
            );
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
    }
}

/// A WebDriver error: its `error` code and message.
#[derive(Debug)]
struct WdError {
    code: String,
    message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl Browser {
    async fn start() -> Browser {
        for (path, what) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")] {
            assert!(
                std::path::Path::new(path).exists(),
                "{what} is missing ({path}): the status page test needs a real browser; run `{INSTALL}` (scripts/test does)"
            );
        }
        let dir = scratch_dir("chromedriver");
        let port = free_port();
        let mut driver = Proc::spawn(
            "chromedriver",
            &dir,
            std::path::Path::new(CHROMEDRIVER),
            [format!("--port={port}")],
        );
        let http = http_client();
        let base = format!("http://127.0.0.1:{port}");
        driver.wait_port(port, common::START_TIMEOUT);
        let profile = dir.join("profile");
        std::fs::create_dir_all(&profile).expect("create the browser profile dir");
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    // The console is kept for failure messages.
                    "goog:loggingPrefs": { "browser": "ALL" },
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-quic",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            "--disable-dev-shm-usage",
                            "--no-first-run",
                            "--window-size=1200,1650",
                            format!("--user-data-dir={}", profile.display()),
                        ],
                    },
                },
            },
        });
        let started = Instant::now();
        let v = raw(
            &http,
            reqwest::Method::POST,
            &format!("{base}/session"),
            Some(caps),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "chromedriver could not start Chromium: {e}\n{}",
                driver.log_tail(40)
            )
        });
        let session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {v}"))
            .to_string();
        println!(
            "chromium {} started in {:?}",
            v["capabilities"]["browserVersion"],
            started.elapsed()
        );
        Browser {
            http,
            base,
            session,
            port,
            _driver: driver,
        }
    }

    async fn cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WdError> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        raw(&self.http, method, &url, body).await
    }

    async fn navigate(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .unwrap_or_else(|e| panic!("navigate to {url}: {e}"));
    }

    /// The first element matching `css`, if there is one now.
    async fn find(&self, css: &str) -> Option<String> {
        let body = json!({ "using": "css selector", "value": css });
        match self
            .cmd(reqwest::Method::POST, "/element", Some(body))
            .await
        {
            Ok(v) => v[ELEMENT].as_str().map(str::to_string),
            Err(e) if e.code == "no such element" => None,
            Err(e) => panic!("find {css}: {e}"),
        }
    }

    /// The rendered text of the first element matching `css` (what a person reads: hidden
    /// elements have none). `None` while it is missing or being replaced by a re-render.
    async fn text(&self, css: &str) -> Option<String> {
        let id = self.find(css).await?;
        match self
            .cmd(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
        {
            Ok(v) => v.as_str().map(str::to_string),
            Err(e) if e.code == "stale element reference" => None,
            Err(e) => panic!("text of {css}: {e}"),
        }
    }

    async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let id = self.find(css).await?;
        match self
            .cmd(
                reqwest::Method::GET,
                &format!("/element/{id}/attribute/{name}"),
                None,
            )
            .await
        {
            Ok(v) => v.as_str().map(str::to_string),
            Err(e) if e.code == "stale element reference" => None,
            Err(e) => panic!("attribute {name} of {css}: {e}"),
        }
    }

    async fn click(&self, css: &str) {
        let id = self
            .find(css)
            .await
            .unwrap_or_else(|| panic!("nothing to click at {css}"));
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Waits until the text at `css` satisfies `ok`; returns it.
    async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PAGE;
        let mut last = None;
        loop {
            let t = self.text(css).await;
            if let Some(t) = &t
                && ok(t)
            {
                return t.clone();
            }
            last = t.or(last);
            if Instant::now() >= deadline {
                panic!(
                    "the page did not show {what} within {PAGE:?} (at {css}: {last:?})\n{}",
                    self.diagnostics().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The browser's console and the page's DOM, for a failure message.
    async fn diagnostics(&self) -> String {
        let log = self
            .cmd(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({ "type": "browser" })),
            )
            .await
            .map_or_else(|e| format!("(no console log: {e})"), |v| v.to_string());
        let dom = self
            .cmd(reqwest::Method::GET, "/source", None)
            .await
            .map_or_else(
                |e| format!("(no DOM: {e})"),
                |v| v.as_str().unwrap_or("").to_string(),
            );
        format!("browser console: {log}\npage DOM:\n{dom}")
    }

    async fn screenshot(&self) -> Vec<u8> {
        let v = self
            .cmd(reqwest::Method::GET, "/screenshot", None)
            .await
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        base64_decode(v.as_str().expect("screenshot is base64 text"))
    }
}

/// One WebDriver request; the reply's `value`, or its error.
async fn raw(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, WdError> {
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("WebDriver {url}: {e}"));
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("WebDriver {url}: not JSON ({e}): {text}"));
    if status.is_success() {
        Ok(v["value"].clone())
    } else {
        Err(WdError {
            code: v["value"]["error"].as_str().unwrap_or("").to_string(),
            message: v["value"]["message"].as_str().unwrap_or(&text).to_string(),
        })
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c:?}"),
        }
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, c)| acc | (val(*c) << (18 - 6 * i)));
        let take = chunk.len() - 1;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    out
}

// ---------------------------------------------------------------------------
// Prometheus text, parsed strictly
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn valid_name(s: &str, colon: bool) -> bool {
    let ok = |c: char, first: bool| {
        c.is_ascii_alphabetic() || c == '_' || (colon && c == ':') || (!first && c.is_ascii_digit())
    };
    let mut chars = s.chars();
    chars.next().is_some_and(|c| ok(c, true)) && chars.all(|c| ok(c, false))
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// The text exposition format 0.0.4: `# HELP`/`# TYPE` at most once per family and before its
/// samples, a family's samples together, valid names (all `dustgate_`), labels quoted with
/// `\\`, `\"` and `\n` the only escapes, values that parse as floats.
fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut helped: Vec<String> = Vec::new();
    let mut finished: Vec<String> = Vec::new();
    let mut current = String::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let bad = |why: &str| format!("line {n}: {why}: {line:?}");
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut parts = rest.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("HELP") => {
                    let name = parts.next().ok_or_else(|| bad("HELP without a name"))?;
                    if !valid_name(name, true) || helped.iter().any(|h| h == name) {
                        return Err(bad("bad or repeated HELP"));
                    }
                    let help = parts.next().unwrap_or("");
                    let mut chars = help.chars();
                    while let Some(c) = chars.next() {
                        if c == '\\' && !matches!(chars.next(), Some('\\' | 'n')) {
                            return Err(bad("bad escape in HELP"));
                        }
                    }
                    helped.push(name.to_string());
                }
                Some("TYPE") => {
                    let name = parts.next().ok_or_else(|| bad("TYPE without a name"))?;
                    let kind = parts.next().ok_or_else(|| bad("TYPE without a type"))?;
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(bad("unknown type"));
                    }
                    if typed.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(bad("TYPE repeated"));
                    }
                    if samples.iter().any(|s: &Sample| s.name == name) {
                        return Err(bad("TYPE after its samples"));
                    }
                }
                _ => {}
            }
            continue;
        }
        // name{labels} value [timestamp]
        let name_end = line.find(['{', ' ']).ok_or_else(|| bad("no value"))?;
        let name = &line[..name_end];
        if !valid_name(name, true) {
            return Err(bad("bad metric name"));
        }
        if !name.starts_with("dustgate_") {
            return Err(bad("name without the dustgate_ prefix"));
        }
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let end;
            loop {
                // A label name, `="`, an escaped value, `"`, then `,` or `}`.
                let start = match chars.peek() {
                    Some((_, '}')) => {
                        end = chars.next().map(|(i, _)| i).unwrap_or(0);
                        break;
                    }
                    Some((i, _)) => *i,
                    None => return Err(bad("unterminated labels")),
                };
                let eq = r[start..].find('=').ok_or_else(|| bad("label without ="))? + start;
                let lname = &r[start..eq];
                if !valid_name(lname, false) || lname.starts_with("__") {
                    return Err(bad("bad label name"));
                }
                while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                    chars.next();
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(bad("label value not quoted"));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            _ => return Err(bad("bad escape in a label value")),
                        },
                        Some((_, '"')) => break,
                        Some((_, '\n')) | None => return Err(bad("unterminated label value")),
                        Some((_, c)) => value.push(c),
                    }
                }
                if labels.insert(lname.to_string(), value).is_some() {
                    return Err(bad("label repeated"));
                }
                match chars.next() {
                    Some((_, ',')) => {}
                    Some((i, '}')) => {
                        end = i;
                        break;
                    }
                    _ => return Err(bad("expected , or } after a label")),
                }
            }
            rest = &r[end + 1..];
        }
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| bad("no space before the value"))?
            .split(' ');
        let value = fields
            .next()
            .and_then(parse_value)
            .ok_or_else(|| bad("value is not a float"))?;
        if let Some(ts) = fields.next()
            && ts.parse::<i64>().is_err()
        {
            return Err(bad("bad timestamp"));
        }
        if fields.next().is_some() {
            return Err(bad("trailing fields"));
        }
        // Counters' samples carry the family name (`_total` included, as written here).
        if !typed.contains_key(name) {
            return Err(bad("sample without a TYPE line before it"));
        }
        if name != current {
            if finished.iter().any(|f| f == name) {
                return Err(bad("a family's samples are not together"));
            }
            if !current.is_empty() {
                finished.push(current.clone());
            }
            current = name.to_string();
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(samples)
}

/// The value of the one sample of `name` whose labels include `labels`.
fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    match found.as_slice() {
        [one] => Some(one.value),
        [] => None,
        more => panic!("{} samples of {name} {labels:?}", more.len()),
    }
}

#[test]
fn the_strict_parser_rejects_what_prometheus_rejects() {
    let good = "# HELP dustgate_x A \\\\ help\\n.\n# TYPE dustgate_x gauge\ndustgate_x{a=\"q\\\"\\\\\\n\",b=\"\"} 1.5\ndustgate_x -Inf 1700000000000\n";
    let s = parse_prometheus(good).expect("valid");
    assert_eq!(s[0].labels["a"], "q\"\\\n");
    assert_eq!(s[1].value, f64::NEG_INFINITY);
    for bad in [
        "dustgate_x 1\n",                                     // no TYPE
        "# TYPE dustgate_x gauge\ndustgate_x{a=\"b} 1\n",     // unterminated
        "# TYPE dustgate_x gauge\ndustgate_x{a=\"\\t\"} 1\n", // bad escape
        "# TYPE dustgate_x gauge\ndustgate_x{a=b} 1\n",       // unquoted
        "# TYPE dustgate_x gauge\ndustgate_x one\n",          // not a float
        "# TYPE other gauge\nother 1\n",                      // prefix
        "# TYPE dustgate_x gauge\n# TYPE dustgate_x gauge\n", // repeated
        "# TYPE dustgate_x gauge\ndustgate_x{0a=\"1\"} 1\n",  // label name
        "# TYPE dustgate_x gauge\n# TYPE dustgate_y gauge\ndustgate_x 1\ndustgate_y 1\ndustgate_x 2\n", // split family
    ] {
        assert!(parse_prometheus(bad).is_err(), "accepted {bad:?}");
    }
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

async fn get(http: &reqwest::Client, url: &str) -> (u16, String, String) {
    let r = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ct, r.text().await.unwrap_or_default())
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let (status, ct, body) = get(http, url).await;
    assert_eq!(status, 200, "GET {url}: {body}");
    assert!(ct.starts_with("application/json"), "GET {url}: {ct}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
}

fn has_keys(v: &Value, keys: &[&str], what: &str) {
    for k in keys {
        assert!(v.get(*k).is_some(), "{what} lacks {k}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_devices_values_limits_alerts_in_two_languages() {
    // First, so that a machine without a browser fails at once with the install hint.
    for (path, what) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")] {
        assert!(
            std::path::Path::new(path).exists(),
            "{what} is missing ({path}): run `{INSTALL}` (scripts/test does)"
        );
    }
    let t0 = Instant::now();
    let mut sensors = ModbusSim::tcp(&sensors_spec(80));
    let relays = ModbusSim::tcp(&relay_spec());
    let port = free_port();
    let dir = scratch_dir("status-page");
    let mut gw = Gateway::start(&dir, &site(sensors.port(), relays.port(), port), &[]);
    gw.wait_started();
    gw.wait_log("HTTP API listening", Duration::from_secs(10));
    let base = format!("http://127.0.0.1:{port}");
    let http = http_client();

    // --- The API, before the browser: the device is up and its value judged. ---
    let status = eventually("dust-01 up in /api/status", PAGE, || async {
        let v = get_json(&http, &format!("{base}/api/status")).await;
        let up = v["devices"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["id"] == "dust-01" && d["state"] == "up"));
        up.then_some(v)
    })
    .await;
    has_keys(
        &status,
        &[
            "site",
            "name",
            "time",
            "version",
            "devices",
            "queue",
            "uplink_lag_s",
            "written_points",
            "open_alerts",
            "brokers",
        ],
        "/api/status",
    );
    assert_eq!(status["site"], "page-site");
    assert_eq!(status["name"], "状态页测试工地");
    assert!(
        status["time"]
            .as_str()
            .is_some_and(|t| t.ends_with("+08:00")),
        "site time with the site's offset: {}",
        status["time"]
    );
    let dev = status["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["id"] == "dust-01"))
        .cloned()
        .expect("dust-01 in /api/status");
    has_keys(
        &dev,
        &["id", "bus", "state", "last_ok", "polls", "poll_errors"],
        "a device",
    );
    assert_eq!(dev["bus"], "sensors");
    has_keys(&status["queue"], &["points", "bytes", "dropped"], "queue");
    assert_eq!(status["open_alerts"], 0);

    let readings = eventually("pm10 = 80 in /api/readings/latest", PAGE, || async {
        let v = get_json(&http, &format!("{base}/api/readings/latest")).await;
        let r = v.as_array()?.iter().find(|r| {
            r["device"] == "dust-01" && r["metric"] == "pm10" && r["value"] == json!(80.0)
        })?;
        Some(r.clone())
    })
    .await;
    has_keys(
        &readings,
        &["device", "metric", "value", "unit", "time", "limit", "over"],
        "a reading",
    );
    assert_eq!(readings["unit"], "µg/m³");
    assert_eq!(readings["over"], false);
    assert_eq!(readings["limit"]["value"], json!(150.0));
    assert_eq!(readings["limit"]["rule"], "pm10-high");
    assert_eq!(readings["limit"]["kind"], "above");
    let all = get_json(&http, &format!("{base}/api/readings/latest")).await;
    let noise = all
        .as_array()
        .and_then(|a| a.iter().find(|r| r["metric"] == "noise"))
        .expect("noise among the latest values");
    assert_eq!(
        (noise["unit"].as_str(), &noise["limit"]),
        (Some("dB(A)"), &Value::Null)
    );

    assert_eq!(
        get_json(&http, &format!("{base}/api/alerts?state=open")).await,
        json!([])
    );
    for (q, want) in [("closed", "only open alerts"), ("bogus", "unknown state")] {
        let (st, ct, body) = get(&http, &format!("{base}/api/alerts?state={q}")).await;
        assert_eq!(st, 400, "state={q}: {body}");
        assert!(ct.starts_with("application/json"));
        let v: Value = serde_json::from_str(&body).expect("a JSON error");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(want)),
            "{body}"
        );
    }

    let (st, ct, page) = get(&http, &format!("{base}/")).await;
    assert_eq!((st, ct.as_str()), (200, "text/html; charset=utf-8"));
    let (_, css_ct, css) = get(&http, &format!("{base}/status.css")).await;
    let (_, js_ct, js) = get(&http, &format!("{base}/status.js")).await;
    assert!(css_ct.starts_with("text/css") && js_ct.starts_with("text/javascript"));
    let page_bytes = page.len() + css.len() + js.len();
    println!(
        "page: {} + {} + {} = {page_bytes} bytes (html + css + js)",
        page.len(),
        css.len(),
        js.len()
    );

    let (st, ct, metrics) = get(&http, &format!("{base}/metrics")).await;
    assert_eq!(st, 200);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let samples = parse_prometheus(&metrics).unwrap_or_else(|e| panic!("{e}\n{metrics}"));
    assert_eq!(
        value_of(
            &samples,
            "dustgate_device_up",
            &[("device", "dust-01"), ("bus", "sensors")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &samples,
            "dustgate_reading",
            &[("device", "dust-01"), ("metric", "pm10"), ("unit", "µg/m³")]
        ),
        Some(80.0)
    );
    assert!(
        value_of(&samples, "dustgate_polls_total", &[("device", "dust-01")])
            .is_some_and(|n| n >= 1.0)
    );
    assert!(value_of(&samples, "dustgate_readings_total", &[]).is_some_and(|n| n >= 9.0));
    for name in [
        "dustgate_poll_errors_total",
        "dustgate_queue_points",
        "dustgate_queue_bytes",
        "dustgate_dropped_points_total",
        "dustgate_uplink_lag_seconds",
        "dustgate_written_points_total",
        "dustgate_alerts_opened_total",
    ] {
        assert!(
            samples.iter().any(|s| s.name == name),
            "{name} missing\n{metrics}"
        );
    }
    assert_eq!(
        value_of(&samples, "dustgate_open_alerts", &[("severity", "warning")]),
        Some(0.0)
    );
    println!(
        "/metrics: {} samples, {} bytes",
        samples.len(),
        metrics.len()
    );

    // --- The browser. ---
    let b = Browser::start().await;
    b.navigate(&format!("{base}/?lang=zh-CN&refresh=1")).await;
    let row = b
        .wait_text(
            "#devices tr[data-device=\"dust-01\"]",
            "dust-01 在线",
            |t| t.contains("dust-01") && t.contains("在线"),
        )
        .await;
    println!("device row (zh): {row}");
    assert!(row.contains("sensors"), "{row}");
    b.wait_text(
        "#devices tr[data-device=\"relay-01\"]",
        "relay-01 在线",
        |t| t.contains("在线"),
    )
    .await;
    let pm10 = b
        .wait_text(
            "#readings tr[data-device=\"dust-01\"][data-metric=\"pm10\"]",
            "PM10 80 with its limit",
            |t| t.contains("80 µg/m³") && t.contains("限值 150") && t.contains("pm10-high"),
        )
        .await;
    println!("pm10 row (zh): {pm10}");
    let class = b
        .attribute(
            "#readings tr[data-device=\"dust-01\"][data-metric=\"pm10\"]",
            "class",
        )
        .await
        .unwrap_or_default();
    assert!(!class.contains("over"), "80 is not over 150: {class}");
    b.wait_text(
        "#readings tr[data-metric=\"noise\"]",
        "noise 65.2 dB(A)",
        |t| t.contains("噪声") || t.contains("65.2 dB(A)"),
    )
    .await;
    b.wait_text("#alerts", "no alert", |t| t.contains("当前无告警"))
        .await;
    assert_eq!(
        b.text("h2[data-t=\"alerts\"]").await.as_deref(),
        Some("当前告警")
    );
    b.wait_text(
        "#compliance tr[data-item=\"hardening\"]",
        "hardening 100 %",
        |t| t.contains("路面硬化") && t.contains("100 %"),
    )
    .await;
    b.wait_text(ACTUATOR_STATE, "the mist cannons off", |t| t == "关")
        .await;
    b.wait_text(ACTUATOR_MODE, "the mist cannons in auto", |t| t == "自动")
        .await;
    b.wait_text("#site-name", "the site's name", |t| t == "状态页测试工地")
        .await;
    let updated = b
        .wait_text("#updated", "an update time", |t| t.len() == 8)
        .await;
    // It refreshes itself: the time moves on without a reload.
    b.wait_text("#updated", "a later update time", |t| {
        t.len() == 8 && t != updated
    })
    .await;

    // --- PM10 rises at the simulator: the alert appears on the open page. ---
    // min_off (1 s) counts from the start-up switch: past it the cannons may switch on.
    let raised = Instant::now();
    sensors.update(&sensors_spec(300));
    let alert = b
        .wait_text(
            "#alerts li[data-rule=\"pm10-high\"]",
            "the open PM10 alert",
            |t| t.contains("PM10"),
        )
        .await;
    let shown_after = raised.elapsed();
    println!("alert on the page {shown_after:?} after the simulator changed: {alert}");
    assert!(alert.contains("警告"), "severity shown: {alert}");
    b.wait_text(
        "#readings tr[data-device=\"dust-01\"][data-metric=\"pm10\"]",
        "PM10 300",
        |t| t.contains("300 µg/m³"),
    )
    .await;
    let class = b
        .attribute(
            "#readings tr[data-device=\"dust-01\"][data-metric=\"pm10\"]",
            "class",
        )
        .await
        .unwrap_or_default();
    assert!(
        class.contains("over"),
        "300 over 150 is highlighted: {class}"
    );
    b.wait_text(ACTUATOR_STATE, "the mist cannons on", |t| t == "开")
        .await;
    b.wait_text("#summary [data-card=\"alerts\"]", "1 open alert", |t| {
        t.contains('1')
    })
    .await;

    // --- The language switch. ---
    b.click("#lang-en").await;
    b.wait_text("h2[data-t=\"alerts\"]", "the English heading", |t| {
        t == "Open alerts"
    })
    .await;
    let row = b
        .wait_text("#devices tr[data-device=\"dust-01\"]", "dust-01 up", |t| {
            t.contains(" up")
        })
        .await;
    println!("device row (en): {row}");
    let pm10 = b
        .wait_text(
            "#readings tr[data-device=\"dust-01\"][data-metric=\"pm10\"]",
            "the English limit",
            |t| t.contains("limit 150 (pm10-high"),
        )
        .await;
    println!("pm10 row (en): {pm10}");
    assert_eq!(b.attribute("html", "lang").await.as_deref(), Some("en"));
    // The alert's message too, rendered by the gateway in the reader's language (the site's
    // alert language is zh-CN).
    let alert_en = b
        .wait_text(
            "#alerts li[data-rule=\"pm10-high\"]",
            "the alert message in English",
            |t| t.contains("over the limit"),
        )
        .await;
    assert!(
        !alert_en.contains("超标") && !alert_en.contains("限值"),
        "no Chinese in the English alert: {alert_en}"
    );
    b.wait_text(ACTUATOR_STATE, "on", |t| t == "on").await;
    b.wait_text(ACTUATOR_MODE, "auto", |t| t == "auto").await;
    b.wait_text(
        "#compliance tr[data-item=\"hardening\"]",
        "Road hardening",
        |t| t.contains("Road hardening"),
    )
    .await;
    // Let a refresh pass, so the screenshot shows a settled page.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let png = b.screenshot().await;
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is a PNG"
    );
    let root = common::repo_root();
    // Only under target/: a test never rewrites tracked files (the README's picture comes
    // from scripts/screenshot-demo).
    let shots = [root.join("target/status-page.png")];
    for p in &shots {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("create the screenshot dir");
        }
        std::fs::write(p, &png).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }
    println!(
        "screenshot: {} bytes → {}",
        png.len(),
        shots
            .iter()
            .map(|p: &PathBuf| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );

    // The choice is remembered: without ?lang= the page stays English; 中文 switches back.
    b.navigate(&format!("{base}/?refresh=1")).await;
    b.wait_text("h2[data-t=\"devices\"]", "English after a reload", |t| {
        t == "Devices"
    })
    .await;
    b.click("#lang-zh").await;
    b.wait_text("h2[data-t=\"devices\"]", "Chinese again", |t| t == "设备")
        .await;

    // --- The API agrees with the page. ---
    let en = get_json(&http, &format!("{base}/api/alerts?state=open&lang=en")).await;
    let en_message = en[0]["message"].as_str().unwrap_or_default().to_string();
    assert!(
        en_message.contains("PM10 over the limit") && en_message.contains("limit 150"),
        "?lang=en renders in English: {en}"
    );
    let (st, _, body) = get(&http, &format!("{base}/api/alerts?state=open&lang=fr")).await;
    assert_eq!(st, 400, "an unknown lang is refused: {body}");
    let alerts = get_json(&http, &format!("{base}/api/alerts?state=open")).await;
    let a = alerts
        .as_array()
        .and_then(|a| a.iter().find(|a| a["rule"] == "pm10-high"))
        .cloned()
        .unwrap_or_else(|| panic!("pm10-high open: {alerts}"));
    has_keys(
        &a,
        &[
            "alert_id",
            "site",
            "device",
            "rule",
            "severity",
            "state",
            "metric",
            "value",
            "threshold",
            "window",
            "since",
            "at",
            "message",
            "standard",
        ],
        "an alert",
    );
    assert_eq!(
        (&a["site"], &a["device"], &a["state"], &a["threshold"]),
        (
            &json!("page-site"),
            &json!("dust-01"),
            &json!("open"),
            &json!(150.0)
        )
    );
    let r = get_json(&http, &format!("{base}/api/readings/latest")).await;
    let pm10 = r
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|r| r["device"] == "dust-01" && r["metric"] == "pm10")
        })
        .cloned()
        .expect("pm10");
    assert_eq!(
        (&pm10["over"], &pm10["alert_open"]),
        (&json!(true), &json!(true))
    );
    let status = get_json(&http, &format!("{base}/api/status")).await;
    assert_eq!(status["open_alerts"], 1);
    let samples = eventually("the actuator on in /metrics", PAGE, || async {
        let (_, _, text) = get(&http, &format!("{base}/metrics")).await;
        let s = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        (value_of(&s, "dustgate_actuator_on", &[("actuator", "mist-cannons")]) == Some(1.0))
            .then_some(s)
    })
    .await;
    assert_eq!(
        value_of(&samples, "dustgate_open_alerts", &[("severity", "warning")]),
        Some(1.0)
    );
    assert_eq!(
        value_of(&samples, "dustgate_alerts_opened_total", &[]),
        Some(1.0)
    );
    assert!(value_of(&samples, "dustgate_switches_total", &[]).is_some_and(|n| n >= 2.0));
    assert_eq!(
        value_of(
            &samples,
            "dustgate_reading",
            &[("device", "dust-01"), ("metric", "pm10")]
        ),
        Some(300.0)
    );

    // --- The gateway stops answering: the page says so and keeps the last data. ---
    gw.proc.stop();
    let banner = b
        .wait_text("#error", "the error banner", |t| t.contains("网关无响应"))
        .await;
    println!("banner: {banner}");
    assert!(
        b.text("#alerts li[data-rule=\"pm10-high\"]")
            .await
            .is_some(),
        "the last data stays on the page"
    );
    drop(b);
    println!("status page test took {:?}", t0.elapsed());
}

/// Issue 10: a missing InfluxDB database used to look healthy on the page while every batch
/// was set aside. Now the page shows it in red, with the server's words, until it is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_influxdb_database_is_shown_red_until_it_is_created() {
    let influx = common::Influx1::start();
    let sensors = ModbusSim::tcp(&sensors_spec(80));
    let port = free_port();
    let dir = scratch_dir("status-page-missing-db");
    let toml = format!(
        "[site]\nid = \"page-missing\"\nhealth_interval = \"1s\"\n\n{}\n[store]\ndir = \"store\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[[modbus]]\nname = \"sensors\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\ninterval = \"1s\"\n\n  [[modbus.device]]\n  id = \"dust-01\"\n  unit = 1\n  profile = \"generic-dust-monitor\"\n",
        common::site::influx_v1(&influx.url(), "nowhere"),
        sensors.port()
    );
    let mut gw = Gateway::start(&dir, &toml, &[]);
    gw.wait_started();
    gw.wait_log("HTTP API listening", Duration::from_secs(10));
    let b = Browser::start().await;
    b.navigate(&format!("http://127.0.0.1:{port}/?lang=en&refresh=1"))
        .await;
    let banner = b
        .wait_text("#uplink-error", "the missing-database banner", |t| {
            t.contains("InfluxDB destination missing") && t.contains("database not found")
        })
        .await;
    println!("banner: {banner}");
    let card = b
        .attribute("[data-card=\"queue\"]", "class")
        .await
        .unwrap_or_default();
    assert!(
        card.contains("bad"),
        "the store-depth card is red: {card:?}"
    );
    // Chinese too.
    b.click("#lang-zh").await;
    b.wait_text("#uplink-error", "the banner in Chinese", |t| {
        t.contains("数据库不存在")
    })
    .await;

    // Created by hand: the banner goes (a hidden element has no text).
    influx.create_db("nowhere").await;
    b.wait_text(
        "#uplink-error",
        "no banner once the database is there",
        str::is_empty,
    )
    .await;
    let card = b
        .attribute("[data-card=\"queue\"]", "class")
        .await
        .unwrap_or_default();
    assert!(!card.contains("bad"), "{card:?}");
    drop(b);
    gw.proc.stop();
    drop(sensors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubs_page_lists_its_hj212_stations_and_metrics_stay_valid_prometheus() {
    let influx = common::Influx1::start();
    influx.create_db("hubpage").await;
    let port = free_port();
    let hj = free_port();
    let dir = scratch_dir("status-page-hub");
    let toml = format!(
        "[site]\nid = \"hub\"\ntimezone = \"Asia/Shanghai\"\nhealth_interval = \"1s\"\n\n{}\n[store]\ndir = \"store\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[[hj212.listen]]\nname = \"district\"\nlisten = \"127.0.0.1:{hj}\"\n\n  [[hj212.listen.station]]\n  mn = \"010000A8900016F000169DC0\"\n  device = \"dust-c-01\"\n  site = \"cd-jj-0018\"\n\n  [[hj212.listen.station]]\n  mn = \"HJZB0XH0150109\"\n  device = \"dust-d-01\"\n  site = \"cd-jj-0021\"\n",
        common::site::influx_v1(&influx.url(), "hubpage"),
    );
    let mut gw = Gateway::start(&dir, &toml, &[]);
    gw.wait_log("HJ 212 listener listening", Duration::from_secs(20));
    // One station sends a frame (and a second one with a bad CRC) on a connection it keeps.
    let dt = jiff::tz::TimeZone::get("Asia/Shanghai")
        .expect("zone")
        .to_datetime(jiff::Timestamp::now());
    let ts = common::hj212_time(dt);
    let seg = format!(
        "QN={ts}000;ST=39;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&DataTime={ts};a34002-Rtd=55,a34002-Flag=N&&"
    );
    let frame = format!(
        "##{:04}{seg}{:04X}\r\n",
        seg.len(),
        dustgate::hj212::crc::hj212(seg.as_bytes())
    );
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", hj)).expect("connect");
    std::io::Write::write_all(&mut sock, frame.as_bytes()).expect("send");
    std::io::Write::write_all(&mut sock, frame.replace("55", "56").as_bytes()).expect("send");

    let b = Browser::start().await;
    b.navigate(&format!("http://127.0.0.1:{port}/?lang=zh-CN&refresh=1"))
        .await;
    let text = b
        .wait_text(
            "#stations tr[data-mn=\"010000A8900016F000169DC0\"]",
            "the station that sent",
            |t| t.contains("dust-c-01") && t.contains("已连接") && t.contains("crc 1"),
        )
        .await;
    println!("station row: {text}");
    b.wait_text(
        "#devices tr[data-device=\"dust-c-01\"]",
        "the station among the devices, as HJ 212",
        |t| t.contains("HJ 212") && t.contains("在线"),
    )
    .await;
    b.wait_text(
        "#stations tr[data-mn=\"HJZB0XH0150109\"]",
        "the station that did not",
        |t| t.contains("dust-d-01") && t.contains("未连接"),
    )
    .await;
    drop(b);
    // The HJ 212 families parse as Prometheus text.
    let (_, body) = common::http_get_blocking(port, "/metrics").expect("/metrics");
    let samples = parse_prometheus(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert_eq!(
        value_of(
            &samples,
            "dustgate_hj212_rejected_total",
            &[("listener", "district"), ("reason", "crc")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &samples,
            "dustgate_hj212_station_connected",
            &[("mn", "010000A8900016F000169DC0")]
        ),
        Some(1.0)
    );
    drop(sock);
    gw.proc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sites_page_lists_its_hj212_platforms_and_their_metrics_parse() {
    use common::platform::PlatformPeer;

    let port = free_port();
    let (up, down) = (free_port(), free_port());
    let dir = scratch_dir("status-page-platforms");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("pw"), "123456\n").expect("pw");
    let toml = format!(
        "[site]\nid = \"page-uplink\"\ntimezone = \"Asia/Shanghai\"\nhealth_interval = \"1s\"\n\n[store]\ndir = \"store\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [[hj212.upstream]]\nname = \"city\"\naddress = \"127.0.0.1:{up}\"\nst = \"39\"\nmn = \"010000A8900016F000169DC0\"\npassword_file = \"pw\"\nrealtime = \"30s\"\n\n\
         [[hj212.upstream]]\nname = \"district\"\naddress = \"127.0.0.1:{down}\"\nversion = \"2025\"\nst = \"22\"\nmn = \"88888880000001\"\npassword_file = \"pw\"\n"
    );
    let city = PlatformPeer::start_on("status-page-city", up, &[]);
    let mut gw = Gateway::start(&dir, &toml, &[]);
    gw.wait_started();
    // The city platform got its boot time: the link is up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !city.verdicts().iter().any(|x| x["cn"] == "2081") {
        assert!(Instant::now() < deadline, "no 2081 at the city platform");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = Browser::start().await;
    b.navigate(&format!("http://127.0.0.1:{port}/?lang=zh-CN&refresh=1"))
        .await;
    let row = b
        .wait_text(
            "#upstreams tr[data-upstream=\"city\"]",
            "the city platform, connected",
            |t| t.contains("已连接") && t.contains(&format!("127.0.0.1:{up} (2017)")),
        )
        .await;
    println!("platform row: {row}");
    b.wait_text(
        "#upstreams tr[data-upstream=\"district\"]",
        "the district platform, down",
        |t| t.contains("未连接") && t.contains("(2025)"),
    )
    .await;
    let heading = b.text("#upstream-section h2").await.unwrap_or_default();
    assert_eq!(heading, "HJ 212 上报平台");
    drop(b);
    let (_, body) = common::http_get_blocking(port, "/metrics").expect("/metrics");
    let samples = parse_prometheus(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert_eq!(
        value_of(
            &samples,
            "dustgate_hj212_upstream_connected",
            &[("upstream", "city")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &samples,
            "dustgate_hj212_upstream_connected",
            &[("upstream", "district")]
        ),
        Some(0.0)
    );
    let status: Value = serde_json::from_str(
        &common::http_get_blocking(port, "/api/status")
            .expect("/api/status")
            .1,
    )
    .expect("json");
    let ups = status["hj212_upstreams"].as_array().expect("platforms");
    assert_eq!(ups.len(), 2);
    has_keys(
        &ups[0],
        &[
            "name",
            "address",
            "version",
            "connected",
            "last_ack",
            "backlog_frames",
            "backlog_oldest",
            "resent",
            "expired",
            "rejected_answers",
            "dropped_readings",
        ],
        "an hj212_upstreams entry",
    );
    gw.proc.stop();
}
