//! The ACL ledger routes (SPEC §4): append and read entries, their status and
//! receipts, collections, and ACL's read-only views of the consortium and the
//! node's evidence. Each handler checks its api-version and the caller's role,
//! then asks the [`covenant_service::Service`].

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use covenant_engine::TxStatus;
use covenant_service::entries::{new_claim, DEFAULT_COLLECTION};
use covenant_service::tables::{
    entries_map, tags_map, CLAIM_KEYS, CONSTITUTION, CONSTITUTION_KEY, MEMBERS_CERTS,
};
use covenant_service::Executed;
use covenant_types::{SeqNo, TxId};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{AsContributor, AsReader};
use crate::error::ApiError;
use crate::http::{api_at_least, encode_query, key_page, parse_txid, with_txid, PAGE_SIZE};
use crate::state::NodeState;

/// Entries written from this api-version on carry a LedgerEntryV1 claim.
const CLAIMS_FROM: &str = "2024-12-09";
/// Longest collection id accepted.
const MAX_COLLECTION_ID: usize = 256;

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

/// `POST /app/transactions`: appends an entry to a collection (Contributor).
pub(crate) async fn append(
    State(state): State<NodeState>,
    AsContributor {
        caller, query: q, ..
    }: AsContributor,
    body: crate::error::Body,
) -> Result<Response, ApiError> {
    let collection = collection(&q)?;
    let body: AppendBody = serde_json::from_slice(&body.map_err(crate::error::body_error)?)
        .map_err(|e| {
            ApiError::bad_request(
                "InvalidInput",
                format!("body must be {{\"contents\": \"...\"}}: {e}"),
            )
        })?;
    let public = state.ledger_public();
    let tags = parse_tags(&q)?;
    // LedgerEntryV1 claim under a fresh key: the digest enters the leaf, the key stays private.
    let claim = if api_at_least(&q, CLAIMS_FROM) {
        Some(
            new_claim(&collection, &body.contents)
                .map_err(|e| ApiError::internal("making the entry's claim failed", e))?,
        )
    } else {
        None
    };
    let pre = crate::udf::prepare_hooks(&state, "preHooks", &body.pre_hooks)?;
    let post = crate::udf::prepare_hooks(&state, "postHooks", &body.post_hooks)?;
    // ACL's `context` global of the hooks (built only when there are hooks).
    let context = if !(pre.is_empty() && post.is_empty()) {
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
    let contents = body.contents;
    let has_hooks = !pre.is_empty() || !post.is_empty();
    let claims = claim.as_ref().map(|(_, d)| *d);
    // The entry's own writes, after the pre-hooks and before the post-hooks.
    let put_entry = move |tx: &mut covenant_kv::Tx| {
        tx.put(entries_map(public), entry.as_bytes(), contents.as_bytes());
        if let Some(t) = &tags {
            tx.put(tags_map(public), entry.as_bytes(), t.as_bytes());
        }
        if let Some((key, _)) = &claim {
            tx.put(CLAIM_KEYS, entry.as_bytes(), key);
        }
    };
    const FAILED: &str = "appending the entry failed";
    let txid = if has_hooks {
        // Hooks run JavaScript: on a script thread, outside every lock; only the
        // commit waits for the engine (covenant_service::optimistic).
        let s = state.clone();
        let out = state
            .service
            .execute(move |store, _run| {
                let consensus = crate::app::engine_view(&s);
                let mut tx = store.begin();
                let hooked = crate::udf::run_hooks(store, &consensus, &mut tx, &pre, &context)
                    .map(|()| put_entry(&mut tx))
                    .and_then(|()| {
                        crate::udf::run_hooks(store, &consensus, &mut tx, &post, &context)
                    });
                match hooked {
                    Ok(()) => Executed::Commit {
                        tx,
                        claims,
                        answer: Ok(()),
                    },
                    Err(e) => Executed::Answer {
                        reads: tx.reads().clone(),
                        answer: Err(e),
                    },
                }
            })
            .await
            .map_err(|e| ApiError::service(FAILED, e))?;
        out.answer?;
        out.txid
            .ok_or_else(|| ApiError::internal(FAILED, "the append committed no transaction"))?
    } else {
        state
            .write_in_memory(FAILED, move |engine: &mut covenant_engine::Engine| {
                let mut tx = engine.begin();
                put_entry(&mut tx);
                engine.commit_tx(tx, claims)
            })
            .await?
    };
    Ok(with_txid(
        Some(txid),
        Json(json!({"collectionId": collection})),
    ))
}

/// `GET /app/transactions/{txid}`: the entry a committed transaction wrote.
pub(crate) async fn get_entry(
    State(state): State<NodeState>,
    AsReader { query: q, .. }: AsReader,
    Path(txid): Path<String>,
) -> Result<Response, ApiError> {
    let txid = parse_txid(&txid)?;
    let collection = collection(&q)?;
    let status = state
        .service
        .status(txid)
        .map_err(|e| ApiError::service("reading the ledger failed", e))?;
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
            let entry = state
                .service
                .entry(txid, collection.clone())
                .await
                .map_err(|e| ApiError::service("reading the ledger failed", e))?
                .ok_or_else(unknown)?;
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
pub(crate) async fn current(
    State(state): State<NodeState>,
    AsReader { query: q, .. }: AsReader,
) -> Result<Response, ApiError> {
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
    let map = entries_map(state.ledger_public());
    // Everything the answer needs from memory, under one lock.
    let (contents, version, committed, at_version, at_committed, latest) = {
        let engine = state.engine();
        let store = engine.store();
        let contents = store.get(map, collection.as_bytes()).ok_or_else(none)?;
        let version = store
            .version_of(map, collection.as_bytes())
            .unwrap_or_default();
        let committed = engine.committed_seqno();
        (
            contents,
            version,
            committed,
            engine.view_at(version).map(|v| TxId {
                view: v,
                seqno: version,
            }),
            engine.view_at(committed).map(|v| TxId {
                view: v,
                seqno: committed,
            }),
            engine.last_txid(),
        )
    };
    let (txid, contents) = if committed_only && version > committed {
        // The latest value is not committed yet: the last committed write of the
        // collection, from the index and the ledger.
        let e = state
            .service
            .latest_committed_entry(collection.clone())
            .await
            .map_err(|e| ApiError::service("reading the ledger failed", e))?
            .ok_or_else(none)?;
        (e.transaction_id, e.contents)
    } else {
        let txid = match at_version {
            Some(t) => t,
            // Before this node's first seqno (it started from a snapshot): the ledger
            // read answers "not held".
            None => {
                state
                    .engine()
                    .ledger()
                    .read(version)
                    .map_err(|e| ApiError::engine("reading the ledger failed", e))?
                    .txid
            }
        };
        (txid, String::from_utf8_lossy(&contents).to_string())
    };
    let shown = if committed_only {
        at_committed.or(Some(txid))
    } else {
        latest
    };
    Ok(with_txid(
        shown,
        Json(json!({
            "collectionId": collection,
            "contents": contents,
            "transactionId": txid.to_string(),
        })),
    ))
}

/// `GET /app/collections`: the collection ids, in pages.
pub(crate) async fn collections(
    State(state): State<NodeState>,
    AsReader { query: q, .. }: AsReader,
) -> Result<Response, ApiError> {
    let keys = state
        .store
        .entries(entries_map(state.ledger_public()))
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

/// `GET /app/transactions/{txid}/status`.
pub(crate) async fn status(
    State(state): State<NodeState>,
    _: AsReader,
    Path(txid): Path<String>,
) -> Result<Response, ApiError> {
    let txid = parse_txid(&txid)?;
    let s = state
        .service
        .status(txid)
        .map_err(|e| ApiError::service("reading the ledger failed", e))?;
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

/// The receipt of `txid` with the claims it proves, as the receipt routes answer it.
pub(crate) async fn receipt_of(state: &NodeState, txid: TxId) -> Result<Response, ApiError> {
    let receipt = state
        .service
        .receipt(txid)
        .await
        .map_err(|e| ApiError::service("building the receipt failed", e))?;
    Ok(with_txid(Some(txid), Json(receipt)))
}

/// `GET /app/transactions/{txid}/receipt`.
pub(crate) async fn receipt(
    State(state): State<NodeState>,
    _: AsReader,
    Path(txid): Path<String>,
) -> Result<Response, ApiError> {
    receipt_of(&state, parse_txid(&txid)?).await
}

fn seqno_param(q: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    q.get(name)
        .filter(|v| !v.is_empty())
        .map(|v| parse_txid(v).map(|t| t.seqno.0))
        .transpose()
}

/// `GET /app/transactions`: committed entries of one collection in an inclusive
/// TxId range, 1000 per page, with a relative `nextLink` to the rest.
pub(crate) async fn list_entries(
    State(state): State<NodeState>,
    AsReader { query: q, .. }: AsReader,
) -> Result<Response, ApiError> {
    let collection = collection(&q)?;
    let committed = state.engine().committed_seqno();
    let from = seqno_param(&q, "fromTransactionId")?.unwrap_or(1);
    let to = seqno_param(&q, "toTransactionId")?
        .unwrap_or(u64::MAX)
        .min(committed.0);
    if from > to && q.contains_key("toTransactionId") && to < committed.0 {
        return Err(ApiError::bad_request(
            "InvalidInput",
            "fromTransactionId must not be after toTransactionId",
        ));
    }
    let tag = q.get("tag").filter(|t| !t.is_empty()).cloned();
    let (entries, next) = state
        .service
        .entries(collection.clone(), SeqNo(from), SeqNo(to), tag, PAGE_SIZE)
        .await
        .map_err(|e| ApiError::service("reading the ledger failed", e))?;
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

/// `GET /app/enclaveQuotes`: this node's evidence, in ACL's shape.
pub(crate) async fn enclave_quotes(
    State(state): State<NodeState>,
    _: AsReader,
) -> Result<Response, ApiError> {
    let quote = &state.quote;
    let hex: String = quote.raw().iter().map(|b| format!("{b:02x}")).collect();
    let id = state.node_id();
    let body = json!({
        "currentNodeId": id,
        "enclaveQuotes": {
            id: {
                "nodeId": id,
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
pub(crate) async fn governance_members(
    State(state): State<NodeState>,
    _: AsReader,
) -> Result<Response, ApiError> {
    let engine = state.engine();
    let members: Vec<Value> = engine
        .store()
        .entries(MEMBERS_CERTS)
        .into_iter()
        .map(|(id, pem)| json!({"certificate": String::from_utf8_lossy(&pem), "id": String::from_utf8_lossy(&id)}))
        .collect();
    Ok(with_txid(
        engine.last_txid(),
        Json(json!({"members": members})),
    ))
}

/// The constitution and its digest (ACL's read-only view).
pub(crate) async fn governance_constitution(
    State(state): State<NodeState>,
    _: AsReader,
) -> Result<Response, ApiError> {
    let engine = state.engine();
    let script = engine
        .store()
        .get(CONSTITUTION, CONSTITUTION_KEY)
        .ok_or_else(|| ApiError::not_found("ResourceNotFound", "no constitution has been set"))?;
    let digest = covenant_crypto::sha256(&script).to_hex();
    Ok(with_txid(
        engine.last_txid(),
        Json(json!({"digest": digest, "script": String::from_utf8_lossy(&script)})),
    ))
}

/// `GET /ledgerIdentity/{ledgerId}`: the service certificate, as ACL's identity
/// service answers it.
pub(crate) async fn ledger_identity(
    State(state): State<NodeState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(crate::identity::own(&state.ledger_id, &state.service_cert_pem, &id)?.into_response())
}
