//! Which transactions wrote an entry to which collection, for ranged queries.
//!
//! Two forms behind [`Index`]: on disk ([`covenant_index::CollectionIndex`], redb,
//! what a node runs with: memory flat in the number of entries, a range deep in
//! history as cheap as a recent one, caught up from the ledger at start only for
//! what it lacks, rebuilt with progress when missing or corrupt), or in memory
//! ([`EntryIndex`], built by a ledger scan: services without a data directory,
//! in-process tests). Either is fed by the engine's observer with every
//! transaction the node appends, primary and backups alike, and readers check the
//! TxId at a seqno against the ledger before answering.

use std::collections::HashMap;
use std::sync::RwLock;

use std::path::Path;

use covenant_engine::{Engine, EngineError};
use covenant_index::{CollectionIndex, IndexError};
use covenant_types::{SeqNo, TxId};

/// Transactions read from the ledger per write while catching the index up.
const CATCH_UP_BATCH: u64 = 5000;

/// Told `(done, total)` transactions while an index is caught up from the ledger.
pub type IndexProgress = std::sync::Arc<dyn Fn(u64, u64) + Send + Sync>;

/// The collection index of a service, on disk or in memory.
pub enum Index {
    Memory(EntryIndex),
    Disk(DiskIndex),
}

/// The on-disk form, reopened when its file failed (a full disk makes redb refuse
/// everything until the database is opened again).
pub struct DiskIndex {
    /// `None` while a reopen failed (retried by the next [`Index::recover`]).
    index: std::sync::RwLock<Option<CollectionIndex>>,
    path: std::path::PathBuf,
}

impl DiskIndex {
    fn with<T>(
        &self,
        f: impl FnOnce(&CollectionIndex) -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        let slot = self.index.read().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            Some(i) => f(i),
            None => Err(IndexError::Storage(
                "the collection index is being reopened".into(),
            )),
        }
    }
}

/// The collections `ws` wrote an entry to (in the entries map `map`).
fn collections_of(ws: &covenant_kv::WriteSet, map: &str) -> Vec<String> {
    ws.maps
        .get(map)
        .map(|writes| {
            writes
                .iter()
                .filter(|(_, v)| v.is_some())
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The transaction at `seqno` and the collections it wrote to, read from the
/// ledger; `None` for one whose private writes a recovery has not opened yet (it
/// is indexed once they are).
fn collections_at(
    engine: &Engine,
    seqno: SeqNo,
    map: &str,
) -> Result<Option<(TxId, Vec<String>)>, EngineError> {
    match engine.read_tx(seqno) {
        Ok((txid, ws)) => Ok(Some((txid, collections_of(&ws, map)))),
        Err(EngineError::NotRecovered(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Index {
    /// Opens the on-disk index at `path` and catches it up with `engine`'s ledger:
    /// committed transactions it lacks are written in batches (reported to
    /// `progress`), uncommitted ones held in memory. A missing, corrupt or
    /// inconsistent file (its watermark past the ledger's commit) is rebuilt from
    /// the start of the ledger.
    pub fn open_on_disk(
        path: &Path,
        engine: &Engine,
        map: &str,
        progress: Option<IndexProgress>,
    ) -> Result<Index, IndexError> {
        let index = open_and_catch_up(path, engine, map, progress, true)?;
        Ok(Index::Disk(DiskIndex {
            index: std::sync::RwLock::new(Some(index)),
            path: path.to_path_buf(),
        }))
    }

    /// The on-disk form with its file not open yet (it could not be opened at
    /// start): [`Index::recover`] opens it later. A node never fails to start
    /// for its derived index.
    pub fn unopened(path: &Path) -> Index {
        Index::Disk(DiskIndex {
            index: std::sync::RwLock::new(None),
            path: path.to_path_buf(),
        })
    }

    /// Whether the on-disk file is closed and waits for [`Index::recover`].
    pub fn needs_recovery(&self) -> bool {
        match self {
            Index::Memory(_) => false,
            Index::Disk(d) => d.index.read().unwrap_or_else(|e| e.into_inner()).is_none(),
        }
    }

    /// After the index file failed (a full disk, say): closes it, opens it again
    /// and catches it up with the ledger, under the caller's engine lock so no
    /// transaction is missed. Nothing to do for the memory form.
    pub fn recover(&self, engine: &Engine, map: &str) -> Result<(), IndexError> {
        let Index::Disk(d) = self else {
            return Ok(());
        };
        let mut slot = d.index.write().unwrap_or_else(|e| e.into_inner());
        drop(slot.take());
        // Never waits for another holder of the file: the engine's lock is held.
        *slot = Some(open_and_catch_up(&d.path, engine, map, None, false)?);
        tracing::info!(file = %d.path.display(), "the collection index was reopened and caught up");
        Ok(())
    }
}

/// Opens the index file at `path` (rebuilding it when corrupt or ahead of the
/// ledger) and catches it up with `engine`'s ledger (see [`Index::open_on_disk`]).
fn open_and_catch_up(
    path: &Path,
    engine: &Engine,
    map: &str,
    progress: Option<IndexProgress>,
    wait_for_close: bool,
) -> Result<CollectionIndex, IndexError> {
    {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let committed = engine.committed_seqno();
        // A service of this process that used the file may still be closing it.
        let mut opened = CollectionIndex::open(path);
        for _ in 0..if wait_for_close { 100 } else { 0 } {
            if !matches!(opened, Err(IndexError::AlreadyOpen(_))) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            opened = CollectionIndex::open(path);
        }
        // Only committed transactions reach the file, and a commit is never undone:
        // an index ahead of what this engine knows committed at open (a backup
        // learns its commit from the primary later) is fine, one past the ledger's
        // end belongs to another ledger (a recovery, a replaced ledger).
        let index = match opened {
            Ok(i) if i.indexed_upto() <= engine.last_seqno() => i,
            Ok(i) => {
                tracing::warn!(
                    indexed_upto = %i.indexed_upto(),
                    last_seqno = %engine.last_seqno(),
                    "the collection index is ahead of the ledger: rebuilding it"
                );
                drop(i);
                CollectionIndex::remove(path)?;
                CollectionIndex::open(path)?
            }
            Err(IndexError::Corrupt(why)) => {
                tracing::warn!(file = %path.display(), %why, "the collection index is corrupt: rebuilding it from the ledger");
                CollectionIndex::remove(path)?;
                CollectionIndex::open(path)?
            }
            Err(e) => return Err(e),
        };
        let from = SeqNo(index.indexed_upto().0 + 1).max(engine.first_seqno());
        let last = engine.last_seqno();
        let total = last.0.saturating_sub(from.0 - 1);
        if total > 0 {
            tracing::info!(from = %from, to = %last, "catching the collection index up with the ledger");
        }
        let mut next = from;
        while next <= last {
            let end = SeqNo((next.0 + CATCH_UP_BATCH - 1).min(last.0));
            let mut batch = Vec::new();
            for seqno in next.0..=end.0 {
                let Some((txid, cols)) = collections_at(engine, SeqNo(seqno), map)
                    .map_err(|e| IndexError::Storage(e.to_string()))?
                else {
                    continue;
                };
                if txid.seqno <= committed {
                    if !cols.is_empty() {
                        batch.push((txid, cols));
                    }
                } else {
                    index.add(txid, cols);
                }
            }
            index.add_committed_batch(&batch, end.min(committed).max(index.indexed_upto()))?;
            if let Some(p) = &progress {
                p(end.0 + 1 - from.0, total);
            }
            next = end.next();
        }
        Ok(index)
    }
}

impl Index {
    /// The in-memory index, built by a scan of `engine`'s ledger.
    pub fn in_memory(engine: &Engine, map: &str) -> Result<Index, EngineError> {
        EntryIndex::build(engine, map, engine.last_seqno()).map(Index::Memory)
    }

    /// Feeds one engine event.
    pub fn observe(&self, event: covenant_engine::TxEvent<'_>, map: &str) {
        use covenant_engine::TxEvent;
        match (self, event) {
            (Index::Memory(m), TxEvent::Appended(txid, ws) | TxEvent::History(txid, ws)) => {
                m.add_from(txid, ws, map)
            }
            // Readers check each TxId against the ledger: a rolled-back one is
            // replaced when its seqno is indexed again.
            (Index::Memory(_), TxEvent::RolledBack(_)) => {}
            // While reopening, the reopen's catch-up from the ledger covers these.
            (Index::Disk(d), TxEvent::Appended(txid, ws)) => {
                let _ = d.with(|i| {
                    i.add(txid, collections_of(ws, map));
                    Ok(())
                });
            }
            (Index::Disk(d), TxEvent::RolledBack(to)) => {
                let _ = d.with(|i| {
                    i.rollback(to);
                    Ok(())
                });
            }
            (Index::Disk(d), TxEvent::History(txid, ws)) => {
                let cols = collections_of(ws, map);
                if cols.is_empty() {
                    return;
                }
                let added = d.with(|d| {
                    let upto = d.indexed_upto();
                    if txid.seqno <= upto {
                        d.add_committed_batch(&[(txid, cols)], upto)
                    } else {
                        d.add(txid, cols);
                        Ok(())
                    }
                });
                if let Err(e) = added {
                    tracing::warn!(%txid, error = %e, "could not index a recovered transaction");
                }
            }
        }
    }

    /// Moves what is committed up to `upto` to disk (nothing for the memory form).
    pub fn commit(&self, upto: SeqNo) -> Result<(), IndexError> {
        match self {
            Index::Memory(_) => Ok(()),
            Index::Disk(d) => d.with(|i| i.commit(upto)),
        }
    }

    /// Forces what is on disk to be durable (at shutdown).
    pub fn flush(&self) -> Result<(), IndexError> {
        match self {
            Index::Memory(_) => Ok(()),
            Index::Disk(d) => d.with(|i| i.flush()),
        }
    }

    /// See [`EntryIndex::range`].
    pub fn range(
        &self,
        collection: &str,
        from: SeqNo,
        to: SeqNo,
        limit: usize,
    ) -> Result<(Vec<TxId>, Option<TxId>), IndexError> {
        match self {
            Index::Memory(m) => Ok(m.range(collection, from, to, limit)),
            Index::Disk(d) => d.with(|i| i.range(collection, from, to, limit)),
        }
    }

    /// See [`EntryIndex::latest`].
    pub fn latest(
        &self,
        collection: &str,
        upto: SeqNo,
        limit: usize,
    ) -> Result<Vec<TxId>, IndexError> {
        match self {
            Index::Memory(m) => Ok(m.latest(collection, upto, limit)),
            Index::Disk(d) => d.with(|i| i.latest(collection, upto, limit)),
        }
    }
}

/// Collection → the TxIds that wrote an entry to it, in seqno order.
#[derive(Default)]
pub struct EntryIndex {
    by_collection: RwLock<HashMap<String, Vec<TxId>>>,
}

impl EntryIndex {
    /// Scans the transactions of `engine` up to `upto` for writes to `map`. An entry
    /// later rolled back is replaced when its seqno is indexed again (see `add`), and
    /// readers check the TxId at a seqno before answering.
    pub fn build(engine: &Engine, map: &str, upto: SeqNo) -> Result<EntryIndex, EngineError> {
        let index = EntryIndex::default();
        index.scan(engine, map, upto.min(engine.last_seqno()))?;
        Ok(index)
    }

    fn scan(&self, engine: &Engine, map: &str, upto: SeqNo) -> Result<(), EngineError> {
        // A node that started from a snapshot holds the ledger after it only.
        for seqno in engine.first_seqno().0..=upto.0 {
            if let Some((txid, cols)) = collections_at(engine, SeqNo(seqno), map)? {
                for collection in cols {
                    self.add(&collection, txid);
                }
            }
        }
        Ok(())
    }

    /// Indexes the writes of one transaction to `map` (a backup applying the primary's
    /// transactions).
    pub fn add_from(&self, txid: TxId, ws: &covenant_kv::WriteSet, map: &str) {
        for collection in collections_of(ws, map) {
            self.add(&collection, txid);
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
