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
    /// For a token user: the one issuer whose tokens name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_issuer: Option<String>,
}

impl UserInfo {
    /// Its roles: a user without roles listed is a Reader (SPEC §5 `set_user`
    /// default).
    fn roles(self) -> Vec<Role> {
        let mut roles = self.user_data.assigned_roles;
        if roles.is_empty() {
            roles.push(Role::Reader);
        }
        roles.sort();
        roles.dedup();
        roles
    }
}

/// The info row of `user_id`, or `None` if it is not a user (an unreadable row
/// reads as a Reader bound to no issuer).
pub(crate) fn user_info(store: &covenant_kv::Store, user_id: &str) -> Option<UserInfo> {
    let raw = store.get(USERS_INFO, user_id.as_bytes())?;
    Some(serde_json::from_slice(&raw).unwrap_or_default())
}

/// The roles of `user_id`, or `None` if it is not a user.
pub fn user_roles(store: &covenant_kv::Store, user_id: &str) -> Option<Vec<Role>> {
    user_info(store, user_id).map(UserInfo::roles)
}

/// Whether `id` has the form of a certificate user's id (the colon-separated hex
/// SHA-256 fingerprint): such ids are reachable only with that certificate.
pub fn is_certificate_user_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 95
        && b.iter().enumerate().all(|(i, c)| {
            if i % 3 == 2 {
                *c == b':'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// The issuer a token user's row is bound to, if any.
pub fn bound_issuer(store: &covenant_kv::Store, user_id: &str) -> Option<String> {
    user_info(store, user_id)?.jwt_issuer
}

/// The roles of the token user `who`: its row must be a token user's (no
/// certificate recorded) and belong to the token's issuer: the issuer it is bound
/// to, or, for a row bound to none, the only issuer trusted. So an issuer speaks
/// for its own users only, never for certificate users or another issuer's.
fn jwt_user_roles(state: &NodeState, who: &crate::jwt::JwtIdentity) -> Result<Vec<Role>, ApiError> {
    let unknown = || {
        ApiError::unauthorized(format!(
            "{} (issuer {}) is not a user of this ledger",
            who.id, who.issuer
        ))
    };
    if state.store.get(USERS_CERTS, who.id.as_bytes()).is_some() {
        return Err(unknown());
    }
    let mut info = user_info(&state.store, &who.id).ok_or_else(unknown)?;
    let bound = info.jwt_issuer.take();
    let roles = info.roles();
    match bound {
        Some(b) if b == who.issuer => Ok(roles),
        Some(_) => Err(unknown()),
        None if state.jwt.single_issuer(&state.store).is_some() => Ok(roles),
        None => Err(ApiError::unauthorized(format!(
            "user {} is bound to no token issuer and several are trusted; an Administrator \
             binds it with PATCH /app/ledgerUsers/{} {{\"issuer\": ...}}",
            who.id, who.id
        ))),
    }
}

/// The request's bearer token; `None` without an `Authorization` header, 401 for
/// any other scheme.
pub(crate) fn bearer_token(headers: &axum::http::HeaderMap) -> Result<Option<&str>, ApiError> {
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

/// Who the request's bearer token names, once it verified; `None` without one.
pub(crate) fn bearer_identity(
    state: &NodeState,
    headers: &axum::http::HeaderMap,
) -> Result<Option<crate::jwt::JwtIdentity>, ApiError> {
    match bearer_token(headers)? {
        Some(token) => state.jwt.authenticate(token, &state.store).map(Some),
        None => Ok(None),
    }
}

/// The fingerprint (ACL user id) of the client certificate behind a request:
/// the TLS peer's, or for a request a backup forwarded, the one the client showed
/// that backup ([`crate::edge`] puts it in place). `None` without a certificate.
pub(crate) fn certificate_user(extensions: &axum::http::Extensions) -> Option<String> {
    extensions
        .get::<PeerCert>()
        .and_then(|p| p.0.as_ref().map(|c| c.1.clone()))
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
        if let Some(who) = bearer_identity(state, &parts.headers)? {
            let roles = jwt_user_roles(state, &who)?;
            return Ok(Caller {
                user_id: who.id,
                roles,
            });
        }
        let user_id = certificate_user(&parts.extensions).ok_or_else(|| {
            ApiError::unauthorized(
                "present a client certificate or a bearer token of a ledger user",
            )
        })?;
        let roles = user_roles(&state.store, &user_id).ok_or_else(|| {
            ApiError::unauthorized(format!(
                "certificate {user_id} is not a user of this ledger"
            ))
        })?;
        Ok(Caller { user_id, roles })
    }
}
