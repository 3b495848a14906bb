//! Recovery shares as CCF serves them: each recovery member's share, encrypted to
//! its own key, to anyone who asks (it is useless without the member's private
//! key), under the classic and the current route.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use covenant_recovery::RecoveryShares;
use covenant_service::disaster::DisasterError;
use covenant_service::tables::{RECOVERY_SHARES, RECOVERY_SHARES_KEY};
use serde_json::json;

use crate::error::ApiError;
use crate::gov::{authenticate, Accepts, GovRequest, Signed};
use crate::http::with_txid;
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

/// What a client is told of a share that was not taken.
fn share_error(e: DisasterError) -> ApiError {
    use covenant_recovery::RecoveryError as R;
    let (status, code) = match &e {
        DisasterError::NotWaiting(_) => {
            (StatusCode::FORBIDDEN, "ServiceNotWaitingForRecoveryShares")
        }
        DisasterError::NotRecoveryMember(_) | DisasterError::NoShares => {
            (StatusCode::FORBIDDEN, "NotRecoveryMember")
        }
        DisasterError::AlreadySubmitted(_) => (StatusCode::CONFLICT, "ShareAlreadySubmitted"),
        DisasterError::Share(R::MalformedShare(_) | R::NotIssuedTo(_) | R::WrongShares) => {
            (StatusCode::BAD_REQUEST, "InvalidRecoveryShare")
        }
        _ => {
            return match e {
                DisasterError::Service(s) => ApiError::service("submitting the share failed", s),
                other => ApiError::internal("submitting the share failed", other),
            }
        }
    };
    ApiError::new(status, code, e.to_string())
}

/// Authenticates a `recovery_share` message and hands its share to the service.
async fn submit(state: &NodeState, signed: Signed) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    struct Body {
        share: String,
    }
    let body: Body = serde_json::from_slice(&signed.msg.payload).map_err(|e| {
        ApiError::bad_request(
            "InvalidInput",
            format!("a recovery share message is {{\"share\": \"<base64>\"}}: {e}"),
        )
    })?;
    let raw = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(body.share.trim())
            .map_err(|_| ApiError::bad_request("InvalidRecoveryShare", "share is not base64"))?,
    );
    let out = state
        .service
        .submit_recovery_share(signed.member.as_str().to_string(), raw.to_vec())
        .await
        .map_err(share_error)?;
    let message = if out.opened {
        format!(
            "{}/{} recovery shares successfully submitted. End of recovery procedure initiated.",
            out.submitted, out.threshold
        )
    } else {
        format!(
            "{}/{} recovery shares successfully submitted.",
            out.submitted, out.threshold
        )
    };
    tracing::info!(member = %signed.member, submitted = out.submitted, threshold = out.threshold, opened = out.opened, "recovery share submitted");
    Ok(with_txid(out.txid, Json(json!({ "message": message }))))
}

/// `POST /gov/recovery_share` (classic): a COSE Sign1 `recovery_share` message,
/// payload `{"share": "<base64>"}`.
pub(crate) async fn submit_classic(
    State(state): State<NodeState>,
    req: GovRequest,
) -> Result<Response, ApiError> {
    let signed = authenticate(&state, &req, "recovery_share", None, Accepts::CLASSIC)?;
    submit(&state, signed).await
}

/// `POST /gov/recovery/members/{memberId}:recover?api-version=`: the same, the
/// path naming the signing member.
pub(crate) async fn submit_current(
    State(state): State<NodeState>,
    Path(member): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    req: GovRequest,
) -> Result<Response, ApiError> {
    let Some(member) = member.strip_suffix(":recover") else {
        return Err(ApiError::not_found(
            "ResourceNotFound",
            format!("Unknown path: POST /gov/recovery/members/{member}."),
        ));
    };
    let signed = authenticate(&state, &req, "recovery_share", None, Accepts::COSE)?;
    crate::gov_api::api_version(&q, crate::gov_api::GOV_API_VERSIONS[0])?;
    crate::gov_api::same_member(member, &signed)?;
    submit(&state, signed).await
}

/// `GET /gov/recovery/status` (covenant's): the service status and, while it waits
/// for recovery shares, how many are in and how many are needed. No credentials:
/// nothing here is secret, and members want it before they act.
pub(crate) async fn status(State(state): State<NodeState>) -> Result<Response, ApiError> {
    let status = covenant_governance::service_status(&state.store)
        .map_or("Open".to_string(), |s| s.to_string());
    let mut v = json!({ "status": status });
    if status == "WaitingForRecoveryShares" {
        if let Some((n, t)) = state.service.recovery_progress() {
            v["submitted_shares"] = n.into();
            v["threshold"] = t.into();
        }
    }
    Ok(Json(v).into_response())
}
