//! JavaScript app endpoints (SPEC §6) on a node: requests under `/app` that match an
//! endpoint of the deployed bundle ([`covenant_app`]) run its handler, authenticated
//! by the endpoint's `authn_policies`; the rest fall through to the built-in routes.
//!
//! A `readwrite` handler runs as a write (on the primary; its writes form one
//! transaction, applied only for a 2xx answer unless `ccf.rpc.setApplyWrites` says
//! otherwise, with the `ccf.rpc.setClaimsDigest` digest in its Merkle leaf);
//! `readonly` and `historical` ones read the current state and write nothing. Handlers run on a blocking thread
//! under the script limits; an exception is a 500 whose message names the failure.

use covenant_types::SeqNo;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use covenant_app::{
    App, AppError, AppRequest, AppResponse, ConsensusView, HistoricalTx, History, Host, Mode,
    Route, RuntimeOptions,
};
use covenant_engine::TxStatus;
use covenant_engine::{Engine, EngineError};
use covenant_governance::{MEMBERS_CERTS, MEMBERS_INFO};
use covenant_service::scripts::at_normal_priority;
use covenant_service::Executed;
use covenant_types::TxId;
use serde_json::{json, Value};

use crate::auth::{USERS_CERTS, USERS_INFO};
use crate::error::ApiError;
use crate::server::PeerCert;
use crate::state::NodeState;

/// The request's head and its body (empty while policies that need no body run
/// first; `user_cose_sign1` authenticates the body itself).
struct Incoming<'a> {
    head: &'a axum::http::request::Parts,
    body: &'a [u8],
}

impl Incoming<'_> {
    fn headers(&self) -> &axum::http::HeaderMap {
        &self.head.headers
    }
    fn extensions(&self) -> &axum::http::Extensions {
        &self.head.extensions
    }
}

/// The client's certificate (PEM): the TLS peer's, or the one a forwarding backup
/// received (see [`crate::edge`]); `null` without one.
fn peer_pem(req: &Incoming<'_>) -> Value {
    req.extensions()
        .get::<PeerCert>()
        .and_then(|p| p.0.as_ref().map(|c| Value::String(c.0.to_pem())))
        .unwrap_or(Value::Null)
}

fn text(store: &covenant_kv::Store, map: &str, key: &str) -> Option<String> {
    store
        .get(map, key.as_bytes())
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

fn json_row(store: &covenant_kv::Store, map: &str, key: &str) -> Value {
    store
        .get(map, key.as_bytes())
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or(Value::Null)
}

/// The caller object of one policy, or why it does not apply.
fn policy_caller(state: &NodeState, req: &Incoming<'_>, policy: &Value) -> Result<Value, String> {
    if let Some(all) = policy.get("all_of").and_then(Value::as_array) {
        let mut out = serde_json::Map::new();
        for p in all {
            let c = policy_caller(state, req, p)?;
            let name = p.as_str().unwrap_or("all_of").to_string();
            out.insert(name, c);
        }
        out.insert("policy".into(), json!(all));
        return Ok(Value::Object(out));
    }
    let name = policy
        .as_str()
        .ok_or("a policy must be a name or {all_of}")?;
    let store = &state.store;
    match name {
        "no_auth" => Ok(json!({"policy": "no_auth"})),
        "user_cert" => {
            let user =
                crate::auth::certificate_user(req.extensions()).ok_or("no client certificate")?;
            // A user added by governance has its certificate recorded; one added
            // through the ACL users API (by fingerprint) only its roles. Either
            // way the app sees CCF's id (lower-case hex SHA-256 of the DER).
            let key = user.row_key(store);
            let info = json_row(store, USERS_INFO, &key);
            let cert = match text(store, USERS_CERTS, &key) {
                Some(pem) => Value::String(pem),
                None if !info.is_null() => peer_pem(req),
                None => return Err("the certificate is not a user's".into()),
            };
            Ok(
                json!({"policy": "user_cert", "id": user.ccf(), "cert": cert, "data": info["user_data"]}),
            )
        }
        "member_cert" => {
            let user =
                crate::auth::certificate_user(req.extensions()).ok_or("no client certificate")?;
            // Member ids are the same SHA-256, in lower-case hex.
            let id = user.ccf();
            let cert =
                text(store, MEMBERS_CERTS, &id).ok_or("the certificate is not a member's")?;
            let info = json_row(store, MEMBERS_INFO, &id);
            Ok(
                json!({"policy": "member_cert", "id": id, "cert": cert, "data": info["member_data"]}),
            )
        }
        "any_cert" => {
            let pem = peer_pem(req);
            if pem.is_null() {
                return Err("no client certificate".into());
            }
            Ok(json!({"policy": "any_cert", "cert": pem}))
        }
        "jwt" => {
            let token = crate::http::bearer_token(req.headers())
                .map_err(|e| e.message)?
                .ok_or("no bearer token")?;
            let id = state
                .jwt
                .authenticate(token, store)
                .map_err(|e| e.message.clone())?
                .id;
            // Verified above; now only read its parts.
            let part = |i: usize| -> Value {
                token
                    .split('.')
                    .nth(i)
                    .and_then(|p| {
                        base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .decode(p)
                            .ok()
                    })
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or(Value::Null)
            };
            let payload = part(1);
            Ok(json!({"policy": "jwt", "id": id,
                "jwt": {"keyIssuer": payload["iss"], "header": part(0), "payload": payload}}))
        }
        "user_cose_sign1" => {
            // kid is the user's id in CCF's spelling.
            let kid = covenant_crypto::user_sign1_kid(req.body).map_err(|e| e.to_string())?;
            let user = crate::auth::ccf_user_digest(&kid)
                .map(crate::auth::UserId::Certificate)
                .ok_or("kid is not a certificate user's id (64 hex digits)")?;
            let key = user.row_key(store);
            let pem = text(store, USERS_CERTS, &key)
                .ok_or("kid names no user whose certificate is recorded")?;
            let cert = covenant_crypto::Certificate::from_pem(&pem).map_err(|e| e.to_string())?;
            let msg =
                covenant_crypto::verify_user_sign1(req.body, &cert).map_err(|e| e.to_string())?;
            let info = json_row(store, USERS_INFO, &key);
            Ok(
                json!({"policy": "user_cose_sign1", "id": user.ccf(), "cert": pem, "data": info["user_data"],
                      "cose": {"content": base64::engine::general_purpose::STANDARD.encode(&msg.content),
                               "protected_header": {"msg_type": msg.msg_type, "msg_created_at": msg.created_at}}}),
            )
        }
        other => Err(format!("unknown policy {other}")),
    }
}

/// The caller for the endpoint's policies: the first that applies (CCF's rule);
/// `null` for an endpoint without policies.
fn caller(state: &NodeState, req: &Incoming<'_>, route: &Route) -> Result<Value, ApiError> {
    let policies = &route.properties.authn_policies;
    if policies.is_empty() {
        return Ok(Value::Null);
    }
    let mut why = Vec::new();
    for p in policies {
        match policy_caller(state, req, p) {
            Ok(c) => return Ok(c),
            Err(e) => why.push(format!("{p}: {e}")),
        }
    }
    Err(ApiError::unauthorized(format!(
        "no authentication policy of this endpoint accepted the request ({})",
        why.join("; ")
    )))
}

/// An exception's message, followed by its stack when `with_stack` and it has one.
pub(crate) fn exception_text(message: String, stack: Option<String>, with_stack: bool) -> String {
    match stack {
        Some(s) if with_stack && !s.is_empty() => format!("{message}\n{s}"),
        _ => message,
    }
}

/// A failed handler's 500. An exception's message and stack reach the log and the
/// client only as the JS runtime options allow (CCF's defaults: log, don't return);
/// limits hit and malformed responses are always named.
fn script_error(e: AppError, opts: &RuntimeOptions) -> ApiError {
    use covenant_js::JsError;
    match e {
        AppError::Corrupt(_) => ApiError::internal("the deployed app is unusable", e),
        AppError::Script(JsError::Exception { message, stack }) => {
            let details = exception_text(message, stack, true);
            if opts.log_exception_details {
                tracing::warn!(error = %details, "an app handler threw");
            } else {
                tracing::warn!("an app handler threw");
            }
            let message = if opts.return_exception_details {
                format!("the app's handler threw: {details}")
            } else {
                "the app's handler threw an exception (set return_exception_details in the JS \
                 runtime options to see it here; log_exception_details puts it in the node log)"
                    .to_string()
            };
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
        }
        other => {
            tracing::warn!(error = %other, "an app handler failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("the app's handler failed: {other}"),
            )
        }
    }
}

fn into_response(resp: AppResponse, txid: Option<covenant_types::TxId>) -> Response {
    let status = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, resp.body).into_response();
    let h = r.headers_mut();
    if let Some(ct) = resp.default_content_type {
        h.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static(ct),
        );
    }
    for (k, v) in resp.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::from_str(&v)) {
            h.insert(k, v);
        }
    }
    if let Some(t) = txid {
        if let Ok(v) = HeaderValue::from_str(&t.to_string()) {
            h.insert(crate::http::TXID_HEADER, v);
        }
    }
    r
}

/// Middleware: serves app endpoints, passes everything else on.
pub async fn dispatch(State(state): State<NodeState>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with(covenant_app::PREFIX) {
        return next.run(req).await;
    }
    let app = match state.request_app(req.extensions()) {
        Ok(Some(app)) => app,
        Ok(None) => return next.run(req).await,
        Err(e) => return script_error(e, &RuntimeOptions::default()).into_response(),
    };
    let (route, params) = match app.route(req.method().as_str(), req.uri().path()) {
        Some(Ok((route, params))) => (route.clone(), params),
        // A path of the app with another method may still be a built-in route.
        _ => return next.run(req).await,
    };
    match serve(state, app, route, params, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// How long a backup waits for its state to show a certificate caller it does not
/// know yet (one added a moment ago on the primary) before refusing it.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(1);

/// Authenticates a request this node is about to forward, before its body is read
/// (CCF's frontends authenticate on the receiving node too):
/// - a bearer token must verify (signature, issuer, claims); which user it names,
///   and with which roles, the primary decides;
/// - a certificate caller must pass one of an app endpoint's policies that need no
///   body, or be a ledger user for a built-in `/app` route. This node may lag the
///   primary, so an unknown certificate is looked up again as transactions arrive,
///   for up to [`CATCH_UP`];
/// - an endpoint whose policies read the body (`user_cose_sign1`) is left to the
///   primary.
pub(crate) async fn authenticate_before_forwarding(
    state: &NodeState,
    head: &mut axum::http::request::Parts,
) -> Result<(), ApiError> {
    if !head.uri.path().starts_with(covenant_app::PREFIX) {
        return Ok(());
    }
    if head.headers.contains_key(axum::http::header::AUTHORIZATION) {
        return crate::auth::bearer_identity(state, &head.headers).map(|_| ());
    }
    let app = state.request_app(&head.extensions).ok().flatten();
    let route = app.as_ref().and_then(|a| {
        a.route(head.method.as_str(), head.uri.path())
            .and_then(Result::ok)
            .map(|(r, _)| r.clone())
    });
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    // Subscribed before the first look, so nothing appended after it is missed.
    let mut appended = state.service.subscribe_appended();
    loop {
        let attempt = match &route {
            Some(route) => match body_free_caller(state, head, route) {
                Some(c) => c.map(|_| ()),
                None => return Ok(()),
            },
            None => {
                use axum::extract::FromRequestParts;
                crate::auth::Caller::from_request_parts(head, state)
                    .await
                    .map(|_| ())
            }
        };
        let Err(e) = attempt else {
            return Ok(());
        };
        if e.status != StatusCode::UNAUTHORIZED {
            return Err(e);
        }
        // Only a new transaction on this node can change the answer.
        match tokio::time::timeout_at(deadline, appended.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return Err(e),
        }
    }
}

/// The caller by the route's policies that need no body, or `None` for a route
/// whose policies authenticate the body itself (`user_cose_sign1`): those wait for it.
fn body_free_caller(
    state: &NodeState,
    head: &axum::http::request::Parts,
    route: &Route,
) -> Option<Result<Value, ApiError>> {
    let policies = &route.properties.authn_policies;
    if policies
        .iter()
        .any(covenant_service::apps::mentions_body_policy)
    {
        return None;
    }
    Some(caller(state, &Incoming { head, body: &[] }, route))
}

async fn serve(
    state: NodeState,
    app: Arc<App>,
    route: Route,
    params: BTreeMap<String, String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (head, body) = req.into_parts();
    // Policies that need no body decide before it is read: a caller they refuse
    // never gets its upload buffered. The edge caps the body at max_body_bytes.
    let early = body_free_caller(&state, &head, &route).transpose()?;
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| crate::error::body_read_error(&e))?;
    let caller = match early {
        Some(c) => c,
        None => caller(
            &state,
            &Incoming {
                head: &head,
                body: &body,
            },
            &route,
        )?,
    };
    let mut headers = BTreeMap::new();
    for (k, v) in &head.headers {
        if k.as_str().starts_with("x-covenant-forwarded") {
            continue;
        }
        headers.insert(
            k.as_str().to_ascii_lowercase(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        );
    }
    let uri = head.uri.clone();
    let hostname = headers
        .get("host")
        .map(|h| h.split(':').next().unwrap_or_default().to_string())
        .unwrap_or_default();
    let method = head.method.as_str().to_string();
    let request = AppRequest {
        method,
        path: uri.path().to_string(),
        url: uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        query: uri.query().unwrap_or_default().to_string(),
        hostname,
        headers,
        params,
        body: body.to_vec(),
        caller,
    };
    let opts = RuntimeOptions::load(&state.store);
    let limits = opts.limits();
    // Scripts run on the low-priority script threads (covenant_service::scripts).
    let mode = route.properties.mode();
    if mode == Mode::Readwrite {
        // Outside every lock: the handler runs against the store, and only its
        // commit waits for the engine (see covenant_service::optimistic).
        let s = state.clone();
        let out = state
            .service
            .execute(move |store, _run| {
                let host = Host {
                    consensus: engine_view(&s),
                    ..Default::default()
                };
                let (ran, kv) = covenant_app::run_tracked(
                    &limits,
                    &app,
                    &route,
                    &request,
                    store,
                    Default::default(),
                    host,
                );
                match ran {
                    // A claims digest makes a transaction even without writes: it is
                    // what the handler wants a receipt for.
                    Ok((resp, opts))
                        if opts.keeps_writes(resp.status)
                            && (!kv.is_empty() || opts.claims_digest.is_some()) =>
                    {
                        let mut tx = store.begin();
                        kv.apply_to(&mut tx);
                        Executed::Commit {
                            tx,
                            claims: opts.claims_digest.map(covenant_types::Digest32),
                            answer: Ok(resp),
                        }
                    }
                    Ok((resp, _)) => Executed::Answer {
                        reads: kv.reads(),
                        answer: Ok(resp),
                    },
                    Err(err) => Executed::Answer {
                        reads: kv.reads(),
                        answer: Err(err),
                    },
                }
            })
            .await
            .map_err(|e| ApiError::service("running the app handler failed", e))?;
        let resp = out.answer.map_err(|e| script_error(e, &opts))?;
        return Ok(into_response(resp, out.txid));
    }
    let target = match mode {
        Mode::Historical => Some(historical_txid(&request)?),
        _ => None,
    };
    let service = state.service.clone();
    service
        .scripts()
        .run(move || -> Result<Response, ApiError> {
            let s = state.clone();
            let looked_up = at_normal_priority(move || {
                let mut e = s.engine();
                let historical = match target {
                    Some(t) => match historical_target(&mut e, t)? {
                        Ok(tx) => Some(tx),
                        Err(loading) => return Ok(Err(loading)),
                    },
                    None => None,
                };
                Ok(Ok((consensus_view(&e), historical, e.last_txid())))
            })
            .map_err(|e| ApiError::service("reading the ledger failed", e))??;
            let (consensus, historical, txid) = match looked_up {
                Ok(found) => found,
                Err(loading) => return Ok(loading),
            };
            let host = Host {
                consensus,
                history: Some(Arc::new(NodeHistory(state.clone()))),
                historical,
                context: None,
            };
            let (resp, _, _) = covenant_app::run(
                &limits,
                &app,
                &route,
                &request,
                &state.store,
                Default::default(),
                host,
            )
            .map_err(|e| script_error(e, &opts))?;
            Ok(into_response(resp, txid))
        })
        .await
        .map_err(|e| ApiError::service("running the app handler failed", e))?
}

/// [`consensus_view`] of the node's engine, read at normal priority (a script
/// thread must not hold the engine's lock: see covenant_service::scripts).
pub(crate) fn engine_view(state: &NodeState) -> ConsensusView {
    let s = state.clone();
    at_normal_priority(move || consensus_view(&s.engine())).unwrap_or_default()
}

/// What `ccf.consensus` answers from.
pub(crate) fn consensus_view(e: &Engine) -> ConsensusView {
    let c = e.committed_seqno();
    let committed = e
        .view_at(c)
        .or_else(|| e.snapshot_base().filter(|b| b.seqno == c).map(|b| b.view))
        .map(|view| TxId { view, seqno: c });
    ConsensusView {
        committed,
        last_seqno: e.last_seqno(),
        view_runs: e.view_runs().to_vec(),
    }
}

/// The header a historical endpoint's transaction id comes in (CCF's), with the
/// `transaction_id` query parameter accepted as well.
const TXID_REQUEST_HEADER: &str = "x-ms-ccf-transaction-id";

/// The past transaction a historical endpoint was asked about, or the answer to
/// give instead while it cannot be served yet (202, retry after a second).
fn historical_txid(request: &AppRequest) -> Result<TxId, ApiError> {
    let from_query = || {
        request.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == "transaction_id").then(|| v.to_string())
        })
    };
    let raw = request
        .headers
        .get(TXID_REQUEST_HEADER)
        .cloned()
        .or_else(from_query)
        .ok_or_else(|| {
            ApiError::bad_request(
                "MissingRequiredHeader",
                format!(
                    "a historical endpoint needs the transaction id (view.seqno) in the \
                     {TXID_REQUEST_HEADER} header or the transaction_id query parameter"
                ),
            )
        })?;
    raw.trim().parse().map_err(|_| {
        ApiError::bad_request(
            "InvalidHeaderValue",
            format!("{raw:?} is not a transaction id (view.seqno, e.g. 2.15)"),
        )
    })
}

/// The state of `txid` for a historical endpoint, or the answer to give instead
/// while it cannot be served yet (202, retry after a second).
fn historical_target(
    e: &mut Engine,
    txid: TxId,
) -> Result<Result<HistoricalTx, Response>, ApiError> {
    let loading = || {
        let mut r = (
            StatusCode::ACCEPTED,
            axum::Json(json!({"state": "Loading", "transactionId": txid.to_string()})),
        )
            .into_response();
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from_static("1"),
        );
        r
    };
    match e
        .status(txid)
        .map_err(|x| ApiError::engine("reading the ledger failed", x))?
    {
        TxStatus::Unknown => Err(ApiError::not_found(
            "TransactionPendingOrUnknown",
            format!("transaction {txid} is not known to this node"),
        )),
        TxStatus::Invalid => Err(ApiError::not_found(
            "TransactionInvalid",
            format!("transaction {txid} is invalid: its seqno belongs to another view"),
        )),
        TxStatus::Pending => Ok(Err(loading())),
        TxStatus::Committed => match historical_tx(e, txid)
            .map_err(|x| ApiError::engine("reading the ledger failed", x))?
        {
            Some(tx) => Ok(Ok(tx)),
            None => Ok(Err(loading())),
        },
    }
}

/// A committed transaction with its receipt and writes; `None` until a committed
/// signature covers it.
fn historical_tx(e: &mut Engine, txid: TxId) -> Result<Option<HistoricalTx>, EngineError> {
    let Some(r) = e.receipt(txid)?.receipt else {
        return Ok(None);
    };
    let (_, writes) = e.read_tx(txid.seqno)?;
    let receipt = json!({
        "signature": r.signature,
        "cert": r.cert,
        "proof": r.proof,
        "leaf_components": {
            "write_set_digest": r.leaf_components.write_set_digest,
            "commit_evidence": r.leaf_components.commit_evidence,
            "claims_digest": r.leaf_components.claims_digest,
        },
        "node_id": r.node_id,
    });
    Ok(Some(HistoricalTx {
        view: txid.view.0,
        seqno: txid.seqno.0,
        receipt,
        writes,
    }))
}

/// Most states one `getStateRange` call returns.
const MAX_STATE_RANGE: u64 = 1000;

/// `ccf.historical` over this node's ledger. States are read (and their receipts
/// built) on each call; a handle only records that the range was asked for.
struct NodeHistory(NodeState);

impl History for NodeHistory {
    fn states(
        &self,
        handle: u64,
        from: u64,
        to: u64,
        expiry_secs: u64,
    ) -> Result<Option<Vec<HistoricalTx>>, String> {
        if from == 0 {
            return Err("seqnos start at 1".into());
        }
        if to - from >= MAX_STATE_RANGE {
            return Err(format!(
                "a state range holds at most {MAX_STATE_RANGE} transactions"
            ));
        }
        {
            let now = Instant::now();
            let mut handles = self.0.service.apps().handles();
            handles.retain(|_, until| *until > now);
            handles.insert(handle, now + Duration::from_secs(expiry_secs.min(86_400)));
        }
        let mut out = Vec::with_capacity((to - from + 1) as usize);
        for seqno in from..=to {
            // One transaction per lock, at normal priority: a long range must not
            // hold up writes.
            let state = self.0.clone();
            let read = at_normal_priority(move || {
                let mut e = state.engine();
                if seqno > e.committed_seqno().0 {
                    return None;
                }
                let txid = TxId::new(e.view_at(SeqNo(seqno))?.0, seqno);
                historical_tx(&mut e, txid).unwrap_or_else(|x| {
                    tracing::warn!(error = %x, seqno, "a historical state could not be read");
                    None
                })
            })
            .map_err(|e| e.to_string())?;
            match read {
                Some(tx) => out.push(tx),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    fn drop_states(&self, handle: u64) -> bool {
        self.0.service.apps().handles().remove(&handle).is_some()
    }
}
