//! HTTP helpers every route module shares: query parameters and api-versions,
//! TxIds in and out, paging links, and the header and path names nodes use among
//! themselves. A leaf: it imports no other module of this crate but [`crate::error`].

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use covenant_engine::TxStatus;
use covenant_types::TxId;

use crate::error::ApiError;

/// A route's query parameters.
pub(crate) type Params = Query<HashMap<String, String>>;

/// The header naming the transaction a response reflects (CCF, ACL).
pub(crate) const TXID_HEADER: HeaderName = HeaderName::from_static("x-ms-ccf-transaction-id");
/// Set by a backup on a request it forwards to the primary.
pub const FORWARDED: &str = "x-covenant-forwarded";
/// The original client's certificate (base64 DER) on a forwarded request.
pub const FORWARDED_CERT: &str = "x-covenant-forwarded-cert";
/// On a read a node forwards: the commit point the forwarding node has already
/// shown (the answering node first catches up with it). On the answer: the
/// answering node's commit point, which the forwarding node then never shows less
/// than.
pub const FORWARDED_COMMITTED: &str = "x-covenant-forwarded-committed";
/// Raft messages between nodes.
pub const RAFT_PATH: &str = "/internal/raft";
/// On [`RAFT_PATH`] requests: `<raft id> <address>` of the sending node, so that a
/// node without its row (away since it joined) can answer it.
pub const RAFT_SENDER_HEADER: &str = "x-covenant-raft-sender";
/// A founding node records itself in the nodes table on the primary.
pub const REGISTER_PATH: &str = "/internal/register";
/// A new node asks to join the network.
pub const JOIN_PATH: &str = "/node/join";
/// A joining node fetches the latest committed snapshot.
pub const SNAPSHOT_PATH: &str = "/internal/snapshot";
/// Largest body of a consensus batch between nodes.
pub const MAX_RAFT_BODY_BYTES: usize = 64 << 20;

/// Entries (or keys) per page of a listing (SPEC §4).
pub const PAGE_SIZE: usize = 1000;

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

/// Whether the request's api-version is `from` (a date) or later.
pub(crate) fn api_at_least(q: &HashMap<String, String>, from: &str) -> bool {
    q.get("api-version")
        .and_then(|v| v.get(..10))
        .is_some_and(|d| d >= from)
}

pub(crate) fn parse_txid(s: &str) -> Result<TxId, ApiError> {
    s.parse().map_err(|e: covenant_types::TxIdParseError| {
        ApiError::bad_request("InvalidTransactionId", e.to_string())
    })
}

/// The `transaction_id` query parameter (CCF's node routes).
pub(crate) fn txid_param(q: &HashMap<String, String>) -> Result<TxId, ApiError> {
    let raw = q.get("transaction_id").ok_or_else(|| {
        ApiError::bad_request("QueryParameterError", "transaction_id is required")
    })?;
    parse_txid(raw)
}

/// CCF's word for a transaction's status.
pub(crate) fn status_word(s: TxStatus) -> &'static str {
    match s {
        TxStatus::Unknown => "Unknown",
        TxStatus::Pending => "Pending",
        TxStatus::Committed => "Committed",
        TxStatus::Invalid => "Invalid",
    }
}

/// `body` with the [`TXID_HEADER`] of `txid`, if any.
pub(crate) fn with_txid(txid: Option<TxId>, body: impl IntoResponse) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(t) = txid {
        if let Ok(v) = HeaderValue::from_str(&t.to_string()) {
            headers.insert(TXID_HEADER, v);
        }
    }
    (headers, body).into_response()
}

/// `k=v&...` with the values percent-encoded.
pub(crate) fn encode_query(pairs: &[(&str, String)]) -> String {
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

/// The request's bearer token; `None` without an `Authorization` header, 401 for
/// any other scheme.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = auth
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(|t| Some(t.trim()))
        .ok_or_else(|| ApiError::unauthorized("only Bearer authorization is supported"))
}
