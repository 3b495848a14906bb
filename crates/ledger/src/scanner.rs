use std::path::{Path, PathBuf};

use covenant_types::SeqNo;

use crate::chunkio::Entry;
use crate::error::LedgerError;
use crate::format::{
    check_sequence, closed_name, committed_name, list_dirs, parse_file_name, ChunkFile, ChunkKind,
    ChunkReader, FileName,
};

/// One entry met by [`ChunkScanner`], with the chunk it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedEntry {
    pub entry: Entry,
    pub chunk: PathBuf,
    /// Whether the chunk is named `.committed`.
    pub committed: bool,
}

/// Strict, read-only, sequential reader of a whole ledger directory, for
/// offline audits: unlike [`crate::Ledger::open`] it repairs nothing and
/// trusts no index, so any damaged byte in any chunk surfaces as an error.
///
/// Checks headers, every frame's length bound, flags and checksum, gapless
/// seqnos from the first chunk's first seqno (1, or later for a ledger that
/// continues a snapshot: see [`ChunkScanner::first_seqno`]), non-decreasing views, that each chunk holds exactly the
/// range its file name claims and that nothing trails its last frame. The
/// first problem is yielded as an `Err` and ends the iteration.
#[derive(Debug)]
pub struct ChunkScanner {
    chunks: Vec<ChunkFile>,
    next_chunk: usize,
    current: Option<Current>,
    first: u64,
    expected: u64,
    view: u64,
    total_bytes: u64,
    done_bytes: u64,
    finished: bool,
    /// Where a listed chunk that vanished from `dir` is also looked for (see
    /// `moved`): a running node's archiver moves chunks while a scan
    /// (`ledger audit`) reads them.
    read_only_dirs: Vec<PathBuf>,
}

struct Current {
    reader: ChunkReader,
    last: Option<u64>,
    committed: bool,
}

impl std::fmt::Debug for Current {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Current")
            .field("chunk", &self.reader.path())
            .field("pos", &self.reader.pos())
            .finish()
    }
}

impl ChunkScanner {
    /// Lists `dir` and checks its layout (names, contiguous ranges, committed
    /// prefix); frames are checked as the iterator advances.
    pub fn open(dir: &Path) -> Result<ChunkScanner, LedgerError> {
        Self::open_with(dir, &[])
    }

    /// [`ChunkScanner::open`] over a ledger whose older chunks were archived
    /// (see [`crate::Ledger::archive`]): the committed chunks of `read_only_dirs`
    /// are merged with `dir` exactly as [`crate::LedgerConfig::read_only_dirs`]
    /// does, so an audit reads archived history transparently. A chunk present
    /// in several places is scanned once, from `dir` first, then the read-only
    /// directories in order; [`ScannedEntry::chunk`] names the copy read.
    pub fn open_with(dir: &Path, read_only_dirs: &[PathBuf]) -> Result<ChunkScanner, LedgerError> {
        let meta = std::fs::metadata(dir).map_err(|e| LedgerError::io(dir, e))?;
        if !meta.is_dir() {
            return Err(LedgerError::layout(dir, "not a directory"));
        }
        let listing = list_dirs(dir, read_only_dirs)?;
        let total_bytes = listing.chunks.iter().map(|c| c.len).sum();
        let first = listing.chunks.first().map_or(1, |c| c.first);
        Ok(ChunkScanner {
            chunks: listing.chunks,
            next_chunk: 0,
            current: None,
            first,
            expected: first,
            view: 0,
            total_bytes,
            done_bytes: 0,
            finished: false,
            read_only_dirs: read_only_dirs.to_vec(),
        })
    }

    /// Seqno of the first entry (the first chunk's): 1 for a full ledger, `b + 1`
    /// for one that continues a snapshot at `b`, which the caller must supply.
    pub fn first_seqno(&self) -> SeqNo {
        SeqNo(self.first)
    }

    /// Sum of the chunk file sizes, for progress reporting.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Bytes consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.done_bytes + self.current.as_ref().map_or(0, |c| c.reader.pos())
    }

    /// Where a chunk listed at start went, when a running node closed it,
    /// committed it (renames) or archived it (moved whole) since: the same bytes,
    /// up to the length listed, checked like any other chunk.
    fn moved(&self, cf: &ChunkFile) -> Option<PathBuf> {
        let dir = cf.path.parent()?;
        let last = match cf.last {
            Some(last) => last,
            // The open chunk, closed since: the one chunk of `dir` starting there.
            None => std::fs::read_dir(dir).ok()?.find_map(|e| {
                let name = e.ok()?.file_name();
                match parse_file_name(name.to_str()?)? {
                    Ok(FileName::Chunk {
                        first,
                        last: Some(last),
                        ..
                    }) if first == cf.first => Some(last),
                    _ => None,
                }
            })?,
        };
        [closed_name(cf.first, last), committed_name(cf.first, last)]
            .into_iter()
            .flat_map(|name| {
                std::iter::once(dir.join(&name))
                    .chain(self.read_only_dirs.iter().map(move |d| d.join(&name)))
            })
            .find(|p| p.is_file())
    }

    fn step(&mut self) -> Result<Option<ScannedEntry>, LedgerError> {
        loop {
            let cur = match self.current.as_mut() {
                Some(c) => c,
                None => {
                    let Some(cf) = self.chunks.get(self.next_chunk) else {
                        return Ok(None);
                    };
                    self.next_chunk += 1;
                    if cf.kind == ChunkKind::Open && cf.len == 0 {
                        // A chunk created just before a crash, never written.
                        continue;
                    }
                    let mut reader = match ChunkReader::open(&cf.path, cf.len) {
                        Err(e) if e.is_not_found() => match self.moved(cf) {
                            Some(p) => ChunkReader::open(&p, cf.len)?,
                            None => return Err(e),
                        },
                        r => r?,
                    };
                    reader.read_header(cf.first)?;
                    self.current.insert(Current {
                        reader,
                        last: cf.last,
                        committed: cf.kind == ChunkKind::Committed,
                    })
                }
            };
            let frame = cur.reader.next_frame()?;
            let path = cur.reader.path();
            match frame {
                Some(Ok(f)) => {
                    check_sequence(
                        path,
                        &f,
                        self.expected,
                        self.view,
                        cur.last.unwrap_or(u64::MAX),
                    )?;
                    self.expected += 1;
                    self.view = f.txid.view.0;
                    return Ok(Some(ScannedEntry {
                        chunk: path.to_path_buf(),
                        committed: cur.committed,
                        entry: Entry {
                            txid: f.txid,
                            is_signature: f.is_signature,
                            payload: f.payload,
                        },
                    }));
                }
                Some(Err(p)) => return Err(p.error.to_corrupt(path, p.offset, self.expected)),
                None => {
                    let seen = self.expected - 1;
                    if let Some(last) = cur.last {
                        if seen != last {
                            return Err(LedgerError::corrupt(
                                path,
                                cur.reader.pos(),
                                None,
                                Some(self.expected),
                                format!("chunk ends at seqno {seen} but its name says {last}"),
                            ));
                        }
                    }
                    self.done_bytes += cur.reader.len();
                    self.current = None;
                }
            }
        }
    }
}

impl Iterator for ChunkScanner {
    type Item = Result<ScannedEntry, LedgerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        match self.step() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.finished = true;
                None
            }
            Err(e) => {
                self.finished = true;
                Some(Err(e))
            }
        }
    }
}
