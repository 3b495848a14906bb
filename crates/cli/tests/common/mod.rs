//! Helpers shared by the CLI's end-to-end tests: covenant-test-support's process
//! helpers bound to this crate's `covenant` binary (whose path only these tests
//! know), and the member0 calls of a `covenant dev`.

// Each test file uses its own part of this module.
#![allow(dead_code, unused_imports)]

use std::path::Path;
use std::process::{Child, Output};

pub use covenant_test_support::{
    free_port, free_ports, ok, pid_of, printed_since_ready, stop, term, text, Dev, Reaper,
};

/// The `covenant` binary under test.
pub const COVENANT: &str = env!("CARGO_BIN_EXE_covenant");

/// `covenant <args>` run to its end.
pub fn covenant(args: &[&str]) -> Output {
    covenant_test_support::run(COVENANT, args)
}

/// Starts `covenant <args>` and returns once it printed its ready line.
pub fn start_and_wait(args: &[&str]) -> Child {
    covenant_test_support::start_and_wait(COVENANT, args)
}

/// `covenant dev` in `dir` on a free port, with `extra` options; returns it and the port.
pub fn dev(dir: &Path, extra: &[&str]) -> (Dev, String) {
    covenant_test_support::dev(COVENANT, dir, extra)
}

/// `covenant dev --nodes 3` in `dir` on ports `base..base+3`, its processes reaped.
pub fn dev_network(dir: &Path, base: u16, extra: &[&str]) -> (Child, Reaper) {
    covenant_test_support::dev_network(COVENANT, dir, base, extra)
}

/// `covenant <extra> --endpoint .. --service-cert .. --member-cert/--member-key` as
/// member0 of the `covenant dev` in `dir`.
pub fn as_member0(dir: &Path, endpoint: &str, extra: &[&str]) -> Output {
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
