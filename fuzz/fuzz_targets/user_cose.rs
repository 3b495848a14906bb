#![no_main]
//! `user_cose_sign1` request bodies are untrusted: any bytes are refused cleanly
//! (a forged envelope verifying would be a finding too).
use std::sync::OnceLock;

use covenant_crypto::{generate_client_identity, Certificate, Curve};
use libfuzzer_sys::fuzz_target;

fn cert() -> &'static Certificate {
    static C: OnceLock<Certificate> = OnceLock::new();
    C.get_or_init(|| match generate_client_identity("fuzz", Curve::P384) {
        Ok((_, c)) => c,
        Err(e) => panic!("cannot generate an identity: {e}"),
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = covenant_crypto::user_sign1_kid(data);
    assert!(covenant_crypto::verify_user_sign1(data, cert()).is_err());
});
