//! `HistoryReader`: committed transactions read without the engine (and so
//! without the lock a node keeps around it) answer exactly as
//! `Engine::read_tx`, across chunk commits, archives, rollbacks, rekeys,
//! reopens and a recovery; damage is an error naming the transaction.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use covenant_crypto::{EncryptionKeyPair, LedgerSecrets};
use covenant_engine::{Engine, EngineConfig, EngineError, HistoryReader, SecretRecipient};
use covenant_ledger::LedgerError;
use covenant_test_support::Fixture;
use covenant_types::{SeqNo, TxId};
use proptest::prelude::*;

fn config(f: &Fixture, name: &str) -> EngineConfig {
    let home = f.dir.path().join(name);
    let mut c = EngineConfig::new(home.join("ledger"));
    c.chunk_threshold_bytes = 2048;
    c.sig_tx_interval = 5;
    c.archive_dir = Some(home.join("archive"));
    c
}

/// One transaction with a private and a public write.
fn write(engine: &mut Engine, i: u64) -> TxId {
    let mut tx = engine.begin();
    let k = format!("k{i}");
    tx.put("entries", k.as_bytes(), format!("secret {i}").as_bytes());
    tx.put("public:index", k.as_bytes(), format!("{i}").as_bytes());
    engine.commit_tx(tx, None).unwrap()
}

/// Every seqno from 0 to past the end: the reader answers as the engine does
/// for what it reads, and says "ask the engine" only past the committed chunks.
fn check(reader: &HistoryReader, engine: &Engine) -> Result<(), TestCaseError> {
    let readable = reader.last_readable();
    prop_assert!(readable <= engine.committed_seqno());
    for s in 0..=engine.last_seqno().0 + 1 {
        let seqno = SeqNo(s);
        match (reader.read_tx(seqno), engine.read_tx(seqno)) {
            (Ok(got), Ok(want)) => {
                prop_assert!(seqno <= readable);
                prop_assert_eq!(got, want);
            }
            (Err(EngineError::NotInCommittedHistory(x)), _) => {
                prop_assert_eq!(x, seqno);
                prop_assert!(seqno > readable, "{} is committed history", seqno);
            }
            (Err(got), Err(want)) => prop_assert_eq!(got.to_string(), want.to_string()),
            (got, want) => {
                return Err(TestCaseError::fail(format!(
                    "seqno {s}: reader {got:?}, engine {want:?}"
                )))
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64),
    Sign,
    Flush,
    Rekey,
    Archive,
    /// Drops the uncommitted suffix (a rekey in it takes its secret along).
    Rollback,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1u64..12).prop_map(Op::Write),
        2 => Just(Op::Sign),
        3 => Just(Op::Flush),
        1 => Just(Op::Rekey),
        1 => Just(Op::Archive),
        1 => Just(Op::Rollback),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// A reader taken at open and kept (and a fresh one after each step) agree
    /// with `Engine::read_tx` on every seqno.
    #[test]
    fn history_reader_matches_read_tx_across_commits_archives_rekeys_and_reopens(
        ops in proptest::collection::vec(op(), 1..30),
    ) {
        let f = Fixture::new();
        let c = config(&f, "p");
        let key = Arc::new(EncryptionKeyPair::generate().unwrap());
        let me = [SecretRecipient {
            node_id: f.node.node_id.clone(),
            encryption_pub_key: key.public_key_pem().unwrap(),
        }];
        let open = |secrets: LedgerSecrets| {
            Engine::open_with_key(c.clone(), f.node.clone(), secrets, Some(key.clone())).unwrap()
        };
        let mut e = open(f.secret.clone().into());
        let mut reader = e.history_reader();
        let mut i = 0;
        for op in ops {
            match op {
                Op::Write(n) => {
                    for _ in 0..n {
                        i += 1;
                        write(&mut e, i);
                    }
                }
                Op::Sign if e.last_seqno() > SeqNo(0) => {
                    e.emit_signature().unwrap();
                }
                Op::Sign => {}
                Op::Flush => {
                    e.flush().unwrap();
                }
                Op::Rekey => {
                    let mut tx = e.begin();
                    e.rekey(&mut tx, &me).unwrap();
                    e.commit_tx(tx, None).unwrap();
                }
                Op::Archive => {
                    let before = e.committed_seqno().next();
                    while e.archive_step(before).unwrap().is_some() {}
                }
                Op::Rollback => e.rollback(e.committed_seqno()).unwrap(),
                Op::Reopen => {
                    let chain = e.ledger_secrets().clone();
                    drop(e);
                    e = open(chain);
                    reader = e.history_reader();
                }
            }
            check(&reader, &e)?;
            check(&e.history_reader(), &e)?;
        }
        if e.last_seqno() > SeqNo(0) {
            e.emit_signature().unwrap();
        }
        e.flush().unwrap();
        check(&reader, &e)?;
    }
}

/// Committed, flushed history in several committed chunks, some archived.
fn busy_engine(f: &Fixture) -> Engine {
    let mut e = Engine::open(config(f, "a"), f.node.clone(), f.secret.clone()).unwrap();
    for i in 1..=200 {
        write(&mut e, i);
    }
    e.emit_signature().unwrap();
    e.flush().unwrap();
    let before = SeqNo(e.committed_seqno().0 / 3);
    while e.archive_step(before).unwrap().is_some() {}
    e
}

/// The point of the reader: while another thread holds the engine's mutex (as
/// a writer does), committed history is still read, in full.
#[test]
fn history_reader_reads_while_another_thread_holds_the_engine_lock() {
    let f = Fixture::new();
    let engine = Arc::new(Mutex::new(busy_engine(&f)));
    let (reader, committed) = {
        let e = engine.lock().unwrap();
        (e.history_reader(), e.committed_seqno())
    };
    assert!(reader.last_readable() > SeqNo(100));
    let (locked_tx, locked_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            let _guard = engine.lock().unwrap();
            locked_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        })
    };
    locked_rx.recv().unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    let worker = {
        let reader = reader.clone();
        std::thread::spawn(move || {
            let read: Vec<_> = (1..=reader.last_readable().0)
                .map(|s| reader.read_tx(SeqNo(s)).unwrap())
                .collect();
            done_tx.send(read).unwrap();
        })
    };
    let read = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("reads through the history reader waited for the engine lock");
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    worker.join().unwrap();
    let e = engine.lock().unwrap();
    assert_eq!(read.len() as u64, reader.last_readable().0);
    for (i, got) in read.into_iter().enumerate() {
        assert_eq!(got, e.read_tx(SeqNo(i as u64 + 1)).unwrap());
    }
    // Past the committed chunks the caller is sent to the engine.
    assert!(matches!(
        reader.read_tx(committed.next()),
        Err(EngineError::NotInCommittedHistory(_))
    ));
}

/// A writer committing, flushing and archiving under the engine's mutex while
/// readers read history without it: every read is the engine's answer or "ask
/// the engine", and the readable end only moves forward.
#[test]
fn history_reader_keeps_up_with_a_busy_writer() {
    let f = Fixture::new();
    let engine = Arc::new(Mutex::new(busy_engine(&f)));
    let reader = engine.lock().unwrap().history_reader();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2u64)
        .map(|t| {
            let reader = reader.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = SeqNo(0);
                let mut s = 1 + t;
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let readable = reader.last_readable();
                    assert!(readable >= seen);
                    seen = readable;
                    match reader.read_tx(SeqNo(s)) {
                        Ok((txid, _)) => {
                            assert_eq!(txid.seqno, SeqNo(s));
                            reads += 1;
                        }
                        Err(EngineError::NotInCommittedHistory(_)) => assert!(SeqNo(s) > seen),
                        Err(e) => panic!("seqno {s}: {e}"),
                    }
                    s = if SeqNo(s) >= seen { 1 + t } else { s + 2 };
                }
                (reads, seen)
            })
        })
        .collect();
    let mut i = 1000;
    for round in 0..40 {
        let mut e = engine.lock().unwrap();
        for _ in 0..10 {
            i += 1;
            write(&mut e, i);
        }
        e.emit_signature().unwrap();
        e.flush().unwrap();
        if round % 4 == 3 {
            let before = SeqNo(e.committed_seqno().0 / 2);
            while e.archive_step(before).unwrap().is_some() {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let (reads, _) = r.join().unwrap();
        assert!(reads > 0);
    }
    let e = engine.lock().unwrap();
    for s in 1..=reader.last_readable().0 {
        assert_eq!(
            reader.read_tx(SeqNo(s)).unwrap(),
            e.read_tx(SeqNo(s)).unwrap()
        );
    }
}

fn committed_chunk_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
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
fn a_corrupted_byte_in_a_committed_chunk_is_an_error_naming_the_seqno() {
    let f = Fixture::new();
    let c = config(&f, "a");
    let e = busy_engine(&f);
    let reader = e.history_reader();
    // One archived chunk and one still in the ledger directory.
    let archived = committed_chunk_files(c.archive_dir.as_ref().unwrap());
    let main = committed_chunk_files(&c.ledger_dir);
    assert!(!archived.is_empty() && !main.is_empty());
    for (first, path) in [archived[archived.len() - 1].clone(), main[0].clone()] {
        let mut bytes = std::fs::read(&path).unwrap();
        // The first frame: its payload follows the 20-byte chunk header and
        // the 21-byte frame header, after its u32 length.
        let len = u32::from_le_bytes(bytes[20..24].try_into().unwrap()) as usize;
        bytes[41 + len / 2] ^= 0x08;
        std::fs::write(&path, bytes).unwrap();
        let got = reader.read_tx(SeqNo(first));
        match &got {
            Err(EngineError::Ledger(LedgerError::Corrupt {
                seqno_hint: Some(s),
                ..
            })) => assert_eq!(*s, first),
            other => panic!("{other:?}"),
        }
        let shown = got.unwrap_err().to_string();
        assert!(shown.contains(&format!(".{first} ")), "{shown}");
        assert_eq!(
            shown,
            e.read_tx(SeqNo(first)).unwrap_err().to_string(),
            "the engine reports the same damage"
        );
        assert!(reader.read_tx(SeqNo(first + 1)).is_ok());
    }
}

/// During a recovery the old private domain is refused by the reader as by
/// the engine; once the old secrets complete it, the same reader opens it.
#[test]
fn history_reader_follows_a_recovery() {
    let f = Fixture::new();
    let mut c = config(&f, "r");
    c.archive_dir = None;
    let key = Arc::new(EncryptionKeyPair::generate().unwrap());
    let me = [SecretRecipient {
        node_id: f.node.node_id.clone(),
        encryption_pub_key: key.public_key_pem().unwrap(),
    }];
    let mut old =
        Engine::open_with_key(c.clone(), f.node.clone(), f.secret.clone(), Some(key)).unwrap();
    for i in 1..=60 {
        write(&mut old, i);
        if i % 20 == 0 {
            let mut tx = old.begin();
            old.rekey(&mut tx, &me).unwrap();
            old.commit_tx(tx, None).unwrap();
        }
    }
    old.emit_signature().unwrap();
    old.flush().unwrap();
    let chain = old.ledger_secrets().clone();
    drop(old);

    let mut r = Engine::open_for_recovery(c.clone(), f.node.clone(), None).unwrap();
    let reader = r.history_reader();
    assert!(reader.last_readable() > SeqNo(10));
    let mut refused = 0;
    for s in 1..=reader.last_readable().0 {
        let got = reader.read_tx(SeqNo(s));
        if matches!(got, Err(EngineError::NotRecovered(_))) {
            refused += 1;
        }
        assert_eq!(
            format!("{got:?}"),
            format!("{:?}", r.read_tx(SeqNo(s))),
            "seqno {s}"
        );
    }
    assert!(refused > 0);
    r.complete_recovery(chain).unwrap();
    for s in 1..=reader.last_readable().0 {
        let (txid, ws) = reader.read_tx(SeqNo(s)).unwrap();
        assert_eq!((txid, ws), r.read_tx(SeqNo(s)).unwrap());
    }
}
