//! The node over real TLS on 127.0.0.1: append → commit → read → receipt, auth
//! outcomes, bad input, and a restart that keeps everything.

use std::sync::Arc;
use std::time::Duration;

use covenant_client::{LedgerClient, ReceiptVerifier};
use covenant_crypto::{
    generate_client_identity, Certificate, Curve, LedgerSecret, NodeIdentity, ServiceIdentity,
    SigningKeyPair, SubjectAltName,
};
use covenant_engine::{Engine, EngineConfig};
use covenant_node::{add_cert_user, BoundNode, NodeConfig, Role};
use covenant_receipt::ReceiptResponse;
use covenant_test_support::{serve, service_and_node, Requests, Serving};
use serde_json::json;
use tokio::sync::oneshot;

struct Ids {
    service: ServiceIdentity,
    node: Arc<NodeIdentity>,
    secret: Arc<LedgerSecret>,
    admin: (SigningKeyPair, Certificate),
    reader: (SigningKeyPair, Certificate),
}

fn ids() -> Ids {
    let (service, node) = service_and_node();
    Ids {
        service,
        node,
        secret: Arc::new(LedgerSecret::generate().unwrap()),
        admin: generate_client_identity("user0", Curve::P384).unwrap(),
        reader: generate_client_identity("reader", Curve::P256).unwrap(),
    }
}

async fn start(ids: &Ids, dir: &std::path::Path, first: bool) -> Serving {
    start_with(ids, dir, first, |_| {}).await
}

async fn start_with(
    ids: &Ids,
    dir: &std::path::Path,
    first: bool,
    tweak: impl FnOnce(&mut NodeConfig),
) -> Serving {
    let mut engine =
        Engine::open(EngineConfig::new(dir), ids.node.clone(), ids.secret.clone()).unwrap();
    if first {
        add_cert_user(&mut engine, &ids.admin.1, &[Role::Administrator]).unwrap();
        add_cert_user(&mut engine, &ids.reader.1, &[Role::Reader]).unwrap();
    }
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    config.sig_ms_interval = 20;
    config.max_body_bytes = 64 * 1024;
    tweak(&mut config);
    serve(
        BoundNode::bind(config, engine, &ids.node, &ids.service.cert)
            .await
            .unwrap(),
    )
}

fn client(r: &Serving, ids: &Ids, who: Option<&(SigningKeyPair, Certificate)>) -> LedgerClient {
    LedgerClient::new(&r.endpoint, &ids.service.cert, who.map(|(k, c)| (c, k))).unwrap()
}

/// The port of `node` and a raw TLS 1.3 connection to it as the admin, offering
/// `alpn`: for what [`LedgerClient`] cannot send (a stalled body, HTTP/2).
async fn admin_tls(
    node: &Serving,
    ids: &Ids,
    alpn: Vec<Vec<u8>>,
) -> (u16, tokio_rustls::client::TlsStream<tokio::net::TcpStream>) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ids.service.cert.der().to_vec()))
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from(ids.admin.1.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            ids.admin.0.to_pkcs8_der().to_vec(),
        )),
    )
    .unwrap();
    config.alpn_protocols = alpn;
    let port: u16 = node.endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    (port, tls)
}

async fn wait_committed(c: &LedgerClient, txid: &str) {
    for _ in 0..200 {
        let r = c
            .get(&format!(
                "/app/transactions/{txid}/status?api-version=2022-05-13"
            ))
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        if r.json()["state"] == "Committed" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{txid} never committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_commit_read_receipt_and_restart() {
    let ids = ids();
    let dir = tempfile::tempdir().unwrap();
    let node = start(&ids, dir.path(), true).await;
    let admin = client(&node, &ids, Some(&ids.admin));
    let v = "api-version=2022-05-13";

    let mut written = Vec::new();
    for (i, coll) in ["subledger:0", "audit", "subledger:0"].iter().enumerate() {
        let r = admin
            .post(
                &format!("/app/transactions?{v}&collectionId={coll}"),
                &json!({"contents": format!("hello {i}")}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json(), json!({"collectionId": coll}));
        let txid = r.transaction_id.clone().expect("x-ms-ccf-transaction-id");
        written.push((txid, coll.to_string(), format!("hello {i}")));
    }
    // Default collection when none is named.
    let r = admin
        .post(
            &format!("/app/transactions?{v}"),
            &json!({"contents": "plain"}),
        )
        .await;
    assert_eq!(r.json(), json!({"collectionId": "subledger:0"}));
    let last = r.transaction_id.unwrap();
    wait_committed(&admin, &last).await;

    let verifier = ReceiptVerifier::new(ids.service.cert.clone());
    for (txid, coll, contents) in &written {
        let r = admin
            .get(&format!("/app/transactions/{txid}?{v}&collectionId={coll}"))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json(),
            json!({"state": "Ready", "entry": {"collectionId": coll, "contents": contents, "transactionId": txid}})
        );
        let r = admin
            .get(&format!("/app/transactions/{txid}/receipt?{v}"))
            .await;
        let resp: ReceiptResponse = serde_json::from_slice(&r.body).unwrap();
        let checked = verifier.verify_response(&resp, None).unwrap();
        assert_eq!(checked.transaction_id.to_string(), *txid);
    }
    let r = admin
        .get(&format!("/app/transactions/current?{v}&collectionId=audit"))
        .await;
    assert_eq!(r.json()["contents"], "hello 1");
    let r = admin.get(&format!("/app/collections?{v}")).await;
    assert_eq!(
        r.json(),
        json!({"collections": [{"collectionId": "audit"}, {"collectionId": "subledger:0"}]})
    );
    let r = admin.get(&format!("/node/tx?transaction_id={last}")).await;
    assert_eq!(r.json()["status"], "Committed");
    let anon = client(&node, &ids, None);
    let r = anon.get("/node/commit").await;
    assert_eq!(r.status, 200);
    assert!(r.json()["transaction_id"]
        .as_str()
        .unwrap()
        .starts_with("1."));

    // Graceful stop flushes; a restart serves the same ledger in a new view.
    node.shutdown().await;
    let node = start(&ids, dir.path(), false).await;
    let admin = client(&node, &ids, Some(&ids.admin));
    for (txid, coll, contents) in &written {
        let r = admin
            .get(&format!("/app/transactions/{txid}?{v}&collectionId={coll}"))
            .await;
        assert_eq!(r.json()["entry"]["contents"], contents.as_str());
        let r = admin
            .get(&format!("/app/transactions/{txid}/receipt?{v}"))
            .await;
        let resp: ReceiptResponse = serde_json::from_slice(&r.body).unwrap();
        verifier.verify_response(&resp, None).unwrap();
    }
    let r = admin
        .post(
            &format!("/app/transactions?{v}"),
            &json!({"contents": "after restart"}),
        )
        .await;
    assert!(
        r.transaction_id.unwrap().starts_with("2."),
        "new view after restart"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_bad_input_get_clear_errors() {
    let ids = ids();
    let dir = tempfile::tempdir().unwrap();
    let node = start(&ids, dir.path(), true).await;
    let v = "api-version=2022-05-13";
    let admin = client(&node, &ids, Some(&ids.admin));
    let reader = client(&node, &ids, Some(&ids.reader));
    let anon = client(&node, &ids, None);
    let stranger_id = generate_client_identity("stranger", Curve::P384).unwrap();
    let stranger = client(&node, &ids, Some(&stranger_id));
    let body = json!({"contents": "x"});
    let append = format!("/app/transactions?{v}");

    let code = |r: &covenant_client::HttpResponse| {
        r.json()["error"]["code"].as_str().unwrap_or("").to_string()
    };
    let r = anon.post(&append, &body).await;
    assert_eq!((r.status, code(&r).as_str()), (401, "Unauthorized"));
    let r = stranger.post(&append, &body).await;
    assert_eq!((r.status, code(&r).as_str()), (401, "Unauthorized"));
    let r = reader.post(&append, &body).await;
    assert_eq!((r.status, code(&r).as_str()), (403, "Forbidden"));
    let r = reader.get(&format!("/app/collections?{v}")).await;
    assert_eq!(r.status, 200);

    let r = admin.post("/app/transactions", &body).await;
    assert_eq!((r.status, code(&r).as_str()), (400, "QueryParameterError"));
    let r = admin
        .request_raw(
            "POST",
            &append,
            Some(b"{not json".to_vec()),
            "application/json",
        )
        .await
        .unwrap();
    assert_eq!((r.status, code(&r).as_str()), (400, "InvalidInput"));
    let r = admin.post(&append, &json!({"content": "typo"})).await;
    assert_eq!((r.status, code(&r).as_str()), (400, "InvalidInput"));
    let big = json!({"contents": "x".repeat(100 * 1024)});
    let r = admin.post(&append, &big).await;
    assert_eq!((r.status, code(&r).as_str()), (413, "PayloadTooLarge"));
    let r = admin
        .get(&format!("/app/transactions/not-a-txid/status?{v}"))
        .await;
    assert_eq!((r.status, code(&r).as_str()), (400, "InvalidTransactionId"));
    let r = admin
        .get(&format!("/app/transactions/7.999999/status?{v}"))
        .await;
    assert_eq!((r.status, code(&r).as_str()), (404, "InvalidTransactionId"));
    let r = admin.get(&format!("/app/transactions/7.999999?{v}")).await;
    assert_eq!((r.status, code(&r).as_str()), (404, "InvalidTransactionId"));
    let r = admin
        .get(&format!("/app/transactions/current?{v}&collectionId=none"))
        .await;
    assert_eq!(r.status, 404);
    let r = admin.get("/no/such/route").await;
    assert_eq!(r.status, 404);
    // Framework-level rejections come back in the same error shape.
    let r = admin
        .send("DELETE", &format!("/app/collections?{v}"), None)
        .await;
    assert_eq!((r.status, code(&r).as_str()), (405, "MethodNotAllowed"));
    let r = admin
        .get(&format!("/app/transactions/%FF%FE/status?{v}"))
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"].is_string(),
        "{}",
        String::from_utf8_lossy(&r.body)
    );

    // None of that disturbed the ledger: a write still commits.
    let r = admin.post(&append, &body).await;
    assert_eq!(r.status, 200);
    wait_committed(&admin, &r.transaction_id.unwrap()).await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_queries_page_through_one_collection() {
    let ids = ids();
    let dir = tempfile::tempdir().unwrap();
    let node = start(&ids, dir.path(), true).await;
    let admin = client(&node, &ids, Some(&ids.admin));
    let v = "api-version=2022-05-13";
    // 1100 entries in "big", interleaved with 10 in "small".
    let mut big = Vec::new();
    for i in 0..1100 {
        let coll = if i % 110 == 0 { "small" } else { "big" };
        let r = admin
            .post(
                &format!("/app/transactions?{v}&collectionId={coll}"),
                &json!({"contents": format!("{coll} {i}")}),
            )
            .await;
        if coll == "big" {
            big.push(r.transaction_id.unwrap());
        }
    }
    wait_committed(&admin, big.last().unwrap()).await;
    // Page through "big": exactly its entries, in order, 1000 then the rest.
    let mut seen = Vec::new();
    let mut link = format!("/app/transactions?{v}&collectionId=big");
    let mut pages = 0;
    loop {
        let r = admin.get(&link).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let j = r.json();
        assert_eq!(j["state"], "Ready");
        let entries = j["entries"].as_array().unwrap();
        assert!(entries.len() <= 1000);
        for e in entries {
            assert_eq!(e["collectionId"], "big");
            seen.push(e["transactionId"].as_str().unwrap().to_string());
        }
        pages += 1;
        match j.get("nextLink").and_then(|l| l.as_str()) {
            Some(l) => link = l.to_string(),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, big);
    // An inclusive sub-range.
    let (a, b) = (&big[10], &big[19]);
    let r = admin
        .get(&format!(
            "/app/transactions?{v}&collectionId=big&fromTransactionId={a}&toTransactionId={b}"
        ))
        .await;
    let got: Vec<_> = r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["transactionId"].clone())
        .collect();
    assert_eq!(got.len(), 10);
    assert_eq!(got[0], a.as_str());
    assert_eq!(got[9], b.as_str());
    // Collections page too: 1,001 collections come back in two pages, each once.
    for i in 0..1001 {
        admin
            .post(
                &format!("/app/transactions?{v}&collectionId=c{i:04}"),
                &json!({"contents": "x"}),
            )
            .await;
    }
    let mut names = Vec::new();
    let mut link = format!("/app/collections?{v}");
    loop {
        let j = admin.get(&link).await.json();
        names.extend(
            j["collections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["collectionId"].as_str().unwrap().to_string()),
        );
        match j.get("nextLink").and_then(|l| l.as_str()) {
            Some(l) => link = l.to_string(),
            None => break,
        }
    }
    assert_eq!(names.len(), 1001 + 2);
    let mut sorted = names.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len());
    // An unknown collection is an empty list, not an error.
    let r = admin
        .get(&format!("/app/transactions?{v}&collectionId=nope"))
        .await;
    assert_eq!(r.json()["entries"], json!([]));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_apis_and_the_role_matrix() {
    let ids = ids();
    let dir = tempfile::tempdir().unwrap();
    let node = start(&ids, dir.path(), true).await;
    let v = "api-version=2022-05-13";
    let admin = client(&node, &ids, Some(&ids.admin));
    let contributor_id = generate_client_identity("contributor", Curve::P384).unwrap();
    let fp = contributor_id.1.user_fingerprint();

    // v1: create as Contributor, read back; served at new api-versions too (ACL
    // redirects there; the preview SDK's README calls it).
    let r = admin
        .send(
            "PATCH",
            &format!("/app/users/{fp}?{v}"),
            Some(&json!({"assignedRole": "Contributor"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json(),
        json!({"assignedRole": "Contributor", "userId": fp})
    );
    let r = admin.get(&format!("/app/users/{fp}?{v}")).await;
    assert_eq!(r.json()["assignedRole"], "Contributor");
    let r = admin
        .get(&format!("/app/users/{fp}?api-version=2024-08-22-preview"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["assignedRole"], "Contributor");

    // ledgerUsers: PATCH adds roles; list shows everyone; unknown delete succeeds.
    let nv = "api-version=2024-08-22-preview";
    let r = admin
        .send(
            "PATCH",
            &format!("/app/ledgerUsers/{fp}?{nv}"),
            Some(&json!({"assignedRoles": ["Reader"]})),
        )
        .await;
    // The reply repeats the roles sent (as ACL's does); the user holds the union.
    assert_eq!(r.json(), json!({"assignedRoles": ["Reader"], "userId": fp}));
    let r = admin.get(&format!("/app/ledgerUsers/{fp}?{nv}")).await;
    assert_eq!(
        r.json(),
        json!({"assignedRoles": ["Reader", "Contributor"], "userId": fp})
    );
    let r = admin.get(&format!("/app/ledgerUsers?{nv}")).await;
    assert_eq!(r.json()["ledgerUsers"].as_array().unwrap().len(), 3);
    let r = admin
        .send("DELETE", &format!("/app/ledgerUsers/nobody?{nv}"), None)
        .await;
    assert_eq!(r.status, 204);

    // The role matrix: every route class x {no creds, unknown cert, Reader, Contributor, Administrator}.
    let stranger_id = generate_client_identity("stranger", Curve::P384).unwrap();
    let who: Vec<(&str, LedgerClient)> = vec![
        ("anonymous", client(&node, &ids, None)),
        ("unknown", client(&node, &ids, Some(&stranger_id))),
        ("reader", client(&node, &ids, Some(&ids.reader))),
        ("contributor", client(&node, &ids, Some(&contributor_id))),
        ("admin", client(&node, &ids, Some(&ids.admin))),
    ];
    let seed = admin
        .post(
            &format!("/app/transactions?{v}"),
            &json!({"contents": "seed"}),
        )
        .await
        .transaction_id
        .unwrap();
    wait_committed(&admin, &seed).await;
    // (method, path, body, minimum role: 0 reader, 1 contributor, 2 admin)
    let target = ids.reader.1.user_fingerprint();
    let routes: Vec<(&str, String, Option<serde_json::Value>, usize)> = vec![
        ("GET", format!("/app/transactions/{seed}?{v}"), None, 0),
        (
            "GET",
            format!("/app/transactions/{seed}/status?{v}"),
            None,
            0,
        ),
        (
            "GET",
            format!("/app/transactions/{seed}/receipt?{v}"),
            None,
            0,
        ),
        ("GET", format!("/app/transactions?{v}"), None, 0),
        ("GET", format!("/app/transactions/current?{v}"), None, 0),
        ("GET", format!("/app/collections?{v}"), None, 0),
        ("GET", format!("/app/enclaveQuotes?{v}"), None, 0),
        ("GET", format!("/app/governance/members?{v}"), None, 0),
        (
            "POST",
            format!("/app/transactions?{v}"),
            Some(json!({"contents": "m"})),
            1,
        ),
        ("GET", format!("/app/users/{target}?{v}"), None, 2),
        ("GET", format!("/app/ledgerUsers?{nv}"), None, 2),
        ("GET", format!("/app/ledgerUsers/{target}?{nv}"), None, 2),
    ];
    for (method, path, body, min) in &routes {
        for (i, (name, c)) in who.iter().enumerate() {
            let r = c.send(method, path, body.as_ref()).await;
            let expected = match i {
                0 | 1 => 401,
                n if n - 2 >= *min => 200,
                _ => 403,
            };
            assert_eq!(
                r.status,
                expected,
                "{name} {method} {path}: {}",
                String::from_utf8_lossy(&r.body)
            );
            if expected != 200 {
                assert!(
                    r.json()["error"]["code"].is_string(),
                    "error body for {name} {method} {path}"
                );
            }
        }
    }
    // The contributor, once deleted, is no longer a user.
    let r = admin
        .send("DELETE", &format!("/app/users/{fp}?{v}"), None)
        .await;
    assert_eq!(r.status, 204);
    let r = who[3].1.get(&format!("/app/collections?{v}")).await;
    assert_eq!(r.status, 401);
    node.shutdown().await;
}

/// Every route the OpenAPI document lists is served (none falls through to the
/// catch-all), and metrics count what was served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_exactly_served_routes_and_metrics_count() {
    let ids = ids();
    let dir = tempfile::tempdir().unwrap();
    let node = start(&ids, dir.path(), true).await;
    let admin = client(&node, &ids, Some(&ids.admin));
    let r = admin.get("/node/api").await;
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.0.0");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(
        paths
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum::<usize>(),
        covenant_node::openapi::ROUTES.len()
    );
    for (method, path, _, _) in covenant_node::openapi::ROUTES {
        let concrete = path
            .replace("{transactionId}", "1.1")
            .replace("{userId}", &ids.reader.1.user_fingerprint())
            .replace("{ledgerId}", "covenant-dev")
            .replace("{node_id}", &"0".repeat(64))
            .replace("{functionId}", "f1");
        let sep = if concrete.contains('?') { '&' } else { '?' };
        let url = format!("{concrete}{sep}api-version=2022-05-13&transaction_id=1.1");
        let body = match *method {
            "post" => Some(json!({"contents": "x"})),
            "patch" if path.contains("ledgerUsers") => Some(json!({"assignedRoles": ["Reader"]})),
            "patch" => Some(json!({"assignedRole": "Reader"})),
            _ => None,
        };
        let r = admin
            .send(&method.to_uppercase(), &url, body.as_ref())
            .await;
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert_ne!(
            message, "no such route",
            "{method} {url} is documented but not served"
        );
        assert!(r.status < 500, "{method} {url}: {}", r.status);
    }
    let r = admin.get("/node/metrics").await;
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(r.content_type.unwrap().starts_with("text/plain"));
    let served: u64 = text
        .lines()
        .find(|l| l.starts_with("covenant_requests_total{status=\"2xx\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(served >= 20, "{text}");
    assert!(text.contains("covenant_committed_seqno"));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_claims_and_tags() {
    let ids = ids();
    let dir = tempfile::tempdir().unwrap();
    let node = start(&ids, dir.path(), true).await;
    let admin = client(&node, &ids, Some(&ids.admin));
    let nv = "api-version=2024-12-09-preview";
    let r = admin
        .post(
            &format!("/app/transactions?{nv}&collectionId=c&tags=red,blue"),
            &json!({"contents": "claimed"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let t1 = r.transaction_id.unwrap();
    let r = admin
        .post(
            &format!("/app/transactions?{nv}&collectionId=c&tags=green"),
            &json!({"contents": "other"}),
        )
        .await;
    let t2 = r.transaction_id.unwrap();
    wait_committed(&admin, &t2).await;

    // The receipt reveals the claim; the claims digest in the leaf matches it.
    let r = admin
        .get(&format!("/app/transactions/{t1}/receipt?{nv}"))
        .await;
    let body = r.json();
    let claims: Vec<covenant_receipt::ApplicationClaim> =
        serde_json::from_value(body["applicationClaims"].clone()).expect("applicationClaims");
    assert_eq!(claims.len(), 1);
    let resp: ReceiptResponse = serde_json::from_value(body.clone()).unwrap();
    let verifier = ReceiptVerifier::new(ids.service.cert.clone());
    verifier.verify_response(&resp, Some(&claims)).unwrap();
    assert_ne!(
        resp.receipt.as_ref().unwrap().leaf_components.claims_digest,
        "00".repeat(32)
    );
    // An entry written with the old api-version has no claims.
    let r = admin
        .post(
            "/app/transactions?api-version=2022-05-13",
            &json!({"contents": "plain"}),
        )
        .await;
    let t3 = r.transaction_id.unwrap();
    wait_committed(&admin, &t3).await;
    let r = admin
        .get(&format!("/app/transactions/{t3}/receipt?{nv}"))
        .await;
    assert!(r.json().get("applicationClaims").is_none());

    // Tags come back and filter.
    let r = admin
        .get(&format!("/app/transactions/{t1}?{nv}&collectionId=c"))
        .await;
    assert_eq!(r.json()["entry"]["tags"], "red,blue");
    let r = admin
        .get(&format!("/app/transactions?{nv}&collectionId=c&tag=green"))
        .await;
    let entries = r.json()["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["transactionId"], t2.as_str());
    let r = admin
        .post(
            &format!("/app/transactions?{nv}&tags=,"),
            &json!({"contents": "x"}),
        )
        .await;
    assert_eq!(r.status, 400);
    node.shutdown().await;
}

/// A client that sends half a body and stalls gets 503 RequestTimeout, and the
/// node keeps serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_requests_time_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let ids = ids();
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(&ids, dir.path(), true, |c| {
        c.limits.request_timeout = Duration::from_millis(300);
    })
    .await;
    let (_, mut tls) = admin_tls(&node, &ids, vec![]).await;
    let head = "POST /app/transactions?api-version=2022-05-13 HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"contents\":";
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("RequestTimeout"), "{answer}");
    let admin = client(&node, &ids, Some(&ids.admin));
    let r = admin.get("/node/state").await;
    assert_eq!(r.status, 200);
    node.shutdown().await;
}

/// Graceful stop: idle keep-alive connections are closed, the node returns its final
/// committed seqno, and what was written is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_closes_idle_connections_and_flushes() {
    let ids = ids();
    let dir = tempfile::tempdir().unwrap();
    let node = start(&ids, dir.path(), true).await;
    let admin = client(&node, &ids, Some(&ids.admin));
    let mut conn = admin.connect().await.unwrap();
    let r = conn
        .request(
            "POST",
            "/app/transactions?api-version=2022-05-13",
            Some(&json!({"contents": "last words"})),
        )
        .await
        .unwrap();
    let txid: covenant_types::TxId = r.transaction_id.unwrap().parse().unwrap();
    let committed = node.shutdown().await;
    assert!(
        committed > txid.seqno,
        "the final flush signs and commits the last write"
    );
    assert!(
        conn.request("GET", "/node/ping", None).await.is_err(),
        "idle connection closed"
    );
    let engine = Engine::open(
        EngineConfig::new(dir.path()),
        ids.node.clone(),
        ids.secret.clone(),
    )
    .unwrap();
    assert_eq!(
        engine.status(txid).unwrap(),
        covenant_engine::TxStatus::Committed
    );
}

/// With `http2`, a client negotiating h2 by ALPN is served over HTTP/2 (mTLS included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_offered_when_enabled() {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;

    let ids = ids();
    let dir = tempfile::tempdir().unwrap();
    let node = start_with(&ids, dir.path(), true, |c| c.limits.http2 = true).await;
    let (port, tls) = admin_tls(&node, &ids, vec![b"h2".to_vec()]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method("POST")
        .uri(format!(
            "https://127.0.0.1:{port}/app/transactions?api-version=2022-05-13"
        ))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"contents\":\"over h2\"}")))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-ms-ccf-transaction-id"));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"collectionId":"subledger:0"}"#);
    // HTTP/1.1 clients are still served.
    let admin = client(&node, &ids, Some(&ids.admin));
    assert_eq!(admin.get("/node/ping").await.status, 200);
    node.shutdown().await;
}

/// JWKS fetched from an HTTPS URL (a private issuer's CA pinned); bad URLs refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_from_an_https_url() {
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

    // The identity provider: its own CA and TLS identity, serving one JWKS.
    let idp_ca = ServiceIdentity::generate(Curve::P384).unwrap();
    let idp =
        NodeIdentity::generate(&idp_ca, Curve::P384, &SubjectAltName::dev_defaults()).unwrap();
    let signing = SigningKeyPair::generate(Curve::P256).unwrap();
    let enc = EncodingKey::from_ec_der(&signing.to_pkcs8_der());
    let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("idp-1".into());
    let doc = serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap();
    let app = axum::Router::new().route(
        "/keys",
        axum::routing::get(move || async move { doc.clone() }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = covenant_node::tls::server_config(&idp, false).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(covenant_node::server::serve(
        listener,
        tls,
        app,
        covenant_node::ServerLimits::default(),
        async {
            let _ = stopped.await;
        },
    ));

    let url = format!("https://127.0.0.1:{port}/keys");
    let fetched = covenant_node::jwt::fetch_jwks(&url, Some(&idp_ca.cert))
        .await
        .unwrap();
    let issuer =
        covenant_node::jwt::JwtIssuer::from_jwks("https://idp.test", None, &fetched).unwrap();
    let auth = covenant_node::jwt::JwtAuth::new(vec![issuer]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("idp-1".into());
    let token = encode(
        &h,
        &json!({"iss": "https://idp.test", "exp": now + 60, "oid": "u1"}),
        &enc,
    )
    .unwrap();
    assert_eq!(
        auth.authenticate(&token, &covenant_kv::Store::new())
            .unwrap()
            .id,
        "u1"
    );

    let other_ca = ServiceIdentity::generate(Curve::P384).unwrap();
    assert!(covenant_node::jwt::fetch_jwks(&url, Some(&other_ca.cert))
        .await
        .is_err());
    assert!(
        covenant_node::jwt::fetch_jwks(&format!("http://127.0.0.1:{port}/keys"), None)
            .await
            .is_err()
    );
    assert!(covenant_node::jwt::fetch_jwks(
        &format!("https://127.0.0.1:{port}/nope"),
        Some(&idp_ca.cert)
    )
    .await
    .unwrap_err()
    .contains("404"));
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// CCF's node routes and the routes every CCF frontend serves, with CCF's shapes,
/// to anyone (no client certificate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccfs_node_and_common_routes() {
    let ids = ids();
    let dir = tempfile::tempdir().unwrap();
    let node = start(&ids, dir.path(), true).await;
    let anyone = client(&node, &ids, None);
    let get = |path: &'static str| {
        let c = &anyone;
        async move { c.get(path).await }
    };
    // Something committed first.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get("/app/commit").await.json()["transaction_id"] == "0.0" {
        assert!(std::time::Instant::now() < deadline, "nothing committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let commit = get("/app/commit").await;
    assert_eq!(commit.status, 200);
    let txid = commit.json()["transaction_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = anyone.get(&format!("/app/tx?transaction_id={txid}")).await;
    assert_eq!(
        r.json(),
        json!({"status": "Committed", "transaction_id": txid})
    );
    assert_eq!(get("/app/api").await.status, 200);

    let me = get("/node/network/nodes/self").await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["node_id"], json!(ids.node.node_id));
    assert_eq!(me.json()["status"], "Trusted");
    assert_eq!(get("/node/network/nodes/primary").await.json(), me.json());
    assert_eq!(get("/node/network/nodes/nobody").await.status, 404);
    assert_eq!(get("/node/primary").await.status, 200);
    assert_eq!(get("/node/backup").await.status, 404);
    assert_eq!(get("/node/ready/app").await.status, 204);
    assert_eq!(get("/node/ready/gov").await.status, 204);
    assert_eq!(get("/node/service/previous_identity").await.status, 404);
    let memory = get("/node/memory").await.json();
    assert!(
        memory["peak_allocated_heap_size"].as_u64().unwrap() > 0,
        "{memory}"
    );
    let js = get("/node/js_metrics").await.json();
    assert_eq!(js["max_execution_time"], json!(1000), "{js}");
    let own = get("/node/self_signed_certificate").await.json();
    let own = Certificate::from_pem(own["self_signed_certificate"].as_str().unwrap()).unwrap();
    own.verify_signed_by(&own).unwrap();
    assert_eq!(own.node_id(), ids.node.node_id);
    let endorsed = get("/node/endorsed_certificate").await.json();
    let endorsed =
        Certificate::from_pem(endorsed["endorsed_certificate"].as_str().unwrap()).unwrap();
    endorsed.verify_signed_by(&ids.service.cert).unwrap();

    // Governance reads, classic and current.
    let kv = get("/gov/kv/users/certs").await.json();
    assert!(
        kv[ids.admin.1.member_id()]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE"),
        "{kv}"
    );
    assert_eq!(get("/gov/jwt_keys/all").await.json(), json!({}));
    assert_eq!(get("/gov/commit").await.status, 200);
    let r = get("/gov/service/users").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "MissingApiVersionParameter");
    let r = anyone
        .get("/gov/service/users?api-version=2099-01-01")
        .await;
    assert_eq!(r.json()["error"]["code"], "UnsupportedApiVersionValue");
    let r = anyone
        .get("/gov/service/users?api-version=2024-07-01")
        .await;
    assert_eq!(
        r.json()["value"].as_array().unwrap().len(),
        2,
        "{:?}",
        r.json()
    );
    let r = anyone
        .get("/gov/service/javascript-app?api-version=2023-06-01-preview")
        .await;
    assert_eq!(r.status, 400, "javascript-app needs 2024-07-01");
    let r = anyone
        .post(
            "/gov/members/proposals:create?api-version=2024-07-01",
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 401, "an unsigned proposal");
    let _ = node.stop.send(());
    node.task.await.unwrap();
}

/// `current` shows the node's latest state, committed or not (CCF's and ACL's rule);
/// `committed=true` shows the latest *committed* entry, read back from the ledger
/// when the latest one is not committed yet. Signatures come only at shutdown here,
/// so what is committed is exactly what was written before the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_with_committed_true_never_shows_an_uncommitted_entry() {
    let ids = ids();
    let dir = tempfile::tempdir().unwrap();
    let v = "api-version=2022-05-13";
    let no_timer = |c: &mut NodeConfig| c.sig_ms_interval = 3_600_000;
    let current = |c: LedgerClient, query: &'static str| async move {
        let r = c
            .get(&format!(
                "/app/transactions/current?{v}&collectionId=c{query}"
            ))
            .await;
        (r.status, r.json())
    };
    let append = |c: LedgerClient, contents: &'static str| async move {
        let r = c
            .post(
                &format!("/app/transactions?{v}&collectionId=c"),
                &json!({"contents": contents}),
            )
            .await;
        assert_eq!(r.status, 200);
        r.transaction_id.unwrap()
    };

    let node = start_with(&ids, dir.path(), true, no_timer).await;
    let admin = client(&node, &ids, Some(&ids.admin));
    append(admin.clone(), "first").await;
    let (status, body) = current(admin.clone(), "&committed=true").await;
    assert_eq!(status, 404, "nothing of c is committed yet: {body}");
    assert_eq!(current(admin.clone(), "").await.1["contents"], "first");
    // A graceful stop signs and flushes: "first" is committed.
    node.shutdown().await;

    let node = start_with(&ids, dir.path(), false, no_timer).await;
    let admin = client(&node, &ids, Some(&ids.admin));
    let first = current(admin.clone(), "&committed=true").await.1;
    assert_eq!(first["contents"], "first");
    let second = append(admin.clone(), "second").await;
    let (status, body) = current(admin.clone(), "&committed=true").await;
    assert_eq!(status, 200);
    assert_eq!(body, first, "the uncommitted {second} must not show");
    let latest = current(admin.clone(), "").await.1;
    assert_eq!(latest["contents"], "second");
    assert_eq!(latest["transactionId"], second);
    let (status, body) = current(admin.clone(), "&committed=maybe").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "InvalidInput");
    node.shutdown().await;
}
