//! User management (SPEC §4): the v1 single-role API (`/app/users`) and the
//! multi-role API (`/app/ledgerUsers`). ACL answers `/app/users` with a 301 from
//! api-version 2024-08-22-preview on; covenant serves it at every api-version, so
//! the preview SDK's README flows (`create_or_update_user`, `get_user`,
//! `delete_user`) work as written. The API names a certificate user by the colon-hex
//! fingerprint and a token user by its object id; rows live in CCF's users tables
//! under CCF's spelling ([`UserId`]).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{
    user_roles, AsAdministrator, Role, UserData, UserId, UserInfo, USERS_CERTS, USERS_INFO,
};
use crate::error::ApiError;
use crate::http::with_txid;
use crate::state::NodeState;

/// A user's info row: its roles, and for a token user the issuer it belongs to.
///
/// A token user (an id that is not a certificate fingerprint) is bound to `issuer`
/// when one is given, else keeps the issuer it had, else, when it is new and
/// exactly one issuer is trusted, to that one: tokens of any other issuer never
/// name it (see [`crate::auth`]).
fn info_row(
    state: &NodeState,
    user: &UserId,
    roles: &[Role],
    issuer: Option<&str>,
) -> Result<Vec<u8>, ApiError> {
    let jwt_issuer = if user.is_certificate() {
        if issuer.is_some() {
            return Err(ApiError::bad_request(
                "InvalidInput",
                "a certificate user (a fingerprint id) belongs to no token issuer",
            ));
        }
        None
    } else {
        match (issuer, crate::auth::user_info(&state.store, user)) {
            (Some(i), _) => Some(i.to_string()),
            (None, Some(existing)) => existing.jwt_issuer,
            (None, None) => state.jwt.single_issuer(&state.store),
        }
    };
    let info = UserInfo {
        user_data: UserData {
            assigned_roles: roles.to_vec(),
        },
        jwt_issuer,
    };
    serde_json::to_vec(&info).map_err(|e| ApiError::internal("encoding the user failed", e))
}

async fn write_roles(
    state: &NodeState,
    user: &UserId,
    roles: Option<&[Role]>,
) -> Result<covenant_types::TxId, ApiError> {
    let info = roles.map(|r| info_row(state, user, r, None)).transpose()?;
    let user = user.clone();
    state
        .write("updating the user failed", move |engine| {
            let user = &user;
            let mut tx = engine.begin();
            match &info {
                Some(info) => put_info(&mut tx, engine.store(), user, info),
                None => {
                    for key in [user.ccf(), user.acl()] {
                        tx.remove(USERS_INFO, key.as_bytes());
                        tx.remove(USERS_CERTS, key.as_bytes());
                    }
                    crate::roles::put_user_custom_roles(&mut tx, &user.acl(), &[]);
                }
            }
            engine.commit_tx(tx, None)
        })
        .await
}

/// Writes a user's info row under CCF's spelling, moving a certificate user's
/// rows from the ACL spelling older ledgers used.
fn put_info(tx: &mut covenant_kv::Tx, store: &covenant_kv::Store, user: &UserId, info: &[u8]) {
    let key = user.ccf();
    let legacy = user.row_key(store);
    if legacy != key {
        if let Some(cert) = store.get(USERS_CERTS, legacy.as_bytes()) {
            tx.put(USERS_CERTS, key.as_bytes(), &cert);
        }
        tx.remove(USERS_CERTS, legacy.as_bytes());
        tx.remove(USERS_INFO, legacy.as_bytes());
    }
    tx.put(USERS_INFO, key.as_bytes(), info);
}

fn highest(roles: &[Role]) -> Role {
    covenant_service::users::strongest(roles)
}

fn not_found(user_id: &str) -> ApiError {
    ApiError::not_found("UserNotFound", format!("user {user_id} does not exist"))
}

/// The user an ACL-spelled id names and the JSON body of a change to it (400 with
/// the expected `shape` when the body is not that).
fn user_and_patch<T: serde::de::DeserializeOwned>(
    user_id: &str,
    body: crate::error::Body,
    shape: &str,
) -> Result<(UserId, T), ApiError> {
    let user = crate::auth::parse_user_id(user_id)?;
    let patch = serde_json::from_slice(&body.map_err(crate::error::body_error)?)
        .map_err(|e| ApiError::bad_request("InvalidInput", format!("body must be {shape}: {e}")))?;
    Ok((user, patch))
}

/// The user an ACL-spelled id names and its roles as `roles_of` lists them; 404
/// for a user with none (a CCF user without ACL roles is not a ledger user).
fn existing<T>(
    user_id: &str,
    roles_of: impl FnOnce(&UserId) -> Option<Vec<T>>,
) -> Result<(UserId, Vec<T>), ApiError> {
    let user = crate::auth::parse_user_id(user_id)?;
    let roles = roles_of(&user)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| not_found(user_id))?;
    Ok((user, roles))
}

pub async fn get_v1(
    State(state): State<NodeState>,
    _: AsAdministrator,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    let (user, roles) = existing(&user_id, |u| user_roles(&state.store, u))?;
    Ok(with_txid(
        state.engine().last_txid(),
        Json(json!({"assignedRole": highest(&roles), "userId": user.acl()})),
    ))
}

#[derive(Deserialize)]
struct V1Patch {
    #[serde(rename = "assignedRole")]
    assigned_role: Role,
}

pub async fn patch_v1(
    State(state): State<NodeState>,
    _: AsAdministrator,
    Path(user_id): Path<String>,
    body: crate::error::Body,
) -> Result<Response, ApiError> {
    let (user, patch): (_, V1Patch) = user_and_patch(
        &user_id,
        body,
        r#"{"assignedRole": "Reader"|"Contributor"|"Administrator"}"#,
    )?;
    let txid = write_roles(&state, &user, Some(&[patch.assigned_role])).await?;
    Ok(with_txid(
        Some(txid),
        Json(json!({"assignedRole": patch.assigned_role, "userId": user.acl()})),
    ))
}

/// `GET /app/users`: every user with its highest built-in role (the single-role
/// shape; the preview SDK's `list_users` reads it at every api-version).
pub async fn list_v1(
    State(state): State<NodeState>,
    AsAdministrator { query: q, .. }: AsAdministrator,
) -> Result<Response, ApiError> {
    list_page(
        state,
        q,
        "/app/users",
        |id, roles| json!({"assignedRole": highest(roles), "userId": id.acl()}),
    )
}

pub async fn list(
    State(state): State<NodeState>,
    AsAdministrator { query: q, .. }: AsAdministrator,
) -> Result<Response, ApiError> {
    let s = state.clone();
    list_page(
        state,
        q,
        "/app/ledgerUsers",
        move |id, _| json!({"assignedRoles": all_roles(&s, id).unwrap_or_default(), "userId": id.acl()}),
    )
}

fn list_page(
    state: NodeState,
    q: std::collections::HashMap<String, String>,
    route: &str,
    row: impl Fn(&UserId, &[Role]) -> Value,
) -> Result<Response, ApiError> {
    // Users of the ledger API: CCF users without ACL roles are the JS app's only.
    let keys = state
        .store
        .entries(USERS_INFO)
        .into_iter()
        .map(|(k, _)| {
            UserId::from_row_key(&String::from_utf8_lossy(&k))
                .acl()
                .into_bytes()
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let (page, next) = crate::http::key_page(keys, &q, route);
    let users: Vec<Value> = page
        .into_iter()
        .filter_map(|id| {
            let user = UserId::from_row_key(&id);
            user_roles(&state.store, &user)
                .filter(|r| {
                    !r.is_empty() || !crate::roles::user_custom_roles(&state.store, &id).is_empty()
                })
                .map(|roles| row(&user, &roles))
        })
        .collect();
    let mut body = json!({"ledgerUsers": users});
    if let Some(n) = next {
        body["nextLink"] = Value::String(n);
    }
    Ok(with_txid(state.engine().last_txid(), Json(body)))
}

pub async fn get_multi(
    State(state): State<NodeState>,
    _: AsAdministrator,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    let (user, roles) = existing(&user_id, |u| all_roles(&state, u))?;
    let mut body = json!({"assignedRoles": roles, "userId": user.acl()});
    // covenant's own: the token issuer a token user is bound to.
    if let Some(issuer) = crate::auth::bound_issuer(&state.store, &user) {
        body["issuer"] = Value::String(issuer);
    }
    Ok(with_txid(state.engine().last_txid(), Json(body)))
}

#[derive(Deserialize)]
struct MultiPatch {
    /// Built-in roles and roles defined at `/app/roles`.
    #[serde(rename = "assignedRoles")]
    assigned_roles: Vec<String>,
    /// covenant's own: the token issuer a token user belongs to.
    #[serde(default)]
    issuer: Option<String>,
}

/// Every role of a user: the built-in ones, then those defined at `/app/roles`.
fn all_roles(state: &NodeState, user: &UserId) -> Option<Vec<Value>> {
    let builtin = user_roles(&state.store, user)?;
    let mut out: Vec<Value> = builtin.iter().map(|r| json!(r)).collect();
    out.extend(
        crate::roles::user_custom_roles(&state.store, &user.acl())
            .into_iter()
            .map(Value::String),
    );
    Some(out)
}

/// Adds roles (a merge patch: roles already held stay).
pub async fn patch_multi(
    State(state): State<NodeState>,
    _: AsAdministrator,
    Path(user_id): Path<String>,
    body: crate::error::Body,
) -> Result<Response, ApiError> {
    let (user, patch): (_, MultiPatch) =
        user_and_patch(&user_id, body, r#"{"assignedRoles": [...]}"#)?;
    let mut builtin = Vec::new();
    let mut custom = crate::roles::user_custom_roles(&state.store, &user.acl());
    let mut sent = Vec::new();
    for name in patch.assigned_roles {
        match serde_json::from_value::<Role>(Value::String(name.clone())) {
            Ok(r) => {
                builtin.push(r);
                sent.push(json!(r));
            }
            Err(_) if crate::roles::is_defined(&state, &name) => {
                sent.push(json!(name));
                custom.push(name)
            }
            Err(_) => {
                return Err(ApiError::bad_request(
                    "InvalidInput",
                    format!(
                        "{name} is neither Reader, Contributor, Administrator nor a role defined at /app/roles"
                    ),
                ))
            }
        }
    }
    custom.sort();
    custom.dedup();
    let existing = user_roles(&state.store, &user).unwrap_or_default();
    let mut roles: Vec<Role> = existing.into_iter().chain(builtin).collect();
    roles.sort();
    roles.dedup();
    if let Some(i) = &patch.issuer {
        if i.is_empty() || i.len() > 2048 || i.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "InvalidInput",
                "issuer must be 1..2048 printable characters (the token issuer's iss)",
            ));
        }
    }
    let info = info_row(&state, &user, &roles, patch.issuer.as_deref())?;
    let written = user.clone();
    let txid = state
        .write("updating the user failed", move |engine| {
            let mut tx = engine.begin();
            put_info(&mut tx, engine.store(), &written, &info);
            crate::roles::put_user_custom_roles(&mut tx, &written.acl(), &custom);
            engine.commit_tx(tx, None)
        })
        .await?;
    // ACL's reply repeats the roles this request named (the user holds the union).
    Ok(with_txid(
        Some(txid),
        Json(json!({"assignedRoles": sent, "userId": user.acl()})),
    ))
}

/// `DELETE /app/users/{id}` and `/app/ledgerUsers/{id}`: deleting a user that does
/// not exist succeeds (SPEC §4).
pub async fn delete(
    State(state): State<NodeState>,
    _: AsAdministrator,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    let user = crate::auth::parse_user_id(&user_id)?;
    let txid = write_roles(&state, &user, None).await?;
    Ok(with_txid(Some(txid), StatusCode::NO_CONTENT))
}
