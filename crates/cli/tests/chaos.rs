//! The fault-injection harness (`covenant chaos`) as tests: the short schedule that
//! runs on every change, and the schedules that found defects, each written as the
//! failing schedule so the defect cannot return unnoticed. Each run starts its own
//! network of real processes on 127.0.0.1 and checks the whole history (see
//! `docs/RELIABILITY.md`). Disk rounds mount tmpfs (root); clock and fsync rounds
//! build a preload library with the system C compiler.

use std::process::Command;

/// One network at a time: each run already keeps both cores busy.
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `covenant chaos` with `args` and returns its JSON report; a violation fails
/// the test with the harness's own evidence.
fn chaos(name: &str, args: &[&str]) -> serde_json::Value {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join(format!("{name}.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_covenant"))
        .arg("chaos")
        .args(args)
        .arg("--report")
        .arg(&report)
        .output()
        .expect("run covenant chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "covenant chaos {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let c = &r["counts"];
    assert_eq!(c["lost"], 0, "{stdout}");
    assert_eq!(c["changed"], 0, "{stdout}");
    assert_eq!(c["duplicated"], 0, "{stdout}");
    assert!(
        c["appends_committed"].as_u64().unwrap() > 100,
        "too little was written to tell anything:\n{stdout}"
    );
    assert_eq!(r["ledgers_audited"], r["nodes"], "{stdout}");
    assert!(r["receipts_verified"].as_u64().unwrap() > 0, "{stdout}");
    r
}

/// The short schedule of `scripts/test`: every fault type, on three nodes.
#[test]
fn the_short_schedule_loses_nothing_acknowledged() {
    let r = chaos("short", &["--seed", "11"]);
    for fault in ["kill", "partition", "pause", "disk", "clock", "fsync"] {
        assert!(
            r["per_fault"][fault]["rounds"].as_u64().unwrap_or(0) > 0,
            "no {fault} round ran"
        );
    }
}

/// Arguments for a schedule of `rounds` rounds of one fault type only.
fn only(fault: &str, rounds: u32, seed: u64, fault_secs: u32) -> Vec<String> {
    let mut args = vec!["--seed".to_string(), seed.to_string()];
    for f in ["kill", "partition", "pause", "disk", "clock", "fsync"] {
        let n = if f == fault { rounds } else { 0 };
        args.extend([format!("--{f}"), n.to_string()]);
    }
    args.extend(["--fault-secs".into(), fault_secs.to_string()]);
    args.extend(["--settle-secs".into(), "1".into()]);
    args
}

fn run_only(name: &str, fault: &str, rounds: u32, seed: u64, fault_secs: u32) {
    let args = only(fault, rounds, seed, fault_secs);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    chaos(name, &args);
}

/// Found by the external check: right after a restart a node reported its commit
/// point as 0 (or its last snapshot) until it heard from the primary, so a TxId it
/// had called Committed was not any more. The checker flags any observer that
/// sees a node's commit point or a TxId's status go back; with the previous binary
/// (`--node-binary`) this schedule reports both, and ranged reads missing
/// committed entries.
#[test]
fn restarted_nodes_never_report_less_committed() {
    run_only("restarts", "kill", 4, 23, 1);
}

/// Found by the external check: a write sent to a cut-off node waited for as long
/// as the partition lasted (forwarding had no bound and never looked again for the
/// primary). Each partition here holds 6 s; writes to the cut-off side must be
/// answered before it ends.
#[test]
fn writes_to_a_cut_off_node_are_answered_during_the_partition() {
    run_only("partitions", "partition", 3, 29, 6);
}

/// Found by the harness: the first ENOSPC stopped a node's replication for good; a
/// disk-full primary kept the primary role and refused every write; a deposed
/// primary called a TxId Invalid that then committed; a node waiting for space was
/// still taken for the primary. Four rounds, twice just under the reserve and twice
/// to the last byte, the primary mostly: refused with 507, no node stops, writes
/// resume once space returns.
#[test]
fn a_full_disk_refuses_writes_and_resumes_without_a_restart() {
    run_only("disk", "disk", 4, 1, 3);
}
