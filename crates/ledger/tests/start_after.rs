//! Ledgers that continue a snapshot: they start after a base seqno instead of at 1.

use covenant_types::SeqNo;
use std::fs;
use std::path::Path;

use covenant_ledger::{ChunkScanner, Entry, Ledger, LedgerConfig, LedgerError, TxId};

fn base() -> TxId {
    TxId::new(3, 1000)
}

fn config(dir: &Path, threshold: u64, start_after: Option<TxId>) -> LedgerConfig {
    LedgerConfig {
        chunk_threshold_bytes: threshold,
        start_after,
        ..LedgerConfig::new(dir)
    }
}

fn open(dir: &Path, threshold: u64, start_after: Option<TxId>) -> Ledger {
    Ledger::open(config(dir, threshold, start_after)).unwrap().0
}

fn chunk_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("ledger_") && !n.ends_with(".idx"))
        .collect();
    v.sort();
    v
}

/// Appends seqnos `from..=to`, a signature every 4th, in `view`.
fn append(ledger: &mut Ledger, view: u64, from: u64, to: u64) -> Vec<Entry> {
    (from..=to)
        .map(|s| {
            let e = Entry {
                txid: TxId::new(view, s),
                is_signature: s % 4 == 0,
                payload: format!("entry {s}").repeat(3).into_bytes(),
            };
            ledger.append(e.txid, e.is_signature, &e.payload).unwrap();
            e
        })
        .collect()
}

fn read_from(ledger: &Ledger, first: u64) -> Vec<Entry> {
    ledger
        .read_range(SeqNo(first), ledger.last_seqno())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn empty_ledger_starts_after_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = open(dir.path(), 300, Some(base()));
    assert_eq!(ledger.last_seqno(), SeqNo(1000));
    assert_eq!(ledger.last_txid(), Some(base()));
    assert_eq!(ledger.synced_seqno(), SeqNo(1000));
    assert_eq!(ledger.committed_seqno(), SeqNo(1000));
    assert_eq!(ledger.first_seqno(), SeqNo(1001));
    assert!(chunk_names(dir.path()).is_empty());
    assert!(matches!(
        ledger.read(SeqNo(1000)),
        Err(LedgerError::BeforeStart {
            seqno: SeqNo(1000),
            first: SeqNo(1001)
        })
    ));
    assert!(matches!(
        ledger.read(SeqNo(0)),
        Err(LedgerError::NotFound(SeqNo(0)))
    ));
    assert!(matches!(
        ledger.read(SeqNo(1001)),
        Err(LedgerError::NotFound(SeqNo(1001)))
    ));
    assert!(matches!(
        ledger.read_range(SeqNo(5), SeqNo(1000)).map(|_| ()),
        Err(LedgerError::BeforeStart {
            seqno: SeqNo(5),
            ..
        })
    ));
    // Wrong seqno, or a view older than the base's, is refused.
    assert!(matches!(
        ledger.append(TxId::new(3, 1), false, b"x"),
        Err(LedgerError::OutOfOrder {
            expected: 1001,
            got: 1
        })
    ));
    assert!(matches!(
        ledger.append(TxId::new(2, 1001), false, b"x"),
        Err(LedgerError::BadView { min: 3, .. })
    ));

    let mut written = append(&mut ledger, 3, 1001, 1040);
    let first_chunk = &chunk_names(dir.path())[0];
    assert!(first_chunk.starts_with("ledger_1001-"), "{first_chunk}");
    ledger.sync().unwrap();
    assert_eq!(ledger.synced_seqno(), SeqNo(1040));
    ledger.commit(SeqNo(1020)).unwrap();
    assert_eq!(ledger.committed_seqno(), SeqNo(1020));
    assert!(
        chunk_names(dir.path())
            .iter()
            .any(|n| n.starts_with("ledger_1001-") && n.ends_with(".committed")),
        "{:?}",
        chunk_names(dir.path())
    );
    assert_eq!(read_from(&ledger, 1001), written);
    written.extend(append(&mut ledger, 4, 1041, 1043));
    ledger.sync().unwrap();
    drop(ledger);

    // Reopen with the same start_after, and without: same entries and base.
    for after in [Some(base()), None] {
        let ledger = open(dir.path(), 300, after);
        assert_eq!(ledger.first_seqno(), SeqNo(1001));
        assert_eq!(ledger.last_txid(), Some(TxId::new(4, 1043)));
        assert_eq!(ledger.synced_seqno(), SeqNo(1043));
        assert!(ledger.committed_seqno() >= SeqNo(1004));
        assert_eq!(read_from(&ledger, 1001), written);
        assert!(matches!(
            ledger.read(SeqNo(17)),
            Err(LedgerError::BeforeStart {
                first: SeqNo(1001),
                ..
            })
        ));
    }

    // The audit's scanner reads it from its first chunk.
    let scanner = ChunkScanner::open(dir.path()).unwrap();
    assert_eq!(scanner.first_seqno(), SeqNo(1001));
    let scanned: Vec<Entry> = scanner.map(|r| r.unwrap().entry).collect();
    assert_eq!(scanned, written);
}

#[test]
fn a_start_after_that_disagrees_with_the_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = open(dir.path(), 300, Some(base()));
    append(&mut ledger, 3, 1001, 1010);
    ledger.sync().unwrap();
    drop(ledger);
    for wrong in [TxId::new(3, 999), TxId::new(3, 1001), TxId::new(1, 5)] {
        let err = Ledger::open(config(dir.path(), 300, Some(wrong))).unwrap_err();
        assert!(matches!(err, LedgerError::Layout { .. }), "{err}");
        assert!(err.to_string().contains("1001"), "{err}");
    }
    // Views before the base's in the directory are refused against start_after.
    let err = Ledger::open(config(dir.path(), 300, Some(TxId::new(9, 1000)))).unwrap_err();
    assert!(matches!(err, LedgerError::Corrupt { .. }), "{err}");
    // Not a transaction at all.
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        Ledger::open(config(empty.path(), 300, Some(TxId::new(0, 3)))),
        Err(LedgerError::Layout { .. })
    ));
    // A full ledger (first chunk at 1) ignores start_after.
    let full = tempfile::tempdir().unwrap();
    let mut ledger = open(full.path(), 300, None);
    append(&mut ledger, 1, 1, 5);
    ledger.sync().unwrap();
    drop(ledger);
    let ledger = open(full.path(), 300, Some(base()));
    assert_eq!(ledger.first_seqno(), SeqNo(1));
    assert_eq!(ledger.last_seqno(), SeqNo(5));
}

#[test]
fn torn_tail_of_the_first_chunk_after_a_base() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = open(dir.path(), u64::MAX, Some(base()));
    let written = append(&mut ledger, 3, 1001, 1005);
    ledger.sync().unwrap();
    drop(ledger);
    let file = dir.path().join("ledger_1001");
    let len = fs::metadata(&file).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 2)
        .unwrap();
    let (mut ledger, report) = Ledger::open(config(dir.path(), u64::MAX, Some(base()))).unwrap();
    assert!(report.dropped_partial_entry);
    assert_eq!(report.last_seqno, SeqNo(1004));
    assert_eq!(read_from(&ledger, 1001), written[..4]);
    ledger
        .append(TxId::new(4, 1005), true, b"after the crash")
        .unwrap();
    ledger.sync().unwrap();
    drop(ledger);

    // Every entry torn away: the chunk keeps only its header, the base stays.
    let file_len = 20 + 5;
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(file_len)
        .unwrap();
    let (ledger, report) = Ledger::open(config(dir.path(), u64::MAX, Some(base()))).unwrap();
    assert!(report.dropped_partial_entry);
    assert_eq!(ledger.last_txid(), Some(base()));
    assert_eq!(ledger.first_seqno(), SeqNo(1001));
    drop(ledger);
    // Without start_after the base seqno is still known from the chunk name.
    let ledger = open(dir.path(), u64::MAX, None);
    assert_eq!(ledger.last_seqno(), SeqNo(1000));
    assert_eq!(ledger.last_txid(), None);
    assert_eq!(ledger.first_seqno(), SeqNo(1001));
    drop(ledger);

    // A chunk file created but never written is removed; start_after keeps the base.
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(7)
        .unwrap();
    let ledger = open(dir.path(), u64::MAX, Some(base()));
    assert!(chunk_names(dir.path()).is_empty());
    assert_eq!(ledger.last_txid(), Some(base()));
}

#[test]
fn truncation_stops_at_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = open(dir.path(), 200, Some(base()));
    append(&mut ledger, 3, 1001, 1030);
    ledger.sync().unwrap();
    assert!(matches!(
        ledger.truncate(SeqNo(999)),
        Err(LedgerError::BelowCommitted {
            requested: SeqNo(999),
            committed: SeqNo(1000)
        })
    ));
    ledger.truncate(SeqNo(1010)).unwrap();
    assert_eq!(ledger.last_txid(), Some(TxId::new(3, 1010)));
    ledger.truncate(SeqNo(1000)).unwrap();
    assert_eq!(ledger.last_txid(), Some(base()));
    assert_eq!(ledger.synced_seqno(), SeqNo(1000));
    assert!(chunk_names(dir.path()).is_empty());
    append(&mut ledger, 5, 1001, 1002);
    ledger.sync().unwrap();
    drop(ledger);
    let ledger = open(dir.path(), 200, Some(base()));
    assert_eq!(ledger.last_txid(), Some(TxId::new(5, 1002)));

    // Committed entries after the base cannot be truncated either.
    let mut ledger = ledger;
    ledger.commit(SeqNo(1002)).unwrap();
    assert!(matches!(
        ledger.truncate(SeqNo(1000)),
        Err(LedgerError::BelowCommitted { .. })
    ));
}

#[test]
fn deferred_close_after_a_base() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(LedgerConfig {
        deferred_close: true,
        ..config(dir.path(), 150, Some(base()))
    })
    .unwrap()
    .0;
    let written = append(&mut ledger, 3, 1001, 1060);
    ledger.sync().unwrap();
    ledger.commit(SeqNo(1060)).unwrap();
    assert_eq!(read_from(&ledger, 1001), written);
    drop(ledger);
    let names = chunk_names(dir.path());
    assert!(names[0].starts_with("ledger_1001-"), "{names:?}");
    assert!(names.len() > 3, "{names:?}");
    let scanned: Vec<Entry> = ChunkScanner::open(dir.path())
        .unwrap()
        .map(|r| r.unwrap().entry)
        .collect();
    assert_eq!(scanned, written);
    assert_eq!(
        Ledger::first_seqno_on_disk(dir.path()).unwrap(),
        Some(SeqNo(1001))
    );
    assert_eq!(
        Ledger::first_seqno_on_disk(&dir.path().join("absent")).unwrap(),
        None
    );
}
