//! `[influx]`: where series go (InfluxDB v1 or v2 API), batching, retries.

use std::path::Path;
use std::time::Duration;

use super::common::{Secret, in_range, positive, secret};
use super::reader::{Cx, Sp, Span, TableReader};

#[derive(Debug)]
pub struct RawInflux {
    pub span: Span,
    pub url: Option<Sp<String>>,
    pub api: Option<Sp<String>>,
    pub org: Option<Sp<String>>,
    pub bucket: Option<Sp<String>>,
    pub token_env: Option<Sp<String>>,
    pub token_file: Option<Sp<String>>,
    pub database: Option<Sp<String>>,
    pub retention_policy: Option<Sp<String>>,
    pub username: Option<Sp<String>>,
    pub password_env: Option<Sp<String>>,
    pub password_file: Option<Sp<String>>,
    pub batch_size: Option<Sp<i64>>,
    pub flush_interval: Option<Sp<Duration>>,
    pub timeout: Option<Sp<Duration>>,
    pub gzip: Option<Sp<bool>>,
    pub retry_max: Option<Sp<Duration>>,
    pub retry_jitter: Option<Sp<f64>>,
    pub create_database: Option<Sp<bool>>,
}

#[derive(Debug, Clone)]
pub enum InfluxApi {
    /// `/write?db=..&rp=..` (InfluxDB 1.x, and 2.x/3.x compatibility endpoints).
    V1 {
        database: String,
        retention_policy: Option<String>,
        username: Option<String>,
        password: Option<Secret>,
    },
    /// `/api/v2/write?org=..&bucket=..` with `Authorization: Token` (2.x, 3.x, Cloud).
    V2 {
        org: String,
        bucket: String,
        token: Secret,
    },
}

#[derive(Debug, Clone)]
pub struct InfluxConfig {
    pub url: String,
    pub api: InfluxApi,
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// Per HTTP request.
    pub timeout: Duration,
    pub gzip: bool,
    /// Ceiling of the retry backoff.
    pub retry_max: Duration,
    /// Each retry's wait is drawn from its upper `retry_jitter` share (0: none), so gateways
    /// that lost the database together do not come back together.
    pub retry_jitter: f64,
    /// v1: `CREATE DATABASE` at start when the database is missing (as Telegraf does).
    pub create_database: bool,
}

/// Reads the section's shape (types, unknown keys, required keys).
pub fn read(cx: &mut Cx<'_>, root: &mut TableReader<'_, '_>) -> Option<RawInflux> {
    let mut raw = None;
    if let Some(mut t) = root.table(cx, "influx") {
        for (key, instead) in [
            ("token", "token_env or token_file"),
            ("password", "password_env or password_file"),
        ] {
            if t.has(key) {
                let _ = t.opt::<String>(cx, key).map(|v| {
                    cx.error(
                        &v.span,
                        &t.key_path(key),
                        format!("secrets never go in the config file: name them with {instead}"),
                    )
                });
            }
        }
        raw = Some(RawInflux {
            span: t.span(),
            url: t.req(cx, "url"),
            api: t.opt(cx, "api"),
            org: t.opt(cx, "org"),
            bucket: t.opt(cx, "bucket"),
            token_env: t.opt(cx, "token_env"),
            token_file: t.opt(cx, "token_file"),
            database: t.opt(cx, "database"),
            retention_policy: t.opt(cx, "retention_policy"),
            username: t.opt(cx, "username"),
            password_env: t.opt(cx, "password_env"),
            password_file: t.opt(cx, "password_file"),
            batch_size: t.opt(cx, "batch_size"),
            flush_interval: t.opt(cx, "flush_interval"),
            timeout: t.opt(cx, "timeout"),
            gzip: t.opt(cx, "gzip"),
            retry_max: t.opt(cx, "retry_max"),
            retry_jitter: t.opt(cx, "retry_jitter"),
            create_database: t.opt(cx, "create_database"),
        });
        t.finish(cx);
    }
    raw
}

pub fn validate(cx: &mut Cx<'_>, i: RawInflux, base: &Path) -> Option<InfluxConfig> {
    let url = i.url.and_then(|u| {
        let ok = (u.value.starts_with("http://") || u.value.starts_with("https://"))
            && reqwest::Url::parse(&u.value).is_ok();
        if ok && crate::redact::has_userinfo(&u.value) {
            cx.error(
                &u.span,
                "influx.url",
                format!(
                    "\"{}\" carries credentials (user:password@): they never go in the config file; use username + password_env/password_file (v1) or token_env/token_file (v2)",
                    crate::redact::url(&u.value)
                ),
            );
            None
        } else if ok {
            Some(u.value.trim_end_matches('/').to_string())
        } else {
            cx.error(
                &u.span,
                "influx.url",
                format!(
                    "\"{}\" is not an http:// or https:// URL",
                    crate::redact::url(&u.value)
                ),
            );
            None
        }
    });
    let api_name = i.api.clone().map_or("v2".to_string(), |a| a.value);
    let api = match api_name.as_str() {
        "v2" => {
            for (k, v) in [
                ("database", &i.database),
                ("retention_policy", &i.retention_policy),
                ("username", &i.username),
            ] {
                if let Some(v) = v {
                    cx.error(
                        &v.span,
                        &format!("influx.{k}"),
                        format!("`{k}` is for api = \"v1\"; v2 uses org and bucket"),
                    );
                }
            }
            let token = secret(cx, i.token_env, i.token_file, base, "influx.token");
            if token.is_none() {
                cx.error(&i.span, "influx.token_env", "api = \"v2\" needs a token: set token_env (an environment variable) or token_file");
            }
            let org = i.org.map(|o| o.value);
            let bucket = i.bucket.map(|b| b.value);
            if org.is_none() {
                cx.error(&i.span, "influx.org", "api = \"v2\" needs `org`");
            }
            if bucket.is_none() {
                cx.error(&i.span, "influx.bucket", "api = \"v2\" needs `bucket`");
            }
            match (org, bucket, token) {
                (Some(org), Some(bucket), Some(token)) => {
                    Some(InfluxApi::V2 { org, bucket, token })
                }
                _ => None,
            }
        }
        "v1" => {
            for (k, v) in [
                ("org", &i.org),
                ("bucket", &i.bucket),
                ("token_env", &i.token_env),
                ("token_file", &i.token_file),
            ] {
                if let Some(v) = v {
                    cx.error(
                        &v.span,
                        &format!("influx.{k}"),
                        format!("`{k}` is for api = \"v2\"; v1 uses database"),
                    );
                }
            }
            let password = secret(cx, i.password_env, i.password_file, base, "influx.password");
            match i.database {
                None => {
                    cx.error(&i.span, "influx.database", "api = \"v1\" needs `database`");
                    None
                }
                Some(db) => Some(InfluxApi::V1 {
                    database: db.value,
                    retention_policy: i.retention_policy.map(|r| r.value),
                    username: i.username.map(|u| u.value),
                    password,
                }),
            }
        }
        other => {
            let span = i.api.map_or(i.span.clone(), |a| a.span);
            cx.error(
                &span,
                "influx.api",
                format!("unknown api \"{other}\": expected \"v1\" or \"v2\""),
            );
            None
        }
    };
    let batch_size = i
        .batch_size
        .and_then(|b| in_range::<usize>(cx, &b, "influx.batch_size", 1, 1_000_000))
        .map_or(5000, |b| b.value);
    // A remote database is reached over the site's uplink, often 4G: a request a second with a
    // point or two costs ~800 bytes each (BENCHMARKS.md, "Bytes over the 4G link": 43 MB a
    // site-day), ten seconds' batches a quarter of that. Telegraf's default is 10 s too.
    let flush_interval = positive(cx, i.flush_interval, "influx.flush_interval").unwrap_or(
        if url_is_loopback(url.as_deref()) {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        },
    );
    let timeout = positive(cx, i.timeout, "influx.timeout").unwrap_or(Duration::from_secs(10));
    let retry_max =
        positive(cx, i.retry_max, "influx.retry_max").unwrap_or(Duration::from_secs(60));
    let retry_jitter = match &i.retry_jitter {
        None => DEFAULT_RETRY_JITTER,
        Some(j) if (0.0..=1.0).contains(&j.value) => j.value,
        Some(j) => {
            cx.error(
                &j.span,
                "influx.retry_jitter",
                format!(
                    "{} is not a share: from 0 (no jitter) to 1 (each wait anywhere up to its full length)",
                    j.value
                ),
            );
            DEFAULT_RETRY_JITTER
        }
    };
    let gzip = i
        .gzip
        .map_or_else(|| !url_is_loopback(url.as_deref()), |g| g.value);
    // Creating a database is a v1 operation (`CREATE DATABASE`); a v2 bucket is the
    // platform's to create, with its retention and its token's rights.
    if let (Some(c), Some("v2")) = (&i.create_database, Some(api_name.as_str())) {
        cx.error(
            &c.span,
            "influx.create_database",
            "`create_database` is for api = \"v1\"; a v2 bucket is created on the server",
        );
    }
    let create_database = i.create_database.is_some_and(|c| c.value);
    Some(InfluxConfig {
        url: url?,
        api: api?,
        create_database,
        batch_size,
        flush_interval,
        timeout,
        gzip,
        retry_max,
        retry_jitter,
    })
}

/// `retry_jitter` when not set: each wait in the upper half of its length.
pub const DEFAULT_RETRY_JITTER: f64 = 0.5;

/// Whether a URL points at this machine: gzip saves no uplink there and costs CPU on both sides.
fn url_is_loopback(url: Option<&str>) -> bool {
    let Some(host) = url
        .and_then(|u| reqwest::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_string))
    else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
