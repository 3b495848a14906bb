//! `covenant ledger audit` of a ledger that continues a snapshot (a node that
//! started from one): the snapshot is found beside the ledger or named with
//! `--snapshot`, and the summary says it was used.

mod common;
use common::{covenant, text};
use covenant_types::SeqNo;

use std::path::Path;

use covenant_engine::{install_snapshot, Engine, EngineConfig};
use covenant_test_support::Fixture;

fn config(home: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(home.join("ledger"));
    c.chunk_threshold_bytes = 4096;
    c.sig_tx_interval = 10;
    c.snapshot_dir = Some(home.join("snapshots"));
    c.snapshot_tx_interval = 50;
    c
}

fn write(engine: &mut Engine, n: u64) {
    for i in 0..n {
        let mut tx = engine.begin();
        tx.put("entries", format!("k{i}").as_bytes(), b"private");
        tx.put("public:log", format!("k{i}").as_bytes(), b"public");
        engine.commit_tx(tx, None).unwrap();
    }
}

#[test]
fn audit_of_a_ledger_that_starts_from_a_snapshot() {
    let Fixture {
        service,
        node,
        secret,
        dir: tmp,
    } = Fixture::new();
    let cert = tmp.path().join("service_cert.pem");
    std::fs::write(&cert, service.cert.to_pem()).unwrap();

    // Node a writes a ledger from seqno 1 and takes a snapshot at 55.
    let mut a = Engine::open(config(&tmp.path().join("a")), node.clone(), secret.clone()).unwrap();
    write(&mut a, 60);
    a.flush().unwrap();
    let (base, snapshot) = a.latest_snapshot().unwrap();
    assert_eq!(base.seqno.0, 55);
    write(&mut a, 40);
    a.emit_signature().unwrap();
    a.flush().unwrap();

    // Node b starts from the snapshot and receives the rest.
    let b_home = tmp.path().join("b");
    let bytes = std::fs::read(&snapshot).unwrap();
    install_snapshot(
        &b_home.join("snapshots"),
        &bytes,
        &service.cert,
        &secret.clone().into(),
    )
    .unwrap();
    let mut b = Engine::open(config(&b_home), node, secret).unwrap();
    for e in a.ledger().read_range(SeqNo(56), a.last_seqno()).unwrap() {
        let e = e.unwrap();
        b.apply_entry(e.txid, e.is_signature, &e.payload).unwrap();
    }
    b.flush().unwrap();
    drop(b);

    let ledger = b_home.join("ledger");
    let audit = |extra: &[&str]| {
        let mut args = vec![
            "ledger",
            "audit",
            ledger.to_str().unwrap(),
            "--service-cert",
            cert.to_str().unwrap(),
            "--quiet",
        ];
        args.extend_from_slice(extra);
        covenant(&args)
    };
    // Found as ledger/../snapshots/snapshot_55.committed.
    let o = audit(&[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("from snapshot at {base}")),
        "{}",
        text(&o)
    );

    // Elsewhere: named with --snapshot; without it the audit names what it missed.
    let moved = tmp.path().join("moved.snapshot");
    std::fs::rename(b_home.join("snapshots/snapshot_55.committed"), &moved).unwrap();
    let o = audit(&[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("snapshot_55.committed"), "{}", text(&o));
    let o = audit(&["--snapshot", moved.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&format!("from snapshot at {base}")));

    // A tampered snapshot fails the audit.
    let mut bad = std::fs::read(&moved).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 4;
    std::fs::write(&moved, &bad).unwrap();
    let o = audit(&["--snapshot", moved.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("audit FAILED"), "{}", text(&o));

    // A full ledger still audits without any snapshot.
    let o = covenant(&[
        "ledger",
        "audit",
        tmp.path().join("a/ledger").to_str().unwrap(),
        "--service-cert",
        cert.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("from snapshot"));

    let help = text(&covenant(&["ledger", "audit", "--help"]));
    assert!(help.contains("--snapshot"), "{help}");
    assert!(help.contains("snapshots/snapshot_"), "{help}");
}
