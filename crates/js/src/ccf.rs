//! The part of CCF's `ccf` global that constitutions and apps use to read and write
//! key-value maps: `ccf.kv["<map>"]` with `get`, `has`, `set`, `delete`, `clear`,
//! `forEach`, `size` and `getVersionOfPreviousWrite`, keys and values as `ArrayBuffer`s, and the converters `strToBuf`,
//! `bufToStr`, `jsonCompatibleToBuf`, `bufToJsonCompatible` (CCF's encoding of the
//! governance maps: key = id string, value = PEM or JSON text). Also `ccf.crypto`
//! ([`crate::crypto`]) with its deprecated aliases on `ccf`, and `ccf.pemToId`.
//!
//! The maps themselves belong to the caller ([`KvAccess`]), which also decides what
//! a script may write (governance may write `public:ccf.gov.*`, apps may not).

use std::cell::RefCell;
use std::rc::Rc;

use rquickjs::{ArrayBuffer, Ctx, Exception, Function};

/// Maps as a script sees them. Writes may be refused (the message becomes a JS
/// exception).
pub trait KvAccess {
    fn get(&self, map: &str, key: &[u8]) -> Option<Vec<u8>>;
    fn set(&mut self, map: &str, key: &[u8], value: &[u8]) -> Result<(), String>;
    fn delete(&mut self, map: &str, key: &[u8]) -> Result<(), String>;
    /// Every (key, value) of `map`, in key order.
    fn entries(&self, map: &str) -> Vec<(Vec<u8>, Vec<u8>)>;
    /// The seqno of the last write to `key` before this script's transaction
    /// (`getVersionOfPreviousWrite`); `None` when unknown.
    fn version(&self, _map: &str, _key: &[u8]) -> Option<u64> {
        None
    }
}

/// A shared handle the host keeps, to take its state back after the call.
pub type SharedKv<'a> = Rc<RefCell<dyn KvAccess + 'a>>;

const PRELUDE: &str = r#"
(() => {
  const n = globalThis.__covenant;
  delete globalThis.__covenant;
  function table(name) {
    return {
      get(k) { return n.get(name, k); },
      has(k) { return n.has(name, k); },
      set(k, v) { n.set(name, k, v); return this; },
      delete(k) { return n.del(name, k); },
      clear() { for (const [k] of n.entries(name)) n.del(name, k); },
      getVersionOfPreviousWrite(k) { return n.version(name, k); },
      forEach(cb) { for (const [k, v] of n.entries(name)) cb(v, k, this); },
      get size() { return n.entries(name).length; },
    };
  }
  const c = n.crypto;
  globalThis.ccf = Object.freeze(Object.assign({
    kv: new Proxy({}, { get(_, name) { return typeof name === "string" ? table(name) : undefined; } }),
    strToBuf: (s) => n.strToBuf(String(s)),
    bufToStr: (b) => n.bufToStr(b),
    jsonCompatibleToBuf: (v) => n.strToBuf(JSON.stringify(v)),
    bufToJsonCompatible: (b) => JSON.parse(n.bufToStr(b)),
    crypto: c,
    pemToId: (pem) => {
      if (typeof pem !== "string") throw new TypeError("pem must be a string");
      return n.pemToId(pem);
    },
    // Deprecated aliases of ccf.crypto members (still in @microsoft/ccf-app's typings).
    generateAesKey: c.generateAesKey,
    generateRsaKeyPair: c.generateRsaKeyPair,
    generateEcdsaKeyPair: c.generateEcdsaKeyPair,
    wrapKey: c.wrapKey,
    unwrapKey: c.unwrapKey,
    digest: c.digest,
    isValidX509CertBundle: c.isValidX509CertBundle,
    isValidX509CertChain: c.isValidX509CertChain,
  }, n.extra));
})();
"#;

pub use crate::buffer::bytes;

/// Installs `ccf` (maps through `kv`) in the context.
pub fn install<'js>(ctx: &Ctx<'js>, kv: SharedKv<'js>) -> rquickjs::Result<()> {
    install_with(ctx, kv, |_| Ok(()))
}

/// [`install`], with more members of `ccf` (host functions such as `rpc`) set by
/// `extra` on the object passed to it. Every caller gets `ccf.crypto` (see
/// [`crate::crypto`]), its deprecated aliases on `ccf`, and `ccf.pemToId`.
pub fn install_with<'js>(
    ctx: &Ctx<'js>,
    kv: SharedKv<'js>,
    extra: impl FnOnce(&rquickjs::Object<'js>) -> rquickjs::Result<()>,
) -> rquickjs::Result<()> {
    let natives = rquickjs::Object::new(ctx.clone())?;
    let more = rquickjs::Object::new(ctx.clone())?;
    extra(&more)?;
    natives.set("extra", more)?;
    let k = kv.clone();
    natives.set(
        "get",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  map: String,
                  key: ArrayBuffer<'js>|
                  -> rquickjs::Result<Option<ArrayBuffer<'js>>> {
                match k.borrow().get(&map, &bytes(&key)) {
                    Some(v) => ArrayBuffer::new(ctx, v).map(Some),
                    None => Ok(None),
                }
            },
        )?,
    )?;
    let k = kv.clone();
    natives.set(
        "has",
        Function::new(ctx.clone(), move |map: String, key: ArrayBuffer<'js>| {
            k.borrow().get(&map, &bytes(&key)).is_some()
        })?,
    )?;
    let k = kv.clone();
    natives.set(
        "set",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  map: String,
                  key: ArrayBuffer<'js>,
                  value: ArrayBuffer<'js>|
                  -> rquickjs::Result<()> {
                k.borrow_mut()
                    .set(&map, &bytes(&key), &bytes(&value))
                    .map_err(|m| Exception::throw_message(&ctx, &m))
            },
        )?,
    )?;
    let k = kv.clone();
    natives.set(
        "del",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, map: String, key: ArrayBuffer<'js>| -> rquickjs::Result<bool> {
                let key = bytes(&key);
                let existed = k.borrow().get(&map, &key).is_some();
                k.borrow_mut()
                    .delete(&map, &key)
                    .map_err(|m| Exception::throw_message(&ctx, &m))?;
                Ok(existed)
            },
        )?,
    )?;
    let k = kv.clone();
    natives.set(
        "version",
        Function::new(ctx.clone(), move |map: String, key: ArrayBuffer<'js>| {
            k.borrow().version(&map, &bytes(&key))
        })?,
    )?;
    let k = kv;
    natives.set(
        "entries",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, map: String| -> rquickjs::Result<rquickjs::Array<'js>> {
                let out = rquickjs::Array::new(ctx.clone())?;
                for (i, (key, value)) in k.borrow().entries(&map).into_iter().enumerate() {
                    let pair = rquickjs::Array::new(ctx.clone())?;
                    pair.set(0, ArrayBuffer::new(ctx.clone(), key)?)?;
                    pair.set(1, ArrayBuffer::new(ctx.clone(), value)?)?;
                    out.set(i, pair)?;
                }
                Ok(out)
            },
        )?,
    )?;
    natives.set(
        "strToBuf",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, s: String| {
            ArrayBuffer::new(ctx, s.into_bytes())
        })?,
    )?;
    natives.set(
        "bufToStr",
        Function::new(ctx.clone(), |b: ArrayBuffer<'js>| {
            String::from_utf8_lossy(&bytes(&b)).into_owned()
        })?,
    )?;
    natives.set("crypto", crate::crypto::object(ctx)?)?;
    natives.set(
        "pemToId",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, pem: String| {
            crate::crypto::pem_to_id(&pem).map_err(|m| Exception::throw_message(&ctx, &m))
        })?,
    )?;
    ctx.globals().set("__covenant", natives)?;
    crate::bytecode::host_value::<()>(ctx, "__covenant_host/ccf", PRELUDE)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{call_with_host, JsError, Limits};
    use serde_json::json;

    #[derive(Default)]
    struct Maps {
        maps: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
    }

    impl KvAccess for Maps {
        fn get(&self, map: &str, key: &[u8]) -> Option<Vec<u8>> {
            self.maps.get(map)?.get(key).cloned()
        }
        fn set(&mut self, map: &str, key: &[u8], value: &[u8]) -> Result<(), String> {
            if !map.starts_with("public:ccf.gov.") {
                return Err(format!("map {map} is read-only here"));
            }
            self.maps
                .entry(map.into())
                .or_default()
                .insert(key.to_vec(), value.to_vec());
            Ok(())
        }
        fn delete(&mut self, map: &str, key: &[u8]) -> Result<(), String> {
            if let Some(m) = self.maps.get_mut(map) {
                m.remove(key);
            }
            Ok(())
        }
        fn entries(&self, map: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
            self.maps
                .get(map)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        }
    }

    fn run(maps: Rc<RefCell<Maps>>, src: &str) -> Result<serde_json::Value, JsError> {
        call_with_host(&Limits::default(), None, "m", src, "f", &[], move |ctx| {
            install(ctx, maps)
        })
    }

    #[test]
    fn scripts_read_and_write_maps_with_ccf_encodings() {
        let maps = Rc::new(RefCell::new(Maps::default()));
        let src = r#"
          export function f() {
            const users = ccf.kv["public:ccf.gov.users.info"];
            users.set(ccf.strToBuf("u1"), ccf.jsonCompatibleToBuf({user_data: {assignedRoles: ["Reader"]}}));
            users.set(ccf.strToBuf("u2"), ccf.jsonCompatibleToBuf({}));
            const seen = [];
            users.forEach((v, k) => seen.push([ccf.bufToStr(k), ccf.bufToJsonCompatible(v)]));
            const had = users.delete(ccf.strToBuf("u2"));
            return {seen, had, size: users.size, has: users.has(ccf.strToBuf("u1")),
                    missing: users.get(ccf.strToBuf("nobody")) === undefined};
          }"#;
        let out = run(maps.clone(), src).unwrap();
        assert_eq!(
            out,
            json!({"seen": [["u1", {"user_data": {"assignedRoles": ["Reader"]}}], ["u2", {}]],
                   "had": true, "size": 1, "has": true, "missing": true})
        );
        let m = maps.borrow();
        assert_eq!(
            m.get("public:ccf.gov.users.info", b"u1").unwrap(),
            br#"{"user_data":{"assignedRoles":["Reader"]}}"#.to_vec()
        );
        assert!(m.get("public:ccf.gov.users.info", b"u2").is_none());
    }

    #[test]
    fn refused_writes_and_wrong_types_are_exceptions() {
        let maps = Rc::new(RefCell::new(Maps::default()));
        let e = run(
            maps.clone(),
            r#"export function f() { ccf.kv["acl.entries"].set(ccf.strToBuf("k"), ccf.strToBuf("v")); }"#,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "map acl.entries is read-only here");
        let e = run(
            maps.clone(),
            r#"export function f() { ccf.kv["public:ccf.gov.x"].set("not a buffer", ccf.strToBuf("v")); }"#,
        )
        .unwrap_err();
        assert!(matches!(e, JsError::Exception { .. }), "{e:?}");
        // The natives are not reachable by name, and ccf cannot be replaced.
        let out = run(
            maps,
            r#"export function f() { const before = ccf; try { ccf.kv = null; } catch (e) {} return [typeof __covenant, ccf === before, typeof ccf.kv]; }"#,
        )
        .unwrap();
        assert_eq!(out, json!(["undefined", true, "object"]));
    }
}
