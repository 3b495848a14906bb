//! [`LedgerReader`]: reads of committed history that do not go through the
//! [`Ledger`](crate::Ledger).
//!
//! A node keeps its ledger behind one lock shared with the write path, so a
//! historical query reading old entries through it holds that lock for every
//! file read, stalling appends. Committed chunks never change (they are only
//! moved whole by an archive), so they can be read without the ledger: the
//! ledger publishes the list of its committed chunks (first, last, path,
//! length) in an `Arc<RwLock<..>>` it updates when a chunk is committed or
//! archived, and a reader takes that lock only to look up one chunk. File
//! handles and frame indexes live in the reader's own cache.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use covenant_types::SeqNo;

use crate::chunkio::{
    check_held, entry_at, frame_span, load_committed_index, pread, Cached, Entry, ReadCache,
};
use crate::error::LedgerError;

/// A committed chunk as readers see it.
#[derive(Debug, Clone)]
pub(crate) struct CommittedChunk {
    pub(crate) first: u64,
    pub(crate) last: u64,
    /// Its current location: the ledger directory, or a read-only or archive
    /// directory (an archive changes it).
    pub(crate) path: PathBuf,
    pub(crate) len: u64,
    /// Frame offsets kept in memory, for a read-only chunk whose index could
    /// not be used at open (nothing may be written next to it); otherwise the
    /// reader loads the index file.
    pub(crate) offsets: Option<Arc<Vec<u64>>>,
}

/// The committed chunks of a ledger, in seqno order (a contiguous prefix of
/// the ledger), shared by the [`Ledger`](crate::Ledger) and its readers.
#[derive(Debug, Default)]
pub(crate) struct CommittedView {
    pub(crate) chunks: Vec<CommittedChunk>,
}

impl CommittedView {
    fn find(&self, seqno: u64) -> Option<&CommittedChunk> {
        let p = self.chunks.partition_point(|c| c.first <= seqno);
        let c = self.chunks.get(p.checked_sub(1)?)?;
        (seqno >= c.first && seqno <= c.last).then_some(c)
    }

    pub(crate) fn chunk_mut(&mut self, first: u64) -> Option<&mut CommittedChunk> {
        let i = self.chunks.binary_search_by_key(&first, |c| c.first).ok()?;
        self.chunks.get_mut(i)
    }
}

/// Reads entries of a ledger's committed chunks without the
/// [`Ledger`](crate::Ledger): made by [`Ledger::reader`](crate::Ledger::reader),
/// cheap to clone (clones share one cache of file handles and indexes) and
/// usable from any thread while the ledger appends, syncs, commits and
/// archives. The only lock it shares with the ledger is the list of committed
/// chunks, held for one lookup here and for one push or path swap there.
///
/// It answers only for seqnos in committed chunks (`.committed` files in the
/// ledger directory or in read-only and archive directories), which are
/// immutable; anything else, including committed entries whose chunk is still
/// open or closed, is [`LedgerError::NotInCommittedChunk`]: read those through
/// the ledger. Frames are checked exactly as [`Ledger::read`](crate::Ledger::read)
/// checks them (checksum, seqno, length against the index).
#[derive(Debug, Clone)]
pub struct LedgerReader {
    /// The seqno the ledger continues (0 for a full ledger): fixed at open.
    base: u64,
    view: Arc<RwLock<CommittedView>>,
    cache: Arc<Mutex<ReadCache>>,
}

impl LedgerReader {
    pub(crate) fn new(base: u64, view: Arc<RwLock<CommittedView>>) -> LedgerReader {
        LedgerReader {
            base,
            view,
            cache: Arc::default(),
        }
    }

    /// Seqno of the first entry the ledger can hold (as [`Ledger::first_seqno`](crate::Ledger::first_seqno)).
    pub fn first_seqno(&self) -> SeqNo {
        SeqNo(self.base + 1)
    }

    /// The last seqno of the last committed chunk: every held seqno up to it
    /// is readable here. The ledger's base (0 for a full ledger) when no chunk
    /// is committed yet.
    pub fn last_readable(&self) -> SeqNo {
        SeqNo(self.view().chunks.last().map_or(self.base, |c| c.last))
    }

    /// Reads one entry of a committed chunk, verifying its checksum.
    ///
    /// [`LedgerError::NotInCommittedChunk`] for a seqno the ledger may hold but
    /// not (yet) in a committed chunk; [`LedgerError::BeforeStart`] and
    /// [`LedgerError::NotFound`] (seqno 0) as [`Ledger::read`](crate::Ledger::read).
    pub fn read(&self, seqno: SeqNo) -> Result<Entry, LedgerError> {
        check_held(self.base, seqno.0)?;
        let mut retried = false;
        loop {
            let chunk = self
                .view()
                .find(seqno.0)
                .cloned()
                .ok_or(LedgerError::NotInCommittedChunk(seqno))?;
            match self.read_in(&chunk, seqno.0) {
                // An archive moved the chunk after we looked it up: the view
                // already names the new copy (updated before the old one goes).
                Err(LedgerError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && !retried =>
                {
                    retried = true;
                }
                r => return r,
            }
        }
    }

    fn read_in(&self, c: &CommittedChunk, seqno: u64) -> Result<Entry, LedgerError> {
        let (file, offsets) = self.handle(c)?;
        let i = (seqno - c.first) as usize;
        let (offset, end) = frame_span(&c.path, &offsets, i, c.len, seqno)?;
        let buf = pread(&file, &c.path, offset, end - offset)?;
        entry_at(&c.path, offset, seqno, &buf)
    }

    /// The chunk's read handle and frame offsets, from the cache when it holds
    /// them for the chunk's current path. Loading happens outside the cache's
    /// lock, so one slow index load does not hold up reads of other chunks.
    fn handle(&self, c: &CommittedChunk) -> Result<(Arc<File>, Arc<Vec<u64>>), LedgerError> {
        if let Some(Cached {
            path,
            file,
            offsets: Some(o),
            ..
        }) = self.cache().get(c.first)
        {
            if *path == c.path {
                return Ok((file.clone(), o.clone()));
            }
        }
        let file = File::open(&c.path)
            .map(Arc::new)
            .map_err(|e| LedgerError::io(&c.path, e))?;
        let offsets = match &c.offsets {
            Some(o) => o.clone(),
            // Never written back from here: the ledger owns its directory.
            None => Arc::new(load_committed_index(&c.path, c.first, c.last, c.len, None)?),
        };
        // Replaces an entry for the chunk's old path.
        self.cache().put(Cached {
            first: c.first,
            path: c.path.clone(),
            file: file.clone(),
            offsets: Some(offsets.clone()),
        });
        Ok((file, offsets))
    }

    fn view(&self) -> std::sync::RwLockReadGuard<'_, CommittedView> {
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, ReadCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
