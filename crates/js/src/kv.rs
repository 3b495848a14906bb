//! The maps a script sees: the store, then the transaction's writes so far, then
//! the script's own (buffered, so a script that fails leaves nothing behind). What
//! a script may write is the caller's [`WritePolicy`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use covenant_kv::{ReadSet, Store, Tx, WriteSet};

use crate::ccf::KvAccess;

/// Decides whether a script may write a map (`Err` is the JS exception's message).
pub type WritePolicy = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Maps for one script run over a store and a transaction in progress.
#[derive(Clone)]
pub struct BufferedKv {
    store: Store,
    base: WriteSet,
    writes: BTreeMap<(String, Vec<u8>), Option<Vec<u8>>>,
    policy: WritePolicy,
    /// What the script read from the store (not from its own or the base's
    /// writes), so it can run without the engine's lock and be checked at commit.
    reads: RefCell<ReadSet>,
}

impl std::fmt::Debug for BufferedKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferedKv")
            .field("writes", &self.writes.len())
            .finish()
    }
}

impl BufferedKv {
    /// `base`: what the transaction wrote before the script.
    pub fn new(store: Store, base: WriteSet, policy: WritePolicy) -> BufferedKv {
        BufferedKv {
            store,
            base,
            writes: BTreeMap::new(),
            policy,
            reads: RefCell::new(ReadSet::default()),
        }
    }

    /// What the script read from the store.
    pub fn reads(&self) -> ReadSet {
        self.reads.borrow().clone()
    }

    /// The maps back from the handle shared with the script's host functions (the
    /// context is gone by then, so the handle is normally the last one).
    pub fn take(shared: std::rc::Rc<std::cell::RefCell<BufferedKv>>) -> BufferedKv {
        std::rc::Rc::try_unwrap(shared)
            .map(|c| c.into_inner())
            .unwrap_or_else(|rc| rc.borrow().clone())
    }

    /// Whether the script wrote to `map`.
    pub fn writes_to(&self, map: &str) -> bool {
        self.writes.keys().any(|(m, _)| m == map)
    }

    /// Whether the script wrote anything.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Moves the script's writes and reads into `tx` (its commit checks the reads).
    pub fn apply_to(self, tx: &mut Tx) {
        tx.add_reads(&self.reads.borrow());
        for ((map, key), value) in self.writes {
            match value {
                Some(v) => tx.put(&map, &key, &v),
                None => tx.remove(&map, &key),
            }
        }
    }
}

impl KvAccess for BufferedKv {
    fn get(&self, map: &str, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.writes.get(&(map.to_string(), key.to_vec())) {
            return v.clone();
        }
        if let Some(v) = self.base.get(map, key) {
            return v.map(<[u8]>::to_vec);
        }
        let found = self.store.get_versioned(map, key);
        self.reads
            .borrow_mut()
            .note_key(map, key, found.as_ref().map(|(_, ver)| *ver));
        found.map(|(v, _)| v)
    }

    fn set(&mut self, map: &str, key: &[u8], value: &[u8]) -> Result<(), String> {
        (self.policy)(map)?;
        self.writes
            .insert((map.to_string(), key.to_vec()), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, map: &str, key: &[u8]) -> Result<(), String> {
        (self.policy)(map)?;
        self.writes.insert((map.to_string(), key.to_vec()), None);
        Ok(())
    }

    fn version(&self, map: &str, key: &[u8]) -> Option<u64> {
        let version = self.store.version_of(map, key).map(|s| s.0);
        self.reads.borrow_mut().note_key(map, key, version);
        version
    }

    fn entries(&self, map: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let (generation, stored) = self.store.entries_with_generation(map);
        self.reads.borrow_mut().note_map(map, generation);
        let mut all: BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            stored.into_iter().map(|(k, v)| (k, Some(v))).collect();
        if let Some(m) = self.base.maps.get(map) {
            for (k, v) in m {
                all.insert(k.clone(), v.clone());
            }
        }
        for ((m, k), v) in &self.writes {
            if m == map {
                all.insert(k.clone(), v.clone());
            }
        }
        all.into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect()
    }
}
