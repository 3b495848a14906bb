//! Nodes joining and leaving a network (SPEC §5, §8; issue 4).
//!
//! A joining node connects with its own key and a self-signed certificate and
//! sends `POST /node/join` with its attestation evidence and address. The primary
//! checks the evidence (the key is bound, the code is trusted) and, by the
//! network's join policy, trusts it at once or records it as Pending. Trusting a
//! node is one transaction: its row in the nodes table (with a certificate for its
//! key endorsed by the service) and the Raft configuration with the node added as a
//! learner. The answer to a trusted node carries what it needs to take part: the
//! service identity, its endorsed certificate and the ledger secret. It travels only
//! over the TLS session the node opened with the key being endorsed (the primary
//! answers only to that key), so no one else can obtain it. The node then fetches a
//! snapshot (`GET /internal/snapshot`) and replicates the ledger suffix after it;
//! the primary promotes it to voter once it has caught up. Under the `pending`
//! policy, the consortium trusts a node with a `transition_node_to_trusted`
//! proposal and retires one with `remove_node` (completed in `gov.rs`).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use covenant_consensus::ConsensusError;
use covenant_governance::JoinDecision;
use serde::{Deserialize, Serialize};

use crate::attestation::{binary_measurement, VirtualQuote, NODES_CODE_IDS, VIRTUAL_FORMAT};
use crate::error::ApiError;
use covenant_service::{Admission, AdmissionError, NodeInfo, NodeStatus};

use crate::http::JOIN_PATH;
use crate::peers::Network;
use crate::server::PeerCert;
use crate::state::NodeState;

/// Response header naming the snapshot's TxId.
pub const SNAPSHOT_TXID_HEADER: &str = "x-covenant-snapshot-txid";

/// `POST /node/join` body (CCF's field names where they exist).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub quote_info: QuoteInfo,
    pub node_info_network: NodeInfoNetwork,
    /// Extra names for the node's endorsed certificate (IP addresses or DNS names;
    /// `localhost`, `127.0.0.1` and the rpc address's IP are always included).
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// The service's join token (a secret the operator hands out): under the
    /// `auto` join policy a node presenting it is trusted at once; without it a
    /// node can only become Pending. Virtual evidence alone proves nothing about
    /// who is joining, so it never admits a node by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
    /// The node's RSA-OAEP public key (PEM, CCF's field name): rekeys seal the new
    /// ledger secret to it. A node without one cannot stay in a network that rekeys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_encryption_key: Option<String>,
}

/// The token never reaches a log.
impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("quote_info", &self.quote_info)
            .field("node_info_network", &self.node_info_network)
            .field("subject_alt_names", &self.subject_alt_names)
            .field(
                "join_token",
                &self.join_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Unverified join requests (no valid join token) waiting as Pending at most: an
/// outsider can make a node row Pending, but cannot grow the ledger without bound.
pub const MAX_UNVERIFIED_PENDING: usize = 16;

/// Longest join token accepted (the dev one is 64 hex digits).
const MAX_JOIN_TOKEN: usize = 1024;

/// The hex SHA-256 the service records for a join token.
pub fn join_token_digest(token: &str) -> String {
    covenant_crypto::sha256(token.trim().as_bytes()).to_hex()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteInfo {
    pub format: String,
    /// Base64 of the raw evidence.
    pub quote: String,
    #[serde(default)]
    pub endorsements: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeInfoNetwork {
    /// `host:port` where other nodes and clients reach the node.
    pub rpc_address: String,
}

/// `POST /node/join` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    pub node_id: String,
    /// Pending or Trusted.
    pub node_status: NodeStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_id: Option<u64>,
    /// Only for a trusted node, over the session it opened with its own key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_info: Option<NetworkInfo>,
}

/// What a trusted node needs to take part.
#[derive(Clone, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub service_cert: String,
    /// PKCS#8 PEM of the service key (every node can endorse the next).
    pub service_key: String,
    /// The node's certificate, endorsed by the service.
    pub node_cert: String,
    /// Every ledger secret, each with the seqno it applies from
    /// ([`covenant_crypto::LedgerSecrets::to_text`]).
    pub ledger_secrets: String,
    pub ledger_public: bool,
    /// The name the network answers `/ledgerIdentity/{ledgerId}` for.
    #[serde(default)]
    pub ledger_id: Option<String>,
    /// The nodes of the network and their addresses.
    pub peers: Vec<PeerAddress>,
}

impl std::fmt::Debug for NetworkInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkInfo")
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerAddress {
    pub raft_id: u64,
    pub address: String,
}

fn network(state: &NodeState) -> Result<&Network, ApiError> {
    state.network.as_deref().ok_or_else(|| {
        ApiError::not_found(
            "ResourceNotFound",
            "this node is not part of a replicated network",
        )
    })
}

fn unavailable(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        message,
    )
}

/// Writes that change the network go to the primary; a backup answers 307 with the
/// primary's address (the answer to a join must reach the joining key directly,
/// which forwarding would not preserve).
fn redirect_to_primary(net: &Network, path: &str) -> Option<Response> {
    let s = net.replica.status();
    if s.is_primary {
        return None;
    }
    let Some(address) = s.leader.and_then(|l| net.peers.address(l)) else {
        return Some(unavailable("no primary is elected at the moment; retry").into_response());
    };
    let location = format!("https://{address}{path}");
    let mut r = ApiError::new(
        StatusCode::TEMPORARY_REDIRECT,
        "NotPrimary",
        format!("this node is a backup; the primary is at {address}"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Some(r)
}

/// Error code of a governance request that would retire the primary: it hands over
/// first (the request is answered 503; retry it on the new primary).
const PRIMARY_RETIRING: &str = "PrimaryRetiring";

/// Admitting nodes, as this node of a network can.
pub(crate) fn admission(state: &NodeState) -> Result<Admission<'_>, ApiError> {
    state.service.admission().ok_or_else(|| {
        ApiError::not_found(
            "ResourceNotFound",
            "this node is not part of a replicated network",
        )
    })
}

pub(crate) fn admission_error(context: &str, e: AdmissionError) -> ApiError {
    match e {
        AdmissionError::NoServiceKey => unavailable(e.to_string()),
        AdmissionError::BadCertificate(_) => ApiError::bad_request("InvalidInput", e.to_string()),
        AdmissionError::PrimaryRetiring => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            PRIMARY_RETIRING,
            e.to_string(),
        ),
        AdmissionError::Consensus(c) => consensus_error(context, c),
        AdmissionError::Endorse(_) | AdmissionError::Encode(_) => ApiError::internal(context, e),
    }
}

pub(crate) fn consensus_error(context: &str, e: ConsensusError) -> ApiError {
    match e {
        ConsensusError::NotPrimary { .. }
        | ConsensusError::NotReady
        | ConsensusError::Failed(_)
        | ConsensusError::MembershipChangePending(_) => unavailable(e.to_string()),
        ConsensusError::BadMembership(m) => {
            ApiError::new(StatusCode::CONFLICT, "InvalidConfiguration", m)
        }
        other => ApiError::internal(context, other),
    }
}

fn node_row(state: &NodeState, node_id: &str) -> Option<NodeInfo> {
    covenant_service::nodes::node_row(&state.store, &covenant_types::NodeId::new(node_id))
}

/// Measurements nodes may run (the service's own binary until governance adds more).
fn trusted_code(state: &NodeState) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = state
        .store
        .entries(NODES_CODE_IDS)
        .into_iter()
        .filter_map(|(k, _)| String::from_utf8(k).ok())
        .collect();
    if set.is_empty() {
        set.insert(binary_measurement());
    }
    set
}

fn peer_addresses(state: &NodeState, net: &Network) -> Vec<PeerAddress> {
    let mut out: Vec<PeerAddress> = covenant_service::nodes::node_rows(&state.store)
        .into_iter()
        .map(|(_, i)| i)
        .filter(|i| i.status == NodeStatus::Trusted && i.raft_id != 0)
        .map(|i| PeerAddress {
            raft_id: i.raft_id,
            address: i.address,
        })
        .collect();
    for (id, addr) in &net.config.peers {
        if !out.iter().any(|p| p.raft_id == *id) {
            out.push(PeerAddress {
                raft_id: *id,
                address: addr.to_string(),
            });
        }
    }
    out.sort_by_key(|p| p.raft_id);
    out
}

/// The answer to a node whose row is `row`.
fn answer(
    state: &NodeState,
    net: &Network,
    node_id: &str,
    row: &NodeInfo,
) -> Result<Response, ApiError> {
    let network_info = if row.status == NodeStatus::Trusted {
        let Some(service) = &net.config.service else {
            return Err(unavailable(
                "this node holds no service key to hand on; ask another node",
            ));
        };
        let secrets = state.service.engine().ledger_secrets().to_text();
        Some(NetworkInfo {
            service_cert: service.cert.to_pem(),
            service_key: service.key.to_pem().to_string(),
            node_cert: row.cert.clone(),
            ledger_secrets: secrets.to_string(),
            ledger_public: state.ledger_public(),
            ledger_id: Some(state.ledger_id.to_string()),
            peers: peer_addresses(state, net),
        })
    } else {
        None
    };
    let body = JoinResponse {
        node_id: node_id.to_string(),
        node_status: row.status,
        raft_id: (row.raft_id != 0).then_some(row.raft_id),
        network_info,
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// `POST /node/join`: a node asks to join (and polls its status the same way).
pub async fn join(
    State(state): State<NodeState>,
    peer: axum::Extension<PeerCert>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let net = network(&state)?;
    if let Some(redirect) = redirect_to_primary(net, JOIN_PATH) {
        return Ok(redirect);
    }
    if matches!(
        covenant_governance::service_status(&state.store),
        Some(
            covenant_governance::ServiceStatus::Recovering
                | covenant_governance::ServiceStatus::WaitingForRecoveryShares
        )
    ) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceRecovering",
            "the service is being recovered: nodes join once it is open again",
        ));
    }
    let Some(p) = peer.0 .0.as_ref() else {
        return Err(ApiError::unauthorized(
            "a joining node presents its own key as a TLS client certificate",
        ));
    };
    let cert = &p.0;
    let req: JoinRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("InvalidInput", format!("join request: {e}")))?;
    let address: SocketAddr = req.node_info_network.rpc_address.parse().map_err(|_| {
        ApiError::bad_request(
            "InvalidInput",
            "node_info_network.rpc_address must be ip:port",
        )
    })?;
    if let Some(key) = &req.public_encryption_key {
        let usable =
            key.len() <= 4096 && covenant_crypto::encrypt_to_public_key(key, b"probe").is_ok();
        if !usable {
            return Err(ApiError::bad_request(
                "InvalidInput",
                "public_encryption_key must be an RSA public key (PEM)",
            ));
        }
    }
    let node_id = cert.node_id();
    if let Some(mut row) = node_row(&state, &node_id) {
        if row.status == NodeStatus::Retired {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "NodeRetired",
                "this node was retired; a new key must join",
            ));
        }
        // A trusted node rejoining after a restart (it keeps no secrets at rest)
        // comes with a new encryption key: later rekeys must reach it.
        if row.status == NodeStatus::Trusted
            && req.public_encryption_key.is_some()
            && row.encryption_pub_key != req.public_encryption_key
        {
            row.encryption_pub_key = req.public_encryption_key.clone();
            crate::cluster::write_node_row(&state, &node_id, &row).await?;
        }
        return answer(&state, net, &node_id, &row);
    }
    if req.quote_info.format != VIRTUAL_FORMAT {
        return Err(ApiError::bad_request(
            "InvalidQuote",
            format!(
                "evidence format {:?} is not supported on this platform (expected {VIRTUAL_FORMAT:?})",
                req.quote_info.format
            ),
        ));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(req.quote_info.quote.as_bytes())
        .map_err(|_| ApiError::bad_request("InvalidQuote", "quote_info.quote is not base64"))?;
    let quote =
        VirtualQuote::from_raw(&raw).map_err(|m| ApiError::bad_request("InvalidQuote", m))?;
    quote
        .verify(&cert.spki_der(), &trusted_code(&state))
        .map_err(|m| ApiError::new(StatusCode::FORBIDDEN, "InvalidQuote", m))?;
    for s in &req.subject_alt_names {
        let dns_like = !s.is_empty()
            && s.len() <= 253
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*'));
        if s.parse::<std::net::IpAddr>().is_err() && !dns_like {
            return Err(ApiError::bad_request(
                "InvalidInput",
                format!("subject alternative name {s:?} is neither an IP address nor a DNS name"),
            ));
        }
    }
    if req.subject_alt_names.len() > 32 {
        return Err(ApiError::bad_request(
            "InvalidInput",
            "at most 32 subject alternative names",
        ));
    }
    let pending = NodeInfo {
        status: NodeStatus::Pending,
        raft_id: 0,
        address: address.to_string(),
        cert: cert.to_pem(),
        quote: Some(raw.iter().map(|b| format!("{b:02x}")).collect()),
        subject_alt_names: req.subject_alt_names.clone(),
        join_token_verified: false,
        node_data: None,
        encryption_pub_key: req.public_encryption_key.clone(),
    };
    let verified = check_join_token(&state, req.join_token.as_deref())?;
    if !verified && unverified_pending(&state) >= MAX_UNVERIFIED_PENDING {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyPendingNodes",
            format!(
                "{MAX_UNVERIFIED_PENDING} nodes are already waiting without the join token; \
                 members must trust or remove some first (or join with the service's join token)"
            ),
        ));
    }
    let mut asked = serde_json::to_value(&pending)
        .map_err(|e| ApiError::internal("encoding the node row failed", e))?;
    asked["node_id"] = serde_json::Value::String(node_id.clone());
    asked["join_token_verified"] = serde_json::Value::Bool(verified);
    let decision = covenant_governance::Governance::default()
        .join_decision(&state.store, &asked)
        .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, "JoinRefused", e.to_string()))?;
    // Whatever the constitution says, only the join token admits a node at once:
    // evidence a stranger can make for itself must not hand out the service's keys.
    let decision = match decision {
        JoinDecision::Trusted if !verified => JoinDecision::Pending,
        d => d,
    };
    let pending = NodeInfo {
        join_token_verified: verified,
        node_data: None,
        ..pending
    };
    let row = match decision {
        JoinDecision::Trusted => {
            // Endorsing and the configuration change wait on consensus: off the
            // async threads.
            let (id, row) = (covenant_types::NodeId::new(&node_id), pending.clone());
            state
                .blocking(move |s| {
                    let (trusted, txid) = admission(s)?
                        .trust(&id, &row)
                        .map_err(|e| admission_error("trusting the node failed", e))?;
                    tracing::info!(node_id = %id, raft_id = trusted.raft_id, %txid, "trusted a joining node; it catches up as a learner");
                    Ok::<_, ApiError>(trusted)
                })
                .await?
        }
        JoinDecision::Pending => {
            crate::cluster::write_node_row(&state, &node_id, &pending).await?;
            tracing::info!(%node_id, %address, "a node asked to join; it is Pending until trusted");
            pending
        }
    };
    answer(&state, net, &node_id, &row)
}

/// Whether `token` is the service's join token (its SHA-256 recorded in the service
/// configuration, compared in constant time). A token given but wrong is refused
/// (403) so an operator learns of a typo at once; none given is simply unverified.
fn check_join_token(state: &NodeState, token: Option<&str>) -> Result<bool, ApiError> {
    let Some(token) = token else {
        return Ok(false);
    };
    if token.len() > MAX_JOIN_TOKEN {
        return Err(ApiError::bad_request(
            "InvalidInput",
            format!("join_token is longer than {MAX_JOIN_TOKEN} bytes"),
        ));
    }
    let recorded = state
        .store
        .get(
            covenant_governance::SERVICE_CONFIG,
            covenant_governance::SERVICE_CONFIG_KEY,
        )
        .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
        .and_then(|c| c["join_token_sha256"].as_str().map(str::to_string));
    let wrong = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "InvalidJoinToken",
            "the join token is not this service's (nothing was recorded)",
        )
    };
    let Some(recorded) = recorded else {
        return Err(wrong());
    };
    let given = join_token_digest(token);
    aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), recorded.as_bytes())
        .map_err(|_| wrong())?;
    Ok(true)
}

/// Pending rows of nodes that asked without the join token.
fn unverified_pending(state: &NodeState) -> usize {
    covenant_service::nodes::node_rows(&state.store)
        .into_iter()
        .map(|(_, i)| i)
        .filter(|i| i.status == NodeStatus::Pending && !i.join_token_verified)
        .count()
}

/// `GET /internal/snapshot` (nodes only): the latest committed snapshot, so a node
/// that joined starts from it instead of replaying the ledger. 503 until one exists
/// (one is then requested at the next signature).
pub async fn snapshot(
    State(state): State<NodeState>,
    peer: axum::Extension<PeerCert>,
) -> Result<Response, ApiError> {
    let net = network(&state)?;
    // The edge admits only nodes to /internal/*; checked again where it matters most.
    if !net.is_node(&peer) {
        return Err(ApiError::forbidden(
            "only nodes endorsed by the service identity may fetch snapshots",
        ));
    }
    let latest = state.engine().latest_snapshot();
    let Some((txid, path)) = latest else {
        state.engine().request_snapshot();
        return Err(unavailable(
            "no snapshot is committed yet; one was requested: retry",
        ));
    };
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::internal("reading the snapshot failed", e))?;
    let mut r = (StatusCode::OK, bytes).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&txid.to_string()) {
        r.headers_mut().insert(SNAPSHOT_TXID_HEADER, v);
    }
    Ok(r)
}
