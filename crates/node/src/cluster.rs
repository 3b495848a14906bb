//! The node-to-node routes of a network (`/internal/*`, guarded by the caller
//! being a node of this service) and the background tasks that keep this node's
//! row in the nodes table.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use covenant_service::tables::NODES_INFO;
use covenant_service::{NodeInfo, NodeStatus};
use covenant_types::NodeId;

use crate::error::ApiError;
use crate::http::REGISTER_PATH;
use crate::peers::{split_frames, Network};
use crate::server::PeerCert;
use crate::state::NodeState;

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
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let net = node_caller(&state, &peer)?;
    let sender = headers
        .get(crate::http::RAFT_SENDER_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .and_then(|(id, a)| Some((id.parse::<u64>().ok()?, a.parse().ok()?)));
    if let Some((id, address)) = sender {
        net.peers.learn(id, address);
    }
    let frames = split_frames(&body).ok_or_else(|| {
        ApiError::bad_request("InvalidInput", "malformed consensus message frames")
    })?;
    for f in frames {
        net.replica.receive(f);
    }
    Ok(StatusCode::OK.into_response())
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
    if let Some(key) = &info.encryption_pub_key {
        if key.len() > 4096 || covenant_crypto::encrypt_to_public_key(key, b"probe").is_err() {
            return Err(ApiError::bad_request(
                "InvalidInput",
                "encryption_pub_key must be an RSA public key (PEM)",
            ));
        }
    }
    info.cert = p.0.to_pem();
    info.status = NodeStatus::Trusted;
    info.quote = None;
    let txid = write_node_row(&state, &p.0.node_id(), &info).await?;
    Ok(crate::http::with_txid(Some(txid), StatusCode::OK).into_response())
}

/// Records a node's row in [`NODES_INFO`] (on the primary).
pub(crate) async fn write_node_row(
    state: &NodeState,
    node_id: &str,
    info: &NodeInfo,
) -> Result<covenant_types::TxId, ApiError> {
    let value = serde_json::to_vec(info)
        .map_err(|e| ApiError::internal("encoding the node row failed", e))?;
    let key = node_id.as_bytes().to_vec();
    state
        .write("registering the node failed", move |e| {
            let mut tx = e.begin();
            tx.put(NODES_INFO, &key, &value);
            e.commit_tx(tx, None)
        })
        .await
}

/// Registers this node in the nodes table once a primary exists (directly when it is
/// the primary, through `POST /internal/register` on the primary otherwise).
pub async fn register_self(state: NodeState, node_id: String, cert_pem: String) {
    let Some(net) = state.network.clone() else {
        return;
    };
    if !net.config.peers.contains_key(&net.config.raft_id) {
        // A node that joined was registered by the primary that admitted it.
        return;
    }
    let mut info = NodeInfo::trusted(net.config.raft_id, net.config.address.to_string(), cert_pem);
    info.encryption_pub_key = state
        .service
        .engine()
        .encryption_recipient()
        .map(|r| r.encryption_pub_key);
    loop {
        if state.store.get(NODES_INFO, node_id.as_bytes()).is_some() {
            return;
        }
        let s = net.replica.status();
        if s.is_primary {
            if write_node_row(&state, &node_id, &info).await.is_ok() {
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
pub async fn stop_when_retired(state: NodeState, node_id: NodeId) {
    let Some(net) = state.network.clone() else {
        return;
    };
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let retired = covenant_service::nodes::node_row(&state.store, &node_id)
            .is_some_and(|i| i.status == NodeStatus::Retired);
        if retired {
            tracing::warn!(%node_id, "this node was retired from the network; it stops replicating (stop the process)");
            net.retired
                .store(true, std::sync::atomic::Ordering::Relaxed);
            net.replica.stop();
            return;
        }
    }
}
