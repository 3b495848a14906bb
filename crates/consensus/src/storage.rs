//! raft-rs `Storage` over the engine's ledger: the Raft log *is* the ledger.
//!
//! Index = seqno, term = view. Only the hard state (term, vote, commit) and the
//! commit mark live beside the ledger, in small files replaced atomically.

use covenant_types::SeqNo;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use covenant_engine::Engine;
use raft::eraftpb::{ConfState, Entry, HardState};
use raft::{GetEntriesContext, RaftState, StorageError};
use serde::{Deserialize, Serialize};

use crate::ConsensusError;

/// Entry context byte: set for signature transactions.
pub(crate) const CTX_SIGNATURE: u8 = 1;

pub(crate) fn lock(engine: &Mutex<Engine>) -> MutexGuard<'_, Engine> {
    engine.lock().unwrap_or_else(|e| e.into_inner())
}

/// A failed write of a state file: out of space (retried once space returns), or
/// anything else.
fn state_error(path: &Path, e: std::io::Error) -> ConsensusError {
    if covenant_engine::io_no_space(&e) {
        ConsensusError::NoSpace {
            path: path.to_path_buf(),
        }
    } else {
        ConsensusError::State {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}

/// The persisted part of Raft's state that is not in the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardStateFile {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
    /// The configuration last applied to raft-rs and the seqno that wrote it
    /// (absent: the bootstrap configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<AppliedConf>,
}

/// A configuration applied at a seqno (see [`crate::Membership`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedConf {
    pub seqno: u64,
    pub membership: crate::Membership,
}

impl HardStateFile {
    fn path(dir: &Path) -> PathBuf {
        dir.join("raft_state.json")
    }

    /// Reads the state, or the default for a new node.
    pub fn load(dir: &Path) -> Result<HardStateFile, ConsensusError> {
        let path = Self::path(dir);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ConsensusError::State {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HardStateFile::default()),
            Err(e) => Err(ConsensusError::State {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// Durably replaces the state (write to a temporary file, fsync, rename, fsync dir):
    /// a vote must never be forgotten after it was sent.
    pub fn store(&self, dir: &Path) -> Result<(), ConsensusError> {
        let path = Self::path(dir);
        let tmp = dir.join("raft_state.json.tmp");
        let err = |e: std::io::Error| state_error(&path, e);
        let bytes = serde_json::to_vec(self).map_err(|e| ConsensusError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut f = fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(err)?;
        fs::rename(&tmp, &path).map_err(err)?;
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)
    }
}

/// The highest committed seqno this node has told anyone about, in `commit_mark`
/// beside the hard state. It is rewritten (temporary file, rename) before every
/// publication of a higher one (once per committed signature), so a restarted node starts from it instead of
/// reporting less than it knew. Not fsynced, so an advance costs no disk wait: a
/// killed process never loses it; after a power loss it may lag by the last
/// advances until the primary's next message (the ledger itself is fsynced first).
pub struct CommitMark;

impl CommitMark {
    fn path(dir: &Path) -> PathBuf {
        dir.join("commit_mark")
    }

    /// The recorded committed seqno (0 when none was recorded or the file is unreadable:
    /// the mark is a floor, and Raft's own messages raise the commit again).
    pub fn load(dir: &Path) -> u64 {
        fs::read_to_string(Self::path(dir))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn store(dir: &Path, commit: u64) -> Result<(), ConsensusError> {
        let path = Self::path(dir);
        let tmp = dir.join("commit_mark.tmp");
        let err = |e: std::io::Error| state_error(&path, e);
        fs::write(&tmp, commit.to_string()).map_err(err)?;
        fs::rename(&tmp, &path).map_err(err)
    }
}

/// What `Storage` needs besides the ledger.
#[derive(Debug)]
pub(crate) struct Meta {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// Last index handed to raft-rs as stable (`advance_append_async`, before the
    /// fsync; durability is reported by `on_persist_ready`). raft-rs keeps entries past
    /// it in its own unstable log and requires `Storage` to end exactly here, even
    /// though the primary's ledger already holds its own proposals.
    pub stable_last: u64,
}

/// The ledger seen as a Raft log. Never called with the engine lock held (the
/// replica releases it before calling into raft-rs).
#[derive(Clone)]
pub struct LedgerStorage {
    pub(crate) engine: Arc<Mutex<Engine>>,
    pub(crate) meta: Arc<Mutex<Meta>>,
    /// Set when `term` or `entries` failed for another reason than asking before
    /// this ledger's start (an entry not stable yet, a read error). raft-rs asks
    /// for a snapshot after *any* failure to read the log, and a follower merely
    /// behind must never be told to replace its ledger: `snapshot` then refuses.
    pub(crate) read_failed: Arc<std::sync::atomic::AtomicBool>,
}

fn unavailable() -> raft::Error {
    raft::Error::Store(StorageError::Unavailable)
}

fn other(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

impl LedgerStorage {
    /// Notes a failed log read that a snapshot would not answer.
    fn note<T>(&self, r: raft::Result<T>) -> raft::Result<T> {
        if let Err(e) = &r {
            if !matches!(e, raft::Error::Store(StorageError::Compacted)) {
                self.read_failed
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        r
    }

    fn stable_last(&self) -> u64 {
        self.meta
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stable_last
    }

    fn read_entries(
        &self,
        low: u64,
        high: u64,
        max_size: u64,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let stable_last = self.stable_last();
        let engine = lock(&self.engine);
        if low < engine.first_seqno().0 {
            // Before a snapshot this node started from: raft-rs points the follower
            // at a snapshot instead (see `snapshot` below).
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > stable_last.min(engine.last_seqno().0) + 1 {
            return Err(unavailable());
        }
        // Only replication to another node needs the bytes; raft-rs reads committed
        // entries too (to hand them to the application), but they were applied to
        // the store when appended, so terms and indexes are enough there.
        let with_data = context.can_async();
        let mut out = Vec::new();
        let mut size = 0u64;
        for seqno in low..high {
            let mut e = Entry {
                index: seqno,
                ..Default::default()
            };
            if with_data {
                let entry = engine.ledger().read(SeqNo(seqno)).map_err(other)?;
                e.term = entry.txid.view.0;
                if entry.is_signature {
                    e.context = vec![CTX_SIGNATURE].into();
                }
                size += entry.payload.len() as u64;
                e.data = entry.payload.into();
            } else {
                e.term = engine.view_at(SeqNo(seqno)).ok_or_else(unavailable)?.0;
            }
            // raft-rs semantics: always at least one entry, then stop at the limit.
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    fn read_term(&self, idx: u64) -> raft::Result<u64> {
        if idx == 0 {
            return Ok(0);
        }
        if idx > self.stable_last() {
            return Err(unavailable());
        }
        let engine = lock(&self.engine);
        if idx + 1 < engine.first_seqno().0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        // Also answers for the seqno of the snapshot a node started from.
        engine
            .view_at(SeqNo(idx))
            .map(|v| v.0)
            .ok_or_else(unavailable)
    }
}

impl raft::Storage for LedgerStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let m = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        Ok(RaftState {
            hard_state: m.hard_state.clone(),
            conf_state: m.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into().unwrap_or(u64::MAX);
        self.note(self.read_entries(low, high, max_size, context))
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.note(self.read_term(idx))
    }

    fn first_index(&self) -> raft::Result<u64> {
        // 1 for a full ledger; one past the snapshot for a node that started from one.
        Ok(lock(&self.engine).first_seqno().0)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.stable_last())
    }

    /// Asked on the primary for a follower whose log ends before this ledger's
    /// start (this node started from a snapshot; ledgers are never compacted, so
    /// nothing else gets here). The answer names this node's newest committed
    /// snapshot and carries no data: the follower fetches the file over HTTPS
    /// (`/internal/snapshot`, nodes only) and verifies it as a joining node does.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<raft::eraftpb::Snapshot> {
        let unavailable = || {
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ))
        };
        // raft-rs reads the term and the entries, then asks for a snapshot, under
        // the Raft lock: a failure just noted was this follower's (a stale note
        // only delays a needed snapshot by one heartbeat).
        if self
            .read_failed
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            return unavailable();
        }
        let conf_state = self
            .meta
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .conf_state
            .clone();
        let mut engine = lock(&self.engine);
        if engine.first_seqno() <= SeqNo(1) {
            // A whole ledger answers every follower with entries.
            return unavailable();
        }
        match engine.latest_snapshot() {
            Some((txid, _))
                if txid.seqno.0 >= request_index && txid.seqno.next() >= engine.first_seqno() =>
            {
                let mut snapshot = raft::eraftpb::Snapshot::default();
                let meta = snapshot.mut_metadata();
                meta.index = txid.seqno.0;
                meta.term = txid.view.0;
                meta.set_conf_state(conf_state);
                Ok(snapshot)
            }
            _ => {
                // One is taken at the next signature; raft-rs asks again later.
                engine.request_snapshot();
                unavailable()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_mark_survives_and_a_missing_or_broken_one_is_a_floor_of_zero() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(CommitMark::load(dir.path()), 0);
        CommitMark::store(dir.path(), 41).unwrap();
        CommitMark::store(dir.path(), 42).unwrap();
        assert_eq!(CommitMark::load(dir.path()), 42);
        assert!(!dir.path().join("commit_mark.tmp").exists());
        fs::write(dir.path().join("commit_mark"), "not a number").unwrap();
        assert_eq!(CommitMark::load(dir.path()), 0);
    }
}
