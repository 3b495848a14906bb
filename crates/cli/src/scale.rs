//! `covenant scale-bench`: what a node costs per ledger entry. A ledger of N
//! entries is made as `covenant dev` makes one and filled directly through the
//! engine; then a real `covenant dev` process is restarted on it and measured:
//! time to ready, resident memory, ranged queries at both ends of history, memory
//! after a 100,000-entry query, and appends beside slow JavaScript handlers.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use covenant_client::{Connection, LedgerClient};
use covenant_crypto::{read_pem_file, Certificate, SigningKeyPair};
use covenant_engine::Engine;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::bench::{drive, percentiles, Phase};
use crate::node_start::LedgerSettings;
use crate::NodeFiles;

/// The api-version the ACL routes are called with.
const API: &str = "2022-05-13";
/// What a prefilled directory records about itself (written last: a directory
/// without it holds no complete prefill).
const MARKER: &str = "scale-bench.json";
/// The node's stderr, in the data directory.
const NODE_LOG: &str = "scale-bench-node.log";
/// Entries of one collection in a ranged query's window (phase 3).
const WINDOW_ENTRIES: u64 = 100;
/// Times each ranged query is repeated.
const REPEATS: usize = 20;
/// Entries the wide ranged query covers (phase 4).
const WIDE_ENTRIES: u64 = 100_000;
/// Phase 5: load, callers of the slow handler, seconds per run, its compute time.
const APPEND_CONNECTIONS: usize = 32;
const SLOW_CALLERS: usize = 8;
const SLOW_SECONDS: f64 = 10.0;
const SLOW_MS: u64 = 50;
/// Phase 5 passes when appends beside the slow handlers keep this share of their rate.
const SLOW_TARGET: f64 = 0.8;
/// The longest a node may take to become ready or to stop.
const READY_TIMEOUT: Duration = Duration::from_secs(3600);
const STOP_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(clap::Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Ledger entries to prefill.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub entries: u64,
    /// Collections the entries go to, round-robin (c0, c1, ...).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub collections: u64,
    /// Bytes of contents per entry.
    #[arg(long, default_value_t = 1024)]
    pub entry_bytes: usize,
    /// Where the ledger lives (kept). A directory this command prefilled with the
    /// same --entries, --collections and --entry-bytes is reused without a new
    /// prefill. Default: a temporary directory, removed at the end.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Skip phase 5 (appends beside slow JavaScript handlers).
    #[arg(long)]
    pub skip_slow_js: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What a prefill wrote, recorded in [`MARKER`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Prefill {
    entries: u64,
    collections: u64,
    entry_bytes: usize,
    ledger_public: bool,
    /// The view of the prefilled transactions and their first and last seqnos.
    view: u64,
    first_seqno: u64,
    last_seqno: u64,
    /// A signature every this many transactions.
    sig_tx_interval: u64,
    seconds: f64,
}

impl Prefill {
    fn same_parameters(&self, a: &ScaleArgs) -> bool {
        self.entries == a.entries
            && self.collections == a.collections
            && self.entry_bytes == a.entry_bytes
    }

    /// Seqnos spanning `entries` prefilled transactions (signatures included).
    fn span(&self, entries: u64) -> u64 {
        let entries = entries.min(self.entries);
        entries + entries / self.sig_tx_interval.max(1) + 1
    }

    fn txid(&self, seqno: u64) -> String {
        format!("{}.{seqno}", self.view)
    }
}

pub fn run(a: ScaleArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The temporary directory (if any) lives until the end, removed on error too.
    let (_tmp, dir) = match &a.dir {
        Some(d) => (None, d.clone()),
        None => {
            let t = tempfile::Builder::new()
                .prefix("covenant-scale-")
                .tempdir()
                .context("creating a scratch directory")?;
            let d = t.path().join("ledger-dir");
            (Some(t), d)
        }
    };
    let dir = std::path::absolute(&dir).with_context(|| format!("{}", dir.display()))?;
    eprintln!(
        "scale-bench: {} entries of {} B in {} collections, in {}",
        a.entries,
        a.entry_bytes,
        a.collections,
        dir.display()
    );

    // 1. Prefill (or reuse).
    let (prefill, reused) = match existing_prefill(&dir, &a)? {
        Some(p) => {
            eprintln!(
                "scale-bench: reusing the prefill in {} (seqnos {}..{})",
                dir.display(),
                p.first_seqno,
                p.last_seqno
            );
            (p, true)
        }
        None => (prefill(&dir, &a)?, false),
    };
    let ledger_bytes = dir_bytes(&dir.join("ledger"));
    let snapshot_bytes = dir_bytes(&dir.join("snapshots"));
    let prefill_rate = prefill.entries as f64 / prefill.seconds.max(1e-9);
    if !reused {
        eprintln!(
            "scale-bench: prefilled {} entries in {:.1} s ({prefill_rate:.0} entries/s)",
            prefill.entries, prefill.seconds
        );
    }
    let total_seqnos = prefill.last_seqno;

    // 2. Restart to ready.
    let restart = Started::start(
        &runtime,
        &dir,
        None,
        "restarting covenant dev on the ledger",
    )?;
    let (rss_ready, hwm_ready) = restart.node.rss()?;
    eprintln!(
        "scale-bench: ready line after {:.2} s, /node/ready/app after {:.2} s, VmRSS {}",
        restart.to_ready_line.as_secs_f64(),
        restart.to_ready_app.as_secs_f64(),
        mib(rss_ready)
    );

    // 3. Ranged queries at both ends of history.
    let ranged = runtime.block_on(ranged_queries(&restart.client, &prefill))?;
    eprintln!(
        "scale-bench: ranged query p50 oldest {:.2} ms, newest {:.2} ms",
        ranged.oldest_p50_ms(),
        ranged.newest_p50_ms()
    );

    // 4. A 100,000-entry query, then memory.
    let wide = runtime.block_on(wide_query(&restart.client, &prefill))?;
    let (rss_wide, hwm_wide) = restart.node.rss()?;
    eprintln!(
        "scale-bench: {} entries read in {} pages ({:.1} s); VmRSS {}",
        wide.entries,
        wide.pages,
        wide.seconds,
        mib(rss_wide)
    );
    let Started {
        node,
        to_ready_line,
        to_ready_app,
        ..
    } = restart;
    node.stop()?;

    // 5. Appends beside slow JavaScript.
    let slow = if a.skip_slow_js {
        None
    } else {
        Some(slow_js(&runtime, &dir, a.entry_bytes)?)
    };

    let per_entry = |bytes: u64| bytes as f64 / prefill.entries as f64;
    let report = json!({
        "entries": prefill.entries,
        "collections": prefill.collections,
        "entry_bytes": prefill.entry_bytes,
        "ledger": if prefill.ledger_public { "public" } else { "private" },
        "dir": dir.display().to_string(),
        "seqnos": total_seqnos,
        "prefill": {
            "reused": reused,
            "seconds": prefill.seconds,
            "entries_per_s": prefill_rate,
            "ledger_bytes": ledger_bytes,
            "snapshot_bytes": snapshot_bytes,
            "ledger_bytes_per_entry": per_entry(ledger_bytes),
        },
        "restart": {
            "to_ready_line_s": to_ready_line.as_secs_f64(),
            "to_ready_app_s": to_ready_app.as_secs_f64(),
            "us_per_entry": to_ready_app.as_secs_f64() * 1e6 / prefill.entries as f64,
            "rss_bytes": rss_ready,
            "rss_peak_bytes": hwm_ready,
            "rss_bytes_per_entry": per_entry(rss_ready),
        },
        "ranged_query": ranged.to_json(),
        "wide_query": {
            "entries": wide.entries,
            "pages": wide.pages,
            "seconds": wide.seconds,
            "entries_per_s": wide.entries as f64 / wide.seconds.max(1e-9),
            "rss_bytes": rss_wide,
            "rss_peak_bytes": hwm_wide,
        },
        "slow_js": slow.as_ref().map(SlowJs::to_json),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report, &prefill, &ranged, &wide, slow.as_ref());
    }
    Ok(())
}

/// The prefill recorded in `dir`, when it has the same parameters; `None` for a
/// directory to prefill (absent or empty).
fn existing_prefill(dir: &Path, a: &ScaleArgs) -> Result<Option<Prefill>> {
    let marker = dir.join(MARKER);
    if marker.exists() {
        let p: Prefill = serde_json::from_slice(
            &std::fs::read(&marker).with_context(|| format!("reading {}", marker.display()))?,
        )
        .with_context(|| format!("{} is not a scale-bench record", marker.display()))?;
        if !p.same_parameters(a) {
            bail!(
                "{} holds a prefill of {} entries of {} B in {} collections: give those, or another --dir",
                dir.display(),
                p.entries,
                p.entry_bytes,
                p.collections
            );
        }
        return Ok(Some(p));
    }
    let empty = match std::fs::read_dir(dir) {
        Ok(mut d) => d.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    if !empty {
        bail!(
            "{} is neither empty nor a complete scale-bench prefill (no {MARKER}; an interrupted prefill?): remove it or give another --dir",
            dir.display()
        );
    }
    Ok(None)
}

/// Phase 1: `covenant dev` creates the ledger; then the engine fills it directly.
fn prefill(dir: &Path, a: &ScaleArgs) -> Result<Prefill> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Identities, users, members and an open service, as `covenant dev` makes them.
    let (node, _) = DevNode::start(dir, None, "creating the ledger with covenant dev")?;
    node.stop()?;

    let NodeFiles {
        service,
        node,
        secrets,
        encryption_key,
    } = crate::demo_identities(dir)?;
    let ledger_public = std::fs::read_to_string(dir.join("ledger_type"))
        .map(|t| t.trim() == "public")
        .unwrap_or(false);
    let settings = LedgerSettings::single_node();
    let config = settings.engine_config(dir, &service.cert);
    let mut engine = Engine::open_with_key(config, Arc::new(node), secrets, Some(encryption_key))
        .context("opening the dev ledger")?;
    let map = covenant_service::tables::entries_map(ledger_public);
    // The collection index, fed as a node feeds it while committing.
    let index = Arc::new(
        covenant_service::Index::open_on_disk(&dir.join(crate::INDEX_FILE), &engine, map, None)
            .context("opening the collection index")?,
    );
    let feed = index.clone();
    engine.set_observer(Arc::new(move |event| feed.observe(event, map)));
    let names: Vec<String> = (0..a.collections).map(|c| format!("c{c}")).collect();
    let filler = "x".repeat(a.entry_bytes);
    let flush_every = settings.sig_tx_interval.max(1);
    let pb = bar(a.entries, "prefill");
    let started = Instant::now();
    let mut first = None;
    let mut last = None;
    let mut contents = String::with_capacity(a.entry_bytes + 24);
    for i in 0..a.entries {
        contents.clear();
        contents.push_str(&i.to_string());
        contents.push(' ');
        let pad = a.entry_bytes.saturating_sub(contents.len());
        contents.push_str(&filler[..pad]);
        contents.truncate(a.entry_bytes);
        let collection = &names[(i % a.collections) as usize];
        let mut tx = engine.begin();
        tx.put(map, collection.as_bytes(), contents.as_bytes());
        let txid = engine
            .commit_tx(tx, None)
            .with_context(|| format!("committing prefill entry {i}"))?;
        first.get_or_insert(txid);
        last = Some(txid);
        if (i + 1) % flush_every == 0 {
            engine.flush().context("flushing the ledger")?;
            index
                .commit(engine.committed_seqno())
                .context("writing the collection index")?;
        }
        if (i + 1) % 1000 == 0 {
            pb.set_position(i + 1);
        }
    }
    if engine.unsigned_txs() > 0 {
        engine.emit_signature().context("signing the prefill")?;
    }
    // Twice: a chunk the last signature closed completes in the next group commit.
    engine.flush().context("flushing the ledger")?;
    engine.flush().context("flushing the ledger")?;
    index
        .commit(engine.committed_seqno())
        .and_then(|()| index.flush())
        .context("writing the collection index")?;
    let seconds = started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    drop(engine);
    drop(index);
    let (Some(first), Some(last)) = (first, last) else {
        bail!("nothing was prefilled");
    };
    let p = Prefill {
        entries: a.entries,
        collections: a.collections,
        entry_bytes: a.entry_bytes,
        ledger_public,
        view: first.view.0,
        first_seqno: first.seqno.0,
        last_seqno: last.seqno.0,
        sig_tx_interval: settings.sig_tx_interval,
        seconds,
    };
    let tmp = dir.join(format!("{MARKER}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&p)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(MARKER)).context("recording the prefill")?;
    Ok(p)
}

/// A `covenant dev` child process, stopped (SIGTERM, then SIGKILL) when dropped.
struct DevNode {
    child: Child,
    port: u16,
    log: PathBuf,
    stopped: bool,
}

impl DevNode {
    /// Spawns `covenant dev --data-dir DIR` (this binary) on a free port and waits
    /// for its ready line; returns it and when it was spawned.
    fn start(dir: &Path, app: Option<&Path>, what: &str) -> Result<(DevNode, Instant)> {
        let exe = std::env::current_exe().context("locating the covenant binary")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = dir.join(NODE_LOG);
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(exe);
        cmd.arg("dev")
            .arg("--data-dir")
            .arg(dir)
            .arg("--port")
            .arg(port.to_string());
        if let Some(app) = app {
            cmd.arg("--app").arg(app);
        }
        let spawned = Instant::now();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("starting covenant dev")?;
        let mut node = DevNode {
            child,
            port,
            log,
            stopped: false,
        };
        let stdout = node
            .child
            .stdout
            .take()
            .context("covenant dev's standard output")?;
        // Its stdout is drained to the end, so it never blocks on a full pipe.
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if line.starts_with("covenant dev ready:") {
                    if let Some(t) = ready_tx.take() {
                        let _ = t.send(());
                    }
                }
            }
        });
        let spinner = spinner(what);
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(()) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = node.child.try_wait()? {
                        spinner.finish_and_clear();
                        bail!(
                            "covenant dev exited ({status}) before it was ready; its log:\n{}",
                            node.log_tail()
                        );
                    }
                    if spawned.elapsed() > READY_TIMEOUT {
                        spinner.finish_and_clear();
                        bail!("covenant dev was not ready within {READY_TIMEOUT:?}");
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    spinner.finish_and_clear();
                    std::thread::sleep(Duration::from_millis(200));
                    bail!(
                        "covenant dev closed its output before it was ready; its log:\n{}",
                        node.log_tail()
                    );
                }
            }
        }
        spinner.finish_and_clear();
        Ok((node, spawned))
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// VmRSS and VmHWM (peak), in bytes.
    fn rss(&self) -> Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("{path} has no {name}"))?;
            let kb: u64 = line
                .trim_start_matches(name)
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("{path}: {line}"))?;
            Ok(kb * 1024)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn terminate(&self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }

    /// Waits up to `timeout` for the process to exit.
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return None,
            }
        }
    }

    /// Stops it as Ctrl-C would (it signs and flushes); it must exit cleanly.
    fn stop(mut self) -> Result<()> {
        self.terminate();
        let status = self.wait_exit(STOP_TIMEOUT);
        self.stopped = true;
        match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => bail!(
                "covenant dev exited with {s}; its log:\n{}",
                self.log_tail()
            ),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("covenant dev did not stop within {STOP_TIMEOUT:?}; killed")
            }
        }
    }
}

impl Drop for DevNode {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        self.terminate();
        if self.wait_exit(Duration::from_secs(30)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A node started on the ledger, ready, with user0's client.
struct Started {
    node: DevNode,
    client: LedgerClient,
    to_ready_line: Duration,
    to_ready_app: Duration,
}

impl Started {
    /// Starts `covenant dev` on `dir` and waits until `GET /node/ready/app` answers 2xx.
    fn start(
        runtime: &tokio::runtime::Runtime,
        dir: &Path,
        app: Option<&Path>,
        what: &str,
    ) -> Result<Started> {
        let (node, spawned) = DevNode::start(dir, app, what)?;
        let to_ready_line = spawned.elapsed();
        let client = user0_client(dir, &node.endpoint())?;
        runtime.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match client.request("GET", "/node/ready/app", None).await {
                    Ok(r) if (200..300).contains(&r.status) => return Ok(()),
                    _ if Instant::now() > deadline => {
                        bail!(
                            "GET /node/ready/app did not answer 2xx within 60 s of the ready line"
                        )
                    }
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        })?;
        let to_ready_app = spawned.elapsed();
        Ok(Started {
            node,
            client,
            to_ready_line,
            to_ready_app,
        })
    }
}

/// A client of the node at `endpoint` as the dev directory's user0 (mTLS).
fn user0_client(dir: &Path, endpoint: &str) -> Result<LedgerClient> {
    let pem = |name: &str| {
        read_pem_file(&dir.join(name)).with_context(|| format!("reading {}", dir.display()))
    };
    let service = Certificate::from_pem(&pem("service_cert.pem")?).context("service_cert.pem")?;
    let cert = Certificate::from_pem(&pem("user0_cert.pem")?).context("user0_cert.pem")?;
    let key = SigningKeyPair::from_pem(&pem("user0_privk.pem")?).context("user0_privk.pem")?;
    Ok(LedgerClient::new(endpoint, &service, Some((&cert, &key)))?)
}

/// One GET on a keep-alive connection (reopened if the node closed it); 2xx or an error.
async fn get(client: &LedgerClient, conn: &mut Option<Connection>, path: &str) -> Result<Value> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = Some(client.connect().await?);
    }
    let Some(c) = conn.as_mut() else {
        bail!("no connection");
    };
    let r = match c.request("GET", path, None).await {
        Ok(r) => r,
        Err(_) => {
            // Closed between requests: once more on a new connection.
            let mut fresh = client.connect().await?;
            let r = fresh.request("GET", path, None).await?;
            *conn = Some(fresh);
            r
        }
    };
    if !(200..300).contains(&r.status) {
        bail!(
            "GET {path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    Ok(r.json())
}

/// Every entry of `collection` in the seqno range, following nextLink: (entries, pages).
async fn list_range(
    client: &LedgerClient,
    conn: &mut Option<Connection>,
    p: &Prefill,
    collection: &str,
    from: u64,
    to: u64,
) -> Result<(u64, u64)> {
    let mut path = format!(
        "/app/transactions?api-version={API}&collectionId={collection}&fromTransactionId={}&toTransactionId={}",
        p.txid(from),
        p.txid(to)
    );
    let (mut entries, mut pages) = (0, 0);
    loop {
        let v = get(client, conn, &path).await?;
        pages += 1;
        entries += v["entries"].as_array().map_or(0, |e| e.len() as u64);
        match v["nextLink"].as_str() {
            Some(next) => path = next.to_string(),
            None => return Ok((entries, pages)),
        }
    }
}

/// Phase 3's measurements.
struct Ranged {
    collection: String,
    oldest: (u64, u64),
    newest: (u64, u64),
    oldest_entries: u64,
    newest_entries: u64,
    oldest_us: Vec<u64>,
    newest_us: Vec<u64>,
}

fn quantile_ms(v: &[u64], q: f64) -> f64 {
    let mut v = v.to_vec();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0
}

impl Ranged {
    fn oldest_p50_ms(&self) -> f64 {
        quantile_ms(&self.oldest_us, 0.5)
    }
    fn newest_p50_ms(&self) -> f64 {
        quantile_ms(&self.newest_us, 0.5)
    }
    fn ratio(&self) -> f64 {
        self.oldest_p50_ms() / self.newest_p50_ms().max(1e-9)
    }
    fn to_json(&self) -> Value {
        let side = |range: (u64, u64), entries: u64, us: &[u64]| {
            json!({"from_seqno": range.0, "to_seqno": range.1, "entries": entries,
                   "p50_ms": quantile_ms(us, 0.5), "p90_ms": quantile_ms(us, 0.9),
                   "max_ms": quantile_ms(us, 1.0)})
        };
        json!({
            "collection": self.collection,
            "repeats": REPEATS,
            "oldest": side(self.oldest, self.oldest_entries, &self.oldest_us),
            "newest": side(self.newest, self.newest_entries, &self.newest_us),
            "oldest_to_newest_p50": self.ratio(),
        })
    }
}

/// Phase 3: a window of about [`WINDOW_ENTRIES`] entries of c0 at the oldest and the
/// newest point of the prefilled history, [`REPEATS`] times each (interleaved).
async fn ranged_queries(client: &LedgerClient, p: &Prefill) -> Result<Ranged> {
    let span = p.span(WINDOW_ENTRIES * p.collections);
    let oldest = (p.first_seqno, (p.first_seqno + span - 1).min(p.last_seqno));
    let newest = (
        (p.last_seqno + 1).saturating_sub(span).max(p.first_seqno),
        p.last_seqno,
    );
    let mut r = Ranged {
        collection: "c0".into(),
        oldest,
        newest,
        oldest_entries: 0,
        newest_entries: 0,
        oldest_us: Vec::new(),
        newest_us: Vec::new(),
    };
    let mut conn = None;
    let pb = bar(2 * REPEATS as u64, "ranged queries");
    for _ in 0..REPEATS {
        let t = Instant::now();
        let (n, _) = list_range(client, &mut conn, p, &r.collection, oldest.0, oldest.1).await?;
        r.oldest_us.push(t.elapsed().as_micros() as u64);
        r.oldest_entries = n;
        let t = Instant::now();
        let (n, _) = list_range(client, &mut conn, p, &r.collection, newest.0, newest.1).await?;
        r.newest_us.push(t.elapsed().as_micros() as u64);
        r.newest_entries = n;
        pb.inc(2);
    }
    pb.finish_and_clear();
    Ok(r)
}

/// Phase 4's measurements.
struct Wide {
    entries: u64,
    pages: u64,
    seconds: f64,
}

/// Phase 4: every collection over the oldest [`WIDE_ENTRIES`] prefilled entries.
async fn wide_query(client: &LedgerClient, p: &Prefill) -> Result<Wide> {
    let want = WIDE_ENTRIES.min(p.entries);
    let to = (p.first_seqno + p.span(want) - 1).min(p.last_seqno);
    let pb = bar(want, "100k-entry query");
    let mut conn = None;
    let started = Instant::now();
    let (mut entries, mut pages) = (0, 0);
    for c in 0..p.collections {
        let (n, k) = list_range(client, &mut conn, p, &format!("c{c}"), p.first_seqno, to).await?;
        entries += n;
        pages += k;
        pb.set_position(entries);
    }
    pb.finish_and_clear();
    Ok(Wide {
        entries,
        pages,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Phase 5's measurements.
struct SlowJs {
    to_ready_app: Duration,
    alone: Phase,
    beside: Phase,
    slow: Phase,
}

impl SlowJs {
    fn ratio(&self) -> f64 {
        self.beside.rps() / self.alone.rps().max(1e-9)
    }
    fn to_json(&self) -> Value {
        let phase = |p: &Phase| {
            let mut l = p.latencies_us.clone();
            json!({"rps": p.rps(), "requests": p.requests, "errors": p.errors,
                   "latency": percentiles(&mut l)})
        };
        json!({
            "restart_to_ready_app_s": self.to_ready_app.as_secs_f64(),
            "connections": APPEND_CONNECTIONS,
            "slow_callers": SLOW_CALLERS,
            "slow_handler_ms": SLOW_MS,
            "seconds": SLOW_SECONDS,
            "appends_alone": phase(&self.alone),
            "appends_beside_slow_js": phase(&self.beside),
            "slow_calls": phase(&self.slow),
            "ratio": self.ratio(),
            "target": SLOW_TARGET,
        })
    }
}

/// The JavaScript app of phase 5: POST /app/slow computes [`SLOW_MS`] ms, then writes
/// one key.
fn write_slow_app(dir: &Path) -> Result<()> {
    let metadata = json!({"endpoints": {"/slow": {"post": {
        "js_module": "slow.js", "js_function": "slow", "authn_policies": ["user_cert"],
        "forwarding_required": "sometimes", "mode": "readwrite"}}}});
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(dir.join("app.json"), metadata.to_string())?;
    std::fs::write(
        dir.join("src/slow.js"),
        format!(
            r#"export function slow(request) {{
  ccf.enableUntrustedDateTime(true);
  const {{ caller }} = request.body.json();
  const end = Date.now() + {SLOW_MS};
  let spins = 0;
  while (Date.now() < end) {{ spins++; }}
  ccf.kv["scale_bench_slow"].set(ccf.strToBuf("caller" + caller), ccf.strToBuf(String(spins)));
  return {{ body: {{ spins }} }};
}}
"#
        ),
    )?;
    Ok(())
}

/// Phase 5: appends alone, then beside callers of a slow JavaScript handler.
fn slow_js(runtime: &tokio::runtime::Runtime, dir: &Path, entry_bytes: usize) -> Result<SlowJs> {
    let app = tempfile::Builder::new()
        .prefix("covenant-scale-app-")
        .tempdir()
        .context("creating the app's directory")?;
    write_slow_app(app.path())?;
    let started = Started::start(
        runtime,
        dir,
        Some(app.path()),
        "restarting covenant dev with the slow JavaScript app",
    )?;
    let client = started.client.clone();
    let body = json!({"contents": "x".repeat(entry_bytes)})
        .to_string()
        .into_bytes();
    let appends = move || {
        let body = body.clone();
        move |_: usize, _: u64| {
            let body = body.clone();
            async move {
                (
                    "POST",
                    format!("/app/transactions?api-version={API}"),
                    Some(body),
                )
            }
        }
    };
    let (alone, beside, slow) = runtime.block_on(async {
        let pb = spinner("appends alone");
        let alone = drive(
            &client,
            APPEND_CONNECTIONS,
            SLOW_SECONDS,
            None,
            appends(),
            |_, _| {},
        )
        .await?;
        pb.finish_and_clear();
        eprintln!("scale-bench: appends alone {:.0} req/s", alone.rps());
        let pb = spinner("appends beside slow JavaScript");
        let slow_calls = drive(
            &client,
            SLOW_CALLERS,
            SLOW_SECONDS,
            None,
            |i, _| async move {
                (
                    "POST",
                    "/app/slow".to_string(),
                    Some(format!("{{\"caller\":{i}}}").into_bytes()),
                )
            },
            |_, _| {},
        );
        let with = drive(
            &client,
            APPEND_CONNECTIONS,
            SLOW_SECONDS,
            None,
            appends(),
            |_, _| {},
        );
        let (beside, slow) = tokio::join!(with, slow_calls);
        pb.finish_and_clear();
        Ok::<_, anyhow::Error>((alone, beside?, slow?))
    })?;
    eprintln!(
        "scale-bench: appends beside slow JavaScript {:.0} req/s ({:.0} slow calls/s)",
        beside.rps(),
        slow.rps()
    );
    if slow.requests == 0 {
        bail!(
            "no call of the slow JavaScript handler succeeded ({} failed)",
            slow.errors
        );
    }
    let to_ready_app = started.to_ready_app;
    started.node.stop()?;
    Ok(SlowJs {
        to_ready_app,
        alone,
        beside,
        slow,
    })
}

fn print_table(report: &Value, p: &Prefill, ranged: &Ranged, wide: &Wide, slow: Option<&SlowJs>) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    let row = |name: &str, value: String| println!("{name:<36} {value}");
    println!(
        "covenant scale-bench: {} entries of {} B in {} collections ({} ledger, {} seqnos)",
        p.entries,
        p.entry_bytes,
        p.collections,
        report["ledger"].as_str().unwrap_or(""),
        u(&report["seqnos"])
    );
    let pf = &report["prefill"];
    row(
        "prefill",
        if pf["reused"].as_bool().unwrap_or(false) {
            format!("reused (made at {:.0} entries/s)", f(&pf["entries_per_s"]))
        } else {
            format!(
                "{:.0} entries/s ({:.1} s)",
                f(&pf["entries_per_s"]),
                f(&pf["seconds"])
            )
        },
    );
    row(
        "  on disk",
        format!(
            "ledger {} ({:.0} B/entry), snapshots {}",
            mib(u(&pf["ledger_bytes"])),
            f(&pf["ledger_bytes_per_entry"]),
            mib(u(&pf["snapshot_bytes"]))
        ),
    );
    let r = &report["restart"];
    row(
        "restart to ready line",
        format!("{:.2} s", f(&r["to_ready_line_s"])),
    );
    row(
        "restart to /node/ready/app 2xx",
        format!(
            "{:.2} s ({:.1} us/entry)",
            f(&r["to_ready_app_s"]),
            f(&r["us_per_entry"])
        ),
    );
    row(
        "RSS after ready",
        format!(
            "{} ({:.0} B/entry; peak {})",
            mib(u(&r["rss_bytes"])),
            f(&r["rss_bytes_per_entry"]),
            mib(u(&r["rss_peak_bytes"]))
        ),
    );
    let q = |name: &str, us: &[u64], entries: u64| {
        row(
            name,
            format!(
                "p50 {:.2} ms  p90 {:.2} ms  ({entries} entries, {REPEATS} runs)",
                quantile_ms(us, 0.5),
                quantile_ms(us, 0.9)
            ),
        )
    };
    q(
        &format!("ranged query {}, oldest", ranged.collection),
        &ranged.oldest_us,
        ranged.oldest_entries,
    );
    q(
        &format!("ranged query {}, newest", ranged.collection),
        &ranged.newest_us,
        ranged.newest_entries,
    );
    row("  oldest / newest (p50)", format!("{:.2}", ranged.ratio()));
    row(
        "100k-entry ranged query",
        format!(
            "{} entries in {} pages, {:.1} s ({:.0} entries/s)",
            wide.entries,
            wide.pages,
            wide.seconds,
            wide.entries as f64 / wide.seconds.max(1e-9)
        ),
    );
    let w = &report["wide_query"];
    row(
        "RSS after it",
        format!(
            "{} (peak {})",
            mib(u(&w["rss_bytes"])),
            mib(u(&w["rss_peak_bytes"]))
        ),
    );
    match slow {
        None => row("appends beside slow JS", "skipped (--skip-slow-js)".into()),
        Some(s) => {
            let ph = |name: &str, p: &Phase| {
                row(
                    name,
                    format!(
                        "{:>8.0} req/s  p50 {:.2} ms  p90 {:.2} ms  errors {}",
                        p.rps(),
                        quantile_ms(&p.latencies_us, 0.5),
                        quantile_ms(&p.latencies_us, 0.9),
                        p.errors
                    ),
                )
            };
            row(
                "restart with the JS app, to ready",
                format!("{:.2} s", s.to_ready_app.as_secs_f64()),
            );
            ph(
                &format!("appends alone ({APPEND_CONNECTIONS} conns)"),
                &s.alone,
            );
            ph(
                &format!("appends beside {SLOW_CALLERS} slow callers"),
                &s.beside,
            );
            ph(&format!("  slow JS calls ({SLOW_MS} ms each)"), &s.slow);
            let verdict = if s.ratio() >= SLOW_TARGET {
                "met"
            } else {
                "NOT met"
            };
            row(
                "  beside / alone",
                format!("{:.2} (target >= {SLOW_TARGET:.2}: {verdict})", s.ratio()),
            );
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Bytes of the files under `dir` (0 when absent).
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(read) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in read.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => dirs.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

fn spinner(what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(what.to_string());
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}
