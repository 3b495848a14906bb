//! ACL's user-defined roles (`/app/roles`): named sets of actions (strings an app
//! chooses, such as `/banking/accounts/post`) that Administrators define and assign
//! to users through `/app/ledgerUsers`. They are kept in ACL's own tables, which
//! apps read (directly, as ACL's samples do, or through the `acl` global):
//! [`ROLE_DEFINITIONS_PREFIX`]`<role>` (JSON-quoted action → `{}`) and
//! [`USER_ROLES_MAPPING`] (JSON-quoted user id → JSON list of role names).
//! Covenant enforces nothing with them; the built-in Reader / Contributor /
//! Administrator roles stay what guards the ledger API.

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use covenant_app::{ROLE_DEFINITIONS_PREFIX, USER_ROLES_MAPPING};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::AsAdministrator;
use crate::error::{body_error, ApiError, Body};
use crate::http::with_txid;
use crate::state::NodeState;

/// Role name → its actions (JSON list): the index of defined roles, since a map's
/// rows can be listed but maps by prefix cannot.
pub const ROLE_NAMES: &str = "public:confidentialledger.roles.names";
/// Most actions one role may hold.
const MAX_ACTIONS: usize = 1000;

/// One role as ACL's API spells it: `role_name` / `role_actions` (what the service
/// and its docs use; the SDK's typed model sends camelCase, also accepted).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RoleDef {
    #[serde(alias = "roleName")]
    role_name: String,
    #[serde(default, alias = "roleActions")]
    role_actions: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Roles {
    roles: Vec<RoleDef>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("InvalidInput", message)
}

/// Whether `name` is a built-in role (never defined here).
pub fn is_builtin(name: &str) -> bool {
    ["Reader", "Contributor", "Administrator"]
        .iter()
        .any(|b| b.eq_ignore_ascii_case(name))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        return Err(bad("a role name is 1..64 letters, digits, '_', '-' or '.'"));
    }
    if is_builtin(name) {
        return Err(bad(format!("{name} is a built-in role")));
    }
    Ok(())
}

fn quoted(s: &str) -> Vec<u8> {
    Value::String(s.to_string()).to_string().into_bytes()
}

/// Whether `name` is a defined role.
pub fn is_defined(state: &NodeState, name: &str) -> bool {
    state.store.get(ROLE_NAMES, name.as_bytes()).is_some()
}

/// The custom roles of `user_id` (from [`USER_ROLES_MAPPING`]).
pub fn user_custom_roles(store: &covenant_kv::Store, user_id: &str) -> Vec<String> {
    store
        .get(USER_ROLES_MAPPING, &quoted(user_id))
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default()
}

/// Writes `roles` as `user_id`'s custom roles (none: the row goes).
pub fn put_user_custom_roles(tx: &mut covenant_kv::Tx, user_id: &str, roles: &[String]) {
    if roles.is_empty() {
        tx.remove(USER_ROLES_MAPPING, &quoted(user_id));
    } else {
        tx.put(
            USER_ROLES_MAPPING,
            &quoted(user_id),
            json!(roles).to_string().as_bytes(),
        );
    }
}

fn parse(body: Body) -> Result<Vec<RoleDef>, ApiError> {
    let raw = body.map_err(body_error)?;
    let roles: Roles = serde_json::from_slice(&raw).map_err(|e| {
        bad(format!(
            "the body must be {{\"roles\": [{{\"role_name\", \"role_actions\": [...]}}]}}: {e}"
        ))
    })?;
    if roles.roles.is_empty() {
        return Err(bad("roles must list at least one role"));
    }
    for r in &roles.roles {
        check_name(&r.role_name)?;
        if r.role_actions.len() > MAX_ACTIONS {
            return Err(bad(format!("a role holds at most {MAX_ACTIONS} actions")));
        }
        if r.role_actions.iter().any(|a| a.is_empty() || a.len() > 256) {
            return Err(bad("every action is 1..256 characters"));
        }
    }
    Ok(roles.roles)
}

fn role_name_param(q: &std::collections::HashMap<String, String>) -> Result<String, ApiError> {
    q.get("roleName").cloned().ok_or_else(|| {
        ApiError::bad_request(
            "QueryParameterError",
            "the roleName query parameter is required",
        )
    })
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found("RoleNotFound", format!("no role {name} is defined"))
}

/// Replaces the actions of each role (defining those that are new).
async fn write_roles(
    state: &NodeState,
    roles: Vec<RoleDef>,
) -> Result<covenant_types::TxId, ApiError> {
    state
        .write("storing the roles failed", move |e| {
            let mut tx = e.begin();
            for r in roles {
                let map = format!("{ROLE_DEFINITIONS_PREFIX}{}", r.role_name);
                tx.clear(&map);
                for a in &r.role_actions {
                    tx.put(&map, &quoted(a), b"{}");
                }
                tx.put(
                    ROLE_NAMES,
                    r.role_name.as_bytes(),
                    json!(r.role_actions).to_string().as_bytes(),
                );
            }
            e.commit_tx(tx, None)
        })
        .await
}

pub async fn get(
    State(state): State<NodeState>,
    AsAdministrator { query: q, .. }: AsAdministrator,
) -> Result<Response, ApiError> {
    let name = role_name_param(&q)?;
    let actions: Vec<String> = state
        .store
        .get(ROLE_NAMES, name.as_bytes())
        .and_then(|v| serde_json::from_slice(&v).ok())
        .ok_or_else(|| not_found(&name))?;
    let txid = state.engine().last_txid();
    Ok(with_txid(
        txid,
        Json(json!({"roles": [RoleDef { role_name: name, role_actions: actions }]})),
    ))
}

pub async fn put(
    State(state): State<NodeState>,
    _: AsAdministrator,
    body: Body,
) -> Result<Response, ApiError> {
    let roles = parse(body)?;
    let txid = write_roles(&state, roles).await?;
    Ok(with_txid(
        Some(txid),
        Json(json!("Role added successfully.")),
    ))
}

/// Replaces the actions of roles that exist.
pub async fn patch(
    State(state): State<NodeState>,
    _: AsAdministrator,
    body: Body,
) -> Result<Response, ApiError> {
    let roles = parse(body)?;
    if let Some(r) = roles.iter().find(|r| !is_defined(&state, &r.role_name)) {
        return Err(not_found(&r.role_name));
    }
    let txid = write_roles(&state, roles).await?;
    Ok(with_txid(
        Some(txid),
        Json(json!("Role replaced successfully.")),
    ))
}

/// Deletes a role and takes it from every user who had it.
pub async fn delete(
    State(state): State<NodeState>,
    AsAdministrator { query: q, .. }: AsAdministrator,
) -> Result<Response, ApiError> {
    let name = role_name_param(&q)?;
    if !is_defined(&state, &name) {
        return Err(not_found(&name));
    }
    let removed = name.clone();
    let txid = state
        .write("deleting the role failed", move |e| {
            let name = removed;
            let mut tx = e.begin();
            tx.clear(&format!("{ROLE_DEFINITIONS_PREFIX}{name}"));
            tx.remove(ROLE_NAMES, name.as_bytes());
            for (user, roles) in e.store().entries(USER_ROLES_MAPPING) {
                let Ok(mut roles) = serde_json::from_slice::<Vec<String>>(&roles) else {
                    continue;
                };
                if roles.contains(&name) {
                    roles.retain(|r| *r != name);
                    if roles.is_empty() {
                        tx.remove(USER_ROLES_MAPPING, &user);
                    } else {
                        tx.put(
                            USER_ROLES_MAPPING,
                            &user,
                            json!(roles).to_string().as_bytes(),
                        );
                    }
                }
            }
            e.commit_tx(tx, None)
        })
        .await?;
    Ok(with_txid(
        Some(txid),
        Json(json!(format!("Role {name} deleted successfully."))),
    ))
}
