use std::path::{Path, PathBuf};

use covenant_types::{SeqNo, TxId};

/// Everything that can go wrong with a ledger directory.
///
/// Corruption errors name the transaction when it can be read, otherwise the
/// seqno that was expected there, and always the file and byte offset, so an
/// operator can find the damage.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}", describe_corrupt(.txid, .seqno_hint, .file, *.offset, .reason))]
    Corrupt {
        /// The TxId recorded in the damaged frame, when its seqno is the expected one.
        txid: Option<TxId>,
        /// The seqno expected at this position, when known.
        seqno_hint: Option<u64>,
        file: PathBuf,
        offset: u64,
        reason: String,
    },

    /// The set of files in the directory is inconsistent (gap, overlap, stray file).
    #[error("inconsistent ledger directory {}: {reason}", dir.display())]
    Layout { dir: PathBuf, reason: String },

    #[error("out-of-order append: expected seqno {expected}, got {got}")]
    OutOfOrder { expected: u64, got: u64 },

    #[error("view {got} for seqno {seqno} is invalid: views start at 1 and never decrease (minimum here is {min})")]
    BadView { seqno: u64, got: u64, min: u64 },

    #[error("no ledger entry with seqno {0}")]
    NotFound(SeqNo),

    /// A [`crate::LedgerReader`] only reads committed chunks, which never change;
    /// this seqno is not in one (not appended, not committed, or its chunk not
    /// renamed `.committed` yet): read it through the [`crate::Ledger`].
    #[error("seqno {0} is not in a committed ledger chunk: read it through the ledger")]
    NotInCommittedChunk(SeqNo),

    /// The ledger continues a snapshot and holds nothing before `first`.
    #[error(
        "seqno {seqno} precedes this ledger, which starts at seqno {first} (after a snapshot)"
    )]
    BeforeStart { seqno: SeqNo, first: SeqNo },

    #[error("cannot truncate to seqno {requested}: entries up to {committed} are committed")]
    BelowCommitted { requested: SeqNo, committed: SeqNo },

    #[error("cannot commit seqno {requested}: only entries up to {synced} are durably synced")]
    NotSynced { requested: SeqNo, synced: SeqNo },

    #[error("payload of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: u64, max: u64 },

    /// An earlier write or sync failed; the on-disk state is uncertain until reopened.
    #[error("ledger unusable after an earlier failure ({0}); reopen it to recover")]
    Poisoned(String),

    /// Truncation must not race a prepared sync (it could rename files under it).
    #[error("cannot truncate while a prepared sync is outstanding")]
    SyncInFlight,
}

fn describe_corrupt(
    txid: &Option<TxId>,
    seqno: &Option<u64>,
    file: &Path,
    offset: u64,
    reason: &str,
) -> String {
    let file = file.display();
    match (txid, seqno) {
        (Some(t), _) => {
            format!("corrupt ledger entry {t} in {file} at byte {offset}: {reason}")
        }
        (None, Some(s)) => {
            format!("corrupt ledger entry at seqno {s} in {file} at byte {offset}: {reason}")
        }
        (None, None) => format!("corrupt ledger file {file} at byte {offset}: {reason}"),
    }
}

impl LedgerError {
    /// The file system is out of space (or quota). Such a failed write leaves the
    /// ledger as it was (the bytes stay buffered and are written again), so it does
    /// not poison the ledger where that holds.
    pub fn is_no_space(&self) -> bool {
        match self {
            LedgerError::Io { source, .. } => io_no_space(source),
            _ => false,
        }
    }

    /// A file that is not there (any more).
    pub fn is_not_found(&self) -> bool {
        matches!(self, LedgerError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> LedgerError {
        LedgerError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        file: impl Into<PathBuf>,
        offset: u64,
        txid: Option<TxId>,
        seqno_hint: Option<u64>,
        reason: impl Into<String>,
    ) -> LedgerError {
        LedgerError::Corrupt {
            txid,
            seqno_hint,
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    pub(crate) fn layout(dir: impl Into<PathBuf>, reason: impl Into<String>) -> LedgerError {
        LedgerError::Layout {
            dir: dir.into(),
            reason: reason.into(),
        }
    }
}

/// ENOSPC or EDQUOT.
pub fn io_no_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || matches!(e.raw_os_error(), Some(28) | Some(122))
}
