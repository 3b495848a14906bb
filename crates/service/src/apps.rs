//! The deployed JavaScript app, parsed once per version, and what the service
//! answers about its endpoints (the forwarder asks whether one writes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use covenant_app::{App, AppError};
use serde_json::Value;

/// An app version ([`App::version`]) and the app parsed at it.
type Cached = ((usize, u64), Option<Arc<App>>);

/// The parsed app of the store's current version, and the handles of
/// `ccf.historical.getStateRange` requests (with when each expires).
#[derive(Default)]
pub struct AppCache {
    current: Mutex<Option<Cached>>,
    handles: Mutex<HashMap<u64, Instant>>,
}

impl AppCache {
    /// Handles of `ccf.historical` state ranges, with their expiry.
    pub fn handles(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The deployed app, if any (parsed again only after a `set_js_app`).
    pub fn current(&self, store: &covenant_kv::Store) -> Result<Option<Arc<App>>, AppError> {
        let version = App::version(store);
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, app)) = cur.as_ref() {
            if *v == version {
                return Ok(app.clone());
            }
        }
        let app = App::load(store)?.map(Arc::new);
        *cur = Some((version, app.clone()));
        Ok(app)
    }
}

/// For a request to an endpoint of `app`: whether it must run on the primary
/// (`None`: not an endpoint of the app). A `readwrite` endpoint writes whatever
/// its method (a GET included); `forwarding_required: "always"` forwards even a
/// read, `"never"` keeps even a write here (where it then fails if this node is
/// not the primary, as in CCF).
pub fn endpoint_writes(app: &App, method: &str, path: &str) -> Option<bool> {
    let (route, _) = app.route(method, path)?.ok()?;
    let p = &route.properties;
    Some(match p.forwarding_required.as_deref() {
        Some("always") => true,
        Some("never") => false,
        _ => p.mode() == covenant_app::Mode::Readwrite,
    })
}

/// Whether any policy name within `policy` (itself, or the members of an `all_of`)
/// satisfies `pred`; a malformed policy is `None` to `pred`.
fn any_policy_name(policy: &Value, pred: &impl Fn(Option<&str>) -> bool) -> bool {
    match policy {
        Value::String(s) => pred(Some(s)),
        Value::Object(o) => o
            .get("all_of")
            .and_then(Value::as_array)
            .is_some_and(|all| all.iter().any(|p| any_policy_name(p, pred))),
        _ => pred(None),
    }
}

/// Whether a policy (or an `all_of` within it) authenticates the request body.
pub fn mentions_body_policy(policy: &Value) -> bool {
    any_policy_name(policy, &|n| n == Some("user_cose_sign1"))
}

/// Whether a policy can only pass with a client certificate or a bearer token.
fn policy_needs_credential(policy: &Value) -> bool {
    any_policy_name(policy, &|n| {
        !matches!(n, Some("no_auth" | "user_cose_sign1"))
    })
}

/// For a request to an endpoint of the deployed app: whether every one of its
/// policies needs a client certificate or a bearer token (so the edge may refuse
/// a request presenting neither before reading its body). `None`: not an app
/// endpoint.
pub fn endpoint_needs_credential(app: &App, method: &str, path: &str) -> Option<bool> {
    let (route, _) = app.route(method, path)?.ok()?;
    let policies = &route.properties.authn_policies;
    Some(!policies.is_empty() && policies.iter().all(policy_needs_credential))
}
