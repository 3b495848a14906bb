//! `covenant chaos`: a nemesis harness. Concurrent clients write and read while
//! faults are injected round after round (kill -9 and restart, partitions that cut
//! node-to-node traffic, SIGSTOP pauses, a full disk, wall-clock jumps, failing
//! fsyncs); afterwards a checker reads the whole history and every node's final
//! state and ledger, and proves that nothing acknowledged as committed was lost,
//! changed or duplicated.

mod check;
mod cluster;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use cluster::Cluster;

mod rekey;
use workload::{History, Workload, COLLECTIONS};

#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    /// Nodes in the network under test.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(3..=7))]
    pub nodes: u16,
    /// Concurrent clients (each keeps up to 4 writes in flight and reads back).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// The long schedule: 20 kill, 20 partition, 10 pause, 4 disk, 4 clock and 2 fsync
    /// rounds (each count can still be set below).
    #[arg(long)]
    pub long: bool,
    /// kill -9 rounds (the primary, mostly), each followed by a restart [short: 2].
    #[arg(long)]
    pub kill: Option<u32>,
    /// Partition rounds: one node cut off, the primary cut off, a minority/majority
    /// split, in turn [short: 3].
    #[arg(long)]
    pub partition: Option<u32>,
    /// SIGSTOP/SIGCONT rounds [short: 1].
    #[arg(long)]
    pub pause: Option<u32>,
    /// Full-disk rounds, alternately just under the node's reserve and to the last
    /// byte; nodes' data live on 256 MB tmpfs mounts (needs root) [short: 2].
    #[arg(long)]
    pub disk: Option<u32>,
    /// Wall-clock jumps of one node, hours to days either way (a preload library
    /// built with the system C compiler) [short: 1].
    #[arg(long)]
    pub clock: Option<u32>,
    /// Rounds where the primary's fsyncs fail (it must stop; restarted after) [short: 1].
    #[arg(long)]
    pub fsync: Option<u32>,
    /// Seconds each fault is held.
    #[arg(long, default_value_t = 3.0)]
    pub fault_secs: f64,
    /// Seconds of calm between rounds.
    #[arg(long, default_value_t = 1.5)]
    pub settle_secs: f64,
    /// Working directory (default: a new one under the system temp dir, removed
    /// after a clean run; always kept when a check fails).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the working directory even after a clean run.
    #[arg(long)]
    pub keep: bool,
    /// Seed for the schedule and the clients (default: from the clock; printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Seconds between ledger rekeys during the faults (governance proposals by
    /// member0; 0: none). At the end every node must hold the same chain of secrets.
    #[arg(long, default_value_t = 10.0)]
    pub rekey_every: f64,
    /// Run the nodes from another covenant binary (an older build, to show that a
    /// schedule finds a defect it fixed); the harness itself stays this one.
    #[arg(long)]
    pub node_binary: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum Fault {
    Kill,
    Partition,
    Pause,
    Disk,
    Clock,
    Fsync,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Partition => "partition",
            Fault::Pause => "pause",
            Fault::Disk => "disk",
            Fault::Clock => "clock",
            Fault::Fsync => "fsync",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Round {
    fault: Fault,
    what: String,
    start: f64,
    healed: f64,
    /// Seconds from healing to the first write (sent after healing) that got a TxId.
    recovered_after: Option<f64>,
    /// Seconds from healing until the nodes the fault hit had caught up with the
    /// commit point the others had reached at healing.
    caught_up_after: Option<f64>,
    /// Longest time without a successful write from the fault until recovery.
    longest_gap: f64,
    note: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct PerFault {
    rounds: u32,
    longest_gap_s: f64,
    max_recovery_s: f64,
    median_recovery_s: f64,
    max_catch_up_s: f64,
    median_catch_up_s: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    nodes: u16,
    clients: usize,
    seed: u64,
    seconds: f64,
    counts: check::Counts,
    per_fault: BTreeMap<&'static str, PerFault>,
    rounds: Vec<Round>,
    receipts_verified: usize,
    ledgers_audited: usize,
    /// Rekeys proposed during the faults, and how many the service accepted.
    rekeys_tried: u64,
    rekeys_accepted: u64,
    /// Secrets each node held at the end (the same chain on every node).
    ledger_secrets: usize,
    committed_prefix_seqno: u64,
    violations: Vec<String>,
}

pub fn run(args: ChaosArgs) -> Result<std::process::ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        tokio::select! {
            r = run_async(args) => r,
            // Dropping the run drops its cluster: processes killed, mounts removed.
            () = crate::shutdown_signal() => {
                eprintln!("chaos: interrupted; nodes stopped and mounts removed");
                Ok(std::process::ExitCode::from(130))
            }
        }
    })
}

fn counts(a: &ChaosArgs) -> Vec<(Fault, u32)> {
    let (k, p, s, d, c, f) = if a.long {
        (20, 20, 10, 4, 4, 2)
    } else {
        (2, 3, 1, 2, 1, 1)
    };
    vec![
        (Fault::Kill, a.kill.unwrap_or(k)),
        (Fault::Partition, a.partition.unwrap_or(p)),
        (Fault::Pause, a.pause.unwrap_or(s)),
        (Fault::Disk, a.disk.unwrap_or(d)),
        (Fault::Clock, a.clock.unwrap_or(c)),
        (Fault::Fsync, a.fsync.unwrap_or(f)),
    ]
}

async fn run_async(args: ChaosArgs) -> Result<std::process::ExitCode> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let plan = counts(&args);
    let mut schedule: Vec<(Fault, u32)> = plan
        .iter()
        .flat_map(|&(f, n)| (0..n).map(move |k| (f, k)))
        .collect();
    schedule.shuffle(&mut rng);
    let disk = plan.iter().any(|&(f, n)| f == Fault::Disk && n > 0);
    let shim = plan
        .iter()
        .any(|&(f, n)| matches!(f, Fault::Clock | Fault::Fsync) && n > 0);
    let (work, temp) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("covenant-chaos-")
                .tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let exe = match &args.node_binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("locating the covenant binary")?,
    };
    println!(
        "chaos: {} nodes, {} clients, seed {seed}, {} rounds ({}), in {}",
        args.nodes,
        args.clients,
        schedule.len(),
        plan.iter()
            .map(|(f, n)| format!("{} {n}", f.name()))
            .collect::<Vec<_>>()
            .join(", "),
        work.display()
    );
    let mut cluster = Cluster::create(&exe, &work, args.nodes, disk, shim).await?;
    for i in 1..=args.nodes {
        cluster.start(i)?;
    }
    for i in 1..=args.nodes {
        cluster.wait_up(i, Duration::from_secs(60)).await?;
    }
    let start = Instant::now();
    let history = Arc::new(History::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workload = Arc::new(Workload {
        clients: args.clients.max(1),
        endpoints: (1..=args.nodes)
            .map(|i| cluster.client(i).clone())
            .collect(),
        history: history.clone(),
        start,
        stop: stop.clone(),
        seed,
    });
    let clients = tokio::spawn(workload.clone().run());
    let rekeyer = Arc::new(rekey::Rekeyer {
        endpoints: (1..=args.nodes)
            .map(|i| cluster.member_client(i))
            .collect::<Result<_>>()?,
        member_key: covenant_crypto::SigningKeyPair::from_pem(&std::fs::read_to_string(
            cluster.net.join("member0_privk.pem"),
        )?)?,
        member_cert: covenant_crypto::Certificate::from_pem(&std::fs::read_to_string(
            cluster.net.join("member0_cert.pem"),
        )?)?,
        every: Duration::from_secs_f64(args.rekey_every.max(0.0)),
        stop: stop.clone(),
        accepted: Default::default(),
        tried: Default::default(),
    });
    let rekeys = (args.rekey_every > 0.0).then(|| tokio::spawn(rekeyer.clone().run()));
    let now = || start.elapsed().as_secs_f64();
    let mut violations = Vec::new();
    let mut rounds = Vec::new();
    let hold = Duration::from_secs_f64(args.fault_secs.max(0.5));
    let settle = Duration::from_secs_f64(args.settle_secs.max(0.0));
    // Let the first writes commit before the first fault.
    wait_for_write(&history, now(), 30.0, &now).await;
    let total = schedule.len();
    for (k, (fault, variant)) in schedule.into_iter().enumerate() {
        tokio::time::sleep(settle).await;
        let primary = cluster.primary().await;
        let pick = |rng: &mut StdRng, prefer_primary: f64| -> u16 {
            match primary {
                Some(p) if rng.gen_bool(prefer_primary) => p,
                _ => rng.gen_range(1..=args.nodes),
            }
        };
        let started = now();
        let mut note = None;
        let mut allowed_exit: Option<u16> = None;
        // The nodes the fault hit (they must catch up afterwards).
        let mut faulted: Vec<u16> = Vec::new();
        let what = match fault {
            Fault::Kill => {
                let t = pick(&mut rng, 0.7);
                faulted.push(t);
                cluster.kill(t);
                tokio::time::sleep(hold).await;
                cluster.start(t)?;
                if let Err(e) = cluster.wait_up(t, Duration::from_secs(60)).await {
                    violations.push(format!("after kill round {}: {e}", k + 1));
                }
                format!("killed node {t}{}", role(primary, t))
            }
            Fault::Partition => {
                let all: Vec<u16> = (1..=args.nodes).collect();
                let minority: Vec<u16> = match variant % 3 {
                    0 => vec![rng.gen_range(1..=args.nodes)],
                    1 => vec![primary.unwrap_or(1)],
                    _ => {
                        let mut shuffled = all.clone();
                        shuffled.shuffle(&mut rng);
                        shuffled.truncate(usize::from((args.nodes - 1) / 2));
                        shuffled
                    }
                };
                let majority: Vec<u16> = all
                    .iter()
                    .copied()
                    .filter(|i| !minority.contains(i))
                    .collect();
                faulted.extend(&minority);
                cluster.partition(&minority, &majority);
                // Writes sent to a cut-off node must be answered (a TxId, or 503
                // once it knows it has no primary) while the partition lasts, not
                // held until it heals.
                let probe = probe_writes(&cluster, minority[0], hold).await;
                cluster.heal();
                let hung = probe.iter().filter(|s| *s == "timeout").count();
                if hung > 0 {
                    violations.push(format!(
                        "round {}: {hung} write(s) sent to node {}, cut off, got no answer within {} s",
                        k + 1,
                        minority[0],
                        probe_timeout(hold).as_secs()
                    ));
                }
                note = Some(format!(
                    "writes to node {}: {}",
                    minority[0],
                    summarize(&probe)
                ));
                format!(
                    "cut {minority:?} from {majority:?}{}",
                    primary
                        .map(|p| format!(" (primary was {p})"))
                        .unwrap_or_default()
                )
            }
            Fault::Pause => {
                let t = pick(&mut rng, 0.5);
                faulted.push(t);
                cluster.pause(t);
                tokio::time::sleep(hold).await;
                cluster.resume(t);
                format!("paused node {t}{}", role(primary, t))
            }
            Fault::Disk => {
                let t = pick(&mut rng, 0.5);
                faulted.push(t);
                let to_zero = variant % 2 == 1;
                let leave = if to_zero {
                    0
                } else {
                    cluster::MIN_FREE_MB * 1024 * 1024 / 2
                };
                cluster.fill_disk(t, leave)?;
                // Writes sent straight to the full node: refused with 507 (it is, or
                // was, the primary) or forwarded to a primary with room.
                let probe = probe_writes(&cluster, t, hold).await;
                if let Some(status) = cluster.reap(t) {
                    // A full disk is a refusal, never a reason to stop. Restarted at
                    // once, as a supervisor would, on the still-full disk: it must come
                    // up rather than crash again.
                    violations.push(format!(
                        "disk round {}: node {t} exited ({status}) on a full disk; see logs/node{t}.log",
                        k + 1
                    ));
                    cluster.start(t)?;
                    if let Err(e) = cluster.wait_up(t, Duration::from_secs(60)).await {
                        violations.push(format!(
                            "disk round {}: node {t} does not start on a full disk: {e}",
                            k + 1
                        ));
                    }
                }
                cluster.free_disk(t);
                let refused = probe.iter().filter(|s| s.starts_with("507")).count();
                note = Some(format!(
                    "probe writes to node {t}: {} ({refused} refused with 507)",
                    summarize(&probe)
                ));
                format!(
                    "filled node {t}'s disk{} {}",
                    role(primary, t),
                    if to_zero {
                        "to the last byte".to_string()
                    } else {
                        format!("to {} MB free", leave >> 20)
                    }
                )
            }
            Fault::Clock => {
                let t = rng.gen_range(1..=args.nodes);
                faulted.push(t);
                let hours: i64 = rng.gen_range(1..=48);
                let offset = if rng.gen_bool(0.5) { hours } else { -hours } * 3600;
                cluster.set_faults(t, offset, false)?;
                tokio::time::sleep(hold).await;
                cluster.set_faults(t, 0, false)?;
                format!("moved node {t}'s clock {offset:+} s")
            }
            Fault::Fsync => {
                let t = primary.unwrap_or_else(|| rng.gen_range(1..=args.nodes));
                faulted.push(t);
                cluster.set_faults(t, 0, true)?;
                let deadline = Instant::now() + hold;
                let mut status = None;
                while Instant::now() < deadline && status.is_none() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    status = cluster.reap(t);
                }
                cluster.set_faults(t, 0, false)?;
                allowed_exit = Some(t);
                match status {
                    Some(s) => {
                        note = Some(format!("node {t} stopped ({s}); restarted"));
                        cluster.start(t)?;
                        if let Err(e) = cluster.wait_up(t, Duration::from_secs(60)).await {
                            violations.push(format!("after fsync round {}: {e}", k + 1));
                        }
                    }
                    None => note = Some(format!("node {t} did not fsync while it was failing")),
                }
                format!("failed node {t}'s fsyncs{}", role(primary, t))
            }
        };
        let healed = now();
        // Any node that stopped by itself (outside the rounds that may stop one).
        for i in 1..=args.nodes {
            if let Some(status) = cluster.reap(i) {
                if allowed_exit != Some(i) {
                    violations.push(format!(
                        "node {i} exited ({status}) during round {} ({what}); see logs/node{i}.log",
                        k + 1
                    ));
                }
                cluster.start(i)?;
                let _ = cluster.wait_up(i, Duration::from_secs(60)).await;
            }
        }
        let recovered = wait_for_write(&history, healed, 30.0, &now).await;
        if recovered.is_none() {
            violations.push(format!(
                "no write succeeded within 30 s after round {} ({what}) healed",
                k + 1
            ));
        }
        let caught_up = catch_up(&cluster, &faulted, healed, &now).await;
        if caught_up.is_none() {
            violations.push(format!(
                "after round {} ({what}), node(s) {faulted:?} did not catch up with the others within 60 s",
                k + 1
            ));
        }
        let gap = longest_gap(&history, started, healed + recovered.unwrap_or(30.0));
        println!(
            "[{:>3}/{total}] {:<9} {what}: writes again {} after healing, caught up {}; longest gap {gap:.1} s{}",
            k + 1,
            fault.name(),
            recovered.map_or("NEVER".to_string(), |r| format!("{r:.1} s")),
            caught_up.map_or("NEVER".to_string(), |r| format!("{r:.1} s")),
            note.as_ref().map(|n| format!("; {n}")).unwrap_or_default()
        );
        rounds.push(Round {
            fault,
            what,
            start: started,
            healed,
            recovered_after: recovered,
            caught_up_after: caught_up,
            longest_gap: gap,
            note,
        });
    }
    tokio::time::sleep(settle).await;
    stop.store(true, Ordering::SeqCst);
    let _ = clients.await;
    if let Some(r) = rekeys {
        let _ = r.await;
    }
    let seconds = now();
    println!("chaos: faults over after {seconds:.0} s; converging and checking");
    // Every node up and caught up.
    cluster.heal();
    for i in 1..=args.nodes {
        cluster.free_disk(i);
        let _ = cluster.set_faults(i, 0, false);
        cluster.resume(i);
        if !cluster.running(i) {
            cluster.start(i)?;
        }
    }
    for i in 1..=args.nodes {
        cluster.wait_up(i, Duration::from_secs(60)).await?;
    }
    let converged = converge(&cluster, Duration::from_secs(60)).await;
    if converged.is_none() {
        violations.push(
            "the nodes did not reach the same commit point within 60 s of the last fault".into(),
        );
    }
    let finals = final_states(&cluster).await;
    let ops = history
        .ops
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let committed = history
        .committed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (counts, found) = match &finals {
        Ok(f) => check::check(&ops, &committed, f),
        Err(e) => (
            check::Counts::default(),
            vec![format!("reading the final state: {e}")],
        ),
    };
    violations.extend(found);
    let receipts_verified = verify_receipts(&cluster, &committed, &mut rng, &mut violations).await;
    // Stop every node cleanly, then audit every ledger and compare what they hold.
    for i in 1..=args.nodes {
        if !cluster.terminate(i) {
            violations.push(format!("node {i} did not stop cleanly"));
        }
    }
    let prefix = converged.unwrap_or(0);
    let audited = audit_ledgers(&cluster, prefix, &mut violations);
    let ledger_secrets = same_secrets(&cluster, prefix, &mut violations);
    for i in 1..=args.nodes {
        let log =
            std::fs::read_to_string(work.join(format!("logs/node{i}.log"))).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains("panicked at")) {
            violations.push(format!("node {i} panicked: {line}"));
        }
    }
    let report = Report {
        nodes: args.nodes,
        clients: args.clients,
        seed,
        seconds,
        counts,
        per_fault: per_fault(&rounds),
        rounds,
        receipts_verified,
        ledgers_audited: audited,
        rekeys_tried: rekeyer.tried.load(Ordering::SeqCst),
        rekeys_accepted: rekeyer.accepted.load(Ordering::SeqCst),
        ledger_secrets,
        committed_prefix_seqno: prefix,
        violations,
    };
    write_history(&work, &ops)?;
    print_report(&report);
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    if report.violations.is_empty() {
        cluster.shutdown();
        if args.keep || args.dir.is_some() {
            println!("chaos: PASSED; data kept in {}", work.display());
            if let Some(t) = temp {
                let _ = t.keep();
            }
        } else {
            println!("chaos: PASSED");
        }
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        cluster.keep_data();
        cluster.shutdown();
        if let Some(t) = temp {
            let _ = t.keep();
        }
        println!(
            "chaos: FAILED with {} violation(s); history, logs and data kept in {} (rerun with --seed {seed})",
            report.violations.len(),
            work.display()
        );
        Ok(std::process::ExitCode::from(1))
    }
}

/// Every node's ledger secrets (its secrets file, as `covenant dev` keeps them), up
/// to the committed prefix: they must be the same chain. Returns its length.
fn same_secrets(cluster: &Cluster, prefix: u64, violations: &mut Vec<String>) -> usize {
    let mut reference: Option<String> = None;
    let mut len = 0;
    for i in 1..=cluster.n {
        let path = cluster.net.join(format!("node{i}/ledger_secret.key"));
        let chain = std::fs::read_to_string(&path)
            .map_err(anyhow::Error::from)
            .and_then(|t| Ok(covenant_crypto::LedgerSecrets::from_text(&t)?));
        let chain = match chain {
            Ok(c) => c,
            Err(e) => {
                violations.push(format!("node {i}'s ledger secrets: {e}"));
                continue;
            }
        };
        // A secret from an uncommitted rekey at the very end may be on one node only.
        let committed: Vec<String> = chain
            .iter()
            .filter(|(v, _)| v.0 <= prefix + 1)
            .map(|(v, s)| {
                format!(
                    "{} {}",
                    v.0,
                    covenant_crypto::sha256(s.expose_bytes()).to_hex()
                )
            })
            .collect();
        len = committed.len();
        let text = committed.join("\n");
        match &reference {
            None => reference = Some(text),
            Some(r) if *r != text => violations.push(format!(
                "node {i} holds other ledger secrets than node 1 (through seqno {prefix})"
            )),
            Some(_) => {}
        }
    }
    len
}

fn role(primary: Option<u16>, t: u16) -> &'static str {
    if primary == Some(t) {
        " (the primary)"
    } else {
        ""
    }
}

fn summarize(statuses: &[String]) -> String {
    let mut m: BTreeMap<&str, usize> = BTreeMap::new();
    for s in statuses {
        *m.entry(s.as_str()).or_default() += 1;
    }
    m.iter()
        .map(|(s, n)| format!("{n}× {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How long a probe write may wait: a node must answer within the time a fault
/// lasts (at least 5 s, well over an election), not when it ends.
fn probe_timeout(hold: Duration) -> Duration {
    hold.max(Duration::from_secs(5))
}

/// Appends sent straight to node `t` for `hold`: what each got.
async fn probe_writes(cluster: &Cluster, t: u16, hold: Duration) -> Vec<String> {
    let deadline = Instant::now() + hold;
    let mut out = Vec::new();
    let mut k = 0;
    while Instant::now() < deadline {
        k += 1;
        let body = serde_json::json!({ "contents": format!("disk-probe-{t}-{k}") });
        let r = tokio::time::timeout(
            probe_timeout(hold),
            cluster.client(t).request(
                "POST",
                "/app/transactions?api-version=2022-05-13&collectionId=probe",
                Some(&body),
            ),
        )
        .await;
        out.push(match r {
            Ok(Ok(resp)) if resp.status == 200 => "200".to_string(),
            Ok(Ok(resp)) => {
                let j = resp.json();
                let code = j["error"]["code"].as_str().unwrap_or("").to_string();
                if resp.status != 507 {
                    tracing::info!(status = resp.status, message = %j["error"]["message"], "disk probe");
                }
                format!("{} {code}", resp.status)
            }
            Ok(Err(_)) => "no connection".into(),
            Err(_) => "timeout".into(),
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    out
}

/// Seconds from `since` to the completion of the first write sent after it that got
/// a TxId, if one comes within `within` seconds.
async fn wait_for_write(
    history: &History,
    since: f64,
    within: f64,
    now: &impl Fn() -> f64,
) -> Option<f64> {
    loop {
        {
            let ops = history.ops.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(op) = ops.iter().find(|o| {
                o.invoked >= since
                    && matches!(&o.outcome, workload::Outcome::Append { txid: Some(_), .. })
            }) {
                return Some(op.completed - since);
            }
        }
        if now() - since > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The longest time within [from, to] without a write answered with a TxId.
fn longest_gap(history: &History, from: f64, to: f64) -> f64 {
    let ops = history.ops.lock().unwrap_or_else(|e| e.into_inner());
    let mut times: Vec<f64> = ops
        .iter()
        .filter(|o| matches!(&o.outcome, workload::Outcome::Append { txid: Some(_), .. }))
        .map(|o| o.completed)
        .collect();
    times.sort_by(f64::total_cmp);
    let before = times
        .iter()
        .rev()
        .find(|t| **t < from)
        .copied()
        .unwrap_or(from);
    let mut last = before;
    let mut gap = 0f64;
    for &t in times.iter().filter(|t| **t >= from && **t <= to) {
        gap = gap.max(t - last);
        last = t;
    }
    let after = times.iter().find(|t| **t > to).copied().unwrap_or(to);
    gap.max(after - last)
}

/// Seconds from `healed` until every node in `faulted` has reached the commit point
/// the other nodes report now (None: not within 60 s).
async fn catch_up(
    cluster: &Cluster,
    faulted: &[u16],
    healed: f64,
    now: &impl Fn() -> f64,
) -> Option<f64> {
    let mut target = 0;
    for i in (1..=cluster.n).filter(|i| !faulted.contains(i)) {
        target = target.max(cluster.committed(i).await.unwrap_or(0));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for &i in faulted {
        loop {
            if cluster.committed(i).await.unwrap_or(0) >= target {
                break;
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Some(now() - healed)
}

/// Waits until every node reports the same committed seqno twice in a row.
async fn converge(cluster: &Cluster, within: Duration) -> Option<u64> {
    let deadline = Instant::now() + within;
    let mut previous = None;
    while Instant::now() < deadline {
        let mut seen = Vec::new();
        for i in 1..=cluster.n {
            seen.push(cluster.committed(i).await);
        }
        let first = seen[0];
        if first.is_some() && seen.iter().all(|s| *s == first) {
            if previous == first {
                return first;
            }
            previous = first;
        } else {
            previous = None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// Every node's committed entries of the clients' collections, read through the
/// ranged API (1000 per page).
async fn final_states(cluster: &Cluster) -> Result<BTreeMap<u16, check::Final>> {
    let mut out = BTreeMap::new();
    for i in 1..=cluster.n {
        let mut f = check::Final::new();
        for c in COLLECTIONS {
            let mut path = format!("/app/transactions?api-version=2022-05-13&collectionId={c}");
            loop {
                let r = cluster.client(i).request("GET", &path, None).await?;
                if r.status != 200 {
                    bail!("node {i}: listing {c}: HTTP {}", r.status);
                }
                let j = r.json();
                if j["state"] != "Ready" {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                for e in j["entries"].as_array().into_iter().flatten() {
                    let (Some(t), Some(x)) = (e["transactionId"].as_str(), e["contents"].as_str())
                    else {
                        bail!("node {i}: a malformed entry {e}");
                    };
                    if f.insert(t.to_string(), (c.to_string(), x.to_string()))
                        .is_some()
                    {
                        bail!("node {i}: {t} listed twice");
                    }
                }
                match j["nextLink"].as_str() {
                    Some(next) => path = next.to_string(),
                    None => break,
                }
            }
        }
        out.insert(i, f);
    }
    Ok(out)
}

/// Receipts of up to 20 acknowledged writes, from random nodes, verified offline.
async fn verify_receipts(
    cluster: &Cluster,
    committed: &[(String, String, u16, f64)],
    rng: &mut StdRng,
    violations: &mut Vec<String>,
) -> usize {
    let verifier = cluster.verifier();
    let mut ok = 0;
    let sample: Vec<_> = committed.choose_multiple(rng, 20).cloned().collect();
    for (_, txid, _, _) in sample {
        let node = rng.gen_range(1..=cluster.n);
        let path = format!("/app/transactions/{txid}/receipt?api-version=2022-05-13");
        let r = match cluster.client(node).request("GET", &path, None).await {
            Ok(r) if r.status == 200 => r,
            Ok(r) => {
                violations.push(format!(
                    "receipt of {txid} from node {node}: HTTP {}",
                    r.status
                ));
                continue;
            }
            Err(e) => {
                violations.push(format!("receipt of {txid} from node {node}: {e}"));
                continue;
            }
        };
        let parsed: Result<covenant_receipt::ReceiptResponse, _> = serde_json::from_slice(&r.body);
        match parsed.map_err(|e| e.to_string()).and_then(|resp| {
            verifier
                .verify_response(&resp, None)
                .map_err(|e| e.to_string())
        }) {
            Ok(v) if v.transaction_id.to_string() == txid => ok += 1,
            Ok(v) => violations.push(format!(
                "receipt asked for {txid} names {}",
                v.transaction_id
            )),
            Err(e) => violations.push(format!(
                "receipt of {txid} from node {node} does not verify: {e}"
            )),
        }
    }
    ok
}

/// `covenant ledger audit` of every node's ledger; their first `prefix` entries
/// must be byte-identical.
fn audit_ledgers(cluster: &Cluster, prefix: u64, violations: &mut Vec<String>) -> usize {
    let mut audited = 0;
    let mut first: Option<(u16, Vec<covenant_ledger::Entry>)> = None;
    for i in 1..=cluster.n {
        let ledger = cluster.node_dir(i).join("ledger");
        let out = std::process::Command::new(&cluster.exe)
            .args(["ledger", "audit", "--quiet", "--service-cert"])
            .arg(cluster.net.join("service_cert.pem"))
            .arg(&ledger)
            .output();
        match out {
            Ok(o) if o.status.success() => audited += 1,
            Ok(o) => violations.push(format!(
                "node {i}'s ledger fails its audit: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => violations.push(format!("auditing node {i}: {e}")),
        }
        let entries: Result<Vec<covenant_ledger::Entry>, String> =
            match covenant_ledger::ChunkScanner::open(&ledger) {
                Ok(s) => s
                    .take(prefix as usize)
                    .map(|e| e.map(|e| e.entry).map_err(|e| e.to_string()))
                    .collect(),
                Err(e) => Err(e.to_string()),
            };
        match entries {
            Ok(e) if e.len() as u64 == prefix => match &first {
                None => first = Some((i, e)),
                Some((j, other)) => {
                    if let Some(k) = (0..e.len()).find(|&k| e[k] != other[k]) {
                        violations.push(format!(
                            "the committed ledgers of nodes {j} and {i} differ at seqno {}",
                            k + 1
                        ));
                    }
                }
            },
            Ok(e) => violations.push(format!(
                "node {i}'s ledger holds {} entries, fewer than the {prefix} committed",
                e.len()
            )),
            Err(e) => violations.push(format!("reading node {i}'s ledger: {e}")),
        }
    }
    audited
}

fn per_fault(rounds: &[Round]) -> BTreeMap<&'static str, PerFault> {
    type Samples = (PerFault, Vec<f64>, Vec<f64>);
    let mut m: BTreeMap<&'static str, Samples> = BTreeMap::new();
    for r in rounds {
        let (p, rec, cu) = m.entry(r.fault.name()).or_default();
        p.rounds += 1;
        p.longest_gap_s = p.longest_gap_s.max(r.longest_gap);
        rec.extend(r.recovered_after);
        cu.extend(r.caught_up_after);
    }
    let max_median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (
            v.last().copied().unwrap_or(0.0),
            v.get(v.len() / 2).copied().unwrap_or(0.0),
        )
    };
    m.into_iter()
        .map(|(k, (mut p, rec, cu))| {
            (p.max_recovery_s, p.median_recovery_s) = max_median(rec);
            (p.max_catch_up_s, p.median_catch_up_s) = max_median(cu);
            (k, p)
        })
        .collect()
}

fn write_history(work: &std::path::Path, ops: &[workload::Op]) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(work.join("history.jsonl"))?);
    for op in ops {
        serde_json::to_writer(&mut f, op)?;
        f.write_all(b"\n")?;
    }
    f.flush()?;
    Ok(())
}

fn print_report(r: &Report) {
    let c = &r.counts;
    println!(
        "chaos report: {} nodes, {} clients, seed {}, {:.0} s of faults",
        r.nodes, r.clients, r.seed, r.seconds
    );
    println!(
        "  writes: {} attempted, {} acknowledged with a TxId, {} acknowledged Committed, {} refused or failed, {} Invalid (rolled back)",
        c.appends_attempted, c.appends_acknowledged, c.appends_committed, c.appends_failed, c.appends_invalid
    );
    println!(
        "  reads: {} ({} failed); current reads that showed a not-yet-committed entry: {}",
        c.reads, c.reads_failed, c.uncommitted_current_reads
    );
    println!(
        "  lost {}, changed {}, duplicated {}; {} receipts verified; {} ledgers audited, identical through seqno {}",
        c.lost, c.changed, c.duplicated, r.receipts_verified, r.ledgers_audited, r.committed_prefix_seqno
    );
    println!(
        "  rekeys during the faults: {} tried, {} accepted; every node holds the same {} ledger secrets",
        r.rekeys_tried, r.rekeys_accepted, r.ledger_secrets
    );
    println!(
        "  {:<10} {:>6} {:>12} {:>22} {:>22}",
        "fault", "rounds", "longest gap", "writes again max/med", "caught up max/med"
    );
    for (k, p) in &r.per_fault {
        println!(
            "  {:<10} {:>6} {:>10.1} s {:>13.1} / {:>4.1} s {:>13.1} / {:>4.1} s",
            k,
            p.rounds,
            p.longest_gap_s,
            p.max_recovery_s,
            p.median_recovery_s,
            p.max_catch_up_s,
            p.median_catch_up_s
        );
    }
    if !r.violations.is_empty() {
        println!("VIOLATIONS ({}):", r.violations.len());
        for v in r.violations.iter().take(20) {
            println!("  - {v}");
        }
        if r.violations.len() > 20 {
            println!(
                "  … and {} more (see the JSON report)",
                r.violations.len() - 20
            );
        }
    }
}
