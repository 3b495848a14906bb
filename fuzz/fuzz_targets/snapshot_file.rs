#![no_main]
//! Snapshot files (what a joining node receives over the network): decoding and
//! verification of arbitrary bytes never panic, and nothing unsigned verifies.
use std::sync::OnceLock;

use covenant_crypto::{Curve, ServiceIdentity};
use covenant_engine::SnapshotFile;
use libfuzzer_sys::fuzz_target;

fn service() -> Option<&'static ServiceIdentity> {
    static SERVICE: OnceLock<Option<ServiceIdentity>> = OnceLock::new();
    SERVICE
        .get_or_init(|| ServiceIdentity::generate(Curve::P384).ok())
        .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let Ok(file) = SnapshotFile::decode(data) else {
        return;
    };
    if let Ok(bytes) = file.encode() {
        assert_eq!(bytes, data, "decode/encode is not a round trip");
    }
    if let Some(service) = service() {
        // No input can carry a signature endorsed by a key generated here.
        assert!(file.verify(&service.cert, None).is_err());
    }
});
