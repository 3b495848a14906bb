//! Raft replication for covenant (SPEC §1, §3): the primary executes transactions
//! and replicates their sealed ledger entries (write sets, not requests); backups
//! append the same bytes. TxId view = Raft term, seqno = Raft index, and the Raft
//! log is the ledger itself ([`storage::LedgerStorage`]).
//!
//! Write path on the primary ([`Replica::write`]), under the Raft lock then the
//! engine lock: the next index is read from raft-rs, the transaction commits in the
//! engine at exactly that TxId (entry sealed, appended, Merkle leaf), and the entry
//! is proposed; raft-rs appends it synchronously at the predicted index. A thread
//! ([`Replica::start`]) ticks Raft, steps incoming messages, persists what raft-rs
//! hands over (appending backups' entries, rolling back conflicting suffixes, the
//! blank entry of a new view), fsyncs outside both locks, and turns Raft's commit
//! index into the engine's commit: the last signature at or below it.

#![forbid(unsafe_code)]

mod membership;
mod storage;

use covenant_types::SeqNo;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use covenant_engine::pacer::SignPacer;
use covenant_engine::{Engine, EngineError};
use covenant_types::{TxId, View};
use protobuf::Message as _;
use raft::eraftpb::{Entry, EntryType, HardState, Message, MessageType};
use raft::{RawNode, StateRole};
use tokio::sync::watch;

use membership::MembershipState;
pub use membership::{Membership, MEMBERSHIP_KEY, MEMBERSHIP_MAP};
use storage::{lock, Meta, CTX_SIGNATURE};
pub use storage::{AppliedConf, CommitMark, HardStateFile, LedgerStorage};

/// Why consensus refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// Writes go to the primary; `leader` is its Raft id when known.
    #[error("this node is not the primary (primary: {leader:?})")]
    NotPrimary { leader: Option<u64> },
    #[error("the primary is not taking writes yet (starting its view, or handing leadership over); retry")]
    NotReady,
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("raft state file {}: {reason}", path.display())]
    State { path: PathBuf, reason: String },
    #[error("no space left to write {}", path.display())]
    NoSpace { path: PathBuf },
    #[error("malformed raft message: {0}")]
    BadMessage(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("invalid configuration change: {0}")]
    BadMembership(String),
    /// Configuration changes go one at a time.
    #[error("another configuration change (at seqno {0}) is not committed yet; retry")]
    MembershipChangePending(SeqNo),
    /// Persisting Raft's output failed (disk error, corrupt entry): this replica stopped
    /// taking part, since raft-rs cannot continue from a half-processed output.
    #[error("this node stopped replicating: {0}")]
    Failed(String),
}

impl ConsensusError {
    /// A write refused for lack of disk space that left everything as it was.
    pub fn is_no_space(&self) -> bool {
        match self {
            ConsensusError::NoSpace { .. } => true,
            ConsensusError::Engine(e) => e.is_no_space(),
            _ => false,
        }
    }
}

/// Delivers encoded Raft messages to other nodes. Best effort: Raft retries.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, to: u64, message: Vec<u8>);
}

/// How a replica runs.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This node's Raft id (non-zero).
    pub id: u64,
    /// Raft ids of the voting nodes a new network starts with (this one included).
    /// Once the ledger holds a configuration ([`MEMBERSHIP_MAP`]), that one rules.
    pub voters: Vec<u64>,
    /// Where the hard state file lives (beside the ledger).
    pub state_dir: PathBuf,
    /// Raft's clock.
    pub tick: Duration,
    /// Heartbeat every this many ticks.
    pub heartbeat_ticks: usize,
    /// Elections after this many ticks without a leader (randomized up to twice it).
    pub election_ticks: usize,
    /// The primary signs at least this often when anything is unsigned.
    pub sig_interval: Duration,
}

impl ReplicaConfig {
    pub fn new(id: u64, voters: Vec<u64>, state_dir: impl Into<PathBuf>) -> ReplicaConfig {
        ReplicaConfig {
            id,
            voters,
            state_dir: state_dir.into(),
            tick: Duration::from_millis(50),
            heartbeat_ticks: 2,
            election_ticks: 20,
            sig_interval: Duration::from_millis(1000),
        }
    }
}

/// A node's view of the network, for `/node/network/nodes` and forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub id: u64,
    pub term: u64,
    pub leader: Option<u64>,
    pub is_primary: bool,
    /// Raft's commit index (majority-replicated).
    pub commit_index: u64,
    /// The engine's committed seqno (last signature covered by the commit index).
    pub committed_seqno: SeqNo,
}

/// The primary's log starts after this node's ends (it started from a snapshot, and
/// this node was away since before it): Raft cannot send what is missing, only
/// point at the primary's newest committed snapshot. This replica stopped; the
/// node installs a snapshot at least as new, fetched from the primary, in place of
/// its ledger, and starts again from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotNeeded {
    /// The primary's snapshot: the one to fetch must be at least this new.
    pub seqno: SeqNo,
    pub view: View,
    /// The primary's Raft id.
    pub from: u64,
}

struct Inner {
    id: u64,
    raft: Mutex<RawNode<LedgerStorage>>,
    engine: Arc<Mutex<Engine>>,
    meta: Arc<Mutex<Meta>>,
    transport: Arc<dyn Transport>,
    inbox: Mutex<mpsc::Sender<Vec<u8>>>,
    /// Set while the Raft thread waits for messages: a proposal wakes it only
    /// then (a busy thread finds the proposal on its next round anyway).
    raft_idle: std::sync::atomic::AtomicBool,
    committed: watch::Sender<SeqNo>,
    /// When a full disk was last reported (the warning repeats every 10 s).
    disk_warned: Mutex<Option<Instant>>,
    /// The committed seqno in `commit_mark` (nothing is published beyond it).
    marked: std::sync::atomic::AtomicU64,
    status: Mutex<ReplicaStatus>,
    stop: std::sync::atomic::AtomicBool,
    /// Set when the thread stopped on an error; writes are refused from then on.
    failed: Mutex<Option<String>>,
    /// Set (once) when the thread stopped because the primary sent a snapshot.
    snapshot_needed: watch::Sender<Option<SnapshotNeeded>>,
    /// Notified (with the engine's mutex) each time this replica appends entries to
    /// the engine: a write waiting for its view's blank entry wakes then.
    appended: Condvar,
    membership: Mutex<MembershipState>,
    /// Serializes configuration changes (one in flight at a time).
    change_lock: Mutex<()>,
    config: ReplicaConfig,
}

/// One node's Raft replica around its engine. Cheap to clone.
#[derive(Clone)]
pub struct Replica(Arc<Inner>);

/// The lock if it is free now (a poisoned one too: see [`lock`]).
fn lock_now<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

fn raft_lock(raft: &Mutex<RawNode<LedgerStorage>>) -> MutexGuard<'_, RawNode<LedgerStorage>> {
    raft.lock().unwrap_or_else(|e| e.into_inner())
}

impl Replica {
    /// Starts the replica's thread. The engine must have been opened with
    /// `commit_on_sync = false`; it is shared with request handlers, who write
    /// through [`Replica::write`].
    pub fn start(
        config: ReplicaConfig,
        engine: Arc<Mutex<Engine>>,
        transport: Arc<dyn Transport>,
    ) -> Result<(Replica, std::thread::JoinHandle<()>), ConsensusError> {
        let saved = HardStateFile::load(&config.state_dir)?;
        let mark = CommitMark::load(&config.state_dir);
        let (last, committed_seqno, written) = {
            let mut e = lock(&engine);
            // What this node knew committed before it stopped (published only after
            // the mark was written) holds again at once, not after the first message
            // from a primary: a node never reports less than it did.
            let known = mark.max(saved.commit).min(e.last_seqno().0);
            e.advance_commit(SeqNo(known))?;
            let written = match e.store().get(MEMBERSHIP_MAP, MEMBERSHIP_KEY) {
                Some(bytes) => Some((
                    e.store()
                        .version_of(MEMBERSHIP_MAP, MEMBERSHIP_KEY)
                        .unwrap_or(SeqNo::ZERO),
                    Membership::decode(&bytes)?,
                )),
                None => None,
            };
            (e.last_seqno(), e.committed_seqno(), written)
        };
        // The commit index can only be trusted up to what this ledger holds; what the
        // engine knows committed (a signature replicated to a majority) was too. A
        // node started from a snapshot has its whole (empty) ledger committed.
        let commit = saved.commit.max(mark).max(committed_seqno.0).min(last.0);
        // A term is never below the view of the log's last entry (a hard state file
        // that is gone, as after a disaster recovery, must not restart terms at 0).
        let last_view = lock(&engine).last_txid().map_or(0, |t| t.view.0);
        let hard_state = HardState {
            term: saved.term.max(last_view),
            vote: saved.vote,
            commit,
            ..Default::default()
        };
        let bootstrap = || AppliedConf {
            seqno: 0,
            membership: Membership::with_voters(config.voters.iter().copied()),
        };
        // The configuration in force is the last one written at or below the commit
        // index; one written after it is pending (there is at most one).
        let mut membership = MembershipState::default();
        let applied = match written {
            Some((seqno, m)) if seqno <= SeqNo(commit) => AppliedConf {
                seqno: seqno.0,
                membership: m,
            },
            Some((seqno, m)) => {
                membership.pending.insert(seqno.0, m);
                saved.conf.clone().unwrap_or_else(bootstrap)
            }
            None => bootstrap(),
        };
        membership.applied_seqno = applied.seqno;
        membership.applied = applied.membership;
        let conf_state = membership.applied.to_conf_state();
        let meta = Arc::new(Mutex::new(Meta {
            hard_state,
            conf_state,
            stable_last: last.0,
        }));
        let storage = LedgerStorage {
            engine: engine.clone(),
            meta: meta.clone(),
            read_failed: Default::default(),
        };
        let raft_config = raft::Config {
            id: config.id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            pre_vote: true,
            check_quorum: true,
            // Merge queued appends to one follower into one message (one proposal per
            // transaction would otherwise mean one message per transaction).
            batch_append: true,
            // Everything in the ledger is applied to the store as it is appended.
            applied: commit,
            ..Default::default()
        };
        raft_config.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, storage, &logger)?;
        let (tx, rx) = mpsc::channel();
        let (committed, _) = watch::channel(committed_seqno);
        let replica = Replica(Arc::new(Inner {
            id: config.id,
            raft: Mutex::new(raw),
            engine,
            meta,
            transport,
            inbox: Mutex::new(tx),
            raft_idle: std::sync::atomic::AtomicBool::new(false),
            committed,
            status: Mutex::new(ReplicaStatus {
                id: config.id,
                term: saved.term,
                leader: None,
                is_primary: false,
                commit_index: commit,
                committed_seqno,
            }),
            marked: std::sync::atomic::AtomicU64::new(commit),
            disk_warned: Mutex::new(None),
            stop: std::sync::atomic::AtomicBool::new(false),
            failed: Mutex::new(None),
            snapshot_needed: watch::channel(None).0,
            appended: Condvar::new(),
            membership: Mutex::new(membership),
            change_lock: Mutex::new(()),
            config,
        }));
        let r = replica.clone();
        let thread = std::thread::Builder::new()
            .name(format!("covenant-raft-{}", r.0.id))
            .spawn(move || r.run(rx))
            .map_err(|e| ConsensusError::Unsupported(format!("cannot start thread: {e}")))?;
        Ok((replica, thread))
    }

    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Hands a message received from another node to Raft (decoded by the thread).
    pub fn receive(&self, message: Vec<u8>) {
        let tx = self.0.inbox.lock().unwrap_or_else(|e| e.into_inner());
        let _ = tx.send(message);
    }

    pub fn status(&self) -> ReplicaStatus {
        *self.0.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notified with the committed seqno each time it advances.
    pub fn subscribe_committed(&self) -> watch::Receiver<SeqNo> {
        self.0.committed.subscribe()
    }

    /// Stops the thread at its next iteration.
    /// Why this replica stopped taking part, if it failed (see [`ConsensusError::Failed`]).
    pub fn failure(&self) -> Option<String> {
        self.0
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves with [`SnapshotNeeded`] once the primary sent this node a
    /// snapshot (the replica has stopped then).
    pub fn subscribe_snapshot_needed(&self) -> watch::Receiver<Option<SnapshotNeeded>> {
        self.0.snapshot_needed.subscribe()
    }

    pub fn stop(&self) {
        self.0
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.receive(Vec::new());
    }

    fn membership(&self) -> MutexGuard<'_, MembershipState> {
        self.0.membership.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration in force, and the change written but not yet committed.
    pub fn configuration(&self) -> (Membership, Option<(u64, Membership)>) {
        let m = self.membership();
        let pending = m.pending.iter().next_back().map(|(s, c)| (*s, c.clone()));
        (m.applied.clone(), pending)
    }

    /// On the primary: writes the configuration `target` (one node added as a
    /// learner, promoted, or removed), together with `extra` writes (such as the
    /// node's row in the nodes table), as one transaction. It takes effect on every
    /// node when Raft commits it. Refused while another change is uncommitted.
    pub fn change_membership(
        &self,
        target: Membership,
        extra: impl FnOnce(&mut covenant_kv::Tx),
    ) -> Result<TxId, ConsensusError> {
        let _one_at_a_time = self.0.change_lock.lock().unwrap_or_else(|e| e.into_inner());
        {
            let m = self.membership();
            if let Some((&seqno, _)) = m.pending.iter().next_back() {
                return Err(ConsensusError::MembershipChangePending(SeqNo(seqno)));
            }
            m.applied.change_to(&target)?;
        }
        let this = self.clone();
        self.write(move |e| {
            let mut tx = e.begin();
            extra(&mut tx);
            // Checked again under the Raft lock: a governance transaction may have
            // staged a change since (see `stage_membership`).
            if let Err(err) = this.stage_membership(&mut tx, &target) {
                return Ok(Err(err));
            }
            let txid = e.commit_tx(tx, None)?;
            this.note_membership(txid.seqno, target);
            Ok(Ok(txid))
        })?
    }

    /// Inside a [`Replica::write`] closure: checks that `target` may be written now
    /// (no change pending, exactly one node changed) and puts it into `tx`; once the
    /// transaction is committed (in the same closure) call
    /// [`Replica::note_membership`] with its seqno.
    pub fn stage_membership(
        &self,
        tx: &mut covenant_kv::Tx,
        target: &Membership,
    ) -> Result<(), ConsensusError> {
        let m = self.membership();
        if let Some((&seqno, _)) = m.pending.iter().next_back() {
            return Err(ConsensusError::MembershipChangePending(SeqNo(seqno)));
        }
        m.applied.change_to(target)?;
        tx.put(MEMBERSHIP_MAP, MEMBERSHIP_KEY, &target.encode());
        Ok(())
    }

    /// Records a staged configuration written at `seqno`. Called under the Raft lock
    /// (in the write closure), before the Raft thread can see the entry committed; it
    /// is dropped again if the write is rolled back.
    pub fn note_membership(&self, seqno: SeqNo, target: Membership) {
        self.membership().pending.insert(seqno.0, target);
    }

    /// The most caught-up other voter (by the primary's view of its log).
    fn successor(&self, raw: &RawNode<LedgerStorage>) -> Option<u64> {
        let voters = self.membership().applied.voters.clone();
        raw.raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != self.0.id && voters.contains(id))
            .max_by_key(|(_, p)| p.matched)
            .map(|(id, _)| *id)
    }

    /// On the primary: hands leadership to the most caught-up other voter (before
    /// this node retires). Returns whether a transfer started.
    pub fn transfer_leadership(&self) -> bool {
        let mut raw = raft_lock(&self.0.raft);
        if raw.raft.state != StateRole::Leader {
            return false;
        }
        match self.successor(&raw) {
            Some(to) => {
                raw.transfer_leader(to);
                true
            }
            None => false,
        }
    }

    /// Runs `f` as the next transaction(s) on the primary and replicates what it
    /// appended. `f` must only append through `Engine::commit_tx` (which may add a
    /// signature). Fails with [`ConsensusError::NotPrimary`] on a backup. May wait
    /// (up to 2 s) for this view's first entry to reach the ledger: call it from a
    /// thread that may block.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut Engine) -> Result<T, EngineError>,
    ) -> Result<T, ConsensusError> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            self.check_failed()?;
            let mut raw = raft_lock(&self.0.raft);
            let (last, term) = self.leader_position(&raw)?;
            let mut engine = lock(&self.0.engine);
            if engine.last_seqno() != SeqNo(last) {
                // The blank entry of this view is not in the ledger yet (and will not
                // be while the disk is full: say so at once). Wait, without the Raft
                // lock, until the replica thread appends it: it notifies under the
                // engine's mutex, so the wake-up cannot be missed.
                if let Err(e @ EngineError::DiskFull { .. }) = engine.check_space() {
                    return Err(e.into());
                }
                drop(raw);
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ConsensusError::NotReady);
                }
                let _engine = self
                    .0
                    .appended
                    .wait_timeout_while(engine, left, |e| e.last_seqno() < SeqNo(last))
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|e| e.into_inner().0);
                continue;
            }
            return self.execute(&mut raw, engine, last, term, f);
        }
    }

    /// [`Replica::write`] if it can run at once: `Err(f)` hands `f` back when the
    /// Raft or engine lock is taken or this view's first entry is not in the ledger
    /// yet. Never waits, so an async task may call it and fall back to a blocking
    /// thread only when it gets `f` back.
    pub fn try_write<T, F>(&self, f: F) -> Result<Result<T, ConsensusError>, F>
    where
        F: FnOnce(&mut Engine) -> Result<T, EngineError>,
    {
        self.write_unless_pending(f, false)
    }

    /// [`Replica::try_write`], waiting for the locks when `block` (never for this
    /// view's first entry: the Raft thread, which appends it, calls this).
    fn write_unless_pending<T, F>(&self, f: F, block: bool) -> Result<Result<T, ConsensusError>, F>
    where
        F: FnOnce(&mut Engine) -> Result<T, EngineError>,
    {
        if let Err(e) = self.check_failed() {
            return Ok(Err(e));
        }
        let raw = match block {
            true => Some(raft_lock(&self.0.raft)),
            false => lock_now(&self.0.raft),
        };
        let Some(mut raw) = raw else {
            return Err(f);
        };
        let (last, term) = match self.leader_position(&raw) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let engine = match block {
            true => Some(lock(&self.0.engine)),
            false => lock_now(&self.0.engine),
        };
        let Some(engine) = engine else {
            return Err(f);
        };
        if engine.last_seqno() != SeqNo(last) {
            return Err(f);
        }
        Ok(self.execute(&mut raw, engine, last, term, f))
    }

    fn check_failed(&self) -> Result<(), ConsensusError> {
        match self
            .0
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            Some(why) => Err(ConsensusError::Failed(why)),
            None => Ok(()),
        }
    }

    /// (last index, term) of this primary's log; refused on a backup.
    fn leader_position(&self, raw: &RawNode<LedgerStorage>) -> Result<(u64, u64), ConsensusError> {
        if raw.raft.state != StateRole::Leader {
            let leader = raw.raft.leader_id;
            return Err(ConsensusError::NotPrimary {
                leader: (leader != raft::INVALID_ID).then_some(leader),
            });
        }
        if raw.raft.lead_transferee.is_some() {
            // Raft drops proposals while it hands leadership over: refuse before
            // the engine appends anything that would have to be undone.
            return Err(ConsensusError::NotReady);
        }
        Ok((raw.raft.raft_log.last_index(), raw.raft.term))
    }

    /// Runs `f` on the engine (whose ledger ends at `last`, this view's first entry
    /// included) and proposes what it appended, under the Raft lock.
    fn execute<T>(
        &self,
        raw: &mut RawNode<LedgerStorage>,
        mut engine: MutexGuard<'_, Engine>,
        last: u64,
        term: u64,
        f: impl FnOnce(&mut Engine) -> Result<T, EngineError>,
    ) -> Result<T, ConsensusError> {
        engine.set_view(View(term));
        engine.begin_capture();
        let out = f(&mut engine);
        let entries = engine.take_captured();
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                // Nothing may stay in the ledger that Raft does not know of.
                engine.rollback(SeqNo(last))?;
                self.membership().rollback(last);
                return Err(e.into());
            }
        };
        drop(engine);
        let appended = !entries.is_empty();
        if let Err(e) = self.propose(raw, last, entries) {
            let kept = lock(&self.0.engine).last_seqno();
            self.membership().rollback(kept.0);
            return Err(e);
        }
        if appended
            && self
                .0
                .raft_idle
                .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            // The Raft thread sends it on (and persists it) at once rather than
            // at its next tick: commit latency is a few round trips, not a tick.
            self.receive(Vec::new());
        }
        Ok(out)
    }

    fn propose(
        &self,
        raw: &mut RawNode<LedgerStorage>,
        last: u64,
        entries: Vec<(Vec<u8>, bool)>,
    ) -> Result<(), ConsensusError> {
        for (i, (payload, is_signature)) in entries.into_iter().enumerate() {
            let context = if is_signature {
                vec![CTX_SIGNATURE]
            } else {
                Vec::new()
            };
            let expected = last + 1 + i as u64;
            let r = raw.propose(context, payload);
            if r.is_err() || raw.raft.raft_log.last_index() != expected {
                // Cannot happen while we hold the Raft lock as leader; if it does,
                // undo the engine side so ledger and log stay one.
                tracing::error!(?r, expected, "raft did not append the proposed entry");
                lock(&self.0.engine)
                    .rollback(SeqNo(raw.raft.raft_log.last_index().min(expected - 1)))?;
                r?;
                return Err(ConsensusError::NotReady);
            }
        }
        Ok(())
    }

    /// Emits a signature on the primary when the pacer says so.
    /// Never waits for a new view's first entry (this thread is the one that
    /// appends it): while that is pending it looks again later.
    fn sign_if_due(&self, pacer: &mut SignPacer) -> Result<(), ConsensusError> {
        let attempt = self.write_unless_pending(
            |e: &mut Engine| {
                let now = Instant::now();
                if pacer.due(now, e.last_seqno(), e.unsigned_txs()) {
                    e.emit_signature()?;
                    pacer.signed(now, now.elapsed());
                }
                Ok(())
            },
            true,
        );
        match attempt {
            Err(_pending) => Ok(()),
            Ok(Ok(()))
            | Ok(Err(ConsensusError::NotPrimary { .. }))
            | Ok(Err(ConsensusError::NotReady)) => Ok(()),
            Ok(Err(e)) => Err(e),
        }
    }

    fn run(self, rx: mpsc::Receiver<Vec<u8>>) {
        let tick = self.0.config.tick;
        let mut next_tick = Instant::now() + tick;
        let mut pacer = SignPacer::new(self.0.config.sig_interval);
        let mut next_sign_check = Instant::now();
        let mut next_promote = Instant::now() + tick * 4;
        while !self.0.stop.load(std::sync::atomic::Ordering::Relaxed) {
            let primary = self.status().is_primary;
            let mut wait = next_tick.saturating_duration_since(Instant::now());
            if primary {
                wait = wait.min(next_sign_check.saturating_duration_since(Instant::now()));
            }
            let mut batch = Vec::new();
            self.0
                .raft_idle
                .store(true, std::sync::atomic::Ordering::Release);
            // A proposal made between its check of this flag and the wait is
            // found within one poll interval (the primary waits at most that).
            let received = rx.recv_timeout(wait);
            self.0
                .raft_idle
                .store(false, std::sync::atomic::Ordering::Release);
            match received {
                Ok(m) => {
                    batch.push(m);
                    while let Ok(m) = rx.try_recv() {
                        batch.push(m);
                        if batch.len() >= 1024 {
                            break;
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            {
                let mut raw = raft_lock(&self.0.raft);
                for bytes in batch {
                    if bytes.is_empty() {
                        continue;
                    }
                    match Message::parse_from_bytes(&bytes) {
                        Ok(m) => {
                            if let Err(e) = raw.step(m) {
                                tracing::debug!(error = %e, "raft message not stepped");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "dropping a malformed raft message"),
                    }
                }
                if Instant::now() >= next_tick {
                    raw.tick();
                    next_tick += tick;
                    if next_tick < Instant::now() {
                        next_tick = Instant::now() + tick;
                    }
                }
            }
            // The pacer looks at most once per poll interval: each look takes
            // the Raft and engine locks writers use.
            if primary && Instant::now() >= next_sign_check {
                if let Err(e) = self.sign_if_due(&mut pacer) {
                    tracing::error!(error = %e, "emitting a signature failed");
                }
                next_sign_check = Instant::now() + pacer.poll();
            }
            if Instant::now() >= next_promote {
                next_promote = Instant::now() + tick * 4;
                if let Err(e) = self.promote_learners() {
                    tracing::error!(error = %e, "promoting a learner failed");
                }
                self.step_down_if_disk_full();
            }
            if let Err(e) = self.on_ready() {
                if self.0.stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Stopping (a shutdown while the disk is full): not a failure.
                    break;
                }
                // raft-rs cannot resume from a Ready that was taken but not advanced,
                // and a failed fsync may have lost data: stop taking part. The other
                // nodes carry on; the operator restarts this one (it recovers from its
                // ledger files).
                tracing::error!(error = %e, "processing raft output failed; this node stops replicating");
                *self.0.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                let mut s = self.0.status.lock().unwrap_or_else(|e| e.into_inner());
                s.is_primary = false;
                s.leader = None;
                break;
            }
        }
    }

    fn send(&self, messages: Vec<Message>) {
        for m in messages {
            match m.write_to_bytes() {
                Ok(bytes) => self.0.transport.send(m.to, bytes),
                Err(e) => tracing::error!(error = %e, "cannot encode a raft message"),
            }
        }
    }

    /// One round of raft-rs output: persist, sync (no locks held), acknowledge,
    /// advance the engine's commit.
    fn on_ready(&self) -> Result<(), ConsensusError> {
        let (hard_state, persisted, number, messages) = {
            let mut raw = raft_lock(&self.0.raft);
            if !raw.has_ready() {
                return Ok(());
            }
            // A full disk: take in no entries (this node answers nothing, as if cut
            // off, and the others carry on or elect another primary) until space
            // returns, rather than fail a write halfway and stop for good.
            if !raw.raft.raft_log.unstable_entries().is_empty() {
                if let Err(e @ EngineError::DiskFull { .. }) = lock(&self.0.engine).check_space() {
                    let mut warned = self.0.disk_warned.lock().unwrap_or_else(|e| e.into_inner());
                    if warned.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(error = %e, "not replicating until disk space returns");
                        *warned = Some(Instant::now());
                    }
                    // Who leads still changes (messages are stepped): forwarding
                    // needs to know, or this node would keep acting as primary.
                    let mut s = self.0.status.lock().unwrap_or_else(|e| e.into_inner());
                    let leader = raw.raft.leader_id;
                    s.term = raw.raft.term;
                    s.leader = (leader != raft::INVALID_ID).then_some(leader);
                    s.is_primary = raw.raft.state == StateRole::Leader;
                    return Ok(());
                }
            }
            let mut rd = raw.ready();
            // A leader may send before its own append is durable (Raft §10.2.1); they
            // are encoded and sent below, once the Raft lock is released.
            let messages = rd.take_messages();
            // A snapshot sent is only a pointer (see `LedgerStorage::snapshot`):
            // the node fetches the file itself. Until this follower answers again,
            // the primary probes it once per heartbeat (and so points again).
            for m in messages
                .iter()
                .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
            {
                raw.report_snapshot(m.to, raft::SnapshotStatus::Failure);
            }
            if !rd.snapshot().is_empty() {
                let meta = rd.snapshot().get_metadata();
                let need = SnapshotNeeded {
                    seqno: SeqNo(meta.index),
                    view: View(meta.term),
                    from: raw.raft.leader_id,
                };
                drop(raw);
                self.stop_for_snapshot(need);
                return Ok(());
            }
            let entries = rd.take_entries();
            let persisted_last = entries.last().map(|e| e.index);
            {
                let mut engine = lock(&self.0.engine);
                persist(&mut engine, &entries, &self.0.membership)?;
            }
            if !entries.is_empty() {
                self.0.appended.notify_all();
            }
            let hard_state = rd.hs().cloned();
            let committed_entries = rd.take_committed_entries();
            let persisted = rd.take_persisted_messages();
            let number = rd.number();
            // raft-rs marks these entries stable (moves its unstable log past them) in
            // `advance_append_async`, from then on reading them from `Storage`, so the
            // storage must cover them now; durability is reported separately by
            // `on_persist_ready` after the fsync below.
            if let Some(last) = persisted_last {
                self.0
                    .meta
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .stable_last = last;
            }
            raw.advance_append_async(rd);
            if let Some(last) = committed_entries.last() {
                if committed_entries
                    .iter()
                    .any(|e| e.get_entry_type() != EntryType::EntryNormal)
                {
                    return Err(ConsensusError::Unsupported(
                        "membership changes are not supported yet".into(),
                    ));
                }
                raw.advance_apply_to(last.index);
            }
            (hard_state, persisted, number, messages)
        };
        self.send(messages);
        if let Some(hs) = &hard_state {
            let changed = {
                let meta = self.0.meta.lock().unwrap_or_else(|e| e.into_inner());
                meta.hard_state.term != hs.term || meta.hard_state.vote != hs.vote
            };
            if changed {
                let mut file = self.state_file(hs);
                file.commit = hs.commit;
                self.until_space("storing the term and vote", || {
                    file.store(&self.0.config.state_dir)
                })?;
            }
            self.0
                .meta
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .hard_state = hs.clone();
        }
        // Make the appended entries durable without holding either lock.
        let ticket = self.until_space("writing the ledger", || {
            Ok(lock(&self.0.engine).prepare_flush()?)
        })?;
        let result = ticket.run();
        lock(&self.0.engine).complete_flush(ticket, result)?;
        self.send(persisted);
        let mut raw = raft_lock(&self.0.raft);
        raw.on_persist_ready(number);
        self.apply_membership(&mut raw)?;
        self.publish(&raw)
    }

    /// Stops taking part (nothing of the Ready holding the snapshot is persisted
    /// or answered: this node's log stays as it was) and tells the node.
    fn stop_for_snapshot(&self, need: SnapshotNeeded) {
        tracing::warn!(
            snapshot_seqno = need.seqno.0,
            primary = need.from,
            last_seqno = lock(&self.0.engine).last_seqno().0,
            "the primary's ledger starts after this node's: installing its snapshot"
        );
        {
            let mut s = self.0.status.lock().unwrap_or_else(|e| e.into_inner());
            s.is_primary = false;
            s.leader = None;
        }
        self.0
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.0.snapshot_needed.send_replace(Some(need));
    }

    /// Runs `f` again every 200 ms while it fails for lack of disk space (nothing
    /// was changed by the failure). Meanwhile this node sends nothing, acknowledges
    /// nothing and counts for nothing, as if cut off; it resumes by itself once space
    /// returns. No lock is held while waiting.
    fn until_space<T>(
        &self,
        what: &str,
        mut f: impl FnMut() -> Result<T, ConsensusError>,
    ) -> Result<T, ConsensusError> {
        let mut waiting = false;
        loop {
            match f() {
                Err(e)
                    if e.is_no_space()
                        && !self.0.stop.load(std::sync::atomic::Ordering::Relaxed) =>
                {
                    if !waiting {
                        tracing::warn!(error = %e, "{what}: the disk is full; waiting for space");
                        waiting = true;
                        // Absent meanwhile: not a primary to forward to or act as.
                        let mut s = self.0.status.lock().unwrap_or_else(|e| e.into_inner());
                        s.is_primary = false;
                        s.leader = None;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                r => {
                    if waiting && r.is_ok() {
                        tracing::warn!("{what}: disk space returned; replicating again");
                    }
                    return r;
                }
            }
        }
    }

    /// What the hard state file holds: `hs` and the applied configuration.
    fn state_file(&self, hs: &HardState) -> HardStateFile {
        let m = self.membership();
        HardStateFile {
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit,
            conf: (m.applied_seqno > 0).then(|| AppliedConf {
                seqno: m.applied_seqno,
                membership: m.applied.clone(),
            }),
        }
    }

    /// Applies every pending configuration change that Raft has now committed.
    fn apply_membership(&self, raw: &mut RawNode<LedgerStorage>) -> Result<(), ConsensusError> {
        let commit_index = raw.raft.raft_log.committed;
        let mut changed = false;
        loop {
            let next = {
                let m = self.membership();
                match m.pending.iter().next() {
                    Some((&seqno, target)) if seqno <= commit_index => {
                        // Writing the configuration in force again (a genesis) is no change.
                        let change = (m.applied != *target).then(|| m.applied.change_to(target));
                        Some((seqno, change, target.clone()))
                    }
                    _ => None,
                }
            };
            let Some((seqno, change, target)) = next else {
                break;
            };
            match change {
                None => {}
                Some(Ok(cc)) => {
                    let cs = raw.apply_conf_change(&cc)?;
                    tracing::info!(seqno, voters = ?cs.voters, learners = ?cs.learners, "applied a configuration change");
                }
                // Written by a primary that validated it against the same applied
                // configuration: only a bug gets here. Adopt the target anyway so
                // every node ends in the same configuration.
                Some(Err(e)) => {
                    tracing::error!(seqno, error = %e, "configuration change does not apply; adopting it as is")
                }
            }
            {
                let mut m = self.membership();
                m.pending.remove(&seqno);
                m.applied = target;
                m.applied_seqno = seqno;
            }
            self.0
                .meta
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .conf_state = self.membership().applied.to_conf_state();
            changed = true;
        }
        if changed {
            let hs = raw.raft.hard_state();
            self.state_file(&hs).store(&self.0.config.state_dir)?;
            // A primary that removed itself hands over to the most caught-up voter.
            let voters = self.membership().applied.voters.clone();
            if raw.raft.state == StateRole::Leader && !voters.contains(&self.0.id) {
                if let Some(to) = self.successor(raw) {
                    raw.transfer_leader(to);
                }
            }
        }
        Ok(())
    }

    /// A primary whose disk is full refuses every write: it hands leadership to the
    /// most caught-up voter so the service stays writable.
    fn step_down_if_disk_full(&self) {
        let is_leader = raft_lock(&self.0.raft).raft.state == StateRole::Leader;
        if !is_leader {
            return;
        }
        // Its own statement: the engine lock must be released before the Raft lock
        // is taken (the order everywhere else is Raft, then engine).
        let full = matches!(
            lock(&self.0.engine).check_space(),
            Err(EngineError::DiskFull { .. })
        );
        if full && self.transfer_leadership() {
            tracing::warn!("the disk is full: handing leadership to another node");
        }
    }

    /// On the primary: a learner that has caught up becomes a voter.
    fn promote_learners(&self) -> Result<(), ConsensusError> {
        let candidate = {
            let raw = raft_lock(&self.0.raft);
            // Not before this view's blank entry is in the ledger: `write` would wait
            // for this very thread to persist it.
            if raw.raft.state != StateRole::Leader
                || lock(&self.0.engine).last_seqno() != SeqNo(raw.raft.raft_log.last_index())
            {
                return Ok(());
            }
            let m = self.membership();
            if !m.pending.is_empty() {
                return Ok(());
            }
            let committed = raw.raft.raft_log.committed;
            m.learners_caught_up(|id| raw.raft.prs().get(id).map(|p| p.matched), committed)
        };
        let Some(id) = candidate else {
            return Ok(());
        };
        let mut target = self.membership().applied.clone();
        target.learners.remove(&id);
        target.voters.insert(id);
        match self.change_membership(target, |_| {}) {
            Ok(txid) => {
                tracing::info!(raft_id = id, %txid, "promoting a caught-up learner to voter");
                Ok(())
            }
            Err(ConsensusError::NotPrimary { .. })
            | Err(ConsensusError::NotReady)
            | Err(ConsensusError::MembershipChangePending(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn publish(&self, raw: &RawNode<LedgerStorage>) -> Result<(), ConsensusError> {
        let commit_index = raw.raft.raft_log.committed;
        // Nothing is published beyond the mark: if it cannot be written (a full
        // disk), the commit shown waits until it can. The engine commits only at
        // signatures, so the mark changes once per signature, not per message.
        let committed_seqno = {
            let mut engine = lock(&self.0.engine);
            let target = engine.commit_target(SeqNo(commit_index));
            let marked = self.0.marked.load(std::sync::atomic::Ordering::Relaxed);
            if target <= SeqNo(marked) {
                // The common case (no new signature committed): one lock, no I/O.
                engine.advance_commit(target)?
            } else {
                drop(engine);
                let shown = match CommitMark::store(&self.0.config.state_dir, target.0) {
                    Ok(()) => {
                        self.0
                            .marked
                            .store(target.0, std::sync::atomic::Ordering::Relaxed);
                        target
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot record the commit index; not publishing it yet");
                        SeqNo(marked)
                    }
                };
                lock(&self.0.engine).advance_commit(shown)?
            }
        };
        {
            let mut s = self.0.status.lock().unwrap_or_else(|e| e.into_inner());
            let leader = raw.raft.leader_id;
            *s = ReplicaStatus {
                id: self.0.id,
                term: raw.raft.term,
                leader: (leader != raft::INVALID_ID).then_some(leader),
                is_primary: raw.raft.state == StateRole::Leader,
                commit_index,
                committed_seqno,
            };
        }
        self.0.committed.send_if_modified(|c| {
            let changed = *c != committed_seqno;
            *c = committed_seqno;
            changed
        });
        Ok(())
    }
}

/// Makes the engine's ledger equal to Raft's log over `entries`: entries already
/// there (the primary's own) are skipped, a conflicting suffix is rolled back, new
/// entries are appended; a view's blank entry becomes an empty transaction.
fn persist(
    engine: &mut Engine,
    entries: &[Entry],
    membership: &Mutex<MembershipState>,
) -> Result<(), ConsensusError> {
    let membership = || membership.lock().unwrap_or_else(|e| e.into_inner());
    for ent in entries {
        let txid = TxId::new(ent.term, ent.index);
        let last = engine.last_seqno();
        if ent.index <= last.0 {
            if engine.view_at(SeqNo(ent.index)) == Some(View(ent.term)) {
                continue;
            }
            tracing::info!(
                from = ent.index,
                to = last.0,
                "rolling back an uncommitted suffix"
            );
            engine.rollback(SeqNo(ent.index - 1))?;
            membership().rollback(ent.index - 1);
        } else if ent.index != last.0 + 1 {
            return Err(ConsensusError::Unsupported(format!(
                "raft entry {} does not follow the ledger's last seqno {last}",
                ent.index
            )));
        }
        match ent.get_entry_type() {
            EntryType::EntryNormal if ent.data.is_empty() => engine.append_blank(txid)?,
            EntryType::EntryNormal => {
                let is_signature = ent.context.first() == Some(&CTX_SIGNATURE);
                let ws = engine.apply_entry(txid, is_signature, &ent.data)?;
                if let Some(Some(bytes)) = ws.get(MEMBERSHIP_MAP, MEMBERSHIP_KEY) {
                    membership()
                        .pending
                        .insert(ent.index, Membership::decode(bytes)?);
                }
            }
            other => {
                return Err(ConsensusError::Unsupported(format!(
                    "raft entry type {other:?} is not supported yet"
                )))
            }
        }
    }
    Ok(())
}
