#![no_main]
//! `user_cose_sign1` request bodies are untrusted: any bytes are refused cleanly
//! (a forged envelope verifying would be a finding too).
use libfuzzer_sys::fuzz_target;

mod common;
use common::cert;

fuzz_target!(|data: &[u8]| {
    let _ = covenant_crypto::user_sign1_kid(data);
    assert!(covenant_crypto::verify_user_sign1(data, cert()).is_err());
});
