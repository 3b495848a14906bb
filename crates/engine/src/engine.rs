use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine as _;
use covenant_crypto::{Certificate, EncryptionKeyPair, LedgerSecret, LedgerSecrets, NodeIdentity};
use covenant_kv::{KvError, Snapshot, Store, Tx, TxEntry, WriteSet};
use covenant_ledger::{Ledger, LedgerConfig, LedgerError, SyncTicket};
use covenant_merkle::{leaf_hash, ConsistencyProof, MerkleError, MerkleTree};
use covenant_receipt::{
    commit_evidence_digest, CommitEvidenceKey, LeafComponents, Receipt, ReceiptResponse,
    ReceiptState, SignatureRecord, SIGNATURES_MAP, SIGNATURE_KEY,
};
use covenant_types::{Digest32, SeqNo, TxId, View};

pub use crate::error::EngineError;
use crate::history::{self, HistoryReader, ReadKeys};
use crate::rekey::{self, SecretRecipient};
use crate::snapshot::{self, SnapshotFile};

/// Captured snapshots waiting for their signature to commit; older ones are
/// dropped beyond this (a newer committed one supersedes them anyway).
const MAX_PENDING_SNAPSHOTS: usize = 2;
/// Snapshot files kept in `snapshot_dir` (plus the one this ledger continues).
const KEPT_SNAPSHOTS: usize = 2;

/// The default reserve: a few chunks' worth.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 32 * 1024 * 1024;

/// How long a free-space reading is trusted (a statvfs per transaction would cost
/// more than the transaction).
const SPACE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Tunables of the write path.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub ledger_dir: PathBuf,
    /// A chunk file closes at the first signature after it grows past this.
    pub chunk_threshold_bytes: u64,
    /// Emit a signature transaction after this many transactions (SPEC default 5000).
    pub sig_tx_interval: u64,
    /// Leaves whose lower tree levels stay in memory; older pages are rebuilt from
    /// the ledger when an old receipt is asked for.
    pub merkle_resident_leaves: u64,
    /// Chunk closes complete in the next group commit instead of fsyncing inside
    /// the append that ends the chunk (see `LedgerConfig::deferred_close`).
    pub deferred_chunk_close: bool,
    /// Single node (true): the last durable signature commits everything before it,
    /// also at open. Under consensus (false) only [`Engine::advance_commit`] commits;
    /// at open, committed is what the ledger's `.committed` chunk names say.
    pub commit_on_sync: bool,
    /// Where snapshot files live (`snapshot_<seqno>.committed`); `None` takes no
    /// snapshots and can only open a ledger that starts at seqno 1.
    pub snapshot_dir: Option<PathBuf>,
    /// A snapshot is captured at the first signature this many seqnos after the
    /// previous one (and written once that signature commits).
    pub snapshot_tx_interval: u64,
    /// The service certificate snapshots must be endorsed by when the engine
    /// starts from one. `None` skips only that check (the signature under the
    /// record's own certificate and the root are still verified).
    pub service_cert: Option<Certificate>,
    /// New transactions are refused while the ledger's file system has less free
    /// space than this: room for what is already buffered, a chunk being closed and
    /// a snapshot, so a full disk never fails a write halfway.
    pub min_free_bytes: u64,
    /// Where the whole chain of ledger secrets is kept (0600), rewritten before a
    /// new secret seals anything: a node that keeps its secrets at rest. `None`
    /// keeps them in memory only.
    pub secrets_file: Option<PathBuf>,
    /// Directories holding archived committed chunks (CCF's
    /// `ledger.read_only_directories`): read transparently, never written.
    pub read_only_dirs: Vec<PathBuf>,
    /// Where [`Engine::archive_step`] moves committed chunks (it is read as one of
    /// the read-only directories too).
    pub archive_dir: Option<PathBuf>,
}

impl EngineConfig {
    /// Makes the archive directory, so that it can be listed with the read-only
    /// ones before anything was archived.
    fn ensure_archive_dir(&self) -> Result<(), EngineError> {
        match &self.archive_dir {
            Some(a) => std::fs::create_dir_all(a).map_err(|e| EngineError::Io {
                path: a.clone(),
                source: e,
            }),
            None => Ok(()),
        }
    }

    /// The read-only directories, the archive directory included.
    pub fn all_read_only_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = self.read_only_dirs.clone();
        if let Some(a) = &self.archive_dir {
            if !dirs.contains(a) {
                dirs.push(a.clone());
            }
        }
        dirs
    }
}

impl EngineConfig {
    pub fn new(ledger_dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            ledger_dir: ledger_dir.into(),
            chunk_threshold_bytes: 5 * 1024 * 1024,
            sig_tx_interval: 5000,
            merkle_resident_leaves: 1 << 20,
            deferred_chunk_close: true,
            commit_on_sync: true,
            snapshot_dir: None,
            snapshot_tx_interval: 10_000,
            service_cert: None,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            secrets_file: None,
            read_only_dirs: Vec::new(),
            archive_dir: None,
        }
    }
}

/// A recovery in progress (see [`Engine::open_for_recovery`]).
struct Recovering {
    /// The first seqno of the recovered service; everything before is the old
    /// ledger, replayed public-only so far.
    boundary: SeqNo,
    /// The old ledger's historical secret rows, in ledger order.
    history: Vec<rekey::HistoricalSecret>,
    /// The recovered service's own secret (from the boundary on).
    fresh: Arc<LedgerSecret>,
}

/// What an observer is told (see [`Engine::set_observer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxEvent<'a> {
    /// A transaction appended (committed here as primary, or applied from one).
    Appended(TxId, &'a WriteSet),
    /// An old, committed transaction's whole write set, once a recovery could
    /// open its private part (in seqno order, after newer transactions).
    History(TxId, &'a WriteSet),
    /// Every transaction after this seqno was rolled back.
    RolledBack(SeqNo),
}

/// Sees each transaction event (see [`Engine::set_observer`]); must be quick.
pub type TxObserver = std::sync::Arc<dyn Fn(TxEvent<'_>) + Send + Sync>;

/// A snapshot captured at a signature, written once that signature commits.
struct PendingSnapshot {
    txid: TxId,
    state: Snapshot,
    tree: Vec<u8>,
    index: snapshot::SnapshotIndex,
}

/// Where a transaction stands (SPEC §5 `/node/tx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// Never seen (a seqno in the future).
    Unknown,
    /// In the ledger, not yet covered by a committed signature.
    Pending,
    Committed,
    /// The seqno exists with another view: this TxId was lost in a view change.
    Invalid,
}

/// The transaction engine of one node.
pub struct Engine {
    config: EngineConfig,
    store: Store,
    ledger: Ledger,
    tree: MerkleTree,
    node: Arc<NodeIdentity>,
    node_cert_pem: String,
    /// The ledger secrets, each from its version on; a transaction is sealed and
    /// read under the one of its seqno.
    secrets: LedgerSecrets,
    /// The commit-evidence key of each secret, in the same order.
    evidence: Vec<CommitEvidenceKey>,
    /// This node's RSA-OAEP key: opens the secrets rekeys hand it in the ledger.
    encryption_key: Option<Arc<EncryptionKeyPair>>,
    /// The secret of a rekey in the transaction being built (see [`Engine::rekey`]).
    staged_secret: Option<Arc<LedgerSecret>>,
    /// Set while a recovery waits for the old ledger secrets (see
    /// [`Engine::open_for_recovery`]).
    recovering: Option<Recovering>,
    view: View,
    /// Seqnos of every signature transaction.
    signatures: BTreeSet<u64>,
    txs_since_signature: u64,
    /// Highest signature seqno known committed.
    committed: u64,
    /// Runs of equal views: (first seqno, view), ascending. Views change rarely, so
    /// this answers "view at seqno" (Raft's term lookups) without reading the ledger.
    view_runs: Vec<(SeqNo, View)>,
    /// Single node: the last durable signature commits. Under consensus, only
    /// [`Engine::advance_commit`] does.
    commit_on_sync: bool,
    /// While set, the encoded entries appended (payload, is_signature), so a primary
    /// can replicate them without reading them back from the ledger.
    captured: Option<Vec<(Vec<u8>, bool)>>,
    /// The snapshot this engine started from (its ledger holds only what follows).
    base: Option<TxId>,
    /// Leaves of the base snapshot's last page from the checkpoint (first leaf
    /// index, digests): a page mixing pre-snapshot leaves with ledger ones can
    /// still be restored after the tree flushed it.
    base_leaves: (u64, Vec<Digest32>),
    /// The last free-space reading of the ledger's disk and when it was taken.
    space: Option<(std::time::Instant, u64)>,
    /// Committed snapshot files in `snapshot_dir`, oldest first.
    snapshots: Vec<(TxId, PathBuf)>,
    pending_snapshots: Vec<PendingSnapshot>,
    snapshot_requested: bool,
    /// Told of every transaction appended from now on (see [`Engine::set_observer`]).
    observer: Option<TxObserver>,
    /// Seqno of the last snapshot captured, written or started from.
    last_snapshot_seqno: u64,
    /// The snapshot this engine's state was loaded from at open (a continued
    /// ledger's base, or the newest one of a whole ledger), if any.
    loaded_from: Option<TxId>,
    /// `secrets` and the recovery boundary as [`HistoryReader`]s see them:
    /// republished by [`Engine::publish_read_keys`] after every change.
    read_keys: Arc<RwLock<ReadKeys>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("view", &self.view)
            .field("last_seqno", &self.store.last_seqno())
            .field("committed", &self.committed)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens (or creates) the ledger in `config.ledger_dir`, replays it into the store
    /// and the tree, and starts a new view after the last one in the ledger.
    ///
    /// Everything up to the last signature in the durable ledger is committed.
    ///
    /// A ledger whose first chunk starts at `f > 1` continues the snapshot
    /// `snapshot_<f-1>.committed` in `config.snapshot_dir`, which must be there and
    /// valid; an empty ledger directory starts from the newest valid snapshot there,
    /// if any. A snapshot is verified (see [`SnapshotFile::verify`]) before use.
    pub fn open(
        config: EngineConfig,
        node: Arc<NodeIdentity>,
        secrets: impl Into<LedgerSecrets>,
    ) -> Result<Engine, EngineError> {
        Self::open_with_key(config, node, secrets, None)
    }

    /// [`Engine::open`] for a node with an encryption key: rekeys in its ledger
    /// whose secret it does not hold yet are opened with it as they are replayed.
    pub fn open_with_key(
        config: EngineConfig,
        node: Arc<NodeIdentity>,
        secrets: impl Into<LedgerSecrets>,
        encryption_key: Option<Arc<EncryptionKeyPair>>,
    ) -> Result<Engine, EngineError> {
        Self::open_inner(config, node, secrets.into(), encryption_key, None)
    }

    /// Opens the ledger of a service that lost every node, for a disaster recovery:
    /// the old ledger secrets are gone, so only the public domain is replayed. The
    /// unsigned tail is dropped (it was never committed); what follows, this
    /// recovered service's transactions, is sealed under a fresh secret.
    /// [`Engine::complete_recovery`] replays the private domain once the recovery
    /// members' shares gave the old secrets back. Needs a ledger from seqno 1.
    pub fn open_for_recovery(
        config: EngineConfig,
        node: Arc<NodeIdentity>,
        encryption_key: Option<Arc<EncryptionKeyPair>>,
    ) -> Result<Engine, EngineError> {
        config.ensure_archive_dir()?;
        match Ledger::first_seqno_on_disk_in(&config.ledger_dir, &config.all_read_only_dirs())? {
            Some(SeqNo(1)) => {}
            Some(first) => {
                return Err(EngineError::Recovery(format!(
                    "this ledger starts at seqno {first}: a recovery replays a ledger from seqno 1"
                )))
            }
            None => {
                return Err(EngineError::Recovery(
                    "the ledger directory is empty".into(),
                ))
            }
        }
        let fresh = Arc::new(LedgerSecret::generate()?);
        let recovering = Recovering {
            boundary: SeqNo(u64::MAX),
            history: Vec::new(),
            fresh: fresh.clone(),
        };
        let mut engine =
            Self::open_inner(config, node, fresh.into(), encryption_key, Some(recovering))?;
        let last_signed = SeqNo(engine.signatures.last().copied().unwrap_or(0));
        if last_signed == SeqNo::ZERO {
            return Err(EngineError::Recovery(
                "the ledger holds no signature: nothing of it was ever committed".into(),
            ));
        }
        engine.rollback(last_signed)?;
        // Everything signed is the old service's history: committed.
        engine.committed = last_signed.0;
        engine.store.mark_committed(last_signed);
        engine.ledger.commit(last_signed)?;
        if let Some(r) = engine.recovering.as_mut() {
            r.boundary = last_signed.next();
        }
        engine.publish_read_keys();
        Ok(engine)
    }

    /// The seqno the recovered service's own transactions start at, while the old
    /// private state is not replayed yet.
    pub fn recovery_boundary(&self) -> Option<SeqNo> {
        self.recovering.as_ref().map(|r| r.boundary)
    }

    /// The previous secrets the old ledger's rekeys left (see
    /// [`crate::rekey::walk_back`]), while recovering.
    pub fn historical_secrets(&self) -> &[rekey::HistoricalSecret] {
        self.recovering
            .as_ref()
            .map_or(&[], |r| r.history.as_slice())
    }

    /// Ends a recovery: `old` (the old ledger's secrets, from the members' shares)
    /// must open every private write before the boundary, which are then applied to
    /// the state (and shown to the observer, so indexes see them). The chain becomes
    /// `old` followed by this service's own secret from the boundary on. Nothing
    /// changes if any transaction does not open.
    pub fn complete_recovery(&mut self, old: LedgerSecrets) -> Result<(), EngineError> {
        let Some(r) = self.recovering.as_ref() else {
            return Err(EngineError::Recovery(
                "this service is not recovering".into(),
            ));
        };
        let (boundary, fresh) = (r.boundary, r.fresh.clone());
        let mut chain = old;
        chain.add(boundary, fresh)?;
        // Every entry opens before anything changes; then the writes are applied.
        for pass in [false, true] {
            let mut next = SeqNo(1);
            while next < boundary {
                let to = SeqNo((next.0 + 4095).min(boundary.0 - 1));
                let batch = self
                    .ledger
                    .read_range(next, to)?
                    .collect::<Result<Vec<_>, _>>()?;
                for e in batch {
                    let bad = |reason: String| EngineError::BadEntry {
                        txid: e.txid,
                        reason,
                    };
                    let entry = TxEntry::decode(&e.payload).map_err(|x| bad(x.to_string()))?;
                    let private = entry
                        .private_write_set(e.txid, chain.for_seqno(e.txid.seqno))
                        .map_err(|x| {
                            bad(format!("does not open under the recovered secrets: {x}"))
                        })?;
                    if pass {
                        self.store.apply_history(e.txid, &private)?;
                        if let Some(f) = &self.observer {
                            let mut all =
                                entry.public_write_set().map_err(|x| bad(x.to_string()))?;
                            all.merge(private);
                            f(TxEvent::History(e.txid, &all));
                        }
                    }
                }
                next = to.next();
            }
        }
        self.evidence = chain
            .iter()
            .map(|(_, s)| CommitEvidenceKey::new(s))
            .collect();
        self.secrets = chain;
        self.recovering = None;
        self.publish_read_keys();
        self.save_secrets()
    }

    /// After [`Engine::complete_recovery`], in the transaction that opens the
    /// service: the old ledger's latest secret sealed under this service's own
    /// (a historical row like a rekey's), so a later recovery walks back through
    /// this one too.
    pub fn link_recovered_secret(&self, tx: &mut Tx) -> Result<(), EngineError> {
        let chain: Vec<_> = self.secrets.iter().collect();
        let [.., (pv, previous), (v, own)] = chain.as_slice() else {
            return Err(EngineError::Recovery("no earlier secret to link".into()));
        };
        let bytes = rekey::historical_row((*pv, previous), (*v, own))?;
        tx.put(
            rekey::HISTORICAL_ENCRYPTED_LEDGER_SECRET,
            rekey::REKEY_KEY,
            &bytes,
        );
        Ok(())
    }

    fn open_inner(
        config: EngineConfig,
        node: Arc<NodeIdentity>,
        secrets: LedgerSecrets,
        encryption_key: Option<Arc<EncryptionKeyPair>>,
        recovering: Option<Recovering>,
    ) -> Result<Engine, EngineError> {
        config.ensure_archive_dir()?;
        let listing = match &config.snapshot_dir {
            Some(dir) => snapshot::list(dir)?,
            None => snapshot::Listing::default(),
        };
        let start = Self::pick_snapshot(&config, &listing, &secrets)?;
        let snapshots = listing.usable;
        let mut lc = LedgerConfig::new(&config.ledger_dir);
        lc.chunk_threshold_bytes = config.chunk_threshold_bytes;
        lc.deferred_close = config.deferred_chunk_close;
        lc.start_after = start.as_ref().map(|v| v.info.txid);
        lc.read_only_dirs = config.all_read_only_dirs();
        let (ledger, report) = Ledger::open(lc)?;
        if report.truncated_bytes > 0 {
            tracing::warn!(
                truncated_bytes = report.truncated_bytes,
                last_seqno = report.last_seqno.0,
                "recovered a torn ledger tail"
            );
        }
        // A node holding its whole ledger starts from its newest snapshot too, and
        // replays only what follows (a recovery replays everything: it needs the
        // old ledger's public domain and historical secrets from seqno 1).
        let warm = match (&start, &recovering) {
            (None, None) if ledger.first_seqno() == SeqNo(1) => {
                Self::pick_warm_snapshot(&config, &snapshots, &secrets, &ledger)
            }
            _ => None,
        };
        let node_cert_pem = node.cert.to_pem();
        let commit_on_sync = config.commit_on_sync;
        let read_keys = Arc::new(RwLock::new(ReadKeys {
            secrets: secrets.clone(),
            recovery_boundary: recovering.as_ref().map(|r| r.boundary),
        }));
        let mut engine = Engine {
            evidence: secrets
                .iter()
                .map(|(_, s)| CommitEvidenceKey::new(s))
                .collect(),
            encryption_key,
            staged_secret: None,
            recovering,
            config,
            store: Store::new(),
            ledger,
            tree: MerkleTree::new(),
            node,
            node_cert_pem,
            secrets,
            view: View(1),
            signatures: BTreeSet::new(),
            txs_since_signature: 0,
            committed: 0,
            view_runs: Vec::new(),
            commit_on_sync,
            captured: None,
            base: None,
            base_leaves: (0, Vec::new()),
            space: None,
            snapshots,
            pending_snapshots: Vec::new(),
            snapshot_requested: false,
            observer: None,
            last_snapshot_seqno: 0,
            loaded_from: None,
            read_keys,
        };
        let mut next = engine.ledger.first_seqno();
        let continued = start.is_some();
        if let Some(v) = start.or(warm) {
            let (Some(state), txid) = (v.state, v.info.txid) else {
                return Err(EngineError::BadSnapshot("state was not decrypted".into()));
            };
            if continued {
                // The ledger holds nothing before the snapshot: the checkpoint's last
                // page is all there is to rebuild a page mixing the two.
                let from = v.tree.first_resident_leaf();
                let leaves = (from..txid.seqno.0)
                    .map(|i| v.tree.leaf(i))
                    .collect::<Result<Vec<_>, _>>()?;
                engine.base_leaves = (from, leaves);
                engine.base = Some(txid);
                tracing::info!(%txid, "starting from a snapshot");
            } else {
                tracing::info!(%txid, "starting from the newest snapshot; replaying the ledger after it");
            }
            engine.store = Store::from_snapshot(state);
            engine.tree = v.tree;
            engine.signatures = v.index.signatures.into_iter().collect();
            engine.view_runs = v.index.view_runs;
            engine.committed = txid.seqno.0;
            engine.loaded_from = Some(txid);
            next = txid.seqno.next();
        }
        // Replay in bounded batches: memory stays flat however long the ledger is.
        const REPLAY_BATCH: u64 = 4096;
        let last = engine.ledger.last_seqno();
        while next <= last {
            let to = (next.0 + REPLAY_BATCH - 1).min(last.0);
            let batch = engine
                .ledger
                .read_range(next, SeqNo(to))?
                .collect::<Result<Vec<_>, _>>()?;
            for e in batch {
                engine.replay(e.txid, e.is_signature, &e.payload)?;
            }
            next = SeqNo(to + 1);
            let keep = engine.config.merkle_resident_leaves;
            engine
                .tree
                .flush_before(engine.tree.len().saturating_sub(keep));
        }
        engine.view = View(engine.store.last_txid().map(|t| t.view.0 + 1).unwrap_or(1));
        engine.committed = if engine.commit_on_sync {
            engine.signatures.last().copied().unwrap_or(0)
        } else {
            let durable = engine.ledger.committed_seqno().0;
            engine
                .signatures
                .range(..=durable)
                .next_back()
                .copied()
                .unwrap_or(0)
        };
        engine.store.mark_committed(SeqNo(engine.committed));
        if engine.committed > engine.ledger.committed_seqno().0 {
            engine.ledger.commit(SeqNo(engine.committed))?;
        }
        engine.last_snapshot_seqno = engine.newest_snapshot_seqno();
        Ok(engine)
    }

    /// The snapshot to start from, verified: the one the ledger continues, else
    /// (empty ledger) the newest valid one, else none (a ledger from seqno 1).
    fn pick_snapshot(
        config: &EngineConfig,
        listing: &snapshot::Listing,
        secrets: &LedgerSecrets,
    ) -> Result<Option<snapshot::Verified>, EngineError> {
        let cert = config.service_cert.as_ref();
        match Ledger::first_seqno_on_disk_in(&config.ledger_dir, &config.all_read_only_dirs())? {
            Some(SeqNo(1)) => Ok(None),
            Some(first) => {
                let name = snapshot::file_name(first.0 - 1);
                let path = match &config.snapshot_dir {
                    Some(dir) => dir.join(name),
                    None => PathBuf::from(name),
                };
                if config.snapshot_dir.is_none() || !path.exists() {
                    return Err(EngineError::MissingSnapshot { first, path });
                }
                let secret = secrets.for_seqno(SeqNo(first.0 - 1));
                snapshot::load(&path, cert, Some(secret)).map(Some)
            }
            None => {
                let mut newest_error = None;
                for (txid, path) in listing.usable.iter().rev() {
                    match snapshot::load(path, cert, Some(secrets.for_seqno(txid.seqno))) {
                        Ok(v) => return Ok(Some(v)),
                        Err(e) => {
                            tracing::warn!(%txid, error = %e, "skipping an invalid snapshot");
                            newest_error.get_or_insert(e);
                        }
                    }
                }
                if let (None, Some(p)) = (&newest_error, listing.unusable.first()) {
                    newest_error = Some(EngineError::BadSnapshot(format!(
                        "{}: its header does not match its name",
                        p.display()
                    )));
                }
                // Snapshots were meant to be started from: never silently start anew.
                match newest_error {
                    Some(e) => Err(e),
                    None => Ok(None),
                }
            }
        }
    }

    /// The newest snapshot a ledger held from seqno 1 can start from: verified like
    /// any snapshot, and the very signature the ledger holds at its seqno (so a
    /// snapshot of another ledger, or of a suffix since rolled back, is never
    /// used). `None` (a full replay) when none qualifies; each refusal is logged.
    fn pick_warm_snapshot(
        config: &EngineConfig,
        listing: &[(TxId, PathBuf)],
        secrets: &LedgerSecrets,
        ledger: &Ledger,
    ) -> Option<snapshot::Verified> {
        let cert = config.service_cert.as_ref();
        let last = ledger.last_seqno();
        for (txid, path) in listing.iter().rev() {
            if txid.seqno > last {
                continue;
            }
            let checked =
                snapshot::load(path, cert, Some(secrets.for_seqno(txid.seqno))).and_then(|v| {
                    let held = ledger.read(txid.seqno)?;
                    let entry =
                        TxEntry::decode(&held.payload).map_err(|e| EngineError::BadEntry {
                            txid: held.txid,
                            reason: e.to_string(),
                        })?;
                    let record = entry
                        .public_write_set()
                        .ok()
                        .and_then(|ws| {
                            ws.get(SIGNATURES_MAP, SIGNATURE_KEY)
                                .flatten()
                                .map(<[u8]>::to_vec)
                        })
                        .and_then(|b| SignatureRecord::from_json_bytes(&b).ok());
                    if held.txid != *txid || record.as_ref() != Some(&v.info.signature) {
                        return Err(EngineError::BadSnapshot(format!(
                            "{}: the ledger holds another transaction at {}",
                            path.display(),
                            txid.seqno
                        )));
                    }
                    Ok(v)
                });
            match checked {
                Ok(v) => return Some(v),
                Err(e) => {
                    tracing::warn!(%txid, error = %e, "not starting from this snapshot");
                }
            }
        }
        None
    }

    /// Applies one entry to store and tree (no ledger write): replay at start.
    fn replay(
        &mut self,
        txid: TxId,
        is_signature: bool,
        payload: &[u8],
    ) -> Result<WriteSet, EngineError> {
        let bad = |reason: String| EngineError::BadEntry { txid, reason };
        let entry = TxEntry::decode(payload).map_err(|e| bad(e.to_string()))?;
        let old = self
            .recovering
            .as_ref()
            .is_some_and(|r| txid.seqno < r.boundary);
        let ws = if old {
            entry.public_write_set()
        } else {
            entry.write_set(txid, Some(self.secrets.for_seqno(txid.seqno)))
        }
        .map_err(|e| bad(e.to_string()))?;
        let has_sig = ws.get(SIGNATURES_MAP, SIGNATURE_KEY).is_some();
        if has_sig != is_signature {
            return Err(bad("signature flag does not match the write set".into()));
        }
        if old {
            if let (Some(Some(v)), Some(r)) = (
                ws.get(rekey::HISTORICAL_ENCRYPTED_LEDGER_SECRET, rekey::REKEY_KEY),
                self.recovering.as_mut(),
            ) {
                let h = serde_json::from_slice(v)
                    .map_err(|e| bad(format!("unreadable historical secret: {e}")))?;
                r.history.push(h);
            }
        } else if let Some(row) = rekey::rekey_in(&ws)? {
            self.learn_secret(txid, &row)?;
        }
        self.store.apply(txid, &ws)?;
        self.tree.append(leaf_of(&entry));
        self.note_view(txid);
        if is_signature {
            self.signatures.insert(txid.seqno.0);
            self.txs_since_signature = 0;
        } else {
            self.txs_since_signature += 1;
        }
        Ok(ws)
    }

    /// Applies an entry produced by the primary (a backup's write path): ledger,
    /// store and tree, in that order, exactly as the primary did. Returns the decoded
    /// write set (the node indexes it without reading the entry back).
    pub fn apply_entry(
        &mut self,
        txid: TxId,
        is_signature: bool,
        payload: &[u8],
    ) -> Result<WriteSet, EngineError> {
        self.ledger.append(txid, is_signature, payload)?;
        match self.replay(txid, is_signature, payload) {
            Ok(ws) => {
                self.view = self.view.max(txid.view);
                if is_signature {
                    self.capture_snapshot(txid);
                }
                if let Some(f) = &self.observer {
                    f(TxEvent::Appended(txid, &ws));
                }
                Ok(ws)
            }
            Err(e) => {
                self.ledger.truncate(txid.seqno.prev())?;
                Err(e)
            }
        }
    }

    /// Drops every transaction after `seqno` (an uncommitted suffix lost in a view
    /// change): ledger, store, Merkle tree and signature index, durably. Refused below
    /// the committed seqno.
    pub fn rollback(&mut self, to: SeqNo) -> Result<(), EngineError> {
        let seqno = to.0;
        if to >= self.ledger.last_seqno() {
            return Ok(());
        }
        if seqno < self.committed {
            return Err(LedgerError::BelowCommitted {
                requested: to,
                committed: self.committed_seqno(),
            }
            .into());
        }
        self.ledger.truncate(to)?;
        self.store.rollback(to)?;
        if let Some(f) = &self.observer {
            f(TxEvent::RolledBack(to));
        }
        self.tree.truncate(seqno)?;
        self.signatures.split_off(&(seqno + 1));
        while self
            .view_runs
            .last()
            .is_some_and(|&(first, _)| first > SeqNo(seqno))
        {
            self.view_runs.pop();
        }
        self.txs_since_signature = seqno - self.signatures.last().copied().unwrap_or(0);
        self.pending_snapshots.retain(|p| p.txid.seqno.0 <= seqno);
        self.last_snapshot_seqno = self.newest_snapshot_seqno();
        self.forget_secrets_after(to)
    }

    /// Forgets the secrets no transaction up to `to` brought in (see
    /// [`LedgerSecrets::rollback`]), on disk too.
    fn forget_secrets_after(&mut self, to: SeqNo) -> Result<(), EngineError> {
        let held = self.secrets.len();
        self.secrets.rollback(to);
        self.evidence.truncate(self.secrets.len());
        if self.secrets.len() != held {
            tracing::warn!(
                forgotten = held - self.secrets.len(),
                last_seqno = to.0,
                "forgot ledger secrets whose rekey transaction this ledger does not hold"
            );
            self.publish_read_keys();
            self.save_secrets()?;
        }
        Ok(())
    }

    /// Before this node writes a transaction of its own (as primary, its ledger is
    /// the service's): a secret starting past the next seqno came with a rekey that
    /// was lost (written, then not flushed before a crash) and must never seal
    /// anything, nor be wrapped into the next rekey's history.
    fn forget_unwritten_secrets(&mut self) -> Result<(), EngineError> {
        let last = self.store.last_seqno();
        if self.secrets.latest().0 > last.next() {
            self.forget_secrets_after(last)?;
        }
        Ok(())
    }

    fn note_view(&mut self, txid: TxId) {
        if self.view_runs.last().map(|&(_, v)| v) != Some(txid.view) {
            self.view_runs.push((txid.seqno, txid.view));
        }
    }

    /// Calls `f` with every transaction appended from now on, under the engine's
    /// lock: the ones this node commits and the ones it applies from the primary
    /// (not those replayed at open), every rollback, and a recovery's history.
    /// One feeder for derived indexes on every node.
    pub fn set_observer(&mut self, f: TxObserver) {
        self.observer = Some(f);
    }

    /// The view of the transaction at `seqno`, if it exists (Raft's term of an index).
    /// On an engine started from a snapshot at `s`, this answers for `s` too (the
    /// snapshot's view) and `None` for anything before.
    pub fn view_at(&self, seqno: SeqNo) -> Option<View> {
        let base = self.ledger.first_seqno().prev();
        if seqno == SeqNo::ZERO || seqno < base || seqno > self.ledger.last_seqno() {
            return None;
        }
        let i = self.view_runs.partition_point(|&(first, _)| first <= seqno);
        i.checked_sub(1).map(|i| self.view_runs[i].1)
    }

    /// (first seqno, view) of each run of transactions appended in one view, in order.
    pub fn view_runs(&self) -> &[(SeqNo, View)] {
        &self.view_runs
    }

    /// Seqno of the last transaction appended (0 when empty; the snapshot's seqno
    /// on an engine started from a snapshot with nothing after it yet).
    pub fn last_seqno(&self) -> SeqNo {
        self.ledger.last_seqno()
    }

    /// First seqno whose transaction this node holds: 1, or `s + 1` on an engine
    /// started from a snapshot at `s`. History before it is [`EngineError::NotHeld`].
    pub fn first_seqno(&self) -> SeqNo {
        self.ledger.first_seqno()
    }

    /// The snapshot this engine's ledger continues, if any (its history before
    /// is not held).
    pub fn snapshot_base(&self) -> Option<TxId> {
        self.base
    }

    /// The snapshot whose state this engine loaded at open, replaying only the
    /// ledger after it: the base of a continued ledger, or the newest snapshot of a
    /// ledger held from seqno 1. `None`: the whole ledger was replayed.
    pub fn loaded_from(&self) -> Option<TxId> {
        self.loaded_from
    }

    /// The newest committed snapshot file in `snapshot_dir` (what a joining node
    /// can be sent), from the listing kept in memory.
    pub fn latest_snapshot(&self) -> Option<(TxId, PathBuf)> {
        self.snapshots.last().cloned()
    }

    /// Moves the oldest committed chunk of the main ledger directory that ends
    /// before `before` into `archive_dir` (one chunk, so the engine's lock is held
    /// for one chunk's copy at a time); `None` when there is nothing (more) to
    /// move or no archive directory. Only committed history moves, and it stays
    /// readable (receipts, historical reads, audits, recovery).
    pub fn archive_step(
        &mut self,
        before: SeqNo,
    ) -> Result<Option<covenant_ledger::ArchiveReport>, EngineError> {
        let Some(dir) = self.config.archive_dir.clone() else {
            return Ok(None);
        };
        let before = before.min(SeqNo(self.committed + 1));
        let Some(end) = self.ledger.next_archivable(before) else {
            return Ok(None);
        };
        let report = self.ledger.archive(end.next(), &dir)?;
        Ok((report.chunks > 0).then_some(report))
    }

    /// Captures a snapshot at the next signature, whatever the interval says (it is
    /// written once that signature commits). Needs `snapshot_dir`.
    pub fn request_snapshot(&mut self) {
        self.snapshot_requested = true;
    }

    fn newest_snapshot_seqno(&self) -> u64 {
        let last = self.ledger.last_seqno();
        let written = self
            .snapshots
            .iter()
            .map(|(t, _)| t.seqno.0)
            .filter(|&s| s <= last.0)
            .max();
        let pending = self.pending_snapshots.last().map(|p| p.txid.seqno.0);
        let base = self.base.map(|t| t.seqno.0);
        written.max(pending).max(base).unwrap_or(0)
    }

    /// After a signature at `txid` is appended (never during the replay at open):
    /// captures the state and tree when a snapshot is due.
    fn capture_snapshot(&mut self, txid: TxId) {
        // A recovering state lacks the old private domain: never a snapshot of it.
        if self.config.snapshot_dir.is_none() || self.recovering.is_some() {
            return;
        }
        let s = txid.seqno.0;
        let due = self.snapshot_requested
            || s.saturating_sub(self.last_snapshot_seqno) >= self.config.snapshot_tx_interval;
        if !due {
            return;
        }
        let Some(state) = self.store.snapshot().filter(|st| st.txid == txid) else {
            tracing::warn!(%txid, "store is not at the signature: no snapshot captured");
            return;
        };
        self.pending_snapshots.push(PendingSnapshot {
            txid,
            state,
            tree: self.tree.checkpoint(),
            index: snapshot::SnapshotIndex {
                signatures: self.signatures.range(..=s).copied().collect(),
                view_runs: self
                    .view_runs
                    .iter()
                    .copied()
                    .filter(|(first, _)| first.0 <= s)
                    .collect(),
            },
        });
        if self.pending_snapshots.len() > MAX_PENDING_SNAPSHOTS {
            self.pending_snapshots.remove(0);
        }
        self.snapshot_requested = false;
        self.last_snapshot_seqno = s;
    }

    /// Writes the newest captured snapshot that is now committed (older committed
    /// ones are superseded). Failures are logged: a snapshot is an optimisation and
    /// must never fail a commit.
    fn write_committed_snapshots(&mut self) {
        let committed = self.committed;
        let Some(i) = self
            .pending_snapshots
            .iter()
            .rposition(|p| p.txid.seqno.0 <= committed)
        else {
            return;
        };
        let p = self.pending_snapshots.remove(i);
        self.pending_snapshots
            .retain(|q| q.txid.seqno.0 > committed);
        if let Err(e) = self.write_snapshot(&p) {
            tracing::warn!(txid = %p.txid, error = %e, "could not write a snapshot");
        }
    }

    fn write_snapshot(&mut self, p: &PendingSnapshot) -> Result<(), EngineError> {
        let Some(dir) = self.config.snapshot_dir.clone() else {
            return Ok(());
        };
        let file = SnapshotFile {
            kv: p
                .state
                .to_bytes(Some(self.secrets.for_seqno(p.txid.seqno)))?,
            tree: p.tree.clone(),
            index: p.index.encode(),
        };
        let path = snapshot::write_durably(&dir, p.txid.seqno.0, &file.encode()?)?;
        tracing::info!(txid = %p.txid, file = %path.display(), "wrote a snapshot");
        self.snapshots.retain(|(t, _)| t.seqno != p.txid.seqno);
        self.snapshots.push((p.txid, path));
        self.snapshots.sort_by_key(|(t, _)| t.seqno.0);
        self.prune_snapshots();
        Ok(())
    }

    /// Keeps the newest [`KEPT_SNAPSHOTS`] files, and always the one this ledger
    /// continues (without it the node could not reopen, nor its ledger be audited).
    fn prune_snapshots(&mut self) {
        let keep_from = self.snapshots.len().saturating_sub(KEPT_SNAPSHOTS);
        let base = self.base.map(|t| t.seqno);
        let mut kept = Vec::new();
        for (i, (txid, path)) in std::mem::take(&mut self.snapshots).into_iter().enumerate() {
            if i >= keep_from || Some(txid.seqno) == base {
                kept.push((txid, path));
            } else if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "could not remove an old snapshot");
                kept.push((txid, path));
            }
        }
        self.snapshots = kept;
    }

    /// Seqnos before [`Engine::first_seqno`] are only in the snapshot.
    fn check_held(&self, seqno: SeqNo) -> Result<(), EngineError> {
        history::check_held(self.first_seqno(), seqno)
    }

    /// Appends the empty transaction a new primary starts its view with (Raft's
    /// blank entry): the same bytes on every node, since sealing is deterministic.
    pub fn append_blank(&mut self, txid: TxId) -> Result<(), EngineError> {
        let next = self.last_seqno().0 + 1;
        if txid.seqno.0 != next {
            return Err(EngineError::Ledger(LedgerError::OutOfOrder {
                expected: next,
                got: txid.seqno.0,
            }));
        }
        self.view = txid.view;
        let tx = self.store.begin();
        let got = self.append_tx(tx, Digest32::ZERO, false)?;
        debug_assert_eq!(got, txid);
        self.txs_since_signature += 1;
        Ok(())
    }

    /// Under consensus: transactions up to `index` are replicated to a majority.
    /// The last signature at or below it (and durable here) commits everything
    /// before it. Returns the committed seqno.
    /// The committed seqno [`Engine::advance_commit`] would reach for `index`
    /// (the last durable signature at or below it), without committing anything.
    pub fn commit_target(&self, replicated: SeqNo) -> SeqNo {
        let limit = replicated.min(self.ledger.synced_seqno()).0;
        SeqNo(
            self.signatures
                .range(..=limit)
                .next_back()
                .copied()
                .unwrap_or(0)
                .max(self.committed),
        )
    }

    /// Commits up to [`Engine::commit_target`] for `replicated`; returns the committed seqno.
    pub fn advance_commit(&mut self, replicated: SeqNo) -> Result<SeqNo, EngineError> {
        let limit = replicated.min(self.ledger.synced_seqno()).0;
        if let Some(&sig) = self.signatures.range(..=limit).next_back() {
            self.commit_through(sig)?;
        }
        Ok(self.committed_seqno())
    }

    /// Sets the view new transactions get (consensus: the Raft term of this primary).
    pub fn set_view(&mut self, view: View) {
        self.view = view;
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn view(&self) -> View {
        self.view
    }

    /// The ledger secrets, each from its version on (recovery shares wrap the
    /// latest; joining nodes receive them all).
    pub fn ledger_secrets(&self) -> &LedgerSecrets {
        &self.secrets
    }

    /// A new ledger secret for every transaction from `version` on (a rekey). The
    /// version must come after every transaction this engine holds: what is written
    /// stays under the secret it was written with.
    pub fn add_ledger_secret(
        &mut self,
        version: SeqNo,
        secret: Arc<LedgerSecret>,
    ) -> Result<(), EngineError> {
        if version <= self.store.last_seqno() {
            return Err(EngineError::Rekey(format!(
                "a secret from seqno {version} would apply to transactions already written (the last is {})",
                self.store.last_seqno()
            )));
        }
        let key = CommitEvidenceKey::new(&secret);
        self.secrets
            .add(version, secret)
            .map_err(|e| EngineError::Rekey(e.to_string()))?;
        self.evidence.push(key);
        self.publish_read_keys();
        self.save_secrets()
    }

    /// Rewrites [`EngineConfig::secrets_file`], if any, with the whole chain.
    fn save_secrets(&self) -> Result<(), EngineError> {
        match &self.config.secrets_file {
            Some(path) => Ok(covenant_crypto::write_private_file(
                path,
                self.secrets.to_text().as_bytes(),
            )?),
            None => Ok(()),
        }
    }

    /// Starts a new ledger secret in `tx` (the next transaction this engine
    /// commits, which must follow at once): writes the new secret for each of
    /// `recipients` and the current one sealed under it (see [`crate::rekey`]). Once
    /// [`Engine::commit_tx`] commits `tx` at seqno `s`, every transaction from
    /// `s + 1` on is sealed under the new secret; a backup learns it from `tx`.
    pub fn rekey(
        &mut self,
        tx: &mut Tx,
        recipients: &[SecretRecipient],
    ) -> Result<(), EngineError> {
        if self.recovering.is_some() {
            return Err(EngineError::Rekey(
                "the service is being recovered: a new secret waits until it is open".into(),
            ));
        }
        self.forget_unwritten_secrets()?;
        let new = LedgerSecret::generate()?;
        let version = self.last_seqno().next().next();
        let (row, history) = rekey::rekey_rows(&self.secrets, &new, version, recipients)?;
        tx.put(rekey::ENCRYPTED_LEDGER_SECRETS, rekey::REKEY_KEY, &row);
        tx.put(
            rekey::HISTORICAL_ENCRYPTED_LEDGER_SECRET,
            rekey::REKEY_KEY,
            &history,
        );
        self.staged_secret = Some(Arc::new(new));
        Ok(())
    }

    /// The service certificate this engine was configured with.
    pub fn service_cert(&self) -> Option<&Certificate> {
        self.config.service_cert.as_ref()
    }

    /// This node as a rekey's recipient (a single node hands the secret to itself).
    pub fn encryption_recipient(&self) -> Option<SecretRecipient> {
        let key = self.encryption_key.as_ref()?.public_key_pem().ok()?;
        Some(SecretRecipient {
            node_id: self.node.node_id.clone(),
            encryption_pub_key: key,
        })
    }

    /// Forgets a rekey staged for a transaction that will not be committed.
    pub fn cancel_rekey(&mut self) {
        self.staged_secret = None;
    }

    /// The newest secret and the seqno it applies from, counting one a rekey in
    /// the transaction being built will start (recovery shares wrap it).
    pub fn latest_ledger_secret(&self) -> (SeqNo, Arc<LedgerSecret>) {
        match &self.staged_secret {
            Some(s) => (self.last_seqno().next().next(), s.clone()),
            None => {
                let (v, s) = self.secrets.latest();
                (v, s.clone())
            }
        }
    }

    /// A rekey row met while applying `txid`: the secret it starts is this node's
    /// from `txid + 1` on (already held when it came with a join or a secrets file).
    fn learn_secret(
        &mut self,
        txid: TxId,
        row: &rekey::EncryptedLedgerSecrets,
    ) -> Result<(), EngineError> {
        let version = txid.seqno.next();
        if row.version != version.0 {
            return Err(EngineError::BadEntry {
                txid,
                reason: format!(
                    "a rekey row for seqno {} in the transaction before seqno {version}",
                    row.version
                ),
            });
        }
        if self.secrets.iter().any(|(v, _)| v == version) {
            return Ok(());
        }
        let secret = rekey::open_for(row, &self.node.node_id, self.encryption_key.as_deref())?;
        self.add_ledger_secret(version, Arc::new(secret))
    }

    /// Refuses what needs the old secrets while a recovery waits for them.
    fn check_recovered(&self, seqno: SeqNo) -> Result<(), EngineError> {
        history::check_recovered(self.recovery_boundary(), seqno)
    }

    /// The commit-evidence key for the transaction at `seqno`.
    fn evidence_key(&self, seqno: SeqNo) -> &CommitEvidenceKey {
        &self.evidence[self.secrets.index_of(seqno)]
    }

    pub fn node_id(&self) -> &str {
        &self.node.node_id
    }

    pub fn last_txid(&self) -> Option<TxId> {
        self.store.last_txid()
    }

    /// Seqno of the last committed signature: every seqno up to it is Committed.
    pub fn committed_seqno(&self) -> SeqNo {
        SeqNo(self.committed)
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Whether the ledger's disk still has [`EngineConfig::min_free_bytes`] free
    /// (read at most every 50 ms). Client transactions are refused below it, and a
    /// replica stops taking in the primary's entries until space returns.
    pub fn check_space(&mut self) -> Result<(), EngineError> {
        let now = std::time::Instant::now();
        let free = match self.space {
            Some((at, free)) if now.duration_since(at) < SPACE_CHECK_EVERY => free,
            _ => {
                let free = self.ledger.free_bytes()?;
                self.space = Some((now, free));
                free
            }
        };
        let min = self.config.min_free_bytes;
        if free < min {
            return Err(EngineError::DiskFull { free, min });
        }
        Ok(())
    }

    /// Starts a transaction on the current state.
    pub fn begin(&self) -> Tx {
        self.store.begin()
    }

    /// Commits `tx` as the next transaction: conflict check, seqno, encrypted ledger
    /// entry (not yet fsynced), Merkle leaf. `claims_digest` is the application
    /// claims digest, if the transaction carries claims. A signature transaction
    /// follows automatically every `sig_tx_interval` transactions.
    pub fn commit_tx(
        &mut self,
        tx: Tx,
        claims_digest: Option<Digest32>,
    ) -> Result<TxId, EngineError> {
        if tx.write_set().get(SIGNATURES_MAP, SIGNATURE_KEY).is_some() {
            return Err(EngineError::Kv(KvError::Malformed {
                what: "transaction",
                reason: "only the engine writes signatures".into(),
            }));
        }
        let staged = self.staged_secret.take();
        let rekeys = tx
            .write_set()
            .maps
            .contains_key(rekey::ENCRYPTED_LEDGER_SECRETS);
        if rekeys && staged.is_none() {
            return Err(EngineError::Kv(KvError::Malformed {
                what: "transaction",
                reason: "only a rekey staged by the engine writes the ledger secrets".into(),
            }));
        }
        // A rekey staged for a transaction that was dropped: not this one's.
        let staged = staged.filter(|_| rekeys);
        self.check_space()?;
        let txid = self.append_tx(tx, claims_digest.unwrap_or(Digest32::ZERO), false)?;
        if let Some(secret) = staged {
            // Before anything else is sealed (the signature below included).
            self.add_ledger_secret(txid.seqno.next(), secret)?;
        }
        self.txs_since_signature += 1;
        if self.txs_since_signature >= self.config.sig_tx_interval {
            self.emit_signature()?;
        }
        Ok(txid)
    }

    fn append_tx(
        &mut self,
        tx: Tx,
        claims: Digest32,
        is_signature: bool,
    ) -> Result<TxId, EngineError> {
        self.forget_unwritten_secrets()?;
        let (txid, ws) = self.store.commit(tx, self.view)?;
        let result = self.append_entry(txid, &ws, claims, is_signature);
        if result.is_err() {
            // Keep store, ledger and tree in step: undo the store side.
            self.store.rollback(txid.seqno.prev())?;
        } else {
            self.note_view(txid);
            if let Some(f) = &self.observer {
                f(TxEvent::Appended(txid, &ws));
            }
        }
        result.map(|_| txid)
    }

    fn append_entry(
        &mut self,
        txid: TxId,
        ws: &WriteSet,
        claims: Digest32,
        is_signature: bool,
    ) -> Result<(), EngineError> {
        let ce = commit_evidence_digest(&self.evidence_key(txid.seqno).evidence(txid));
        let secret = self.secrets.for_seqno(txid.seqno);
        let entry = TxEntry::seal(txid, ws, Some(secret), ce, claims)?;
        let bytes = entry.encode();
        self.ledger.append(txid, is_signature, &bytes)?;
        self.tree.append(leaf_of(&entry));
        if let Some(c) = self.captured.as_mut() {
            c.push((bytes, is_signature));
        }
        Ok(())
    }

    /// Starts recording the encoded entries this engine appends (a primary about to
    /// replicate them); [`Engine::take_captured`] ends it.
    pub fn begin_capture(&mut self) {
        self.captured = Some(Vec::new());
    }

    /// The entries appended since [`Engine::begin_capture`], in order: payload and
    /// signature flag.
    pub fn take_captured(&mut self) -> Vec<(Vec<u8>, bool)> {
        self.captured.take().unwrap_or_default()
    }

    /// Emits a signature transaction over the root of every transaction so far.
    /// The node calls this on its `sig_ms_interval` timer and after a view change.
    pub fn emit_signature(&mut self) -> Result<TxId, EngineError> {
        if self.tree.is_empty() {
            return Err(EngineError::NothingToSign);
        }
        let root = self.tree.root()?;
        let seqno = self.tree.len() + 1;
        let sig = self.node.key.sign_prehashed_sha256(&root.0)?;
        let record = SignatureRecord {
            view: self.view,
            seqno: SeqNo(seqno),
            root,
            node_id: self.node.node_id.clone(),
            signature: base64::engine::general_purpose::STANDARD.encode(sig),
            cert: self.node_cert_pem.clone(),
            commit_seqno: SeqNo(self.committed),
        };
        let mut tx = self.store.begin();
        tx.put(SIGNATURES_MAP, SIGNATURE_KEY, &record.to_json_bytes());
        let txid = self.append_tx(tx, Digest32::ZERO, true)?;
        debug_assert_eq!(txid.seqno.0, seqno);
        self.signatures.insert(seqno);
        self.txs_since_signature = 0;
        self.capture_snapshot(txid);
        Ok(txid)
    }

    /// Transactions since the last signature (the node's timer skips empty intervals).
    pub fn unsigned_txs(&self) -> u64 {
        self.txs_since_signature
    }

    /// Group commit: one fsync for everything appended so far; then (single node)
    /// everything up to the last signature is Committed. Returns the committed seqno.
    pub fn flush(&mut self) -> Result<SeqNo, EngineError> {
        self.ledger.sync()?;
        if self.commit_on_sync {
            if let Some(&last_sig) = self.signatures.last() {
                self.commit_through(last_sig)?;
            }
        }
        Ok(self.committed_seqno())
    }

    /// Whether a group commit would achieve something now: a signature is not yet
    /// durable (so transactions wait for Committed) or a chunk close is pending.
    /// Syncing only then keeps fsyncs few and large under load.
    pub fn sync_wanted(&self) -> bool {
        self.ledger.close_pending()
            || self
                .signatures
                .last()
                .is_some_and(|&s| s > self.ledger.synced_seqno().0)
    }

    /// Group commit split in two so the fdatasync runs without the caller's engine
    /// lock (appends continue meanwhile): take a ticket here, [`SyncTicket::run`] it
    /// unlocked, then [`Engine::complete_flush`].
    pub fn prepare_flush(&mut self) -> Result<SyncTicket, EngineError> {
        Ok(self.ledger.prepare_sync()?)
    }

    /// Records a ticket's outcome; the last signature it made durable (single
    /// node: every tx up to it) becomes Committed. Returns the committed seqno.
    pub fn complete_flush(
        &mut self,
        ticket: SyncTicket,
        result: Result<(), LedgerError>,
    ) -> Result<SeqNo, EngineError> {
        self.ledger.complete_sync(ticket, result)?;
        let synced = self.ledger.synced_seqno().0;
        if self.commit_on_sync {
            if let Some(&last_sig) = self.signatures.range(..=synced).next_back() {
                self.commit_through(last_sig)?;
            }
        }
        Ok(self.committed_seqno())
    }

    fn commit_through(&mut self, sig: u64) -> Result<(), EngineError> {
        if sig > self.committed {
            self.ledger.commit(SeqNo(sig))?;
            self.store.mark_committed(SeqNo(sig));
            self.committed = sig;
            let keep = self.config.merkle_resident_leaves;
            self.tree.flush_before(self.committed.saturating_sub(keep));
            self.write_committed_snapshots();
        }
        Ok(())
    }

    /// Status of a TxId (SPEC §5).
    /// On an engine started from a snapshot at `s`, `s` itself is Committed (or
    /// Invalid for another view) and anything before it is [`EngineError::NotHeld`].
    pub fn status(&self, txid: TxId) -> Result<TxStatus, EngineError> {
        let last = self.store.last_seqno();
        if txid.seqno.0 > last.0 {
            return Ok(TxStatus::Unknown);
        }
        if let Some(base) = self.base {
            if txid.seqno == base.seqno {
                return Ok(if txid.view == base.view {
                    TxStatus::Committed
                } else {
                    TxStatus::Invalid
                });
            }
            self.check_held(txid.seqno)?;
        }
        // The view runs answer without reading the ledger (status is asked on every
        // read by TxId, and by backups deciding whether to ask the primary).
        let actual_view = match self.view_at(txid.seqno) {
            Some(v) => v,
            None => self.ledger.read(txid.seqno)?.txid.view,
        };
        if actual_view != txid.view {
            // Another transaction holds this seqno here. Only once that one is
            // committed is `txid` decided (Invalid); until then this node may hold
            // a suffix that will be rolled back in favour of `txid` (it is a backup
            // that has not caught up, or a deposed primary), so it cannot tell.
            return Ok(if txid.seqno.0 <= self.committed {
                TxStatus::Invalid
            } else {
                TxStatus::Unknown
            });
        }
        Ok(if txid.seqno.0 <= self.committed {
            TxStatus::Committed
        } else {
            TxStatus::Pending
        })
    }

    /// The decoded write set of a transaction, read back from the ledger (historical reads).
    ///
    /// Needs `&self`, so under a shared engine lock it holds up the write path
    /// for the file read and decryption: for committed history prefer a
    /// [`HistoryReader`] (see [`Engine::history_reader`]), which answers the same.
    pub fn read_tx(&self, seqno: SeqNo) -> Result<(TxId, WriteSet), EngineError> {
        self.check_held(seqno)?;
        if seqno == SeqNo::ZERO || seqno > self.ledger.last_seqno() {
            return Err(EngineError::NoSuchTx(seqno));
        }
        let e = self.ledger.read(seqno)?;
        history::open_tx(
            &e,
            self.secrets.for_seqno(e.txid.seqno),
            self.recovery_boundary(),
        )
    }

    /// A reader of committed transactions that needs no engine lock: it gives
    /// [`Engine::read_tx`]'s answers for every seqno in a committed ledger
    /// chunk (the bulk of history, archived chunks included), from any thread,
    /// while the engine keeps writing; anything newer is
    /// [`EngineError::NotInCommittedHistory`], for the engine to answer. It
    /// follows this engine's commits, archives, rekeys and recovery; clone it
    /// freely (clones share a cache of file handles), take a new one after a
    /// reopen.
    pub fn history_reader(&self) -> HistoryReader {
        HistoryReader::new(self.ledger.reader(), self.read_keys.clone())
    }

    /// Shows [`HistoryReader`]s the current secrets and recovery boundary:
    /// called after each change to either (the engine's own copies stay plain
    /// fields, so the write path never takes this lock).
    fn publish_read_keys(&self) {
        let mut keys = self
            .read_keys
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        keys.secrets = self.secrets.clone();
        keys.recovery_boundary = self.recovery_boundary();
    }

    fn signature_record(&self, seqno: SeqNo) -> Result<SignatureRecord, EngineError> {
        let (txid, ws) = self.read_tx(seqno)?;
        let bytes = ws
            .get(SIGNATURES_MAP, SIGNATURE_KEY)
            .flatten()
            .ok_or_else(|| EngineError::BadEntry {
                txid,
                reason: "not a signature transaction".into(),
            })?;
        SignatureRecord::from_json_bytes(bytes).map_err(|e| EngineError::BadEntry {
            txid,
            reason: e.to_string(),
        })
    }

    /// Runs a tree query, rebuilding flushed pages from the ledger as needed (and,
    /// on an engine started from a snapshot, from the checkpoint's last page: other
    /// pages before the snapshot are [`EngineError::NotHeld`]).
    fn with_tree<T>(
        &mut self,
        f: impl Fn(&MerkleTree) -> Result<T, MerkleError>,
    ) -> Result<T, EngineError> {
        loop {
            match f(&self.tree) {
                Err(MerkleError::Evicted { page, first, end }) => {
                    let mut leaves = Vec::with_capacity((end - first) as usize);
                    // Leaf i is seqno i + 1: leaves before `held` are the snapshot's.
                    let held = self.first_seqno().0 - 1;
                    if first < held {
                        let (from, base_leaves) = &self.base_leaves;
                        let upto = end.min(held);
                        let got = first
                            .checked_sub(*from)
                            .and_then(|a| base_leaves.get(a as usize..(upto - from) as usize))
                            .ok_or(EngineError::NotHeld(SeqNo(first + 1)))?;
                        leaves.extend_from_slice(got);
                    }
                    let next = (first + 1).max(held + 1);
                    for e in self.ledger.read_range(SeqNo(next), SeqNo(end))? {
                        let e = e?;
                        let entry =
                            TxEntry::decode(&e.payload).map_err(|x| EngineError::BadEntry {
                                txid: e.txid,
                                reason: x.to_string(),
                            })?;
                        leaves.push(leaf_of(&entry));
                    }
                    self.tree.restore_page(page, &leaves)?;
                }
                other => return Ok(other?),
            }
        }
    }

    /// The receipt of transaction `txid` (SPEC §3): `Loading` until a committed
    /// signature covers it; commit evidence is only revealed then.
    pub fn receipt(&mut self, txid: TxId) -> Result<ReceiptResponse, EngineError> {
        self.check_held(txid.seqno)?;
        // Its commit evidence comes from the secret of its time.
        self.check_recovered(txid.seqno)?;
        if txid.seqno == SeqNo::ZERO || txid.seqno > self.ledger.last_seqno() {
            return Err(EngineError::NoSuchTx(txid.seqno));
        }
        let stored = self.ledger.read(txid.seqno)?;
        if stored.txid != txid {
            return Err(EngineError::NoSuchTx(txid.seqno));
        }
        let seqno = txid.seqno.0;
        let loading = ReceiptResponse {
            receipt: None,
            state: ReceiptState::Loading,
            transaction_id: txid,
        };
        let Some(&sig_seqno) = self.signatures.range(seqno + 1..).next() else {
            return Ok(loading);
        };
        if sig_seqno > self.committed {
            return Ok(loading);
        }
        let entry = TxEntry::decode(&stored.payload).map_err(|e| EngineError::BadEntry {
            txid,
            reason: e.to_string(),
        })?;
        let record = self.signature_record(SeqNo(sig_seqno))?;
        let proof = self.with_tree(|t| t.inclusion_proof(seqno - 1, sig_seqno - 1))?;
        Ok(ReceiptResponse {
            receipt: Some(Receipt {
                cert: record.cert,
                leaf_components: LeafComponents {
                    claims_digest: entry.claims_digest.to_hex(),
                    commit_evidence: self.evidence_key(txid.seqno).evidence(txid),
                    write_set_digest: entry.write_set_digest().to_hex(),
                },
                node_id: record.node_id,
                proof: proof.path,
                service_endorsements: Vec::new(),
                signature: record.signature,
            }),
            state: ReceiptState::Ready,
            transaction_id: txid,
        })
    }

    /// Seqnos of all signature transactions this node holds (on an engine started
    /// from a snapshot, not the snapshot's own signature: it is not in the ledger).
    pub fn signature_seqnos(&self) -> impl Iterator<Item = SeqNo> + '_ {
        self.signatures
            .range(self.first_seqno().0..)
            .map(|&s| SeqNo(s))
    }

    /// Two signature records and the proof that the later tree extends the earlier one.
    pub fn consistency(
        &mut self,
        old_sig_seqno: SeqNo,
        new_sig_seqno: SeqNo,
    ) -> Result<(SignatureRecord, SignatureRecord, ConsistencyProof), EngineError> {
        let old = self.signature_record(old_sig_seqno)?;
        let new = self.signature_record(new_sig_seqno)?;
        let proof = self.with_tree(|t| t.consistency_proof(old.tree_size(), new.tree_size()))?;
        Ok((old, new, proof))
    }
}

/// The Merkle leaf of a stored entry.
pub(crate) fn leaf_of(entry: &TxEntry) -> Digest32 {
    leaf_hash(
        &entry.write_set_digest(),
        &entry.commit_evidence_digest,
        &entry.claims_digest,
    )
}
