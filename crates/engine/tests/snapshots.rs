//! Snapshots end to end over real files: produced only once committed, installed on
//! a fresh node that then follows the primary from the ledger suffix, tampering
//! refused, rollback interplay, receipts identical to a full replay.

use covenant_types::SeqNo;
use std::path::{Path, PathBuf};

use covenant_crypto::{Curve, LedgerSecret, ServiceIdentity};
use covenant_engine::{
    audit_ledger, audit_ledger_with_snapshot, install_snapshot, Engine, EngineConfig, EngineError,
    SnapshotFile, TxStatus,
};
use covenant_test_support::Fixture;
use covenant_types::{TxId, View};

/// A node's data directory `<tmp>/<name>` with `ledger/` and `snapshots/`.
fn config(f: &Fixture, name: &str, sig: u64, snap: u64) -> EngineConfig {
    let home = f.dir.path().join(name);
    let mut c = EngineConfig::new(home.join("ledger"));
    c.chunk_threshold_bytes = 2048;
    c.sig_tx_interval = sig;
    c.snapshot_dir = Some(home.join("snapshots"));
    c.snapshot_tx_interval = snap;
    c.service_cert = Some(f.service.cert.clone());
    c
}

fn open(f: &Fixture, c: &EngineConfig) -> Engine {
    Engine::open(c.clone(), f.node.clone(), f.secret.clone()).unwrap()
}

fn write_entries(engine: &mut Engine, n: u64, tag: &str) -> Vec<TxId> {
    (0..n)
        .map(|i| {
            let mut tx = engine.begin();
            tx.put("entries", format!("{tag}{i}").as_bytes(), b"private value");
            tx.put(
                "public:index",
                format!("{tag}{}", i % 13).as_bytes(),
                &[i as u8],
            );
            engine.commit_tx(tx, None).unwrap()
        })
        .collect()
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort_by_key(|n| {
        n.trim_start_matches("snapshot_")
            .trim_end_matches(".committed")
            .parse::<u64>()
            .unwrap_or(0)
    });
    v
}

fn snap_dir(c: &EngineConfig) -> PathBuf {
    c.snapshot_dir.clone().unwrap()
}

/// Feeds `to` the entries of `from`'s ledger after `to`'s last seqno.
fn follow(from: &Engine, to: &mut Engine) {
    let (next, last) = (to.last_seqno().0 + 1, from.last_seqno());
    for e in from.ledger().read_range(SeqNo(next), last).unwrap() {
        let e = e.unwrap();
        to.apply_entry(e.txid, e.is_signature, &e.payload).unwrap();
    }
}

#[test]
fn a_snapshot_is_written_only_once_its_signature_commits() {
    let f = Fixture::new();
    let c = config(&f, "a", 7, 20);
    let mut a = open(&f, &c);
    write_entries(&mut a, 21, "x");
    // Signatures at 8, 16, 24: the one at 24 is the first 20 seqnos in.
    assert_eq!(
        a.signature_seqnos().collect::<Vec<_>>(),
        [SeqNo(8), SeqNo(16), SeqNo(24)]
    );
    assert!(snapshot_files(&snap_dir(&c)).is_empty());
    assert_eq!(a.latest_snapshot(), None);
    a.flush().unwrap();
    assert_eq!(snapshot_files(&snap_dir(&c)), ["snapshot_24.committed"]);
    let (txid, path) = a.latest_snapshot().unwrap();
    assert_eq!(txid, TxId::new(1, 24));
    assert_eq!(path, snap_dir(&c).join("snapshot_24.committed"));
    let info = SnapshotFile::decode(&std::fs::read(&path).unwrap())
        .unwrap()
        .verify(&f.service.cert, Some(&f.secret))
        .unwrap();
    assert_eq!(info.txid, txid);
    assert!(info.private_checked);
    assert_eq!(info.signature.seqno, SeqNo(24));
    // Without the secret only the public parts are checked.
    let info = SnapshotFile::decode(&std::fs::read(&path).unwrap())
        .unwrap()
        .verify(&f.service.cert, None)
        .unwrap();
    assert!(!info.private_checked);
    // The private contents are encrypted inside.
    let bytes = std::fs::read(&path).unwrap();
    assert!(!bytes.windows(13).any(|w| w == b"private value"));

    // A full ledger (from seqno 1) replays and ignores the snapshots; the listing
    // survives the reopen and the interval counts from the newest file.
    drop(a);
    let mut a = open(&f, &c);
    assert_eq!(a.first_seqno(), SeqNo(1));
    assert_eq!(a.snapshot_base(), None);
    assert_eq!(a.latest_snapshot().unwrap().0, TxId::new(1, 24));
    write_entries(&mut a, 14, "y");
    a.emit_signature().unwrap();
    a.flush().unwrap();
    assert_eq!(
        snapshot_files(&snap_dir(&c)),
        ["snapshot_24.committed"],
        "{:?}",
        a.signature_seqnos().collect::<Vec<_>>()
    );
    // Only the newest two are kept.
    for _ in 0..4 {
        write_entries(&mut a, 20, "z");
        a.flush().unwrap();
    }
    let files = snapshot_files(&snap_dir(&c));
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(
        a.latest_snapshot().unwrap().1,
        snap_dir(&c).join(files.last().unwrap())
    );
}

#[test]
fn a_node_starts_from_a_snapshot_and_agrees_with_a_full_replay() {
    let f = Fixture::new();
    let ca = config(&f, "a", 10, 30);
    let mut a = open(&f, &ca);
    write_entries(&mut a, 40, "a");
    a.flush().unwrap();
    let (base, path) = a.latest_snapshot().unwrap();
    assert_eq!(base, TxId::new(1, 33));
    write_entries(&mut a, 25, "b");
    a.emit_signature().unwrap();
    a.flush().unwrap();

    // Only the snapshot bytes go to the new node.
    let bytes = std::fs::read(&path).unwrap();
    let cb = config(&f, "b", 10, 1_000);
    assert_eq!(
        install_snapshot(
            &snap_dir(&cb),
            &bytes,
            &f.service.cert,
            &f.secret.clone().into()
        )
        .unwrap(),
        base
    );
    let mut b = open(&f, &cb);
    assert_eq!(b.snapshot_base(), Some(base));
    assert_eq!(b.first_seqno(), SeqNo(34));
    assert_eq!(b.last_seqno(), SeqNo(33));
    assert_eq!(b.last_txid(), Some(base));
    assert_eq!(b.committed_seqno(), SeqNo(33));
    assert_eq!(b.view_at(SeqNo(33)), Some(View(1)));
    assert_eq!(b.view_at(SeqNo(32)), None);
    assert_eq!(b.view_at(SeqNo(34)), None);
    assert_eq!(b.view(), View(2));
    assert_eq!(b.ledger().last_txid(), Some(base));

    follow(&a, &mut b);
    b.flush().unwrap();
    assert_eq!(b.store().snapshot(), a.store().snapshot());
    assert_eq!(b.committed_seqno(), a.committed_seqno());
    assert!(std::fs::read_dir(cb.ledger_dir.clone()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("ledger_34-")));
    let check = |a: &mut Engine, b: &mut Engine| {
        for s in 34..=a.last_seqno().0 {
            let t = TxId::new(a.view_at(SeqNo(s)).unwrap().0, s);
            let ra = a.receipt(t).unwrap();
            assert_eq!(b.receipt(t).unwrap(), ra, "receipt of {t}");
            assert_eq!(b.read_tx(SeqNo(s)).unwrap(), a.read_tx(SeqNo(s)).unwrap());
            assert_eq!(b.status(t).unwrap(), a.status(t).unwrap());
        }
        let sigs: Vec<SeqNo> = a.signature_seqnos().filter(|&s| s > SeqNo(33)).collect();
        let (old, new) = (sigs[0], *sigs.last().unwrap());
        assert_eq!(
            b.consistency(old, new).unwrap(),
            a.consistency(old, new).unwrap()
        );
        assert!(matches!(
            b.consistency(SeqNo(33), new),
            Err(EngineError::NotHeld(SeqNo(33)))
        ));
        assert!(matches!(
            b.consistency(SeqNo(20), new),
            Err(EngineError::NotHeld(SeqNo(20)))
        ));
    };
    check(&mut a, &mut b);

    // What came before the snapshot is refused cleanly.
    let early = TxId::new(1, 5);
    assert!(matches!(
        b.receipt(early),
        Err(EngineError::NotHeld(SeqNo(5)))
    ));
    assert!(matches!(
        b.read_tx(SeqNo(5)),
        Err(EngineError::NotHeld(SeqNo(5)))
    ));
    assert!(matches!(
        b.status(early),
        Err(EngineError::NotHeld(SeqNo(5)))
    ));
    assert_eq!(b.status(base).unwrap(), TxStatus::Committed);
    assert_eq!(b.status(TxId::new(2, 33)).unwrap(), TxStatus::Invalid);
    assert!(matches!(
        b.receipt(base),
        Err(EngineError::NotHeld(SeqNo(33)))
    ));
    assert!(b.rollback(SeqNo(20)).is_err());
    assert!(b.rollback(SeqNo(33)).is_err(), "the base is committed");

    // B restarts from its ledger (which starts at 34) and the snapshot.
    drop(b);
    let mut b = open(&f, &cb);
    assert_eq!(b.snapshot_base(), Some(base));
    assert_eq!(b.first_seqno(), SeqNo(34));
    assert_eq!(b.store().snapshot(), a.store().snapshot());
    check(&mut a, &mut b);

    // It keeps following, and its own snapshots start to appear.
    b.request_snapshot();
    write_entries(&mut a, 12, "c");
    a.flush().unwrap();
    follow(&a, &mut b);
    b.flush().unwrap();
    assert_eq!(b.store().snapshot(), a.store().snapshot());
    let sig = *a.signature_seqnos().collect::<Vec<_>>().last().unwrap();
    assert_eq!(b.latest_snapshot().unwrap().0.seqno.0, sig.0);
    check(&mut a, &mut b);
    drop(b);

    // The audit finds the snapshot beside the ledger, or is told where it is.
    let report = audit_ledger(&cb.ledger_dir, &f.service.cert, |_, _| {}).unwrap();
    assert_eq!(report.snapshot, Some(base));
    assert_eq!(report.entries, a.last_seqno().0 - 33);
    let moved = f.dir.path().join("elsewhere.snap");
    std::fs::copy(&path, &moved).unwrap();
    std::fs::remove_file(snap_dir(&cb).join("snapshot_33.committed")).unwrap();
    let err = audit_ledger(&cb.ledger_dir, &f.service.cert, |_, _| {}).unwrap_err();
    assert!(err.reason.contains("snapshot_33.committed"), "{err}");
    let report =
        audit_ledger_with_snapshot(&cb.ledger_dir, Some(&moved), &f.service.cert, |_, _| {})
            .unwrap();
    assert_eq!(report.snapshot, Some(base));
    // And the engine cannot open a ledger whose snapshot is gone.
    let err = Engine::open(cb.clone(), f.node.clone(), f.secret.clone()).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::MissingSnapshot {
                first: SeqNo(34),
                ..
            }
        ),
        "{err}"
    );
    // A snapshot that is not the one the ledger continues is refused by the audit.
    let other = a.latest_snapshot().unwrap().1;
    let err = audit_ledger_with_snapshot(&cb.ledger_dir, Some(&other), &f.service.cert, |_, _| {})
        .unwrap_err();
    assert!(err.reason.contains("starts at seqno 34"), "{err}");
    // A full ledger audits as before, with no snapshot.
    let report = audit_ledger(&ca.ledger_dir, &f.service.cert, |_, _| {}).unwrap();
    assert_eq!(report.snapshot, None);
}

/// Receipts whose proofs cross the snapshot's last page, after the tree flushed it
/// from memory, match a full replay byte for byte.
#[test]
fn receipts_across_the_snapshot_page_after_flushing_match_a_full_replay() {
    let f = Fixture::new();
    let mut ca = config(&f, "a", 100, 4100);
    ca.chunk_threshold_bytes = 1 << 20;
    let mut a = open(&f, &ca);
    write_entries(&mut a, 4150, "p");
    a.flush().unwrap();
    // Signatures every 101 seqnos: 41 * 101 is the first past 4100, in page 1.
    let (base, path) = a.latest_snapshot().unwrap();
    assert_eq!(base.seqno.0, 4141);
    write_entries(&mut a, 4300, "q");
    a.emit_signature().unwrap();
    a.flush().unwrap();

    let mut cb = config(&f, "b", 100, 1 << 40);
    cb.chunk_threshold_bytes = 1 << 20;
    cb.merkle_resident_leaves = 0;
    install_snapshot(
        &snap_dir(&cb),
        &std::fs::read(path).unwrap(),
        &f.service.cert,
        &f.secret.clone().into(),
    )
    .unwrap();
    let mut b = open(&f, &cb);
    follow(&a, &mut b);
    b.flush().unwrap();
    assert!(b.committed_seqno() > SeqNo(8192), "page 1 is flushed on B");
    let mut seqnos: Vec<u64> = (4142..4200)
        .chain((4142..=a.last_seqno().0).step_by(97))
        .collect();
    seqnos.extend([4141 + 1, 8191, 8192, 8193, a.committed_seqno().0 - 1]);
    let committed = a.committed_seqno();
    for s in seqnos.into_iter().filter(|&s| s < committed.0) {
        let t = TxId::new(a.view_at(SeqNo(s)).unwrap().0, s);
        let ra = a.receipt(t).unwrap();
        assert!(ra.receipt.is_some(), "{t}");
        assert_eq!(b.receipt(t).unwrap(), ra, "receipt of {t}");
    }
    let sigs: Vec<SeqNo> = a.signature_seqnos().filter(|&s| s > SeqNo(4141)).collect();
    assert_eq!(
        b.consistency(sigs[0], *sigs.last().unwrap()).unwrap(),
        a.consistency(sigs[0], *sigs.last().unwrap()).unwrap()
    );
    // After a reopen (the tree comes from the checkpoint again) too.
    drop(b);
    let mut b = open(&f, &cb);
    let t = TxId::new(1, 4150);
    assert_eq!(b.receipt(t).unwrap(), a.receipt(t).unwrap());
}

#[test]
fn tampered_snapshots_are_refused_by_install_and_open() {
    let f = Fixture::new();
    let ca = config(&f, "a", 10, 30);
    let mut a = open(&f, &ca);
    write_entries(&mut a, 40, "t");
    a.flush().unwrap();
    let (base, path) = a.latest_snapshot().unwrap();
    let good = std::fs::read(&path).unwrap();
    let target = f.dir.path().join("target");
    let install =
        |bytes: &[u8]| install_snapshot(&target, bytes, &f.service.cert, &f.secret.clone().into());

    // Flipped bytes (header, kv, tree, checksum), truncation, trailing bytes.
    for i in (0..good.len())
        .step_by(good.len() / 97 + 1)
        .chain([good.len() - 1])
    {
        let mut b = good.clone();
        b[i] ^= 0x20;
        assert!(install(&b).is_err(), "flip at {i}");
    }
    assert!(install(&good[..good.len() - 5]).is_err());
    let mut longer = good.clone();
    longer.push(1);
    assert!(install(&longer).is_err());

    // Well framed, wrong contents: a tree hash changed (root no longer the signed one),
    // the tree of another size, a state that is not right after a signature.
    let file = SnapshotFile::decode(&good).unwrap();
    let mut wrong_root = file.clone();
    let n = wrong_root.tree.len();
    wrong_root.tree[n - 7] ^= 1;
    let wrong_root = wrong_root.encode().unwrap();
    let err = install(&wrong_root).unwrap_err();
    assert!(err.to_string().contains("root"), "{err}");
    let mut t = file.clone();
    let mut tree = covenant_merkle::MerkleTree::new();
    tree.append(covenant_types::Digest32::ZERO);
    t.tree = tree.checkpoint();
    let err = install(&t.encode().unwrap()).unwrap_err();
    assert!(err.to_string().contains("leaves"), "{err}");
    let mut t = file.clone();
    t.kv = a
        .store()
        .snapshot()
        .unwrap()
        .to_bytes(Some(&f.secret))
        .unwrap();
    assert!(a.last_seqno() != base.seqno);
    assert!(install(&t.encode().unwrap()).is_err());

    // Another service's certificate, another ledger secret.
    let other = ServiceIdentity::generate(Curve::P384).unwrap();
    let err = install_snapshot(&target, &good, &other.cert, &f.secret.clone().into()).unwrap_err();
    assert!(err.to_string().contains("not endorsed"), "{err}");
    let wrong = LedgerSecret::generate().unwrap();
    assert!(install_snapshot(&target, &good, &f.service.cert, &wrong.into()).is_err());
    assert!(snapshot_files(&target).is_empty(), "nothing was installed");

    // The engine refuses the same when it finds them on disk.
    let cb = config(&f, "b", 10, 30);
    std::fs::create_dir_all(snap_dir(&cb)).unwrap();
    let on_disk = snap_dir(&cb).join(format!("snapshot_{}.committed", base.seqno.0));
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(&on_disk, &bad).unwrap();
    let err = Engine::open(cb.clone(), f.node.clone(), f.secret.clone()).unwrap_err();
    assert!(matches!(err, EngineError::BadSnapshot(_)), "{err}");
    std::fs::write(&on_disk, &wrong_root).unwrap();
    let err = Engine::open(cb.clone(), f.node.clone(), f.secret.clone()).unwrap_err();
    assert!(err.to_string().contains("root"), "{err}");
    // A header that disagrees with the name is never started from either.
    std::fs::write(&on_disk, t.encode().unwrap()).unwrap();
    assert!(Engine::open(cb.clone(), f.node.clone(), f.secret.clone()).is_err());
    // Endorsed by another service: refused when the engine knows the service cert.
    std::fs::write(&on_disk, &good).unwrap();
    let mut strict = cb.clone();
    strict.service_cert = Some(other.cert.clone());
    let err = Engine::open(strict, f.node.clone(), f.secret.clone()).unwrap_err();
    assert!(err.to_string().contains("not endorsed"), "{err}");
    // Without a service cert only the endorsement is skipped.
    let mut lax = cb.clone();
    lax.service_cert = None;
    let b = Engine::open(lax, f.node.clone(), f.secret.clone()).unwrap();
    assert_eq!(b.snapshot_base(), Some(base));
    drop(b);
    // A newer invalid snapshot is skipped in favour of an older valid one.
    let newer = snap_dir(&cb).join("snapshot_999.committed");
    std::fs::write(&newer, &bad).unwrap();
    let b = Engine::open(cb.clone(), f.node.clone(), f.secret.clone()).unwrap();
    assert_eq!(b.snapshot_base(), Some(base));
}

#[test]
fn rollback_drops_a_pending_snapshot() {
    let f = Fixture::new();
    let mut c = config(&f, "a", 1_000, 1 << 40);
    c.commit_on_sync = false;
    let mut a = open(&f, &c);
    write_entries(&mut a, 10, "r");
    let s1 = a.emit_signature().unwrap();
    a.flush().unwrap();
    a.advance_commit(s1.seqno).unwrap();
    assert!(snapshot_files(&snap_dir(&c)).is_empty(), "none requested");

    a.request_snapshot();
    write_entries(&mut a, 5, "s");
    let s2 = a.emit_signature().unwrap();
    a.flush().unwrap();
    // The suffix with the captured signature is lost in a view change.
    a.rollback(s1.seqno).unwrap();
    a.set_view(View(5));
    write_entries(&mut a, 7, "u");
    let s3 = a.emit_signature().unwrap();
    assert!(s3.seqno > s2.seqno);
    a.flush().unwrap();
    a.advance_commit(s3.seqno).unwrap();
    assert!(
        snapshot_files(&snap_dir(&c)).is_empty(),
        "the capture was dropped"
    );

    // A request survives until the next signature; it is written once committed.
    a.request_snapshot();
    write_entries(&mut a, 3, "v");
    let s4 = a.emit_signature().unwrap();
    a.flush().unwrap();
    assert!(snapshot_files(&snap_dir(&c)).is_empty());
    a.advance_commit(s4.seqno).unwrap();
    assert_eq!(
        snapshot_files(&snap_dir(&c)),
        [format!("snapshot_{}.committed", s4.seqno.0)]
    );
    assert_eq!(a.latest_snapshot().unwrap().0, s4);
    // Only one per request.
    write_entries(&mut a, 3, "w");
    let s5 = a.emit_signature().unwrap();
    a.flush().unwrap();
    a.advance_commit(s5.seqno).unwrap();
    assert_eq!(snapshot_files(&snap_dir(&c)).len(), 1);

    // A node started from that snapshot keeps it however many follow.
    let cb = config(&f, "b", 1_000, 1);
    let bytes = std::fs::read(a.latest_snapshot().unwrap().1).unwrap();
    install_snapshot(
        &snap_dir(&cb),
        &bytes,
        &f.service.cert,
        &f.secret.clone().into(),
    )
    .unwrap();
    let mut b = open(&f, &cb);
    for _ in 0..4 {
        write_entries(&mut b, 3, "x");
        b.emit_signature().unwrap();
        b.flush().unwrap();
    }
    let files = snapshot_files(&snap_dir(&cb));
    assert_eq!(files.len(), 3, "{files:?}");
    assert_eq!(files[0], format!("snapshot_{}.committed", s4.seqno.0));
    drop(b);
    let b = open(&f, &cb);
    assert_eq!(b.snapshot_base(), Some(s4));
}

#[test]
fn a_failed_snapshot_write_does_not_fail_the_commit() {
    let f = Fixture::new();
    let c = config(&f, "a", 5, 10);
    let mut a = open(&f, &c);
    // The snapshot directory becomes unusable (a file where it should be).
    std::fs::create_dir_all(snap_dir(&c)).unwrap();
    std::fs::remove_dir(snap_dir(&c)).unwrap();
    std::fs::write(snap_dir(&c), b"not a directory").unwrap();
    write_entries(&mut a, 20, "e");
    assert_eq!(a.flush().unwrap(), a.last_seqno());
    assert_eq!(a.latest_snapshot(), None);
    assert_eq!(a.status(TxId::new(1, 3)).unwrap(), TxStatus::Committed);
}
