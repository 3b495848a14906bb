#![no_main]
//! Snapshot files: arbitrary bytes never panic (public-only snapshots decode without a secret).
use covenant_kv::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Snapshot::from_bytes(data, None);
});
