//! Which transactions wrote an entry to which collection, for ranged queries.
//!
//! Kept in memory: built from the ledger at start (the ledger is the source of
//! truth), then fed by the engine's observer with every transaction the node
//! appends, on the primary and on backups alike (see `Service`). Each collection's
//! list is in seqno order, so a range is a binary search. Known limit: it is
//! rebuilt by a scan at every start and grows with the number of entries;
//! persisting it beside the ledger (redb) is the planned next step.

use std::collections::HashMap;
use std::sync::RwLock;

use covenant_engine::Engine;
use covenant_types::{SeqNo, TxId};

/// Collection → the TxIds that wrote an entry to it, in seqno order.
#[derive(Default)]
pub struct EntryIndex {
    by_collection: RwLock<HashMap<String, Vec<TxId>>>,
}

impl EntryIndex {
    /// Scans the transactions of `engine` up to `upto` for writes to `map`. An entry
    /// later rolled back is replaced when its seqno is indexed again (see `add`), and
    /// readers check the TxId at a seqno before answering.
    pub fn build(
        engine: &Engine,
        map: &str,
        upto: SeqNo,
    ) -> Result<EntryIndex, covenant_engine::EngineError> {
        let index = EntryIndex::default();
        index.scan(engine, map, upto.min(engine.last_seqno()))?;
        Ok(index)
    }

    fn scan(
        &self,
        engine: &Engine,
        map: &str,
        upto: SeqNo,
    ) -> Result<(), covenant_engine::EngineError> {
        // A node that started from a snapshot holds the ledger after it only.
        for seqno in engine.first_seqno().0..=upto.0 {
            let seqno = SeqNo(seqno);
            let (txid, ws) = match engine.read_tx(seqno) {
                Ok(read) => read,
                // A recovery indexes these once the old private domain is replayed.
                Err(covenant_engine::EngineError::NotRecovered(_)) => continue,
                Err(e) => return Err(e),
            };
            self.add_from(txid, &ws, map);
        }
        Ok(())
    }

    /// Indexes the writes of one transaction to `map` (a backup applying the primary's
    /// transactions).
    pub fn add_from(&self, txid: TxId, ws: &covenant_kv::WriteSet, map: &str) {
        if let Some(writes) = ws.maps.get(map) {
            for (key, value) in writes {
                if value.is_some() {
                    self.add(&String::from_utf8_lossy(key), txid);
                }
            }
        }
    }

    /// Records that `txid` wrote an entry to `collection`.
    pub fn add(&self, collection: &str, txid: TxId) {
        let mut m = self
            .by_collection
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let list = m.entry(collection.to_string()).or_default();
        // Appends come in seqno order; keep the list sorted even if one does not. A
        // seqno seen again (indexed twice, or rewritten after a view change) keeps the
        // newest TxId only.
        match list.last() {
            Some(l) if l.seqno >= txid.seqno => {
                let at = list.partition_point(|t| t.seqno < txid.seqno);
                if list.get(at).is_some_and(|t| t.seqno == txid.seqno) {
                    list[at] = txid;
                } else {
                    list.insert(at, txid);
                }
            }
            _ => list.push(txid),
        }
    }

    /// The TxIds of `collection` at or below seqno `upto`, newest first, at most
    /// `limit` of them (the last committed write of a collection is almost always
    /// the first; older ones only matter when the index still names a rolled-back
    /// transaction).
    pub fn latest(&self, collection: &str, upto: SeqNo, limit: usize) -> Vec<TxId> {
        let m = self.by_collection.read().unwrap_or_else(|e| e.into_inner());
        let Some(list) = m.get(collection) else {
            return Vec::new();
        };
        let end = list.partition_point(|t| t.seqno <= upto);
        list[..end].iter().rev().take(limit).copied().collect()
    }

    /// Up to `limit` TxIds of `collection` with `from <= seqno <= to`, and whether
    /// more follow (the next one, for a nextLink).
    pub fn range(
        &self,
        collection: &str,
        from: SeqNo,
        to: SeqNo,
        limit: usize,
    ) -> (Vec<TxId>, Option<TxId>) {
        let m = self.by_collection.read().unwrap_or_else(|e| e.into_inner());
        let Some(list) = m.get(collection) else {
            return (Vec::new(), None);
        };
        let start = list.partition_point(|t| t.seqno < from);
        let mut page = Vec::new();
        for t in &list[start..] {
            if t.seqno > to {
                return (page, None);
            }
            if page.len() == limit {
                return (page, Some(*t));
            }
            page.push(*t);
        }
        (page, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_pages() {
        let idx = EntryIndex::default();
        for s in 1..=10u64 {
            idx.add(if s % 2 == 0 { "even" } else { "odd" }, TxId::new(1, s));
        }
        let (p, next) = idx.range("even", SeqNo(3), SeqNo(9), 10);
        assert_eq!(
            p.iter().map(|t| t.seqno.0).collect::<Vec<_>>(),
            vec![4, 6, 8]
        );
        assert_eq!(next, None);
        let (p, next) = idx.range("odd", SeqNo(1), SeqNo(100), 2);
        assert_eq!(p.len(), 2);
        assert_eq!(next, Some(TxId::new(1, 5)));
        assert!(idx.range("none", SeqNo(1), SeqNo(10), 5).0.is_empty());
        idx.add("odd", TxId::new(2, 4));
        assert_eq!(
            idx.range("odd", SeqNo(4), SeqNo(4), 5).0,
            vec![TxId::new(2, 4)]
        );
        assert_eq!(
            idx.latest("even", SeqNo(7), 2),
            vec![TxId::new(1, 6), TxId::new(1, 4)]
        );
        assert!(idx.latest("even", SeqNo(1), 2).is_empty());
    }
}
