//! Helpers shared by the CLI's end-to-end tests.

use std::process::{Child, Command, Output, Stdio};

/// Starts `covenant <args>` and returns once it printed a line containing `ready`
/// (its stdout keeps being drained so it never blocks on a full pipe).
pub fn start_and_wait(args: &[&str]) -> Child {
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

fn outputs() -> &'static std::sync::Mutex<std::collections::HashMap<u32, Vec<String>>> {
    static O: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<u32, Vec<String>>>> =
        std::sync::OnceLock::new();
    O.get_or_init(Default::default)
}

/// What a process started by [`start_and_wait`] printed after its ready line.
#[allow(dead_code)]
pub fn printed_since_ready(pid: u32) -> Vec<String> {
    outputs()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&pid)
        .cloned()
        .unwrap_or_default()
}

#[allow(dead_code)]
pub fn covenant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_covenant"))
        .args(args)
        .output()
        .expect("run covenant")
}

#[allow(dead_code)]
pub fn ok(o: Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// A running `covenant dev`, killed if a test panics before [`stop`] (an orphan
/// would hold the test's output pipes open).
#[allow(dead_code)]
pub struct Dev(Option<std::process::Child>);

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `covenant dev` in `dir` on a free port, with `extra` options; returns it and the port.
#[allow(dead_code)]
pub fn dev(dir: &std::path::Path, extra: &[&str]) -> (Dev, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut args = vec!["dev", "--data-dir", dir.to_str().unwrap(), "--port", &port];
    args.extend_from_slice(extra);
    (Dev(Some(start_and_wait(&args))), port)
}

/// Stops `dev` as Ctrl-C would; it must exit cleanly.
#[allow(dead_code)]
pub fn stop(mut dev: Dev) {
    let Some(mut child) = dev.0.take() else {
        return;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}

/// `covenant <extra> --endpoint .. --service-cert .. --member-cert/--member-key` as
/// member0 of the `covenant dev` in `dir`.
#[allow(dead_code)]
pub fn as_member0(dir: &std::path::Path, endpoint: &str, extra: &[&str]) -> Output {
    let files = ["service_cert.pem", "member0_cert.pem", "member0_privk.pem"]
        .map(|f| dir.join(f).to_str().unwrap().to_string());
    let mut args: Vec<&str> = extra.to_vec();
    args.extend([
        "--endpoint",
        endpoint,
        "--service-cert",
        &files[0],
        "--member-cert",
        &files[1],
        "--member-key",
        &files[2],
    ]);
    covenant(&args)
}

/// The first of `n` consecutive free ports on 127.0.0.1.
#[allow(dead_code)]
pub fn free_ports(n: u16) -> u16 {
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

/// Kills every process it holds when dropped, so a failing test leaves none behind.
#[allow(dead_code)]
#[derive(Default)]
pub struct Reaper(std::sync::Mutex<Vec<u32>>);

#[allow(dead_code)]
impl Reaper {
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

/// The pid of node `node` of the `covenant dev --nodes N` in `dir`.
#[allow(dead_code)]
pub fn pid_of(dir: &std::path::Path, node: u16) -> u32 {
    std::fs::read_to_string(dir.join(format!("node{node}/node.pid")))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `covenant dev --nodes 3` in `dir` on ports `base..base+3` (signatures every
/// 100 ms), its processes watched by the returned reaper.
#[allow(dead_code)]
pub fn dev_network(dir: &std::path::Path, base: u16, extra: &[&str]) -> (Child, Reaper) {
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
    let dev = start_and_wait(&args);
    let reaper = Reaper::default();
    reaper.watch(dev.id());
    for node in 1..=3 {
        reaper.watch(pid_of(dir, node));
    }
    (dev, reaper)
}
