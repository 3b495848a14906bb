//! `/node/api`: an OpenAPI 3 document of every route, built from the same table the
//! tests walk, so it cannot silently fall behind the router.

use serde_json::{json, Map, Value};

/// (method, path, summary, who may call it).
pub const ROUTES: &[(&str, &str, &str, &str)] = &[
    (
        "post",
        "/app/transactions",
        "Append an entry to a collection",
        "Contributor",
    ),
    (
        "get",
        "/app/transactions",
        "Committed entries of a collection in a TxId range (1000 per page, nextLink)",
        "Reader",
    ),
    (
        "get",
        "/app/transactions/current",
        "The latest entry of a collection",
        "Reader",
    ),
    (
        "get",
        "/app/transactions/{transactionId}",
        "The entry a transaction wrote (Loading until committed)",
        "Reader",
    ),
    (
        "get",
        "/app/transactions/{transactionId}/status",
        "Pending or Committed",
        "Reader",
    ),
    (
        "get",
        "/app/transactions/{transactionId}/receipt",
        "Offline-verifiable receipt (Loading until signed and committed)",
        "Reader",
    ),
    (
        "get",
        "/app/collections",
        "Collections with at least one entry",
        "Reader",
    ),
    (
        "get",
        "/app/users/{userId}",
        "A user's highest built-in role (v1, at every api-version)",
        "Administrator",
    ),
    (
        "patch",
        "/app/users/{userId}",
        "Set a user's single role (merge patch)",
        "Administrator",
    ),
    (
        "delete",
        "/app/users/{userId}",
        "Remove a user",
        "Administrator",
    ),
    (
        "get",
        "/app/ledgerUsers",
        "Users and their roles",
        "Administrator",
    ),
    (
        "get",
        "/app/ledgerUsers/{userId}",
        "A user's roles",
        "Administrator",
    ),
    (
        "patch",
        "/app/ledgerUsers/{userId}",
        "Add roles to a user",
        "Administrator",
    ),
    (
        "delete",
        "/app/ledgerUsers/{userId}",
        "Remove a user (succeeds if unknown)",
        "Administrator",
    ),
    (
        "get",
        "/app/enclaveQuotes",
        "Attestation evidence of the nodes",
        "Reader",
    ),
    (
        "get",
        "/app/governance/members",
        "Consortium members",
        "Reader",
    ),
    (
        "get",
        "/app/governance/constitution",
        "The constitution script and its digest",
        "Reader",
    ),
    (
        "get",
        "/ledgerIdentity/{ledgerId}",
        "The service certificate of this ledger (identity service)",
        "anyone",
    ),
    (
        "get",
        "/node/ping",
        "Liveness: answers at once, touches nothing",
        "anyone",
    ),
    (
        "get",
        "/node/state",
        "This node's id, state and position",
        "anyone",
    ),
    ("get", "/node/version", "Software version", "anyone"),
    (
        "get",
        "/node/network",
        "Service status, certificate and current view",
        "anyone",
    ),
    (
        "get",
        "/node/network/nodes",
        "Nodes of the network: status, address, which one is primary",
        "anyone",
    ),
    (
        "post",
        "/internal/register",
        "A node records itself in public:ccf.gov.nodes.info (primary only)",
        "nodes endorsed by the service identity",
    ),
    (
        "post",
        "/internal/raft",
        "Consensus messages between nodes (length-prefixed raft-rs messages)",
        "nodes endorsed by the service identity",
    ),
    (
        "post",
        "/node/join",
        "A node asks to join (and polls): attestation evidence and address; Trusted nodes get the network's identity",
        "a joining node, presenting its own key as client certificate",
    ),
    (
        "get",
        "/internal/snapshot",
        "The latest committed snapshot (a joining node starts from it)",
        "nodes endorsed by the service identity",
    ),
    ("post", "/gov/proposals", "Submit a proposal (COSE Sign1, msg type proposal)", "active members"),
    ("get", "/gov/proposals", "Every proposal (or ?state=Open etc.), oldest first", "anyone"),
    ("get", "/gov/proposals/{proposal_id}", "A proposal's state, ballots and outcome", "anyone"),
    ("get", "/gov/proposals/{proposal_id}/actions", "A proposal as submitted", "anyone"),
    ("post", "/gov/proposals/{proposal_id}/ballots", "Vote (COSE Sign1, msg type ballot): {\"ballot\": js}", "active members"),
    ("post", "/gov/proposals/{proposal_id}/withdraw", "Withdraw an Open proposal (COSE Sign1, msg type withdrawal)", "the proposer"),
    ("get", "/gov/members", "Members: cert, data, encryption key, status", "anyone"),
    ("get", "/gov/constitution", "The constitution (JavaScript)", "anyone"),
    ("post", "/gov/ack/update_state_digest", "The state digest to ack (COSE Sign1, msg type state_digest)", "members"),
    ("post", "/gov/ack", "Ack the state digest and become Active (COSE Sign1, msg type ack)", "members"),
    ("get", "/node/commit", "Last committed TxId", "anyone"),
    (
        "get",
        "/node/tx",
        "Status of a TxId (Unknown, Pending, Committed, Invalid)",
        "anyone",
    ),
    ("get", "/node/receipt", "Receipt of a TxId", "anyone"),
    ("get", "/node/metrics", "Prometheus metrics", "anyone"),
    ("get", "/node/api", "This document (with the deployed app's endpoints)", "anyone"),
    ("get", "/app/users", "Every user and its highest role (1000 per page, nextLink)", "Administrator"),
    ("get", "/app/roles", "A user-defined role and its actions (?roleName=)", "Administrator"),
    ("put", "/app/roles", "Define roles: {\"roles\": [{\"role_name\", \"role_actions\"}]}", "Administrator"),
    ("patch", "/app/roles", "Replace the actions of defined roles", "Administrator"),
    ("delete", "/app/roles", "Delete a role (?roleName=), taking it from its users", "Administrator"),
    ("get", "/app/userDefinedEndpoints", "The deployed app bundle (metadata and modules)", "Reader"),
    ("put", "/app/userDefinedEndpoints", "Deploy an app bundle, replacing the app (201)", "Administrator"),
    ("get", "/app/userDefinedEndpoints/runtimeOptions", "The JS runtime options", "Reader"),
    ("patch", "/app/userDefinedEndpoints/runtimeOptions", "Change some JS runtime options", "Administrator"),
    ("get", "/app/userDefinedEndpoints/modules", "One module of the deployed app (?module_name=)", "Reader"),
    ("get", "/app/userDefinedFunctions", "Every user-defined function", "Reader"),
    ("get", "/app/userDefinedFunctions/{functionId}", "A user-defined function", "Reader"),
    ("put", "/app/userDefinedFunctions/{functionId}", "Create (201) or replace (200) a function {\"code\"}", "Administrator"),
    ("delete", "/app/userDefinedFunctions/{functionId}", "Delete a function (204)", "Administrator"),
    (
        "post",
        "/app/userDefinedFunctions/{functionId}:execute",
        "Run a function: {\"arguments\", \"exportedFunctionName\", \"runtimeOptions\"}",
        "Contributor",
    ),
];

fn params(path: &str, method: &str) -> Vec<Value> {
    let mut out: Vec<Value> = path
        .split('/')
        .filter_map(|seg| {
            let (_, rest) = seg.split_once('{')?;
            rest.split_once('}').map(|(name, _)| name)
        })
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if path.starts_with("/app/") {
        out.push(json!({"name": "api-version", "in": "query", "required": true, "schema": {"type": "string"},
                        "example": "2022-05-13"}));
        if path.starts_with("/app/transactions") {
            out.push(json!({"name": "collectionId", "in": "query", "required": false, "schema": {"type": "string"}}));
        }
        if path == "/app/transactions" && method == "get" {
            for name in ["fromTransactionId", "toTransactionId"] {
                out.push(json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}}));
            }
        }
    }
    if path == "/node/tx" || path == "/node/receipt" {
        out.push(json!({"name": "transaction_id", "in": "query", "required": true, "schema": {"type": "string"}}));
    }
    out
}

/// The document, with the endpoints of `app` (each with its bundle's `openapi`
/// object, or a stub naming its handler) when one is deployed.
pub fn document(app: Option<&covenant_app::App>) -> Value {
    let mut paths = Map::new();
    for (method, path, summary, who) in ROUTES {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = json!({
            "summary": summary,
            "description": format!("Caller: {who}."),
            "parameters": params(path, method),
            "responses": {
                "200": {"description": "Success; carries x-ms-ccf-transaction-id where a TxId applies"},
                "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
    }
    for route in app.map(covenant_app::App::routes).unwrap_or_default() {
        let path = format!("{}{}", covenant_app::PREFIX, route.template);
        let p = &route.properties;
        let mut op = match &p.openapi {
            Value::Object(o) => Value::Object(o.clone()),
            _ => json!({}),
        };
        if op.get("summary").is_none() {
            op["summary"] = json!(format!("{} in {}", p.js_function, p.js_module));
        }
        if op.get("responses").is_none() {
            op["responses"] = json!({"default": {"description": "The app's answer"}});
        }
        if op.get("parameters").is_none() {
            op["parameters"] = json!(params(&route.template, ""));
        }
        op["x-covenant-app"] = json!({"mode": p.mode(), "authn_policies": p.authn_policies,
                                      "js_module": p.js_module, "js_function": p.js_function});
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "covenant", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}}}
    })
}
