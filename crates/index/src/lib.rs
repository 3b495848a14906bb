//! Which transactions wrote an entry to which collection, on disk.
//!
//! Ranged queries ("the TxIds that wrote to collection C between seqnos a and b")
//! need this index; the ledger is the source of truth and the index can always be
//! rebuilt from it. [`CollectionIndex`] keeps every COMMITTED transaction in a
//! [redb](https://docs.rs/redb) file and only the uncommitted ones in memory, so
//! memory stays flat however long the history grows, and a range deep in the past
//! costs one ordered scan like a recent one.
//!
//! # Contract
//!
//! * [`add`](CollectionIndex::add) each appended transaction (memory only, cheap);
//!   a seqno added again keeps the newest TxId.
//! * [`rollback`](CollectionIndex::rollback) when the ledger truncates: the
//!   uncommitted tail above the seqno is dropped.
//! * [`commit`](CollectionIndex::commit) when the commit point advances: the tail up
//!   to it moves to disk in one redb transaction that also advances the watermark
//!   [`indexed_upto`](CollectionIndex::indexed_upto). The caller promises that every
//!   committed transaction up to that seqno was added (or fed through
//!   [`add_committed_batch`](CollectionIndex::add_committed_batch)).
//! * After a restart the tail is empty and the file holds everything committed up to
//!   `indexed_upto()`; the caller catches up from the ledger with
//!   [`add_committed_batch`](CollectionIndex::add_committed_batch). A watermark above
//!   what the ledger holds means the file is not this ledger's: delete it
//!   ([`CollectionIndex::remove`]) and rebuild.
//! * The tail only holds seqnos above the watermark. Queries
//!   ([`range`](CollectionIndex::range), [`latest`](CollectionIndex::latest)) see the
//!   disk and the tail merged (a reader looks at the tail before the disk and a
//!   commit empties the tail after its disk write, so nothing is missed in between).
//!
//! # File layout
//!
//! | table         | key                      | value                          |
//! |---------------|--------------------------|--------------------------------|
//! | `entries`     | `(collection, seqno)`    | view                           |
//! | `collections` | collection               | number of entries on disk      |
//! | `meta`        | `"format_version"`       | [`FORMAT_VERSION`]             |
//! | `meta`        | `"indexed_upto"`         | the committed watermark        |
//!
//! The composite key sorts by collection then seqno, so a range or a "latest up to"
//! is one ordered scan. Files are created in redb's v3 file format.
//!
//! # Durability and crashes
//!
//! Entries and the watermark are written in the same redb transaction, so any state
//! the file is left in is consistent: everything up to the watermark is there. Most
//! commits use [`redb::Durability::None`] (no fsync: a crash loses them, and the
//! caller re-indexes from the ledger above the watermark it finds); one commit per
//! [`DURABLE_EVERY`] (or per [`DURABLE_EVERY_COMMITS`] commits, or per
//! [`DURABLE_EVERY_ROWS`] entries written) is
//! [`redb::Durability::Immediate`] with redb's quick-repair, which bounds how much a
//! crash loses, lets redb reclaim the pages of the non-durable commits (it frees pages
//! only at durable commits) and makes reopening after a crash instant.
//! [`flush`](CollectionIndex::flush) forces one; dropping the index flushes.
//!
//! # Corruption
//!
//! redb's open or repair failing, a missing or different [`FORMAT_VERSION`], or a
//! table of an unexpected type give [`IndexError::Corrupt`]: delete the file and
//! rebuild. redb does not verify page checksums when it opens a cleanly closed file
//! (only [`OpenOptions::verify`] does, at the cost of reading the whole file), and it
//! may panic on a damaged page; every call into redb is therefore run under
//! `catch_unwind` and a panic becomes `Corrupt` too (this needs `panic = "unwind"`,
//! the default; the panic hook still prints the message). Damage redb does not notice
//! can yield wrong TxIds: readers check the TxId at a seqno against the ledger before
//! answering, as they did with the in-memory index.
//!
//! # Memory
//!
//! Nothing committed is kept in memory; redb's page cache is bounded by
//! [`OpenOptions::cache_bytes`] (RSS stayed at ~73 MB from 1 M to 5 M entries over
//! 1000 collections with the default cache).

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use covenant_types::{SeqNo, TxId, View};
use redb::{
    Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
};

/// Version of the table layout; a file with another one is [`IndexError::Corrupt`].
pub const FORMAT_VERSION: u64 = 1;

/// At most this long between two durable commits (while commits keep coming).
pub const DURABLE_EVERY: Duration = Duration::from_secs(1);

/// At most this many non-durable commits between two durable ones.
pub const DURABLE_EVERY_COMMITS: u32 = 1000;

/// At most this many entries written by non-durable commits before a durable one
/// (redb frees the pages they replaced only then: this bounds the file's growth
/// during a rebuild).
pub const DURABLE_EVERY_ROWS: u64 = 100_000;

/// redb's page cache by default. redb's own default (1 GiB) would let the cache,
/// hence the RSS, grow with the file.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

const ENTRIES: TableDefinition<(&str, u64), u64> = TableDefinition::new("entries");
const COLLECTIONS: TableDefinition<&str, u64> = TableDefinition::new("collections");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_FORMAT_VERSION: &str = "format_version";
const META_INDEXED_UPTO: &str = "indexed_upto";

/// Why the index could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The file is damaged, not an index, or of another format version: delete it
    /// ([`CollectionIndex::remove`]) and rebuild from the ledger.
    #[error("collection index is corrupt: {0}")]
    Corrupt(String),
    /// Another `CollectionIndex` (in this or another process) has the file open.
    #[error("collection index {0} is already open")]
    AlreadyOpen(PathBuf),
    /// Reading or writing the file failed.
    #[error("collection index I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Any other storage failure reported by redb.
    #[error("collection index storage: {0}")]
    Storage(String),
    /// [`CollectionIndex::add_committed_batch`] got a transaction above the
    /// watermark it was asked to set.
    #[error("transaction {txid} is above the committed watermark {upto} of its batch")]
    AboveWatermark { txid: TxId, upto: SeqNo },
}

impl From<redb::Error> for IndexError {
    fn from(e: redb::Error) -> IndexError {
        match e {
            redb::Error::Corrupted(msg) => IndexError::Corrupt(msg),
            // A short read or bytes redb cannot parse (no magic number): a damaged file.
            redb::Error::Io(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                IndexError::Corrupt(format!("damaged or not a redb file: {e}"))
            }
            redb::Error::Io(e) => IndexError::Io(e),
            e @ (redb::Error::TableTypeMismatch { .. }
            | redb::Error::TypeDefinitionChanged { .. }
            | redb::Error::TableIsMultimap(_)
            | redb::Error::TableIsNotMultimap(_)
            | redb::Error::TableDoesNotExist(_)
            | redb::Error::UpgradeRequired(_)
            | redb::Error::RepairAborted) => IndexError::Corrupt(e.to_string()),
            e => IndexError::Storage(e.to_string()),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for IndexError {
            fn from(e: $t) -> IndexError {
                IndexError::from(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError
);

/// How to open an index.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Bytes of redb page cache (see [`DEFAULT_CACHE_BYTES`]).
    pub cache_bytes: usize,
    /// Verify every page checksum at open (reads the whole file), repairing what
    /// redb can; [`IndexError::Corrupt`] when it cannot. Off by default: redb already
    /// checks what it needs after an unclean shutdown.
    pub verify: bool,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions {
            cache_bytes: DEFAULT_CACHE_BYTES,
            verify: false,
        }
    }
}

/// One uncommitted transaction of the tail.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TailEntry {
    txid: TxId,
    /// Sorted, without duplicates.
    collections: Vec<String>,
}

impl TailEntry {
    fn has(&self, collection: &str) -> bool {
        self.collections
            .binary_search_by(|c| c.as_str().cmp(collection))
            .is_ok()
    }
}

/// When the next durable commit is due.
struct WriterState {
    /// Non-durable commits since the last durable one.
    since_durable: u32,
    /// Entries they wrote.
    rows_since_durable: u64,
    last_durable: Instant,
}

impl WriterState {
    fn durable_done(&mut self) {
        self.since_durable = 0;
        self.rows_since_durable = 0;
        self.last_durable = Instant::now();
    }
}

/// The collection → TxId index: committed transactions in a redb file, uncommitted
/// ones in a small in-memory tail. `Send + Sync`; share it through an `Arc`.
pub struct CollectionIndex {
    /// `Some` until dropped (see `Drop`).
    db: Option<Database>,
    path: PathBuf,
    /// Uncommitted transactions by seqno.
    tail: Mutex<BTreeMap<u64, TailEntry>>,
    /// The watermark on disk (updated under the `tail` lock after each write).
    indexed_upto: AtomicU64,
    /// Serializes writers (commit, batches, flush) and paces durable commits.
    writer: Mutex<WriterState>,
}

/// Runs `f` (which calls into redb), turning a panic into [`IndexError::Corrupt`].
fn guarded<T>(f: impl FnOnce() -> Result<T, IndexError>) -> Result<T, IndexError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            tracing::error!(%msg, "redb panicked: treating the collection index as corrupt");
            Err(IndexError::Corrupt(format!("storage panicked: {msg}")))
        }
    }
}

impl CollectionIndex {
    /// Opens the index at `path`, creating it if the file does not exist or is empty.
    pub fn open(path: &Path) -> Result<CollectionIndex, IndexError> {
        CollectionIndex::open_with(path, &OpenOptions::default())
    }

    /// [`open`](CollectionIndex::open) with options.
    pub fn open_with(path: &Path, options: &OpenOptions) -> Result<CollectionIndex, IndexError> {
        let (db, indexed_upto) = guarded(|| {
            let mut builder = Database::builder();
            builder
                .set_cache_size(options.cache_bytes)
                .create_with_file_format_v3(true);
            let mut db = builder.create(path).map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    IndexError::AlreadyOpen(path.to_path_buf())
                }
                e => IndexError::from(e),
            })?;
            if options.verify && !db.check_integrity()? {
                tracing::warn!(path = %path.display(), "collection index failed its integrity check and was repaired");
            }
            let indexed_upto = init_or_check(&db)?;
            Ok((db, indexed_upto))
        })?;
        tracing::debug!(path = %path.display(), indexed_upto, "collection index opened");
        Ok(CollectionIndex {
            db: Some(db),
            path: path.to_path_buf(),
            tail: Mutex::new(BTreeMap::new()),
            indexed_upto: AtomicU64::new(indexed_upto),
            writer: Mutex::new(WriterState {
                since_durable: 0,
                rows_since_durable: 0,
                last_durable: Instant::now(),
            }),
        })
    }

    /// Deletes the index file at `path` (absent is fine), to rebuild it after
    /// [`IndexError::Corrupt`]. The index must not be open.
    pub fn remove(path: &Path) -> Result<(), IndexError> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The file this index lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every committed transaction up to this seqno is on disk.
    pub fn indexed_upto(&self) -> SeqNo {
        SeqNo(self.indexed_upto.load(Ordering::Acquire))
    }

    fn db(&self) -> Result<&Database, IndexError> {
        self.db
            .as_ref()
            .ok_or_else(|| IndexError::Storage("closed".into()))
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, TailEntry>> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that the appended (not yet committed) transaction `txid` wrote entries
    /// to `collections`. In memory only. A seqno added again keeps the newest TxId
    /// (the same TxId again adds to its collections). A seqno at or below
    /// [`indexed_upto`](CollectionIndex::indexed_upto) is committed and already on
    /// disk: ignored.
    pub fn add(&self, txid: TxId, collections: Vec<String>) {
        if collections.is_empty() {
            return;
        }
        let mut collections = collections;
        collections.sort_unstable();
        collections.dedup();
        let mut tail = self.tail();
        if txid.seqno.0 <= self.indexed_upto.load(Ordering::Acquire) {
            tracing::debug!(%txid, "collection index: already committed, not added again");
            return;
        }
        match tail.get_mut(&txid.seqno.0) {
            Some(e) if e.txid == txid => {
                let merged: BTreeSet<String> = e.collections.drain(..).chain(collections).collect();
                e.collections = merged.into_iter().collect();
            }
            _ => {
                tail.insert(txid.seqno.0, TailEntry { txid, collections });
            }
        }
    }

    /// Drops the uncommitted transactions above `after` (the ledger rolled back to
    /// it). Committed ones are on disk and never roll back.
    pub fn rollback(&self, after: SeqNo) {
        let mut tail = self.tail();
        let dropped = tail.split_off(&after.0.saturating_add(1));
        if !dropped.is_empty() && after.0 < self.indexed_upto.load(Ordering::Acquire) {
            tracing::warn!(%after, indexed_upto = %self.indexed_upto(), "collection index: rollback below the committed watermark");
        }
    }

    /// Moves the tail up to `upto` to disk in one write transaction that also sets
    /// the watermark to `upto` (it never goes down). The caller promises that every
    /// committed transaction up to `upto` was added.
    pub fn commit(&self, upto: SeqNo) -> Result<(), IndexError> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let moved: Vec<TailEntry> = self
            .tail()
            .range(..=upto.0)
            .map(|(_, e)| e.clone())
            .collect();
        if moved.is_empty() && upto <= self.indexed_upto() {
            return Ok(());
        }
        self.write_committed(
            &mut writer,
            moved.iter().map(|e| (e.txid, e.collections.as_slice())),
            upto,
            Some(&moved),
        )
    }

    /// Writes already committed transactions straight to disk in one write
    /// transaction and sets the watermark to `upto` (it never goes down): for
    /// rebuilding the index, or catching up from the ledger after a restart. Every
    /// TxId must be at or below `upto` ([`IndexError::AboveWatermark`] otherwise,
    /// nothing written). Uncommitted transactions at or below `upto` leave the tail:
    /// the batch and the disk hold what was committed there.
    pub fn add_committed_batch(
        &self,
        batch: &[(TxId, Vec<String>)],
        upto: SeqNo,
    ) -> Result<(), IndexError> {
        if let Some((txid, _)) = batch.iter().find(|(t, _)| t.seqno > upto) {
            return Err(IndexError::AboveWatermark { txid: *txid, upto });
        }
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.write_committed(
            &mut writer,
            batch.iter().map(|(t, c)| (*t, c.as_slice())),
            upto,
            None,
        )
    }

    /// Forces a durable commit of everything committed so far.
    pub fn flush(&self) -> Result<(), IndexError> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if writer.since_durable == 0 {
            return Ok(());
        }
        guarded(|| {
            let mut txn = self.db()?.begin_write()?;
            txn.set_durability(Durability::Immediate);
            txn.set_quick_repair(true);
            txn.commit()?;
            Ok(())
        })?;
        writer.durable_done();
        Ok(())
    }

    /// One write transaction: `items`, then the watermark. On success, the tail keeps
    /// only what is above the new watermark; `from_tail` (a commit) is what the tail
    /// held up to it when `items` were taken from it.
    fn write_committed<'a>(
        &self,
        writer: &mut WriterState,
        items: impl Iterator<Item = (TxId, &'a [String])>,
        upto: SeqNo,
        from_tail: Option<&[TailEntry]>,
    ) -> Result<(), IndexError> {
        // In key order, each B-tree leaf is copied once per transaction, not once per
        // insert. Stable: the later of two writes to one key wins.
        let mut rows: Vec<(&str, u64, u64)> = items
            .flat_map(|(txid, collections)| {
                collections
                    .iter()
                    .map(move |c| (c.as_str(), txid.seqno.0, txid.view.0))
            })
            .collect();
        rows.sort_by_key(|&(c, seqno, _)| (c, seqno));
        let rows_since_durable = writer.rows_since_durable + rows.len() as u64;
        let durable = writer.since_durable + 1 >= DURABLE_EVERY_COMMITS
            || rows_since_durable >= DURABLE_EVERY_ROWS
            || writer.last_durable.elapsed() >= DURABLE_EVERY;
        let new_upto = guarded(|| {
            let mut txn = self.db()?.begin_write()?;
            if durable {
                txn.set_durability(Durability::Immediate);
                txn.set_quick_repair(true);
            } else {
                txn.set_durability(Durability::None);
            }
            let new_upto;
            {
                let mut entries = txn.open_table(ENTRIES)?;
                let mut added: HashMap<&str, u64> = HashMap::new();
                for (c, seqno, view) in rows {
                    if entries.insert((c, seqno), view)?.is_none() {
                        *added.entry(c).or_default() += 1;
                    }
                }
                let mut counts = txn.open_table(COLLECTIONS)?;
                for (c, n) in added {
                    let old = counts.get(c)?.map(|g| g.value()).unwrap_or(0);
                    counts.insert(c, old + n)?;
                }
                let mut meta = txn.open_table(META)?;
                let old = meta.get(META_INDEXED_UPTO)?.map(|g| g.value()).unwrap_or(0);
                new_upto = old.max(upto.0);
                meta.insert(META_INDEXED_UPTO, new_upto)?;
            }
            txn.commit()?;
            Ok(new_upto)
        })?;
        if durable {
            writer.durable_done();
        } else {
            writer.since_durable += 1;
            writer.rows_since_durable = rows_since_durable;
        }
        // Readers look at the tail before the disk, so removing the entries only now
        // never hides them.
        let mut tail = self.tail();
        self.indexed_upto.store(new_upto, Ordering::Release);
        let keep = tail.split_off(&new_upto.saturating_add(1));
        let dropped = std::mem::replace(&mut *tail, keep);
        if from_tail.is_some_and(|written| !dropped.values().eq(written.iter())) {
            // Added or replaced while this commit wrote: the caller committed a seqno
            // before adding it.
            tracing::warn!(indexed_upto = new_upto, "collection index: a transaction added at or below the commit point during the commit was not indexed");
        }
        Ok(())
    }

    /// The tail's TxIds of `collection` with seqnos in `[from, to]`, ascending.
    fn tail_for(&self, collection: &str, from: u64, to: u64) -> Vec<TxId> {
        self.tail()
            .range(from..=to)
            .filter(|(_, e)| e.has(collection))
            .map(|(_, e)| e.txid)
            .collect()
    }

    /// Up to `limit` TxIds of `collection` with `from <= seqno <= to`, in seqno order,
    /// and the next one if more follow (for a nextLink).
    pub fn range(
        &self,
        collection: &str,
        from: SeqNo,
        to: SeqNo,
        limit: usize,
    ) -> Result<(Vec<TxId>, Option<TxId>), IndexError> {
        if from > to {
            return Ok((Vec::new(), None));
        }
        // The tail before the disk: see `write_committed`.
        let tail = self.tail_for(collection, from.0, to.0);
        let mut found = guarded(|| {
            let txn = self.db()?.begin_read()?;
            let entries = txn.open_table(ENTRIES)?;
            let disk = entries
                .range((collection, from.0)..=(collection, to.0))?
                .map(row_txid);
            merge(disk, tail.into_iter(), false, limit.saturating_add(1))
        })?;
        let next = if found.len() > limit {
            found.pop()
        } else {
            None
        };
        Ok((found, next))
    }

    /// The TxIds of `collection` at or below seqno `upto`, newest first, at most
    /// `limit` of them.
    pub fn latest(
        &self,
        collection: &str,
        upto: SeqNo,
        limit: usize,
    ) -> Result<Vec<TxId>, IndexError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let tail = self.tail_for(collection, 0, upto.0);
        guarded(|| {
            let txn = self.db()?.begin_read()?;
            let entries = txn.open_table(ENTRIES)?;
            let disk = entries
                .range((collection, 0)..=(collection, upto.0))?
                .rev()
                .map(row_txid);
            merge(disk, tail.into_iter().rev(), true, limit)
        })
    }

    /// The distinct collection names, sorted.
    pub fn collections(&self) -> Result<Vec<String>, IndexError> {
        let mut names: BTreeSet<String> = self
            .tail()
            .values()
            .flat_map(|e| e.collections.iter().cloned())
            .collect();
        guarded(|| {
            let txn = self.db()?.begin_read()?;
            let counts = txn.open_table(COLLECTIONS)?;
            for row in counts.iter()? {
                names.insert(row?.0.value().to_string());
            }
            Ok(())
        })?;
        Ok(names.into_iter().collect())
    }

    /// How many TxIds `collection` has (disk and tail).
    pub fn count(&self, collection: &str) -> Result<u64, IndexError> {
        let tail = self.tail_for(collection, 0, u64::MAX);
        guarded(|| {
            let txn = self.db()?.begin_read()?;
            let counts = txn.open_table(COLLECTIONS)?;
            let mut n = counts.get(collection)?.map(|g| g.value()).unwrap_or(0);
            let entries = txn.open_table(ENTRIES)?;
            for t in tail {
                if entries.get((collection, t.seqno.0))?.is_none() {
                    n += 1;
                }
            }
            Ok(n)
        })
    }
}

impl Drop for CollectionIndex {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(path = %self.path.display(), error = %e, "collection index: final flush failed");
        }
        // redb writes its allocator state when closed, and may panic on a damaged file.
        let db = self.db.take();
        if guarded(move || {
            drop(db);
            Ok(())
        })
        .is_err()
        {
            tracing::warn!(path = %self.path.display(), "collection index: closing failed");
        }
    }
}

/// Checks the format marker of an opened file, or initializes a new one; returns the
/// watermark.
fn init_or_check(db: &Database) -> Result<u64, IndexError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    txn.set_quick_repair(true);
    let indexed_upto;
    let created;
    {
        let others = txn
            .list_tables()?
            .filter(|t| t.name() != META.name())
            .count();
        let mut meta = txn.open_table(META)?;
        let version = meta.get(META_FORMAT_VERSION)?.map(|g| g.value());
        match version {
            Some(FORMAT_VERSION) => {
                created = false;
                indexed_upto = meta
                    .get(META_INDEXED_UPTO)?
                    .map(|g| g.value())
                    .ok_or_else(|| IndexError::Corrupt("no indexed_upto".into()))?;
            }
            Some(v) => {
                return Err(IndexError::Corrupt(format!(
                    "format version {v}, expected {FORMAT_VERSION}"
                )));
            }
            None if others == 0 && meta.is_empty()? => {
                created = true;
                indexed_upto = 0;
                meta.insert(META_FORMAT_VERSION, FORMAT_VERSION)?;
                meta.insert(META_INDEXED_UPTO, 0)?;
            }
            None => return Err(IndexError::Corrupt("no format version".into())),
        }
        // Creates them in a new file; a table of another type is Corrupt.
        txn.open_table(ENTRIES)?;
        txn.open_table(COLLECTIONS)?;
    }
    if created {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok(indexed_upto)
}

/// A row of `entries`, as a range yields it.
type EntryRow<'a> = (
    redb::AccessGuard<'a, (&'static str, u64)>,
    redb::AccessGuard<'a, u64>,
);

/// A row of `entries` as a TxId.
fn row_txid(row: Result<EntryRow<'_>, redb::StorageError>) -> Result<TxId, redb::StorageError> {
    let (k, v) = row?;
    Ok(TxId {
        view: View(v.value()),
        seqno: SeqNo(k.value().1),
    })
}

/// Merges `disk` and `tail`, both already in the direction asked (ascending seqnos,
/// or descending if `descending`), the tail winning for a seqno in both; stops after
/// `n`.
fn merge(
    mut disk: impl Iterator<Item = Result<TxId, redb::StorageError>>,
    tail: impl Iterator<Item = TxId>,
    descending: bool,
    n: usize,
) -> Result<Vec<TxId>, IndexError> {
    let mut tail = tail.peekable();
    let mut d = disk.next().transpose()?;
    let mut out = Vec::new();
    while out.len() < n {
        let disk_first = match (d, tail.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(d), Some(t)) if descending => d.seqno > t.seqno,
            (Some(d), Some(t)) => d.seqno < t.seqno,
        };
        if disk_first {
            out.extend(d);
            d = disk.next().transpose()?;
        } else if let Some(t) = tail.next() {
            if d.is_some_and(|d| d.seqno == t.seqno) {
                d = disk.next().transpose()?;
            }
            out.push(t);
        } else {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
