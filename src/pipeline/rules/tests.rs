//! Scripted days through the engine, with rules written as a site would write them.

use super::*;
use crate::config::reader::{Cx, TableReader, parse_document};
use crate::config::rules::{Provenance, read_rule};
use crate::config::source::{Diagnostics, SourceFile};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

/// Parses `[[rule]]` tables as site.toml would.
fn rules(toml: &str) -> Vec<RuleConfig> {
    let file = SourceFile::new("t.toml", None, toml.to_string());
    let mut diags = Diagnostics::default();
    let mut cx = Cx {
        file: &file,
        diags: &mut diags,
    };
    let doc = parse_document(&mut cx, &file.text).expect("toml");
    let mut root = TableReader::root(&doc);
    let prov = Provenance {
        pack: "site".into(),
        standard: Some("TEST".into()),
        source: None,
        mark: None,
    };
    let out: Vec<RuleConfig> = root
        .tables(&mut cx, "rule")
        .into_iter()
        .filter_map(|t| read_rule(&mut cx, t, &prov, Some("regional")))
        .map(|r| r.value)
        .collect();
    root.finish(&mut cx);
    assert!(diags.is_empty(), "{diags}");
    out
}

fn shanghai() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get("Asia/Shanghai").unwrap()
}

/// Milliseconds of a Shanghai local time.
fn at(s: &str) -> i64 {
    let dt: jiff::civil::DateTime = s.parse().unwrap();
    shanghai().to_timestamp(dt).unwrap().as_millisecond()
}

fn feed(
    e: &mut Engine,
    device: &str,
    metric: &str,
    from: i64,
    to: i64,
    step: i64,
    v: impl Fn(i64) -> f64,
) -> Vec<AlertEvent> {
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        e.reading(device, metric, t, v(t), &mut out);
        e.tick(t, &mut out);
        t += step;
    }
    out
}

/// Only the rules' own alerts (not the data-quality ones a scripted day can also raise).
fn judged(ev: Vec<AlertEvent>) -> Vec<AlertEvent> {
    ev.into_iter()
        .filter(|e| matches!(e.kind, AlertKind::Threshold | AlertKind::DailyAllowance))
        .collect()
}

fn states(ev: &[AlertEvent]) -> Vec<(String, AlertState)> {
    ev.iter().map(|e| (e.rule_id.clone(), e.state)).collect()
}

#[test]
fn pm10_mean_with_hold_hysteresis_and_reminders() {
    let r = rules(
        r#"[[rule]]
id = "pm10-15m"
metric = "pm10"
window = "15m"
above = 150
clear = 120
for = "5m"
repeat = "10m"
"#,
    );
    let mut e = Engine::new(r, shanghai());
    e.set_interval("dust-01", 10_000);
    let t0 = at("2026-11-26T09:00:00");
    // 15 min at 100: nothing.
    let ev = feed(&mut e, "dust-01", "pm10", t0, t0 + 15 * MIN, 10_000, |_| {
        100.0
    });
    assert!(ev.is_empty(), "{ev:?}");
    // Then 300: the 15-min mean passes 150 with the 23rd reading of 300 (3 min 40 s in:
    // (23·300 + 67·100)/90 = 151.1), and must hold 5 more minutes.
    let t1 = t0 + 15 * MIN;
    let ev = feed(&mut e, "dust-01", "pm10", t1, t1 + 30 * MIN, 10_000, |_| {
        300.0
    });
    assert_eq!(states(&ev)[0], ("pm10-15m".into(), AlertState::Open));
    let open = &ev[0];
    assert_eq!(open.since_ms, t1 + 3 * MIN + 40_000);
    assert_eq!(open.at_ms, t1 + 8 * MIN + 40_000);
    assert!(open.value > 150.0 && open.threshold == 150.0);
    // Reminders every 10 minutes while open.
    let reminders = ev
        .iter()
        .filter(|e| e.state == AlertState::Reminder)
        .count();
    assert_eq!(reminders, 2, "at +18:40 and +28:40: {:?}", states(&ev));
    assert!(ev.iter().all(|x| x.alert_id == open.alert_id));
    // Back to 130: the mean falls under 150 but not to 120 — still open (hysteresis).
    let t2 = t1 + 30 * MIN;
    let ev = feed(&mut e, "dust-01", "pm10", t2, t2 + 30 * MIN, 10_000, |_| {
        130.0
    });
    assert!(
        ev.iter().all(|x| x.state == AlertState::Reminder),
        "{:?}",
        states(&ev)
    );
    // To 100: the mean reaches 120, the alert closes once.
    let t3 = t2 + 30 * MIN;
    let ev = feed(&mut e, "dust-01", "pm10", t3, t3 + 30 * MIN, 10_000, |_| {
        100.0
    });
    let closed: Vec<_> = ev
        .iter()
        .filter(|x| x.state == AlertState::Closed)
        .collect();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].alert_id, open.alert_id);
    assert!(e.open_alerts().is_empty());
}

#[test]
fn a_window_with_too_few_readings_does_not_judge() {
    let r = rules("[[rule]]\nid = \"r\"\nmetric = \"pm10\"\nwindow = \"10m\"\nabove = 50\n");
    let mut e = Engine::new(r, shanghai());
    e.set_interval("d", 10_000);
    let t0 = at("2026-11-26T09:00:00");
    // One reading a minute where six are expected: 17 % coverage, never judged.
    let ev = judged(feed(&mut e, "d", "pm10", t0, t0 + 2 * HOUR, MIN, |_| 500.0));
    assert!(ev.is_empty(), "{ev:?}");
    // Every 10 s: judged once 75 % of the window is there (7.5 min).
    let t1 = t0 + 2 * HOUR;
    let ev = judged(feed(&mut e, "d", "pm10", t1, t1 + 15 * MIN, 10_000, |t| {
        500.0 + (t % 7) as f64
    }));
    assert_eq!(ev.len(), 1);
    assert!(
        ev[0].at_ms - t1 >= 6 * MIN && ev[0].at_ms - t1 <= 8 * MIN,
        "{}",
        ev[0].at_ms - t1
    );
}

#[test]
fn gb12523_night_leq_and_lmax_follow_the_clock() {
    let r = rules(
        r#"[[rule]]
id = "night-leq"
metric = "noise"
window = "20m"
above = 55
when = "22:00-06:00"

[[rule]]
id = "night-lmax"
metric = "noise"
above = 70
when = "22:00-06:00"
"#,
    );
    let mut e = Engine::new(r, shanghai());
    e.set_interval("n", 60_000);
    // 21:00 to 07:00 at 58 dB with one 72 dB peak at 21:30 (day) and one at 23:30 (night).
    let t0 = at("2026-11-26T21:00:00");
    let peaks = [at("2026-11-26T21:30:00"), at("2026-11-26T23:30:00")];
    let ev = feed(&mut e, "n", "noise", t0, t0 + 10 * HOUR, MIN, |t| {
        if peaks.contains(&t) { 72.0 } else { 58.0 }
    });
    let s = states(&ev);
    // Day: nothing. 22:00: the night Leq is judged once 75 % of 20 min is in (the window took
    // every reading, so at 22:00 it is already full): opens at 22:00.
    assert_eq!(s[0], ("night-leq".into(), AlertState::Open));
    assert_eq!(ev[0].at_ms, at("2026-11-26T22:00:00"));
    // 23:30: Lmax over 55 + 15.
    let lmax: Vec<_> = ev.iter().filter(|e| e.rule_id == "night-lmax").collect();
    assert_eq!(lmax[0].state, AlertState::Open);
    assert_eq!(lmax[0].at_ms, peaks[1]);
    assert_eq!(lmax[0].value, 72.0);
    // 06:00: night is over, the Leq alert closes.
    let closed = ev
        .iter()
        .find(|e| e.rule_id == "night-leq" && e.state == AlertState::Closed)
        .unwrap();
    assert_eq!(closed.at_ms, at("2026-11-27T06:00:00"));
}

#[test]
fn hebei_background_is_subtracted_up_to_its_cap_and_days_are_counted() {
    let r = rules(
        r#"[[rule]]
id = "db13"
metric = "pm10"
window = "1h"
above = 80
background = { device = "{background}", metric = "pm10", cap = 150 }
max_per_day = 2
"#,
    );
    let mut e = Engine::new(r, shanghai());
    e.set_interval("site", 60_000);
    let t0 = at("2026-11-26T08:00:00");
    let mut out = Vec::new();
    let mut t = t0;
    // Hour 1: site 250, county 200 → 250 − min(200, 150) = 100 > 80: open.
    // Without the cap it would be 50 and no alert.
    while t < t0 + HOUR {
        e.reading("regional", "pm10", t, 200.0, &mut out);
        e.reading("site", "pm10", t, 250.0, &mut out);
        t += MIN;
    }
    assert_eq!(states(&out), vec![("db13".to_string(), AlertState::Open)]);
    assert!((out[0].value - 100.0).abs() < 1e-9);
    // Three more episodes the same day (open/close cycles): the third opening passes the
    // allowance of 2 and raises the daily non-compliance alert, once.
    // Each episode: an hour at 100 (net −50: closes), an hour at 260 (net 110: opens).
    for _episode in 0..3 {
        for v in [100.0, 260.0] {
            let end = t + HOUR;
            while t < end {
                e.reading("regional", "pm10", t, 150.0, &mut out);
                e.reading("site", "pm10", t, v, &mut out);
                t += MIN;
            }
        }
    }
    let daily: Vec<_> = out.iter().filter(|x| x.rule_id == "db13:daily").collect();
    assert_eq!(daily.len(), 1, "{:?}", states(&out));
    assert_eq!(daily[0].state, AlertState::Open);
    assert_eq!(daily[0].value, 3.0);
    assert_eq!(daily[0].threshold, 2.0);
    // At local midnight the day's alert closes.
    let mut out = Vec::new();
    e.tick(at("2026-11-27T00:00:30"), &mut out);
    assert!(
        out.iter()
            .any(|x| x.rule_id == "db13:daily" && x.state == AlertState::Closed)
    );
}

#[test]
fn effective_dates_and_redeliveries() {
    let r = rules(
        "[[rule]]\nid = \"old\"\nmetric = \"pm25\"\nabove = 75\neffective_until = \"2026-02-28\"\n",
    );
    let mut e = Engine::new(r, shanghai());
    let mut out = Vec::new();
    e.reading("d", "pm25", at("2026-02-28T12:00:00"), 80.0, &mut out);
    assert_eq!(out.len(), 1);
    e.reading("d", "pm25", at("2026-03-01T12:00:00"), 81.0, &mut out);
    assert_eq!(
        out.last().map(|x| x.state),
        Some(AlertState::Closed),
        "out of force: closed"
    );
    e.reading("d", "pm25", at("2026-03-02T12:00:00"), 500.0, &mut out);
    assert_eq!(out.len(), 2);

    let r = rules(
        "[[rule]]\nid = \"m\"\nmetric = \"pm10\"\nwindow = \"10m\"\nabove = 100\nmin_coverage = 0\n",
    );
    let mut e = Engine::new(r, shanghai());
    let mut out = Vec::new();
    let t = at("2026-11-26T10:00:00");
    e.reading("d", "pm10", t, 90.0, &mut out);
    e.reading("d", "pm10", t + 1000, 110.0, &mut out);
    assert_eq!(out.len(), 0, "mean 100 is not above 100");
    // The same 110 again (an MQTT redelivery) must not tip the mean.
    e.reading("d", "pm10", t + 1000, 110.0, &mut out);
    assert_eq!(out.len(), 0);
}

#[test]
fn devices_are_matched_by_glob_and_outside_ranges_work() {
    let r =
        rules("[[rule]]\nid = \"ph\"\nmetric = \"ph\"\ndevices = [\"tank-*\"]\noutside = [6, 9]\n");
    let mut e = Engine::new(r, shanghai());
    let mut out = Vec::new();
    let t = at("2026-11-26T10:00:00");
    e.reading("river-01", "ph", t, 4.0, &mut out);
    assert!(out.is_empty());
    e.reading("tank-01", "ph", t, 9.5, &mut out);
    assert_eq!((out[0].state, out[0].threshold), (AlertState::Open, 9.0));
    e.reading("tank-01", "ph", t + 1000, 7.0, &mut out);
    assert_eq!(out[1].state, AlertState::Closed);
    e.reading("tank-01", "ph", t + 2000, 5.0, &mut out);
    assert_eq!((out[2].state, out[2].threshold), (AlertState::Open, 6.0));
}

#[test]
fn data_quality_out_of_range_stuck_and_offline() {
    let r = rules("[[rule]]\nid = \"pm10\"\nmetric = \"pm10\"\nabove = 150\n");
    let mut e = Engine::new(r, shanghai());
    let t0 = at("2026-11-26T09:00:00");
    e.register_device("dust-01", Some(10_000), t0);
    let mut out = Vec::new();
    // -5 µg/m³ is below a laser sensor's range: impossible, flagged, not judged.
    e.reading("dust-01", "pm10", t0, -5.0, &mut out);
    assert_eq!(
        states(&out),
        vec![("out-of-range".into(), AlertState::Open)]
    );
    e.reading("dust-01", "pm10", t0 + 5_000, 60.0, &mut out);
    assert_eq!(out[1].state, AlertState::Closed);
    assert_eq!(out[1].alert_id, out[0].alert_id);
    // 5000 µg/m³ is above its range (1,000): flagged, and still over the limit of 150 (a sand
    // episode is not hidden by the sensor's ceiling).
    let mut out = Vec::new();
    e.reading("dust-01", "pm10", t0 + 6_000, 5000.0, &mut out);
    assert_eq!(
        states(&out),
        vec![
            ("out-of-range".into(), AlertState::Open),
            ("pm10".into(), AlertState::Open)
        ]
    );
    e.reading("dust-01", "pm10", t0 + 10_000, 60.0, &mut out);
    assert_eq!(out[2].state, AlertState::Closed);
    assert_eq!(out[2].alert_id, out[0].alert_id);
    assert_eq!(
        (out[3].rule_id.as_str(), out[3].state),
        ("pm10", AlertState::Closed)
    );
    // The same 60 for two hours: stuck.
    let mut out = feed(
        &mut e,
        "dust-01",
        "pm10",
        t0 + 20_000,
        t0 + 2 * HOUR + 30_000,
        10_000,
        |_| 60.0,
    );
    assert_eq!(states(&out), vec![("stuck".into(), AlertState::Open)]);
    e.reading("dust-01", "pm10", t0 + 2 * HOUR + 40_000, 61.0, &mut out);
    assert_eq!(
        out.last().map(|x| (x.rule_id.as_str(), x.state)),
        Some(("stuck", AlertState::Closed))
    );
    // Then silence: offline after 10 minutes (at least 3 intervals), back with the next reading.
    let last = t0 + 2 * HOUR + 40_000;
    let mut out = Vec::new();
    e.tick(last + 9 * MIN, &mut out);
    assert!(out.is_empty());
    e.tick(last + 10 * MIN + 1000, &mut out);
    assert_eq!(states(&out), vec![("offline".into(), AlertState::Open)]);
    assert_eq!(out[0].since_ms, last);
    e.reading("dust-01", "pm10", last + 20 * MIN, 62.0, &mut out);
    assert_eq!(
        out.last().map(|x| (x.rule_id.as_str(), x.state)),
        Some(("offline", AlertState::Closed))
    );
    // A configured device that never reports goes offline too.
    let mut out = Vec::new();
    e.register_device("ghost", Some(60_000), last);
    e.tick(last + 11 * MIN, &mut out);
    assert!(
        out.iter()
            .any(|x| x.rule_id == "offline" && x.device == "ghost")
    );
}

#[test]
fn a_restart_neither_forgets_an_open_alert_nor_announces_it_again() {
    let toml = "[[rule]]\nid = \"pm10-15m\"\nmetric = \"pm10\"\nwindow = \"15m\"\nabove = 150\nclear = 120\n";
    let mut e = Engine::new(rules(toml), shanghai());
    e.set_interval("d", 10_000);
    let t0 = at("2026-11-26T09:00:00");
    let ev = feed(&mut e, "d", "pm10", t0, t0 + 20 * MIN, 10_000, |_| 300.0);
    assert_eq!(states(&ev), vec![("pm10-15m".into(), AlertState::Open)]);
    let id = ev[0].alert_id.clone();
    // Saved, through JSON, into a new engine.
    let windows = serde_json::to_string(&e.windows_snapshot(t0 + 20 * MIN)).unwrap();
    let open = serde_json::to_string(&e.open_snapshot()).unwrap();
    let mut e2 = Engine::new(rules(toml), shanghai());
    e2.set_interval("d", 10_000);
    let mut out = Vec::new();
    e2.restore(
        serde_json::from_str(&windows).unwrap(),
        serde_json::from_str(&open).unwrap(),
        t0 + 21 * MIN,
        &mut out,
    );
    assert!(out.is_empty(), "nothing announced on restore: {out:?}");
    assert_eq!(e2.open_alerts()[0].alert_id, id);
    // Still high: no second "open". Then low: closed, with the same id, as soon as the restored
    // window's mean reaches 120.
    let ev = feed(
        &mut e2,
        "d",
        "pm10",
        t0 + 21 * MIN,
        t0 + 30 * MIN,
        10_000,
        |_| 300.0,
    );
    assert!(ev.is_empty(), "{ev:?}");
    let ev = feed(
        &mut e2,
        "d",
        "pm10",
        t0 + 30 * MIN,
        t0 + 50 * MIN,
        10_000,
        |_| 50.0,
    );
    assert_eq!(states(&ev), vec![("pm10-15m".into(), AlertState::Closed)]);
    assert_eq!(ev[0].alert_id, id);
    // An alert of a rule that is gone is closed on restore.
    let mut e3 = Engine::new(
        rules("[[rule]]\nid = \"other\"\nmetric = \"pm10\"\nabove = 1\n"),
        shanghai(),
    );
    let mut out = Vec::new();
    e3.restore(None, serde_json::from_str(&open).unwrap(), t0, &mut out);
    assert_eq!(states(&out), vec![("pm10-15m".into(), AlertState::Closed)]);
}

/// The packs as shipped, judged as their standards say.
#[test]
fn the_shipped_packs_judge_as_the_standards_say() {
    use crate::config::rules::PackLoader;
    let mut loader = PackLoader::for_config(std::path::Path::new("/nonexistent/site.toml"));
    let mut diags = Diagnostics::default();
    let mut pack = |id: &str| {
        loader
            .load(id, Some("county"), &mut diags)
            .unwrap()
            .unwrap()
            .rules
            .clone()
    };

    // GB 12523-2011: night Lmax over 55 + 15 opens; the same peak by day does not.
    let mut e = Engine::new(pack("gb12523-2011"), shanghai());
    let mut out = Vec::new();
    e.reading("n", "noise", at("2026-11-26T14:00:00"), 71.0, &mut out);
    assert!(
        judged(out.clone())
            .iter()
            .all(|x| x.rule_id != "gb12523-night-lmax")
    );
    e.reading("n", "noise", at("2026-11-26T23:00:00"), 71.0, &mut out);
    let lmax: Vec<_> = judged(out)
        .into_iter()
        .filter(|x| x.rule_id == "gb12523-night-lmax")
        .collect();
    assert_eq!((lmax.len(), lmax[0].threshold), (1, 70.0));

    // Hebei DB13/2934-2019: hourly PM10 minus the county's, the county's capped at 150, over 80.
    let mut e = Engine::new(pack("db13-2934-2019"), shanghai());
    e.set_background_device(Some("county".into()));
    e.set_interval("site", 60_000);
    let t0 = at("2026-11-26T08:00:00");
    let mut out = Vec::new();
    for i in 0..60 {
        let t = t0 + i * MIN;
        e.reading("county", "pm10", t, 220.0, &mut out);
        e.reading("site", "pm10", t, 235.0, &mut out);
    }
    let ev = judged(out);
    assert_eq!(
        ev.len(),
        1,
        "235 − min(220, 150) = 85 > 80: {:?}",
        states(&ev)
    );
    assert!((ev[0].value - 85.0).abs() < 1e-9);
    assert_eq!(
        ev[0].device, "site",
        "the county feed is a background, not a site monitor"
    );

    // GB 3095-2012 is no longer in force after 2026-02-28; GB 3095-2026's transitional PM2.5
    // limit of 60 is.
    let old = pack("gb3095-2012");
    let new = pack("gb3095-2026");
    let day = jiff::civil::date(2026, 11, 26);
    assert!(old.iter().all(|r| !r.in_force(day)));
    let pm25: Vec<_> = new
        .iter()
        .filter(|r| r.metric == "pm25" && r.in_force(day))
        .collect();
    assert_eq!(pm25.len(), 1);
    assert_eq!(
        pm25[0].condition,
        crate::config::rules::Condition::Above(60.0)
    );
}

#[test]
fn limit_in_force_for_the_status_page() {
    let r = rules(
        r#"
[[rule]]
id = "pm10-24h"
metric = "pm10"
window = "24h"
above = 150

[[rule]]
id = "pm10-site"
metric = "pm10"
above = 120
devices = ["dust-*"]

[[rule]]
id = "noise-night"
metric = "noise"
above = 55
when = "22:00-06:00"

[[rule]]
id = "pm25-old"
metric = "pm25"
above = 75
effective_until = "2026-02-28"
"#,
    );
    let mut e = Engine::new(r, shanghai());
    let day = at("2026-11-26T14:00:00");
    // The strictest of the two in force; a device the stricter rule does not name gets the other.
    let l = e.limit_in_force("dust-01", "pm10", day).unwrap();
    assert_eq!((l.rule.as_str(), l.alert_open), ("pm10-site", false));
    assert!(l.breached_by(121.0) && !l.breached_by(120.0));
    let l = e.limit_in_force("tower-01", "pm10", day).unwrap();
    assert_eq!(l.rule, "pm10-24h");
    assert_eq!(l.window, Some(std::time::Duration::from_secs(86_400)));
    // Outside its schedule or its dates, a rule sets no limit.
    assert!(e.limit_in_force("dust-01", "noise", day).is_none());
    let night = at("2026-11-26T23:00:00");
    assert_eq!(
        e.limit_in_force("dust-01", "noise", night).unwrap().rule,
        "noise-night"
    );
    assert!(e.limit_in_force("dust-01", "pm25", day).is_none());
    assert!(e.limit_in_force("dust-01", "wind_speed", day).is_none());
    // A rule with an open alert on the device is the one shown.
    let mut out = Vec::new();
    e.reading("dust-01", "pm10", day, 130.0, &mut out);
    let l = e.limit_in_force("dust-01", "pm10", day).unwrap();
    assert_eq!((l.rule.as_str(), l.alert_open), ("pm10-site", true));
}
