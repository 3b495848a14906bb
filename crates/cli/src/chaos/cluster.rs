//! The network under test: real `covenant node start` processes whose node-to-node
//! links all go through proxies the harness can cut, data directories on small
//! tmpfs mounts the harness can fill, and a preload library that shifts a node's
//! wall clock or fails its fsyncs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use covenant_client::{LedgerClient, ReceiptVerifier};
use covenant_crypto::{Certificate, SigningKeyPair};

/// A node's process and what the nemesis did to it.
struct NodeProc {
    child: Option<Child>,
    paused: bool,
    /// How its last run ended, when the harness did not end it (an exit status).
    exited: Option<String>,
}

/// One direction of one node pair: `from` dials `to` through this proxy.
struct Link {
    port: u16,
    cut: Arc<AtomicBool>,
}

pub struct Cluster {
    pub exe: PathBuf,
    pub work: PathBuf,
    pub net: PathBuf,
    pub n: u16,
    nodes: Vec<NodeProc>,
    links: BTreeMap<(u16, u16), Link>,
    mounts: Vec<PathBuf>,
    shim: Option<PathBuf>,
    pub service_cert: Certificate,
    clients: Vec<LedgerClient>,
    /// Node i listens on `base + i - 1`.
    base: u16,
}

/// tmpfs size per node when disk faults are scheduled.
const DISK_MB: u64 = 256;
/// The node's reserve on that disk (`min_free_mb`).
pub const MIN_FREE_MB: u64 = 8;

fn sh(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// The first of `n` consecutive free ports on 127.0.0.1.
fn free_ports(n: u16) -> Result<u16> {
    for _ in 0..100 {
        let base = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        if base > 60000 {
            continue;
        }
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return Ok(base);
        }
    }
    bail!("no range of {n} free ports on 127.0.0.1")
}

async fn run_link(listener: tokio::net::TcpListener, to_port: u16, cut: Arc<AtomicBool>) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let cut = cut.clone();
        tokio::spawn(async move {
            let healed = |cut: Arc<AtomicBool>| async move {
                while cut.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            if cut.load(Ordering::SeqCst) {
                // Packets into a cut link vanish: hold the socket silently.
                healed(cut).await;
                return;
            }
            let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to_port)).await
            else {
                return;
            };
            let watch = {
                let cut = cut.clone();
                async move {
                    while !cut.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                () = watch => {
                    // Stop forwarding but keep both ends open: the sender sees
                    // silence (timeouts), not a reset, as in a real partition.
                    healed(cut).await;
                }
            }
        });
    }
}

impl Cluster {
    /// Creates a network of `n` nodes with `covenant dev` in `work/net`, then
    /// rewires it: node-to-node traffic through proxies, data on tmpfs when `disk`.
    pub async fn create(
        exe: &Path,
        work: &Path,
        n: u16,
        disk: bool,
        shim: bool,
    ) -> Result<Cluster> {
        let net = work.join("net");
        let base = free_ports(n)?;
        std::fs::create_dir_all(work.join("logs"))?;
        std::fs::create_dir_all(work.join("ctl"))?;
        let log = std::fs::File::create(work.join("logs/dev.log"))?;
        let mut dev = Command::new(exe)
            .args([
                "dev",
                "--nodes",
                &n.to_string(),
                "--port",
                &base.to_string(),
            ])
            .args(["--sig-ms-interval", "100", "--data-dir"])
            .arg(&net)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting covenant dev")?;
        {
            use std::io::BufRead;
            let out = dev.stdout.take().context("dev stdout")?;
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut seen = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(l) if l.starts_with("covenant dev ready") => break,
                    Ok(l) => seen.push(l),
                    Err(e) => {
                        let _ = dev.kill();
                        let _ = dev.wait();
                        let why = match e {
                            std::sync::mpsc::RecvTimeoutError::Timeout => "not within 120 s",
                            std::sync::mpsc::RecvTimeoutError::Disconnected => "it exited",
                        };
                        bail!(
                            "covenant dev did not get its network ready ({why}); it printed:\n{}\n(see {}/logs/dev.log and {}/node*/node.log)",
                            seen.join("\n"),
                            work.display(),
                            net.display()
                        );
                    }
                }
            }
            signal(dev.id(), rustix::process::Signal::TERM);
            let status = dev.wait()?;
            if !status.success() {
                bail!("covenant dev did not stop cleanly: {status}");
            }
        }
        let service_pem = std::fs::read_to_string(net.join("service_cert.pem"))?;
        let service_cert = Certificate::from_pem(&service_pem)?;
        let user_cert =
            Certificate::from_pem(&std::fs::read_to_string(net.join("user0_cert.pem"))?)?;
        let user_key =
            SigningKeyPair::from_pem(&std::fs::read_to_string(net.join("user0_privk.pem"))?)?;
        let mut links = BTreeMap::new();
        for i in 1..=n {
            for j in 1..=n {
                if i == j {
                    continue;
                }
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let port = listener.local_addr()?.port();
                let cut = Arc::new(AtomicBool::new(false));
                tokio::spawn(run_link(listener, base + j - 1, cut.clone()));
                links.insert((i, j), Link { port, cut });
            }
        }
        let mut cluster = Cluster {
            exe: exe.to_path_buf(),
            work: work.to_path_buf(),
            net: net.clone(),
            n,
            nodes: (0..n)
                .map(|_| NodeProc {
                    child: None,
                    paused: false,
                    exited: None,
                })
                .collect(),
            links,
            mounts: Vec::new(),
            shim: None,
            service_cert: service_cert.clone(),
            clients: Vec::new(),
            base,
        };
        for i in 1..=n {
            cluster.rewrite_config(i, disk)?;
            if disk {
                cluster.mount_tmpfs(i)?;
            }
            std::fs::write(cluster.ctl(i), "0 0")?;
        }
        if shim {
            cluster.shim = Some(cluster.build_shim()?);
        }
        for i in 1..=n {
            let c = LedgerClient::new(
                &format!("https://127.0.0.1:{}", base + i - 1),
                &service_cert,
                Some((&user_cert, &user_key)),
            )?;
            cluster.clients.push(c);
        }
        Ok(cluster)
    }

    pub fn node_dir(&self, i: u16) -> PathBuf {
        self.net.join(format!("node{i}"))
    }

    fn ctl(&self, i: u16) -> PathBuf {
        self.work.join(format!("ctl/node{i}"))
    }

    pub fn client(&self, i: u16) -> &LedgerClient {
        &self.clients[usize::from(i - 1)]
    }

    /// A client of node `i` without a certificate: governance requests carry their
    /// signature in the body.
    pub fn member_client(&self, i: u16) -> Result<LedgerClient> {
        Ok(LedgerClient::new(
            &format!("https://127.0.0.1:{}", self.base + i - 1),
            &self.service_cert,
            None,
        )?)
    }

    pub fn verifier(&self) -> ReceiptVerifier {
        ReceiptVerifier::new(self.service_cert.clone())
    }

    /// Peers through this node's proxies; a small disk reserve on the small disks.
    fn rewrite_config(&self, i: u16, small_disk: bool) -> Result<()> {
        let path = self.node_dir(i).join("node.toml");
        let text = std::fs::read_to_string(&path)?;
        let mut out = String::new();
        for line in text.lines() {
            let mut line = line.to_string();
            for j in 1..=self.n {
                if j != i && line.trim_start().starts_with(&format!("{{ id = {j},")) {
                    line = format!(
                        "  {{ id = {j}, address = \"127.0.0.1:{}\" }},",
                        self.links[&(i, j)].port
                    );
                }
            }
            if small_disk && line.starts_with("[network]") {
                out.push_str(&format!("min_free_mb = {MIN_FREE_MB}\n\n"));
            }
            out.push_str(&line);
            out.push('\n');
        }
        std::fs::write(&path, out)?;
        Ok(())
    }

    fn mount_tmpfs(&mut self, i: u16) -> Result<()> {
        let dir = self.node_dir(i);
        let aside = self.net.join(format!("node{i}.orig"));
        std::fs::rename(&dir, &aside)?;
        std::fs::create_dir(&dir)?;
        sh(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_MB}m"), "tmpfs"])
            .arg(&dir))
        .context("mounting a tmpfs for a node's data (disk-full rounds need root, or --disk 0)")?;
        self.mounts.push(dir.clone());
        sh(Command::new("cp").arg("-a").arg(aside.join(".")).arg(&dir))?;
        std::fs::remove_dir_all(&aside)?;
        Ok(())
    }

    fn build_shim(&self) -> Result<PathBuf> {
        let src = self.work.join("faultshim.c");
        std::fs::write(&src, include_str!("faultshim.c"))?;
        let out = self.work.join("faultshim.so");
        sh(Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&out)
            .arg(&src)
            .arg("-ldl"))
        .context(
            "building the clock/fsync fault library (needs a C compiler; or --clock 0 --fsync 0)",
        )?;
        Ok(out)
    }

    pub fn pid(&self, i: u16) -> Option<u32> {
        self.nodes[usize::from(i - 1)]
            .child
            .as_ref()
            .map(|c| c.id())
    }

    pub fn running(&self, i: u16) -> bool {
        self.nodes[usize::from(i - 1)].child.is_some()
    }

    /// Starts node `i` (its log appended to `logs/node<i>.log`).
    pub fn start(&mut self, i: u16) -> Result<()> {
        let log_path = self.work.join(format!("logs/node{i}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(["node", "start", "--config"])
            .arg(self.node_dir(i).join("node.toml"))
            .env("COVENANT_CHAOS_CTL", self.ctl(i))
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(shim) = &self.shim {
            cmd.env("LD_PRELOAD", shim);
        }
        let child = cmd.spawn().context("starting a node")?;
        let p = &mut self.nodes[usize::from(i - 1)];
        p.child = Some(child);
        p.paused = false;
        Ok(())
    }

    /// Waits until node `i` answers over HTTPS (or its process exits).
    pub async fn wait_up(&mut self, i: u16, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.reap(i) {
                bail!("node {i} exited while starting: {status} (see logs/node{i}.log)");
            }
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                self.client(i).request("GET", "/node/commit", None),
            )
            .await;
            if matches!(r, Ok(Ok(ref resp)) if resp.status == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("node {i} did not answer within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// If node `i`'s process ended by itself: how (and it is no longer running).
    pub fn reap(&mut self, i: u16) -> Option<String> {
        let p = &mut self.nodes[usize::from(i - 1)];
        let child = p.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                p.child = None;
                let s = status.to_string();
                p.exited = Some(s.clone());
                Some(s)
            }
            _ => None,
        }
    }

    pub fn kill(&mut self, i: u16) {
        let p = &mut self.nodes[usize::from(i - 1)];
        if let Some(mut c) = p.child.take() {
            if p.paused {
                signal(c.id(), rustix::process::Signal::CONT);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        p.paused = false;
    }

    /// Stops node `i` gracefully (it signs and flushes); true if it exited cleanly.
    pub fn terminate(&mut self, i: u16) -> bool {
        let p = &mut self.nodes[usize::from(i - 1)];
        let Some(mut c) = p.child.take() else {
            return false;
        };
        if p.paused {
            signal(c.id(), rustix::process::Signal::CONT);
            p.paused = false;
        }
        signal(c.id(), rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match c.try_wait() {
                Ok(Some(s)) => return s.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return false;
                }
            }
        }
    }

    pub fn pause(&mut self, i: u16) {
        if let Some(pid) = self.pid(i) {
            signal(pid, rustix::process::Signal::STOP);
            self.nodes[usize::from(i - 1)].paused = true;
        }
    }

    pub fn resume(&mut self, i: u16) {
        if let Some(pid) = self.pid(i) {
            signal(pid, rustix::process::Signal::CONT);
        }
        self.nodes[usize::from(i - 1)].paused = false;
    }

    /// Cuts every link between `a` and `b` (both directions).
    pub fn partition(&self, a: &[u16], b: &[u16]) {
        for &i in a {
            for &j in b {
                for key in [(i, j), (j, i)] {
                    if let Some(l) = self.links.get(&key) {
                        l.cut.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
    }

    pub fn heal(&self) {
        for l in self.links.values() {
            l.cut.store(false, Ordering::SeqCst);
        }
    }

    /// Shifts node `i`'s wall clock by `offset_s` and/or fails its fsyncs.
    pub fn set_faults(&self, i: u16, offset_s: i64, fail_fsync: bool) -> Result<()> {
        let tmp = self.ctl(i).with_extension("tmp");
        std::fs::write(&tmp, format!("{offset_s} {}", u8::from(fail_fsync)))?;
        std::fs::rename(&tmp, self.ctl(i))?;
        Ok(())
    }

    fn filler(&self, i: u16) -> PathBuf {
        self.node_dir(i).join("chaos.fill")
    }

    /// Bytes free on node `i`'s data disk.
    pub fn free_bytes(&self, i: u16) -> Result<u64> {
        let st = rustix::fs::statvfs(self.node_dir(i))?;
        Ok(st.f_bavail * st.f_frsize)
    }

    /// Fills node `i`'s disk until `leave` bytes are free (0: completely).
    pub fn fill_disk(&self, i: u16, leave: u64) -> Result<()> {
        use std::io::Write;
        let path = self.filler(i);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let chunk = vec![0xA5u8; 1 << 20];
        loop {
            let free = self.free_bytes(i)?;
            if free <= leave {
                break;
            }
            let n = ((free - leave) as usize).min(chunk.len());
            match f.write(&chunk[..n]) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    pub fn free_disk(&self, i: u16) {
        let _ = std::fs::remove_file(self.filler(i));
    }

    /// The node that answers `GET /node/primary` with 200, if one does.
    pub async fn primary(&self) -> Option<u16> {
        for i in 1..=self.n {
            if !self.running(i) || self.nodes[usize::from(i - 1)].paused {
                continue;
            }
            let r = tokio::time::timeout(
                Duration::from_secs(1),
                self.client(i).request("GET", "/node/primary", None),
            )
            .await;
            if matches!(r, Ok(Ok(ref resp)) if resp.status == 200) {
                return Some(i);
            }
        }
        None
    }

    /// Node `i`'s committed seqno, if it answers.
    pub async fn committed(&self, i: u16) -> Option<u64> {
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            self.client(i).request("GET", "/node/commit", None),
        )
        .await
        .ok()?
        .ok()?;
        let txid = r.json()["transaction_id"].as_str()?.to_string();
        txid.split_once('.')?.1.parse().ok()
    }

    /// Copies the data of tmpfs-mounted nodes next to the work directory so that
    /// evidence outlives the mounts.
    pub fn keep_data(&self) {
        for (k, dir) in self.mounts.iter().enumerate() {
            let to = self.work.join(format!("kept/node{}", k + 1));
            let _ = std::fs::create_dir_all(&to);
            let _ = Command::new("cp")
                .arg("-a")
                .arg(dir.join("."))
                .arg(&to)
                .status();
        }
    }

    /// Ends every process and removes every mount (also on error paths, by Drop).
    pub fn shutdown(&mut self) {
        for i in 1..=self.n {
            self.kill(i);
        }
        self.heal();
        for m in self.mounts.drain(..) {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}
