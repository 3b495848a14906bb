//! `covenant gov` and `covenant keygen` against `covenant dev`: dev activates its
//! member; a new user is proposed, accepted by the member's vote, and can append;
//! a withdrawn proposal changes nothing; errors are clear.

mod common;
use common::start_and_wait;

use std::process::{Command, Output};

fn covenant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_covenant"))
        .args(args)
        .output()
        .expect("run covenant")
}

fn ok(o: Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// `covenant dev` in `dir` on a free port, with `extra` options; returns it and the port.
fn dev(dir: &std::path::Path, extra: &[&str]) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut args = vec!["dev", "--data-dir", dir.to_str().unwrap(), "--port", &port];
    args.extend_from_slice(extra);
    (start_and_wait(&args), port)
}

/// Stops `dev` as Ctrl-C would; it must exit cleanly.
fn stop(mut dev: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status();
    assert!(dev.wait().unwrap().success());
}

#[test]
fn a_member_adds_a_user_through_governance() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let (dev, port) = dev(&dir, &[]);
    let endpoint = format!("https://127.0.0.1:{port}");
    let sc = dir.join("service_cert.pem");
    let conn = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--endpoint".into(),
            endpoint.clone(),
            "--service-cert".into(),
            sc.to_str().unwrap().into(),
            "--member-cert".into(),
            dir.join("member0_cert.pem").to_str().unwrap().into(),
            "--member-key".into(),
            dir.join("member0_privk.pem").to_str().unwrap().into(),
        ]);
        v
    };
    let run = |extra: &[&str]| {
        let args = conn(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        covenant(&refs)
    };
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
