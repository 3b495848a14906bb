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

/// dev's three members hold encryption keys: once the service is open each holds a
/// recovery share, fetched (anonymously, as CCF serves it) under both route forms
/// and decrypted by `covenant gov share --fetch` and by `openssl pkeyutl` alike. A
/// threshold above the members is refused at once; threshold 2 and
/// `trigger_recovery_shares_refresh` issue new shares.
#[test]
fn recovery_members_fetch_their_shares_and_the_threshold_is_enforced() {
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let (dev, port) = dev(&dir, &["--members", "3"]);
    let endpoint = format!("https://127.0.0.1:{port}");
    let file = |f: String| dir.join(f).to_str().unwrap().to_string();
    let as_member = |i: u32, extra: &[&str]| {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend([
            "--endpoint".into(),
            endpoint.clone(),
            "--service-cert".into(),
            file("service_cert.pem".into()),
            "--member-cert".into(),
            file(format!("member{i}_cert.pem")),
            "--member-key".into(),
            file(format!("member{i}_privk.pem")),
        ]);
        covenant(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let id = |i: u32| {
        let pem = std::fs::read_to_string(dir.join(format!("member{i}_cert.pem"))).unwrap();
        covenant_crypto::member_id(covenant_crypto::Certificate::from_pem(&pem).unwrap().der())
    };
    let curl = |path: &str| -> serde_json::Value {
        let o = Command::new("curl")
            .args([
                "-sS",
                "--fail",
                "--cacert",
                &file("service_cert.pem".into()),
            ])
            .arg(format!("{endpoint}{path}"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "curl {path}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let encrypted = |i: u32| {
        let classic = curl(&format!("/gov/encrypted_recovery_share/{}", id(i)));
        let current = curl(&format!(
            "/gov/recovery/encrypted-shares/{}?api-version=2024-07-01",
            id(i)
        ));
        assert_eq!(current["memberId"], id(i).as_str());
        assert_eq!(classic["encrypted_share"], current["encryptedShare"]);
        classic["encrypted_share"].as_str().unwrap().to_string()
    };
    // CCF's operators decrypt with openssl (RSA-OAEP, SHA-256).
    let openssl_decrypt = |i: u32, encrypted: &str| {
        let script = format!(
            "echo '{encrypted}' | openssl base64 -d -A | openssl pkeyutl -inkey '{}' -decrypt \
             -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 | openssl base64 -A",
            file(format!("member{i}_enc_privk.pem"))
        );
        let o = Command::new("sh")
            .args(["-c", &script])
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let before: Vec<String> = (0..3).map(encrypted).collect();
    for i in 0..3 {
        let share = ok(as_member(i, &["gov", "share", "--fetch"]));
        let share = share.trim();
        assert_eq!(share, openssl_decrypt(i, &before[i as usize]));
        assert_eq!(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, share)
                .unwrap()
                .len(),
            44
        );
    }
    // Not a member, or not a hex id.
    let o = Command::new("curl")
        .args(["-sS", "--cacert", &file("service_cert.pem".into())])
        .arg(format!(
            "{endpoint}/gov/encrypted_recovery_share/{}",
            "ab".repeat(32)
        ))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["code"], "ResourceNotFound", "{v}");
    let v = curl_status(
        &endpoint,
        &file("service_cert.pem".into()),
        "/gov/recovery/encrypted-shares/xyz?api-version=2024-07-01",
    );
    assert_eq!(v["error"]["code"], "InvalidResourceName", "{v}");

    let proposal = |name: &str, args: serde_json::Value| {
        let p = tmp.path().join(format!("{name}.json"));
        std::fs::write(
            &p,
            serde_json::json!({"actions": [{"name": name, "args": args}]}).to_string(),
        )
        .unwrap();
        p.to_str().unwrap().to_string()
    };
    // Above the three recovery members: refused when proposed, nothing recorded.
    let p = proposal(
        "set_recovery_threshold",
        serde_json::json!({"recovery_threshold": 4}),
    );
    let o = as_member(0, &["gov", "propose", &p, "--accept"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("above the 3 active recovery members"), "{err}");
    assert_eq!((0..3).map(encrypted).collect::<Vec<_>>(), before);
    // Threshold 2 (a majority of the three accepts): new shares for everyone.
    let p = proposal(
        "set_recovery_threshold",
        serde_json::json!({"recovery_threshold": 2}),
    );
    let v: serde_json::Value = serde_json::from_str(&ok(as_member(
        0,
        &["gov", "propose", &p, "--accept", "--json"],
    )))
    .unwrap();
    let pid = v["proposal_id"].as_str().unwrap().to_string();
    let v: serde_json::Value = serde_json::from_str(&ok(as_member(
        1,
        &["gov", "vote", &pid, "--accept", "--json"],
    )))
    .unwrap();
    assert_eq!(v["state"], "Accepted", "{v}");
    let after: Vec<String> = (0..3).map(encrypted).collect();
    assert!(before.iter().zip(&after).all(|(b, a)| b != a));
    let info = curl("/gov/service/info?api-version=2024-07-01");
    assert_eq!(info["configuration"]["recoveryThreshold"], 2);
    // A refresh: new shares again, the same members.
    let p = proposal("trigger_recovery_shares_refresh", serde_json::Value::Null);
    let v: serde_json::Value = serde_json::from_str(&ok(as_member(
        2,
        &["gov", "propose", &p, "--accept", "--json"],
    )))
    .unwrap();
    let pid = v["proposal_id"].as_str().unwrap().to_string();
    ok(as_member(0, &["gov", "vote", &pid, "--accept"]));
    let refreshed: Vec<String> = (0..3).map(encrypted).collect();
    assert!(after.iter().zip(&refreshed).all(|(a, r)| a != r));
    stop(dev);
}

/// GET `path` with curl, whatever the status, as JSON.
fn curl_status(endpoint: &str, cacert: &str, path: &str) -> serde_json::Value {
    let o = std::process::Command::new("curl")
        .args(["-sS", "--cacert", cacert])
        .arg(format!("{endpoint}{path}"))
        .output()
        .unwrap();
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A member's ballot runs before the node's locks: appends made while a slow
/// ballot computes are answered before the vote is, and the vote still counts.
#[test]
fn a_slow_ballot_does_not_hold_up_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let (dev, port) = dev(&dir, &[]);
    let endpoint = format!("https://127.0.0.1:{port}");
    let proposal = tmp.path().join("proposal.json");
    std::fs::write(
        &proposal,
        r#"{"actions":[{"name":"trigger_recovery_shares_refresh","args":{}}]}"#,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(as_member0(
        &dir,
        &port,
        &["gov", "propose", proposal.to_str().unwrap(), "--json"],
    )))
    .unwrap();
    let id = v["proposal_id"].as_str().unwrap().to_string();
    // 800 ms of computing, under the default 1 s limit.
    let ballot = tmp.path().join("slow_ballot.js");
    std::fs::write(
        &ballot,
        "export function vote(p, who) { const end = Date.now() + 800; while (Date.now() < end) {} return true; }",
    )
    .unwrap();
    let files = ["service_cert.pem", "member0_cert.pem", "member0_privk.pem"]
        .map(|f| dir.join(f).to_str().unwrap().to_string());
    let mut vote = std::process::Command::new(env!("CARGO_BIN_EXE_covenant"))
        .args(["gov", "vote", &id, "--ballot", ballot.to_str().unwrap()])
        .args(["--endpoint", &endpoint, "--service-cert", &files[0]])
        .args(["--member-cert", &files[1], "--member-key", &files[2]])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(250));
    let user0 = covenant_test_support::dev_client(&dir, port.parse().unwrap(), Some("user0"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for i in 0..3 {
        let body = serde_json::json!({ "contents": format!("beside a slow ballot {i}") });
        let r = runtime
            .block_on(user0.request(
                "POST",
                "/app/transactions?api-version=0.1-preview",
                Some(&body),
            ))
            .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert!(
        vote.try_wait().unwrap().is_none(),
        "the appends waited for the ballot"
    );
    let out = vote.wait_with_output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Accepted"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    stop(dev);
}
