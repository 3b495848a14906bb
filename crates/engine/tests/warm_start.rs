//! A node that holds its whole ledger starts from its newest snapshot and replays
//! only the suffix: everything it answers must be what a full replay answers.

use std::path::Path;

use covenant_engine::{Engine, EngineConfig, SnapshotFile};
use covenant_test_support::Fixture;
use covenant_types::{SeqNo, TxId};
use proptest::prelude::*;

const MAPS: [&str; 3] = ["entries", "public:index", "public:ccf.internal.signatures"];

fn config(home: &Path, snapshots: bool) -> EngineConfig {
    let mut c = EngineConfig::new(home.join("ledger"));
    c.chunk_threshold_bytes = 1024;
    c.sig_tx_interval = 1000;
    // Keep few leaves resident so receipts also rebuild flushed pages.
    c.merkle_resident_leaves = 8;
    if snapshots {
        c.snapshot_dir = Some(home.join("snapshots"));
        c.snapshot_tx_interval = 6;
    }
    c
}

fn open(f: &Fixture, c: &EngineConfig) -> Engine {
    let mut c = c.clone();
    c.service_cert = Some(f.service.cert.clone());
    Engine::open(c, f.node.clone(), f.secret.clone()).unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Put { private: bool, key: u8, value: u8 },
    Remove { key: u8 },
    Signature,
    Flush,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), 0u8..12, any::<u8>())
            .prop_map(|(private, key, value)| Op::Put { private, key, value }),
        1 => (0u8..12).prop_map(|key| Op::Remove { key }),
        2 => Just(Op::Signature),
        2 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

fn run(f: &Fixture, c: &EngineConfig, ops: &[Op]) {
    let mut e = open(f, c);
    for op in ops {
        match *op {
            Op::Put {
                private,
                key,
                value,
            } => {
                let mut tx = e.begin();
                let map = if private { "entries" } else { "public:index" };
                tx.put(map, &[key], &[value]);
                e.commit_tx(tx, None).unwrap();
            }
            Op::Remove { key } => {
                let mut tx = e.begin();
                tx.remove("entries", &[key]);
                tx.remove("public:index", &[key]);
                e.commit_tx(tx, None).unwrap();
            }
            Op::Signature => {
                if e.last_seqno() > SeqNo::ZERO {
                    e.emit_signature().unwrap();
                }
            }
            Op::Flush => {
                e.flush().unwrap();
            }
            Op::Reopen => {
                e.flush().unwrap();
                drop(e);
                e = open(f, c);
            }
        }
    }
    if e.last_seqno() > SeqNo::ZERO {
        e.emit_signature().unwrap();
    }
    e.flush().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for ent in std::fs::read_dir(from).unwrap() {
        let ent = ent.unwrap();
        std::fs::copy(ent.path(), to.join(ent.file_name())).unwrap();
    }
}

/// Everything a node answers about its history, as comparable values.
fn answers(e: &mut Engine) -> Vec<String> {
    let mut out = vec![
        format!(
            "last {:?} committed {:?}",
            e.last_txid(),
            e.committed_seqno()
        ),
        format!("views {:?}", e.view_runs()),
        format!("sigs {:?}", e.signature_seqnos().collect::<Vec<_>>()),
    ];
    for m in MAPS {
        out.push(format!("{m}: {:?}", e.store().entries(m)));
        for (k, _) in e.store().entries(m) {
            out.push(format!("{m}/{k:?} @ {:?}", e.store().version_of(m, &k)));
        }
    }
    for s in 1..=e.last_seqno().0 {
        let view = e.view_at(SeqNo(s)).unwrap();
        let txid = TxId::new(view.0, s);
        out.push(format!("{txid} {:?}", e.status(txid).unwrap()));
        out.push(format!("{:?}", e.read_tx(SeqNo(s)).unwrap()));
        let r = e.receipt(txid).unwrap();
        out.push(serde_json::to_string(&r).unwrap());
    }
    let sigs: Vec<SeqNo> = e.signature_seqnos().collect();
    for w in sigs.windows(2) {
        let (_, _, proof) = e.consistency(w[0], w[1]).unwrap();
        out.push(format!("{proof:?}"));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn restart_from_snapshot_and_suffix_answers_as_a_full_replay(
        ops in proptest::collection::vec(op(), 1..120)
    ) {
        let f = Fixture::new();
        let home = f.dir.path().join("node");
        let c = config(&home, true);
        run(&f, &c, &ops);
        // The same ledger, alone, replays from seqno 1.
        let bare = f.dir.path().join("bare");
        copy_dir(&home.join("ledger"), &bare.join("ledger"));
        let mut warm = open(&f, &c);
        let mut full = open(&f, &config(&bare, false));
        prop_assert_eq!(full.loaded_from(), None);
        let newest = warm.latest_snapshot().map(|(t, _)| t);
        prop_assert_eq!(warm.loaded_from(), newest);
        prop_assert_eq!(warm.first_seqno(), SeqNo(1));
        prop_assert_eq!(answers(&mut warm), answers(&mut full));
        // Both carry on alike.
        for i in 0..3u8 {
            let mut a = warm.begin();
            a.put("entries", &[100 + i], b"after");
            let mut b = full.begin();
            b.put("entries", &[100 + i], b"after");
            prop_assert_eq!(warm.commit_tx(a, None).unwrap(), full.commit_tx(b, None).unwrap());
        }
        prop_assert_eq!(warm.store().entries("entries"), full.store().entries("entries"));
    }
}

#[test]
fn a_whole_ledger_starts_from_its_newest_snapshot_and_skips_a_foreign_one() {
    let f = Fixture::new();
    let home = f.dir.path().join("node");
    let c = config(&home, true);
    let ops: Vec<Op> = (0..40u8)
        .flat_map(|i| {
            [
                Op::Put {
                    private: i % 2 == 0,
                    key: i % 7,
                    value: i,
                },
                if i % 4 == 3 { Op::Signature } else { Op::Flush },
            ]
        })
        .collect();
    run(&f, &c, &ops);
    let snaps = snapshot_names(&home);
    assert!(snaps.len() >= 2, "{snaps:?}");
    let e = open(&f, &c);
    let newest = e.latest_snapshot().unwrap().0;
    assert_eq!(e.loaded_from(), Some(newest));
    drop(e);

    // A snapshot that does not match the ledger at its seqno (another ledger's, or
    // rewritten) is passed over for an older one; a corrupt one too.
    let other = f.dir.path().join("other");
    let oc = config(&other, true);
    run(&f, &oc, &ops);
    let dir = c.snapshot_dir.clone().unwrap();
    let newest_name = format!("snapshot_{}.committed", newest.seqno.0);
    let foreign = other.join("snapshots").join(&newest_name);
    if foreign.exists() {
        std::fs::copy(&foreign, dir.join(&newest_name)).unwrap();
        let e = open(&f, &c);
        let loaded = e.loaded_from().unwrap();
        assert!(
            loaded.seqno < newest.seqno,
            "{loaded} used a foreign snapshot"
        );
        drop(e);
    }
    let mut bytes = std::fs::read(dir.join(&newest_name)).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(dir.join(&newest_name), &bytes).unwrap();
    let e = open(&f, &c);
    assert!(e.loaded_from().unwrap().seqno < newest.seqno);
    drop(e);
    // With no usable snapshot left, the whole ledger is replayed.
    for n in snapshot_names(&home) {
        std::fs::write(dir.join(n), b"garbage").unwrap();
    }
    let e = open(&f, &c);
    assert_eq!(e.loaded_from(), None);
    assert_eq!(e.first_seqno(), SeqNo(1));
}

#[test]
fn the_snapshot_records_every_signature_and_view_before_it() {
    let f = Fixture::new();
    let home = f.dir.path().join("node");
    let c = config(&home, true);
    let ops: Vec<Op> = (0..30u8)
        .flat_map(|i| {
            [
                Op::Put {
                    private: false,
                    key: i,
                    value: i,
                },
                if i % 5 == 0 {
                    Op::Reopen
                } else {
                    Op::Signature
                },
            ]
        })
        .collect();
    run(&f, &c, &ops);
    let mut e = open(&f, &c);
    let (txid, path) = e.latest_snapshot().unwrap();
    let file = SnapshotFile::decode(&std::fs::read(path).unwrap()).unwrap();
    let index = covenant_engine::SnapshotIndex::decode(&file.index, txid).unwrap();
    let sigs: Vec<u64> = e
        .signature_seqnos()
        .map(|s| s.0)
        .filter(|&s| s <= txid.seqno.0)
        .collect();
    assert_eq!(index.signatures, sigs);
    let runs: Vec<_> = e
        .view_runs()
        .iter()
        .copied()
        .filter(|(s, _)| *s <= txid.seqno)
        .collect();
    assert_eq!(index.view_runs, runs);
    assert!(runs.len() > 3, "reopens start new views: {runs:?}");
    // Receipts of the earliest transactions still come from the ledger.
    let r = e.receipt(TxId::new(1, 1)).unwrap();
    assert!(r.receipt.is_some());
}

fn snapshot_names(home: &Path) -> Vec<String> {
    std::fs::read_dir(home.join("snapshots"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default()
}
