//! Record decoding on one core: plain records, and KPL aggregates of ~300-byte events.
//! `cargo bench -p shard-consumer` prints records/s (elements) and MB/s (bytes).

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shard_consumer::kinesis::decode_record;
use shard_consumer::kpl;
use shard_consumer::position::SequenceNumber;

fn event(i: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"event_id":"{:08x}-1d2c-4b5a-9e8f-0a1b2c3d4e5f","client_id":"6c1f6a2e-{:04x}-4e0e-8d52-3f4c0a7b9e11","app_name":"space-raiders","event_version":"1.0","event_type":"player_death","event_timestamp":{},"app_version":"2.3.1","level_id":"level-{:02}","position_x":{:.3},"position_y":{:.3}}}"#,
        i,
        i % 65536,
        1_790_000_000_000_u64 + i as u64,
        i % 20,
        (i % 1000) as f64 * 1.25,
        (i % 700) as f64 * 0.75
    ))
}

fn bench(c: &mut Criterion) {
    let sequence = SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898").expect("digits");
    let events: Vec<Bytes> = (0..1000).map(event).collect();
    let bytes: usize = events.iter().map(Bytes::len).sum();

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("plain_records_1000", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(events.len());
            for data in &events {
                decode_record(sequence.clone(), "player", data.clone(), 0, &mut out);
            }
            out
        })
    });

    // KPL packs user records up to ~1 MB; 100 events per aggregate is a typical fill.
    let aggregates: Vec<Bytes> = events
        .chunks(100)
        .map(|chunk| {
            kpl::aggregate(
                &chunk
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (format!("player-{i}"), d.clone()))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    group.bench_function("kpl_aggregates_10x100", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(events.len());
            for data in &aggregates {
                decode_record(sequence.clone(), "player", data.clone(), 0, &mut out);
            }
            out
        })
    });
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("kpl_aggregates_10x100_bytes", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(events.len());
            for data in &aggregates {
                decode_record(sequence.clone(), "player", data.clone(), 0, &mut out);
            }
            out
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
