//! The ledger API (SPEC §4, ACL-compatible) and the node API (SPEC §5).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use covenant_engine::TxStatus;
use covenant_types::TxId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::state::NodeState;
use crate::users;

/// Collection used when a request names none.
pub const DEFAULT_COLLECTION: &str = "subledger:0";
/// Map holding the latest entry of each collection (private in Private ledgers).
pub const ENTRIES_PRIVATE: &str = "acl.entries";
pub const ENTRIES_PUBLIC: &str = "public:acl.entries";
/// Secret keys of LedgerEntryV1 application claims, written with their entry
/// (always private: whoever holds the key can check the claim).
pub const CLAIM_KEYS: &str = "acl.claim_keys";
/// Tags of an entry (private in Private ledgers).
pub const TAGS_PRIVATE: &str = "acl.tags";
pub const TAGS_PUBLIC: &str = "public:acl.tags";
/// From this api-version on, every entry carries a LedgerEntryV1 application claim.
const CLAIMS_FROM: &str = "2024-12-09";
pub(crate) const TXID_HEADER: HeaderName = HeaderName::from_static("x-ms-ccf-transaction-id");
/// Longest collection id accepted.
const MAX_COLLECTION_ID: usize = 256;

/// Every route of the node, behind the [`crate::edge`] checks with bodies capped
/// at `max_body_bytes`.
pub fn router(state: NodeState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/app/transactions", post(append).get(list_entries))
        .route("/app/transactions/current", get(current))
        .route("/app/transactions/{txid}", get(get_entry))
        .route("/app/transactions/{txid}/status", get(status))
        .route("/app/transactions/{txid}/receipt", get(receipt))
        .route("/app/collections", get(collections))
        .route("/app/users", get(users::list_v1))
        .route(
            "/app/users/{user_id}",
            get(users::get_v1)
                .patch(users::patch_v1)
                .delete(users::delete_v1),
        )
        .route("/app/ledgerUsers", get(users::list))
        .route(
            "/app/ledgerUsers/{user_id}",
            get(users::get_multi)
                .patch(users::patch_multi)
                .delete(users::delete_multi),
        )
        .route(
            "/app/userDefinedEndpoints",
            get(crate::udf::get_endpoints).put(crate::udf::put_endpoints),
        )
        .route(
            "/app/userDefinedEndpoints/runtimeOptions",
            get(crate::udf::get_runtime_options).patch(crate::udf::patch_runtime_options),
        )
        .route(
            "/app/userDefinedEndpoints/modules",
            get(crate::udf::get_module),
        )
        .route("/app/userDefinedFunctions", get(crate::udf::list_functions))
        .route(
            "/app/userDefinedFunctions/{function_id}",
            get(crate::udf::get_function)
                .put(crate::udf::put_function)
                .delete(crate::udf::delete_function)
                .post(crate::udf::execute),
        )
        .route(
            "/app/roles",
            get(crate::roles::get)
                .put(crate::roles::put)
                .patch(crate::roles::patch)
                .delete(crate::roles::delete),
        )
        .route("/app/enclaveQuotes", get(enclave_quotes))
        .route("/app/governance/members", get(governance_members))
        .route("/app/governance/constitution", get(governance_constitution))
        .route("/ledgerIdentity/{ledger_id}", get(ledger_identity))
        .route("/node/ping", get(|| async { Json(json!({})) }))
        .route("/node/network/nodes", get(network_nodes))
        .route(
            "/node/network/nodes/{which}",
            get(crate::node_api::network_node),
        )
        .route(
            "/node/primary",
            get(crate::node_api::primary).head(crate::node_api::primary),
        )
        .route("/node/backup", get(crate::node_api::backup))
        .route("/node/ready/app", get(crate::node_api::ready_app))
        .route("/node/ready/gov", get(crate::node_api::ready_gov))
        .route(
            "/node/service/previous_identity",
            get(crate::node_api::previous_identity),
        )
        .route("/node/memory", get(crate::node_api::memory))
        .route("/node/js_metrics", get(crate::node_api::js_metrics))
        .route(
            "/node/self_signed_certificate",
            get(crate::node_api::self_signed_certificate),
        )
        .route(
            "/node/endorsed_certificate",
            get(crate::node_api::endorsed_certificate),
        )
        // CCF serves these on every frontend.
        .route("/app/commit", get(node_commit))
        .route("/app/tx", get(node_tx))
        .route("/app/api", get(crate::node_api::api))
        .route("/gov/commit", get(node_commit))
        .route("/gov/tx", get(node_tx))
        .route("/gov/api", get(crate::node_api::api))
        .route("/gov/kv/{*table}", get(crate::node_api::gov_kv))
        .route("/gov/jwt_keys/all", get(crate::node_api::jwt_keys_all))
        .route(
            "/gov/proposals/{proposal_id}/ballots/{member_id}",
            get(crate::gov::get_ballot),
        )
        // CCF's current governance API (api-versioned; verbs after a colon).
        .route(
            "/gov/members/{*rest}",
            axum::routing::any(crate::gov_api::members),
        )
        .route(
            "/gov/service/{*rest}",
            axum::routing::any(crate::gov_api::service),
        )
        .route(crate::join::JOIN_PATH, post(crate::join::join))
        .route(
            "/gov/proposals",
            post(crate::gov::propose).get(crate::gov::list_proposals),
        )
        .route(
            "/gov/proposals/{proposal_id}",
            get(crate::gov::get_proposal),
        )
        .route(
            "/gov/proposals/{proposal_id}/actions",
            get(crate::gov::get_proposal_actions),
        )
        .route(
            "/gov/proposals/{proposal_id}/ballots",
            post(crate::gov::ballot),
        )
        .route(
            "/gov/proposals/{proposal_id}/withdraw",
            post(crate::gov::withdraw),
        )
        .route("/gov/members", get(crate::gov::members))
        .route("/gov/constitution", get(crate::gov::constitution))
        .route(
            "/gov/ack/update_state_digest",
            post(crate::gov::update_state_digest),
        )
        .route("/gov/ack", post(crate::gov::ack))
        .route(crate::join::SNAPSHOT_PATH, get(crate::join::snapshot))
        .route(
            crate::network::REGISTER_PATH,
            axum::routing::post(crate::network::register),
        )
        // Consensus batches are larger than any API request: the edge caps them at
        // MAX_RAFT_BODY_BYTES, for nodes only.
        .route(
            crate::network::RAFT_PATH,
            axum::routing::post(crate::network::raft_messages),
        )
        .route("/node/state", get(node_state))
        .route("/node/version", get(node_version))
        .route("/node/commit", get(node_commit))
        .route("/node/tx", get(node_tx))
        .route("/node/receipt", get(node_receipt))
        .route("/node/network", get(node_network))
        .route("/node/metrics", get(crate::metrics::render))
        .route("/node/api", get(crate::node_api::api))
        .fallback(|| async { ApiError::not_found("ResourceNotFound", "no such route") })
        .layer(axum::middleware::map_response(crate::error::json_errors))
        // App endpoints take precedence over built-in /app routes of the same path
        // and method (after forwarding and the service-open gate).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::app::dispatch,
        ))
        // Inside forwarding: the node that executes a request (the primary, for a
        // write) decides whether the service is open, not a backup that may lag.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::network::service_open_gate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::network::forward_writes,
        ))
        // Before anything reads a body or forwards: identity, credentials, limits.
        .layer(axum::middleware::from_fn_with_state(
            crate::edge::Edge {
                state: state.clone(),
                max_body_bytes,
            },
            crate::edge::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::count,
        ))
        // The edge caps every body (max_body_bytes, consensus batches aside); the
        // extractors add no limit of their own.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

pub(crate) type Params = Query<HashMap<String, String>>;

/// The checks a ledger route starts with: its `api-version`, then the caller's role.
pub(crate) fn authorize(
    q: &HashMap<String, String>,
    caller: &Caller,
    min: Role,
) -> Result<(), ApiError> {
    api_version(q)?;
    caller.require(min)
}

/// The ACL data-plane api-versions covenant serves (those of ACL's published
/// API specifications and SDKs); behaviour differs only where a route says so.
pub const API_VERSIONS: &[&str] = &[
    "0.1-preview",
    "2022-04-20-preview",
    "2022-05-13",
    "2022-11-23",
    "2023-01-18-preview",
    "2024-01-26-preview",
    "2024-07-26-preview",
    "2024-08-22-preview",
    "2024-12-09-preview",
];

/// Every ledger route requires a known `api-version` (SPEC §4): an unknown one is
/// refused rather than served as if it meant something.
pub(crate) fn api_version(q: &HashMap<String, String>) -> Result<(), ApiError> {
    match q.get("api-version") {
        Some(v) if API_VERSIONS.contains(&v.as_str()) => Ok(()),
        Some(v) if !v.is_empty() => Err(ApiError::bad_request(
            "QueryParameterError",
            format!(
                "api-version {:?} is not supported; use one of {}",
                v.chars().take(64).collect::<String>(),
                API_VERSIONS.join(", ")
            ),
        )),
        _ => Err(ApiError::bad_request(
            "QueryParameterError",
            "the api-version query parameter is required (e.g. api-version=2022-05-13)",
        )),
    }
}

fn collection(q: &HashMap<String, String>) -> Result<String, ApiError> {
    let c = q
        .get("collectionId")
        .map(String::as_str)
        .filter(|c| !c.is_empty())
        .unwrap_or(DEFAULT_COLLECTION);
    if c.len() > MAX_COLLECTION_ID || c.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "InvalidInput",
            format!("collectionId must be 1..{MAX_COLLECTION_ID} printable characters"),
        ));
    }
    Ok(c.to_string())
}

fn parse_txid(s: &str) -> Result<TxId, ApiError> {
    s.parse().map_err(|e: covenant_types::TxIdParseError| {
        ApiError::bad_request("InvalidTransactionId", e.to_string())
    })
}

pub(crate) fn with_txid(txid: Option<TxId>, body: impl IntoResponse) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(t) = txid {
        if let Ok(v) = HeaderValue::from_str(&t.to_string()) {
            headers.insert(TXID_HEADER, v);
        }
    }
    (headers, body).into_response()
}

fn tags_map(state: &NodeState) -> &'static str {
    if state.ledger_public {
        TAGS_PUBLIC
    } else {
        TAGS_PRIVATE
    }
}

fn api_at_least(q: &HashMap<String, String>, from: &str) -> bool {
    q.get("api-version")
        .and_then(|v| v.get(..10))
        .is_some_and(|d| d >= from)
}

/// Parses `tags=a,b`: non-empty, printable, at most 32 tags of 64 characters.
fn parse_tags(q: &HashMap<String, String>) -> Result<Option<String>, ApiError> {
    let Some(raw) = q.get("tags").filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let tags: Vec<&str> = raw.split(',').map(str::trim).collect();
    if tags.len() > 32
        || tags
            .iter()
            .any(|t| t.is_empty() || t.len() > 64 || t.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "InvalidInput",
            "tags must be a comma-separated list of at most 32 non-empty tags of at most 64 characters",
        ));
    }
    Ok(Some(tags.join(",")))
}

fn entries_map(state: &NodeState) -> &'static str {
    entries_map_of(state.ledger_public)
}

/// The map holding the ledger app's entries: in clear on a public ledger.
pub fn entries_map_of(ledger_public: bool) -> &'static str {
    if ledger_public {
        ENTRIES_PUBLIC
    } else {
        ENTRIES_PRIVATE
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AppendBody {
    contents: String,
    /// User-defined functions run before the entry is written, in its transaction.
    #[serde(default)]
    pre_hooks: Vec<crate::udf::Hook>,
    /// ... and after it.
    #[serde(default)]
    post_hooks: Vec<crate::udf::Hook>,
}

async fn append(
    State(state): State<NodeState>,
    caller: Caller,
    Query(q): Params,
    body: crate::error::Body,
) -> Result<Response, ApiError> {
    api_version(&q)?;
    caller.require(Role::Contributor)?;
    let collection = collection(&q)?;
    let body: AppendBody = serde_json::from_slice(&body.map_err(crate::error::body_error)?)
        .map_err(|e| {
            ApiError::bad_request(
                "InvalidInput",
                format!("body must be {{\"contents\": \"...\"}}: {e}"),
            )
        })?;
    let map = entries_map(&state);
    let tags = parse_tags(&q)?;
    // LedgerEntryV1 claim under a fresh key: the digest enters the leaf, the key stays private.
    let claim = if api_at_least(&q, CLAIMS_FROM) {
        let mut key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut key)
            .map_err(|_| ApiError::internal("randomness failed", "rng"))?;
        let claim = ledger_entry_claim(&collection, &body.contents, &key);
        let digest = covenant_receipt::claims_digest(std::slice::from_ref(&claim))
            .map_err(|e| ApiError::internal("computing the claims digest failed", e))?;
        Some((key, digest))
    } else {
        None
    };
    let tags_map = tags_map(&state);
    let pre = crate::udf::prepare_hooks(&state, "preHooks", &body.pre_hooks)?;
    let post = crate::udf::prepare_hooks(&state, "postHooks", &body.post_hooks)?;
    let has_hooks = !pre.is_empty() || !post.is_empty();
    // ACL's `context` global of the hooks (built only when there are hooks).
    let context = if has_hooks {
        json!({
            "request": {"method": "POST", "url": "/app/transactions", "body": {"contents": &body.contents}},
            "userId": caller.user_id,
            "collectionId": collection,
            "contents": &body.contents,
        })
    } else {
        Value::Null
    };
    let entry = collection.clone();
    let write = move |engine: &mut covenant_engine::Engine| {
        let mut tx = engine.begin();
        if let Err(e) = crate::udf::run_hooks(engine, &mut tx, &pre, &context) {
            return Ok(Err(e));
        }
        tx.put(map, entry.as_bytes(), body.contents.as_bytes());
        if let Some(t) = &tags {
            tx.put(tags_map, entry.as_bytes(), t.as_bytes());
        }
        if let Some((key, _)) = &claim {
            tx.put(CLAIM_KEYS, entry.as_bytes(), key);
        }
        if let Err(e) = crate::udf::run_hooks(engine, &mut tx, &post, &context) {
            return Ok(Err(e));
        }
        engine.commit_tx(tx, claim.map(|(_, d)| d)).map(Ok)
    };
    let txid = if has_hooks {
        // Hooks run JavaScript: off the async threads.
        let s = state.clone();
        tokio::task::spawn_blocking(move || s.write("appending the entry failed", write))
            .await
            .map_err(|e| ApiError::internal("the append's thread failed", e))???
    } else {
        state.write("appending the entry failed", write)??
    };
    state.index.add(&collection, txid);
    Ok(with_txid(
        Some(txid),
        Json(json!({"collectionId": collection})),
    ))
}

/// The entry a transaction wrote to `collection`, if it wrote one.
fn entry_of(state: &NodeState, txid: TxId, collection: &str) -> Result<Option<Value>, ApiError> {
    let (actual, ws) = match state.engine().read_tx(txid.seqno.0) {
        Ok(x) => x,
        Err(covenant_engine::EngineError::NoSuchTx(_)) => return Ok(None),
        Err(e) => return Err(ApiError::engine("reading the ledger failed", e)),
    };
    if actual != txid {
        return Ok(None);
    }
    Ok(ws
        .get(entries_map(state), collection.as_bytes())
        .flatten()
        .map(|contents| {
            let mut e = json!({
                "collectionId": collection,
                "contents": String::from_utf8_lossy(contents),
                "transactionId": txid.to_string(),
            });
            if let Some(Some(tags)) = ws.get(tags_map(state), collection.as_bytes()) {
                e["tags"] = Value::String(String::from_utf8_lossy(tags).to_string());
            }
            e
        }))
}

async fn get_entry(
    State(state): State<NodeState>,
    caller: Caller,
    Path(txid): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    api_version(&q)?;
    caller.require(Role::Reader)?;
    let txid = parse_txid(&txid)?;
    let collection = collection(&q)?;
    let status = state
        .engine()
        .status(txid)
        .map_err(|e| ApiError::engine("reading the ledger failed", e))?;
    let unknown = || {
        ApiError::not_found(
            "InvalidTransactionId",
            format!("transaction {txid} is not an entry of collection {collection}"),
        )
    };
    let loading = || Ok(with_txid(Some(txid), Json(json!({"state": "Loading"}))));
    match status {
        // In a network, Unknown is not "does not exist": this node may be a primary
        // that was deposed without knowing it yet, holding another view's suffix
        // (backups ask the primary first). As the status route says Pending, this
        // says Loading; only a TxId known never to commit is refused.
        TxStatus::Unknown if state.network.is_some() => loading(),
        TxStatus::Unknown | TxStatus::Invalid => Err(unknown()),
        TxStatus::Pending => loading(),
        TxStatus::Committed => {
            let entry = entry_of(&state, txid, &collection)?.ok_or_else(unknown)?;
            Ok(with_txid(
                Some(txid),
                Json(json!({"state": "Ready", "entry": entry})),
            ))
        }
    }
}

/// `GET /app/transactions/current`: the collection's latest entry in this node's
/// state, as in ACL and CCF (a read sees transactions not committed yet; the
/// `transactionId` tells the caller what to check). `committed=true` (covenant's
/// extension) answers the latest *committed* entry instead.
async fn current(
    State(state): State<NodeState>,
    caller: Caller,
    Query(q): Params,
) -> Result<Response, ApiError> {
    api_version(&q)?;
    caller.require(Role::Reader)?;
    let collection = collection(&q)?;
    let committed_only = match q.get("committed").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "InvalidInput",
                format!("committed must be true or false, not {other:?}"),
            ))
        }
    };
    let none = || {
        ApiError::not_found(
            "ResourceNotFound",
            format!("collection {collection} has no entries"),
        )
    };
    let engine = state.engine();
    let map = entries_map(&state);
    let contents = engine
        .store()
        .get(map, collection.as_bytes())
        .ok_or_else(none)?;
    let version = engine
        .store()
        .version_of(map, collection.as_bytes())
        .unwrap_or(0);
    let committed = engine.committed_seqno();
    let (txid, contents) = if committed_only && version > committed {
        // The latest value is not committed yet: the last committed write of the
        // collection, from the index and the ledger.
        let older = state.index.latest(&collection, committed, 64);
        let found = older.iter().find_map(|t| {
            let (txid, ws) = engine.read_tx(t.seqno.0).ok()?;
            let value = ws.get(map, collection.as_bytes())??;
            (txid == *t).then(|| (txid, value.to_vec()))
        });
        found.ok_or_else(none)?
    } else {
        let txid = engine
            .ledger()
            .read(version)
            .map(|e| e.txid)
            .map_err(|e| ApiError::engine("reading the ledger failed", e))?;
        (txid, contents)
    };
    let shown = if committed_only {
        engine
            .view_at(committed)
            .map(|v| TxId::new(v, committed))
            .or(Some(txid))
    } else {
        engine.last_txid()
    };
    Ok(with_txid(
        shown,
        Json(json!({
            "collectionId": collection,
            "contents": String::from_utf8_lossy(&contents),
            "transactionId": txid.to_string(),
        })),
    ))
}

async fn collections(
    State(state): State<NodeState>,
    caller: Caller,
    Query(q): Params,
) -> Result<Response, ApiError> {
    api_version(&q)?;
    caller.require(Role::Reader)?;
    let keys = state
        .store
        .entries(entries_map(&state))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let (page, next) = key_page(keys, &q, "/app/collections");
    let list: Vec<Value> = page
        .into_iter()
        .map(|c| json!({"collectionId": c}))
        .collect();
    let mut body = json!({"collections": list});
    if let Some(n) = next {
        body["nextLink"] = Value::String(n);
    }
    Ok(with_txid(state.engine().last_txid(), Json(body)))
}

/// One page of a key-ordered listing: keys after the `after` query parameter, at most
/// [`PAGE_SIZE`], and the relative nextLink to the rest.
pub(crate) fn key_page(
    keys: Vec<Vec<u8>>,
    q: &HashMap<String, String>,
    route: &str,
) -> (Vec<String>, Option<String>) {
    let after = q.get("after").map(|a| a.as_bytes().to_vec());
    let mut rest = keys
        .into_iter()
        .filter(|k| after.as_ref().is_none_or(|a| k > a));
    let page: Vec<String> = rest
        .by_ref()
        .take(PAGE_SIZE)
        .map(|k| String::from_utf8_lossy(&k).to_string())
        .collect();
    let next = match (rest.next(), page.last()) {
        (Some(_), Some(last)) => Some(format!(
            "{route}?{}",
            encode_query(&[
                (
                    "api-version",
                    q.get("api-version").cloned().unwrap_or_default()
                ),
                ("after", last.clone()),
            ])
        )),
        _ => None,
    };
    (page, next)
}

async fn status(
    State(state): State<NodeState>,
    caller: Caller,
    Path(txid): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    api_version(&q)?;
    caller.require(Role::Reader)?;
    let txid = parse_txid(&txid)?;
    let s = state
        .engine()
        .status(txid)
        .map_err(|e| ApiError::engine("reading the ledger failed", e))?;
    let word = match s {
        TxStatus::Committed => "Committed",
        TxStatus::Pending => "Pending",
        // A backup may not have received a TxId the primary just handed out (a client
        // that wrote through one node polls another): in a network that is Pending.
        TxStatus::Unknown if state.network.is_some() => "Pending",
        TxStatus::Unknown | TxStatus::Invalid => {
            return Err(ApiError::not_found(
                "InvalidTransactionId",
                format!("transaction {txid} does not exist"),
            ))
        }
    };
    Ok(with_txid(
        Some(txid),
        Json(json!({"state": word, "transactionId": txid.to_string()})),
    ))
}

fn receipt_of(state: &NodeState, txid: TxId) -> Result<Response, ApiError> {
    let resp = state.engine().receipt(txid).map_err(|e| match e {
        covenant_engine::EngineError::NoSuchTx(_) => ApiError::not_found(
            "InvalidTransactionId",
            format!("transaction {txid} does not exist"),
        ),
        other => ApiError::engine("building the receipt failed", other),
    })?;
    let mut body = serde_json::to_value(&resp)
        .map_err(|e| ApiError::internal("encoding the receipt failed", e))?;
    // An entry written with claims: reveal them (with their key) next to the receipt.
    if resp.receipt.is_some() {
        let (_, ws) = state
            .engine()
            .read_tx(txid.seqno.0)
            .map_err(|e| ApiError::engine("reading the ledger failed", e))?;
        let entries = entries_map(state);
        if let Some(keys) = ws.maps.get(CLAIM_KEYS) {
            let claims: Vec<Value> = keys
                .iter()
                .filter_map(|(collection, key)| {
                    let key = key.as_ref()?;
                    let contents = ws.get(entries, collection).flatten()?;
                    let claim = ledger_entry_claim(
                        &String::from_utf8_lossy(collection),
                        &String::from_utf8_lossy(contents),
                        key,
                    );
                    serde_json::to_value(claim).ok()
                })
                .collect();
            if !claims.is_empty() {
                body["applicationClaims"] = Value::Array(claims);
            }
        }
    }
    Ok(with_txid(Some(txid), Json(body)))
}

async fn receipt(
    State(state): State<NodeState>,
    caller: Caller,
    Path(txid): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    api_version(&q)?;
    caller.require(Role::Reader)?;
    receipt_of(&state, parse_txid(&txid)?)
}

fn txid_param(q: &HashMap<String, String>) -> Result<TxId, ApiError> {
    let raw = q.get("transaction_id").ok_or_else(|| {
        ApiError::bad_request("QueryParameterError", "transaction_id is required")
    })?;
    parse_txid(raw)
}

async fn node_receipt(
    State(state): State<NodeState>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    receipt_of(&state, txid_param(&q)?)
}

pub(crate) async fn node_tx(
    State(state): State<NodeState>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let txid = txid_param(&q)?;
    let word = tx_status_word(&state, txid)?;
    Ok(Json(json!({"status": word, "transaction_id": txid.to_string()})).into_response())
}

/// CCF's word for a transaction's status.
pub(crate) fn tx_status_word(state: &NodeState, txid: TxId) -> Result<&'static str, ApiError> {
    let s = state
        .engine()
        .status(txid)
        .map_err(|e| ApiError::engine("reading the ledger failed", e))?;
    Ok(match s {
        TxStatus::Unknown => "Unknown",
        TxStatus::Pending => "Pending",
        TxStatus::Committed => "Committed",
        TxStatus::Invalid => "Invalid",
    })
}

/// The last committed transaction (`None` before the first commit).
pub(crate) fn committed_txid(state: &NodeState) -> Result<Option<TxId>, ApiError> {
    let engine = state.engine();
    let seqno = engine.committed_seqno();
    if seqno == 0 {
        return Ok(None);
    }
    engine
        .ledger()
        .read(seqno)
        .map(|e| Some(e.txid))
        .map_err(|e| ApiError::engine("reading the ledger failed", e))
}

/// `/node/commit` (also `/app/commit`, `/gov/commit`): the last committed TxId.
pub(crate) async fn node_commit(State(state): State<NodeState>) -> Result<Response, ApiError> {
    let txid = committed_txid(&state)?;
    Ok(with_txid(
        txid,
        Json(
            json!({"transaction_id": txid.map(|t| t.to_string()).unwrap_or_else(|| "0.0".into())}),
        ),
    ))
}

async fn node_state(State(state): State<NodeState>) -> Json<Value> {
    let engine = state.engine();
    Json(json!({
        "node_id": state.node_id,
        "state": "PartOfNetwork",
        "last_signed_seqno": engine.committed_seqno(),
        "view": engine.view().0,
    }))
}

async fn node_version() -> Json<Value> {
    Json(json!({
        "ccf_version": concat!("covenant-", env!("CARGO_PKG_VERSION")),
        "quickjs_version": null,
        "unsafe": false,
    }))
}

async fn node_network(State(state): State<NodeState>) -> Json<Value> {
    let (view, primary) = match &state.network {
        Some(n) => {
            let s = n.replica.status();
            (s.term, s.leader.map(|l| l.to_string()))
        }
        None => (state.engine().view().0, Some(state.node_id.clone())),
    };
    let status = covenant_governance::service_status(&state.store).unwrap_or_else(|| "Open".into());
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
async fn network_nodes(State(state): State<NodeState>) -> Json<Value> {
    use crate::network::{NodeInfo, NODES_INFO, STATUS_PENDING, STATUS_TRUSTED};
    let nodes: Vec<Value> = match &state.network {
        Some(n) => {
            let s = n.replica.status();
            let (conf, _) = n.replica.configuration();
            let mut rows: Vec<(String, NodeInfo)> = state
                .store
                .entries(NODES_INFO)
                .into_iter()
                .filter_map(|(k, v)| {
                    let info: NodeInfo = serde_json::from_slice(&v).ok()?;
                    Some((String::from_utf8(k).ok()?, info))
                })
                .collect();
            for (id, addr) in &n.config.peers {
                if !rows.iter().any(|(_, i)| i.raft_id == *id) {
                    rows.push((
                        String::new(),
                        NodeInfo {
                            status: STATUS_PENDING.into(),
                            raft_id: *id,
                            address: addr.to_string(),
                            cert: String::new(),
                            quote: None,
                            subject_alt_names: Vec::new(),
                            join_token_verified: false,
                            node_data: None,
                        },
                    ));
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
                        "self": info.raft_id != 0 && info.raft_id == n.config.node_id,
                    })
                })
                .collect()
        }
        None => vec![json!({
            "node_id": state.node_id,
            "status": STATUS_TRUSTED,
            "primary": true,
            "rpc_interfaces": {},
            "self": true,
        })],
    };
    Json(json!({ "nodes": nodes }))
}

/// Entries per page of a ranged query (SPEC §4).
pub const PAGE_SIZE: usize = 1000;

fn seqno_param(q: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    q.get(name)
        .filter(|v| !v.is_empty())
        .map(|v| parse_txid(v).map(|t| t.seqno.0))
        .transpose()
}

fn encode_query(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `GET /app/transactions`: committed entries of one collection in an inclusive
/// TxId range, 1000 per page, with a relative `nextLink` to the rest.
async fn list_entries(
    State(state): State<NodeState>,
    caller: Caller,
    Query(q): Params,
) -> Result<Response, ApiError> {
    api_version(&q)?;
    caller.require(Role::Reader)?;
    let collection = collection(&q)?;
    let committed = state.engine().committed_seqno();
    let from = seqno_param(&q, "fromTransactionId")?.unwrap_or(1);
    let to = seqno_param(&q, "toTransactionId")?
        .unwrap_or(u64::MAX)
        .min(committed);
    if from > to && q.contains_key("toTransactionId") && to < committed {
        return Err(ApiError::bad_request(
            "InvalidInput",
            "fromTransactionId must not be after toTransactionId",
        ));
    }
    let (page, next) = state.index.range(&collection, from, to, PAGE_SIZE);
    let map = entries_map(&state);
    let mut entries = Vec::with_capacity(page.len());
    for indexed in page {
        let (txid, ws) = state
            .engine()
            .read_tx(indexed.seqno.0)
            .map_err(|e| ApiError::engine("reading the ledger failed", e))?;
        // The index may still name a transaction rolled back at that seqno.
        if txid != indexed {
            continue;
        }
        if let Some(Some(contents)) = ws.get(map, collection.as_bytes()) {
            let tags = ws
                .get(tags_map(&state), collection.as_bytes())
                .flatten()
                .map(|t| String::from_utf8_lossy(t).to_string());
            if let Some(want) = q.get("tag").filter(|t| !t.is_empty()) {
                if !tags
                    .as_deref()
                    .is_some_and(|t| t.split(',').any(|x| x == want))
                {
                    continue;
                }
            }
            let mut e = json!({
                "collectionId": collection,
                "contents": String::from_utf8_lossy(contents),
                "transactionId": txid.to_string(),
            });
            if let Some(t) = tags {
                e["tags"] = Value::String(t);
            }
            entries.push(e);
        }
    }
    let mut body = json!({"entries": entries, "state": "Ready"});
    if let Some(next) = next {
        let mut pairs = vec![
            (
                "api-version",
                q.get("api-version").cloned().unwrap_or_default(),
            ),
            ("collectionId", collection.clone()),
            ("fromTransactionId", next.to_string()),
        ];
        if let Some(t) = q.get("toTransactionId") {
            pairs.push(("toTransactionId", t.clone()));
        }
        if let Some(t) = q.get("tag") {
            pairs.push(("tag", t.clone()));
        }
        body["nextLink"] = Value::String(format!("/app/transactions?{}", encode_query(&pairs)));
    }
    let last = state.engine().last_txid();
    Ok(with_txid(last, Json(body)))
}

async fn enclave_quotes(
    State(state): State<NodeState>,
    caller: Caller,
    Query(q): Params,
) -> Result<Response, ApiError> {
    api_version(&q)?;
    caller.require(Role::Reader)?;
    let quote = &state.quote;
    let hex: String = quote.raw().iter().map(|b| format!("{b:02x}")).collect();
    let body = json!({
        "currentNodeId": state.node_id,
        "enclaveQuotes": {
            state.node_id.clone(): {
                "nodeId": state.node_id,
                "quoteVersion": "Virtual",
                "raw": hex,
                "mrenclave": quote.measurement,
            }
        }
    });
    let last = state.engine().last_txid();
    Ok(with_txid(last, Json(body)))
}

/// Members of the consortium (SPEC §4 read-only view of `public:ccf.gov.members.certs`).
async fn governance_members(
    State(state): State<NodeState>,
    caller: Caller,
    Query(q): Params,
) -> Result<Response, ApiError> {
    api_version(&q)?;
    caller.require(Role::Reader)?;
    let engine = state.engine();
    let members: Vec<Value> = engine
        .store()
        .entries(crate::MEMBERS_CERTS)
        .into_iter()
        .map(|(id, pem)| json!({"certificate": String::from_utf8_lossy(&pem), "id": String::from_utf8_lossy(&id)}))
        .collect();
    Ok(with_txid(
        engine.last_txid(),
        Json(json!({"members": members})),
    ))
}

async fn governance_constitution(
    State(state): State<NodeState>,
    caller: Caller,
    Query(q): Params,
) -> Result<Response, ApiError> {
    api_version(&q)?;
    caller.require(Role::Reader)?;
    let engine = state.engine();
    let script = engine
        .store()
        .get(crate::CONSTITUTION, crate::CONSTITUTION_KEY)
        .ok_or_else(|| ApiError::not_found("ResourceNotFound", "no constitution has been set"))?;
    let digest = covenant_crypto::sha256(&script).to_hex();
    Ok(with_txid(
        engine.last_txid(),
        Json(json!({"digest": digest, "script": String::from_utf8_lossy(&script)})),
    ))
}

async fn ledger_identity(
    State(state): State<NodeState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(crate::identity::own(&state.ledger_id, &state.service_cert_pem, &id)?.into_response())
}

fn ledger_entry_claim(
    collection: &str,
    contents: &str,
    key: &[u8],
) -> covenant_receipt::ApplicationClaim {
    use base64::Engine as _;
    covenant_receipt::ApplicationClaim::LedgerEntry {
        ledger_entry: covenant_receipt::LedgerEntryClaim {
            collection_id: collection.to_string(),
            contents: contents.to_string(),
            secret_key: base64::engine::general_purpose::STANDARD.encode(key),
            protocol: "LedgerEntryV1".into(),
        },
    }
}
