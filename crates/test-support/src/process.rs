//! The `covenant` binary run as real processes: one-shot commands, servers started
//! and waited for until ready, and reaping so that a failing test leaves no process
//! behind (an orphan would hold the test's output pipes open and its ports bound).
//!
//! Every function that runs the binary takes its path, `bin`: pass
//! `env!("CARGO_BIN_EXE_covenant")` from the CLI crate's tests.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::BufRead;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

/// A port on 127.0.0.1 that was free a moment ago: for a server the test starts
/// itself, which must be told its port up front.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The first of `n` consecutive free ports on 127.0.0.1 (a `covenant dev --nodes n`
/// network takes `port..port+n`).
pub fn free_ports(n: u16) -> u16 {
    for _ in 0..50 {
        let base = free_port();
        if base > 65000 {
            continue;
        }
        if (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no free port range");
}

/// `bin <args>` run to its end, its output captured.
pub fn run(bin: impl AsRef<OsStr>, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().expect("run covenant")
}

/// What a process printed, stdout then stderr: where the tests look for messages
/// whichever stream they went to.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The stdout of a process that must have succeeded (else the test fails with all
/// it printed).
pub fn ok(o: Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Asks process `pid` to stop as Ctrl-C would (SIGTERM); whether it exists is not
/// checked.
pub fn term(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// Starts `bin <args>` and returns once it printed a line containing `ready` (its
/// stdout keeps being drained so it never blocks on a full pipe; what it prints
/// later is kept for [`printed_since_ready`]).
pub fn start_and_wait(bin: impl AsRef<OsStr>, args: &[&str]) -> Child {
    let mut child = Command::new(bin)
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
    let pid = child.id();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            outputs()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(pid)
                .or_default()
                .push(line);
        }
    });
    child
}

fn outputs() -> &'static Mutex<HashMap<u32, Vec<String>>> {
    static O: OnceLock<Mutex<HashMap<u32, Vec<String>>>> = OnceLock::new();
    O.get_or_init(Default::default)
}

/// What a process started by [`start_and_wait`] printed after its ready line.
pub fn printed_since_ready(pid: u32) -> Vec<String> {
    outputs()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&pid)
        .cloned()
        .unwrap_or_default()
}

/// A running `covenant dev`, killed if a test panics before [`stop`] (an orphan
/// would hold the test's output pipes open).
pub struct Dev(Option<Child>);

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `bin dev` in `dir` on a free port, with `extra` options; returns it (ready) and
/// the port.
pub fn dev(bin: impl AsRef<OsStr>, dir: &Path, extra: &[&str]) -> (Dev, String) {
    let port = free_port().to_string();
    let mut args = vec!["dev", "--data-dir", dir.to_str().unwrap(), "--port", &port];
    args.extend_from_slice(extra);
    (Dev(Some(start_and_wait(bin, &args))), port)
}

/// Stops `dev` as Ctrl-C would; it must exit cleanly.
pub fn stop(mut dev: Dev) {
    let Some(mut child) = dev.0.take() else {
        return;
    };
    term(child.id());
    assert!(child.wait().unwrap().success());
}

/// Kills (SIGKILL) every process it holds when dropped, so a failing test leaves
/// none behind: for the node processes a `covenant dev --nodes N` starts, which are
/// not its children's children the test could wait for.
#[derive(Default)]
pub struct Reaper(Mutex<Vec<u32>>);

impl Reaper {
    /// Kills `pid` when the reaper is dropped.
    pub fn watch(&self, pid: u32) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// The pid of node `node` of the `covenant dev --nodes N` in `dir` (from the
/// `node<N>/node.pid` it writes).
pub fn pid_of(dir: &Path, node: u16) -> u32 {
    std::fs::read_to_string(dir.join(format!("node{node}/node.pid")))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `bin dev --nodes 3` in `dir` on ports `base..base+3` (signatures every 100 ms),
/// ready, its processes watched by the returned reaper.
pub fn dev_network(
    bin: impl AsRef<OsStr>,
    dir: &Path,
    base: u16,
    extra: &[&str],
) -> (Child, Reaper) {
    let base = base.to_string();
    let mut args = vec![
        "dev",
        "--nodes",
        "3",
        "--data-dir",
        dir.to_str().unwrap(),
        "--port",
        &base,
        "--sig-ms-interval",
        "100",
    ];
    args.extend_from_slice(extra);
    let dev = start_and_wait(bin, &args);
    let reaper = Reaper::default();
    reaper.watch(dev.id());
    for node in 1..=3 {
        reaper.watch(pid_of(dir, node));
    }
    (dev, reaper)
}
