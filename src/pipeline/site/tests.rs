//! A site day in memory: readings, events and time in, exact effects out. No sockets, no
//! files, no clock.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::linkage::ActuatorConfig;
use crate::config::rules::{Aggregate, Condition, Provenance, RuleConfig, Severity};
use crate::model::{DeviceMeta, FieldValue};
use crate::pipeline::actuate::Cause;
use crate::pipeline::compliance::ComplianceParams;

const MIN: i64 = 60_000;

/// 2026-11-26 08:00 in Chengdu.
fn t0() -> i64 {
    "2026-11-26T00:00:00Z"
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond()
}

fn tz() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get("Asia/Shanghai").unwrap()
}

fn pm10_rule() -> RuleConfig {
    RuleConfig {
        id: "pm10-high".into(),
        metric: "pm10".into(),
        devices: vec![],
        window: None,
        aggregate: Aggregate::Each,
        condition: Condition::Above(150.0),
        clear: Some(120.0),
        hold: Duration::ZERO,
        when: None,
        min_coverage: 0.75,
        background: None,
        max_per_day: None,
        severity: Severity::Warning,
        repeat: None,
        effective_from: None,
        effective_until: None,
        title_zh: None,
        title_en: None,
        provenance: Provenance {
            pack: "site".into(),
            standard: None,
            source: None,
            mark: None,
        },
        enabled: true,
        actuate: Some("mist".into()),
        patch: false,
    }
}

fn mist() -> ActuatorConfig {
    ActuatorConfig {
        id: "mist".into(),
        device: "relay-01".into(),
        coils: vec![("fog_cannon_on".into(), 0)],
        min_on: Duration::from_secs(120),
        min_off: Duration::from_secs(60),
        max_on: None,
        daily_budget: None,
        safe_on: false,
    }
}

/// The site: a dust monitor judged by one PM10 rule that switches the mist cannons, a wind
/// sensor polled every 10 s, the six 100%, AQI.
fn site() -> SiteCore {
    let mut engine = Engine::new(vec![pm10_rule()], tz());
    engine.set_offline_after(2 * MIN);
    engine.register_device("dust-01", Some(10_000), t0());
    engine.register_device("wind-01", Some(10_000), t0());
    let ctx = AlertContext {
        site_id: "cd-jj-0017".into(),
        site_name: "锦江区 B 地块".into(),
        site_tags: vec![],
        tz: tz(),
        locale: Locale::ZhCn,
    };
    let judge = Judge::new(engine, ctx).with_compliance(Compliance::new(
        ComplianceParams {
            wash_min: Duration::from_secs(45),
            max_open: Duration::from_secs(30 * 60),
            ..ComplianceParams::default()
        },
        tz(),
    ));
    SiteCore::new("cd-jj-0017", &[])
        .with_rules(judge)
        .with_aqi(Aqi::new("cd-jj-0017", &[], tz(), None))
        .with_linkage(Linkage::new(vec![mist()], tz()), Duration::from_secs(3600))
}

fn dust(t: i64, pm10: f64, pm25: f64) -> Readings {
    thread_local! {
        static META: Arc<DeviceMeta> = Arc::new(DeviceMeta::new(
            "dust-01",
            "cd-jj-0017",
            &[],
            &[("pm10", "air"), ("pm25", "air")],
        ));
    }
    Readings {
        device: META.with(Arc::clone),
        time_ms: t,
        values: vec![Some(pm10), Some(pm25)],
        flags: Vec::new(),
    }
}

fn wind(t: i64) -> Readings {
    Readings {
        device: Arc::new(DeviceMeta::new(
            "wind-01",
            "cd-jj-0017",
            &[],
            &[("wind_speed", "air")],
        )),
        time_ms: t,
        values: vec![Some(2.5)],
        flags: Vec::new(),
    }
}

/// Points as `series field=value,... time`, with values in their Rust form (the core's output,
/// before any encoder).
fn lines(points: &[Point]) -> Vec<String> {
    points
        .iter()
        .map(|p| {
            let fields: Vec<String> = p
                .fields
                .iter()
                .map(|(k, v)| match v {
                    FieldValue::Float(f) => format!("{}={f}", k.as_str()),
                    FieldValue::Bool(b) => format!("{}={b}", k.as_str()),
                    FieldValue::Str(s) => format!("{}={s:?}", k.as_str()),
                })
                .collect();
            format!("{} {} {}", p.series.as_str(), fields.join(","), p.time_ms)
        })
        .collect()
}

fn field<'a>(p: &'a Point, name: &str) -> Option<&'a FieldValue> {
    p.fields
        .iter()
        .find(|(k, _)| k.as_str() == name)
        .map(|(_, v)| v)
}

/// Runs one call and returns its effects.
/// The effects of one call (what the call returns is not looked at).
fn fx<R>(f: impl FnOnce(&mut Effects) -> R) -> Effects {
    let mut fx = Effects::default();
    f(&mut fx);
    fx
}

#[test]
fn a_pm10_episode_opens_an_alert_switches_the_cannons_and_records_the_read_back() {
    let mut s = site();
    let t = t0();
    // At start the cannons are set off (their state is unknown until written and read back).
    let e = fx(|f| s.restore(Saved::default(), t, f));
    assert_eq!(e.coil_writes.len(), 1);
    assert_eq!(
        (e.coil_writes[0].switch.on, &e.coil_writes[0].switch.cause),
        (false, &Cause::Initial)
    );
    let initial = e.coil_writes[0].switch.clone();
    s.switched(&initial, Ok(vec![false]), t, &mut Effects::default());

    // A clean reading: one `air` point, nothing else.
    let e = fx(|f| s.readings(&dust(t, 80.0, 30.0), t, f));
    assert_eq!(
        lines(&e.points),
        vec![format!(
            "air,device=dust-01,site=cd-jj-0017 pm10=80,pm25=30 {t}"
        )]
    );
    assert!(e.alerts.is_empty() && e.coil_writes.is_empty());
    assert_eq!(e.counters.readings, 2);
    assert_eq!(e.changed, Changed::default());

    // PM10 300 (after min_off has run out since the initial off): the alert opens with its
    // message, the cannons are asked for at once.
    let t1 = t + 70_000;
    let e = fx(|f| s.readings(&dust(t1, 300.0, 90.0), t1, f));
    assert_eq!(e.alerts.len(), 1);
    let a = &e.alerts[0];
    assert_eq!(a.event.state, AlertState::Open);
    assert_eq!(a.event.rule_id, "pm10-high");
    assert_eq!(
        a.message,
        "【锦江区 B 地块】dust-01 PM10超标：实测值 300 µg/m³，限值 150 µg/m³，自 08:01 起。"
    );
    let json: serde_json::Value = serde_json::from_str(&a.json).unwrap();
    assert_eq!(json["state"], "open");
    assert_eq!(json["threshold"], 150.0);
    assert!(e.changed.open_alerts);
    assert_eq!(e.counters.alerts_opened, 1);
    let alert_point = e
        .points
        .iter()
        .find(|p| p.series.as_str().starts_with("alert,"))
        .expect("an alert point");
    assert!(alert_point.series.as_str().contains("state=open"));
    assert_eq!(field(alert_point, "value"), Some(&FieldValue::Float(300.0)));
    assert_eq!(e.coil_writes.len(), 1);
    let w = &e.coil_writes[0];
    assert_eq!(
        (w.device.as_str(), w.coils.as_slice()),
        ("relay-01", &[0u16][..])
    );
    assert!(w.switch.on);
    assert_eq!(w.switch.cause, Cause::Rule("pm10-high".into()));

    // The bus wrote the coil and read it back on: an `equipment` point with the cause.
    let sw = w.switch.clone();
    let t2 = t1 + 300;
    let e = fx(|f| s.switched(&sw, Ok(vec![true]), t2, f));
    assert_eq!(
        lines(&e.points),
        vec![format!(
            "equipment,actuator=mist,device=relay-01,site=cd-jj-0017 fog_cannon_on=1,requested=1,confirmed=true,cause=\"rule pm10-high\" {t2}"
        )]
    );
    assert_eq!(e.counters.switches, 1);
    assert_eq!(s.actuators(t2)[0].on, Some(true));

    // PM10 back to 100: the alert closes with the same id; min_on (2 min) holds the cannons.
    let t3 = t1 + 20_000;
    let e = fx(|f| s.readings(&dust(t3, 100.0, 40.0), t3, f));
    assert_eq!(e.alerts.len(), 1);
    assert_eq!(e.alerts[0].event.state, AlertState::Closed);
    assert_eq!(e.alerts[0].event.alert_id, a.event.alert_id);
    assert!(e.coil_writes.is_empty(), "min_on holds");
    // ... until min_on has run out: then off, because the rule cleared.
    let e = fx(|f| s.tick(t1 + 119_000, f));
    assert!(e.coil_writes.is_empty());
    let e = fx(|f| s.tick(t1 + 121_000, f));
    assert_eq!(e.coil_writes.len(), 1);
    assert!(!e.coil_writes[0].switch.on);
    assert_eq!(e.coil_writes[0].switch.cause, Cause::Cleared);

    // A read-back that disagrees is a failure, counted and written with its error.
    let sw = e.coil_writes[0].switch.clone();
    let e = fx(|f| s.switched(&sw, Ok(vec![true]), t1 + 121_500, f));
    assert_eq!(e.counters.switch_failures, 1);
    assert_eq!(
        field(&e.points[0], "confirmed"),
        Some(&FieldValue::Bool(false))
    );
}

#[test]
fn an_unwashed_uncovered_exit_and_an_uncovered_pile_are_violations() {
    let mut s = site();
    let t = t0();
    let truck = Vehicle {
        device: "gate-cam-01".into(),
        time_ms: t,
        plate: "川A·D1234".into(),
        direction: Some("out".into()),
        gate: Some("南".into()),
        muck_truck: Some(true),
        covered: Some(false),
        snapshot: Some("http://cam/1.jpg".into()),
    };
    let e = fx(|f| s.vehicles(std::slice::from_ref(&truck), t, f));
    let kinds: Vec<&str> = e.alerts.iter().map(|a| a.event.metric.as_str()).collect();
    assert_eq!(kinds, vec!["wash", "sealed_transport"]);
    assert!(e.alerts.iter().all(|a| a.event.state == AlertState::Event));
    assert_eq!(
        e.alerts[0].message,
        "【锦江区 B 地块】gate-cam-01 六个百分百·冲洗：车辆 川A·D1234 未冲洗出场，南门（冲洗 0 秒，要求至少 45 秒），抓拍：http://cam/1.jpg，时间 08:00。"
    );
    assert_eq!(e.counters.violations, 2);
    assert!(e.changed.compliance);
    let v = e
        .points
        .iter()
        .find(|p| p.series.as_str().starts_with("vehicle,"))
        .unwrap();
    assert_eq!(
        v.series.as_str(),
        "vehicle,device=gate-cam-01,direction=out,gate=南,site=cd-jj-0017"
    );
    assert_eq!(field(v, "washed"), Some(&FieldValue::Bool(false)));
    assert_eq!(field(v, "wash_seconds"), Some(&FieldValue::Float(0.0)));

    // An uncovered pile seen by the AI camera: a violation once it has been open 30 minutes.
    let pile = Detection {
        device: "ai-cam-01".into(),
        time_ms: t,
        kind: "uncovered_pile".into(),
        id: "pile-1".into(),
        open: true,
        snapshot: None,
    };
    let e = fx(|f| s.detections(std::slice::from_ref(&pile), t, f));
    assert!(e.alerts.is_empty());
    assert!(e.changed.compliance);
    let e = fx(|f| s.tick(t + 29 * MIN, f));
    assert!(e.alerts.iter().all(|a| a.event.metric != "cover"));
    let e = fx(|f| s.tick(t + 31 * MIN, f));
    let cover: Vec<&AlertOut> = e
        .alerts
        .iter()
        .filter(|a| a.event.metric == "cover")
        .collect();
    assert_eq!(cover.len(), 1, "{:?}", e.alerts);
    let (figures, _) = s.compliance_today().unwrap();
    assert_eq!(figures[2].checked, 1.0, "one exit checked for washing");
    assert_eq!(figures[2].violations, 1);
    assert_eq!(figures[5].violations, 1, "sealed transport");
}

#[test]
fn a_device_whose_clock_is_behind_is_not_offline() {
    // An HJ 212 monitor's clock 20 minutes slow (offline_after is 2 min here): its readings
    // keep arriving, so it is online, though each is stamped 20 minutes back.
    let mut s = site();
    let t = t0() + 60 * MIN;
    let mut alerts = Vec::new();
    let mut ti = t;
    while ti <= t + 10 * MIN {
        alerts.extend(fx(|f| s.readings(&dust(ti - 20 * MIN, 60.0, 20.0), ti, f)).alerts);
        alerts.extend(fx(|f| s.tick(ti + 5_000, f)).alerts);
        ti += 10_000;
    }
    assert!(
        alerts
            .iter()
            .all(|a| !(a.event.kind == AlertKind::Offline && a.event.device == "dust-01")),
        "{:?}",
        alerts
            .iter()
            .map(|a| (a.event.kind, a.event.state, &a.event.device))
            .collect::<Vec<_>>()
    );
    // Silent, it goes offline all the same.
    let e = fx(|f| s.tick(ti + 5 * MIN, f));
    assert!(
        e.alerts
            .iter()
            .any(|a| a.event.kind == AlertKind::Offline && a.event.device == "dust-01")
    );
}

#[test]
fn a_silent_device_goes_offline_and_comes_back() {
    let mut s = site();
    let t = t0();
    for i in 0..6 {
        let ti = t + i * 10_000;
        s.readings(&wind(ti), ti, &mut Effects::default());
        s.readings(&dust(ti, 60.0, 20.0), ti, &mut Effects::default());
    }
    // wind-01 falls silent after t+50 s; dust-01 keeps reporting.
    let mut opened = Vec::new();
    let mut ti = t + 60_000;
    while ti <= t + 5 * MIN {
        s.readings(&dust(ti, 60.0, 20.0), ti, &mut Effects::default());
        let e = fx(|f| s.tick(ti, f));
        opened.extend(
            e.alerts
                .into_iter()
                .filter(|a| a.event.state == AlertState::Open),
        );
        ti += 10_000;
    }
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0].event.kind, AlertKind::Offline);
    assert_eq!(opened[0].event.device, "wind-01");
    assert_eq!(
        opened[0].message,
        "【锦江区 B 地块】wind-01 离线：自 08:00 起无数据。"
    );
    assert_eq!(s.open_alerts().len(), 1);
    // Back on the bus: the alert closes.
    let e = fx(|f| s.readings(&wind(ti), ti, f));
    assert_eq!(e.alerts.len(), 1);
    assert_eq!(e.alerts[0].event.state, AlertState::Closed);
    assert!(s.open_alerts().is_empty());
}

#[test]
fn the_aqi_follows_the_hourly_means() {
    let mut s = site();
    let t = t0();
    let mut last = None;
    // An hour at PM2.5 80 µg/m³ and PM10 200 µg/m³ (rule: PM10 above 150, so an alert too).
    for i in 0..360 {
        let ti = t + i * 10_000;
        let e = fx(|f| s.readings(&dust(ti, 200.0, 80.0), ti, f));
        if let Some(p) = e
            .points
            .iter()
            .find(|p| p.series.as_str().starts_with("aqi,"))
        {
            last = Some(p.clone());
        }
    }
    let p = last.expect("aqi points");
    // The table in force on 2026-11-26 is hj633-2026 [U] (data/aqi.toml): PM2.5 80 lies in
    // 60–115 → 100 + 20 × 50 / 55 = 118.2 → IAQI 119 (rounded up); PM10 200 in 120–250 →
    // 100 + 80 × 50 / 130 = 130.8 → 131. The AQI is the larger: 131, PM10 primary.
    assert_eq!(field(&p, "iaqi_pm25"), Some(&FieldValue::Float(119.0)));
    assert_eq!(field(&p, "iaqi_pm10"), Some(&FieldValue::Float(131.0)));
    assert_eq!(field(&p, "aqi"), Some(&FieldValue::Float(131.0)));
    assert_eq!(
        field(&p, "table"),
        Some(&FieldValue::Str("hj633-2026".into()))
    );
    assert_eq!(field(&p, "primary"), Some(&FieldValue::Str("PM10".into())));
}

#[test]
fn open_alerts_render_in_the_readers_language_and_survive_a_restart() {
    let mut s = site();
    let t = t0();
    s.readings(&dust(t, 300.0, 90.0), t, &mut Effects::default());
    let zh = s.open_alerts_json(None);
    let en = s.open_alerts_json(Some(Locale::En));
    assert_eq!(zh.len(), 1);
    assert!(zh[0]["message"].as_str().unwrap().contains("限值 150"));
    assert_eq!(
        en[0]["message"],
        "[锦江区 B 地块] dust-01: PM10 over the limit: reading 300 µg/m³, limit 150 µg/m³, since 08:00."
    );
    // What the edge saves, restored into a new core: open, not announced again, and the
    // cannons asked for again.
    let saved = s.saved(t + 1000);
    let mut again = site();
    let e = fx(|f| again.restore(saved, t + 2000, f));
    assert!(e.alerts.is_empty(), "not announced again: {:?}", e.alerts);
    assert_eq!(again.open_alerts().len(), 1);
    assert_eq!(e.coil_writes.len(), 1);
    assert!(e.coil_writes[0].switch.on);
}

#[test]
fn a_manual_override_is_bounded_and_a_missing_actuator_refused() {
    let mut s = site();
    let t = t0();
    assert_eq!(
        s.override_actuator(
            "mist",
            Some(true),
            Duration::from_secs(7200),
            "王工",
            t,
            &mut Effects::default()
        ),
        Err(OverrideError::TooLong(3600))
    );
    assert!(matches!(
        s.override_actuator(
            "nope",
            Some(true),
            Duration::from_secs(60),
            "王工",
            t,
            &mut Effects::default()
        ),
        Err(OverrideError::Refused(_))
    ));
    let e = fx(|f| {
        assert_eq!(
            s.override_actuator("mist", Some(true), Duration::from_secs(600), "王工", t, f),
            Ok(Some(t + 600_000))
        );
    });
    assert_eq!(e.coil_writes.len(), 1);
    assert!(matches!(
        e.coil_writes[0].switch.cause,
        Cause::Manual { .. }
    ));
    let mut bare = SiteCore::new("s", &[]);
    assert_eq!(
        bare.override_actuator(
            "mist",
            None,
            Duration::ZERO,
            "x",
            t,
            &mut Effects::default()
        ),
        Err(OverrideError::NoActuators)
    );
}

#[test]
fn a_value_above_the_sensors_range_is_flagged_and_judged_a_negative_one_flagged_not_judged() {
    let mut s = site();
    let t = t0();
    let init = fx(|f| s.restore(Saved::default(), t, f));
    s.switched(
        &init.coil_writes[0].switch,
        Ok(vec![false]),
        t,
        &mut Effects::default(),
    );
    // A sand episode: PM10 1,500 µg/m³ on a monitor that measures up to 1,000 (the default).
    let t1 = t + 70_000;
    let e = fx(|f| s.readings(&dust(t1, 1500.0, 90.0), t1, f));
    assert_eq!(
        lines(&e.points)[0],
        format!("air,device=dust-01,site=cd-jj-0017 pm10=1500,pm10_flag=\"T\",pm25=90 {t1}")
    );
    let opened: Vec<AlertKind> = e
        .alerts
        .iter()
        .filter(|a| a.event.state == AlertState::Open)
        .map(|a| a.event.kind)
        .collect();
    assert!(
        opened.contains(&AlertKind::Threshold) && opened.contains(&AlertKind::OutOfRange),
        "the PM10 rule judges it, and the range alert says so: {opened:?}"
    );
    assert_eq!(e.coil_writes.len(), 1, "the mist cannons switch on");
    assert!(e.coil_writes[0].switch.on);

    // Negative dust: impossible, written with flag D, not judged (the PM10 alert stays as it
    // was: neither cleared by -5 nor raised).
    let mut s = site();
    let e = fx(|f| s.readings(&dust(t1, -5.0, 20.0), t1, f));
    assert_eq!(
        lines(&e.points)[0],
        format!("air,device=dust-01,site=cd-jj-0017 pm10=-5,pm10_flag=\"D\",pm25=20 {t1}")
    );
    assert!(
        e.alerts
            .iter()
            .all(|a| a.event.kind == AlertKind::OutOfRange),
        "{:?}",
        e.alerts
    );
    assert!(e.coil_writes.iter().all(|w| !w.switch.on));

    // A device whose own range reaches 10,000 µg/m³ (a profile's `range`): no flag.
    let meta = Arc::new(
        DeviceMeta::new("dust-02", "cd-jj-0017", &[], &[("pm10", "air")])
            .with_ranges([Some((0.0, 10_000.0))]),
    );
    let e = fx(|f| {
        s.readings(
            &Readings {
                device: meta,
                time_ms: t1,
                values: vec![Some(1500.0)],
                flags: Vec::new(),
            },
            t1,
            f,
        )
    });
    assert_eq!(
        lines(&e.points)[0],
        format!("air,device=dust-02,site=cd-jj-0017 pm10=1500 {t1}")
    );
    assert!(
        e.alerts
            .iter()
            .all(|a| a.event.kind != AlertKind::OutOfRange)
    );
}

#[test]
fn a_reading_stamped_in_the_future_is_refused_and_cannot_silence_the_device() {
    let mut s = site();
    let t = t0();
    // A clock running 3 minutes fast is tolerated (max_future 5 min by default) ...
    let e = fx(|f| s.readings(&dust(t + 3 * MIN, 60.0, 20.0), t, f));
    assert_eq!(e.points.len(), 1);
    assert_eq!(e.counters.future_values, 0);
    // ... one stamped 2099 is refused: no point, nothing judged, counted.
    let y2099 = 4_070_908_800_000;
    let e = fx(|f| s.readings(&dust(y2099, 999.0, 999.0), t, f));
    assert!(e.points.is_empty() && e.alerts.is_empty() && e.coil_writes.is_empty());
    assert_eq!(e.counters.future_values, 2);
    // The device then falls silent: the offline alert still opens on the gateway's clock
    // (a 2099 reading used to hold "last seen" in 2099, for ever).
    let mut opened = Vec::new();
    let mut ti = t + 10_000;
    while ti <= t + 20 * MIN {
        let e = fx(|f| s.tick(ti, f));
        opened.extend(e.alerts.into_iter().map(|a| (a.event.kind, a.event.device)));
        ti += 30_000;
    }
    assert!(
        opened.contains(&(AlertKind::Offline, "dust-01".to_string())),
        "{opened:?}"
    );
    // An event from the future too.
    let late = Vehicle {
        device: "gate-cam-01".into(),
        time_ms: y2099,
        plate: "川A00000".into(),
        direction: Some("out".into()),
        gate: None,
        muck_truck: None,
        covered: None,
        snapshot: None,
    };
    let e = fx(|f| s.vehicles(&[late], t, f));
    assert!(e.points.is_empty() && e.alerts.is_empty());
    assert_eq!(e.counters.future_values, 1);

    // Windows saved with a reading from 2099 (by a gateway before this check) leave it out.
    let mut saved = s.saved(t);
    if let Some(w) = &mut saved.windows {
        w.series.push(crate::pipeline::rules::SeriesSnapshot {
            rule: "pm10-high".into(),
            device: "dust-09".into(),
            readings: vec![(t, 50.0), (y2099, 999.0)],
            breach_since: None,
            day: 0,
            day_count: 0,
        });
    }
    let e = fx(|f| site().restore(saved, t, f));
    assert_eq!(e.counters.future_values, 1);
}

#[test]
fn a_device_only_a_topic_named_goes_offline_only_once_established() {
    let mut s = site();
    let t = t0();
    let pushed = |id: &str, ti: i64| Readings {
        device: Arc::new(DeviceMeta::new(id, "cd-jj-0017", &[], &[("pm10", "air")])),
        time_ms: ti,
        values: vec![Some(40.0)],
        flags: Vec::new(),
    };
    // 1,000 ids seen once each (a stray topic, a flood of made-up ids) and one real monitor.
    for i in 0..1000 {
        s.readings(
            &pushed(&format!("stray-{i}"), t),
            t,
            &mut Effects::default(),
        );
    }
    for i in 0..3 {
        let ti = t + i * 10_000;
        s.readings(&pushed("mqtt-dust", ti), ti, &mut Effects::default());
    }
    let mut offline = Vec::new();
    let mut ti = t + 30_000;
    while ti <= t + 20 * MIN {
        let e = fx(|f| s.tick(ti, f));
        offline.extend(
            e.alerts
                .into_iter()
                .filter(|a| a.event.kind == AlertKind::Offline)
                .map(|a| a.event.device),
        );
        ti += 60_000;
    }
    offline.sort();
    assert_eq!(
        offline,
        vec!["dust-01".to_string(), "mqtt-dust".into(), "wind-01".into()],
        "configured devices and the established one; none of the 1,000 strays"
    );
}

#[test]
fn a_value_its_instrument_flagged_is_written_with_the_flag_and_never_judged() {
    let mut s = site();
    let t = t0();
    let e = fx(|f| s.restore(Saved::default(), t, f));
    let initial = e.coil_writes[0].switch.clone();
    s.switched(&initial, Ok(vec![false]), t, &mut Effects::default());

    // PM10 300 under maintenance (HJ 212 flag M), PM2.5 90 normal: the PM10 is written with
    // its flag, opens no alert and switches nothing; the AQI sees only the PM2.5.
    let t1 = t + 70_000;
    let mut r = dust(t1, 300.0, 90.0);
    r.flags = vec![Some('M'), Some('N')];
    let e = fx(|f| s.readings(&r, t1, f));
    assert_eq!(
        lines(&e.points)[0],
        format!("air,device=dust-01,site=cd-jj-0017 pm10=300,pm10_flag=\"M\",pm25=90 {t1}")
    );
    assert!(e.alerts.is_empty(), "{:?}", e.alerts);
    assert!(e.coil_writes.is_empty());
    let aqi: Vec<&Point> = e
        .points
        .iter()
        .filter(|p| p.series.as_str().starts_with("aqi,"))
        .collect();
    assert!(
        aqi.iter().all(|p| field(p, "iaqi_pm10").is_none()),
        "{:?}",
        lines(&e.points)
    );

    // The same value unflagged: judged, the alert opens.
    let t2 = t1 + 1000;
    let e = fx(|f| s.readings(&dust(t2, 300.0, 90.0), t2, f));
    assert_eq!(e.alerts.len(), 1);
}

#[test]
fn a_data_flag_held_past_its_allowance_raises_the_data_quality_alert_until_a_normal_value() {
    let mut s = site();
    let t = t0();
    s.restore(Saved::default(), t, &mut Effects::default());
    let flagged = |at: i64| {
        let mut r = dust(at, 300.0, 90.0);
        r.flags = vec![Some('C'), None];
        r
    };
    // Calibration for 29 minutes: no alert (the default allowance is 30 minutes).
    for m in 0..30 {
        let at = t + m * MIN;
        let e = fx(|f| s.readings(&flagged(at), at, f));
        assert!(
            e.alerts.iter().all(|a| a.event.kind != AlertKind::Flagged),
            "minute {m}"
        );
    }
    let at = t + 30 * MIN;
    let e = fx(|f| s.readings(&flagged(at), at, f));
    let opened: Vec<_> = e
        .alerts
        .iter()
        .filter(|a| a.event.kind == AlertKind::Flagged)
        .collect();
    assert_eq!(opened.len(), 1);
    assert_eq!(
        opened[0].message,
        "【锦江区 B 地块】dust-01 PM10数据标记为 C（校准）已超过 30 分钟（自 08:00 起），期间数据未参与评价，请检查设备。"
    );
    // A normal value closes it.
    let at = t + 31 * MIN;
    let e = fx(|f| s.readings(&dust(at, 80.0, 30.0), at, f));
    let closed: Vec<_> = e
        .alerts
        .iter()
        .filter(|a| a.event.kind == AlertKind::Flagged)
        .collect();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].event.state, AlertState::Closed);
}

#[test]
fn a_clock_off_past_the_allowance_raises_its_alert_and_closes_once_set() {
    let mut s = site();
    let t = t0();
    s.restore(Saved::default(), t, &mut Effects::default());
    let max = 5 * MIN;
    let e = fx(|f| s.clock_drift("dust-01", 4 * MIN, max, t, f));
    assert!(e.alerts.is_empty());
    let e = fx(|f| s.clock_drift("dust-01", 6 * MIN, max, t + 1000, f));
    assert_eq!(e.alerts.len(), 1);
    assert_eq!(
        e.alerts[0].message,
        "【锦江区 B 地块】dust-01 时钟偏差 360 秒，超过允许的 300 秒，请校准监测仪时间。"
    );
    // Within the allowance but not yet within half of it: still open, not repeated.
    let e = fx(|f| s.clock_drift("dust-01", 4 * MIN, max, t + 2000, f));
    assert!(e.alerts.is_empty());
    let e = fx(|f| s.clock_drift("dust-01", -1000, max, t + 3000, f));
    assert_eq!(e.alerts.len(), 1);
    assert_eq!(e.alerts[0].event.state, AlertState::Closed);
}
