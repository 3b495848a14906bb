//! The rest of CCF's node API and the routes CCF serves on every frontend
//! (`/app/commit`, `/app/tx`, `/app/api` and their `/gov` twins), with CCF's
//! shapes (snake_case), and the classic governance reads tooling uses
//! (`/gov/kv/...`, `/gov/jwt_keys/all`). None needs a credential.

use covenant_governance::ServiceStatus;
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use covenant_service::{NodeInfo, NodeStatus};

use crate::error::ApiError;
use crate::http::{status_word, txid_param, with_txid, Params};
use crate::state::NodeState;

/// This node's raft id and the primary's, in a replicated network.
fn roles(state: &NodeState) -> Option<(u64, Option<u64>)> {
    state.network.as_ref().map(|n| {
        let s = n.replica.status();
        (n.config.raft_id, s.leader)
    })
}

fn is_primary(state: &NodeState) -> bool {
    match roles(state) {
        None => true,
        Some((me, leader)) => leader == Some(me),
    }
}

/// A node as CCF's `GetNode` shows it.
fn get_node(state: &NodeState, id: &str, row: &NodeInfo) -> Value {
    let primary = match roles(state) {
        None => true,
        Some((_, leader)) => row.raft_id != 0 && leader == Some(row.raft_id),
    };
    json!({
        "node_id": id,
        "status": row.status,
        "primary": primary,
        "rpc_interfaces": {"primary_rpc_interface": {"bind_address": row.address, "published_address": row.address}},
        "node_data": row.node_data.clone().unwrap_or(Value::Null),
        "last_written": 0,
    })
}

/// `/node/network/nodes/{self|primary|<node id>}`.
pub async fn network_node(
    State(state): State<NodeState>,
    Path(which): Path<String>,
) -> Result<Response, ApiError> {
    let rows = state.node_rows();
    let found = match which.as_str() {
        "self" => rows.iter().find(|(id, _)| id.as_str() == state.node_id()),
        "primary" => {
            let leader = roles(&state).map(|(_, l)| l);
            match leader {
                None => rows.first(),
                Some(None) => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "PrimaryUnknown",
                        "Primary unknown",
                    ))
                }
                Some(Some(l)) => rows.iter().find(|(_, r)| r.raft_id == l),
            }
        }
        id => rows
            .iter()
            .find(|(n, _)| n.as_str().eq_ignore_ascii_case(id)),
    };
    let (id, row) =
        found.ok_or_else(|| ApiError::not_found("ResourceNotFound", "Node not found"))?;
    Ok(Json(get_node(&state, id.as_str(), row)).into_response())
}

/// `GET|HEAD /node/primary`: 200 on the primary; elsewhere GET answers 404 and
/// HEAD redirects (308) to the primary.
pub async fn primary(State(state): State<NodeState>, method: Method) -> Response {
    if is_primary(&state) {
        return StatusCode::OK.into_response();
    }
    if method == Method::HEAD {
        let address = state.network.as_ref().and_then(|n| {
            let leader = n.replica.status().leader?;
            state
                .node_rows()
                .into_iter()
                .find_map(|(_, r)| (r.raft_id == leader).then_some(r.address))
        });
        if let Some(a) =
            address.and_then(|a| HeaderValue::from_str(&format!("https://{a}/node/primary")).ok())
        {
            return (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, a)]).into_response();
        }
    }
    ApiError::not_found("ResourceNotFound", "Node is not primary").into_response()
}

/// `GET /node/backup`: 200 on a backup, else 404.
pub async fn backup(State(state): State<NodeState>) -> Response {
    if is_primary(&state) {
        ApiError::not_found("ResourceNotFound", "Node is not backup").into_response()
    } else {
        StatusCode::OK.into_response()
    }
}

/// `GET /node/ready/app`: 204 once the service is open to users, else 503.
pub async fn ready_app(State(state): State<NodeState>) -> StatusCode {
    let open =
        covenant_governance::service_status(&state.store).is_none_or(|s| s == ServiceStatus::Open);
    if open {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `GET /node/ready/gov`: 204 once this node serves members.
pub async fn ready_gov() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `GET /node/service/previous_identity`: only a recovered service has one.
pub async fn previous_identity() -> ApiError {
    ApiError::not_found(
        "ResourceNotFound",
        "This service is not a recovery of a previous service.",
    )
}

/// `GET /node/memory`: the process's memory, from `/proc/self/status` (Linux).
pub async fn memory() -> Result<Json<Value>, ApiError> {
    let status = tokio::fs::read_to_string("/proc/self/status")
        .await
        .map_err(|e| ApiError::internal("reading memory usage failed", e))?;
    let kib = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok(Json(json!({
        "max_total_heap_size": 0,
        "current_allocated_heap_size": kib("VmRSS:"),
        "peak_allocated_heap_size": kib("VmHWM:"),
    })))
}

/// `GET /node/js_metrics`: the JS limits in force; covenant keeps no bytecode in
/// the ledger (each node compiles and caches modules itself).
pub async fn js_metrics(State(state): State<NodeState>) -> Json<Value> {
    let o = covenant_app::RuntimeOptions::load(&state.store);
    Json(json!({
        "bytecode_size": 0,
        "bytecode_used": false,
        "max_heap_size": o.max_heap_bytes,
        "max_stack_size": o.max_stack_bytes,
        "max_execution_time": o.max_execution_time_ms,
        "max_cached_interpreters": o.max_cached_interpreters,
    }))
}

pub async fn self_signed_certificate(
    State(state): State<NodeState>,
) -> Result<Json<Value>, ApiError> {
    let pem = state.node_certs.self_signed.clone().ok_or_else(|| {
        ApiError::not_found(
            "ResourceNotFound",
            "this node has no self-signed certificate",
        )
    })?;
    Ok(Json(json!({ "self_signed_certificate": pem })))
}

/// covenant's own (CCF has no such route): the certificate the service endorsed.
pub async fn endorsed_certificate(State(state): State<NodeState>) -> Json<Value> {
    Json(json!({ "endorsed_certificate": state.node_certs.endorsed }))
}

/// `GET /gov/kv/<table path>`: a governance table, `public:ccf.gov.` and the
/// dots of its name left out (`/gov/kv/users/certs`), as CCF's tooling reads it:
/// `{key: value}` (values JSON where they are JSON, else text); single-row
/// tables as their one value (`/gov/kv/constitution` is a JSON string).
pub async fn gov_kv(
    State(state): State<NodeState>,
    Path(table): Path<String>,
) -> Result<Response, ApiError> {
    if table.is_empty() || table.contains("..") || table.len() > 128 {
        return Err(ApiError::not_found("ResourceNotFound", "no such table"));
    }
    let map = format!(
        "public:ccf.gov.{}",
        table.trim_matches('/').replace('/', ".")
    );
    let rows = state.store.entries(&map);
    let decode = |v: &[u8]| -> Value {
        serde_json::from_slice(v)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(v).into_owned()))
    };
    const SINGLE_ROW: &[&str] = &[
        "public:ccf.gov.constitution",
        "public:ccf.gov.service.info",
        "public:ccf.gov.service.config",
        "public:ccf.gov.js_runtime_options",
    ];
    if SINGLE_ROW.contains(&map.as_str()) {
        let value = rows.first().map(|(_, v)| {
            if map == covenant_governance::CONSTITUTION {
                Value::String(String::from_utf8_lossy(v).into_owned())
            } else if map == covenant_governance::SERVICE_INFO {
                decode(&covenant_governance::host::with_service_cert(
                    v,
                    &state.service_cert_pem,
                ))
            } else {
                decode(v)
            }
        });
        return Ok(Json(value.unwrap_or(Value::Null)).into_response());
    }
    let out: serde_json::Map<String, Value> = rows
        .iter()
        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), decode(v)))
        .collect();
    Ok(Json(Value::Object(out)).into_response())
}

/// `GET /gov/jwt_keys/all`: `{kid: [{issuer, cert}]}` of the trusted issuers'
/// keys (`cert` is the key's `x5c` certificate when it has one, else empty, as
/// CCF 6 answers).
pub async fn jwt_keys_all(State(state): State<NodeState>) -> Json<Value> {
    let mut out = serde_json::Map::new();
    for g in crate::jwt::governed_keys(&state.store) {
        for key in g.keys {
            if let Some(list) = out
                .entry(key.kid)
                .or_insert_with(|| json!([]))
                .as_array_mut()
            {
                list.push(json!({"issuer": g.issuer, "cert": key.cert_pem.unwrap_or_default()}));
            }
        }
    }
    Json(Value::Object(out))
}

/// `GET /app/api` (and `/gov/api`, `/node/api`): the OpenAPI document. `/gov/api`
/// with an api-version names CCF's governance API instead; covenant answers with
/// its own document either way, after checking the version.
pub async fn api(
    State(state): State<NodeState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    if let Some(v) = q.get("api-version") {
        if !crate::gov_api::GOV_API_VERSIONS.contains(&v.as_str())
            && !crate::http::API_VERSIONS.contains(&v.as_str())
        {
            return Err(ApiError::bad_request(
                "UnsupportedApiVersionValue",
                format!("Unsupported api-version '{v}'"),
            ));
        }
    }
    let app = state.service.apps().current(&state.store).ok().flatten();
    Ok(Json(crate::openapi::document(app.as_deref())))
}

/// `/node/tx` (also `/app/tx`, `/gov/tx`): a transaction's status on this node.
pub(crate) async fn node_tx(
    State(state): State<NodeState>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let txid = txid_param(&q)?;
    let word = status_word(
        state
            .service
            .status(txid)
            .map_err(|e| ApiError::service("reading the ledger failed", e))?,
    );
    Ok(Json(json!({"status": word, "transaction_id": txid.to_string()})).into_response())
}

/// `/node/receipt?transaction_id=`: CCF's receipt route.
pub(crate) async fn node_receipt(
    State(state): State<NodeState>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    crate::ledger_api::receipt_of(&state, txid_param(&q)?).await
}

/// `/node/commit` (also `/app/commit`, `/gov/commit`): the last committed TxId.
pub(crate) async fn node_commit(State(state): State<NodeState>) -> Result<Response, ApiError> {
    let txid = state
        .service
        .committed_txid()
        .map_err(|e| ApiError::service("reading the ledger failed", e))?;
    Ok(with_txid(
        txid,
        Json(
            json!({"transaction_id": txid.map(|t| t.to_string()).unwrap_or_else(|| "0.0".into())}),
        ),
    ))
}

pub(crate) async fn node_state(State(state): State<NodeState>) -> Json<Value> {
    let engine = state.engine();
    Json(json!({
        "node_id": state.node_id(),
        "state": "PartOfNetwork",
        "last_signed_seqno": engine.committed_seqno(),
        "view": engine.view().0,
    }))
}

pub(crate) async fn node_version() -> Json<Value> {
    Json(json!({
        "ccf_version": concat!("covenant-", env!("CARGO_PKG_VERSION")),
        "quickjs_version": null,
        "unsafe": false,
    }))
}

pub(crate) async fn node_network(State(state): State<NodeState>) -> Json<Value> {
    let (view, primary) = match &state.network {
        Some(n) => {
            let s = n.replica.status();
            (s.term, s.leader.map(|l| l.to_string()))
        }
        None => (state.engine().view().0, Some(state.node_id().to_string())),
    };
    let status = covenant_governance::service_status(&state.store).unwrap_or(ServiceStatus::Open);
    Json(json!({
        "service_certificate": *state.service_cert_pem,
        "service_status": status,
        "current_view": view,
        "primary_id": primary,
    }))
}

/// `/node/network/nodes`: every node with its status, address and whether it is the
/// primary (Raft ids name nodes in a replicated network). Nodes are those of the
/// nodes table, plus configured peers that have not registered yet (Pending).
pub(crate) async fn network_nodes(State(state): State<NodeState>) -> Json<Value> {
    let nodes: Vec<Value> = match &state.network {
        Some(n) => {
            let s = n.replica.status();
            let (conf, _) = n.replica.configuration();
            let mut rows: Vec<(String, NodeInfo)> =
                covenant_service::nodes::node_rows(&state.store)
                    .into_iter()
                    .map(|(id, info)| (id.to_string(), info))
                    .collect();
            for (id, addr) in &n.config.peers {
                if !rows.iter().any(|(_, i)| i.raft_id == *id) {
                    let pending =
                        NodeInfo::new(NodeStatus::Pending, *id, addr.to_string(), String::new());
                    rows.push((String::new(), pending));
                }
            }
            rows.sort_by_key(|(_, i)| (i.raft_id == 0, i.raft_id));
            rows.into_iter()
                .map(|(node_id, info)| {
                    let role = if conf.voters.contains(&info.raft_id) {
                        "Voter"
                    } else if conf.learners.contains(&info.raft_id) {
                        "Learner"
                    } else {
                        "None"
                    };
                    json!({
                        "node_id": node_id,
                        "raft_id": info.raft_id,
                        "status": info.status,
                        "consensus_role": role,
                        "primary": info.raft_id != 0 && s.leader == Some(info.raft_id),
                        "rpc_interfaces": {"primary_rpc_interface": {"published_address": info.address}},
                        "self": info.raft_id != 0 && info.raft_id == n.config.raft_id,
                    })
                })
                .collect()
        }
        None => vec![json!({
            "node_id": state.node_id(),
            "status": NodeStatus::Trusted,
            "primary": true,
            "rpc_interfaces": {},
            "self": true,
        })],
    };
    Json(json!({ "nodes": nodes }))
}

/// `/node/metrics`: request counters and the ledger's position (Prometheus text).
pub(crate) async fn metrics(State(state): State<NodeState>) -> Response {
    let (last, committed, view) = {
        let e = state.engine();
        (
            e.last_txid().map(|t| t.seqno.0).unwrap_or(0),
            e.committed_seqno(),
            e.view().0,
        )
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(last, committed.0, view),
    )
        .into_response()
}
