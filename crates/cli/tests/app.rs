//! A JavaScript app deployed by governance and used end to end: `covenant gov
//! set-js-app examples/banking --accept` on `covenant dev`, then member-cert and
//! user-cert endpoints over real TLS, their 4xx answers, reads of the app's
//! writes, built-in routes still served, and `remove_js_app`.

mod common;
use common::{covenant, dev, ok, stop};

use std::path::{Path, PathBuf};

use covenant_client::LedgerClient;
use covenant_crypto::{Certificate, SigningKeyPair};
use serde_json::{json, Value};

fn identity(pem_file: &Path) -> (Certificate, SigningKeyPair) {
    let pem = std::fs::read_to_string(pem_file).unwrap();
    (
        Certificate::from_pem(&pem).unwrap(),
        SigningKeyPair::from_pem(&pem).unwrap(),
    )
}

async fn send(
    c: &LedgerClient,
    method: &str,
    path: String,
    body: Option<Value>,
) -> covenant_client::HttpResponse {
    c.request(method, &path, body.as_ref()).await.unwrap()
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
    let gov = |extra: &[&str]| {
        let mut args = extra.to_vec();
        args.extend([
            "--endpoint",
            &endpoint,
            "--service-cert",
            &files[0],
            "--member-cert",
            &files[1],
            "--member-key",
            &files[2],
        ]);
        covenant(&args)
    };
    let out = ok(gov(&[
        "gov",
        "set-js-app",
        example().to_str().unwrap(),
        "--accept",
    ]));
    assert!(out.contains("Accepted"), "{out}");

    let service = Certificate::from_pem(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    let member_cert = Certificate::from_pem(&std::fs::read_to_string(&files[1]).unwrap()).unwrap();
    let member_key =
        SigningKeyPair::from_pem(&std::fs::read_to_string(&files[2]).unwrap()).unwrap();
    let member = LedgerClient::new(&endpoint, &service, Some((&member_cert, &member_key))).unwrap();
    let (u0_cert, u0_key) = identity(&dir.join("user0.pem"));
    let user0 = LedgerClient::new(&endpoint, &service, Some((&u0_cert, &u0_key))).unwrap();
    let keys = tmp.path().join("keys");
    ok(covenant(&[
        "keygen",
        "--name",
        "user1",
        "--dir",
        keys.to_str().unwrap(),
    ]));
    let (u1_cert, u1_key) = identity(&keys.join("user1.pem"));
    let u1_id = u1_cert.user_fingerprint();
    let u0_id = u0_cert.user_fingerprint();
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
    let r = send(
        &member,
        "POST",
        format!("/app/accounts/{u0_id}/deposit"),
        Some(json!({"amount": 100})),
    )
    .await;
    assert_eq!((r.status, r.json()["balance"].clone()), (200, json!(100)));
    for (who, amount, status) in [
        (&u0_id, json!(-5), 400),
        (&"nobody".to_string(), json!(5), 404),
    ] {
        let r = send(
            &member,
            "POST",
            format!("/app/accounts/{who}/deposit"),
            Some(json!({"amount": amount})),
        )
        .await;
        assert_eq!(r.status, status, "{:?}", r.json());
        assert!(r.json()["error"]["code"].is_string());
    }
    // Users transfer and read their balances.
    let r = send(
        &user0,
        "POST",
        format!("/app/transfer/{u1_id}"),
        Some(json!({"amount": 30})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let over = send(
        &user0,
        "POST",
        format!("/app/transfer/{u1_id}"),
        Some(json!({"amount": 1000})),
    )
    .await;
    assert_eq!(over.status, 400);
    assert_eq!(over.json()["error"]["code"], json!("InsufficientFunds"));
    let balance = |c: LedgerClient| async move {
        let r = c.request("GET", "/app/balance", None).await.unwrap();
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
    let service =
        Certificate::from_pem(&std::fs::read_to_string(dir.join("service_cert.pem")).unwrap())
            .unwrap();
    let (m_cert, m_key) = (
        Certificate::from_pem(&std::fs::read_to_string(dir.join("member1_cert.pem")).unwrap())
            .unwrap(),
        SigningKeyPair::from_pem(&std::fs::read_to_string(dir.join("member1_privk.pem")).unwrap())
            .unwrap(),
    );
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
