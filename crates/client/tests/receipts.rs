//! Receipts produced by the engine verify with the SPEC algorithm; any altered part
//! makes them fail.

use covenant_types::SeqNo;
use std::sync::Arc;

use covenant_client::{verify_consistency, ReceiptVerifier, VerifyError};
use covenant_crypto::{Curve, LedgerSecret, NodeIdentity, ServiceIdentity};
use covenant_engine::{Engine, EngineConfig};
use covenant_merkle::ProofStep;
use covenant_receipt::{
    claims_digest, ApplicationClaim, LedgerEntryClaim, Receipt, ReceiptResponse,
};
use covenant_test_support::Fixture;
use covenant_types::{Digest32, TxId};
use proptest::prelude::*;

struct World {
    service: ServiceIdentity,
    engine: Engine,
    txids: Vec<TxId>,
    _dir: tempfile::TempDir,
}

fn world(n: u64, sig_interval: u64) -> World {
    let Fixture {
        service,
        node,
        secret,
        dir,
    } = Fixture::new();
    let mut c = EngineConfig::new(dir.path().join("ledger"));
    c.sig_tx_interval = sig_interval;
    let mut engine = Engine::open(c, node, secret).unwrap();
    let mut txids = Vec::new();
    for i in 0..n {
        let mut tx = engine.begin();
        tx.put(
            "entries",
            &i.to_be_bytes(),
            format!("contents {i}").as_bytes(),
        );
        txids.push(engine.commit_tx(tx, None).unwrap());
    }
    engine.emit_signature().unwrap();
    engine.flush().unwrap();
    World {
        service,
        engine,
        txids,
        _dir: dir,
    }
}

fn flip_hex(s: &str, at: usize) -> String {
    let mut c: Vec<char> = s.chars().collect();
    let i = at % c.len();
    c[i] = if c[i] == '0' { '1' } else { '0' };
    c.into_iter().collect()
}

fn flip_digest(d: &Digest32, at: usize) -> Digest32 {
    let mut x = *d;
    x.0[at % 32] ^= 1 << (at % 8);
    x
}

/// Every way of altering a receipt that must make it fail.
fn tampered(r: &Receipt, salt: usize, other_cert_pem: &str) -> Vec<(&'static str, Receipt)> {
    let mut out = Vec::new();
    let mut t = r.clone();
    t.leaf_components.write_set_digest = flip_hex(&t.leaf_components.write_set_digest, salt);
    out.push(("writeSetDigest", t));
    let mut t = r.clone();
    t.leaf_components.claims_digest = flip_hex(&t.leaf_components.claims_digest, salt);
    out.push(("claimsDigest", t));
    let mut t = r.clone();
    let ce = &t.leaf_components.commit_evidence;
    let cut = ce.rfind(':').unwrap() + 1;
    t.leaf_components.commit_evidence = format!("{}{}", &ce[..cut], flip_hex(&ce[cut..], salt));
    out.push(("commitEvidence", t));
    if !r.proof.is_empty() {
        let mut t = r.clone();
        let j = salt % t.proof.len();
        t.proof[j] = match t.proof[j] {
            ProofStep::Left(d) => ProofStep::Left(flip_digest(&d, salt)),
            ProofStep::Right(d) => ProofStep::Right(flip_digest(&d, salt)),
        };
        out.push(("proof element", t));
        let mut t = r.clone();
        t.proof[j] = match t.proof[j] {
            ProofStep::Left(d) => ProofStep::Right(d),
            ProofStep::Right(d) => ProofStep::Left(d),
        };
        out.push(("proof direction", t));
    }
    let mut t = r.clone();
    let mut sig = base64_decode(&t.signature);
    let k = 8 + salt % (sig.len() - 8);
    sig[k] ^= 1;
    t.signature = base64_encode(&sig);
    out.push(("signature", t));
    let mut t = r.clone();
    t.cert = other_cert_pem.to_string();
    out.push(("cert", t));
    let mut t = r.clone();
    t.node_id = flip_hex(&t.node_id, salt);
    out.push(("nodeId", t));
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn every_receipt_verifies_and_every_tampering_fails() {
    let mut w = world(40, 7);
    let verifier = ReceiptVerifier::new(w.service.cert.clone());
    // A node of another service (its cert has a valid self-consistent key but no endorsement).
    let rogue_service = ServiceIdentity::generate(Curve::P384).unwrap();
    let rogue = NodeIdentity::generate(&rogue_service, Curve::P384, &[]).unwrap();
    for (i, t) in w.txids.clone().iter().enumerate() {
        let resp = w.engine.receipt(*t).unwrap();
        let v = verifier.verify_response(&resp, None).unwrap();
        assert_eq!(v.transaction_id, *t);
        let r = resp.receipt.clone().unwrap();
        for (what, bad) in tampered(&r, i * 31 + 5, &rogue.cert.to_pem()) {
            assert!(
                verifier.verify(&bad, None).is_err(),
                "tampered {what} verified for {t}"
            );
        }
        // A response claiming another TxId is refused.
        let mut other = resp.clone();
        other.transaction_id = TxId::new(t.view.0, t.seqno.0 + 1);
        assert!(matches!(
            verifier.verify_response(&other, None),
            Err(VerifyError::TxIdMismatch { .. })
        ));
    }
    // Against another service cert, nothing verifies.
    let stranger = ReceiptVerifier::new(rogue_service.cert.clone());
    let resp = w.engine.receipt(w.txids[0]).unwrap();
    assert!(matches!(
        stranger.verify_response(&resp, None),
        Err(VerifyError::NotEndorsed(_))
    ));
}

#[test]
fn receipts_roundtrip_through_json() {
    let mut w = world(5, 100);
    let verifier = ReceiptVerifier::new(w.service.cert.clone());
    let resp = w.engine.receipt(w.txids[2]).unwrap();
    let json = serde_json::to_string(&resp).unwrap();
    let back: ReceiptResponse = serde_json::from_str(&json).unwrap();
    verifier.verify_response(&back, None).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["state"], "Ready");
    assert_eq!(v["transactionId"], w.txids[2].to_string());
    assert!(v["receipt"]["serviceEndorsements"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn application_claims_enter_the_leaf() {
    let service = ServiceIdentity::generate(Curve::P384).unwrap();
    let node = NodeIdentity::generate(&service, Curve::P384, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut engine = Engine::open(
        EngineConfig::new(dir.path()),
        Arc::new(node),
        Arc::new(LedgerSecret::generate().unwrap()),
    )
    .unwrap();
    let claims = vec![ApplicationClaim::LedgerEntry {
        ledger_entry: LedgerEntryClaim {
            collection_id: "subledger:0".into(),
            contents: "hello".into(),
            secret_key: base64_encode(&[9u8; 32]),
            protocol: "LedgerEntryV1".into(),
        },
    }];
    let mut tx = engine.begin();
    tx.put("entries", b"1", b"hello");
    let t = engine
        .commit_tx(tx, Some(claims_digest(&claims).unwrap()))
        .unwrap();
    engine.emit_signature().unwrap();
    engine.flush().unwrap();
    let resp = engine.receipt(t).unwrap();
    let verifier = ReceiptVerifier::new(service.cert.clone());
    verifier.verify_response(&resp, Some(&claims)).unwrap();
    verifier.verify_response(&resp, None).unwrap();
    let mut wrong = claims.clone();
    if let ApplicationClaim::LedgerEntry { ledger_entry } = &mut wrong[0] {
        ledger_entry.contents = "hellO".into();
    }
    assert!(matches!(
        verifier.verify_response(&resp, Some(&wrong)),
        Err(VerifyError::ClaimsMismatch { .. })
    ));
}

#[test]
fn service_endorsements_chain_to_the_new_service() {
    let mut w = world(3, 100);
    let old = &w.service;
    let new = ServiceIdentity::generate(Curve::P384).unwrap();
    let newer = ServiceIdentity::generate(Curve::P384).unwrap();
    let mut r = w.engine.receipt(w.txids[1]).unwrap().receipt.unwrap();
    // Without endorsements, the new service does not vouch for the old node.
    let v_new = ReceiptVerifier::new(new.cert.clone());
    assert!(v_new.verify(&r, None).is_err());
    r.service_endorsements = vec![new.endorse_previous(&old.cert).unwrap().to_pem()];
    v_new.verify(&r, None).unwrap();
    // Two recoveries: old <- new <- newer.
    let v_newer = ReceiptVerifier::new(newer.cert.clone());
    assert!(v_newer.verify(&r, None).is_err());
    r.service_endorsements
        .push(newer.endorse_previous(&new.cert).unwrap().to_pem());
    v_newer.verify(&r, None).unwrap();
    // Order matters.
    r.service_endorsements.reverse();
    assert!(v_newer.verify(&r, None).is_err());
}

#[test]
fn consistency_between_signed_roots() {
    let mut w = world(100, 9);
    let verifier = ReceiptVerifier::new(w.service.cert.clone());
    let sigs: Vec<SeqNo> = w.engine.signature_seqnos().collect();
    assert!(sigs.len() >= 10);
    for (i, a) in sigs.iter().enumerate() {
        for b in &sigs[i..] {
            let (old, new, proof) = w.engine.consistency(*a, *b).unwrap();
            verify_consistency(&verifier, &old, &new, &proof).unwrap();
            if !proof.path.is_empty() {
                let mut bad = proof.clone();
                bad.path[0] = flip_digest(&bad.path[0], 3);
                assert!(verify_consistency(&verifier, &old, &new, &bad).is_err());
            }
            // Swapping in a forged root breaks it even with a genuine proof.
            let mut forged = new.clone();
            forged.root = flip_digest(&forged.root, 1);
            assert!(verify_consistency(&verifier, &old, &forged, &proof).is_err());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn random_ledgers_give_verifiable_receipts(n in 1u64..120, sig in 1u64..20, salt in any::<usize>()) {
        let mut w = world(n, sig);
        let verifier = ReceiptVerifier::new(w.service.cert.clone());
        let other = NodeIdentity::generate(&w.service, Curve::P384, &[]).unwrap();
        for t in w.txids.clone() {
            let r = w.engine.receipt(t).unwrap().receipt.unwrap();
            prop_assert!(verifier.verify(&r, None).is_ok());
            for (what, bad) in tampered(&r, salt, &other.cert.to_pem()) {
                prop_assert!(verifier.verify(&bad, None).is_err(), "tampered {} verified", what);
            }
        }
    }
}
