//! The node's shared state and the engine driver.
//!
//! The engine is synchronous and owned behind one mutex: request handlers hold it
//! only for an in-memory commit (the ledger append is buffered), while the driver
//! task periodically emits a signature and makes everything durable (one fsync for
//! all transactions since the last tick: group commit).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use covenant_engine::{Engine, EngineError};
use tokio::sync::watch;

use crate::index::EntryIndex;
use crate::NodeError;

/// What every handler shares. Cloned for every request, so it is one `Arc`.
#[derive(Clone)]
pub struct NodeState(Arc<Shared>);

impl std::ops::Deref for NodeState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// A node's certificates, as PEM.
#[derive(Debug, Clone, Default)]
pub struct NodeCerts {
    pub endorsed: String,
    pub self_signed: Option<String>,
}

/// The fields behind [`NodeState`].
pub struct Shared {
    engine: Arc<Mutex<Engine>>,
    /// The engine's KV store, readable without the engine lock (users, roles).
    pub store: covenant_kv::Store,
    committed: watch::Receiver<u64>,
    pub node_id: String,
    pub service_cert_pem: Arc<String>,
    /// This node's certificates: the one the service endorsed, and one signed by
    /// the node's own key (`/node/endorsed_certificate`, `/node/self_signed_certificate`).
    pub node_certs: Arc<NodeCerts>,
    pub ledger_public: bool,
    pub ledger_id: Arc<String>,
    /// Collection → TxIds of its entries.
    pub index: Arc<EntryIndex>,
    /// Request counters for `/node/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Trusted JWT issuers.
    pub jwt: Arc<crate::jwt::JwtAuth>,
    /// Virtual attestation evidence of this node (SPEC §8).
    pub quote: Arc<crate::attestation::VirtualQuote>,
    /// The deployed JavaScript app, parsed once per version.
    pub apps: Arc<crate::app::AppCache>,
    /// Set when this node is one of a replicated network.
    pub network: Option<Arc<crate::network::Network>>,
}

impl NodeState {
    /// Wraps `engine` and starts its [`Driver`] (group commit, and a signature
    /// every `sig_interval` when anything is unsigned).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        engine: Engine,
        service_cert_pem: String,
        ledger_public: bool,
        ledger_id: String,
        sig_interval: Duration,
        quote: crate::attestation::VirtualQuote,
        jwt: crate::jwt::JwtAuth,
        node_certs: NodeCerts,
    ) -> Result<(NodeState, Driver), NodeError> {
        let index_map = crate::routes::entries_map_of(ledger_public);
        let index = Arc::new(EntryIndex::build(&engine, index_map, engine.last_seqno())?);
        let (tx, rx) = watch::channel(engine.committed_seqno());
        let engine = Arc::new(Mutex::new(engine));
        let driver = Driver::spawn(engine.clone(), tx, sig_interval)?;
        let state = NodeState::assemble(
            engine,
            index,
            rx,
            service_cert_pem,
            ledger_public,
            ledger_id,
            quote,
            jwt,
            node_certs,
            None,
        );
        Ok((state, driver))
    }

    /// A node of a replicated network: the replica (already started on `engine`)
    /// commits and signs, so there is no local driver.
    #[allow(clippy::too_many_arguments)]
    pub fn start_replicated(
        engine: Arc<Mutex<Engine>>,
        index: Arc<EntryIndex>,
        network: crate::network::Network,
        service_cert_pem: String,
        ledger_public: bool,
        ledger_id: String,
        quote: crate::attestation::VirtualQuote,
        jwt: crate::jwt::JwtAuth,
        node_certs: NodeCerts,
    ) -> Result<NodeState, NodeError> {
        let rx = network.replica.subscribe_committed();
        Ok(NodeState::assemble(
            engine,
            index,
            rx,
            service_cert_pem,
            ledger_public,
            ledger_id,
            quote,
            jwt,
            node_certs,
            Some(Arc::new(network)),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        engine: Arc<Mutex<Engine>>,
        index: Arc<EntryIndex>,
        committed: watch::Receiver<u64>,
        service_cert_pem: String,
        ledger_public: bool,
        ledger_id: String,
        quote: crate::attestation::VirtualQuote,
        jwt: crate::jwt::JwtAuth,
        node_certs: NodeCerts,
        network: Option<Arc<crate::network::Network>>,
    ) -> NodeState {
        let (node_id, store) = {
            let e = engine.lock().unwrap_or_else(|e| e.into_inner());
            (e.node_id().to_string(), e.store().clone())
        };
        NodeState(Arc::new(Shared {
            engine,
            store,
            committed,
            node_id,
            service_cert_pem: Arc::new(service_cert_pem),
            node_certs: Arc::new(node_certs),
            ledger_public,
            ledger_id: Arc::new(ledger_id),
            index,
            quote: Arc::new(quote),
            jwt: Arc::new(jwt),
            metrics: Arc::default(),
            apps: Arc::default(),
            network,
        }))
    }

    /// Runs `f` as a write: directly on a single node, through consensus (primary
    /// only; the forwarding middleware sends backups' writes there) otherwise.
    pub fn write<T>(
        &self,
        context: &str,
        f: impl FnOnce(&mut Engine) -> Result<T, EngineError>,
    ) -> Result<T, crate::error::ApiError> {
        use crate::error::ApiError;
        use axum::http::StatusCode;
        let disk_full = |e: &EngineError| {
            ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "InsufficientStorage",
                format!("{e}; nothing was written"),
            )
        };
        match &self.network {
            None => f(&mut self.engine()).map_err(|e| match e {
                EngineError::DiskFull { .. } => disk_full(&e),
                e => ApiError::internal(context, e),
            }),
            Some(n) => n.replica.write(f).map_err(|e| match e {
                covenant_consensus::ConsensusError::Engine(
                    ref inner @ EngineError::DiskFull { .. },
                ) => disk_full(inner),
                covenant_consensus::ConsensusError::NotPrimary { .. }
                | covenant_consensus::ConsensusError::NotReady
                | covenant_consensus::ConsensusError::Failed(_) => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    format!("{e}"),
                ),
                other => ApiError::internal(context, other),
            }),
        }
    }

    /// The engine, for a short, non-blocking critical section.
    pub fn engine(&self) -> MutexGuard<'_, Engine> {
        // A panic while holding the lock would be a bug; the engine's own state stays
        // consistent (every step checks before it mutates), so keep serving.
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notified with the committed seqno each time it advances (load generators
    /// measure commit latency with it).
    pub fn subscribe_committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// The last committed seqno, as the driver last published it.
    pub fn committed_seqno(&self) -> u64 {
        *self.committed.borrow()
    }

    /// Signs and flushes now (graceful shutdown: nothing acknowledged is left unsynced).
    pub async fn flush_now(&self) -> Result<u64, String> {
        let engine = self.engine.clone();
        if let Some(n) = &self.network {
            // Only the primary signs, through consensus; here just stop and sync.
            n.replica.stop();
            return tokio::task::spawn_blocking(move || {
                engine
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .flush()
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())?;
        }
        tokio::task::spawn_blocking(move || final_flush(&engine))
            .await
            .map_err(|e| e.to_string())?
    }
}

/// Signs (if anything is unsigned) and makes everything durable, under the lock
/// (graceful shutdown, after the driver stopped).
fn final_flush(engine: &Mutex<Engine>) -> Result<u64, String> {
    let mut e = engine.lock().unwrap_or_else(|e| e.into_inner());
    if e.unsigned_txs() > 0 {
        e.emit_signature().map_err(|x| x.to_string())?;
    }
    e.flush().map_err(|x| x.to_string())
}

/// How long the group-commit loop sleeps when there was nothing to sync.
const IDLE: Duration = Duration::from_millis(5);

/// The engine driver: a thread running group commit back to back (fdatasync with
/// the engine lock released, so appends never wait for the disk) and emitting a
/// signature every `sig_every` when anything is unsigned. Stops when told or when
/// every receiver of the committed seqno is gone.
pub struct Driver {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Driver {
    fn spawn(
        engine: Arc<Mutex<Engine>>,
        committed: watch::Sender<u64>,
        sig_every: Duration,
    ) -> std::io::Result<Driver> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("covenant-commit".into())
            .spawn(move || commit_loop(&engine, &committed, sig_every, &flag))?;
        Ok(Driver {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the loop and waits for its current cycle to finish.
    pub async fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn commit_loop(
    engine: &Mutex<Engine>,
    committed: &watch::Sender<u64>,
    sig_every: Duration,
    stop: &std::sync::atomic::AtomicBool,
) {
    let lock = || engine.lock().unwrap_or_else(|e| e.into_inner());
    let mut next_sig = std::time::Instant::now() + sig_every;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && !committed.is_closed() {
        let now = std::time::Instant::now();
        let sign = now >= next_sig;
        if sign {
            next_sig = (next_sig + sig_every).max(now);
        }
        let cycle = || -> Result<(u64, bool), EngineError> {
            let ticket = {
                let mut e = lock();
                if sign && e.unsigned_txs() > 0 {
                    e.emit_signature()?;
                }
                if !e.sync_wanted() {
                    return Ok((e.committed_seqno(), true));
                }
                e.prepare_flush()?
            };
            let idle = ticket.is_empty();
            let result = ticket.run();
            Ok((lock().complete_flush(ticket, result)?, idle))
        };
        match cycle() {
            Ok((seqno, idle)) => {
                committed.send_if_modified(|c| {
                    let changed = *c != seqno;
                    *c = seqno;
                    changed
                });
                if idle {
                    std::thread::sleep(IDLE.min(next_sig.saturating_duration_since(now)));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "signing or flushing the ledger failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
