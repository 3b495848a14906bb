//! CCF's current governance API (api-versions `2023-06-01-preview` and
//! `2024-07-01`; the only form CCF 7 has): `/gov/members/...` for what members
//! do, `/gov/service/...` to read the service. Writes are COSE Sign1 only
//! ([`crate::gov::Accepts::COSE`]) and share the classic routes' operations and
//! replay protection; replies are camelCase, lists `{"value": [...]}`.
//!
//! Paths carry their verb after a colon (`proposals:create`, `{id}:withdraw`),
//! which a router cannot match inside a segment: each family is one wildcard
//! route, dispatched here.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use covenant_governance::{
    ProposalInfo, CONSTITUTION, CONSTITUTION_KEY, MEMBERS_ACKS, MEMBERS_CERTS,
    MEMBERS_ENCRYPTION_KEYS, MEMBERS_INFO, PROPOSALS, PROPOSALS_INFO,
};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::gov::{self, authenticate, Accepts, GovRequest};
use crate::http::with_txid;
use crate::state::NodeState;

/// The api-versions of CCF's governance API.
pub const GOV_API_VERSIONS: &[&str] = &["2023-06-01-preview", "2024-07-01"];

/// The request's api-version must be one this route serves (`min`: the oldest).
pub(crate) fn api_version(q: &HashMap<String, String>, min: &str) -> Result<(), ApiError> {
    let accepted: Vec<&str> = GOV_API_VERSIONS
        .iter()
        .copied()
        .filter(|v| *v >= min)
        .collect();
    match q.get("api-version") {
        None => Err(ApiError::bad_request(
            "MissingApiVersionParameter",
            format!(
                "The api-version query parameter (?api-version=) is required for all requests. The supported api-versions are: {}",
                accepted.join(", ")
            ),
        )),
        Some(v) if accepted.contains(&v.as_str()) => Ok(()),
        Some(v) => Err(ApiError::bad_request(
            "UnsupportedApiVersionValue",
            format!(
                "Unsupported api-version '{v}'. The supported api-versions are: {}",
                accepted.join(", ")
            ),
        )),
    }
}

fn not_found(what: impl Into<String>) -> ApiError {
    ApiError::not_found("ResourceNotFound", what)
}

/// A 64-digit hex id (member, proposal, node, user) from a path.
pub(crate) fn entity_id<'a>(s: &'a str, what: &str) -> Result<&'a str, ApiError> {
    if s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()) {
        Ok(s)
    } else {
        Err(ApiError::bad_request(
            "InvalidResourceName",
            format!("'{s}' is not a valid hex-encoded {what} ID"),
        ))
    }
}

fn text_javascript(body: Vec<u8>) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript"),
    );
    r
}

/// A proposal as this API shows it.
fn proposal_json(id: &str, info: &ProposalInfo) -> Value {
    let mut v = json!({
        "proposalId": id,
        "proposerId": info.proposer_id,
        "proposalState": info.state,
        "ballotCount": info.ballots.len(),
        "ballotSubmitters": info.ballots.keys().collect::<Vec<_>>(),
    });
    if let Some(f) = &info.final_votes {
        v["finalVotes"] = json!(f);
    }
    if let Some(f) = &info.failure {
        v["failure"] = json!(f);
    }
    v
}

pub(crate) fn same_member(path: &str, signed: &gov::Signed) -> Result<(), ApiError> {
    if path.eq_ignore_ascii_case(signed.member.as_str()) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "InvalidAuthenticationInfo",
            format!(
                "Member ID from path parameter ({path}) does not match member ID from body signature ({}).",
                signed.member
            ),
        ))
    }
}

/// `/gov/members/{*rest}`: proposals, ballots and state digests.
pub async fn members(
    State(state): State<NodeState>,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    req: GovRequest,
) -> Result<Response, ApiError> {
    let segments: Vec<&str> = rest.split('/').collect();
    let post = req.method == Method::POST;
    let get = req.method == Method::GET;
    match (segments.as_slice(), post, get) {
        (["proposals:create"], true, _) => {
            let signed = authenticate(&state, &req, "proposal", None, Accepts::COSE)?;
            api_version(&q, GOV_API_VERSIONS[0])?;
            let (txid, (id, info)) = gov::do_propose(&state, signed).await?;
            Ok(with_txid(Some(txid), Json(proposal_json(&id, &info))))
        }
        (["proposals"], _, true) => {
            api_version(&q, GOV_API_VERSIONS[0])?;
            let mut out = Vec::new();
            for (key, raw) in state.store.entries(PROPOSALS_INFO) {
                let id = String::from_utf8_lossy(&key).into_owned();
                let info: ProposalInfo = serde_json::from_slice(&raw)
                    .map_err(|e| ApiError::internal("a proposal's info is corrupt", e))?;
                let seqno = state.store.version_of(PROPOSALS, &key).unwrap_or_default();
                out.push((seqno, proposal_json(&id, &info)));
            }
            out.sort_by_key(|(seqno, _)| *seqno);
            let value: Vec<Value> = out.into_iter().map(|(_, v)| v).collect();
            Ok(Json(json!({ "value": value })).into_response())
        }
        (["proposals", one], true, _) if one.ends_with(":withdraw") => {
            let id = entity_id(one.trim_end_matches(":withdraw"), "proposal")?;
            let signed = authenticate(&state, &req, "withdrawal", Some(id), Accepts::COSE)?;
            api_version(&q, GOV_API_VERSIONS[0])?;
            let (txid, info) = gov::do_withdraw(&state, signed, id.to_string()).await?;
            Ok(with_txid(Some(txid), Json(proposal_json(id, &info))))
        }
        (["proposals", id], _, true) => {
            api_version(&q, GOV_API_VERSIONS[0])?;
            let id = entity_id(id, "proposal")?;
            let (_, info) = covenant_governance::proposal(&mut state.store.begin(), id)
                .map_err(gov::gov_error)?;
            Ok(Json(proposal_json(id, &info)).into_response())
        }
        (["proposals", id, "actions"], _, true) => {
            api_version(&q, GOV_API_VERSIONS[0])?;
            let id = entity_id(id, "proposal")?;
            let (body, _) = covenant_governance::proposal(&mut state.store.begin(), id)
                .map_err(gov::gov_error)?;
            let mut r = (StatusCode::OK, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(r)
        }
        (["proposals", id, "ballots", member], true, _) if member.ends_with(":submit") => {
            let id = entity_id(id, "proposal")?;
            let member = entity_id(member.trim_end_matches(":submit"), "member")?;
            let signed = authenticate(&state, &req, "ballot", Some(id), Accepts::COSE)?;
            api_version(&q, GOV_API_VERSIONS[0])?;
            same_member(member, &signed)?;
            let (txid, info) = gov::do_ballot(&state, signed, id.to_string()).await?;
            Ok(with_txid(Some(txid), Json(proposal_json(id, &info))))
        }
        (["proposals", id, "ballots", member], _, true) => {
            api_version(&q, GOV_API_VERSIONS[0])?;
            let id = entity_id(id, "proposal")?;
            let member = entity_id(member, "member")?;
            Ok(text_javascript(
                gov::ballot_of(&state, id, member)?.into_bytes(),
            ))
        }
        (["state-digests", member], _, true) => {
            api_version(&q, GOV_API_VERSIONS[0])?;
            let digest = state
                .store
                .get(MEMBERS_ACKS, member.as_bytes())
                .and_then(|v| serde_json::from_slice::<Value>(&v).ok())
                .and_then(|v| v["state_digest"].as_str().map(str::to_string))
                .ok_or_else(|| not_found(format!("No ACK record exists for member {member}.")))?;
            Ok(Json(json!({"memberId": member, "stateDigest": digest})).into_response())
        }
        (["state-digests", member], true, _) if member.ends_with(":update") => {
            let member = member.trim_end_matches(":update");
            let signed = authenticate(&state, &req, "state_digest", None, Accepts::COSE)?;
            api_version(&q, GOV_API_VERSIONS[0])?;
            same_member(member, &signed)?;
            let member = signed.member.clone();
            let (txid, digest) = gov::do_update_state_digest(&state, signed).await?;
            Ok(with_txid(
                Some(txid),
                Json(json!({"memberId": member, "stateDigest": digest})),
            ))
        }
        (["state-digests", member], true, _) if member.ends_with(":ack") => {
            let member = member.trim_end_matches(":ack");
            let signed = authenticate(&state, &req, "ack", None, Accepts::COSE)?;
            api_version(&q, GOV_API_VERSIONS[0])?;
            same_member(member, &signed)?;
            let digest = gov::payload_text(&signed.msg, "stateDigest", "<hex>")?;
            let (txid, _) = gov::do_ack(&state, signed, digest).await?;
            Ok(with_txid(Some(txid), StatusCode::NO_CONTENT))
        }
        _ => Err(unknown(&req.method, &format!("/gov/members/{rest}"))),
    }
}

fn unknown(method: &Method, path: &str) -> ApiError {
    ApiError::not_found(
        "ResourceNotFound",
        format!("Unknown path: {method} {path}."),
    )
}

/// A member as this API shows it.
fn member_json(state: &NodeState, id: &[u8], cert: &[u8]) -> Value {
    let info: Value = state
        .store
        .get(MEMBERS_INFO, id)
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or(Value::Null);
    let enc = state
        .store
        .get(MEMBERS_ENCRYPTION_KEYS, id)
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    let role = info["recovery_role"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| {
            if enc.is_some() {
                "Participant"
            } else {
                "NonParticipant"
            }
            .to_string()
        });
    let mut v = json!({
        "memberId": String::from_utf8_lossy(id),
        "status": info["status"],
        "memberData": info["member_data"],
        "certificate": String::from_utf8_lossy(cert),
        "recoveryRole": role,
    });
    if let Some(e) = enc {
        v["publicEncryptionKey"] = Value::String(e);
    }
    v
}

/// A node as this API shows it.
fn node_json(id: &str, row: &covenant_service::NodeInfo) -> Value {
    let mut v = json!({
        "nodeId": id,
        "status": row.status,
        "nodeData": row.node_data.clone().unwrap_or(Value::Null),
        "retiredCommitted": false,
        "rpcInterfaces": {"primary_rpc_interface": {"publishedAddress": row.address, "protocol": "HTTP1"}},
    });
    if !row.cert.is_empty() {
        v["certificate"] = Value::String(row.cert.clone());
    }
    v
}

/// `/gov/service/{*rest}`: the service's state, read-only.
pub async fn service(
    State(state): State<NodeState>,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    method: Method,
) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UnsupportedHttpVerb",
            format!("Allowed methods for '/gov/service/{rest}' are: GET."),
        ));
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let v1 = GOV_API_VERSIONS[1];
    match segments.as_slice() {
        ["javascript-app"] | ["javascript-modules", ..] | ["js-modules", ..] => {
            api_version(&q, v1)?
        }
        _ => api_version(&q, GOV_API_VERSIONS[0])?,
    }
    let store = &state.store;
    match segments.as_slice() {
        ["info"] => {
            let config: Value = store
                .get(covenant_governance::SERVICE_CONFIG, b"0")
                .and_then(|v| serde_json::from_slice(&v).ok())
                .unwrap_or(Value::Null);
            Ok(Json(json!({
                "status": covenant_governance::service_status(store)
                    .unwrap_or(covenant_governance::ServiceStatus::Open),
                "certificate": *state.service_cert_pem,
                "recoveryCount": 0,
                "serviceData": Value::Null,
                "configuration": {
                    "recoveryThreshold": covenant_service::recovery::threshold(&config),
                    "maximumNodeCertificateValidityDays": 365,
                    "maximumServiceCertificateValidityDays": 365,
                    "recentCoseProposalsWindowSize": config["recent_cose_proposals_window_size"].as_u64().unwrap_or(100),
                },
            }))
            .into_response())
        }
        ["constitution"] => store
            .get(CONSTITUTION, CONSTITUTION_KEY)
            .map(text_javascript)
            .ok_or_else(|| not_found("Constitution not found")),
        ["members"] => {
            let value: Vec<Value> = store
                .entries(MEMBERS_CERTS)
                .iter()
                .map(|(id, cert)| member_json(&state, id, cert))
                .collect();
            Ok(Json(json!({ "value": value })).into_response())
        }
        ["members", id] => {
            let id = entity_id(id, "member")?;
            let cert = store
                .get(MEMBERS_CERTS, id.as_bytes())
                .ok_or_else(|| not_found(format!("Member {id} does not exist.")))?;
            Ok(Json(member_json(&state, id.as_bytes(), &cert)).into_response())
        }
        ["users"] => {
            let value: Vec<Value> = store
                .entries(crate::auth::USERS_CERTS)
                .iter()
                .map(|(id, cert)| user_json(&state, id, cert))
                .collect();
            Ok(Json(json!({ "value": value })).into_response())
        }
        ["users", id] => {
            let id = entity_id(id, "user")?;
            let cert = store
                .get(crate::auth::USERS_CERTS, id.as_bytes())
                .ok_or_else(|| not_found(format!("User {id} does not exist.")))?;
            Ok(Json(user_json(&state, id.as_bytes(), &cert)).into_response())
        }
        ["nodes"] => {
            let value: Vec<Value> = state
                .node_rows()
                .iter()
                .map(|(id, row)| node_json(id.as_str(), row))
                .collect();
            Ok(Json(json!({ "value": value })).into_response())
        }
        ["nodes", id] => {
            let id = entity_id(id, "node")?;
            state
                .node_rows()
                .iter()
                .find(|(n, _)| n.as_str().eq_ignore_ascii_case(id))
                .map(|(n, row)| Json(node_json(n.as_str(), row)).into_response())
                .ok_or_else(|| not_found(format!("Node {id} does not exist.")))
        }
        ["join-policy"] => {
            let measurements: Vec<String> = store
                .entries(covenant_service::tables::NODES_CODE_IDS)
                .into_iter()
                .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
                .collect();
            Ok(Json(json!({
                "sgx": {"measurements": []},
                "snp": {"measurements": [], "hostData": {}, "uvmEndorsements": {}, "tcbVersions": {}},
                "virtual": {"measurements": measurements, "hostData": []},
            }))
            .into_response())
        }
        ["javascript-app"] => {
            let original = match q.get("case").map(String::as_str) {
                None => false,
                Some("original") => true,
                Some(other) => {
                    return Err(ApiError::bad_request(
                        "InvalidQueryParameterValue",
                        format!("case={other} is not supported (only case=original)"),
                    ))
                }
            };
            let mut endpoints = serde_json::Map::new();
            for (key, raw) in store.entries(covenant_app::ENDPOINTS) {
                let key = String::from_utf8_lossy(&key).into_owned();
                let Some((verb, path)) = key.split_once(' ') else {
                    continue;
                };
                let props: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                let shown = if original {
                    props
                } else {
                    camel_endpoint(&props)
                };
                let entry = endpoints
                    .entry(path.to_string())
                    .or_insert_with(|| json!({}));
                entry[verb.to_ascii_uppercase()] = shown;
            }
            Ok(Json(json!({ "endpoints": endpoints })).into_response())
        }
        ["javascript-modules"] | ["js-modules"] => {
            let value: Vec<Value> = store
                .entries(covenant_app::MODULES)
                .into_iter()
                .map(|(k, _)| {
                    let name = String::from_utf8_lossy(&k).into_owned();
                    let name = if name.starts_with('/') {
                        name
                    } else {
                        format!("/{name}")
                    };
                    json!({ "moduleName": name })
                })
                .collect();
            Ok(Json(json!({ "value": value })).into_response())
        }
        ["javascript-modules", name] | ["js-modules", name] => {
            let bare = name.trim_start_matches('/');
            store
                .get(covenant_app::MODULES, bare.as_bytes())
                .or_else(|| store.get(covenant_app::MODULES, format!("/{bare}").as_bytes()))
                .map(text_javascript)
                .ok_or_else(|| not_found(format!("Module {name} does not exist.")))
        }
        ["jwk"] => Ok(Json(jwk(&state)).into_response()),
        ["transactions", "commit"] => {
            let txid = state
                .service
                .committed_txid()
                .map_err(|e| ApiError::service("reading the ledger failed", e))?;
            Ok(Json(json!({"status": "Committed", "transactionId": txid.map(|t| t.to_string()).unwrap_or_else(|| "0.0".into())})).into_response())
        }
        ["transactions", txid] => {
            let parsed: covenant_types::TxId = txid.parse().map_err(|_| {
                ApiError::bad_request(
                    "InvalidQueryParameterValue",
                    format!("The value '{txid}' passed as parameter 'transactionId' could not be converted to a valid Transaction ID."),
                )
            })?;
            let status = crate::http::status_word(
                state
                    .service
                    .status(parsed)
                    .map_err(|e| ApiError::service("reading the ledger failed", e))?,
            );
            Ok(Json(json!({"status": status, "transactionId": txid})).into_response())
        }
        _ => Err(unknown(&method, &format!("/gov/service/{rest}"))),
    }
}

fn user_json(state: &NodeState, id: &[u8], cert: &[u8]) -> Value {
    let info: Value = state
        .store
        .get(crate::auth::USERS_INFO, id)
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or(Value::Null);
    json!({
        "userId": String::from_utf8_lossy(id),
        "certificate": String::from_utf8_lossy(cert),
        "userData": info["user_data"],
    })
}

/// An endpoint's stored properties in this API's casing.
fn camel_endpoint(props: &Value) -> Value {
    let Some(obj) = props.as_object() else {
        return props.clone();
    };
    let mut out = serde_json::Map::new();
    for (k, v) in obj {
        let key = match k.as_str() {
            "js_module" => "jsModule",
            "js_function" => "jsFunction",
            "forwarding_required" => "forwardingRequired",
            "redirection_strategy" => "redirectionStrategy",
            "authn_policies" => "authnPolicies",
            "openapi" => "openApi",
            "openapi_hidden" => "openApiHidden",
            other => other,
        };
        out.insert(key.to_string(), v.clone());
    }
    Value::Object(out)
}

/// The JWT issuers and their keys (by kid).
fn jwk(state: &NodeState) -> Value {
    let mut issuers = serde_json::Map::new();
    let mut keys = serde_json::Map::new();
    for g in crate::jwt::governed_keys(&state.store) {
        let mut meta = json!({"autoRefresh": g.row["auto_refresh"].as_bool().unwrap_or(false)});
        if let Some(b) = g.row["ca_cert_bundle_name"].as_str() {
            meta["caCertBundleName"] = json!(b);
        }
        issuers.insert(g.issuer.clone(), meta);
        for key in g.keys {
            let mut k = json!({"issuer": g.issuer, "jwk": key.jwk});
            if let Some(c) = key.cert_pem {
                k["certificate"] = json!(c);
            }
            if let Some(list) = keys
                .entry(key.kid)
                .or_insert_with(|| json!([]))
                .as_array_mut()
            {
                list.push(k);
            }
        }
    }
    json!({"issuers": issuers, "keys": keys, "caCertBundles": {}})
}
