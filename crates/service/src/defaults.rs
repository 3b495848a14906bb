//! Defaults shared by the binary's flags, `node.toml` and the node's own config,
//! named once so that they cannot drift apart.

/// A signature (and so a commit) at least this often, in milliseconds, when
/// anything is unsigned.
pub const SIG_MS_INTERVAL: u64 = 1000;
/// A signature after at most this many transactions.
pub const SIG_TX_INTERVAL: u64 = 5000;
/// Largest request body accepted (larger: 413).
pub const MAX_BODY_BYTES: usize = 1 << 20;
