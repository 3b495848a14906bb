//! Governance COSE_Sign1: round trips, every tamper refused, header errors named,
//! no panics on any input, and interop with envelopes made by CCF's `ccf_cose_sign1`.

use coset::cbor::value::Value;
use coset::{
    iana, CborSerializable, CoseSign1, CoseSign1Builder, Header, HeaderBuilder,
    TaggedCborSerializable,
};
use covenant_crypto::{
    generate_client_identity, parse_gov_sign1, sha256, sign_gov_sign1, verify_gov_sign1,
    Certificate, CryptoError, Curve, SigningKeyPair, HEADER_CREATED_AT, HEADER_MSG_TYPE,
    HEADER_PROPOSAL_ID,
};
use proptest::prelude::*;

const MEMBER0_CERT: &str = include_str!("fixtures/member0_cert.pem");
const MEMBER1_CERT: &str = include_str!("fixtures/member1_cert.pem");
const PROPOSAL_COSE: &[u8] = include_bytes!("fixtures/proposal.cose");
const BALLOT_COSE: &[u8] = include_bytes!("fixtures/ballot.cose");
const WITHDRAWAL_COSE: &[u8] = include_bytes!("fixtures/withdrawal_p256.cose");
const PROPOSAL_JSON: &[u8] = include_bytes!("fixtures/proposal.json");
const BALLOT_JSON: &[u8] = include_bytes!("fixtures/ballot.json");
const MEMBER0_ID: &str = "e41e5941cfd6a7e73ce8a77f5017dec150ad1c992921b33ae54f6c4d0c8664c6";
const MEMBER1_ID: &str = "8ad1b6b184edd6f3487c750efc5cb72544e4cc7f0ae184a0c77e77d4d0e415cc";

fn member(curve: Curve) -> (SigningKeyPair, Certificate) {
    generate_client_identity("member", curve).unwrap()
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// A governance header as `sign_gov_sign1` writes it, for tests to alter.
fn gov_header(alg: iana::Algorithm, kid: &str, created_at: Value) -> HeaderBuilder {
    HeaderBuilder::new()
        .algorithm(alg)
        .key_id(kid.as_bytes().to_vec())
        .text_value(HEADER_MSG_TYPE.into(), text("proposal"))
        .text_value(HEADER_CREATED_AT.into(), created_at)
}

/// Signs an arbitrary envelope with `key`, so only the aspect under test is wrong.
fn craft(
    key: &SigningKeyPair,
    protected: Header,
    unprotected: Header,
    payload: Option<&[u8]>,
    tagged: bool,
) -> Vec<u8> {
    let mut b = CoseSign1Builder::new()
        .protected(protected)
        .unprotected(unprotected);
    if let Some(p) = payload {
        b = b.payload(p.to_vec());
    }
    let msg = b
        .try_create_signature(&[], |tbs| key.sign_fixed(tbs))
        .unwrap()
        .build();
    if tagged {
        msg.to_tagged_vec().unwrap()
    } else {
        msg.to_vec().unwrap()
    }
}

/// A tagged envelope of `{}` with `protected` (and nothing unprotected), signed by
/// `key`: what most tests craft, altering only the protected header.
fn envelope(key: &SigningKeyPair, protected: Header) -> Vec<u8> {
    craft(key, protected, Header::default(), Some(b"{}"), true)
}

/// [`envelope`] of the governance header `sign_gov_sign1` would write with `alg`
/// and `kid` (created at 5).
fn gov_envelope(key: &SigningKeyPair, alg: iana::Algorithm, kid: &str) -> Vec<u8> {
    envelope(key, gov_header(alg, kid, Value::Integer(5.into())).build())
}

/// Whether verifying `env` against `cert` fails on its signature.
fn bad_signature(env: &[u8], cert: &Certificate) -> bool {
    matches!(
        verify_gov_sign1(env, cert),
        Err(CryptoError::BadSignature(_))
    )
}

fn err_text(r: Result<impl std::fmt::Debug, CryptoError>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn sign_verify_round_trip_p384_and_p256() {
    for curve in [Curve::P384, Curve::P256] {
        let (key, cert) = member(curve);
        for (msg_type, proposal_id, payload) in [
            ("proposal", None, &br#"{"actions":[]}"#[..]),
            ("ballot", Some("abc123"), &b"{}"[..]),
            ("withdrawal", Some("abc123"), &b""[..]),
            ("ack", None, &b""[..]),
        ] {
            let env =
                sign_gov_sign1(&key, &cert, msg_type, 1_700_000_000, proposal_id, payload).unwrap();
            assert_eq!(env[0], 0xd2, "tagged COSE_Sign1 (18)");
            let m = verify_gov_sign1(&env, &cert).unwrap();
            assert_eq!(m.msg_type, msg_type);
            assert_eq!(m.created_at, 1_700_000_000);
            assert_eq!(m.proposal_id.as_deref(), proposal_id);
            assert_eq!(m.kid, cert.member_id());
            assert_eq!(m.payload, payload);
            assert_eq!(m.envelope_digest, sha256(&env));
            assert_eq!(parse_gov_sign1(&env).unwrap(), m);
        }
    }
}

#[test]
fn untagged_envelope_verifies_with_the_same_signed_digest() {
    let (key, cert) = member(Curve::P384);
    let tagged = sign_gov_sign1(&key, &cert, "proposal", 5, None, b"x").unwrap();
    let untagged = CoseSign1::from_tagged_slice(&tagged)
        .unwrap()
        .to_vec()
        .unwrap();
    let a = verify_gov_sign1(&tagged, &cert).unwrap();
    let b = verify_gov_sign1(&untagged, &cert).unwrap();
    assert_ne!(a.envelope_digest, b.envelope_digest);
    assert_eq!(a.signed_digest, b.signed_digest);
}

#[test]
fn tampered_payload_is_refused() {
    let (key, cert) = member(Curve::P384);
    let env = sign_gov_sign1(&key, &cert, "proposal", 5, None, b"{\"a\":1}").unwrap();
    let mut msg = CoseSign1::from_tagged_slice(&env).unwrap();
    msg.payload = Some(b"{\"a\":2}".to_vec());
    let bad = msg.to_tagged_vec().unwrap();
    // Parsing alone does not check signatures: only verification refuses.
    assert!(parse_gov_sign1(&bad).is_ok());
    assert!(bad_signature(&bad, &cert));
}

#[test]
fn tampered_header_is_refused() {
    let (key, cert) = member(Curve::P256);
    let env = sign_gov_sign1(&key, &cert, "ballot", 5, Some("p1"), b"{}").unwrap();
    let tamper: [fn(&mut Header); 3] = [
        |h| h.rest[2].1 = Value::Integer(6.into()),
        |h| h.rest[1].1 = text("p2"),
        |h| h.rest[0].1 = text("withdrawal"),
    ];
    for t in tamper {
        let mut msg = CoseSign1::from_tagged_slice(&env).unwrap();
        t(&mut msg.protected.header);
        msg.protected.original_data = None; // re-encode the altered header
        let bad = msg.to_tagged_vec().unwrap();
        assert!(parse_gov_sign1(&bad).is_ok());
        assert!(bad_signature(&bad, &cert));
    }
}

#[test]
fn flipped_signature_byte_is_refused() {
    for curve in [Curve::P384, Curve::P256] {
        let (key, cert) = member(curve);
        let env = sign_gov_sign1(&key, &cert, "proposal", 5, None, b"{}").unwrap();
        let mut bad = env.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        assert!(bad_signature(&bad, &cert));
    }
}

#[test]
fn wrong_signer_cert_is_refused() {
    let (key, cert) = member(Curve::P384);
    let (_, other) = member(Curve::P384);
    let env = sign_gov_sign1(&key, &cert, "proposal", 5, None, b"{}").unwrap();
    match verify_gov_sign1(&env, &other) {
        Err(CryptoError::CoseKidMismatch { kid, member_id }) => {
            assert_eq!(kid, cert.member_id());
            assert_eq!(member_id, other.member_id());
        }
        r => panic!("expected a kid mismatch, got {r:?}"),
    }
}

#[test]
fn kid_of_another_member_is_refused() {
    // Signed with member A's key but claiming member B: B's key does not verify it.
    let (key_a, _) = member(Curve::P384);
    let (_, cert_b) = member(Curve::P384);
    let env = gov_envelope(&key_a, iana::Algorithm::ES384, &cert_b.member_id());
    assert_eq!(parse_gov_sign1(&env).unwrap().kid, cert_b.member_id());
    assert!(bad_signature(&env, &cert_b));
}

#[test]
fn alg_that_does_not_match_the_key_is_refused() {
    // A P-384 member whose envelope claims ES256 (signed by some P-256 key).
    let (_, cert) = member(Curve::P384);
    let (p256, _) = member(Curve::P256);
    let env = gov_envelope(&p256, iana::Algorithm::ES256, &cert.member_id());
    let err = err_text(verify_gov_sign1(&env, &cert));
    assert!(err.contains("alg ES256 does not match"), "{err}");
}

#[test]
fn other_algorithms_are_refused() {
    let (key, cert) = member(Curve::P384);
    for alg in [
        iana::Algorithm::ES512,
        iana::Algorithm::EdDSA,
        iana::Algorithm::PS256,
    ] {
        let env = gov_envelope(&key, alg, &cert.member_id());
        assert!(matches!(
            parse_gov_sign1(&env),
            Err(CryptoError::Unsupported(_))
        ));
        assert!(verify_gov_sign1(&env, &cert).is_err());
    }
}

#[test]
fn missing_headers_are_named() {
    let (key, cert) = member(Curve::P384);
    let kid = cert.member_id();
    let created = || Value::Integer(5.into());
    let cases: [(Header, &str); 4] = [
        (
            HeaderBuilder::new()
                .key_id(kid.as_bytes().to_vec())
                .text_value(HEADER_MSG_TYPE.into(), text("proposal"))
                .text_value(HEADER_CREATED_AT.into(), created())
                .build(),
            "alg (label 1)",
        ),
        (
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::ES384)
                .text_value(HEADER_MSG_TYPE.into(), text("proposal"))
                .text_value(HEADER_CREATED_AT.into(), created())
                .build(),
            "kid (label 4)",
        ),
        (
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::ES384)
                .key_id(kid.as_bytes().to_vec())
                .text_value(HEADER_CREATED_AT.into(), created())
                .build(),
            HEADER_MSG_TYPE,
        ),
        (
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::ES384)
                .key_id(kid.as_bytes().to_vec())
                .text_value(HEADER_MSG_TYPE.into(), text("proposal"))
                .build(),
            HEADER_CREATED_AT,
        ),
    ];
    for (h, name) in cases {
        let env = envelope(&key, h);
        match parse_gov_sign1(&env) {
            Err(e @ CryptoError::CoseMissingHeader(n)) => {
                assert_eq!(n, name);
                assert!(e.to_string().contains(name), "{e}");
            }
            r => panic!("{name}: expected a missing header, got {r:?}"),
        }
        assert!(verify_gov_sign1(&env, &cert).is_err());
    }
    // A ballot names its proposal.
    let h = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES384)
        .key_id(kid.as_bytes().to_vec())
        .text_value(HEADER_MSG_TYPE.into(), text("ballot"))
        .text_value(HEADER_CREATED_AT.into(), created())
        .build();
    let env = envelope(&key, h);
    let err = err_text(parse_gov_sign1(&env));
    assert!(err.contains(HEADER_PROPOSAL_ID), "{err}");
}

#[test]
fn mistyped_or_invalid_headers_are_named() {
    let (key, cert) = member(Curve::P384);
    let kid = cert.member_id();
    let base = |created_at: Value| gov_header(iana::Algorithm::ES384, &kid, created_at);
    let cases: Vec<(Header, &str)> = vec![
        (base(text("2024-05-01")).build(), HEADER_CREATED_AT),
        (base(Value::Integer((-1).into())).build(), HEADER_CREATED_AT),
        (
            base(Value::Integer(u64::MAX.into())).build(),
            HEADER_CREATED_AT,
        ),
        (
            base(Value::Integer(5.into()))
                .text_value(HEADER_PROPOSAL_ID.into(), Value::Integer(7.into()))
                .build(),
            HEADER_PROPOSAL_ID,
        ),
        (
            base(Value::Integer(5.into()))
                .text_value(HEADER_PROPOSAL_ID.into(), text(""))
                .build(),
            HEADER_PROPOSAL_ID,
        ),
        (
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::ES384)
                .key_id(kid.as_bytes().to_vec())
                .text_value(HEADER_MSG_TYPE.into(), Value::Integer(1.into()))
                .text_value(HEADER_CREATED_AT.into(), Value::Integer(5.into()))
                .build(),
            HEADER_MSG_TYPE,
        ),
        (
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::ES384)
                .key_id(kid.as_bytes().to_vec())
                .text_value(HEADER_MSG_TYPE.into(), text("make_me_admin"))
                .text_value(HEADER_CREATED_AT.into(), Value::Integer(5.into()))
                .build(),
            HEADER_MSG_TYPE,
        ),
        (
            gov_header(
                iana::Algorithm::ES384,
                &kid.to_uppercase(),
                Value::Integer(5.into()),
            )
            .build(),
            "kid (label 4)",
        ),
        (
            gov_header(iana::Algorithm::ES384, "member0", Value::Integer(5.into())).build(),
            "kid (label 4)",
        ),
        (
            base(Value::Integer(5.into()))
                .add_critical(iana::HeaderParameter::ContentType)
                .build(),
            "critical header",
        ),
    ];
    for (h, name) in cases {
        let env = envelope(&key, h);
        let err = err_text(parse_gov_sign1(&env));
        assert!(err.contains(name), "{name}: {err}");
    }
}

#[test]
fn governance_headers_must_be_protected() {
    let (key, cert) = member(Curve::P384);
    let kid = cert.member_id();
    let protected = || gov_header(iana::Algorithm::ES384, &kid, Value::Integer(5.into())).build();
    let cases: [(Header, Header, &str); 4] = [
        (
            protected(),
            HeaderBuilder::new()
                .text_value(HEADER_PROPOSAL_ID.into(), text("p1"))
                .build(),
            HEADER_PROPOSAL_ID,
        ),
        (
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::ES384)
                .key_id(kid.as_bytes().to_vec())
                .text_value(HEADER_CREATED_AT.into(), Value::Integer(5.into()))
                .build(),
            HeaderBuilder::new()
                .text_value(HEADER_MSG_TYPE.into(), text("proposal"))
                .build(),
            HEADER_MSG_TYPE,
        ),
        (
            protected(),
            HeaderBuilder::new().key_id(b"x".to_vec()).build(),
            "kid (label 4)",
        ),
        (
            protected(),
            HeaderBuilder::new()
                .text_value("other".into(), text("u"))
                .build(),
            "",
        ),
    ];
    for (i, (p, u, name)) in cases.into_iter().enumerate() {
        let env = craft(&key, p, u, Some(b"{}"), true);
        let r = parse_gov_sign1(&env);
        if name.is_empty() {
            // Unknown unprotected headers are allowed (RFC 9052), and not signed.
            assert!(verify_gov_sign1(&env, &cert).is_ok(), "case {i}: {r:?}");
        } else {
            let err = err_text(r);
            assert!(err.contains(name) && err.contains("protected"), "{err}");
        }
    }
    // The same label in both buckets is refused.
    let p = gov_header(iana::Algorithm::ES384, &kid, Value::Integer(5.into()))
        .text_value("x-note".into(), text("a"))
        .build();
    let u = HeaderBuilder::new()
        .text_value("x-note".into(), text("b"))
        .build();
    let err = err_text(parse_gov_sign1(&craft(&key, p, u, Some(b"{}"), true)));
    assert!(err.contains("both"), "{err}");
}

#[test]
fn malformed_envelopes_are_refused() {
    let (key, cert) = member(Curve::P384);
    let kid = cert.member_id();
    let h = || gov_header(iana::Algorithm::ES384, &kid, Value::Integer(5.into())).build();

    let detached = craft(&key, h(), Header::default(), None, true);
    let err = err_text(parse_gov_sign1(&detached));
    assert!(err.contains("detached"), "{err}");

    let good = envelope(&key, h());
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(parse_gov_sign1(&trailing).is_err());

    let untagged = CoseSign1::from_tagged_slice(&good)
        .unwrap()
        .to_vec()
        .unwrap();
    let mut other_tag = vec![0xd1]; // tag 17, COSE_Mac0
    other_tag.extend_from_slice(&untagged);
    let err = err_text(parse_gov_sign1(&other_tag));
    assert!(err.contains("tag 17"), "{err}");

    // A DER signature (X.509 style) instead of r||s.
    let mut msg = CoseSign1::from_tagged_slice(&good).unwrap();
    msg.signature = key.sign(&msg.tbs_data(&[])).unwrap();
    let err = err_text(parse_gov_sign1(&msg.to_tagged_vec().unwrap()));
    assert!(err.contains("96 bytes"), "{err}");

    for junk in [&b""[..], b"\xd2", b"\x84\x40\xa0\x40\x40", b"{\"json\":1}"] {
        assert!(parse_gov_sign1(junk).is_err());
    }
}

#[test]
fn sign_refuses_bad_inputs() {
    let (key, cert) = member(Curve::P384);
    let (_, other) = member(Curve::P384);
    assert!(matches!(
        sign_gov_sign1(&key, &other, "proposal", 5, None, b"{}"),
        Err(CryptoError::Certificate(_))
    ));
    for (t, id, created_at) in [
        ("nonsense", None, 5),
        ("", None, 5),
        ("ballot", None, 5),
        ("withdrawal", Some(""), 5),
        ("proposal", None, u64::MAX),
    ] {
        assert!(
            sign_gov_sign1(&key, &cert, t, created_at, id, b"{}").is_err(),
            "{t} {id:?}"
        );
    }
}

/// Envelopes made by CCF's `ccf_cose_sign1` (see fixtures/README.md) verify, and
/// every decoded field is the one given to the tool.
#[test]
fn ccf_cose_sign1_fixtures_verify() {
    let member0 = Certificate::from_pem(MEMBER0_CERT).unwrap();
    let member1 = Certificate::from_pem(MEMBER1_CERT).unwrap();
    assert_eq!(member0.member_id(), MEMBER0_ID);
    assert_eq!(member1.member_id(), MEMBER1_ID);

    let p = verify_gov_sign1(PROPOSAL_COSE, &member0).unwrap();
    assert_eq!(p.msg_type, "proposal");
    assert_eq!(p.created_at, 1_714_564_800); // 2024-05-01T12:00:00Z
    assert_eq!(p.proposal_id, None);
    assert_eq!(p.kid, MEMBER0_ID);
    assert_eq!(p.payload, PROPOSAL_JSON);
    assert_eq!(p.envelope_digest, sha256(PROPOSAL_COSE));

    let b = verify_gov_sign1(BALLOT_COSE, &member0).unwrap();
    assert_eq!(b.msg_type, "ballot");
    assert_eq!(b.created_at, 1_714_565_100);
    assert_eq!(b.proposal_id.as_deref(), Some("1a2b3c4d5e6f"));
    assert_eq!(b.kid, MEMBER0_ID);
    assert_eq!(b.payload, BALLOT_JSON);
    assert_eq!(b.envelope_digest, sha256(BALLOT_COSE));

    let w = verify_gov_sign1(WITHDRAWAL_COSE, &member1).unwrap();
    assert_eq!(w.msg_type, "withdrawal");
    assert_eq!(w.created_at, 1_714_565_400);
    assert_eq!(w.proposal_id.as_deref(), Some("1a2b3c4d5e6f"));
    assert_eq!(w.kid, MEMBER1_ID);
    assert!(w.payload.is_empty());

    // Each fixture is refused under the other member's certificate.
    assert!(verify_gov_sign1(PROPOSAL_COSE, &member1).is_err());
    assert!(verify_gov_sign1(WITHDRAWAL_COSE, &member0).is_err());
}

/// Every single-bit change anywhere in a real CCF envelope is refused.
#[test]
fn ccf_cose_sign1_fixtures_refuse_every_bit_flip() {
    let member0 = Certificate::from_pem(MEMBER0_CERT).unwrap();
    let member1 = Certificate::from_pem(MEMBER1_CERT).unwrap();
    for (env, cert) in [
        (PROPOSAL_COSE, &member0),
        (BALLOT_COSE, &member0),
        (WITHDRAWAL_COSE, &member1),
    ] {
        for i in 0..env.len() {
            for bit in 0..8 {
                let mut bad = env.to_vec();
                bad[i] ^= 1 << bit;
                assert!(
                    verify_gov_sign1(&bad, cert).is_err(),
                    "flip of bit {bit} of byte {i} was accepted"
                );
            }
        }
    }
}

/// Our envelopes have the tool's layout: same header labels in the same order, same
/// alg, empty unprotected header, same signature width.
#[test]
fn our_envelopes_have_the_ccf_layout() {
    let (key, cert) = member(Curve::P384);
    let env = sign_gov_sign1(
        &key,
        &cert,
        "ballot",
        1_714_565_100,
        Some("1a2b3c4d5e6f"),
        b"{}",
    )
    .unwrap();
    let ours = CoseSign1::from_tagged_slice(&env).unwrap();
    let theirs = CoseSign1::from_tagged_slice(BALLOT_COSE).unwrap();
    let labels = |m: &CoseSign1| {
        m.protected
            .header
            .rest
            .iter()
            .map(|(l, _)| l.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(labels(&ours), labels(&theirs));
    assert_eq!(ours.protected.header.alg, theirs.protected.header.alg);
    assert!(ours.unprotected.is_empty() && theirs.unprotected.is_empty());
    assert_eq!(ours.signature.len(), theirs.signature.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_gov_sign1(&bytes);
    }

    #[test]
    fn arbitrary_user_envelopes_never_panic_and_never_verify(
        tail in proptest::collection::vec(any::<u8>(), 0..512),
        prefixed in any::<bool>(),
    ) {
        let cert = Certificate::from_pem(MEMBER0_CERT).unwrap();
        let mut bytes = if prefixed { vec![0xd2, 0x84] } else { vec![] };
        bytes.extend_from_slice(&tail);
        let _ = covenant_crypto::user_sign1_kid(&bytes);
        prop_assert!(covenant_crypto::verify_user_sign1(&bytes, &cert).is_err());
    }

    #[test]
    fn arbitrary_bytes_after_a_sign1_prefix_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = vec![0xd2, 0x84];
        bytes.extend_from_slice(&tail);
        let _ = parse_gov_sign1(&bytes);
    }

    #[test]
    fn mutated_real_envelopes_never_panic_and_never_verify(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let cert = Certificate::from_pem(MEMBER0_CERT).unwrap();
        let mut bad = BALLOT_COSE.to_vec();
        for (i, b) in &edits {
            let i = i.index(bad.len());
            bad[i] = *b;
        }
        if truncate {
            bad.truncate(cut.index(bad.len()));
        }
        let _ = parse_gov_sign1(&bad);
        if bad != BALLOT_COSE {
            prop_assert!(verify_gov_sign1(&bad, &cert).is_err());
        }
    }
}
