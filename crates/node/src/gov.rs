//! The `/gov` API (SPEC §5): members propose, vote, withdraw and ack; the
//! constitution decides (`covenant-governance`). These are CCF's classic routes
//! (`/gov/proposals`, `/gov/ack`, ...); the `gov_api` module serves the same
//! operations under CCF's current, api-versioned routes.
//!
//! A state-changing request proves which member sent it in one of three ways
//! ([`Proof`]): a COSE Sign1 envelope (`application/cose`) whose `kid` names the
//! member, its `ccf.gov.msg.type` the route's, its `created_at` within
//! [`CREATED_AT_WINDOW_SECS`] of the node's clock; on the classic routes also an
//! HTTP signature (`scurl.sh`, [`crate::http_sig`]); and for
//! `update_state_digest` only, the member's TLS client certificate. A signed
//! request is never accepted twice: its signed digest is kept in
//! `public:ccf.gov.cose_recent` for the window (a COSE request), or for good in
//! `public:ccf.gov.http_signatures_seen` (an HTTP signature, which carries no time;
//! see [`covenant_service::Service::govern`]). The request and the governance
//! transaction are one ledger transaction, so the history is public.

use covenant_types::SeqNo;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use covenant_crypto::{parse_gov_sign1, verify_gov_sign1, Certificate, GovMessage};
use covenant_governance::{
    GovError, Governance, ProposalInfo, CONSTITUTION, CONSTITUTION_KEY, MEMBERS_CERTS,
    MEMBERS_ENCRYPTION_KEYS, MEMBERS_INFO,
};
use covenant_kv::Tx;
use covenant_receipt::{SIGNATURES_MAP, SIGNATURE_KEY};
use covenant_service::{GovernError, Replay};
use covenant_types::{Digest32, TxId};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::http::with_txid;
use crate::server::PeerCert;
use crate::state::NodeState;

use covenant_service::CREATED_AT_WINDOW_SECS;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn gov_error(e: GovError) -> ApiError {
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

/// How a member proved that a governance request is theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// A COSE Sign1 envelope (CCF 3 on; the only form of the current API).
    Cose,
    /// An HTTP signature (`scurl.sh` of CCF 1–2): classic routes only.
    HttpSignature,
    /// The member's TLS client certificate: `update_state_digest` only, as in CCF.
    Certificate,
}

/// A governance request as authentication needs it: what a signature may cover
/// (method, target, headers, body) and the client certificate of the connection.
pub struct GovRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// SHA-256 of the client certificate's DER, if one was shown.
    pub peer: Option<Digest32>,
    pub body: axum::body::Bytes,
}

impl FromRequest<NodeState> for GovRequest {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &NodeState) -> Result<Self, ApiError> {
        let method = req.method().clone();
        let uri = req.uri().clone();
        let headers = req.headers().clone();
        let peer = req
            .extensions()
            .get::<PeerCert>()
            .and_then(|p| p.0.as_ref().map(|c| c.1));
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(crate::error::body_error)?;
        Ok(GovRequest {
            method,
            uri,
            headers,
            peer,
            body,
        })
    }
}

/// A member's request, authenticated.
pub struct Signed {
    pub member: covenant_types::MemberId,
    pub msg: GovMessage,
    pub proof: Proof,
}

/// Which proofs a route takes besides COSE Sign1.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Accepts {
    pub http_signature: bool,
    pub certificate: bool,
}

impl Accepts {
    /// The current API: COSE Sign1 only.
    pub const COSE: Accepts = Accepts {
        http_signature: false,
        certificate: false,
    };
    /// A classic route.
    pub const CLASSIC: Accepts = Accepts {
        http_signature: true,
        certificate: false,
    };
    /// Classic `update_state_digest`, which CCF also served to a member's TLS
    /// certificate (the Managed CCF guide's first step is that plain curl).
    pub const CLASSIC_OR_CERTIFICATE: Accepts = Accepts {
        http_signature: true,
        certificate: true,
    };
}

/// Checks a member's request for the route whose message type is `msg_type`
/// (`proposal_id`: the proposal the route's path names, for a ballot or a
/// withdrawal). Returns the member and the message.
pub(crate) fn authenticate(
    state: &NodeState,
    req: &GovRequest,
    msg_type: &str,
    proposal_id: Option<&str>,
    accepts: Accepts,
) -> Result<Signed, ApiError> {
    let is_cose = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/cose"));
    if is_cose {
        return authenticate_cose(state, &req.body, msg_type);
    }
    if accepts.http_signature && crate::http_sig::is_signed(&req.headers) {
        return authenticate_http_signature(state, req, msg_type, proposal_id);
    }
    if accepts.certificate {
        if let Some(id) = req.peer.map(|d| d.to_hex()) {
            if state.store.get(MEMBERS_CERTS, id.as_bytes()).is_some() {
                return Ok(Signed {
                    msg: GovMessage {
                        msg_type: msg_type.to_string(),
                        created_at: now_secs(),
                        proposal_id: None,
                        kid: id.clone(),
                        payload: req.body.to_vec(),
                        envelope_digest: covenant_crypto::sha256(&req.body),
                        signed_digest: covenant_crypto::sha256(&req.body),
                    },
                    member: covenant_types::MemberId::new(id),
                    proof: Proof::Certificate,
                });
            }
        }
    }
    let mut forms =
        vec!["a COSE Sign1 message signed by a member (content-type: application/cose)"];
    if accepts.http_signature {
        forms.push("an HTTP signature (Authorization: Signature ..., as scurl.sh sends)");
    }
    if accepts.certificate {
        forms.push("a member's TLS client certificate");
    }
    Err(ApiError::unauthorized(format!(
        "this /gov request must be {}",
        forms.join(", or ")
    )))
}

fn authenticate_cose(state: &NodeState, body: &[u8], msg_type: &str) -> Result<Signed, ApiError> {
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
    Ok(Signed {
        member: covenant_types::MemberId::new(msg.kid.clone()),
        msg,
        proof: Proof::Cose,
    })
}

fn authenticate_http_signature(
    state: &NodeState,
    req: &GovRequest,
    msg_type: &str,
    proposal_id: Option<&str>,
) -> Result<Signed, ApiError> {
    use crate::http_sig;
    let value = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let refused = |e: http_sig::HttpSigError| ApiError::unauthorized(e.to_string());
    let sig = http_sig::parse(value).map_err(refused)?;
    // The signer is named by its key id; members are few.
    let signer = state
        .store
        .entries(MEMBERS_CERTS)
        .into_iter()
        .find(|(id, pem)| {
            http_sig::key_id_names(
                &sig.key_id,
                &String::from_utf8_lossy(id),
                &String::from_utf8_lossy(pem),
            )
        });
    let Some((id, pem)) = signer else {
        return Err(ApiError::unauthorized(format!(
            "keyId {} names no member (it is the SHA-256 of a member's certificate file, or a member id)",
            sig.key_id
        )));
    };
    let member = String::from_utf8_lossy(&id).into_owned();
    let cert = Certificate::from_pem(&String::from_utf8_lossy(&pem))
        .map_err(|e| ApiError::internal("a stored member certificate is unreadable", e))?;
    let target = req
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or_else(|| req.uri.path());
    let signing =
        http_sig::signing_string(&sig, req.method.as_str(), target, &req.headers, &req.body)
            .map_err(refused)?;
    http_sig::verify(&sig, &signing, &cert).map_err(refused)?;
    Ok(Signed {
        msg: GovMessage {
            msg_type: msg_type.to_string(),
            created_at: now_secs(),
            proposal_id: proposal_id.map(str::to_string),
            kid: member.clone(),
            payload: req.body.to_vec(),
            envelope_digest: covenant_crypto::sha256(&req.body),
            signed_digest: http_sig::replay_key(&member, &signing),
        },
        member: covenant_types::MemberId::new(member),
        proof: Proof::HttpSignature,
    })
}

pub(crate) fn info_json(id: &str, info: &ProposalInfo) -> Value {
    let mut v = serde_json::to_value(info).unwrap_or_default();
    v["proposal_id"] = json!(id);
    v["ballot_count"] = json!(info.ballots.len());
    v
}

impl Signed {
    /// How the service keeps this request from being replayed.
    fn replay(&self) -> Replay {
        match self.proof {
            Proof::Certificate => Replay::Certificate,
            Proof::Cose => Replay::Cose {
                digest: self.msg.signed_digest,
                created_at: self.msg.created_at,
            },
            Proof::HttpSignature => Replay::HttpSignature {
                key: self.msg.signed_digest,
            },
        }
    }
}

/// One governance step through the service ([`covenant_service::Service::govern`]);
/// `f` is the step's governance call, given the signed request.
async fn step<T: Send + 'static>(
    state: &NodeState,
    what: &'static str,
    signed: Signed,
    f: impl FnOnce(&Governance, &mut Tx, &covenant_kv::Store, SeqNo, &Signed) -> Result<T, GovError>
        + Send
        + 'static,
) -> Result<(TxId, T), ApiError> {
    let cert = Some(state.service_cert_pem.to_string());
    let replay = signed.replay();
    state
        .service
        .govern(cert, replay, move |gov, tx, store, seqno| {
            f(gov, tx, store, seqno, &signed)
        })
        .await
        .map_err(|e| govern_error(what, e))
}

/// What a client is told of a governance step that did not happen.
fn govern_error(what: &'static str, e: GovernError) -> ApiError {
    match e {
        GovernError::Replayed(Replay::HttpSignature { .. }) => ApiError::new(
            StatusCode::CONFLICT,
            "RequestReplayed",
            "an identical HTTP-signed request was already submitted; HTTP signatures carry no time, so an identical request is refused for good (change the body, or sign with COSE)",
        ),
        GovernError::Replayed(_) => ApiError::new(
            StatusCode::CONFLICT,
            "RequestReplayed",
            "this signed request was already submitted",
        ),
        GovernError::Gov(e) => gov_error(e),
        GovernError::Admission(e) => crate::join::admission_error(what, e),
        GovernError::Service(e) => ApiError::service(what, e),
        GovernError::Recovery(e) => recovery_error(e),
        GovernError::Rekey(covenant_engine::EngineError::Rekey(why)) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "RekeyRefused",
            format!("a new ledger secret cannot be handed out: {why}"),
        ),
        GovernError::Rekey(e) => ApiError::internal("the rekey failed", e),
    }
}

/// A governance step refused because of the recovery shares it would need.
fn recovery_error(e: covenant_recovery::RecoveryError) -> ApiError {
    use covenant_recovery::RecoveryError as R;
    let code = match &e {
        R::Threshold { .. } => "InvalidRecoveryThreshold",
        R::MemberKey(_) => "InvalidEncryptionKey",
        R::NotOpen => "ServiceNotOpen",
        R::MalformedShare(_) | R::NotIssuedTo(_) | R::WrongShares | R::Random | R::Crypto(_) => {
            return ApiError::internal("issuing recovery shares failed", e)
        }
    };
    ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
}

/// Records a member's proposal: the transaction, the proposal id and its info.
pub(crate) async fn do_propose(
    state: &NodeState,
    signed: Signed,
) -> Result<(TxId, (String, ProposalInfo)), ApiError> {
    let what = "recording the proposal failed";
    step(state, what, signed, |gov, tx, store, seqno, s| {
        gov.propose(tx, store, &s.member, &s.msg.payload, seqno)
    })
    .await
}

/// Records a member's ballot on proposal `id` (`{"ballot": "<javascript>"}`).
pub(crate) async fn do_ballot(
    state: &NodeState,
    signed: Signed,
    id: String,
) -> Result<(TxId, ProposalInfo), ApiError> {
    check_proposal_header(&signed.msg, &id)?;
    let script = payload_text(&signed.msg, "ballot", "<javascript>")?;
    let what = "recording the ballot failed";
    // Every ballot of the proposal runs first outside the locks; the step uses
    // the results where nothing they read changed meanwhile.
    let cert = Some(state.service_cert_pem.to_string());
    let replay = signed.replay();
    let (member, pid, ballot) = (signed.member.clone(), id.clone(), script.clone());
    state
        .service
        .govern_prepared(
            cert,
            replay,
            move |gov, store| gov.prepare_ballots(store, &pid, Some((&member, &ballot))),
            move |gov, tx, store, _, prepared| {
                if let Some(p) = prepared {
                    gov.use_prepared(p);
                }
                gov.vote(tx, store, &signed.member, &id, &script)
            },
        )
        .await
        .map_err(|e| govern_error(what, e))
}

/// The proposer takes proposal `id` back.
pub(crate) async fn do_withdraw(
    state: &NodeState,
    signed: Signed,
    id: String,
) -> Result<(TxId, ProposalInfo), ApiError> {
    check_proposal_header(&signed.msg, &id)?;
    let what = "withdrawing the proposal failed";
    step(state, what, signed, move |gov, tx, _, _, s| {
        gov.withdraw(tx, &s.member, &id)
    })
    .await
}

/// Gives the member the digest to ack (the root of the latest signature).
pub(crate) async fn do_update_state_digest(
    state: &NodeState,
    signed: Signed,
) -> Result<(TxId, String), ApiError> {
    let digest = state_digest(state)?;
    let d = digest.clone();
    let what = "recording the state digest failed";
    let (txid, ()) = step(state, what, signed, move |gov, tx, _, _, s| {
        gov.update_state_digest(tx, &s.member, &d)
    })
    .await?;
    Ok((txid, digest))
}

/// The member acks `digest` and becomes Active.
pub(crate) async fn do_ack(
    state: &NodeState,
    signed: Signed,
    digest: String,
) -> Result<(TxId, covenant_governance::MemberInfo), ApiError> {
    let what = "recording the ack failed";
    step(state, what, signed, move |gov, tx, _, _, s| {
        gov.ack(tx, &s.member, &digest)
    })
    .await
}

/// `POST /gov/proposals`: a member's proposal (`{"actions":[{"name","args"}]}`).
pub async fn propose(
    State(state): State<NodeState>,
    req: GovRequest,
) -> Result<Response, ApiError> {
    let signed = authenticate(&state, &req, "proposal", None, Accepts::CLASSIC)?;
    let (txid, (id, info)) = do_propose(&state, signed).await?;
    Ok(with_txid(Some(txid), Json(info_json(&id, &info))))
}

/// `POST /gov/proposals/{id}/ballots`: `{"ballot": "export function vote(proposal, proposerId) {...}"}`.
pub async fn ballot(
    State(state): State<NodeState>,
    Path(id): Path<String>,
    req: GovRequest,
) -> Result<Response, ApiError> {
    let signed = authenticate(&state, &req, "ballot", Some(&id), Accepts::CLASSIC)?;
    let (txid, info) = do_ballot(&state, signed, id.clone()).await?;
    Ok(with_txid(Some(txid), Json(info_json(&id, &info))))
}

/// `POST /gov/proposals/{id}/withdraw`: the proposer takes an Open proposal back.
pub async fn withdraw(
    State(state): State<NodeState>,
    Path(id): Path<String>,
    req: GovRequest,
) -> Result<Response, ApiError> {
    let signed = authenticate(&state, &req, "withdrawal", Some(&id), Accepts::CLASSIC)?;
    let (txid, info) = do_withdraw(&state, signed, id.clone()).await?;
    Ok(with_txid(Some(txid), Json(info_json(&id, &info))))
}

/// The text field `field` of a signed JSON payload `{"<field>": "<text>"}`.
pub(crate) fn payload_text(msg: &GovMessage, field: &str, shape: &str) -> Result<String, ApiError> {
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
            .unwrap_or_default();
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

/// The digest a member acks to become Active: the root of the latest signature
/// (503 before the first one, as in CCF: try again in a moment).
pub(crate) fn state_digest(state: &NodeState) -> Result<String, ApiError> {
    state
        .store
        .get(SIGNATURES_MAP, SIGNATURE_KEY)
        .and_then(|v| serde_json::from_slice::<Value>(&v).ok())
        .and_then(|v| v["root"].as_str().map(str::to_string))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NoSignatureYet",
                "Service has no signatures to ack yet - try again soon.",
            )
        })
}

/// `POST /gov/ack/update_state_digest` (`state_digest`): the digest to ack.
pub async fn update_state_digest(
    State(state): State<NodeState>,
    req: GovRequest,
) -> Result<Response, ApiError> {
    let signed = authenticate(
        &state,
        &req,
        "state_digest",
        None,
        Accepts::CLASSIC_OR_CERTIFICATE,
    )?;
    let (txid, digest) = do_update_state_digest(&state, signed).await?;
    Ok(with_txid(Some(txid), Json(json!({"state_digest": digest}))))
}

/// `POST /gov/ack` (`ack`, body `{"state_digest"}`): the member becomes Active.
pub async fn ack(State(state): State<NodeState>, req: GovRequest) -> Result<Response, ApiError> {
    let signed = authenticate(&state, &req, "ack", None, Accepts::CLASSIC)?;
    let digest = payload_text(&signed.msg, "state_digest", "<hex>")?;
    let member = signed.member.clone();
    let (txid, info) = do_ack(&state, signed, digest).await?;
    Ok(with_txid(
        Some(txid),
        Json(json!({"member_id": member, "status": info.status})),
    ))
}

/// `GET /gov/proposals/{id}/ballots/{member_id}`: `{"ballot": "<javascript>"}`.
pub async fn get_ballot(
    State(state): State<NodeState>,
    Path((id, member)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let script = ballot_of(&state, &id, &member)?;
    Ok(Json(json!({ "ballot": script })).into_response())
}

/// The ballot `member` cast on proposal `id`.
pub(crate) fn ballot_of(state: &NodeState, id: &str, member: &str) -> Result<String, ApiError> {
    let (_, info) =
        covenant_governance::proposal(&mut state.store.begin(), id).map_err(gov_error)?;
    info.ballots.get(member).cloned().ok_or_else(|| {
        ApiError::not_found(
            "VoteNotFound",
            format!("member {member} has not voted for proposal {id}"),
        )
    })
}
