//! Ledger secrets over time: after a new secret is added, transactions are sealed
//! under it while every earlier one stays readable under its own; a reopen needs the
//! whole chain; snapshots and receipts work across the boundary; a follower needs
//! the new secret before it can apply what the primary sealed with it.

use std::sync::Arc;

use covenant_crypto::{LedgerSecret, LedgerSecrets};
use covenant_engine::{audit_ledger, Engine, EngineConfig, EngineError};
use covenant_test_support::Fixture;
use covenant_types::{SeqNo, TxId};

fn config(f: &Fixture, name: &str) -> EngineConfig {
    let home = f.dir.path().join(name);
    let mut c = EngineConfig::new(home.join("ledger"));
    c.chunk_threshold_bytes = 2048;
    c.sig_tx_interval = 5;
    c.snapshot_dir = Some(home.join("snapshots"));
    c.snapshot_tx_interval = 8;
    c.service_cert = Some(f.service.cert.clone());
    c
}

fn write(engine: &mut Engine, n: u64, tag: &str) -> Vec<TxId> {
    (0..n)
        .map(|i| {
            let mut tx = engine.begin();
            tx.put(
                "entries",
                format!("{tag}{i}").as_bytes(),
                format!("secret {tag}{i}").as_bytes(),
            );
            tx.put("public:index", format!("{tag}{i}").as_bytes(), b"1");
            engine.commit_tx(tx, None).unwrap()
        })
        .collect()
}

fn private_value(engine: &Engine, txid: TxId, key: &str) -> Vec<u8> {
    let (_, ws) = engine.read_tx(txid.seqno).unwrap();
    ws.get("entries", key.as_bytes()).unwrap().unwrap().to_vec()
}

#[test]
fn transactions_stay_readable_under_the_secret_of_their_time() {
    let f = Fixture::new();
    let c = config(&f, "a");
    let first = f.secret.clone();
    let second = Arc::new(LedgerSecret::generate().unwrap());
    let mut a = Engine::open(c.clone(), f.node.clone(), first.clone()).unwrap();
    let before = write(&mut a, 12, "b");
    let version = a.last_seqno().next();
    // A secret cannot reach back over what is written.
    assert!(matches!(
        a.add_ledger_secret(a.last_seqno(), second.clone()),
        Err(EngineError::Rekey(_))
    ));
    a.add_ledger_secret(version, second.clone()).unwrap();
    let after = write(&mut a, 12, "a");
    a.emit_signature().unwrap();
    a.flush().unwrap();
    assert_eq!(a.ledger_secrets().len(), 2);
    assert_eq!(a.ledger_secrets().latest().0, version);
    for (i, t) in before.iter().enumerate() {
        assert_eq!(
            private_value(&a, *t, &format!("b{i}")),
            format!("secret b{i}").as_bytes()
        );
    }
    for (i, t) in after.iter().enumerate() {
        assert_eq!(
            private_value(&a, *t, &format!("a{i}")),
            format!("secret a{i}").as_bytes()
        );
    }
    // Receipts on both sides of the boundary.
    for t in [before[0], before[11], after[0], after[11]] {
        a.receipt(t).unwrap();
    }
    let snapshots = a.latest_snapshot().map(|(t, _)| t);
    assert!(
        snapshots.is_some_and(|t| t.seqno >= version),
        "{snapshots:?}"
    );
    drop(a);

    // The public ledger audits without any secret.
    audit_ledger(&c.ledger_dir, &f.service.cert, |_, _| {}).unwrap();

    // Reopened with only the first secret, the first entry sealed with the second
    // is refused, naming it.
    match Engine::open(c.clone(), f.node.clone(), first.clone()) {
        Err(EngineError::BadEntry { txid, .. }) => assert_eq!(txid.seqno, version),
        other => panic!("{other:?}"),
    }
    // With the chain (as a secrets file holds it) everything replays.
    let mut chain = LedgerSecrets::from(first.clone());
    chain.add(version, second.clone()).unwrap();
    let chain = LedgerSecrets::from_text(&chain.to_text()).unwrap();
    let a = Engine::open(c.clone(), f.node.clone(), chain.clone()).unwrap();
    assert_eq!(private_value(&a, after[3], "a3"), b"secret a3");
    assert_eq!(private_value(&a, before[3], "b3"), b"secret b3");
    drop(a);

    // A node starting from a snapshot taken after the rekey, with the chain.
    let b_conf = config(&f, "b");
    let (snap, path) = {
        let a = Engine::open(c.clone(), f.node.clone(), chain.clone()).unwrap();
        a.latest_snapshot().unwrap()
    };
    std::fs::create_dir_all(b_conf.snapshot_dir.as_ref().unwrap()).unwrap();
    std::fs::copy(
        &path,
        b_conf
            .snapshot_dir
            .as_ref()
            .unwrap()
            .join(path.file_name().unwrap()),
    )
    .unwrap();
    let b = Engine::open(b_conf, f.node.clone(), chain.clone()).unwrap();
    assert_eq!(b.snapshot_base(), Some(snap));
    let state = b.store().get("entries", b"a2").unwrap();
    assert_eq!(state, b"secret a2");
}

#[test]
fn a_follower_needs_the_new_secret_before_the_entries_sealed_with_it() {
    let f = Fixture::new();
    let mut primary = Engine::open(config(&f, "p"), f.node.clone(), f.secret.clone()).unwrap();
    let mut follower = Engine::open(config(&f, "f"), f.node.clone(), f.secret.clone()).unwrap();
    let follow = |from: &Engine, to: &mut Engine| -> Result<(), EngineError> {
        let (next, last) = (to.last_seqno().next(), from.last_seqno());
        for e in from.ledger().read_range(next, last).unwrap() {
            let e = e.unwrap();
            to.apply_entry(e.txid, e.is_signature, &e.payload)?;
        }
        Ok(())
    };
    write(&mut primary, 6, "x");
    primary.flush().unwrap();
    follow(&primary, &mut follower).unwrap();
    let second = Arc::new(LedgerSecret::generate().unwrap());
    let version = primary.last_seqno().next();
    primary.add_ledger_secret(version, second.clone()).unwrap();
    write(&mut primary, 6, "y");
    primary.flush().unwrap();
    match follow(&primary, &mut follower) {
        Err(EngineError::BadEntry { txid, .. }) => assert_eq!(txid.seqno, version),
        other => panic!("{other:?}"),
    }
    assert_eq!(follower.last_seqno(), version.prev());
    follower.add_ledger_secret(version, second).unwrap();
    follow(&primary, &mut follower).unwrap();
    assert_eq!(follower.last_seqno(), primary.last_seqno());
    assert_eq!(
        follower.store().get("entries", b"y5").unwrap(),
        b"secret y5"
    );
    assert_eq!(follower.ledger_secrets().len(), 2);
    // Rolled back to before the rekey, the follower forgets the new secret, and
    // seals what comes next under the first one again.
    follower.rollback(version.prev().prev()).unwrap();
    assert_eq!(follower.ledger_secrets().len(), 1);
    let t = write(&mut follower, 1, "z")[0];
    assert_eq!(t.seqno, version.prev());
    let (_, ws) = follower.read_tx(t.seqno).unwrap();
    assert_eq!(ws.get("entries", b"z0").unwrap().unwrap(), b"secret z0");
    drop(follower);
    let reopened = Engine::open(config(&f, "f"), f.node.clone(), f.secret.clone()).unwrap();
    assert_eq!(reopened.last_seqno(), version.prev());
}

#[test]
fn a_rekey_in_the_ledger_reaches_each_recipient_and_walks_back() {
    use covenant_crypto::{Curve, EncryptionKeyPair, NodeIdentity};
    use covenant_engine::rekey::{self, HistoricalSecret};
    use covenant_engine::SecretRecipient;
    let f = Fixture::new();
    let other = Arc::new(NodeIdentity::generate(&f.service, Curve::P384, &[]).unwrap());
    let stranger = Arc::new(NodeIdentity::generate(&f.service, Curve::P384, &[]).unwrap());
    let (ka, kb) = (
        Arc::new(EncryptionKeyPair::generate().unwrap()),
        Arc::new(EncryptionKeyPair::generate().unwrap()),
    );
    let recipients = [
        SecretRecipient {
            node_id: f.node.node_id.clone(),
            encryption_pub_key: ka.public_key_pem().unwrap(),
        },
        SecretRecipient {
            node_id: other.node_id.clone(),
            encryption_pub_key: kb.public_key_pem().unwrap(),
        },
    ];
    let mut pc = config(&f, "p");
    pc.sig_tx_interval = 4; // the rekey's own commit is followed by a signature
    let mut primary =
        Engine::open_with_key(pc, f.node.clone(), f.secret.clone(), Some(ka.clone())).unwrap();
    let mut fc = config(&f, "f");
    let secrets_file = f.dir.path().join("f_secrets");
    fc.secrets_file = Some(secrets_file.clone());
    let mut follower = Engine::open_with_key(
        fc.clone(),
        other.clone(),
        f.secret.clone(),
        Some(kb.clone()),
    )
    .unwrap();
    let mut outsider = Engine::open(config(&f, "o"), stranger.clone(), f.secret.clone()).unwrap();

    let mut rekeys = Vec::new();
    let mut txids = write(&mut primary, 3, "a");
    for round in 0..3 {
        let mut tx = primary.begin();
        tx.put("entries", format!("rekey{round}").as_bytes(), b"with it");
        primary.rekey(&mut tx, &recipients).unwrap();
        let (v, _) = primary.latest_ledger_secret();
        let t = primary.commit_tx(tx, None).unwrap();
        assert_eq!(v, t.seqno.next());
        assert_eq!(primary.ledger_secrets().latest().0, v);
        rekeys.push(t);
        txids.extend(write(&mut primary, 3, &format!("r{round}-")));
    }
    primary.emit_signature().unwrap();
    primary.flush().unwrap();
    assert_eq!(primary.ledger_secrets().len(), 4);

    let entries: Vec<_> = primary
        .ledger()
        .read_range(SeqNo(1), primary.last_seqno())
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    for e in &entries {
        follower
            .apply_entry(e.txid, e.is_signature, &e.payload)
            .unwrap();
    }
    assert_eq!(follower.ledger_secrets().len(), 4);
    assert_eq!(
        follower.store().get("entries", b"r2-2").unwrap(),
        b"secret r2-2"
    );
    // Its secrets file holds the whole chain, written as each secret arrived.
    let kept = LedgerSecrets::from_text(&std::fs::read_to_string(&secrets_file).unwrap()).unwrap();
    assert_eq!(
        format!("{kept:?}"),
        format!("{:?}", primary.ledger_secrets())
    );

    // A node the rekey did not name stops at the rekey, saying so.
    let mut stopped = None;
    for e in &entries {
        if let Err(err) = outsider.apply_entry(e.txid, e.is_signature, &e.payload) {
            stopped = Some((e.txid, err.to_string()));
            break;
        }
    }
    let (at, why) = stopped.unwrap();
    assert_eq!(at, rekeys[0]);
    assert!(why.contains("not given to this node"), "{why}");

    // Restarted with only the first secret: its encryption key opens the rest again;
    // without the key, the first rekey stops it.
    drop(follower);
    fc.secrets_file = None;
    let again =
        Engine::open_with_key(fc.clone(), other.clone(), f.secret.clone(), Some(kb)).unwrap();
    assert_eq!(again.ledger_secrets().len(), 4);
    drop(again);
    assert!(Engine::open(fc, other.clone(), f.secret.clone()).is_err());

    // A recovery holds only the latest secret: the historical rows lead back to the first.
    let history: Vec<HistoricalSecret> = rekeys
        .iter()
        .map(|t| {
            let (_, ws) = primary.read_tx(t.seqno).unwrap();
            serde_json::from_slice(
                ws.get(rekey::HISTORICAL_ENCRYPTED_LEDGER_SECRET, rekey::REKEY_KEY)
                    .unwrap()
                    .unwrap(),
            )
            .unwrap()
        })
        .collect();
    let (v, latest) = primary.ledger_secrets().latest();
    let latest = LedgerSecret::from_bytes(latest.expose_bytes()).unwrap();
    let walked = rekey::walk_back((v, latest), &history).unwrap();
    assert_eq!(walked.to_text(), primary.ledger_secrets().to_text());
    // A missing link is named.
    let latest =
        LedgerSecret::from_bytes(primary.ledger_secrets().latest().1.expose_bytes()).unwrap();
    let err = rekey::walk_back((v, latest), &history[1..]).unwrap_err();
    assert!(err.to_string().contains("no record"), "{err}");
}

mod across_rekeys {
    use super::*;
    use covenant_crypto::{EncryptionKeyPair, NodeIdentity};
    use covenant_engine::rekey::{self, HistoricalSecret};
    use covenant_engine::SecretRecipient;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        /// Any interleaving of private writes, rekeys and signatures: every write
        /// reads back under the secret of its time on the primary, on a follower that
        /// learned each secret from the ledger, after a reopen with the chain, and
        /// with the chain a recovery walks back from the latest secret.
        #[test]
        fn every_write_reads_back_across_any_rekeys(ops in proptest::collection::vec(0u8..10, 1..40)) {
            let f = Fixture::new();
            let key = Arc::new(EncryptionKeyPair::generate().unwrap());
            let other = Arc::new(NodeIdentity::generate(&f.service, covenant_crypto::Curve::P384, &[]).unwrap());
            let other_key = Arc::new(EncryptionKeyPair::generate().unwrap());
            let to = [
                SecretRecipient { node_id: f.node.node_id.clone(), encryption_pub_key: key.public_key_pem().unwrap() },
                SecretRecipient { node_id: other.node_id.clone(), encryption_pub_key: other_key.public_key_pem().unwrap() },
            ];
            let c = config(&f, "p");
            let mut e = Engine::open_with_key(c.clone(), f.node.clone(), f.secret.clone(), Some(key)).unwrap();
            let mut written = Vec::new();
            let mut rekeys = Vec::new();
            for (i, op) in ops.iter().enumerate() {
                match op {
                    0 | 1 => {
                        let mut tx = e.begin();
                        e.rekey(&mut tx, &to).unwrap();
                        rekeys.push(e.commit_tx(tx, None).unwrap());
                    }
                    2 if e.last_seqno() > SeqNo(0) => { e.emit_signature().unwrap(); }
                    _ => {
                        let k = format!("k{i}");
                        let mut tx = e.begin();
                        tx.put("entries", k.as_bytes(), format!("v{i}").as_bytes());
                        written.push((e.commit_tx(tx, None).unwrap(), k, format!("v{i}")));
                    }
                }
            }
            if e.last_seqno() > SeqNo(0) {
                e.emit_signature().unwrap();
            }
            e.flush().unwrap();
            prop_assert_eq!(e.ledger_secrets().len(), rekeys.len() + 1);
            let mut follower = Engine::open_with_key(config(&f, "f"), other, f.secret.clone(), Some(other_key)).unwrap();
            for x in e.ledger().read_range(SeqNo(1), e.last_seqno()).unwrap() {
                let x = x.unwrap();
                follower.apply_entry(x.txid, x.is_signature, &x.payload).unwrap();
            }
            let chain = e.ledger_secrets().clone();
            let history: Vec<HistoricalSecret> = rekeys.iter().map(|t| {
                let (_, ws) = e.read_tx(t.seqno).unwrap();
                serde_json::from_slice(ws.get(rekey::HISTORICAL_ENCRYPTED_LEDGER_SECRET, rekey::REKEY_KEY).unwrap().unwrap()).unwrap()
            }).collect();
            let (v, latest) = chain.latest();
            let walked = rekey::walk_back((v, LedgerSecret::from_bytes(latest.expose_bytes()).unwrap()), &history).unwrap();
            let (a, b) = (walked.to_text(), chain.to_text());
            prop_assert_eq!(a.as_str(), b.as_str());
            drop(e);
            let reopened = Engine::open(c, f.node.clone(), walked).unwrap();
            for engine in [&reopened, &follower] {
                for (t, k, v) in &written {
                    let (_, ws) = engine.read_tx(t.seqno).unwrap();
                    prop_assert_eq!(ws.get("entries", k.as_bytes()).unwrap().unwrap(), v.as_bytes());
                }
            }
        }
    }
}

/// A rekey written but lost before it was flushed (a crash) leaves its secret in
/// the chain the node kept (in memory or in its secrets file), starting past the
/// reopened ledger's end. That secret never seals anything: the next transaction
/// this node writes forgets it, on disk too, and the next rekey follows cleanly.
#[test]
fn a_rekey_lost_in_a_crash_leaves_no_secret_behind() {
    use covenant_crypto::EncryptionKeyPair;
    use covenant_engine::SecretRecipient;
    let f = Fixture::new();
    let key = Arc::new(EncryptionKeyPair::generate().unwrap());
    let me = [SecretRecipient {
        node_id: f.node.node_id.clone(),
        encryption_pub_key: key.public_key_pem().unwrap(),
    }];
    let mut c = config(&f, "l");
    c.sig_tx_interval = 100;
    c.snapshot_dir = None;
    let secrets_file = f.dir.path().join("l_secrets");
    c.secrets_file = Some(secrets_file.clone());
    let open = |chain: LedgerSecrets| {
        Engine::open_with_key(c.clone(), f.node.clone(), chain, Some(key.clone())).unwrap()
    };
    let mut e = open(f.secret.clone().into());
    write(&mut e, 5, "a");
    e.emit_signature().unwrap();
    e.flush().unwrap();
    let durable = e.last_seqno();
    let on_disk = files(&c.ledger_dir);
    let mut tx = e.begin();
    e.rekey(&mut tx, &me).unwrap();
    e.commit_tx(tx, None).unwrap();
    let lost = e.ledger_secrets().latest().0;
    assert!(lost > durable.next(), "the rekey's secret starts after it");
    let chain = e.ledger_secrets().clone();
    drop(e);
    // The crash: the disk holds only what was flushed before the rekey.
    std::fs::remove_dir_all(&c.ledger_dir).unwrap();
    std::fs::create_dir_all(&c.ledger_dir).unwrap();
    for (name, bytes) in on_disk {
        std::fs::write(c.ledger_dir.join(name), bytes).unwrap();
    }
    let mut e = open(chain);
    assert_eq!(e.last_seqno(), durable, "the unflushed rekey is gone");
    let after = write(&mut e, 3, "b");
    assert_eq!(
        e.ledger_secrets().len(),
        1,
        "the lost rekey's secret is forgotten"
    );
    let saved = std::fs::read_to_string(&secrets_file).unwrap();
    assert_eq!(LedgerSecrets::from_text(&saved).unwrap().len(), 1);
    let mut tx = e.begin();
    e.rekey(&mut tx, &me).unwrap();
    let rekeyed = e.commit_tx(tx, None).unwrap();
    let more = write(&mut e, 3, "c");
    e.emit_signature().unwrap();
    e.flush().unwrap();
    assert_eq!(e.ledger_secrets().latest().0, rekeyed.seqno.next());
    drop(e);
    let saved = LedgerSecrets::from_text(&std::fs::read_to_string(&secrets_file).unwrap()).unwrap();
    let e = open(saved);
    for (i, t) in after.iter().enumerate() {
        assert_eq!(
            private_value(&e, *t, &format!("b{i}")),
            format!("secret b{i}").as_bytes()
        );
    }
    for (i, t) in more.iter().enumerate() {
        assert_eq!(
            private_value(&e, *t, &format!("c{i}")),
            format!("secret c{i}").as_bytes()
        );
    }
}

/// Every file in `dir` (a flat ledger directory) with its bytes.
fn files(dir: &std::path::Path) -> Vec<(std::ffi::OsString, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}
