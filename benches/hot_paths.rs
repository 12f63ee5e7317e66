//! Hot-path benchmarks: line-protocol encoding and register decoding.
//!
//! `cargo bench --bench hot_paths`; figures go to BENCHMARKS.md with the command.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dustgate::model::{DeviceMeta, FieldKey, FieldValue, Point, Readings, SeriesKey};
use dustgate::outputs::line_protocol::encode_point;
use dustgate::pipeline::validate::to_points;
use dustgate::sources::modbus::registers::{ByteOrder, ValueType, decode, encode};

const N: usize = 10_000;

fn dust_points() -> Vec<Point> {
    let series = SeriesKey::new(
        "air",
        &[
            ("site", "cd-jj-0017"),
            ("device", "dust-01"),
            ("district", "jinjiang"),
        ],
    );
    let names = [
        "pm25",
        "pm10",
        "tsp",
        "noise",
        "temperature",
        "humidity",
        "pressure",
        "wind_speed",
        "wind_direction",
    ];
    let keys: Vec<FieldKey> = names.iter().map(|n| FieldKey::new(n)).collect();
    (0..N)
        .map(|i| Point {
            series: series.clone(),
            fields: keys
                .iter()
                .enumerate()
                .map(|(j, k)| {
                    (
                        k.clone(),
                        FieldValue::Float((350 + (i * 7 + j) % 600) as f64 / 10.0),
                    )
                })
                .collect(),
            time_ms: 1_795_000_000_000 + i as i64 * 1000,
        })
        .collect()
}

fn one_field_points() -> Vec<Point> {
    let series = SeriesKey::new("air", &[("site", "cd-jj-0017"), ("device", "wind-01")]);
    let key = FieldKey::new("wind_speed");
    (0..N)
        .map(|i| Point {
            series: series.clone(),
            fields: vec![(key.clone(), FieldValue::Float((i % 300) as f64 / 10.0))],
            time_ms: 1_795_000_000_000 + i as i64 * 1000,
        })
        .collect()
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("line_protocol");
    g.throughput(Throughput::Elements(N as u64));
    let mut buf = Vec::with_capacity(4 << 20);
    let one = one_field_points();
    g.bench_function("encode 1-field points", |b| {
        b.iter(|| {
            buf.clear();
            for p in &one {
                encode_point(black_box(p), &mut buf);
            }
            black_box(buf.len())
        })
    });
    let dust = dust_points();
    g.bench_function("encode 9-field dust points", |b| {
        b.iter(|| {
            buf.clear();
            for p in &dust {
                encode_point(black_box(p), &mut buf);
            }
            black_box(buf.len())
        })
    });
    g.finish();
}

fn bench_pipeline(c: &mut Criterion) {
    let names = [
        ("pm25", "air"),
        ("pm10", "air"),
        ("tsp", "air"),
        ("noise", "air"),
        ("temperature", "air"),
        ("humidity", "air"),
        ("pressure", "air"),
        ("wind_speed", "air"),
        ("wind_direction", "air"),
    ];
    let meta = std::sync::Arc::new(DeviceMeta::new("dust-01", "cd-jj-0017", &[], &names));
    let r = Readings {
        device: meta,
        time_ms: 1_795_000_000_000,
        values: (0..9).map(|i| Some(30.0 + f64::from(i))).collect(),
        flags: Vec::new(),
    };
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(1024);
    g.bench_function("dust poll to line protocol", |b| {
        b.iter(|| {
            buf.clear();
            let (points, _) = to_points(black_box(&r));
            for p in &points {
                encode_point(p, &mut buf);
            }
            black_box(buf.len())
        })
    });
    g.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    let words: Vec<Vec<u16>> = ValueType::ALL
        .iter()
        .map(|t| encode(-1234.5, *t, ByteOrder::Dcba))
        .collect();
    g.throughput(Throughput::Elements(ValueType::ALL.len() as u64 * 4));
    g.bench_function("every type in every byte order", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for (t, w) in ValueType::ALL.iter().zip(&words) {
                for o in ByteOrder::ALL {
                    sum += decode(black_box(w), *t, o, None);
                }
            }
            black_box(sum)
        })
    });
    g.finish();
}

/// 50 rules of mixed windows (each reading, 15-min mean, 1-h mean, 20-min Leq, max) over 20
/// devices, fed a day of readings every 10 s in rotation.
fn bench_rules(c: &mut Criterion) {
    use dustgate::config::rules::{Aggregate, Condition, Provenance, RuleConfig, Severity};
    use dustgate::pipeline::rules::Engine;
    use std::time::Duration;
    let metrics = ["pm10", "pm25", "tsp", "noise", "wind_speed"];
    let windows = [
        (None, Aggregate::Each),
        (Some(900), Aggregate::Mean),
        (Some(3600), Aggregate::Mean),
        (Some(1200), Aggregate::Leq),
        (Some(1200), Aggregate::Max),
    ];
    let mut rules = Vec::new();
    for i in 0..50 {
        let (w, agg) = windows[i % windows.len()];
        let metric = metrics[(i / windows.len()) % metrics.len()];
        let agg = if metric != "noise" && agg == Aggregate::Leq {
            Aggregate::Mean
        } else {
            agg
        };
        rules.push(RuleConfig {
            id: format!("r{i}"),
            metric: metric.to_string(),
            devices: vec![],
            window: w.map(Duration::from_secs),
            aggregate: agg,
            condition: Condition::Above(1e9),
            clear: None,
            hold: Duration::ZERO,
            when: if i % 7 == 0 {
                Some(dustgate::config::rules::Schedule {
                    start: 1320,
                    end: 360,
                    days: [true; 7],
                })
            } else {
                None
            },
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
                pack: "bench".into(),
                standard: None,
                source: None,
                mark: None,
            },
            enabled: true,
            actuate: None,
            patch: false,
        });
    }
    let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap_or(jiff::tz::TimeZone::UTC);
    let mut engine = Engine::new(rules, tz);
    let devices: Vec<String> = (0..20).map(|d| format!("dust-{d:02}")).collect();
    for d in &devices {
        engine.set_interval(d, 10_000);
    }
    let mut out = Vec::new();
    let mut t = 1_795_000_000_000i64;
    // Warm the windows up so every rule judges.
    for _ in 0..400 {
        for d in &devices {
            for (k, m) in metrics.iter().enumerate() {
                engine.reading(d, m, t, 40.0 + k as f64, &mut out);
            }
        }
        t += 10_000;
    }
    let per_iter = (devices.len() * metrics.len()) as u64;
    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Elements(per_iter));
    g.bench_function("50 rules over 20 devices: one round of readings", |b| {
        b.iter(|| {
            for d in &devices {
                for (k, m) in metrics.iter().enumerate() {
                    engine.reading(
                        black_box(d),
                        m,
                        t,
                        40.0 + k as f64 + (t % 7) as f64,
                        &mut out,
                    );
                }
            }
            out.clear();
            t += 10_000;
        })
    });
    g.finish();
}

/// The six 100% and the linkage run once a second and once per equipment reading or vehicle:
/// their cost per call, with a busy site's state (sprays, open detections, a day of wash runs).
fn bench_six100(c: &mut Criterion) {
    use dustgate::config::linkage::ActuatorConfig;
    use dustgate::pipeline::actuate::Linkage;
    use dustgate::pipeline::compliance::{Compliance, ComplianceParams, Detection, Vehicle};
    use std::time::Duration;
    let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap_or(jiff::tz::TimeZone::UTC);
    let params = ComplianceParams {
        activity: vec![dustgate::config::rules::Schedule {
            start: 0,
            end: 1440,
            days: [true; 7],
        }],
        ..ComplianceParams::default()
    };
    let mut comp = Compliance::new(params, tz.clone());
    let mut out = Vec::new();
    let mut t = 1_795_683_600_000i64;
    comp.tick(t, &mut out);
    for k in 0..8 {
        comp.reading(&format!("relay-{k}"), "spray_on", t, 1.0);
    }
    for k in 0..5 {
        let d = Detection {
            device: "ai-01".into(),
            time_ms: t,
            kind: "uncovered_pile".into(),
            id: format!("pile-{k}"),
            open: true,
            snapshot: Some("http://ai/1.jpg".into()),
        };
        comp.detection(&d, &mut out);
    }
    // Wash runs every 2 minutes: the lookback holds several.
    for k in 0..10 {
        comp.reading("wash-01", "wash_pump_on", t + k * 120_000, 1.0);
        comp.reading("wash-01", "wash_pump_on", t + k * 120_000 + 60_000, 0.0);
    }
    t += 20 * 60_000;
    let mut g = c.benchmark_group("six100");
    g.throughput(Throughput::Elements(1));
    g.bench_function("compliance tick (8 sprays, 5 open detections)", |b| {
        b.iter(|| {
            t += 1000;
            black_box(comp.tick(t, &mut out));
            out.clear();
        })
    });
    let v = Vehicle {
        device: "cam-01".into(),
        time_ms: t,
        plate: "川A12345".into(),
        direction: Some("out".into()),
        gate: Some("south".into()),
        muck_truck: Some(true),
        covered: Some(true),
        snapshot: Some("http://cam/1.jpg".into()),
    };
    g.bench_function("compliance vehicle exit judged", |b| {
        b.iter(|| {
            black_box(comp.vehicle(black_box(&v), &mut out));
            out.clear();
        })
    });
    g.bench_function("compliance equipment reading", |b| {
        b.iter(|| {
            if Compliance::wants(black_box("spray_on")) {
                comp.reading("relay-3", "spray_on", t, 1.0);
            }
        })
    });
    let specs: Vec<ActuatorConfig> = (0..8)
        .map(|k| ActuatorConfig {
            id: format!("a{k}"),
            device: "relay-01".into(),
            coils: vec![("spray_on".into(), k)],
            min_on: Duration::from_secs(60),
            min_off: Duration::from_secs(60),
            max_on: Some(Duration::from_secs(1800)),
            daily_budget: Some(Duration::from_secs(6 * 3600)),
            safe_on: false,
        })
        .collect();
    let mut link = Linkage::new(specs, tz);
    for sw in link.tick(t) {
        link.result(&sw, Ok(vec![sw.on]), t);
    }
    for k in 0..4 {
        link.demand(&format!("a{k}"), &format!("alert-{k}"), "pm10-15m", true);
    }
    g.bench_function("linkage tick (8 actuators, 4 demanded)", |b| {
        b.iter(|| {
            t += 1000;
            for sw in link.tick(t) {
                link.result(&sw, Ok(vec![sw.on]), t);
            }
        })
    });
    g.finish();
}

/// HJ 212 ingest: a frame's bytes through the framer and the segment parser (V10: a 2011
/// real-time dust frame, 9 factors; V2: a 2051 minute frame, 11 factors with flags).
fn bench_hj212(c: &mut Criterion) {
    const V10: &str = "##0239QN=20180821142509000;ST=39;CN=2011;PW=123456;MN=690000D5800028F889221AC0;Flag=4;CP=&&DataTime=20180821142509;a34004-Rtd=0.0;a34002-Rtd=0.0;a34001-Rtd=0.0;LA-Rtd=0.0;a01001-Rtd=0.0;a01002-Rtd=0.0;a01006-Rtd=0.0;a01007-Rtd=0.0;a01008-Rtd=0&&E541\r\n";
    const V2: &str = "##0411QN=20220513162608370;ST=22;CN=2051;PW=123456;MN=JLYP01_AIR01_0001;Flag=4;CP=&&DataTime=20220513162600;a21004-Avg=4,a21004-Flag=N;a05024-Avg=63,a05024-Flag=N;a21026-Avg=6,a21026-Flag=N;a21005-Avg=0.427,a21005-Flag=N;a34004-Avg=14,a34004-Flag=N;a34002-Avg=31,a34002-Flag=N;a01007-Avg=1,a01007-Flag=N;a01008-Avg=11,a01008-Flag=N;a01001-Avg=17,a01001-Flag=N;a01002-Avg=85,a01002-Flag=N;a01006-Avg=95,a01006-Flag=N&&D641\r\n";
    let mut g = c.benchmark_group("hj212");
    g.throughput(Throughput::Elements(1));
    for (name, frame) in [
        ("frame+parse V10 (2011)", V10),
        ("frame+parse V2 (2051)", V2),
    ] {
        let mut f = dustgate::hj212::Framer::new();
        g.bench_function(name, |b| {
            b.iter(|| {
                f.push(black_box(frame.as_bytes()));
                let mut n = 0;
                while let Some(Ok(fr)) = f.next_frame() {
                    let text = fr.text().expect("plain");
                    let p = dustgate::hj212::parse(&text).expect("parses");
                    n += p.factors().len();
                }
                black_box(n)
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_hj212,
    bench_encode,
    bench_pipeline,
    bench_decode,
    bench_rules,
    bench_six100
);
criterion_main!(benches);
