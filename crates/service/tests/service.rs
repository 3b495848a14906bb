//! The service facade over a real single-node engine on a temporary ledger: the
//! genesis, the one index feeder, entries and receipts with their claims.

use std::sync::Arc;
use std::time::Duration;

use covenant_crypto::{
    generate_client_identity, Curve, LedgerSecret, NodeIdentity, ServiceIdentity, SubjectAltName,
};
use covenant_engine::{Engine, EngineConfig, TxStatus};
use covenant_service::entries::new_claim;
use covenant_service::tables::{entries_map, CLAIM_KEYS};
use covenant_service::users::user_roles;
use covenant_service::{Genesis, Role, Service, ServiceOptions, UserId};
use covenant_types::{SeqNo, TxId};

/// A node's identity and ledger secret, and a directory for its ledger.
struct Node {
    id: Arc<NodeIdentity>,
    secret: Arc<LedgerSecret>,
    dir: tempfile::TempDir,
}

fn node() -> Node {
    let ca = ServiceIdentity::generate(Curve::P384).unwrap();
    Node {
        id: Arc::new(
            NodeIdentity::generate(&ca, Curve::P384, &SubjectAltName::dev_defaults()).unwrap(),
        ),
        secret: Arc::new(LedgerSecret::generate().unwrap()),
        dir: tempfile::tempdir().unwrap(),
    }
}

/// The node's service, its ledger created with `genesis` or, when it exists, reopened.
fn service(n: &Node, genesis: &Genesis) -> Service {
    let config = EngineConfig::new(n.dir.path().join("ledger"));
    let mut engine = Engine::open_with_key(
        config,
        n.id.clone(),
        n.secret.clone(),
        Some(Arc::new(
            covenant_crypto::EncryptionKeyPair::generate().unwrap(),
        )),
    )
    .unwrap();
    if engine.last_seqno() == SeqNo::ZERO {
        genesis.write(&mut engine).unwrap();
    }
    let options = ServiceOptions {
        ledger_public: false,
        sig_interval: Duration::from_millis(5),
        index_path: Some(index_path(n)),
        index_progress: None,
    };
    Service::single(engine, &options).unwrap()
}

fn index_path(n: &Node) -> std::path::PathBuf {
    n.dir.path().join("index").join("collections.redb")
}

async fn committed(s: &Service, txid: TxId) {
    let mut rx = s.subscribe_committed();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|c| *c >= txid.seqno))
        .await
        .unwrap()
        .unwrap();
}

/// An entry written through the facade, as the ACL append writes it.
async fn append(s: &Service, collection: &'static str, contents: &'static str) -> TxId {
    let claim = new_claim(collection, contents).unwrap();
    s.write(move |e| {
        let mut tx = e.begin();
        tx.put(
            entries_map(false),
            collection.as_bytes(),
            contents.as_bytes(),
        );
        tx.put(CLAIM_KEYS, collection.as_bytes(), &claim.0);
        e.commit_tx(tx, Some(claim.1))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genesis_users_without_roles_are_readers() {
    let n = node();
    let (_, reader) = generate_client_identity("r", Curve::P256).unwrap();
    let (_, admin) = generate_client_identity("a", Curve::P256).unwrap();
    let genesis = Genesis {
        users: vec![
            (reader.clone(), vec![]),
            (admin.clone(), vec![Role::Administrator]),
        ],
        constitution: "export function validate() {}".into(),
        ..Default::default()
    };
    let s = service(&n, &genesis);
    let id =
        |c: &covenant_crypto::Certificate| UserId::Certificate(covenant_crypto::sha256(c.der()));
    assert_eq!(
        user_roles(s.store(), &id(&reader)),
        Some(vec![Role::Reader])
    );
    assert_eq!(
        user_roles(s.store(), &id(&admin)),
        Some(vec![Role::Administrator])
    );
    assert!(Genesis::written(s.store()));
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_path_feeds_the_index_and_entries_read_back_with_claims() {
    let n = node();
    let s = service(&n, &Genesis::default());
    let a = append(&s, "c", "one").await;
    // The in-place path feeds the same index.
    let b = s
        .write_in_memory(|e| {
            let mut tx = e.begin();
            tx.put(entries_map(false), b"c", b"two");
            e.commit_tx(tx, None)
        })
        .await
        .unwrap();
    committed(&s, b).await;
    assert_eq!(s.status(a).unwrap(), TxStatus::Committed);
    let (found, next) = s
        .entries("c".into(), SeqNo(1), SeqNo(u64::MAX), None, 10)
        .await
        .unwrap();
    assert_eq!(next, None);
    assert_eq!(
        found
            .iter()
            .map(|e| (e.transaction_id, e.contents.as_str()))
            .collect::<Vec<_>>(),
        vec![(a, "one"), (b, "two")]
    );
    // A page of one names where the next begins.
    let (page, next) = s
        .entries("c".into(), SeqNo(1), SeqNo(u64::MAX), None, 1)
        .await
        .unwrap();
    assert_eq!((page.len(), next), (1, Some(b)));
    assert_eq!(
        s.entry(a, "c".into()).await.unwrap().unwrap().contents,
        "one"
    );
    assert!(s.entry(a, "other".into()).await.unwrap().is_none());
    // The receipt of the entry written with a claim reveals it; the other has none.
    let r = s.receipt(a).await.unwrap();
    assert!(r.response.receipt.is_some());
    assert_eq!(r.application_claims.len(), 1);
    assert!(s.receipt(b).await.unwrap().application_claims.is_empty());
    let unknown = TxId::new(a.view.0, 10_000);
    assert!(matches!(
        s.receipt(unknown).await,
        Err(covenant_service::ServiceError::NoSuchTx(t)) if t == unknown
    ));
    assert_eq!(
        s.committed_txid().unwrap().map(|t| t.seqno >= b.seqno),
        Some(true)
    );
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_rebuilds_the_index_from_the_ledger() {
    let n = node();
    let s = service(&n, &Genesis::default());
    let a = append(&s, "k", "kept").await;
    let b = append(&s, "k", "also kept").await;
    s.shutdown().await.unwrap();
    drop(s);
    let s = service(&n, &Genesis::default());
    assert_eq!(
        s.index().latest("k", SeqNo(u64::MAX), 5).unwrap(),
        vec![b, a]
    );
    assert_eq!(
        s.latest_committed_entry("k".into())
            .await
            .unwrap()
            .unwrap()
            .transaction_id,
        b
    );
    s.shutdown().await.unwrap();
}

/// A waiter on `subscribe_appended` wakes when a transaction is appended (what a
/// lagging backup waits on before looking for a user again), not by polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_transactions_wake_their_waiters() {
    let n = node();
    let s = service(&n, &Genesis::default());
    let mut appended = s.subscribe_appended();
    let before = *appended.borrow_and_update();
    assert_eq!(before, s.engine().last_seqno());
    let waiter = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(10), appended.changed())
            .await
            .unwrap()
            .unwrap();
        *appended.borrow()
    });
    let txid = append(&s, "c", "wake").await;
    let seen = waiter.await.unwrap();
    // What was last appended when the waiter looked: the append, or a signature
    // the driver appended around it.
    assert!(seen > before, "{seen:?}");
    assert!(s.engine().last_seqno() >= txid.seqno);
}

/// A governance step is one transaction: a replayed signed request is refused, a
/// step the governance logic refuses writes nothing, and one that succeeds commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_steps_refuse_replays_and_write_nothing_when_refused() {
    use covenant_governance::GovError;
    use covenant_service::{GovernError, Replay};
    let n = node();
    let s = service(&n, &Genesis::default());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let cose = Replay::Cose {
        digest: covenant_crypto::sha256(b"a signed request"),
        created_at: now,
    };
    let (txid, seqno) = s
        .govern(None, cose, |_, _, _, seqno| Ok(seqno))
        .await
        .unwrap();
    assert_eq!(txid.seqno, seqno, "the step is told its own seqno");
    let last = s.engine().last_seqno();
    let again = s.govern(None, cose, |_, _, _, _| Ok(())).await;
    assert!(matches!(again, Err(GovernError::Replayed(r)) if r == cose));
    // Its first part (a ballot run before the locks) does not run for a replay.
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ran.clone();
    let again = s
        .govern_prepared(
            None,
            cose,
            move |_, _| flag.store(true, std::sync::atomic::Ordering::SeqCst),
            |_, _, _, _, ()| Ok(()),
        )
        .await;
    assert!(matches!(again, Err(GovernError::Replayed(r)) if r == cose));
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    let refused = s
        .govern(None, Replay::Certificate, |_, tx, _, _| {
            tx.put("public:scratch", b"k", b"v");
            Err::<(), _>(GovError::NoConstitution)
        })
        .await;
    assert!(matches!(
        refused,
        Err(GovernError::Gov(GovError::NoConstitution))
    ));
    // The signing driver may have signed meanwhile; nothing else may follow `last`.
    {
        let engine = s.engine();
        let signatures: std::collections::BTreeSet<SeqNo> = engine.signature_seqnos().collect();
        let mut seqno = last.next();
        while seqno <= engine.last_seqno() {
            assert!(
                signatures.contains(&seqno),
                "a refused step writes nothing, yet {seqno:?} is not a signature"
            );
            seqno = seqno.next();
        }
    }
    assert_eq!(s.store().get("public:scratch", b"k"), None);
    // A certificate-proved request leaves no replay mark: it may come twice.
    for _ in 0..2 {
        s.govern(None, Replay::Certificate, |_, _, _, _| Ok(()))
            .await
            .unwrap();
    }
}

/// Recovery shares follow the active recovery members, the threshold and the
/// service's state, in the governance step's own transaction; any threshold of
/// the members' decrypted shares rebuild this node's ledger secret, fewer do not;
/// a step that would leave more threshold than members is refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_shares_follow_members_and_threshold() {
    use covenant_crypto::EncryptionKeyPair;
    use covenant_recovery::{decrypt_share, RecoveryError, RecoveryShares};
    use covenant_service::tables::{
        MEMBERS_ENCRYPTION_KEYS, MEMBERS_INFO, RECOVERY_SHARES, RECOVERY_SHARES_KEY,
        SERVICE_CONFIG, SERVICE_CONFIG_KEY, SERVICE_INFO, SERVICE_INFO_KEY,
    };
    use covenant_service::{GovernError, Replay};

    let n = node();
    let keys: Vec<EncryptionKeyPair> = (0..3)
        .map(|_| EncryptionKeyPair::generate().unwrap())
        .collect();
    let members: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let (_, cert) = generate_client_identity(&format!("m{i}"), Curve::P256).unwrap();
            (cert, Some(k.public_key_pem().unwrap()))
        })
        .collect();
    let ids: Vec<String> = members
        .iter()
        .map(|(c, _)| covenant_crypto::member_id(c.der()))
        .collect();
    let genesis = Genesis {
        members: members.clone(),
        constitution: covenant_governance::DEFAULT_CONSTITUTION.into(),
        ..Default::default()
    };
    let s = service(&n, &genesis);
    let shares = |s: &Service| -> Option<RecoveryShares> {
        covenant_service::recovery::current(s.store().get(RECOVERY_SHARES, RECOVERY_SHARES_KEY))
    };
    let step = |f: Box<dyn FnOnce(&mut covenant_kv::Tx) + Send>| {
        s.govern(None, Replay::Certificate, move |_, tx, _, _| {
            f(tx);
            Ok(())
        })
    };
    let active = |tx: &mut covenant_kv::Tx, id: &str| {
        tx.put(MEMBERS_INFO, id.as_bytes(), br#"{"status":"Active"}"#)
    };
    // Active members of a service still opening hold no shares yet.
    let all = ids.clone();
    step(Box::new(move |tx| all.iter().for_each(|id| active(tx, id))))
        .await
        .unwrap();
    assert!(shares(&s).is_none());
    // Opening the service issues them: threshold 1 when none is configured.
    step(Box::new(|tx| {
        tx.put(SERVICE_INFO, SERVICE_INFO_KEY, br#"{"status":"Open"}"#)
    }))
    .await
    .unwrap();
    let first = shares(&s).unwrap();
    assert_eq!(first.threshold, 1);
    assert_eq!(first.encrypted_shares.len(), 3);
    // A step that changes nothing they depend on keeps them.
    step(Box::new(|tx| tx.put("public:scratch", b"k", b"v")))
        .await
        .unwrap();
    assert_eq!(shares(&s).unwrap(), first);
    // Threshold 2: new shares; any two rebuild the ledger secret, one does not.
    let config = |t: u64| {
        move |tx: &mut covenant_kv::Tx| {
            let c = serde_json::json!({"join_policy": "auto", "recovery_threshold": t});
            tx.put(SERVICE_CONFIG, SERVICE_CONFIG_KEY, c.to_string().as_bytes())
        }
    };
    step(Box::new(config(2))).await.unwrap();
    let two = shares(&s).unwrap();
    assert_eq!(two.threshold, 2);
    assert_ne!(
        two.wrapped_latest_ledger_secret,
        first.wrapped_latest_ledger_secret
    );
    let share = |issue: &RecoveryShares, i: usize| {
        decrypt_share(&keys[i], &issue.encrypted_shares[&ids[i]]).unwrap()
    };
    for pair in [[0, 1], [0, 2], [1, 2]] {
        let secret = two
            .recover(&[share(&two, pair[0]), share(&two, pair[1])])
            .unwrap();
        assert_eq!(secret.expose_bytes(), n.secret.expose_bytes());
    }
    assert!(matches!(
        two.recover(&[share(&two, 0)]),
        Err(RecoveryError::WrongShares)
    ));
    assert!(
        two.recover(&[share(&two, 0), share(&first, 1)]).is_err(),
        "shares of two issues do not mix"
    );
    // A threshold above the members is refused, and nothing is written.
    let last = s.engine().last_seqno();
    let refused = step(Box::new(config(4))).await;
    assert!(
        matches!(
            refused,
            Err(GovernError::Recovery(RecoveryError::Threshold {
                threshold: 4,
                members: 3
            }))
        ),
        "{refused:?}"
    );
    assert_eq!(s.engine().last_seqno(), last);
    assert_eq!(shares(&s).unwrap(), two);
    // A member leaves: its share must stop unlocking anything, so the service
    // rekeys, and the two left get shares of the new secret; a second departure
    // would leave one member under threshold 2, and is refused.
    let gone = ids[1].clone();
    step(Box::new(move |tx| {
        tx.remove(MEMBERS_INFO, gone.as_bytes());
        tx.remove(MEMBERS_ENCRYPTION_KEYS, gone.as_bytes());
    }))
    .await
    .unwrap();
    let left = shares(&s).unwrap();
    assert_eq!(left.encrypted_shares.keys().cloned().collect::<Vec<_>>(), {
        let mut v = vec![ids[0].clone(), ids[2].clone()];
        v.sort();
        v
    });
    let secret = left.recover(&[share(&left, 0), share(&left, 2)]).unwrap();
    let chain = s.engine().ledger_secrets().clone();
    let (version, latest) = chain.latest();
    assert_ne!(secret.expose_bytes(), n.secret.expose_bytes());
    assert_eq!(secret.expose_bytes(), latest.expose_bytes());
    assert_eq!(left.secret_version, version.0);
    assert_eq!(chain.len(), 2);
    assert!(
        two.recover(&[share(&two, 0), share(&two, 2)])
            .unwrap()
            .expose_bytes()
            != latest.expose_bytes(),
        "the old shares open only the old secret"
    );
    let also_gone = ids[2].clone();
    let refused = step(Box::new(move |tx| {
        tx.remove(MEMBERS_INFO, also_gone.as_bytes());
    }))
    .await;
    assert!(
        matches!(
            refused,
            Err(GovernError::Recovery(RecoveryError::Threshold { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(shares(&s).unwrap(), left);
}

/// Every ranged answer of `s` over collections c0..c4, as comparable text.
async fn ranged_answers(s: &Service) -> Vec<String> {
    let mut out = Vec::new();
    for c in 0..5 {
        let (page, next) = s
            .entries(format!("c{c}"), SeqNo(1), SeqNo(u64::MAX), None, 1000)
            .await
            .unwrap();
        out.push(format!(
            "c{c}: {:?} next {next:?}",
            page.iter().map(|e| e.transaction_id).collect::<Vec<_>>()
        ));
        let (page, next) = s
            .entries(format!("c{c}"), SeqNo(10), SeqNo(40), None, 3)
            .await
            .unwrap();
        out.push(format!(
            "c{c} 10..40: {:?} next {next:?}",
            page.iter().map(|e| e.transaction_id).collect::<Vec<_>>()
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_or_corrupted_index_is_rebuilt_and_answers_the_same() {
    const NAMES: [&str; 5] = ["c0", "c1", "c2", "c3", "c4"];
    let n = node();
    let s = service(&n, &Genesis::default());
    let mut last = None;
    for i in 0..60 {
        last = Some(append(&s, NAMES[i % 5], "entry").await);
    }
    committed(&s, last.unwrap()).await;
    let before = ranged_answers(&s).await;
    assert!(!before[0].contains("[]"), "{before:?}");
    s.shutdown().await.unwrap();
    drop(s);
    assert!(index_path(&n).exists(), "the index lives on disk");

    // Reopened as it is: the same answers, nothing rebuilt.
    let s = service(&n, &Genesis::default());
    assert_eq!(ranged_answers(&s).await, before);
    s.shutdown().await.unwrap();
    drop(s);

    // Deleted: rebuilt from the ledger.
    std::fs::remove_file(index_path(&n)).unwrap();
    let s = service(&n, &Genesis::default());
    assert_eq!(ranged_answers(&s).await, before);
    s.shutdown().await.unwrap();
    drop(s);

    // Overwritten with garbage: found corrupt, rebuilt.
    let len = std::fs::metadata(index_path(&n)).unwrap().len() as usize;
    std::fs::write(index_path(&n), vec![0x5a; len]).unwrap();
    let s = service(&n, &Genesis::default());
    assert_eq!(ranged_answers(&s).await, before);
    // And it keeps indexing new writes.
    let more = append(&s, "c0", "after the rebuild").await;
    committed(&s, more).await;
    let (page, _) = s
        .entries("c0".into(), more.seqno, more.seqno, None, 10)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    s.shutdown().await.unwrap();
}

/// A script's transaction whose read another writer changed runs again; one that
/// loses every race is refused after `MAX_RUNS` with nothing written; an answer
/// computed from reads that changed is not given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_runs_retry_on_conflict_then_refuse() {
    use covenant_service::optimistic::MAX_RUNS;
    use covenant_service::{Executed, ServiceError};
    let n = node();
    let s = service(&n, &Genesis::default());
    let bump = |s: &Service| {
        s.write_blocking(|e| {
            let mut tx = e.begin();
            let v = tx.get("counter", b"k").map_or(0, |b| b[0]);
            tx.put("counter", b"k", &[v + 1]);
            e.commit_tx(tx, None)
        })
        .unwrap()
    };
    let s2 = s.clone();
    let out = tokio::task::spawn_blocking(move || {
        // Another writer changes the key between the read and the commit on the
        // first two runs only.
        s2.execute_blocking(|store, run| {
            let mut tx = store.begin();
            let seen = tx.get("counter", b"k").map_or(0, |b| b[0]);
            if run <= 2 {
                bump(&s2);
            }
            tx.put("counter", b"k", &[seen + 10]);
            Executed::Commit {
                tx,
                claims: None,
                answer: seen,
            }
        })
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.runs, 3);
    assert_eq!(
        out.answer, 2,
        "the run that committed saw both other writes"
    );
    assert_eq!(s.store().get("counter", b"k"), Some(vec![12]));

    // Losing every race: refused, and only the other writer's changes are there.
    let s3 = s.clone();
    let refused = tokio::task::spawn_blocking(move || {
        s3.execute_blocking(|store, _run| {
            let mut tx = store.begin();
            let seen = tx.get("counter", b"k").map_or(0, |b| b[0]);
            bump(&s3);
            tx.put("counter", b"k", &[0]);
            Executed::Commit {
                tx,
                claims: None,
                answer: seen,
            }
        })
    })
    .await
    .unwrap();
    assert!(
        matches!(refused, Err(ServiceError::Conflict { runs }) if runs == MAX_RUNS),
        "{refused:?}"
    );
    assert_eq!(
        s.store().get("counter", b"k"),
        Some(vec![12 + MAX_RUNS as u8])
    );

    // An answer (nothing to write) whose reads changed is computed again.
    let s4 = s.clone();
    let answered = tokio::task::spawn_blocking(move || {
        s4.execute_blocking(|store, run| {
            let mut tx = store.begin();
            let seen = tx.get("counter", b"k").map_or(0, |b| b[0]);
            if run == 1 {
                bump(&s4);
            }
            Executed::Answer {
                reads: tx.reads().clone(),
                answer: seen,
            }
        })
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(answered.runs, 2);
    assert_eq!(answered.answer, 13 + MAX_RUNS as u8);
    s.shutdown().await.unwrap();
}
