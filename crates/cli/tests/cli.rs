//! The `covenant` binary end to end: real processes, real files.

mod common;
use common::{covenant, free_port, start_and_wait, text};

use std::path::Path;
use std::process::{Command, Output};

/// `covenant ledger audit <ledger> --service-cert <cert>`.
fn audit(ledger: &Path, cert: &Path) -> Output {
    covenant(&[
        "ledger",
        "audit",
        ledger.to_str().unwrap(),
        "--service-cert",
        cert.to_str().unwrap(),
    ])
}

/// `covenant verify-receipt <receipt> --service-cert <cert> <extra>`.
fn verify_receipt(receipt: &Path, cert: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "verify-receipt",
        receipt.to_str().unwrap(),
        "--service-cert",
        cert.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    covenant(&args)
}

fn demo(dir: &Path) {
    let o = covenant(&[
        "demo",
        "--data-dir",
        dir.to_str().unwrap(),
        "--entries",
        "300",
        "--sig-interval",
        "20",
        "--chunk-bytes",
        "8192",
        "--receipts",
        "4",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("committed through seqno"));
}

#[test]
fn demo_audit_and_verify_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    demo(&dir);
    let cert = dir.join("service_cert.pem");
    let ledger = dir.join("ledger");
    let o = audit(&ledger, &cert);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("audit ok: 315 entries, 15 signatures"),
        "{out}"
    );

    let receipts: Vec<_> = std::fs::read_dir(dir.join("receipts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with(".claims.json"))
        .collect();
    assert_eq!(receipts.len(), 4);
    for r in &receipts {
        let o = verify_receipt(r, &cert, &[]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("receipt verified"));
    }

    // The bare receipt object is accepted too, from standard input.
    let full: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&receipts[0]).unwrap()).unwrap();
    let bare = tmp.path().join("bare.json");
    std::fs::write(&bare, serde_json::to_vec(&full["receipt"]).unwrap()).unwrap();
    let o = verify_receipt(&bare, &cert, &[]);
    assert!(o.status.success(), "{}", text(&o));

    // Claims: the receipt with claims verifies against them; other claims fail.
    let claims = dir.join("receipts/1.1.claims.json");
    let r1 = dir.join("receipts/1.1.json");
    let o = verify_receipt(&r1, &cert, &["--claims", claims.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("claims match"));
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&claims).unwrap()).unwrap();
    c[0]["ledgerEntry"]["contents"] = "not what was written".into();
    let bad_claims = tmp.path().join("bad_claims.json");
    std::fs::write(&bad_claims, serde_json::to_vec(&c).unwrap()).unwrap();
    let o = verify_receipt(&r1, &cert, &["--claims", bad_claims.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("claims digest"), "{}", text(&o));

    // A tampered receipt: exit 1 with the reason.
    let mut t = full.clone();
    let wsd = t["receipt"]["leafComponents"]["writeSetDigest"]
        .as_str()
        .unwrap()
        .to_string();
    let flipped = format!(
        "{}{}",
        if wsd.starts_with('0') { "1" } else { "0" },
        &wsd[1..]
    );
    t["receipt"]["leafComponents"]["writeSetDigest"] = flipped.into();
    let tampered = tmp.path().join("tampered.json");
    std::fs::write(&tampered, serde_json::to_vec(&t).unwrap()).unwrap();
    let o = verify_receipt(&tampered, &cert, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("does NOT verify"), "{}", text(&o));

    // Running demo again resumes the same ledger in a new view.
    demo(&dir);
    let o = audit(&ledger, &cert);
    assert!(text(&o).contains("last transaction 2.630"), "{}", text(&o));
}

#[test]
fn audit_names_the_bad_transaction() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    demo(&dir);
    let ledger = dir.join("ledger");
    let committed = std::fs::read_dir(&ledger)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".committed"))
        .expect("a committed chunk");
    let mut bytes = std::fs::read(&committed).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&committed, &bytes).unwrap();
    let cert = dir.join("service_cert.pem");
    let o = audit(&ledger, &cert);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o);
    assert!(out.contains("audit FAILED at 1."), "{out}");
}

#[test]
fn bad_inputs_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.json");
    let cert = tmp.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let o = verify_receipt(&missing, &cert, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("service certificate"), "{}", text(&o));

    let dir = tmp.path().join("d");
    demo(&dir);
    let good_cert = dir.join("service_cert.pem");
    let o = verify_receipt(&missing, &good_cert, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("nope.json"), "{}", text(&o));
    let junk = tmp.path().join("junk.json");
    std::fs::write(&junk, "{\"receipt\": 5").unwrap();
    let o = verify_receipt(&junk, &good_cert, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("not JSON"), "{}", text(&o));

    let o = audit(&tmp.path().join("none"), &good_cert);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    let o = covenant(&["frobnicate"]);
    assert!(!o.status.success());
    let o = covenant(&["--help"]);
    assert!(o.status.success());
    assert!(text(&o).contains("verify-receipt"));
}

/// `covenant dev` as a real process, driven by the CLI client commands.
#[test]
fn dev_server_and_client_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let port = free_port();
    let server = start_and_wait(&[
        "dev",
        "--data-dir",
        dir.to_str().unwrap(),
        "--port",
        &port.to_string(),
        "--sig-ms-interval",
        "50",
    ]);
    // The files SPEC and README promise, private ones 0600.
    for (f, private) in [
        ("service_cert.pem", false),
        ("user0_cert.pem", false),
        ("user0_privk.pem", true),
        ("user0.pem", true),
        ("member0_cert.pem", false),
        ("member0_privk.pem", true),
        ("member0_enc_pubk.pem", false),
        ("member0_enc_privk.pem", true),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.join(f)).unwrap_or_else(|_| panic!("{f} missing"));
        if private {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f}");
        }
    }
    let endpoint = format!("https://127.0.0.1:{port}");
    let conn = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--endpoint".into(),
            endpoint.clone(),
            "--service-cert".into(),
            dir.join("service_cert.pem").to_string_lossy().into(),
            "--cert".into(),
            dir.join("user0.pem").to_string_lossy().into(),
        ]);
        v
    };
    let run = |args: Vec<String>| -> Output {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        covenant(&refs)
    };

    let o = run(conn(&["append", "first entry", "--wait", "--json"]));
    assert!(o.status.success(), "{}", text(&o));
    let appended: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(appended["state"], "Committed");
    let txid = appended["transactionId"].as_str().unwrap().to_string();
    let o = run(conn(&[
        "append",
        "second",
        "--collection",
        "audit",
        "--wait",
    ]));
    assert!(text(&o).contains("appended to audit as"), "{}", text(&o));

    let o = run(conn(&["get", &txid]));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "first entry");
    let o = run(conn(&["status", &txid]));
    assert!(text(&o).contains("Committed"));
    let o = run(conn(&["list", "--collection", "audit"]));
    assert!(text(&o).contains("\tsecond"), "{}", text(&o));
    let o = run(conn(&["collections"]));
    assert!(text(&o).contains("audit") && text(&o).contains("subledger:0"));
    let receipt_file = tmp.path().join("r.json");
    let o = run(conn(&[
        "receipt",
        &txid,
        "--verify",
        "--out",
        receipt_file.to_str().unwrap(),
    ]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("receipt verified"));
    // The saved receipt verifies offline too.
    let o = verify_receipt(&receipt_file, &dir.join("service_cert.pem"), &[]);
    assert!(o.status.success(), "{}", text(&o));

    let fp = "AA:".repeat(31) + "BB";
    let o = run(conn(&["users", "set", &fp, "--role", "Contributor"]));
    assert!(o.status.success(), "{}", text(&o));
    let o = run(conn(&["users", "list"]));
    assert!(text(&o).contains(&fp));
    let o = run(conn(&["users", "delete", &fp]));
    assert!(o.status.success(), "{}", text(&o));

    // Errors are the server's, readable, exit 1.
    let o = run(conn(&["status", "9.999999"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("404 InvalidTransactionId"),
        "{}",
        text(&o)
    );
    let o = run(conn(&["get", "garbage"]));
    assert!(
        text(&o).contains("400 InvalidTransactionId"),
        "{}",
        text(&o)
    );

    // Graceful stop: SIGTERM, exit 0, then the ledger audits clean.
    stop(server);
    let o = audit(&dir.join("ledger"), &dir.join("service_cert.pem"));
    assert!(o.status.success(), "{}", text(&o));
}

fn stop(mut child: std::process::Child) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(child.wait().unwrap().success());
}

/// `covenant node start --config`: users from the file, resume on restart.
#[test]
fn node_start_from_a_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, cert) =
        covenant_crypto::generate_client_identity("ops", covenant_crypto::Curve::P256).unwrap();
    std::fs::write(
        tmp.path().join("ops.pem"),
        format!("{}{}", cert.to_pem(), key.to_pem().as_str()),
    )
    .unwrap();
    std::fs::write(tmp.path().join("ops_cert.pem"), cert.to_pem()).unwrap();
    let port = free_port();
    let config = tmp.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\nlisten = \"127.0.0.1:{port}\"\nledger_id = \"prod-1\"\nsig_ms_interval = 50\n\
             secrets_at_rest = true\n\
             san = [\"ledger.example.test\"]\n\n[[users]]\ncert = \"ops_cert.pem\"\nroles = [\"Administrator\"]\n"
        ),
    )
    .unwrap();
    let endpoint = format!("https://127.0.0.1:{port}");
    let service_cert = tmp.path().join("data/service_cert.pem");
    let ops = tmp.path().join("ops.pem");
    let conn = |cmd: &[&str]| -> Output {
        let mut args: Vec<&str> = cmd.to_vec();
        args.extend([
            "--endpoint",
            &endpoint,
            "--service-cert",
            service_cert.to_str().unwrap(),
            "--cert",
            ops.to_str().unwrap(),
        ]);
        covenant(&args)
    };
    let node = start_and_wait(&["node", "start", "--config", config.to_str().unwrap()]);
    let o = conn(&["append", "from ops", "--wait", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let txid = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["transactionId"]
        .as_str()
        .unwrap()
        .to_string();
    stop(node);
    let node = start_and_wait(&["node", "start", "--config", config.to_str().unwrap()]);
    let o = conn(&["get", &txid]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "from ops",
        "{}",
        text(&o)
    );
    let o = conn(&["receipt", &txid, "--verify"]);
    assert!(o.status.success(), "{}", text(&o));
    stop(node);
    for f in [
        "ledger_secret.key",
        "service_key.pem",
        "node/node_enc_key.pem",
    ] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(tmp.path().join("data").join(f))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // By default a node keeps no secrets at rest: none is written, and a single
    // node (no network to get them back from) cannot restart; it says what to do.
    let memory = tmp.path().join("memory.toml");
    std::fs::write(
        &memory,
        format!("data_dir = \"mem\"\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let node = start_and_wait(&["node", "start", "--config", memory.to_str().unwrap()]);
    for f in [
        "ledger_secret.key",
        "service_key.pem",
        "node/node_enc_key.pem",
    ] {
        assert!(!tmp.path().join("mem").join(f).exists(), "{f}");
    }
    assert!(tmp.path().join("mem/service_cert.pem").exists());
    stop(node);
    let o = covenant(&["node", "start", "--config", memory.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("keeps no secrets at rest"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("covenant node recover"), "{}", text(&o));
    // A bad config is a clear error.
    std::fs::write(&config, "data_dir = \"d\"\nledger_type = \"secret\"\n").unwrap();
    let o = covenant(&["node", "start", "--config", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("ledger_type"), "{}", text(&o));
    std::fs::write(&config, "data_dir = \"d\"\nunknown_key = 1\n").unwrap();
    let o = covenant(&["node", "start", "--config", config.to_str().unwrap()]);
    assert!(text(&o).contains("unknown_key"), "{}", text(&o));
}

/// `covenant bench` runs end to end and reports every phase (a smoke test of the
/// tool; its figures are recorded in docs/PERFORMANCE.md, never asserted).
#[test]
fn bench_runs_and_reports() {
    let o = covenant(&[
        "bench",
        "--seconds",
        "0.3",
        "--connections",
        "2",
        "--sig-ms-interval",
        "20",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for phase in ["ceiling", "append", "read"] {
        assert!(
            report[phase]["rps"].as_f64().unwrap() > 0.0,
            "{phase}: {report}"
        );
        assert_eq!(report[phase]["errors"], 0, "{phase}: {report}");
    }
    assert_eq!(report["append"]["uncommitted_at_end"], 0, "{report}");
    assert!(report["append"]["commit_latency"]["p99_ms"].is_number());
    assert!(report["append_to_ceiling_ratio"].is_number());
}
