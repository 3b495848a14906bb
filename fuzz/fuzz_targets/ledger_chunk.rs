#![no_main]
//! A chunk file with arbitrary contents: opening and scanning never panic, and
//! never yield more entries than the bytes could hold.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // One scratch directory per fuzzing process, reset for every input.
    let dir = std::env::temp_dir().join(format!("covenant-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let name = if data.first().is_some_and(|b| b & 1 == 1) {
        "ledger_1-3.committed"
    } else {
        "ledger_1"
    };
    if std::fs::write(dir.join(name), data).is_err() {
        return;
    }
    if let Ok(scanner) = covenant_ledger::ChunkScanner::open(&dir) {
        let n = scanner.take(100_000).filter(|e| e.is_ok()).count();
        assert!(n * 25 <= data.len());
    }
    let _ = covenant_ledger::Ledger::open(covenant_ledger::LedgerConfig::new(&dir));
});
