//! Offline audit throughput (MB/s of ledger) and engine commit throughput.
//! Run: `cargo bench -p covenant-engine`.
use std::sync::Arc;

use covenant_crypto::{Curve, LedgerSecret, NodeIdentity, ServiceIdentity};
use covenant_engine::{audit_ledger, Engine, EngineConfig};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let service = ServiceIdentity::generate(Curve::P384).unwrap();
    let node = Arc::new(NodeIdentity::generate(&service, Curve::P384, &[]).unwrap());
    let secret = Arc::new(LedgerSecret::generate().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let contents = vec![b'x'; 1024];
    {
        let mut engine =
            Engine::open(EngineConfig::new(dir.path()), node.clone(), secret.clone()).unwrap();
        for i in 0..20_000u64 {
            let mut tx = engine.begin();
            tx.put("entries", &i.to_be_bytes(), &contents);
            engine.commit_tx(tx, None).unwrap();
        }
        engine.emit_signature().unwrap();
        engine.flush().unwrap();
    }
    let bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let mut g = c.benchmark_group("engine");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("audit_20k_1KiB_entries", |b| {
        b.iter(|| audit_ledger(dir.path(), &service.cert, |_, _| {}).unwrap())
    });
    // Commit path without fsync cost: 1 KiB private entries, signature every 5000.
    g.throughput(Throughput::Elements(5_000));
    g.bench_function("commit_5k_1KiB_entries_one_flush", |b| {
        b.iter_batched(
            || {
                let d = tempfile::tempdir().unwrap();
                let e = Engine::open(EngineConfig::new(d.path()), node.clone(), secret.clone())
                    .unwrap();
                (d, e)
            },
            |(d, mut e)| {
                for i in 0..5_000u64 {
                    let mut tx = e.begin();
                    tx.put("entries", &i.to_be_bytes(), &contents);
                    e.commit_tx(tx, None).unwrap();
                }
                e.flush().unwrap();
                (d, e)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
