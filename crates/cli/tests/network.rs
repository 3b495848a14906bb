//! A real 3-node network (`covenant dev --nodes 3`: one OS process per node, real
//! TLS between them) under write load: kill -9 the primary, writes continue through
//! the others, the killed node restarts with `covenant node start` and catches up.
//! Every write seen Committed is on every node; then every node restarts at once
//! and the network resumes; every ledger audits; the committed prefixes are
//! identical entry for entry.

mod common;
use common::{dev_network, free_ports, pid_of, start_and_wait, term, Reaper};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use covenant_client::LedgerClient;
use covenant_crypto::{read_pem_file, Certificate, SigningKeyPair};
use covenant_test_support::{dev_client, service_cert, Requests};
use serde_json::{json, Value};

const API: &str = "api-version=2022-05-13";

/// The tests of this file each run a network of 3-4 node processes; on a 2-core
/// machine two at once starve each other's timers (elections, partitions that take
/// effect late), so they take turns.
static ONE_NETWORK_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Net {
    dir: PathBuf,
    clients: Vec<LedgerClient>,
}

impl Net {
    /// Clients of user0 to the three nodes of the network in `dir`.
    fn open(dir: &Path, base: u16) -> (Net, Certificate) {
        Self::open_n(dir, base, 3, "user0")
    }

    /// Clients of `who` (user0, member0) to `n` nodes on ports `base..base+n`.
    fn open_n(dir: &Path, base: u16, n: u16, who: &str) -> (Net, Certificate) {
        let clients = (0..n)
            .map(|i| dev_client(dir, base + i, Some(who)))
            .collect();
        let net = Net {
            dir: dir.to_path_buf(),
            clients,
        };
        (net, service_cert(dir))
    }

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
                        return node["raft_id"].as_u64().map(|id| id as u16);
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

    /// CCF's view of a TxId (`/node/tx`): Unknown, Pending, Committed or Invalid.
    async fn node_tx(&self, node: u16, txid: &str) -> Option<String> {
        let r = self
            .client(node)
            .request("GET", &format!("/node/tx?transaction_id={txid}"), None)
            .await
            .ok()?;
        r.json()["status"].as_str().map(str::to_string)
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
    let _turn = ONE_NETWORK_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let base = free_ports(3);
    let (dev, reaper) = dev_network(&dir, base, &[]);
    let (net, service) = Net::open(&dir, base);
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
        // `covenant dev` says which of its nodes died, and how to restart it (the
        // first kill is always one of its own processes).
        if round == 0 {
            let said = format!("node{primary} (pid {}) exited", pid_of(&dir, primary));
            let deadline = Instant::now() + Duration::from_secs(5);
            while !common::printed_since_ready(dev.id())
                .iter()
                .any(|l| l.contains(&said))
            {
                assert!(Instant::now() < deadline, "dev did not report: {said}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
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
        reaper.watch(child.id());
        restarted.push(child);
    }
    // Everyone converges on one commit.
    let target = net.append(&all, "final").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in all {
        // `/node/tx` answers from the node itself (a backup forwards a ledger read
        // naming a TxId it does not know yet to the primary).
        while net.node_tx(node, &target).await.as_deref() != Some("Committed") {
            assert!(Instant::now() < deadline, "node {node} did not catch up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(seen_committed.len() >= 30, "{}", seen_committed.len());
    // Every node registered itself: node ids (hex SHA-256 of the key) are listed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = net.client(2).get("/node/network/nodes").await;
        let v = r.json();
        let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
        let ok = nodes.len() == 3
            && nodes.iter().all(|n| {
                n["status"] == json!("Trusted")
                    && n["node_id"].as_str().is_some_and(|s| s.len() == 64)
            })
            && nodes.iter().filter(|n| n["primary"] == json!(true)).count() == 1;
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "nodes not all registered: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (t, c) in &seen_committed {
        for node in all {
            let r = net
                .client(node)
                .get(&format!("/app/transactions/{t}?{API}"))
                .await;
            let v: Value = r.json();
            assert_eq!(v["entry"]["contents"], json!(c), "{t} on node {node}: {v}");
        }
    }
    // Receipts from any node verify against the one service certificate, and every
    // node gives the same receipt.
    let verifier = covenant_client::ReceiptVerifier::new(service.clone());
    for (t, _) in seen_committed.iter().step_by(10) {
        let mut receipts = Vec::new();
        for node in all {
            let r = net
                .client(node)
                .get(&format!("/app/transactions/{t}/receipt?{API}"))
                .await;
            let resp: covenant_receipt::ReceiptResponse = serde_json::from_slice(&r.body)
                .unwrap_or_else(|e| panic!("{t} on node {node}: {e}"));
            verifier
                .verify_response(&resp, None)
                .unwrap_or_else(|e| panic!("{t} on node {node}: {e}"));
            receipts.push(r.body);
        }
        assert!(receipts.windows(2).all(|w| w[0] == w[1]), "{t}");
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
    for c in &nodes {
        reaper.watch(c.id());
    }
    let resumed = net.append(&all, "after restarting everything").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in all {
        while net.node_tx(node, &resumed).await.as_deref() != Some("Committed") {
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
            .get(&format!("/app/transactions/{t}?{API}"))
            .await;
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

/// A TCP proxy for one direction of one node pair (`from` dials `to` through it);
/// `cut` refuses new connections and closes open ones.
struct Link {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

async fn link(to_port: u16) -> Link {
    use std::sync::atomic::Ordering;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = cut.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            if flag.load(Ordering::SeqCst) {
                continue;
            }
            let flag = flag.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to_port)).await
                else {
                    return;
                };
                let watch = async {
                    while !flag.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {},
                    _ = watch => {},
                }
            });
        }
    });
    Link { port, cut }
}

/// Links between three nodes, by (from, to).
type Links = std::collections::BTreeMap<(u16, u16), Link>;

/// A three-node network made by `covenant dev` in `dir` (identities, genesis), then
/// stopped and started again through proxies ([`start_proxied`]). Returns the base
/// port, the reaper of the node processes (keep it), the links and the nodes.
async fn proxied_network(
    dir: &Path,
    ticks: &[(u16, u64)],
) -> (u16, Reaper, Links, Vec<std::process::Child>) {
    let base = free_ports(3);
    let (mut dev, first_run) = dev_network(dir, base, &[]);
    term(dev.id());
    assert!(dev.wait().unwrap().success());
    drop(first_run);
    let reaper = Reaper::default();
    let (links, nodes) = start_proxied(dir, base, &reaper, ticks).await;
    (base, reaper, links, nodes)
}

/// Stops every node and checks each stopped cleanly.
fn stop_all(nodes: &mut [std::process::Child]) {
    for c in nodes.iter() {
        term(c.id());
    }
    for c in nodes.iter_mut() {
        let status = c.wait().unwrap();
        assert!(status.success(), "a node did not stop cleanly: {status}");
    }
}

/// Starts the three nodes of the network in `dir` (created by `covenant dev`, then
/// stopped) with every node-to-node link through a [`Link`]: node i reaches node j
/// through link (i, j). `ticks`: Raft tick (ms) of the nodes named, others keep the
/// default. Each node logs to `node<i>/partition.log`.
async fn start_proxied(
    dir: &Path,
    base: u16,
    reaper: &Reaper,
    ticks: &[(u16, u64)],
) -> (Links, Vec<std::process::Child>) {
    let mut links = std::collections::BTreeMap::new();
    for i in 1..=3u16 {
        for j in 1..=3u16 {
            if i != j {
                links.insert((i, j), link(base + j - 1).await);
            }
        }
    }
    let mut nodes = Vec::new();
    for i in 1..=3u16 {
        let config = dir.join(format!("node{i}/node.toml"));
        let text = std::fs::read_to_string(&config).unwrap();
        let mut out = String::new();
        for line in text.lines() {
            let mut line = line.to_string();
            for j in 1..=3u16 {
                if j != i && line.contains(&format!("id = {j},")) {
                    line = format!(
                        "  {{ id = {j}, address = \"127.0.0.1:{}\" }},",
                        links[&(i, j)].port
                    );
                }
            }
            out.push_str(&line);
            out.push('\n');
            if line.trim() == "[network]" {
                if let Some((_, ms)) = ticks.iter().find(|(n, _)| *n == i) {
                    out.push_str(&format!("tick_ms = {ms}\n"));
                }
            }
        }
        std::fs::write(&config, out).unwrap();
        // Logs kept for the diagnosis of a failure.
        let log = std::fs::File::create(dir.join(format!("node{i}/partition.log"))).unwrap();
        nodes.push(
            Command::new(env!("CARGO_BIN_EXE_covenant"))
                .args(["node", "start", "--config"])
                .arg(&config)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        reaper.watch(nodes.last().unwrap().id());
    }
    (links, nodes)
}

/// Partition: the primary is cut off from the other two (every node-to-node link
/// goes through a proxy). It keeps accepting writes it can never commit; the
/// majority elects a new primary and commits; after healing, the old primary rolls
/// back its suffix (those TxIds become Invalid) and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_primary_cannot_commit_and_converges_after_healing() {
    let _turn = ONE_NETWORK_AT_A_TIME.lock().await;
    use std::sync::atomic::Ordering;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let (base, _reaper, links, mut nodes) = proxied_network(&dir, &[]).await;
    let (net, _service) = Net::open(&dir, base);
    let all = [1u16, 2, 3];
    let before = net.append(&all, "before the partition").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while net.status(1, &before).await.as_deref() != Some("Committed") {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old = net.primary(&all).await.unwrap();
    for ((i, j), l) in &links {
        if *i == old || *j == old {
            l.cut.store(true, Ordering::SeqCst);
        }
    }
    // Let the proxies close the connections that were open.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The isolated primary still answers writes for a while, but cannot commit them.
    let mut orphans = Vec::new();
    for k in 0..5 {
        let r = net
            .client(old)
            .post(
                &format!("/app/transactions?{API}"),
                &json!({ "contents": format!("orphan {k}") }),
            )
            .await;
        if r.status == 200 {
            orphans.push(r.transaction_id.unwrap());
        }
    }
    assert!(
        !orphans.is_empty(),
        "the isolated primary refused every write at once"
    );
    let rest: Vec<u16> = all.iter().copied().filter(|&n| n != old).collect();
    let majority = tokio::select! {
        t = net.append(&rest, "on the majority side") => t,
        _ = tokio::time::sleep(Duration::from_secs(25)) => {
            for i in 1..=3 {
                let log = std::fs::read_to_string(dir.join(format!("node{i}/partition.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- node {i} (old primary {old}) ---");
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
            for n in all {
                eprintln!("node {n}: {:?}", net.nodes(n).await);
            }
            panic!("the majority side did not accept a write within 25 s");
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while net.status(rest[0], &majority).await.as_deref() != Some("Committed") {
        assert!(Instant::now() < deadline, "the majority did not commit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in &orphans {
        assert_ne!(net.status(old, t).await.as_deref(), Some("Committed"));
    }
    // Heal: the old primary rolls back and converges.
    for l in links.values() {
        l.cut.store(false, Ordering::SeqCst);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    // Asked of the old primary itself: `/app/transactions/{id}/status` would be
    // answered by the new primary while the old one does not know the TxId yet.
    while net.node_tx(old, &majority).await.as_deref() != Some("Committed") {
        assert!(
            Instant::now() < deadline,
            "the old primary did not converge"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in &orphans {
        for n in all {
            let st = net.node_tx(n, t).await;
            assert!(
                matches!(st.as_deref(), Some("Invalid") | Some("Unknown")),
                "{t} on node {n}: {st:?}"
            );
        }
    }
    stop_all(&mut nodes);
    for node in all {
        let o = Command::new(env!("CARGO_BIN_EXE_covenant"))
            .args(["ledger", "audit", "--quiet", "--service-cert"])
            .arg(dir.join("service_cert.pem"))
            .arg(net.dir.join(format!("node{node}/ledger")))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

/// `covenant gov <args> --json` against node `port`, signed with `{who}_cert.pem` /
/// `{who}_privk.pem` of `dir` (dev's member0, or user0 to show a non-member).
fn gov_cli(dir: &Path, port: u16, who: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_covenant"))
        .arg("gov")
        .args(args)
        .arg("--json")
        .arg("--endpoint")
        .arg(format!("https://127.0.0.1:{port}"))
        .arg("--service-cert")
        .arg(dir.join("service_cert.pem"))
        .arg("--member-cert")
        .arg(dir.join(format!("{who}_cert.pem")))
        .arg("--member-key")
        .arg(dir.join(format!("{who}_privk.pem")))
        .output()
        .unwrap()
}

/// A proposal of one action by member0, accepted by its vote (dev's consortium is
/// member0 alone); retried while a configuration change commits.
fn govern(dir: &Path, port: u16, action: Value) -> Value {
    let proposal = dir.join("proposal.json");
    std::fs::write(&proposal, json!({ "actions": [action] }).to_string()).unwrap();
    let o = gov_cli(
        dir,
        port,
        "member0",
        &["propose", proposal.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = v["proposal_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = gov_cli(dir, port, "member0", &["vote", &id, "--accept"]);
        if o.status.success() {
            return serde_json::from_slice(&o.stdout).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Identical signed requests within one second are replays: wait a second.
        std::thread::sleep(Duration::from_millis(1100));
    }
}

/// The configuration of a node that joins the network on `port`.
fn joiner_config(dir: &Path, name: &str, port: u16) -> PathBuf {
    let nd = dir.join(name);
    std::fs::create_dir_all(&nd).unwrap();
    let config = nd.join("node.toml");
    std::fs::write(
        &config,
        format!("data_dir = \".\"\nlisten = \"127.0.0.1:{port}\"\nsig_ms_interval = 100\n"),
    )
    .unwrap();
    config
}

fn join_args<'a>(config: &'a Path, target: &'a str, service_cert: &'a Path) -> Vec<&'a str> {
    vec![
        "node",
        "join",
        "--config",
        config.to_str().unwrap(),
        "--target",
        target,
        "--service-cert",
        service_cert.to_str().unwrap(),
    ]
}

impl Net {
    /// `/node/network/nodes` as seen by `node`.
    async fn nodes(&self, node: u16) -> Vec<Value> {
        match self
            .client(node)
            .request("GET", "/node/network/nodes", None)
            .await
        {
            Ok(r) => r.json()["nodes"].as_array().cloned().unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Waits until `node` lists a node with `raft_id` (or `node_id`) matching `f`.
    async fn wait_node(&self, node: u16, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(n) = self.nodes(node).await.into_iter().find(&f) {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "node {node} never listed {what}: {:?}",
                self.nodes(node).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_committed_on(&self, nodes: &[u16], txid: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for &n in nodes {
            while self.status(n, txid).await.as_deref() != Some("Committed") {
                assert!(
                    Instant::now() < deadline,
                    "{txid} not committed on node {n}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    async fn receipt(&self, node: u16, txid: &str) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self
                .client(node)
                .get(&format!("/app/transactions/{txid}/receipt?{API}"))
                .await;
            if r.status == 200 && r.json()["state"] == json!("Ready") {
                return r.body;
            }
            assert!(
                Instant::now() < deadline,
                "no receipt of {txid} on node {node}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn audit(ledger: &Path, service_cert: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_covenant"))
        .args(["ledger", "audit", "--quiet", "--service-cert"])
        .arg(service_cert)
        .arg(ledger)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}: {}",
        ledger.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// First seqno of a ledger directory (from its chunk file names).
fn first_chunk_seqno(ledger: &Path) -> u64 {
    std::fs::read_dir(ledger)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().ok()?;
            let rest = name.strip_prefix("ledger_")?;
            rest.split(['-', '.']).next()?.parse::<u64>().ok()
        })
        .min()
        .unwrap()
}

/// A fourth node joins a running 3-node network with `covenant node join` (through
/// a backup, which redirects to the primary), starts from a snapshot instead of the
/// whole ledger, becomes a voter, serves reads (history before its snapshot through
/// the primary) and receipts identical to the others', survives the loss of the
/// primary with the others; then a member retires it and the network goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_from_a_snapshot_votes_and_retires() {
    let _turn = ONE_NETWORK_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let base = free_ports(4);
    let (dev, reaper) = dev_network(&dir, base, &[]);
    let (net, service) = Net::open_n(&dir, base, 4, "user0");
    let three = [1u16, 2, 3];
    let mut before = Vec::new();
    for i in 0..40 {
        let c = format!("before join {i}");
        before.push((net.append(&three, &c).await, c));
    }
    net.wait_committed_on(&three, &before.last().unwrap().0)
        .await;

    // Join through a backup: it answers with a redirect to the primary.
    let primary = net.primary(&three).await.unwrap();
    let backup = three.iter().copied().find(|&n| n != primary).unwrap();
    let config = joiner_config(&dir, "node4", base + 3);
    let target = format!("https://127.0.0.1:{}", base + backup - 1);
    let service_cert = dir.join("service_cert.pem");
    let mut joiner = start_and_wait(&join_args(&config, &target, &service_cert));
    reaper.watch(joiner.id());
    let row = net
        .wait_node(1, "node 4 as a voter", |n| {
            n["raft_id"] == json!(4)
                && n["status"] == json!("Trusted")
                && n["consensus_role"] == json!("Voter")
        })
        .await;
    let node4_id = row["node_id"].as_str().unwrap().to_string();
    assert_eq!(node4_id.len(), 64);
    // It answers for the network's ledger id, which it learned when it joined.
    let r = net.client(4).get("/ledgerIdentity/covenant-dev").await;
    assert_eq!(r.status, 200, "{}", r.json());
    // It started from a snapshot: its ledger does not begin at seqno 1.
    let node4_ledger = dir.join("node4/ledger");
    let first = first_chunk_seqno(&node4_ledger);
    assert!(first > 1, "node 4 replayed the whole ledger");
    assert!(dir
        .join("node4/snapshots")
        .read_dir()
        .unwrap()
        .next()
        .is_some());

    let four = [1u16, 2, 3, 4];
    let mut after = Vec::new();
    for i in 0..20 {
        let c = format!("after join {i}");
        // Through node 4 too (it forwards writes to the primary).
        after.push((net.append(&[4, 1, 2, 3], &c).await, c));
    }
    net.wait_committed_on(&four, &after.last().unwrap().0).await;
    // Node 4 answers for everything: its own ledger after the snapshot, history
    // before it through the primary; its receipts are the others' byte for byte.
    for (t, c) in before.iter().step_by(9).chain(after.iter().step_by(5)) {
        let r = net
            .client(4)
            .get(&format!("/app/transactions/{t}?{API}"))
            .await;
        assert_eq!(
            r.json()["entry"]["contents"],
            json!(c),
            "{t} on node 4: {}",
            r.json()
        );
    }
    let verifier = covenant_client::ReceiptVerifier::new(service.clone());
    for (t, _) in after.iter().step_by(6) {
        let mine = net.receipt(4, t).await;
        let resp: covenant_receipt::ReceiptResponse = serde_json::from_slice(&mine).unwrap();
        verifier.verify_response(&resp, None).unwrap();
        assert_eq!(mine, net.receipt(1, t).await, "{t}");
    }

    // Four voters: losing the primary leaves a majority of three.
    let primary = net.primary(&four).await.unwrap();
    let pid = if primary == 4 {
        joiner.id()
    } else {
        pid_of(&dir, primary)
    };
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    let live: Vec<u16> = four.iter().copied().filter(|&n| n != primary).collect();
    let t = net.append(&live, "with a primary down").await;
    net.wait_committed_on(&live, &t).await;
    let config_of = |n: u16| {
        if n == 4 {
            config.clone()
        } else {
            dir.join(format!("node{n}/node.toml"))
        }
    };
    let restarted = Command::new(env!("CARGO_BIN_EXE_covenant"))
        .args(["node", "start", "--config"])
        .arg(config_of(primary))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    reaper.watch(restarted.id());
    net.wait_committed_on(&[primary], &t).await;
    // The joined node restarts from its own files (snapshot + suffix), like any node.
    let mut restarted_joiner = None;
    if primary != 4 {
        term(joiner.id());
        assert!(joiner.wait().unwrap().success());
        let c = start_and_wait(&["node", "start", "--config", config.to_str().unwrap()]);
        reaper.watch(c.id());
        restarted_joiner = Some(c);
        let t = net.append(&four, "after node 4 restarted").await;
        net.wait_committed_on(&four, &t).await;
    }
    assert_eq!(first_chunk_seqno(&node4_ledger), first);

    // Only members govern: a user's signed proposal is refused.
    let proposal = dir.join("retire4.json");
    std::fs::write(
        &proposal,
        json!({"actions": [{"name": "remove_node", "args": {"node_id": node4_id}}]}).to_string(),
    )
    .unwrap();
    let o = gov_cli(
        &dir,
        base,
        "user0",
        &["propose", proposal.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The consortium retires node 4 with a remove_node proposal (through any node;
    // if node 4 is the primary it first hands over, and the vote is retried).
    let v = govern(
        &dir,
        base + 1,
        json!({"name": "remove_node", "args": {"node_id": node4_id}}),
    );
    assert_eq!(v["state"], json!("Accepted"), "{v}");
    net.wait_node(1, "node 4 retired", |n| {
        n["node_id"] == json!(node4_id)
            && n["status"] == json!("Retired")
            && n["consensus_role"] == json!("None")
    })
    .await;
    // Its certificate, though endorsed, no longer passes the node checks.
    let node4 = {
        let pem = |f: &str| read_pem_file(&dir.join("node4/node").join(f)).unwrap();
        LedgerClient::new(
            &format!("https://127.0.0.1:{base}"),
            &service,
            Some((
                &Certificate::from_pem(&pem("node_cert.pem")).unwrap(),
                &SigningKeyPair::from_pem(&pem("node_key.pem")).unwrap(),
            )),
        )
        .unwrap()
    };
    let r = node4
        .request_raw(
            "GET",
            "/internal/snapshot",
            None,
            "application/octet-stream",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    let t = net.append(&three, "after retiring node 4").await;
    net.wait_committed_on(&three, &t).await;
    let r = net.client(1).get("/node/commit").await;
    assert_eq!(r.status, 200);

    // Stop everything; every ledger audits (node 4's from its snapshot) and all
    // agree entry for entry where they overlap.
    let mut committed = u64::MAX;
    for node in three {
        committed = committed.min(net.committed(node).await);
    }
    let node4_committed = net.committed(4).await;
    for node in three {
        term(pid_of(&dir, node));
    }
    term(restarted.id());
    term(joiner.id());
    term(dev.id());
    for mut c in [dev, restarted, joiner].into_iter().chain(restarted_joiner) {
        term(c.id());
        let _ = c.wait();
    }
    std::thread::sleep(Duration::from_millis(500));
    for node in three {
        audit(&dir.join(format!("node{node}/ledger")), &service_cert);
    }
    let report = audit(&node4_ledger, &service_cert);
    assert!(report.contains("snapshot"), "{report}");
    let scan = |ledger: &Path, upto: u64| -> Vec<covenant_ledger::Entry> {
        covenant_ledger::ChunkScanner::open(ledger)
            .unwrap()
            .map(|e| e.unwrap().entry)
            .take_while(|e| e.txid.seqno.0 <= upto)
            .collect()
    };
    let reference = scan(&dir.join("node1/ledger"), committed);
    for node in [2u16, 3] {
        assert_eq!(
            scan(&dir.join(format!("node{node}/ledger")), committed),
            reference
        );
    }
    let mine = scan(&node4_ledger, node4_committed.min(committed));
    assert_eq!(mine.first().map(|e| e.txid.seqno.0), Some(first));
    let theirs: Vec<_> = reference
        .into_iter()
        .filter(|e| e.txid.seqno.0 >= first && e.txid.seqno.0 <= node4_committed)
        .collect();
    assert_eq!(mine, theirs);
}

/// With `--join-policy pending` a joining node waits, outside the configuration,
/// until a member trusts it; then it catches up and commits like the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_node_waits_until_a_member_trusts_it() {
    let _turn = ONE_NETWORK_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let base = free_ports(4);
    let (dev, reaper) = dev_network(&dir, base, &["--join-policy", "pending"]);
    let (net, _) = Net::open_n(&dir, base, 4, "user0");
    let three = [1u16, 2, 3];
    let t = net.append(&three, "before").await;
    net.wait_committed_on(&three, &t).await;
    let config = joiner_config(&dir, "node4", base + 3);
    let target = format!("https://127.0.0.1:{base}");
    let service_cert = dir.join("service_cert.pem");
    let joiner = Command::new(env!("CARGO_BIN_EXE_covenant"))
        .args(join_args(&config, &target, &service_cert))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    reaper.watch(joiner.id());
    let row = net
        .wait_node(2, "a Pending node", |n| {
            n["status"] == json!("Pending") && n["node_id"].as_str().is_some_and(|s| s.len() == 64)
        })
        .await;
    let node_id = row["node_id"].as_str().unwrap().to_string();
    assert_eq!(row["consensus_role"], json!("None"));
    // Pending: no identity handed out, nothing replicated to it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!dir.join("node4/ledger_secret.key").exists());
    assert!(!dir.join("node4/network.json").exists());
    // The consortium trusts it with a transition_node_to_trusted proposal.
    let trust = json!({"name": "transition_node_to_trusted", "args": {"node_id": node_id}});
    let v = govern(&dir, base, trust.clone());
    assert_eq!(v["state"], json!("Accepted"), "{v}");
    net.wait_node(1, "node 4 as a voter", |n| {
        n["node_id"] == json!(node_id) && n["consensus_role"] == json!("Voter")
    })
    .await;
    let t = net.append(&[4, 1], "after trust").await;
    net.wait_committed_on(&[1, 2, 3, 4], &t).await;

    // Trusting it again fails the proposal with the constitution's reason.
    std::thread::sleep(Duration::from_millis(1100));
    let v = govern(&dir, base, trust);
    assert_eq!(v["state"], json!("Failed"), "{v}");
    assert!(
        v["failure"]["reason"]
            .as_str()
            .unwrap()
            .contains("not Pending"),
        "{v}"
    );
    for node in three {
        term(pid_of(&dir, node));
    }
    term(joiner.id());
    term(dev.id());
    for mut c in [dev, joiner] {
        let _ = c.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banking_app_runs_on_three_nodes_with_writes_through_a_backup() {
    let _turn = ONE_NETWORK_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let base = free_ports(3);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/banking");
    let (dev, _reaper) = dev_network(&dir, base, &["--app", example.to_str().unwrap()]);
    let (members, _) = Net::open_n(&dir, base, 3, "member0");
    let (users, _) = Net::open(&dir, base);
    let all = [1u16, 2, 3];
    let primary = members.primary(&all).await.expect("a primary");
    let backups: Vec<u16> = all.into_iter().filter(|&n| n != primary).collect();
    // Apps name users by CCF's id (lower-case hex SHA-256 of the certificate).
    let user0 = Certificate::from_pem(&read_pem_file(&dir.join("user0_cert.pem")).unwrap())
        .unwrap()
        .member_id();

    // Member writes sent to a backup are forwarded to the primary, which runs them.
    let via = members.client(backups[0]);
    for id in [user0.as_str(), "savings"] {
        let r = via.send("PUT", &format!("/app/accounts/{id}"), None).await;
        assert_eq!(r.status, 201, "{:?}", r.json());
    }
    let r = via
        .post(
            &format!("/app/accounts/{user0}/deposit"),
            &json!({"amount": 100}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["balance"], json!(100));
    // A user's transfer through the other backup: a readwrite handler, forwarded.
    let r = users
        .client(backups[1])
        .post("/app/transfer/savings", &json!({"amount": 30}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["balance"], json!(70));
    let txid = r.transaction_id.clone().expect("a transaction id");
    users.wait_committed_on(&all, &txid).await;
    // Readonly handlers run where they are sent: every node has the same state.
    for node in all {
        let r = users.client(node).get("/app/balance").await;
        assert_eq!(
            (r.status, r.json()["balance"].clone()),
            (200, json!(70)),
            "node {node}"
        );
    }
    // A failed transfer is an error from the primary, through the backup, and writes nothing.
    let r = users
        .client(backups[0])
        .post("/app/transfer/savings", &json!({"amount": 1000}))
        .await;
    assert_eq!(r.status, 400, "{:?}", r.json());
    assert_eq!(r.json()["error"]["code"], json!("InsufficientFunds"));
    for node in all {
        term(pid_of(&dir, node));
    }
    term(dev.id());
    let mut dev = dev;
    let _ = dev.wait();
}

/// A backup cut off from the primary's messages (its own elections slowed, so it
/// keeps following) lags. On a connection that wrote through it, its reads show the
/// primary's commit point. From then on nothing it answers shows less: it forwards
/// a read it cannot yet answer, or asks the client to retry, until it has caught up.
/// (Found by chaos: a backup relayed a status of Committed, then served an older
/// `current`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_backup_never_shows_less_than_it_passed_on() {
    let _turn = ONE_NETWORK_AT_A_TIME.lock().await;
    use std::sync::atomic::Ordering;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    // Nodes 2 and 3 call an election only after 10-20 s without a primary.
    let (base, _reaper, links, mut nodes) = proxied_network(&dir, &[(2, 500), (3, 500)]).await;
    let (net, _service) = Net::open(&dir, base);
    let all = [1u16, 2, 3];
    let first = net.append(&all, "first").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in all {
        while net.node_tx(n, &first).await.as_deref() != Some("Committed") {
            assert!(Instant::now() < deadline, "node {n} did not commit {first}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let primary = net.primary(&all).await.unwrap();
    let backup = if primary == 2 { 3 } else { 2 };
    links[&(primary, backup)].cut.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut last = String::new();
    for k in 0..3 {
        last = net
            .append(&[primary], &format!("while node {backup} lags ({k})"))
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while net.node_tx(primary, &last).await.as_deref() != Some("Committed") {
        assert!(
            Instant::now() < deadline,
            "the primary did not commit {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lagging = net.committed(backup).await;
    let seqno = |r: &covenant_client::HttpResponse| -> u64 {
        r.json()["transaction_id"]
            .as_str()
            .and_then(|t| t.split_once('.'))
            .and_then(|(_, s)| s.parse().ok())
            .unwrap_or_else(|| panic!("no transaction_id in {:?}", r.json()))
    };
    // A connection that wrote through the backup reads through the primary.
    let mut conn = net.client(backup).connect().await.unwrap();
    let w = conn
        .request(
            "POST",
            &format!("/app/transactions?{API}"),
            Some(&json!({ "contents": "through the lagging backup" })),
        )
        .await
        .unwrap();
    assert_eq!(w.status, 200, "{:?}", w.json());
    let r = conn.request("GET", "/app/commit", None).await.unwrap();
    assert_eq!(r.status, 200, "{:?}", r.json());
    let shown = seqno(&r);
    assert!(
        shown > lagging,
        "the backup passed on the primary's commit point ({shown}), ahead of its own ({lagging})"
    );
    // Other clients of that backup never see less.
    let r = net
        .client(backup)
        .request("GET", "/node/commit", None)
        .await
        .unwrap();
    assert_eq!(
        r.status,
        503,
        "a backup that showed {shown} committed, still at {lagging}, answered /node/commit with {:?}",
        r.json()
    );
    assert_eq!(r.json()["error"]["code"], "ServiceUnavailable");
    for path in [
        "/app/commit".to_string(),
        format!("/app/transactions/current?{API}&committed=true"),
    ] {
        let r = net
            .client(backup)
            .request("GET", &path, None)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{path}: {:?}", r.json());
        let t = r.json()["transaction_id"]
            .as_str()
            .or(r.json()["transactionId"].as_str())
            .map(str::to_string)
            .unwrap_or_default();
        let s: u64 = t
            .split_once('.')
            .and_then(|(_, s)| s.parse().ok())
            .unwrap_or(0);
        if path == "/app/commit" {
            assert!(s >= shown, "{path} answered {t} after {shown} was shown");
        } else {
            // The newest committed entry: the last one written on the primary.
            assert!(s >= seqno_of(&last), "{path} answered {t}, before {last}");
        }
    }
    // Healed, it catches up and answers for itself again.
    links[&(primary, backup)].cut.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    while net.committed(backup).await < shown {
        assert!(Instant::now() < deadline, "node {backup} did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_all(&mut nodes);
}

fn seqno_of(txid: &str) -> u64 {
    txid.split_once('.')
        .and_then(|(_, s)| s.parse().ok())
        .unwrap_or(0)
}

/// Ledger secrets over time in a real network: two rekeys by governance (one
/// proposed through a backup); every node learns each new secret from the ledger
/// (sealed to its encryption key) and keeps the chain in its secrets file; a node
/// restarted from its files, and a fourth node that joins afterwards from a
/// snapshot, read every entry of every epoch; receipts on both sides of each rekey
/// verify; every ledger audits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekeys_reach_every_node_restarts_and_joiners() {
    let _turn = ONE_NETWORK_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let base = free_ports(4);
    let (dev, reaper) = dev_network(&dir, base, &[]);
    let (net, service) = Net::open_n(&dir, base, 4, "user0");
    let three = [1u16, 2, 3];
    let mut written = Vec::new();
    for round in 0..3 {
        for i in 0..8 {
            let c = format!("epoch {round} entry {i}");
            written.push((net.append(&three, &c).await, c));
        }
        if round < 2 {
            // The second rekey goes through a backup, which forwards it.
            let via = if round == 0 {
                base
            } else {
                let p = net.primary(&three).await.unwrap();
                base + three.iter().copied().find(|&n| n != p).unwrap() - 1
            };
            std::thread::sleep(Duration::from_millis(1100));
            let v = govern(&dir, via, json!({"name": "trigger_ledger_rekey"}));
            assert_eq!(v["state"], json!("Accepted"), "{v}");
        }
    }
    let last = written.last().unwrap().0.clone();
    net.wait_committed_on(&three, &last).await;
    // Each node keeps the whole chain: three secrets.
    for n in three {
        let text = std::fs::read_to_string(dir.join(format!("node{n}/ledger_secret.key"))).unwrap();
        let chain = covenant_crypto::LedgerSecrets::from_text(&text).unwrap();
        assert_eq!(chain.len(), 3, "node {n}: {chain:?}");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join(format!("node{n}/ledger_secret.key")))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    // A backup restarts from its own files and reads the older epochs again.
    let primary = net.primary(&three).await.unwrap();
    let backup = three.iter().copied().find(|&n| n != primary).unwrap();
    term(pid_of(&dir, backup));
    std::thread::sleep(Duration::from_millis(300));
    let restarted = start_and_wait(&[
        "node",
        "start",
        "--config",
        dir.join(format!("node{backup}/node.toml"))
            .to_str()
            .unwrap(),
    ]);
    reaper.watch(restarted.id());

    // A fourth node joins after both rekeys: it receives the chain.
    let config = joiner_config(&dir, "node4", base + 3);
    let target = format!("https://127.0.0.1:{}", base + primary - 1);
    let joiner = start_and_wait(&join_args(&config, &target, &dir.join("service_cert.pem")));
    reaper.watch(joiner.id());
    net.wait_node(1, "node 4 as a voter", |n| {
        n["raft_id"] == json!(4) && n["consensus_role"] == json!("Voter")
    })
    .await;
    let four = [1u16, 2, 3, 4];
    let t = net.append(&four, "after the join").await;
    net.wait_committed_on(&four, &t).await;
    written.push((t, "after the join".into()));
    // Node 4 keeps no secrets at rest (the default): restarted, it gets them back
    // from the network with a new encryption key, which the next rekey reaches.
    assert!(!dir.join("node4/ledger_secret.key").exists());
    assert!(!dir.join("node4/service_key.pem").exists());
    assert!(!dir.join("node4/node/node_enc_key.pem").exists());
    term(joiner.id());
    let mut joiner = joiner;
    let _ = joiner.wait();
    let joiner = start_and_wait(&["node", "start", "--config", config.to_str().unwrap()]);
    reaper.watch(joiner.id());
    std::thread::sleep(Duration::from_millis(1100));
    let v = govern(&dir, base, json!({"name": "trigger_ledger_rekey"}));
    assert_eq!(v["state"], json!("Accepted"), "{v}");
    let t = net.append(&four, "after node 4 rejoined").await;
    net.wait_committed_on(&four, &t).await;
    written.push((t, "after node 4 rejoined".into()));
    let verifier = covenant_client::ReceiptVerifier::new(service.clone());
    for (t, c) in &written {
        for n in [backup, 4] {
            let r = net
                .client(n)
                .get(&format!("/app/transactions/{t}?{API}"))
                .await;
            assert_eq!(r.json()["entry"]["contents"], json!(c), "{t} on node {n}");
        }
        let resp: covenant_receipt::ReceiptResponse =
            serde_json::from_slice(&net.receipt(backup, t).await).unwrap();
        verifier.verify_response(&resp, None).unwrap();
    }
    for n in three.into_iter().filter(|&n| n != backup) {
        term(pid_of(&dir, n));
    }
    for mut c in [dev, restarted, joiner] {
        term(c.id());
        let _ = c.wait();
    }
    std::thread::sleep(Duration::from_millis(500));
    for n in 1..=4 {
        audit(
            &dir.join(format!("node{n}/ledger")),
            &dir.join("service_cert.pem"),
        );
    }
}

/// Adds top-level settings to a dev node's node.toml (before its `[network]` table).
fn configure(dir: &Path, node: u16, settings: &str) -> PathBuf {
    let path = dir.join(format!("node{node}/node.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let (top, network) = text.split_once("[network]").unwrap();
    std::fs::write(&path, format!("{top}{settings}\n[network]{network}")).unwrap();
    path
}

fn chunk_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.starts_with("ledger_") && n.ends_with(".committed"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Committed chunks move to the archive directory past the retention window, and
/// stay part of the ledger: a backup stopped across two snapshots and that archival
/// catches up from the primary (which reads the archived chunks back), old entries
/// and receipts are served, and every ledger audits with its archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_stopped_across_snapshots_and_an_archival_catches_up() {
    let _turn = ONE_NETWORK_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let base = free_ports(3);
    let (dev, reaper) = dev_network(&dir, base, &[]);
    let (net, _service) = Net::open(&dir, base);
    let all = [1u16, 2, 3];
    let first = net.append(&all, "the first entry").await;
    net.wait_committed_on(&all, &first).await;

    // Small chunks, frequent snapshots, a short retention window.
    for n in all {
        term(pid_of(&dir, n));
    }
    std::thread::sleep(Duration::from_millis(500));
    let settings = "ledger_chunk_bytes = 2048\nsnapshot_tx_interval = 40\n\
                    ledger_archive_directory = \"archive\"\narchive_retention_txs = 30\n";
    let configs: Vec<PathBuf> = all.iter().map(|&n| configure(&dir, n, settings)).collect();
    let mut started = Vec::new();
    for c in &configs {
        let child = Command::new(env!("CARGO_BIN_EXE_covenant"))
            .args(["node", "start", "--config"])
            .arg(c)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        reaper.watch(child.id());
        started.push(child);
    }
    let mut written = vec![first.clone()];
    for i in 0..20 {
        written.push(net.append(&all, &format!("before the stop {i}")).await);
    }
    net.wait_committed_on(&all, written.last().unwrap()).await;

    // Node 3 stops (whatever its role); the others go on across two snapshots
    // and the archiver's next rounds.
    let down = 3u16;
    term(started[2].id());
    let _ = started[2].wait();
    let live = [1u16, 2];
    for i in 0..150 {
        written.push(
            net.append(&live, &format!("while node 3 is down {i}"))
                .await,
        );
    }
    let last = written.last().unwrap().clone();
    net.wait_committed_on(&live, &last).await;
    let primary = net.primary(&live).await.unwrap();
    let archive = dir.join(format!("node{primary}/archive"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while chunk_names(&archive).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "nothing archived on node {primary}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let snapshots = std::fs::read_dir(dir.join(format!("node{primary}/snapshots")))
        .unwrap()
        .count();
    assert!(snapshots >= 2, "{snapshots} snapshots");
    let main = chunk_names(&dir.join(format!("node{primary}/ledger")));
    assert!(
        !main.iter().any(|n| n.starts_with("ledger_1-")),
        "the first chunk left the ledger directory: {main:?}"
    );

    // Node 3 comes back with no operator help and catches up.
    let back = Command::new(env!("CARGO_BIN_EXE_covenant"))
        .args(["node", "start", "--config"])
        .arg(&configs[2])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    reaper.watch(back.id());
    started.push(back);
    net.wait_committed_on(&[down], &last).await;
    // Old history is served from the archive, on the primary and on node 3.
    for n in [primary, down] {
        let r = net
            .client(n)
            .get(&format!("/app/transactions/{first}?{API}"))
            .await;
        assert_eq!(
            r.status,
            200,
            "node {n}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["entry"]["contents"], json!("the first entry"));
        assert!(!net.receipt(n, &first).await.is_empty());
    }
    for n in all {
        for c in [&first, &last] {
            assert_eq!(net.status(n, c).await.as_deref(), Some("Committed"));
        }
    }
    // Every ledger audits with its archive.
    let service = dir.join("service_cert.pem");
    for n in all {
        let node_dir = dir.join(format!("node{n}"));
        let o = Command::new(env!("CARGO_BIN_EXE_covenant"))
            .args(["ledger", "audit", "--quiet", "--service-cert"])
            .arg(&service)
            .arg("--read-only-dir")
            .arg(node_dir.join("archive"))
            .arg(node_dir.join("ledger"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "node {n}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    drop(dev);
}

/// Raft snapshot transfer: a follower whose ledger ends before the primary's
/// begins (every node that could lead joined from a snapshot taken after the
/// follower stopped) is pointed at the primary's snapshot, fetches and verifies
/// it, moves its old ledger aside and continues from it, in the same process,
/// with no operator and the same data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_primarys_first_entry_catches_up_from_a_snapshot() {
    let _turn = ONE_NETWORK_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let base = free_ports(5);
    let (dev, reaper) = dev_network(&dir, base, &[]);
    let (net, _service) = Net::open_n(&dir, base, 5, "user0");
    let three = [1u16, 2, 3];
    let first = net.append(&three, "the first entry").await;
    net.wait_committed_on(&three, &first).await;

    // Frequent snapshots on the founding nodes.
    for n in three {
        term(pid_of(&dir, n));
    }
    std::thread::sleep(Duration::from_millis(500));
    let configs: Vec<PathBuf> = three
        .iter()
        .map(|&n| configure(&dir, n, "snapshot_tx_interval = 20\n"))
        .collect();
    let spawn = |config: &Path| {
        let child = Command::new(env!("CARGO_BIN_EXE_covenant"))
            .args(["node", "start", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        reaper.watch(child.id());
        child
    };
    let mut founders: Vec<Child> = configs.iter().map(|c| spawn(c)).collect();
    let t = net.append(&three, "after the restart").await;
    net.wait_committed_on(&three, &t).await;

    // Node 3 stops; the others write past several snapshots.
    term(founders[2].id());
    let _ = founders[2].wait();
    let two = [1u16, 2];
    let mut last = String::new();
    for i in 0..60 {
        last = net.append(&two, &format!("while node 3 is down {i}")).await;
    }
    net.wait_committed_on(&two, &last).await;
    let node3_end = covenant_ledger::ChunkScanner::open(&dir.join("node3/ledger"))
        .unwrap()
        .map(|e| e.unwrap().entry.txid.seqno.0)
        .last()
        .unwrap();

    // Nodes 4 and 5 join, each from a snapshot taken after node 3 stopped.
    let service_cert = dir.join("service_cert.pem");
    let target = format!("https://127.0.0.1:{base}");
    let mut joiners = Vec::new();
    for n in [4u16, 5] {
        let config = joiner_config(&dir, &format!("node{n}"), base + n - 1);
        let child = start_and_wait(&join_args(&config, &target, &service_cert));
        reaper.watch(child.id());
        joiners.push(child);
        net.wait_node(1, "the joiner as a voter", |r| {
            r["raft_id"] == json!(n)
                && r["status"] == json!("Trusted")
                && r["consensus_role"] == json!("Voter")
        })
        .await;
        let start = first_chunk_seqno(&dir.join(format!("node{n}/ledger")));
        assert!(start > node3_end + 1, "node {n} starts at {start}");
    }
    let four_five = [4u16, 5];
    let t = net.append(&[1, 2, 4, 5], "with five voters").await;
    net.wait_committed_on(&[1, 2, 4, 5], &t).await;

    // The founders with full ledgers stop: only nodes 4 and 5 can lead now, and
    // a majority of five needs node 3.
    for c in founders.iter_mut().take(2) {
        term(c.id());
        let _ = c.wait();
    }
    let log3 = dir.join("node3.log");
    let mut node3 = Command::new(env!("CARGO_BIN_EXE_covenant"))
        .args(["node", "start", "--config"])
        .arg(&configs[2])
        .stdout(std::fs::File::create(&log3).unwrap())
        .stderr(std::fs::File::create(dir.join("node3.err")).unwrap())
        .env("COVENANT_LOG", "debug")
        .spawn()
        .unwrap();
    reaper.watch(node3.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    while net.primary(&[4, 5, 3]).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "no primary with node 3 back; node 3 printed:\n{}",
            std::fs::read_to_string(&log3).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while net.committed(3).await <= node3_end + 1 {
        assert!(
            Instant::now() < deadline,
            "node 3 did not catch up; it printed:\n{}\n{}",
            std::fs::read_to_string(&log3).unwrap_or_default(),
            std::fs::read_to_string(dir.join("node3.err")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = net.append(&[4, 5, 3], "with node 3 back").await;
    net.wait_committed_on(&[3, 4, 5], &after).await;
    assert!(
        node3.try_wait().unwrap().is_none(),
        "node 3 caught up in the process it was started as"
    );
    let ledger3 = dir.join("node3/ledger");
    let start3 = first_chunk_seqno(&ledger3);
    assert!(start3 > node3_end + 1, "node 3 now starts at {start3}");
    let replaced: Vec<_> = std::fs::read_dir(dir.join("node3/replaced"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    assert_eq!(first_chunk_seqno(&replaced[0].join("ledger")), 1);
    // Node 3 serves and replicates from its new ledger.
    for i in 0..10 {
        last = net
            .append(&[3, 4, 5], &format!("after the catch-up {i}"))
            .await;
    }
    net.wait_committed_on(&[3, 4, 5], &last).await;
    for n in [3u16, 4, 5] {
        assert!(!net.receipt(n, &last).await.is_empty());
        assert_eq!(net.status(n, &after).await.as_deref(), Some("Committed"));
    }
    for c in joiners.iter_mut().chain([&mut node3]) {
        term(c.id());
        let _ = c.wait();
    }
    for (n, ledger) in [(3u16, ledger3)].into_iter().chain(
        four_five
            .iter()
            .map(|&n| (n, dir.join(format!("node{n}/ledger")))),
    ) {
        let report = audit(&ledger, &service_cert);
        assert!(report.contains("snapshot"), "node {n}: {report}");
    }
    drop(dev);
}
