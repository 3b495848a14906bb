//! The `/gov` API (SPEC §5, CCF's classic governance routes): members propose,
//! vote, withdraw and ack with COSE Sign1 requests signed by their keys; the
//! constitution decides (`covenant-governance`).
//!
//! Every state-changing request is a COSE Sign1 envelope (`application/cose`) whose
//! `kid` names a member; it is verified against that member's certificate, its
//! `ccf.gov.msg.type` must be the route's, its `created_at` within
//! [`CREATED_AT_WINDOW_SECS`] of the node's clock, and its signed digest never seen
//! before (kept in `public:ccf.gov.cose_recent` for the window). The request and the
//! governance transaction are one ledger transaction, so the history is public.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use covenant_crypto::{parse_gov_sign1, verify_gov_sign1, Certificate, GovMessage};
use covenant_governance::{
    GovError, Governance, ProposalInfo, CONSTITUTION, CONSTITUTION_KEY, MEMBERS_CERTS,
    MEMBERS_ENCRYPTION_KEYS, MEMBERS_INFO,
};
use covenant_kv::Tx;
use covenant_receipt::{SIGNATURES_MAP, SIGNATURE_KEY};
use covenant_types::TxId;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::routes::with_txid;
use crate::state::NodeState;

/// Signed digest (hex) → `created_at`, for replay protection.
pub const COSE_RECENT: &str = "public:ccf.gov.cose_recent";
/// How far a request's `created_at` may be from the node's clock.
pub const CREATED_AT_WINDOW_SECS: u64 = 300;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn gov_error(e: GovError) -> ApiError {
    let (status, code) = match &e {
        GovError::NotAMember(_) => (StatusCode::UNAUTHORIZED, "UnknownMember"),
        GovError::NotActive(_) | GovError::NotProposer(_) => (StatusCode::FORBIDDEN, "Forbidden"),
        GovError::NoSuchProposal(_) => (StatusCode::NOT_FOUND, "ProposalNotFound"),
        GovError::NotOpen { .. } => (StatusCode::CONFLICT, "ProposalNotOpen"),
        GovError::Invalid(_) | GovError::NotJson(_) | GovError::Validate(_) => {
            (StatusCode::BAD_REQUEST, "InvalidProposal")
        }
        GovError::WrongDigest { .. } | GovError::NoDigest(_) => {
            (StatusCode::BAD_REQUEST, "StateDigestMismatch")
        }
        GovError::NoConstitution | GovError::Internal(_) | GovError::JoinPolicy(_) => {
            return ApiError::internal("governance failed", e)
        }
    };
    ApiError::new(status, code, e.to_string())
}

/// Checks a signed request: a member's signature, the route's message type, a fresh
/// `created_at`, never seen before. Returns the member id and the message.
fn authenticate(
    state: &NodeState,
    headers: &HeaderMap,
    body: &[u8],
    msg_type: &str,
) -> Result<(String, GovMessage), ApiError> {
    let is_cose = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/cose"));
    if !is_cose {
        return Err(ApiError::unauthorized(
            "state-changing /gov requests must be COSE Sign1 messages signed by a member (content-type: application/cose)",
        ));
    }
    let unverified = parse_gov_sign1(body)
        .map_err(|e| ApiError::bad_request("InvalidCoseSign1", e.to_string()))?;
    let Some(pem) = state.store.get(MEMBERS_CERTS, unverified.kid.as_bytes()) else {
        return Err(ApiError::unauthorized(format!(
            "kid {} is not a member of the consortium",
            unverified.kid
        )));
    };
    let cert = Certificate::from_pem(&String::from_utf8_lossy(&pem))
        .map_err(|e| ApiError::internal("a stored member certificate is unreadable", e))?;
    let msg = verify_gov_sign1(body, &cert).map_err(|e| {
        ApiError::unauthorized(format!("the request's signature does not verify: {e}"))
    })?;
    if msg.msg_type != msg_type {
        return Err(ApiError::bad_request(
            "InvalidCoseSign1",
            format!(
                "ccf.gov.msg.type is {:?}; this route takes {msg_type:?}",
                msg.msg_type
            ),
        ));
    }
    let now = now_secs();
    if msg.created_at + CREATED_AT_WINDOW_SECS < now
        || msg.created_at > now + CREATED_AT_WINDOW_SECS
    {
        return Err(ApiError::bad_request(
            "StaleCreatedAt",
            format!(
                "ccf.gov.msg.created_at {} is more than {CREATED_AT_WINDOW_SECS} s from the service's clock ({now})",
                msg.created_at
            ),
        ));
    }
    Ok((msg.kid.clone(), msg))
}

/// Records the request's digest (refusing a replay) and drops digests that left
/// the window, in the governance transaction.
fn remember(tx: &mut Tx, state: &NodeState, msg: &GovMessage) -> Result<(), ApiError> {
    let key = msg.signed_digest.to_hex();
    if tx.get(COSE_RECENT, key.as_bytes()).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "RequestReplayed",
            "this signed request was already submitted",
        ));
    }
    let horizon = now_secs().saturating_sub(2 * CREATED_AT_WINDOW_SECS);
    for (k, v) in state.store.entries(COSE_RECENT) {
        let at = std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        if at < horizon {
            tx.remove(COSE_RECENT, &k);
        }
    }
    tx.put(
        COSE_RECENT,
        key.as_bytes(),
        msg.created_at.to_string().as_bytes(),
    );
    Ok(())
}

/// Runs a governance step as one transaction on the primary (backups forward).
fn run<T>(
    state: &NodeState,
    what: &str,
    msg: &GovMessage,
    f: impl FnOnce(&mut Tx, &covenant_kv::Store, u64) -> Result<T, ApiError>,
) -> Result<(TxId, T), ApiError> {
    let out = state.write(what, |e| {
        let mut tx = e.begin();
        let store = e.store().clone();
        let seqno = e.last_seqno() + 1;
        let r = remember(&mut tx, state, msg)
            .and_then(|()| f(&mut tx, &store, seqno))
            .and_then(|v| settle_nodes(state, e, &mut tx).map(|staged| (v, staged)));
        match r {
            Ok((v, staged)) => e.commit_tx(tx, None).map(|txid| {
                if let (Some(target), Some(net)) = (staged, &state.network) {
                    net.replica.note_membership(txid.seqno.0, target);
                }
                Ok((txid, v))
            }),
            Err(err) => Ok(Err(err)),
        }
    })?;
    if let Err(e) = &out {
        if e.code == PRIMARY_RETIRING {
            if let Some(net) = &state.network {
                net.replica.transfer_leadership();
            }
        }
    }
    out
}

/// Error code of a governance request that would retire the primary: it hands over
/// first (the request is answered 503; retry it on the new primary).
const PRIMARY_RETIRING: &str = "PrimaryRetiring";

/// Carries out what accepted proposals decided about nodes, in the same
/// transaction: a row the constitution set Trusted (`transition_node_to_trusted`)
/// gets a certificate endorsed by the service and a Raft id, and the node joins the
/// configuration as a learner; a row set Retired (`remove_node`) leaves it. Returns
/// the configuration staged, to record once the transaction has its seqno.
fn settle_nodes(
    state: &NodeState,
    engine: &mut covenant_engine::Engine,
    tx: &mut Tx,
) -> Result<Option<covenant_consensus::Membership>, ApiError> {
    use crate::network::{NodeInfo, NODES_INFO, STATUS_RETIRED, STATUS_TRUSTED};
    let Some(net) = state.network.as_deref() else {
        return Ok(None);
    };
    let Some(rows) = tx.write_set().maps.get(NODES_INFO).cloned() else {
        return Ok(None);
    };
    let (mut target, _) = net.replica.configuration();
    let before = target.clone();
    for (key, value) in rows {
        let Some(value) = value else { continue };
        let Ok(row) = serde_json::from_slice::<NodeInfo>(&value) else {
            continue;
        };
        if row.status == STATUS_TRUSTED && row.raft_id == 0 {
            let trusted = crate::join::trusted_row(state, net, &row)?;
            target.learners.insert(trusted.raft_id);
            let v = serde_json::to_vec(&trusted)
                .map_err(|e| ApiError::internal("encoding the node row failed", e))?;
            tx.put(NODES_INFO, &key, &v);
            engine.request_snapshot();
        } else if row.status == STATUS_RETIRED && row.raft_id != 0 && target.contains(row.raft_id) {
            if row.raft_id == net.config.node_id {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    PRIMARY_RETIRING,
                    "the proposal retires this node, the primary: it hands over to another node first; retry",
                ));
            }
            target.voters.remove(&row.raft_id);
            target.learners.remove(&row.raft_id);
        }
    }
    if target == before {
        return Ok(None);
    }
    net.replica
        .stage_membership(tx, &target)
        .map_err(|e| crate::join::consensus_error("changing the configuration failed", e))?;
    Ok(Some(target))
}

fn info_json(id: &str, info: &ProposalInfo) -> Value {
    let mut v = serde_json::to_value(info).unwrap_or_default();
    v["proposal_id"] = json!(id);
    v["ballot_count"] = json!(info.ballots.len());
    v
}

/// `POST /gov/proposals`: a member's proposal (`{"actions":[{"name","args"}]}`).
pub async fn propose(
    State(state): State<NodeState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (member, msg) = authenticate(&state, &headers, &body, "proposal")?;
    let gov = Governance::default();
    let (txid, (id, info)) = run(
        &state,
        "recording the proposal failed",
        &msg,
        |tx, store, seqno| {
            gov.propose(tx, store, &member, &msg.payload, seqno)
                .map_err(gov_error)
        },
    )?;
    Ok(with_txid(Some(txid), Json(info_json(&id, &info))))
}

/// `POST /gov/proposals/{id}/ballots`: `{"ballot": "export function vote(proposal, proposerId) {...}"}`.
pub async fn ballot(
    State(state): State<NodeState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (member, msg) = authenticate(&state, &headers, &body, "ballot")?;
    check_proposal_header(&msg, &id)?;
    let script = payload_text(&msg, "ballot", "<javascript>")?;
    let gov = Governance::default();
    let (txid, info) = run(
        &state,
        "recording the ballot failed",
        &msg,
        |tx, store, _| {
            gov.vote(tx, store, &member, &id, &script)
                .map_err(gov_error)
        },
    )?;
    Ok(with_txid(Some(txid), Json(info_json(&id, &info))))
}

/// `POST /gov/proposals/{id}/withdraw`: the proposer takes an Open proposal back.
pub async fn withdraw(
    State(state): State<NodeState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (member, msg) = authenticate(&state, &headers, &body, "withdrawal")?;
    check_proposal_header(&msg, &id)?;
    let gov = Governance::default();
    let (txid, info) = run(
        &state,
        "withdrawing the proposal failed",
        &msg,
        |tx, _, _| gov.withdraw(tx, &member, &id).map_err(gov_error),
    )?;
    Ok(with_txid(Some(txid), Json(info_json(&id, &info))))
}

/// The text field `field` of a signed JSON payload `{"<field>": "<text>"}`.
fn payload_text(msg: &GovMessage, field: &str, shape: &str) -> Result<String, ApiError> {
    let refused = || {
        ApiError::bad_request(
            "InvalidInput",
            format!("the body must be {{\"{field}\": \"{shape}\"}}"),
        )
    };
    let payload: Value = serde_json::from_slice(&msg.payload).map_err(|_| refused())?;
    payload[field]
        .as_str()
        .map(str::to_string)
        .ok_or_else(refused)
}

fn check_proposal_header(msg: &GovMessage, id: &str) -> Result<(), ApiError> {
    if msg.proposal_id.as_deref() != Some(id) {
        return Err(ApiError::bad_request(
            "InvalidCoseSign1",
            format!(
                "ccf.gov.msg.proposal_id {:?} does not name proposal {id}",
                msg.proposal_id
            ),
        ));
    }
    Ok(())
}

/// `GET /gov/proposals/{id}`: the proposal's state, ballots and outcome.
pub async fn get_proposal(
    State(state): State<NodeState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (_, info) =
        covenant_governance::proposal(&mut state.store.begin(), &id).map_err(gov_error)?;
    Ok(Json(info_json(&id, &info)).into_response())
}

/// `?state=` of `GET /gov/proposals`.
#[derive(Debug, serde::Deserialize)]
pub struct ProposalFilter {
    state: Option<String>,
}

/// `GET /gov/proposals[?state=Open]`: every proposal (or those in one state), oldest
/// first, each as `GET /gov/proposals/{id}` shows it plus the seqno it was made at.
pub async fn list_proposals(
    State(state): State<NodeState>,
    axum::extract::Query(filter): axum::extract::Query<ProposalFilter>,
) -> Result<Response, ApiError> {
    let wanted = match filter.state.as_deref() {
        None => None,
        Some(s) => Some(
            serde_json::from_value::<covenant_governance::ProposalState>(json!(s)).map_err(
                |_| {
                    ApiError::bad_request(
                        "InvalidInput",
                        format!("state {s:?} is not one of Open, Accepted, Withdrawn, Rejected, Failed, Dropped"),
                    )
                },
            )?,
        ),
    };
    let mut out = Vec::new();
    for (key, raw) in state.store.entries(covenant_governance::PROPOSALS_INFO) {
        let id = String::from_utf8_lossy(&key).into_owned();
        let info: ProposalInfo = serde_json::from_slice(&raw)
            .map_err(|e| ApiError::internal("a proposal's info is corrupt", e))?;
        if wanted.is_some_and(|w| w != info.state) {
            continue;
        }
        let seqno = state
            .store
            .version_of(covenant_governance::PROPOSALS, &key)
            .unwrap_or(0);
        let mut v = info_json(&id, &info);
        v["seqno"] = json!(seqno);
        out.push((seqno, v));
    }
    out.sort_by_key(|(seqno, _)| *seqno);
    let proposals: Vec<Value> = out.into_iter().map(|(_, v)| v).collect();
    Ok(Json(json!({ "proposals": proposals })).into_response())
}

/// `GET /gov/proposals/{id}/actions`: the proposal as submitted.
pub async fn get_proposal_actions(
    State(state): State<NodeState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (body, _) =
        covenant_governance::proposal(&mut state.store.begin(), &id).map_err(gov_error)?;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    Ok(Json(v).into_response())
}

/// `GET /gov/members`: `{member_id: {cert, member_data, public_encryption_key, status}}`.
pub async fn members(State(state): State<NodeState>) -> Json<Value> {
    let mut out = serde_json::Map::new();
    for (k, cert) in state.store.entries(MEMBERS_CERTS) {
        let id = String::from_utf8_lossy(&k).into_owned();
        let info: Value = state
            .store
            .get(MEMBERS_INFO, &k)
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or(Value::Null);
        let enc = state
            .store
            .get(MEMBERS_ENCRYPTION_KEYS, &k)
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        out.insert(
            id,
            json!({
                "cert": String::from_utf8_lossy(&cert),
                "member_data": info["member_data"],
                "public_encryption_key": enc,
                "status": info["status"],
            }),
        );
    }
    Json(Value::Object(out))
}

/// `GET /gov/constitution`: the constitution's JavaScript.
pub async fn constitution(State(state): State<NodeState>) -> Result<Response, ApiError> {
    let Some(script) = state.store.get(CONSTITUTION, CONSTITUTION_KEY) else {
        return Err(ApiError::not_found(
            "ResourceNotFound",
            "no constitution is set",
        ));
    };
    let mut r = (StatusCode::OK, script).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/javascript"),
    );
    Ok(r)
}

/// The digest a member acks to become Active: the root of the latest signature.
fn state_digest(state: &NodeState) -> String {
    state
        .store
        .get(SIGNATURES_MAP, SIGNATURE_KEY)
        .and_then(|v| serde_json::from_slice::<Value>(&v).ok())
        .and_then(|v| v["root"].as_str().map(str::to_string))
        .unwrap_or_else(|| "0".repeat(64))
}

/// `POST /gov/ack/update_state_digest` (`state_digest`): the digest to ack.
pub async fn update_state_digest(
    State(state): State<NodeState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (member, msg) = authenticate(&state, &headers, &body, "state_digest")?;
    let digest = state_digest(&state);
    let gov = Governance::default();
    let d = digest.clone();
    let (txid, ()) = run(
        &state,
        "recording the state digest failed",
        &msg,
        |tx, _, _| gov.update_state_digest(tx, &member, &d).map_err(gov_error),
    )?;
    Ok(with_txid(Some(txid), Json(json!({"state_digest": digest}))))
}

/// `POST /gov/ack` (`ack`, body `{"state_digest"}`): the member becomes Active.
pub async fn ack(
    State(state): State<NodeState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (member, msg) = authenticate(&state, &headers, &body, "ack")?;
    let digest = payload_text(&msg, "state_digest", "<hex>")?;
    let gov = Governance::default();
    let (txid, info) = run(&state, "recording the ack failed", &msg, |tx, _, _| {
        gov.ack(tx, &member, &digest).map_err(gov_error)
    })?;
    Ok(with_txid(
        Some(txid),
        Json(json!({"member_id": member, "status": info.status})),
    ))
}
