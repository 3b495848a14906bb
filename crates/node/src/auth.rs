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

/// ACL roles, in increasing power. Their names are matched without regard to
/// case (ACL accepts `"administrator"`), and always shown capitalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub enum Role {
    Reader,
    Contributor,
    Administrator,
}

impl TryFrom<String> for Role {
    type Error = String;

    fn try_from(s: String) -> Result<Role, String> {
        [Role::Reader, Role::Contributor, Role::Administrator]
            .into_iter()
            .find(|r| format!("{r:?}").eq_ignore_ascii_case(&s))
            .ok_or_else(|| format!("{s} is not Reader, Contributor or Administrator"))
    }
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
    /// Its ACL roles (none listed: none).
    fn roles(self) -> Vec<Role> {
        let mut roles = self.user_data.assigned_roles;
        roles.sort();
        roles.dedup();
        roles
    }
}

/// A ledger user, as each layer names it (SPEC §2): a certificate user is one
/// SHA-256 of its certificate DER, keyed in the governance tables and shown to JS
/// apps as lower-case hex (CCF's spelling, what `openssl x509 -fingerprint` gives
/// once lower-cased), and shown by the ACL API as upper-case hex pairs joined by
/// `:`; a token user is its `oid` (or `sub`) claim in both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserId {
    Certificate(covenant_types::Digest32),
    Token(String),
}

impl UserId {
    /// An id as the ACL API spells it. A 64-digit hex id is refused: it can only be
    /// a certificate's digest in CCF's spelling, which the ACL API does not take,
    /// and no token names it (tokens with such subjects are refused).
    pub fn parse_acl(id: &str) -> Result<UserId, ApiError> {
        if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "InvalidInput",
                "userId must be 1..256 printable characters",
            ));
        }
        if is_certificate_user_id(id) {
            let hex: String = id.chars().filter(|c| *c != ':').collect();
            return covenant_types::Digest32::from_hex(&hex.to_ascii_lowercase())
                .map(UserId::Certificate)
                .map_err(|e| ApiError::bad_request("InvalidInput", e.to_string()));
        }
        if let Some(d) = ccf_user_digest(id) {
            return Err(ApiError::bad_request(
                "InvalidInput",
                format!(
                    "{id} is a certificate's digest in CCF's spelling; the ACL API names that \
                     user {}",
                    covenant_crypto::colon_hex(&d)
                ),
            ));
        }
        Ok(UserId::Token(id.to_string()))
    }

    /// The id in the ACL API's spelling.
    pub fn acl(&self) -> String {
        match self {
            UserId::Certificate(d) => covenant_crypto::colon_hex(d),
            UserId::Token(t) => t.clone(),
        }
    }

    /// The id in CCF's spelling (governance tables, `request.caller.id`).
    pub fn ccf(&self) -> String {
        match self {
            UserId::Certificate(d) => d.to_hex(),
            UserId::Token(t) => t.clone(),
        }
    }

    /// The key of this user's rows in the users tables: CCF's spelling, or, for a
    /// certificate user recorded before covenant keyed them that way, the ACL
    /// spelling its rows still have (rewritten under CCF's on the next change).
    pub fn row_key(&self, store: &covenant_kv::Store) -> String {
        let ccf = self.ccf();
        if let UserId::Certificate(_) = self {
            if store.get(USERS_INFO, ccf.as_bytes()).is_none() {
                let legacy = self.acl();
                if store.get(USERS_INFO, legacy.as_bytes()).is_some() {
                    return legacy;
                }
            }
        }
        ccf
    }

    /// The id of a users-table key (either spelling of a certificate user).
    pub fn from_row_key(key: &str) -> UserId {
        if let Some(d) = ccf_user_digest(key) {
            return UserId::Certificate(d);
        }
        UserId::parse_acl(key).unwrap_or_else(|_| UserId::Token(key.to_string()))
    }

    pub fn is_certificate(&self) -> bool {
        matches!(self, UserId::Certificate(_))
    }
}

/// The digest named by a 64-digit lower-case hex id (CCF's certificate user id).
pub fn ccf_user_digest(id: &str) -> Option<covenant_types::Digest32> {
    covenant_types::Digest32::from_hex(&id.to_ascii_lowercase()).ok()
}

/// The info row of `user`, or `None` if it is not a user (an unreadable row
/// reads as a user without ACL roles, bound to no issuer).
pub(crate) fn user_info(store: &covenant_kv::Store, user: &UserId) -> Option<UserInfo> {
    // One lookup on the request path; the legacy spelling only when that misses.
    let raw = store
        .get(USERS_INFO, user.ccf().as_bytes())
        .or_else(|| match user {
            UserId::Certificate(_) => store.get(USERS_INFO, user.acl().as_bytes()),
            UserId::Token(_) => None,
        })?;
    Some(serde_json::from_slice(&raw).unwrap_or_default())
}

/// The ACL roles of `user`, or `None` if it is not a user. A CCF user added by
/// `set_user` without `user_data.assignedRoles` has none: governance makes it a
/// user of the JS app, not of the ledger API.
pub fn user_roles(store: &covenant_kv::Store, user: &UserId) -> Option<Vec<Role>> {
    user_info(store, user).map(UserInfo::roles)
}

/// Whether `id` has the form of a certificate user's id in the ACL spelling (the
/// colon-separated hex SHA-256 fingerprint): such ids are reachable only with
/// that certificate.
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
pub fn bound_issuer(store: &covenant_kv::Store, user: &UserId) -> Option<String> {
    user_info(store, user)?.jwt_issuer
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

/// The user id of the client certificate behind a request: the TLS peer's, or
/// for a request a backup forwarded, the one the client showed that backup
/// ([`crate::edge`] puts it in place). `None` without a certificate.
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

#[cfg(test)]
mod tests {
    use super::*;
    use covenant_kv::Store;
    use covenant_types::View;

    const COLON: &str = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";

    #[test]
    fn one_digest_two_spellings() {
        let u = UserId::parse_acl(COLON).unwrap();
        assert!(u.is_certificate());
        assert_eq!(u.acl(), COLON);
        assert_eq!(u.ccf(), "abcdef0123456789".repeat(4));
        // The ACL API takes ACL's spelling only, and says which to use.
        let e = UserId::parse_acl(&u.ccf()).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(e.message.contains(COLON), "{}", e.message);
        // Lower-case colon pairs are the same user.
        assert_eq!(UserId::parse_acl(&COLON.to_lowercase()).unwrap(), u);
        // Anything else is a token user, as given.
        assert_eq!(
            UserId::parse_acl("some AAD object id").unwrap(),
            UserId::Token("some AAD object id".into())
        );
        assert!(UserId::parse_acl("").is_err());
        assert!(UserId::parse_acl("a\nb").is_err());
        assert_eq!(UserId::from_row_key(&u.ccf()), u);
        assert_eq!(UserId::from_row_key(COLON), u);
    }

    #[test]
    fn rows_of_older_ledgers_are_still_found() {
        let store = Store::new();
        let u = UserId::parse_acl(COLON).unwrap();
        assert_eq!(u.row_key(&store), u.ccf());
        let mut tx = store.begin();
        tx.put(
            USERS_INFO,
            COLON.as_bytes(),
            br#"{"user_data":{"assignedRoles":["Reader"]}}"#,
        );
        store.commit(tx, View(1)).unwrap();
        assert_eq!(u.row_key(&store), COLON);
        assert_eq!(user_roles(&store, &u), Some(vec![Role::Reader]));
        let mut tx = store.begin();
        tx.put(USERS_INFO, u.ccf().as_bytes(), br#"{"user_data":null}"#);
        store.commit(tx, View(1)).unwrap();
        // CCF's spelling wins; a CCF user without ACL roles has none.
        assert_eq!(u.row_key(&store), u.ccf());
        assert_eq!(user_roles(&store, &u), Some(vec![]));
    }

    #[test]
    fn builtin_role_names_ignore_case() {
        let r: Role = serde_json::from_str("\"administrator\"").unwrap();
        assert_eq!(r, Role::Administrator);
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"Administrator\"");
        assert!(serde_json::from_str::<Role>("\"Auditor\"").is_err());
    }
}
