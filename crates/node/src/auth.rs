//! Who is calling, and what they may do (SPEC §4): certificate users are looked
//! up by fingerprint in the public users maps; roles come from their user data.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::server::PeerCert;
use crate::state::NodeState;

/// CCF's map of user certificates: user id → PEM.
pub const USERS_CERTS: &str = "public:ccf.gov.users.certs";
/// CCF's map of user data: user id → `{"user_data": {...}}`.
pub const USERS_INFO: &str = "public:ccf.gov.users.info";

/// ACL roles, in increasing power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    Reader,
    Contributor,
    Administrator,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct UserData {
    #[serde(rename = "assignedRoles", default)]
    pub assigned_roles: Vec<Role>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct UserInfo {
    #[serde(default)]
    pub user_data: UserData,
}

/// An authenticated user.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub roles: Vec<Role>,
}

impl Caller {
    /// The caller's highest role must be at least `min`.
    pub fn require(&self, min: Role) -> Result<(), ApiError> {
        if self.roles.iter().any(|r| *r >= min) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "user {} needs the {min:?} role (or higher) for this operation",
                self.user_id
            )))
        }
    }
}

impl FromRequestParts<NodeState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &NodeState,
    ) -> Result<Self, Self::Rejection> {
        let cert = parts
            .extensions
            .get::<PeerCert>()
            .and_then(|p| p.0.clone())
            .ok_or_else(|| {
                ApiError::unauthorized("present a client certificate of a ledger user")
            })?;
        let user_id = cert.user_fingerprint();
        let engine = state.engine();
        let store = engine.store();
        if store.get(USERS_CERTS, user_id.as_bytes()).is_none() {
            return Err(ApiError::unauthorized(format!(
                "certificate {user_id} is not a user of this ledger"
            )));
        }
        let info: UserInfo = store
            .get(USERS_INFO, user_id.as_bytes())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let roles = if info.user_data.assigned_roles.is_empty() {
            vec![Role::Reader]
        } else {
            info.user_data.assigned_roles
        };
        Ok(Caller { user_id, roles })
    }
}
