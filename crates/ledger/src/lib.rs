//! covenant's ledger files: append-only, checksummed chunk files holding opaque
//! transaction payloads.
//!
//! The crate knows nothing about write sets, Merkle trees or signatures; each
//! entry only carries its [`TxId`], one flag saying "this entry is a signature
//! transaction" (chunks may only close after one) and the payload bytes.
//!
//! # Directory layout
//!
//! A ledger is a directory of chunk files. Seqnos are gapless across chunks and
//! start at 1; chunk ranges must be contiguous. A node that started from a
//! snapshot at seqno `b` has a ledger whose first chunk is `ledger_<b+1>`: it
//! holds nothing before (see [`LedgerConfig::start_after`], [`Ledger::first_seqno`]).
//!
//! | name                                  | meaning                                   |
//! |---------------------------------------|-------------------------------------------|
//! | `ledger_<first>`                      | open chunk, being appended (only the last)|
//! | `ledger_<first>-<last>`               | closed, not yet committed                 |
//! | `ledger_<first>-<last>.committed`     | closed and committed (never modified)     |
//! | `ledger_<first>-<last>.committed.idx` | frame offsets of a committed chunk        |
//! | `ledger_*.tmp`                        | interrupted atomic write; removed at open |
//!
//! Committed chunks form a prefix of the ledger; `<first>`/`<last>` are decimal
//! seqnos without leading zeros.
//!
//! # Chunk file
//!
//! All integers are little-endian.
//!
//! ```text
//! header (20 bytes):  magic b"CVNTLDG1" (8) | first seqno u64 (8) | crc32c(previous 16 bytes) u32 (4)
//! frame  (25 + len):  len u32 | view u64 | seqno u64 | flags u8 | payload [len] | crc32c u32
//! ```
//!
//! The frame checksum is CRC-32C over everything from `len` through the payload.
//! `flags` bit 0 marks a signature transaction; all other bits must be zero.
//! `len` is at most [`MAX_PAYLOAD_LEN`] (256 MiB), refused on write and read.
//! The header's first seqno must equal the file name's. Nothing may follow the
//! last frame of a chunk.
//!
//! A chunk closes after a signature entry is appended once the chunk is at
//! least [`LedgerConfig::chunk_threshold_bytes`] long: it is flushed, fdatasynced
//! and renamed `ledger_<first>-<last>` (then the directory is synced), so closed
//! chunks are always complete on disk. The next append starts a new file.
//!
//! # Index file
//!
//! ```text
//! magic b"CVNTIDX1" (8) | first u64 | last u64 | chunk file length u64
//! | (last - first + 1) frame offsets u64 | crc32c(everything before) u32
//! ```
//!
//! Written (atomically, via a `.tmp` file) when a chunk is committed. It is only
//! an optimisation: when it is missing, or disagrees with the chunk's name or
//! length, or fails its checksum or bounds checks, it is rebuilt by scanning the
//! chunk (with a `tracing::warn`).
//!
//! # Archival
//!
//! [`Ledger::archive`] moves committed chunks (with their index files) out of
//! the ledger directory into another one, possibly on another file system, to
//! keep the ledger's disk small. Directories listed in
//! [`LedgerConfig::read_only_dirs`] (and passed to [`ChunkScanner::open_with`]
//! and [`Ledger::first_seqno_on_disk_in`]) contribute their `.committed` chunks
//! as if they were in the ledger directory; nothing is ever written there. A
//! chunk found in several places (an interrupted archive) is read from the
//! ledger directory first. Seqnos must stay gapless across all directories.
//!
//! # Reading history concurrently
//!
//! [`Ledger::reader`] hands out a [`LedgerReader`]: reads of committed chunks
//! that need no `&Ledger`, so a node can serve old entries without holding the
//! lock its write path holds around the ledger. Committed chunks are immutable,
//! so all the ledger shares with its readers is the list of them (updated on
//! commit and archive, under a lock held only for that update or one lookup).
//!
//! # Recovery
//!
//! [`Ledger::open`] fully validates every non-committed chunk. A torn tail of
//! the open chunk (an incomplete last frame, or a last frame with a bad
//! checksum followed by nothing but zero bytes) is truncated to the last whole
//! entry; any other bad frame is [`LedgerError::Corrupt`]. Committed chunks are
//! checked only by header and index at open; their frames are verified when
//! read. [`ChunkScanner`] is the strict, sequential, read-only verifier for
//! offline audits.

#![forbid(unsafe_code)]

mod chunkio;
mod error;
mod format;
mod ledger;
mod reader;
mod scanner;

pub use covenant_types::{SeqNo, TxId};
pub use error::{io_no_space, LedgerError};
pub use format::MAX_PAYLOAD_LEN;
pub use ledger::{
    ArchiveReport, Entry, Ledger, LedgerConfig, RecoveryReport, SyncTicket,
    DEFAULT_CHUNK_THRESHOLD_BYTES,
};
pub use reader::LedgerReader;
pub use scanner::{ChunkScanner, ScannedEntry};
