//! End-to-end tests of the ledger on real files in temporary directories.

use std::fs;
use std::path::{Path, PathBuf};

use covenant_ledger::{
    ChunkScanner, Entry, Ledger, LedgerConfig, LedgerError, SeqNo, TxId, MAX_PAYLOAD_LEN,
};
use proptest::prelude::*;

const HEADER: u64 = 20;
const OVERHEAD: u64 = 25;

/// Deterministic xorshift generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn payload(seqno: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seqno as usize * 31 + i * 7) as u8)
        .collect()
}

fn config(dir: &Path, threshold: u64) -> LedgerConfig {
    LedgerConfig {
        chunk_threshold_bytes: threshold,
        ..LedgerConfig::new(dir)
    }
}

fn open(dir: &Path, threshold: u64) -> Ledger {
    Ledger::open(config(dir, threshold)).unwrap().0
}

/// Appends `n` entries with random sizes below `max_len`, views growing now
/// and then and signatures sprinkled in; returns what was written.
fn fill(ledger: &mut Ledger, rng: &mut Rng, n: u64, max_len: u64) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut view = ledger.last_txid().map_or(1, |t| t.view.0);
    for _ in 0..n {
        let seqno = ledger.last_seqno().0 + 1;
        if rng.below(50) == 0 {
            view += 1;
        }
        let e = Entry {
            txid: TxId::new(view, seqno),
            is_signature: rng.below(8) == 0,
            payload: payload(seqno, rng.below(max_len) as usize),
        };
        ledger.append(e.txid, e.is_signature, &e.payload).unwrap();
        out.push(e);
    }
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort_by_key(|n| first_of(n));
    v
}

fn first_of(name: &str) -> (u64, String) {
    let rest = name.trim_start_matches("ledger_");
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    (digits.parse().unwrap_or(0), name.to_string())
}

fn chunk_path(dir: &Path, suffix_pred: impl Fn(&str) -> bool) -> PathBuf {
    let name = names(dir)
        .into_iter()
        .find(|n| suffix_pred(n))
        .expect("matching chunk");
    dir.join(name)
}

/// Every chunk name is well-formed and the ranges are contiguous from 1.
fn check_names(dir: &Path, last: u64, committed: u64) {
    let mut expected = 1;
    let mut open_seen = false;
    for n in names(dir) {
        if n.ends_with(".idx") {
            continue;
        }
        assert!(!open_seen, "open chunk is not last: {:?}", names(dir));
        let rest = n.strip_prefix("ledger_").unwrap();
        let (range, is_committed) = match rest.strip_suffix(".committed") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        match range.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
                assert_eq!(a, expected, "{n}");
                assert!(b >= a);
                assert_eq!(is_committed, b <= committed, "{n} committed={committed}");
                if is_committed {
                    assert!(dir.join(format!("{n}.idx")).exists(), "{n} has no index");
                }
                expected = b + 1;
            }
            None => {
                assert_eq!(range.parse::<u64>().unwrap(), expected, "{n}");
                open_seen = true;
            }
        }
    }
    assert!(expected - 1 == last || open_seen, "{:?}", names(dir));
}

fn read_all(ledger: &Ledger) -> Vec<Entry> {
    if ledger.last_seqno() == SeqNo::ZERO {
        return Vec::new();
    }
    ledger
        .read_range(SeqNo(1), ledger.last_seqno())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn scan_all(dir: &Path) -> Result<Vec<Entry>, LedgerError> {
    ChunkScanner::open(dir)?
        .map(|r| r.map(|s| s.entry))
        .collect()
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
    }
    to
}

fn flip(path: &Path, at: u64, mask: u8) {
    let mut b = fs::read(path).unwrap();
    b[at as usize] ^= mask;
    fs::write(path, b).unwrap();
}

#[test]
fn roundtrip_across_many_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x1234_5678);
    let (mut ledger, report) = Ledger::open(config(dir.path(), 4096)).unwrap();
    assert_eq!(report, Default::default());
    assert_eq!(ledger.last_seqno(), SeqNo(0));
    assert_eq!(ledger.last_txid(), None);
    let written = fill(&mut ledger, &mut rng, 600, 1500);
    ledger.sync().unwrap();
    assert_eq!(ledger.last_txid(), Some(written[599].txid));
    for e in &written {
        assert_eq!(&ledger.read(e.txid.seqno).unwrap(), e);
    }
    check_names(dir.path(), 600, 0);
    let closed = names(dir.path()).iter().filter(|n| n.contains('-')).count();
    assert!(
        closed >= 5,
        "expected several closed chunks, got {:?}",
        names(dir.path())
    );
    drop(ledger);

    let (mut ledger, report) = Ledger::open(config(dir.path(), 4096)).unwrap();
    assert_eq!(report.last_seqno, SeqNo(600));
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(read_all(&ledger), written);
    let mid: Vec<Entry> = ledger
        .read_range(SeqNo(123), SeqNo(321))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(mid, written[122..321]);
    assert_eq!(ledger.read_range(SeqNo(5), SeqNo(4)).unwrap().count(), 0);
    assert!(matches!(
        ledger.read(SeqNo(0)),
        Err(LedgerError::NotFound(SeqNo(0)))
    ));
    assert!(matches!(
        ledger.read(SeqNo(601)),
        Err(LedgerError::NotFound(SeqNo(601)))
    ));
    assert!(ledger.read_range(SeqNo(1), SeqNo(601)).is_err());

    // Commit somewhere in the middle: only whole closed chunks get renamed.
    ledger.commit(SeqNo(300)).unwrap();
    assert_eq!(ledger.committed_seqno(), SeqNo(300));
    check_names(dir.path(), 600, 300);
    assert_eq!(read_all(&ledger), written);
    let more = fill(&mut ledger, &mut rng, 100, 1500);
    ledger.sync().unwrap();
    ledger.commit(SeqNo(650)).unwrap();
    check_names(dir.path(), 700, 650);
    drop(ledger);

    let (ledger, _) = Ledger::open(config(dir.path(), 4096)).unwrap();
    let all: Vec<Entry> = written.iter().chain(&more).cloned().collect();
    assert_eq!(read_all(&ledger), all);
    let committed_files: Vec<String> = names(dir.path())
        .into_iter()
        .filter(|n| n.ends_with(".committed"))
        .collect();
    let reopened_committed: u64 = committed_files
        .iter()
        .map(|n| {
            n.trim_end_matches(".committed")
                .rsplit('-')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .max()
        .unwrap();
    assert_eq!(ledger.committed_seqno(), SeqNo(reopened_committed));
    assert!(reopened_committed <= 650 && reopened_committed > 300);
    // Random access in reverse order works through the indexes.
    for s in (1..=700).rev().step_by(7) {
        assert_eq!(ledger.read(SeqNo(s)).unwrap(), all[s as usize - 1]);
    }

    let mut scanner = ChunkScanner::open(dir.path()).unwrap();
    let total = scanner.total_bytes();
    let mut n = 0;
    for r in scanner.by_ref() {
        let s = r.unwrap();
        assert_eq!(s.entry, all[n]);
        assert_eq!(s.committed, s.entry.txid.seqno.0 <= reopened_committed);
        assert!(s.chunk.starts_with(dir.path()));
        n += 1;
    }
    assert_eq!(n, 700);
    assert_eq!(scanner.bytes_read(), total);
}

#[test]
fn group_commit_reads_before_sync_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = open(dir.path(), u64::MAX);
    let mut written = Vec::new();
    // Large payloads push some frames out of the write buffer (written, not synced).
    for s in 1..=40u64 {
        let len = if s % 10 == 0 { 700_000 } else { 100 };
        let p = payload(s, len);
        ledger.append(TxId::new(1, s), s % 5 == 0, &p).unwrap();
        written.push(Entry {
            txid: TxId::new(1, s),
            is_signature: s % 5 == 0,
            payload: p,
        });
        assert_eq!(ledger.read(SeqNo(s)).unwrap(), written[s as usize - 1]);
    }
    assert_eq!(read_all(&ledger), written);
    assert!(matches!(
        ledger.commit(SeqNo(1)),
        Err(LedgerError::NotSynced {
            requested: SeqNo(1),
            synced: SeqNo(0)
        })
    ));
    ledger.sync().unwrap();
    ledger.commit(SeqNo(40)).unwrap(); // nothing closed yet: only the watermark moves
    assert_eq!(ledger.committed_seqno(), SeqNo(40));
    assert!(matches!(
        ledger.truncate(SeqNo(39)),
        Err(LedgerError::BelowCommitted { .. })
    ));
    drop(ledger);
    let (ledger, report) = Ledger::open(config(dir.path(), u64::MAX)).unwrap();
    assert_eq!(report.last_seqno, SeqNo(40));
    assert_eq!(read_all(&ledger), written);
    assert_eq!(
        ledger.committed_seqno(),
        SeqNo(0),
        "commit of an open chunk is not persisted"
    );
}

/// Builds a single-open-chunk ledger and returns the frame offsets and file length.
fn small_open_chunk(dir: &Path, sizes: &[usize]) -> (Vec<Entry>, Vec<u64>, u64) {
    let mut ledger = open(dir, u64::MAX);
    let mut entries = Vec::new();
    let mut offsets = Vec::new();
    let mut off = HEADER;
    for (i, len) in sizes.iter().enumerate() {
        let s = i as u64 + 1;
        let e = Entry {
            txid: TxId::new(2, s),
            is_signature: s % 2 == 0,
            payload: payload(s, *len),
        };
        ledger.append(e.txid, e.is_signature, &e.payload).unwrap();
        offsets.push(off);
        off += OVERHEAD + *len as u64;
        entries.push(e);
    }
    ledger.sync().unwrap();
    (entries, offsets, off)
}

#[test]
fn torn_tail_every_cut_length() {
    let pristine = tempfile::tempdir().unwrap();
    let sizes = [10, 0, 33, 7, 50];
    let (entries, offsets, len) = small_open_chunk(pristine.path(), &sizes);
    assert_eq!(
        fs::metadata(pristine.path().join("ledger_1"))
            .unwrap()
            .len(),
        len
    );
    // Every cut inside the chunk header and the last three frames.
    let cuts = (0..HEADER).chain(offsets[2]..len);
    for cut in cuts {
        let dir = copy_dir(pristine.path());
        let file = dir.path().join("ledger_1");
        fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let (mut ledger, report) = Ledger::open(config(dir.path(), u64::MAX)).unwrap();
        let whole = offsets
            .iter()
            .zip(&sizes)
            .filter(|(o, s)| **o + OVERHEAD + **s as u64 <= cut)
            .count();
        assert_eq!(ledger.last_seqno(), SeqNo(whole as u64), "cut {cut}");
        assert_eq!(report.last_seqno, SeqNo(whole as u64));
        let valid_end = if cut < HEADER {
            0
        } else {
            offsets.get(whole).copied().unwrap_or(len)
        };
        assert_eq!(report.truncated_bytes, cut - valid_end, "cut {cut}");
        assert_eq!(
            report.dropped_partial_entry,
            cut >= HEADER && cut > valid_end,
            "cut {cut}"
        );
        assert_eq!(read_all(&ledger), entries[..whole], "cut {cut}");
        // Appends continue at the right seqno, and survive another reopen.
        let next = whole as u64 + 1;
        ledger
            .append(TxId::new(3, next), true, b"after the crash")
            .unwrap();
        ledger.sync().unwrap();
        drop(ledger);
        let ledger = open(dir.path(), u64::MAX);
        assert_eq!(ledger.last_txid(), Some(TxId::new(3, next)));
        assert_eq!(
            ledger.read(SeqNo(next)).unwrap().payload,
            b"after the crash"
        );
        assert_eq!(scan_all(dir.path()).unwrap().len(), whole + 1);
    }
}

#[test]
fn torn_tail_after_closed_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(99);
    let mut ledger = open(dir.path(), 2048);
    let mut written = fill(&mut ledger, &mut rng, 198, 300);
    for s in 199..=200u64 {
        let txid = TxId::new(ledger.last_txid().unwrap().view.0, s);
        ledger.append(txid, false, &payload(s, 40)).unwrap();
        written.push(Entry {
            txid,
            is_signature: false,
            payload: payload(s, 40),
        });
    }
    ledger.sync().unwrap();
    drop(ledger);
    assert!(names(dir.path()).iter().filter(|n| n.contains('-')).count() > 3);
    let open_chunk = chunk_path(dir.path(), |n| !n.contains('-'));
    let len = fs::metadata(&open_chunk).unwrap().len();
    assert!(len > HEADER + OVERHEAD, "test needs a non-empty open chunk");
    fs::OpenOptions::new()
        .write(true)
        .open(&open_chunk)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let (ledger, report) = Ledger::open(config(dir.path(), 2048)).unwrap();
    assert!(report.dropped_partial_entry);
    assert_eq!(ledger.last_seqno(), SeqNo(199));
    assert_eq!(read_all(&ledger), written[..199]);
}

#[test]
fn zero_filled_tail_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (entries, _, len) = small_open_chunk(dir.path(), &[10, 20, 30]);
    let file = dir.path().join("ledger_1");
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len + 4096)
        .unwrap();
    let (ledger, report) = Ledger::open(config(dir.path(), u64::MAX)).unwrap();
    assert_eq!(report.truncated_bytes, 4096);
    assert_eq!(read_all(&ledger), entries);
    assert_eq!(fs::metadata(&file).unwrap().len(), len);
}

#[test]
fn zero_filled_open_chunk_is_removed_but_garbage_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = open(dir.path(), 0);
    ledger
        .append(TxId::new(1, 1), true, b"closes at once")
        .unwrap();
    drop(ledger);
    assert_eq!(names(dir.path()), ["ledger_1-1"]);
    fs::write(dir.path().join("ledger_2"), vec![0u8; 4096]).unwrap();
    let (mut ledger, report) = Ledger::open(config(dir.path(), 0)).unwrap();
    assert_eq!(report.truncated_bytes, 4096);
    assert_eq!(ledger.last_seqno(), SeqNo(1));
    assert!(!dir.path().join("ledger_2").exists());
    ledger.append(TxId::new(1, 2), false, b"next").unwrap();
    ledger.sync().unwrap();
    drop(ledger);
    // A damaged header with data behind it is not a crash artifact.
    flip(&dir.path().join("ledger_2"), 3, 0x01);
    let err = Ledger::open(config(dir.path(), 0)).map(|_| ()).unwrap_err();
    assert!(
        matches!(err, LedgerError::Corrupt { offset: 0, .. }),
        "{err}"
    );
}

#[test]
fn ledger_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Ledger>();
    check::<ChunkScanner>();
    check::<LedgerError>();
}

#[test]
fn last_frame_with_bad_checksum_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (entries, offsets, len) = small_open_chunk(dir.path(), &[10, 20, 30]);
    flip(&dir.path().join("ledger_1"), offsets[2] + 21 + 5, 0x40);
    let (ledger, report) = Ledger::open(config(dir.path(), u64::MAX)).unwrap();
    assert_eq!(report.truncated_bytes, len - offsets[2]);
    assert!(report.dropped_partial_entry);
    assert_eq!(read_all(&ledger), entries[..2]);
}

#[test]
fn bad_frame_followed_by_data_is_corruption_not_torn_tail() {
    let pristine = tempfile::tempdir().unwrap();
    let (_, offsets, len) = small_open_chunk(pristine.path(), &[10, 20, 30, 40]);
    // A flipped payload byte, a flipped length byte (shorter, and running past EOF).
    for (at, mask) in [
        (offsets[1] + 21 + 3, 0x01),
        (offsets[1], 0x04),
        (offsets[1] + 1, 0x80),
        (offsets[1] + 3, 0x10),
    ] {
        let dir = copy_dir(pristine.path());
        let file = dir.path().join("ledger_1");
        flip(&file, at, mask);
        let err = Ledger::open(config(dir.path(), u64::MAX)).unwrap_err();
        match &err {
            LedgerError::Corrupt {
                seqno_hint,
                offset,
                file: f,
                ..
            } => {
                assert_eq!(*seqno_hint, Some(2), "{err}");
                assert_eq!(*offset, offsets[1]);
                assert_eq!(f, &file);
            }
            other => panic!("unexpected {other}"),
        }
        assert!(
            err.to_string().contains("seqno 2") || err.to_string().contains("2.2"),
            "{err}"
        );
        assert_eq!(fs::metadata(&file).unwrap().len(), len, "must not truncate");
    }
}

/// A committed ledger of a few small chunks, plus closed and open ones.
fn committed_fixture(dir: &Path) -> Vec<Entry> {
    let mut ledger = open(dir, 200);
    let mut written = Vec::new();
    for s in 1..=14u64 {
        let e = Entry {
            txid: TxId::new(1 + s / 6, s),
            is_signature: s % 3 == 0,
            payload: payload(s, (s as usize * 5) % 40),
        };
        ledger.append(e.txid, e.is_signature, &e.payload).unwrap();
        written.push(e);
    }
    ledger.sync().unwrap();
    ledger.commit(SeqNo(7)).unwrap();
    written
}

#[test]
fn corrupt_committed_entry_is_reported_by_read_and_scanner() {
    let dir = tempfile::tempdir().unwrap();
    let written = committed_fixture(dir.path());
    let chunk = chunk_path(dir.path(), |n| n.ends_with(".committed"));
    assert!(
        chunk.to_str().unwrap().ends_with("ledger_1-6.committed"),
        "{chunk:?}"
    );
    // Entry 2's payload sits after header, frame 1 and entry 2's frame header.
    let at = HEADER + OVERHEAD + written[0].payload.len() as u64 + 21 + 1;
    flip(&chunk, at, 0x08);
    let (ledger, _) = Ledger::open(config(dir.path(), 200)).unwrap();
    assert_eq!(ledger.read(SeqNo(1)).unwrap(), written[0]);
    let err = ledger.read(SeqNo(2)).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Corrupt { txid: Some(t), .. } if *t == written[1].txid),
        "{err}"
    );
    assert!(
        err.to_string().contains(&written[1].txid.to_string()),
        "{err}"
    );
    assert_eq!(ledger.read(SeqNo(3)).unwrap(), written[2]);
    let mut range = ledger.read_range(SeqNo(1), SeqNo(14)).unwrap();
    assert!(range.next().unwrap().is_ok());
    assert!(range.next().unwrap().is_err());
    assert!(range.next().is_none(), "iteration stops after an error");

    let results: Vec<_> = ChunkScanner::open(dir.path()).unwrap().collect();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].as_ref().unwrap().entry, written[0]);
    let err = results[1].as_ref().unwrap_err();
    assert!(
        matches!(err, LedgerError::Corrupt { txid: Some(t), .. } if *t == written[1].txid),
        "{err}"
    );
}

#[test]
fn scanner_detects_every_flipped_byte() {
    let pristine = tempfile::tempdir().unwrap();
    let written = committed_fixture(pristine.path());
    assert_eq!(scan_all(pristine.path()).unwrap(), written);
    let chunks: Vec<String> = names(pristine.path())
        .into_iter()
        .filter(|n| !n.ends_with(".idx"))
        .collect();
    assert!(chunks.iter().any(|n| n.ends_with(".committed")));
    assert!(chunks
        .iter()
        .any(|n| n.contains('-') && !n.ends_with(".committed")));
    assert!(chunks.iter().any(|n| !n.contains('-')));
    let dir = copy_dir(pristine.path());
    let mut checked = 0;
    for name in &chunks {
        let path = dir.path().join(name);
        let original = fs::read(&path).unwrap();
        for at in 0..original.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut b = original.clone();
                b[at] ^= mask;
                fs::write(&path, &b).unwrap();
                let r = scan_all(dir.path());
                assert!(r.is_err(), "flip {mask:#x} at {name}:{at} went unnoticed");
                checked += 1;
            }
        }
        fs::write(&path, &original).unwrap();
    }
    assert!(checked > 1000);
    assert_eq!(scan_all(dir.path()).unwrap(), written);
}

#[test]
fn reading_detects_every_flipped_byte_in_committed_chunks() {
    let pristine = tempfile::tempdir().unwrap();
    let written = committed_fixture(pristine.path());
    let dir = copy_dir(pristine.path());
    let committed: Vec<String> = names(dir.path())
        .into_iter()
        .filter(|n| n.ends_with(".committed"))
        .collect();
    for name in &committed {
        let path = dir.path().join(name);
        let original = fs::read(&path).unwrap();
        for at in 0..original.len() {
            for mask in [0x01u8, 0xff] {
                let mut b = original.clone();
                b[at] ^= mask;
                fs::write(&path, &b).unwrap();
                let detected = match Ledger::open(config(dir.path(), 200)) {
                    Err(_) => true,
                    Ok((l, _)) => (1..=written.len() as u64).any(|s| l.read(SeqNo(s)).is_err()),
                };
                assert!(detected, "flip {mask:#x} at {name}:{at} went unnoticed");
            }
        }
        fs::write(&path, &original).unwrap();
    }
}

#[test]
fn truncate_rolls_back_and_refuses_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    let mut ledger = open(dir.path(), 1024);
    let written = fill(&mut ledger, &mut rng, 300, 200);
    ledger.sync().unwrap();
    ledger.commit(SeqNo(100)).unwrap();
    let committed = ledger.committed_seqno();
    assert!(matches!(
        ledger.truncate(SeqNo(99)),
        Err(LedgerError::BelowCommitted {
            requested: SeqNo(99),
            committed: SeqNo(100)
        })
    ));
    ledger.truncate(SeqNo(300)).unwrap(); // no-op at the end
    assert_eq!(ledger.last_seqno(), SeqNo(300));

    // Cut inside a closed chunk: it becomes the open chunk again.
    let closed: Vec<(u64, u64)> = names(dir.path())
        .iter()
        .filter(|n| n.contains('-') && !n.contains(".committed"))
        .map(|n| {
            let (a, b) = n.trim_start_matches("ledger_").split_once('-').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    let &(first, last) = closed
        .iter()
        .find(|(a, b)| *a > 150 && b > a)
        .expect("a closed chunk to cut");
    let cut = (first + last) / 2;
    ledger.truncate(SeqNo(cut)).unwrap();
    assert_eq!(ledger.last_txid(), Some(written[cut as usize - 1].txid));
    assert!(matches!(
        ledger.read(SeqNo(cut + 1)),
        Err(LedgerError::NotFound(_))
    ));
    assert!(
        dir.path().join(format!("ledger_{first}")).exists(),
        "{:?}",
        names(dir.path())
    );
    check_names(dir.path(), cut, committed.0);
    assert_eq!(read_all(&ledger), written[..cut as usize]);
    let mut view = ledger.last_txid().unwrap().view.0;
    view += 1;
    ledger
        .append(TxId::new(view, cut + 1), false, b"new history")
        .unwrap();
    ledger.sync().unwrap();
    drop(ledger);

    let (mut ledger, report) = Ledger::open(config(dir.path(), 1024)).unwrap();
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(ledger.last_seqno(), SeqNo(cut + 1));
    assert_eq!(ledger.read(SeqNo(cut + 1)).unwrap().payload, b"new history");
    assert_eq!(read_all(&ledger)[..cut as usize], written[..cut as usize]);

    // Cut exactly at the end of the committed prefix, then down to it from an open chunk.
    let committed = ledger.committed_seqno();
    ledger.truncate(committed).unwrap();
    assert_eq!(ledger.last_seqno(), committed);
    check_names(dir.path(), committed.0, committed.0);
    // Only committed chunks left: the tail TxId comes from the last index entry.
    drop(ledger);
    let mut ledger = open(dir.path(), 1024);
    assert_eq!(
        ledger.last_txid(),
        Some(written[committed.0 as usize - 1].txid)
    );
    assert_eq!(ledger.committed_seqno(), committed);
    ledger
        .append(TxId::new(view, committed.0 + 1), true, b"x")
        .unwrap();
    ledger.sync().unwrap();
    assert_eq!(scan_all(dir.path()).unwrap().len() as u64, committed.0 + 1);
}

#[test]
fn truncate_to_zero_empties_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(3);
    let mut ledger = open(dir.path(), 512);
    fill(&mut ledger, &mut rng, 50, 100);
    ledger.truncate(SeqNo(0)).unwrap();
    assert_eq!(ledger.last_seqno(), SeqNo(0));
    assert_eq!(ledger.last_txid(), None);
    assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    ledger.append(TxId::new(1, 1), false, b"again").unwrap();
    ledger.sync().unwrap();
    drop(ledger);
    assert_eq!(
        open(dir.path(), 512).read(SeqNo(1)).unwrap().payload,
        b"again"
    );
}

#[test]
fn appends_out_of_order_or_invalid_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = open(dir.path(), u64::MAX);
    // Whether `append` of an empty entry at `view.seqno` is refused as out of order,
    // expecting seqno `want`.
    let out_of_order = |ledger: &mut Ledger, view, seqno, want| {
        matches!(
            ledger.append(TxId::new(view, seqno), false, b""),
            Err(LedgerError::OutOfOrder { expected, got }) if expected == want && got == seqno
        )
    };
    assert!(out_of_order(&mut ledger, 1, 2, 1));
    assert!(matches!(
        ledger.append(TxId::new(0, 1), false, b""),
        Err(LedgerError::BadView { .. })
    ));
    ledger.append(TxId::new(3, 1), false, b"a").unwrap();
    assert!(out_of_order(&mut ledger, 3, 1, 2));
    assert!(matches!(
        ledger.append(TxId::new(2, 2), false, b""),
        Err(LedgerError::BadView {
            seqno: 2,
            got: 2,
            min: 3
        })
    ));
    let huge = vec![0u8; MAX_PAYLOAD_LEN as usize + 1];
    assert!(matches!(
        ledger.append(TxId::new(3, 2), false, &huge),
        Err(LedgerError::TooLarge { .. })
    ));
    ledger.append(TxId::new(4, 2), true, b"b").unwrap();
    assert_eq!(ledger.last_txid(), Some(TxId::new(4, 2)));
    assert!(matches!(
        ledger.commit(SeqNo(2)),
        Err(LedgerError::NotSynced { .. })
    ));
    // Refused appends left nothing behind.
    ledger.sync().unwrap();
    drop(ledger);
    assert_eq!(scan_all(dir.path()).unwrap().len(), 2);
}

#[test]
fn missing_or_damaged_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let written = committed_fixture(dir.path());
    let idx = chunk_path(dir.path(), |n| n.ends_with(".idx"));
    let good = fs::read(&idx).unwrap();

    fs::remove_file(&idx).unwrap();
    let (ledger, _) = Ledger::open(config(dir.path(), 200)).unwrap();
    assert_eq!(fs::read(&idx).unwrap(), good, "rebuilt at open");
    assert_eq!(read_all(&ledger), written);
    drop(ledger);

    // Damage past the prefix is only noticed when the index is loaded.
    for (at, mask) in [(good.len() - 10, 0x01u8), (33, 0x20), (0, 0xff), (24, 0x01)] {
        flip(&idx, at as u64, mask);
        let (ledger, _) = Ledger::open(config(dir.path(), 200)).unwrap();
        assert_eq!(read_all(&ledger), written);
        assert_eq!(fs::read(&idx).unwrap(), good, "rewritten after rebuild");
    }
    fs::write(&idx, &good[..good.len() - 1]).unwrap();
    let (ledger, _) = Ledger::open(config(dir.path(), 200)).unwrap();
    assert_eq!(read_all(&ledger), written);
}

#[test]
fn leftovers_from_a_crash_do_not_break_open() {
    let dir = tempfile::tempdir().unwrap();
    let written = committed_fixture(dir.path());
    let mut ledger = open(dir.path(), 200);
    // Close the open chunk so that the next one starts fresh.
    while !names(dir.path()).iter().all(|n| n.contains('-')) {
        let s = ledger.last_seqno().0 + 1;
        ledger.append(TxId::new(9, s), true, &[0; 64]).unwrap();
    }
    let last = ledger.last_seqno();
    drop(ledger);
    fs::write(
        dir.path().join("ledger_1-3.committed.idx.tmp"),
        b"half an index",
    )
    .unwrap();
    fs::write(dir.path().join("ledger_8-9.committed.idx"), b"orphan").unwrap();
    fs::write(dir.path().join("notes.txt"), b"not ours").unwrap();
    for leftover in [&b""[..], &b"CVNT"[..]] {
        fs::write(dir.path().join(format!("ledger_{}", last.0 + 1)), leftover).unwrap();
        let (mut ledger, report) = Ledger::open(config(dir.path(), 200)).unwrap();
        assert_eq!(report.truncated_bytes, leftover.len() as u64);
        assert_eq!(ledger.last_seqno(), last);
        assert_eq!(read_all(&ledger)[..14], written[..]);
        assert!(!dir.path().join("ledger_1-3.committed.idx.tmp").exists());
        assert!(!dir.path().join("ledger_8-9.committed.idx").exists());
        assert!(dir.path().join("notes.txt").exists());
        drop(ledger.read(SeqNo(1)).unwrap());
        ledger.sync().unwrap();
    }
    // A header-only open chunk is simply adopted.
    let mut ledger = open(dir.path(), 200);
    ledger
        .append(TxId::new(9, last.0 + 1), false, b"z")
        .unwrap();
    ledger.truncate(last).unwrap_or_else(|e| panic!("{e}"));
    ledger.sync().unwrap();
    drop(ledger);
    let header_only = dir.path().join(format!("ledger_{}", last.0 + 1));
    if !header_only.exists() {
        let mut h = b"CVNTLDG1".to_vec();
        h.extend_from_slice(&(last.0 + 1).to_le_bytes());
        let crc = crc32c_of(&h);
        h.extend_from_slice(&crc.to_le_bytes());
        fs::write(&header_only, h).unwrap();
    }
    assert_eq!(fs::metadata(&header_only).unwrap().len(), HEADER);
    let (mut ledger, report) = Ledger::open(config(dir.path(), 200)).unwrap();
    assert_eq!(report.truncated_bytes, 0);
    ledger
        .append(TxId::new(9, last.0 + 1), false, b"z")
        .unwrap();
    ledger.sync().unwrap();
    assert_eq!(scan_all(dir.path()).unwrap().len() as u64, last.0 + 1);
}

/// CRC-32C (Castagnoli), bitwise, to build headers by hand in tests.
fn crc32c_of(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A committed fixture ledger to copy from, and the names of its chunks (no indexes).
fn pristine_chunks() -> (tempfile::TempDir, Vec<String>) {
    let pristine = tempfile::tempdir().unwrap();
    committed_fixture(pristine.path());
    let chunks = names(pristine.path())
        .into_iter()
        .filter(|n| !n.ends_with(".idx"))
        .collect();
    (pristine, chunks)
}

#[test]
fn gaps_overlaps_and_stray_files_are_errors() {
    let (pristine, chunks) = pristine_chunks();
    assert!(chunks.len() >= 3, "{chunks:?}");

    // Gap: a middle chunk removed.
    let dir = copy_dir(pristine.path());
    fs::remove_file(dir.path().join(&chunks[1])).unwrap();
    for err in [
        Ledger::open(config(dir.path(), 200))
            .map(|_| ())
            .unwrap_err(),
        ChunkScanner::open(dir.path()).map(|_| ()).unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(matches!(err, LedgerError::Layout { .. }), "{msg}");
        assert!(
            msg.contains("gap") && msg.contains(&chunks[0]) && msg.contains(&chunks[2]),
            "{msg}"
        );
    }

    // Overlap: an extra chunk covering part of another.
    let dir = copy_dir(pristine.path());
    fs::copy(dir.path().join(&chunks[1]), dir.path().join("ledger_2-5")).unwrap();
    let err = Ledger::open(config(dir.path(), 200))
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("overlap"), "{err}");

    // First chunk missing: the rest reads as a ledger continuing a snapshot at the
    // seqno before it, but not one that claims to continue another seqno.
    let dir = copy_dir(pristine.path());
    fs::remove_file(dir.path().join(&chunks[0])).unwrap();
    let f = first_of(&chunks[1]).0;
    assert_eq!(
        ChunkScanner::open(dir.path()).unwrap().first_seqno(),
        SeqNo(f)
    );
    let wrong = LedgerConfig {
        start_after: Some(TxId::new(1, f)),
        ..config(dir.path(), 200)
    };
    assert!(matches!(
        Ledger::open(wrong),
        Err(LedgerError::Layout { .. })
    ));

    // Unparseable ledger_ name.
    let dir = copy_dir(pristine.path());
    fs::write(dir.path().join("ledger_abc"), b"").unwrap();
    assert!(matches!(
        Ledger::open(config(dir.path(), 200)),
        Err(LedgerError::Layout { .. })
    ));
}

#[test]
fn scanner_checks_name_ranges_and_trailing_bytes() {
    let (pristine, chunks) = pristine_chunks();

    // Trailing garbage after the last frame of a committed chunk.
    let dir = copy_dir(pristine.path());
    let path = dir.path().join(&chunks[0]);
    let mut b = fs::read(&path).unwrap();
    let len = b.len() as u64;
    b.extend_from_slice(&[0u8; 30]);
    fs::write(&path, b).unwrap();
    let err = scan_all(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LedgerError::Corrupt { offset, .. } if *offset == len),
        "{err}"
    );

    // A chunk whose name claims fewer entries than it holds.
    let dir = copy_dir(pristine.path());
    let (a, b) = chunks[1]
        .trim_start_matches("ledger_")
        .trim_end_matches(".committed")
        .split_once('-')
        .unwrap();
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    assert!(b > a);
    let renamed = format!("ledger_{a}-{}", b - 1);
    fs::rename(dir.path().join(&chunks[1]), dir.path().join(&renamed)).unwrap();
    // Keep the ranges contiguous by dropping everything after it.
    for n in &chunks[2..] {
        fs::remove_file(dir.path().join(n)).unwrap();
    }
    let err = scan_all(dir.path()).unwrap_err();
    assert!(err.to_string().contains("beyond"), "{err}");
    assert!(Ledger::open(config(dir.path(), 200)).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary bytes as the open chunk: open and scan return, never panic.
    #[test]
    fn arbitrary_chunk_contents_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        with_header: bool,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut content = Vec::new();
        if with_header {
            content.extend_from_slice(b"CVNTLDG1");
            content.extend_from_slice(&1u64.to_le_bytes());
            content.extend_from_slice(&crc32c_of(&content).to_le_bytes());
        }
        content.extend_from_slice(&bytes);
        fs::write(dir.path().join("ledger_1"), &content).unwrap();
        let _ = scan_all(dir.path());
        if let Ok((l, _)) = Ledger::open(config(dir.path(), 200)) {
            for s in 0..=l.last_seqno().0 + 1 {
                let _ = l.read(SeqNo(s));
            }
        }
        fs::write(dir.path().join("ledger_1"), &content).unwrap();
        fs::rename(dir.path().join("ledger_1"), dir.path().join("ledger_1-2.committed")).unwrap();
        let _ = scan_all(dir.path());
        if let Ok((l, _)) = Ledger::open(config(dir.path(), 200)) {
            let _ = l.read(SeqNo(1));
            let _ = l.read(SeqNo(2));
        }
    }
}

fn deferred(dir: &Path, threshold: u64) -> Ledger {
    Ledger::open(LedgerConfig {
        deferred_close: true,
        ..config(dir, threshold)
    })
    .unwrap()
    .0
}

/// Group commit as the node runs it (prepare under the lock, run outside,
/// complete), interleaved with appends and reads at random: reads always see every
/// entry, the directory never holds two open chunks, only synced entries count as
/// synced, and a reopen (clean, or after a simulated crash) finds the same entries.
#[test]
fn deferred_close_pipeline_keeps_layout_and_entries() {
    for seed in [1u64, 7, 99] {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(0x9e37_79b9 ^ seed);
        let mut ledger = deferred(dir.path(), 2048);
        let mut written: Vec<Entry> = Vec::new();
        let mut ticket = None;
        let mut synced = 0;
        for step in 0..1500u64 {
            match rng.below(10) {
                0 if ticket.is_none() => ticket = Some(ledger.prepare_sync().unwrap()),
                1 => {
                    if let Some(t) = ticket.take() {
                        let upto = t.upto();
                        let r = t.run();
                        ledger.complete_sync(t, r).unwrap();
                        assert!(
                            ledger.synced_seqno() >= upto.max(SeqNo(synced)),
                            "monotonic"
                        );
                        synced = ledger.synced_seqno().0;
                    }
                }
                _ => {
                    written.extend(fill(&mut ledger, &mut rng, 1, 300));
                }
            }
            let open: Vec<String> = names(dir.path())
                .into_iter()
                .filter(|n| !n.contains('-') && !n.ends_with(".idx"))
                .collect();
            assert!(open.len() <= 1, "step {step}: {open:?}");
            if step % 97 == 0 && !written.is_empty() {
                let i = rng.below(written.len() as u64) as usize;
                assert_eq!(ledger.read(written[i].txid.seqno).unwrap(), written[i]);
            }
        }
        if let Some(t) = ticket.take() {
            let r = t.run();
            ledger.complete_sync(t, r).unwrap();
        }
        assert!(ledger.synced_seqno() >= SeqNo(synced));
        synced = ledger.synced_seqno().0;
        // A crash now: only what was synced must survive.
        let crashed = copy_dir(dir.path());
        let (reopened, _) = Ledger::open(config(crashed.path(), 2048)).unwrap();
        assert!(reopened.last_seqno() >= SeqNo(synced));
        assert_eq!(
            read_all(&reopened),
            written[..reopened.last_seqno().0 as usize]
        );
        // A full sync settles everything; a clean reopen sees all of it.
        ledger.sync().unwrap();
        assert_eq!(ledger.synced_seqno(), SeqNo(written.len() as u64));
        check_names(dir.path(), written.len() as u64, 0);
        let closed = names(dir.path()).iter().filter(|n| n.contains('-')).count();
        assert!(closed >= 3, "{:?}", names(dir.path()));
        drop(ledger);
        let reopened = deferred(dir.path(), 2048);
        assert_eq!(read_all(&reopened), written);
    }
}

#[test]
fn truncate_waits_for_outstanding_syncs_and_settles_a_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = deferred(dir.path(), 64);
    for s in 1..=3 {
        ledger.append(TxId::new(1, s), s == 3, &[7; 80]).unwrap();
    }
    // The signature at 3 began a close; 4 and 5 sit in memory for the next chunk.
    ledger.append(TxId::new(1, 4), false, b"four").unwrap();
    ledger.append(TxId::new(1, 5), false, b"five").unwrap();
    assert_eq!(names(dir.path()), ["ledger_1"]);
    let t = ledger.prepare_sync().unwrap();
    assert_eq!(
        t.upto(),
        SeqNo(3),
        "entries of a chunk without a file are not durable yet"
    );
    assert!(matches!(
        ledger.truncate(SeqNo(4)),
        Err(LedgerError::SyncInFlight)
    ));
    let r = t.run();
    ledger.complete_sync(t, r).unwrap();
    assert_eq!(ledger.synced_seqno(), SeqNo(3));
    assert_eq!(names(dir.path()), ["ledger_1-3", "ledger_4"]);
    ledger.truncate(SeqNo(4)).unwrap();
    assert_eq!(ledger.last_seqno(), SeqNo(4));
    assert_eq!(ledger.read(SeqNo(4)).unwrap().payload, b"four");
    ledger.sync().unwrap();
    drop(ledger);
    let reopened = deferred(dir.path(), 64);
    assert_eq!(reopened.last_seqno(), SeqNo(4));
}

/// Undoing entries still in the write buffer touches no file (so a primary on a
/// full disk can undo an append Raft dropped); the ledger then continues and
/// reopens as if they were never appended. A cut into written bytes still works.
#[test]
fn truncating_buffered_entries_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = open(dir.path(), u64::MAX);
    let entry = |s: u64, tag: u8| Entry {
        txid: TxId::new(1, s),
        is_signature: false,
        payload: vec![tag; 64],
    };
    let mut kept: Vec<Entry> = (1..=10).map(|s| entry(s, 1)).collect();
    for e in &kept {
        ledger.append(e.txid, e.is_signature, &e.payload).unwrap();
    }
    ledger.sync().unwrap();
    let chunk = chunk_path(dir.path(), |_| true);
    let on_disk = fs::metadata(&chunk).unwrap().len();
    for s in 11..=13 {
        let e = entry(s, 2);
        ledger.append(e.txid, e.is_signature, &e.payload).unwrap();
    }
    ledger.truncate(SeqNo(11)).unwrap();
    assert_eq!(
        fs::metadata(&chunk).unwrap().len(),
        on_disk,
        "nothing written"
    );
    assert_eq!(ledger.last_seqno(), SeqNo(11));
    assert_eq!(ledger.last_txid(), Some(TxId::new(1, 11)));
    assert!(ledger.read(SeqNo(12)).is_err());
    kept.push(entry(11, 2));
    let replacement = Entry {
        txid: TxId::new(2, 12),
        is_signature: true,
        payload: vec![3; 40],
    };
    ledger
        .append(
            replacement.txid,
            replacement.is_signature,
            &replacement.payload,
        )
        .unwrap();
    kept.push(replacement);
    ledger.sync().unwrap();
    assert_eq!(read_all(&ledger), kept);
    // A cut into bytes already written takes the usual path.
    ledger.truncate(SeqNo(5)).unwrap();
    kept.truncate(5);
    assert_eq!(read_all(&ledger), kept);
    drop(ledger);
    let ledger = open(dir.path(), u64::MAX);
    assert_eq!(read_all(&ledger), kept);
}

/// A clean drop without a sync keeps what was appended after a chunk began to
/// close (with deferred closes, the next chunk has no file until the close
/// completes): the close is completed on drop, and the later entries written.
#[test]
fn a_drop_during_a_deferred_close_keeps_the_entries_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let deferred = || LedgerConfig {
        deferred_close: true,
        ..config(dir.path(), 256)
    };
    let (mut ledger, _) = Ledger::open(deferred()).unwrap();
    let mut written = Vec::new();
    for seqno in 1..=6 {
        let e = Entry {
            txid: TxId::new(1, seqno),
            is_signature: seqno == 4,
            payload: payload(seqno, 100),
        };
        ledger.append(e.txid, e.is_signature, &e.payload).unwrap();
        written.push(e);
    }
    assert!(ledger.close_pending(), "the signature at 4 began a close");
    drop(ledger);
    let (ledger, report) = Ledger::open(deferred()).unwrap();
    assert_eq!(report.last_seqno, SeqNo(6));
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(read_all(&ledger), written);
}
