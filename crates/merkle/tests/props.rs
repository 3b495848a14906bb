//! Property tests: the tree against a naive reference, every proof verifies, every
//! altered proof fails, and flushing memory never changes an answer.

use covenant_merkle::*;
use covenant_types::Digest32;
use proptest::prelude::*;

fn leaf(i: u64) -> Digest32 {
    let mut d = [0u8; 32];
    d[..8].copy_from_slice(&i.to_le_bytes());
    d[31] = 0xAA;
    leaf_hash(&Digest32(d), &Digest32([1; 32]), &Digest32::ZERO)
}

/// RFC 6962 MTH, written the slow, obvious way.
fn reference_root(leaves: &[Digest32]) -> Digest32 {
    match leaves.len() {
        0 => unreachable!(),
        1 => leaves[0],
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            hash_children(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
        }
    }
}

fn build(n: u64, page_bits: u32) -> (MerkleTree, Vec<Digest32>) {
    let mut t = MerkleTree::with_page_bits(page_bits);
    let leaves: Vec<Digest32> = (0..n).map(leaf).collect();
    for l in &leaves {
        t.append(*l);
    }
    (t, leaves)
}

fn flip(d: &Digest32, bit: usize) -> Digest32 {
    let mut x = *d;
    x.0[(bit / 8) % 32] ^= 1 << (bit % 8);
    x
}

/// Answers `f`, restoring flushed pages from `leaves` as the tree asks for them.
fn with_restore<T>(
    t: &mut MerkleTree,
    leaves: &[Digest32],
    f: impl Fn(&MerkleTree) -> Result<T, MerkleError>,
) -> T {
    for _ in 0..8 {
        match f(t) {
            Ok(v) => return v,
            Err(MerkleError::Evicted { page, first, end }) => t
                .restore_page(page, &leaves[first as usize..end as usize])
                .unwrap(),
            Err(e) => panic!("{e}"),
        }
    }
    panic!("restore did not converge")
}

#[test]
fn small_known_shapes() {
    let (t, leaves) = build(3, 2);
    let r = hash_children(&hash_children(&leaves[0], &leaves[1]), &leaves[2]);
    assert_eq!(t.root().unwrap(), r);
    let p = t.inclusion_proof(2, 3).unwrap();
    assert_eq!(
        p.path,
        vec![ProofStep::Left(hash_children(&leaves[0], &leaves[1]))]
    );
    let p = t.inclusion_proof(0, 3).unwrap();
    assert_eq!(
        p.path,
        vec![ProofStep::Right(leaves[1]), ProofStep::Right(leaves[2])]
    );
    assert_eq!(t.root_at(1).unwrap(), leaves[0]);
    assert!(t.inclusion_proof(0, 1).unwrap().path.is_empty());
    assert_eq!(MerkleTree::new().root(), Err(MerkleError::Empty));
    assert!(matches!(
        t.root_at(4),
        Err(MerkleError::SizeTooLarge { .. })
    ));
    assert!(matches!(
        t.inclusion_proof(3, 3),
        Err(MerkleError::NoSuchLeaf { .. })
    ));
    assert!(matches!(
        t.consistency_proof(0, 3),
        Err(MerkleError::BadRange { .. })
    ));
}

#[test]
fn proof_step_json_is_acl_shape() {
    let s = ProofStep::Left(Digest32([0xab; 32]));
    let j = serde_json::to_string(&s).unwrap();
    assert_eq!(j, format!("{{\"left\":\"{}\"}}", "ab".repeat(32)));
    let back: ProofStep = serde_json::from_str(&j).unwrap();
    assert_eq!(back, s);
    assert!(serde_json::from_str::<ProofStep>("{\"up\":\"00\"}").is_err());
}

#[test]
fn memory_is_bounded_after_flush() {
    let mut t = MerkleTree::with_page_bits(8);
    for i in 0..100_000u64 {
        t.append(leaf(i));
        if i % 1000 == 999 {
            t.flush_before(t.len());
        }
    }
    // Two hashes per flushed page, plus at most one page and its levels resident.
    assert!(
        t.resident_hashes() < 100_000 / 256 * 2 + 2 * 256 + 64,
        "{}",
        t.resident_hashes()
    );
    let full = build(100_000, 8).0;
    assert_eq!(t.root().unwrap(), full.root().unwrap());
    assert!(matches!(
        t.root_at(77_777),
        Err(MerkleError::Evicted { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn truncate_then_append_equals_the_tree_of_the_same_leaves(
        n in 1u64..300, cut in any::<u64>(), extra in 0u64..100, bits in 1u32..6, flush in any::<u64>()
    ) {
        let mut t = MerkleTree::with_page_bits(bits);
        let mut leaves: Vec<_> = (0..n).map(leaf).collect();
        for l in &leaves {
            t.append(*l);
        }
        let flushed = flush % (n + 1);
        t.flush_before(flushed);
        let cut = cut % (n + 1);
        if cut < t.first_resident_leaf() {
            prop_assert!(t.truncate(cut).is_err());
            return Ok(());
        }
        t.truncate(cut).unwrap();
        prop_assert_eq!(t.len(), cut);
        leaves.truncate(cut as usize);
        // Different leaves after the cut: nothing of the dropped suffix may survive.
        for i in 0..extra {
            let l = flip(&leaf(i + 1_000_000), 3);
            leaves.push(l);
            t.append(l);
        }
        if leaves.is_empty() {
            prop_assert!(t.root().is_err());
        } else {
            prop_assert_eq!(t.root().unwrap(), reference_root(&leaves));
            let last = leaves.len() as u64 - 1;
            if last >= t.first_resident_leaf() {
                let p = t.inclusion_proof(last, leaves.len() as u64).unwrap();
                prop_assert!(p.verify(&leaves[last as usize], &t.root().unwrap()));
            }
        }
    }

    #[test]
    fn roots_match_reference(n in 1u64..300, bits in 1u32..6) {
        let (t, leaves) = build(n, bits);
        for size in 1..=n {
            prop_assert_eq!(t.root_at(size).unwrap(), reference_root(&leaves[..size as usize]));
        }
    }

    #[test]
    fn every_inclusion_proof_verifies_and_tampering_fails(
        n in 1u64..200, bits in 1u32..6, salt in any::<usize>()
    ) {
        let (t, leaves) = build(n, bits);
        for size in [n, (n / 2).max(1), (salt as u64 % n) + 1] {
            let root = t.root_at(size).unwrap();
            for i in 0..size {
                let p = t.inclusion_proof(i, size).unwrap();
                prop_assert!(p.verify(&leaves[i as usize], &root));
                prop_assert_eq!(root_from_inclusion(&leaves[i as usize], &p.path), root);
                // Another leaf does not verify.
                prop_assert_ne!(root_from_inclusion(&flip(&leaves[i as usize], salt), &p.path), root);
                if !p.path.is_empty() {
                    // Altering any element, or swapping a side, changes the root.
                    let j = salt % p.path.len();
                    let mut bad = p.path.clone();
                    bad[j] = match bad[j] {
                        ProofStep::Left(d) => ProofStep::Left(flip(&d, salt / 7)),
                        ProofStep::Right(d) => ProofStep::Right(flip(&d, salt / 7)),
                    };
                    prop_assert_ne!(root_from_inclusion(&leaves[i as usize], &bad), root);
                    let mut swapped = p.path.clone();
                    swapped[j] = match swapped[j] {
                        ProofStep::Left(d) => ProofStep::Right(d),
                        ProofStep::Right(d) => ProofStep::Left(d),
                    };
                    prop_assert_ne!(root_from_inclusion(&leaves[i as usize], &swapped), root);
                    // Dropping a step fails too.
                    prop_assert_ne!(root_from_inclusion(&leaves[i as usize], &p.path[1..]), root);
                }
            }
        }
    }

    #[test]
    fn consistency_proofs_verify_between_random_sizes(
        n in 1u64..300, a in any::<u64>(), b in any::<u64>(), bit in any::<usize>()
    ) {
        let (t, _) = build(n, 3);
        let new = b % n + 1;
        let old = a % new + 1;
        let p = t.consistency_proof(old, new).unwrap();
        let (ro, rn) = (t.root_at(old).unwrap(), t.root_at(new).unwrap());
        prop_assert!(verify_consistency(&p, &ro, &rn));
        // Wrong roots, altered elements, wrong sizes: refused.
        prop_assert!(!verify_consistency(&p, &flip(&ro, bit), &rn));
        prop_assert!(!verify_consistency(&p, &ro, &flip(&rn, bit)));
        if !p.path.is_empty() {
            let mut bad = p.clone();
            let j = bit % bad.path.len();
            bad.path[j] = flip(&bad.path[j], bit / 5);
            prop_assert!(!verify_consistency(&bad, &ro, &rn));
            let mut short = p.clone();
            short.path.pop();
            prop_assert!(!verify_consistency(&short, &ro, &rn));
        }
        // A proof between other sizes does not link these roots.
        if old > 1 {
            let other = t.consistency_proof(old - 1, new).unwrap();
            prop_assert!(!verify_consistency(&other, &ro, &rn));
        }
    }

    #[test]
    fn flushing_never_changes_answers(n in 2u64..400, bits in 1u32..5, cut in any::<u64>(), q in any::<u64>()) {
        let (full, leaves) = build(n, bits);
        let mut t = full.clone();
        t.flush_before(cut % n);
        let size = q % n + 1;
        let idx = (q / 3) % size;
        prop_assert_eq!(with_restore(&mut t, &leaves, |t| t.root_at(size)), full.root_at(size).unwrap());
        prop_assert_eq!(
            with_restore(&mut t, &leaves, |t| t.inclusion_proof(idx, size)),
            full.inclusion_proof(idx, size).unwrap()
        );
        let old = (q / 7) % size + 1;
        prop_assert_eq!(
            with_restore(&mut t, &leaves, |t| t.consistency_proof(old, size)),
            full.consistency_proof(old, size).unwrap()
        );
        // Appending after a flush keeps the tree right.
        t.append(leaf(n));
        let mut all = leaves.clone();
        all.push(leaf(n));
        prop_assert_eq!(t.root().unwrap(), reference_root(&all));
        // A forged page is refused.
        let page = 0u64;
        let (first, end) = t.page_range(page);
        if end <= t.first_resident_leaf() {
            let mut forged = all[first as usize..end as usize].to_vec();
            forged[0] = flip(&forged[0], 3);
            prop_assert!(t.restore_page(page, &forged).is_err());
        }
    }

    #[test]
    fn checkpoint_roundtrip(n in 1u64..500, bits in 1u32..6, garbage in proptest::collection::vec(any::<u8>(), 0..64)) {
        let (t, leaves) = build(n, bits);
        let cp = t.checkpoint();
        let mut back = MerkleTree::from_checkpoint(&cp).unwrap();
        prop_assert_eq!(back.root().unwrap(), t.root().unwrap());
        back.append(leaf(n));
        let mut all = leaves.clone();
        all.push(leaf(n));
        prop_assert_eq!(back.root().unwrap(), reference_root(&all));
        // A signature at the end of the tree signs the root one leaf back: answerable.
        if n > 1 {
            prop_assert_eq!(
                MerkleTree::from_checkpoint(&cp).unwrap().root_at(n - 1).unwrap(),
                reference_root(&leaves[..n as usize - 1])
            );
        }
        // Flushing old pages first changes nothing: only the last leaf's page is kept.
        let mut flushed = t.clone();
        flushed.flush_before(n - 1);
        prop_assert_eq!(flushed.checkpoint(), cp.clone());
        // Proofs in the tree grown after the checkpoint, for leaves after it.
        let mut grown = MerkleTree::from_checkpoint(&cp).unwrap();
        let mut all = leaves.clone();
        for i in n..n + 9 {
            grown.append(leaf(i));
            all.push(leaf(i));
        }
        let size = n + 9;
        for i in n..size {
            let p = grown.inclusion_proof(i, size).unwrap();
            prop_assert_eq!(
                root_from_inclusion(&all[i as usize], &p.path),
                reference_root(&all)
            );
        }
        // Garbage never panics.
        let _ = MerkleTree::from_checkpoint(&garbage);
        let mut cut = cp.clone();
        cut.truncate(cp.len() / 2);
        prop_assert!(MerkleTree::from_checkpoint(&cut).is_err());
    }
}
