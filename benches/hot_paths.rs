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

criterion_group!(benches, bench_encode, bench_pipeline, bench_decode);
criterion_main!(benches);
