#![no_main]
//! Decoding arbitrary bytes as a write set never panics, and whatever decodes
//! re-encodes to exactly the same bytes (one write set, one encoding).
use covenant_kv::WriteSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ws) = WriteSet::deserialize(data) {
        assert_eq!(ws.serialize(), data);
    }
});
