//! Governance over HTTPS with three members: activation by ack, a `set_user`
//! proposal accepted by two votes (the user can then call the ledger API), rejected,
//! withdrawn and failed proposals that change nothing, and every kind of bad
//! request refused with a clear 4xx.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use covenant_client::LedgerClient;
use covenant_crypto::{
    generate_client_identity, sign_gov_sign1, Certificate, Curve, LedgerSecret, SigningKeyPair,
};
use covenant_engine::{Engine, EngineConfig};
use covenant_node::{add_member, set_constitution, BoundNode, NodeConfig, DEFAULT_CONSTITUTION};
use covenant_test_support::{serve, service_and_node, Requests};
use serde_json::{json, Value};

struct Member {
    key: SigningKeyPair,
    cert: Certificate,
}

impl Member {
    fn sign(&self, msg_type: &str, proposal_id: Option<&str>, payload: &Value) -> Vec<u8> {
        self.sign_at(msg_type, proposal_id, payload, now())
    }

    fn sign_at(
        &self,
        msg_type: &str,
        proposal_id: Option<&str>,
        payload: &Value,
        at: u64,
    ) -> Vec<u8> {
        let body = if payload.is_null() {
            Vec::new()
        } else {
            payload.to_string().into_bytes()
        };
        sign_gov_sign1(&self.key, &self.cert, msg_type, at, proposal_id, &body).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn post(c: &LedgerClient, path: &str, envelope: Vec<u8>) -> (u16, Value) {
    let r = c
        .request_raw("POST", path, Some(envelope), "application/cose")
        .await
        .unwrap();
    (r.status, r.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_govern_users_and_bad_requests_are_refused() {
    let (service, node) = service_and_node();
    let dir = tempfile::tempdir().unwrap();
    let mut engine = Engine::open(
        EngineConfig::new(dir.path()),
        node.clone(),
        Arc::new(LedgerSecret::generate().unwrap()),
    )
    .unwrap();
    let members: Vec<Member> = (0..3)
        .map(|i| {
            let (key, cert) = generate_client_identity(&format!("member{i}"), Curve::P384).unwrap();
            add_member(&mut engine, &cert, None).unwrap();
            Member { key, cert }
        })
        .collect();
    set_constitution(&mut engine, DEFAULT_CONSTITUTION).unwrap();
    covenant_node::set_service_opening(&mut engine).unwrap();
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    config.sig_ms_interval = 20;
    let serving = serve(
        BoundNode::bind(config, engine, &node, &service.cert)
            .await
            .unwrap(),
    );
    let endpoint = serving.endpoint.clone();
    // Governance requests need no TLS client certificate: the COSE signature speaks.
    let gov = LedgerClient::new(&endpoint, &service.cert, None).unwrap();

    // Members start Accepted: they may not propose until they ack the state digest.
    let user = generate_client_identity("user1", Curve::P384).unwrap();
    let set_user = json!({"actions": [{"name": "set_user", "args": {"cert": user.1.to_pem(), "user_data": {"assignedRoles": ["Contributor"]}}}]});
    let (status, body) = post(
        &gov,
        "/gov/proposals",
        members[0].sign("proposal", None, &set_user),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    for m in &members {
        // Before the service's first signature there is no digest to ack yet (503).
        let (status, body) = loop {
            let (status, body) = post(
                &gov,
                "/gov/ack/update_state_digest",
                m.sign("state_digest", None, &Value::Null),
            )
            .await;
            if status != 503 {
                break (status, body);
            }
            assert_eq!(body["error"]["code"], "NoSignatureYet", "{body}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(status, 200, "{body}");
        let digest = body["state_digest"].as_str().unwrap().to_string();
        let (status, body) = post(
            &gov,
            "/gov/ack",
            m.sign("ack", None, &json!({"state_digest": digest})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "Active");
    }
    // The service is Opening: the ledger API refuses everyone until the consortium
    // opens it (a caller without any credential is refused before that, at the edge).
    let current = |c: LedgerClient| async move {
        c.get("/app/transactions/current?api-version=2022-05-13")
            .await
    };
    assert_eq!(current(gov.clone()).await.status, 401);
    let with_cert = LedgerClient::new(&endpoint, &service.cert, Some((&user.1, &user.0))).unwrap();
    let r = current(with_cert).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "ServiceNotOpen");
    let network = gov.get("/node/network").await.json();
    assert_eq!(network["service_status"], "Opening");
    let open = json!({"actions": [{"name": "transition_service_to_open"}]});
    let (status, body) = post(
        &gov,
        "/gov/proposals",
        members[1].sign("proposal", None, &open),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let open_id = body["proposal_id"].as_str().unwrap().to_string();
    let yes_ballot =
        json!({"ballot": "export function vote(proposal, proposerId) { return true; }"});
    for m in &members[..2] {
        post(
            &gov,
            &format!("/gov/proposals/{open_id}/ballots"),
            m.sign("ballot", Some(&open_id), &yes_ballot),
        )
        .await;
    }
    let network = gov.get("/node/network").await.json();
    assert_eq!(network["service_status"], "Open");
    let listed = gov.get("/gov/members").await.json();
    assert_eq!(listed.as_object().unwrap().len(), 3);
    assert!(listed
        .as_object()
        .unwrap()
        .values()
        .all(|m| m["status"] == "Active"));

    // The user cannot call the ledger yet.
    let as_user = LedgerClient::new(&endpoint, &service.cert, Some((&user.1, &user.0))).unwrap();
    let append = |c: LedgerClient| async move {
        c.post(
            "/app/transactions?api-version=2022-05-13",
            &json!({"contents": "by user1"}),
        )
        .await
        .status
    };
    assert_eq!(append(as_user.clone()).await, 401);

    // Propose; two of three votes accept it; the user then writes.
    let (status, body) = post(
        &gov,
        "/gov/proposals",
        members[0].sign("proposal", None, &set_user),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "Open");
    let id = body["proposal_id"].as_str().unwrap().to_string();
    let yes = json!({"ballot": "export function vote(proposal, proposerId) { return true; }"});
    let ballots = format!("/gov/proposals/{id}/ballots");
    let (status, body) = post(&gov, &ballots, members[1].sign("ballot", Some(&id), &yes)).await;
    assert_eq!(
        (status, body["state"].clone()),
        (200, json!("Open")),
        "{body}"
    );
    let (status, body) = post(&gov, &ballots, members[2].sign("ballot", Some(&id), &yes)).await;
    assert_eq!(
        (status, body["state"].clone()),
        (200, json!("Accepted")),
        "{body}"
    );
    assert_eq!(append(as_user.clone()).await, 200);
    let got = gov.get(&format!("/gov/proposals/{id}")).await.json();
    assert_eq!(got["state"], "Accepted");
    assert_eq!(got["proposer_id"], json!(members[0].cert.member_id()));
    let actions = gov
        .get(&format!("/gov/proposals/{id}/actions"))
        .await
        .json();
    assert_eq!(actions, set_user);

    // Rejected and withdrawn proposals change nothing.
    let user2 = generate_client_identity("user2", Curve::P384).unwrap();
    let set_user2 = json!({"actions": [{"name": "set_user", "args": {"cert": user2.1.to_pem()}}]});
    let no = json!({"ballot": "export function vote() { return false; }"});
    let (_, body) = post(
        &gov,
        "/gov/proposals",
        members[0].sign("proposal", None, &set_user2),
    )
    .await;
    let rejected = body["proposal_id"].as_str().unwrap().to_string();
    for m in &members[1..] {
        post(
            &gov,
            &format!("/gov/proposals/{rejected}/ballots"),
            m.sign("ballot", Some(&rejected), &no),
        )
        .await;
    }
    let got = gov.get(&format!("/gov/proposals/{rejected}")).await.json();
    assert_eq!(got["state"], "Rejected");
    let (_, body) = post(
        &gov,
        "/gov/proposals",
        members[1].sign("proposal", None, &set_user2),
    )
    .await;
    let withdrawn = body["proposal_id"].as_str().unwrap().to_string();
    let path = format!("/gov/proposals/{withdrawn}/withdraw");
    let (status, _) = post(
        &gov,
        &path,
        members[0].sign("withdrawal", Some(&withdrawn), &Value::Null),
    )
    .await;
    assert_eq!(status, 403, "only the proposer withdraws");
    let (status, body) = post(
        &gov,
        &path,
        members[1].sign("withdrawal", Some(&withdrawn), &Value::Null),
    )
    .await;
    assert_eq!((status, body["state"].clone()), (200, json!("Withdrawn")));
    let (status, _) = post(
        &gov,
        &format!("/gov/proposals/{withdrawn}/ballots"),
        members[2].sign("ballot", Some(&withdrawn), &yes),
    )
    .await;
    assert_eq!(status, 409);
    let as_user2 = LedgerClient::new(&endpoint, &service.cert, Some((&user2.1, &user2.0))).unwrap();
    assert_eq!(append(as_user2.clone()).await, 401);

    // A bad ballot fails the proposal with a message; the service stays healthy.
    // (Signed requests identical to the second, as member0 proposing set_user2 again
    // now would be, count as replays: member2 proposes this one.)
    let (_, body) = post(
        &gov,
        "/gov/proposals",
        members[2].sign("proposal", None, &set_user2),
    )
    .await;
    let failed = body["proposal_id"].as_str().unwrap().to_string();
    let bad =
        json!({"ballot": "export function vote() { throw new Error('this ballot is broken'); }"});
    let (status, body) = post(
        &gov,
        &format!("/gov/proposals/{failed}/ballots"),
        members[1].sign("ballot", Some(&failed), &bad),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "Failed");
    assert!(
        body["failure"]["reason"]
            .as_str()
            .unwrap()
            .contains("this ballot is broken"),
        "{body}"
    );
    assert_eq!(append(as_user.clone()).await, 200);
    assert_eq!(append(as_user2).await, 401);

    // Refused: a replay, a non-member, a stale created_at, an unsigned request,
    // the wrong message type, an invalid proposal.
    let user3 = generate_client_identity("user3", Curve::P384).unwrap();
    let set_user3 = json!({"actions": [{"name": "set_user", "args": {"cert": user3.1.to_pem()}}]});
    let envelope = members[0].sign("proposal", None, &set_user3);
    let (status, _) = post(&gov, "/gov/proposals", envelope.clone()).await;
    assert_eq!(status, 200);
    let (status, body) = post(&gov, "/gov/proposals", envelope).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("RequestReplayed")),
        "{body}"
    );
    let (k, c) = generate_client_identity("stranger", Curve::P384).unwrap();
    let stranger = Member { key: k, cert: c };
    let (status, body) = post(
        &gov,
        "/gov/proposals",
        stranger.sign("proposal", None, &set_user2),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = post(
        &gov,
        "/gov/proposals",
        members[0].sign_at("proposal", None, &set_user2, now() - 3600),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("StaleCreatedAt")),
        "{body}"
    );
    let r = gov.post("/gov/proposals", &set_user2).await;
    assert_eq!(r.status, 401, "{}", r.json());
    let (status, body) = post(
        &gov,
        "/gov/proposals",
        members[0].sign("ack", None, &set_user2),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("InvalidCoseSign1")),
        "{body}"
    );
    let (status, body) = post(
        &gov,
        "/gov/proposals",
        members[0].sign(
            "proposal",
            None,
            &json!({"actions": [{"name": "launch_rockets"}]}),
        ),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("InvalidProposal")),
        "{body}"
    );
    let (status, _) = post(
        &gov,
        "/gov/proposals/0000/ballots",
        members[0].sign("ballot", Some("0000"), &yes),
    )
    .await;
    assert_eq!(status, 404);
    let constitution = gov.get("/gov/constitution").await;
    assert_eq!(
        String::from_utf8_lossy(&constitution.body),
        DEFAULT_CONSTITUTION
    );

    serving.shutdown().await;
    tokio::time::sleep(Duration::from_millis(10)).await;

    // The governance history is in the public ledger: the audit passes and lists it.
    let report = covenant_engine::audit_ledger(dir.path(), &service.cert, |_, _| {}).unwrap();
    let last_state = |id: &str| {
        report
            .governance
            .iter()
            .rev()
            .find(|g| g.proposal_id == id)
            .map(|g| g.state.clone())
    };
    assert_eq!(last_state(&id).as_deref(), Some("Accepted"));
    assert_eq!(last_state(&rejected).as_deref(), Some("Rejected"));
    assert_eq!(last_state(&withdrawn).as_deref(), Some("Withdrawn"));
    assert_eq!(last_state(&failed).as_deref(), Some("Failed"));
    assert!(report
        .governance
        .iter()
        .any(|g| g.proposal_id == id && g.state == "Open"));
}
