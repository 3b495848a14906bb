//! Ledger append (group commit) and audit-scan throughput.
//! Run: `cargo bench -p covenant-ledger`.
use std::time::{Duration, Instant};

use covenant_ledger::{ChunkScanner, Ledger, LedgerConfig, SeqNo, TxId};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const ENTRY: usize = 1024;
/// Every this many entries is a signature transaction (chunks close after one).
const SIG_EVERY: u64 = 100;
/// Roll the ledger back to empty (outside the timed section) past this size,
/// so long measurements do not fill the disk.
const RESET_AT: u64 = 256 * 1024 * 1024;

fn append_batch(ledger: &mut Ledger, payload: &[u8], n: u64) {
    for _ in 0..n {
        let s = ledger.last_seqno().0 + 1;
        ledger
            .append(TxId::new(1, s), s % SIG_EVERY == 0, payload)
            .expect("append");
    }
    ledger.sync().expect("sync");
}

fn bench_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("ledger_append_1KiB");
    for per_sync in [100u64, 1000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut ledger, _) = Ledger::open(LedgerConfig::new(dir.path())).expect("open");
        let payload = vec![0xA5u8; ENTRY];
        g.throughput(Throughput::ElementsAndBytes {
            elements: per_sync,
            bytes: per_sync * ENTRY as u64,
        });
        g.bench_function(format!("sync_every_{per_sync}"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    if ledger.last_seqno().0 * ENTRY as u64 > RESET_AT {
                        ledger.truncate(SeqNo(0)).expect("reset");
                    }
                    let t = Instant::now();
                    append_batch(&mut ledger, &payload, per_sync);
                    spent += t.elapsed();
                }
                spent
            })
        });
    }
    g.finish();
}

fn bench_scan(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut ledger, _) = Ledger::open(LedgerConfig::new(dir.path())).expect("open");
    let payload = vec![0x5Au8; ENTRY];
    append_batch(&mut ledger, &payload, 64 * 1024);
    let last = ledger.last_seqno();
    ledger.commit(last).expect("commit");
    drop(ledger);
    let total = ChunkScanner::open(dir.path())
        .expect("scanner")
        .total_bytes();
    let mut g = c.benchmark_group("ledger_scan");
    g.throughput(Throughput::Bytes(total));
    g.bench_function("chunk_scanner_64MiB", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for e in ChunkScanner::open(dir.path()).expect("scanner") {
                e.expect("valid entry");
                n += 1;
            }
            assert_eq!(n, last.0);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_append, bench_scan);
criterion_main!(benches);
