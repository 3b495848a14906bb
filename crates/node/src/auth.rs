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

/// The roles of `user_id`, or `None` if it is not a user. A user without roles
/// listed is a Reader (SPEC §5 `set_user` default).
pub fn user_roles(store: &covenant_kv::Store, user_id: &str) -> Option<Vec<Role>> {
    let raw = store.get(USERS_INFO, user_id.as_bytes())?;
    let info: UserInfo = serde_json::from_slice(&raw).unwrap_or_default();
    let mut roles = info.user_data.assigned_roles;
    if roles.is_empty() {
        roles.push(Role::Reader);
    }
    roles.sort();
    roles.dedup();
    Some(roles)
}

/// The fingerprint (ACL user id) of the certificate behind a request: the TLS
/// peer's, or for a request a backup forwarded, the one it names (trusted only from
/// a node of this service). `None` without a certificate.
pub(crate) fn certificate_user(
    state: &NodeState,
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
) -> Result<Option<String>, ApiError> {
    let peer = extensions.get::<PeerCert>().cloned().unwrap_or_default();
    let Some(fwd) = headers.get(crate::network::FORWARDED_USER) else {
        return Ok(peer.0.as_ref().map(|p| p.1.clone()));
    };
    if !state.network.as_ref().is_some_and(|n| n.is_node(&peer)) {
        return Err(ApiError::unauthorized(
            "a forwarded identity is only accepted from a node of this service",
        ));
    }
    fwd.to_str()
        .map(|s| Some(s.to_string()))
        .map_err(|_| ApiError::unauthorized("the forwarded identity is not text"))
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
        // A bearer token, when present, decides (a bad token is not silently ignored).
        let user_id = if let Some(auth) = parts.headers.get(axum::http::header::AUTHORIZATION) {
            let value = auth
                .to_str()
                .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .ok_or_else(|| ApiError::unauthorized("only Bearer authorization is supported"))?;
            state.jwt.authenticate(token.trim(), &state.store)?
        } else {
            certificate_user(state, &parts.headers, &parts.extensions)?.ok_or_else(|| {
                ApiError::unauthorized(
                    "present a client certificate or a bearer token of a ledger user",
                )
            })?
        };
        let roles = user_roles(&state.store, &user_id).ok_or_else(|| {
            ApiError::unauthorized(format!(
                "certificate {user_id} is not a user of this ledger"
            ))
        })?;
        Ok(Caller { user_id, roles })
    }
}
