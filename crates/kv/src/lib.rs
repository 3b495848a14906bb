//! The transactional key-value store (SPEC §1, §3, §7).
//!
//! State is a set of named maps of byte keys to byte values. A name starting with
//! `public:` is a public map (stored in clear in the ledger); every other map is
//! private (encrypted under the ledger secret). Requests run as [`Tx`]s that record
//! what they read (with the version of each key) and what they write; committing a
//! transaction checks that nothing it read has changed since (optimistic
//! concurrency), assigns the next seqno and produces a [`WriteSet`]: the only thing
//! that goes to the ledger and to other nodes.

#![forbid(unsafe_code)]

mod codec;
mod entry;
mod snapshot;
mod store;
mod writeset;

use covenant_types::{SeqNo, TxId};

pub use entry::{TxEntry, ENTRY_FORMAT_VERSION};
pub use snapshot::{PublicSnapshot, Snapshot};
pub use store::{ReadSet, Store, Tx};
pub use writeset::{WriteSet, WRITE_SET_FORMAT_VERSION};

/// Prefix that makes a map public (stored in clear).
pub const PUBLIC_PREFIX: &str = "public:";

/// Is `map` stored in clear in the ledger?
pub fn is_public(map: &str) -> bool {
    map.starts_with(PUBLIC_PREFIX)
}

/// Every way the store refuses an operation or an input.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// Something this transaction read was changed by a transaction that committed first.
    #[error(
        "transaction conflict on map {map:?}: a key read at version {read:?} is now at {current:?}"
    )]
    Conflict {
        map: String,
        read: Option<u64>,
        current: Option<u64>,
    },
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("transaction {got} cannot follow seqno {last}")]
    OutOfOrder { last: SeqNo, got: TxId },
    #[error("cannot roll back to seqno {to}: seqno {committed} is committed")]
    BelowCommitted { to: SeqNo, committed: SeqNo },
    #[error("cannot roll back to seqno {to}: undo history starts at {oldest}")]
    NoUndo { to: SeqNo, oldest: SeqNo },
    #[error("map name {0:?} is empty or too long")]
    BadMapName(String),
    #[error(transparent)]
    Crypto(#[from] covenant_crypto::CryptoError),
}

impl KvError {
    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        KvError::Malformed {
            what,
            reason: reason.into(),
        }
    }
}
