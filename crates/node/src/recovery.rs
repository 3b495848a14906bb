//! Recovery shares as CCF serves them: each recovery member's share, encrypted to
//! its own key, to anyone who asks (it is useless without the member's private
//! key), under the classic and the current route.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use covenant_recovery::RecoveryShares;
use covenant_service::tables::{RECOVERY_SHARES, RECOVERY_SHARES_KEY};
use serde_json::json;

use crate::error::ApiError;
use crate::state::NodeState;

/// The member's encrypted share (base64), or CCF's 404.
fn encrypted_share_of(state: &NodeState, member_id: &str) -> Result<String, ApiError> {
    crate::gov_api::entity_id(member_id, "member")?;
    covenant_service::recovery::current(state.store.get(RECOVERY_SHARES, RECOVERY_SHARES_KEY))
        .and_then(|s: RecoveryShares| s.encrypted_shares.get(member_id).cloned())
        .ok_or_else(|| {
            ApiError::not_found(
                "ResourceNotFound",
                format!("Recovery share not found for member {member_id}."),
            )
        })
}

/// `GET /gov/encrypted_recovery_share/{member_id}` → `{"encrypted_share"}` (classic).
pub(crate) async fn encrypted_share_classic(
    State(state): State<NodeState>,
    Path(member_id): Path<String>,
) -> Result<Response, ApiError> {
    let share = encrypted_share_of(&state, &member_id)?;
    Ok(Json(json!({ "encrypted_share": share })).into_response())
}

/// `GET /gov/recovery/encrypted-shares/{memberId}?api-version=` →
/// `{"memberId", "encryptedShare"}`.
pub(crate) async fn encrypted_share(
    State(state): State<NodeState>,
    Path(member_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    crate::gov_api::api_version(&q, crate::gov_api::GOV_API_VERSIONS[0])?;
    let share = encrypted_share_of(&state, &member_id)?;
    Ok(Json(json!({ "memberId": member_id, "encryptedShare": share })).into_response())
}
