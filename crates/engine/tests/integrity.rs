//! End-to-end over real files: write a ledger through the engine, then audit it,
//! corrupt it byte by byte, tear its tail, restart from it.

use covenant_types::SeqNo;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use covenant_crypto::{Curve, LedgerSecret, NodeIdentity, ServiceIdentity};
use covenant_engine::{audit_ledger, Engine, EngineConfig, TxStatus};
use covenant_test_support::Fixture;
use covenant_types::{TxId, View};

fn config(f: &Fixture, chunk: u64, sig: u64) -> EngineConfig {
    let mut c = EngineConfig::new(f.dir.path().join("ledger"));
    c.chunk_threshold_bytes = chunk;
    c.sig_tx_interval = sig;
    c
}

fn write_entries(engine: &mut Engine, n: u64, tag: &str) -> Vec<TxId> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut tx = engine.begin();
        tx.put(
            "entries",
            format!("{tag}{i}").as_bytes(),
            format!("secret contents {tag} {i}").as_bytes(),
        );
        tx.put("public:index", format!("{tag}{i}").as_bytes(), b"1");
        out.push(engine.commit_tx(tx, None).unwrap());
    }
    out
}

fn committed_chunks(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .ends_with(".committed")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn audit_passes_and_restart_keeps_everything() {
    let f = Fixture::new();
    let mut e = Engine::open(config(&f, 2048, 7), f.node.clone(), f.secret.clone()).unwrap();
    let txids = write_entries(&mut e, 60, "a");
    e.emit_signature().unwrap();
    let committed = e.flush().unwrap();
    assert_eq!(committed, e.last_txid().unwrap().seqno);
    for t in &txids {
        assert_eq!(e.status(*t).unwrap(), TxStatus::Committed);
    }
    assert_eq!(e.status(TxId::new(9, 3)).unwrap(), TxStatus::Invalid);
    assert_eq!(e.status(TxId::new(1, 10_000)).unwrap(), TxStatus::Unknown);
    // Pending until a signature covers it and is durable.
    let extra = write_entries(&mut e, 1, "p")[0];
    assert_eq!(e.status(extra).unwrap(), TxStatus::Pending);
    assert!(e.receipt(extra).unwrap().receipt.is_none());
    e.flush().unwrap();
    drop(e);

    let dir = f.dir.path().join("ledger");
    assert!(!committed_chunks(&dir).is_empty(), "chunks were committed");
    let report = audit_ledger(&dir, &f.service.cert, |_, _| {}).unwrap();
    assert_eq!(report.entries, 61 + 60 / 7 + 1);
    assert_eq!(report.unsigned_tail, 1);
    assert_eq!(report.signing_nodes, 1);
    // Another service's cert: every signature is refused.
    let other = ServiceIdentity::generate(Curve::P384).unwrap();
    let err = audit_ledger(&dir, &other.cert, |_, _| {}).unwrap_err();
    assert!(err.reason.contains("not endorsed"), "{err}");

    // Restart: same state, same receipts, a later view.
    let mut e = Engine::open(config(&f, 2048, 7), f.node.clone(), f.secret.clone()).unwrap();
    assert_eq!(e.view(), View(2));
    assert_eq!(
        e.store().get("entries", b"a59"),
        Some(b"secret contents a 59".to_vec())
    );
    assert_eq!(e.status(txids[0]).unwrap(), TxStatus::Committed);
    assert!(e.receipt(txids[3]).unwrap().receipt.is_some());
    // The unsigned tail from before the restart is signed in the new view.
    let t = write_entries(&mut e, 1, "b")[0];
    assert_eq!(t.view, View(2));
    e.emit_signature().unwrap();
    e.flush().unwrap();
    assert_eq!(e.status(extra).unwrap(), TxStatus::Committed);
    drop(e);
    audit_ledger(&dir, &f.service.cert, |_, _| {}).unwrap();
}

#[test]
fn private_contents_never_reach_the_disk_in_clear() {
    let f = Fixture::new();
    let mut e = Engine::open(config(&f, 1 << 20, 10), f.node.clone(), f.secret.clone()).unwrap();
    write_entries(&mut e, 20, "z");
    e.emit_signature().unwrap();
    e.flush().unwrap();
    for entry in std::fs::read_dir(f.dir.path().join("ledger")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(15).any(|w| w == b"secret contents"));
    }
    // With another ledger secret the ledger cannot be opened (private writes do not decrypt).
    let wrong = Arc::new(LedgerSecret::generate().unwrap());
    assert!(Engine::open(config(&f, 1 << 20, 10), f.node.clone(), wrong).is_err());
}

/// Every single flipped byte of a committed chunk is caught by the audit.
#[test]
fn audit_rejects_every_flipped_byte_of_a_committed_chunk() {
    let f = Fixture::new();
    let mut e = Engine::open(config(&f, 1024, 4), f.node.clone(), f.secret.clone()).unwrap();
    write_entries(&mut e, 40, "f");
    e.emit_signature().unwrap();
    e.flush().unwrap();
    drop(e);
    let dir = f.dir.path().join("ledger");
    audit_ledger(&dir, &f.service.cert, |_, _| {}).unwrap();
    let chunks = committed_chunks(&dir);
    assert!(chunks.len() >= 2);
    // The second committed chunk: the first one's neighbours on both sides matter.
    let target = &chunks[1];
    let original = std::fs::read(target).unwrap();
    let mut bytes = original.clone();
    let mut refused = 0;
    for i in 0..bytes.len() {
        bytes[i] ^= 0x01 << (i % 8);
        std::fs::write(target, &bytes).unwrap();
        let r = audit_ledger(&dir, &f.service.cert, |_, _| {});
        assert!(
            r.is_err(),
            "flipping byte {i} of {} went undetected",
            target.display()
        );
        refused += 1;
        bytes[i] = original[i];
    }
    std::fs::write(target, &original).unwrap();
    audit_ledger(&dir, &f.service.cert, |_, _| {}).unwrap();
    assert_eq!(refused, original.len());
}

/// A forged but well-framed entry (valid checksum, wrong contents) is caught by the
/// Merkle root check and names the signature that no longer matches.
#[test]
fn audit_catches_a_rewritten_entry_with_valid_framing() {
    let f = Fixture::new();
    let mut e = Engine::open(config(&f, 1 << 20, 5), f.node.clone(), f.secret.clone()).unwrap();
    write_entries(&mut e, 9, "r");
    e.emit_signature().unwrap();
    e.flush().unwrap();
    drop(e);
    let dir = f.dir.path().join("ledger");
    // Rebuild the ledger with entry 3 replaced by a different (validly framed) entry.
    let entries: Vec<_> = {
        let (l, _) =
            covenant_ledger::Ledger::open(covenant_ledger::LedgerConfig::new(&dir)).unwrap();
        let last = l.last_seqno();
        l.read_range(SeqNo(1), last)
            .unwrap()
            .map(|x| x.unwrap())
            .collect()
    };
    let forged_dir = f.dir.path().join("forged");
    let (mut l, _) =
        covenant_ledger::Ledger::open(covenant_ledger::LedgerConfig::new(&forged_dir)).unwrap();
    for e in &entries {
        let mut payload = e.payload.clone();
        if e.txid.seqno.0 == 3 {
            let mut entry = covenant_kv::TxEntry::decode(&payload).unwrap();
            let mut ws = entry.public_write_set().unwrap();
            ws.put("public:index", b"r2", b"tampered");
            entry.public = ws.serialize();
            payload = entry.encode();
        }
        l.append(e.txid, e.is_signature, &payload).unwrap();
    }
    l.sync().unwrap();
    let err = audit_ledger(&forged_dir, &f.service.cert, |_, _| {}).unwrap_err();
    assert!(err.reason.contains("does not match the root"), "{err}");
    assert_eq!(
        err.txid.map(|t| t.seqno.0),
        Some(6),
        "the first signature after the forged entry"
    );
}

#[test]
fn torn_tail_is_recovered_without_losing_whole_entries() {
    let f = Fixture::new();
    let mut e = Engine::open(config(&f, 1 << 20, 1000), f.node.clone(), f.secret.clone()).unwrap();
    let first = write_entries(&mut e, 10, "t");
    e.emit_signature().unwrap();
    e.flush().unwrap();
    write_entries(&mut e, 5, "u");
    e.flush().unwrap();
    drop(e);
    let dir = f.dir.path().join("ledger");
    let open_chunk = std::fs::read_dir(&dir)
        .unwrap()
        .map(|x| x.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.starts_with("ledger_") && !n.contains('-') && !n.contains('.')
        })
        .expect("an open chunk");
    let len = std::fs::metadata(&open_chunk).unwrap().len();
    // Tear the last frame: drop its final 7 bytes.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&open_chunk)
        .unwrap();
    file.set_len(len - 7).unwrap();
    drop(file);
    let mut e = Engine::open(config(&f, 1 << 20, 1000), f.node.clone(), f.secret.clone()).unwrap();
    // 10 entries + 1 signature + 4 whole entries survive; the torn 5th is gone.
    assert_eq!(e.last_txid().unwrap().seqno.0, 15);
    for t in &first {
        assert_eq!(e.status(*t).unwrap(), TxStatus::Committed);
    }
    assert_eq!(
        e.store().get("entries", b"u3"),
        Some(b"secret contents u 3".to_vec())
    );
    assert_eq!(e.store().get("entries", b"u4"), None);
    let next = write_entries(&mut e, 1, "v")[0];
    assert_eq!(next.seqno.0, 16);
    e.emit_signature().unwrap();
    e.flush().unwrap();
    drop(e);
    audit_ledger(&dir, &f.service.cert, |_, _| {}).unwrap();
}

#[test]
fn old_receipts_survive_merkle_memory_flushing() {
    let f = Fixture::new();
    let mut c = config(&f, 1 << 20, 50);
    c.merkle_resident_leaves = 16;
    let mut e = Engine::open(c, f.node.clone(), f.secret.clone()).unwrap();
    let txids = write_entries(&mut e, 9000, "m");
    e.emit_signature().unwrap();
    e.flush().unwrap();
    // Leaf 1 sits in a flushed page; its receipt needs the page rebuilt from the ledger.
    let r = e.receipt(txids[0]).unwrap();
    assert!(r.receipt.is_some());
    let r2 = e.receipt(txids[8999]).unwrap();
    assert!(r2.receipt.is_some());
}

/// The backup write path: entries produced by one engine, applied by another, give
/// the same state, the same ledger bytes and receipts that verify on both.
#[test]
fn a_backup_applying_the_primary_entries_converges() {
    let f = Fixture::new();
    let mut primary = Engine::open(config(&f, 4096, 10), f.node.clone(), f.secret.clone()).unwrap();
    write_entries(&mut primary, 45, "k");
    primary.emit_signature().unwrap();
    primary.flush().unwrap();

    let backup_dir = f.dir.path().join("backup");
    let backup_node = Arc::new(NodeIdentity::generate(&f.service, Curve::P384, &[]).unwrap());
    let mut c = EngineConfig::new(&backup_dir);
    c.chunk_threshold_bytes = 4096;
    let mut backup = Engine::open(c, backup_node, f.secret.clone()).unwrap();
    let last = primary.ledger().last_seqno();
    for e in primary.ledger().read_range(SeqNo(1), last).unwrap() {
        let e = e.unwrap();
        backup
            .apply_entry(e.txid, e.is_signature, &e.payload)
            .unwrap();
    }
    // An entry that does not decode is refused and leaves nothing behind.
    let bad = backup.apply_entry(TxId::new(1, last.0 + 1), false, b"garbage");
    assert!(bad.is_err());
    assert_eq!(backup.ledger().last_seqno(), last);
    backup.flush().unwrap();
    assert_eq!(backup.store().snapshot(), primary.store().snapshot());
    assert_eq!(backup.committed_seqno(), primary.committed_seqno());
    let t = TxId::new(1, 7);
    assert_eq!(backup.receipt(t).unwrap(), primary.receipt(t).unwrap());
    audit_ledger(&backup_dir, &f.service.cert, |_, _| {}).unwrap();
}

#[test]
fn conflicts_and_forged_signatures_leave_the_engine_healthy() {
    let f = Fixture::new();
    let mut e = Engine::open(config(&f, 1 << 20, 100), f.node.clone(), f.secret.clone()).unwrap();
    let mut a = e.begin();
    let mut b = e.begin();
    assert_eq!(a.get("accounts", b"alice"), None);
    assert_eq!(b.get("accounts", b"alice"), None);
    a.put("accounts", b"alice", b"10");
    b.put("accounts", b"alice", b"20");
    e.commit_tx(a, None).unwrap();
    assert!(
        e.commit_tx(b, None).is_err(),
        "second writer must see a conflict"
    );
    // Only the engine may write the signatures map.
    let mut forged = e.begin();
    forged.put(
        covenant_receipt::SIGNATURES_MAP,
        covenant_receipt::SIGNATURE_KEY,
        b"{}",
    );
    assert!(e.commit_tx(forged, None).is_err());
    // Nothing was consumed by the refused transactions: seqnos stay gapless.
    let t = write_entries(&mut e, 1, "h")[0];
    assert_eq!(t.seqno.0, 2);
    e.emit_signature().unwrap();
    e.flush().unwrap();
    drop(e);
    let report = audit_ledger(&f.dir.path().join("ledger"), &f.service.cert, |_, _| {}).unwrap();
    assert_eq!(report.entries, 3);
    assert_eq!(report.signatures, 1);
}

#[test]
fn rolling_back_an_uncommitted_suffix_leaves_a_ledger_that_audits() {
    let f = Fixture::new();
    let mut engine =
        Engine::open(config(&f, 2048, 1000), f.node.clone(), f.secret.clone()).unwrap();
    let kept = write_entries(&mut engine, 20, "a");
    let sig = engine.emit_signature().unwrap();
    engine.flush().unwrap();
    assert_eq!(engine.committed_seqno(), sig.seqno);
    let lost = write_entries(&mut engine, 30, "b");
    engine.emit_signature().unwrap();
    // Not flushed: the suffix after the first signature is uncommitted.
    assert!(
        engine.rollback(sig.seqno.prev()).is_err(),
        "below committed"
    );
    engine.rollback(sig.seqno).unwrap();
    assert_eq!(engine.ledger().last_seqno(), sig.seqno);
    assert_eq!(engine.unsigned_txs(), 0);
    for t in &lost {
        assert_eq!(
            engine.store().get("entries", t.to_string().as_bytes()),
            None
        );
    }
    assert_eq!(engine.status(lost[0]).unwrap(), TxStatus::Unknown);
    // The next view writes over the same seqnos; old TxIds are undecided (this
    // suffix could still be rolled back) until the new ones commit: then Invalid.
    engine.set_view(View(2));
    let replaced = write_entries(&mut engine, 5, "c");
    assert_eq!(replaced[0].seqno, lost[0].seqno);
    assert_eq!(engine.status(lost[0]).unwrap(), TxStatus::Unknown);
    engine.emit_signature().unwrap();
    engine.flush().unwrap();
    assert_eq!(engine.status(lost[0]).unwrap(), TxStatus::Invalid);
    for t in kept.iter().chain(&replaced) {
        // Receipts come from the truncated-then-regrown tree (the audit below checks
        // every signed root against the entries on disk).
        engine.receipt(*t).unwrap();
    }
    drop(engine);
    audit_ledger(&f.dir.path().join("ledger"), &f.service.cert, |_, _| {}).unwrap();
    let reopened = Engine::open(config(&f, 2048, 1000), f.node.clone(), f.secret.clone()).unwrap();
    assert_eq!(
        reopened.last_txid(),
        Some(TxId::new(2, replaced[4].seqno.0 + 1))
    );
}
