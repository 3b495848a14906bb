//! A covenant node: the HTTPS server (TLS 1.3, optional client certificates),
//! authentication, the ledger API (SPEC §4) and the node API (SPEC §5), driving a
//! [`covenant_engine::Engine`].
//!
//! Request path: TLS accept (own task) → HTTP/1.1 → axum route → [`auth::Caller`]
//! (client cert fingerprint → user, roles) → engine transaction under the engine
//! lock → response with `x-ms-ccf-transaction-id`. The commit thread
//! ([`state::Driver`]) signs every `sig_ms_interval` and group-commits with the
//! fdatasync outside the engine lock, which is what moves writes to Committed.

pub mod attestation;
pub mod auth;
pub mod error;
pub mod identity;
pub mod index;
pub mod jwt;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod state;
pub mod tls;
pub mod users;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
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
}

/// CCF's map of member certificates: member id → PEM.
pub const MEMBERS_CERTS: &str = "public:ccf.gov.members.certs";
/// CCF's map of member information: member id → `{"status": ..., "member_data": ...}`.
pub const MEMBERS_INFO: &str = "public:ccf.gov.members.info";
/// The constitution script (single key).
pub const CONSTITUTION: &str = "public:ccf.gov.constitution";
pub const CONSTITUTION_KEY: &[u8] = b"0";
/// The constitution a new covenant ledger starts with.
pub const DEFAULT_CONSTITUTION: &str = include_str!("default_constitution.js");

/// Records a consortium member (state Accepted until it acks, SPEC §5) in one transaction.
pub fn add_member(engine: &mut Engine, cert: &Certificate) -> Result<String, EngineError> {
    let id = cert.member_id();
    let info = serde_json::json!({"status": "Accepted", "member_data": null});
    let mut tx = engine.begin();
    tx.put(MEMBERS_CERTS, id.as_bytes(), cert.to_pem().as_bytes());
    tx.put(MEMBERS_INFO, id.as_bytes(), info.to_string().as_bytes());
    engine.commit_tx(tx, None)?;
    Ok(id)
}

/// Sets the constitution script.
pub fn set_constitution(engine: &mut Engine, script: &str) -> Result<(), EngineError> {
    let mut tx = engine.begin();
    tx.put(CONSTITUTION, CONSTITUTION_KEY, script.as_bytes());
    engine.commit_tx(tx, None)?;
    Ok(())
}

/// Adds a certificate user with `roles` in one transaction (the initial user of a
/// dev ledger; governance takes this over later).
pub fn add_cert_user(
    engine: &mut Engine,
    cert: &Certificate,
    roles: &[Role],
) -> Result<String, EngineError> {
    let id = cert.user_fingerprint();
    let info = serde_json::json!({"user_data": {"assignedRoles": roles}});
    let mut tx = engine.begin();
    tx.put(auth::USERS_CERTS, id.as_bytes(), cert.to_pem().as_bytes());
    tx.put(auth::USERS_INFO, id.as_bytes(), info.to_string().as_bytes());
    engine.commit_tx(tx, None)?;
    Ok(id)
}

/// A node bound to its port, not yet serving (so callers learn the port first).
pub struct BoundNode {
    listener: TcpListener,
    pub local_addr: SocketAddr,
    state: NodeState,
    driver: state::Driver,
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
        let (state, driver) = NodeState::start(
            engine,
            service_cert.to_pem(),
            config.ledger_public,
            config.ledger_id.clone(),
            Duration::from_millis(config.sig_ms_interval.max(1)),
            quote,
            config.jwt.clone(),
        )?;
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
        let app = routes::router(self.state.clone())
            .layer(DefaultBodyLimit::max(self.config.max_body_bytes));
        server::serve(
            self.listener,
            self.tls,
            app,
            self.config.limits.clone(),
            shutdown,
        )
        .await?;
        self.driver.stop().await;
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
