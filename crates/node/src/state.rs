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
use crate::routes::{ENTRIES_PRIVATE, ENTRIES_PUBLIC};

/// What every handler shares.
#[derive(Clone)]
pub struct NodeState {
    engine: Arc<Mutex<Engine>>,
    /// The engine's KV store, readable without the engine lock (users, roles).
    pub store: covenant_kv::Store,
    committed: watch::Receiver<u64>,
    pub node_id: String,
    pub service_cert_pem: Arc<String>,
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
}

impl NodeState {
    /// Wraps `engine` and starts its driver: every `sig_interval`, a signature if
    /// anything is unsigned, then a flush. Returns the state and the driver's handle.
    pub fn start(
        engine: Engine,
        service_cert_pem: String,
        ledger_public: bool,
        ledger_id: String,
        sig_interval: Duration,
        quote: crate::attestation::VirtualQuote,
        jwt: crate::jwt::JwtAuth,
    ) -> Result<(NodeState, tokio::task::JoinHandle<()>), EngineError> {
        let node_id = engine.node_id().to_string();
        let map = if ledger_public {
            ENTRIES_PUBLIC
        } else {
            ENTRIES_PRIVATE
        };
        let index = Arc::new(EntryIndex::build(&engine, map)?);
        let store = engine.store().clone();
        let (tx, rx) = watch::channel(engine.committed_seqno());
        let engine = Arc::new(Mutex::new(engine));
        let driver = tokio::spawn(drive(engine.clone(), tx, sig_interval));
        Ok((
            NodeState {
                engine,
                store,
                committed: rx,
                node_id,
                service_cert_pem: Arc::new(service_cert_pem),
                ledger_public,
                ledger_id: Arc::new(ledger_id),
                index,
                quote: Arc::new(quote),
                jwt: Arc::new(jwt),
                metrics: Arc::default(),
            },
            driver,
        ))
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
        tokio::task::spawn_blocking(move || tick(&engine))
            .await
            .map_err(|e| e.to_string())?
    }
}

fn tick(engine: &Mutex<Engine>) -> Result<u64, String> {
    let mut e = engine.lock().unwrap_or_else(|e| e.into_inner());
    if e.unsigned_txs() > 0 {
        e.emit_signature().map_err(|x| x.to_string())?;
    }
    e.flush().map_err(|x| x.to_string())
}

async fn drive(engine: Arc<Mutex<Engine>>, committed: watch::Sender<u64>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let engine = engine.clone();
        match tokio::task::spawn_blocking(move || tick(&engine)).await {
            Ok(Ok(seqno)) => {
                committed.send_if_modified(|c| {
                    let changed = *c != seqno;
                    *c = seqno;
                    changed
                });
            }
            Ok(Err(e)) => tracing::error!(error = %e, "signing or flushing the ledger failed"),
            Err(e) => tracing::error!(error = %e, "the engine driver task failed"),
        }
        if committed.is_closed() {
            break;
        }
    }
}
