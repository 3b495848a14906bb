//! `covenant gov` and `covenant keygen` against `covenant dev`: dev activates its
//! member; a new user is proposed, accepted by the member's vote, and can append;
//! a withdrawn proposal changes nothing; errors are clear.

mod common;
use common::{covenant, dev, ok, stop};

use std::process::Output;

/// `covenant <extra>` as dev's member0 of the `dev` on `port`.
fn as_member0(dir: &std::path::Path, port: &str, extra: &[&str]) -> Output {
    common::as_member0(dir, &format!("https://127.0.0.1:{port}"), extra)
}

#[test]
fn a_member_adds_a_user_through_governance() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let (dev, port) = dev(&dir, &[]);
    let endpoint = format!("https://127.0.0.1:{port}");
    let sc = dir.join("service_cert.pem");
    let run = |extra: &[&str]| as_member0(&dir, &port, extra);
    // dev made member0 Active.
    let members = ok(run(&["gov", "members"]));
    assert!(members.contains("Active"), "{members}");
    assert!(ok(run(&["gov", "constitution"])).contains("export function resolve"));

    let keys = tmp.path().join("keys");
    ok(covenant(&[
        "keygen",
        "--name",
        "user1",
        "--enc",
        "--dir",
        keys.to_str().unwrap(),
    ]));
    assert!(keys.join("user1_enc_pubk.pem").exists());
    let again = covenant(&["keygen", "--name", "user1", "--dir", keys.to_str().unwrap()]);
    assert!(!again.status.success());
    let cert = std::fs::read_to_string(keys.join("user1_cert.pem")).unwrap();
    let proposal = tmp.path().join("proposal.json");
    std::fs::write(
        &proposal,
        serde_json::json!({"actions": [{"name": "set_user", "args": {"cert": cert, "user_data": {"assignedRoles": ["Contributor"]}}}]}).to_string(),
    )
    .unwrap();
    let out = ok(run(&[
        "gov",
        "propose",
        proposal.to_str().unwrap(),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "Open");
    let id = v["proposal_id"].as_str().unwrap().to_string();

    let append = || {
        covenant(&[
            "append",
            "by user1",
            "--endpoint",
            &endpoint,
            "--service-cert",
            sc.to_str().unwrap(),
            "--cert",
            keys.join("user1.pem").to_str().unwrap(),
        ])
    };
    assert!(!append().status.success(), "user1 is not a user yet");
    let out = ok(run(&["gov", "vote", &id, "--accept"]));
    assert!(out.contains("Accepted"), "{out}");
    ok(append());
    let shown = ok(run(&["gov", "proposal", &id]));
    assert!(
        shown.contains("Accepted") && shown.contains("set_user"),
        "{shown}"
    );

    // A withdrawn proposal: nothing changes, and voting on it is refused clearly.
    std::fs::write(
        &proposal,
        r#"{"actions":[{"name":"remove_user","args":{"user_id":"x"}}]}"#,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(run(&[
        "gov",
        "propose",
        proposal.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    let id2 = v["proposal_id"].as_str().unwrap().to_string();
    assert!(ok(run(&["gov", "withdraw", &id2])).contains("Withdrawn"));
    let o = run(&["gov", "vote", &id2, "--accept"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("ProposalNotOpen"));
    // A proposal the constitution refuses.
    std::fs::write(&proposal, r#"{"actions":[{"name":"launch"}]}"#).unwrap();
    let o = run(&["gov", "propose", proposal.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown action launch"));

    stop(dev);
}

#[test]
fn dev_creates_and_activates_k_members() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let (dev, port) = dev(&dir, &["--members", "3"]);
    let out = ok(covenant(&[
        "gov",
        "members",
        "--json",
        "--endpoint",
        &format!("https://127.0.0.1:{port}"),
        "--service-cert",
        dir.join("service_cert.pem").to_str().unwrap(),
        "--member-cert",
        dir.join("member2_cert.pem").to_str().unwrap(),
        "--member-key",
        dir.join("member2_privk.pem").to_str().unwrap(),
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let members = v.as_object().unwrap();
    assert_eq!(members.len(), 3, "{v}");
    assert!(members.values().all(|m| m["status"] == "Active"), "{v}");
    assert!(dir.join("member2_enc_pubk.pem").exists());
    stop(dev);
}

/// A `set_jwt_issuer` proposal makes the node trust the issuer's tokens at once (no
/// restart, no node configuration); `remove_jwt_issuer` stops it. Proposals list.
#[test]
fn a_jwt_issuer_set_by_governance_authenticates_its_users() {
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let (dev, port) = dev(&dir, &[]);
    let endpoint = format!("https://127.0.0.1:{port}");
    let sc = dir.join("service_cert.pem");
    let key = covenant_crypto::SigningKeyPair::generate(covenant_crypto::Curve::P256).unwrap();
    let enc = EncodingKey::from_ec_der(&key.to_pkcs8_der());
    let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("idp-1".into());
    let jwks = serde_json::to_value(JwkSet { keys: vec![jwk] }).unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("idp-1".into());
    let claims = serde_json::json!({"iss": "https://idp.test", "exp": exp, "oid": "alice-oid"});
    let token = encode(&h, &claims, &enc).unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let as_alice = || {
        covenant(&[
            "append",
            "by alice",
            "--endpoint",
            &endpoint,
            "--service-cert",
            sc.to_str().unwrap(),
            "--token",
            &format!("@{}", token_file.display()),
        ])
    };
    // user0 (Administrator) makes alice a Contributor by her oid.
    ok(covenant(&[
        "users",
        "set",
        "alice-oid",
        "--role",
        "Contributor",
        "--endpoint",
        &endpoint,
        "--service-cert",
        sc.to_str().unwrap(),
        "--cert",
        dir.join("user0.pem").to_str().unwrap(),
    ]));
    let refused = as_alice();
    assert!(!refused.status.success(), "the issuer is not trusted yet");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("invalid bearer token"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let proposal = tmp.path().join("proposal.json");
    let propose_and_accept = |body: serde_json::Value| {
        std::fs::write(&proposal, body.to_string()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&ok(as_member0(
            &dir,
            &port,
            &["gov", "propose", proposal.to_str().unwrap(), "--json"],
        )))
        .unwrap();
        let id = v["proposal_id"].as_str().unwrap().to_string();
        let out = ok(as_member0(&dir, &port, &["gov", "vote", &id, "--accept"]));
        assert!(out.contains("Accepted"), "{out}");
        // Two identical signed requests within a second would be a replay.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        id
    };
    let set = propose_and_accept(serde_json::json!({"actions": [{"name": "set_jwt_issuer",
        "args": {"issuer": "https://idp.test", "jwks": jwks}}]}));
    ok(as_alice());

    let removed = propose_and_accept(serde_json::json!({"actions": [{"name": "remove_jwt_issuer",
        "args": {"issuer": "https://idp.test"}}]}));
    assert!(!as_alice().status.success(), "the issuer was removed");

    // Both proposals are listed, oldest first; the state filter works.
    let v: serde_json::Value = serde_json::from_str(&ok(as_member0(
        &dir,
        &port,
        &["gov", "proposals", "--state", "Accepted", "--json"],
    )))
    .unwrap();
    let ids: Vec<&str> = v["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["proposal_id"].as_str().unwrap())
        .collect();
    let at = |id: &str| ids.iter().position(|i| *i == id).unwrap();
    assert!(at(&set) < at(&removed), "{v}");
    let open = ok(as_member0(
        &dir,
        &port,
        &["gov", "proposals", "--state", "Open"],
    ));
    assert!(open.contains("no proposals"), "{open}");
    let bad = as_member0(&dir, &port, &["gov", "proposals", "--state", "Sideways"]);
    assert!(!bad.status.success());
    stop(dev);
}
