//! What every handler shares: the [`Service`] and the node's transport context
//! (its certificates, trusted token issuers, evidence, request counters and, in a
//! network, its peers). Depends on no handler module.

use std::sync::{Arc, MutexGuard};

use covenant_engine::{Engine, EngineError};
use covenant_service::{NodeInfo, Service};

use crate::error::ApiError;

/// Cloned for every request, so it is one `Arc`.
#[derive(Clone)]
pub struct NodeState(Arc<Shared>);

impl std::ops::Deref for NodeState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The deployed app as the edge found it for this request, so the later layers
/// (forwarding, dispatch) need not look it up again.
#[derive(Clone)]
pub struct CurrentApp(pub Option<Arc<covenant_app::App>>);

/// A node's certificates, as PEM.
#[derive(Debug, Clone, Default)]
pub struct NodeCerts {
    pub endorsed: String,
    pub self_signed: Option<String>,
}

/// The fields behind [`NodeState`].
pub struct Shared {
    pub service: Service,
    /// The service's KV store, readable without the engine lock (users, roles).
    pub store: covenant_kv::Store,
    pub service_cert_pem: Arc<String>,
    /// This node's certificates: the one the service endorsed, and one signed by
    /// the node's own key (`/node/endorsed_certificate`, `/node/self_signed_certificate`).
    pub node_certs: Arc<NodeCerts>,
    pub ledger_id: Arc<String>,
    /// Request counters for `/node/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Trusted JWT issuers.
    pub jwt: Arc<crate::jwt::JwtAuth>,
    /// Virtual attestation evidence of this node (SPEC §8).
    pub quote: Arc<crate::attestation::VirtualQuote>,
    /// Set when this node is one of a replicated network.
    pub network: Option<Arc<crate::peers::Network>>,
}

/// Everything but the service that a node's state is made of.
pub struct Transport {
    pub service_cert_pem: String,
    pub node_certs: NodeCerts,
    pub ledger_id: String,
    pub jwt: crate::jwt::JwtAuth,
    pub quote: crate::attestation::VirtualQuote,
    pub network: Option<crate::peers::Network>,
}

impl NodeState {
    /// A node's state: the service and its transport context.
    pub fn new(service: Service, t: Transport) -> NodeState {
        NodeState(Arc::new(Shared {
            store: service.store().clone(),
            service,
            service_cert_pem: Arc::new(t.service_cert_pem),
            node_certs: Arc::new(t.node_certs),
            ledger_id: Arc::new(t.ledger_id),
            metrics: Arc::default(),
            jwt: Arc::new(t.jwt),
            quote: Arc::new(t.quote),
            network: t.network.map(Arc::new),
        }))
    }

    /// This node's id (hex SHA-256 of its public key).
    pub fn node_id(&self) -> &str {
        self.service.node_id().as_str()
    }

    /// Whether entries are stored in clear.
    pub fn ledger_public(&self) -> bool {
        self.service.ledger_public()
    }

    /// The engine, for a short in-memory section.
    pub fn engine(&self) -> MutexGuard<'_, Engine> {
        self.service.engine()
    }

    /// Runs `f` as a write on a blocking thread (see [`Service::write`]); a failure
    /// is answered as `context` says.
    pub async fn write<T: Send + 'static>(
        &self,
        context: &'static str,
        f: impl FnOnce(&mut Engine) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.service
            .write(f)
            .await
            .map_err(|e| ApiError::service(context, e))
    }

    /// [`NodeState::write`] for a closure that only works on the store (see
    /// [`Service::write_in_memory`]).
    pub async fn write_in_memory<T: Send + 'static>(
        &self,
        context: &'static str,
        f: impl FnOnce(&mut Engine) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.service
            .write_in_memory(f)
            .await
            .map_err(|e| ApiError::service(context, e))
    }

    /// [`NodeState::write`] for a caller already on a blocking thread.
    pub fn write_blocking<T>(
        &self,
        context: &'static str,
        f: impl FnOnce(&mut Engine) -> Result<T, EngineError>,
    ) -> Result<T, ApiError> {
        self.service
            .write_blocking(f)
            .map_err(|e| ApiError::service(context, e))
    }

    /// Runs `f` on a blocking thread with this state (scripts, governance).
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&NodeState) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let s = self.clone();
        tokio::task::spawn_blocking(move || f(&s))
            .await
            .map_err(|e| ApiError::internal("the request's task failed", e))?
    }

    /// The deployed app for a request: the edge's lookup when it made one.
    pub fn request_app(
        &self,
        extensions: &axum::http::Extensions,
    ) -> Result<Option<Arc<covenant_app::App>>, covenant_app::AppError> {
        match extensions.get::<CurrentApp>() {
            Some(c) => Ok(c.0.clone()),
            None => self.service.apps().current(&self.store),
        }
    }

    /// Every node of the service with its row. A single node keeps no row: it is
    /// shown as the service's one Trusted node.
    pub fn node_rows(&self) -> Vec<(covenant_types::NodeId, NodeInfo)> {
        let rows = covenant_service::nodes::node_rows(&self.store);
        if !rows.is_empty() {
            return rows;
        }
        vec![(
            self.service.node_id().clone(),
            NodeInfo::trusted(0, String::new(), self.node_certs.endorsed.clone()),
        )]
    }
}
