//! The service layer between HTTP and the engine (the role of CCF's node
//! interface and its service tables): what the service's tables are called
//! ([`tables`]), how a new service begins ([`genesis`]), its users and nodes, the
//! collection index ([`index`], fed by the engine for every transaction on every
//! node), receipts with their application claims ([`entries`]), and [`Service`]:
//! an async facade that runs engine work on blocking threads and writes either
//! directly (one node) or through the Raft replica (a network).
//!
//! Nothing here knows HTTP: `covenant-node` turns requests into calls on
//! [`Service`] and its results into responses.

#![forbid(unsafe_code)]

pub mod admission;
pub mod apps;
pub mod defaults;
pub mod disaster;
mod driver;
pub mod entries;
pub mod genesis;
pub mod govern;
pub mod index;
pub mod nodes;
pub mod optimistic;
pub mod recovery;
pub mod scripts;
pub mod tables;
pub mod users;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use covenant_consensus::{ConsensusError, Replica};
use covenant_engine::{Engine, EngineError, TxStatus};
use covenant_types::{NodeId, SeqNo, TxId};
use tokio::sync::watch;

pub use admission::{Admission, AdmissionConfig, AdmissionError};
pub use entries::{Entry, ReceiptWithClaims};
pub use genesis::{Genesis, JoinPolicy};
pub use govern::{GovernError, Replay, CREATED_AT_WINDOW_SECS};
pub use index::{EntryIndex, Index};
pub use nodes::{NodeInfo, NodeStatus};
pub use optimistic::{Executed, Outcome};
pub use users::{Role, UserId};

/// Why the service refused or failed a request. The variants a caller acts on
/// (retry elsewhere, retry later, not found) are distinct; the rest carry their cause.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A write reached a backup (forwarding sends writes to the primary first).
    #[error("this node is not the primary (primary: {leader:?})")]
    NotPrimary { leader: Option<u64> },
    /// No primary can write yet (an election, or a new primary's first entry).
    #[error("the primary is not taking writes yet (starting its view, or handing leadership over); retry")]
    NotReady,
    /// Replication stopped on this node's storage; a restart recovers it.
    #[error("this node stopped replicating: {0}")]
    ReplicationFailed(String),
    /// The ledger's disk is full: nothing was written.
    #[error("{0}; nothing was written")]
    DiskFull(#[source] EngineError),
    #[error("transaction {0} does not exist")]
    NoSuchTx(TxId),
    /// History before this node's first seqno (it started from a snapshot).
    #[error("seqno {0} precedes this node's ledger (it started from a snapshot)")]
    NotHeld(SeqNo),
    /// A recovering service has not replayed the old private domain yet.
    #[error("transaction {0} is from before the recovery: its private writes are readable once the recovery members' shares are in")]
    NotRecovered(SeqNo),
    #[error(transparent)]
    Engine(EngineError),
    #[error(transparent)]
    Consensus(ConsensusError),
    /// The blocking task running the work panicked or was cancelled.
    #[error("the task running the request failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A script's reads were changed by other writers before it could commit, on
    /// every one of its runs (see `optimistic`): nothing was written.
    #[error("the transaction conflicted with concurrent writes on each of its {runs} runs; nothing was written, retry")]
    Conflict { runs: u32 },
    /// Too many scripts are waiting to run (see `scripts`): nothing was done.
    #[error("too many scripts are waiting to run; retry")]
    Busy,
    /// A script's thread panicked: nothing was written.
    #[error("the script's thread failed")]
    ScriptPanicked,
    /// The collection index failed (its file; the ledger is unaffected).
    #[error("collection index: {0}")]
    Index(#[from] covenant_index::IndexError),
}

impl From<EngineError> for ServiceError {
    fn from(e: EngineError) -> ServiceError {
        match e {
            EngineError::DiskFull { .. } => ServiceError::DiskFull(e),
            EngineError::NotHeld(seqno) => ServiceError::NotHeld(seqno),
            EngineError::NotRecovered(seqno) => ServiceError::NotRecovered(seqno),
            other => ServiceError::Engine(other),
        }
    }
}

impl From<ConsensusError> for ServiceError {
    fn from(e: ConsensusError) -> ServiceError {
        match e {
            ConsensusError::Engine(inner) => inner.into(),
            ConsensusError::NotPrimary { leader } => ServiceError::NotPrimary { leader },
            ConsensusError::NotReady => ServiceError::NotReady,
            ConsensusError::Failed(why) => ServiceError::ReplicationFailed(why),
            other => ServiceError::Consensus(other),
        }
    }
}

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Entries stored in clear (`Public` ledger) rather than encrypted.
    pub ledger_public: bool,
    /// The longest a transaction waits for a signature (signatures are paced:
    /// see `covenant_engine::pacer`).
    pub sig_interval: Duration,
    /// Where the collection index lives (redb); `None` keeps it in memory, built
    /// by a ledger scan at start.
    pub index_path: Option<std::path::PathBuf>,
    /// Told of progress while the on-disk index catches up with the ledger.
    pub index_progress: Option<IndexProgressFn>,
}

/// A progress callback for [`ServiceOptions::index_progress`].
#[derive(Clone)]
pub struct IndexProgressFn(pub index::IndexProgress);

impl std::fmt::Debug for IndexProgressFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IndexProgressFn")
    }
}

/// Fed by the engine's observer on every appended transaction.
struct Fed {
    index: Arc<Index>,
    appended: watch::Receiver<SeqNo>,
}

/// The service of one node. Cheap to clone.
#[derive(Clone)]
pub struct Service(Arc<Inner>);

struct Inner {
    engine: Arc<Mutex<Engine>>,
    /// The engine's KV store, readable without the engine lock (users, roles).
    store: covenant_kv::Store,
    node_id: NodeId,
    ledger_public: bool,
    committed: watch::Receiver<SeqNo>,
    /// The last transaction appended on this node (its own or the primary's).
    appended: watch::Receiver<SeqNo>,
    replica: Option<Replica>,
    /// Set with `replica`: what admitting other nodes needs.
    admission: Option<AdmissionConfig>,
    index: Arc<Index>,
    apps: apps::AppCache,
    scripts: scripts::ScriptPool,
    /// Reads committed history without the engine's lock.
    history: covenant_engine::HistoryReader,
    /// Node certificate (PEM) → its receipts' `serviceEndorsements`: a process's
    /// service identity never changes, so neither does a chain once found.
    endorsements: Mutex<std::collections::HashMap<String, Vec<String>>>,
    /// A disaster recovery's shares submitted so far (member id → share), in
    /// memory only (see `disaster`).
    submitted_shares: Mutex<std::collections::BTreeMap<String, covenant_recovery::Share>>,
    driver: tokio::sync::Mutex<Option<driver::Driver>>,
    /// Test hook: writes fail with this error instead of running.
    #[cfg(feature = "test-hooks")]
    refusal: Mutex<Option<fn() -> ServiceError>>,
}

impl Service {
    /// A single node: its own driver signs and group-commits.
    pub fn single(engine: Engine, options: &ServiceOptions) -> Result<Service, ServiceError> {
        let (engine, fed) = Self::indexed(engine, options)?;
        let committed = lock(&engine).committed_seqno();
        let (tx, rx) = watch::channel(committed);
        let driver =
            driver::Driver::spawn(engine.clone(), tx, options.sig_interval).map_err(|source| {
                EngineError::Io {
                    path: "covenant-commit thread".into(),
                    source,
                }
            })?;
        Ok(Self::assemble(engine, fed, rx, None, Some(driver), options))
    }

    /// A node of a network: `start` starts the replica on the engine (which the
    /// service has hooked up first, so the index sees every applied entry).
    pub fn replicated(
        engine: Engine,
        options: &ServiceOptions,
        admission: AdmissionConfig,
        start: impl FnOnce(Arc<Mutex<Engine>>) -> Result<Replica, ConsensusError>,
    ) -> Result<Service, ServiceError> {
        let (engine, fed) = Self::indexed(engine, options)?;
        let replica = start(engine.clone())?;
        let rx = replica.subscribe_committed();
        Ok(Self::assemble(
            engine,
            fed,
            rx,
            Some((replica, admission)),
            None,
            options,
        ))
    }

    /// Builds the collection index from the ledger, then lets the engine's observer
    /// feed it, and the `appended` watch, every transaction appended from now on
    /// (the one feeder, on every node).
    fn indexed(
        mut engine: Engine,
        options: &ServiceOptions,
    ) -> Result<(Arc<Mutex<Engine>>, Fed), ServiceError> {
        let map = tables::entries_map(options.ledger_public);
        let index = Arc::new(match &options.index_path {
            Some(path) => Index::open_on_disk(
                path,
                &engine,
                map,
                options.index_progress.as_ref().map(|p| p.0.clone()),
            )
            .unwrap_or_else(|e| {
                // Say, a previous process still closing the file: opened later.
                tracing::warn!(error = %e, "the collection index could not be opened; retrying in the background");
                Index::unopened(path)
            }),
            None => Index::in_memory(&engine, map)?,
        });
        let (appended_tx, appended) = watch::channel(engine.last_seqno());
        let feed = index.clone();
        engine.set_observer(Arc::new(move |event| {
            feed.observe(event, map);
            if let covenant_engine::TxEvent::Appended(txid, _) = event {
                appended_tx.send_replace(txid.seqno);
            }
        }));
        Ok((Arc::new(Mutex::new(engine)), Fed { index, appended }))
    }

    fn assemble(
        engine: Arc<Mutex<Engine>>,
        Fed { index, appended }: Fed,
        committed: watch::Receiver<SeqNo>,
        network: Option<(Replica, AdmissionConfig)>,
        driver: Option<driver::Driver>,
        options: &ServiceOptions,
    ) -> Service {
        let (replica, admission) = network.unzip();
        spawn_index_committer(
            index.clone(),
            committed.clone(),
            Arc::downgrade(&engine),
            tables::entries_map(options.ledger_public),
        );
        let (node_id, store, history) = {
            let e = lock(&engine);
            (
                NodeId::new(e.node_id()),
                e.store().clone(),
                e.history_reader(),
            )
        };
        Service(Arc::new(Inner {
            engine,
            store,
            node_id,
            ledger_public: options.ledger_public,
            committed,
            appended,
            replica,
            admission,
            index,
            apps: apps::AppCache::default(),
            scripts: scripts::ScriptPool::default_size(),
            history,
            endorsements: Mutex::default(),
            submitted_shares: Mutex::default(),
            driver: tokio::sync::Mutex::new(driver),
            #[cfg(feature = "test-hooks")]
            refusal: Mutex::new(None),
        }))
    }

    /// Makes every write fail with `with()` until cleared with `None`: stands in
    /// for a consensus that refuses (not primary, not ready, replication failed, a
    /// full disk), so route handlers can be tested on those paths in process.
    #[cfg(feature = "test-hooks")]
    pub fn refuse_writes(&self, with: Option<fn() -> ServiceError>) {
        *lock(&self.0.refusal) = with;
    }

    #[cfg(feature = "test-hooks")]
    fn refused(&self) -> Result<(), ServiceError> {
        match *lock(&self.0.refusal) {
            Some(with) => Err(with()),
            None => Ok(()),
        }
    }

    #[cfg(not(feature = "test-hooks"))]
    #[inline(always)]
    fn refused(&self) -> Result<(), ServiceError> {
        Ok(())
    }

    /// The engine, for a short in-memory section (a lookup, a status): never for
    /// work that waits on disk, the network or a script (use the async methods).
    pub fn engine(&self) -> MutexGuard<'_, Engine> {
        lock(&self.0.engine)
    }

    /// The engine's KV store, read without the engine lock.
    pub fn store(&self) -> &covenant_kv::Store {
        &self.0.store
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.0.node_id
    }

    /// Whether entries are stored in clear.
    pub fn ledger_public(&self) -> bool {
        self.0.ledger_public
    }

    /// The replica, on a node of a network.
    pub fn replica(&self) -> Option<&Replica> {
        self.0.replica.as_ref()
    }

    /// Admitting and retiring nodes, on a node of a network.
    pub fn admission(&self) -> Option<Admission<'_>> {
        Some(Admission {
            service: self,
            replica: self.0.replica.as_ref()?,
            config: self.0.admission.as_ref()?,
        })
    }

    /// Whether this node executes writes: a single node always, a replica when it
    /// is the primary.
    pub fn is_primary(&self) -> bool {
        self.0
            .replica
            .as_ref()
            .is_none_or(|r| r.status().is_primary)
    }

    /// Collection → TxIds of its entries.
    /// The low-priority threads scripts run on.
    pub fn scripts(&self) -> &scripts::ScriptPool {
        &self.0.scripts
    }

    pub fn index(&self) -> &Index {
        &self.0.index
    }

    /// The deployed JavaScript app.
    pub fn apps(&self) -> &apps::AppCache {
        &self.0.apps
    }

    /// Runs `f` as a write on a blocking thread (it may wait for a new primary's
    /// first entry, run scripts, or block on the engine's lock).
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let s = self.clone();
        tokio::task::spawn_blocking(move || s.write_blocking(f)).await?
    }

    /// [`Service::write`] for a closure that only works on the store (no script, and
    /// nothing that waits: the engine buffers the ledger append, the fsync is the
    /// driver's or the replica thread's). It runs in place when the engine (and, in
    /// a network, the Raft state) is free, yielding to other tasks between a few
    /// attempts, and moves to a blocking thread only when the locks stay busy or a
    /// new primary's first entry is not in the ledger yet: an async thread never
    /// waits on a lock. A hop to a blocking thread for every write halved
    /// throughput on a 2-core machine (PERFORMANCE.md, issue 18).
    pub async fn write_in_memory<T: Send + 'static, F>(&self, f: F) -> Result<T, ServiceError>
    where
        F: FnOnce(&mut Engine) -> Result<T, EngineError> + Send + 'static,
    {
        self.refused()?;
        let mut f = f;
        for attempt in 0..IN_PLACE_ATTEMPTS {
            if attempt > 0 {
                tokio::task::yield_now().await;
            }
            f = match &self.0.replica {
                None => match lock_now(&self.0.engine) {
                    Some(mut engine) => return Ok(f(&mut engine)?),
                    None => f,
                },
                Some(r) => match r.try_write(f) {
                    Ok(out) => return Ok(out?),
                    Err(f) => f,
                },
            };
        }
        self.write(f).await
    }

    /// [`Service::write`] for a caller already on a blocking thread: directly on a
    /// single node, through consensus (primary only) in a network.
    pub fn write_blocking<T>(
        &self,
        f: impl FnOnce(&mut Engine) -> Result<T, EngineError>,
    ) -> Result<T, ServiceError> {
        self.refused()?;
        match &self.0.replica {
            None => Ok(f(&mut self.engine())?),
            Some(r) => Ok(r.write(f)?),
        }
    }

    /// Runs blocking work (scripts, ledger reads) on a blocking thread.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Service) -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        let s = self.clone();
        Ok(tokio::task::spawn_blocking(move || f(&s)).await?)
    }

    /// Moves one more committed ledger chunk into the archive directory when it
    /// holds nothing newer than the last `retain` committed transactions (see
    /// `Engine::archive_step`); `None` when nothing is left to move.
    pub async fn archive_step(
        &self,
        retain: u64,
    ) -> Result<Option<covenant_engine::ArchiveReport>, ServiceError> {
        self.blocking(move |s| {
            let mut e = s.engine();
            let before = SeqNo(e.committed_seqno().0.saturating_sub(retain));
            e.archive_step(before).map_err(ServiceError::from)
        })
        .await?
    }

    /// A transaction's status on this node.
    pub fn status(&self, txid: TxId) -> Result<TxStatus, ServiceError> {
        Ok(self.engine().status(txid)?)
    }

    /// The last committed seqno, as last published.
    pub fn committed_seqno(&self) -> SeqNo {
        *self.0.committed.borrow()
    }

    /// Notified with the committed seqno each time it advances.
    pub fn subscribe_committed(&self) -> watch::Receiver<SeqNo> {
        self.0.committed.clone()
    }

    /// Notified each time a transaction is appended on this node (executed here or
    /// applied from the primary): what a node that lags waits on to look again.
    pub fn subscribe_appended(&self) -> watch::Receiver<SeqNo> {
        self.0.appended.clone()
    }

    /// The last committed transaction (`None` before the first commit).
    pub fn committed_txid(&self) -> Result<Option<TxId>, ServiceError> {
        let engine = self.engine();
        let seqno = engine.committed_seqno();
        if seqno == SeqNo::ZERO {
            return Ok(None);
        }
        if let Some(view) = engine.view_at(seqno) {
            return Ok(Some(TxId { view, seqno }));
        }
        Ok(Some(
            engine.ledger().read(seqno).map_err(EngineError::from)?.txid,
        ))
    }

    /// The receipt of `txid` with the claims it proves (read from the ledger on a
    /// blocking thread).
    pub async fn receipt(&self, txid: TxId) -> Result<ReceiptWithClaims, ServiceError> {
        self.blocking(move |s| s.receipt_blocking(txid)).await?
    }

    fn receipt_blocking(&self, txid: TxId) -> Result<ReceiptWithClaims, ServiceError> {
        let mut engine = self.engine();
        let mut response = engine.receipt(txid).map_err(|e| match e {
            EngineError::NoSuchTx(_) => ServiceError::NoSuchTx(txid),
            other => other.into(),
        })?;
        if let (Some(r), Some(service)) = (response.receipt.as_mut(), engine.service_cert()) {
            let mut cache = lock(&self.0.endorsements);
            r.service_endorsements = match cache.get(&r.cert) {
                Some(chain) => chain.clone(),
                None => {
                    let chain = disaster::endorsements_for(&self.0.store, service, &r.cert);
                    cache.insert(r.cert.clone(), chain.clone());
                    chain
                }
            };
        }
        let application_claims = if response.receipt.is_some() {
            let (_, ws) = engine.read_tx(txid.seqno)?;
            entries::claims_of(&ws, self.0.ledger_public)
        } else {
            Vec::new()
        };
        Ok(ReceiptWithClaims {
            response,
            application_claims,
        })
    }

    /// The entry transaction `txid` wrote to `collection`, if it wrote one.
    pub async fn entry(
        &self,
        txid: TxId,
        collection: String,
    ) -> Result<Option<Entry>, ServiceError> {
        // Committed history needs no engine lock at all.
        match self.0.history.read_tx(txid.seqno) {
            Ok((actual, ws)) => {
                return Ok((actual == txid)
                    .then(|| entries::entry_in(&ws, txid, &collection, self.0.ledger_public))
                    .flatten())
            }
            Err(EngineError::NotInCommittedHistory(_)) => {}
            Err(EngineError::NoSuchTx(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        for attempt in 0..IN_PLACE_ATTEMPTS {
            if attempt > 0 {
                tokio::task::yield_now().await;
            }
            if let Some(engine) = lock_now(&self.0.engine) {
                return self.entry_in(&engine, txid, &collection);
            }
        }
        self.blocking(move |s| s.entry_in(&s.engine(), txid, &collection))
            .await?
    }

    /// A transaction's write set: from committed history without the engine's lock
    /// when it is there, else through the engine.
    fn read_committed_or_engine(
        &self,
        seqno: SeqNo,
    ) -> Result<(TxId, covenant_kv::WriteSet), EngineError> {
        match self.0.history.read_tx(seqno) {
            Err(EngineError::NotInCommittedHistory(_)) => self.engine().read_tx(seqno),
            other => other,
        }
    }

    /// The entry, read through the ledger's chunk index: one positioned read of a
    /// file the page cache holds unless the entry is old and cold. Done in place
    /// when the engine is free, as the hop to a blocking thread cost 45 % of read
    /// throughput on a 2-core machine (PERFORMANCE.md, issue 18).
    fn entry_in(
        &self,
        engine: &Engine,
        txid: TxId,
        collection: &str,
    ) -> Result<Option<Entry>, ServiceError> {
        let (actual, ws) = match engine.read_tx(txid.seqno) {
            Ok(x) => x,
            Err(EngineError::NoSuchTx(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if actual != txid {
            return Ok(None);
        }
        Ok(entries::entry_in(
            &ws,
            txid,
            collection,
            self.0.ledger_public,
        ))
    }

    /// Committed entries of `collection` with `from <= seqno <= to` (with `tag`, if
    /// given), at most `limit`, and the TxId to continue from when more follow.
    pub async fn entries(
        &self,
        collection: String,
        from: SeqNo,
        to: SeqNo,
        tag: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Entry>, Option<TxId>), ServiceError> {
        self.blocking(move |s| {
            let (page, next) = s.index().range(&collection, from, to, limit)?;
            let mut out = Vec::with_capacity(page.len());
            for indexed in page {
                let (txid, ws) = s.read_committed_or_engine(indexed.seqno)?;
                // The index may still name a transaction rolled back at that seqno.
                if txid != indexed {
                    continue;
                }
                if let Some(e) = entries::entry_in(&ws, txid, &collection, s.0.ledger_public) {
                    if tag.as_deref().is_none_or(|t| e.has_tag(t)) {
                        out.push(e);
                    }
                }
            }
            Ok((out, next))
        })
        .await?
    }

    /// The latest *committed* entry of `collection`, when its latest value is not
    /// committed yet (from the index and the ledger, on a blocking thread).
    pub async fn latest_committed_entry(
        &self,
        collection: String,
    ) -> Result<Option<Entry>, ServiceError> {
        self.blocking(move |s| {
            let committed = s.engine().committed_seqno();
            let found = s
                .index()
                .latest(&collection, committed, 64)?
                .into_iter()
                .find_map(|t| {
                    let (txid, ws) = s.read_committed_or_engine(t.seqno).ok()?;
                    let e = entries::entry_in(&ws, txid, &collection, s.0.ledger_public)?;
                    (txid == t).then_some(e)
                });
            Ok(found)
        })
        .await?
    }

    /// Stops the service's part in commits and makes everything durable: a single
    /// node signs what is unsigned first; a replica stops replicating (only the
    /// primary signs, through consensus). Returns the last seqno flushed.
    pub async fn shutdown(&self) -> Result<SeqNo, ServiceError> {
        if let Some(d) = self.0.driver.lock().await.take() {
            d.stop().await;
        }
        let replicated = self.0.replica.as_ref().inspect(|r| r.stop()).is_some();
        self.blocking(move |s| {
            let mut e = s.engine();
            let done = if replicated {
                e.flush()?
            } else {
                driver::final_flush(&mut e)?
            };
            let committed = e.committed_seqno();
            drop(e);
            if let Err(err) = s.0.index.commit(committed).and_then(|()| s.0.index.flush()) {
                tracing::warn!(error = %err, "could not write the collection index at shutdown; it catches up at the next start");
            }
            Ok(done)
        })
        .await?
    }
}

/// How often the collection index moves newly committed transactions to disk.
const INDEX_COMMIT_EVERY: Duration = Duration::from_millis(20);

/// A thread moving committed transactions from the index's memory tail to disk,
/// off every request path; it ends when the commit watch's sender is gone.
fn spawn_index_committer(
    index: Arc<Index>,
    committed: watch::Receiver<SeqNo>,
    engine: std::sync::Weak<Mutex<Engine>>,
    map: &'static str,
) {
    if matches!(*index, Index::Memory(_)) {
        return;
    }
    // Weak: the service's end closes the index file, whatever this thread does.
    let index = Arc::downgrade(&index);
    let spawned = std::thread::Builder::new()
        .name("covenant-index".into())
        .spawn(move || {
            let mut done = SeqNo::ZERO;
            while committed.has_changed().is_ok() {
                let Some(index) = index.upgrade() else { break };
                if index.needs_recovery() {
                    if let Some(engine) = engine.upgrade() {
                        if let Err(e) = index.recover(&lock(&engine), map) {
                            tracing::debug!(error = %e, "the collection index is still closed");
                            drop(index);
                            std::thread::sleep(Duration::from_secs(1));
                            continue;
                        }
                    }
                }
                let now = *committed.borrow();
                if now > done {
                    match index.commit(now) {
                        Ok(()) => done = now,
                        Err(e) => {
                            // redb refuses everything after an I/O error (a full
                            // disk): reopen and catch up, under the engine's lock.
                            tracing::warn!(error = %e, "could not move committed entries to the collection index; reopening it");
                            if let Some(engine) = engine.upgrade() {
                                if let Err(e) = index.recover(&lock(&engine), map) {
                                    tracing::warn!(error = %e, "could not reopen the collection index; retrying");
                                }
                            }
                        }
                    }
                }
                drop(index);
                std::thread::sleep(INDEX_COMMIT_EVERY);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the collection index thread; committed entries stay in memory");
    }
}

/// How often an in-place operation tries the engine's lock (yielding between
/// tries) before it moves to a blocking thread.
const IN_PLACE_ATTEMPTS: usize = 4;

/// The lock if it is free now (a poisoned one too: see [`lock`]).
fn lock_now<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock would be a bug; the engine's own state stays
    // consistent (every step checks before it mutates), so keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
