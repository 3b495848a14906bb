use super::*;
use covenant_types::View;
use std::time::Duration;

const BANK: &str = r#"
import { ok } from "../lib/util.js";
export function open(request) {
  const id = request.params.id;
  const accounts = ccf.kv["accounts"];
  if (accounts.has(ccf.strToBuf(id))) {
    return { statusCode: 409, body: { error: { code: "Exists", message: `account ${id} exists` } } };
  }
  const { balance } = request.body.json();
  accounts.set(ccf.strToBuf(id), ccf.jsonCompatibleToBuf({ balance }));
  return ok({ id, balance, caller: request.caller, route: request.route, query: request.query });
}
export function balance(request) {
  const v = ccf.kv["accounts"].get(ccf.strToBuf(request.params.id));
  if (v === undefined) return { statusCode: 404, body: "no such account" };
  return { body: ccf.bufToJsonCompatible(v) };
}
export function sneaky(request) {
  ccf.kv["public:ccf.gov.users.info"].set(ccf.strToBuf("me"), ccf.strToBuf("{}"));
}
export function spin() { for (;;) {} }
export function hog() { const a = []; for (;;) a.push(new Array(1e5).fill(1)); }
export function raw(request) {
  console.log("raw", request.body.arrayBuffer().byteLength);
  return { headers: { "x-thing": "1" }, body: request.body.arrayBuffer() };
}
export async function later(request) { return { statusCode: 201 }; }
export function claim(request) {
  ccf.kv["audit"].set(ccf.strToBuf("k"), ccf.strToBuf("v"));
  const d = new Uint8Array(32);
  for (let i = 0; i < 32; i++) d[i] = i;
  ccf.rpc.setClaimsDigest(d.buffer);
  ccf.rpc.setApplyWrites(true);
  return { statusCode: 400, body: "kept anyway" };
}
export function badclaim(request) { ccf.rpc.setClaimsDigest(new ArrayBuffer(16)); }
export function dropped(request) {
  ccf.kv["audit"].set(ccf.strToBuf("k"), ccf.strToBuf("v"));
  ccf.rpc.setApplyWrites(false);
  return { body: "dropped" };
}
"#;
const UTIL: &str = "export function ok(body) { return { statusCode: 200, body }; }";

fn store_with_app() -> Store {
    let store = Store::new();
    let mut tx = store.begin();
    tx.put(MODULES, b"/endpoints/bank.js", BANK.as_bytes());
    tx.put(MODULES, b"lib/util.js", UTIL.as_bytes());
    for (key, function, mode) in [
        ("POST /accounts/{id}", "open", "readwrite"),
        ("GET /accounts/{id}", "balance", "readonly"),
        ("GET /accounts/mine", "balance", "readonly"),
        ("POST /sneaky", "sneaky", "readwrite"),
        ("GET /sneaky_ro", "open", "readonly"),
        ("POST /spin", "spin", "readwrite"),
        ("POST /hog", "hog", "readwrite"),
        ("POST /raw", "raw", "readwrite"),
        ("POST /later", "later", "readwrite"),
        ("POST /missing", "nothing", "readwrite"),
        ("POST /claim", "claim", "readwrite"),
        ("POST /badclaim", "badclaim", "readwrite"),
        ("POST /dropped", "dropped", "readwrite"),
    ] {
        let props = json!({"js_module": "endpoints/bank.js", "js_function": function,
            "authn_policies": ["user_cert"], "forwarding_required": "sometimes", "mode": mode});
        tx.put(ENDPOINTS, key.as_bytes(), props.to_string().as_bytes());
    }
    store.commit(tx, View(1)).unwrap();
    store
}

fn limits() -> Limits {
    Limits {
        max_execution_time: Duration::from_millis(200),
        max_heap_bytes: 32 << 20,
        max_stack_bytes: 512 << 10,
    }
}

fn call(
    store: &Store,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(AppResponse, BufferedKv), AppError> {
    call_with_options(store, method, path, body).map(|(r, kv, _)| (r, kv))
}

fn call_with_options(
    store: &Store,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(AppResponse, BufferedKv, TxOptions), AppError> {
    let app = App::load(store).unwrap().unwrap();
    let (route, params) = app.route(method, path).unwrap().unwrap();
    let route = route.clone();
    let req = AppRequest {
        method: method.into(),
        path: path.into(),
        url: format!("{path}?x=1"),
        query: "x=1".into(),
        params,
        body: body.to_vec(),
        caller: json!({"policy": "user_cert", "id": "u1"}),
        ..Default::default()
    };
    run(&limits(), &app, &route, &req, store, WriteSet::default())
}

#[test]
fn routes_match_templates_literals_first_and_report_allowed_methods() {
    let store = store_with_app();
    let app = App::load(&store).unwrap().unwrap();
    let (r, p) = app.route("GET", "/app/accounts/a%20b").unwrap().unwrap();
    assert_eq!(r.template, "/accounts/{id}");
    assert_eq!(p["id"], "a b");
    let (r, p) = app.route("GET", "/app/accounts/mine").unwrap().unwrap();
    assert_eq!(r.template, "/accounts/mine");
    assert!(p.is_empty());
    let mut allowed = app.route("DELETE", "/app/accounts/x").unwrap().unwrap_err();
    allowed.sort();
    assert_eq!(allowed, vec!["GET".to_string(), "POST".to_string()]);
    assert!(app.route("GET", "/app/accounts").is_none());
    assert!(app.route("GET", "/app/accounts/").is_none());
    assert!(app.route("GET", "/other/accounts/x").is_none());
    assert!(App::load(&Store::new()).unwrap().is_none());
    assert!(parse_template("/a/{").is_err());
    assert!(parse_template("a").is_err());
}

#[test]
fn a_handler_reads_and_writes_through_ccf_kv_with_ccf_request_objects() {
    let store = store_with_app();
    let (resp, kv) = call(&store, "POST", "/app/accounts/alice", br#"{"balance": 10}"#).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.default_content_type, Some("application/json"));
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(
        body,
        json!({"id": "alice", "balance": 10, "caller": {"policy": "user_cert", "id": "u1"},
               "route": "/accounts/{id}", "query": "x=1"})
    );
    assert!(kv.writes_to("accounts"));
    let mut tx = store.begin();
    kv.apply_to(&mut tx);
    store.commit(tx, View(1)).unwrap();
    let (resp, kv) = call(&store, "GET", "/app/accounts/alice", b"").unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&resp.body).unwrap(),
        json!({"balance": 10})
    );
    assert!(kv.is_empty());
    let (resp, _) = call(&store, "POST", "/app/accounts/alice", br#"{"balance": 1}"#).unwrap();
    assert_eq!(resp.status, 409);
    let (resp, _) = call(&store, "GET", "/app/accounts/bob", b"").unwrap();
    assert_eq!(
        (resp.status, resp.default_content_type),
        (404, Some("text/plain"))
    );
    assert_eq!(resp.body, b"no such account");
    let (resp, _) = call(&store, "POST", "/app/raw", &[0, 159, 146, 150]).unwrap();
    assert_eq!(resp.body, vec![0, 159, 146, 150]);
    assert_eq!(resp.default_content_type, Some("application/octet-stream"));
    assert_eq!(resp.headers, vec![("x-thing".to_string(), "1".to_string())]);
    let (resp, _) = call(&store, "POST", "/app/later", b"").unwrap();
    assert_eq!((resp.status, resp.body.len()), (201, 0));
}

#[test]
fn apps_cannot_write_governance_maps_or_write_from_readonly_endpoints() {
    let store = store_with_app();
    let e = call(&store, "POST", "/app/sneaky", b"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("may not write public:ccf.gov.users.info"), "{e}");
    let e = call(&store, "GET", "/app/sneaky_ro", br#"{"balance": 1}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("may not write"), "{e}");
    let e = call(&store, "POST", "/app/accounts/x", b"not json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("JSON") || e.contains("unexpected"), "{e}");
    let e = call(&store, "POST", "/app/missing", b"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("exports no function"), "{e}");
}

#[test]
fn runaway_handlers_are_stopped_by_the_limits() {
    let store = store_with_app();
    let started = std::time::Instant::now();
    assert!(matches!(
        call(&store, "POST", "/app/spin", b""),
        Err(AppError::Script(JsError::Timeout(_)))
    ));
    assert!(matches!(
        call(&store, "POST", "/app/hog", b""),
        Err(AppError::Script(
            JsError::OutOfMemory(_) | JsError::Timeout(_)
        ))
    ));
    assert!(started.elapsed() < Duration::from_secs(10));
    // And the next request runs normally.
    assert!(call(&store, "GET", "/app/accounts/nobody", b"").is_ok());
}

#[test]
fn handlers_set_apply_writes_and_the_claims_digest() {
    let store = store_with_app();
    let (resp, kv, opts) = call_with_options(&store, "POST", "/app/claim", b"").unwrap();
    assert_eq!(resp.status, 400);
    assert!(opts.keeps_writes(400) && kv.writes_to("audit"));
    let want: Vec<u8> = (0..32).collect();
    assert_eq!(opts.claims_digest.unwrap().to_vec(), want);

    let (resp, kv, opts) = call_with_options(&store, "POST", "/app/dropped", b"").unwrap();
    assert_eq!(resp.status, 200);
    assert!(!opts.keeps_writes(200) && kv.writes_to("audit"));
    assert_eq!(opts.claims_digest, None);

    // Unset: writes kept for 2xx only.
    let (_, _, opts) = call_with_options(&store, "POST", "/app/later", b"").unwrap();
    assert!(opts.keeps_writes(201) && !opts.keeps_writes(409));

    let e = call(&store, "POST", "/app/badclaim", b"").unwrap_err();
    assert!(e.to_string().contains("32 bytes"), "{e}");
}
