//! Disaster recovery end to end, with real processes: a 3-node network with three
//! recovery members (threshold 2) writes private entries, rekeys, writes more;
//! every node is killed and every secret file deleted; `covenant node recover`
//! brings the service back from one node's ledger under a new identity; shares
//! are refused until the members confirm the identities, then refused when wrong,
//! from a member without a share, or twice; private reads are refused until the
//! second share opens the service; then every entry reads back, old receipts
//! verify against the new certificate through the service endorsements, two new
//! nodes join, a new entry commits on all three, and the ledger audits across the
//! recovery and the rekey. A ledger with a flipped byte is refused first, naming
//! the transaction, with nothing changed.

mod common;
use common::{covenant, dev_network, free_ports, pid_of, start_and_wait, term};

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use covenant_client::{LedgerClient, ReceiptVerifier};
use covenant_crypto::{read_pem_file, Certificate, SigningKeyPair};
use covenant_test_support::Requests;
use serde_json::{json, Value};

const API: &str = "api-version=2022-05-13";

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `covenant gov <args> --json` as `who` of `dir`, against `port`, pinning `cert`.
fn gov(dir: &Path, who: &str, port: u16, cert: &Path, args: &[&str]) -> Output {
    let pem = |f: String| dir.join(f).to_str().unwrap().to_string();
    let endpoint = format!("https://127.0.0.1:{port}");
    let mut all: Vec<String> = vec!["gov".into()];
    all.extend(args.iter().map(|s| s.to_string()));
    all.extend([
        "--json".into(),
        "--endpoint".into(),
        endpoint,
        "--service-cert".into(),
        cert.to_str().unwrap().to_string(),
        "--member-cert".into(),
        pem(format!("{who}_cert.pem")),
        "--member-key".into(),
        pem(format!("{who}_privk.pem")),
    ]);
    covenant(&all.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A proposal of one action by member0, accepted by member1's vote too (three
/// members: a majority is two). Retried while the network elects or commits.
fn govern(dir: &Path, port: u16, cert: &Path, action: Value) -> Value {
    let p = dir.join("proposal.json");
    std::fs::write(&p, json!({ "actions": [action] }).to_string()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let v: Value = loop {
        let o = gov(
            dir,
            "member0",
            port,
            cert,
            &["propose", p.to_str().unwrap(), "--accept"],
        );
        if o.status.success() {
            break serde_json::from_slice(&o.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "{}", out(&o));
        std::thread::sleep(Duration::from_millis(1100));
    };
    if v["state"] == "Accepted" {
        return v;
    }
    let id = v["proposal_id"].as_str().unwrap().to_string();
    let o = gov(dir, "member1", port, cert, &["vote", &id, "--accept"]);
    assert!(o.status.success(), "{}", out(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn client(dir: &Path, port: u16, service_cert: &Certificate) -> LedgerClient {
    let pem = |f: &str| read_pem_file(&dir.join(f)).unwrap();
    LedgerClient::new(
        &format!("https://127.0.0.1:{port}"),
        service_cert,
        Some((
            &Certificate::from_pem(&pem("user0_cert.pem")).unwrap(),
            &SigningKeyPair::from_pem(&pem("user0_privk.pem")).unwrap(),
        )),
    )
    .unwrap()
}

/// Appends through any of `clients` (backups forward), retrying until it lands.
async fn append(clients: &[LedgerClient], contents: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0.. {
        let r = clients[i % clients.len()]
            .request(
                "POST",
                &format!("/app/transactions?{API}"),
                Some(&json!({ "contents": contents })),
            )
            .await;
        if let Ok(r) = r {
            if r.status == 200 {
                return r.transaction_id.unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "append of {contents} never landed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!()
}

/// Waits until `c` serves `txid`'s receipt (it is committed there), and returns it.
async fn receipt(c: &LedgerClient, txid: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c
            .get(&format!("/app/transactions/{txid}/receipt?{API}"))
            .await;
        if r.status == 200 && r.json()["state"] == "Ready" {
            return r.json();
        }
        assert!(
            Instant::now() < deadline,
            "no receipt of {txid}: {}",
            r.json()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `recovery_share` message signed by `who`, posted to the classic route.
async fn post_share(dir: &Path, who: &str, c: &LedgerClient, share: &[u8]) -> (u16, Value) {
    let pem = |f: String| read_pem_file(&dir.join(f)).unwrap();
    let cert = Certificate::from_pem(&pem(format!("{who}_cert.pem"))).unwrap();
    let key = SigningKeyPair::from_pem(&pem(format!("{who}_privk.pem"))).unwrap();
    let body = json!({ "share": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, share) });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let msg = covenant_crypto::sign_gov_sign1(
        &key,
        &cert,
        "recovery_share",
        now,
        None,
        body.to_string().as_bytes(),
    )
    .unwrap();
    let r = c
        .request_raw("POST", "/gov/recovery_share", Some(msg), "application/cose")
        .await
        .unwrap();
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

fn flip_a_byte_in_the_middle(ledger: &Path) -> PathBuf {
    let mut chunks: Vec<PathBuf> = std::fs::read_dir(ledger)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("ledger_")
        })
        .collect();
    chunks.sort();
    let chunk = chunks[0].clone();
    let mut bytes = std::fs::read(&chunk).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&chunk, bytes).unwrap();
    chunk
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_lost_every_node_comes_back_from_one_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let base = free_ports(3);
    let (mut dev, reaper) = dev_network(&dir, base, &["--members", "3"]);
    let old_cert_path = dir.join("service_cert.pem");
    let old_cert = Certificate::from_pem(&read_pem_file(&old_cert_path).unwrap()).unwrap();
    let clients: Vec<LedgerClient> = (0..3).map(|i| client(&dir, base + i, &old_cert)).collect();

    // A member without an encryption key (it holds no share), and threshold 2.
    let o = covenant(&[
        "keygen",
        "--name",
        "keyless",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let keyless_pem = read_pem_file(&dir.join("keyless_cert.pem")).unwrap();
    let v = govern(
        &dir,
        base,
        &old_cert_path,
        json!({"name": "set_member", "args": {"cert": keyless_pem}}),
    );
    assert_eq!(v["state"], "Accepted", "{v}");
    let v = govern(
        &dir,
        base,
        &old_cert_path,
        json!({"name": "set_recovery_threshold", "args": {"recovery_threshold": 2}}),
    );
    assert_eq!(v["state"], "Accepted", "{v}");

    let mut written = Vec::new();
    for i in 0..6 {
        let c = format!("before the rekey {i}");
        written.push((append(&clients, &c).await, c));
    }
    let v = govern(
        &dir,
        base,
        &old_cert_path,
        json!({"name": "trigger_ledger_rekey"}),
    );
    assert_eq!(v["state"], "Accepted", "{v}");
    for i in 0..6 {
        let c = format!("after the rekey {i}");
        written.push((append(&clients, &c).await, c));
    }
    let last = written.last().unwrap().0.clone();
    let old_receipt = receipt(&clients[0], &written[0].0).await;
    receipt(&clients[0], &last).await;
    // Every node has it all before the disaster.
    for c in &clients {
        receipt(c, &last).await;
    }

    // The disaster: every node gone, every secret file with it.
    for n in 1..=3 {
        term(pid_of(&dir, n));
    }
    term(dev.id());
    let _ = dev.wait();
    std::thread::sleep(Duration::from_millis(500));
    drop(reaper);
    for f in ["ledger_secret.key", "service_key.pem"] {
        let _ = std::fs::remove_file(dir.join(f));
        for n in 1..=3 {
            let _ = std::fs::remove_file(dir.join(format!("node{n}")).join(f));
        }
    }

    // A ledger with a flipped byte: refused, naming the transaction, nothing moved.
    let corrupt = tmp.path().join("corrupt");
    copy_dir(&dir.join("node2"), &corrupt);
    flip_a_byte_in_the_middle(&corrupt.join("ledger"));
    let o = covenant(&[
        "node",
        "recover",
        "--config",
        corrupt.join("node.toml").to_str().unwrap(),
        "--previous-service-cert",
        old_cert_path.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let said = out(&o);
    // "... at <view>.<seqno>: <why>": the transaction is named.
    let names_a_txid = said.split("at ").skip(1).any(|rest| {
        let txid: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        txid.split_once('.')
            .is_some_and(|(v, s)| !v.is_empty() && !s.is_empty())
    });
    assert!(said.contains("does not verify") && names_a_txid, "{said}");
    eprintln!("a flipped byte: {said}");
    assert!(!corrupt.join("before-recovery").exists(), "{said}");
    assert!(corrupt.join("service_cert.pem").exists());

    // Recovery from node 1's ledger.
    let config = dir.join("node1/node.toml");
    let recovering = start_and_wait(&[
        "node",
        "recover",
        "--config",
        config.to_str().unwrap(),
        "--previous-service-cert",
        old_cert_path.to_str().unwrap(),
    ]);
    let recovering_pid = recovering.id();
    let reaper = common::Reaper::default();
    reaper.watch(recovering_pid);
    let new_cert_path = dir.join("node1/service_cert.pem");
    let new_cert = Certificate::from_pem(&read_pem_file(&new_cert_path).unwrap()).unwrap();
    assert_ne!(new_cert.der(), old_cert.der());
    let c1 = client(&dir, base, &new_cert);
    let r = c1
        .get(&format!("/app/transactions/{}?{API}", written[0].0))
        .await;
    assert_eq!(r.status, 503, "{}", r.json());
    assert_eq!(r.json()["error"]["code"], "ServiceNotOpen");
    let r = c1.get("/node/network").await;
    assert_eq!(r.json()["service_status"], "Recovering", "{}", r.json());
    // The new identity is what the node and its identity route hand out.
    let served = |v: &Value, field: &str| {
        Certificate::from_pem(v[field].as_str().unwrap_or_default())
            .map(|c| c.der().to_vec())
            .unwrap_or_default()
    };
    assert_eq!(served(&r.json(), "service_certificate"), new_cert.der());
    let r = c1.get("/ledgerIdentity/covenant-dev").await;
    assert_eq!(
        served(&r.json(), "ledgerTlsCertificate"),
        new_cert.der(),
        "{}",
        r.json()
    );

    // A share before the members confirm the identities: refused.
    let o = gov(
        &dir,
        "member0",
        base,
        &new_cert_path,
        &["share", "--submit"],
    );
    assert!(!o.status.success());
    assert!(
        out(&o).contains("ServiceNotWaitingForRecoveryShares"),
        "{}",
        out(&o)
    );
    let transition = |previous: &Certificate| {
        govern(
            &dir,
            base,
            &new_cert_path,
            json!({"name": "transition_service_to_open", "args": {
                "previous_service_identity": previous.to_pem(),
                "next_service_identity": new_cert.to_pem()}}),
        )
    };
    // The wrong previous identity fails the proposal.
    let v = transition(&new_cert);
    assert_eq!(v["state"], "Failed", "{v}");
    std::thread::sleep(Duration::from_millis(1100));
    let v = transition(&old_cert);
    assert_eq!(v["state"], "Accepted", "{v}");
    let o = gov(&dir, "member0", base, &new_cert_path, &["recovery-status"]);
    let status: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        status,
        json!({"status": "WaitingForRecoveryShares", "submitted_shares": 0, "threshold": 2})
    );

    // Refused, nothing kept: a wrong share, a member without a share.
    let (code, v) = post_share(&dir, "member0", &c1, &[7u8; 44]).await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (400, Some("InvalidRecoveryShare")),
        "{v}"
    );
    let (code, v) = post_share(&dir, "keyless", &c1, &[7u8; 44]).await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (403, Some("NotRecoveryMember")),
        "{v}"
    );
    let o = gov(&dir, "member0", base, &new_cert_path, &["recovery-status"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&o.stdout).unwrap()["submitted_shares"],
        0
    );

    // Member 0's share: one of two; the same again is refused; still nothing readable.
    let o = gov(
        &dir,
        "member0",
        base,
        &new_cert_path,
        &["share", "--submit"],
    );
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("1/2 recovery shares"), "{}", out(&o));
    let o = gov(
        &dir,
        "member0",
        base,
        &new_cert_path,
        &["share", "--submit"],
    );
    assert!(!o.status.success());
    assert!(out(&o).contains("ShareAlreadySubmitted"), "{}", out(&o));
    let r = c1
        .get(&format!("/app/transactions/{}?{API}", written[0].0))
        .await;
    assert_eq!(r.status, 503);
    // Member 2's share opens the service.
    let o = gov(
        &dir,
        "member2",
        base,
        &new_cert_path,
        &["share", "--submit"],
    );
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("2/2"), "{}", out(&o));
    let r = c1.get("/node/network").await;
    assert_eq!(r.json()["service_status"], "Open", "{}", r.json());

    // Everything written before the disaster reads back.
    for (t, c) in &written {
        let r = c1.get(&format!("/app/transactions/{t}?{API}")).await;
        assert_eq!(r.json()["entry"]["contents"], json!(c), "{t}: {}", r.json());
    }
    // Old receipts verify against the new certificate through the endorsements.
    let verifier = ReceiptVerifier::new(new_cert.clone());
    let again = receipt(&c1, &written[0].0).await;
    assert!(old_receipt["receipt"]["serviceEndorsements"]
        .as_array()
        .is_none_or(|a| a.is_empty()));
    assert_eq!(
        again["receipt"]["serviceEndorsements"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "{again}"
    );
    for (t, _) in &written {
        let r: covenant_receipt::ReceiptResponse =
            serde_json::from_value(receipt(&c1, t).await).unwrap();
        verifier.verify_response(&r, None).unwrap();
    }
    let receipt_file = tmp.path().join("old_receipt.json");
    std::fs::write(&receipt_file, again.to_string()).unwrap();
    let o = covenant(&[
        "verify-receipt",
        receipt_file.to_str().unwrap(),
        "--service-cert",
        new_cert_path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", out(&o));

    // Two new nodes join the recovered service; a new entry commits on all three.
    let mut joined = Vec::new();
    for (name, port) in [("node5", base + 1), ("node6", base + 2)] {
        let nd = dir.join(name);
        std::fs::create_dir_all(&nd).unwrap();
        let cfg = nd.join("node.toml");
        std::fs::write(
            &cfg,
            format!("data_dir = \".\"\nlisten = \"127.0.0.1:{port}\"\nsig_ms_interval = 100\n"),
        )
        .unwrap();
        joined.push(start_and_wait(&[
            "node",
            "join",
            "--config",
            cfg.to_str().unwrap(),
            "--target",
            &format!("https://127.0.0.1:{base}"),
            "--service-cert",
            new_cert_path.to_str().unwrap(),
            "--join-token",
            dir.join("join_token").to_str().unwrap(),
        ]));
        reaper.watch(joined.last().unwrap().id());
    }
    let all: Vec<LedgerClient> = (0..3).map(|i| client(&dir, base + i, &new_cert)).collect();
    let t = append(&all, "after the recovery").await;
    for c in &all {
        receipt(c, &t).await;
    }
    let r = all[2]
        .get(&format!("/app/transactions/{}?{API}", written[3].0))
        .await;
    assert_eq!(
        r.json()["entry"]["contents"],
        json!(written[3].1),
        "{}",
        r.json()
    );

    // Stop; the recovered ledger audits across the rekey and the recovery.
    term(recovering_pid);
    for mut c in joined {
        term(c.id());
        let _ = c.wait();
    }
    let mut recovering = recovering;
    let _ = recovering.wait();
    let o = covenant(&[
        "ledger",
        "audit",
        "--quiet",
        "--service-cert",
        new_cert_path.to_str().unwrap(),
        dir.join("node1/ledger").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", out(&o));
    // The ledger endorses the previous identity with the new service key (COSE,
    // CCF's previous_service_identity_endorsement), naming the epoch it covered.
    let mut endorsement = None;
    for e in covenant_ledger::ChunkScanner::open(&dir.join("node1/ledger")).unwrap() {
        let e = e.unwrap().entry;
        let ws = covenant_kv::TxEntry::decode(&e.payload)
            .unwrap()
            .public_write_set()
            .unwrap();
        if let Some(Some(row)) = ws.get(
            "public:ccf.internal.previous_service_identity_endorsement",
            b"0",
        ) {
            endorsement = Some(serde_json::from_slice::<Value>(row).unwrap());
        }
    }
    let row = endorsement.expect("no previous_service_identity_endorsement in the ledger");
    let cose = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        row["endorsement"].as_str().unwrap(),
    )
    .unwrap();
    let (key, epoch) =
        covenant_crypto::verify_previous_identity_endorsement(&cose, &new_cert).unwrap();
    assert_eq!(key, old_cert.spki_der());
    assert_eq!(epoch.start_txid.split('.').nth(1), Some("1"), "{row}");
    assert_eq!(row["endorsement_epoch_end"], json!(epoch.end_txid));
    assert!(covenant_crypto::verify_previous_identity_endorsement(&cose, &old_cert).is_err());
}
