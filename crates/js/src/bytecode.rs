//! Compiled modules shared by every interpreter of the process. Each request gets
//! a fresh runtime, and parsing the host's own JavaScript plus an app's modules
//! was most of a request's cost; a module's bytecode, once compiled, is loaded
//! instead (CCF's bytecode cache). Entries are keyed by module name and the
//! SHA-256 of the source, so a changed module (a new app version) never loads
//! stale code. QuickJS-NG copies bytecode when reading it, so an entry can be
//! dropped while runtimes that loaded it still run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rquickjs::module::{Declared, WriteOptions};
use rquickjs::{Ctx, FromJs, Module};

/// Bytes of bytecode kept before the cache starts over.
const MAX_CACHED_BYTES: usize = 64 << 20;

type Key = (String, [u8; 32]);

#[derive(Default)]
struct Cache {
    modules: HashMap<Key, Arc<[u8]>>,
    bytes: usize,
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// `name` declared from `source`: from cached bytecode when this source was
/// compiled before, else compiled (and its bytecode cached).
pub fn declare<'js>(
    ctx: &Ctx<'js>,
    name: &str,
    source: &str,
) -> rquickjs::Result<Module<'js, Declared>> {
    let key: Key = (
        name.to_string(),
        covenant_crypto::sha256(source.as_bytes()).0,
    );
    let hit = cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .modules
        .get(&key)
        .cloned();
    if let Some(bytes) = hit {
        // SAFETY: the bytes were written by `Module::write` of this same QuickJS
        // build in this process, from a module that compiled.
        return unsafe { Module::load(ctx.clone(), &bytes) };
    }
    let module = Module::declare(ctx.clone(), name, source)?;
    if let Ok(bytes) = module.write(WriteOptions::default()) {
        let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
        if c.bytes + bytes.len() > MAX_CACHED_BYTES {
            c.modules.clear();
            c.bytes = 0;
        }
        c.bytes += bytes.len();
        c.modules.insert(key, bytes.into());
    }
    Ok(module)
}

/// The value of `expression` (host JavaScript: an expression, such as an arrow
/// function or an IIFE), evaluated through the cache as the default export of a
/// module named `name`.
pub fn host_value<'js, T: FromJs<'js>>(
    ctx: &Ctx<'js>,
    name: &str,
    expression: &str,
) -> rquickjs::Result<T> {
    let source = format!(
        "export default (\n{}\n);\n",
        expression.trim().trim_end_matches(';')
    );
    let (module, done) = declare(ctx, name, &source)?.eval()?;
    done.finish::<()>()?;
    module.get("default")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_module_behaves_as_the_compiled_one() {
        let run = |src: &str| -> i32 {
            let rt = rquickjs::Runtime::new().unwrap();
            let ctx = rquickjs::Context::full(&rt).unwrap();
            ctx.with(|ctx| {
                let f: rquickjs::Function = host_value(&ctx, "__test_host", src).unwrap();
                f.call((20,)).unwrap()
            })
        };
        let src = "(x) => x + 22";
        assert_eq!(run(src), 42);
        // Second time from bytecode, in another runtime.
        assert_eq!(run(src), 42);
        // Same name, other source: never the stale bytecode.
        assert_eq!(run("(x) => x * 2"), 40);
    }
}
