//! A JavaScript app deployed by governance and used end to end: `covenant gov
//! set-js-app examples/banking --accept` on `covenant dev`, then member-cert and
//! user-cert endpoints over real TLS, their 4xx answers, reads of the app's
//! writes, built-in routes still served, and `remove_js_app`.

mod common;
use common::{as_member0, covenant, dev, ok, stop};

use std::path::{Path, PathBuf};

use covenant_client::LedgerClient;
use covenant_crypto::Certificate;
use covenant_test_support::{dev_identity, pem_identity, service_cert, Requests};
use serde_json::{json, Value};

async fn send(
    c: &LedgerClient,
    method: &str,
    path: String,
    body: Option<Value>,
) -> covenant_client::HttpResponse {
    c.send(method, &path, body.as_ref()).await
}

/// `POST path` with `{"amount": amount}`: the banking app's deposits and transfers.
async fn post_amount(
    c: &LedgerClient,
    path: String,
    amount: Value,
) -> covenant_client::HttpResponse {
    send(c, "POST", path, Some(json!({ "amount": amount }))).await
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/banking")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banking_example_runs_as_a_governed_app() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let (dev, port) = dev(&dir, &[]);
    let endpoint = format!("https://127.0.0.1:{port}");
    let files = ["service_cert.pem", "member0_cert.pem", "member0_privk.pem"]
        .map(|f| dir.join(f).to_str().unwrap().to_string());
    let gov = |extra: &[&str]| as_member0(&dir, &endpoint, extra);
    let out = ok(gov(&[
        "gov",
        "set-js-app",
        example().to_str().unwrap(),
        "--accept",
    ]));
    assert!(out.contains("Accepted"), "{out}");

    let service = service_cert(&dir);
    let (member_cert, member_key) = dev_identity(&dir, "member0");
    let member = LedgerClient::new(&endpoint, &service, Some((&member_cert, &member_key))).unwrap();
    let (u0_cert, u0_key) = pem_identity(&dir.join("user0.pem"));
    let user0 = LedgerClient::new(&endpoint, &service, Some((&u0_cert, &u0_key))).unwrap();
    let keys = tmp.path().join("keys");
    ok(covenant(&[
        "keygen",
        "--name",
        "user1",
        "--dir",
        keys.to_str().unwrap(),
    ]));
    let (u1_cert, u1_key) = pem_identity(&keys.join("user1.pem"));
    // Apps see CCF's user ids (lower-case hex SHA-256 of the certificate DER);
    // `users set` takes that spelling too.
    let u1_id = u1_cert.member_id();
    let u0_id = u0_cert.member_id();
    ok(covenant(&[
        "users",
        "set",
        &u1_id,
        "--role",
        "Reader",
        "--endpoint",
        &endpoint,
        "--service-cert",
        &files[0],
        "--cert",
        dir.join("user0.pem").to_str().unwrap(),
    ]));
    let user1 = LedgerClient::new(&endpoint, &service, Some((&u1_cert, &u1_key))).unwrap();
    let anonymous = LedgerClient::new(&endpoint, &service, None).unwrap();

    // Members open accounts; users may not; twice is a conflict.
    let r = send(&member, "PUT", format!("/app/accounts/{u0_id}"), None).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert_eq!(r.json()["opened_by"], json!(member_cert.member_id()));
    assert!(r.transaction_id.is_some());
    assert_eq!(
        send(&member, "PUT", format!("/app/accounts/{u0_id}"), None)
            .await
            .status,
        409
    );
    let r = send(&user0, "PUT", format!("/app/accounts/{u1_id}"), None).await;
    assert_eq!(r.status, 401, "{:?}", r.json());
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("member"));
    assert_eq!(
        send(&member, "PUT", format!("/app/accounts/{u1_id}"), None)
            .await
            .status,
        201
    );
    // Deposits, with their 4xx answers.
    let r = post_amount(
        &member,
        format!("/app/accounts/{u0_id}/deposit"),
        json!(100),
    )
    .await;
    assert_eq!((r.status, r.json()["balance"].clone()), (200, json!(100)));
    for (who, amount, status) in [
        (&u0_id, json!(-5), 400),
        (&"nobody".to_string(), json!(5), 404),
    ] {
        let r = post_amount(&member, format!("/app/accounts/{who}/deposit"), amount).await;
        assert_eq!(r.status, status, "{:?}", r.json());
        assert!(r.json()["error"]["code"].is_string());
    }
    // Users transfer and read their balances.
    let r = post_amount(&user0, format!("/app/transfer/{u1_id}"), json!(30)).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let over = post_amount(&user0, format!("/app/transfer/{u1_id}"), json!(1000)).await;
    assert_eq!(over.status, 400);
    assert_eq!(over.json()["error"]["code"], json!("InsufficientFunds"));
    let balance = |c: LedgerClient| async move {
        let r = c.get("/app/balance").await;
        assert_eq!(r.status, 200, "{:?}", r.json());
        r.json()["balance"].clone()
    };
    assert_eq!(balance(user0.clone()).await, json!(70));
    assert_eq!(balance(user1.clone()).await, json!(30));
    assert_eq!(
        send(&anonymous, "GET", "/app/balance".into(), None)
            .await
            .status,
        401
    );
    // The built-in ledger API is still there beside the app.
    let r = send(
        &user0,
        "POST",
        "/app/transactions?api-version=2022-05-13".into(),
        Some(json!({"contents": "beside the app"})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    // A method the app does not define on its path falls through to built-ins (404).
    assert_eq!(
        send(&user0, "DELETE", "/app/balance".into(), None)
            .await
            .status,
        404
    );

    // Removing the app removes its endpoints.
    let proposal = tmp.path().join("remove.json");
    std::fs::write(
        &proposal,
        r#"{"actions":[{"name":"remove_js_app","args":{}}]}"#,
    )
    .unwrap();
    let v: Value = serde_json::from_str(&ok(gov(&[
        "gov",
        "propose",
        proposal.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    let id = v["proposal_id"].as_str().unwrap().to_string();
    assert!(ok(gov(&["gov", "vote", &id, "--accept"])).contains("Accepted"));
    assert_eq!(
        send(&user0, "GET", "/app/balance".into(), None)
            .await
            .status,
        404
    );
    // `gov propose set-js-app <bundle>` deploys it again; the accounts are still there.
    // (A second later: the same signed proposal within a second is a replay.)
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = ok(gov(&[
        "gov",
        "propose",
        "set-js-app",
        example().to_str().unwrap(),
        "--accept",
    ]));
    assert!(out.contains("Accepted"), "{out}");
    let r = send(&user0, "GET", "/app/balance".into(), None).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let o = gov(&["gov", "propose", "set-js-app"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("give the bundle"));
    stop(dev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_app_deploys_the_bundle_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    // Two members: the deployment needs both ballots under the default constitution.
    let (dev, port) = dev(
        &dir,
        &["--members", "2", "--app", example().to_str().unwrap()],
    );
    let endpoint = format!("https://127.0.0.1:{port}");
    let service = service_cert(&dir);
    let (m_cert, m_key) = dev_identity(&dir, "member1");
    let member = LedgerClient::new(&endpoint, &service, Some((&m_cert, &m_key))).unwrap();
    let r = send(&member, "PUT", "/app/accounts/someone".to_string(), None).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert_eq!(r.json()["opened_by"], json!(m_cert.member_id()));
    stop(dev);

    // A path that is not a bundle fails before anything starts, saying why.
    let o = covenant(&[
        "dev",
        "--data-dir",
        tmp.path().join("other").to_str().unwrap(),
        "--app",
        tmp.path().join("missing").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--app") && err.contains("app.json"), "{err}");
    assert!(!tmp.path().join("other").exists(), "{err}");
}

/// A bundle that misbehaves on purpose, and reads history: written by the test so
/// the example stays a clean sample.
fn write_probe_app(dir: &Path) {
    let ep = |function: &str, mode: &str| {
        json!({"js_module": "probe.js", "js_function": function, "authn_policies": [],
               "forwarding_required": "sometimes", "mode": mode})
    };
    let metadata = json!({"endpoints": {
        "/spin": {"post": ep("spin", "readwrite")},
        "/hog": {"post": ep("hog", "readwrite")},
        "/throw": {"post": ep("throws", "readwrite")},
        "/claim": {"post": ep("claim", "readwrite")},
        "/ping": {"get": ep("ping", "readonly")},
        "/committed": {"get": ep("committed", "readonly")},
        "/receipt": {"get": ep("receipt", "historical")},
        "/can/{action}": {"get": {"js_module": "probe.js", "js_function": "can",
                                   "authn_policies": ["user_cert"], "mode": "readonly"}},
        "/signed": {"post": {"js_module": "probe.js", "js_function": "signed",
                             "authn_policies": ["user_cose_sign1"], "mode": "readwrite"}},
        "/grant": {"post": {"js_module": "probe.js", "js_function": "grant",
                            "authn_policies": ["user_cert"], "mode": "readwrite"}},
        "/incr": {"post": ep("incr", "readwrite")},
    }});
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("app.json"), metadata.to_string()).unwrap();
    std::fs::write(
        dir.join("src/probe.js"),
        r#"
export function spin() { for (;;) {} }
export function hog() { const a = []; for (;;) a.push(new Array(100000).fill(7)); }
export function throws() { ccf.kv["probe"].set(ccf.strToBuf("lost"), ccf.strToBuf("x")); throw new Error("boom: the secret detail"); }
export function claim(request) {
  const { note, digest } = request.body.json();
  ccf.kv["probe"].set(ccf.strToBuf("note"), ccf.strToBuf(note));
  const raw = new Uint8Array(digest.match(/../g).map((h) => parseInt(h, 16)));
  ccf.rpc.setClaimsDigest(raw.buffer);
  return { body: { ok: true } };
}
export function ping() { return { body: "pong" }; }
export function committed() {
  const last = ccf.consensus.getLastCommittedTxId();
  return { body: { last, status: ccf.consensus.getStatusForTxId(last.view, last.seqno) } };
}
export function can(request) {
  const id = request.caller.id;
  const action = "/" + request.params.action;
  // As ACL's samples read the tables, and through the acl global.
  // ACL's roles mapping is keyed by ACL's spelling of the id (as ACL's samples compute it).
  const aclId = id.toUpperCase().match(/../g).join(":");
  const mapped = ccf.kv["public:confidentialledger.roles.user_roles_mapping"].get(ccf.strToBuf(JSON.stringify(aclId)));
  return { body: { roles: acl.userRoles(id), allowed: acl.isActionAllowed(id, action),
                   hasBanker: acl.hasRole(id, "banker"), actions: acl.roleActions("banker"),
                   mapped: mapped === undefined ? null : JSON.parse(ccf.bufToStr(mapped)) } };
}
export function signed(request) {
  const c = request.caller;
  return { body: { policy: c.policy, id: c.id, content: ccf.bufToStr(c.cose.content),
                   type: c.cose.protected_header.msg_type, isCert: c.cert.startsWith("-----BEGIN CERTIFICATE") } };
}
export function grant(request) {
  ccf.kv["public:confidentialledger.roles.user_roles_mapping"].set(ccf.strToBuf("x"), ccf.strToBuf("[]"));
}
// Reads the counter, computes for `ms` milliseconds, writes it plus one: two
// callers that overlap read the same value, so one of them must run again.
export function incr(request) {
  ccf.enableUntrustedDateTime(true);
  const { ms } = request.body.json();
  const t = ccf.kv["probe"];
  const old = t.get(ccf.strToBuf("count"));
  const n = old === undefined ? 0 : Number(ccf.bufToStr(old));
  const end = Date.now() + ms;
  while (Date.now() < end) {}
  t.set(ccf.strToBuf("count"), ccf.strToBuf(String(n + 1)));
  return { body: { count: n + 1 } };
}
export function receipt() {
  const s = ccf.historicalState;
  const note = s.kv["probe"].get(ccf.strToBuf("note"));
  return { body: { transactionId: s.transactionId, receipt: s.receipt,
                   note: note === undefined ? null : ccf.bufToStr(note) } };
}
"#,
    )
    .unwrap();
}

/// `covenant dev` serving the probe app, in a temp dir the test may also use.
struct Probe {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    dev: common::Dev,
    endpoint: String,
    service: Certificate,
}

fn start_probe() -> Probe {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let bundle = tmp.path().join("probe");
    write_probe_app(&bundle);
    let (dev, port) = dev(&dir, &["--app", bundle.to_str().unwrap()]);
    let service = service_cert(&dir);
    Probe {
        tmp,
        dir,
        dev,
        endpoint: format!("https://127.0.0.1:{port}"),
        service,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_handlers_are_stopped_and_history_is_served() {
    let Probe {
        tmp,
        dir,
        dev,
        endpoint,
        service,
    } = start_probe();
    let files = ["service_cert.pem", "member0_cert.pem", "member0_privk.pem"]
        .map(|f| dir.join(f).to_str().unwrap().to_string());
    let anyone = LedgerClient::new(&endpoint, &service, None).unwrap();
    let message = |r: &covenant_client::HttpResponse| {
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    // An endless loop and an endless allocation are stopped at the default limits;
    // the node keeps serving between them.
    let r = send(&anyone, "POST", "/app/spin".into(), None).await;
    assert_eq!(r.status, 500);
    assert!(
        message(&r).contains("time limit") || message(&r).contains("ms"),
        "{}",
        message(&r)
    );
    let r = send(&anyone, "POST", "/app/hog".into(), None).await;
    assert_eq!(r.status, 500);
    assert!(message(&r).contains("heap"), "{}", message(&r));
    let r = send(&anyone, "GET", "/app/ping".into(), None).await;
    assert_eq!((r.status, r.body.as_slice()), (200, b"pong".as_slice()));

    // An exception's details stay in the node unless the runtime options say so;
    // its writes are discarded either way.
    let r = send(&anyone, "POST", "/app/throw".into(), None).await;
    assert_eq!(r.status, 500);
    assert!(!message(&r).contains("secret"), "{}", message(&r));

    let gov = |extra: &[&str]| as_member0(&dir, &endpoint, extra);
    let propose = |name: &str, options: Value| {
        let proposal = tmp.path().join(format!("{name}.json"));
        std::fs::write(
            &proposal,
            json!({"actions": [{"name": "set_js_runtime_options", "args": options}]}).to_string(),
        )
        .unwrap();
        gov(&["gov", "propose", proposal.to_str().unwrap(), "--json"])
    };
    // Out-of-range options are refused when proposed.
    let bad = propose(
        "bad",
        json!({"max_heap_bytes": 10, "max_stack_bytes": 1048576, "max_execution_time_ms": 100}),
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("max_heap_bytes"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let v: Value = serde_json::from_str(&ok(propose(
        "good",
        json!({"max_heap_bytes": 8 << 20, "max_stack_bytes": 1 << 20, "max_execution_time_ms": 50,
               "log_exception_details": false, "return_exception_details": true}),
    )))
    .unwrap();
    let id = v["proposal_id"].as_str().unwrap().to_string();
    assert!(ok(gov(&["gov", "vote", &id, "--accept"])).contains("Accepted"));
    let r = send(&anyone, "POST", "/app/throw".into(), None).await;
    assert_eq!(r.status, 500);
    assert!(
        message(&r).contains("boom: the secret detail"),
        "{}",
        message(&r)
    );
    let r = send(&anyone, "POST", "/app/spin".into(), None).await;
    assert!(message(&r).contains("50 ms"), "{}", message(&r));
    let r = send(&anyone, "POST", "/app/hog".into(), None).await;
    assert!(
        message(&r).contains(&(8 << 20).to_string()),
        "{}",
        message(&r)
    );

    // A claims digest set by the handler is in the historical receipt, which
    // verifies offline; the state of that transaction is readable there.
    let claim = "transfer 5 from a to b";
    let digest = covenant_crypto::sha256(claim.as_bytes()).to_hex();
    let r = send(
        &anyone,
        "POST",
        "/app/claim".into(),
        Some(json!({"note": claim, "digest": digest})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let txid = r.transaction_id.clone().unwrap();
    // The id goes in CCF's header; an empty one means "leave the header out".
    let historical = |txid: &str| {
        let headers = if txid.is_empty() {
            vec![]
        } else {
            vec![("x-ms-ccf-transaction-id".to_string(), txid.to_string())]
        };
        let c = &anyone;
        async move {
            let r = c
                .connect()
                .await
                .unwrap()
                .request_with_headers("GET", "/app/receipt", None, "application/json", &headers)
                .await
                .unwrap();
            let retry = r
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                .map(|(_, v)| v.clone());
            (
                r.status,
                retry,
                String::from_utf8_lossy(&r.body).into_owned(),
            )
        }
    };
    let mut got = None;
    for _ in 0..100 {
        let (status, retry, body) = historical(&txid).await;
        if status == 202 {
            assert_eq!(retry.as_deref(), Some("1"));
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(status, 200, "{body}");
        got = Some(body);
        break;
    }
    let got: Value = serde_json::from_str(&got.expect("the receipt never became ready")).unwrap();
    assert_eq!(got["transactionId"], json!(txid));
    assert_eq!(got["note"], json!(claim));
    let receipt = &got["receipt"];
    assert_eq!(receipt["leaf_components"]["claims_digest"], json!(digest));
    let file = tmp.path().join("receipt.json");
    std::fs::write(&file, receipt.to_string()).unwrap();
    let out = ok(covenant(&[
        "verify-receipt",
        file.to_str().unwrap(),
        "--service-cert",
        &files[0],
    ]));
    assert!(out.contains("receipt verified"), "{out}");

    // Historical requests without, or with a bad or unknown, transaction id.
    let (status, _, body) = historical("").await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = historical("two.five").await;
    assert!(
        status == 400 && body.contains("InvalidHeaderValue"),
        "{body}"
    );
    let (status, _, body) = historical("2.999999").await;
    assert!(
        status == 404 && body.contains("TransactionPendingOrUnknown"),
        "{body}"
    );

    // The app's endpoints are in the node's OpenAPI document, beside the built-ins.
    let r = send(&anyone, "GET", "/node/api".into(), None).await;
    let doc = r.json();
    assert_eq!(
        doc["paths"]["/app/receipt"]["get"]["x-covenant-app"]["mode"],
        json!("historical")
    );
    assert!(doc["paths"]["/app/transactions"]["post"].is_object());

    let r = send(&anyone, "GET", "/app/committed".into(), None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.json()["last"]["seqno"].as_u64().unwrap() > 0,
        "{:?}",
        r.json()
    );
    assert_eq!(r.json()["status"], json!("Committed"));
    stop(dev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_defined_roles_reach_apps_through_acl_tables() {
    let probe = start_probe();
    let (u0_cert, u0_key) = pem_identity(&probe.dir.join("user0.pem"));
    let admin =
        LedgerClient::new(&probe.endpoint, &probe.service, Some((&u0_cert, &u0_key))).unwrap();
    let me = u0_cert.user_fingerprint();
    const V: &str = "api-version=2024-12-09-preview";
    let assign = |roles: Value| {
        send(
            &admin,
            "PATCH",
            format!("/app/ledgerUsers/{me}?{V}"),
            Some(json!({ "assignedRoles": roles })),
        )
    };
    let banker = || {
        send(
            &admin,
            "GET",
            format!("/app/roles?roleName=banker&{V}"),
            None,
        )
    };

    let define = json!({"roles": [{"roleName": "banker", "roleActions": ["/deposit", "/open"]}]});
    let r = send(&admin, "PUT", format!("/app/roles?{V}"), Some(define)).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let r = banker().await;
    assert_eq!(
        r.json(),
        json!({"roles": [{"role_name": "banker", "role_actions": ["/deposit", "/open"]}]})
    );
    // Undefined and built-in names are refused.
    let r = assign(json!(["teller"])).await;
    assert_eq!(r.status, 400, "{:?}", r.json());
    let r = send(
        &admin,
        "PUT",
        format!("/app/roles?{V}"),
        Some(json!({"roles": [{"roleName": "Reader", "roleActions": []}]})),
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", r.json());

    let r = assign(json!(["banker"])).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    // The reply repeats the roles sent (as ACL's does); the user holds both.
    assert_eq!(r.json()["assignedRoles"], json!(["banker"]));
    let r = send(&admin, "GET", format!("/app/ledgerUsers/{me}?{V}"), None).await;
    assert_eq!(
        r.json()["assignedRoles"],
        json!(["Administrator", "banker"])
    );

    let r = send(&admin, "GET", "/app/can/deposit".into(), None).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(
        r.json(),
        json!({"roles": ["Administrator", "banker"], "allowed": true, "hasBanker": true,
               "actions": ["/deposit", "/open"], "mapped": ["banker"]})
    );
    assert_eq!(
        send(&admin, "GET", "/app/can/withdraw".into(), None)
            .await
            .json()["allowed"],
        json!(false)
    );
    // Apps read the role tables but may not write them.
    let r = send(&admin, "POST", "/app/grant".into(), None).await;
    assert_eq!(r.status, 500);

    // Narrowing the role reaches the app; deleting it takes it from the user.
    let r = send(
        &admin,
        "PATCH",
        format!("/app/roles?{V}"),
        Some(json!({"roles": [{"roleName": "banker", "roleActions": ["/open"]}]})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(
        send(&admin, "GET", "/app/can/deposit".into(), None)
            .await
            .json()["allowed"],
        json!(false)
    );
    let r = send(
        &admin,
        "DELETE",
        format!("/app/roles?roleName=banker&{V}"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let r = send(&admin, "GET", "/app/can/open".into(), None).await;
    assert_eq!(r.json()["roles"], json!(["Administrator"]));
    assert_eq!(r.json()["mapped"], Value::Null);
    assert_eq!(banker().await.status, 404);
    stop(probe.dev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_cose_sign1_endpoints_authenticate_the_signed_body() {
    let probe = start_probe();
    let anyone = LedgerClient::new(&probe.endpoint, &probe.service, None).unwrap();
    let (cert, key) = pem_identity(&probe.dir.join("user0.pem"));
    let post = |body: Vec<u8>| {
        let c = &anyone;
        async move {
            c.request_raw("POST", "/app/signed", Some(body), "application/cose")
                .await
                .unwrap()
        }
    };
    let envelope = covenant_crypto::sign_user_sign1(
        &key,
        &cert,
        Some("transfer"),
        Some(1_700_000_000),
        br#"{"amount":5}"#,
    )
    .unwrap();
    // No client certificate: the signature alone identifies user0.
    let r = post(envelope.clone()).await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json(),
        json!({"policy": "user_cose_sign1", "id": cert.member_id(),
               "content": "{\"amount\":5}", "type": "transfer", "isCert": true})
    );
    // A flipped payload byte, a key that is no user's, and a plain body are refused.
    let mut tampered = envelope.clone();
    let i = tampered.windows(6).position(|w| w == b"amount").unwrap();
    tampered[i] ^= 1;
    assert_eq!(post(tampered).await.status, 401);
    let (stranger_key, stranger) =
        covenant_crypto::generate_client_identity("stranger", covenant_crypto::Curve::P384)
            .unwrap();
    let foreign =
        covenant_crypto::sign_user_sign1(&stranger_key, &stranger, None, None, b"{}").unwrap();
    let r = post(foreign).await;
    assert_eq!(r.status, 401);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("user_cose_sign1"),
        "{:?}",
        r.json()
    );
    assert_eq!(post(b"{}".to_vec()).await.status, 401);
    stop(probe.dev);
}

/// Handlers run outside the engine's lock: appends go on while a handler
/// computes, and handlers whose reads were overwritten before they committed run
/// again, so every increment counts exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handlers_do_not_stall_appends_and_conflicts_run_again() {
    let Probe {
        tmp: _tmp,
        dir,
        dev,
        endpoint,
        service,
    } = start_probe();
    let anyone = LedgerClient::new(&endpoint, &service, None).unwrap();
    let (u0_cert, u0_key) = pem_identity(&dir.join("user0.pem"));
    let user0 = LedgerClient::new(&endpoint, &service, Some((&u0_cert, &u0_key))).unwrap();

    // One handler computes for 800 ms (under the default 1 s limit); appends made
    // meanwhile are answered before it is.
    let slow = {
        let c = anyone.clone();
        tokio::spawn(
            async move { send(&c, "POST", "/app/incr".into(), Some(json!({"ms": 800}))).await },
        )
    };
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    for i in 0..5 {
        let r = send(
            &user0,
            "POST",
            "/app/transactions?api-version=0.1-preview".into(),
            Some(json!({ "contents": format!("beside the slow handler {i}") })),
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert!(
        !slow.is_finished(),
        "the appends waited for the slow handler"
    );
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["count"], 1);

    // Four overlapping increments: each reads the counter, then computes; all but
    // one find it changed at commit and run again. Every one counts.
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let c = anyone.clone();
            tokio::spawn(async move {
                send(&c, "POST", "/app/incr".into(), Some(json!({"ms": 120}))).await
            })
        })
        .collect();
    let mut seen = Vec::new();
    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        seen.push(r.json()["count"].as_u64().unwrap());
    }
    seen.sort();
    assert_eq!(seen, [2, 3, 4, 5], "each increment saw its own state");
    let r = send(&anyone, "POST", "/app/incr".into(), Some(json!({"ms": 0}))).await;
    assert_eq!(r.json()["count"], 6);
    stop(dev);
}
