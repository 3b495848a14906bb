//! Ledger users and their ACL roles, as the users tables record them (SPEC §2, §4).

use serde::{Deserialize, Serialize};

use crate::tables::USERS_INFO;

/// Why a user id in the ACL spelling was refused.
#[derive(Debug, thiserror::Error)]
pub enum UserIdError {
    #[error("userId must be 1..256 printable characters")]
    Shape,
    #[error(transparent)]
    Digest(#[from] covenant_types::DigestParseError),
    #[error("{id} is a certificate's digest in CCF's spelling; the ACL API names that user {acl}")]
    CcfSpelling { id: String, acl: String },
}

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

/// A user's `user_data`: its ACL roles.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct UserData {
    #[serde(rename = "assignedRoles", default)]
    pub assigned_roles: Vec<Role>,
}

/// A user's row in the users info table.
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
    pub fn roles(self) -> Vec<Role> {
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
    pub fn parse_acl(id: &str) -> Result<UserId, UserIdError> {
        if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
            return Err(UserIdError::Shape);
        }
        if is_certificate_user_id(id) {
            let hex: String = id.chars().filter(|c| *c != ':').collect();
            return covenant_types::Digest32::from_hex(&hex.to_ascii_lowercase())
                .map(UserId::Certificate)
                .map_err(UserIdError::Digest);
        }
        if let Some(d) = ccf_user_digest(id) {
            return Err(UserIdError::CcfSpelling {
                id: id.to_string(),
                acl: covenant_crypto::colon_hex(&d),
            });
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

    /// Whether this user is named by a certificate (not by a token).
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
pub fn user_info(store: &covenant_kv::Store, user: &UserId) -> Option<UserInfo> {
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

/// The roles a new user gets when none are named: Reader (ACL's default), so a user
/// added without roles can read the ledger and do nothing else.
pub fn roles_or_default(roles: &[Role]) -> Vec<Role> {
    if roles.is_empty() {
        vec![Role::Reader]
    } else {
        roles.to_vec()
    }
}

/// The strongest of `roles` (Reader for none): how the ACL API shows one role.
pub fn strongest(roles: &[Role]) -> Role {
    roles.iter().copied().max().unwrap_or(Role::Reader)
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
        assert!(e.to_string().contains(COLON), "{e}");
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
