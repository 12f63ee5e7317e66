//! The Grafana dashboards (`dashboards/`) against real data: every dashboard and provisioning
//! file parses and is consistent (panel ids, datasource references, raw InfluxQL), and every
//! query of every panel, annotation and template variable — with Grafana's macros and the
//! variables substituted as Grafana would — runs on InfluxDB 1.6.7 filled by `dustgate demo`
//! and returns rows.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Influx1, Proc, free_port, http_client, repo_root, scratch_dir};
use serde_json::Value;

/// The database the demo writes to and the provisioned datasource reads.
const DB: &str = "dust";
/// The demo's site id: what `$site` becomes.
const SITE: &str = "demo-site";
/// The uid of the provisioned datasource.
const DS_UID: &str = "dustgate-influx";
/// The dashboards the contract asks for.
const UIDS: [&str; 5] = [
    "dustgate-bureau",
    "dustgate-site",
    "dustgate-six100",
    "dustgate-water",
    "dustgate-health",
];
/// Grafana's own `$` words in a query (macros), as opposed to template variables.
const MACROS: [&str; 5] = [
    "timeFilter",
    "__timeFilter",
    "__interval",
    "__interval_ms",
    "__range",
];

fn dashboards_dir() -> PathBuf {
    repo_root().join("dashboards")
}

/// Every `dashboards/*.json`, parsed, with its file name.
fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dashboards_dir()).expect("dashboards/ exists");
    for entry in entries {
        let path = entry.expect("read dashboards/").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 file name")
            .to_owned();
        let text = fs::read_to_string(&path).expect("read a dashboard");
        let json: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not valid JSON: {e}"));
        out.push((name, json));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// All panels, including those nested in rows.
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

fn variables(dash: &Value) -> &[Value] {
    dash["templating"]["list"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Every `"datasource"` value anywhere in the JSON, with a path for messages.
fn datasource_refs<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let here = format!("{path}/{k}");
                if k == "datasource" {
                    out.push((here.clone(), child));
                }
                datasource_refs(child, here, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                datasource_refs(child, format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn has_cjk(s: &str) -> bool {
    s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
}

fn has_latin(s: &str) -> bool {
    s.chars().any(|c| c.is_ascii_alphabetic())
}

/// The `$name` / `${name}` template variables a query uses (not Grafana's macros).
fn variables_used(query: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes: Vec<char> = query.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == '$' {
            let braced = bytes.get(i + 1) == Some(&'{');
            let start = if braced { i + 2 } else { i + 1 };
            let mut end = start;
            while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == '_') {
                end += 1;
            }
            let name: String = bytes[start..end].iter().collect();
            if !name.is_empty() && !MACROS.contains(&name.as_str()) {
                out.insert(name);
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// A provisioning YAML file, reduced to `key: value` pairs (comments and blank lines dropped,
/// indentation and list dashes ignored). Enough to check the keys this test needs without a
/// YAML parser.
fn yaml_pairs(path: &Path) -> Vec<(String, String)> {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        assert!(
            !raw.contains('\t'),
            "{}:{}: a tab in YAML indentation",
            path.display(),
            n + 1
        );
        let line = match raw.find(" #") {
            Some(i) => &raw[..i],
            None => raw,
        };
        let line = line.trim().trim_start_matches("- ").trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(':').unwrap_or_else(|| {
            panic!(
                "{}:{}: not a `key: value` line: {raw}",
                path.display(),
                n + 1
            )
        });
        out.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    out
}

fn yaml_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// One query of a dashboard, with where it comes from.
#[derive(Debug, Clone)]
struct DashQuery {
    uid: String,
    file: String,
    title: String,
    kind: &'static str,
    query: String,
}

/// Every panel target, annotation and template-variable query of every dashboard.
fn all_queries(dashes: &[(String, Value)]) -> Vec<DashQuery> {
    let mut out = Vec::new();
    for (file, dash) in dashes {
        let uid = dash["uid"].as_str().unwrap_or_default().to_owned();
        let mut push = |title: &str, kind: &'static str, query: &str| {
            out.push(DashQuery {
                uid: uid.clone(),
                file: file.clone(),
                title: title.to_owned(),
                kind,
                query: query.to_owned(),
            });
        };
        for p in panels(dash) {
            let title = p["title"].as_str().unwrap_or_default();
            for t in p["targets"].as_array().into_iter().flatten() {
                let refid = t["refId"].as_str().unwrap_or("?");
                push(
                    &format!("{title} [{refid}]"),
                    "panel",
                    t["query"].as_str().unwrap_or_default(),
                );
            }
        }
        for a in dash["annotations"]["list"].as_array().into_iter().flatten() {
            if a["builtIn"] == 1 {
                continue;
            }
            // Grafana 10/11 run `target.query`; a top-level `query` is the legacy copy.
            let query = a["target"]["query"]
                .as_str()
                .or_else(|| a["query"].as_str())
                .unwrap_or_default();
            push(a["name"].as_str().unwrap_or_default(), "annotation", query);
        }
        for v in variables(dash) {
            if v["type"] == "query" {
                let query = v["query"]
                    .as_str()
                    .or_else(|| v["query"]["query"].as_str())
                    .unwrap_or_default();
                push(
                    &format!("${}", v["name"].as_str().unwrap_or_default()),
                    "variable",
                    query,
                );
            }
        }
    }
    out
}

/// The query as Grafana would send it for the last 24 hours, site `demo-site`, every device.
fn substitute(query: &str, interval: &str, interval_ms: u64) -> String {
    let mut q = query.to_owned();
    for (from, to) in [
        ("$__timeFilter", "time >= now() - 24h".to_owned()),
        ("$timeFilter", "time >= now() - 24h".to_owned()),
        ("$__interval_ms", interval_ms.to_string()),
        ("$__interval", interval.to_owned()),
        ("${site}", SITE.to_owned()),
        ("$site", SITE.to_owned()),
        // "All" (the variable's allValue).
        ("${device}", ".*".to_owned()),
        ("$device", ".*".to_owned()),
    ] {
        q = q.replace(from, &to);
    }
    q
}

#[test]
fn dashboards_and_provisioning_parse_and_agree() {
    // The provisioned datasource.
    let ds_path = dashboards_dir().join("provisioning/datasources/dustgate.yaml");
    let ds = yaml_pairs(&ds_path);
    assert_eq!(yaml_get(&ds, "apiVersion"), Some("1"), "{ds_path:?}");
    assert_eq!(yaml_get(&ds, "type"), Some("influxdb"), "{ds_path:?}");
    assert_eq!(yaml_get(&ds, "uid"), Some(DS_UID), "{ds_path:?}");
    assert_eq!(yaml_get(&ds, "database"), Some(DB), "{ds_path:?}");
    assert_eq!(yaml_get(&ds, "dbName"), Some(DB), "{ds_path:?}");
    assert_eq!(yaml_get(&ds, "version"), Some("InfluxQL"), "{ds_path:?}");
    assert_eq!(
        yaml_get(&ds, "url"),
        Some("http://127.0.0.1:8086"),
        "{ds_path:?}"
    );
    let ds_name = yaml_get(&ds, "name").expect("the datasource has a name");

    // The dashboard provider.
    let prov_path = dashboards_dir().join("provisioning/dashboards/dustgate.yaml");
    let prov = yaml_pairs(&prov_path);
    assert_eq!(yaml_get(&prov, "apiVersion"), Some("1"), "{prov_path:?}");
    assert_eq!(yaml_get(&prov, "type"), Some("file"), "{prov_path:?}");
    assert!(
        yaml_get(&prov, "path").is_some_and(|p| p.starts_with('/')),
        "{prov_path:?}: options.path must be an absolute folder"
    );

    let dashes = dashboards();
    let uids: BTreeSet<&str> = dashes
        .iter()
        .map(|(_, d)| d["uid"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        uids,
        UIDS.into_iter().collect::<BTreeSet<_>>(),
        "one dashboard per uid"
    );

    for (file, dash) in &dashes {
        let title = dash["title"].as_str().unwrap_or_default();
        assert!(
            has_cjk(title) && has_latin(title),
            "{file}: title {title:?} is not bilingual"
        );
        let schema = dash["schemaVersion"].as_u64().unwrap_or(0);
        assert!(
            (36..=41).contains(&schema),
            "{file}: schemaVersion {schema} (Grafana 10/11 is 36..41)"
        );
        assert!(
            dash["id"].is_null(),
            "{file}: a provisioned dashboard has no numeric id"
        );

        // Panel ids unique (rows and the panels nested in them too), titles bilingual.
        let mut ids = BTreeSet::new();
        for p in panels(dash) {
            let ptitle = p["title"].as_str().unwrap_or_default();
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{file}: panel {ptitle:?} has no numeric id"));
            assert!(
                ids.insert(id),
                "{file}: panel id {id} used twice ({ptitle:?})"
            );
            assert!(
                has_cjk(ptitle) && has_latin(ptitle),
                "{file}: panel title {ptitle:?} is not bilingual"
            );
            assert!(
                p["gridPos"]["w"].as_u64().is_some() && p["gridPos"]["h"].as_u64().is_some(),
                "{file}: panel {ptitle:?} has no gridPos"
            );
            if p["type"] == "row" {
                continue;
            }
            let targets = p["targets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            assert!(!targets.is_empty(), "{file}: panel {ptitle:?} has no query");
            let mut refids = BTreeSet::new();
            for t in targets {
                let refid = t["refId"].as_str().unwrap_or_default();
                assert!(
                    refids.insert(refid),
                    "{file}: panel {ptitle:?}: refId {refid:?} twice"
                );
                assert_eq!(
                    t["rawQuery"],
                    Value::Bool(true),
                    "{file}: panel {ptitle:?} [{refid}]: rawQuery must be true"
                );
                let query = t["query"].as_str().unwrap_or_default();
                assert!(
                    query.trim_start().starts_with("SELECT "),
                    "{file}: panel {ptitle:?} [{refid}]: not an InfluxQL SELECT: {query:?}"
                );
                let format = t["resultFormat"].as_str().unwrap_or_default();
                assert!(
                    ["time_series", "table"].contains(&format),
                    "{file}: panel {ptitle:?} [{refid}]: resultFormat {format:?}"
                );
            }
        }

        // The datasource variable, and every reference through it.
        let vars = variables(dash);
        let ds_var = vars
            .iter()
            .find(|v| v["name"] == "DS")
            .unwrap_or_else(|| panic!("{file}: no DS variable"));
        assert_eq!(ds_var["type"], "datasource", "{file}: DS variable type");
        assert_eq!(
            ds_var["query"],
            yaml_get(&ds, "type").unwrap_or_default(),
            "{file}: DS must list datasources of the provisioned type"
        );
        let current = ds_var["current"]["value"].as_str().unwrap_or_default();
        assert!(
            current == DS_UID || current == ds_name,
            "{file}: DS defaults to {current:?}, not the provisioned datasource ({DS_UID} / {ds_name})"
        );
        let mut refs = Vec::new();
        datasource_refs(dash, String::new(), &mut refs);
        assert!(!refs.is_empty(), "{file}: no datasource references");
        for (path, r) in refs {
            if r["type"] == "grafana" && r["uid"] == "-- Grafana --" {
                continue; // the built-in annotations
            }
            assert_eq!(r["type"], "influxdb", "{file}{path}: datasource type");
            let uid = r["uid"].as_str().unwrap_or_default();
            assert!(
                uid == "${DS}" || uid == DS_UID,
                "{file}{path}: datasource uid {uid:?} is neither ${{DS}} nor {DS_UID}"
            );
        }

        // Annotations: raw InfluxQL in `target`, the legacy top-level copy the same.
        for a in dash["annotations"]["list"].as_array().into_iter().flatten() {
            if a["builtIn"] == 1 {
                continue;
            }
            let name = a["name"].as_str().unwrap_or_default();
            let target = &a["target"];
            assert_eq!(
                target["rawQuery"],
                Value::Bool(true),
                "{file}: annotation {name:?}: target.rawQuery must be true"
            );
            let query = target["query"].as_str().unwrap_or_default();
            assert!(
                query.starts_with("SELECT "),
                "{file}: annotation {name:?}: target.query is not an InfluxQL SELECT: {query:?}"
            );
            if let Some(legacy) = a["query"].as_str() {
                assert_eq!(
                    legacy, query,
                    "{file}: annotation {name:?}: query != target.query"
                );
            }
            let text = target["textColumn"].as_str().unwrap_or_default();
            assert!(
                !text.is_empty() && query.contains(&format!("\"{text}\"")),
                "{file}: annotation {name:?}: textColumn {text:?} is not selected"
            );
        }

        // Variables used are defined; site/device are regex-matched with the All value `.*`.
        let defined: BTreeSet<String> = vars
            .iter()
            .filter_map(|v| v["name"].as_str().map(str::to_owned))
            .collect();
        for v in vars {
            let name = v["name"].as_str().unwrap_or_default();
            if v["type"] == "query" {
                assert_eq!(
                    v["datasource"]["uid"], "${DS}",
                    "{file}: ${name} datasource"
                );
                if v["includeAll"] == true {
                    assert_eq!(v["allValue"], ".*", "{file}: ${name} allValue");
                }
            }
        }
        for q in all_queries(std::slice::from_ref(&(file.clone(), dash.clone()))) {
            for used in variables_used(&q.query) {
                assert!(
                    defined.contains(&used),
                    "{file}: {} {:?} uses ${used}, which is not a variable of the dashboard: {}",
                    q.kind,
                    q.title,
                    q.query
                );
            }
            for var in ["site", "device"] {
                let bare = format!("${var}");
                if q.query.contains(&bare) {
                    assert!(
                        q.query.contains(&format!("\"{var}\" =~ /^${var}$/")),
                        "{file}: {} {:?}: use ${var} as \"{var}\" =~ /^${var}$/: {}",
                        q.kind,
                        q.title,
                        q.query
                    );
                }
            }
        }
    }
}

async fn run_query(
    http: &reqwest::Client,
    influx: &Influx1,
    query: &str,
) -> Result<(usize, Value), String> {
    let url = reqwest::Url::parse_with_params(
        &format!("{}/query", influx.url()),
        &[("db", DB), ("q", query), ("epoch", "ms")],
    )
    .map_err(|e| format!("bad url: {e}"))?;
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET /query: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    let value: Value = serde_json::from_str(&body)
        .map_err(|e| format!("HTTP {status}, not JSON ({e}): {body}"))?;
    if status != 200 {
        return Err(format!("HTTP {status}: {body}"));
    }
    if let Some(error) = value.get("error") {
        return Err(format!("error {error}"));
    }
    let mut rows = 0;
    for result in value["results"].as_array().into_iter().flatten() {
        if let Some(error) = result.get("error") {
            return Err(format!("statement error {error}"));
        }
        for series in result["series"].as_array().into_iter().flatten() {
            rows += series["values"].as_array().map_or(0, Vec::len);
        }
    }
    Ok((rows, value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_rows_on_the_demo_data() {
    let dashes = dashboards();
    let queries = all_queries(&dashes);
    assert!(queries.len() > 40, "only {} queries found", queries.len());

    let influx = Influx1::start();
    influx.create_db(DB).await;
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_dustgate"));
    let dir = scratch_dir("dashboards-demo");
    let store = dir.join("store");
    let zone = common::zone_where_it_is_late_evening();
    // The cameras publish on a real broker and the alerts go out on it: the MQTT and
    // alert-output panels have rows too.
    let broker = common::mqtt::Mosquitto::start();
    let mqtt_url = broker.url_plain();
    let args: Vec<String> = [
        "demo",
        "--speed",
        "1440",
        "--duration",
        "65s",
        // A zone where it is 23:xx now: the replayed 24 hours hold one whole story day.
        "--timezone",
        &zone,
        "--mqtt-url",
        &mqtt_url,
        "--influx-url",
        &influx.url(),
        "--influx-db",
        DB,
        "--store",
        store.to_str().expect("UTF-8 scratch path"),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let started = Instant::now();
    let mut demo = Proc::spawn("demo", &dir, &binary, &args);
    // Waits for the exit (the probe never says ready); a timeout shows in the assert below.
    let _ = demo.try_wait_until("the demo to finish", Duration::from_secs(150), || false);
    let status = demo.exit_status();
    assert!(
        status.is_some_and(|s| s.success()),
        "dustgate demo did not finish cleanly ({status:?})\n{}",
        demo.log_tail(40)
    );
    eprintln!("demo ran for {:?}", started.elapsed());

    // Grafana picks $__interval from the range and the panel width: about 5 minutes for 24 h.
    // Data spanning minutes only (the real-time demo) gets 10 s, so that rates have points.
    let http = http_client();
    let (_, span) = run_query(
        &http,
        &influx,
        "SELECT count(\"readings\") FROM \"gateway\" WHERE time >= now() - 24h GROUP BY time(1h) fill(none)",
    )
    .await
    .expect("span query");
    let hours = span["results"][0]["series"][0]["values"]
        .as_array()
        .map_or(0, Vec::len);
    let (interval, interval_ms) = if hours >= 2 {
        ("5m", 300_000)
    } else {
        ("10s", 10_000)
    };
    eprintln!("data over {hours} hour(s): $__interval = {interval}");

    let mut failures = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for q in &queries {
        let sql = substitute(&q.query, interval, interval_ms);
        let where_ = format!("{} ({}) {} {:?}", q.file, q.uid, q.kind, q.title);
        let unsubstituted = sql.match_indices('$').any(|(i, _)| {
            sql[i + 1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '{')
        });
        if unsubstituted {
            failures.push(format!("{where_}: unsubstituted variable in {sql}"));
            continue;
        }
        *counts.entry(q.kind).or_default() += 1;
        match run_query(&http, &influx, &sql).await {
            Err(e) => failures.push(format!("{where_}: {e}\n    query: {sql}")),
            Ok((0, _)) => failures.push(format!("{where_}: no rows\n    query: {sql}")),
            Ok((n, _)) => eprintln!("ok {n:>5} rows  {where_}"),
        }
    }
    eprintln!(
        "{} queries run ({counts:?}); {} failed",
        queries.len(),
        failures.len(),
    );
    assert!(
        failures.is_empty(),
        "{} dashboard queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The site picker shows names: every dashboard's $site lists the `site` measurement's
    // labels, "name (id)", and its regex gives Grafana the name as the text, the id as the value.
    let (_, labels) = run_query(
        &http,
        &influx,
        "SHOW TAG VALUES FROM \"site\" WITH KEY = \"label\"",
    )
    .await
    .expect("the site labels");
    let labels = labels.to_string();
    assert!(
        labels.contains("演示工地 Demo site (demo-site)"),
        "{labels}"
    );
    for (file, dash) in &dashes {
        let site = variables(dash)
            .iter()
            .find(|v| v["name"] == "site")
            .unwrap_or_else(|| panic!("{file}: no $site"));
        assert_eq!(
            site["query"], "SHOW TAG VALUES FROM \"site\" WITH KEY = \"label\"",
            "{file}"
        );
        assert_eq!(
            site["regex"], r"/^(?<text>.*) \((?<value>[^()]+)\)$/",
            "{file}"
        );
    }
    let (_, names) = run_query(
        &http,
        &influx,
        "SELECT last(\"name\") FROM \"site\" WHERE time >= now() - 24h GROUP BY \"site\"",
    )
    .await
    .expect("the site names");
    assert!(names.to_string().contains("演示工地 Demo site"), "{names}");
}
