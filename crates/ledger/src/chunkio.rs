//! Reading committed chunk files: what the [`Ledger`](crate::Ledger) and its
//! [`LedgerReader`](crate::LedgerReader)s share (entries, positioned reads,
//! on-disk indexes, a small cache of open handles), so neither depends on the
//! other.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use covenant_types::{SeqNo, TxId};

use crate::error::LedgerError;
use crate::format::{
    check_index_prefix, decode_frame, decode_index, entry_count, index_len, index_name,
    scan_closed_chunk, FRAME_OVERHEAD, INDEX_PREFIX_LEN, MAX_FRAME_LEN, TMP_SUFFIX,
};

/// Committed/closed chunks whose file handle and index stay cached for reads: 128
/// default-size chunks are ~600 K entries (~5 MB of offsets, 128 descriptors), so
/// random reads over recent history do not reload an index per read.
const CACHED_CHUNKS: usize = 128;

/// One ledger entry: an opaque serialized transaction and where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub txid: TxId,
    /// Set for signature transactions; chunks only close after one.
    pub is_signature: bool,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub(crate) first: u64,
    /// The path `file` was opened at: a [`LedgerReader`] compares it with the
    /// chunk's current path, since an archive moves chunks under it.
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<File>,
    pub(crate) offsets: Option<Arc<Vec<u64>>>,
}

/// Small FIFO cache of read handles (and indexes) for closed and committed chunks.
#[derive(Debug, Default)]
pub(crate) struct ReadCache {
    entries: VecDeque<Cached>,
}

impl ReadCache {
    pub(crate) fn get(&self, first: u64) -> Option<&Cached> {
        self.entries.iter().find(|c| c.first == first)
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    pub(crate) fn forget(&mut self, first: u64) {
        self.entries.retain(|c| c.first != first);
    }

    pub(crate) fn put(&mut self, entry: Cached) {
        self.entries.retain(|c| c.first != entry.first);
        if self.entries.len() >= CACHED_CHUNKS {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }
}

pub(crate) fn pread(
    file: &File,
    path: &Path,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, LedgerError> {
    if len > MAX_FRAME_LEN {
        return Err(LedgerError::corrupt(
            path,
            offset,
            None,
            None,
            format!("refusing to read {len} bytes: larger than any frame"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            LedgerError::corrupt(
                path,
                offset,
                None,
                None,
                "chunk file is shorter than expected",
            )
        } else {
            LedgerError::io(path, e)
        }
    })?;
    Ok(buf)
}

/// The index file of a committed chunk: always in the chunk's own directory.
pub(crate) fn index_beside(chunk: &Path, first: u64, last: u64) -> PathBuf {
    chunk.with_file_name(index_name(first, last))
}

/// Entries `1..=base` are not in a ledger that continues a snapshot at `base`
/// (they are in the snapshot); seqno 0 never exists.
pub(crate) fn check_held(base: u64, seqno: u64) -> Result<(), LedgerError> {
    if seqno == 0 {
        return Err(LedgerError::NotFound(SeqNo::ZERO));
    }
    if seqno <= base {
        return Err(LedgerError::BeforeStart {
            seqno: SeqNo(seqno),
            first: SeqNo(base + 1),
        });
    }
    Ok(())
}

/// The frame offsets of the committed chunk at `path` (`first..=last`, `len`
/// bytes), from its index file, fully validated. An unusable index is rebuilt by
/// scanning the chunk (logged); the rebuilt index is written back only when
/// `rewrite_in` names the chunk's directory (the ledger's own, writable one), so
/// read-only directories and [`LedgerReader`]s, which must not race the ledger's
/// own writes, keep it in memory instead.
pub(crate) fn load_committed_index(
    path: &Path,
    first: u64,
    last: u64,
    len: u64,
    rewrite_in: Option<&Path>,
) -> Result<Vec<u64>, LedgerError> {
    let count = entry_count(path, first, last, len)?;
    let idx = index_beside(path, first, last);
    match read_index(&idx, first, last, len, count) {
        Ok(o) => Ok(o),
        Err(reason) => {
            tracing::warn!(chunk = %path.display(), %reason, "rebuilding ledger index by scanning the chunk");
            let (offsets, _) = scan_closed_chunk(path, len, first, last, 0)?;
            if let Some(dir) = rewrite_in {
                if let Err(e) =
                    write_index(dir, first, last, len, &offsets).and_then(|()| sync_dir(dir))
                {
                    tracing::warn!(error = %e, "could not write rebuilt ledger index");
                }
            }
            Ok(offsets)
        }
    }
}

/// Where entry `seqno`, the `i`-th of a chunk of `chunk_len` bytes, lies by the
/// chunk's frame `offsets`: `[offset, end)`, at least a frame's overhead long.
pub(crate) fn frame_span(
    path: &Path,
    offsets: &[u64],
    i: usize,
    chunk_len: u64,
    seqno: u64,
) -> Result<(u64, u64), LedgerError> {
    let missing = || LedgerError::corrupt(path, 0, None, Some(seqno), "no index entry for seqno");
    let offset = *offsets.get(i).ok_or_else(missing)?;
    let end = offsets.get(i + 1).copied().unwrap_or(chunk_len);
    if end < offset.saturating_add(FRAME_OVERHEAD) {
        return Err(missing());
    }
    Ok((offset, end))
}

/// The entry in `buf`, the bytes the index gives for `seqno` at `offset` of
/// `path`: its checksum verified, and it must be exactly that seqno's frame.
pub(crate) fn entry_at(
    path: &Path,
    offset: u64,
    seqno: u64,
    buf: &[u8],
) -> Result<Entry, LedgerError> {
    let f = decode_frame(buf).map_err(|e| e.to_corrupt(path, offset, seqno))?;
    if f.txid.seqno.0 != seqno {
        return Err(LedgerError::corrupt(
            path,
            offset,
            None,
            Some(seqno),
            format!(
                "frame holds seqno {} where {seqno} was expected",
                f.txid.seqno.0
            ),
        ));
    }
    if f.size != buf.len() as u64 {
        return Err(LedgerError::corrupt(
            path,
            offset,
            Some(f.txid),
            Some(seqno),
            format!("frame is {} bytes but the index says {}", f.size, buf.len()),
        ));
    }
    Ok(Entry {
        txid: f.txid,
        is_signature: f.is_signature,
        payload: f.payload.to_vec(),
    })
}

/// Reads and fully validates an index; the error is why it cannot be used.
pub(crate) fn read_index(
    path: &Path,
    first: u64,
    last: u64,
    chunk_len: u64,
    count: u64,
) -> Result<Vec<u64>, String> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot stat: {e}"))?;
    // `count` is bounded by the chunk's real length (entry_count), so this is too.
    let want = index_len(count);
    if meta.len() != want {
        return Err(format!("index is {} bytes, expected {want}", meta.len()));
    }
    let bytes = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    decode_index(&bytes, first, last, chunk_len)
}

/// Cheap open-time check of an index: size and prefix only.
pub(crate) fn check_index_cheap(
    path: &Path,
    first: u64,
    last: u64,
    chunk_len: u64,
    count: u64,
) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    if len != index_len(count) {
        return Err(format!(
            "index is {len} bytes, expected {}",
            index_len(count)
        ));
    }
    let mut prefix = [0u8; INDEX_PREFIX_LEN as usize];
    file.read_exact_at(&mut prefix, 0)
        .map_err(|e| format!("cannot read: {e}"))?;
    check_index_prefix(&prefix, first, last, chunk_len)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LedgerError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LedgerError::io(dir, e))
}

/// Writes a committed chunk's index via a temporary file and rename. The
/// caller syncs the directory.
pub(crate) fn write_index(
    dir: &Path,
    first: u64,
    last: u64,
    chunk_len: u64,
    offsets: &[u64],
) -> Result<(), LedgerError> {
    let path = dir.join(index_name(first, last));
    let tmp = dir.join(format!("{}{TMP_SUFFIX}", index_name(first, last)));
    let bytes = crate::format::encode_index(first, last, chunk_len, offsets);
    File::create(&tmp)
        .and_then(|f| {
            f.write_all_at(&bytes, 0)?;
            f.sync_data()
        })
        .map_err(|e| LedgerError::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| LedgerError::io(&path, e))
}
