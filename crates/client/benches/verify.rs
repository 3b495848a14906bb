//! Receipt verifications per second. Run: `cargo bench -p covenant-client`.
use std::sync::Arc;

use covenant_client::ReceiptVerifier;
use covenant_crypto::{Curve, LedgerSecret, NodeIdentity, ServiceIdentity};
use covenant_engine::{Engine, EngineConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let service = ServiceIdentity::generate(Curve::P384).unwrap();
    let node = NodeIdentity::generate(&service, Curve::P384, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(dir.path());
    cfg.sig_tx_interval = 1_000_000;
    let mut engine = Engine::open(
        cfg,
        Arc::new(node),
        Arc::new(LedgerSecret::generate().unwrap()),
    )
    .unwrap();
    let mut txids = Vec::new();
    for i in 0..100_000u64 {
        let mut tx = engine.begin();
        tx.put("public:e", &i.to_be_bytes(), b"contents");
        txids.push(engine.commit_tx(tx, None).unwrap());
    }
    engine.emit_signature().unwrap();
    engine.flush().unwrap();
    let receipts: Vec<_> = txids
        .iter()
        .step_by(997)
        .map(|t| engine.receipt(*t).unwrap().receipt.unwrap())
        .collect();

    let mut g = c.benchmark_group("receipt");
    g.throughput(Throughput::Elements(1));
    let verifier = ReceiptVerifier::new(service.cert.clone());
    let mut i = 0;
    g.bench_function("verify_cached_endorsement", |b| {
        b.iter(|| {
            i = (i + 1) % receipts.len();
            verifier.verify(&receipts[i], None).unwrap()
        })
    });
    g.bench_function("verify_cold", |b| {
        b.iter(|| {
            i = (i + 1) % receipts.len();
            ReceiptVerifier::new(service.cert.clone())
                .verify(&receipts[i], None)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
