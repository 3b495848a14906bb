//! Every way the engine refuses or fails (a leaf module: the engine and its
//! snapshots both report through it).

use std::path::PathBuf;

use covenant_kv::KvError;
use covenant_ledger::LedgerError;
use covenant_merkle::MerkleError;
use covenant_types::{SeqNo, TxId};

/// Every way the engine refuses or fails.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Kv(#[from] KvError),
    /// A new ledger secret was refused (see `Engine::add_ledger_secret`).
    #[error("rekey refused: {0}")]
    Rekey(String),
    /// A disaster recovery cannot start or complete (see `Engine::open_for_recovery`).
    #[error("recovery refused: {0}")]
    Recovery(String),
    #[error(transparent)]
    Ledger(LedgerError),
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    #[error(transparent)]
    Crypto(#[from] covenant_crypto::CryptoError),
    #[error("ledger entry {txid} is invalid: {reason}")]
    BadEntry { txid: TxId, reason: String },
    #[error("transaction {0} does not exist")]
    NoSuchTx(SeqNo),
    #[error("the ledger is empty: nothing to sign")]
    NothingToSign,
    /// History before [`Engine::first_seqno`] is only in the snapshot this node
    /// started from, which keeps the state, not the transactions.
    #[error("transaction {0} precedes this node's ledger, which starts from a snapshot")]
    NotHeld(SeqNo),
    /// A recovering service replayed only the public domain so far: what the
    /// transaction wrote privately is readable once the members' shares restored
    /// the ledger secrets.
    #[error("transaction {0} is from before the recovery: its private writes are readable once the recovery members' shares are in")]
    NotRecovered(SeqNo),
    /// A [`crate::HistoryReader`] only serves transactions in committed ledger
    /// chunks; this one is not in one (yet): ask the engine
    /// ([`crate::Engine::read_tx`]).
    #[error("transaction {0} is not in committed history yet: read it through the engine")]
    NotInCommittedHistory(SeqNo),
    #[error("invalid snapshot: {0}")]
    BadSnapshot(String),
    #[error("the ledger starts at seqno {first}: it continues the snapshot {}, which is missing (is snapshot_dir set?)", path.display())]
    MissingSnapshot { first: SeqNo, path: PathBuf },
    /// The ledger's disk has less free space than [`EngineConfig::min_free_bytes`]:
    /// new transactions wait until space returns (nothing written is affected).
    #[error("the ledger's disk is full ({free} bytes free, {min} kept in reserve): writes resume when space is freed")]
    DiskFull { free: u64, min: u64 },
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<LedgerError> for EngineError {
    /// A read before the ledger's first entry is the engine's own [`EngineError::NotHeld`]
    /// (the node started from a snapshot), so callers meet one "not held" error.
    fn from(e: LedgerError) -> EngineError {
        match e {
            LedgerError::BeforeStart { seqno, .. } => EngineError::NotHeld(seqno),
            LedgerError::NotInCommittedChunk(seqno) => EngineError::NotInCommittedHistory(seqno),
            other => EngineError::Ledger(other),
        }
    }
}

impl EngineError {
    /// A write refused for lack of disk space, which left the engine as it was:
    /// the same step can be tried again once space returns.
    pub fn is_no_space(&self) -> bool {
        match self {
            EngineError::DiskFull { .. } => true,
            EngineError::Ledger(e) => e.is_no_space(),
            EngineError::Io { source, .. } => covenant_ledger::io_no_space(source),
            _ => false,
        }
    }
}
