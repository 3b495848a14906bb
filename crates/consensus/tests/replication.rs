//! Three replicas in one process over real ledgers in temporary directories, with
//! an in-memory transport that can cut links: election, replication, commit,
//! failover with the old primary's uncommitted suffix rolled back, restart.

use covenant_types::SeqNo;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use covenant_consensus::{ConsensusError, Replica, ReplicaConfig, Transport};
use covenant_crypto::{Curve, LedgerSecret, NodeIdentity, ServiceIdentity, SubjectAltName};
use covenant_engine::{audit_ledger, Engine, EngineConfig, TxStatus};
use covenant_types::TxId;

/// Routes messages between replicas; links in `cut` drop everything.
#[derive(Default)]
struct Net {
    nodes: RwLock<Vec<Option<Replica>>>,
    cut: RwLock<HashSet<(u64, u64)>>,
}

/// The transport of one node: knows the sender, so links can be cut.
struct Link {
    from: u64,
    net: Arc<Net>,
}

impl Transport for Link {
    fn send(&self, to: u64, message: Vec<u8>) {
        if self.net.cut.read().unwrap().contains(&(self.from, to)) {
            return;
        }
        if let Some(Some(r)) = self.net.nodes.read().unwrap().get(to as usize) {
            r.receive(message);
        }
    }
}

struct Cluster {
    service: ServiceIdentity,
    secret: Arc<LedgerSecret>,
    idents: Vec<Arc<NodeIdentity>>,
    dirs: Vec<PathBuf>,
    _tmp: tempfile::TempDir,
    net: Arc<Net>,
    engines: Vec<Option<Arc<Mutex<Engine>>>>,
    threads: Vec<Option<std::thread::JoinHandle<()>>>,
}

/// Nodes a cluster starts with; up to `MAX` may run (the others join).
const N: u64 = 3;
const MAX: u64 = 5;

fn engine_config(dir: &std::path::Path, service: &ServiceIdentity) -> EngineConfig {
    let mut c = EngineConfig::new(dir.join("ledger"));
    c.commit_on_sync = false;
    c.chunk_threshold_bytes = 8 * 1024;
    c.sig_tx_interval = 20;
    c.snapshot_dir = Some(dir.join("snapshots"));
    c.snapshot_tx_interval = 50;
    c.service_cert = Some(service.cert.clone());
    c
}

impl Cluster {
    fn new() -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let service = ServiceIdentity::generate(Curve::P384).unwrap();
        let mut idents = Vec::new();
        let mut dirs = Vec::new();
        for i in 1..=MAX {
            idents.push(Arc::new(
                NodeIdentity::generate(&service, Curve::P384, &SubjectAltName::dev_defaults())
                    .unwrap(),
            ));
            let d = tmp.path().join(format!("node{i}"));
            std::fs::create_dir_all(&d).unwrap();
            dirs.push(d);
        }
        let net = Arc::new(Net::default());
        *net.nodes.write().unwrap() = (0..=MAX).map(|_| None).collect();
        let mut c = Cluster {
            service,
            secret: Arc::new(LedgerSecret::generate().unwrap()),
            idents,
            dirs,
            _tmp: tmp,
            net,
            engines: (0..=MAX).map(|_| None).collect(),
            threads: (0..=MAX).map(|_| None).collect(),
        };
        for id in 1..=N {
            c.start(id);
        }
        c
    }

    fn start(&mut self, id: u64) {
        let i = (id - 1) as usize;
        let engine = Engine::open(
            engine_config(&self.dirs[i], &self.service),
            self.idents[i].clone(),
            self.secret.clone(),
        )
        .unwrap();
        let engine = Arc::new(Mutex::new(engine));
        let mut config = ReplicaConfig::new(id, (1..=N).collect(), &self.dirs[i]);
        config.tick = Duration::from_millis(20);
        config.election_ticks = 10;
        config.sig_interval = Duration::from_millis(100);
        let link = Arc::new(Link {
            from: id,
            net: self.net.clone(),
        });
        let (replica, thread) = Replica::start(config, engine.clone(), link).unwrap();
        self.net.nodes.write().unwrap()[id as usize] = Some(replica);
        self.engines[id as usize] = Some(engine);
        self.threads[id as usize] = Some(thread);
    }

    /// Stops a node like a crash: its thread ends, nothing is flushed beyond what
    /// Raft already made durable.
    fn kill(&mut self, id: u64) {
        let r = self.net.nodes.write().unwrap()[id as usize].take();
        if let Some(r) = r {
            r.stop();
        }
        if let Some(t) = self.threads[id as usize].take() {
            t.join().unwrap();
        }
        self.engines[id as usize] = None;
    }

    fn replica(&self, id: u64) -> Option<Replica> {
        self.net.nodes.read().unwrap()[id as usize].clone()
    }

    fn engine(&self, id: u64) -> Arc<Mutex<Engine>> {
        self.engines[id as usize].clone().unwrap()
    }

    fn isolate(&self, id: u64) {
        let mut cut = self.net.cut.write().unwrap();
        for other in 1..=MAX {
            if other != id {
                cut.insert((id, other));
                cut.insert((other, id));
            }
        }
    }

    fn heal(&self) {
        self.net.cut.write().unwrap().clear();
    }

    /// Waits for a primary among `among` and returns its id.
    fn primary(&self, among: &[u64]) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for &id in among {
                if let Some(r) = self.replica(id) {
                    let s = r.status();
                    if s.is_primary {
                        return id;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no primary elected");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Appends through the current primary among `among`, retrying across failovers.
    fn append(&self, among: &[u64], key: &str) -> TxId {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let id = self.primary(among);
            let r = self.replica(id).unwrap();
            match r.write(|e| {
                let mut tx = e.begin();
                tx.put(
                    "entries",
                    key.as_bytes(),
                    format!("value of {key}").as_bytes(),
                );
                e.commit_tx(tx, None)
            }) {
                Ok(t) => return t,
                Err(ConsensusError::NotPrimary { .. } | ConsensusError::NotReady) => {}
                Err(e) => panic!("{e}"),
            }
            assert!(Instant::now() < deadline, "append did not succeed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_committed(&self, ids: &[u64], txid: TxId) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for &id in ids {
            loop {
                let st = self.engine(id).lock().unwrap().status(txid).unwrap();
                if st == TxStatus::Committed {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{txid} not committed on node {id}: {st:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Every node's ledger, read entry by entry up to `upto`.
    fn ledger(&self, id: u64, upto: u64) -> Vec<(TxId, Vec<u8>)> {
        let e = self.engine(id);
        let e = e.lock().unwrap();
        e.ledger()
            .read_range(SeqNo(1), SeqNo(upto))
            .unwrap()
            .map(|x| {
                let x = x.unwrap();
                (x.txid, x.payload)
            })
            .collect()
    }

    fn assert_same_committed_prefix(&self, ids: &[u64]) {
        let committed = ids
            .iter()
            .map(|&id| self.engine(id).lock().unwrap().committed_seqno())
            .min()
            .unwrap();
        assert!(committed > SeqNo::ZERO);
        let first = self.ledger(ids[0], committed.0);
        for &id in &ids[1..] {
            assert_eq!(
                self.ledger(id, committed.0),
                first,
                "node {id} differs in the committed prefix"
            );
        }
    }

    fn stop_all_and_audit(mut self) {
        for id in 1..=MAX {
            self.kill(id);
        }
        for d in &self.dirs {
            if d.join("ledger").exists() {
                audit_ledger(&d.join("ledger"), &self.service.cert, |_, _| {}).unwrap();
            }
        }
    }

    /// Waits until every node of `ids` runs with the voters `voters` and no learners.
    fn wait_voters(&self, ids: &[u64], voters: &[u64]) {
        let want: std::collections::BTreeSet<u64> = voters.iter().copied().collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        for &id in ids {
            loop {
                let (conf, pending) = self.replica(id).unwrap().configuration();
                if conf.voters == want && conf.learners.is_empty() && pending.is_none() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {id} runs {conf:?} (pending {pending:?}), want voters {want:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Changes the configuration through the current primary, retrying while a
    /// primary is elected or another change commits.
    fn change(&self, among: &[u64], f: impl Fn(&mut covenant_consensus::Membership)) -> TxId {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.replica(self.primary(among)).unwrap();
            let (mut target, _) = r.configuration();
            f(&mut target);
            match r.change_membership(target, |_| {}) {
                Ok(t) => return t,
                Err(
                    ConsensusError::NotPrimary { .. }
                    | ConsensusError::NotReady
                    | ConsensusError::MembershipChangePending(_),
                ) => {}
                Err(e) => panic!("{e}"),
            }
            assert!(
                Instant::now() < deadline,
                "configuration change did not go through"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn three_replicas_elect_replicate_and_commit() {
    let c = Cluster::new();
    let all = [1, 2, 3];
    let mut txids = Vec::new();
    for i in 0..60 {
        txids.push(c.append(&all, &format!("k{i}")));
    }
    let last = *txids.last().unwrap();
    c.wait_committed(&all, last);
    // Backups refuse writes and name the primary.
    let p = c.primary(&all);
    let backup = all.iter().copied().find(|&id| id != p).unwrap();
    match c.replica(backup).unwrap().write(|_| Ok(())) {
        Err(ConsensusError::NotPrimary { leader }) => assert_eq!(leader, Some(p)),
        other => panic!("expected NotPrimary, got {:?}", other.map(|_| ())),
    }
    // Same TxIds, same bytes, same receipts on every node.
    c.assert_same_committed_prefix(&all);
    let r1 = c.engine(1).lock().unwrap().receipt(txids[10]).unwrap();
    let r2 = c.engine(2).lock().unwrap().receipt(txids[10]).unwrap();
    assert_eq!(r1, r2);
    c.stop_all_and_audit();
}

#[test]
fn failover_rolls_back_the_old_primarys_uncommitted_suffix() {
    let mut c = Cluster::new();
    let all = [1, 2, 3];
    let mut committed = Vec::new();
    for i in 0..30 {
        committed.push(c.append(&all, &format!("a{i}")));
    }
    c.wait_committed(&all, *committed.last().unwrap());

    // Cut the primary off; what it appends now can never commit.
    let old = c.primary(&all);
    c.isolate(old);
    let mut orphans = Vec::new();
    for i in 0..5 {
        match c.replica(old).unwrap().write(|e| {
            let mut tx = e.begin();
            tx.put("entries", format!("orphan{i}").as_bytes(), b"lost");
            e.commit_tx(tx, None)
        }) {
            Ok(t) => orphans.push(t),
            Err(ConsensusError::NotPrimary { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        !orphans.is_empty(),
        "the isolated primary still accepted writes"
    );
    let rest: Vec<u64> = all.iter().copied().filter(|&id| id != old).collect();
    let new_primary = c.primary(&rest);
    assert_ne!(new_primary, old);
    let mut after = Vec::new();
    for i in 0..20 {
        after.push(c.append(&rest, &format!("b{i}")));
    }
    c.wait_committed(&rest, *after.last().unwrap());

    // Heal: the old primary rolls back its suffix and converges.
    c.heal();
    c.wait_committed(&all, *after.last().unwrap());
    for t in &orphans {
        let st = c.engine(old).lock().unwrap().status(*t).unwrap();
        assert!(
            matches!(st, TxStatus::Invalid | TxStatus::Unknown),
            "{t}: {st:?}"
        );
    }
    for t in committed.iter().chain(&after) {
        c.wait_committed(&all, *t);
    }
    c.assert_same_committed_prefix(&all);

    // Crash a backup and restart it: it catches up from the others.
    let victim = all
        .iter()
        .copied()
        .find(|&id| id != c.primary(&all))
        .unwrap();
    c.kill(victim);
    let others: Vec<u64> = all.iter().copied().filter(|&id| id != victim).collect();
    let mut more = Vec::new();
    for i in 0..20 {
        more.push(c.append(&others, &format!("c{i}")));
    }
    c.start(victim);
    c.wait_committed(&all, *more.last().unwrap());
    c.assert_same_committed_prefix(&all);
    c.stop_all_and_audit();
}

#[test]
fn restarting_every_node_loses_nothing_committed() {
    let mut c = Cluster::new();
    let all = [1, 2, 3];
    let mut txids = Vec::new();
    for i in 0..40 {
        txids.push(c.append(&all, &format!("k{i}")));
    }
    let last = *txids.last().unwrap();
    c.wait_committed(&all, last);
    for id in all {
        c.kill(id);
    }
    for id in all {
        c.start(id);
    }
    for t in &txids {
        c.wait_committed(&all, *t);
    }
    let next = c.append(&all, "after restart");
    c.wait_committed(&all, next);
    assert!(next.view.0 > last.view.0, "a new term after the restart");
    c.assert_same_committed_prefix(&all);
    c.stop_all_and_audit();
}

/// Soak: under continuous writes, crash the primary again and again (a crash here
/// is the thread stopping with whatever reached the disk), restart it a moment
/// later. Every write seen Committed must end up on every node with the same TxId
/// and contents.
#[test]
fn repeated_primary_crashes_under_load_lose_nothing_committed() {
    let mut c = Cluster::new();
    let all = [1u64, 2, 3];
    let mut acked: Vec<(TxId, String)> = Vec::new();
    let mut seen_committed: Vec<(TxId, String)> = Vec::new();
    let mut n = 0;
    for round in 0..8 {
        // Some load on the current primary.
        let live: Vec<u64> = all
            .iter()
            .copied()
            .filter(|&id| c.replica(id).is_some())
            .collect();
        for _ in 0..25 {
            let key = format!("w{n}");
            n += 1;
            acked.push((c.append(&live, &key), key));
        }
        // What a client polling status would have seen Committed by now.
        let p = c.primary(&live);
        {
            // Dropped before the kill: a crashed node's engine must not outlive
            // it (its ledger hands buffered bytes to the OS when dropped, which
            // would land in the file the restarted node appends to).
            let e = c.engine(p);
            for (t, k) in &acked {
                if e.lock().unwrap().status(*t).unwrap() == TxStatus::Committed
                    && !seen_committed.iter().any(|(s, _)| s == t)
                {
                    seen_committed.push((*t, k.clone()));
                }
            }
        }
        c.kill(p);
        // The dead node stays down for a round of writes on the other two.
        let rest: Vec<u64> = live.iter().copied().filter(|&id| id != p).collect();
        for _ in 0..10 {
            let key = format!("w{n}");
            n += 1;
            acked.push((c.append(&rest, &key), key));
        }
        c.start(p);
        let _ = round;
    }
    let last = c.append(&all, "final");
    c.wait_committed(&all, last);
    // Whole ledgers everywhere: however the followers lagged, none was ever
    // pointed at a snapshot (raft-rs asks for one after any failed log read).
    for id in all {
        let r = c.replica(id).unwrap();
        assert_eq!(*r.subscribe_snapshot_needed().borrow(), None, "node {id}");
    }
    assert!(seen_committed.len() > 50, "{}", seen_committed.len());
    for (t, key) in &seen_committed {
        for id in all {
            let e = c.engine(id);
            let e = e.lock().unwrap();
            assert_eq!(e.status(*t).unwrap(), TxStatus::Committed, "{t} on {id}");
            assert_eq!(
                e.store().get("entries", key.as_bytes()),
                Some(format!("value of {key}").into_bytes()),
                "{key} on node {id}"
            );
        }
    }
    c.assert_same_committed_prefix(&all);
    c.stop_all_and_audit();
}

/// A backup that cannot persist what Raft hands it (here: an entry that does not
/// decode, as a faulty or malicious primary would send) stops replicating instead of
/// continuing from a half-processed state; the others carry on, and after a restart
/// it recovers from its ledger and catches up.
#[test]
fn a_backup_that_cannot_persist_stops_and_recovers_on_restart() {
    use protobuf::Message as _;
    let mut c = Cluster::new();
    let all = [1u64, 2, 3];
    let first = c.append(&all, "k0");
    c.wait_committed(&all, first);
    let p = c.primary(&all);
    let f = all.iter().copied().find(|&id| id != p).unwrap();
    let (term, last, log_term) = {
        let e = c.engine(f);
        let e = e.lock().unwrap();
        let last = e.last_seqno();
        (
            c.replica(f).unwrap().status().term,
            last,
            e.view_at(last).unwrap(),
        )
    };
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
    m.from = p;
    m.to = f;
    m.term = term;
    m.log_term = log_term.0;
    m.index = last.0;
    let bad = raft::eraftpb::Entry {
        term,
        index: last.0 + 1,
        data: b"not a ledger entry".to_vec().into(),
        ..Default::default()
    };
    m.entries = vec![bad].into();
    c.replica(f).unwrap().receive(m.write_to_bytes().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.replica(f).unwrap().write(|_| Ok(())) {
            Err(ConsensusError::Failed(why)) => {
                assert!(!why.is_empty());
                break;
            }
            _ => {
                assert!(Instant::now() < deadline, "the backup kept going");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    // The ledger holds nothing of the bad entry.
    assert_eq!(c.engine(f).lock().unwrap().last_seqno(), last);
    // The other two still commit.
    let rest: Vec<u64> = all.iter().copied().filter(|&id| id != f).collect();
    let more = c.append(&rest, "k1");
    c.wait_committed(&rest, more);
    // Restarted, the backup catches up.
    c.kill(f);
    c.start(f);
    c.wait_committed(&all, more);
    c.assert_same_committed_prefix(&all);
    c.stop_all_and_audit();
}

#[test]
fn a_new_node_joins_as_learner_becomes_voter_and_a_node_retires() {
    let mut c = Cluster::new();
    let three = [1, 2, 3];
    for i in 0..40 {
        c.append(&three, &format!("before{i}"));
    }
    // Node 4 starts empty and outside the configuration: it never campaigns, and it
    // catches up once the primary adds it as a learner.
    c.start(4);
    let p = c.primary(&three);
    let r = c.replica(p).unwrap();
    let (conf, _) = r.configuration();
    let mut two_at_once = conf.clone();
    two_at_once.learners.extend([4, 5]);
    assert!(matches!(
        r.change_membership(two_at_once, |_| {}),
        Err(ConsensusError::BadMembership(_))
    ));
    let added = c.change(&three, |m| {
        m.learners.insert(4);
    });
    // The primary promotes the learner once it has caught up, on every node.
    let four = [1, 2, 3, 4];
    c.wait_voters(&four, &four);
    let t = c.append(&four, "after-join");
    c.wait_committed(&four, t);
    c.assert_same_committed_prefix(&four);
    assert!(added.seqno < t.seqno);

    // Four voters: a majority is three, so one node down changes nothing.
    let p = c.primary(&four);
    let down = four.iter().copied().find(|&id| id != p && id != 4).unwrap();
    c.kill(down);
    let up: Vec<u64> = four.iter().copied().filter(|&id| id != down).collect();
    let t = c.append(&up, "one-down");
    c.wait_committed(&up, t);
    c.start(down);
    c.wait_committed(&[down], t);

    // Retire a backup: it leaves the configuration on every node, the others commit.
    let p = c.primary(&four);
    let gone = four.iter().copied().find(|&id| id != p).unwrap();
    c.change(&four, |m| {
        m.voters.remove(&gone);
    });
    let rest: Vec<u64> = four.iter().copied().filter(|&id| id != gone).collect();
    c.wait_voters(&rest, &rest);
    c.kill(gone);
    let t = c.append(&rest, "after-retire");
    c.wait_committed(&rest, t);

    // The configuration survives a restart of everyone (it is in the ledger).
    for &id in &rest {
        c.kill(id);
    }
    for &id in &rest {
        c.start(id);
    }
    c.wait_voters(&rest, &rest);
    let t = c.append(&rest, "after-restart");
    c.wait_committed(&rest, t);
    c.assert_same_committed_prefix(&rest);
    c.stop_all_and_audit();
}

#[test]
fn a_node_started_from_a_snapshot_catches_up_votes_and_restarts() {
    let mut c = Cluster::new();
    let three = [1, 2, 3];
    let mut last = TxId::new(1, 1);
    for i in 0..150 {
        last = c.append(&three, &format!("k{i}"));
    }
    c.wait_committed(&three, last);
    // Node 4 gets the primary's latest snapshot (as `node join` does over HTTPS).
    let p = c.primary(&three);
    let (snap_txid, path) = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = c.engine(p).lock().unwrap().latest_snapshot() {
                break s;
            }
            assert!(Instant::now() < deadline, "no snapshot on the primary");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let bytes = std::fs::read(path).unwrap();
    let installed = covenant_engine::install_snapshot(
        &c.dirs[3].join("snapshots"),
        &bytes,
        &c.service.cert,
        &c.secret.clone().into(),
    )
    .unwrap();
    assert_eq!(installed, snap_txid);
    c.start(4);
    assert_eq!(
        c.engine(4).lock().unwrap().first_seqno(),
        snap_txid.seqno.next()
    );
    c.change(&three, |m| {
        m.learners.insert(4);
    });
    let four = [1, 2, 3, 4];
    c.wait_voters(&four, &four);
    let t = c.append(&four, "after the snapshot join");
    c.wait_committed(&four, t);
    // Same store contents as a node that replayed everything.
    let e4 = c.engine(4);
    let e1 = c.engine(1);
    assert_eq!(
        e4.lock().unwrap().store().entries("entries"),
        e1.lock().unwrap().store().entries("entries")
    );
    // Receipts of transactions after the snapshot are the same on every node.
    assert_eq!(
        e4.lock().unwrap().receipt(t).unwrap(),
        e1.lock().unwrap().receipt(t).unwrap()
    );
    drop((e1, e4));
    // It restarts from its own snapshot and ledger suffix and goes on.
    c.kill(4);
    let t = c.append(&three, "while node 4 is down");
    c.start(4);
    assert_eq!(
        c.engine(4).lock().unwrap().first_seqno(),
        snap_txid.seqno.next()
    );
    c.wait_committed(&four, t);
    c.stop_all_and_audit();
}
