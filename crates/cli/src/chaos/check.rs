//! The checker: reads the whole recorded history and the nodes' final committed
//! state, and lists every broken promise with the evidence for it.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::workload::{Op, Outcome};

/// One node's final committed entries: TxId → (collection, contents).
pub type Final = BTreeMap<String, (String, String)>;

#[derive(Debug, Default, Serialize)]
pub struct Counts {
    pub appends_attempted: u64,
    pub appends_acknowledged: u64,
    pub appends_committed: u64,
    pub appends_failed: u64,
    pub appends_invalid: u64,
    pub reads: u64,
    pub reads_failed: u64,
    pub uncommitted_current_reads: u64,
    pub lost: u64,
    pub changed: u64,
    pub duplicated: u64,
}

fn seqno(txid: &str) -> u64 {
    txid.split_once('.')
        .and_then(|(_, s)| s.parse().ok())
        .unwrap_or(0)
}

/// Checks `ops` and the acknowledged commits against the final state of every
/// node; returns the counts and the violations (empty: every promise held).
pub fn check(
    ops: &[Op],
    committed: &[(String, String, u16, f64)],
    finals: &BTreeMap<u16, Final>,
) -> (Counts, Vec<String>) {
    let mut c = Counts::default();
    let mut v: Vec<String> = Vec::new();
    let Some((&first_node, reference)) = finals.iter().next() else {
        v.push("no node's final state could be read".into());
        return (c, v);
    };
    // 1. Every node ends with the same committed entries.
    for (node, f) in finals {
        if f != reference {
            let differ = reference
                .keys()
                .chain(f.keys())
                .find(|k| reference.get(*k) != f.get(*k))
                .cloned()
                .unwrap_or_default();
            v.push(format!(
                "node {node} and node {first_node} end with different committed entries: at {differ}: {:?} vs {:?}",
                f.get(&differ),
                reference.get(&differ)
            ));
        }
    }
    // What the clients wrote, and what the service said of each write.
    let mut written: HashMap<&str, &str> = HashMap::new(); // payload → collection
    let mut invalid: HashSet<&str> = HashSet::new(); // payloads whose TxId went Invalid
    let mut given: HashMap<&str, &str> = HashMap::new(); // txid → payload
    for op in ops {
        match &op.outcome {
            Outcome::Append {
                collection,
                payload,
                txid,
                error,
            } => {
                c.appends_attempted += 1;
                written.insert(payload, collection);
                match txid {
                    Some(t) => {
                        c.appends_acknowledged += 1;
                        given.insert(t, payload);
                    }
                    None => {
                        let _ = error;
                        c.appends_failed += 1;
                    }
                }
            }
            Outcome::Status { txid, status } if status == "Invalid" => {
                if let Some(p) = given.get(txid.as_str()) {
                    if invalid.insert(p) {
                        c.appends_invalid += 1;
                    }
                }
            }
            Outcome::Failed { what, .. } if !what.starts_with("status") => {
                c.reads += 1;
                c.reads_failed += 1;
            }
            Outcome::ReadTx { .. }
            | Outcome::Current { .. }
            | Outcome::Range { .. }
            | Outcome::Commit { .. } => c.reads += 1,
            _ => {}
        }
    }
    c.appends_committed = committed.len() as u64;
    // 2. Acknowledged-committed writes: present at their TxId, unchanged, everywhere.
    for (payload, txid, node, at) in committed {
        for (n, f) in finals {
            match f.get(txid) {
                None => {
                    c.lost += 1;
                    v.push(format!(
                        "LOST: {payload:?} at {txid}, reported Committed by node {node} at {at:.2} s, is not among node {n}'s committed entries"
                    ));
                }
                Some((_, contents)) if contents != payload => {
                    c.changed += 1;
                    v.push(format!(
                        "CHANGED: {txid} was reported Committed holding {payload:?} (node {node} at {at:.2} s); node {n} holds {contents:?}"
                    ));
                }
                Some(_) => {}
            }
        }
    }
    // 3. No payload committed twice, none that no client wrote, none the service
    //    called Invalid.
    let mut at: HashMap<&str, Vec<&str>> = HashMap::new();
    for (txid, (collection, contents)) in reference {
        if !COLLECTION_PREFIXES
            .iter()
            .any(|p| collection.starts_with(p))
        {
            continue;
        }
        at.entry(contents.as_str()).or_default().push(txid);
        if !written.contains_key(contents.as_str()) {
            c.changed += 1;
            v.push(format!(
                "FOREIGN: {txid} holds {contents:?}, which no client wrote"
            ));
        }
        if invalid.contains(contents.as_str()) {
            v.push(format!(
                "{contents:?} is committed at {txid}, but its write was reported Invalid"
            ));
        }
    }
    for (payload, txids) in &at {
        if txids.len() > 1 {
            c.duplicated += 1;
            v.push(format!("DUPLICATED: {payload:?} is committed at {txids:?}"));
        }
    }
    // 4. No TxId ever shows two contents; what a committed-only read showed stays.
    let mut seen: HashMap<String, (String, u16, f64)> = HashMap::new();
    for op in ops {
        match &op.outcome {
            Outcome::ReadTx {
                txid,
                contents: Some(contents),
                ..
            } => {
                saw(&mut seen, txid, contents, op, &mut v);
                must_stay(
                    reference,
                    txid,
                    contents,
                    op,
                    "a Ready read by TxId",
                    &mut v,
                );
            }
            Outcome::Current {
                txid: Some(txid),
                contents: Some(contents),
                committed_only,
                ..
            } => {
                saw(&mut seen, txid, contents, op, &mut v);
                if *committed_only {
                    must_stay(
                        reference,
                        txid,
                        contents,
                        op,
                        "a committed=true current read",
                        &mut v,
                    );
                } else if !reference.contains_key(txid.as_str()) {
                    c.uncommitted_current_reads += 1;
                }
            }
            Outcome::Range { entries, .. } => {
                for (txid, contents) in entries {
                    saw(&mut seen, txid, contents, op, &mut v);
                    must_stay(reference, txid, contents, op, "a ranged read", &mut v);
                }
            }
            _ => {}
        }
    }
    // A TxId acknowledged Committed exists on every node from then on (a node that
    // has not received it yet answers Loading, never 404).
    let acked_at: HashMap<&str, f64> = committed
        .iter()
        .map(|(_, t, _, at)| (t.as_str(), *at))
        .collect();
    for op in ops {
        if let Outcome::ReadTx { txid, state, .. } = &op.outcome {
            if state.starts_with("404")
                && acked_at
                    .get(txid.as_str())
                    .is_some_and(|at| *at < op.invoked)
            {
                v.push(format!(
                    "node {} answered {state} for {txid}, acknowledged Committed before the read was sent ({:.2} s)",
                    op.node, op.invoked
                ));
            }
        }
    }
    // 5. A node never reports less committed than it did.
    commit_never_goes_back(ops, &mut v);
    // 6. Reads on the node that acknowledged a commit, issued after it, see it.
    reads_after_ack(ops, committed, &mut v);
    (c, v)
}

/// Every collection the clients write to starts with this.
const COLLECTION_PREFIXES: [&str; 1] = ["chaos-"];

fn saw(
    seen: &mut HashMap<String, (String, u16, f64)>,
    txid: &str,
    contents: &str,
    op: &Op,
    v: &mut Vec<String>,
) {
    match seen.get(txid) {
        Some((other, node, at)) if other != contents => v.push(format!(
            "TWO CONTENTS at {txid}: {other:?} (node {node} at {at:.2} s) and {contents:?} (node {} at {:.2} s)",
            op.node, op.invoked
        )),
        Some(_) => {}
        None => {
            seen.insert(txid.to_string(), (contents.to_string(), op.node, op.invoked));
        }
    }
}

fn must_stay(
    reference: &Final,
    txid: &str,
    contents: &str,
    op: &Op,
    what: &str,
    v: &mut Vec<String>,
) {
    match reference.get(txid) {
        Some((_, c)) if c == contents => {}
        other => v.push(format!(
            "{what} on node {} at {:.2} s showed {contents:?} at {txid}; the final committed ledger has {:?}",
            op.node,
            op.invoked,
            other.map(|(_, c)| c)
        )),
    }
}

fn commit_never_goes_back(ops: &[Op], v: &mut Vec<String>) {
    // Per node: (invoked, completed, committed seqno seen).
    let mut by_node: BTreeMap<u16, Vec<(f64, f64, u64)>> = BTreeMap::new();
    // Per node and TxId: (invoked, completed, said Committed).
    type Seen = Vec<(f64, f64, bool)>;
    let mut status: BTreeMap<(u16, &str), Seen> = BTreeMap::new();
    for op in ops {
        match &op.outcome {
            Outcome::Commit { seqno } => {
                by_node
                    .entry(op.node)
                    .or_default()
                    .push((op.invoked, op.completed, *seqno))
            }
            Outcome::Status { txid, status: s } => status
                .entry((op.node, txid.as_str()))
                .or_default()
                .push((op.invoked, op.completed, s == "Committed")),
            _ => {}
        }
    }
    for (node, obs) in by_node {
        let mut done: Vec<(f64, u64)> = obs.iter().map(|o| (o.1, o.2)).collect();
        done.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut invoked: Vec<(f64, u64)> = obs.iter().map(|o| (o.0, o.2)).collect();
        invoked.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mut k, mut max, mut max_at) = (0, 0u64, 0f64);
        for (t, seen) in invoked {
            while k < done.len() && done[k].0 < t {
                if done[k].1 > max {
                    max = done[k].1;
                    max_at = done[k].0;
                }
                k += 1;
            }
            if seen < max {
                v.push(format!(
                    "COMMIT WENT BACK on node {node}: it reported seqno {max} committed by {max_at:.2} s, then {seen} to a request sent at {t:.2} s"
                ));
                break;
            }
        }
    }
    for ((node, txid), mut obs) in status {
        obs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let first_committed = obs
            .iter()
            .filter(|o| o.2)
            .map(|o| o.1)
            .fold(f64::INFINITY, f64::min);
        if let Some(o) = obs.iter().find(|o| o.0 > first_committed && !o.2) {
            v.push(format!(
                "STATUS WENT BACK on node {node}: {txid} was Committed by {first_committed:.2} s, then not to a request sent at {:.2} s",
                o.0
            ));
        }
    }
}

fn reads_after_ack(ops: &[Op], committed: &[(String, String, u16, f64)], v: &mut Vec<String>) {
    // Per node: the acknowledged commits, by time.
    let mut acks: BTreeMap<u16, Vec<(f64, &str)>> = BTreeMap::new();
    for (_, txid, node, at) in committed {
        acks.entry(*node).or_default().push((*at, txid));
    }
    let collection_of: HashMap<&str, &str> = ops
        .iter()
        .filter_map(|o| match &o.outcome {
            Outcome::Append {
                collection,
                txid: Some(t),
                ..
            } => Some((t.as_str(), collection.as_str())),
            _ => None,
        })
        .collect();
    for op in ops {
        let Some(node_acks) = acks.get(&op.node) else {
            continue;
        };
        let before = node_acks.iter().filter(|(at, _)| *at < op.invoked);
        match &op.outcome {
            Outcome::ReadTx { txid, state, .. }
                if state != "Ready"
                    && node_acks
                        .iter()
                        .any(|(at, t)| *at < op.invoked && t == txid) =>
            {
                v.push(format!(
                    "node {} reported {txid} Committed, then answered a read of it sent at {:.2} s with {state:?}",
                    op.node, op.invoked
                ));
            }
            Outcome::Current {
                collection, txid, ..
            } => {
                let got = txid.as_deref().map_or(0, seqno);
                if let Some((at, w)) = before
                    .filter(|(_, t)| collection_of.get(t) == Some(&collection.as_str()))
                    .max_by_key(|(_, t)| seqno(t))
                {
                    if seqno(w) > got {
                        v.push(format!(
                            "STALE current on node {}: it reported {w} ({collection}) Committed at {at:.2} s, then a read sent at {:.2} s returned {txid:?}",
                            op.node, op.invoked
                        ));
                    }
                }
            }
            Outcome::Range {
                collection,
                from,
                entries,
                more,
            } => {
                let last = entries.last().map_or(0, |(t, _)| seqno(t));
                let listed: HashSet<&str> = entries.iter().map(|(t, _)| t.as_str()).collect();
                for (at, w) in before {
                    let s = seqno(w);
                    if collection_of.get(w) == Some(&collection.as_str())
                        && s >= *from
                        && (!more || s <= last)
                        && !listed.contains(w)
                    {
                        v.push(format!(
                            "RANGE MISSED on node {}: {w} ({collection}) reported Committed at {at:.2} s is not in a range read from seqno {from} sent at {:.2} s",
                            op.node, op.invoked
                        ));
                        break;
                    }
                }
            }
            _ => {}
        }
    }
}
