//! A real 3-node network (`covenant dev --nodes 3`: one OS process per node, real
//! TLS between them) under write load: kill -9 the primary, writes continue through
//! the others, the killed node restarts with `covenant node start` and catches up.
//! Every write seen Committed is on every node; then every node restarts at once
//! and the network resumes; every ledger audits; the committed prefixes are
//! identical entry for entry.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use covenant_client::LedgerClient;
use covenant_crypto::{read_pem_file, Certificate, SigningKeyPair};
use serde_json::{json, Value};

const API: &str = "api-version=2024-01-01";

fn free_ports(n: u16) -> u16 {
    for _ in 0..50 {
        let base = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if base > 65000 {
            continue;
        }
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no free port range");
}

fn start_and_wait(args: &[&str]) -> Child {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_covenant"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("exited before ready").unwrap();
        if line.contains("ready") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    child
}

fn term(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

fn pid_of(dir: &Path, node: u16) -> u32 {
    std::fs::read_to_string(dir.join(format!("node{node}/node.pid")))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

struct Net {
    dir: PathBuf,
    base: u16,
    clients: Vec<LedgerClient>,
}

impl Net {
    fn client(&self, node: u16) -> &LedgerClient {
        &self.clients[(node - 1) as usize]
    }

    async fn primary(&self, live: &[u16]) -> Option<u16> {
        for &n in live {
            if let Ok(r) = self
                .client(n)
                .request("GET", "/node/network/nodes", None)
                .await
            {
                let v = r.json();
                for node in v["nodes"].as_array().into_iter().flatten() {
                    if node["primary"] == json!(true) {
                        return node["node_id"].as_str().and_then(|s| s.parse().ok());
                    }
                }
            }
        }
        None
    }

    /// Appends through `via` (any node: backups forward), retrying until it lands.
    async fn append(&self, live: &[u16], contents: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut i = 0;
        loop {
            let via = live[i % live.len()];
            i += 1;
            let r = self
                .client(via)
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
    }

    async fn status(&self, node: u16, txid: &str) -> Option<String> {
        let r = self
            .client(node)
            .request(
                "GET",
                &format!("/app/transactions/{txid}/status?{API}"),
                None,
            )
            .await
            .ok()?;
        r.json()["state"].as_str().map(str::to_string)
    }

    async fn committed(&self, node: u16) -> u64 {
        let r = self.client(node).request("GET", "/node/commit", None).await;
        r.ok()
            .and_then(|r| r.transaction_id)
            .and_then(|t| t.split_once('.').and_then(|(_, s)| s.parse().ok()))
            .unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_primary_under_load_and_lose_nothing_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let base = free_ports(3);
    let dev = start_and_wait(&[
        "dev",
        "--nodes",
        "3",
        "--data-dir",
        dir.to_str().unwrap(),
        "--port",
        &base.to_string(),
        "--sig-ms-interval",
        "100",
    ]);
    let service =
        Certificate::from_pem(&read_pem_file(&dir.join("service_cert.pem")).unwrap()).unwrap();
    let cert = Certificate::from_pem(&read_pem_file(&dir.join("user0_cert.pem")).unwrap()).unwrap();
    let key =
        SigningKeyPair::from_pem(&read_pem_file(&dir.join("user0_privk.pem")).unwrap()).unwrap();
    let clients = (0..3)
        .map(|i| {
            LedgerClient::new(
                &format!("https://127.0.0.1:{}", base + i),
                &service,
                Some((&cert, &key)),
            )
            .unwrap()
        })
        .collect();
    let net = Net {
        dir: dir.clone(),
        base,
        clients,
    };
    let all = [1u16, 2, 3];
    let mut acked: Vec<(String, String)> = Vec::new();
    let mut seen_committed: Vec<(String, String)> = Vec::new();
    let mut restarted: Vec<Child> = Vec::new();
    let mut n = 0;
    for round in 0..2 {
        for _ in 0..15 {
            let contents = format!("entry {n}");
            n += 1;
            acked.push((net.append(&all, &contents).await, contents));
        }
        // What a client polling status sees Committed.
        let deadline = Instant::now() + Duration::from_secs(10);
        let last = acked.last().unwrap().0.clone();
        while net.status(1, &last).await.as_deref() != Some("Committed")
            && net.status(2, &last).await.as_deref() != Some("Committed")
        {
            assert!(Instant::now() < deadline, "{last} did not commit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (t, c) in &acked {
            if !seen_committed.iter().any(|(s, _)| s == t) {
                for node in all {
                    if net.status(node, t).await.as_deref() == Some("Committed") {
                        seen_committed.push((t.clone(), c.clone()));
                        break;
                    }
                }
            }
        }
        let primary = net.primary(&all).await.expect("a primary");
        let _ = Command::new("kill")
            .args(["-9", &pid_of(&dir, primary).to_string()])
            .status();
        let live: Vec<u16> = all.iter().copied().filter(|&x| x != primary).collect();
        // A new primary commits within a few seconds.
        let t0 = Instant::now();
        let after = net.append(&live, &format!("after kill {round}")).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while net.status(live[0], &after).await.as_deref() != Some("Committed") {
            assert!(
                Instant::now() < deadline,
                "no commit after the primary died"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "round {round}: killed node {primary}; a write committed {:?} later",
            t0.elapsed()
        );
        acked.push((after, format!("after kill {round}")));
        // The killed node restarts from its files and catches up.
        let child = Command::new(env!("CARGO_BIN_EXE_covenant"))
            .args(["node", "start", "--config"])
            .arg(dir.join(format!("node{primary}/node.toml")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(
            dir.join(format!("node{primary}/node.pid")),
            child.id().to_string(),
        )
        .unwrap();
        restarted.push(child);
    }
    // Everyone converges on one commit.
    let target = net.append(&all, "final").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in all {
        while net.status(node, &target).await.as_deref() != Some("Committed") {
            assert!(Instant::now() < deadline, "node {node} did not catch up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(seen_committed.len() >= 30, "{}", seen_committed.len());
    for (t, c) in &seen_committed {
        for node in all {
            let r = net
                .client(node)
                .request("GET", &format!("/app/transactions/{t}?{API}"), None)
                .await
                .unwrap();
            let v: Value = r.json();
            assert_eq!(v["entry"]["contents"], json!(c), "{t} on node {node}: {v}");
        }
    }
    let mut committed = u64::MAX;
    for node in all {
        committed = committed.min(net.committed(node).await);
    }
    // Stop everything gracefully.
    for node in all {
        term(pid_of(&dir, node));
    }
    term(dev.id());
    for mut c in restarted {
        let _ = c.wait();
    }
    let mut dev = dev;
    let _ = dev.wait();
    std::thread::sleep(Duration::from_millis(200));
    let _ = net.base;

    // Restart every node at once: the network resumes with nothing committed lost.
    let mut nodes: Vec<Child> = all
        .iter()
        .map(|node| {
            Command::new(env!("CARGO_BIN_EXE_covenant"))
                .args(["node", "start", "--config"])
                .arg(dir.join(format!("node{node}/node.toml")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let resumed = net.append(&all, "after restarting everything").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in all {
        while net.status(node, &resumed).await.as_deref() != Some("Committed") {
            assert!(
                Instant::now() < deadline,
                "node {node}: no commit after a full restart"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for (t, c) in seen_committed.iter().step_by(7) {
        let r = net
            .client(3)
            .request("GET", &format!("/app/transactions/{t}?{API}"), None)
            .await
            .unwrap();
        assert_eq!(
            r.json()["entry"]["contents"],
            json!(c),
            "{t} after the restart"
        );
    }
    for node in all {
        committed = committed.min(net.committed(node).await);
    }
    for c in &nodes {
        term(c.id());
    }
    for c in nodes.iter_mut() {
        assert!(c.wait().unwrap().success(), "a node did not stop cleanly");
    }
    // Every ledger audits, and the committed prefixes are identical.
    let mut prefixes = Vec::new();
    for node in all {
        let ledger = net.dir.join(format!("node{node}/ledger"));
        let o = Command::new(env!("CARGO_BIN_EXE_covenant"))
            .args(["ledger", "audit", "--quiet", "--service-cert"])
            .arg(dir.join("service_cert.pem"))
            .arg(&ledger)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "node {node}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let entries: Vec<_> = covenant_ledger::ChunkScanner::open(&ledger)
            .unwrap()
            .map(|e| e.unwrap().entry)
            .take(committed as usize)
            .collect();
        assert_eq!(entries.len() as u64, committed);
        prefixes.push(entries);
    }
    assert!(prefixes.windows(2).all(|w| w[0] == w[1]));
}
