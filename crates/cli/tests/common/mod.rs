//! Helpers shared by the CLI's end-to-end tests.

use std::process::{Child, Command, Stdio};

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
