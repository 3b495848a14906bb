//! `LedgerReader`: reads of committed chunks without the `Ledger`, kept up to
//! date by it across commits, archives, truncations and reopens.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use covenant_ledger::{Entry, Ledger, LedgerConfig, LedgerError, LedgerReader, SeqNo, TxId};
use proptest::prelude::*;

const THRESHOLD: u64 = 300;

fn config(dir: &Path, read_only: &[PathBuf], deferred: bool) -> LedgerConfig {
    LedgerConfig {
        chunk_threshold_bytes: THRESHOLD,
        deferred_close: deferred,
        read_only_dirs: read_only.to_vec(),
        ..LedgerConfig::new(dir)
    }
}

fn entry(s: u64) -> Entry {
    Entry {
        txid: TxId::new(1 + s / 40, s),
        is_signature: s % 3 == 0,
        payload: (0..(s * 7 % 50) as usize)
            .map(|i| (s as usize * 31 + i) as u8)
            .collect(),
    }
}

fn append(ledger: &mut Ledger, n: u64) {
    let from = ledger.last_seqno().0 + 1;
    for s in from..from + n {
        let e = entry(s);
        ledger.append(e.txid, e.is_signature, &e.payload).unwrap();
    }
}

/// The end of the last `.committed` chunk file in any of `dirs`.
fn committed_on_disk(dirs: &[&Path]) -> u64 {
    dirs.iter()
        .filter(|d| d.exists())
        .flat_map(|d| fs::read_dir(d).unwrap())
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let range = name.strip_prefix("ledger_")?.strip_suffix(".committed")?;
            range.split_once('-')?.1.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0)
}

/// Every seqno around the ledger's range: the reader answers exactly what the
/// ledger does for committed chunks, and `NotInCommittedChunk` past them.
fn check(reader: &LedgerReader, ledger: &Ledger, dirs: &[&Path]) -> Result<(), TestCaseError> {
    let readable = reader.last_readable();
    prop_assert_eq!(readable.0, committed_on_disk(dirs));
    prop_assert!(readable <= ledger.committed_seqno());
    prop_assert!(matches!(
        reader.read(SeqNo(0)),
        Err(LedgerError::NotFound(SeqNo(0)))
    ));
    for s in 1..=ledger.last_seqno().0 + 2 {
        match reader.read(SeqNo(s)) {
            Ok(e) => {
                prop_assert!(s <= readable.0);
                prop_assert_eq!(&e, &ledger.read(SeqNo(s)).unwrap());
                prop_assert_eq!(e, entry(s));
            }
            Err(LedgerError::NotInCommittedChunk(got)) => {
                prop_assert_eq!(got, SeqNo(s));
                prop_assert!(s > readable.0, "seqno {} of a committed chunk unread", s);
            }
            Err(e) => return Err(TestCaseError::fail(format!("seqno {s}: {e}"))),
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    Append(u64),
    Sync,
    /// Commits this fraction (of 8) of what is synced.
    Commit(u64),
    /// Archives chunks ending before this fraction (of 8) of the committed seqno.
    Archive(u64),
    /// Drops this fraction (of 8) of the uncommitted suffix.
    Truncate(u64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..30).prop_map(Op::Append),
        2 => Just(Op::Sync),
        2 => (1u64..=8).prop_map(Op::Commit),
        1 => (1u64..=8).prop_map(Op::Archive),
        1 => (1u64..=8).prop_map(Op::Truncate),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// One reader taken at open follows every commit, archive and truncation
    /// (a fresh one agrees with it), and after a reopen the new ledger's reader
    /// reads the archived chunks too.
    #[test]
    fn reader_matches_ledger_reads_across_commits_archives_and_reopens(
        deferred: bool,
        ops in proptest::collection::vec(op(), 1..30),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let main = tmp.path().join("ledger");
        let archive = tmp.path().join("archive");
        fs::create_dir_all(&archive).unwrap();
        let dirs = [main.as_path(), archive.as_path()];
        let cfg = config(&main, std::slice::from_ref(&archive), deferred);
        let mut ledger = Ledger::open(cfg.clone()).unwrap().0;
        let mut reader = ledger.reader();
        for op in ops {
            match op {
                Op::Append(n) => append(&mut ledger, n),
                Op::Sync => ledger.sync().unwrap(),
                Op::Commit(f) => {
                    let (c, s) = (ledger.committed_seqno().0, ledger.synced_seqno().0);
                    ledger.commit(SeqNo(c + (s - c) * f / 8)).unwrap();
                }
                Op::Archive(f) => {
                    let before = ledger.committed_seqno().0 * f / 8 + 1;
                    ledger.archive(SeqNo(before), &archive).unwrap();
                }
                Op::Truncate(f) => {
                    let (c, l) = (ledger.committed_seqno().0, ledger.last_seqno().0);
                    ledger.truncate(SeqNo(l - (l - c) * f / 8)).unwrap();
                }
                Op::Reopen => {
                    drop(ledger);
                    ledger = Ledger::open(cfg.clone()).unwrap().0;
                    reader = ledger.reader();
                }
            }
            check(&reader, &ledger, &dirs)?;
            check(&ledger.reader(), &ledger, &dirs)?;
        }
    }
}

/// A ledger in `dir` with 150 synced entries, committed up to 120.
fn fixture(dir: &Path) -> Ledger {
    let mut ledger = Ledger::open(config(dir, &[], false)).unwrap().0;
    append(&mut ledger, 150);
    ledger.sync().unwrap();
    ledger.commit(SeqNo(120)).unwrap();
    ledger
}

fn committed_chunks(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name()?.to_str()?.to_owned();
            let range = name.strip_prefix("ledger_")?.strip_suffix(".committed")?;
            Some((range.split_once('-')?.0.parse().ok()?, path))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_damaged_frame_in_a_committed_chunk_is_an_error_naming_its_seqno() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = fixture(tmp.path());
    let reader = ledger.reader();
    let (first, path) = committed_chunks(tmp.path()).swap_remove(1);
    // The first frame's payload: after the 20-byte chunk header and 21-byte frame header.
    let payload_len = entry(first).payload.len();
    assert!(payload_len > 0);
    let mut bytes = fs::read(&path).unwrap();
    bytes[41 + payload_len / 2] ^= 0x40;
    fs::write(&path, bytes).unwrap();
    match reader.read(SeqNo(first)) {
        Err(
            e @ LedgerError::Corrupt {
                seqno_hint: Some(s),
                ..
            },
        ) => {
            assert_eq!(s, first);
            let shown = e.to_string();
            assert!(shown.contains(&format!(".{first} ")), "{shown}");
            assert!(shown.contains("checksum"), "{shown}");
        }
        other => panic!("{other:?}"),
    }
    // The ledger reports the same damage; the next entry is fine.
    assert!(matches!(
        ledger.read(SeqNo(first)),
        Err(LedgerError::Corrupt { .. })
    ));
    assert_eq!(reader.read(SeqNo(first + 1)).unwrap(), entry(first + 1));
}

#[test]
fn a_damaged_index_is_rebuilt_in_memory_without_writing_next_to_the_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = fixture(tmp.path());
    let reader = ledger.reader();
    let (first, path) = committed_chunks(tmp.path()).swap_remove(0);
    let idx = PathBuf::from(format!("{}.idx", path.display()));
    let before = fs::read(&idx).unwrap();
    let mut damaged = before.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    fs::write(&idx, &damaged).unwrap();
    assert_eq!(reader.read(SeqNo(first)).unwrap(), entry(first));
    // Left for the ledger itself to rewrite.
    assert_eq!(fs::read(&idx).unwrap(), damaged);
    for s in 1..=120 {
        assert_eq!(reader.read(SeqNo(s)).unwrap(), entry(s));
    }
}

#[test]
fn a_ledger_continuing_a_snapshot_refuses_what_precedes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = LedgerConfig {
        start_after: Some(TxId::new(1, 50)),
        ..config(tmp.path(), &[], false)
    };
    let mut ledger = Ledger::open(cfg).unwrap().0;
    let reader = ledger.reader();
    assert_eq!(reader.first_seqno(), SeqNo(51));
    assert_eq!(reader.last_readable(), SeqNo(50));
    append(&mut ledger, 60);
    ledger.sync().unwrap();
    ledger.commit(SeqNo(ledger.last_seqno().0)).unwrap();
    assert!(matches!(
        reader.read(SeqNo(50)),
        Err(LedgerError::BeforeStart {
            seqno: SeqNo(50),
            first: SeqNo(51)
        })
    ));
    assert!(reader.last_readable() > SeqNo(51));
    assert_eq!(reader.read(SeqNo(51)).unwrap(), entry(51));
}

/// Readers on other threads while the ledger appends, commits and archives
/// (the ledger is only ever touched by this thread): every answer is the entry
/// or "not in a committed chunk", never an error, and what one thread could
/// read stays readable.
#[test]
fn readers_on_other_threads_follow_a_busy_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let main = tmp.path().join("ledger");
    let archive = tmp.path().join("archive");
    let cfg = config(&main, std::slice::from_ref(&archive), true);
    fs::create_dir_all(&archive).unwrap();
    let mut ledger = Ledger::open(cfg).unwrap().0;
    let reader = ledger.reader();
    let done = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let reader = reader.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut reads = 0u64;
                let mut seen = 0;
                let mut s = 1 + t;
                while !done.load(Ordering::Relaxed) || reads == 0 {
                    let readable = reader.last_readable().0;
                    assert!(
                        readable >= seen,
                        "readable went back from {seen} to {readable}"
                    );
                    seen = readable;
                    match reader.read(SeqNo(s)) {
                        Ok(e) => {
                            assert_eq!(e, entry(s));
                            reads += 1;
                        }
                        Err(LedgerError::NotInCommittedChunk(_)) => assert!(s > seen),
                        Err(e) => panic!("seqno {s}: {e}"),
                    }
                    s = if s >= seen { 1 + t } else { s + 2 };
                }
                reads
            })
        })
        .collect();
    for round in 0..200u64 {
        append(&mut ledger, 10);
        ledger.sync().unwrap();
        ledger.commit(ledger.synced_seqno()).unwrap();
        if round % 5 == 4 {
            let before = ledger.committed_seqno().0 / 2;
            ledger.archive(SeqNo(before), &archive).unwrap();
        }
    }
    done.store(true, Ordering::Relaxed);
    for t in threads {
        assert!(t.join().unwrap() > 0);
    }
    for s in 1..=reader.last_readable().0 {
        assert_eq!(reader.read(SeqNo(s)).unwrap(), entry(s));
    }
}
