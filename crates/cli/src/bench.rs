//! `covenant bench`: a load generator against an in-process single node, over real
//! HTTPS with mTLS on 127.0.0.1. In one run it measures the ceiling (a trivial
//! handler on the same HTTPS stack), appends (response and commit latency), and
//! reads of committed entries, and reports the append/ceiling ratio (SPEC §11).

use covenant_types::SeqNo;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// SPEC §11: a single node's committed appends reach at least this share of the
/// HTTPS stack's no-op ceiling.
const SINGLE_NODE_TARGET: f64 = 0.6;

use anyhow::{Context, Result};
use covenant_client::LedgerClient;
use covenant_crypto::{
    generate_client_identity, Curve, LedgerSecret, NodeIdentity, ServiceIdentity, SubjectAltName,
};
use covenant_engine::{Engine, EngineConfig};
use serde_json::json;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub nodes: u16,
    pub connections: usize,
    pub seconds: f64,
    pub entry_bytes: usize,
    pub sig_ms_interval: u64,
    /// Fractions of the measured peak append rate to run paced append phases at,
    /// each reporting its commit latency.
    pub loads: Vec<f64>,
    pub json: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Phase {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: f64,
    pub(crate) latencies_us: Vec<u64>,
}

impl Phase {
    pub(crate) fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.max(1e-9)
    }
}

pub(crate) fn percentiles(v: &mut [u64]) -> serde_json::Value {
    if v.is_empty() {
        return json!(null);
    }
    v.sort_unstable();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0;
    json!({"p50_ms": at(0.50), "p90_ms": at(0.90), "p99_ms": at(0.99), "max_ms": at(1.0)})
}

/// One request of a load loop: method, path and optional JSON body bytes.
pub(crate) type Req = (&'static str, String, Option<Vec<u8>>);

/// Runs `connections` keep-alive loops until the deadline; `make(i, n)` builds the
/// n-th request of loop i, `on_ok` sees every successful response with its send time.
pub(crate) async fn drive<F, Fut, H>(
    client: &LedgerClient,
    connections: usize,
    seconds: f64,
    rate: Option<f64>,
    make: F,
    on_ok: H,
) -> Result<Phase>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Req> + Send,
    H: Fn(covenant_client::HttpResponse, Instant) + Send + Sync + Clone + 'static,
{
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    // Paced: each loop sends on its own schedule (an open loop: a slow answer
    // does not push the next request back beyond its slot).
    let every = rate.map(|r| Duration::from_secs_f64(connections as f64 / r.max(1e-3)));
    let mut tasks = Vec::new();
    for i in 0..connections {
        let mut conn = client.connect().await?;
        let (make, on_ok) = (make.clone(), on_ok.clone());
        tasks.push(tokio::spawn(async move {
            let mut p = Phase::default();
            let mut n = 0u64;
            let offset = every.map(|e| e.mul_f64(i as f64 / connections as f64));
            while Instant::now() < deadline {
                if let (Some(every), Some(offset)) = (every, offset) {
                    let slot = start + offset + every.mul_f64(n as f64);
                    if slot >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(slot.into()).await;
                }
                let (method, path, body) = make(i, n).await;
                n += 1;
                let t = Instant::now();
                match conn
                    .request_raw(method, &path, body, "application/json")
                    .await
                {
                    Ok(r) if (200..300).contains(&r.status) => {
                        p.requests += 1;
                        p.latencies_us.push(t.elapsed().as_micros() as u64);
                        on_ok(r, t);
                    }
                    _ => p.errors += 1,
                }
            }
            p
        }));
    }
    let mut total = Phase::default();
    for t in tasks {
        let p = t.await.context("a load task failed")?;
        total.requests += p.requests;
        total.errors += p.errors;
        total.latencies_us.extend(p.latencies_us);
    }
    total.elapsed = start.elapsed().as_secs_f64();
    Ok(total)
}

/// Moves every sent write at or below `committed` to the commit latencies.
fn settle(sent: &Mutex<BTreeMap<u64, Instant>>, commit_lat: &Mutex<Vec<u64>>, committed: SeqNo) {
    let now = Instant::now();
    let done = {
        let mut s = sent.lock().unwrap_or_else(|e| e.into_inner());
        let rest = s.split_off(&(committed.0 + 1));
        std::mem::replace(&mut *s, rest)
    };
    commit_lat.lock().unwrap_or_else(|e| e.into_inner()).extend(
        done.values()
            .map(|t| now.duration_since(*t).as_micros() as u64),
    );
}

pub fn run(o: BenchOptions) -> Result<()> {
    // The nodes share this process, where a network's nodes each have their own
    // (one worker per core apiece): the runtime gets as many workers as those
    // processes would have together.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores * usize::from(o.nodes.max(1)))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(bench(o))
}

/// The nodes under test, serving until their stop senders fire.
struct Nodes {
    /// The primary's endpoint, where the load goes.
    endpoint: String,
    /// The primary's state (commit notifications).
    state: covenant_node::state::NodeState,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    servers: Vec<tokio::task::JoinHandle<Result<SeqNo, covenant_node::NodeError>>>,
}

type Bound = (
    covenant_node::state::NodeState,
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<SeqNo, covenant_node::NodeError>>,
);

async fn start_nodes(
    o: &BenchOptions,
    dir: &std::path::Path,
    service: &ServiceIdentity,
    user_cert: &covenant_crypto::Certificate,
) -> Result<Nodes> {
    let secret = Arc::new(LedgerSecret::generate()?);
    // Ports first: every node's configuration lists every peer.
    let mut peers = BTreeMap::new();
    for id in 1..=o.nodes as u64 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        peers.insert(id, std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let mut states = Vec::new();
    let mut addrs = Vec::new();
    let mut stops = Vec::new();
    let mut servers = Vec::new();
    for id in 1..=o.nodes as u64 {
        let (state, addr, stop, server) =
            bind_one(o, dir, service, user_cert, &secret, id, &peers).await?;
        states.push(state);
        addrs.push(addr);
        stops.push(stop);
        servers.push(server);
    }
    let primary = if o.nodes == 1 {
        0
    } else {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = states[0].network.as_ref().map(|n| n.replica.status());
            if let Some(leader) = s
                .filter(|s| s.committed_seqno > SeqNo::ZERO)
                .and_then(|s| s.leader)
            {
                break (leader - 1) as usize;
            }
            if Instant::now() > deadline {
                anyhow::bail!("the benchmark network did not elect a primary within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    Ok(Nodes {
        endpoint: format!("https://127.0.0.1:{}", addrs[primary].port()),
        state: states[primary].clone(),
        stops,
        servers,
    })
}

async fn bind_one(
    o: &BenchOptions,
    dir: &std::path::Path,
    service: &ServiceIdentity,
    user_cert: &covenant_crypto::Certificate,
    secret: &Arc<LedgerSecret>,
    id: u64,
    peers: &BTreeMap<u64, std::net::SocketAddr>,
) -> Result<Bound> {
    let node = Arc::new(NodeIdentity::generate(
        service,
        Curve::P384,
        &SubjectAltName::dev_defaults(),
    )?);
    let node_dir = dir.join(format!("node{id}"));
    std::fs::create_dir_all(&node_dir)?;
    let mut ec = EngineConfig::new(node_dir.join("ledger"));
    ec.commit_on_sync = o.nodes == 1;
    // As `node start` runs nodes: snapshots every 10,000 transactions.
    ec.snapshot_dir = Some(node_dir.join("snapshots"));
    ec.service_cert = Some(service.cert.clone());
    let mut engine = Engine::open(ec, node.clone(), secret.clone())?;
    let listen = if o.nodes == 1 {
        std::net::SocketAddr::from(([127, 0, 0, 1], 0))
    } else {
        peers[&id]
    };
    let mut config = covenant_node::NodeConfig::new(listen);
    config.sig_ms_interval = o.sig_ms_interval;
    config.index_path = Some(node_dir.join(crate::INDEX_FILE));
    config.limits.max_connections = o.connections * 4 + 16;
    config.limits.max_connections_per_peer = config.limits.max_connections;
    if o.nodes == 1 {
        covenant_node::Genesis {
            users: vec![(user_cert.clone(), vec![covenant_node::Role::Administrator])],
            ..Default::default()
        }
        .write(&mut engine)?;
    } else {
        config.network = Some(covenant_node::peers::NetworkConfig::new(
            id,
            peers.clone(),
            node_dir.clone(),
        ));
        config.genesis = Some(covenant_node::Genesis {
            users: vec![(user_cert.clone(), vec![covenant_node::Role::Administrator])],
            ..Default::default()
        });
    }
    let bound = covenant_node::BoundNode::bind(config, engine, &node, &service.cert).await?;
    let addr = bound.local_addr;
    let state = bound.state().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve(async {
        let _ = stopped.await;
    }));
    Ok((state, addr, stop, server))
}

/// What one append phase measured.
struct Appended {
    phase: Phase,
    commit_latencies_us: Vec<u64>,
    uncommitted: usize,
    written: Vec<String>,
}

/// Appends for `o.seconds` (as fast as they go, or paced at `rate` req/s), each
/// one's commit latency taken from the node's commit notifications.
async fn append_phase(
    client: &LedgerClient,
    state: &covenant_node::NodeState,
    o: &BenchOptions,
    rate: Option<f64>,
) -> Result<Appended> {
    let sent: Arc<Mutex<BTreeMap<u64, Instant>>> = Arc::default();
    let commit_lat: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut watch = state.service.subscribe_committed();
    let watcher = {
        let sent = sent.clone();
        let commit_lat = commit_lat.clone();
        tokio::spawn(async move {
            while watch.changed().await.is_ok() {
                let committed = *watch.borrow();
                settle(&sent, &commit_lat, committed);
            }
        })
    };
    // Serialized once: the load generator should spend its CPU on the wire, not on JSON.
    let body = json!({"contents": "x".repeat(o.entry_bytes)})
        .to_string()
        .into_bytes();
    let written: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = {
        let (sent, written) = (sent.clone(), written.clone());
        let (state, commit_lat) = (state.clone(), commit_lat.clone());
        move |r: covenant_client::HttpResponse, t: Instant| {
            if let Some(txid) = r.transaction_id {
                if let Some(seqno) = txid.split('.').nth(1).and_then(|s| s.parse::<u64>().ok()) {
                    // The commit notification may have come before this response did.
                    if state.service.committed_seqno() >= SeqNo(seqno) {
                        commit_lat
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(t.elapsed().as_micros() as u64);
                    } else {
                        sent.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(seqno, t);
                    }
                }
                written.lock().unwrap_or_else(|e| e.into_inner()).push(txid);
            }
        }
    };
    let phase = drive(
        client,
        o.connections,
        o.seconds,
        rate,
        move |_, _| {
            let body = body.clone();
            async move {
                (
                    "POST",
                    "/app/transactions?api-version=2022-05-13".to_string(),
                    Some(body),
                )
            }
        },
        record,
    )
    .await?;
    // Let the last writes commit (a few signature intervals at most).
    let wait_until = Instant::now() + Duration::from_millis(o.sig_ms_interval * 3 + 2000);
    while Instant::now() < wait_until && !sent.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Recorded after the last commit notification they were covered by.
        settle(&sent, &commit_lat, state.service.committed_seqno());
    }
    let uncommitted = sent.lock().unwrap_or_else(|e| e.into_inner()).len();
    watcher.abort();
    let commit_latencies_us =
        std::mem::take(&mut *commit_lat.lock().unwrap_or_else(|e| e.into_inner()));
    let written = std::mem::take(&mut *written.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(Appended {
        phase,
        commit_latencies_us,
        uncommitted,
        written,
    })
}

async fn bench(o: BenchOptions) -> Result<()> {
    let tmp = tempfile::tempdir().context("creating a scratch directory")?;
    let service = ServiceIdentity::generate(Curve::P384)?;
    let (user_key, user_cert) = generate_client_identity("bench", Curve::P384)?;
    let nodes = start_nodes(&o, tmp.path(), &service, &user_cert).await?;
    let endpoint = nodes.endpoint.clone();
    let state = nodes.state.clone();
    let client = LedgerClient::new(&endpoint, &service.cert, Some((&user_cert, &user_key)))?;
    eprintln!(
        "bench: {} connections, {:.1} s per phase, {} B entries, sig every {} ms, {} node(s), load on {endpoint}",
        o.connections, o.seconds, o.entry_bytes, o.sig_ms_interval, o.nodes
    );

    // 1. The ceiling: a handler that does nothing, on the same TLS/HTTP stack.
    let mut ceiling = drive(
        &client,
        o.connections,
        o.seconds,
        None,
        |_, _| async { ("GET", "/node/ping".to_string(), None) },
        |_, _| {},
    )
    .await?;
    eprintln!("bench: ceiling {:.0} req/s", ceiling.rps());

    // 2. Appends, with commit latency taken from the node's commit notifications:
    // as fast as they go, then paced at fractions of that peak.
    let full = append_phase(&client, &state, &o, None).await?;
    let mut appends = full.phase;
    let mut commit = full.commit_latencies_us;
    let uncommitted = full.uncommitted;
    eprintln!("bench: appends {:.0} req/s", appends.rps());
    let peak = appends.rps();
    let mut paced = Vec::new();
    for &load in &o.loads {
        let target = peak * load;
        let mut run = append_phase(&client, &state, &o, Some(target)).await?;
        eprintln!(
            "bench: appends paced at {:.0}% of the peak ({target:.0} req/s): {:.0} req/s",
            load * 100.0,
            run.phase.rps()
        );
        paced.push(json!({
            "load": load, "target_rps": target, "rps": run.phase.rps(), "errors": run.phase.errors,
            "latency": percentiles(&mut run.phase.latencies_us),
            "commit_latency": percentiles(&mut run.commit_latencies_us),
            "uncommitted_at_end": run.uncommitted,
        }));
    }
    let written = full.written;

    // 3. Reads of committed entries.
    let txids = Arc::new(written);
    let mut reads = if txids.is_empty() {
        Phase::default()
    } else {
        drive(
            &client,
            o.connections,
            o.seconds,
            None,
            move |i, n| {
                let txids = txids.clone();
                async move {
                    let t = &txids[(i * 7919 + n as usize * 104_729) % txids.len()];
                    (
                        "GET",
                        format!("/app/transactions/{t}?api-version=2022-05-13"),
                        None,
                    )
                }
            },
            |_, _| {},
        )
        .await?
    };
    eprintln!("bench: reads {:.0} req/s", reads.rps());
    for s in nodes.stops {
        let _ = s.send(());
    }
    for s in nodes.servers {
        let _ = s.await;
    }

    let report = json!({
        "nodes": o.nodes,
        "connections": o.connections,
        "seconds_per_phase": o.seconds,
        "entry_bytes": o.entry_bytes,
        "sig_ms_interval": o.sig_ms_interval,
        "ceiling": {"rps": ceiling.rps(), "errors": ceiling.errors, "latency": percentiles(&mut ceiling.latencies_us)},
        "append": {"rps": appends.rps(), "errors": appends.errors, "latency": percentiles(&mut appends.latencies_us),
                   "commit_latency": percentiles(&mut commit), "uncommitted_at_end": uncommitted},
        "paced_appends": paced,
        "read": {"rps": reads.rps(), "errors": reads.errors, "latency": percentiles(&mut reads.latencies_us)},
        "append_to_ceiling_ratio": appends.rps() / ceiling.rps().max(1e-9),
    });
    if o.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let row = |name: &str, v: &serde_json::Value| {
            let l = &v["latency"];
            format!(
                "{name:<18} {:>10.0} req/s  p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
                v["rps"].as_f64().unwrap_or(0.0),
                l["p50_ms"].as_f64().unwrap_or(0.0),
                l["p90_ms"].as_f64().unwrap_or(0.0),
                l["p99_ms"].as_f64().unwrap_or(0.0),
                v["errors"]
            )
        };
        println!("{}", row("ceiling (no-op)", &report["ceiling"]));
        let label = if o.nodes == 1 {
            "append 1 node".to_string()
        } else {
            format!("append {} nodes", o.nodes)
        };
        println!("{}", row(&label, &report["append"]));
        let c = &report["append"]["commit_latency"];
        println!(
            "{:<18} {:>16}  p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:.2} ms",
            "  commit latency",
            "",
            c["p50_ms"].as_f64().unwrap_or(0.0),
            c["p90_ms"].as_f64().unwrap_or(0.0),
            c["p99_ms"].as_f64().unwrap_or(0.0),
            c["max_ms"].as_f64().unwrap_or(0.0)
        );
        for p in report["paced_appends"].as_array().into_iter().flatten() {
            let c = &p["commit_latency"];
            println!(
                "{:<18} {:>10.0} req/s  commit p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:.2} ms",
                format!("  at {:.0}% of peak", p["load"].as_f64().unwrap_or(0.0) * 100.0),
                p["rps"].as_f64().unwrap_or(0.0),
                c["p50_ms"].as_f64().unwrap_or(0.0),
                c["p90_ms"].as_f64().unwrap_or(0.0),
                c["p99_ms"].as_f64().unwrap_or(0.0),
                c["max_ms"].as_f64().unwrap_or(0.0)
            );
        }
        println!("{}", row("read committed", &report["read"]));
        let ratio = report["append_to_ceiling_ratio"].as_f64().unwrap_or(0.0);
        println!(
            "append / ceiling = {ratio:.2}: committed appends ran at {:.0}% of the requests/s the same HTTPS stack serves for a no-op handler, in this run",
            ratio * 100.0
        );
        if o.nodes == 1 {
            let verdict = if ratio >= SINGLE_NODE_TARGET {
                "met"
            } else {
                "NOT met: the ledger path costs more than targeted on this machine (docs/PERFORMANCE.md)"
            };
            println!("  SPEC §11 target for one node: >= {SINGLE_NODE_TARGET:.2}; {verdict}");
        } else {
            println!(
                "  SPEC §11 compares {} nodes with one node (target >= 0.6 of one node's appends): run `covenant bench` too and divide the append rates",
                o.nodes
            );
        }
    }
    Ok(())
}
