//! The transaction engine: the one place where a KV transaction becomes a ledger
//! entry, a Merkle leaf, and eventually part of a signed root and a receipt.
//!
//! Write path (SPEC §12): `Store::begin` → the request's reads and writes →
//! [`Engine::commit_tx`] (conflict check, seqno, write set, encrypted entry,
//! ledger append, Merkle leaf) → [`Engine::emit_signature`] every
//! `sig_tx_interval` transactions (or when the node's timer says so) →
//! [`Engine::flush`] (group commit: one fsync, then everything up to the last
//! durable signature is Committed) → [`Engine::receipt`].
//!
//! Replication (a later layer) slots in between "entry produced" and "committed":
//! backups feed the primary's entries to [`Engine::apply_entry`], the same path a
//! node uses to replay its own ledger at start.

#![forbid(unsafe_code)]

//!
//! Snapshots ([`SnapshotFile`]): the state and Merkle checkpoint right after a
//! committed signature, written to `snapshot_dir`, so a node can start from one
//! (with a ledger that continues it, see [`Engine::first_seqno`]) instead of
//! replaying from seqno 1.

mod audit;
mod engine;
mod error;
mod history;
pub mod pacer;
pub mod rekey;
mod snapshot;

pub use audit::{
    audit_archived_ledger, audit_ledger, audit_ledger_with_snapshot, default_snapshot_path,
    AuditError, AuditReport, GovernanceEvent, GOV_PROPOSALS_INFO,
};
pub use covenant_kv::WriteSet;
pub use covenant_ledger::{io_no_space, ArchiveReport, LedgerReader, SyncTicket};
pub use engine::{
    Engine, EngineConfig, EngineError, TxEvent, TxObserver, TxStatus, DEFAULT_MIN_FREE_BYTES,
};
pub use history::HistoryReader;
pub use rekey::SecretRecipient;
pub use snapshot::{
    install_snapshot, SnapshotFile, SnapshotIndex, SnapshotInfo, SNAPSHOT_FILE_MAGIC,
};
