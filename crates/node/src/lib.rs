//! A covenant node's transport: the HTTPS server (TLS 1.3, optional client
//! certificates), authentication, routing and forwarding, in front of a
//! [`covenant_service::Service`] that does the work.
//!
//! Request path: TLS accept ([`server`]) → HTTP/1.1 or 2 → [`routes`]' middleware:
//! [`metrics::count`] → [`edge::guard`] (identity, credentials, body limits) →
//! [`forward::forward_writes`] (a backup sends writes to the primary) →
//! [`forward::service_open_gate`] → [`app::dispatch`] (JS app endpoints) → the
//! route's handler ([`ledger_api`], [`users`], [`gov`], [`node_api`], ...), which
//! checks the caller ([`auth::Caller`]) and calls the service.

#![forbid(unsafe_code)]

pub mod app;
pub mod attestation;
pub mod auth;
pub mod cluster;
pub mod edge;
pub mod error;
pub mod forward;
pub mod gov;
pub mod gov_api;
pub mod http;
pub mod http_sig;
pub mod identity;
pub mod join;
pub mod jwt;
pub mod ledger_api;
pub mod metrics;
pub mod node_api;
pub mod openapi;
pub mod peers;
pub mod recovery;
pub mod roles;
pub mod routes;
pub mod server;
pub mod state;
pub mod tls;
pub mod udf;
pub mod users;

#[cfg(test)]
mod handler_tests;

use covenant_types::SeqNo;
use std::net::SocketAddr;
use std::time::Duration;

use covenant_crypto::{Certificate, NodeIdentity};
use covenant_engine::{Engine, EngineError};
use tokio::net::TcpListener;

pub use covenant_service::Role;
pub use server::ServerLimits;
pub use state::NodeState;

/// How a node serves.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    /// Signature (and commit) every this many milliseconds when anything is unsigned.
    pub sig_ms_interval: u64,
    /// Largest request body accepted (larger → 413).
    pub max_body_bytes: usize,
    pub limits: ServerLimits,
    /// Entries stored in clear (`Public` ledger) rather than encrypted (`Private`).
    pub ledger_public: bool,
    /// The name the node answers `/ledgerIdentity/{ledgerId}` for.
    pub ledger_id: String,
    /// Trusted JWT issuers for bearer-token users.
    pub jwt: jwt::JwtAuth,
    /// Set for a node of a replicated network.
    pub network: Option<peers::NetworkConfig>,
    /// Writes the service's first transactions (users, members, constitution). A
    /// replicated network runs it once, on the first primary of an empty ledger.
    pub genesis: Option<Genesis>,
    /// With an archive directory in the engine's configuration: committed ledger
    /// chunks holding nothing newer than the last this-many committed
    /// transactions move there, a chunk at a time, in the background.
    pub archive_retention_txs: Option<u64>,
    /// The collection index's file (redb); `None` keeps it in memory.
    pub index_path: Option<std::path::PathBuf>,
    /// Progress while that index catches up with the ledger at start.
    pub index_progress: Option<covenant_service::IndexProgressFn>,
}

impl NodeConfig {
    pub fn new(listen: SocketAddr) -> Self {
        NodeConfig {
            listen,
            sig_ms_interval: covenant_service::defaults::SIG_MS_INTERVAL,
            max_body_bytes: covenant_service::defaults::MAX_BODY_BYTES,
            limits: ServerLimits::default(),
            ledger_public: false,
            ledger_id: "covenant-dev".into(),
            jwt: jwt::JwtAuth::default(),
            network: None,
            genesis: None,
            archive_retention_txs: None,
            index_path: None,
            index_progress: None,
        }
    }
}

/// Why a node could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Serve(#[from] std::io::Error),
    #[error("final flush failed: {0}")]
    Flush(#[source] covenant_service::ServiceError),
    #[error(transparent)]
    Service(#[from] covenant_service::ServiceError),
    #[error(transparent)]
    Consensus(#[from] covenant_consensus::ConsensusError),
    #[error("node-to-node client: {0}")]
    Peer(#[from] covenant_client::ClientError),
}

pub use covenant_consensus::SnapshotNeeded;
pub use covenant_governance::DEFAULT_CONSTITUTION;
pub use covenant_service::genesis::{
    add_cert_user, add_member, set_constitution, set_service_config, set_service_opening,
};
pub use covenant_service::{Genesis, IndexProgressFn, JoinPolicy, UserId};

/// A node bound to its port, not yet serving (so callers learn the port first).
pub struct BoundNode {
    listener: TcpListener,
    pub local_addr: SocketAddr,
    state: NodeState,
    config: NodeConfig,
    tls: std::sync::Arc<rustls::ServerConfig>,
}

impl BoundNode {
    /// Binds the listener and starts the service (and, in a network, the replica).
    pub async fn bind(
        config: NodeConfig,
        engine: Engine,
        node: &NodeIdentity,
        service_cert: &Certificate,
    ) -> Result<BoundNode, NodeError> {
        let tls = tls::server_config(node, config.limits.http2)?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| NodeError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr()?;
        let options = covenant_service::ServiceOptions {
            ledger_public: config.ledger_public,
            sig_interval: Duration::from_millis(config.sig_ms_interval.max(1)),
            index_path: config.index_path.clone(),
            index_progress: config.index_progress.clone(),
        };
        let mut transport = state::Transport {
            service_cert_pem: service_cert.to_pem(),
            node_certs: state::NodeCerts {
                endorsed: node.cert.to_pem(),
                self_signed: node.self_signed_cert().ok().map(|c| c.to_pem()),
            },
            ledger_id: config.ledger_id.clone(),
            jwt: config.jwt.clone(),
            quote: attestation::VirtualQuote::of(node),
            network: None,
        };
        let Some(net) = &config.network else {
            let service = covenant_service::Service::single(engine, &options)?;
            let state = NodeState::new(service, transport);
            return Ok(BoundNode {
                listener,
                local_addr,
                state,
                config,
                tls,
            });
        };
        let peers = peers::PeerBook::new(net, engine.store().clone(), service_cert, node)?;
        let first_seqno = engine.first_seqno();
        let mut rc = covenant_consensus::ReplicaConfig::new(
            net.raft_id,
            net.peers.keys().copied().collect(),
            &net.state_dir,
        );
        rc.tick = net.tick;
        rc.sig_interval = options.sig_interval;
        let raft_transport = peers::HttpTransport::start(peers.clone());
        let admission = covenant_service::AdmissionConfig {
            identity: net.service.clone(),
            own_raft_id: net.raft_id,
            configured_peers: net.peers.keys().copied().collect(),
        };
        let service =
            covenant_service::Service::replicated(engine, &options, admission, |engine| {
                let (replica, thread) =
                    covenant_consensus::Replica::start(rc, engine, raft_transport)?;
                exit_when_replica_fails(replica.clone(), thread);
                Ok(replica)
            })?;
        let replica = service
            .replica()
            .cloned()
            .ok_or(covenant_service::ServiceError::NotReady)?;
        transport.network = Some(peers::Network::new(
            replica,
            net.clone(),
            service_cert.clone(),
            peers,
            first_seqno,
        ));
        let state = NodeState::new(service, transport);
        // A new network's genesis also records the trusted code and the founding voters.
        if let Some(mut g) = config.genesis.clone() {
            g.code_id = Some(attestation::binary_measurement());
            g.voters = net.peers.keys().copied().collect();
            tokio::spawn(write_genesis_when_primary(state.clone(), g));
        }
        let node_id = covenant_types::NodeId::new(node.node_id.clone());
        tokio::spawn(cluster::stop_when_retired(state.clone(), node_id));
        tokio::spawn(cluster::register_self(
            state.clone(),
            node.node_id.clone(),
            node.cert.to_pem(),
        ));
        Ok(BoundNode {
            listener,
            local_addr,
            state,
            config,
            tls,
        })
    }

    pub fn state(&self) -> &NodeState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then signs and flushes everything written.
    /// Returns the committed seqno.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<SeqNo, NodeError> {
        Ok(self.serve_node(shutdown).await?.committed)
    }

    /// [`BoundNode::serve`], also ending when the replica needs a snapshot from
    /// its primary (see [`Served::paused`]).
    pub async fn serve_node(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<Served, NodeError> {
        let app = routes::router(self.state.clone(), self.config.max_body_bytes);
        let archiver = self
            .config
            .archive_retention_txs
            .map(|retain| tokio::spawn(archive_loop(self.state.service.clone(), retain)));
        let mut needed = self
            .state
            .service
            .replica()
            .map(|r| r.subscribe_snapshot_needed());
        let snapshot_needed = async {
            match needed.as_mut() {
                Some(rx) => {
                    if rx.wait_for(Option::is_some).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        let served = server::serve(
            self.listener,
            self.tls,
            app,
            self.config.limits.clone(),
            async {
                tokio::select! {
                    () = shutdown => {}
                    () = snapshot_needed => {}
                }
            },
        )
        .await;
        if let Some(a) = archiver {
            a.abort();
        }
        served?;
        let committed = self
            .state
            .service
            .shutdown()
            .await
            .map_err(NodeError::Flush)?;
        let need = needed.and_then(|rx| *rx.borrow());
        let paused = need.map(|need| {
            let mut peers = Vec::new();
            if let Some(net) = self.state.network.as_ref() {
                // The primary that sent it first, then every other node it knows.
                let (applied, _) = net.replica.configuration();
                let others = applied
                    .voters
                    .iter()
                    .chain(applied.learners.iter())
                    .copied()
                    .filter(|&id| id != need.from && id != net.config.raft_id);
                for id in std::iter::once(need.from).chain(others) {
                    if let Some(a) = net.peers.address(id) {
                        if !peers.contains(&a) {
                            peers.push(a);
                        }
                    }
                }
            }
            SnapshotPause {
                need,
                peers,
                secrets: self.state.engine().ledger_secrets().clone(),
            }
        });
        Ok(Served { committed, paused })
    }
}

/// How [`BoundNode::serve_node`] ended.
#[derive(Debug, Clone)]
pub struct Served {
    /// Everything written is flushed; committed through this seqno.
    pub committed: SeqNo,
    /// Set when the node stopped because the primary's ledger starts after its own.
    pub paused: Option<SnapshotPause>,
}

/// A node paused for a snapshot: it must install one at least as new as `need`
/// names, fetched from one of `peers` (the primary's first), then start again.
#[derive(Debug, Clone)]
pub struct SnapshotPause {
    pub need: covenant_consensus::SnapshotNeeded,
    pub peers: Vec<String>,
    /// The ledger secrets as the node last held them (rekeys it learned
    /// included): a node that keeps none at rest starts again with them.
    pub secrets: covenant_crypto::LedgerSecrets,
}

/// How often the archiver looks for committed chunks past the retention window.
const ARCHIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Moves committed chunks older than the retention window into the archive
/// directory, one chunk per engine lock, until the node stops.
async fn archive_loop(service: covenant_service::Service, retain: u64) {
    loop {
        tokio::time::sleep(ARCHIVE_EVERY).await;
        loop {
            match service.archive_step(retain).await {
                Ok(Some(r)) => {
                    tracing::info!(
                        chunks = r.chunks,
                        bytes = r.bytes,
                        upto = r.upto.0,
                        "archived committed ledger chunks"
                    );
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "archiving ledger chunks failed; retrying later");
                    break;
                }
            }
        }
    }
}

/// Serves the standalone identity service for the `<ledgerId>.pem` files in `dir`
/// over TLS with `cert`/`key`, until `shutdown`.
pub async fn serve_identity_service(
    listener: TcpListener,
    dir: std::path::PathBuf,
    cert: &Certificate,
    key: &covenant_crypto::SigningKeyPair,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let tls = tls::server_config_for(cert, key)?;
    server::serve(
        listener,
        tls,
        identity::router(dir),
        ServerLimits::default(),
        shutdown,
    )
    .await?;
    Ok(())
}

/// A replica whose storage failed (a failed fsync, a write refused by the disk)
/// cannot trust what it holds in memory any more: the process stops with status 74
/// (EX_IOERR), so a supervisor restarts it and it recovers from its ledger files,
/// instead of lingering as a node that answers but no longer replicates.
fn exit_when_replica_fails(
    replica: covenant_consensus::Replica,
    thread: std::thread::JoinHandle<()>,
) {
    let watcher = std::thread::Builder::new()
        .name("covenant-raft-watch".into())
        .spawn(move || {
            let _ = thread.join();
            if let Some(why) = replica.failure() {
                tracing::error!(error = %why, "replication failed on this node's storage; exiting so that a restart recovers it from the ledger files");
                eprintln!("covenant: fatal: replication failed: {why}; restart the node to recover from its ledger files");
                std::process::exit(74);
            }
        });
    if let Err(e) = watcher {
        tracing::warn!(error = %e, "cannot watch the replication thread");
    }
}

/// Waits until this node is the primary of an empty service, then writes the
/// genesis transactions through consensus. Any node may be elected first; all carry
/// the same genesis, and whichever writes it first makes the others skip it.
async fn write_genesis_when_primary(state: NodeState, genesis: Genesis) {
    let genesis = std::sync::Arc::new(genesis);
    loop {
        if Genesis::written(&state.store) {
            return;
        }
        if state.service.is_primary() {
            let g = genesis.clone();
            let r = state
                .service
                .write(move |e| {
                    if Genesis::written(e.store()) {
                        return Ok(());
                    }
                    g.write(e)
                })
                .await;
            match r {
                Ok(()) => {
                    tracing::info!("wrote the genesis transactions");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "genesis not written yet"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
