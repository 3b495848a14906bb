//! ACL's programmability routes (SPEC §4): user-defined endpoints (an app bundle an
//! Administrator deploys directly, the same rows `set_js_app` writes), the JS
//! runtime options, and user-defined functions (stored JavaScript modules a caller
//! runs with `:execute`).
//!
//! Roles: deploying endpoints, changing runtime options and changing functions take
//! Administrator; reading them takes any role; executing a function takes
//! Contributor (it may write, as an app may).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use covenant_app::{AppBundle, Host, RuntimeOptions, ENDPOINTS, MODULES, RUNTIME_OPTIONS};
use covenant_service::Executed;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{AsAdministrator, AsReader, Caller, Role};
use crate::error::{body_error, ApiError, Body};
use crate::http::{api_version, with_txid, Params};
use crate::state::NodeState;

/// Function id → `{"code"}` (private: the code is the caller's).
pub const FUNCTIONS: &str = "acl.user_defined_functions";
/// Longest function source accepted.
const MAX_CODE_BYTES: usize = 1 << 20;
/// The suffix of the execute route: `/app/userDefinedFunctions/{id}:execute`.
const EXECUTE: &str = ":execute";

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("InvalidInput", message)
}

fn json_body(body: Body) -> Result<Value, ApiError> {
    let raw = body.map_err(body_error)?;
    serde_json::from_slice(&raw).map_err(|e| bad(format!("the body is not JSON: {e}")))
}

pub async fn get_endpoints(
    State(state): State<NodeState>,
    _: AsReader,
) -> Result<Response, ApiError> {
    let txid = state.engine().last_txid();
    Ok(with_txid(txid, Json(AppBundle::from_store(&state.store))))
}

pub async fn put_endpoints(
    State(state): State<NodeState>,
    _: AsAdministrator,
    body: Body,
) -> Result<Response, ApiError> {
    let raw = body.map_err(body_error)?;
    let bundle = AppBundle::from_json(&raw).map_err(bad)?;
    let rows = bundle.rows();
    let txid = state
        .write("deploying the endpoints failed", move |e| {
            let mut tx = e.begin();
            tx.clear(MODULES);
            tx.clear(ENDPOINTS);
            for (name, source) in &rows.modules {
                tx.put(MODULES, name.as_bytes(), source.as_bytes());
            }
            for (key, props) in &rows.endpoints {
                tx.put(ENDPOINTS, key.as_bytes(), props);
            }
            e.commit_tx(tx, None)
        })
        .await?;
    Ok(with_txid(Some(txid), StatusCode::CREATED))
}

pub async fn get_runtime_options(
    State(state): State<NodeState>,
    _: AsReader,
) -> Result<Response, ApiError> {
    let txid = state.engine().last_txid();
    Ok(with_txid(txid, Json(RuntimeOptions::load(&state.store))))
}

pub async fn patch_runtime_options(
    State(state): State<NodeState>,
    _: AsAdministrator,
    body: Body,
) -> Result<Response, ApiError> {
    let patch = json_body(body)?;
    let opts = RuntimeOptions::load(&state.store)
        .patched(&patch)
        .map_err(bad)?;
    let value = serde_json::to_vec(&opts).map_err(|e| ApiError::internal("encoding", e))?;
    let txid = state
        .write("updating the runtime options failed", move |e| {
            let mut tx = e.begin();
            tx.put(RUNTIME_OPTIONS, b"0", &value);
            e.commit_tx(tx, None)
        })
        .await?;
    Ok(with_txid(Some(txid), Json(opts)))
}

pub async fn get_module(
    State(state): State<NodeState>,
    AsReader { query: q, .. }: AsReader,
) -> Result<Response, ApiError> {
    let name = q.get("module_name").ok_or_else(|| {
        ApiError::bad_request(
            "QueryParameterError",
            "the module_name query parameter is required",
        )
    })?;
    let name = covenant_app::module_name(name);
    let source = state.store.get(MODULES, name.as_bytes()).ok_or_else(|| {
        ApiError::not_found("ModuleNotFound", format!("no module {name} is deployed"))
    })?;
    let txid = state.engine().last_txid();
    Ok(with_txid(
        txid,
        Json(json!({"name": name, "module": String::from_utf8_lossy(&source)})),
    ))
}

fn check_function_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(bad(
            "a function id is 1..128 characters of letters, digits, '-', '_' and '.'",
        ))
    }
}

fn function_code(state: &NodeState, id: &str) -> Result<String, ApiError> {
    let row = state.store.get(FUNCTIONS, id.as_bytes()).ok_or_else(|| {
        ApiError::not_found(
            "UserDefinedFunctionNotFound",
            format!("no user-defined function {id}"),
        )
    })?;
    let v: Value = serde_json::from_slice(&row)
        .map_err(|e| ApiError::internal("a stored function is unreadable", e))?;
    Ok(v["code"].as_str().unwrap_or_default().to_string())
}

pub async fn list_functions(
    State(state): State<NodeState>,
    _: AsReader,
) -> Result<Response, ApiError> {
    let functions: Vec<Value> = state
        .store
        .entries(FUNCTIONS)
        .into_iter()
        .map(|(k, v)| {
            let code = serde_json::from_slice::<Value>(&v)
                .ok()
                .and_then(|v| v["code"].as_str().map(str::to_string))
                .unwrap_or_default();
            json!({"id": String::from_utf8_lossy(&k), "code": code})
        })
        .collect();
    let txid = state.engine().last_txid();
    Ok(with_txid(txid, Json(json!({"functions": functions}))))
}

pub async fn get_function(
    State(state): State<NodeState>,
    _: AsReader,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_function_id(&id)?;
    let code = function_code(&state, &id)?;
    let txid = state.engine().last_txid();
    Ok(with_txid(txid, Json(json!({"id": id, "code": code}))))
}

pub async fn put_function(
    State(state): State<NodeState>,
    _: AsAdministrator,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    check_function_id(&id)?;
    let v = json_body(body)?;
    let code = v["code"]
        .as_str()
        .ok_or_else(|| bad("the body must be {\"code\": \"<JavaScript module>\"}"))?;
    if code.len() > MAX_CODE_BYTES {
        return Err(bad(format!(
            "a function's code is at most {MAX_CODE_BYTES} bytes"
        )));
    }
    let row = json!({"code": code}).to_string();
    let existed = state.store.get(FUNCTIONS, id.as_bytes()).is_some();
    let key = id.clone();
    let txid = state
        .write("storing the function failed", move |e| {
            let mut tx = e.begin();
            tx.put(FUNCTIONS, key.as_bytes(), row.as_bytes());
            e.commit_tx(tx, None)
        })
        .await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(with_txid(
        Some(txid),
        (status, Json(json!({"id": id, "code": code}))),
    ))
}

pub async fn delete_function(
    State(state): State<NodeState>,
    _: AsAdministrator,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_function_id(&id)?;
    function_code(&state, &id)?;
    let txid = state
        .write("deleting the function failed", move |e| {
            let mut tx = e.begin();
            tx.remove(FUNCTIONS, id.as_bytes());
            e.commit_tx(tx, None)
        })
        .await?;
    Ok(with_txid(Some(txid), StatusCode::NO_CONTENT))
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Execution {
    #[serde(default)]
    arguments: Vec<String>,
    #[serde(default)]
    exported_function_name: Option<String>,
    #[serde(default)]
    runtime_options: Option<Value>,
}

/// `POST /app/userDefinedFunctions/{id}:execute`: runs the function in one
/// transaction (kept when it returns). Its own failures are a 200 with
/// `status: "Failed"`, as ACL answers; bad requests are 4xx.
pub async fn execute(
    State(state): State<NodeState>,
    caller: Caller,
    Path(id_and_verb): Path<String>,
    axum::extract::Query(q): Params,
    body: Body,
) -> Result<Response, ApiError> {
    api_version(&q)?;
    let Some(id) = id_and_verb.strip_suffix(EXECUTE).map(str::to_string) else {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "POST is for /app/userDefinedFunctions/{id}:execute",
        ));
    };
    caller.require(Role::Contributor)?;
    check_function_id(&id)?;
    let raw = body.map_err(body_error)?;
    let run: Execution = if raw.iter().all(u8::is_ascii_whitespace) {
        Execution::default()
    } else {
        serde_json::from_slice(&raw).map_err(|e| {
            bad(format!(
                "the body must be {{\"arguments\": [strings], \"exportedFunctionName\", \"runtimeOptions\"}}: {e}"
            ))
        })?
    };
    let code = function_code(&state, &id)?;
    let base = RuntimeOptions::load(&state.store);
    let opts = match &run.runtime_options {
        Some(patch) => base.patched(patch).map_err(bad)?,
        None => base,
    };
    let function = run
        .exported_function_name
        .unwrap_or_else(|| "main".to_string());
    let limits = opts.limits();
    let user_id = caller.user_id.clone();
    // Outside every lock: only the commit waits for the engine.
    let service = state.service.clone();
    let task = service.execute(move |store, _run| {
        let host = Host {
            consensus: crate::app::engine_view(&state),
            context: Some(json!({"request": {"method": "POST"}, "userId": user_id})),
            ..Default::default()
        };
        let (ran, kv) = covenant_app::run_function_tracked(
            &limits,
            &code,
            &function,
            &run.arguments,
            store,
            Default::default(),
            host,
        );
        match ran {
            Ok(value) if !kv.is_empty() => {
                let mut tx = store.begin();
                kv.apply_to(&mut tx);
                Executed::Commit {
                    tx,
                    claims: None,
                    answer: Ok(value),
                }
            }
            other => Executed::Answer {
                reads: kv.reads(),
                answer: other,
            },
        }
    });
    let out = task
        .await
        .map_err(|e| ApiError::service("running the function failed", e))?;
    Ok(match out.answer {
        Ok(value) => with_txid(
            out.txid,
            Json(json!({"status": "Succeeded", "result": {"returnValue": value}})),
        ),
        Err(err) => {
            let message = failure_message(err, &opts);
            with_txid(
                out.txid,
                Json(json!({"status": "Failed", "error": {"message": message}})),
            )
        }
    })
}

/// What a failed function tells its caller: the exception's message (its stack
/// too when the runtime options return exception details), or the limit it hit.
fn failure_message(err: covenant_app::AppError, opts: &RuntimeOptions) -> String {
    use covenant_app::AppError;
    use covenant_js::JsError;
    match err {
        AppError::Script(JsError::Exception { message, stack }) => {
            crate::app::exception_text(message, stack, opts.return_exception_details)
        }
        other => other.to_string(),
    }
}

/// A user-defined function an append runs in its own transaction (ACL's
/// `preHooks`, before the entry is written, and `postHooks`, after): in order,
/// and any failure aborts the append.
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hook {
    function_id: String,
    #[serde(default)]
    properties: Option<Execution>,
}

/// Most hooks of each kind one append may list (ACL's limit).
pub const MAX_HOOKS: usize = 5;
/// Longest a hook may run, whatever its runtime options say (ACL's limit).
const HOOK_MAX_MS: u64 = 5000;

/// A hook with its code looked up and its limits settled, ready to run.
pub(crate) struct PreparedHook {
    id: String,
    code: String,
    function: String,
    arguments: Vec<String>,
    limits: covenant_js::Limits,
}

/// Checks `hooks` (`what`: preHooks or postHooks) before anything is written.
pub(crate) fn prepare_hooks(
    state: &NodeState,
    what: &str,
    hooks: &[Hook],
) -> Result<Vec<PreparedHook>, ApiError> {
    if hooks.is_empty() {
        return Ok(Vec::new());
    }
    if hooks.len() > MAX_HOOKS {
        return Err(bad(format!("{what} lists at most {MAX_HOOKS} functions")));
    }
    let base = RuntimeOptions::load(&state.store);
    hooks
        .iter()
        .map(|h| {
            check_function_id(&h.function_id)?;
            let code = function_code(state, &h.function_id).map_err(|_| {
                bad(format!(
                    "{what}: no user-defined function {} (store it at /app/userDefinedFunctions/{})",
                    h.function_id, h.function_id
                ))
            })?;
            let run = h.properties.clone().unwrap_or_default();
            let mut opts = match &run.runtime_options {
                Some(patch) => base.patched(patch).map_err(bad)?,
                None => base.clone(),
            };
            opts.max_execution_time_ms = opts.max_execution_time_ms.min(HOOK_MAX_MS);
            Ok(PreparedHook {
                id: h.function_id.clone(),
                code,
                function: run
                    .exported_function_name
                    .unwrap_or_else(|| "main".to_string()),
                arguments: run.arguments,
                limits: opts.limits(),
            })
        })
        .collect()
}

/// Runs `hooks` in `tx`, each seeing the writes before it; `context` is the
/// functions' `context` global. A failure is the append's (500, as ACL answers).
/// What they read from `store` goes into `tx`, whose commit checks it.
pub(crate) fn run_hooks(
    store: &covenant_kv::Store,
    consensus: &covenant_app::ConsensusView,
    tx: &mut covenant_kv::Tx,
    hooks: &[PreparedHook],
    context: &Value,
) -> Result<(), ApiError> {
    for h in hooks {
        let host = Host {
            consensus: consensus.clone(),
            context: Some(context.clone()),
            ..Default::default()
        };
        match covenant_app::run_function(
            &h.limits,
            &h.code,
            &h.function,
            &h.arguments,
            store,
            tx.write_set().clone(),
            host,
        ) {
            Ok((_, kv)) => kv.apply_to(tx),
            Err(err) => {
                let message = failure_message(err, &RuntimeOptions::default());
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    format!("Error while executing function {}: {message}", h.id),
                ));
            }
        }
    }
    Ok(())
}
