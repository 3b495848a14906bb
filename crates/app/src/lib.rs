//! JavaScript applications (SPEC §6): a bundle deployed by governance
//! (`set_js_app`) is stored in CCF's maps, `public:ccf.gov.modules` (module name →
//! source) and `public:ccf.gov.endpoints` (`"<METHOD> <path>"` → endpoint
//! properties); this crate turns those rows into an [`App`], matches a request to
//! an endpoint (`/app` + the path template, `{param}` segments), and runs the
//! endpoint's function in a fresh QuickJS runtime with CCF's request and response
//! objects and the `ccf` global.
//!
//! Apps may read every map but write only their own: maps named `public:ccf.*` or
//! `ccf.*` (governance and internal state) are refused, and a `readonly` endpoint
//! writes nothing. A handler's writes are buffered and reach the transaction only
//! if it returns; one that throws, loops or allocates without bound leaves nothing.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

mod bundle;
mod host;
pub use bundle::{AppBundle, BundleRows, Metadata, ModuleDef};
pub use host::{ConsensusView, HistoricalTx, History, Host, RuntimeOptions, RUNTIME_OPTIONS};

use base64::Engine as _;
use covenant_js::kv::{BufferedKv, WritePolicy};
use covenant_js::{JsError, Limits};
use covenant_kv::{Store, WriteSet};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Module name → source.
pub const MODULES: &str = "public:ccf.gov.modules";
/// ACL's user-defined roles: `<prefix><role>` maps a JSON-quoted action to `{}`.
pub const ROLE_DEFINITIONS_PREFIX: &str = "public:confidentialledger.roles.user_roles_definitions.";
/// ACL's role assignments: JSON-quoted user id → JSON list of role names.
pub const USER_ROLES_MAPPING: &str = "public:confidentialledger.roles.user_roles_mapping";
/// `"<METHOD> <path>"` → [`EndpointProperties`].
pub const ENDPOINTS: &str = "public:ccf.gov.endpoints";
/// Where app endpoints live: a template `/accounts/{id}` answers `/app/accounts/{id}`.
pub const PREFIX: &str = "/app";

/// Why an app could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("the deployed app is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Script(#[from] JsError),
    #[error("the handler's response is malformed: {0}")]
    BadResponse(String),
}

/// How an endpoint uses the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// May write; its writes form one transaction (the default, as in CCF).
    #[default]
    Readwrite,
    /// Reads the committed-or-not current state; any write throws.
    Readonly,
    /// Reads a past state (handled as readonly here).
    Historical,
}

/// One endpoint of the bundle's `metadata.endpoints[path][method]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointProperties {
    pub js_module: String,
    pub js_function: String,
    /// `"user_cert"`, `"member_cert"`, `"any_cert"`, `"jwt"`, `"no_auth"`,
    /// `{"all_of": [...]}`; empty: unauthenticated.
    #[serde(default)]
    pub authn_policies: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarding_required: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub openapi: Value,
    /// Properties covenant does not act on (`openapi_hidden`, `interpreter_reuse`,
    /// `redirection_strategy`, ...), kept so a bundle reads back as deployed.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

impl EndpointProperties {
    pub fn mode(&self) -> Mode {
        self.mode.unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// An endpoint with its parsed path template.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: String,
    /// The template as deployed (`/accounts/{id}`), CCF's `request.route`.
    pub template: String,
    segments: Vec<Segment>,
    pub properties: EndpointProperties,
}

fn parse_template(t: &str) -> Result<Vec<Segment>, String> {
    if !t.starts_with('/') {
        return Err(format!("endpoint path {t:?} must start with /"));
    }
    t.split('/')
        .skip(1)
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if !name.is_empty() && !name.contains(['{', '}']) => {
                    Ok(Segment::Param(name.to_string()))
                }
                Some(_) => Err(format!("bad parameter segment {seg:?} in {t:?}")),
                None if seg.contains(['{', '}']) => Err(format!("bad segment {seg:?} in {t:?}")),
                None => Ok(Segment::Literal(seg.to_string())),
            },
        )
        .collect()
}

impl Route {
    /// The parameters, if `path` (without the `/app` prefix) matches.
    fn matches(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let parts: Vec<&str> = path.split('/').skip(1).collect();
        if parts.len() != self.segments.len() || !path.starts_with('/') {
            return None;
        }
        let mut params = BTreeMap::new();
        for (seg, part) in self.segments.iter().zip(parts) {
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(name) => {
                    params.insert(name.clone(), percent_decode(part));
                }
            }
        }
        Some(params)
    }

    /// Literal segments first: `/accounts/mine` wins over `/accounts/{id}`.
    fn specificity(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
    }
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Path parameters by name.
pub type Params = BTreeMap<String, String>;

/// A deployed application.
#[derive(Debug, Clone)]
pub struct App {
    pub modules: covenant_js::Bundle,
    routes: Vec<Route>,
}

/// A module name as stored: no leading `/`.
pub fn module_name(name: &str) -> String {
    name.trim_start_matches('/').to_string()
}

impl App {
    /// The app deployed in `store`, or `None` if there is none.
    pub fn load(store: &Store) -> Result<Option<App>, AppError> {
        let rows = store.entries(ENDPOINTS);
        if rows.is_empty() {
            return Ok(None);
        }
        let mut routes = Vec::with_capacity(rows.len());
        for (key, value) in rows {
            let key = String::from_utf8_lossy(&key).into_owned();
            let (method, template) = key
                .split_once(' ')
                .ok_or_else(|| AppError::Corrupt(format!("endpoint key {key:?}")))?;
            let properties: EndpointProperties = serde_json::from_slice(&value)
                .map_err(|e| AppError::Corrupt(format!("endpoint {key}: {e}")))?;
            routes.push(Route {
                method: method.to_ascii_uppercase(),
                template: template.to_string(),
                segments: parse_template(template).map_err(AppError::Corrupt)?,
                properties,
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.specificity()));
        let modules = store
            .entries(MODULES)
            .into_iter()
            .map(|(k, v)| {
                (
                    module_name(&String::from_utf8_lossy(&k)),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        Ok(Some(App {
            modules: Arc::new(modules),
            routes,
        }))
    }

    /// What identifies the deployed app's version in `store` (every `set_js_app`
    /// rewrites all endpoint rows), so a node can cache the parsed app.
    pub fn version(store: &Store) -> (usize, u64) {
        store.map_version(ENDPOINTS)
    }

    /// The endpoint for `method` and `path` (the request path, `/app/...`), with its
    /// parameters. `Err(allowed)` when the path matches but not the method.
    pub fn route(&self, method: &str, path: &str) -> Option<Result<(&Route, Params), Vec<String>>> {
        let rest = path.strip_prefix(PREFIX)?;
        let rest = if rest.is_empty() { "/" } else { rest };
        let mut allowed = Vec::new();
        for r in &self.routes {
            if let Some(params) = r.matches(rest) {
                if r.method.eq_ignore_ascii_case(method) {
                    return Some(Ok((r, params)));
                }
                allowed.push(r.method.clone());
            }
        }
        (!allowed.is_empty()).then_some(Err(allowed))
    }

    /// Every route (for OpenAPI).
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// What a handler receives (CCF's `Request`, minus the functions of `body`).
#[derive(Debug, Clone, Default)]
pub struct AppRequest {
    pub method: String,
    pub path: String,
    pub url: String,
    pub query: String,
    pub hostname: String,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub params: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// The caller object of the policy that authenticated the request (`null` when
    /// unauthenticated).
    pub caller: Value,
}

/// What a handler answered.
#[derive(Debug, Clone, PartialEq)]
pub struct AppResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// CCF's default content type for the body's JS type, unless `headers` set one.
    pub default_content_type: Option<&'static str>,
}

/// The entry module that builds CCF's request object, calls the handler and
/// normalizes its response.
fn dispatcher(module: &str, function: &str) -> String {
    let module = serde_json::to_string(&module_name(module)).unwrap_or_default();
    let function = serde_json::to_string(function).unwrap_or_default();
    format!(
        r#"import * as app from {module};
export async function dispatch(req) {{
  const raw = __app.b64ToBuf(req.body);
  for (const c of [req.caller, ...Object.values(req.caller ?? {{}})]) {{
    if (c !== null && typeof c === "object" && typeof c.cose?.content === "string") {{
      c.cose.content = __app.b64ToBuf(c.cose.content);
    }}
  }}
  const request = {{
    headers: req.headers, params: req.params, url: req.url, path: req.path,
    route: req.route, query: req.query, method: req.method, hostname: req.hostname,
    caller: req.caller,
    body: {{
      text: () => ccf.bufToStr(raw),
      json: () => JSON.parse(ccf.bufToStr(raw)),
      arrayBuffer: () => raw.slice(0),
    }},
  }};
  const handler = app[{function}];
  if (typeof handler !== "function") {{
    throw new Error(`module ${{{module}}} exports no function ${{{function}}}`);
  }}
  const r = (await handler(request)) ?? {{}};
  const out = {{ statusCode: r.statusCode ?? 200, headers: r.headers ?? {{}} }};
  const b = r.body;
  if (b === undefined || b === null) {{
    out.kind = "none";
  }} else if (b instanceof ArrayBuffer || ArrayBuffer.isView(b)) {{
    out.kind = "bytes";
    out.body = __app.bufToB64(b instanceof ArrayBuffer ? b : b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  }} else if (typeof b === "string") {{
    out.kind = "text";
    out.body = b;
  }} else {{
    out.kind = "json";
    out.body = JSON.stringify(b);
  }}
  return out;
}}
"#
    )
}

/// The write policy of an endpoint: never governance or internal maps; nothing at
/// all in a readonly one.
pub fn write_policy(mode: Mode) -> WritePolicy {
    Arc::new(move |map: &str| {
        if mode != Mode::Readwrite {
            return Err(format!(
                "this endpoint is {mode:?} and may not write (to {map})"
            ));
        }
        if map.starts_with("public:ccf.") || map.starts_with("ccf.") {
            return Err(format!(
                "applications may not write {map}: public:ccf.* and ccf.* maps belong to governance and the service"
            ));
        }
        if map.starts_with("public:confidentialledger.") {
            return Err(format!(
                "applications may not write {map}: roles are managed at /app/roles and /app/ledgerUsers"
            ));
        }
        Ok(())
    })
}

/// What a handler asked of its transaction through `ccf.rpc`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxOptions {
    /// `ccf.rpc.setApplyWrites(b)`: keep (true) or drop (false) the writes whatever
    /// the status; unset, they are kept only for a 2xx response.
    pub apply_writes: Option<bool>,
    /// `ccf.rpc.setClaimsDigest(buf)`: the 32 bytes that enter the transaction's
    /// Merkle leaf (and so its receipt's `leafComponents.claimsDigest`).
    pub claims_digest: Option<[u8; 32]>,
}

impl TxOptions {
    /// Whether the handler's writes become a transaction, given its status.
    pub fn keeps_writes(&self, status: u16) -> bool {
        self.apply_writes.unwrap_or((200..300).contains(&status))
    }
}

type SharedOptions = std::rc::Rc<std::cell::RefCell<TxOptions>>;

fn install_host<'js>(
    ctx: &covenant_js::rquickjs::Ctx<'js>,
    kv: covenant_js::ccf::SharedKv<'js>,
    options: SharedOptions,
    host: Host,
) -> covenant_js::rquickjs::Result<()> {
    use covenant_js::rquickjs::{ArrayBuffer, Ctx, Exception, Function, Object};
    let c = ctx.clone();
    covenant_js::ccf::install_with(ctx, kv, move |more| {
        let rpc = Object::new(c.clone())?;
        let o = options.clone();
        rpc.set(
            "setApplyWrites",
            Function::new(c.clone(), move |apply: bool| {
                o.borrow_mut().apply_writes = Some(apply);
            })?,
        )?;
        let o = options;
        rpc.set(
            "setClaimsDigest",
            Function::new(
                c.clone(),
                move |ctx: Ctx<'js>,
                      digest: ArrayBuffer<'js>|
                      -> covenant_js::rquickjs::Result<()> {
                    let raw = covenant_js::ccf::bytes(&digest);
                    let d: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
                        Exception::throw_message(
                            &ctx,
                            &format!("a claims digest is 32 bytes (SHA-256), not {}", raw.len()),
                        )
                    })?;
                    o.borrow_mut().claims_digest = Some(d);
                    Ok(())
                },
            )?,
        )?;
        more.set("rpc", rpc)?;
        if let Some(context) = &host.context {
            let v = c.json_parse(context.to_string())?;
            c.globals().set("context", v)?;
        }
        host::install(&c, more, host)
    })?;
    let app = Object::new(ctx.clone())?;
    app.set("b64ToBuf", host::b64_to_buf(ctx)?)?;
    app.set(
        "bufToB64",
        Function::new(ctx.clone(), |b: ArrayBuffer<'js>| {
            base64::engine::general_purpose::STANDARD.encode(covenant_js::ccf::bytes(&b))
        })?,
    )?;
    app.set(
        "log",
        Function::new(ctx.clone(), |level: String, text: String| {
            match level.as_str() {
                "error" => tracing::error!(target: "app", "{text}"),
                "warn" => tracing::warn!(target: "app", "{text}"),
                _ => tracing::info!(target: "app", "{text}"),
            }
        })?,
    )?;
    ctx.globals().set("__app", app)?;
    covenant_js::bytecode::host_value::<()>(
        ctx,
        "__covenant_host/console",
        r#"globalThis.console = Object.freeze(Object.fromEntries(
  ["log", "info", "warn", "error", "debug"].map((l) => [l, (...a) => __app.log(l,
    a.map((x) => typeof x === "string" ? x : JSON.stringify(x)).join(" "))])));"#,
    )?;
    covenant_js::bytecode::host_value::<()>(ctx, "__covenant_host/acl", ACL_JS)
}

/// The `acl` global: role checks over ACL's tables (what `/app/roles` and
/// `/app/ledgerUsers` write), so an app need not parse them itself.
const ACL_JS: &str = r#"
(() => {
  const q = (s) => ccf.strToBuf(JSON.stringify(s));
  const json = (b) => { try { return JSON.parse(ccf.bufToStr(b)); } catch { return undefined; } };
  const str = (x, what) => { if (typeof x !== "string") throw new TypeError(`${what} must be a string`); return x; };
  // A certificate user's id in either spelling: CCF's (request.caller.id, 64 hex
  // digits; users.info is keyed so) or ACL's (colon pairs; the roles mapping is).
  const aclId = (s) => /^[0-9a-fA-F]{64}$/.test(s) ? s.toUpperCase().match(/../g).join(":") : s;
  const ccfId = (s) => /^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$/.test(s) ? s.replace(/:/g, "").toLowerCase() : s;
  function builtinRoles(userId) {
    const info = ccf.kv["public:ccf.gov.users.info"];
    const row = info.get(ccf.strToBuf(ccfId(userId))) ?? info.get(ccf.strToBuf(aclId(userId)));
    if (row === undefined) return [];
    const roles = json(row)?.user_data?.assignedRoles;
    return Array.isArray(roles) ? roles : [];
  }
  function customRoles(userId) {
    const row = ccf.kv["public:confidentialledger.roles.user_roles_mapping"].get(q(aclId(userId)));
    const roles = row === undefined ? [] : json(row);
    return Array.isArray(roles) ? roles : [];
  }
  function roleActions(role) {
    const out = [];
    ccf.kv["public:confidentialledger.roles.user_roles_definitions." + str(role, "role")]
      .forEach((_, k) => { const a = json(k); if (typeof a === "string") out.push(a); });
    return out;
  }
  globalThis.acl = Object.freeze({
    userRoles(userId) { str(userId, "userId"); return [...builtinRoles(userId), ...customRoles(userId)]; },
    hasRole(userId, role) { return acl.userRoles(userId).includes(str(role, "role")); },
    roleActions,
    isActionAllowed(userId, action) {
      str(userId, "userId"); str(action, "action");
      return customRoles(userId).some((r) =>
        ccf.kv["public:confidentialledger.roles.user_roles_definitions." + r].has(q(action)));
    },
  });
})();
"#;

/// Runs `route`'s handler for `request` over `store` plus `base` (the transaction's
/// writes so far), with what the node lends it in `host`. Returns the response, the
/// handler's writes (empty for a readonly endpoint) and what it asked of the
/// transaction.
pub fn run(
    limits: &Limits,
    app: &App,
    route: &Route,
    request: &AppRequest,
    store: &Store,
    base: WriteSet,
    host: Host,
) -> Result<(AppResponse, BufferedKv, TxOptions), AppError> {
    let (out, kv) = run_tracked(limits, app, route, request, store, base, host);
    out.map(|(resp, options)| (resp, kv, options))
}

/// [`run`], with the handler's maps returned whatever its outcome: what it read
/// decides whether a failure computed outside the engine's lock still stands.
pub fn run_tracked(
    limits: &Limits,
    app: &App,
    route: &Route,
    request: &AppRequest,
    store: &Store,
    base: WriteSet,
    host: Host,
) -> (Result<(AppResponse, TxOptions), AppError>, BufferedKv) {
    let kv = std::rc::Rc::new(std::cell::RefCell::new(BufferedKv::new(
        store.clone(),
        base,
        write_policy(route.properties.mode()),
    )));
    let host_kv = kv.clone();
    let options = SharedOptions::default();
    let host_options = options.clone();
    let req = json!({
        "method": request.method,
        "path": request.path,
        "url": request.url,
        "route": route.template,
        "query": request.query,
        "hostname": request.hostname,
        "headers": request.headers,
        "params": request.params,
        "body": base64::engine::general_purpose::STANDARD.encode(&request.body),
        "caller": request.caller,
    });
    let entry = dispatcher(&route.properties.js_module, &route.properties.js_function);
    let out = covenant_js::call_with_host(
        limits,
        Some(app.modules.clone()),
        "__covenant_dispatch",
        &entry,
        "dispatch",
        &[req],
        move |ctx| install_host(ctx, host_kv, host_options, host),
    );
    let options = *options.borrow();
    let out = out
        .map_err(AppError::from)
        .and_then(|out| response(&out))
        .map(|resp| (resp, options));
    (out, BufferedKv::take(kv))
}

/// The module name a user-defined function's code is loaded as.
pub const FUNCTION_MODULE: &str = "function.js";

/// Runs `function` exported by a user-defined function's `code` (ACL's
/// `userDefinedFunctions/{id}:execute`) with string `arguments`, over `store` plus
/// `base`, writing as an app may. Its return value comes back as a string: a
/// string as it is, `undefined` as `""`, anything else as JSON.
pub fn run_function(
    limits: &Limits,
    code: &str,
    function: &str,
    arguments: &[String],
    store: &Store,
    base: WriteSet,
    host: Host,
) -> Result<(String, BufferedKv), AppError> {
    let (out, kv) = run_function_tracked(limits, code, function, arguments, store, base, host);
    out.map(|text| (text, kv))
}

/// [`run_function`], with the function's maps returned whatever its outcome.
pub fn run_function_tracked(
    limits: &Limits,
    code: &str,
    function: &str,
    arguments: &[String],
    store: &Store,
    base: WriteSet,
    host: Host,
) -> (Result<String, AppError>, BufferedKv) {
    let kv = std::rc::Rc::new(std::cell::RefCell::new(BufferedKv::new(
        store.clone(),
        base,
        write_policy(Mode::Readwrite),
    )));
    let host_kv = kv.clone();
    let modules: BTreeMap<String, String> =
        [(FUNCTION_MODULE.to_string(), code.to_string())].into();
    let name = serde_json::to_string(function).unwrap_or_default();
    let entry = format!(
        r#"import * as udf from "{FUNCTION_MODULE}";
export async function execute(args) {{
  const f = udf[{name}];
  if (typeof f !== "function") {{
    throw new Error(`the function's code exports no function ${{{name}}}`);
  }}
  const r = await f(...args);
  return r === undefined ? "" : typeof r === "string" ? r : JSON.stringify(r);
}}
"#
    );
    let out = covenant_js::call_with_host(
        limits,
        Some(Arc::new(modules)),
        "__covenant_udf",
        &entry,
        "execute",
        &[json!(arguments)],
        move |ctx| install_host(ctx, host_kv, SharedOptions::default(), host),
    );
    let text = out.map_err(AppError::from).map(|out| match out {
        Value::String(s) => s,
        other => other.to_string(),
    });
    (text, BufferedKv::take(kv))
}

fn response(out: &Value) -> Result<AppResponse, AppError> {
    let bad = |m: &str| AppError::BadResponse(m.to_string());
    let status = out["statusCode"]
        .as_u64()
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| bad("statusCode must be an integer in 100..599"))? as u16;
    let mut headers = Vec::new();
    if let Some(h) = out["headers"].as_object() {
        for (k, v) in h {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            headers.push((k.to_ascii_lowercase(), v));
        }
    }
    let text = |v: &Value| v.as_str().unwrap_or_default().as_bytes().to_vec();
    let (body, default_content_type) = match out["kind"].as_str() {
        Some("bytes") => (
            base64::engine::general_purpose::STANDARD
                .decode(out["body"].as_str().unwrap_or_default())
                .map_err(|e| bad(&e.to_string()))?,
            Some("application/octet-stream"),
        ),
        Some("text") => (text(&out["body"]), Some("text/plain")),
        Some("json") => (text(&out["body"]), Some("application/json")),
        _ => (Vec::new(), None),
    };
    Ok(AppResponse {
        status,
        headers,
        body,
        default_content_type,
    })
}

#[cfg(test)]
mod tests;
