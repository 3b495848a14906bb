use std::collections::HashSet;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use covenant_types::{SeqNo, TxId};

pub use crate::chunkio::Entry;
use crate::chunkio::{
    check_held, check_index_cheap, entry_at, frame_span, index_beside, load_committed_index, pread,
    sync_dir, write_index, Cached, ReadCache,
};
use crate::error::LedgerError;
use crate::format::{
    check_header, check_sequence, closed_name, committed_name, decode_frame, encode_frame,
    encode_header, entry_count, frame_len, list_dirs, merge_read_only, open_name,
    scan_closed_chunk, ChunkFile, ChunkKind, ChunkReader, FrameError, Listing, FRAME_HEADER_LEN,
    FRAME_OVERHEAD, HEADER_LEN, MAX_FRAME_LEN, MAX_PAYLOAD_LEN, TMP_SUFFIX,
};
use crate::reader::{CommittedChunk, CommittedView, LedgerReader};

/// Default size after which the next signature entry closes a chunk (5 MiB).
pub const DEFAULT_CHUNK_THRESHOLD_BYTES: u64 = 5 * 1024 * 1024;

/// Buffered bytes of the open chunk beyond which an append writes them out
/// (without syncing), bounding memory between group commits.
const FLUSH_AT: usize = 1 << 20;

/// Where the ledger lives and how large chunks grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    pub dir: PathBuf,
    /// A chunk closes after the first signature entry that leaves it at least this long.
    pub chunk_threshold_bytes: u64,
    /// Close chunks without an fsync in the append path: the close completes in the
    /// next [`Ledger::prepare_sync`] ticket (meant for a group-commit loop that syncs
    /// often). When false, the closing append syncs and renames the chunk itself.
    pub deferred_close: bool,
    /// The transaction this ledger continues (a snapshot's TxId), for a node that
    /// starts from a snapshot instead of seqno 1. Used when the directory is empty;
    /// a directory whose first chunk starts at `f > 1` has base `f - 1` anyway, and
    /// a `start_after` naming another seqno is then a layout error.
    pub start_after: Option<TxId>,
    /// Directories holding archived committed chunks (see [`Ledger::archive`]),
    /// so history can move to cheaper or separate storage and stay readable.
    /// Their `.committed` chunks (and index files) join the ledger as if they
    /// were in `dir`; they are never written to, not even to rebuild a damaged
    /// index (that is kept in memory instead). Each must exist. A chunk present
    /// both in `dir` and here (an interrupted archive) is read from `dir`. Any
    /// other kind of chunk file here is a [`LedgerError::Layout`] error; temporary
    /// and unknown `ledger_` files are skipped with a warning.
    pub read_only_dirs: Vec<PathBuf>,
}

impl LedgerConfig {
    /// A ledger in `dir` with the default 5 MiB chunk threshold.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LedgerConfig {
            dir: dir.into(),
            chunk_threshold_bytes: DEFAULT_CHUNK_THRESHOLD_BYTES,
            deferred_close: false,
            start_after: None,
            read_only_dirs: Vec::new(),
        }
    }
}

/// What [`Ledger::open`] had to repair, so the caller can log or alert on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes cut from the open chunk (torn tail) or a discarded half-written chunk header.
    pub truncated_bytes: u64,
    /// Whether an incomplete or checksum-failing last entry was discarded.
    pub dropped_partial_entry: bool,
    /// Last seqno present after recovery (when empty, the base: 0 for a full ledger).
    pub last_seqno: SeqNo,
}

/// What [`Ledger::archive`] moved, for the caller to log or meter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    /// Committed chunks moved out of the main directory by this call.
    pub chunks: usize,
    /// Their total size in bytes (chunk files, not index files).
    pub bytes: u64,
    /// Every entry up to this seqno now lives outside the main directory, which
    /// starts at `upto + 1`; the ledger's base (0 for a full ledger) when no chunk
    /// has been archived.
    pub upto: SeqNo,
}

#[derive(Debug)]
struct Chunk {
    first: u64,
    /// Inclusive; `first - 1` for an empty open chunk.
    last: u64,
    kind: ChunkKind,
    path: PathBuf,
    /// Logical length, including bytes still buffered in the writer.
    len: u64,
    /// Frame offsets, kept in memory for open and closed chunks; committed
    /// chunks use their on-disk index, loaded on demand into the read cache
    /// (except a read-only chunk whose index was unusable at open: its rebuilt
    /// offsets stay here, as they cannot be written next to it).
    offsets: Option<Vec<u64>>,
    /// Lives outside the main directory (a read-only directory or an archive):
    /// committed, and nothing is ever written next to it.
    read_only: bool,
}

impl Chunk {
    /// What readers need of a committed chunk.
    fn committed(&self) -> CommittedChunk {
        CommittedChunk {
            first: self.first,
            last: self.last,
            path: self.path.clone(),
            len: self.len,
            // Only a read-only chunk whose index was rebuilt at open has these.
            offsets: self.offsets.as_ref().map(|o| Arc::new(o.clone())),
        }
    }
}

/// The open chunk's file and the bytes appended to it but not yet written.
#[derive(Debug)]
struct Writer {
    /// Shared with [`SyncTicket`]s so fdatasync can run without `&mut Ledger`.
    /// `None` while the previous chunk is closing: the new chunk's file is created
    /// only once that close is durable, so the directory never holds two open chunks.
    file: Option<Arc<File>>,
    /// Bytes of the chunk already written to the file.
    flushed: u64,
    pending: Vec<u8>,
    /// Written since the last fdatasync.
    unsynced: bool,
}

/// A chunk between its closing signature and its rename to the closed name.
#[derive(Debug, Clone)]
struct Closing {
    first: u64,
    file: Arc<File>,
    open_path: PathBuf,
    closed_path: PathBuf,
}

/// An append-only ledger directory, open for appending and random reads.
///
/// Appends are buffered; [`Ledger::sync`] makes them durable in one
/// fdatasync (group commit). Reads see appended entries immediately.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    threshold: u64,
    deferred_close: bool,
    chunks: Vec<Chunk>,
    /// Present iff the last chunk is open.
    writer: Option<Writer>,
    /// Seqno this ledger starts after (0 for a full ledger): entries are `base + 1..`.
    base: u64,
    /// TxId at `base`, when known (from [`LedgerConfig::start_after`]).
    base_txid: Option<TxId>,
    last_txid: Option<TxId>,
    synced_seqno: u64,
    committed_seqno: u64,
    /// A file was created since the directory was last synced.
    dir_dirty: bool,
    /// Set when a write or sync failed; mutations are refused until reopened.
    poisoned: Option<String>,
    /// Bumped by truncation, so a sync prepared before it cannot mark later entries synced.
    epoch: u64,
    /// Prepared syncs not yet completed (truncation waits for none).
    tickets_out: u64,
    /// The chunk ended by the last over-threshold signature, fully written but
    /// still open-named until a sync makes it durable and renames it closed.
    closing: Option<Closing>,
    cache: Mutex<ReadCache>,
    /// The committed chunks as [`LedgerReader`]s see them, updated here whenever
    /// one is committed, archived (its path changes) or (never, but kept safe)
    /// truncated. Written only under `&mut self`, for the length of a push or a
    /// path swap, so readers never wait for appends or syncs.
    committed_view: Arc<RwLock<CommittedView>>,
}

/// Durably copies committed chunk `c` into directory `to` (temporary name,
/// fsync, rename), writes its index beside it and fsyncs `to`. Returns the new
/// path. Works across file systems; an existing copy there is replaced.
fn copy_chunk_into(c: &Chunk, offsets: &[u64], to: &Path) -> Result<PathBuf, LedgerError> {
    let name = committed_name(c.first, c.last);
    let dest = to.join(&name);
    let tmp = to.join(format!("{name}{TMP_SUFFIX}"));
    let mut src = File::open(&c.path).map_err(|e| LedgerError::io(&c.path, e))?;
    let mut out = File::create(&tmp).map_err(|e| LedgerError::io(&tmp, e))?;
    let copied = std::io::copy(&mut src, &mut out).map_err(|e| LedgerError::io(&tmp, e))?;
    if copied != c.len {
        return Err(LedgerError::corrupt(
            &c.path,
            copied,
            None,
            None,
            format!("committed chunk is {copied} bytes, {} were expected", c.len),
        ));
    }
    out.sync_all().map_err(|e| LedgerError::io(&tmp, e))?;
    drop(out);
    fs::rename(&tmp, &dest).map_err(|e| LedgerError::io(&dest, e))?;
    write_index(to, c.first, c.last, c.len, offsets)?;
    sync_dir(to)?;
    Ok(dest)
}

fn first_of(listing: &Listing) -> Option<SeqNo> {
    listing.chunks.first().map(|c| SeqNo(c.first))
}

/// Whether a valid frame for `seqno` starts anywhere in `[from, len)`: used to
/// tell a torn tail (nothing valid after the bad frame) from corruption.
fn later_frame_exists(path: &Path, from: u64, len: u64, seqno: u64) -> Result<bool, LedgerError> {
    const BLOCK: u64 = 1 << 20;
    let file = File::open(path).map_err(|e| LedgerError::io(path, e))?;
    let pattern = seqno.to_le_bytes();
    let hdr = FRAME_HEADER_LEN as u64;
    let mut start = from;
    while start + hdr <= len {
        let end = len.min(start + BLOCK + hdr);
        let buf = pread(&file, path, start, end - start)?;
        for (i, w) in buf.windows(FRAME_HEADER_LEN).enumerate() {
            if w[12..20] != pattern {
                continue;
            }
            let mut lb = [0u8; 4];
            lb.copy_from_slice(&w[..4]);
            let total = FRAME_OVERHEAD + u64::from(u32::from_le_bytes(lb));
            let at = start + i as u64;
            if total <= MAX_FRAME_LEN && at + total <= len {
                let frame = pread(&file, path, at, total)?;
                if decode_frame(&frame).is_ok() {
                    return Ok(true);
                }
            }
        }
        start += BLOCK;
    }
    Ok(false)
}

impl Ledger {
    /// Opens (creating if needed) a ledger directory and recovers from a crash.
    ///
    /// Non-committed chunks are fully validated and a torn tail of the open
    /// chunk is truncated (reported, never silent). Committed chunks are only
    /// checked by header, length and index, so opening does not scan history.
    pub fn open(config: LedgerConfig) -> Result<(Ledger, RecoveryReport), LedgerError> {
        let dir = config.dir;
        fs::create_dir_all(&dir).map_err(|e| LedgerError::io(&dir, e))?;
        let listing = list_dirs(&dir, &config.read_only_dirs)?;
        if config
            .start_after
            .is_some_and(|b| b.seqno.0 == 0 || b.view.0 == 0)
        {
            return Err(LedgerError::layout(
                &dir,
                "start_after must name a transaction (view and seqno >= 1)",
            ));
        }
        let (base, base_txid) = match (listing.chunks.first().map(|c| c.first), config.start_after) {
            (None, after) => (after.map_or(0, |b| b.seqno.0), after),
            (Some(1), _) => (0, None),
            (Some(f), Some(b)) if b.seqno.0 != f - 1 => {
                return Err(LedgerError::layout(
                    &dir,
                    format!(
                        "the first chunk starts at seqno {f}, but the ledger was opened to continue after {b}"
                    ),
                ))
            }
            (Some(f), after) => (f - 1, after),
        };
        let mut dir_changed = false;
        for tmp in &listing.temps {
            tracing::warn!(file = %tmp.display(), "removing leftover temporary ledger file");
            fs::remove_file(tmp).map_err(|e| LedgerError::io(tmp, e))?;
            dir_changed = true;
        }
        let committed: HashSet<(u64, u64)> = listing
            .chunks
            .iter()
            .filter(|c| c.kind == ChunkKind::Committed && !c.read_only)
            .filter_map(|c| c.last.map(|l| (c.first, l)))
            .collect();
        for (first, last, path) in &listing.indexes {
            if !committed.contains(&(*first, *last)) {
                tracing::warn!(file = %path.display(), "removing index of a chunk that is not committed");
                fs::remove_file(path).map_err(|e| LedgerError::io(path, e))?;
                dir_changed = true;
            }
        }

        let mut ledger = Ledger {
            dir,
            threshold: config.chunk_threshold_bytes,
            deferred_close: config.deferred_close,
            chunks: Vec::new(),
            writer: None,
            base,
            base_txid,
            last_txid: base_txid,
            synced_seqno: base,
            committed_seqno: base,
            dir_dirty: false,
            poisoned: None,
            epoch: 0,
            tickets_out: 0,
            closing: None,
            cache: Mutex::new(ReadCache::default()),
            committed_view: Arc::default(),
        };
        let mut report = RecoveryReport::default();
        let mut tail_known = false;
        for cf in listing.chunks {
            if cf.kind != ChunkKind::Committed && !tail_known {
                ledger.resolve_committed_tail()?;
                tail_known = true;
            }
            match cf.kind {
                ChunkKind::Committed => ledger.adopt_committed(cf)?,
                ChunkKind::Closed => ledger.adopt_closed(cf)?,
                ChunkKind::Open => dir_changed |= ledger.adopt_open(cf, &mut report)?,
            }
        }
        if !tail_known {
            ledger.resolve_committed_tail()?;
        }
        if let Some(w) = ledger.writer.as_mut() {
            // What survived a process crash may still sit only in the page cache.
            let path = ledger
                .chunks
                .last()
                .map(|c| c.path.clone())
                .unwrap_or_default();
            if let Some(file) = &w.file {
                file.sync_data().map_err(|e| LedgerError::io(path, e))?;
            }
        }
        if dir_changed {
            sync_dir(&ledger.dir)?;
        }
        ledger.synced_seqno = ledger.last();
        report.last_seqno = ledger.last_seqno();
        let committed: Vec<CommittedChunk> = ledger
            .chunks
            .iter()
            .filter(|c| c.kind == ChunkKind::Committed)
            .map(Chunk::committed)
            .collect();
        ledger.view_mut().chunks = committed;
        Ok((ledger, report))
    }

    /// Sets `last_txid` from the last committed entry when committed chunks
    /// are all there is so far (one index load and one frame read).
    fn resolve_committed_tail(&mut self) -> Result<(), LedgerError> {
        if self.committed_seqno > self.last() {
            self.last_txid = Some(self.read(SeqNo(self.committed_seqno))?.txid);
        }
        Ok(())
    }

    fn adopt_committed(&mut self, cf: ChunkFile) -> Result<(), LedgerError> {
        let Some(last) = cf.last else {
            return Err(LedgerError::layout(
                &self.dir,
                "committed chunk without a range",
            ));
        };
        let count = entry_count(&cf.path, cf.first, last, cf.len)?;
        let file = File::open(&cf.path).map_err(|e| LedgerError::io(&cf.path, e))?;
        let header = pread(&file, &cf.path, 0, HEADER_LEN)?;
        check_header(&header, cf.first)
            .map_err(|r| LedgerError::corrupt(&cf.path, 0, None, Some(cf.first), r))?;
        let idx = index_beside(&cf.path, cf.first, last);
        let mut kept = None;
        if let Err(reason) = check_index_cheap(&idx, cf.first, last, cf.len, count) {
            tracing::warn!(chunk = %cf.path.display(), %reason, "rebuilding ledger index by scanning the chunk");
            let (offsets, _) = scan_closed_chunk(&cf.path, cf.len, cf.first, last, 0)?;
            if cf.read_only {
                // Never written into a read-only directory: keep it in memory.
                kept = Some(offsets);
            } else {
                match write_index(&self.dir, cf.first, last, cf.len, &offsets) {
                    Ok(()) => sync_dir(&self.dir)?,
                    Err(e) => tracing::warn!(error = %e, "could not write rebuilt ledger index"),
                }
            }
        }
        self.committed_seqno = last;
        self.chunks.push(Chunk {
            first: cf.first,
            last,
            kind: ChunkKind::Committed,
            path: cf.path,
            len: cf.len,
            offsets: kept,
            read_only: cf.read_only,
        });
        Ok(())
    }

    fn adopt_closed(&mut self, cf: ChunkFile) -> Result<(), LedgerError> {
        let Some(last) = cf.last else {
            return Err(LedgerError::layout(
                &self.dir,
                "closed chunk without a range",
            ));
        };
        let min_view = self.last_txid.map_or(0, |t| t.view.0);
        let (offsets, last_txid) = scan_closed_chunk(&cf.path, cf.len, cf.first, last, min_view)?;
        self.last_txid = Some(last_txid);
        self.chunks.push(Chunk {
            first: cf.first,
            last,
            kind: ChunkKind::Closed,
            path: cf.path,
            len: cf.len,
            offsets: Some(offsets),
            read_only: false,
        });
        Ok(())
    }

    /// Validates the open chunk, truncating a torn tail. Returns whether the
    /// directory changed (a half-created chunk was removed).
    fn adopt_open(
        &mut self,
        cf: ChunkFile,
        report: &mut RecoveryReport,
    ) -> Result<bool, LedgerError> {
        let path = cf.path;
        if cf.len < HEADER_LEN {
            tracing::warn!(file = %path.display(), bytes = cf.len, "removing half-created ledger chunk");
            fs::remove_file(&path).map_err(|e| LedgerError::io(&path, e))?;
            report.truncated_bytes += cf.len;
            return Ok(true);
        }
        let mut reader = ChunkReader::open(&path, cf.len)?;
        if let Err(e) = reader.read_header(cf.first) {
            // Created and extended, but its first write never reached the disk.
            if reader.rest_is_zero(0)? {
                tracing::warn!(file = %path.display(), bytes = cf.len, "removing never-written ledger chunk");
                fs::remove_file(&path).map_err(|e| LedgerError::io(&path, e))?;
                report.truncated_bytes += cf.len;
                return Ok(true);
            }
            return Err(e);
        }
        let mut offsets = Vec::new();
        let mut expected = cf.first;
        let mut view = self.last_txid.map_or(0, |t| t.view.0);
        let mut valid_len = HEADER_LEN;
        while let Some(frame) = reader.next_frame()? {
            let p = match frame {
                Ok(f) => {
                    check_sequence(&path, &f, expected, view, u64::MAX)?;
                    offsets.push(f.offset);
                    view = f.txid.view.0;
                    self.last_txid = Some(f.txid);
                    expected += 1;
                    valid_len = reader.pos();
                    continue;
                }
                Err(p) => p,
            };
            let torn = match (&p.error, p.end) {
                (FrameError::Incomplete { recorded: None, .. }, _) => true,
                (FrameError::Incomplete { .. }, _) => {
                    !later_frame_exists(&path, p.offset + 1, cf.len, expected + 1)?
                }
                (FrameError::BadChecksum { .. }, Some(end)) => reader.rest_is_zero(end)?,
                _ => false,
            };
            if !torn {
                return Err(p.error.to_corrupt(&path, p.offset, expected));
            }
            let cut = cf.len - p.offset;
            tracing::warn!(
                file = %path.display(),
                offset = p.offset,
                bytes = cut,
                seqno = expected,
                reason = %p.error.reason(),
                "truncating torn tail of ledger chunk"
            );
            report.truncated_bytes += cut;
            report.dropped_partial_entry = true;
            break;
        }
        let file = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| LedgerError::io(&path, e))?;
        if valid_len < cf.len {
            file.set_len(valid_len)
                .and_then(|()| file.sync_data())
                .map_err(|e| LedgerError::io(&path, e))?;
        }
        self.chunks.push(Chunk {
            first: cf.first,
            last: expected - 1,
            kind: ChunkKind::Open,
            path,
            len: valid_len,
            offsets: Some(offsets),
            read_only: false,
        });
        self.writer = Some(Writer {
            file: Some(Arc::new(file)),
            flushed: valid_len,
            pending: Vec::new(),
            unsynced: false,
        });
        Ok(false)
    }

    fn check_usable(&self) -> Result<(), LedgerError> {
        match &self.poisoned {
            Some(why) => Err(LedgerError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// Runs a multi-step mutation; any failure leaves disk and memory possibly
    /// out of step, so it poisons the ledger.
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Ledger) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let r = f(self);
        if let Err(e) = &r {
            self.poisoned = Some(e.to_string());
        }
        r
    }

    /// Appends one entry (buffered, not synced).
    ///
    /// `txid.seqno` must be `last_seqno() + 1` and the view must not decrease.
    /// Appending the signature entry that takes a chunk past the threshold
    /// closes it, which syncs that chunk so closed chunks are always whole.
    pub fn append(
        &mut self,
        txid: TxId,
        is_signature: bool,
        payload: &[u8],
    ) -> Result<(), LedgerError> {
        self.check_usable()?;
        let expected = self.last() + 1;
        if txid.seqno.0 != expected {
            return Err(LedgerError::OutOfOrder {
                expected,
                got: txid.seqno.0,
            });
        }
        let min_view = self.last_txid.map_or(1, |t| t.view.0.max(1));
        if txid.view.0 < min_view {
            return Err(LedgerError::BadView {
                seqno: expected,
                got: txid.view.0,
                min: min_view,
            });
        }
        if payload.len() as u64 > MAX_PAYLOAD_LEN {
            return Err(LedgerError::TooLarge {
                len: payload.len() as u64,
                max: MAX_PAYLOAD_LEN,
            });
        }
        if self.writer.is_none() {
            self.start_chunk(expected)?;
        }
        self.guarded(|l| {
            let (close, flush) = {
                let (Some(w), Some(c)) = (l.writer.as_mut(), l.chunks.last_mut()) else {
                    return Err(LedgerError::Poisoned("open chunk missing".into()));
                };
                c.offsets.get_or_insert_with(Vec::new).push(c.len);
                encode_frame(&mut w.pending, txid, is_signature, payload);
                c.len += frame_len(payload.len());
                c.last = expected;
                (
                    is_signature && c.len >= l.threshold,
                    w.pending.len() >= FLUSH_AT,
                )
            };
            l.last_txid = Some(txid);
            if flush {
                match l.flush() {
                    // Still buffered: the next sync writes it (or waits for space).
                    Err(e) if e.is_no_space() => {}
                    r => r?,
                }
            }
            if close && l.deferred_close {
                l.begin_close()?;
            } else if close {
                l.close_open_chunk()?;
            }
            Ok(())
        })
    }

    fn start_chunk(&mut self, first: u64) -> Result<(), LedgerError> {
        let path = self.dir.join(open_name(first));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| LedgerError::io(&path, e))?;
        self.chunks.push(Chunk {
            first,
            last: first - 1,
            kind: ChunkKind::Open,
            path,
            len: HEADER_LEN,
            offsets: Some(Vec::new()),
            read_only: false,
        });
        self.writer = Some(Writer {
            file: Some(Arc::new(file)),
            flushed: 0,
            pending: encode_header(first).to_vec(),
            unsynced: true,
        });
        self.dir_dirty = true;
        Ok(())
    }

    /// Writes buffered bytes of the open chunk to its file (no sync).
    fn flush(&mut self) -> Result<(), LedgerError> {
        let (Some(w), Some(c)) = (self.writer.as_mut(), self.chunks.last()) else {
            return Ok(());
        };
        let Some(file) = w.file.as_ref() else {
            // The chunk's file is created when the previous chunk's close completes.
            return Ok(());
        };
        if w.pending.is_empty() {
            return Ok(());
        }
        // Positioned writes: a failed attempt is simply redone at the same offset.
        file.write_all_at(&w.pending, w.flushed)
            .map_err(|e| LedgerError::io(&c.path, e))?;
        w.flushed += w.pending.len() as u64;
        w.unsynced = true;
        if w.pending.capacity() > 4 * FLUSH_AT {
            w.pending = Vec::new();
        } else {
            w.pending.clear();
        }
        Ok(())
    }

    /// Makes the open chunk whole on disk, renames it closed, syncs the directory.
    /// Without space for its last bytes the chunk stays open and closes at a later
    /// signature.
    fn close_open_chunk(&mut self) -> Result<(), LedgerError> {
        match self.flush() {
            Err(e) if e.is_no_space() => return Ok(()),
            r => r?,
        }
        let Some(c) = self.chunks.last_mut() else {
            return Ok(());
        };
        if let Some(file) = self.writer.as_ref().and_then(|w| w.file.as_ref()) {
            file.sync_data().map_err(|e| LedgerError::io(&c.path, e))?;
        }
        let new_path = self.dir.join(closed_name(c.first, c.last));
        fs::rename(&c.path, &new_path).map_err(|e| LedgerError::io(&new_path, e))?;
        c.path = new_path;
        c.kind = ChunkKind::Closed;
        let last = c.last;
        self.writer = None;
        sync_dir(&self.dir)?;
        self.dir_dirty = false;
        self.synced_seqno = self.synced_seqno.max(last);
        Ok(())
    }

    /// Ends the open chunk at the signature just appended: its bytes go to the
    /// file and it becomes the closing chunk; appends continue into a new chunk
    /// buffered in memory until a sync completes the close. No fsync here, so an
    /// append never waits for the disk, as long as syncs come more often than
    /// chunk closes (the node's group-commit loop); otherwise the previous close
    /// is completed here first, which keeps chunk sizes and buffers bounded.
    fn begin_close(&mut self) -> Result<(), LedgerError> {
        self.complete_close()?;
        match self.flush() {
            // Its last bytes cannot be written yet: the chunk stays open and closes
            // at a later signature (nothing buffered is handed over unwritten).
            Err(e) if e.is_no_space() => return Ok(()),
            r => r?,
        }
        let Some(file) = self.writer.as_ref().and_then(|w| w.file.clone()) else {
            return Ok(());
        };
        let Some(c) = self.chunks.last_mut() else {
            return Err(LedgerError::Poisoned("open chunk missing".into()));
        };
        let closed_path = self.dir.join(closed_name(c.first, c.last));
        self.closing = Some(Closing {
            first: c.first,
            file,
            open_path: c.path.clone(),
            closed_path,
        });
        c.kind = ChunkKind::Closed;
        let first = c.last + 1;
        self.chunks.push(Chunk {
            first,
            last: first - 1,
            kind: ChunkKind::Open,
            path: self.dir.join(open_name(first)),
            len: HEADER_LEN,
            offsets: Some(Vec::new()),
            read_only: false,
        });
        self.writer = Some(Writer {
            file: None,
            flushed: 0,
            pending: encode_header(first).to_vec(),
            unsynced: true,
        });
        Ok(())
    }

    /// Completes a pending close now (fsync and rename of the closing chunk, the
    /// next chunk's file created and written), if there is one.
    fn complete_close(&mut self) -> Result<(), LedgerError> {
        if let Some(closing) = self.closing.clone() {
            SyncTicket {
                closing: Some(closing.clone()),
                file: None,
                dir: None,
                upto: 0,
                epoch: self.epoch,
            }
            .run()?;
            self.finish_close(&closing)?;
        }
        Ok(())
    }

    /// Group commit: makes every appended entry durable (the open chunk's
    /// fdatasync, plus closing a chunk or syncing the directory when needed).
    pub fn sync(&mut self) -> Result<(), LedgerError> {
        loop {
            let ticket = self.prepare_sync()?;
            let result = ticket.run();
            self.complete_sync(ticket, result)?;
            // A completed close creates the next chunk's file: sync that too.
            if self.synced_seqno >= self.last() && !self.dir_dirty {
                return Ok(());
            }
        }
    }

    /// First half of a sync that runs outside the caller's lock: writes buffered
    /// appends to the file and returns what must be fdatasynced. Run it with
    /// [`SyncTicket::run`] (no access to the ledger needed), then hand the result to
    /// [`Ledger::complete_sync`]. Appends may continue in between; they are not
    /// covered by this ticket.
    pub fn prepare_sync(&mut self) -> Result<SyncTicket, LedgerError> {
        self.check_usable()?;
        // Positioned writes of buffered bytes change nothing when they fail for lack
        // of space (the buffer and its offset stay): say so without poisoning, and
        // the caller tries again once space returns. Any other failure poisons.
        match self.flush() {
            Err(e) if e.is_no_space() => return Err(e),
            Err(e) => {
                self.poisoned = Some(e.to_string());
                return Err(e);
            }
            Ok(()) => {}
        }
        self.guarded(|l| {
            l.flush()?;
            let mut ticket = SyncTicket {
                closing: l.closing.clone(),
                file: None,
                dir: None,
                upto: l.last(),
                epoch: l.epoch,
            };
            if let (Some(w), Some(c)) = (l.writer.as_mut(), l.chunks.last()) {
                match &w.file {
                    Some(file) if w.unsynced => {
                        ticket.file = Some((file.clone(), c.path.clone()));
                        w.unsynced = false;
                    }
                    Some(_) => {}
                    // Buffered in memory only: not durable until a later ticket.
                    None => ticket.upto = c.first - 1,
                }
            }
            if l.dir_dirty {
                ticket.dir = Some(l.dir.clone());
                l.dir_dirty = false;
            }
            l.tickets_out += 1;
            Ok(ticket)
        })
    }

    /// Second half of [`Ledger::prepare_sync`]: on success everything the ticket
    /// covers is durable, a closing chunk is now closed and the next chunk's file
    /// exists (written, not yet synced); a failed sync poisons the ledger (the page
    /// cache may have dropped the data, so nothing after it can be trusted).
    pub fn complete_sync(
        &mut self,
        ticket: SyncTicket,
        result: Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        self.tickets_out = self.tickets_out.saturating_sub(1);
        self.check_usable()?;
        self.guarded(|l| {
            result?;
            if ticket.epoch != l.epoch {
                return Ok(());
            }
            if let Some(done) = &ticket.closing {
                if l.closing.as_ref().is_some_and(|c| c.first == done.first) {
                    l.finish_close(done)?;
                }
            }
            l.synced_seqno = l.synced_seqno.max(ticket.upto.min(l.last()));
            Ok(())
        })
    }

    /// The closing chunk is durable and renamed: record that, then give the
    /// chunk after it its file and write what was buffered for it.
    fn finish_close(&mut self, done: &Closing) -> Result<(), LedgerError> {
        self.closing = None;
        if let Some(c) = self.chunks.iter_mut().rev().find(|c| c.first == done.first) {
            c.path = done.closed_path.clone();
        }
        let (Some(w), Some(c)) = (self.writer.as_mut(), self.chunks.last()) else {
            return Ok(());
        };
        if w.file.is_none() {
            let file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&c.path)
                .map_err(|e| LedgerError::io(&c.path, e))?;
            w.file = Some(Arc::new(file));
            w.unsynced = true;
            self.dir_dirty = true;
            match self.flush() {
                // The file exists and its bytes stay buffered for the next sync.
                Err(e) if e.is_no_space() => {}
                r => r?,
            }
        }
        Ok(())
    }

    /// A chunk close waits for the next sync (appends meanwhile buffer in memory).
    pub fn close_pending(&self) -> bool {
        self.closing.is_some()
    }

    /// Bytes an unprivileged writer may still use on the ledger's file system: the
    /// engine refuses new transactions before this runs out, so a full disk is a
    /// refusal, not a failed write that would poison the ledger.
    pub fn free_bytes(&self) -> Result<u64, LedgerError> {
        let st = rustix::fs::statvfs(&self.dir)
            .map_err(|e| LedgerError::io(&self.dir, std::io::Error::from(e)))?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Last seqno known durable.
    pub fn synced_seqno(&self) -> SeqNo {
        SeqNo(self.synced_seqno)
    }

    /// Seqno of the last appended entry; when there is none, the base seqno
    /// (0 for a full ledger, the snapshot's seqno for one that continues it).
    pub fn last_seqno(&self) -> SeqNo {
        SeqNo(self.last())
    }

    fn last(&self) -> u64 {
        self.last_txid.map_or(self.base, |t| t.seqno.0)
    }

    /// TxId of the last appended entry, else the `start_after` TxId (if given).
    pub fn last_txid(&self) -> Option<TxId> {
        self.last_txid
    }

    /// Seqno of the first entry this ledger can hold: 1, or `base + 1` for a
    /// ledger that continues a snapshot.
    pub fn first_seqno(&self) -> SeqNo {
        SeqNo(self.base + 1)
    }

    /// First seqno of the first chunk file in `dir` (after checking the layout),
    /// `None` when there is no chunk or no directory: lets a caller pick the
    /// snapshot a ledger continues before opening it.
    pub fn first_seqno_on_disk(dir: &Path) -> Result<Option<SeqNo>, LedgerError> {
        Self::first_seqno_on_disk_in(dir, &[])
    }

    /// [`Ledger::first_seqno_on_disk`] for a ledger opened with
    /// [`LedgerConfig::read_only_dirs`]: archived chunks count, so an archived
    /// history is not mistaken for a ledger that continues a snapshot. A missing
    /// `dir` holds nothing; a missing read-only directory is an error.
    pub fn first_seqno_on_disk_in(
        dir: &Path,
        read_only_dirs: &[PathBuf],
    ) -> Result<Option<SeqNo>, LedgerError> {
        let main = match fs::metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Listing::default(),
            Err(e) => return Err(LedgerError::io(dir, e)),
            Ok(m) if !m.is_dir() => return Err(LedgerError::layout(dir, "not a directory")),
            Ok(_) => return Ok(first_of(&list_dirs(dir, read_only_dirs)?)),
        };
        Ok(first_of(&merge_read_only(dir, main, read_only_dirs)?))
    }

    fn check_held(&self, seqno: u64) -> Result<(), LedgerError> {
        check_held(self.base, seqno)
    }

    /// Highest seqno known committed: the end of the last `.committed` chunk
    /// at open, raised by [`Ledger::commit`] (not persisted beyond chunk names).
    pub fn committed_seqno(&self) -> SeqNo {
        SeqNo(self.committed_seqno)
    }

    /// The ledger directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A reader of this ledger's committed chunks that needs neither `&Ledger`
    /// nor any lock the ledger takes to append, sync or commit, so historical
    /// reads can run while the ledger (and whatever lock guards it) keeps
    /// writing. The ledger keeps every reader's view of its committed chunks up
    /// to date (commits, archives); entries not yet in a committed chunk are
    /// [`LedgerError::NotInCommittedChunk`] (read them through the ledger).
    /// Each call starts a new cache of file handles and indexes, shared by the
    /// reader's clones; make one and clone it rather than calling this per read.
    pub fn reader(&self) -> LedgerReader {
        LedgerReader::new(self.base, self.committed_view.clone())
    }

    fn view_mut(&self) -> std::sync::RwLockWriteGuard<'_, CommittedView> {
        self.committed_view
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn find_chunk(&self, seqno: u64) -> Option<&Chunk> {
        let p = self.chunks.partition_point(|c| c.first <= seqno);
        let c = self.chunks.get(p.checked_sub(1)?)?;
        (seqno >= c.first && seqno <= c.last).then_some(c)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, ReadCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open_for_read(c: &Chunk) -> Result<Arc<File>, LedgerError> {
        File::open(&c.path)
            .map(Arc::new)
            .map_err(|e| LedgerError::io(&c.path, e))
    }

    /// Read handle of a closed chunk.
    fn closed_file(&self, c: &Chunk) -> Result<Arc<File>, LedgerError> {
        if let Some(hit) = self.cache().get(c.first) {
            return Ok(hit.file.clone());
        }
        let file = Self::open_for_read(c)?;
        self.cache().put(Cached {
            first: c.first,
            path: c.path.clone(),
            file: file.clone(),
            offsets: None,
        });
        Ok(file)
    }

    /// Read handle and index of a committed chunk, loading (or rebuilding) the index.
    fn committed_file(&self, c: &Chunk) -> Result<(Arc<File>, Arc<Vec<u64>>), LedgerError> {
        let cached = self.cache().get(c.first).cloned();
        if let Some(Cached {
            file,
            offsets: Some(o),
            ..
        }) = &cached
        {
            return Ok((file.clone(), o.clone()));
        }
        let file = match cached {
            Some(hit) => hit.file,
            None => Self::open_for_read(c)?,
        };
        let offsets = Arc::new(self.load_index(c)?);
        self.cache().put(Cached {
            first: c.first,
            path: c.path.clone(),
            file: file.clone(),
            offsets: Some(offsets.clone()),
        });
        Ok((file, offsets))
    }

    fn load_index(&self, c: &Chunk) -> Result<Vec<u64>, LedgerError> {
        let rewrite_in = (!c.read_only).then_some(self.dir.as_path());
        load_committed_index(&c.path, c.first, c.last, c.len, rewrite_in)
    }

    /// Bytes `[start, end)` of the open chunk, from its file and/or the write buffer.
    fn open_bytes(&self, c: &Chunk, start: u64, end: u64) -> Result<Vec<u8>, LedgerError> {
        let Some(w) = self.writer.as_ref() else {
            return Err(LedgerError::NotFound(SeqNo(c.last)));
        };
        let split = end.min(w.flushed).max(start);
        let mut buf = if split > start {
            let Some(file) = &w.file else {
                return Err(LedgerError::corrupt(
                    &c.path,
                    start,
                    None,
                    None,
                    "chunk has no file yet",
                ));
            };
            pread(file, &c.path, start, split - start)?
        } else {
            Vec::new()
        };
        if end > split {
            let from = (split - w.flushed) as usize;
            let to = (end - w.flushed) as usize;
            let part = w.pending.get(from..to).ok_or_else(|| {
                LedgerError::corrupt(&c.path, split, None, None, "frame beyond buffered data")
            })?;
            buf.extend_from_slice(part);
        }
        Ok(buf)
    }

    /// Reads one entry through the chunk index (no scan), verifying its checksum.
    /// Sees entries appended but not yet synced.
    pub fn read(&self, seqno: SeqNo) -> Result<Entry, LedgerError> {
        let seqno = seqno.0;
        self.check_held(seqno)?;
        let c = self
            .find_chunk(seqno)
            .ok_or(LedgerError::NotFound(SeqNo(seqno)))?;
        let i = (seqno - c.first) as usize;
        let (offset, buf) = match (&c.offsets, c.kind) {
            (Some(offs), kind) => {
                let (offset, end) = frame_span(&c.path, offs, i, c.len, seqno)?;
                let buf = if kind == ChunkKind::Open {
                    self.open_bytes(c, offset, end)?
                } else {
                    let file = match &self.closing {
                        // Being renamed outside the lock: read through the handle.
                        Some(cl) if cl.first == c.first => cl.file.clone(),
                        _ => self.closed_file(c)?,
                    };
                    pread(&file, &c.path, offset, end - offset)?
                };
                (offset, buf)
            }
            (None, _) => {
                let (file, offs) = self.committed_file(c)?;
                let (offset, end) = frame_span(&c.path, &offs, i, c.len, seqno)?;
                (offset, pread(&file, &c.path, offset, end - offset)?)
            }
        };
        entry_at(&c.path, offset, seqno, &buf)
    }

    /// Entries `from..=to` in order; stops after the first error. An empty
    /// range (`from > to`) yields nothing; a range past the end is `NotFound`.
    pub fn read_range(
        &self,
        from: SeqNo,
        to: SeqNo,
    ) -> Result<impl Iterator<Item = Result<Entry, LedgerError>> + '_, LedgerError> {
        if from <= to {
            self.check_held(from.0)?;
            if to > self.last_seqno() {
                return Err(LedgerError::NotFound(to));
            }
        }
        let mut next = from;
        let mut done = from > to;
        Ok(std::iter::from_fn(move || {
            if done {
                return None;
            }
            let r = self.read(next);
            done = r.is_err() || next >= to;
            next = next.plus(1);
            Some(r)
        }))
    }

    /// Marks everything up to `seqno` committed: closed chunks entirely at or
    /// below it get their index and are renamed `.committed`, durably.
    /// Refused beyond the last synced seqno; lower values are a no-op.
    pub fn commit(&mut self, seqno: SeqNo) -> Result<(), LedgerError> {
        let seqno = seqno.0;
        self.check_usable()?;
        if seqno > self.synced_seqno {
            return Err(LedgerError::NotSynced {
                requested: SeqNo(seqno),
                synced: self.synced_seqno(),
            });
        }
        if seqno <= self.committed_seqno {
            return Ok(());
        }
        self.guarded(|l| {
            let mut renamed = Vec::new();
            for c in l.chunks.iter_mut() {
                if c.kind != ChunkKind::Closed || c.last > seqno {
                    continue;
                }
                let offsets = c.offsets.as_deref().unwrap_or_default();
                match write_index(&l.dir, c.first, c.last, c.len, offsets) {
                    // The index is rebuilt by a scan when it is missing.
                    Err(e) if e.is_no_space() => {
                        tracing::warn!(error = %e, "no space for a ledger index; it will be rebuilt when needed");
                    }
                    r => r?,
                }
                let new_path = l.dir.join(committed_name(c.first, c.last));
                fs::rename(&c.path, &new_path).map_err(|e| LedgerError::io(&new_path, e))?;
                c.path = new_path;
                c.kind = ChunkKind::Committed;
                c.offsets = None;
                renamed.push(c.committed());
            }
            if !renamed.is_empty() {
                sync_dir(&l.dir)?;
                // Readers see a chunk once its committed name is durable; its
                // offsets they load from the index just written.
                l.view_mut().chunks.extend(renamed);
            }
            l.committed_seqno = seqno;
            Ok(())
        })
    }

    /// The last seqno of the oldest committed chunk still in the main directory
    /// that ends before `before`: archiving up to it (`archive(end + 1, ..)`)
    /// moves exactly one chunk, so a caller holding a lock around the ledger can
    /// archive a long history a chunk at a time.
    pub fn next_archivable(&self, before: SeqNo) -> Option<SeqNo> {
        self.chunks
            .iter()
            .take_while(|c| c.kind == ChunkKind::Committed && c.last < before.0)
            .find(|c| !c.read_only)
            .map(|c| SeqNo(c.last))
    }

    /// Moves every committed chunk that ends before `before` and still lives in
    /// the main directory, with its index, into `to` (created if missing), so the
    /// ledger's disk holds only recent history while the rest stays readable.
    ///
    /// Crash-safe and cross-filesystem, chunk by chunk, oldest first: copy to a
    /// temporary name in `to`, fsync, rename, write the index beside it, fsync
    /// `to`; only then remove the main copy (and index) and fsync the main
    /// directory. A crash leaves at most one chunk in both places, which opens
    /// fine (the main copy is used). Reads use the new location at once (cached
    /// handles are dropped). Open and closed (uncommitted) chunks never move.
    ///
    /// Put `to` in [`LedgerConfig::read_only_dirs`] for every later open (and in
    /// [`ChunkScanner::open_with`](crate::ChunkScanner::open_with) for audits):
    /// without it the ledger starts at the first chunk left in the main
    /// directory, as if it continued a snapshot there, and archived seqnos read
    /// as [`LedgerError::BeforeStart`]. On an error, chunks moved so far stay
    /// moved and the ledger stays usable; calling again finishes the job.
    pub fn archive(&mut self, before: SeqNo, to: &Path) -> Result<ArchiveReport, LedgerError> {
        self.check_usable()?;
        fs::create_dir_all(to).map_err(|e| LedgerError::io(to, e))?;
        let to = fs::canonicalize(to).map_err(|e| LedgerError::io(to, e))?;
        let main = fs::canonicalize(&self.dir).map_err(|e| LedgerError::io(&self.dir, e))?;
        if to == main {
            return Err(LedgerError::layout(
                &self.dir,
                format!(
                    "cannot archive into the ledger directory itself ({})",
                    to.display()
                ),
            ));
        }
        let mut report = ArchiveReport::default();
        for i in 0..self.chunks.len() {
            let Some(c) = self.chunks.get(i) else { break };
            // Committed chunks are a prefix, in seqno order.
            if c.kind != ChunkKind::Committed || c.last >= before.0 {
                break;
            }
            if c.read_only {
                continue;
            }
            let offsets = match &c.offsets {
                Some(o) => o.clone(),
                None => match self.cache().get(c.first).and_then(|h| h.offsets.clone()) {
                    Some(o) => o.to_vec(),
                    None => self.load_index(c)?,
                },
            };
            let dest = copy_chunk_into(c, &offsets, &to)?;
            let (first, last, len) = (c.first, c.last, c.len);
            // Readers move to the durable archived copy before the main one goes
            // (one that still opens the old path retries; see LedgerReader::read).
            if let Some(v) = self.view_mut().chunk_mut(first) {
                v.path = dest.clone();
            }
            // Until this succeeds the main copy stays in use (and a retry copies
            // it again); from then on only the archived copy exists.
            fs::remove_file(&c.path).map_err(|e| LedgerError::io(&c.path, e))?;
            let Some(c) = self.chunks.get_mut(i) else {
                break;
            };
            let old = std::mem::replace(&mut c.path, dest);
            c.read_only = true;
            c.offsets = None;
            self.cache().forget(first);
            // An index left behind is removed as an orphan at the next open.
            let idx = index_beside(&old, first, last);
            match fs::remove_file(&idx) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(LedgerError::io(&idx, e))
                }
                _ => {}
            }
            sync_dir(&self.dir)?;
            report.chunks += 1;
            report.bytes += len;
        }
        report.upto = SeqNo(
            self.chunks
                .iter()
                .take_while(|c| c.read_only)
                .last()
                .map_or(self.base, |c| c.last),
        );
        if report.chunks > 0 {
            tracing::info!(chunks = report.chunks, bytes = report.bytes, upto = %report.upto, to = %to.display(), "archived committed ledger chunks");
        }
        Ok(report)
    }

    /// Drops every entry after `seqno` (rolling back an uncommitted suffix),
    /// durably. Refused below [`Ledger::committed_seqno`] (never below the base of a
    /// ledger that continues a snapshot); a no-op at or past the end.
    /// Cuts the entries after `seqno` when they are all still in the open chunk's
    /// write buffer: nothing touches the disk, so this works on a full disk (a
    /// primary whose proposal Raft dropped undoes its append this way). Returns
    /// false, changing nothing, when the cut reaches bytes already written.
    fn truncate_buffered(&mut self, seqno: u64) -> bool {
        let (Some(w), Some(c)) = (self.writer.as_mut(), self.chunks.last_mut()) else {
            return false;
        };
        if c.kind != ChunkKind::Open || c.first > seqno || c.last <= seqno {
            return false;
        }
        let keep = (seqno - c.first + 1) as usize;
        let Some(new_len) = c.offsets.as_ref().and_then(|o| o.get(keep).copied()) else {
            return false;
        };
        if new_len < w.flushed {
            return false;
        }
        w.pending.truncate((new_len - w.flushed) as usize);
        if let Some(o) = c.offsets.as_mut() {
            o.truncate(keep);
        }
        c.last = seqno;
        c.len = new_len;
        true
    }

    pub fn truncate(&mut self, seqno: SeqNo) -> Result<(), LedgerError> {
        let seqno = seqno.0;
        self.check_usable()?;
        if seqno < self.committed_seqno {
            return Err(LedgerError::BelowCommitted {
                requested: SeqNo(seqno),
                committed: self.committed_seqno(),
            });
        }
        if seqno >= self.last() {
            return Ok(());
        }
        if self.tickets_out > 0 {
            return Err(LedgerError::SyncInFlight);
        }
        if self.closing.is_some() {
            // Settle the in-flight close first, so only the usual states remain.
            self.sync()?;
        }
        let r = self.guarded(|l| l.truncate_inner(seqno));
        // Committed chunks are never cut (truncate_written refuses); should one
        // ever be, readers must not keep serving it.
        self.view_mut().chunks.retain(|c| c.last <= seqno);
        r
    }

    fn truncate_inner(&mut self, seqno: u64) -> Result<(), LedgerError> {
        // Entries only in the write buffer are cut there (what stays may not be
        // synced yet); otherwise on disk, synced.
        let synced = if self.truncate_buffered(seqno) {
            self.cache().clear();
            self.synced_seqno.min(seqno)
        } else {
            self.truncate_written(seqno)?;
            seqno
        };
        self.last_txid = if seqno == self.base {
            self.base_txid
        } else {
            Some(self.read(SeqNo(seqno))?.txid)
        };
        self.synced_seqno = synced;
        self.epoch += 1;
        Ok(())
    }

    /// Cuts the ledger files after `seqno` (whole chunks removed, the last one cut
    /// and synced).
    fn truncate_written(&mut self, seqno: u64) -> Result<(), LedgerError> {
        self.flush()?;
        self.cache().clear();
        let mut dir_changed = false;
        // Newest first, so every intermediate state is contiguous.
        while let Some(c) = self.chunks.last() {
            if c.first <= seqno {
                break;
            }
            if c.kind == ChunkKind::Committed {
                return Err(LedgerError::BelowCommitted {
                    requested: SeqNo(seqno),
                    committed: SeqNo(c.last),
                });
            }
            if c.kind == ChunkKind::Open {
                self.writer = None;
            }
            fs::remove_file(&c.path).map_err(|e| LedgerError::io(&c.path, e))?;
            self.chunks.pop();
            dir_changed = true;
        }
        if let Some(c) = self.chunks.last_mut() {
            if c.last > seqno {
                let keep = (seqno - c.first + 1) as usize;
                let new_len = c
                    .offsets
                    .as_ref()
                    .and_then(|o| o.get(keep).copied())
                    .ok_or_else(|| {
                        LedgerError::corrupt(&c.path, 0, None, Some(seqno + 1), "no index entry")
                    })?;
                if c.kind == ChunkKind::Closed {
                    // Reopen before cutting: a crash in between leaves a valid open chunk.
                    let new_path = self.dir.join(open_name(c.first));
                    fs::rename(&c.path, &new_path).map_err(|e| LedgerError::io(&new_path, e))?;
                    sync_dir(&self.dir)?;
                    c.path = new_path;
                    c.kind = ChunkKind::Open;
                    let file = File::options()
                        .read(true)
                        .write(true)
                        .open(&c.path)
                        .map_err(|e| LedgerError::io(&c.path, e))?;
                    self.writer = Some(Writer {
                        file: Some(Arc::new(file)),
                        flushed: c.len,
                        pending: Vec::new(),
                        unsynced: false,
                    });
                }
                let Some(w) = self.writer.as_mut() else {
                    return Err(LedgerError::Poisoned("open chunk missing".into()));
                };
                let Some(file) = &w.file else {
                    return Err(LedgerError::Poisoned("open chunk has no file".into()));
                };
                file.set_len(new_len)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| LedgerError::io(&c.path, e))?;
                w.flushed = new_len;
                w.pending.clear();
                w.unsynced = false;
                if let Some(o) = c.offsets.as_mut() {
                    o.truncate(keep);
                }
                c.last = seqno;
                c.len = new_len;
            }
        }
        if dir_changed || self.dir_dirty {
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        Ok(())
    }
}

/// Pending fdatasync work taken from a [`Ledger`] by [`Ledger::prepare_sync`].
#[derive(Debug)]
#[must_use = "a prepared sync does nothing until run and completed"]
pub struct SyncTicket {
    closing: Option<Closing>,
    file: Option<(Arc<File>, PathBuf)>,
    dir: Option<PathBuf>,
    upto: u64,
    epoch: u64,
}

impl SyncTicket {
    /// Seqno that is durable once this ticket has run.
    pub fn upto(&self) -> SeqNo {
        SeqNo(self.upto)
    }

    /// Nothing to sync: every entry it covers was already durable.
    pub fn is_empty(&self) -> bool {
        self.closing.is_none() && self.file.is_none() && self.dir.is_none()
    }

    /// The blocking part: fdatasync of a closing chunk (then its rename to the
    /// closed name), of the open chunk, and of the directory when it changed.
    pub fn run(&self) -> Result<(), LedgerError> {
        if let Some(c) = &self.closing {
            c.file
                .sync_data()
                .map_err(|e| LedgerError::io(&c.open_path, e))?;
            if let Err(e) = fs::rename(&c.open_path, &c.closed_path) {
                // Another ticket (a concurrent full sync) may have closed it already.
                if !(e.kind() == std::io::ErrorKind::NotFound && c.closed_path.exists()) {
                    return Err(LedgerError::io(&c.closed_path, e));
                }
            }
        }
        if let Some((file, path)) = &self.file {
            file.sync_data().map_err(|e| LedgerError::io(path, e))?;
        }
        let dir = self
            .dir
            .as_deref()
            .or_else(|| self.closing.as_ref().and_then(|c| c.closed_path.parent()));
        if let Some(dir) = dir {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

impl Drop for Ledger {
    /// Hands buffered appends to the OS (not synced) so a clean shutdown
    /// without `sync` does not needlessly lose them. A chunk still closing is
    /// closed first: until then the chunk after it has no file, and what was
    /// appended to it would be dropped with the buffer.
    fn drop(&mut self) {
        if self.poisoned.is_some() {
            return;
        }
        if let Err(e) = self.complete_close() {
            tracing::warn!(error = %e, "could not close a ledger chunk on drop");
            return;
        }
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "could not flush ledger on drop");
        }
    }
}
