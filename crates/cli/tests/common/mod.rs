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
    std::thread::spawn(move || for _ in lines {});
    child
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
