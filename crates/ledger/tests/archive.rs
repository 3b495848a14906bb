//! Archival of committed chunks into read-only directories
//! (`Ledger::archive`, `LedgerConfig::read_only_dirs`, `ChunkScanner::open_with`).

use std::fs;
use std::path::{Path, PathBuf};

use covenant_ledger::{
    ArchiveReport, ChunkScanner, Entry, Ledger, LedgerConfig, LedgerError, SeqNo, TxId,
};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

const THRESHOLD: u64 = 300;

fn config(dir: &Path, read_only: &[&Path]) -> LedgerConfig {
    LedgerConfig {
        chunk_threshold_bytes: THRESHOLD,
        read_only_dirs: read_only.iter().map(|p| p.to_path_buf()).collect(),
        ..LedgerConfig::new(dir)
    }
}

fn open(dir: &Path, read_only: &[&Path]) -> Ledger {
    Ledger::open(config(dir, read_only)).unwrap().0
}

/// Appends `n` entries: a signature every third, a new view every 40, varied sizes.
fn append(ledger: &mut Ledger, n: u64) -> Vec<Entry> {
    let from = ledger.last_seqno().0 + 1;
    (from..from + n)
        .map(|s| {
            let e = Entry {
                txid: TxId::new(1 + s / 40, s),
                is_signature: s % 3 == 0,
                payload: (0..(s * 7 % 50) as usize)
                    .map(|i| (s as usize * 31 + i) as u8)
                    .collect(),
            };
            ledger.append(e.txid, e.is_signature, &e.payload).unwrap();
            e
        })
        .collect()
}

/// A ledger of 150 synced entries in many small chunks, committed up to 120.
fn fixture(dir: &Path) -> Vec<Entry> {
    fixture_with(dir, THRESHOLD)
}

fn fixture_with(dir: &Path, threshold: u64) -> Vec<Entry> {
    let cfg = LedgerConfig {
        chunk_threshold_bytes: threshold,
        ..config(dir, &[])
    };
    let mut ledger = Ledger::open(cfg).unwrap().0;
    let written = append(&mut ledger, 150);
    ledger.sync().unwrap();
    ledger.commit(SeqNo(120)).unwrap();
    written
}

fn read_all(ledger: &Ledger) -> Vec<Entry> {
    ledger
        .read_range(ledger.first_seqno(), ledger.last_seqno())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Reads every seqno one by one (not through `read_range`) and compares.
fn assert_reads(ledger: &Ledger, written: &[Entry]) {
    for e in written {
        assert_eq!(&ledger.read(e.txid.seqno).unwrap(), e);
    }
    assert_eq!(read_all(ledger), written);
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Names and contents: to prove a read-only directory was not written.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    names(dir)
        .into_iter()
        .map(|n| {
            let b = fs::read(dir.join(&n)).unwrap();
            (n, b)
        })
        .collect()
}

/// `(first, last)` of a `ledger_<first>-<last>.committed` name.
fn committed_range(name: &str) -> Option<(u64, u64)> {
    let r = name.strip_prefix("ledger_")?.strip_suffix(".committed")?;
    let (a, b) = r.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn committed_chunks(dir: &Path) -> Vec<(u64, u64, String)> {
    let mut v: Vec<_> = names(dir)
        .into_iter()
        .filter_map(|n| committed_range(&n).map(|(a, b)| (a, b, n)))
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn scan(dir: &Path, read_only: &[PathBuf]) -> Vec<(Entry, bool)> {
    ChunkScanner::open_with(dir, read_only)
        .unwrap()
        .map(|r| {
            let s = r.unwrap();
            (s.entry, s.committed)
        })
        .collect()
}

fn layout_error(r: Result<(Ledger, impl std::fmt::Debug), LedgerError>) -> String {
    match r {
        Err(e @ LedgerError::Layout { .. }) => e.to_string(),
        Err(e) => panic!("expected a layout error, got {e}"),
        Ok(_) => panic!("expected a layout error, the ledger opened"),
    }
}

#[test]
fn archive_then_keep_appending_and_reopen_with_the_archive() {
    let root = tempfile::tempdir().unwrap();
    let (main, arch) = (root.path().join("main"), root.path().join("archive"));
    let mut written = fixture(&main);
    let mut ledger = open(&main, &[]);
    assert_reads(&ledger, &written); // fills the read cache with handles of main copies

    let before = committed_chunks(&main);
    assert!(before.len() >= 5, "{before:?}");
    let report = ledger.archive(SeqNo(100), &arch).unwrap();
    let moved: Vec<_> = before.iter().filter(|c| c.1 < 100).collect();
    let upto = moved.last().unwrap().1;
    assert_eq!(
        report,
        ArchiveReport {
            chunks: moved.len(),
            bytes: moved
                .iter()
                .map(|c| fs::metadata(arch.join(&c.2)).unwrap().len())
                .sum(),
            upto: SeqNo(upto),
        }
    );
    for (first, last, name) in &moved {
        assert!(!main.join(name).exists(), "{name} left in the main dir");
        assert!(!main.join(format!("{name}.idx")).exists());
        assert!(arch.join(name).exists() && arch.join(format!("{name}.idx")).exists());
        assert!(*last < 100 && *first <= upto);
    }
    assert!(names(&arch).iter().all(|n| !n.ends_with(".tmp")));
    assert_eq!(committed_chunks(&main).first().unwrap().0, upto + 1);
    assert_reads(&ledger, &written);
    assert_eq!(ledger.first_seqno(), SeqNo(1));
    assert_eq!(ledger.committed_seqno(), SeqNo(120));

    // Keep appending and committing, then archive every committed chunk.
    written.extend(append(&mut ledger, 100));
    ledger.sync().unwrap();
    ledger.commit(SeqNo(230)).unwrap();
    let report = ledger.archive(SeqNo(u64::MAX), &arch).unwrap();
    assert!(report.chunks > 0);
    assert!(committed_chunks(&main).is_empty(), "{:?}", names(&main));
    let left: Vec<String> = names(&main)
        .into_iter()
        .filter(|n| n.starts_with("ledger_"))
        .collect();
    assert!(!left.is_empty(), "closed/open chunks stay: {left:?}");
    assert_eq!(
        left.iter()
            .map(|n| n
                .trim_start_matches("ledger_")
                .split(['-', '.'])
                .next()
                .unwrap())
            .min_by_key(|f| f.parse::<u64>().unwrap())
            .unwrap()
            .parse::<u64>()
            .unwrap(),
        report.upto.0 + 1
    );
    let upto = report.upto;
    assert!(upto.0 <= 230 && upto.0 > 120);
    assert_reads(&ledger, &written);
    // Nothing more to move: a no-op that reports the same prefix.
    let again = ledger.archive(SeqNo(u64::MAX), &arch).unwrap();
    assert_eq!((again.chunks, again.bytes, again.upto), (0, 0, upto));
    drop(ledger);

    // Reopening with the archive reads exactly the same and writes nothing there.
    let archived = contents(&arch);
    let (mut ledger, report) = Ledger::open(config(&main, &[&arch])).unwrap();
    assert_eq!(report.last_seqno, SeqNo(250));
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(ledger.first_seqno(), SeqNo(1));
    assert_eq!(ledger.committed_seqno(), upto);
    assert_reads(&ledger, &written);
    assert_eq!(
        Ledger::first_seqno_on_disk_in(&main, std::slice::from_ref(&arch)).unwrap(),
        Some(SeqNo(1))
    );
    assert_eq!(
        Ledger::first_seqno_on_disk(&main).unwrap(),
        Some(upto.plus(1))
    );
    written.extend(append(&mut ledger, 30));
    ledger.sync().unwrap();
    ledger.commit(SeqNo(260)).unwrap();
    assert_reads(&ledger, &written);
    drop(ledger);
    assert_eq!(
        contents(&arch),
        archived,
        "open wrote into the read-only dir"
    );
    assert_reads(&open(&main, &[&arch]), &written);
}

#[test]
fn reopen_without_the_archive_starts_after_it_or_fails_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let (main, arch) = (root.path().join("main"), root.path().join("archive"));
    let written = fixture(&main);
    let upto = open(&main, &[]).archive(SeqNo(100), &arch).unwrap().upto.0;

    // Without the archive, the ledger starts at the first chunk left, as if it
    // continued a snapshot there: archived seqnos are "before the start".
    let ledger = open(&main, &[]);
    assert_eq!(ledger.first_seqno(), SeqNo(upto + 1));
    assert!(matches!(
        ledger.read(SeqNo(1)),
        Err(LedgerError::BeforeStart { seqno: SeqNo(1), first }) if first == SeqNo(upto + 1)
    ));
    assert_eq!(read_all(&ledger), written[upto as usize..]);
    assert_eq!(
        ChunkScanner::open(&main).unwrap().first_seqno(),
        SeqNo(upto + 1)
    );
    drop(ledger);
    // ... which a caller that knows its base (start_after) sees as a layout error.
    let base = written[9].txid;
    let wrong = LedgerConfig {
        start_after: Some(base),
        ..config(&main, &[])
    };
    layout_error(Ledger::open(wrong));

    // A configured read-only directory that is missing is an I/O error.
    let gone = root.path().join("gone");
    assert!(matches!(
        Ledger::open(config(&main, &[&gone])),
        Err(LedgerError::Io { path, .. }) if path == gone
    ));
    assert!(Ledger::first_seqno_on_disk_in(&main, std::slice::from_ref(&gone)).is_err());
    assert!(ChunkScanner::open_with(&main, &[gone]).is_err());

    // A chunk missing from the archive is a gap naming both neighbours.
    let chunks = committed_chunks(&arch);
    assert!(chunks.len() >= 3, "{chunks:?}");
    let aside = root.path().join("aside");
    fs::rename(arch.join(&chunks[1].2), &aside).unwrap();
    let msg = layout_error(Ledger::open(config(&main, &[&arch])));
    assert!(
        msg.contains("gap") && msg.contains(&chunks[0].2) && msg.contains(&chunks[2].2),
        "{msg}"
    );
    fs::rename(&aside, arch.join(&chunks[1].2)).unwrap();
    // The last archived chunk missing: the gap is between the archive and main.
    fs::remove_file(arch.join(&chunks.last().unwrap().2)).unwrap();
    let next = committed_chunks(&main)[0].2.clone();
    let err = ChunkScanner::open_with(&main, std::slice::from_ref(&arch)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LedgerError::Layout { .. }), "{msg}");
    assert!(msg.contains("gap") && msg.contains(&next), "{msg}");
}

#[test]
fn interrupted_archives_open_and_read_identically() {
    let root = tempfile::tempdir().unwrap();
    let pristine = root.path().join("pristine");
    let written = fixture(&pristine);
    let chunks = committed_chunks(&pristine);
    assert!(chunks.len() >= 4, "{chunks:?}");
    let expected_scan = scan(&pristine, &[]);
    let case = |name: &str| {
        let (main, arch) = (
            root.path().join(name),
            root.path().join(format!("{name}-arch")),
        );
        copy_dir(&pristine, &main);
        fs::create_dir_all(&arch).unwrap();
        (main, arch)
    };

    // 1. Copied and renamed into the archive, original not yet removed: the main
    //    copy is used, and a later archive finishes the move.
    let (main, arch) = case("both");
    for (_, _, n) in &chunks[..2] {
        fs::copy(main.join(n), arch.join(n)).unwrap();
        fs::copy(main.join(format!("{n}.idx")), arch.join(format!("{n}.idx"))).unwrap();
    }
    let archived = contents(&arch);
    let mut ledger = open(&main, &[&arch]);
    assert_reads(&ledger, &written);
    assert_eq!(contents(&arch), archived);
    let read_only = [arch.clone()];
    assert_eq!(scan(&main, &read_only), expected_scan);
    let first = ChunkScanner::open_with(&main, &read_only)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(first.chunk, main.join(&chunks[0].2), "main copy preferred");
    let report = ledger.archive(SeqNo(chunks[2].1 + 1), &arch).unwrap();
    assert_eq!((report.chunks, report.upto), (3, SeqNo(chunks[2].1)));
    assert_reads(&ledger, &written);
    drop(ledger);
    assert_reads(&open(&main, &[&arch]), &written);
    assert_eq!(scan(&main, &read_only), expected_scan);

    // 2. Crash before the rename: only a temporary copy in the archive.
    let (main, arch) = case("tmp");
    let n = &chunks[0].2;
    fs::copy(main.join(n), arch.join(format!("{n}.tmp"))).unwrap();
    let archived = contents(&arch);
    assert_reads(&open(&main, &[&arch]), &written);
    assert_eq!(contents(&arch), archived, "not ours to clean up");

    // 3. Archived without its index (copied by hand), main index orphaned: the
    //    index is rebuilt in memory, never written into the read-only dir.
    let (main, arch) = case("noidx");
    fs::rename(main.join(n), arch.join(n)).unwrap();
    let archived = contents(&arch);
    let ledger = open(&main, &[&arch]);
    assert!(
        !main.join(format!("{n}.idx")).exists(),
        "orphan index removed"
    );
    assert_reads(&ledger, &written);
    drop(ledger);
    assert_eq!(contents(&arch), archived);

    // 4. A damaged index in the archive (past its cheap-checked prefix, and in
    //    its prefix): rebuilt on load, never rewritten there.
    for at in [40usize, 0] {
        let (main, arch) = case(&format!("badidx{at}"));
        for (_, _, n) in &chunks[..2] {
            fs::rename(main.join(n), arch.join(n)).unwrap();
            fs::rename(main.join(format!("{n}.idx")), arch.join(format!("{n}.idx"))).unwrap();
        }
        let idx = arch.join(format!("{}.idx", chunks[1].2));
        let mut b = fs::read(&idx).unwrap();
        b[at] ^= 0x40;
        fs::write(&idx, b).unwrap();
        let archived = contents(&arch);
        let ledger = open(&main, &[&arch]);
        assert_reads(&ledger, &written);
        assert_reads(&ledger, &written);
        drop(ledger);
        assert_eq!(contents(&arch), archived);
        assert_eq!(scan(&main, &[arch]), expected_scan);
    }
}

#[test]
fn read_only_dirs_accept_only_committed_chunks() {
    let root = tempfile::tempdir().unwrap();
    let (main, arch) = (root.path().join("main"), root.path().join("archive"));
    let written = fixture(&main);
    open(&main, &[]).archive(SeqNo(60), &arch).unwrap();

    // Unknown and temporary files are skipped (with a warning).
    fs::write(arch.join("README"), b"archive of node 1").unwrap();
    fs::write(arch.join("ledger_junk"), b"?").unwrap();
    fs::write(arch.join("ledger_900-901.committed.tmp"), b"?").unwrap();
    fs::write(arch.join("ledger_900-901.committed.idx"), b"?").unwrap();
    assert_reads(&open(&main, &[&arch]), &written);

    // A chunk that is not committed is refused, by the ledger and the scanner.
    for name in ["ledger_151", "ledger_151-160"] {
        fs::write(arch.join(name), b"").unwrap();
        let msg = layout_error(Ledger::open(config(&main, &[&arch])));
        assert!(
            msg.contains(name) && msg.contains("not a committed chunk"),
            "{msg}"
        );
        assert!(matches!(
            ChunkScanner::open_with(&main, std::slice::from_ref(&arch)),
            Err(LedgerError::Layout { .. })
        ));
        fs::remove_file(arch.join(name)).unwrap();
    }

    // Two copies of one chunk that differ in length.
    let (_, _, n) = committed_chunks(&arch)[0].clone();
    let mut b = fs::read(arch.join(&n)).unwrap();
    fs::write(main.join(&n), &b).unwrap();
    assert_reads(&open(&main, &[&arch]), &written);
    b.push(0);
    fs::write(main.join(&n), &b).unwrap();
    let msg = layout_error(Ledger::open(config(&main, &[&arch])));
    assert!(msg.contains("differ in length"), "{msg}");
    fs::remove_file(main.join(&n)).unwrap();

    // The main directory given as its own read-only directory.
    let msg = layout_error(Ledger::open(config(&main, &[&main])));
    assert!(msg.contains("ledger directory itself"), "{msg}");
}

#[test]
fn archive_reads_from_the_new_place_and_moves_only_committed_chunks() {
    let root = tempfile::tempdir().unwrap();
    let (main, arch) = (root.path().join("main"), root.path().join("archive"));
    let written = fixture(&main);
    let mut ledger = open(&main, &[]);
    assert_reads(&ledger, &written);

    // Refused into the ledger's own directory; a no-op before any chunk ends.
    assert!(matches!(
        ledger.archive(SeqNo(100), &main),
        Err(LedgerError::Layout { .. })
    ));
    assert_eq!(
        ledger.archive(SeqNo(1), &arch).unwrap(),
        ArchiveReport::default()
    );
    let non_committed: Vec<String> = names(&main)
        .into_iter()
        .filter(|n| n.starts_with("ledger_") && !n.contains(".committed"))
        .collect();
    assert!(!non_committed.is_empty());
    let report = ledger.archive(SeqNo(u64::MAX), &arch).unwrap();
    assert!(report.upto.0 <= 120);
    for n in &non_committed {
        assert!(main.join(n).exists(), "{n} moved");
        assert!(!arch.join(n).exists());
    }

    // Cached handles of the main copies were dropped: with the archived files
    // gone, reads fail instead of reading the unlinked originals.
    let moved = committed_chunks(&arch);
    for (_, _, n) in &moved {
        fs::rename(arch.join(n), root.path().join(n)).unwrap();
    }
    assert!(matches!(
        ledger.read(SeqNo(1)),
        Err(LedgerError::Io { path, .. }) if path.starts_with(fs::canonicalize(&arch).unwrap())
    ));
    assert_eq!(
        read_all_from(&ledger, report.upto.0 + 1),
        written[report.upto.0 as usize..]
    );
    for (_, _, n) in &moved {
        fs::rename(root.path().join(n), arch.join(n)).unwrap();
    }
    assert_reads(&ledger, &written);
}

fn read_all_from(ledger: &Ledger, first: u64) -> Vec<Entry> {
    ledger
        .read_range(SeqNo(first), ledger.last_seqno())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn archive_a_ledger_that_continues_a_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let (main, arch) = (root.path().join("main"), root.path().join("archive"));
    let base = TxId::new(1, 1000);
    let cfg = |ro: &[&Path]| LedgerConfig {
        start_after: Some(base),
        ..config(&main, ro)
    };
    let mut ledger = Ledger::open(cfg(&[])).unwrap().0;
    assert_eq!(
        ledger.archive(SeqNo(u64::MAX), &arch).unwrap().upto,
        SeqNo(1000),
        "nothing archived: the base"
    );
    let written = append(&mut ledger, 80);
    ledger.sync().unwrap();
    ledger.commit(SeqNo(1060)).unwrap();
    let report = ledger.archive(SeqNo(1050), &arch).unwrap();
    assert!(report.chunks > 0 && report.upto.0 < 1050);
    drop(ledger);
    let ledger = Ledger::open(cfg(&[&arch])).unwrap().0;
    assert_eq!(ledger.first_seqno(), SeqNo(1001));
    assert_reads(&ledger, &written);
    assert_eq!(
        Ledger::first_seqno_on_disk_in(&main, std::slice::from_ref(&arch)).unwrap(),
        Some(SeqNo(1001))
    );
    // Only the archive is left (the main directory lost): still a ledger prefix.
    let fresh = root.path().join("fresh");
    assert_eq!(
        Ledger::first_seqno_on_disk_in(&fresh, std::slice::from_ref(&arch)).unwrap(),
        Some(SeqNo(1001))
    );
    assert_eq!(Ledger::first_seqno_on_disk(&fresh).unwrap(), None);
}

/// Archiving at random points (into two archives, optionally leaving a copy
/// behind as an interrupted archive would) changes nothing an audit or a reader
/// sees. One pristine ledger is built and copied for every case.
#[test]
fn archives_are_invisible_to_the_scanner_and_readers() {
    let root = tempfile::tempdir().unwrap();
    let pristine = root.path().join("pristine");
    // Fewer, larger chunks than elsewhere: every archived chunk costs four fsyncs.
    let written = fixture_with(&pristine, 4 * THRESHOLD);
    assert!(committed_chunks(&pristine).len() >= 4);
    let expected_scan = scan(&pristine, &[]);
    let committed = open(&pristine, &[]).committed_seqno();
    let mut runner = TestRunner::new(ProptestConfig::with_cases(24));
    let strategy = (0u64..=160, 0u64..=160, any::<bool>());
    runner
        .run(&strategy, |(a, b, leave_copy)| {
            let case = tempfile::tempdir_in(root.path()).unwrap();
            let main = case.path().join("main");
            copy_dir(&pristine, &main);
            let (arch1, arch2) = (case.path().join("a1"), case.path().join("a2"));
            fs::create_dir_all(&arch2).unwrap();
            let mut ledger = open(&main, &[]);
            let r1 = ledger.archive(SeqNo(a), &arch1).unwrap();
            let r2 = ledger.archive(SeqNo(b), &arch2).unwrap();
            prop_assert!(r2.upto >= r1.upto && r1.upto.0 < a.max(1));
            if leave_copy {
                if let Some((_, _, n)) = committed_chunks(&main).first() {
                    fs::copy(main.join(n), arch2.join(n)).unwrap();
                }
            }
            assert_reads(&ledger, &written);
            drop(ledger);
            let read_only = [arch1.clone(), arch2.clone()];
            prop_assert_eq!(&scan(&main, &read_only), &expected_scan);
            let reversed = [arch2.clone(), arch1.clone()];
            prop_assert_eq!(&scan(&main, &reversed), &expected_scan);
            let ledger = open(&main, &[&arch1, &arch2]);
            prop_assert_eq!(ledger.first_seqno(), SeqNo(1));
            prop_assert_eq!(ledger.committed_seqno(), committed);
            assert_reads(&ledger, &written);
            Ok(())
        })
        .unwrap();
}

/// A scan (`ledger audit`) of a running node's ledger lists its chunks, then the
/// node closes, commits (renames) and archives (moves) some of them: the scan finds each
/// chunk where it went and reads the whole ledger exactly once.
#[test]
fn a_scan_follows_chunks_archived_while_it_runs() {
    let root = tempfile::tempdir().unwrap();
    let (main, arch) = (root.path().join("main"), root.path().join("archive"));
    let mut written = fixture(&main);
    let mut ledger = open(&main, &[]);
    written.extend(append(&mut ledger, 2)); // an open chunk, no signature yet
    ledger.sync().unwrap();
    fs::create_dir_all(&arch).unwrap();
    let mut scanner = ChunkScanner::open_with(&main, std::slice::from_ref(&arch)).unwrap();
    let first = scanner.next().unwrap().unwrap();
    assert_eq!(first.entry, written[0]);
    let report = ledger.archive(SeqNo(100), &arch).unwrap();
    assert!(report.chunks >= 3, "{report:?}");
    let closed_chunks = || {
        names(&main)
            .iter()
            .filter(|n| n.contains('-') && !n.ends_with(".committed") && !n.ends_with(".idx"))
            .count()
    };
    let closed = closed_chunks();
    ledger.commit(SeqNo(150)).unwrap(); // closed chunks are renamed committed
    assert!(closed > 0 && closed_chunks() < closed, "{:?}", names(&main));
    let open_name = names(&main).into_iter().find(|n| !n.contains('-'));
    let was_open = main.join(open_name.expect("an open chunk"));
    append(&mut ledger, 40); // the open chunk closes at a signature
    ledger.sync().unwrap();
    assert!(!was_open.exists(), "{:?}", names(&main));
    let rest: Vec<Entry> = scanner.map(|r| r.unwrap().entry).collect();
    assert_eq!(rest, written[1..]);
    assert_eq!(scan(&main, &[arch]).len() as u64, ledger.last_seqno().0);
}
