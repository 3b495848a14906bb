//! Cost of one app request in a fresh interpreter with the whole `ccf` host
//! installed (kv, crypto, consensus, historical, rpc, acl), the way the node runs
//! every handler; and of the same handler with a SHA-256 digest through ccf.crypto.

use covenant_app::{App, AppRequest, Host, ENDPOINTS, MODULES};
use covenant_kv::{Store, WriteSet};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

const MODULE: &str = r#"
export function balance(request) {
  const v = ccf.kv["accounts"].get(ccf.strToBuf(request.params.id));
  return { body: { id: request.params.id, balance: v === undefined ? 0 : ccf.bufToJsonCompatible(v).balance } };
}
export function digest(request) {
  const d = ccf.crypto.digest("SHA-256", ccf.strToBuf(request.params.id));
  return { body: { digest: new Uint8Array(d)[0] } };
}
"#;

fn store() -> Store {
    let store = Store::new();
    let mut tx = store.begin();
    tx.put(MODULES, b"bank.js", MODULE.as_bytes());
    for (key, function) in [
        ("GET /balance/{id}", "balance"),
        ("GET /digest/{id}", "digest"),
    ] {
        let props = json!({"js_module": "bank.js", "js_function": function, "authn_policies": [], "mode": "readonly"});
        tx.put(ENDPOINTS, key.as_bytes(), props.to_string().as_bytes());
    }
    tx.put("accounts", b"alice", br#"{"balance":5}"#);
    store.commit(tx, covenant_types::View(1)).unwrap();
    store
}

fn fresh_request(c: &mut Criterion) {
    let store = store();
    let app = App::load(&store).unwrap().unwrap();
    let limits = covenant_js::Limits::default();
    for (name, path) in [
        ("app/fresh_handler_kv_read", "/app/balance/alice"),
        ("app/fresh_handler_sha256", "/app/digest/alice"),
    ] {
        let (route, params) = app.route("GET", path).unwrap().unwrap();
        let route = route.clone();
        let req = AppRequest {
            method: "GET".into(),
            path: path.into(),
            url: path.into(),
            params,
            ..Default::default()
        };
        c.bench_function(name, |b| {
            b.iter(|| {
                covenant_app::run(
                    &limits,
                    &app,
                    &route,
                    &req,
                    &store,
                    WriteSet::default(),
                    Host::default(),
                )
                .unwrap()
            })
        });
    }
}

criterion_group!(benches, fresh_request);
criterion_main!(benches);
