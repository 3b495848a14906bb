//! On-disk encodings (chunk header, entry frame, index file), file names, and
//! the sequential frame reader shared by recovery, index rebuilds and audits.
//! Every decoder here is total: any input yields a value or an error, and no
//! length read from disk is allocated before it has been bounded.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use covenant_types::TxId;

use crate::error::LedgerError;

/// Largest payload accepted on write or read (256 MiB).
pub const MAX_PAYLOAD_LEN: u64 = 256 * 1024 * 1024;

pub(crate) const CHUNK_MAGIC: &[u8; 8] = b"CVNTLDG1";
pub(crate) const INDEX_MAGIC: &[u8; 8] = b"CVNTIDX1";
/// magic (8) + first seqno (8) + crc32c (4).
pub(crate) const HEADER_LEN: u64 = 20;
/// len (4) + view (8) + seqno (8) + flags (1).
pub(crate) const FRAME_HEADER_LEN: usize = 21;
/// Frame header plus trailing crc32c.
pub(crate) const FRAME_OVERHEAD: u64 = FRAME_HEADER_LEN as u64 + 4;
pub(crate) const MAX_FRAME_LEN: u64 = MAX_PAYLOAD_LEN + FRAME_OVERHEAD;
/// magic (8) + first (8) + last (8) + chunk length (8).
pub(crate) const INDEX_PREFIX_LEN: u64 = 32;
pub(crate) const FLAG_SIGNATURE: u8 = 1;
pub(crate) const FILE_PREFIX: &str = "ledger_";
pub(crate) const COMMITTED_SUFFIX: &str = ".committed";
pub(crate) const INDEX_SUFFIX: &str = ".committed.idx";
pub(crate) const TMP_SUFFIX: &str = ".tmp";

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

// ---------------------------------------------------------------- names

/// Life-cycle state of a chunk, encoded in its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkKind {
    Open,
    Closed,
    Committed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileName {
    Chunk {
        first: u64,
        last: Option<u64>,
        kind: ChunkKind,
    },
    Index {
        first: u64,
        last: u64,
    },
    Temp,
}

fn parse_seqno(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

fn parse_range(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('-')?;
    Some((parse_seqno(a)?, parse_seqno(b)?))
}

/// Parses a directory entry name. `None` for anything that is not ours
/// (no `ledger_` prefix); `Some(Err(()))` for a `ledger_` name we cannot parse.
pub(crate) fn parse_file_name(name: &str) -> Option<Result<FileName, ()>> {
    let rest = name.strip_prefix(FILE_PREFIX)?;
    if name.ends_with(TMP_SUFFIX) {
        return Some(Ok(FileName::Temp));
    }
    let parsed = if let Some(r) = rest.strip_suffix(INDEX_SUFFIX) {
        parse_range(r).map(|(first, last)| FileName::Index { first, last })
    } else if let Some(r) = rest.strip_suffix(COMMITTED_SUFFIX) {
        parse_range(r).map(|(first, last)| FileName::Chunk {
            first,
            last: Some(last),
            kind: ChunkKind::Committed,
        })
    } else if rest.contains('-') {
        parse_range(rest).map(|(first, last)| FileName::Chunk {
            first,
            last: Some(last),
            kind: ChunkKind::Closed,
        })
    } else {
        parse_seqno(rest).map(|first| FileName::Chunk {
            first,
            last: None,
            kind: ChunkKind::Open,
        })
    };
    Some(parsed.ok_or(()))
}

pub(crate) fn open_name(first: u64) -> String {
    format!("{FILE_PREFIX}{first}")
}

pub(crate) fn closed_name(first: u64, last: u64) -> String {
    format!("{FILE_PREFIX}{first}-{last}")
}

pub(crate) fn committed_name(first: u64, last: u64) -> String {
    format!("{FILE_PREFIX}{first}-{last}{COMMITTED_SUFFIX}")
}

pub(crate) fn index_name(first: u64, last: u64) -> String {
    format!("{FILE_PREFIX}{first}-{last}{INDEX_SUFFIX}")
}

/// A chunk file found in a ledger directory.
#[derive(Debug, Clone)]
pub(crate) struct ChunkFile {
    pub path: PathBuf,
    pub first: u64,
    /// From the file name; `None` for the open chunk.
    pub last: Option<u64>,
    pub kind: ChunkKind,
    pub len: u64,
    /// Found in a read-only (archive) directory: always committed, and nothing
    /// (not even a rebuilt index) is ever written next to it.
    pub read_only: bool,
}

/// Everything of ours in a ledger directory (and its read-only directories).
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Sorted by first seqno and checked for contiguity.
    pub chunks: Vec<ChunkFile>,
    /// Index files of the main directory only.
    pub indexes: Vec<(u64, u64, PathBuf)>,
    /// Temporary files of the main directory only.
    pub temps: Vec<PathBuf>,
}

/// Lists and checks the layout of a ledger directory `dir` (which must exist)
/// and the read-only directories holding its archived committed chunks, merged
/// as one (see [`merge_read_only`]): names parse, chunks are contiguous (from
/// seqno 1, or from any seqno after a snapshot base), committed chunks form a
/// prefix, only the last chunk may be open.
pub(crate) fn list_dirs(dir: &Path, read_only_dirs: &[PathBuf]) -> Result<Listing, LedgerError> {
    let main = list_main(dir)?;
    merge_read_only(dir, main, read_only_dirs)
}

/// Adds the committed chunks of `read_only_dirs` to the (unchecked) listing
/// of the main directory `dir`, then sorts and checks the whole layout.
///
/// A chunk whose exact range is already listed (the main directory first,
/// then the read-only directories in order) is a second copy, left behind by
/// an interrupted [`crate::Ledger::archive`]: the earlier copy wins, and both
/// must be committed and of the same length. Every other overlap, and any gap,
/// is a layout error naming the two files. Non-committed chunk files in a
/// read-only directory are a layout error (only committed chunks are ever
/// archived); temporary files, stray `ledger_` names and index files there are
/// left alone, never removed or rewritten.
pub(crate) fn merge_read_only(
    dir: &Path,
    mut listing: Listing,
    read_only_dirs: &[PathBuf],
) -> Result<Listing, LedgerError> {
    // The main directory may not exist yet (first_seqno_on_disk_in).
    let main = std::fs::canonicalize(dir).ok();
    let mut seen_dirs: Vec<PathBuf> = Vec::new();
    let mut by_range: HashMap<(u64, Option<u64>), usize> = listing
        .chunks
        .iter()
        .enumerate()
        .map(|(i, c)| ((c.first, c.last), i))
        .collect();
    for ro in read_only_dirs {
        let canonical = std::fs::canonicalize(ro).map_err(|e| LedgerError::io(ro, e))?;
        if main.as_ref() == Some(&canonical) {
            return Err(LedgerError::layout(
                dir,
                format!(
                    "read-only directory {} is the ledger directory itself",
                    ro.display()
                ),
            ));
        }
        if seen_dirs.contains(&canonical) {
            continue;
        }
        seen_dirs.push(canonical);
        for cf in list_read_only(ro)? {
            let Some(twin) = by_range
                .get(&(cf.first, cf.last))
                .and_then(|i| listing.chunks.get(*i))
            else {
                by_range.insert((cf.first, cf.last), listing.chunks.len());
                listing.chunks.push(cf);
                continue;
            };
            if twin.kind != ChunkKind::Committed {
                return Err(LedgerError::layout(
                    dir,
                    format!(
                        "overlap between {} and {}: an archived chunk's range is also held by a chunk that is not committed",
                        twin.path.display(),
                        cf.path.display()
                    ),
                ));
            }
            if twin.len != cf.len {
                return Err(LedgerError::layout(
                    dir,
                    format!(
                        "{} ({} bytes) and {} ({} bytes) claim the same seqnos but differ in length",
                        twin.path.display(),
                        twin.len,
                        cf.path.display(),
                        cf.len
                    ),
                ));
            }
            tracing::debug!(used = %twin.path.display(), ignored = %cf.path.display(), "ledger chunk present twice; using the first copy");
        }
    }
    listing.chunks.sort_by_key(|c| c.first);
    check_layout(dir, &listing.chunks)?;
    Ok(listing)
}

/// Everything of ours in the main directory, unsorted and unchecked.
fn list_main(dir: &Path) -> Result<Listing, LedgerError> {
    let mut listing = Listing::default();
    let rd = std::fs::read_dir(dir).map_err(|e| LedgerError::io(dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| LedgerError::io(dir, e))?;
        let os_name = ent.file_name();
        let path = ent.path();
        let Some(name) = os_name.to_str() else {
            if os_name
                .as_encoded_bytes()
                .starts_with(FILE_PREFIX.as_bytes())
            {
                return Err(LedgerError::layout(
                    dir,
                    format!("unexpected file {}", path.display()),
                ));
            }
            continue;
        };
        let parsed = match parse_file_name(name) {
            None => continue,
            Some(Ok(p)) => p,
            Some(Err(())) => {
                return Err(LedgerError::layout(
                    dir,
                    format!("unexpected file name {}", path.display()),
                ))
            }
        };
        let meta = ent.metadata().map_err(|e| LedgerError::io(&path, e))?;
        if !meta.is_file() {
            return Err(LedgerError::layout(
                dir,
                format!("{} is not a regular file", path.display()),
            ));
        }
        match parsed {
            FileName::Temp => listing.temps.push(path),
            FileName::Index { first, last } => listing.indexes.push((first, last, path)),
            FileName::Chunk { first, last, kind } => {
                check_range(dir, &path, first, last)?;
                listing.chunks.push(ChunkFile {
                    path,
                    first,
                    last,
                    kind,
                    len: meta.len(),
                    read_only: false,
                });
            }
        }
    }
    Ok(listing)
}

fn check_range(dir: &Path, path: &Path, first: u64, last: Option<u64>) -> Result<(), LedgerError> {
    match last {
        Some(l) if l < first => Err(LedgerError::layout(
            dir,
            format!("{} has an empty or inverted seqno range", path.display()),
        )),
        _ => Ok(()),
    }
}

/// The committed chunks of a read-only directory. A non-committed chunk file
/// is an error; anything else that is not a committed chunk is skipped (with a
/// warning when it looks like ours), since nothing here may be cleaned up.
fn list_read_only(dir: &Path) -> Result<Vec<ChunkFile>, LedgerError> {
    let mut chunks = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| LedgerError::io(dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| LedgerError::io(dir, e))?;
        let path = ent.path();
        let os_name = ent.file_name();
        if !os_name
            .as_encoded_bytes()
            .starts_with(FILE_PREFIX.as_bytes())
        {
            continue;
        }
        let parsed = os_name.to_str().and_then(parse_file_name);
        let (first, last) = match parsed {
            Some(Ok(FileName::Chunk {
                first,
                last: Some(last),
                kind: ChunkKind::Committed,
            })) => (first, last),
            Some(Ok(FileName::Chunk { .. })) => {
                return Err(LedgerError::layout(
                    dir,
                    format!(
                        "{} is not a committed chunk: read-only directories may only hold .committed chunks",
                        path.display()
                    ),
                ))
            }
            Some(Ok(FileName::Index { .. })) => continue,
            Some(Ok(FileName::Temp)) => {
                tracing::warn!(file = %path.display(), "ignoring temporary file in a read-only ledger directory");
                continue;
            }
            None | Some(Err(())) => {
                tracing::warn!(file = %path.display(), "ignoring unexpected file in a read-only ledger directory");
                continue;
            }
        };
        let meta = ent.metadata().map_err(|e| LedgerError::io(&path, e))?;
        if !meta.is_file() {
            tracing::warn!(file = %path.display(), "ignoring a committed chunk name that is not a regular file");
            continue;
        }
        check_range(dir, &path, first, Some(last))?;
        chunks.push(ChunkFile {
            path,
            first,
            last: Some(last),
            kind: ChunkKind::Committed,
            len: meta.len(),
            read_only: true,
        });
    }
    Ok(chunks)
}

fn check_layout(dir: &Path, chunks: &[ChunkFile]) -> Result<(), LedgerError> {
    // The first chunk may start past 1: the ledger then continues a snapshot.
    let mut expected = chunks.first().map_or(1, |c| c.first);
    let mut prev: Option<&ChunkFile> = None;
    let mut seen_uncommitted = false;
    for (i, c) in chunks.iter().enumerate() {
        if c.first != expected {
            let what = if c.first > expected { "gap" } else { "overlap" };
            let prev_name = prev
                .map(|p| p.path.display().to_string())
                .unwrap_or_default();
            let reason = format!(
                "{what} between {prev_name} and {}: expected the next chunk to start at seqno {expected}",
                c.path.display()
            );
            return Err(LedgerError::layout(dir, reason));
        }
        match c.kind {
            ChunkKind::Committed if seen_uncommitted => {
                return Err(LedgerError::layout(
                    dir,
                    format!(
                        "committed chunk {} follows an uncommitted chunk",
                        c.path.display()
                    ),
                ))
            }
            ChunkKind::Committed => {}
            ChunkKind::Closed => seen_uncommitted = true,
            ChunkKind::Open => {
                seen_uncommitted = true;
                if i + 1 != chunks.len() {
                    return Err(LedgerError::layout(
                        dir,
                        format!("open chunk {} is not the last chunk", c.path.display()),
                    ));
                }
            }
        }
        if let Some(last) = c.last {
            expected = last.checked_add(1).ok_or_else(|| {
                LedgerError::layout(dir, format!("{} ends at u64::MAX", c.path.display()))
            })?;
        }
        prev = Some(c);
    }
    Ok(())
}

// ---------------------------------------------------------------- chunk header

pub(crate) fn encode_header(first: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(CHUNK_MAGIC);
    h[8..16].copy_from_slice(&first.to_le_bytes());
    let crc = crc32c::crc32c(&h[..16]);
    h[16..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a chunk header; the error is a human-readable reason.
pub(crate) fn check_header(h: &[u8], expected_first: u64) -> Result<(), String> {
    if h.len() < HEADER_LEN as usize {
        return Err(format!(
            "chunk header truncated ({} of {HEADER_LEN} bytes)",
            h.len()
        ));
    }
    if crc32c::crc32c(&h[..16]) != u32_at(h, 16) {
        return Err("chunk header checksum mismatch".into());
    }
    if &h[..8] != CHUNK_MAGIC {
        return Err("bad chunk magic".into());
    }
    let first = u64_at(h, 8);
    if first != expected_first {
        return Err(format!(
            "chunk header says first seqno {first}, file name says {expected_first}"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- frames

/// Why bytes are not a valid frame. `recorded` is the TxId as written in the
/// frame header, which is unverified when the checksum fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Fewer bytes available than the frame (header) needs.
    Incomplete {
        recorded: Option<TxId>,
        needed: u64,
        available: u64,
    },
    TooLarge {
        recorded: TxId,
        len: u64,
    },
    BadChecksum {
        recorded: TxId,
    },
    BadFlags {
        recorded: TxId,
        flags: u8,
    },
}

impl FrameError {
    pub(crate) fn recorded(&self) -> Option<TxId> {
        match self {
            FrameError::Incomplete { recorded, .. } => *recorded,
            FrameError::TooLarge { recorded, .. }
            | FrameError::BadChecksum { recorded }
            | FrameError::BadFlags { recorded, .. } => Some(*recorded),
        }
    }

    pub(crate) fn reason(&self) -> String {
        match self {
            FrameError::Incomplete {
                needed, available, ..
            } => format!("incomplete frame: needs {needed} bytes, only {available} present"),
            FrameError::TooLarge { len, .. } => {
                format!("frame length {len} exceeds the maximum payload of {MAX_PAYLOAD_LEN}")
            }
            FrameError::BadChecksum { .. } => "frame checksum mismatch".into(),
            FrameError::BadFlags { flags, .. } => format!("unknown frame flags {flags:#04x}"),
        }
    }

    /// The error to report for this frame at `offset` where `expected_seqno`
    /// was due: the recorded TxId is named only when its seqno is plausible.
    pub(crate) fn to_corrupt(&self, file: &Path, offset: u64, expected_seqno: u64) -> LedgerError {
        let txid = self.recorded().filter(|t| t.seqno.0 == expected_seqno);
        LedgerError::corrupt(file, offset, txid, Some(expected_seqno), self.reason())
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameHeader {
    pub len: u32,
    pub view: u64,
    pub seqno: u64,
    pub flags: u8,
}

impl FrameHeader {
    pub(crate) fn parse(b: &[u8; FRAME_HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            len: u32_at(b, 0),
            view: u64_at(b, 4),
            seqno: u64_at(b, 12),
            flags: b[20],
        }
    }

    pub(crate) fn txid(&self) -> TxId {
        TxId::new(self.view, self.seqno)
    }

    pub(crate) fn total_len(&self) -> u64 {
        FRAME_OVERHEAD + u64::from(self.len)
    }
}

/// Size of the frame for a payload of `len` bytes.
pub(crate) fn frame_len(payload_len: usize) -> u64 {
    FRAME_OVERHEAD + payload_len as u64
}

/// Appends one frame to `out`. The caller has checked the payload length.
pub(crate) fn encode_frame(out: &mut Vec<u8>, txid: TxId, is_signature: bool, payload: &[u8]) {
    debug_assert!(payload.len() as u64 <= MAX_PAYLOAD_LEN);
    let start = out.len();
    out.reserve(FRAME_OVERHEAD as usize + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&txid.view.0.to_le_bytes());
    out.extend_from_slice(&txid.seqno.0.to_le_bytes());
    out.push(if is_signature { FLAG_SIGNATURE } else { 0 });
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// A decoded frame borrowing its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame<'a> {
    pub txid: TxId,
    pub is_signature: bool,
    pub payload: &'a [u8],
    /// Bytes consumed, including header and checksum.
    pub size: u64,
}

/// Decodes the frame at the start of `buf`.
pub(crate) fn decode_frame(buf: &[u8]) -> Result<Frame<'_>, FrameError> {
    let available = buf.len() as u64;
    let Some(hb) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(FrameError::Incomplete {
            recorded: None,
            needed: FRAME_HEADER_LEN as u64,
            available,
        });
    };
    let h = FrameHeader::parse(hb);
    let recorded = h.txid();
    if u64::from(h.len) > MAX_PAYLOAD_LEN {
        return Err(FrameError::TooLarge {
            recorded,
            len: u64::from(h.len),
        });
    }
    let total = h.total_len();
    if available < total {
        return Err(FrameError::Incomplete {
            recorded: Some(recorded),
            needed: total,
            available,
        });
    }
    // total <= buf.len(), so these casts and slices are in range.
    let body_end = FRAME_HEADER_LEN + h.len as usize;
    let body = &buf[..body_end];
    if crc32c::crc32c(body) != u32_at(buf, body_end) {
        return Err(FrameError::BadChecksum { recorded });
    }
    if h.flags & !FLAG_SIGNATURE != 0 {
        return Err(FrameError::BadFlags {
            recorded,
            flags: h.flags,
        });
    }
    Ok(Frame {
        txid: recorded,
        is_signature: h.flags & FLAG_SIGNATURE != 0,
        payload: &buf[FRAME_HEADER_LEN..body_end],
        size: total,
    })
}

// ---------------------------------------------------------------- sequential reader

/// A frame read by [`ChunkReader`], owning its payload.
#[derive(Debug, Clone)]
pub(crate) struct RawFrame {
    pub offset: u64,
    pub txid: TxId,
    pub is_signature: bool,
    pub payload: Vec<u8>,
}

/// A bad frame met by [`ChunkReader`]: where it starts, where it ends (when
/// its whole extent lies inside the file) and what is wrong.
#[derive(Debug, Clone)]
pub(crate) struct FrameProblem {
    pub offset: u64,
    pub end: Option<u64>,
    pub error: FrameError,
}

/// Buffered sequential reader over one chunk file of known length.
pub(crate) struct ChunkReader {
    path: PathBuf,
    inner: BufReader<File>,
    pos: u64,
    len: u64,
}

const READ_BUF: usize = 256 * 1024;

impl ChunkReader {
    /// Reads `path` up to `len` bytes (its length when listed).
    pub(crate) fn open(path: &Path, len: u64) -> Result<ChunkReader, LedgerError> {
        let file = File::open(path).map_err(|e| LedgerError::io(path, e))?;
        Ok(ChunkReader {
            path: path.to_path_buf(),
            inner: BufReader::with_capacity(READ_BUF, file),
            pos: 0,
            len,
        })
    }

    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), LedgerError> {
        self.inner
            .read_exact(buf)
            .map_err(|e| LedgerError::io(&self.path, e))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// Reads and checks the chunk header (the file must be at least a header long).
    pub(crate) fn read_header(&mut self, expected_first: u64) -> Result<(), LedgerError> {
        if self.len < HEADER_LEN {
            return Err(LedgerError::corrupt(
                &self.path,
                0,
                None,
                Some(expected_first),
                format!("file of {} bytes is shorter than a chunk header", self.len),
            ));
        }
        let mut h = [0u8; HEADER_LEN as usize];
        self.read_exact(&mut h)?;
        check_header(&h, expected_first)
            .map_err(|r| LedgerError::corrupt(&self.path, 0, None, Some(expected_first), r))
    }

    /// Next frame; `Ok(None)` at the exact end of the file. I/O errors are
    /// `Err`; malformed frames are `Ok(Some(Err(problem)))`, after which the
    /// reader's position is unspecified except for [`Self::rest_is_zero`].
    pub(crate) fn next_frame(
        &mut self,
    ) -> Result<Option<Result<RawFrame, FrameProblem>>, LedgerError> {
        let offset = self.pos;
        let remaining = self.len.saturating_sub(offset);
        if remaining == 0 {
            return Ok(None);
        }
        let problem = |end, error| Ok(Some(Err(FrameProblem { offset, end, error })));
        if remaining < FRAME_HEADER_LEN as u64 {
            return problem(
                None,
                FrameError::Incomplete {
                    recorded: None,
                    needed: FRAME_HEADER_LEN as u64,
                    available: remaining,
                },
            );
        }
        let mut hb = [0u8; FRAME_HEADER_LEN];
        self.read_exact(&mut hb)?;
        let h = FrameHeader::parse(&hb);
        let recorded = h.txid();
        let total = h.total_len();
        if total > remaining {
            return problem(
                None,
                FrameError::Incomplete {
                    recorded: Some(recorded),
                    needed: total,
                    available: remaining,
                },
            );
        }
        let end = Some(offset + total);
        if u64::from(h.len) > MAX_PAYLOAD_LEN {
            return problem(
                end,
                FrameError::TooLarge {
                    recorded,
                    len: u64::from(h.len),
                },
            );
        }
        // Bounded by MAX_PAYLOAD_LEN and by the bytes actually in the file.
        let mut payload = vec![0u8; h.len as usize];
        self.read_exact(&mut payload)?;
        let mut cb = [0u8; 4];
        self.read_exact(&mut cb)?;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&hb), &payload);
        if crc != u32::from_le_bytes(cb) {
            return problem(end, FrameError::BadChecksum { recorded });
        }
        if h.flags & !FLAG_SIGNATURE != 0 {
            return problem(
                end,
                FrameError::BadFlags {
                    recorded,
                    flags: h.flags,
                },
            );
        }
        Ok(Some(Ok(RawFrame {
            offset,
            txid: recorded,
            is_signature: h.flags & FLAG_SIGNATURE != 0,
            payload,
        })))
    }

    /// Whether every byte from `from` to the end of the file is zero.
    pub(crate) fn rest_is_zero(&mut self, from: u64) -> Result<bool, LedgerError> {
        use std::io::{Seek, SeekFrom};
        self.inner
            .seek(SeekFrom::Start(from))
            .map_err(|e| LedgerError::io(&self.path, e))?;
        self.pos = from;
        let mut buf = vec![0u8; 64 * 1024];
        while self.pos < self.len {
            let n = (self.len - self.pos).min(buf.len() as u64) as usize;
            let slice = &mut buf[..n];
            self.read_exact(slice)?;
            if slice.iter().any(|b| *b != 0) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Strictly scans a closed or committed chunk: valid header, every frame
/// valid, seqnos `first..=last` in order, views non-decreasing from
/// `min_view`, nothing trailing. Returns frame offsets and the last TxId.
pub(crate) fn scan_closed_chunk(
    path: &Path,
    len: u64,
    first: u64,
    last: u64,
    min_view: u64,
) -> Result<(Vec<u64>, TxId), LedgerError> {
    let mut r = ChunkReader::open(path, len)?;
    r.read_header(first)?;
    let count = entry_count(path, first, last, len)?;
    let mut offsets = Vec::with_capacity(count as usize);
    let mut expected = first;
    let mut view = min_view;
    let mut last_txid = None;
    while let Some(frame) = r.next_frame()? {
        let f = frame.map_err(|p| p.error.to_corrupt(path, p.offset, expected))?;
        check_sequence(path, &f, expected, view, last)?;
        offsets.push(f.offset);
        view = f.txid.view.0;
        expected += 1;
        last_txid = Some(f.txid);
    }
    match last_txid {
        Some(t) if t.seqno.0 == last => Ok((offsets, t)),
        _ => Err(LedgerError::corrupt(
            path,
            r.pos(),
            None,
            Some(expected),
            format!(
                "chunk ends before seqno {last} named in its file name (last entry is {})",
                expected - 1
            ),
        )),
    }
}

/// Checks a valid frame's position in the sequence.
pub(crate) fn check_sequence(
    path: &Path,
    f: &RawFrame,
    expected: u64,
    min_view: u64,
    last: u64,
) -> Result<(), LedgerError> {
    let seqno = f.txid.seqno.0;
    if seqno != expected {
        return Err(LedgerError::corrupt(
            path,
            f.offset,
            Some(f.txid),
            Some(expected),
            format!("seqno {seqno} where {expected} was expected"),
        ));
    }
    if seqno > last {
        return Err(LedgerError::corrupt(
            path,
            f.offset,
            Some(f.txid),
            Some(expected),
            format!("entry beyond the chunk's file-name range (last {last})"),
        ));
    }
    if f.txid.view.0 < min_view.max(1) {
        return Err(LedgerError::corrupt(
            path,
            f.offset,
            Some(f.txid),
            Some(expected),
            format!(
                "view {} is lower than the previous view {min_view}",
                f.txid.view.0
            ),
        ));
    }
    Ok(())
}

/// Number of entries a closed chunk's name claims, refused when the file is
/// too short to hold that many frames (so a bogus name never drives an allocation).
pub(crate) fn entry_count(
    path: &Path,
    first: u64,
    last: u64,
    len: u64,
) -> Result<u64, LedgerError> {
    let count = last - first + 1;
    let min_len = count
        .checked_mul(FRAME_OVERHEAD)
        .and_then(|b| b.checked_add(HEADER_LEN));
    match min_len {
        Some(m) if m <= len => Ok(count),
        _ => Err(LedgerError::corrupt(
            path,
            0,
            None,
            Some(first),
            format!("file of {len} bytes cannot hold the {count} entries its name claims"),
        )),
    }
}

// ---------------------------------------------------------------- index

/// Byte length of the index for `count` entries.
pub(crate) fn index_len(count: u64) -> u64 {
    INDEX_PREFIX_LEN + 8 * count + 4
}

pub(crate) fn encode_index(first: u64, last: u64, chunk_len: u64, offsets: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(index_len(offsets.len() as u64) as usize);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&last.to_le_bytes());
    out.extend_from_slice(&chunk_len.to_le_bytes());
    for o in offsets {
        out.extend_from_slice(&o.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks the fixed prefix of an index against the chunk it describes.
pub(crate) fn check_index_prefix(
    b: &[u8],
    first: u64,
    last: u64,
    chunk_len: u64,
) -> Result<(), String> {
    if b.len() < INDEX_PREFIX_LEN as usize {
        return Err("index shorter than its header".into());
    }
    if &b[..8] != INDEX_MAGIC {
        return Err("bad index magic".into());
    }
    let (f, l, cl) = (u64_at(b, 8), u64_at(b, 16), u64_at(b, 24));
    if (f, l) != (first, last) {
        return Err(format!(
            "index describes seqnos {f}-{l}, chunk holds {first}-{last}"
        ));
    }
    if cl != chunk_len {
        return Err(format!(
            "index records chunk length {cl}, chunk file is {chunk_len} bytes"
        ));
    }
    Ok(())
}

/// Decodes and bounds-checks a whole index file.
pub(crate) fn decode_index(
    b: &[u8],
    first: u64,
    last: u64,
    chunk_len: u64,
) -> Result<Vec<u64>, String> {
    check_index_prefix(b, first, last, chunk_len)?;
    let count = last
        .checked_sub(first)
        .map(|d| d + 1)
        .ok_or("inverted range")?;
    if count > (chunk_len / FRAME_OVERHEAD) || b.len() as u64 != index_len(count) {
        return Err(format!(
            "index is {} bytes, expected {} for {count} entries",
            b.len(),
            index_len(count)
        ));
    }
    let crc_at = b.len() - 4;
    if crc32c::crc32c(&b[..crc_at]) != u32_at(b, crc_at) {
        return Err("index checksum mismatch".into());
    }
    let offsets: Vec<u64> = b[INDEX_PREFIX_LEN as usize..crc_at]
        .chunks_exact(8)
        .map(|c| u64_at(c, 0))
        .collect();
    validate_offsets(&offsets, chunk_len)?;
    Ok(offsets)
}

/// Offsets must start right after the header, leave room for a frame each
/// (no more than a maximal frame) and end exactly with the file.
fn validate_offsets(offsets: &[u64], chunk_len: u64) -> Result<(), String> {
    if offsets.first() != Some(&HEADER_LEN) {
        return Err("first offset is not right after the chunk header".into());
    }
    let ends = offsets.iter().skip(1).chain(std::iter::once(&chunk_len));
    for (i, (o, e)) in offsets.iter().zip(ends).enumerate() {
        let size = e.checked_sub(*o).unwrap_or(0);
        if !(FRAME_OVERHEAD..=MAX_FRAME_LEN).contains(&size) {
            return Err(format!("offset {i} ({o}) gives an impossible frame size"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_roundtrip() {
        assert_eq!(
            parse_file_name(&open_name(7)),
            Some(Ok(FileName::Chunk {
                first: 7,
                last: None,
                kind: ChunkKind::Open
            }))
        );
        assert_eq!(
            parse_file_name(&closed_name(7, 9)),
            Some(Ok(FileName::Chunk {
                first: 7,
                last: Some(9),
                kind: ChunkKind::Closed
            }))
        );
        assert_eq!(
            parse_file_name(&committed_name(1, 9)),
            Some(Ok(FileName::Chunk {
                first: 1,
                last: Some(9),
                kind: ChunkKind::Committed
            }))
        );
        assert_eq!(
            parse_file_name(&index_name(1, 9)),
            Some(Ok(FileName::Index { first: 1, last: 9 }))
        );
        assert_eq!(
            parse_file_name("ledger_1-9.committed.idx.tmp"),
            Some(Ok(FileName::Temp))
        );
        assert_eq!(parse_file_name("snapshot_1"), None);
        for bad in [
            "ledger_",
            "ledger_01",
            "ledger_0",
            "ledger_1-",
            "ledger_x",
            "ledger_1-2.foo",
            "ledger_-1",
        ] {
            assert_eq!(parse_file_name(bad), Some(Err(())), "{bad}");
        }
    }

    #[test]
    fn header_detects_every_flip() {
        let h = encode_header(42);
        assert!(check_header(&h, 42).is_ok());
        assert!(check_header(&h, 43).is_err());
        for i in 0..h.len() {
            for bit in 0..8 {
                let mut b = h;
                b[i] ^= 1 << bit;
                assert!(check_header(&b, 42).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn index_roundtrip_and_flips() {
        let offsets = vec![20, 45, 100];
        let idx = encode_index(5, 7, 130, &offsets);
        assert_eq!(decode_index(&idx, 5, 7, 130).unwrap(), offsets);
        assert!(decode_index(&idx, 5, 7, 131).is_err());
        assert!(decode_index(&idx, 5, 8, 130).is_err());
        for i in 0..idx.len() {
            let mut b = idx.clone();
            b[i] ^= 0x10;
            assert!(decode_index(&b, 5, 7, 130).is_err(), "byte {i}");
        }
        // Offsets leaving no room for a frame are refused even with a valid checksum.
        assert!(decode_index(&encode_index(5, 7, 130, &[20, 30, 100]), 5, 7, 130).is_err());
        assert!(decode_index(&encode_index(5, 7, 130, &[20, 45, 120]), 5, 7, 130).is_err());
    }

    #[test]
    fn frame_flips_are_detected() {
        let mut f = Vec::new();
        encode_frame(&mut f, TxId::new(3, 9), true, b"hello world");
        for i in 0..f.len() {
            for bit in 0..8 {
                let mut b = f.clone();
                b[i] ^= 1 << bit;
                if let Ok(fr) = decode_frame(&b) {
                    panic!("flip at {i}/{bit} accepted: {fr:?}");
                }
            }
        }
    }

    fn touch(dir: &Path, name: &str, len: usize) {
        std::fs::write(dir.join(name), vec![0u8; len]).unwrap();
    }

    fn summary(l: &Listing) -> Vec<(u64, Option<u64>, bool, PathBuf)> {
        l.chunks
            .iter()
            .map(|c| (c.first, c.last, c.read_only, c.path.clone()))
            .collect()
    }

    #[test]
    fn read_only_dirs_merge_with_the_main_copy_preferred() {
        let (main, ro1, ro2) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let (m, a, b) = (main.path(), ro1.path(), ro2.path());
        touch(m, "ledger_4-6.committed", 80);
        touch(m, "ledger_4-6.committed.idx", 8);
        touch(m, "ledger_7", 20);
        touch(a, "ledger_1-3.committed", 90);
        touch(a, "ledger_1-3.committed.idx", 8);
        touch(a, "ledger_4-6.committed", 80);
        touch(a, "ledger_9-9.committed.tmp", 3);
        touch(a, "ledger_zzz", 1);
        touch(a, "notes.txt", 1);
        std::fs::create_dir(a.join("ledger_10-12.committed")).unwrap();
        touch(b, "ledger_1-3.committed", 90);
        let ro = [a.to_path_buf(), b.to_path_buf(), a.to_path_buf()];
        let l = list_dirs(m, &ro).unwrap();
        assert_eq!(
            summary(&l),
            vec![
                (1, Some(3), true, a.join("ledger_1-3.committed")),
                (4, Some(6), false, m.join("ledger_4-6.committed")),
                (7, None, false, m.join("ledger_7")),
            ]
        );
        assert_eq!(l.indexes.len(), 1, "only the main directory's indexes");
        assert!(
            l.temps.is_empty(),
            "temporary files of a read-only dir are not ours to remove"
        );
        // The first read-only directory wins among read-only copies.
        let l = list_dirs(m, &[b.to_path_buf(), a.to_path_buf()]).unwrap();
        assert_eq!(l.chunks[0].path, b.join("ledger_1-3.committed"));
        // Without the main directory's chunks, the archive alone is a ledger prefix.
        let empty = tempfile::tempdir().unwrap();
        let l = list_dirs(empty.path(), &[a.to_path_buf()]).unwrap();
        assert_eq!(l.chunks.len(), 2);
    }

    #[test]
    fn read_only_dirs_refuse_inconsistent_layouts() {
        let layout = |r: Result<Listing, LedgerError>, needles: &[&str]| {
            let err = r.unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, LedgerError::Layout { .. }), "{msg}");
            for n in needles {
                assert!(msg.contains(n), "{msg} lacks {n}");
            }
        };
        let fresh = || {
            let (main, ro) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            touch(main.path(), "ledger_4-6.committed", 80);
            touch(main.path(), "ledger_7-9", 80);
            touch(ro.path(), "ledger_1-3.committed", 80);
            (main, ro)
        };
        for name in ["ledger_10", "ledger_10-12"] {
            let (main, ro) = fresh();
            touch(ro.path(), name, 80);
            layout(
                list_dirs(main.path(), &[ro.path().to_path_buf()]),
                &[name, "not a committed chunk"],
            );
        }
        // Same range, different length.
        let (main, ro) = fresh();
        touch(ro.path(), "ledger_4-6.committed", 81);
        layout(
            list_dirs(main.path(), &[ro.path().to_path_buf()]),
            &["differ in length"],
        );
        // Same range as a chunk that is not committed.
        let (main, ro) = fresh();
        touch(ro.path(), "ledger_7-9.committed", 80);
        layout(
            list_dirs(main.path(), &[ro.path().to_path_buf()]),
            &["overlap", "ledger_7-9"],
        );
        // Overlapping, not identical.
        let (main, ro) = fresh();
        touch(ro.path(), "ledger_3-5.committed", 80);
        layout(
            list_dirs(main.path(), &[ro.path().to_path_buf()]),
            &["overlap"],
        );
        // A gap between the archive and the main directory names both files.
        let (main, ro) = fresh();
        std::fs::rename(
            ro.path().join("ledger_1-3.committed"),
            ro.path().join("ledger_1-2.committed"),
        )
        .unwrap();
        layout(
            list_dirs(main.path(), &[ro.path().to_path_buf()]),
            &["gap", "ledger_1-2.committed", "ledger_4-6.committed"],
        );
        // The main directory itself, or a missing directory.
        let (main, _ro) = fresh();
        layout(
            list_dirs(main.path(), &[main.path().join(".")]),
            &["ledger directory itself"],
        );
        let missing = main.path().join("nope");
        assert!(matches!(
            list_dirs(main.path(), &[missing]),
            Err(LedgerError::Io { .. })
        ));
    }

    proptest! {
        #[test]
        fn frame_roundtrip(view in 1u64.., seqno in 1u64.., sig: bool,
                           payload in proptest::collection::vec(any::<u8>(), 0..2048),
                           trailing in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = Vec::new();
            encode_frame(&mut buf, TxId::new(view, seqno), sig, &payload);
            prop_assert_eq!(buf.len() as u64, frame_len(payload.len()));
            let size = buf.len() as u64;
            buf.extend_from_slice(&trailing);
            let f = decode_frame(&buf).unwrap();
            prop_assert_eq!(f.txid, TxId::new(view, seqno));
            prop_assert_eq!(f.is_signature, sig);
            prop_assert_eq!(f.payload, &payload[..]);
            prop_assert_eq!(f.size, size);
            // Every strict prefix is incomplete, never a panic or a bogus frame.
            for cut in [0, 1, 20, 21, (size / 2) as usize, size as usize - 1] {
                let is_incomplete = matches!(decode_frame(&buf[..cut]), Err(FrameError::Incomplete { .. }));
                prop_assert!(is_incomplete);
            }
        }

        #[test]
        fn decode_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(f) = decode_frame(&bytes) {
                prop_assert!(f.size <= bytes.len() as u64);
            }
            let _ = check_header(&bytes, 1);
            let _ = decode_index(&bytes, 1, 3, 200);
            let _ = decode_index(&bytes, 1, u64::MAX, u64::MAX);
        }

        #[test]
        fn decode_small_length_field_never_panics(len in 0u32..64, rest in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut bytes = len.to_le_bytes().to_vec();
            bytes.extend_from_slice(&rest);
            let _ = decode_frame(&bytes);
        }
    }
}
