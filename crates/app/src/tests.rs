use super::*;
use covenant_types::View;
use covenant_types::{SeqNo, TxId};
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
    run(
        &limits(),
        &app,
        &route,
        &req,
        store,
        WriteSet::default(),
        Host::default(),
    )
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

const HOST_APP: &str = r#"
const bound = ccf.consensus.getLastCommittedTxId.bind(ccf.consensus);
const hs = ccf.historicalState;
export function consensus() {
  return { body: {
    committed: bound(),
    statuses: [ccf.consensus.getStatusForTxId(2, 3), ccf.consensus.getStatusForTxId(2, 5),
               ccf.consensus.getStatusForTxId(3, 5), ccf.consensus.getStatusForTxId(3, 9),
               ccf.consensus.getStatusForTxId(2, 7)],
    views: [ccf.consensus.getViewForSeqno(1), ccf.consensus.getViewForSeqno(6), ccf.consensus.getViewForSeqno(9)],
  } };
}
export function historical() {
  const m = hs.kv["records"];
  let thrown = "";
  try { m.set(ccf.strToBuf("a"), ccf.strToBuf("b")); } catch (e) { thrown = e.message; }
  const seen = [];
  m.forEach((v, k) => seen.push([ccf.bufToStr(k), ccf.bufToStr(v)]));
  return { body: {
    id: hs.transactionId, receipt: hs.receipt, seen, size: m.size, thrown,
    a: ccf.bufToStr(m.get(ccf.strToBuf("a"))), gone: m.has(ccf.strToBuf("gone")),
    missing: hs.kv["nothing"].get(ccf.strToBuf("a")) === undefined,
    version: m.getVersionOfPreviousWrite(ccf.strToBuf("a")),
  } };
}
export function range() {
  const first = ccf.historical.getStateRange(7, 4, 5, 60);
  if (first === null) return { statusCode: 202 };
  return { body: { ids: first.map((s) => s.transactionId),
                   a: ccf.bufToStr(first[1].kv["records"].get(ccf.strToBuf("a"))),
                   dropped: ccf.historical.dropCachedStates(7), again: ccf.historical.dropCachedStates(7) } };
}
export function badrange() { ccf.historical.getStateRange(1, 5, 4, 60); }
export function time() {
  const before = Date.now();
  const was = ccf.enableUntrustedDateTime(true);
  const after = Date.now();
  const back = ccf.enableUntrustedDateTime(false);
  return { body: { before, was, later: after > 1.7e12, back, epoch: new Date().getTime(),
                   parsed: new Date(86400000).getTime(), metrics: ccf.enableMetricsLogging(false) } };
}
export function maps() {
  const m = ccf.kv["things"];
  const version = m.getVersionOfPreviousWrite(ccf.strToBuf("x"));
  const none = m.getVersionOfPreviousWrite(ccf.strToBuf("nope"));
  m.clear();
  return { body: { version, none: none === undefined, size: m.size } };
}
"#;

struct FakeHistory {
    handles: std::sync::Mutex<std::collections::BTreeSet<u64>>,
}

fn past(seqno: u64, value: &str) -> HistoricalTx {
    let mut writes = WriteSet::default();
    writes
        .maps
        .entry("records".into())
        .or_default()
        .insert(b"a".to_vec(), Some(value.as_bytes().to_vec()));
    writes
        .maps
        .entry("records".into())
        .or_default()
        .insert(b"gone".to_vec(), None);
    HistoricalTx {
        view: 2,
        seqno,
        receipt: json!({"signature": "c2ln", "node_id": "n1", "proof": [{"left": "00"}]}),
        writes,
    }
}

impl History for FakeHistory {
    fn states(
        &self,
        handle: u64,
        from: u64,
        to: u64,
        _expiry: u64,
    ) -> Result<Option<Vec<HistoricalTx>>, String> {
        // The first request for a handle is "loading", as in CCF.
        if self.handles.lock().unwrap().insert(handle) {
            return Ok(None);
        }
        Ok(Some(
            (from..=to).map(|s| past(s, &format!("v{s}"))).collect(),
        ))
    }
    fn drop_states(&self, handle: u64) -> bool {
        self.handles.lock().unwrap().remove(&handle)
    }
}

fn call_host(function: &str, mode: &str, host: Host) -> Result<Value, AppError> {
    let store = Store::new();
    let mut tx = store.begin();
    tx.put(MODULES, b"host.js", HOST_APP.as_bytes());
    tx.put("things", b"x", b"1");
    tx.put("things", b"y", b"2");
    let props = json!({"js_module": "host.js", "js_function": function, "mode": mode});
    tx.put(ENDPOINTS, b"GET /h", props.to_string().as_bytes());
    store.commit(tx, View(1)).unwrap();
    let app = App::load(&store).unwrap().unwrap();
    let (route, params) = app.route("GET", "/app/h").unwrap().unwrap();
    let req = AppRequest {
        method: "GET".into(),
        path: "/app/h".into(),
        params,
        ..Default::default()
    };
    let (resp, kv, _) = run(
        &limits(),
        &app,
        &route.clone(),
        &req,
        &store,
        WriteSet::default(),
        host,
    )?;
    let mut body: Value = if resp.body.is_empty() {
        json!(null)
    } else {
        serde_json::from_slice(&resp.body).unwrap()
    };
    if let Value::Object(o) = &mut body {
        o.insert("status".into(), json!(resp.status));
        o.insert("wrote".into(), json!(!kv.is_empty()));
    } else {
        body = json!({"status": resp.status});
    }
    Ok(body)
}

#[test]
fn consensus_answers_from_the_view_of_the_request() {
    let host = Host {
        consensus: ConsensusView {
            committed: Some(TxId::new(2, 5)),
            last_seqno: SeqNo(8),
            view_runs: vec![
                (SeqNo(1), View(1)),
                (SeqNo(3), View(2)),
                (SeqNo(7), View(3)),
            ],
        },
        ..Default::default()
    };
    let out = call_host("consensus", "readonly", host).unwrap();
    assert_eq!(out["committed"], json!({"view": 2, "seqno": 5}));
    assert_eq!(
        out["statuses"],
        json!(["Committed", "Committed", "Invalid", "Unknown", "Invalid"])
    );
    assert_eq!(out["views"], json!([1, 2, null]));
}

#[test]
fn historical_state_is_the_transaction_asked_for_and_read_only() {
    let host = Host {
        historical: Some(past(4, "old")),
        ..Default::default()
    };
    let out = call_host("historical", "historical", host).unwrap();
    assert_eq!(out["id"], "2.4");
    assert_eq!(out["receipt"]["node_id"], "n1");
    assert_eq!(out["seen"], json!([["a", "old"]]));
    assert_eq!(out["size"], 1);
    assert_eq!(out["a"], "old");
    assert_eq!(out["gone"], false);
    assert_eq!(out["missing"], true);
    assert_eq!(out["version"], 4);
    assert_eq!(out["thrown"], "historical state is read-only");
    // Without a historical transaction the global is simply absent.
    let out = call_host("historical", "historical", Host::default());
    assert!(matches!(out, Err(AppError::Script(_))), "{out:?}");
}

#[test]
fn state_ranges_load_then_answer_and_handles_drop() {
    let history: Arc<dyn History> = Arc::new(FakeHistory {
        handles: Default::default(),
    });
    let host = Host {
        history: Some(history),
        ..Default::default()
    };
    let out = call_host("range", "readonly", host.clone()).unwrap();
    assert_eq!(out["status"], 202);
    let out = call_host("range", "readonly", host.clone()).unwrap();
    assert_eq!(out["ids"], json!(["2.4", "2.5"]));
    assert_eq!(out["a"], "v5");
    assert_eq!(out["dropped"], true);
    assert_eq!(out["again"], false);
    let e = call_host("badrange", "readonly", host).unwrap_err();
    assert!(e.to_string().contains("endSeqno"), "{e}");
    // Readwrite handlers get no history.
    let e = call_host("range", "readwrite", Host::default()).unwrap_err();
    assert!(e.to_string().contains("readonly and historical"), "{e}");
}

#[test]
fn dates_are_zero_until_untrusted_time_is_enabled() {
    let out = call_host("time", "readonly", Host::default()).unwrap();
    assert_eq!(out["before"], 0);
    assert_eq!(out["was"], false);
    assert_eq!(out["later"], true);
    assert_eq!(out["back"], true);
    assert_eq!(out["epoch"], 0);
    assert_eq!(out["parsed"], 86400000);
    assert_eq!(out["metrics"], true);
}

#[test]
fn maps_report_previous_write_versions_and_clear() {
    let out = call_host("maps", "readwrite", Host::default()).unwrap();
    assert_eq!(out["version"], 1);
    assert_eq!(out["none"], true);
    assert_eq!(out["size"], 0);
    assert_eq!(out["wrote"], true);
}

#[test]
fn runtime_options_default_and_load_from_governance() {
    let store = Store::new();
    let d = RuntimeOptions::load(&store);
    assert_eq!(d, RuntimeOptions::default());
    assert!(!d.return_exception_details);
    let mut tx = store.begin();
    tx.put(
        RUNTIME_OPTIONS,
        b"0",
        br#"{"max_heap_bytes":1048576,"max_stack_bytes":65536,"max_execution_time_ms":50,"return_exception_details":true}"#,
    );
    store.commit(tx, View(1)).unwrap();
    let o = RuntimeOptions::load(&store);
    assert!(o.return_exception_details && o.log_exception_details);
    assert_eq!(o.limits().max_execution_time, Duration::from_millis(50));
    assert_eq!(o.limits().max_heap_bytes, 1 << 20);
}

#[test]
fn runtime_options_patch_merges_and_checks_ranges() {
    let d = RuntimeOptions::default();
    let p = d
        .patched(&json!({"max_execution_time_ms": 50, "return_exception_details": true}))
        .unwrap();
    assert_eq!(p.max_execution_time_ms, 50);
    assert!(p.return_exception_details);
    assert_eq!(p.max_heap_bytes, d.max_heap_bytes);
    for (bad, why) in [
        (json!({"max_heap_bytes": 10}), "max_heap_bytes"),
        (json!({"max_execution_time_ms": 0}), "max_execution_time_ms"),
        (json!({"max_stack_bytes": 1u64 << 40}), "max_stack_bytes"),
        (json!({"speed": 1}), "speed"),
        (
            json!({"log_exception_details": "yes"}),
            "bad runtime options",
        ),
        (json!([1]), "object"),
    ] {
        let err = d.patched(&bad).unwrap_err();
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn user_defined_functions_run_with_string_arguments_and_write_like_apps() {
    let store = Store::new();
    let code = r#"
export function main(a, b) { ccf.kv["udf.counts"].set(ccf.strToBuf(a), ccf.strToBuf(b)); return a + b; }
export function obj() { return { n: 1 }; }
export function nothing() {}
export function sneaky() { ccf.kv["public:ccf.gov.users.info"].set(ccf.strToBuf("me"), ccf.strToBuf("{}")); }
export function spin() { for (;;) {} }
"#;
    let exec = |f: &str, args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        run_function(
            &limits(),
            code,
            f,
            &args,
            &store,
            WriteSet::default(),
            Host::default(),
        )
    };
    let (v, kv) = exec("main", &["x", "y"]).unwrap();
    assert_eq!(v, "xy");
    assert!(!kv.is_empty());
    assert_eq!(exec("obj", &[]).unwrap().0, r#"{"n":1}"#);
    assert_eq!(exec("nothing", &[]).unwrap().0, "");
    let err = exec("absent", &[]).unwrap_err().to_string();
    assert!(err.contains("exports no function"), "{err}");
    let err = exec("sneaky", &[]).unwrap_err().to_string();
    assert!(err.contains("may not write"), "{err}");
    assert!(matches!(
        exec("spin", &[]),
        Err(AppError::Script(JsError::Timeout(_)))
    ));
}
