#![no_main]
//! Receipts are untrusted input: any JSON, verified against a fixed service cert,
//! is rejected cleanly (a forged receipt verifying would be a finding too).
use std::sync::OnceLock;

use covenant_client::ReceiptVerifier;
use covenant_crypto::{Curve, ServiceIdentity};
use covenant_receipt::{ApplicationClaim, Receipt, ReceiptResponse};
use libfuzzer_sys::fuzz_target;

fn verifier() -> &'static ReceiptVerifier {
    static V: OnceLock<ReceiptVerifier> = OnceLock::new();
    V.get_or_init(|| match ServiceIdentity::generate(Curve::P384) {
        Ok(s) => ReceiptVerifier::new(s.cert),
        Err(e) => panic!("cannot generate a service identity: {e}"),
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<ReceiptResponse>(data) {
        assert!(verifier().verify_response(&r, None).is_err());
    }
    if let Ok(r) = serde_json::from_slice::<Receipt>(data) {
        assert!(verifier().verify(&r, None).is_err());
    }
    if let Ok(c) = serde_json::from_slice::<Vec<ApplicationClaim>>(data) {
        let _ = covenant_receipt::claims_digest(&c);
    }
});
