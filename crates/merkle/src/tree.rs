use std::collections::{HashMap, VecDeque};

use covenant_types::Digest32;

use crate::proof::{ConsistencyProof, InclusionProof, ProofStep};
use crate::{hash_children, split_point};

/// Default page: 4096 leaves. Below this level, hashes are kept only for recent pages.
pub const DEFAULT_PAGE_BITS: u32 = 12;

/// How many flushed pages may be restored in memory at once.
const DEFAULT_MAX_RESTORED_PAGES: usize = 16;

/// Why the tree cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("the tree is empty: no root")]
    Empty,
    #[error("leaf {index} is not in a tree of {size} leaves")]
    NoSuchLeaf { index: u64, size: u64 },
    #[error("tree size {requested} is larger than the {size} leaves appended")]
    SizeTooLarge { requested: u64, size: u64 },
    #[error("consistency proof needs 0 < old size <= new size, got {old} and {new}")]
    BadRange { old: u64, new: u64 },
    /// The answer needs hashes of a page flushed from memory: rebuild it from the
    /// ledger with [`MerkleTree::restore_page`] and ask again.
    #[error("page {page} (leaves {first}..{end}) was flushed from memory")]
    Evicted { page: u64, first: u64, end: u64 },
    #[error("restored leaves for page {page} do not hash to the retained page root")]
    RestoreMismatch { page: u64 },
    #[error("restoring page {page} needs exactly {expected} leaves, got {got}")]
    RestoreLength {
        page: u64,
        expected: usize,
        got: usize,
    },
    #[error("invalid tree checkpoint: {0}")]
    Checkpoint(&'static str),
}

/// An append-only Merkle history tree over leaf digests (leaf 0 = seqno 1).
#[derive(Debug, Clone)]
pub struct MerkleTree {
    size: u64,
    page_bits: u32,
    /// `levels[h]` holds hashes of the perfect subtrees of 2^h leaves, in order,
    /// starting at global index `level_start[h]` (always 0 for h >= page_bits).
    levels: Vec<VecDeque<Digest32>>,
    level_start: Vec<u64>,
    /// Lower levels of flushed pages rebuilt on demand: page -> levels 0..page_bits.
    restored: HashMap<u64, Vec<Vec<Digest32>>>,
    restored_order: VecDeque<u64>,
    max_restored_pages: usize,
}

impl Default for MerkleTree {
    fn default() -> Self {
        Self::new()
    }
}

impl MerkleTree {
    pub fn new() -> Self {
        Self::with_page_bits(DEFAULT_PAGE_BITS)
    }

    /// A tree whose flushable unit is 2^`page_bits` leaves (1..=30).
    pub fn with_page_bits(page_bits: u32) -> Self {
        let page_bits = page_bits.clamp(1, 30);
        MerkleTree {
            size: 0,
            page_bits,
            levels: Vec::new(),
            level_start: Vec::new(),
            restored: HashMap::new(),
            restored_order: VecDeque::new(),
            max_restored_pages: DEFAULT_MAX_RESTORED_PAGES,
        }
    }

    /// Number of leaves appended.
    pub fn len(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub fn page_bits(&self) -> u32 {
        self.page_bits
    }

    /// Leaves `[first, end)` of `page`.
    pub fn page_range(&self, page: u64) -> (u64, u64) {
        (page << self.page_bits, (page + 1) << self.page_bits)
    }

    /// First leaf whose page is still fully in memory.
    pub fn first_resident_leaf(&self) -> u64 {
        self.level_start.first().copied().unwrap_or(0)
    }

    /// Hashes held in memory (for tests and metrics).
    pub fn resident_hashes(&self) -> usize {
        self.levels.iter().map(|l| l.len()).sum::<usize>()
            + self
                .restored
                .values()
                .map(|p| p.iter().map(|l| l.len()).sum::<usize>())
                .sum::<usize>()
    }

    /// Appends one leaf digest; O(1) amortized hashes.
    pub fn append(&mut self, leaf: Digest32) {
        let mut h = 0usize;
        let mut i = self.size;
        let mut cur = leaf;
        loop {
            if self.levels.len() <= h {
                self.levels.push(VecDeque::new());
                // A new level starts where its first node will be.
                self.level_start.push(i);
            }
            self.levels[h].push_back(cur);
            if i & 1 == 0 {
                break;
            }
            // The sibling shares our parent; for h < page_bits both sit in the current
            // (never flushed) page, above that nothing is flushed.
            let left = self.levels[h][(i - 1 - self.level_start[h]) as usize];
            cur = hash_children(&left, &cur);
            i >>= 1;
            h += 1;
        }
        self.size += 1;
    }

    /// Hash of the perfect subtree at level `h`, index `i`.
    fn perfect(&self, h: u32, i: u64) -> Result<Digest32, MerkleError> {
        let hu = h as usize;
        if let Some(level) = self.levels.get(hu) {
            let start = self.level_start[hu];
            if i >= start {
                if let Some(d) = level.get((i - start) as usize) {
                    return Ok(*d);
                }
            }
        }
        // Only levels below page_bits are ever flushed.
        let page = (i << h) >> self.page_bits;
        if h < self.page_bits {
            if let Some(levels) = self.restored.get(&page) {
                let offset = i - (page << (self.page_bits - h));
                if let Some(d) = levels.get(hu).and_then(|l| l.get(offset as usize)) {
                    return Ok(*d);
                }
            }
        }
        let (first, end) = self.page_range(page);
        Err(MerkleError::Evicted { page, first, end })
    }

    /// Hash of leaves `[a, b)`, a node of the tree of any size >= b.
    fn node(&self, a: u64, b: u64) -> Result<Digest32, MerkleError> {
        let n = b - a;
        if n.is_power_of_two() && a % n == 0 {
            return self.perfect(n.trailing_zeros(), a >> n.trailing_zeros());
        }
        let k = split_point(n);
        let left = self.node(a, a + k)?;
        let right = self.node(a + k, b)?;
        Ok(hash_children(&left, &right))
    }

    fn check_size(&self, size: u64) -> Result<(), MerkleError> {
        if size == 0 {
            return Err(MerkleError::Empty);
        }
        if size > self.size {
            return Err(MerkleError::SizeTooLarge {
                requested: size,
                size: self.size,
            });
        }
        Ok(())
    }

    /// The leaf digest at `index`.
    pub fn leaf(&self, index: u64) -> Result<Digest32, MerkleError> {
        if index >= self.size {
            return Err(MerkleError::NoSuchLeaf {
                index,
                size: self.size,
            });
        }
        self.perfect(0, index)
    }

    /// Root of the current tree.
    pub fn root(&self) -> Result<Digest32, MerkleError> {
        self.root_at(self.size)
    }

    /// Root of the tree as it was when it had `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Digest32, MerkleError> {
        self.check_size(size)?;
        self.node(0, size)
    }

    /// Inclusion path of leaf `index` in the tree of `size` leaves, leaf to root.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<InclusionProof, MerkleError> {
        self.check_size(size)?;
        if index >= size {
            return Err(MerkleError::NoSuchLeaf { index, size });
        }
        let mut path = Vec::with_capacity(64);
        let (mut a, mut b) = (0u64, size);
        while b - a > 1 {
            let k = split_point(b - a);
            if index < a + k {
                path.push(ProofStep::Right(self.node(a + k, b)?));
                b = a + k;
            } else {
                path.push(ProofStep::Left(self.node(a, a + k)?));
                a += k;
            }
        }
        path.reverse();
        Ok(InclusionProof {
            leaf_index: index,
            tree_size: size,
            path,
        })
    }

    /// RFC 9162 consistency proof from the tree of `old_size` leaves to `new_size`.
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof, MerkleError> {
        if old_size == 0 || old_size > new_size {
            return Err(MerkleError::BadRange {
                old: old_size,
                new: new_size,
            });
        }
        self.check_size(new_size)?;
        let mut path = Vec::new();
        self.subproof(old_size, 0, new_size, true, &mut path)?;
        Ok(ConsistencyProof {
            old_size,
            new_size,
            path,
        })
    }

    fn subproof(
        &self,
        m: u64,
        a: u64,
        b: u64,
        complete: bool,
        out: &mut Vec<Digest32>,
    ) -> Result<(), MerkleError> {
        let n = b - a;
        if m == n {
            if !complete {
                out.push(self.node(a, b)?);
            }
            return Ok(());
        }
        let k = split_point(n);
        if m <= k {
            self.subproof(m, a, a + k, complete, out)?;
            out.push(self.node(a + k, b)?);
        } else {
            self.subproof(m - k, a + k, b, false, out)?;
            out.push(self.node(a, a + k)?);
        }
        Ok(())
    }

    /// Drops every leaf from `size` on (a rolled-back uncommitted suffix), so the tree
    /// is exactly the tree of the first `size` leaves. Refused below the first resident
    /// leaf: flushed pages only hold committed history, which is never rolled back.
    pub fn truncate(&mut self, size: u64) -> Result<(), MerkleError> {
        if size >= self.size {
            return Ok(());
        }
        if size < self.first_resident_leaf() {
            return Err(MerkleError::NoSuchLeaf {
                index: size,
                size: self.size,
            });
        }
        // Level h holds the perfect subtrees of 2^h leaves: a tree of `size` leaves has
        // `size >> h` of them.
        for (h, level) in self.levels.iter_mut().enumerate() {
            let keep = (size >> h).saturating_sub(self.level_start[h]);
            level.truncate(keep as usize);
        }
        self.size = size;
        Ok(())
    }

    /// Drops the lower levels of every complete page before the one holding `leaf`,
    /// keeping two hashes per page. The page being appended to is never flushed.
    pub fn flush_before(&mut self, leaf: u64) {
        let limit = leaf.min(self.size);
        let new_start = (limit >> self.page_bits) << self.page_bits;
        for h in 0..(self.page_bits as usize).min(self.levels.len()) {
            let target = new_start >> h;
            let start = self.level_start[h];
            if target > start {
                let drop = ((target - start) as usize).min(self.levels[h].len());
                self.levels[h].drain(..drop);
                self.level_start[h] = target;
            }
        }
        // Restored copies of pages that are resident again are useless.
        let first_page = self.first_resident_leaf() >> self.page_bits;
        self.restored.retain(|p, _| *p < first_page);
        self.restored_order.retain(|p| *p < first_page);
    }

    /// Rebuilds a flushed page from its leaves (read back from the ledger), after
    /// checking they hash to the page root the tree kept. Bounded: the oldest restored
    /// page is dropped when too many are held.
    pub fn restore_page(&mut self, page: u64, leaves: &[Digest32]) -> Result<(), MerkleError> {
        let expected = 1usize << self.page_bits;
        if leaves.len() != expected {
            return Err(MerkleError::RestoreLength {
                page,
                expected,
                got: leaves.len(),
            });
        }
        let mut levels: Vec<Vec<Digest32>> = vec![leaves.to_vec()];
        for _ in 0..self.page_bits {
            let prev = levels.last().map(|l| l.as_slice()).unwrap_or(&[]);
            let next: Vec<Digest32> = prev
                .chunks_exact(2)
                .map(|c| hash_children(&c[0], &c[1]))
                .collect();
            levels.push(next);
        }
        let top = levels.pop().and_then(|l| l.first().copied());
        let kept = self
            .perfect(self.page_bits, page)
            .map_err(|_| MerkleError::RestoreMismatch { page })?;
        if top != Some(kept) {
            return Err(MerkleError::RestoreMismatch { page });
        }
        if self.restored.insert(page, levels).is_none() {
            self.restored_order.push_back(page);
        }
        while self.restored_order.len() > self.max_restored_pages {
            if let Some(old) = self.restored_order.pop_front() {
                self.restored.remove(&old);
            }
        }
        Ok(())
    }

    /// A compact checkpoint of the tree (for snapshots): the size, every retained
    /// upper-level hash and the lower levels of the page holding the last leaf (if
    /// still resident). A tree rebuilt from it answers roots at any size down to
    /// `len() - 1` (what a signature at the end of the tree signs), proofs within
    /// that page and beyond; older pages come back through
    /// [`MerkleTree::restore_page`]. Written straight from the live levels, so a
    /// large resident window is not copied.
    pub fn checkpoint(&self) -> Vec<u8> {
        let last_page_start = (self.size.saturating_sub(1) >> self.page_bits) << self.page_bits;
        let keep_from = last_page_start.max(self.first_resident_leaf());
        let mut out = Vec::new();
        out.extend_from_slice(b"CVMT");
        out.push(1);
        out.push(self.page_bits as u8);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&(self.levels.len() as u32).to_le_bytes());
        for (h, level) in self.levels.iter().enumerate() {
            let start = self.level_start[h];
            let from = if h < self.page_bits as usize {
                (keep_from >> h).max(start)
            } else {
                start
            };
            let skip = ((from - start) as usize).min(level.len());
            out.extend_from_slice(&from.to_le_bytes());
            out.extend_from_slice(&((level.len() - skip) as u64).to_le_bytes());
            for d in level.iter().skip(skip) {
                out.extend_from_slice(&d.0);
            }
        }
        out
    }

    /// Reads a [`MerkleTree::checkpoint`], validating every count against the size.
    pub fn from_checkpoint(bytes: &[u8]) -> Result<MerkleTree, MerkleError> {
        let mut r = Reader(bytes);
        if r.take(4)? != b"CVMT" {
            return Err(MerkleError::Checkpoint("bad magic"));
        }
        if r.take(1)?[0] != 1 {
            return Err(MerkleError::Checkpoint("unknown version"));
        }
        let page_bits = u32::from(r.take(1)?[0]);
        if !(1..=30).contains(&page_bits) {
            return Err(MerkleError::Checkpoint("bad page size"));
        }
        let size = r.u64()?;
        let nlevels = r.u32()? as usize;
        if nlevels > 64 {
            return Err(MerkleError::Checkpoint("too many levels"));
        }
        let mut t = MerkleTree::with_page_bits(page_bits);
        t.size = size;
        for h in 0..nlevels {
            let start = r.u64()?;
            let count = r.u64()?;
            // Nodes at level h are exactly those complete in `size` leaves.
            if h >= 64 || start.checked_add(count) != Some(size >> h) {
                return Err(MerkleError::Checkpoint("level count does not match size"));
            }
            let mut level = VecDeque::with_capacity(count.min(1 << 20) as usize);
            for _ in 0..count {
                let mut d = [0u8; 32];
                d.copy_from_slice(r.take(32)?);
                level.push_back(Digest32(d));
            }
            t.levels.push(level);
            t.level_start.push(start);
        }
        if !r.0.is_empty() {
            return Err(MerkleError::Checkpoint("trailing bytes"));
        }
        // Every level that must exist for this size does.
        if size > 0 && nlevels != 64 - size.leading_zeros() as usize {
            return Err(MerkleError::Checkpoint("missing levels"));
        }
        Ok(t)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MerkleError> {
        if self.0.len() < n {
            return Err(MerkleError::Checkpoint("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u64(&mut self) -> Result<u64, MerkleError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn u32(&mut self) -> Result<u32, MerkleError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
}
