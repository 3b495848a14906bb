use covenant_types::Digest32;
use serde::{Deserialize, Serialize};

use crate::hash_children;

/// One step of an inclusion path, leaf to root, in ACL's receipt form:
/// `{"left": hex}` means `h = SHA256(left || h)`, `{"right": hex}` means `h = SHA256(h || right)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ProofStep {
    Left(Digest32),
    Right(Digest32),
}

/// An inclusion path from a leaf to the root of a tree of `tree_size` leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    pub leaf_index: u64,
    pub tree_size: u64,
    pub path: Vec<ProofStep>,
}

/// Folds an inclusion path over a leaf, giving the root it proves membership in.
///
/// This is the whole verification a receipt holder can do without the tree size
/// (SPEC §3); the caller then checks the root's signature.
pub fn root_from_inclusion(leaf: &Digest32, path: &[ProofStep]) -> Digest32 {
    path.iter().fold(*leaf, |h, step| match step {
        ProofStep::Left(l) => hash_children(l, &h),
        ProofStep::Right(r) => hash_children(&h, r),
    })
}

impl InclusionProof {
    /// Stricter than [`root_from_inclusion`]: also checks that the left/right pattern is
    /// the one the RFC 6962 shape dictates for `leaf_index` in `tree_size`.
    pub fn verify(&self, leaf: &Digest32, root: &Digest32) -> bool {
        if self.leaf_index >= self.tree_size {
            return false;
        }
        if expected_directions(self.leaf_index, self.tree_size)
            != self
                .path
                .iter()
                .map(|s| matches!(s, ProofStep::Left(_)))
                .collect::<Vec<_>>()
        {
            return false;
        }
        root_from_inclusion(leaf, &self.path) == *root
    }
}

/// For each step leaf→root: is the sibling on the left?
fn expected_directions(mut index: u64, mut size: u64) -> Vec<bool> {
    let mut dirs = Vec::new();
    let mut offset_stack = Vec::new();
    // Walk root→leaf, then reverse.
    while size > 1 {
        let k = crate::split_point(size);
        if index < k {
            offset_stack.push(false); // sibling (right subtree) on the right
            size = k;
        } else {
            offset_stack.push(true);
            index -= k;
            size -= k;
        }
    }
    while let Some(d) = offset_stack.pop() {
        dirs.push(d);
    }
    dirs
}

/// An RFC 9162 consistency proof that the tree of `old_size` leaves is a prefix of the
/// tree of `new_size` leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub old_size: u64,
    pub new_size: u64,
    pub path: Vec<Digest32>,
}

/// Verifies a consistency proof between two signed roots (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    proof: &ConsistencyProof,
    old_root: &Digest32,
    new_root: &Digest32,
) -> bool {
    let (m, n) = (proof.old_size, proof.new_size);
    if m == 0 || m > n {
        return false;
    }
    if m == n {
        return proof.path.is_empty() && old_root == new_root;
    }
    let mut path: Vec<Digest32> = Vec::with_capacity(proof.path.len() + 1);
    if m.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(&proof.path);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let mut fnode = m - 1;
    let mut snode = n - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = *first;
    let mut sr = *first;
    for c in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = hash_children(c, &fr);
            sr = hash_children(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = hash_children(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && fr == *old_root && sr == *new_root
}
