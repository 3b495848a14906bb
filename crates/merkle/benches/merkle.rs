//! Merkle append and proof throughput. Run: `cargo bench -p covenant-merkle`.
use covenant_merkle::{leaf_hash, root_from_inclusion, MerkleTree};
use covenant_types::Digest32;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn leaf(i: u64) -> Digest32 {
    let mut d = [0u8; 32];
    d[..8].copy_from_slice(&i.to_le_bytes());
    leaf_hash(&Digest32(d), &Digest32([1; 32]), &Digest32::ZERO)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("merkle");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("append_10k", |b| {
        b.iter_batched(
            MerkleTree::new,
            |mut t| {
                for i in 0..10_000 {
                    t.append(leaf(i));
                }
                t
            },
            BatchSize::SmallInput,
        )
    });
    let mut t = MerkleTree::new();
    for i in 0..1_000_000 {
        t.append(leaf(i));
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("root_1m", |b| b.iter(|| t.root().unwrap()));
    let mut i = 0u64;
    g.bench_function("inclusion_proof_1m", |b| {
        b.iter(|| {
            i = (i + 7919) % 1_000_000;
            t.inclusion_proof(i, 1_000_000).unwrap()
        })
    });
    let p = t.inclusion_proof(123_456, 1_000_000).unwrap();
    let l = leaf(123_456);
    g.bench_function("verify_inclusion_1m", |b| {
        b.iter(|| root_from_inclusion(&l, &p.path))
    });
    g.bench_function("consistency_proof_1m", |b| {
        b.iter(|| t.consistency_proof(654_321, 1_000_000).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
