//! The log: one line per event on stderr, stamped in the site's zone with its offset (the
//! messages already speak site time: "alert opened at 14:05" and a stamp in UTC would disagree),
//! as text or as JSON lines (`--log-format json`, for journald and log shippers). Warnings and
//! errors that repeat are throttled: at most [`BURST`] a minute from one place in the code,
//! then the count of those held back rides on the next one let through.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-12-02T09:47:40.123+08:00  WARN message key=value`
    #[default]
    Text,
    /// One JSON object a line: time, level, message and the event's fields.
    Json,
}

/// `--log-format`, set once by `main` before any command starts logging.
pub static FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Events of one call site a window lets through before holding the rest back.
const BURST: u32 = 5;
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Window {
    started: Option<Instant>,
    passed: u32,
    held: u64,
}

/// Per call site: how many of its warnings and errors the current window let through and held.
struct Throttle<K>(Mutex<HashMap<K, Window>>);

impl<K> Default for Throttle<K> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: std::hash::Hash + Eq> Throttle<K> {
    /// `None`: hold this one back. `Some(n)`: write it, `n` were held back before it.
    fn admit(&self, site: K, level: Level, now: Instant) -> Option<u64> {
        if level > Level::WARN {
            return Some(0);
        }
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let w = map.entry(site).or_default();
        if w.started.is_none_or(|s| now.duration_since(s) >= WINDOW) {
            w.started = Some(now);
            w.passed = 0;
        }
        if w.passed >= BURST {
            w.held += 1;
            return None;
        }
        w.passed += 1;
        Some(std::mem::take(&mut w.held))
    }
}

pub struct SiteFormat {
    tz: jiff::tz::TimeZone,
    format: LogFormat,
    throttle: Throttle<(tracing::callsite::Identifier, String)>,
}

impl SiteFormat {
    pub fn new(tz: jiff::tz::TimeZone, format: LogFormat) -> Self {
        Self {
            tz,
            format,
            throttle: Throttle::default(),
        }
    }

    fn now(&self) -> String {
        jiff::Timestamp::now()
            .to_zoned_datetime(self.tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%.3f%:z")
            .to_string()
    }
}

/// What makes two warnings "the same": their text fields (message, device, bus, error), not
/// their numbers (counts, sequence numbers, durations), so "device down" of two devices are
/// two messages and a failing write retried with a growing attempt count is one.
#[derive(Default)]
struct RepeatKey(String);

impl Visit for RepeatKey {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = fmt::Write::write_fmt(&mut self.0, format_args!("{}={value:?};", field.name()));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = fmt::Write::write_fmt(&mut self.0, format_args!("{}={value};", field.name()));
    }
    fn record_i64(&mut self, _: &Field, _: i64) {}
    fn record_u64(&mut self, _: &Field, _: u64) {}
    fn record_f64(&mut self, _: &Field, _: f64) {}
    fn record_bool(&mut self, _: &Field, _: bool) {}
}

/// The event's fields as JSON values (`message` among them).
#[derive(Default)]
struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), value.into());
    }
}

impl<S, N> FormatEvent<S, N> for SiteFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut key = RepeatKey::default();
        if *meta.level() <= Level::WARN {
            event.record(&mut key);
        }
        let Some(held) =
            self.throttle
                .admit((meta.callsite(), key.0), *meta.level(), Instant::now())
        else {
            return Ok(());
        };
        let level = *event.metadata().level();
        match self.format {
            LogFormat::Json => {
                let mut fields = JsonFields::default();
                event.record(&mut fields);
                let mut line = serde_json::Map::new();
                line.insert("time".into(), self.now().into());
                line.insert("level".into(), level.as_str().into());
                if held > 0 {
                    line.insert("held_back".into(), held.into());
                }
                line.extend(fields.0);
                let text = serde_json::Value::Object(line).to_string();
                writeln!(w, "{text}")
            }
            LogFormat::Text => {
                write!(w, "{} {:>5} ", self.now(), level.as_str())?;
                ctx.format_fields(w.by_ref(), event)?;
                if held > 0 {
                    write!(
                        w,
                        " ({held} more like this held back in the last {} s)",
                        WINDOW.as_secs()
                    )?;
                }
                writeln!(w)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(format: LogFormat, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(SiteFormat::new(
                jiff::tz::TimeZone::fixed(jiff::tz::offset(8)),
                format,
            ))
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes).to_string()
    }

    #[test]
    fn a_line_is_stamped_in_the_site_zone_with_its_offset() {
        let text = logged(LogFormat::Text, || {
            tracing::info!(device = "dust-01", "device up")
        });
        assert!(
            text.contains("+08:00  INFO device up device=\"dust-01\""),
            "{text}"
        );
    }

    #[test]
    fn json_lines_carry_time_level_message_and_fields() {
        let text = logged(LogFormat::Json, || {
            tracing::warn!(polls = 3u64, bus = "rs485", "device down")
        });
        let v: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "device down");
        assert_eq!(v["polls"], 3);
        assert_eq!(v["bus"], "rs485");
        assert!(
            v["time"].as_str().is_some_and(|t| t.ends_with("+08:00")),
            "{v}"
        );
    }

    #[test]
    fn a_repeated_error_is_held_back_after_the_burst_and_info_never_is() {
        let text = logged(LogFormat::Text, || {
            for i in 0..20 {
                tracing::error!(i, "write failed");
                tracing::info!(i, "health");
            }
        });
        assert_eq!(
            text.matches("write failed").count(),
            BURST as usize,
            "{text}"
        );
        assert_eq!(text.matches("health").count(), 20);
    }

    #[test]
    fn the_same_warning_of_different_devices_is_not_a_repeat() {
        let text = logged(LogFormat::Text, || {
            for d in 0..8 {
                tracing::warn!(device = format!("dust-{d:02}").as_str(), "device down");
            }
        });
        assert_eq!(text.matches("device down").count(), 8, "{text}");
    }

    #[test]
    fn the_held_back_count_rides_on_the_next_window_s_first_line() {
        let t = Throttle::default();
        let now = Instant::now();
        let got: Vec<Option<u64>> = (0..12)
            .map(|k| {
                let at = if k < 8 { now } else { now + WINDOW };
                t.admit("one call site", Level::ERROR, at)
            })
            .collect();
        let mut want = vec![Some(0); 5];
        want.extend([None, None, None, Some(3), Some(0), Some(0), Some(0)]);
        assert_eq!(got, want);
        // Another call site has its own window.
        assert_eq!(t.admit("another", Level::WARN, now), Some(0));
    }
}
