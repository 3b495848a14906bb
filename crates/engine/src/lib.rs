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

mod audit;
mod engine;

pub use audit::{audit_ledger, AuditError, AuditReport};
pub use covenant_kv::WriteSet;
pub use covenant_ledger::SyncTicket;
pub use engine::{Engine, EngineConfig, EngineError, TxStatus};
