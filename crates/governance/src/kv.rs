//! The maps a governance script sees: the store, then the transaction's writes so
//! far, then the script's own (buffered, so a script that fails leaves nothing).

use std::collections::BTreeMap;

use covenant_js::ccf::KvAccess;
use covenant_kv::{Store, Tx, WriteSet};

/// Governance maps for one script run.
#[derive(Clone)]
pub struct GovKv {
    store: Store,
    base: WriteSet,
    writes: BTreeMap<(String, Vec<u8>), Option<Vec<u8>>>,
    writable: bool,
}

impl GovKv {
    /// `base`: what the transaction wrote before the script; `writable`: only a
    /// proposal's `apply` writes.
    pub fn new(store: Store, base: WriteSet, writable: bool) -> GovKv {
        GovKv {
            store,
            base,
            writes: BTreeMap::new(),
            writable,
        }
    }

    /// Whether the script wrote to `map`.
    pub fn writes_to(&self, map: &str) -> bool {
        self.writes.keys().any(|(m, _)| m == map)
    }

    /// Moves the script's writes into `tx`.
    pub fn apply_to(self, tx: &mut Tx) {
        for ((map, key), value) in self.writes {
            match value {
                Some(v) => tx.put(&map, &key, &v),
                None => tx.remove(&map, &key),
            }
        }
    }

    fn check_write(&self, map: &str) -> Result<(), String> {
        if !self.writable {
            return Err(format!(
                "{map} is read-only here: only a proposal's apply writes"
            ));
        }
        if !map.starts_with("public:ccf.gov.")
            || map == crate::PROPOSALS
            || map == crate::PROPOSALS_INFO
        {
            return Err(format!(
                "governance may not write {map} (only public:ccf.gov.* maps other than proposals)"
            ));
        }
        Ok(())
    }
}

impl KvAccess for GovKv {
    fn get(&self, map: &str, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.writes.get(&(map.to_string(), key.to_vec())) {
            return v.clone();
        }
        if let Some(v) = self.base.get(map, key) {
            return v.map(<[u8]>::to_vec);
        }
        self.store.get(map, key)
    }

    fn set(&mut self, map: &str, key: &[u8], value: &[u8]) -> Result<(), String> {
        self.check_write(map)?;
        self.writes
            .insert((map.to_string(), key.to_vec()), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, map: &str, key: &[u8]) -> Result<(), String> {
        self.check_write(map)?;
        self.writes.insert((map.to_string(), key.to_vec()), None);
        Ok(())
    }

    fn entries(&self, map: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut all: BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .store
            .entries(map)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
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
