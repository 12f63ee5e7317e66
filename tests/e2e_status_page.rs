//! The status page as a person sees it, in a real headless Chromium driven over the W3C
//! WebDriver protocol (chromedriver, plain JSON over HTTP with reqwest): a pymodbus dust
//! monitor and relay module, `dustgate run` with a PM10 rule that switches the mist cannons.
//! The page shows the device up and its latest values with the limit in force; when the
//! simulator raises PM10 the open alert appears without a reload; the language switch turns
//! every label; a screenshot is kept for review (target/status-page.png). `/metrics` is parsed strictly as Prometheus text, and the `/api/*` answers carry the
//! contract's fields. The pictures: a monitor hands over its last day over HJ 212 and the
//! tiles show its values in the colours of their limits, the charts its minutes with the limits
//! and alerts, the gate board (/board) everything inside 1920×1080 and 1280×720, in Chinese;
//! screenshots in target/screenshots/ (status.png, board-1920.png, board-1280.png).

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
            // chromedriver answers once the browser is gone, but keeps the connection open:
            // read the answer (headers, then Content-Length bytes), not to the end, which
            // took the whole 10 s timeout.
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if answer_complete(&got) {
                    break;
                }
            }
        }
    }
}

/// Whether `got` holds a whole HTTP answer with a `Content-Length`.
fn answer_complete(got: &[u8]) -> bool {
    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| got.len() >= end + 4 + len)
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
        self.element_string(css, "text").await
    }

    /// A string property of the first element at `css` (`text`, `attribute/NAME`,
    /// `css/PROPERTY`); `None` while it is missing or being replaced by a re-render.
    async fn element_string(&self, css: &str, what: &str) -> Option<String> {
        let id = self.find(css).await?;
        match self
            .cmd(reqwest::Method::GET, &format!("/element/{id}/{what}"), None)
            .await
        {
            Ok(v) => v.as_str().map(str::to_string),
            Err(e) if e.code == "stale element reference" => None,
            Err(e) => panic!("{what} of {css}: {e}"),
        }
    }

    async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        self.element_string(css, &format!("attribute/{name}")).await
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

    /// Runs `script` (a function body) in the page; its return value.
    async fn exec(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The computed value of a CSS property of the first element at `css` (what is painted).
    async fn css(&self, css: &str, property: &str) -> Option<String> {
        self.element_string(css, &format!("css/{property}")).await
    }

    /// Makes the page's viewport `width` × `height` CSS pixels (the window's frame, if any,
    /// is measured and added).
    async fn set_viewport(&self, width: u32, height: u32) {
        let (mut w, mut h) = (width, height);
        for _ in 0..3 {
            self.cmd(
                reqwest::Method::POST,
                "/window/rect",
                Some(json!({ "width": w, "height": h })),
            )
            .await
            .unwrap_or_else(|e| panic!("window size {w}x{h}: {e}"));
            let v = self
                .exec("return [window.innerWidth, window.innerHeight];")
                .await;
            let (iw, ih) = (v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0));
            if (iw, ih) == (u64::from(width), u64::from(height)) {
                return;
            }
            w = (i64::from(w) + i64::from(width) - iw as i64).max(100) as u32;
            h = (i64::from(h) + i64::from(height) - ih as i64).max(100) as u32;
        }
        panic!("could not make the viewport {width}x{height}");
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

/// The JSON at `url` once it answers 200 (`None` before: a series the gateway has not seen
/// yet is a 404 until its first reading is in).
async fn get_json_when_there(http: &reqwest::Client, url: &str) -> Option<Value> {
    let (status, _, body) = get(http, url).await;
    (status == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
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

// ---------------------------------------------------------------------------
// Pictures: the tiles, the charts and the gate board
// ---------------------------------------------------------------------------

const BOARD_MN: &str = "010000A8900016F000169DC0";
const PERMIT: &str = "510104202612020101";

/// A monitor that reports over HJ 212 (so the test can hand it the past hour with its
/// DataTimes), a relay module, rules on PM2.5, PM10 and TSP, the mist cannons on TSP.
fn pictures_site(hj: u16, relays: u16, http: u16) -> String {
    format!(
        r#"[site]
id = "board-site"
name = "锦江区 B 地块"
timezone = "Asia/Shanghai"
permit = "{PERMIT}"
tags = {{ district = "jinjiang" }}
health_interval = "1s"

[store]
dir = "store"
commit_interval = "50ms"

[http]
listen = "127.0.0.1:{http}"

[[hj212.listen]]
name = "monitors"
listen = "127.0.0.1:{hj}"
max_frame_rate = 1000

  [[hj212.listen.station]]
  mn = "{BOARD_MN}"
  device = "dust-01"

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
id = "pm25-high"
metric = "pm25"
above = 75
severity = "warning"

[[rule]]
id = "pm10-high"
metric = "pm10"
above = 150
clear = 120
severity = "warning"

[[rule]]
id = "tsp-high"
metric = "tsp"
above = 200
clear = 180
severity = "warning"
actuate = "mist-cannons"

[[actuator]]
id = "mist-cannons"
device = "relay-01"
coil = "fog_cannon_on"
min_on = "5s"
min_off = "1s"
"#
    )
}

/// What the monitor sent `k` minutes ago (HJ 212 code, value). The last minute holds what the
/// tiles and the board show: PM2.5 68 (91 % of 75: amber), PM10 60 (40 %: green), TSP 260
/// (over 200, its alert open: red), noise 65.2 (no limit: grey), wind 2.3 m/s from the west.
/// PM10 spikes to 300 thirty minutes ago (an alert that opens and closes). Every value moves a
/// little from minute to minute, so that none looks stuck.
fn monitor_at(k: i64) -> Vec<(&'static str, f64)> {
    let w = (k % 3) as f64;
    let now = k == 0;
    let pm10 = match k {
        0 => 60.0,
        29 => 100.0,
        30 => 300.0,
        _ => 90.0 + w,
    };
    vec![
        ("a34004", if now { 68.0 } else { 40.0 + w }),
        ("a34002", pm10),
        ("a34001", if k <= 5 { 260.0 + w } else { 120.0 + w }),
        ("LA", if now { 65.2 } else { 62.0 + w / 2.0 }),
        ("a01001", if now { -3.5 } else { -3.0 + w / 10.0 }),
        ("a01002", if now { 60.9 } else { 58.0 + w }),
        ("a01007", if now { 2.3 } else { 2.0 + w / 10.0 }),
        ("a01008", if now { 270.0 } else { 265.0 + w * 2.0 }),
    ]
}

/// A CN=2011 frame of `k` minutes ago, no answer asked.
fn monitor_frame(now: jiff::Timestamp, k: i64) -> String {
    let tz = jiff::tz::TimeZone::get("Asia/Shanghai").expect("zone");
    let at = now - jiff::SignedDuration::from_secs(k * 60);
    let ts = common::hj212_time(tz.to_datetime(at));
    let cp: Vec<String> = monitor_at(k)
        .iter()
        .map(|(code, v)| format!("{code}-Rtd={v},{code}-Flag=N"))
        .collect();
    let seg = format!(
        "QN={ts}000;ST=39;CN=2011;PW=123456;MN={BOARD_MN};Flag=4;CP=&&DataTime={ts};{}&&",
        cp.join(";")
    );
    format!(
        "##{:04}{seg}{:04X}\r\n",
        seg.len(),
        dustgate::hj212::crc::hj212(seg.as_bytes())
    )
}

fn save_screenshot(png: &[u8], name: &str) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name} is a PNG");
    // Only under target/: a test never rewrites tracked files (docs/img/ is copied by hand).
    let dir = common::repo_root().join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("create target/screenshots");
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    println!("screenshot: {} bytes → {}", png.len(), path.display());
}

/// The board at one size: every value inside the viewport and inside its cell, nothing
/// clipped, no scrolling, in Chinese.
async fn check_board(b: &Browser, width: u32, height: u32, aqi: &str) {
    b.set_viewport(width, height).await;
    let v = b
        .exec(
            r#"const de = document.documentElement;
const r = e => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
const ids = ['b-name', 'b-permit', 'b-time', 'b-date', 'v-aqi', 'v-aqi-cat', 'n-aqi', 'v-pm25', 'n-pm25',
  'v-pm10', 'v-noise', 'v-temperature', 'v-humidity', 'v-wind', 'n-wind', 'wind-arrow'];
const h1 = document.querySelector('h1');
return {
  iw: innerWidth, ih: innerHeight, sw: de.scrollWidth, sh: de.scrollHeight,
  name_cut: h1.scrollWidth > h1.clientWidth,
  els: ids.map(id => { const e = document.getElementById(id); const c = e.closest('.cell');
    return { id, text: e.textContent, rect: r(e), cell: c ? r(c) : null }; }),
  clipped: [...document.querySelectorAll('.cell')].filter(c => c.scrollHeight > c.clientHeight + 1
    || c.scrollWidth > c.clientWidth + 1).map(c => c.dataset.cell)
};"#,
        )
        .await;
    let (iw, ih) = (
        v["iw"].as_f64().unwrap_or(0.0),
        v["ih"].as_f64().unwrap_or(0.0),
    );
    assert_eq!((iw, ih), (f64::from(width), f64::from(height)), "{v}");
    assert!(
        v["sw"].as_f64() <= Some(iw) && v["sh"].as_f64() <= Some(ih),
        "no scrolling at {width}x{height}: {v}"
    );
    assert_eq!(v["clipped"], json!([]), "cells clipped at {width}x{height}");
    assert_eq!(
        v["name_cut"], false,
        "the site's name is cut at {width}x{height}"
    );
    let mut texts = BTreeMap::new();
    for e in v["els"].as_array().expect("elements") {
        let id = e["id"].as_str().unwrap_or("?");
        let rect: Vec<f64> = e["rect"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let [l, t, r, btm] = rect[..] else {
            panic!("{id}: no rect in {e}")
        };
        assert!(
            r > l && btm > t && l >= 0.0 && t >= 0.0 && r <= iw && btm <= ih,
            "{id} {rect:?} not inside the {width}x{height} viewport"
        );
        if let Some(c) = e["cell"].as_array() {
            let c: Vec<f64> = c.iter().filter_map(Value::as_f64).collect();
            assert!(
                l >= c[0] - 0.5 && t >= c[1] - 0.5 && r <= c[2] + 0.5 && btm <= c[3] + 0.5,
                "{id} {rect:?} not inside its cell {c:?} at {width}x{height}"
            );
        }
        texts.insert(id.to_string(), e["text"].as_str().unwrap_or("").to_string());
    }
    println!("board {width}x{height}: {texts:?}");
    for (id, want) in [
        ("b-name", "锦江区 B 地块"),
        ("b-permit", PERMIT),
        ("v-aqi", aqi),
        ("v-pm25", "68"),
        ("v-pm10", "60"),
        ("v-noise", "65.2"),
        ("v-temperature", "-3.5"),
        ("v-humidity", "61"),
        ("v-wind", "2.3"),
    ] {
        assert_eq!(texts[id], want, "{id} at {width}x{height}");
    }
    for (id, want) in [
        ("n-wind", "西风 2 级"),
        ("v-aqi-cat", "良"),
        ("n-aqi", "首要污染物 PM10"),
        ("n-pm25", "限值 75 · 接近限值"),
        ("b-date", "星期"),
    ] {
        assert!(
            texts[id].contains(want),
            "{id} at {width}x{height}: {:?}",
            texts[id]
        );
    }
    let time = &texts["b-time"];
    assert!(
        time.len() == 8 && time.as_bytes()[2] == b':',
        "the clock: {time:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiles_charts_and_the_gate_board_show_what_a_person_sees() {
    for (path, what) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")] {
        assert!(
            std::path::Path::new(path).exists(),
            "{what} is missing ({path}): run `{INSTALL}` (scripts/test does)"
        );
    }
    let t0 = Instant::now();
    let relays = ModbusSim::tcp(&relay_spec());
    let (port, hj) = (free_port(), free_port());
    let dir = scratch_dir("status-page-pictures");
    let mut gw = Gateway::start(&dir, &pictures_site(hj, relays.port(), port), &[]);
    gw.wait_log("HJ 212 listener listening", Duration::from_secs(20));
    gw.wait_log("HTTP API listening", Duration::from_secs(10));
    let base = format!("http://127.0.0.1:{port}");
    let http = http_client();
    println!("gateway up after {:?}", t0.elapsed());

    // --- The monitor hands over its day: a little of ten hours ago, then the last 70 minutes.
    let now = jiff::Timestamp::now();
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", hj)).expect("connect");
    let send = |sock: &mut std::net::TcpStream, ks: &mut dyn Iterator<Item = i64>| {
        let frames: String = ks.map(|k| monitor_frame(now, k)).collect();
        std::io::Write::write_all(sock, frames.as_bytes()).expect("send");
    };
    send(&mut sock, &mut (590..=600).rev().chain((30..=70).rev()));
    // The PM10 spike's alert is seen open (a chart request looks at the open alerts) before
    // the next minute closes it.
    let pm10_url = format!("{base}/api/history?device=dust-01&metric=pm10");
    eventually("the PM10 alert open in /api/history", PAGE, || async {
        let v = get_json_when_there(&http, &pm10_url).await?;
        v["series"][0]["alerts"]
            .as_array()?
            .iter()
            .any(|a| a["rule"] == "pm10-high" && a["open"] == true)
            .then_some(())
    })
    .await;
    send(&mut sock, &mut (0..=29).rev());
    let pm10 = eventually("the PM10 alert closed, 82 minutes kept", PAGE, || async {
        let v = get_json_when_there(&http, &pm10_url).await?;
        let s = &v["series"][0];
        let closed = s["alerts"]
            .as_array()?
            .iter()
            .any(|a| a["rule"] == "pm10-high" && a["open"] == false);
        (closed && s["points"].as_array()?.len() >= 82).then(|| v.clone())
    })
    .await;
    has_keys(
        &pm10,
        &[
            "from",
            "to",
            "from_ms",
            "to_ms",
            "step_s",
            "series",
            "kept_series",
            "max_series",
            "refused_values",
        ],
        "/api/history",
    );
    let s = &pm10["series"][0];
    has_keys(
        s,
        &[
            "device", "metric", "unit", "label", "limit", "points", "alerts",
        ],
        "a series",
    );
    assert_eq!(
        (&s["unit"], &s["limit"]["value"]),
        (&json!("µg/m³"), &json!(150.0))
    );
    let points = s["points"].as_array().expect("points");
    let last = points.last().expect("a point");
    assert_eq!(
        (&last[1], &last[2]),
        (&json!(60.0), &json!(1)),
        "the newest minute: {last}"
    );
    assert!(
        points.iter().any(|p| p[1] == json!(300.0)),
        "the spike among the minutes"
    );
    let (st, _, body) = get(&http, &format!("{base}/api/history?device=nobody")).await;
    assert_eq!(st, 404, "{body}");
    assert!(body.contains("first 64 device-metric pairs"), "{body}");

    let board = eventually("the AQI in /api/board", PAGE, || async {
        let v = get_json(&http, &format!("{base}/api/board")).await;
        (v["aqi"].is_object() && v["values"]["tsp"]["level"] == "over").then_some(v)
    })
    .await;
    println!("/api/board: {board}");
    has_keys(
        &board,
        &["site", "name", "permit", "time", "values", "wind", "aqi"],
        "/api/board",
    );
    assert_eq!(board["permit"], PERMIT, "[site].permit");
    for (metric, level) in [
        ("pm25", "near"),
        ("pm10", "ok"),
        ("tsp", "over"),
        ("noise", "none"),
    ] {
        assert_eq!(board["values"][metric]["level"], level, "{metric}");
        assert_eq!(board["values"][metric]["device"], "dust-01", "{metric}");
    }
    assert_eq!(board["wind"]["from"]["zh"], "西风");
    assert_eq!(
        (&board["wind"]["level"], &board["wind"]["direction_deg"]),
        (&json!(2), &json!(270.0))
    );
    let aqi = &board["aqi"];
    assert_eq!(
        (&aqi["category"]["zh"], &aqi["primary"]),
        (&json!("良"), &json!("PM10"))
    );
    let aqi_value = aqi["value"].as_u64().expect("an AQI number");
    assert!((51..=100).contains(&aqi_value), "{aqi}");

    println!("history and board checked after {:?}", t0.elapsed());

    // --- The status page: tiles, the equipment, the charts. ---
    let b = Browser::start().await;
    b.set_viewport(1280, 1100).await;
    b.navigate(&format!("{base}/?lang=zh-CN&refresh=1")).await;
    // The colours a person sees: green under 80 % of the limit, amber to 100 %, red over,
    // grey without a limit.
    for (metric, value, colour, note) in [
        ("pm25", "68", "rgb(154, 91, 0)", "接近限值 · 限值 75"),
        ("pm10", "60", "rgb(27, 122, 61)", "达标 · 限值 150"),
        ("tsp", "260", "rgb(179, 38, 30)", "超标 · 限值 200"),
        ("noise", "65.2", "rgb(95, 107, 115)", "无限值"),
        ("wind_speed", "2.3", "rgb(95, 107, 115)", "箭头指向风的去向"),
    ] {
        let tile = format!("#tiles [data-tile=\"{metric}\"]");
        b.wait_text(&format!("{tile} .t-val b"), value, |t| t == value)
            .await;
        // chromedriver gives `rgba(r, g, b, 1)` for an opaque colour.
        let bg = b.css(&tile, "background-color").await.map(|c| {
            c.strip_prefix("rgba(")
                .and_then(|c| c.strip_suffix(", 1)"))
                .map_or(c.clone(), |c| format!("rgb({c})"))
        });
        assert_eq!(bg.as_deref(), Some(colour), "the {metric} tile");
        let text = b.text(&format!("{tile} .t-note")).await.unwrap_or_default();
        assert_eq!(text, note, "the {metric} tile's note");
    }
    let wind = b.text("#tiles [data-tile=\"wind_speed\"] .t-wind").await;
    assert_eq!(wind.as_deref(), Some("西风 2 级"));
    assert_eq!(
        b.attribute(
            "#tiles [data-tile=\"wind_speed\"] svg.arrow path",
            "transform"
        )
        .await
        .as_deref(),
        Some("rotate(90)"),
        "from the west (270°), blowing to the east"
    );
    b.wait_text(
        "#equipment [data-actuator=\"mist-cannons\"]",
        "the mist cannons on, in auto",
        |t| t.contains("开") && t.contains("自动"),
    )
    .await;
    let charts = b
        .exec(
            r#"const out = {};
for (const m of ['pm25', 'pm10', 'tsp']) {
  const svg = document.querySelector('#charts svg.chart[data-metric="' + m + '"]');
  if (!svg) { out[m] = null; continue; }
  const n = (e, a) => Number(e.getAttribute(a));
  out[m] = {
    view: svg.getAttribute('viewBox').split(' ').map(Number),
    runs: [...svg.querySelectorAll('polyline.series')].map(p =>
      p.getAttribute('points').trim().split(/\s+/).map(q => q.split(',').map(Number))),
    limits: [...svg.querySelectorAll('line.limit')].map(l =>
      ({ value: Number(l.dataset.value), x1: n(l, 'x1'), x2: n(l, 'x2'), y1: n(l, 'y1'), y2: n(l, 'y2') })),
    alerts: [...svg.querySelectorAll('g.alert')].map(g => ({ class: g.getAttribute('class'),
      rule: g.dataset.rule, mark: g.querySelector('path.mark') ? g.querySelector('path.mark').getAttribute('d') : null }))
  };
}
return out;"#,
        )
        .await;
    let pm10 = &charts["pm10"];
    assert!(pm10.is_object(), "a PM10 chart: {charts}");
    let view: Vec<f64> = serde_json::from_value(pm10["view"].clone()).expect("viewBox");
    let runs: Vec<Vec<[f64; 2]>> = serde_json::from_value(pm10["runs"].clone()).expect("runs");
    assert!(
        runs.len() >= 2,
        "ten hours ago and the last 70 minutes, apart: {pm10}"
    );
    let all: Vec<[f64; 2]> = runs.iter().flatten().copied().collect();
    assert!(all.len() >= 82, "{} points", all.len());
    assert!(
        all.iter()
            .all(|[x, y]| *x >= 0.0 && *x <= view[2] && *y >= 0.0 && *y <= view[3]),
        "points inside the chart {view:?}: {all:?}"
    );
    let limit = &pm10["limits"][0];
    assert_eq!(limit["value"].as_f64(), Some(150.0), "{pm10}");
    let ly = limit["y1"].as_f64().unwrap_or(-1.0);
    assert_eq!(limit["y2"].as_f64(), Some(ly), "the limit is level");
    let spike = all
        .iter()
        .copied()
        .min_by(|a, b| a[1].total_cmp(&b[1]))
        .expect("a point");
    let newest = *all.last().expect("a point");
    assert!(
        spike[1] < ly && ly < newest[1] && ly > 0.0 && ly < view[3],
        "300 above the limit line at y {ly}, 60 below it: spike {spike:?}, newest {newest:?}"
    );
    assert!(
        newest[0] > spike[0] && spike[0] > view[2] * 0.9,
        "the last hour at the right: {spike:?} {newest:?}"
    );
    let closed = pm10["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["rule"] == "pm10-high"))
        .unwrap_or_else(|| panic!("the PM10 alert marked: {pm10}"));
    assert!(
        closed["class"]
            .as_str()
            .is_some_and(|c| c.contains("closed")),
        "{closed}"
    );
    let mark_x = closed["mark"]
        .as_str()
        .and_then(|d| d.strip_prefix('M')?.split(',').next()?.parse::<f64>().ok())
        .map(|x| x + 5.0)
        .unwrap_or_else(|| panic!("a marker: {closed}"));
    assert!(
        (mark_x - spike[0]).abs() < 1.5,
        "the marker at the spike's minute: {mark_x} vs {}",
        spike[0]
    );
    assert!(
        charts["tsp"]["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["rule"] == "tsp-high"
                && a["class"].as_str().is_some_and(|c| c.contains("open")))),
        "the open TSP alert: {}",
        charts["tsp"]
    );
    assert_eq!(charts["pm25"]["limits"][0]["value"].as_f64(), Some(75.0));
    assert_eq!(charts["pm25"]["alerts"], json!([]));
    save_screenshot(&b.screenshot().await, "status.png");
    println!("status page checked after {:?}", t0.elapsed());

    // --- The gate board, at the two screens of a site gate. ---
    b.navigate(&format!("{base}/board?refresh=1")).await;
    b.wait_text("#v-aqi", "the AQI on the board", |t| {
        t.parse::<u32>().is_ok()
    })
    .await;
    b.wait_text("#b-permit", "the permit number", |t| t == PERMIT)
        .await;
    let aqi_text = aqi_value.to_string();
    for (w, h, name) in [
        (1920, 1080, "board-1920.png"),
        (1280, 720, "board-1280.png"),
    ] {
        check_board(&b, w, h, &aqi_text).await;
        save_screenshot(&b.screenshot().await, name);
    }
    drop(b);
    drop(sock);
    gw.proc.stop();
    println!("pictures test took {:?}", t0.elapsed());
}
