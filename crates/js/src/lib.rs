//! covenant's JavaScript runtime: QuickJS (QuickJS-NG through `rquickjs`), used for
//! the governance constitution and for JavaScript applications (SPEC §5, §6).
//!
//! Every call runs in a fresh runtime and context (about a tenth of a millisecond),
//! so nothing leaks from one request or proposal to the next, and always under the
//! three limits of [`Limits`]: an interrupt handler ends a script past its time
//! budget, the runtime's allocator refuses memory past the heap cap, and QuickJS
//! checks the stack. A script that loops or allocates without bound gets a clear
//! error; it never hangs or brings down the node.
//!
//! Values cross the boundary as JSON (`serde_json::Value`), the shape every caller
//! (constitution `validate`/`resolve`/`apply`, ballots, app endpoints) needs;
//! callers that expose host objects (the `ccf` global) do so with
//! [`call_with_host`], which hands them the context before the call.

// Unsafe code: the workspace denies it and every other library forbids it; this
// crate must allow it, because it crosses two FFI boundaries that have no safe
// wrapper: loading a cached module from QuickJS bytecode (`bytecode`:
// `Module::load` trusts its bytes) and reading the bytes of a script's ArrayBuffer
// (`ccf::bytes`) through rquickjs, and RFC 5649 AES key wrap with padding through
// aws-lc-sys (`crypto`: aws-lc-rs's `key_wrap` has no AES-192). Each `unsafe`
// block carries a `// SAFETY:` comment saying why it is sound (the workspace's
// `clippy::undocumented_unsafe_blocks` refuses one without).
#![allow(unsafe_code)]

mod buffer;
pub mod bytecode;
pub mod ccf;
pub mod crypto;
#[cfg(test)]
mod crypto_tests;
pub mod kv;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use rquickjs;
use rquickjs::{
    CatchResultExt, CaughtError, Context, Ctx, Exception, Function, Module, Object, Runtime, Value,
};

/// What one execution may use (ACL's `runtimeOptions` defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_execution_time: Duration,
    pub max_heap_bytes: usize,
    pub max_stack_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_execution_time: Duration::from_millis(1000),
            max_heap_bytes: 100 * 1024 * 1024,
            max_stack_bytes: 1024 * 1024,
        }
    }
}

/// Why a script did not produce a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsError {
    #[error("the script ran longer than its limit of {0} ms and was stopped")]
    Timeout(u128),
    #[error("the script needed more than its heap limit of {0} bytes")]
    OutOfMemory(usize),
    /// The script threw (or failed to compile): the JS error's message and stack.
    #[error("{message}")]
    Exception {
        message: String,
        stack: Option<String>,
    },
    #[error("module {module:?} exports no function {function:?}")]
    NoSuchFunction { module: String, function: String },
    #[error("the script's result cannot be represented as JSON: {0}")]
    BadValue(String),
    #[error("javascript engine: {0}")]
    Engine(String),
}

impl JsError {
    /// The JS stack of an exception, for logs (never for clients unless the runtime
    /// options say so).
    pub fn stack(&self) -> Option<&str> {
        match self {
            JsError::Exception { stack, .. } => stack.as_deref(),
            _ => None,
        }
    }
}

/// Calls `function`, exported by the ES module `source` (named `module` in stack
/// traces), with `args` converted from JSON; returns its result as JSON (`null` for
/// `undefined`). A returned promise is awaited (its jobs run within the same limits).
pub fn call(
    limits: &Limits,
    module: &str,
    source: &str,
    function: &str,
    args: &[serde_json::Value],
) -> Result<serde_json::Value, JsError> {
    call_with_host(limits, None, module, source, function, args, |_| Ok(()))
}

/// Whether every module of `bundle` compiles, its imports resolving within the
/// bundle (nothing runs): what CCF's bytecode refresh checks of an app before
/// accepting it. The error names the first module that does not.
pub fn check_bundle(bundle: Bundle) -> Result<(), (String, JsError)> {
    let engine = |e: rquickjs::Error| (String::new(), JsError::Engine(e.to_string()));
    let rt = Runtime::new().map_err(engine)?;
    rt.set_memory_limit(Limits::default().max_heap_bytes);
    rt.set_loader(BundleResolver(bundle.clone()), BundleLoader(bundle.clone()));
    let ctx = Context::full(&rt).map_err(engine)?;
    ctx.with(|ctx| {
        for (name, source) in bundle.iter() {
            bytecode::declare(&ctx, name, source)
                .catch(&ctx)
                .map_err(|e| {
                    (
                        name.clone(),
                        JsError::Exception {
                            message: e.to_string(),
                            stack: None,
                        },
                    )
                })?;
        }
        Ok(())
    })
}

/// The ES modules of an application bundle, by name (`endpoints/app.js`, without a
/// leading `/`). `import`s between them resolve relative to the importing module
/// (`./x.js`, `../node_modules/y/index.js`); a bare specifier names a module as is.
pub type Bundle = std::sync::Arc<std::collections::BTreeMap<String, String>>;

/// Normalizes `name` imported from `base` into a bundle module name: relative
/// specifiers join `base`'s directory, `.`/`..` segments fold, leading `/` goes.
pub fn resolve_module_name(base: &str, name: &str) -> Result<String, String> {
    let joined = if name.starts_with("./") || name.starts_with("../") {
        match base.rfind('/') {
            Some(i) => format!("{}/{name}", &base[..i]),
            None => name.to_string(),
        }
    } else {
        name.to_string()
    };
    let mut parts: Vec<&str> = Vec::new();
    for seg in joined.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("import {name:?} from {base:?} leaves the bundle"));
                }
            }
            s => parts.push(s),
        }
    }
    Ok(parts.join("/"))
}

struct BundleResolver(Bundle);

impl rquickjs::loader::Resolver for BundleResolver {
    fn resolve<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<rquickjs::loader::ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        let resolved =
            resolve_module_name(base, name).map_err(|m| Exception::throw_message(ctx, &m))?;
        if self.0.contains_key(&resolved) {
            return Ok(resolved);
        }
        // Bundlers write imports with and without the extension.
        let with_js = format!("{resolved}.js");
        if self.0.contains_key(&with_js) {
            return Ok(with_js);
        }
        Err(Exception::throw_message(
            ctx,
            &format!("module {name:?} (imported by {base:?}) is not in the bundle"),
        ))
    }
}

struct BundleLoader(Bundle);

impl rquickjs::loader::Loader for BundleLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<rquickjs::loader::ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, rquickjs::module::Declared>> {
        let source = self
            .0
            .get(name)
            .ok_or_else(|| Exception::throw_message(ctx, &format!("no module {name:?}")))?;
        bytecode::declare(ctx, name, source.as_str())
    }
}

/// [`call`], with `host` run first in the fresh context to install globals (host
/// functions and objects) the script may use; with a `bundle`, `source` may import
/// its modules.
pub fn call_with_host(
    limits: &Limits,
    bundle: Option<Bundle>,
    module: &str,
    source: &str,
    function: &str,
    args: &[serde_json::Value],
    host: impl for<'js> FnOnce(&Ctx<'js>) -> rquickjs::Result<()>,
) -> Result<serde_json::Value, JsError> {
    let rt = Runtime::new().map_err(|e| JsError::Engine(e.to_string()))?;
    if let Some(b) = bundle {
        rt.set_loader(BundleResolver(b.clone()), BundleLoader(b));
    }
    rt.set_memory_limit(limits.max_heap_bytes);
    rt.set_max_stack_size(limits.max_stack_bytes);
    let deadline = Instant::now() + limits.max_execution_time;
    let timed_out = Arc::new(AtomicBool::new(false));
    let flag = timed_out.clone();
    rt.set_interrupt_handler(Some(Box::new(move || {
        let over = Instant::now() >= deadline;
        if over {
            flag.store(true, Ordering::Relaxed);
        }
        over
    })));
    let ctx = Context::full(&rt).map_err(|e| JsError::Engine(e.to_string()))?;
    let args_json: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let result = ctx.with(|ctx| -> Result<serde_json::Value, JsError> {
        let run = || -> Result<Option<std::string::String>, CaughtError<'_>> {
            host(&ctx).catch(&ctx)?;
            let declared = bytecode::declare(&ctx, module, source).catch(&ctx)?;
            let (evaluated, promise) = declared.eval().catch(&ctx)?;
            promise.finish::<()>().catch(&ctx)?;
            let ns: Object = evaluated.namespace().catch(&ctx)?;
            let f: Value = ns.get(function).catch(&ctx)?;
            let Some(f) = f.as_function().cloned() else {
                return Ok(None);
            };
            let f: Function = f;
            let mut js_args = rquickjs::function::Args::new(ctx.clone(), args_json.len());
            for a in &args_json {
                js_args
                    .push_arg(ctx.json_parse(a.as_str()).catch(&ctx)?)
                    .catch(&ctx)?;
            }
            let out: Value = f.call_arg(js_args).catch(&ctx)?;
            let out = match out.as_promise() {
                Some(p) => p.finish::<Value>().catch(&ctx)?,
                None => out,
            };
            let text = ctx.json_stringify(out).catch(&ctx)?;
            Ok(Some(match text {
                Some(s) => s.to_string().catch(&ctx)?,
                None => "null".to_string(),
            }))
        };
        match run() {
            Ok(Some(text)) => {
                serde_json::from_str(&text).map_err(|e| JsError::BadValue(e.to_string()))
            }
            Ok(None) => Err(JsError::NoSuchFunction {
                module: module.to_string(),
                function: function.to_string(),
            }),
            Err(e) => Err(caught(e)),
        }
    });
    match result {
        Err(_) if timed_out.load(Ordering::Relaxed) => {
            Err(JsError::Timeout(limits.max_execution_time.as_millis()))
        }
        Err(JsError::Exception { message, .. }) if message.contains("out of memory") => {
            Err(JsError::OutOfMemory(limits.max_heap_bytes))
        }
        other => other,
    }
}

fn caught(e: CaughtError<'_>) -> JsError {
    match e {
        CaughtError::Exception(ex) => JsError::Exception {
            message: ex.message().unwrap_or_else(|| "exception".into()),
            stack: ex.stack(),
        },
        CaughtError::Value(v) => JsError::Exception {
            message: value_text(&v),
            stack: None,
        },
        CaughtError::Error(rquickjs::Error::Allocation) => JsError::OutOfMemory(0),
        CaughtError::Error(e) => JsError::Exception {
            message: e.to_string(),
            stack: None,
        },
    }
}

/// A thrown non-Error value, as text (`throw "x"`, `throw {code: 1}`).
fn value_text(v: &Value<'_>) -> String {
    if let Some(s) = v.as_string().and_then(|s| s.to_string().ok()) {
        return s;
    }
    v.ctx()
        .json_stringify(v.clone())
        .ok()
        .flatten()
        .and_then(|s| s.to_string().ok())
        .unwrap_or_else(|| format!("a thrown {}", v.type_name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn quick() -> Limits {
        Limits {
            max_execution_time: Duration::from_millis(200),
            max_heap_bytes: 16 * 1024 * 1024,
            max_stack_bytes: 256 * 1024,
        }
    }

    #[test]
    fn exported_functions_take_and_return_json() {
        let src = "export function resolve(p, who, votes) { return {n: votes.length, who, ok: p.actions[0].name === 'set_user'}; }";
        let out = call(
            &quick(),
            "constitution",
            src,
            "resolve",
            &[
                json!({"actions": [{"name": "set_user"}]}),
                json!("m1"),
                json!([1, 2]),
            ],
        )
        .unwrap();
        assert_eq!(out, json!({"n": 2, "who": "m1", "ok": true}));
        let none = call(&quick(), "m", "export function f() {}", "f", &[]).unwrap();
        assert_eq!(none, serde_json::Value::Null);
        let awaited = call(
            &quick(),
            "m",
            "export async function f(x) { return x + 1; }",
            "f",
            &[json!(41)],
        )
        .unwrap();
        assert_eq!(awaited, json!(42));
    }

    #[test]
    fn an_endless_loop_is_stopped_at_the_time_limit() {
        let t0 = Instant::now();
        let e = call(
            &quick(),
            "m",
            "export function f() { for (;;) {} }",
            "f",
            &[],
        )
        .unwrap_err();
        assert_eq!(e, JsError::Timeout(200));
        assert!(t0.elapsed() < Duration::from_secs(5));
        // Even a loop at module top level, and one that catches everything.
        let e = call(
            &quick(),
            "m",
            "for (;;) { try { for (;;) {} } catch (e) {} }",
            "f",
            &[],
        )
        .unwrap_err();
        assert_eq!(e, JsError::Timeout(200));
    }

    #[test]
    fn unbounded_allocation_hits_the_heap_limit() {
        let src = "export function f() { const a = []; for (;;) { a.push('x'.repeat(1 << 16) + a.length); } }";
        let e = call(&quick(), "m", src, "f", &[]).unwrap_err();
        assert!(matches!(e, JsError::OutOfMemory(_)), "{e:?}");
        // The next call, in a fresh runtime, is unaffected.
        assert_eq!(
            call(&quick(), "m", "export function f() { return 1; }", "f", &[]).unwrap(),
            json!(1)
        );
    }

    #[test]
    fn deep_recursion_is_a_clean_error() {
        let e = call(
            &quick(),
            "m",
            "function r(n) { return r(n + 1) + 1; } export function f() { return r(0); }",
            "f",
            &[],
        )
        .unwrap_err();
        match e {
            JsError::Exception { message, .. } => assert!(message.contains("stack"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exceptions_and_syntax_errors_carry_their_message() {
        let e = call(
            &quick(),
            "ballot",
            "export function vote() { throw new Error('no such member'); }",
            "vote",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "no such member");
        assert!(e.stack().is_some_and(|s| s.contains("ballot")), "{e:?}");
        let e = call(
            &quick(),
            "m",
            "export function f() { throw 'plain'; }",
            "f",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "plain");
        let e = call(&quick(), "m", "export function f( {", "f", &[]).unwrap_err();
        assert!(matches!(e, JsError::Exception { .. }), "{e:?}");
        let e = call(&quick(), "m", "export const f = 3;", "f", &[]).unwrap_err();
        assert!(matches!(e, JsError::NoSuchFunction { .. }));
        let e = call(&quick(), "m", "export function g() {}", "f", &[]).unwrap_err();
        assert!(matches!(e, JsError::NoSuchFunction { .. }));
        let e = call(
            &quick(),
            "m",
            "export function f() { return 1n; }",
            "f",
            &[],
        )
        .unwrap_err();
        assert!(
            matches!(e, JsError::Exception { .. } | JsError::BadValue(_)),
            "{e:?}"
        );
    }

    #[test]
    fn host_globals_are_visible() {
        let out = call_with_host(
            &quick(),
            None,
            "m",
            "export function f() { return hostValue * 2; }",
            "f",
            &[],
            |ctx| ctx.globals().set("hostValue", 21),
        )
        .unwrap();
        assert_eq!(out, json!(42));
    }
}
