//! The Merkle history tree over all transactions (SPEC §3).
//!
//! Shape: the RFC 6962/9162 tree (the left subtree of a range holds the largest power
//! of two strictly smaller than the range), so inclusion *and* consistency proofs
//! follow the RFC algorithms. Hashing is covenant's (and CCF's): a leaf is the
//! 32-byte leaf digest given by [`leaf_hash`], an interior node is
//! `SHA256(left || right)`, with no domain-separation prefixes.
//!
//! Memory: hashes of every *perfect* subtree are kept per level. Levels below
//! `page_bits` (the leaves and small subtrees) are only kept for a window of recent
//! pages; older pages can be [`MerkleTree::flush_before`] evicted and
//! [`MerkleTree::restore_page`] rebuilt from the ledger when an old proof is asked for.
//! What stays forever is two hashes per page, so 10 M leaves cost ~160 KB.

#![forbid(unsafe_code)]

mod proof;
mod tree;

pub use proof::{
    root_from_inclusion, verify_consistency, ConsistencyProof, InclusionProof, ProofStep,
};
pub use tree::{MerkleError, MerkleTree, DEFAULT_PAGE_BITS};

use aws_lc_rs::digest;
use covenant_types::Digest32;

/// Interior node: `SHA256(left || right)`.
#[inline]
pub fn hash_children(left: &Digest32, right: &Digest32) -> Digest32 {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(&left.0);
    buf[32..].copy_from_slice(&right.0);
    let d = digest::digest(&digest::SHA256, &buf);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    Digest32(out)
}

/// A transaction's leaf (SPEC §3):
/// `SHA256(writeSetDigest || SHA256(commitEvidence) || claimsDigest)`.
pub fn leaf_hash(
    write_set_digest: &Digest32,
    commit_evidence_digest: &Digest32,
    claims_digest: &Digest32,
) -> Digest32 {
    let mut buf = [0u8; 96];
    buf[..32].copy_from_slice(&write_set_digest.0);
    buf[32..64].copy_from_slice(&commit_evidence_digest.0);
    buf[64..].copy_from_slice(&claims_digest.0);
    let d = digest::digest(&digest::SHA256, &buf);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    Digest32(out)
}

/// Largest power of two strictly smaller than `n` (n >= 2): the RFC 6962 split point.
#[inline]
pub(crate) fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_points() {
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(3), 2);
        assert_eq!(split_point(4), 2);
        assert_eq!(split_point(5), 4);
        assert_eq!(split_point(8), 4);
        assert_eq!(split_point(9), 8);
    }
}
