//! [`HistoryReader`]: committed transactions read back without the engine.
//!
//! A node keeps its [`Engine`](crate::Engine) behind one mutex shared with the
//! write path, so a ranged historical query through
//! [`Engine::read_tx`](crate::Engine::read_tx) would hold that mutex for every
//! old entry's file read and decryption, stalling writers. Committed entries
//! never change, nor does the secret that opens them, so a [`HistoryReader`]
//! reads them through a [`LedgerReader`] and the engine's secrets (a shared
//! handle the engine keeps current) with no engine lock at all.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use covenant_crypto::{LedgerSecret, LedgerSecrets};
use covenant_kv::{TxEntry, WriteSet};
use covenant_ledger::{Entry, LedgerReader};
use covenant_types::{SeqNo, TxId};

use crate::error::EngineError;

/// What reading a transaction needs of the engine besides its ledger: the
/// secrets and, during a recovery, where the old (not yet readable) private
/// domain ends. The engine rewrites it, under `&mut self`, whenever either
/// changes (rekey, rollback, recovery), so readers see one consistent pair.
#[derive(Debug)]
pub(crate) struct ReadKeys {
    pub(crate) secrets: LedgerSecrets,
    pub(crate) recovery_boundary: Option<SeqNo>,
}

/// Reads committed transactions like [`Engine::read_tx`](crate::Engine::read_tx)
/// without the engine, from any thread (see [`Engine::history_reader`](crate::Engine::history_reader)).
///
/// Clones are cheap and share one cache of file handles. It stays valid while
/// the engine lives: commits, archives, rekeys and a completed recovery are
/// seen at once. After the engine is reopened, take a new one.
#[derive(Debug, Clone)]
pub struct HistoryReader {
    ledger: LedgerReader,
    keys: Arc<RwLock<ReadKeys>>,
}

impl HistoryReader {
    pub(crate) fn new(ledger: LedgerReader, keys: Arc<RwLock<ReadKeys>>) -> HistoryReader {
        HistoryReader { ledger, keys }
    }

    /// The decoded write set of the transaction at `seqno`, exactly as
    /// [`Engine::read_tx`](crate::Engine::read_tx) answers, when `seqno` is in a
    /// committed ledger chunk. [`EngineError::NotInCommittedHistory`] when it
    /// is not (not committed yet, or its chunk not closed and committed): ask
    /// the engine then. [`EngineError::NotHeld`] before the engine's first seqno.
    pub fn read_tx(&self, seqno: SeqNo) -> Result<(TxId, WriteSet), EngineError> {
        check_held(self.ledger.first_seqno(), seqno)?;
        if seqno == SeqNo::ZERO {
            return Err(EngineError::NoSuchTx(seqno));
        }
        let e = self.ledger.read(seqno)?;
        // Held only to take the secret of its time: decryption runs unlocked.
        let (secret, boundary) = {
            let k = self.keys();
            (
                k.secrets.for_seqno(e.txid.seqno).clone(),
                k.recovery_boundary,
            )
        };
        open_tx(&e, &secret, boundary)
    }

    /// Every seqno up to this one that the engine holds is readable here (the
    /// end of the last committed chunk).
    pub fn last_readable(&self) -> SeqNo {
        self.ledger.last_readable()
    }

    fn keys(&self) -> RwLockReadGuard<'_, ReadKeys> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Decodes a ledger entry and opens its private part under `secret` (the one
/// of its seqno): the common end of [`Engine::read_tx`](crate::Engine::read_tx)
/// and [`HistoryReader::read_tx`]. While a recovery waits for the old secrets
/// (`recovery_boundary`), private writes before the boundary are refused.
pub(crate) fn open_tx(
    e: &Entry,
    secret: &LedgerSecret,
    recovery_boundary: Option<SeqNo>,
) -> Result<(TxId, WriteSet), EngineError> {
    let bad = |reason: String| EngineError::BadEntry {
        txid: e.txid,
        reason,
    };
    let entry = TxEntry::decode(&e.payload).map_err(|x| bad(x.to_string()))?;
    if !entry.private.is_empty() {
        check_recovered(recovery_boundary, e.txid.seqno)?;
    }
    let ws = entry
        .write_set(e.txid, Some(secret))
        .map_err(|x| bad(x.to_string()))?;
    Ok((e.txid, ws))
}

/// Seqnos before `first` (the engine's first seqno) are only in the snapshot.
pub(crate) fn check_held(first: SeqNo, seqno: SeqNo) -> Result<(), EngineError> {
    if seqno != SeqNo::ZERO && seqno < first {
        return Err(EngineError::NotHeld(seqno));
    }
    Ok(())
}

/// Refuses what needs the old secrets while a recovery waits for them.
pub(crate) fn check_recovered(
    recovery_boundary: Option<SeqNo>,
    seqno: SeqNo,
) -> Result<(), EngineError> {
    match recovery_boundary {
        Some(b) if seqno < b => Err(EngineError::NotRecovered(seqno)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_reader_is_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<HistoryReader>();
        check::<LedgerReader>();
    }
}
