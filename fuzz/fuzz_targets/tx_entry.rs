#![no_main]
//! Ledger entry payloads from disk or from another node: never panic, re-encode exactly.
use covenant_kv::TxEntry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = TxEntry::decode(data) {
        assert_eq!(e.encode(), data);
        let _ = e.public_write_set();
    }
});
