//! The router: every route of the node and the middleware around them, outermost
//! last: request counting, the edge (identity, credentials, limits), forwarding,
//! the service-open gate, JS app dispatch, then the route. Only this module
//! imports the handler modules.

use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::error::ApiError;
use crate::ledger_api as ledger;
use crate::state::NodeState;
use crate::users;

/// Every route of the node, behind the [`crate::edge`] checks with bodies capped
/// at `max_body_bytes`.
pub fn router(state: NodeState, max_body_bytes: usize) -> Router {
    Router::new()
        .route(
            "/app/transactions",
            post(ledger::append).get(ledger::list_entries),
        )
        .route("/app/transactions/current", get(ledger::current))
        .route("/app/transactions/{txid}", get(ledger::get_entry))
        .route("/app/transactions/{txid}/status", get(ledger::status))
        .route("/app/transactions/{txid}/receipt", get(ledger::receipt))
        .route("/app/collections", get(ledger::collections))
        .route("/app/users", get(users::list_v1))
        .route(
            "/app/users/{user_id}",
            get(users::get_v1)
                .patch(users::patch_v1)
                .delete(users::delete),
        )
        .route("/app/ledgerUsers", get(users::list))
        .route(
            "/app/ledgerUsers/{user_id}",
            get(users::get_multi)
                .patch(users::patch_multi)
                .delete(users::delete),
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
        .route("/app/enclaveQuotes", get(ledger::enclave_quotes))
        .route("/app/governance/members", get(ledger::governance_members))
        .route(
            "/app/governance/constitution",
            get(ledger::governance_constitution),
        )
        .route("/ledgerIdentity/{ledger_id}", get(ledger::ledger_identity))
        .route("/node/ping", get(|| async { Json(json!({})) }))
        .route("/node/network/nodes", get(crate::node_api::network_nodes))
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
        .route("/app/commit", get(crate::node_api::node_commit))
        .route("/app/tx", get(crate::node_api::node_tx))
        .route("/app/api", get(crate::node_api::api))
        .route("/gov/commit", get(crate::node_api::node_commit))
        .route("/gov/tx", get(crate::node_api::node_tx))
        .route("/gov/api", get(crate::node_api::api))
        .route("/gov/kv/{*table}", get(crate::node_api::gov_kv))
        .route("/gov/jwt_keys/all", get(crate::node_api::jwt_keys_all))
        .route(
            "/gov/encrypted_recovery_share/{member_id}",
            get(crate::recovery::encrypted_share_classic),
        )
        .route(
            "/gov/recovery/encrypted-shares/{member_id}",
            get(crate::recovery::encrypted_share),
        )
        .route("/gov/recovery/status", get(crate::recovery::status))
        .route(
            "/gov/recovery_share",
            axum::routing::post(crate::recovery::submit_classic),
        )
        .route(
            "/gov/recovery/members/{member}",
            axum::routing::post(crate::recovery::submit_current),
        )
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
        .route(crate::http::JOIN_PATH, post(crate::join::join))
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
        .route(crate::http::SNAPSHOT_PATH, get(crate::join::snapshot))
        .route(
            crate::http::REGISTER_PATH,
            axum::routing::post(crate::cluster::register),
        )
        // Consensus batches are larger than any API request: the edge caps them at
        // MAX_RAFT_BODY_BYTES, for nodes only.
        .route(
            crate::http::RAFT_PATH,
            axum::routing::post(crate::cluster::raft_messages),
        )
        .route("/node/state", get(crate::node_api::node_state))
        .route("/node/version", get(crate::node_api::node_version))
        .route("/node/commit", get(crate::node_api::node_commit))
        .route("/node/tx", get(crate::node_api::node_tx))
        .route("/node/receipt", get(crate::node_api::node_receipt))
        .route("/node/network", get(crate::node_api::node_network))
        .route("/node/metrics", get(crate::node_api::metrics))
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
            crate::forward::service_open_gate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::forward::forward_writes,
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
            state.metrics.clone(),
            crate::metrics::count,
        ))
        // The edge caps every body (max_body_bytes, consensus batches aside); the
        // extractors add no limit of their own.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}
