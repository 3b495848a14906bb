//! A covenant node: the HTTPS server (TLS 1.3, optional client certificates),
//! authentication, the ledger API (SPEC §4) and the node API (SPEC §5), driving a
//! [`covenant_engine::Engine`].
//!
//! Request path: TLS accept (own task) → HTTP/1.1 → axum route → [`auth::Caller`]
//! (client cert fingerprint → user, roles) → engine transaction under the engine
//! lock → response with `x-ms-ccf-transaction-id`. The commit thread
//! ([`state::Driver`]) signs every `sig_ms_interval` and group-commits with the
//! fdatasync outside the engine lock, which is what moves writes to Committed.

pub mod app;
pub mod attestation;
pub mod auth;
pub mod edge;
pub mod error;
pub mod gov;
pub mod gov_api;
pub mod http_sig;
pub mod identity;
pub mod index;
pub mod join;
pub mod jwt;
pub mod metrics;
pub mod network;
pub mod node_api;
pub mod openapi;
pub mod roles;
pub mod routes;
pub mod server;
pub mod state;
pub mod tls;
pub mod udf;
pub mod users;

use std::net::SocketAddr;
use std::time::Duration;

use covenant_crypto::{Certificate, NodeIdentity};
use covenant_engine::{Engine, EngineError};
use tokio::net::TcpListener;

pub use auth::Role;
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
    pub network: Option<network::NetworkConfig>,
    /// Writes the service's first transactions (users, members, constitution). A
    /// replicated network runs it once, on the first primary of an empty ledger.
    pub genesis: Option<Genesis>,
}

/// The first transactions of a service, run through the write path.
#[derive(Clone)]
pub struct Genesis(pub std::sync::Arc<GenesisFn>);

/// The body of a [`Genesis`].
pub type GenesisFn = dyn Fn(&mut Engine) -> Result<(), EngineError> + Send + Sync;

impl std::fmt::Debug for Genesis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Genesis(..)")
    }
}

impl NodeConfig {
    pub fn new(listen: SocketAddr) -> Self {
        NodeConfig {
            listen,
            sig_ms_interval: 1000,
            max_body_bytes: 1 << 20,
            limits: ServerLimits::default(),
            ledger_public: false,
            ledger_id: "covenant-dev".into(),
            jwt: jwt::JwtAuth::default(),
            network: None,
            genesis: None,
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
    Flush(String),
    #[error(transparent)]
    Consensus(#[from] covenant_consensus::ConsensusError),
    #[error("node-to-node client: {0}")]
    Peer(#[from] covenant_client::ClientError),
}

/// Governance maps and the default constitution (owned by `covenant-governance`).
pub use covenant_governance::{
    CONSTITUTION, CONSTITUTION_KEY, DEFAULT_CONSTITUTION, MEMBERS_CERTS, MEMBERS_ENCRYPTION_KEYS,
    MEMBERS_INFO,
};

/// Records a consortium member (state Accepted until it acks, SPEC §5) in one transaction.
pub fn add_member(
    engine: &mut Engine,
    cert: &Certificate,
    encryption_pub_key: Option<&str>,
) -> Result<String, EngineError> {
    let id = cert.member_id();
    let info = serde_json::json!({"status": "Accepted", "member_data": null});
    let mut tx = engine.begin();
    tx.put(MEMBERS_CERTS, id.as_bytes(), cert.to_pem().as_bytes());
    tx.put(MEMBERS_INFO, id.as_bytes(), info.to_string().as_bytes());
    if let Some(pem) = encryption_pub_key {
        tx.put(MEMBERS_ENCRYPTION_KEYS, id.as_bytes(), pem.as_bytes());
    }
    engine.commit_tx(tx, None)?;
    Ok(id)
}

/// Records the service as Opening: users are refused (503 `ServiceNotOpen`) until
/// the consortium accepts `transition_service_to_open`.
pub fn set_service_opening(engine: &mut Engine) -> Result<(), EngineError> {
    let mut tx = engine.begin();
    tx.put(
        covenant_governance::SERVICE_INFO,
        covenant_governance::SERVICE_INFO_KEY,
        br#"{"status":"Opening"}"#,
    );
    engine.commit_tx(tx, None)?;
    Ok(())
}

/// Records the service configuration a new service starts with: its join policy
/// and, when the operator made one, the SHA-256 of the join token that lets a node
/// be trusted without a proposal ([`join::join_token_digest`]).
pub fn set_service_config(
    engine: &mut Engine,
    join_policy: network::JoinPolicy,
    join_token_sha256: Option<&str>,
) -> Result<(), EngineError> {
    let policy = match join_policy {
        network::JoinPolicy::Auto => "auto",
        network::JoinPolicy::Pending => "pending",
    };
    let mut config = serde_json::json!({ "join_policy": policy });
    if let Some(d) = join_token_sha256 {
        config["join_token_sha256"] = serde_json::Value::String(d.to_string());
    }
    let mut tx = engine.begin();
    tx.put(
        covenant_governance::SERVICE_CONFIG,
        covenant_governance::SERVICE_CONFIG_KEY,
        config.to_string().as_bytes(),
    );
    engine.commit_tx(tx, None)?;
    Ok(())
}

/// Sets the constitution script.
pub fn set_constitution(engine: &mut Engine, script: &str) -> Result<(), EngineError> {
    let mut tx = engine.begin();
    tx.put(CONSTITUTION, CONSTITUTION_KEY, script.as_bytes());
    engine.commit_tx(tx, None)?;
    Ok(())
}

/// Adds a certificate user with `roles` in one transaction (the initial user of a
/// dev ledger; governance takes this over later), keyed as CCF keys users.
pub fn add_cert_user(
    engine: &mut Engine,
    cert: &Certificate,
    roles: &[Role],
) -> Result<auth::UserId, EngineError> {
    let user = auth::UserId::Certificate(covenant_crypto::sha256(cert.der()));
    let id = user.ccf();
    let info = serde_json::json!({"user_data": {"assignedRoles": roles}});
    let mut tx = engine.begin();
    tx.put(auth::USERS_CERTS, id.as_bytes(), cert.to_pem().as_bytes());
    tx.put(auth::USERS_INFO, id.as_bytes(), info.to_string().as_bytes());
    engine.commit_tx(tx, None)?;
    Ok(user)
}

/// A node bound to its port, not yet serving (so callers learn the port first).
pub struct BoundNode {
    listener: TcpListener,
    pub local_addr: SocketAddr,
    state: NodeState,
    driver: Option<state::Driver>,
    config: NodeConfig,
    tls: std::sync::Arc<rustls::ServerConfig>,
}

impl BoundNode {
    /// Binds the listener and starts the engine driver.
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
        let quote = attestation::VirtualQuote::of(node);
        let node_certs = state::NodeCerts {
            endorsed: node.cert.to_pem(),
            self_signed: node.self_signed_cert().ok().map(|c| c.to_pem()),
        };
        let sig_interval = Duration::from_millis(config.sig_ms_interval.max(1));
        let (state, driver) = match &config.network {
            None => {
                let (state, driver) = NodeState::start(
                    engine,
                    service_cert.to_pem(),
                    config.ledger_public,
                    config.ledger_id.clone(),
                    sig_interval,
                    quote,
                    config.jwt.clone(),
                    node_certs,
                )?;
                (state, Some(driver))
            }
            Some(net) => {
                let store = engine.store().clone();
                let engine = std::sync::Arc::new(std::sync::Mutex::new(engine));
                let peers = network::PeerBook::new(net, store, service_cert, node)?;
                let transport = network::HttpTransport::start(peers.clone());
                let mut rc = covenant_consensus::ReplicaConfig::new(
                    net.node_id,
                    net.peers.keys().copied().collect(),
                    &net.state_dir,
                );
                rc.tick = net.tick;
                rc.sig_interval = sig_interval;
                // The collection index: built from the ledger now, then kept up to date
                // by the primary's append handler and, on backups, for every applied
                // transaction (no read-back).
                let index_map = routes::entries_map_of(config.ledger_public);
                let index = {
                    let e = engine.lock().unwrap_or_else(|e| e.into_inner());
                    std::sync::Arc::new(index::EntryIndex::build(&e, index_map, e.last_seqno())?)
                };
                // The genesis also records the configuration and the trusted code.
                let genesis = config.genesis.clone().map(|g| {
                    let voters = net.peers.keys().copied().collect::<Vec<_>>();
                    let measurement = attestation::binary_measurement();
                    Genesis(std::sync::Arc::new(move |e: &mut Engine| {
                        (g.0)(e)?;
                        join::add_node_code(e, &measurement)?;
                        let mut tx = e.begin();
                        tx.put(
                            covenant_consensus::MEMBERSHIP_MAP,
                            covenant_consensus::MEMBERSHIP_KEY,
                            &covenant_consensus::Membership::with_voters(voters.iter().copied())
                                .encode(),
                        );
                        e.commit_tx(tx, None).map(|_| ())
                    }))
                });
                let hook_index = index.clone();
                let on_apply: covenant_consensus::OnApply =
                    std::sync::Arc::new(move |txid, ws: &covenant_engine::WriteSet| {
                        hook_index.add_from(txid, ws, index_map);
                    });
                let (replica, thread) = covenant_consensus::Replica::start(
                    rc,
                    engine.clone(),
                    transport,
                    Some(on_apply),
                )?;
                exit_when_replica_fails(replica.clone(), thread);
                let first_seqno = engine
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .first_seqno();
                let network = network::Network::new(
                    replica,
                    net.clone(),
                    service_cert.clone(),
                    peers,
                    first_seqno,
                );
                let state = NodeState::start_replicated(
                    engine,
                    index,
                    network,
                    service_cert.to_pem(),
                    config.ledger_public,
                    config.ledger_id.clone(),
                    quote,
                    config.jwt.clone(),
                    node_certs,
                )?;
                if let Some(g) = genesis {
                    tokio::spawn(write_genesis_when_primary(state.clone(), g));
                }
                tokio::spawn(network::stop_when_retired(
                    state.clone(),
                    node.node_id.clone(),
                ));
                tokio::spawn(network::register_self(
                    state.clone(),
                    node.node_id.clone(),
                    node.cert.to_pem(),
                ));
                (state, None)
            }
        };
        Ok(BoundNode {
            listener,
            local_addr,
            state,
            driver,
            config,
            tls,
        })
    }

    pub fn state(&self) -> &NodeState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then signs and flushes everything written.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<u64, NodeError> {
        let app = routes::router(self.state.clone(), self.config.max_body_bytes);
        server::serve(
            self.listener,
            self.tls,
            app,
            self.config.limits.clone(),
            shutdown,
        )
        .await?;
        if let Some(d) = self.driver {
            d.stop().await;
        }
        self.state.flush_now().await.map_err(NodeError::Flush)
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
    loop {
        if state.store.get(CONSTITUTION, CONSTITUTION_KEY).is_some() {
            return;
        }
        if let Some(n) = &state.network {
            if n.replica.status().is_primary {
                let g = genesis.clone();
                let r = state.write("writing the genesis transactions", move |e| {
                    if e.store().get(CONSTITUTION, CONSTITUTION_KEY).is_some() {
                        return Ok(());
                    }
                    (g.0)(e)
                });
                match r {
                    Ok(()) => {
                        tracing::info!("wrote the genesis transactions");
                        return;
                    }
                    Err(e) => tracing::debug!(error = ?e, "genesis not written yet"),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
