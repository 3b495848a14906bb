//! A node as a member of a replicated network (SPEC §1, issue 4): node-to-node Raft
//! messages over mutually authenticated TLS, and transparent forwarding of writes
//! from a backup to the primary.
//!
//! Trust: a peer is a node whose certificate is endorsed (signed) by the service key.
//! Raft messages travel as `POST /internal/raft` bodies (length-prefixed frames) on
//! the same TLS port as the API; the sending node presents its own certificate.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use covenant_client::{Connection, LedgerClient};
use covenant_consensus::{Replica, Transport};
use covenant_crypto::{Certificate, NodeIdentity};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::server::PeerCert;
use crate::state::NodeState;

/// Path of the node-to-node Raft endpoint.
pub const RAFT_PATH: &str = "/internal/raft";
/// Path where a node registers itself in the nodes table (primary only).
pub const REGISTER_PATH: &str = "/internal/register";
/// CCF's nodes table: node id (hex SHA-256 of its public key) → JSON
/// `{"status","raft_id","address","cert"}`.
pub const NODES_INFO: &str = "public:ccf.gov.nodes.info";
/// Set by a backup forwarding a request: the caller's certificate fingerprint.
pub const FORWARDED_USER: &str = "x-covenant-forwarded-user";
/// Set on every forwarded request, so it is never forwarded twice.
pub const FORWARDED: &str = "x-covenant-forwarded";
/// A sender stops adding messages to a batch past this size.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Largest consensus request body a node accepts (a batch may overshoot
/// `MAX_BATCH_BYTES` by one message of at most a few MiB).
pub const MAX_RAFT_BODY_BYTES: usize = 64 << 20;

/// The other nodes and this one's Raft id.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub node_id: u64,
    /// Raft id → address of every voting node (this one included).
    pub peers: BTreeMap<u64, SocketAddr>,
    /// Where the Raft hard state file lives.
    pub state_dir: std::path::PathBuf,
    /// Raft tick; elections after 20 ticks without a primary.
    pub tick: Duration,
}

/// What a networked node shares with its handlers.
pub struct Network {
    pub replica: Replica,
    pub config: NetworkConfig,
    pub service_cert: Certificate,
    /// Clients to every peer, presenting this node's certificate.
    clients: BTreeMap<u64, LedgerClient>,
    /// Idle keep-alive connections to the primary, per Raft id (forwarded writes).
    idle: std::sync::Mutex<BTreeMap<u64, Vec<Connection>>>,
    /// Fingerprints of certificates already checked against the service key (an
    /// ECDSA P-384 verification per consensus request was ~3% of a 3-node bench).
    endorsed: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Network {
    pub fn new(
        replica: Replica,
        config: NetworkConfig,
        service_cert: Certificate,
        node: &NodeIdentity,
    ) -> Result<Network, covenant_client::ClientError> {
        let clients = peer_clients(&config, &service_cert, node)?;
        Ok(Network {
            replica,
            config,
            service_cert,
            clients,
            idle: Default::default(),
            endorsed: Default::default(),
        })
    }

    /// Whether `peer` is a node of this service (certificate endorsed by the service key).
    pub fn is_node(&self, peer: &PeerCert) -> bool {
        let Some(p) = peer.0.as_ref() else {
            return false;
        };
        let known = |s: &std::sync::Mutex<std::collections::HashSet<String>>| {
            s.lock().unwrap_or_else(|e| e.into_inner()).contains(&p.1)
        };
        if known(&self.endorsed) {
            return true;
        }
        if p.0.verify_signed_by(&self.service_cert).is_err() {
            return false;
        }
        let mut set = self.endorsed.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: a network has a handful of nodes; never grow without limit.
        if set.len() < 1024 {
            set.insert(p.1.clone());
        }
        true
    }
}

fn peer_clients(
    config: &NetworkConfig,
    service_cert: &Certificate,
    node: &NodeIdentity,
) -> Result<BTreeMap<u64, LedgerClient>, covenant_client::ClientError> {
    config
        .peers
        .iter()
        .filter(|(id, _)| **id != config.node_id)
        .map(|(id, addr)| {
            let c = LedgerClient::new(
                &format!("https://{addr}"),
                service_cert,
                Some((&node.cert, &node.key)),
            )?;
            Ok((*id, c))
        })
        .collect()
}

/// Sends Raft messages to peers: one queue and one keep-alive connection per peer,
/// messages batched while a request is in flight. Losing messages is fine (Raft
/// retries); blocking the Raft thread is not, so `send` never waits.
pub struct HttpTransport {
    queues: BTreeMap<u64, mpsc::UnboundedSender<Vec<u8>>>,
}

impl HttpTransport {
    /// Starts one task per peer on the current tokio runtime.
    pub fn start(
        config: &NetworkConfig,
        service_cert: &Certificate,
        node: &NodeIdentity,
    ) -> Result<Arc<HttpTransport>, covenant_client::ClientError> {
        let mut queues = BTreeMap::new();
        for (id, client) in peer_clients(config, service_cert, node)? {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(peer_loop(id, client, rx));
            queues.insert(id, tx);
        }
        Ok(Arc::new(HttpTransport { queues }))
    }
}

impl Transport for HttpTransport {
    fn send(&self, to: u64, message: Vec<u8>) {
        if let Some(q) = self.queues.get(&to) {
            let _ = q.send(message);
        }
    }
}

async fn peer_loop(id: u64, client: LedgerClient, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut conn: Option<Connection> = None;
    let mut failing = false;
    while let Some(first) = rx.recv().await {
        let mut body = Vec::new();
        push_frame(&mut body, &first);
        while body.len() < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(m) => push_frame(&mut body, &m),
                Err(_) => break,
            }
        }
        if conn.is_none() {
            match client.connect().await {
                Ok(c) => {
                    if failing {
                        tracing::info!(peer = id, "reconnected to peer");
                    }
                    failing = false;
                    conn = Some(c);
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(peer = id, error = %e, "cannot reach peer");
                    }
                    failing = true;
                    // Drop this batch (Raft resends) and do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            let r = c
                .request_raw("POST", RAFT_PATH, Some(body), "application/octet-stream")
                .await;
            match r {
                Ok(resp) if resp.status == 200 => {}
                Ok(resp) => {
                    tracing::warn!(
                        peer = id,
                        status = resp.status,
                        "peer refused raft messages"
                    );
                    conn = None;
                }
                Err(_) => conn = None,
            }
        }
    }
}

fn push_frame(out: &mut Vec<u8>, m: &[u8]) {
    out.extend_from_slice(&(m.len() as u32).to_le_bytes());
    out.extend_from_slice(m);
}

/// Splits a body of length-prefixed frames; `None` if it is malformed.
fn split_frames(mut body: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let len = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
        let frame = body.get(4..4 + len)?;
        out.push(frame.to_vec());
        body = &body[4 + len..];
    }
    Some(out)
}

/// The network, if this node is in one and the caller is a node of this service
/// (the guard of every `/internal/*` route).
fn node_caller<'a>(state: &'a NodeState, peer: &PeerCert) -> Result<&'a Network, ApiError> {
    let Some(net) = state.network.as_deref() else {
        return Err(ApiError::not_found(
            "ResourceNotFound",
            "this node is not part of a replicated network",
        ));
    };
    if !net.is_node(peer) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "only nodes endorsed by the service identity may call /internal routes",
        ));
    }
    Ok(net)
}

/// `POST /internal/raft`: messages from another node of this service.
pub async fn raft_messages(
    State(state): State<NodeState>,
    peer: axum::Extension<PeerCert>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let net = node_caller(&state, &peer)?;
    let frames = split_frames(&body).ok_or_else(|| {
        ApiError::bad_request("InvalidInput", "malformed consensus message frames")
    })?;
    for f in frames {
        net.replica.receive(f);
    }
    Ok(StatusCode::OK.into_response())
}

/// Middleware: a write (`/app/*`, any method but GET/HEAD) reaching a backup is
/// forwarded to the primary with the caller's identity; the primary's answer is
/// returned as is. Reads are served locally, except on a connection that already
/// forwarded a write: those go to the primary too, so a client reads its own writes.
pub async fn forward_writes(State(state): State<NodeState>, req: Request, next: Next) -> Response {
    let Some(net) = state.network.clone() else {
        return next.run(req).await;
    };
    if !req.uri().path().starts_with("/app/") {
        return next.run(req).await;
    }
    let is_write = !matches!(*req.method(), Method::GET | Method::HEAD);
    let session = req
        .extensions()
        .get::<crate::server::SessionForwarded>()
        .cloned();
    let sticky = session
        .as_ref()
        .is_some_and(|s| s.0.load(std::sync::atomic::Ordering::Relaxed));
    if !is_write && !sticky {
        return next.run(req).await;
    }
    let status = net.replica.status();
    if status.is_primary {
        return next.run(req).await;
    }
    if is_write {
        if let Some(s) = &session {
            s.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    if req.headers().contains_key(FORWARDED) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the primary changed while forwarding; retry",
        )
        .into_response();
    }
    let Some((leader, client)) = status
        .leader
        .and_then(|l| net.clients.get(&l).map(|c| (l, c)))
    else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "no primary is elected at the moment; retry",
        )
        .into_response();
    };
    match forward(&net, leader, client, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

/// Idle connections kept per primary.
const MAX_IDLE: usize = 32;

async fn forward(
    net: &Network,
    leader: u64,
    client: &LedgerClient,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    // The primary enforces its own body limit; this only bounds what a backup buffers.
    let body = axum::body::to_bytes(body, MAX_RAFT_BODY_BYTES)
        .await
        .map_err(|e| ApiError::bad_request("InvalidInput", format!("reading the body: {e}")))?;
    let mut headers = vec![(FORWARDED.to_string(), "1".to_string())];
    if let Some(auth) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        if let Ok(v) = auth.to_str() {
            headers.push(("authorization".into(), v.to_string()));
        }
    } else if let Some(PeerCert(Some(p))) = parts.extensions.get::<PeerCert>() {
        headers.push((FORWARDED_USER.into(), p.1.clone()));
    }
    let content_type = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    let unavailable = |e: covenant_client::ClientError| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("forwarding to the primary failed: {e}"),
        )
    };
    let pooled = {
        let mut idle = net.idle.lock().unwrap_or_else(|e| e.into_inner());
        let pool = idle.entry(leader).or_default();
        let mut found = None;
        while let Some(c) = pool.pop() {
            if !c.is_closed() {
                found = Some(c);
                break;
            }
        }
        found
    };
    let mut conn = match pooled {
        Some(c) => c,
        None => client.connect().await.map_err(unavailable)?,
    };
    // No retry: a write that reached the primary may have been applied even if its
    // response was lost; the client decides (as with any HTTP request).
    let result = conn
        .request_with_headers(
            parts.method.as_str(),
            &path,
            Some(body.to_vec()),
            &content_type,
            &headers,
        )
        .await;
    let resp = result.map_err(unavailable)?;
    {
        let mut idle = net.idle.lock().unwrap_or_else(|e| e.into_inner());
        let pool = idle.entry(leader).or_default();
        if pool.len() < MAX_IDLE {
            pool.push(conn);
        }
    }
    let mut out = Response::new(Body::from(resp.body));
    *out.status_mut() = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in resp.headers {
        if matches!(
            name.as_str(),
            "connection" | "transfer-encoding" | "content-length" | "keep-alive"
        ) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            out.headers_mut().append(n, v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_malformed_bodies_are_refused() {
        let mut body = Vec::new();
        push_frame(&mut body, b"one");
        push_frame(&mut body, b"");
        push_frame(&mut body, &[7; 300]);
        let frames = split_frames(&body).unwrap();
        assert_eq!(frames, vec![b"one".to_vec(), Vec::new(), vec![7; 300]]);
        for cut in 1..body.len() {
            if let Some(f) = split_frames(&body[..cut]) {
                // Only cuts at frame boundaries parse.
                assert!(f.len() < 3);
            }
        }
        assert!(split_frames(&[9, 0, 0, 0, 1]).is_none());
    }
}

/// A node's row in [`NODES_INFO`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub status: String,
    pub raft_id: u64,
    pub address: String,
    pub cert: String,
}

/// `POST /internal/register`: a node of this service records itself (body: its
/// [`NodeInfo`]); the row's key is the node id of the presenting certificate, so a
/// node can only register itself.
pub async fn register(
    State(state): State<NodeState>,
    peer: axum::Extension<PeerCert>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let net = node_caller(&state, &peer)?;
    let Some(p) = peer.0 .0.as_ref() else {
        return Err(ApiError::unauthorized("no client certificate"));
    };
    let mut info: NodeInfo = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("InvalidInput", format!("node info: {e}")))?;
    if !net.config.peers.contains_key(&info.raft_id) {
        return Err(ApiError::bad_request(
            "InvalidInput",
            format!("raft id {} is not a member of this network", info.raft_id),
        ));
    }
    info.cert = p.0.to_pem();
    info.status = "Trusted".into();
    let txid = write_node_row(&state, &p.0.node_id(), &info)?;
    Ok(crate::routes::with_txid(Some(txid), StatusCode::OK).into_response())
}

/// Records a node's row in [`NODES_INFO`] (on the primary).
fn write_node_row(
    state: &NodeState,
    node_id: &str,
    info: &NodeInfo,
) -> Result<covenant_types::TxId, ApiError> {
    let value = serde_json::to_vec(info)
        .map_err(|e| ApiError::internal("encoding the node row failed", e))?;
    state.write("registering the node failed", |e| {
        let mut tx = e.begin();
        tx.put(NODES_INFO, node_id.as_bytes(), &value);
        e.commit_tx(tx, None)
    })
}

/// Registers this node in the nodes table once a primary exists (directly when it is
/// the primary, through `POST /internal/register` on the primary otherwise).
pub async fn register_self(state: NodeState, node_id: String, cert_pem: String) {
    let Some(net) = state.network.clone() else {
        return;
    };
    let address = net
        .config
        .peers
        .get(&net.config.node_id)
        .map(|a| a.to_string())
        .unwrap_or_default();
    let info = NodeInfo {
        status: "Trusted".into(),
        raft_id: net.config.node_id,
        address,
        cert: cert_pem,
    };
    loop {
        if state.store.get(NODES_INFO, node_id.as_bytes()).is_some() {
            return;
        }
        let s = net.replica.status();
        if s.is_primary {
            if write_node_row(&state, &node_id, &info).is_ok() {
                return;
            }
        } else if let Some(client) = s.leader.and_then(|l| net.clients.get(&l)) {
            if let (Ok(mut c), Ok(body)) = (client.connect().await, serde_json::to_vec(&info)) {
                let _ = c
                    .request_raw("POST", REGISTER_PATH, Some(body), "application/json")
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
