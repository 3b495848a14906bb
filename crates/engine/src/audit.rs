use covenant_types::SeqNo;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use covenant_crypto::{sha256, Certificate};
use covenant_kv::TxEntry;
use covenant_ledger::ChunkScanner;
use covenant_merkle::MerkleTree;
use covenant_receipt::{SignatureRecord, SIGNATURES_MAP, SIGNATURE_KEY};
use covenant_types::{Digest32, TxId};

use crate::engine::leaf_of;
use crate::snapshot::{self, SnapshotFile};

/// CCF's map of proposal states (`covenant-governance` writes it): the audit lists
/// every change of it.
pub const GOV_PROPOSALS_INFO: &str = "public:ccf.gov.proposals_info";

/// A proposal's state as a transaction recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GovernanceEvent {
    pub txid: TxId,
    pub proposal_id: String,
    /// Open, Accepted, Rejected, Withdrawn, Failed, Dropped.
    pub state: String,
}

/// What a successful audit checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    pub entries: u64,
    pub signatures: u64,
    pub bytes: u64,
    pub last_txid: Option<TxId>,
    /// Entries after the last signature (not yet signed; allowed only outside committed chunks).
    pub unsigned_tail: u64,
    /// Distinct node identities that signed.
    pub signing_nodes: usize,
    /// The snapshot the ledger continues (it starts right after it), when it does.
    pub snapshot: Option<TxId>,
    /// Every proposal state the ledger recorded, in ledger order.
    pub governance: Vec<GovernanceEvent>,
}

/// The first inconsistency found, with the TxId where it was found (when one is readable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", txid.map(|t| format!("at {t}")).unwrap_or_else(|| "ledger".to_string()))]
pub struct AuditError {
    pub txid: Option<TxId>,
    pub reason: String,
}

fn fail(txid: Option<TxId>, reason: impl Into<String>) -> AuditError {
    AuditError {
        txid,
        reason: reason.into(),
    }
}

/// Replays a ledger directory offline (SPEC §3 offline audit): every frame and
/// checksum, every leaf recomputed, every signed root recomputed and its signature
/// checked, every signing node cert checked against `service_cert`. Committed chunks
/// must be fully covered by signatures. Needs no ledger secret.
///
/// `progress(bytes_read, total_bytes)` is called as chunks are read.
///
/// A ledger whose first chunk starts at `f > 1` continues a snapshot: it is
/// looked for as `<dir>/../snapshots/snapshot_<f-1>.committed` (see
/// [`audit_ledger_with_snapshot`] to name it).
pub fn audit_ledger(
    dir: &Path,
    service_cert: &Certificate,
    progress: impl FnMut(u64, u64),
) -> Result<AuditReport, AuditError> {
    audit_ledger_with_snapshot(dir, None, service_cert, progress)
}

/// Where [`audit_ledger`] looks for the snapshot a ledger starting at `first` continues.
pub fn default_snapshot_path(dir: &Path, first: u64) -> PathBuf {
    dir.join("..")
        .join("snapshots")
        .join(snapshot::file_name(first.saturating_sub(1)))
}

/// [`audit_ledger`] for a ledger that continues a snapshot: the snapshot file is
/// verified first (its signature, endorsement and checkpoint root; private maps
/// stay sealed), then the ledger is checked from the checkpoint's tree on exactly
/// as a full ledger is. `snapshot` overrides the default location; it must be the
/// snapshot at the seqno just before the ledger's first entry.
pub fn audit_ledger_with_snapshot(
    dir: &Path,
    snapshot: Option<&Path>,
    service_cert: &Certificate,
    progress: impl FnMut(u64, u64),
) -> Result<AuditReport, AuditError> {
    audit_archived_ledger(dir, &[], snapshot, service_cert, progress)
}

/// [`audit_ledger_with_snapshot`] for a ledger whose older committed chunks were
/// archived into `read_only_dirs` (`Ledger::archive`): they are read
/// transparently, a chunk present in two places once.
pub fn audit_archived_ledger(
    dir: &Path,
    read_only_dirs: &[PathBuf],
    snapshot: Option<&Path>,
    service_cert: &Certificate,
    mut progress: impl FnMut(u64, u64),
) -> Result<AuditReport, AuditError> {
    let scanner =
        ChunkScanner::open_with(dir, read_only_dirs).map_err(|e| fail(None, e.to_string()))?;
    let total = scanner.total_bytes();
    let first = scanner.first_seqno();
    let path = match snapshot {
        Some(p) => Some(p.to_path_buf()),
        None if first > SeqNo(1) => Some(default_snapshot_path(dir, first.0)),
        None => None,
    };
    let mut report = AuditReport::default();
    let mut tree = MerkleTree::new();
    let mut endorsed: HashSet<Digest32> = HashSet::new();
    // Signers of earlier epochs (endorsed by a previous service identity) and the
    // recoveries' endorsements of those identities: resolved at the end, since a
    // recovery's endorsement comes after the signatures it vouches for.
    let mut earlier: Vec<(TxId, Certificate)> = Vec::new();
    let mut endorsements: Vec<(TxId, Certificate)> = Vec::new();
    let mut last_committed_seqno = 0u64;
    let mut last_sig_seqno = 0u64;
    let mut min_view = 0u64;
    if let Some(path) = path {
        let v = audit_snapshot(&path, first.0, service_cert)?;
        let txid = v.info.txid;
        tree = v.tree;
        endorsed.insert(sha256(&v.signer_der));
        last_sig_seqno = txid.seqno.0;
        min_view = txid.view.0;
        report.snapshot = Some(txid);
    }
    progress(0, total);
    let mut tick = 0u64;

    let mut scanner = scanner;
    while let Some(item) = scanner.next() {
        let scanned = item.map_err(|e| {
            let txid = match &e {
                covenant_ledger::LedgerError::Corrupt { txid, .. } => *txid,
                _ => None,
            };
            fail(txid, e.to_string())
        })?;
        let e = scanned.entry;
        let txid = e.txid;
        if txid.view.0 < min_view {
            return Err(fail(
                Some(txid),
                format!("view goes back from the snapshot's view {min_view}"),
            ));
        }
        let entry = TxEntry::decode(&e.payload).map_err(|x| fail(Some(txid), x.to_string()))?;
        let public = entry
            .public_write_set()
            .map_err(|x| fail(Some(txid), x.to_string()))?;
        let sig_write = public.get(SIGNATURES_MAP, SIGNATURE_KEY);
        if sig_write.is_some() != e.is_signature {
            return Err(fail(
                Some(txid),
                "signature flag does not match the write set",
            ));
        }
        if let Some(sig_write) = sig_write {
            let bytes = sig_write.ok_or_else(|| fail(Some(txid), "signature removed"))?;
            let record = SignatureRecord::from_json_bytes(bytes)
                .map_err(|x| fail(Some(txid), x.to_string()))?;
            if record.seqno != txid.seqno || record.view != txid.view {
                return Err(fail(
                    Some(txid),
                    format!("signature record names {}.{}", record.view, record.seqno),
                ));
            }
            let root = tree
                .root_at(txid.seqno.0 - 1)
                .map_err(|x| fail(Some(txid), format!("cannot compute root: {x}")))?;
            if root != record.root {
                return Err(fail(
                    Some(txid),
                    format!(
                        "signed root {} does not match the root {} recomputed from the ledger",
                        record.root, root
                    ),
                ));
            }
            let cert = record
                .verify_self()
                .map_err(|x| fail(Some(txid), x.to_string()))?;
            let id = sha256(cert.der());
            if !endorsed.contains(&id) {
                if cert.verify_signed_by(service_cert).is_ok() {
                    endorsed.insert(id);
                } else {
                    earlier.push((txid, cert));
                }
            }
            report.signatures += 1;
            last_sig_seqno = txid.seqno.0;
        }
        if let Some(m) = public.maps.get(crate::rekey::SERVICE_ENDORSEMENTS) {
            for pem in m.values().flatten() {
                let cert = Certificate::from_pem(&String::from_utf8_lossy(pem)).map_err(|x| {
                    fail(Some(txid), format!("unreadable service endorsement: {x}"))
                })?;
                endorsements.push((txid, cert));
            }
        }
        // Governance is public state: list what it did, transaction by transaction.
        if let Some(m) = public.maps.get(GOV_PROPOSALS_INFO) {
            for (id, info) in m {
                let state = info
                    .as_deref()
                    .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
                    .and_then(|v| v["state"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "removed".into());
                report.governance.push(GovernanceEvent {
                    txid,
                    proposal_id: String::from_utf8_lossy(id).into_owned(),
                    state,
                });
            }
        }
        tree.append(leaf_of(&entry));
        // Audits need roots, not old proofs: keep memory flat.
        if tree.len() % 4096 == 0 {
            tree.flush_before(tree.len());
        }
        if scanned.committed {
            last_committed_seqno = txid.seqno.0;
        }
        report.entries += 1;
        report.last_txid = Some(txid);
        tick += 1;
        if tick % 1024 == 0 {
            progress(scanner.bytes_read(), total);
        }
    }
    // Previous service identities the trusted one endorsed, transitively.
    let mut trusted = vec![service_cert.clone()];
    let mut pending = endorsements;
    loop {
        let before = pending.len();
        pending.retain(|(_, e)| {
            if trusted.iter().any(|t| e.verify_signed_by(t).is_ok()) {
                trusted.push(e.clone());
                false
            } else {
                true
            }
        });
        if pending.len() == before {
            break;
        }
    }
    for (txid, cert) in earlier {
        if !trusted.iter().any(|t| cert.verify_signed_by(t).is_ok()) {
            return Err(fail(
                Some(txid),
                "signing node not endorsed by the service (nor by a previous identity it endorsed)",
            ));
        }
        endorsed.insert(sha256(cert.der()));
    }
    if last_committed_seqno > last_sig_seqno {
        return Err(fail(
            report.last_txid,
            format!(
                "committed entries up to seqno {last_committed_seqno} are not covered by a signature (last signature at {last_sig_seqno})"
            ),
        ));
    }
    let last = report
        .last_txid
        .or(report.snapshot)
        .map_or(0, |t| t.seqno.0);
    report.unsigned_tail = last - last_sig_seqno;
    report.bytes = scanner.bytes_read();
    report.signing_nodes = endorsed.len();
    progress(report.bytes, total);
    Ok(report)
}

/// Reads and verifies the snapshot a ledger starting at `first` continues.
fn audit_snapshot(
    path: &Path,
    first: u64,
    service_cert: &Certificate,
) -> Result<snapshot::Verified, AuditError> {
    let snap_fail = |reason: String| fail(None, format!("snapshot {}: {reason}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| {
        snap_fail(if first > 1 {
            format!("cannot read it ({e}); the ledger starts at seqno {first} and needs the snapshot at seqno {}", first - 1)
        } else {
            format!("cannot read it ({e})")
        })
    })?;
    let v = SnapshotFile::decode(&bytes)
        .and_then(|f| f.check(Some(service_cert), None))
        .map_err(|e| fail(None, format!("snapshot {}: {e}", path.display())))?;
    let txid = v.info.txid;
    if txid.seqno.0 + 1 != first {
        return Err(snap_fail(format!(
            "it is at {txid}, but the ledger starts at seqno {first}"
        )));
    }
    Ok(v)
}
