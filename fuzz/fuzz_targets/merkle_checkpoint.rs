#![no_main]
//! Merkle checkpoints: arbitrary bytes never panic; an accepted one answers root queries.
use covenant_merkle::MerkleTree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = MerkleTree::from_checkpoint(data) {
        let _ = t.root();
        if t.len() > 1 {
            let _ = t.root_at(t.len() / 2);
        }
    }
});
