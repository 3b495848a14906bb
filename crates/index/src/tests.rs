use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

fn colls(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn seqnos(txids: &[TxId]) -> Vec<u64> {
    txids.iter().map(|t| t.seqno.0).collect()
}

fn open_in(dir: &tempfile::TempDir) -> CollectionIndex {
    CollectionIndex::open(&dir.path().join("index.redb")).expect("open")
}

#[test]
fn is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<CollectionIndex>();
}

#[test]
fn ranges_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let idx = open_in(&dir);
    for s in 1..=10u64 {
        idx.add(
            TxId::new(1, s),
            colls(&[if s % 2 == 0 { "even" } else { "odd" }]),
        );
        // Half on disk, half in the tail.
        if s == 5 {
            idx.commit(SeqNo(5)).unwrap();
        }
    }
    assert_eq!(idx.indexed_upto(), SeqNo(5));
    let (p, next) = idx.range("even", SeqNo(3), SeqNo(9), 10).unwrap();
    assert_eq!(seqnos(&p), vec![4, 6, 8]);
    assert_eq!(next, None);
    let (p, next) = idx.range("odd", SeqNo(1), SeqNo(100), 2).unwrap();
    assert_eq!(seqnos(&p), vec![1, 3]);
    assert_eq!(next, Some(TxId::new(1, 5)));
    let (p, next) = idx.range("odd", SeqNo(5), SeqNo(100), 2).unwrap();
    assert_eq!(seqnos(&p), vec![5, 7]);
    assert_eq!(next, Some(TxId::new(1, 9)));
    let (p, next) = idx.range("odd", SeqNo(1), SeqNo(100), 0).unwrap();
    assert!(p.is_empty());
    assert_eq!(next, Some(TxId::new(1, 1)));
    assert!(idx
        .range("none", SeqNo(1), SeqNo(10), 5)
        .unwrap()
        .0
        .is_empty());
    assert!(idx
        .range("odd", SeqNo(9), SeqNo(1), 5)
        .unwrap()
        .0
        .is_empty());
    // An uncommitted seqno indexed again keeps the newest TxId.
    idx.add(TxId::new(2, 9), colls(&["odd"]));
    assert_eq!(
        idx.range("odd", SeqNo(9), SeqNo(9), 5).unwrap().0,
        vec![TxId::new(2, 9)]
    );
    assert_eq!(
        idx.latest("even", SeqNo(7), 2).unwrap(),
        vec![TxId::new(1, 6), TxId::new(1, 4)]
    );
    assert_eq!(
        seqnos(&idx.latest("odd", SeqNo(100), 3).unwrap()),
        vec![9, 7, 5]
    );
    assert!(idx.latest("even", SeqNo(1), 2).unwrap().is_empty());
    assert!(idx.latest("even", SeqNo(10), 0).unwrap().is_empty());
    assert_eq!(idx.collections().unwrap(), colls(&["even", "odd"]));
    assert_eq!(idx.count("odd").unwrap(), 5);
    assert_eq!(idx.count("none").unwrap(), 0);
}

#[test]
fn rollback_drops_the_uncommitted_tail_only() {
    let dir = tempfile::tempdir().unwrap();
    let idx = open_in(&dir);
    for s in 1..=6 {
        idx.add(TxId::new(1, s), colls(&["c"]));
    }
    idx.commit(SeqNo(3)).unwrap();
    idx.rollback(SeqNo(4));
    assert_eq!(
        seqnos(&idx.range("c", SeqNo(1), SeqNo(10), 10).unwrap().0),
        vec![1, 2, 3, 4]
    );
    // Committed entries survive a rollback below the watermark.
    idx.rollback(SeqNo(1));
    assert_eq!(
        seqnos(&idx.range("c", SeqNo(1), SeqNo(10), 10).unwrap().0),
        vec![1, 2, 3]
    );
    // Added again after the rollback, in a new view and another collection.
    idx.add(TxId::new(2, 4), colls(&["d"]));
    idx.commit(SeqNo(4)).unwrap();
    assert_eq!(
        idx.latest("d", SeqNo(10), 5).unwrap(),
        vec![TxId::new(2, 4)]
    );
    assert_eq!(
        idx.latest("c", SeqNo(10), 1).unwrap(),
        vec![TxId::new(1, 3)]
    );
    // Committed seqnos are not indexed again.
    idx.add(TxId::new(3, 2), colls(&["c", "e"]));
    assert_eq!(idx.latest("c", SeqNo(2), 1).unwrap(), vec![TxId::new(1, 2)]);
    assert_eq!(idx.collections().unwrap(), colls(&["c", "d"]));
    // A committed batch supersedes the uncommitted tail up to its watermark.
    idx.add(TxId::new(3, 6), colls(&["c"]));
    idx.add(TxId::new(3, 8), colls(&["c"]));
    idx.add_committed_batch(&[(TxId::new(4, 6), colls(&["d"]))], SeqNo(7))
        .unwrap();
    idx.commit(SeqNo(8)).unwrap();
    assert_eq!(
        idx.range("c", SeqNo(5), SeqNo(9), 5).unwrap().0,
        vec![TxId::new(3, 8)]
    );
    assert_eq!(idx.latest("d", SeqNo(9), 1).unwrap(), vec![TxId::new(4, 6)]);
}

#[test]
fn reopen_keeps_committed_entries_only() {
    let dir = tempfile::tempdir().unwrap();
    {
        let idx = open_in(&dir);
        idx.add(TxId::new(1, 1), colls(&["a", "b", "a"]));
        idx.add(TxId::new(1, 2), colls(&["a"]));
        idx.commit(SeqNo(1)).unwrap();
        idx.add(TxId::new(1, 3), colls(&["c"]));
        assert_eq!(idx.count("a").unwrap(), 2);
    }
    let idx = open_in(&dir);
    assert_eq!(idx.indexed_upto(), SeqNo(1));
    assert_eq!(
        idx.latest("a", SeqNo(10), 10).unwrap(),
        vec![TxId::new(1, 1)]
    );
    assert_eq!(idx.collections().unwrap(), colls(&["a", "b"]));
    assert_eq!(idx.count("a").unwrap(), 1);
    // Catching up from the ledger.
    idx.add_committed_batch(
        &[
            (TxId::new(1, 2), colls(&["a"])),
            (TxId::new(1, 3), colls(&["c"])),
        ],
        SeqNo(3),
    )
    .unwrap();
    assert_eq!(idx.indexed_upto(), SeqNo(3));
    // The same transaction fed twice is counted once.
    idx.add_committed_batch(&[(TxId::new(1, 2), colls(&["a"]))], SeqNo(2))
        .unwrap();
    assert_eq!(idx.indexed_upto(), SeqNo(3));
    assert_eq!(idx.count("a").unwrap(), 2);
    drop(idx);
    let idx = open_in(&dir);
    assert_eq!(idx.indexed_upto(), SeqNo(3));
    assert_eq!(
        seqnos(&idx.range("a", SeqNo(1), SeqNo(3), 10).unwrap().0),
        vec![1, 2]
    );
    assert_eq!(idx.collections().unwrap(), colls(&["a", "b", "c"]));
}

#[test]
fn batch_above_its_watermark_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let idx = open_in(&dir);
    let err = idx
        .add_committed_batch(
            &[
                (TxId::new(1, 1), colls(&["a"])),
                (TxId::new(1, 5), colls(&["a"])),
            ],
            SeqNo(4),
        )
        .unwrap_err();
    assert!(matches!(err, IndexError::AboveWatermark { .. }), "{err}");
    assert_eq!(idx.indexed_upto(), SeqNo::ZERO);
    assert_eq!(idx.count("a").unwrap(), 0);
}

#[test]
fn wrong_format_version_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    drop(CollectionIndex::open(&path).unwrap());
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(META_FORMAT_VERSION, FORMAT_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = CollectionIndex::open(&path).err().expect("must fail");
    assert!(matches!(err, IndexError::Corrupt(_)), "{err}");
    CollectionIndex::remove(&path).unwrap();
    CollectionIndex::remove(&path).unwrap();
    assert_eq!(
        CollectionIndex::open(&path).unwrap().indexed_upto(),
        SeqNo::ZERO
    );
}

#[test]
fn foreign_redb_file_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let t: TableDefinition<u64, u64> = TableDefinition::new("something");
        txn.open_table(t).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    let err = CollectionIndex::open(&path).err().expect("must fail");
    assert!(matches!(err, IndexError::Corrupt(_)), "{err}");

    // Our marker, but a table of another type.
    let path = dir.path().join("other.redb");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let mut meta = txn.open_table(META).unwrap();
        meta.insert(META_FORMAT_VERSION, FORMAT_VERSION).unwrap();
        meta.insert(META_INDEXED_UPTO, 0).unwrap();
        drop(meta);
        let t: TableDefinition<u64, u64> = TableDefinition::new("entries");
        txn.open_table(t).unwrap();
        txn.commit().unwrap();
    }
    let err = CollectionIndex::open(&path).err().expect("must fail");
    assert!(matches!(err, IndexError::Corrupt(_)), "{err}");
}

#[test]
fn not_a_redb_file_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    std::fs::write(&path, vec![0x5a; 10_000]).unwrap();
    let err = CollectionIndex::open(&path).err().expect("must fail");
    assert!(matches!(err, IndexError::Corrupt(_)), "{err}");
}

#[test]
fn second_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _idx = open_in(&dir);
    let err = CollectionIndex::open(&dir.path().join("index.redb"))
        .err()
        .expect("must fail");
    assert!(matches!(err, IndexError::AlreadyOpen(_)), "{err}");
}

/// A closed index of `n` transactions over 7 collections; returns its bytes.
fn sample_file(path: &Path, n: u64) -> Vec<u8> {
    let idx = CollectionIndex::open(path).unwrap();
    let batch: Vec<_> = (1..=n)
        .map(|s| {
            (
                TxId::new(1 + s / 1000, s),
                vec![format!("collection-{}", s % 7)],
            )
        })
        .collect();
    for chunk in batch.chunks(2000) {
        idx.add_committed_batch(chunk, chunk[chunk.len() - 1].0.seqno)
            .unwrap();
    }
    drop(idx);
    std::fs::read(path).unwrap()
}

/// Opens a damaged file and runs every query: errors are fine, panics are not.
fn exercise(path: &Path, options: &OpenOptions) -> Result<(), IndexError> {
    let idx = CollectionIndex::open_with(path, options)?;
    for c in 0..7 {
        let c = format!("collection-{c}");
        let mut from = SeqNo(1);
        // Page through everything (bounded, in case damage made a loop).
        for _ in 0..1000 {
            match idx.range(&c, from, SeqNo(u64::MAX), 500)? {
                (_, Some(next)) if next.seqno > from => from = next.seqno,
                _ => break,
            }
        }
        idx.latest(&c, SeqNo(u64::MAX), 3)?;
        idx.count(&c)?;
    }
    idx.collections()?;
    idx.add(TxId::new(9, idx.indexed_upto().0 + 1), colls(&["x"]));
    idx.commit(idx.indexed_upto().next())?;
    idx.flush()?;
    Ok(())
}

#[test]
fn damaged_files_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let good = sample_file(&path, 30_000);
    assert!(good.len() > 256 << 10, "{}", good.len());
    exercise(&path, &OpenOptions::default()).unwrap();
    let damaged = dir.path().join("damaged.redb");
    let mut outcomes = BTreeMap::<String, usize>::new();
    let mut record = |r: Result<(), IndexError>| {
        let k = match r {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("{e}").chars().take(40).collect(),
        };
        *outcomes.entry(k).or_default() += 1;
    };
    // Truncated.
    for len in [1, 8, 100, 511, 4096, 4097, good.len() / 3, good.len() - 1] {
        std::fs::write(&damaged, &good[..len]).unwrap();
        let r = exercise(&damaged, &OpenOptions::default());
        assert!(r.is_err(), "truncated to {len}: opened and read");
        record(r);
    }
    // Overwritten, here and there, in the header and in the pages.
    let step = good.len() / 40;
    for (i, at) in (0..good.len() - 64).step_by(step).enumerate() {
        for verify in [false, true] {
            let mut bytes = good.clone();
            for (j, b) in bytes[at..at + 64].iter_mut().enumerate() {
                *b = (i * 31 + j * 7) as u8 ^ 0xa5;
            }
            std::fs::write(&damaged, &bytes).unwrap();
            record(exercise(
                &damaged,
                &OpenOptions {
                    verify,
                    ..OpenOptions::default()
                },
            ));
        }
    }
    // A large stretch of pages overwritten is found by the verifying open.
    let mut bytes = good.clone();
    let (a, b) = (good.len() / 4, good.len() / 2);
    bytes[a..b].fill(0x33);
    std::fs::write(&damaged, &bytes).unwrap();
    let err = CollectionIndex::open_with(
        &damaged,
        &OpenOptions {
            verify: true,
            ..OpenOptions::default()
        },
    )
    .err()
    .expect("a verifying open must fail");
    assert!(matches!(err, IndexError::Corrupt(_)), "{err}");
    eprintln!("outcomes: {outcomes:#?}");
}

#[test]
fn readers_see_every_entry_while_commits_move_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Arc::new(open_in(&dir));
    let added = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (idx, added, done) = (idx.clone(), added.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Acquire) {
                    let upto = added.load(Ordering::Acquire);
                    let (page, _) = idx.range("c", SeqNo(1), SeqNo(upto), usize::MAX).unwrap();
                    let got = seqnos(&page);
                    // Later ones may show up too, earlier ones must all be there.
                    assert_eq!(got.len() as u64, upto, "missing entries: {got:?}");
                    let latest = idx.latest("c", SeqNo(upto), 1).unwrap();
                    assert_eq!(
                        seqnos(&latest),
                        (upto > 0).then_some(upto).into_iter().collect::<Vec<_>>()
                    );
                }
            })
        })
        .collect();
    for s in 1..=2000 {
        idx.add(TxId::new(1, s), colls(&["c"]));
        added.store(s, Ordering::Release);
        if s % 7 == 0 {
            idx.commit(SeqNo(s - 2)).unwrap();
        }
    }
    done.store(true, Ordering::Release);
    for r in readers {
        r.join().unwrap();
    }
}

const CRASH_ENV: &str = "COVENANT_INDEX_CRASH_CHILD";
const CRASH_COMMITS: u64 = 2500;

/// The child appends and commits one transaction at a time (mostly non-durable
/// commits), then aborts without closing the index; the file it leaves holds
/// exactly the transactions up to its watermark.
#[test]
fn crash_leaves_a_consistent_prefix() {
    if let Some(path) = std::env::var_os(CRASH_ENV) {
        let idx = CollectionIndex::open(Path::new(&path)).unwrap();
        for s in 1..=CRASH_COMMITS {
            idx.add(TxId::new(1, s), vec![format!("c{}", s % 3)]);
            idx.commit(SeqNo(s)).unwrap();
        }
        std::process::abort();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::crash_leaves_a_consistent_prefix",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CRASH_ENV, &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must abort");
    let idx = CollectionIndex::open(&path).unwrap();
    let w = idx.indexed_upto().0;
    // The durable commit every DURABLE_EVERY_COMMITS survived.
    assert!(
        (u64::from(DURABLE_EVERY_COMMITS) * 2..=CRASH_COMMITS).contains(&w),
        "{w}"
    );
    let mut all = Vec::new();
    for c in ["c0", "c1", "c2"] {
        let (page, next) = idx.range(c, SeqNo(1), SeqNo(u64::MAX), usize::MAX).unwrap();
        assert_eq!(next, None);
        assert_eq!(idx.count(c).unwrap(), page.len() as u64);
        all.extend(page);
    }
    all.sort();
    assert_eq!(all, (1..=w).map(|s| TxId::new(1, s)).collect::<Vec<_>>());
}

/// The naive model: committed entries, the watermark, the tail.
#[derive(Default)]
struct Model {
    disk: BTreeMap<(String, u64), u64>,
    upto: u64,
    tail: BTreeMap<u64, (TxId, BTreeSet<String>)>,
}

impl Model {
    fn add(&mut self, txid: TxId, collections: &[String]) {
        if collections.is_empty() || txid.seqno.0 <= self.upto {
            return;
        }
        let new: BTreeSet<String> = collections.iter().cloned().collect();
        match self.tail.get_mut(&txid.seqno.0) {
            Some((t, c)) if *t == txid => c.extend(new),
            _ => {
                self.tail.insert(txid.seqno.0, (txid, new));
            }
        }
    }

    fn rollback(&mut self, after: u64) {
        self.tail.retain(|s, _| *s <= after);
    }

    fn write(&mut self, txid: TxId, collections: impl IntoIterator<Item = String>) {
        for c in collections {
            self.disk.insert((c, txid.seqno.0), txid.view.0);
        }
    }

    fn commit(&mut self, upto: u64) {
        let keep = self.tail.split_off(&(upto + 1));
        for (_, (txid, c)) in std::mem::replace(&mut self.tail, keep) {
            self.write(txid, c);
        }
        self.upto = self.upto.max(upto);
    }

    fn batch(&mut self, batch: &[(TxId, Vec<String>)], upto: u64) -> bool {
        if batch.iter().any(|(t, _)| t.seqno.0 > upto) {
            return false;
        }
        for (t, c) in batch {
            self.write(*t, c.iter().cloned());
        }
        self.upto = self.upto.max(upto);
        self.tail.retain(|s, _| *s > self.upto);
        true
    }

    /// Seqno → TxId of `collection`, disk overlaid with the tail.
    fn view(&self, collection: &str) -> BTreeMap<u64, TxId> {
        let mut m: BTreeMap<u64, TxId> = self
            .disk
            .iter()
            .filter(|((c, _), _)| c == collection)
            .map(|((_, s), v)| (*s, TxId::new(*v, *s)))
            .collect();
        for (s, (t, c)) in &self.tail {
            if c.contains(collection) {
                m.insert(*s, *t);
            }
        }
        m
    }

    fn range(&self, c: &str, from: u64, to: u64, limit: usize) -> (Vec<TxId>, Option<TxId>) {
        if from > to {
            return (Vec::new(), None);
        }
        let all: Vec<TxId> = self.view(c).range(from..=to).map(|(_, t)| *t).collect();
        (
            all.iter().take(limit).copied().collect(),
            all.get(limit).copied(),
        )
    }

    fn latest(&self, c: &str, upto: u64, limit: usize) -> Vec<TxId> {
        self.view(c)
            .range(..=upto)
            .rev()
            .take(limit)
            .map(|(_, t)| *t)
            .collect()
    }

    fn collections(&self) -> Vec<String> {
        let mut s: BTreeSet<String> = self.disk.keys().map(|(c, _)| c.clone()).collect();
        for (_, c) in self.tail.values() {
            s.extend(c.iter().cloned());
        }
        s.into_iter().collect()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add(TxId, Vec<String>),
    Rollback(u64),
    Commit(u64),
    Batch(Vec<(TxId, Vec<String>)>, u64),
    Reopen,
    Range(String, u64, u64, usize),
    Latest(String, u64, usize),
    /// Compares everything.
    Check,
}

const NAMES: [&str; 4] = ["a", "b", "c", "a/long collection name"];

fn name() -> impl Strategy<Value = String> {
    (0..NAMES.len()).prop_map(|i| NAMES[i].to_string())
}

fn tx() -> impl Strategy<Value = (TxId, Vec<String>)> {
    (1..4u64, 1..16u64, prop::collection::vec(name(), 0..3))
        .prop_map(|(v, s, c)| (TxId::new(v, s), c))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => tx().prop_map(|(t, c)| Op::Add(t, c)),
        1 => (0..18u64).prop_map(Op::Rollback),
        3 => (0..18u64).prop_map(Op::Commit),
        1 => (prop::collection::vec(tx(), 0..6), 0..18u64).prop_map(|(b, u)| Op::Batch(b, u)),
        1 => Just(Op::Reopen),
        3 => (name(), 0..18u64, 0..18u64, 0..5usize).prop_map(|(c, f, t, l)| Op::Range(c, f, t, l)),
        2 => (name(), 0..18u64, 0..5usize).prop_map(|(c, u, l)| Op::Latest(c, u, l)),
        2 => Just(Op::Check),
    ]
}

fn check_all(idx: &CollectionIndex, model: &Model) {
    assert_eq!(idx.indexed_upto().0, model.upto);
    assert_eq!(idx.collections().unwrap(), model.collections());
    for c in NAMES {
        let want = model.view(c);
        assert_eq!(idx.count(c).unwrap(), want.len() as u64, "count {c}");
        // Paging through everything with `next` gives the whole view.
        let mut got = Vec::new();
        let mut from = SeqNo(0);
        loop {
            let (page, next) = idx.range(c, from, SeqNo(u64::MAX), 3).unwrap();
            got.extend(page);
            match next {
                Some(n) => from = n.seqno,
                None => break,
            }
        }
        assert_eq!(
            got,
            want.values().copied().collect::<Vec<_>>(),
            "pages of {c}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn matches_the_model(ops in prop::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let mut idx = Some(CollectionIndex::open(&path).unwrap());
        let mut model = Model::default();
        for op in ops {
            let i = idx.as_ref().unwrap();
            match op {
                Op::Add(t, c) => {
                    model.add(t, &c);
                    i.add(t, c);
                }
                Op::Rollback(a) => {
                    model.rollback(a);
                    i.rollback(SeqNo(a));
                }
                Op::Commit(u) => {
                    model.commit(u);
                    i.commit(SeqNo(u)).unwrap();
                }
                Op::Batch(b, u) => {
                    let ok = model.batch(&b, u);
                    prop_assert_eq!(i.add_committed_batch(&b, SeqNo(u)).is_ok(), ok);
                }
                Op::Reopen => {
                    drop(idx.take());
                    model.tail.clear();
                    idx = Some(CollectionIndex::open(&path).unwrap());
                }
                Op::Range(c, f, t, l) => {
                    prop_assert_eq!(
                        i.range(&c, SeqNo(f), SeqNo(t), l).unwrap(),
                        model.range(&c, f, t, l)
                    );
                }
                Op::Latest(c, u, l) => {
                    prop_assert_eq!(i.latest(&c, SeqNo(u), l).unwrap(), model.latest(&c, u, l));
                }
                Op::Check => check_all(i, &model),
            }
        }
        check_all(idx.as_ref().unwrap(), &model);
        drop(idx);
        model.tail.clear();
        check_all(&CollectionIndex::open(&path).unwrap(), &model);
    }
}
