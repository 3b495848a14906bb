//! Route handlers checked in process: the router is called directly (no TLS, no
//! sockets, no process) over a single-node service on a temporary ledger, with the
//! caller's certificate put where the TLS server would put it. What is checked is
//! the handlers' part: status codes, error codes and response shapes. The service
//! stands in for consensus: `Service::refuse_writes` (feature `test-hooks`, enabled
//! for this crate's tests only) makes it refuse writes as a backup, a node still
//! joining, a failed replication or a full disk would.

use covenant_types::SeqNo;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use covenant_crypto::{generate_client_identity, Certificate, Curve, LedgerSecret};
use covenant_engine::{Engine, EngineConfig, EngineError};
use covenant_service::{Genesis, Role, Service, ServiceError, ServiceOptions};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::error::ApiError;
use crate::server::PeerCert;
use crate::state::{NodeCerts, NodeState, Transport};

const V: &str = "api-version=2024-12-09-preview";

struct Harness {
    router: Router,
    state: NodeState,
    admin: Certificate,
    contributor: Certificate,
    reader: Certificate,
    stranger: Certificate,
    _dir: tempfile::TempDir,
}

/// A single node whose genesis has an Administrator, a Contributor and a user
/// added without roles (a Reader); `stranger` is no user.
fn harness() -> Harness {
    let (_, node) = covenant_test_support::service_and_node();
    let dir = tempfile::tempdir().unwrap();
    let mut engine = Engine::open(
        EngineConfig::new(dir.path().join("ledger")),
        node.clone(),
        Arc::new(LedgerSecret::generate().unwrap()),
    )
    .unwrap();
    let cert = |name| generate_client_identity(name, Curve::P256).unwrap().1;
    let (admin, contributor, reader, stranger) = (cert("a"), cert("c"), cert("r"), cert("s"));
    Genesis {
        users: vec![
            (admin.clone(), vec![Role::Administrator]),
            (contributor.clone(), vec![Role::Contributor]),
            (reader.clone(), vec![]),
        ],
        constitution: covenant_governance::DEFAULT_CONSTITUTION.into(),
        ..Default::default()
    }
    .write(&mut engine)
    .unwrap();
    let options = ServiceOptions {
        ledger_public: false,
        sig_interval: Duration::from_millis(5),
        index_path: None,
        index_progress: None,
    };
    let service = Service::single(engine, &options).unwrap();
    let state = NodeState::new(
        service,
        Transport {
            service_cert_pem: String::new(),
            node_certs: NodeCerts::default(),
            ledger_id: "test".into(),
            jwt: Default::default(),
            quote: crate::attestation::VirtualQuote::of(&node),
            network: None,
        },
    );
    Harness {
        router: crate::routes::router(state.clone(), 1 << 20),
        state,
        admin,
        contributor,
        reader,
        stranger,
        _dir: dir,
    }
}

impl Harness {
    /// One request as `who` (its client certificate); the status, headers and JSON body.
    async fn call(
        &self,
        method: Method,
        uri: &str,
        who: Option<&Certificate>,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let mut req = req
            .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
            .unwrap();
        let peer = who.map(|c| Arc::new((c.clone(), covenant_crypto::sha256(c.der()))));
        req.extensions_mut().insert(PeerCert(peer));
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (parts.status, parts.headers, json)
    }

    async fn get(&self, uri: &str, who: &Certificate) -> (StatusCode, HeaderMap, Value) {
        self.call(Method::GET, uri, Some(who), None).await
    }

    async fn post(
        &self,
        uri: &str,
        who: Option<&Certificate>,
        body: Value,
    ) -> (StatusCode, HeaderMap, Value) {
        self.call(Method::POST, uri, who, Some(body)).await
    }

    async fn append(&self, who: &Certificate, contents: &str) -> (StatusCode, HeaderMap, Value) {
        self.call(
            Method::POST,
            &format!("/app/transactions?{V}&collectionId=c1"),
            Some(who),
            Some(json!({ "contents": contents })),
        )
        .await
    }

    /// Waits until `txid` is committed (the driver signs every 5 ms).
    async fn committed(&self, txid: &str) {
        let mut rx = self.state.service.subscribe_committed();
        let seqno: u64 = txid.split_once('.').unwrap().1.parse().unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|c| *c >= SeqNo(seqno)))
            .await
            .unwrap()
            .unwrap();
    }
}

fn txid_of(h: &HeaderMap) -> String {
    h.get("x-ms-ccf-transaction-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

/// The response is an error with `status` and `code` in covenant's shape.
#[track_caller]
fn refused(r: (StatusCode, HeaderMap, Value), status: StatusCode, code: &str) {
    assert_eq!((r.0, error_code(&r.2)), (status, code), "{}", r.2);
    assert!(r.2["error"]["message"].is_string(), "{}", r.2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_checks_version_caller_and_role_then_answers_its_txid() {
    let h = harness();
    // No api-version, an unknown one: 400 before anything else.
    let x = json!({"contents": "x"});
    for uri in [
        "/app/transactions",
        "/app/transactions?api-version=1999-01-01",
    ] {
        let r = h.post(uri, Some(&h.admin), x.clone()).await;
        refused(r, StatusCode::BAD_REQUEST, "QueryParameterError");
    }
    // No certificate: refused at the edge; not a user: 401; a Reader: 403.
    refused(
        h.post(
            &format!("/app/transactions?{V}"),
            None,
            json!({"contents": "x"}),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
    );
    let (s, _, _) = h.append(&h.stranger, "x").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    refused(
        h.append(&h.reader, "x").await,
        StatusCode::FORBIDDEN,
        "Forbidden",
    );
    // A bad body: 400 InvalidInput.
    refused(
        h.post(
            &format!("/app/transactions?{V}"),
            Some(&h.contributor),
            json!({"content": "typo"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidInput",
    );
    // A Contributor appends: 200, the collection, the TxId in the header.
    let (s, headers, b) = h.append(&h.contributor, "hello").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, json!({"collectionId": "c1"}));
    let txid = txid_of(&headers);
    assert!(txid.parse::<covenant_types::TxId>().is_ok(), "{txid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_reads_back_with_its_status_and_a_receipt_with_its_claim() {
    let h = harness();
    let (_, headers, _) = h.append(&h.contributor, "audited").await;
    let txid = txid_of(&headers);
    h.committed(&txid).await;
    let (s, _, b) = h
        .get(&format!("/app/transactions/{txid}/status?{V}"), &h.reader)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, json!({"state": "Committed", "transactionId": txid}));
    let (s, _, b) = h
        .get(
            &format!("/app/transactions/{txid}?{V}&collectionId=c1"),
            &h.reader,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["state"], "Ready");
    assert_eq!(
        b["entry"],
        json!({"collectionId": "c1", "contents": "audited", "transactionId": txid})
    );
    // The same TxId in another collection is no entry of it.
    refused(
        h.get(
            &format!("/app/transactions/{txid}?{V}&collectionId=other"),
            &h.reader,
        )
        .await,
        StatusCode::NOT_FOUND,
        "InvalidTransactionId",
    );
    // The receipt of an entry written at this api-version reveals its claim.
    let (s, _, b) = h
        .get(&format!("/app/transactions/{txid}/receipt?{V}"), &h.reader)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["state"], "Ready");
    assert_eq!(b["transactionId"], txid);
    assert!(b["receipt"]["signature"].is_string(), "{b}");
    let claim = &b["applicationClaims"][0]["ledgerEntry"];
    assert_eq!(claim["contents"], "audited");
    assert_eq!(claim["collectionId"], "c1");
    assert_eq!(claim["protocol"], "LedgerEntryV1");
    // CCF's node routes answer the same transaction in their own shapes.
    let (s, _, b) = h
        .call(
            Method::GET,
            &format!("/node/tx?transaction_id={txid}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, json!({"status": "Committed", "transaction_id": txid}));
    // The collection lists it, and `current` is it.
    let (s, _, b) = h
        .get(&format!("/app/transactions?{V}&collectionId=c1"), &h.reader)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["entries"][0]["transactionId"], txid);
    let (s, _, b) = h
        .get(
            &format!("/app/transactions/current?{V}&collectionId=c1"),
            &h.reader,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["transactionId"], txid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_transaction_ids_are_told_apart() {
    let h = harness();
    refused(
        h.get(&format!("/app/transactions/1.99999/status?{V}"), &h.reader)
            .await,
        StatusCode::NOT_FOUND,
        "InvalidTransactionId",
    );
    refused(
        h.get(&format!("/app/transactions/banana/status?{V}"), &h.reader)
            .await,
        StatusCode::BAD_REQUEST,
        "InvalidTransactionId",
    );
    refused(
        h.get(&format!("/app/transactions/1.99999/receipt?{V}"), &h.reader)
            .await,
        StatusCode::NOT_FOUND,
        "InvalidTransactionId",
    );
    let (s, _, b) = h
        .call(Method::GET, "/node/tx?transaction_id=1.99999", None, None)
        .await;
    assert_eq!((s, b["status"].as_str()), (StatusCode::OK, Some("Unknown")));
    refused(
        h.call(Method::GET, "/node/tx", None, None).await,
        StatusCode::BAD_REQUEST,
        "QueryParameterError",
    );
    refused(
        h.get(
            &format!("/app/transactions/current?{V}&collectionId=empty"),
            &h.reader,
        )
        .await,
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
    );
    refused(
        h.call(Method::GET, "/no/such/route", None, None).await,
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_routes_check_roles_and_ids() {
    let h = harness();
    let (s, _, _) = h.get(&format!("/app/users?{V}"), &h.reader).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, b) = h.get(&format!("/app/users?{V}"), &h.admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["ledgerUsers"].as_array().map(Vec::len), Some(3), "{b}");
    // A CCF-spelled certificate id is refused with the ACL spelling to use.
    let ccf_id = covenant_crypto::sha256(h.reader.der()).to_hex();
    let r = h.get(&format!("/app/users/{ccf_id}?{V}"), &h.admin).await;
    let message = r.2["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    refused(r, StatusCode::BAD_REQUEST, "InvalidInput");
    let acl_id = covenant_crypto::colon_hex(&covenant_crypto::sha256(h.reader.der()));
    assert!(message.contains(&acl_id), "{message}");
    let (s, _, b) = h.get(&format!("/app/users/{acl_id}?{V}"), &h.admin).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["assignedRole"], "Reader");
}

/// Writes refused below the handlers (the service standing in for a consensus that
/// says no) reach the client as the error it can act on, through every kind of
/// write route; nothing is written, and reads go on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_writes_reach_the_client_as_what_it_can_act_on() {
    let h = harness();
    let (s, hd, b) = h.append(&h.contributor, "before").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let before = txid_of(&hd);
    h.committed(&before).await;
    let last = h.state.service.engine().last_seqno();
    let unavailable = (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable");
    type Refusal = fn() -> ServiceError;
    let cases: [(Refusal, (StatusCode, &str)); 4] = [
        (|| ServiceError::NotPrimary { leader: Some(2) }, unavailable),
        (|| ServiceError::NotReady, unavailable),
        (
            || ServiceError::ReplicationFailed("fsync".into()),
            unavailable,
        ),
        (
            || EngineError::DiskFull { free: 1, min: 2 }.into(),
            (StatusCode::INSUFFICIENT_STORAGE, "InsufficientStorage"),
        ),
    ];
    let reader_id = covenant_crypto::colon_hex(&covenant_crypto::sha256(h.reader.der()));
    for (with, (status, code)) in cases {
        h.state.service.refuse_writes(Some(with));
        refused(h.append(&h.contributor, "lost").await, status, code);
        let promote = json!({"assignedRole": "Contributor"});
        let r = h
            .call(
                Method::PATCH,
                &format!("/app/users/{reader_id}?{V}"),
                Some(&h.admin),
                Some(promote),
            )
            .await;
        refused(r, status, code);
        let function = json!({"code": "export function main() { return 1; }"});
        let r = h
            .call(
                Method::PUT,
                &format!("/app/userDefinedFunctions/f1?{V}"),
                Some(&h.admin),
                Some(function),
            )
            .await;
        refused(r, status, code);
        // Reads are served meanwhile.
        let (s, _, b) = h
            .get(
                &format!("/app/transactions/{before}?{V}&collectionId=c1"),
                &h.reader,
            )
            .await;
        assert_eq!(
            (s, b["entry"]["contents"].as_str()),
            (StatusCode::OK, Some("before"))
        );
    }
    h.state.service.refuse_writes(None);
    assert_eq!(
        h.state.service.engine().last_seqno(),
        last,
        "nothing written"
    );
    let (s, _, b) = h
        .get(&format!("/app/users/{reader_id}?{V}"), &h.admin)
        .await;
    assert_eq!((s, &b["assignedRole"]), (StatusCode::OK, &json!("Reader")));
    let (s, _, b) = h.append(&h.contributor, "after").await;
    assert_eq!(s, StatusCode::OK, "writes resume: {b}");
}

#[test]
fn service_errors_map_to_what_a_client_can_act_on() {
    let unavailable = (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable");
    let not_found = |code| (StatusCode::NOT_FOUND, code);
    let mapped = |e: ServiceError| {
        let a = ApiError::service("testing", e);
        (a.status, a.code)
    };
    let leader = Some(2);
    assert_eq!(mapped(ServiceError::NotPrimary { leader }), unavailable);
    assert_eq!(mapped(ServiceError::NotReady), unavailable);
    assert_eq!(
        mapped(ServiceError::ReplicationFailed("fsync".into())),
        unavailable
    );
    let full = EngineError::DiskFull { free: 1, min: 2 };
    assert_eq!(
        mapped(full.into()),
        (StatusCode::INSUFFICIENT_STORAGE, "InsufficientStorage")
    );
    assert_eq!(
        mapped(EngineError::NotHeld(SeqNo(3)).into()),
        not_found("TransactionNotHeld")
    );
    let txid = covenant_types::TxId::new(1, 5);
    assert_eq!(
        mapped(ServiceError::NoSuchTx(txid)),
        not_found("InvalidTransactionId")
    );
    // The node's own failures say where to look, not what broke.
    let a = ApiError::service("testing", EngineError::NothingToSign.into());
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        (a.code, a.message.as_str()),
        ("InternalError", "testing; see the node log")
    );
}
