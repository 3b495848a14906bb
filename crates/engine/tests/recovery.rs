//! A disaster recovery at the engine: the old ledger is opened without any secret
//! (public domain only), the unsigned tail is dropped, new transactions follow
//! under a fresh secret, private reads of the old epoch are refused until the old
//! secrets (the latest, walked back through the rekeys' historical rows) complete
//! the recovery; then everything reads, and a reopen needs the whole chain.

use std::sync::Arc;

use covenant_crypto::{EncryptionKeyPair, LedgerSecret};
use covenant_engine::rekey::walk_back;
use covenant_engine::{Engine, EngineConfig, EngineError, SecretRecipient};
use covenant_test_support::Fixture;

#[test]
fn the_old_private_state_returns_only_with_the_old_secrets() {
    let f = Fixture::new();
    let home = f.dir.path().join("old");
    let mut c = EngineConfig::new(home.join("ledger"));
    c.sig_tx_interval = 3;
    c.chunk_threshold_bytes = 1024;
    let key = Arc::new(EncryptionKeyPair::generate().unwrap());
    let me = [SecretRecipient {
        node_id: f.node.node_id.clone(),
        encryption_pub_key: key.public_key_pem().unwrap(),
    }];
    let mut old =
        Engine::open_with_key(c.clone(), f.node.clone(), f.secret.clone(), Some(key)).unwrap();
    let put = |e: &mut Engine, k: &str| {
        let mut tx = e.begin();
        tx.put("private", k.as_bytes(), format!("value of {k}").as_bytes());
        tx.put("public:keys", k.as_bytes(), b"");
        e.commit_tx(tx, None).unwrap()
    };
    let mut txids = Vec::new();
    for round in 0..3 {
        for i in 0..5 {
            txids.push((
                put(&mut old, &format!("{round}.{i}")),
                format!("{round}.{i}"),
            ));
        }
        let mut tx = old.begin();
        old.rekey(&mut tx, &me).unwrap();
        old.commit_tx(tx, None).unwrap();
    }
    old.emit_signature().unwrap();
    // An unsigned tail: never committed, dropped by the recovery.
    let tail = put(&mut old, "tail");
    old.flush().unwrap();
    let (latest_v, latest) = old.ledger_secrets().latest();
    let latest = (
        latest_v,
        LedgerSecret::from_bytes(latest.expose_bytes()).unwrap(),
    );
    let chain_text = old.ledger_secrets().to_text();
    drop(old);

    let mut r = Engine::open_for_recovery(c.clone(), f.node.clone(), None).unwrap();
    let boundary = r.recovery_boundary().unwrap();
    assert_eq!(boundary, tail.seqno, "the unsigned tail is gone");
    assert_eq!(r.committed_seqno(), boundary.prev());
    assert_eq!(r.historical_secrets().len(), 3);
    assert_eq!(r.store().get("public:keys", b"1.1").unwrap(), b"");
    assert!(r.store().get("private", b"1.1").is_none());
    assert!(matches!(
        r.read_tx(txids[0].0.seqno),
        Err(EngineError::NotRecovered(_))
    ));
    assert!(matches!(
        r.receipt(txids[0].0),
        Err(EngineError::NotRecovered(_))
    ));
    // No rekey before the old secrets are back (it would leave the chain with a gap).
    let mut tx = r.begin();
    assert!(matches!(r.rekey(&mut tx, &me), Err(EngineError::Rekey(_))));
    drop(tx);
    // The recovered service writes under its own secret meanwhile.
    let mut tx = r.begin();
    tx.put("private", b"new", b"after");
    let new = r.commit_tx(tx, None).unwrap();
    assert_eq!(new.seqno, boundary);
    r.emit_signature().unwrap();
    r.flush().unwrap();
    // A wrong latest secret opens nothing, and changes nothing.
    let wrong = walk_back(
        (latest.0, LedgerSecret::generate().unwrap()),
        r.historical_secrets(),
    );
    assert!(wrong.is_err());
    let chain = walk_back(latest, r.historical_secrets()).unwrap();
    assert_eq!(chain.to_text(), chain_text);
    r.complete_recovery(chain).unwrap();
    assert_eq!(r.recovery_boundary(), None);
    for (t, k) in &txids {
        let (_, ws) = r.read_tx(t.seqno).unwrap();
        assert_eq!(
            ws.get("private", k.as_bytes()).unwrap().unwrap(),
            format!("value of {k}").as_bytes()
        );
        assert_eq!(
            r.store().get("private", k.as_bytes()).unwrap(),
            format!("value of {k}").as_bytes()
        );
        r.receipt(*t).unwrap();
    }
    assert_eq!(r.store().get("private", b"new").unwrap(), b"after");
    assert!(r.store().get("private", b"tail").is_none());
    let secrets = r.ledger_secrets().clone();
    assert_eq!(secrets.len(), 5);
    assert_eq!(secrets.latest().0, boundary);
    drop(r);
    let again = Engine::open(c, f.node.clone(), secrets).unwrap();
    assert_eq!(
        again.store().get("private", b"2.4").unwrap(),
        b"value of 2.4"
    );
    assert_eq!(again.store().get("private", b"new").unwrap(), b"after");
}
