#![no_main]
//! HTTP-signature governance requests are untrusted: any `Authorization` value and
//! body are refused cleanly, and nothing forged verifies against a member's key.
use axum::http::{HeaderMap, HeaderValue};
use covenant_node::http_sig;
use libfuzzer_sys::fuzz_target;

mod common;
use common::cert;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (header, body) = data.split_at(split);
    let Ok(value) = std::str::from_utf8(header) else {
        return;
    };
    let Ok(sig) = http_sig::parse(value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert("digest", v);
    }
    if let Ok(signing) = http_sig::signing_string(&sig, "POST", "/gov/ack", &headers, body) {
        assert!(http_sig::verify(&sig, &signing, cert()).is_err());
    }
    let _ = http_sig::key_id_names(&sig.key_id, &cert().member_id(), &cert().to_pem());
});
