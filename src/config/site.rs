//! `[site]`: the site's id, name, time zone, tags, standards and regional background.

use std::time::Duration;

use super::common::{check_tags, positive};
use super::reader::{Cx, Sp, Span, TableReader};

const DEFAULT_TIMEZONE: &str = "Asia/Shanghai";

#[derive(Debug)]
pub struct RawSite {
    pub span: Span,
    pub id: Option<Sp<String>>,
    pub name: Option<Sp<String>>,
    pub permit: Option<Sp<String>>,
    pub timezone: Option<Sp<String>>,
    pub tags: Vec<(Sp<String>, Sp<String>)>,
    pub standards: Option<Sp<Vec<String>>>,
    pub health_interval: Option<Sp<Duration>>,
    pub max_future: Option<Sp<Duration>>,
    /// The device that carries the regional background (`{background}` in packs).
    pub background: Option<Sp<String>>,
}

#[derive(Debug, Clone)]
pub struct Site {
    pub id: String,
    pub name: Option<String>,
    /// The construction permit number (施工许可证号), shown on the gate board and the
    /// dashboards.
    pub permit: Option<String>,
    pub timezone: jiff::tz::TimeZone,
    pub timezone_name: String,
    /// Extra tags on every point.
    pub tags: Vec<(String, String)>,
    pub standards: Vec<String>,
    /// The device carrying the regional background, if any.
    pub background: Option<String>,
    /// How often gateway health points are written and the health line is logged.
    pub health_interval: Duration,
    /// How far ahead of the gateway's clock a reading's timestamp may be (a device's clock
    /// runs a little fast); further ahead it is refused and counted.
    pub max_future: Duration,
}

/// Reads the section's shape (types, unknown keys, required keys).
pub fn read(cx: &mut Cx<'_>, root: &mut TableReader<'_, '_>) -> Option<RawSite> {
    let mut raw = None;
    if let Some(mut t) = root.table(cx, "site") {
        raw = Some(RawSite {
            span: t.span(),
            id: t.req(cx, "id"),
            name: t.opt(cx, "name"),
            permit: t.opt(cx, "permit"),
            timezone: t.opt(cx, "timezone"),
            tags: t.string_map(cx, "tags"),
            standards: t.opt(cx, "standards"),
            health_interval: t.opt(cx, "health_interval"),
            max_future: t.opt(cx, "max_future"),
            background: t.opt(cx, "background"),
        });
        t.finish(cx);
    }
    raw
}

/// Checks `[site]`: it is required, with at least `id`.
pub fn validate(cx: &mut Cx<'_>, raw: Option<RawSite>) -> Option<Site> {
    match raw {
        None => {
            cx.error(
                &(0..0),
                "site",
                "missing [site] section: at least `id` is required",
            );
            None
        }
        Some(s) => {
            let id = s.id.and_then(|id| {
                if id.value.trim().is_empty() || id.value.chars().any(char::is_control) {
                    cx.error(
                        &id.span,
                        "site.id",
                        "site id must be non-empty printable text",
                    );
                    None
                } else {
                    Some(id.value)
                }
            });
            let tz_name = s
                .timezone
                .clone()
                .map_or(DEFAULT_TIMEZONE.to_string(), |t| t.value);
            let timezone = match jiff::tz::TimeZone::get(&tz_name) {
                Ok(tz) => Some(tz),
                Err(_) => {
                    let span = s.timezone.map_or(s.span.clone(), |t| t.span);
                    cx.error(
                        &span,
                        "site.timezone",
                        format!("unknown time zone \"{tz_name}\": use an IANA name such as \"Asia/Shanghai\""),
                    );
                    None
                }
            };
            let tags = check_tags(cx, &s.tags, "site.tags");
            let health_interval = positive(cx, s.health_interval, "site.health_interval")
                .unwrap_or(Duration::from_secs(30));
            let max_future = positive(cx, s.max_future, "site.max_future")
                .unwrap_or(Duration::from_secs(5 * 60));
            match (id, timezone) {
                (Some(id), Some(timezone)) => Some(Site {
                    id,
                    name: s.name.map(|n| n.value),
                    permit: s.permit.map(|p| p.value),
                    timezone,
                    timezone_name: tz_name,
                    tags,
                    standards: s
                        .standards
                        .as_ref()
                        .map(|s| s.value.clone())
                        .unwrap_or_default(),
                    background: s.background.as_ref().map(|b| b.value.clone()),
                    health_interval,
                    max_future,
                }),
                _ => None,
            }
        }
    }
}
