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
use base64::Engine as _;
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
/// Set by a backup forwarding a request: the certificate (base64 DER) the client
/// presented to it, absent when it presented none. Only accepted from nodes (see
/// [`crate::edge`]), and never a fingerprint: every auth policy needs the
/// certificate itself, and the executing node derives ids from it.
pub const FORWARDED_CERT: &str = "x-covenant-forwarded-cert";
/// Set on every forwarded request, so it is never forwarded twice.
pub const FORWARDED: &str = "x-covenant-forwarded";
/// A sender stops adding messages to a batch past this size.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Largest consensus request body a node accepts (a batch may overshoot
/// `MAX_BATCH_BYTES` by one message of at most a few MiB).
pub const MAX_RAFT_BODY_BYTES: usize = 64 << 20;

/// How joining nodes are admitted under the default constitution, recorded as the
/// service's `join_policy` at genesis (governance changes it with `set_join_policy`;
/// the constitution's `join_policy` export decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinPolicy {
    /// Trust at once a node whose evidence verifies (key bound, code trusted) and
    /// that presents the service's join token; others wait as Pending.
    #[default]
    Auto,
    /// Record it as Pending; a member trusts it later.
    Pending,
}

/// The other nodes and this one's Raft id.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub node_id: u64,
    /// Raft id → address of the nodes this one knows at start: every voting node of
    /// a new network (this one included), or the network a node joined. Nodes that
    /// join later are found in [`NODES_INFO`].
    pub peers: BTreeMap<u64, SocketAddr>,
    /// The address other nodes reach this one at.
    pub address: SocketAddr,
    /// Where the Raft hard state file lives.
    pub state_dir: std::path::PathBuf,
    /// Raft tick; elections after 20 ticks without a primary.
    pub tick: Duration,
    /// The service identity with its key, so that this node, as primary, can endorse
    /// joining nodes and hand the identity on; `None`: it admits no one.
    pub service: Option<Arc<covenant_crypto::ServiceIdentity>>,
    /// The ledger secret, handed to trusted joining nodes.
    pub ledger_secret: Option<Arc<covenant_crypto::LedgerSecret>>,
}

impl NetworkConfig {
    /// A node of a network of `peers` (which must include `node_id`); defaults for
    /// the rest (no service key: this node admits no joining node).
    pub fn new(
        node_id: u64,
        peers: BTreeMap<u64, SocketAddr>,
        state_dir: impl Into<std::path::PathBuf>,
    ) -> NetworkConfig {
        let address = peers
            .get(&node_id)
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        NetworkConfig {
            node_id,
            peers,
            address,
            state_dir: state_dir.into(),
            tick: Duration::from_millis(50),
            service: None,
            ledger_secret: None,
        }
    }
}

/// Where the other nodes are: the configured peers, then the addresses in
/// [`NODES_INFO`] (nodes that joined later), with one client per node.
pub struct PeerBook {
    own_id: u64,
    configured: BTreeMap<u64, SocketAddr>,
    store: covenant_kv::Store,
    service_cert: Certificate,
    node_cert: Certificate,
    node_key: covenant_crypto::SigningKeyPair,
    clients: std::sync::Mutex<BTreeMap<u64, (String, LedgerClient)>>,
}

impl PeerBook {
    pub fn new(
        config: &NetworkConfig,
        store: covenant_kv::Store,
        service_cert: &Certificate,
        node: &NodeIdentity,
    ) -> Result<Arc<PeerBook>, covenant_client::ClientError> {
        let node_key = covenant_crypto::SigningKeyPair::from_pem(&node.key.to_pem())
            .map_err(|e| covenant_client::ClientError::Tls(e.to_string()))?;
        Ok(Arc::new(PeerBook {
            own_id: config.node_id,
            configured: config.peers.clone(),
            store,
            service_cert: service_cert.clone(),
            node_cert: node.cert.clone(),
            node_key,
            clients: Default::default(),
        }))
    }

    /// The address of node `raft_id`, if known: this node's configuration first (the
    /// operator's route to that node, e.g. through a proxy), then the address the
    /// node registered.
    pub fn address(&self, raft_id: u64) -> Option<String> {
        if let Some(a) = self.configured.get(&raft_id) {
            return Some(a.to_string());
        }
        self.store
            .entries(NODES_INFO)
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<NodeInfo>(&v).ok())
            .find(|i| i.raft_id == raft_id && !i.address.is_empty())
            .map(|i| i.address)
    }

    /// A client to node `raft_id` presenting this node's certificate (cached while
    /// the node's address stays the same).
    pub fn client(&self, raft_id: u64) -> Option<LedgerClient> {
        if raft_id == self.own_id {
            return None;
        }
        let address = self.address(raft_id)?;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((a, c)) = clients.get(&raft_id) {
            if *a == address {
                return Some(c.clone());
            }
        }
        let c = LedgerClient::new(
            &format!("https://{address}"),
            &self.service_cert,
            Some((&self.node_cert, &self.node_key)),
        )
        .ok()?;
        clients.insert(raft_id, (address, c.clone()));
        Some(c)
    }
}

/// What a networked node shares with its handlers.
pub struct Network {
    pub replica: Replica,
    pub config: NetworkConfig,
    pub service_cert: Certificate,
    /// Clients to the other nodes, presenting this node's certificate.
    pub peers: Arc<PeerBook>,
    /// Idle keep-alive connections to the primary, per Raft id (forwarded writes).
    idle: std::sync::Mutex<BTreeMap<u64, Vec<Connection>>>,
    /// Set once this node saw itself retired: it no longer replicates or forwards.
    pub retired: std::sync::atomic::AtomicBool,
    /// The first seqno this node's ledger holds (fixed once the engine is open):
    /// reads of earlier history go to the primary.
    pub first_seqno: u64,
    /// Fingerprints of certificates already checked against the service key (an
    /// ECDSA P-384 verification per consensus request was ~3% of a 3-node bench).
    endorsed: std::sync::Mutex<std::collections::HashSet<covenant_types::Digest32>>,
}

impl Network {
    pub fn new(
        replica: Replica,
        config: NetworkConfig,
        service_cert: Certificate,
        peers: Arc<PeerBook>,
        first_seqno: u64,
    ) -> Network {
        Network {
            replica,
            config,
            service_cert,
            peers,
            retired: Default::default(),
            first_seqno,
            idle: Default::default(),
            endorsed: Default::default(),
        }
    }

    /// Whether `peer` is a node of this service (certificate endorsed by the service key).
    pub fn is_node(&self, peer: &PeerCert) -> bool {
        let Some(p) = peer.0.as_ref() else {
            return false;
        };
        let known = |s: &std::sync::Mutex<std::collections::HashSet<covenant_types::Digest32>>| {
            s.lock().unwrap_or_else(|e| e.into_inner()).contains(&p.1)
        };
        // A retired node keeps its endorsed certificate but takes no further part.
        // (Only the status is decoded: this runs for every consensus request.)
        #[derive(serde::Deserialize)]
        struct Status {
            status: String,
        }
        let retired = || {
            self.peers
                .store
                .get(NODES_INFO, p.0.node_id().as_bytes())
                .and_then(|v| serde_json::from_slice::<Status>(&v).ok())
                .is_some_and(|i| i.status == STATUS_RETIRED)
        };
        if known(&self.endorsed) {
            return !retired();
        }
        if p.0.verify_signed_by(&self.service_cert).is_err() || retired() {
            return false;
        }
        let mut set = self.endorsed.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: a network has a handful of nodes; never grow without limit.
        if set.len() < 1024 {
            set.insert(p.1);
        }
        true
    }
}

/// Sends Raft messages to peers: one queue and one keep-alive connection per peer
/// (started the first time a message goes there, so nodes that join later are
/// reached too), messages batched while a request is in flight. Losing messages is
/// fine (Raft retries); blocking the Raft thread is not, so `send` never waits.
pub struct HttpTransport {
    peers: Arc<PeerBook>,
    runtime: tokio::runtime::Handle,
    queues: std::sync::Mutex<BTreeMap<u64, mpsc::UnboundedSender<Vec<u8>>>>,
}

impl HttpTransport {
    /// Peer tasks run on the current tokio runtime.
    pub fn start(peers: Arc<PeerBook>) -> Arc<HttpTransport> {
        Arc::new(HttpTransport {
            peers,
            runtime: tokio::runtime::Handle::current(),
            queues: Default::default(),
        })
    }
}

impl Transport for HttpTransport {
    fn send(&self, to: u64, message: Vec<u8>) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = queues.get(&to) {
            if q.send(message).is_ok() {
                return;
            }
            queues.remove(&to);
            return;
        }
        // Unknown address: drop (Raft resends once the node's row is replicated).
        let Some(client) = self.peers.client(to) else {
            return;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(message);
        self.runtime.spawn(peer_loop(to, client, rx));
        queues.insert(to, tx);
    }
}

/// How long a node waits for a TCP and TLS connection to another node: peers are
/// on a LAN, so a slower answer means the link or the node is down.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one batch of Raft messages may take to be accepted by a peer. Longer
/// means the peer is cut off or paused: the batch is dropped (Raft resends what
/// still matters) rather than holding back every later message.
const RAFT_SEND_TIMEOUT: Duration = Duration::from_secs(2);

async fn connect_peer(client: &LedgerClient) -> Result<Connection, String> {
    match tokio::time::timeout(PEER_CONNECT_TIMEOUT, client.connect()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no connection within {} ms",
            PEER_CONNECT_TIMEOUT.as_millis()
        )),
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
            match connect_peer(&client).await {
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
                    // Drop this batch and what queued meanwhile (Raft resends what
                    // still matters) and do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    while rx.try_recv().is_ok() {}
                    continue;
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            let r = tokio::time::timeout(
                RAFT_SEND_TIMEOUT,
                c.request_raw("POST", RAFT_PATH, Some(body), "application/octet-stream"),
            )
            .await;
            match r {
                Ok(Ok(resp)) if resp.status == 200 => {}
                Ok(Ok(resp)) => {
                    tracing::warn!(
                        peer = id,
                        status = resp.status,
                        "peer refused raft messages"
                    );
                    conn = None;
                }
                Ok(Err(_)) => conn = None,
                Err(_) => {
                    if !failing {
                        tracing::warn!(peer = id, "peer did not take raft messages in time");
                    }
                    failing = true;
                    conn = None;
                    while rx.try_recv().is_ok() {}
                }
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
/// Middleware: until the consortium opens the service (`transition_service_to_open`),
/// the ledger API refuses everyone with 503 `ServiceNotOpen`.
pub async fn service_open_gate(
    State(state): State<NodeState>,
    req: Request,
    next: Next,
) -> Response {
    if req.uri().path().starts_with("/app/") {
        if let Some(status) = covenant_governance::service_status(&state.store) {
            if status != "Open" {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceNotOpen",
                    format!(
                        "the service is {status}: the consortium opens it with a transition_service_to_open proposal"
                    ),
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}

/// For a request to an endpoint of the deployed JS app: whether it must run on the
/// primary. A `readwrite` endpoint writes whatever its method (a GET included);
/// `forwarding_required: "always"` forwards even a read, `"never"` keeps even a
/// write here (where it then fails if this node is not the primary, as in CCF).
fn app_endpoint_writes(state: &NodeState, req: &Request) -> Option<bool> {
    let app = crate::app::request_app(state, req.extensions()).ok()??;
    let (route, _) = app.route(req.method().as_str(), req.uri().path())?.ok()?;
    let p = &route.properties;
    Some(match p.forwarding_required.as_deref() {
        Some("always") => true,
        Some("never") => false,
        _ => p.mode() == covenant_app::Mode::Readwrite,
    })
}

pub async fn forward_writes(State(state): State<NodeState>, req: Request, next: Next) -> Response {
    let Some(net) = state.network.clone() else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    let is_write = match app_endpoint_writes(&state, &req) {
        Some(w) => w,
        None => !matches!(*req.method(), Method::GET | Method::HEAD),
    };
    // Governance writes carry their member's signature: the primary checks it.
    let gov_write = is_write && path.starts_with("/gov/");
    if !path.starts_with("/app/") && !gov_write {
        return next.run(req).await;
    }
    // A node that started from a snapshot lacks the history before it: reads of that
    // history go to the primary (which, as a rule, holds the whole ledger).
    let before_ledger =
        !is_write && net.first_seqno > 1 && reads_before(req.uri(), net.first_seqno);
    // A TxId this node cannot place yet (it has not received it, or holds another
    // view's uncommitted entry at its seqno) is asked of the primary, which can: a
    // lagging backup must not call a committed TxId unknown.
    let unknown_here = !is_write
        && !before_ledger
        && !net.replica.status().is_primary
        && names_unknown_txid(&state, req.uri());
    let session = req
        .extensions()
        .get::<crate::server::SessionForwarded>()
        .cloned();
    let sticky = session
        .as_ref()
        .is_some_and(|s| s.0.load(std::sync::atomic::Ordering::Relaxed));
    if !is_write && !sticky && !before_ledger && !unknown_here {
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
    if net.retired.load(std::sync::atomic::Ordering::Relaxed) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "this node was retired from the network; send requests to another node",
        )
        .into_response();
    }
    if req.headers().contains_key(FORWARDED) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the primary changed while forwarding; retry",
        )
        .into_response();
    }
    if status.leader.is_none() {
        return no_primary().into_response();
    }
    // The caller is authenticated here, before its body is read and forwarded.
    let (mut head, body) = req.into_parts();
    if let Err(e) = crate::app::authenticate_before_forwarding(&state, &mut head).await {
        return e.into_response();
    }
    let req = Request::from_parts(head, body);
    match forward(&net, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

fn no_primary() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        "no primary is elected at the moment; retry",
    )
}

/// Whether a ledger read names a transaction (or a range starting) before seqno
/// `first`: `/app/transactions/{txid}[/receipt|/status]` and ranged lists.
fn reads_before(uri: &axum::http::Uri, first: u64) -> bool {
    let seqno_of = |t: &str| t.split_once('.').and_then(|(_, s)| s.parse::<u64>().ok());
    let Some(rest) = uri.path().strip_prefix("/app/transactions") else {
        return false;
    };
    match rest.strip_prefix('/') {
        None if rest.is_empty() => {
            // A list starts at fromTransactionId, or at the beginning.
            let from = uri.query().unwrap_or("").split('&').find_map(|kv| {
                kv.strip_prefix("fromTransactionId=")
                    .filter(|v| !v.is_empty())
            });
            from.is_none_or(|t| seqno_of(t).is_some_and(|s| s < first))
        }
        Some(tail) => {
            let txid = tail.split('/').next().unwrap_or("");
            txid != "current" && seqno_of(txid).is_some_and(|s| s < first)
        }
        None => false,
    }
}

/// Whether a ledger read names a TxId (`/app/transactions/{txid}[/receipt|/status]`)
/// whose status on this node is Unknown.
fn names_unknown_txid(state: &NodeState, uri: &axum::http::Uri) -> bool {
    let Some(rest) = uri.path().strip_prefix("/app/transactions/") else {
        return false;
    };
    let Some(txid) = rest
        .split('/')
        .next()
        .and_then(|t| t.parse::<covenant_types::TxId>().ok())
    else {
        return false;
    };
    matches!(
        state.engine().status(txid),
        Ok(covenant_engine::TxStatus::Unknown)
    )
}

/// Idle connections kept per primary.
const MAX_IDLE: usize = 32;

async fn forward(net: &Network, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    // The edge capped this body at the node's max_body_bytes and refused it before
    // this point if the route needs a credential the client did not present.
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| crate::edge::body_read_error(&e))?;
    let mut headers = vec![(FORWARDED.to_string(), "1".to_string())];
    // End-to-end headers travel on (app handlers read them); the hop's own, and
    // the node-to-node ones (refused from clients at the edge anyway), do not.
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if matches!(
            n,
            "host"
                | "content-length"
                | "content-type"
                | "connection"
                | "transfer-encoding"
                | "keep-alive"
                | "upgrade"
                | "te"
                | "trailer"
                | "proxy-connection"
        ) || n.starts_with("x-covenant-forwarded")
        {
            continue;
        }
        if let Ok(v) = value.to_str() {
            headers.push((n.to_string(), v.to_string()));
        }
    }
    // The client's own certificate, whole: the primary runs every auth policy on it.
    if let Some(PeerCert(Some(p))) = parts.extensions.get::<PeerCert>() {
        headers.push((
            FORWARDED_CERT.into(),
            base64::engine::general_purpose::STANDARD.encode(p.0.der()),
        ));
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
    let unavailable = |e: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("forwarding to the primary failed: {e}"),
        )
    };
    // A connection to the primary; when it cannot be reached, a second look at who
    // is primary (an election may have just moved it). Nothing was sent yet, so
    // trying the new one is safe.
    let mut tried = None;
    let (leader, mut conn) = loop {
        let Some((leader, client)) = net
            .replica
            .status()
            .leader
            .filter(|l| Some(*l) != tried)
            .and_then(|l| net.peers.client(l).map(|c| (l, c)))
        else {
            return Err(no_primary());
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
        if let Some(c) = pooled {
            break (leader, c);
        }
        match connect_peer(&client).await {
            Ok(c) => break (leader, c),
            Err(e) if tried.is_some() => return Err(unavailable(e)),
            Err(e) => {
                tracing::debug!(primary = leader, error = %e, "cannot reach the primary; looking again");
                tried = Some(leader);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // No retry once sent: a write that reached the primary may have been applied
    // even if its response is lost; the client decides (as with any HTTP request).
    // The wait ends when the primary answers, or when this node learns that the
    // primary changed (it was cut off or deposed: its answer may never come).
    let request = conn.request_with_headers(
        parts.method.as_str(),
        &path,
        Some(body.to_vec()),
        &content_type,
        &headers,
    );
    let deposed = async {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if net.replica.status().leader != Some(leader) {
                return;
            }
        }
    };
    let result = tokio::select! {
        r = request => r.map_err(|e| unavailable(e.to_string())),
        () = deposed => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the primary changed while this request was forwarded to it, and it did not \
             answer: the request may or may not have taken effect; check the transaction \
             status or retry",
        )),
    };
    let resp = result?;
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
    fn history_before_a_snapshot_is_recognized() {
        let before = |u: &str| reads_before(&u.parse().unwrap(), 100);
        assert!(before("/app/transactions/2.50?api-version=x"));
        assert!(before("/app/transactions/2.50/receipt"));
        assert!(!before("/app/transactions/2.150"));
        assert!(!before("/app/transactions/current?collectionId=a"));
        assert!(before("/app/transactions?api-version=x&collectionId=a"));
        assert!(before("/app/transactions?fromTransactionId=2.99"));
        assert!(!before(
            "/app/transactions?fromTransactionId=2.100&api-version=x"
        ));
        assert!(!before("/app/collections"));
        assert!(!before("/app/transactionsX/2.5"));
    }

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

/// Node statuses in [`NODES_INFO`] (SPEC §5).
pub const STATUS_PENDING: &str = "Pending";
pub const STATUS_TRUSTED: &str = "Trusted";
pub const STATUS_RETIRED: &str = "Retired";

/// A node's row in [`NODES_INFO`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// Pending, Trusted or Retired.
    pub status: String,
    /// 0 while Pending (no Raft id is given before the node is trusted).
    pub raft_id: u64,
    /// Where other nodes and clients reach it (`host:port`).
    pub address: String,
    /// Its certificate: endorsed by the service once Trusted, the node's own
    /// self-signed one while Pending.
    pub cert: String,
    /// The evidence it joined with (hex of the raw quote), if it joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<String>,
    /// Extra names (IPs or DNS names) asked for its endorsed certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// It asked with the service's join token (only such a node may be trusted
    /// without a proposal, and only unverified Pending rows count against the cap).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub join_token_verified: bool,
    /// What governance recorded about it (`set_node_data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_data: Option<serde_json::Value>,
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
    if state
        .store
        .get(NODES_INFO, p.0.node_id().as_bytes())
        .is_some()
    {
        // Registered already (or admitted by a join): never overwrite its status.
        return Ok(StatusCode::OK.into_response());
    }
    if !net.config.peers.contains_key(&info.raft_id) {
        return Err(ApiError::bad_request(
            "InvalidInput",
            format!("raft id {} is not a member of this network", info.raft_id),
        ));
    }
    info.cert = p.0.to_pem();
    info.status = STATUS_TRUSTED.into();
    info.quote = None;
    let txid = write_node_row(&state, &p.0.node_id(), &info)?;
    Ok(crate::routes::with_txid(Some(txid), StatusCode::OK).into_response())
}

/// Records a node's row in [`NODES_INFO`] (on the primary).
pub(crate) fn write_node_row(
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
    if !net.config.peers.contains_key(&net.config.node_id) {
        // A node that joined was registered by the primary that admitted it.
        return;
    }
    let info = NodeInfo {
        status: STATUS_TRUSTED.into(),
        raft_id: net.config.node_id,
        address: net.config.address.to_string(),
        cert: cert_pem,
        quote: None,
        subject_alt_names: Vec::new(),
        join_token_verified: false,
        node_data: None,
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
        } else if let Some(client) = s.leader.and_then(|l| net.peers.client(l)) {
            if let (Ok(mut c), Ok(body)) = (client.connect().await, serde_json::to_vec(&info)) {
                let _ = c
                    .request_raw("POST", REGISTER_PATH, Some(body), "application/json")
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Stops this node's part in consensus once its own row says Retired (it was removed
/// from the configuration; without this it would keep knocking at nodes that refuse
/// it). Reads and the ledger stay available until the process is stopped.
pub async fn stop_when_retired(state: NodeState, node_id: String) {
    let Some(net) = state.network.clone() else {
        return;
    };
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let retired = state
            .store
            .get(NODES_INFO, node_id.as_bytes())
            .and_then(|v| serde_json::from_slice::<NodeInfo>(&v).ok())
            .is_some_and(|i| i.status == STATUS_RETIRED);
        if retired {
            tracing::warn!(%node_id, "this node was retired from the network; it stops replicating (stop the process)");
            net.retired
                .store(true, std::sync::atomic::Ordering::Relaxed);
            net.replica.stop();
            return;
        }
    }
}

/// Every node of the service with its row, for the node and governance reads. A
/// single node keeps no row: it is shown as the service's one Trusted node.
pub(crate) fn node_rows(state: &NodeState) -> Vec<(String, NodeInfo)> {
    let rows: Vec<(String, NodeInfo)> = state
        .store
        .entries(NODES_INFO)
        .into_iter()
        .filter_map(|(k, v)| Some((String::from_utf8(k).ok()?, serde_json::from_slice(&v).ok()?)))
        .collect();
    if !rows.is_empty() {
        return rows;
    }
    vec![(
        state.node_id.clone(),
        NodeInfo {
            status: STATUS_TRUSTED.into(),
            raft_id: 0,
            address: String::new(),
            cert: state.node_certs.endorsed.clone(),
            quote: None,
            subject_alt_names: Vec::new(),
            join_token_verified: false,
            node_data: None,
        },
    )]
}
