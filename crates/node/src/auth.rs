//! Who is calling, and what they may do (SPEC §4): certificate users are looked
//! up by fingerprint in the public users maps; roles come from their user data.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::server::PeerCert;
use crate::state::NodeState;

pub use covenant_service::tables::{USERS_CERTS, USERS_INFO};
pub use covenant_service::users::{
    bound_issuer, ccf_user_digest, is_certificate_user_id, user_info, user_roles, Role, UserData,
    UserId, UserIdError, UserInfo,
};

/// A user id in the ACL spelling from a request, or 400.
pub fn parse_user_id(id: &str) -> Result<UserId, ApiError> {
    UserId::parse_acl(id).map_err(|e| ApiError::bad_request("InvalidInput", e.to_string()))
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
    let user = UserId::Token(who.id.clone());
    if state.store.get(USERS_CERTS, who.id.as_bytes()).is_some() {
        return Err(unknown());
    }
    let mut info = user_info(&state.store, &user).ok_or_else(unknown)?;
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

/// Who the request's bearer token names, once it verified; `None` without one.
pub(crate) fn bearer_identity(
    state: &NodeState,
    headers: &axum::http::HeaderMap,
) -> Result<Option<crate::jwt::JwtIdentity>, ApiError> {
    match crate::http::bearer_token(headers)? {
        Some(token) => state.jwt.authenticate(token, &state.store).map(Some),
        None => Ok(None),
    }
}

/// The user id of the client certificate behind a request: the TLS peer's, or
/// for a request a backup forwarded, the one the client showed that backup
/// (the edge puts it in place). `None` without a certificate.
pub(crate) fn certificate_user(extensions: &axum::http::Extensions) -> Option<UserId> {
    extensions
        .get::<PeerCert>()
        .and_then(|p| p.0.as_ref().map(|c| UserId::Certificate(c.1)))
}

/// An authenticated user.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub roles: Vec<Role>,
}

impl Caller {
    /// The checks a ledger route starts with: its `api-version`, then the caller's role.
    pub fn authorize(
        &self,
        q: &std::collections::HashMap<String, String>,
        min: Role,
    ) -> Result<(), ApiError> {
        crate::http::api_version(q)?;
        self.require(min)
    }

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

/// A ledger route's caller once the checks every ACL ledger route starts with have
/// passed: the caller is a user (401 otherwise), the query parses, its api-version
/// is one covenant serves (400), and the caller holds at least the role `R` (403).
pub struct Authorized<R> {
    pub caller: Caller,
    pub query: std::collections::HashMap<String, String>,
    role: std::marker::PhantomData<R>,
}

/// The least role a route admits, as a type (see [`Authorized`]).
pub trait MinRole: Send + Sync {
    const ROLE: Role;
}

/// Readers and above.
pub struct Readers;
/// Contributors and above.
pub struct Contributors;
/// Administrators.
pub struct Administrators;

impl MinRole for Readers {
    const ROLE: Role = Role::Reader;
}
impl MinRole for Contributors {
    const ROLE: Role = Role::Contributor;
}
impl MinRole for Administrators {
    const ROLE: Role = Role::Administrator;
}

/// A route for Readers and above.
pub type AsReader = Authorized<Readers>;
/// A route for Contributors and above.
pub type AsContributor = Authorized<Contributors>;
/// A route for Administrators.
pub type AsAdministrator = Authorized<Administrators>;

impl<R: MinRole> FromRequestParts<NodeState> for Authorized<R> {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &NodeState,
    ) -> Result<Self, Self::Rejection> {
        use axum::response::IntoResponse;
        let caller = Caller::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        // A malformed query is the framework's rejection, worded by `json_errors`.
        let axum::extract::Query(query) = axum::extract::Query::<
            std::collections::HashMap<String, String>,
        >::from_request_parts(parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
        caller
            .authorize(&query, R::ROLE)
            .map_err(IntoResponse::into_response)?;
        Ok(Authorized {
            caller,
            query,
            role: std::marker::PhantomData,
        })
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
        let user = certificate_user(&parts.extensions).ok_or_else(|| {
            ApiError::unauthorized(
                "present a client certificate or a bearer token of a ledger user",
            )
        })?;
        let user_id = user.acl();
        let roles = user_roles(&state.store, &user).ok_or_else(|| {
            ApiError::unauthorized(format!(
                "certificate {user_id} is not a user of this ledger"
            ))
        })?;
        Ok(Caller { user_id, roles })
    }
}
