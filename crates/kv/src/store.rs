use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use covenant_types::{SeqNo, TxId, View};

use crate::snapshot::{Maps, Snapshot};
use crate::writeset::MAX_MAP_NAME;
use crate::{KvError, WriteSet};

/// Every (key, value) of a map, in key order.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Previous state of the keys one transaction changed, to roll it back.
type Undo = Vec<(String, Vec<u8>, Option<(Vec<u8>, u64)>)>;

struct State {
    maps: Maps,
    last: Option<TxId>,
    committed: u64,
    /// TxId of the transaction at `committed` (where a full rollback lands).
    committed_txid: Option<TxId>,
    /// Undo records of transactions after `committed`, oldest first.
    undo: VecDeque<(TxId, Undo)>,
    /// Generation of each map: raised whenever the map changes (a write, a
    /// removal, a rollback, history), so a transaction that iterated a map can
    /// tell at commit whether it still holds what it saw. Absent: 0.
    generations: HashMap<String, u64>,
    /// The last generation handed out.
    generation: u64,
}

impl State {
    fn touch(&mut self, map: &str) {
        self.generation += 1;
        let g = self.generation;
        match self.generations.get_mut(map) {
            Some(v) => *v = g,
            None => {
                self.generations.insert(map.to_string(), g);
            }
        }
    }

    fn map_generation(&self, map: &str) -> u64 {
        self.generations.get(map).copied().unwrap_or(0)
    }

    /// Optimistic concurrency: is everything `reads` saw still current?
    fn check(&self, reads: &ReadSet) -> Result<(), KvError> {
        for ((map, key), read_version) in &reads.keys {
            let current = self.maps.get(map).and_then(|m| m.get(key)).map(|(_, v)| *v);
            if current != *read_version {
                return Err(KvError::Conflict {
                    map: map.clone(),
                    read: *read_version,
                    current,
                });
            }
        }
        for (map, read_generation) in &reads.maps {
            let current = self.map_generation(map);
            if current != *read_generation {
                return Err(KvError::Conflict {
                    map: map.clone(),
                    read: Some(*read_generation),
                    current: Some(current),
                });
            }
        }
        Ok(())
    }
}

/// What a transaction read: each key's version (`None`: absent) and the generation
/// of each map it iterated. A transaction executed without the store's lock
/// commits only if all of it is still current ([`Store::commit`]), which makes it
/// serializable at its commit point; one that commits nothing can be checked the
/// same way ([`Store::validate`]) before its answer is trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadSet {
    keys: BTreeMap<(String, Vec<u8>), Option<u64>>,
    maps: BTreeMap<String, u64>,
}

impl ReadSet {
    /// Records a key read at `version`; the first read of a key is the one that counts.
    pub fn note_key(&mut self, map: &str, key: &[u8], version: Option<u64>) {
        self.keys
            .entry((map.to_string(), key.to_vec()))
            .or_insert(version);
    }

    /// Records that the whole of `map` was read at `generation`.
    pub fn note_map(&mut self, map: &str, generation: u64) {
        self.maps.entry(map.to_string()).or_insert(generation);
    }

    /// Adds what `other` read (earlier reads of the same key win).
    pub fn extend(&mut self, other: &ReadSet) {
        for ((m, k), v) in &other.keys {
            self.note_key(m, k, *v);
        }
        for (m, g) in &other.maps {
            self.note_map(m, *g);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.maps.is_empty()
    }

    /// Whether anything read here is written by `ws` (a result computed without
    /// those writes would not hold in their transaction).
    pub fn overlaps(&self, ws: &crate::WriteSet) -> bool {
        self.maps.keys().any(|m| ws.maps.contains_key(m))
            || self
                .keys
                .keys()
                .any(|(m, k)| ws.maps.get(m).is_some_and(|keys| keys.contains_key(k)))
    }
}

/// The current KV state, shared by every request (cheap to clone: one `Arc`).
///
/// Reads take a short read lock; commits a short write lock. Uncommitted
/// transactions keep undo records so that a view change can roll them back.
#[derive(Clone)]
pub struct Store {
    inner: Arc<RwLock<State>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.read();
        f.debug_struct("Store")
            .field("last", &s.last)
            .field("committed", &s.committed)
            .field("maps", &s.maps.len())
            .finish()
    }
}

impl Store {
    pub fn new() -> Self {
        Store {
            inner: Arc::new(RwLock::new(State {
                maps: Maps::new(),
                last: None,
                committed: 0,
                committed_txid: None,
                undo: VecDeque::new(),
                generations: HashMap::new(),
                generation: 0,
            })),
        }
    }

    // A panic while holding the lock cannot leave State half-updated (every mutation
    // is computed before it is applied), so a poisoned lock is still usable.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The last transaction applied (committed or not).
    pub fn last_txid(&self) -> Option<TxId> {
        self.read().last
    }

    /// Seqno of the last transaction applied (`ZERO` when empty).
    pub fn last_seqno(&self) -> SeqNo {
        self.read().last.map_or(SeqNo::ZERO, |t| t.seqno)
    }

    /// Everything up to this seqno is committed and can no longer be rolled back.
    pub fn committed_seqno(&self) -> SeqNo {
        SeqNo(self.read().committed)
    }

    /// Starts a transaction reading the current state.
    pub fn begin(&self) -> Tx {
        Tx {
            store: self.clone(),
            reads: ReadSet::default(),
            writes: WriteSet::new(),
        }
    }

    /// Current value of `key` in `map` and the seqno that wrote it.
    pub fn get_versioned(&self, map: &str, key: &[u8]) -> Option<(Vec<u8>, u64)> {
        self.read()
            .maps
            .get(map)
            .and_then(|m| m.get(key))
            .map(|(v, ver)| (v.clone(), *ver))
    }

    /// Every key and value of `map` in key order, with the map's generation at
    /// that moment (for [`ReadSet::note_map`]).
    pub fn entries_with_generation(&self, map: &str) -> (u64, Rows) {
        let s = self.read();
        let rows = s
            .maps
            .get(map)
            .map(|m| m.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        (s.map_generation(map), rows)
    }

    /// Whether everything `reads` saw is still current (a [`KvError::Conflict`]
    /// names the first thing that changed). Takes the read lock only.
    pub fn validate(&self, reads: &ReadSet) -> Result<(), KvError> {
        self.read().check(reads)
    }

    /// Current value of `key` in `map` (outside any transaction).
    pub fn get(&self, map: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.read()
            .maps
            .get(map)
            .and_then(|m| m.get(key))
            .map(|(v, _)| v.clone())
    }

    /// Seqno of the last write to `key`, if present.
    pub fn version_of(&self, map: &str, key: &[u8]) -> Option<SeqNo> {
        self.read()
            .maps
            .get(map)
            .and_then(|m| m.get(key))
            .map(|(_, ver)| SeqNo(*ver))
    }

    /// Every key and value of `map`, in key order (a consistent copy).
    pub fn entries(&self, map: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.read()
            .maps
            .get(map)
            .map(|m| m.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// `(number of keys, newest write's seqno)` of `map`: changes whenever the map
    /// does (a write, a removal, a rollback), so callers can cache what they derive
    /// from a map without copying it on every request.
    pub fn map_version(&self, map: &str) -> (usize, u64) {
        self.read()
            .maps
            .get(map)
            .map(|m| (m.len(), m.values().map(|(_, v)| *v).max().unwrap_or(0)))
            .unwrap_or((0, 0))
    }

    /// Number of keys in `map`.
    pub fn map_len(&self, map: &str) -> usize {
        self.read().maps.get(map).map(|m| m.len()).unwrap_or(0)
    }

    /// Commits `tx` as the next transaction in `view`: validates its reads (optimistic
    /// concurrency), assigns the seqno, applies its writes and returns its write set.
    pub fn commit(&self, tx: Tx, view: View) -> Result<(TxId, WriteSet), KvError> {
        let mut s = self.write();
        s.check(&tx.reads)?;
        let seqno = s.last.map(|t| t.seqno.0).unwrap_or(0) + 1;
        if s.last.is_some_and(|t| t.view > view) {
            return Err(KvError::OutOfOrder {
                last: SeqNo(seqno - 1),
                got: TxId::new(view.0, seqno),
            });
        }
        let txid = TxId::new(view.0, seqno);
        apply_locked(&mut s, txid, &tx.writes)?;
        Ok((txid, tx.writes))
    }

    /// Applies a write set produced elsewhere (a backup replaying the primary, or a
    /// node replaying its ledger). `txid` must be the next seqno.
    pub fn apply(&self, txid: TxId, ws: &WriteSet) -> Result<(), KvError> {
        let mut s = self.write();
        apply_locked(&mut s, txid, ws)
    }

    /// Applies the private writes of an old, committed transaction after the fact: a
    /// recovery replays the public domain first and the private one once the ledger
    /// secrets are back. `last` does not move, nothing can be undone, and a key
    /// already written at a later seqno keeps that value. Public maps are refused:
    /// they were applied in order.
    pub fn apply_history(&self, txid: TxId, ws: &WriteSet) -> Result<(), KvError> {
        let mut s = self.write();
        if ws.maps.keys().any(|m| crate::is_public(m)) {
            return Err(KvError::malformed(
                "history",
                "public writes are applied in order, not as history",
            ));
        }
        if s.last.is_none_or(|l| l.seqno < txid.seqno) {
            return Err(KvError::malformed(
                "history",
                format!("{txid} is not before the store's last transaction"),
            ));
        }
        let seqno = txid.seqno.0;
        for map in ws.maps.keys() {
            s.touch(map);
        }
        for (map, writes) in &ws.maps {
            let m = s.maps.entry(map.clone()).or_default();
            for (key, value) in writes {
                if m.get(key).is_some_and(|(_, v)| *v > seqno) {
                    continue;
                }
                match value {
                    Some(v) => {
                        m.insert(key.clone(), (v.clone(), seqno));
                    }
                    None => {
                        m.remove(key);
                    }
                }
            }
            if m.is_empty() {
                s.maps.remove(map);
            }
        }
        Ok(())
    }

    /// Records that everything up to `seqno` is committed: it can no longer be rolled
    /// back, and its undo records are dropped.
    pub fn mark_committed(&self, seqno: SeqNo) {
        let seqno = seqno.0;
        let mut s = self.write();
        let last = s.last.map(|t| t.seqno.0).unwrap_or(0);
        s.committed = s.committed.max(seqno.min(last));
        let committed = s.committed;
        while s.undo.front().is_some_and(|(t, _)| t.seqno.0 <= committed) {
            if let Some((t, _)) = s.undo.pop_front() {
                if t.seqno.0 == committed {
                    s.committed_txid = Some(t);
                }
            }
        }
    }

    /// Undoes every transaction after `seqno` (an uncommitted suffix lost in a view change).
    pub fn rollback(&self, to: SeqNo) -> Result<(), KvError> {
        let seqno = to.0;
        let mut s = self.write();
        if seqno < s.committed {
            return Err(KvError::BelowCommitted {
                to,
                committed: SeqNo(s.committed),
            });
        }
        let last = s.last.map(|t| t.seqno.0).unwrap_or(0);
        if seqno >= last {
            return Ok(());
        }
        let oldest = s.undo.front().map(|(t, _)| t.seqno.0).unwrap_or(last + 1);
        if seqno + 1 < oldest {
            return Err(KvError::NoUndo {
                to,
                oldest: SeqNo(oldest),
            });
        }
        while s.undo.back().is_some_and(|(t, _)| t.seqno.0 > seqno) {
            if let Some((_, undo)) = s.undo.pop_back() {
                for (map, key, prev) in undo.into_iter().rev() {
                    s.touch(&map);
                    let m = s.maps.entry(map.clone()).or_default();
                    match prev {
                        Some(p) => {
                            m.insert(key, p);
                        }
                        None => {
                            m.remove(&key);
                        }
                    }
                    if m.is_empty() {
                        s.maps.remove(&map);
                    }
                }
            }
        }
        // Seqnos are gapless, so the transaction now last is the newest undo record
        // left, or the committed one.
        s.last = match s.undo.back() {
            Some((t, _)) => Some(*t),
            None if seqno == 0 => None,
            None => s.committed_txid,
        };
        Ok(())
    }

    /// A consistent copy of the whole state at the last applied transaction.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let s = self.read();
        s.last.map(|txid| Snapshot {
            txid,
            maps: s.maps.clone(),
        })
    }

    /// A store whose state is `snapshot` (treated as committed).
    pub fn from_snapshot(snapshot: Snapshot) -> Store {
        let seqno = snapshot.txid.seqno.0;
        Store {
            inner: Arc::new(RwLock::new(State {
                maps: snapshot.maps,
                last: Some(snapshot.txid),
                committed: seqno,
                committed_txid: Some(snapshot.txid),
                undo: VecDeque::new(),
                generations: HashMap::new(),
                generation: 0,
            })),
        }
    }
}

fn apply_locked(s: &mut State, txid: TxId, ws: &WriteSet) -> Result<(), KvError> {
    let expected = s.last.map(|t| t.seqno.0).unwrap_or(0) + 1;
    if txid.seqno.0 != expected || s.last.is_some_and(|t| t.view > txid.view) {
        return Err(KvError::OutOfOrder {
            last: SeqNo(expected - 1),
            got: txid,
        });
    }
    let seqno = txid.seqno.0;
    let mut undo: Undo = Vec::new();
    for map in ws.maps.keys() {
        if map.is_empty() || map.len() > MAX_MAP_NAME {
            return Err(KvError::BadMapName(map.clone()));
        }
    }
    for map in ws.maps.keys() {
        s.touch(map);
    }
    for (map, writes) in &ws.maps {
        let m = s.maps.entry(map.clone()).or_default();
        for (key, value) in writes {
            let prev = match value {
                Some(v) => m.insert(key.clone(), (v.clone(), seqno)),
                None => m.remove(key),
            };
            undo.push((map.clone(), key.clone(), prev));
        }
        if m.is_empty() {
            s.maps.remove(map);
        }
    }
    s.undo.push_back((txid, undo));
    s.last = Some(txid);
    Ok(())
}

/// A transaction in progress: reads see the store plus this transaction's own
/// writes; nothing is visible to others until [`Store::commit`].
pub struct Tx {
    store: Store,
    reads: ReadSet,
    writes: WriteSet,
}

impl Tx {
    /// Reads `key`, recording the version read for conflict detection.
    pub fn get(&mut self, map: &str, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(w) = self.writes.get(map, key) {
            return w.map(|v| v.to_vec());
        }
        let s = self.store.read();
        let found = s.maps.get(map).and_then(|m| m.get(key));
        let version = found.map(|(_, v)| *v);
        let value = found.map(|(v, _)| v.clone());
        drop(s);
        self.reads.note_key(map, key, version);
        value
    }

    /// Adds reads made outside this transaction's own `get`s (a script that ran
    /// against the store), so the commit checks them too.
    pub fn add_reads(&mut self, reads: &ReadSet) {
        self.reads.extend(reads);
    }

    /// Everything this transaction read so far.
    pub fn reads(&self) -> &ReadSet {
        &self.reads
    }

    pub fn has(&mut self, map: &str, key: &[u8]) -> bool {
        self.get(map, key).is_some()
    }

    pub fn put(&mut self, map: &str, key: &[u8], value: &[u8]) {
        self.writes.put(map, key, value);
    }

    pub fn remove(&mut self, map: &str, key: &[u8]) {
        self.writes.remove(map, key);
    }

    /// Removes every row of `map`: those the store holds and those this
    /// transaction wrote.
    pub fn clear(&mut self, map: &str) {
        let s = self.store.read();
        let mut keys: Vec<Vec<u8>> = s
            .maps
            .get(map)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let generation = s.map_generation(map);
        drop(s);
        self.reads.note_map(map, generation);
        if let Some(own) = self.writes.maps.get(map) {
            keys.extend(own.keys().cloned());
        }
        for k in keys {
            self.writes.remove(map, &k);
        }
    }

    /// Writes so far (for read-only checks and tests).
    pub fn write_set(&self) -> &WriteSet {
        &self.writes
    }

    /// Has this transaction written anything?
    pub fn is_read_only(&self) -> bool {
        self.writes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn clear_removes_stored_and_own_rows_of_one_map_only() {
        let s = Store::new();
        let mut tx = s.begin();
        tx.put("m", b"a", b"1");
        tx.put("other", b"x", b"1");
        s.commit(tx, View(1)).unwrap();
        let mut tx = s.begin();
        tx.put("m", b"b", b"2");
        tx.clear("m");
        assert!(!tx.has("m", b"a") && !tx.has("m", b"b"));
        s.commit(tx, View(1)).unwrap();
        assert!(s.entries("m").is_empty());
        assert_eq!(s.entries("other").len(), 1);
    }

    #[test]
    fn map_version_changes_with_writes_removals_and_rollbacks() {
        let s = Store::new();
        assert_eq!(s.map_version("m"), (0, 0));
        let put = |k: &[u8], v: Option<&[u8]>| {
            let mut tx = s.begin();
            match v {
                Some(v) => tx.put("m", k, v),
                None => tx.remove("m", k),
            }
            s.commit(tx, View(1)).unwrap();
        };
        put(b"a", Some(b"1"));
        put(b"b", Some(b"1"));
        assert_eq!(s.map_version("m"), (2, 2));
        put(b"a", Some(b"2"));
        assert_eq!(s.map_version("m"), (2, 3));
        put(b"b", None);
        assert_eq!(s.map_version("m"), (1, 3));
        s.rollback(SeqNo(2)).unwrap();
        assert_eq!(s.map_version("m"), (2, 2));
    }

    #[test]
    fn commit_assigns_seqnos_and_applies() {
        let s = Store::new();
        let mut tx = s.begin();
        tx.put("public:a", b"k", b"v1");
        let (t, ws) = s.commit(tx, View(2)).unwrap();
        assert_eq!(t, TxId::new(2, 1));
        assert_eq!(ws.get("public:a", b"k"), Some(Some(&b"v1"[..])));
        assert_eq!(s.get("public:a", b"k"), Some(b"v1".to_vec()));
        assert_eq!(s.version_of("public:a", b"k"), Some(SeqNo(1)));
        let mut tx = s.begin();
        assert_eq!(tx.get("public:a", b"k"), Some(b"v1".to_vec()));
        tx.put("public:a", b"k", b"v2");
        assert_eq!(
            tx.get("public:a", b"k"),
            Some(b"v2".to_vec()),
            "reads own writes"
        );
        tx.remove("public:a", b"k");
        assert_eq!(tx.get("public:a", b"k"), None);
        let (t, _) = s.commit(tx, View(2)).unwrap();
        assert_eq!(t.seqno.0, 2);
        assert_eq!(s.get("public:a", b"k"), None);
    }

    #[test]
    fn conflicting_transactions_are_refused() {
        let s = Store::new();
        let mut a = s.begin();
        let mut b = s.begin();
        assert_eq!(a.get("m", b"x"), None);
        assert_eq!(b.get("m", b"x"), None);
        a.put("m", b"x", b"a");
        b.put("m", b"x", b"b");
        s.commit(a, View(1)).unwrap();
        assert!(matches!(
            s.commit(b, View(1)),
            Err(KvError::Conflict { .. })
        ));
        assert_eq!(s.get("m", b"x"), Some(b"a".to_vec()));
        // Blind writes (no reads) never conflict.
        let mut c = s.begin();
        c.put("m", b"x", b"c");
        s.commit(c, View(1)).unwrap();
    }

    #[test]
    fn rollback_restores_exact_state() {
        let s = Store::new();
        let mut tx = s.begin();
        tx.put("m", b"a", b"1");
        s.commit(tx, View(1)).unwrap();
        s.mark_committed(SeqNo(1));
        let before = s.snapshot().unwrap();
        for i in 0..5u8 {
            let mut tx = s.begin();
            tx.put("m", b"a", &[i]);
            tx.put("n", &[i], b"x");
            tx.remove("m", b"zzz");
            s.commit(tx, View(1)).unwrap();
        }
        assert!(matches!(
            s.rollback(SeqNo(0)),
            Err(KvError::BelowCommitted { .. })
        ));
        // Rolling back part of the suffix keeps the exact TxId of the new last transaction.
        s.rollback(SeqNo(4)).unwrap();
        assert_eq!(s.last_txid(), Some(TxId::new(1, 4)));
        s.rollback(SeqNo(1)).unwrap();
        assert_eq!(s.last_txid(), Some(TxId::new(1, 1)));
        assert_eq!(s.snapshot().unwrap(), before);
        // The next transaction reuses seqno 2, in a later view.
        let tx = s.begin();
        let (t, _) = s.commit(tx, View(2)).unwrap();
        assert_eq!(t, TxId::new(2, 2));
    }

    #[test]
    fn apply_checks_order() {
        let s = Store::new();
        let mut ws = WriteSet::new();
        ws.put("m", b"k", b"v");
        assert!(s.apply(TxId::new(1, 2), &ws).is_err());
        s.apply(TxId::new(1, 1), &ws).unwrap();
        assert!(s.apply(TxId::new(1, 1), &ws).is_err());
    }

    #[test]
    fn snapshot_roundtrip_encrypts_private_maps() {
        let secret = covenant_crypto::LedgerSecret::generate().unwrap();
        let s = Store::new();
        let mut tx = s.begin();
        tx.put("public:p", b"k", b"visible");
        tx.put("private", b"k", b"hidden-value");
        s.commit(tx, View(3)).unwrap();
        let snap = s.snapshot().unwrap();
        let bytes = snap.to_bytes(Some(&secret)).unwrap();
        assert!(!bytes.windows(12).any(|w| w == b"hidden-value"));
        let back = Snapshot::from_bytes(&bytes, Some(&secret)).unwrap();
        assert_eq!(back, snap);
        assert!(Snapshot::from_bytes(&bytes, None).is_err());
        let other = covenant_crypto::LedgerSecret::generate().unwrap();
        assert!(Snapshot::from_bytes(&bytes, Some(&other)).is_err());
        // Without the secret: the public maps only, the private part left sealed.
        let public = Snapshot::public_from_bytes(&bytes).unwrap();
        assert_eq!(public.txid, snap.txid);
        assert_eq!(public.get("public:p", b"k"), Some(&b"visible"[..]));
        assert_eq!(public.get("private", b"k"), None);
        assert_eq!(back.get("private", b"k"), Some(&b"hidden-value"[..]));
        let restored = Store::from_snapshot(back);
        assert_eq!(
            restored.get("private", b"k"),
            Some(b"hidden-value".to_vec())
        );
        assert_eq!(restored.last_txid(), Some(TxId::new(3, 1)));
    }

    proptest! {
        #[test]
        fn snapshot_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Snapshot::from_bytes(&bytes, None);
            let _ = Snapshot::public_from_bytes(&bytes);
        }

        /// Replaying the write sets on a fresh store gives the same state (what a
        /// backup or a restarting node does).
        #[test]
        fn replay_reproduces_state(ops in proptest::collection::vec((0u8..3, 0u8..8, any::<u8>()), 1..60)) {
            let s = Store::new();
            let mut log = Vec::new();
            for (kind, key, val) in ops {
                let mut tx = s.begin();
                match kind {
                    0 => tx.put("public:m", &[key], &[val]),
                    1 => tx.put("priv", &[key], &[val]),
                    _ => tx.remove("priv", &[key]),
                }
                log.push(s.commit(tx, View(1)).unwrap());
            }
            let r = Store::new();
            for (t, ws) in &log {
                r.apply(*t, ws).unwrap();
            }
            prop_assert_eq!(r.snapshot(), s.snapshot());
        }
    }
}
