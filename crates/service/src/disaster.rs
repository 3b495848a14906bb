//! Disaster recovery (SPEC §7, CCF's procedure): a node opens the ledger of a
//! service that lost every node, under a new service identity, with the public
//! domain replayed (`Engine::open_for_recovery`); [`begin`] writes the recovery's
//! first transaction (status Recovering); members confirm the identities with
//! `transition_service_to_open` (WaitingForRecoveryShares); each recovery member
//! submits its decrypted share ([`Service::submit_recovery_share`]), and the share
//! that reaches the threshold unwraps the latest ledger secret, walks back to the
//! first, replays the private domain and opens the service, in one step.

use covenant_crypto::{Certificate, ServiceIdentity};
use covenant_engine::rekey::walk_back;
use covenant_engine::{Engine, EngineError};
use covenant_governance::{ServiceStatus, PREVIOUS_SERVICE_IDENTITY};
use covenant_recovery::{RecoveryError, Share};
use covenant_types::{SeqNo, TxId};

use crate::nodes::{NodeInfo, NodeStatus};
use crate::recovery::current;
use crate::tables::{
    MEMBERSHIP_KEY, MEMBERSHIP_MAP, NODES_INFO, RECOVERY_SHARES, RECOVERY_SHARES_KEY, SERVICE_INFO,
    SERVICE_INFO_KEY,
};
use crate::Service;

pub use covenant_engine::rekey::SERVICE_ENDORSEMENTS;
/// Each recovery's COSE endorsement of the identity it recovered (CCF's table and
/// row: `{endorsement, endorsing_key, endorsement_epoch_begin,
/// endorsement_epoch_end, previous_version}`, base64 for the bytes), singleton
/// key "0": the ledger keeps every version, `previous_version` links them.
pub const PREVIOUS_SERVICE_IDENTITY_ENDORSEMENT: &str =
    "public:ccf.internal.previous_service_identity_endorsement";

/// Why a recovery could not start, or a share was refused.
#[derive(Debug, thiserror::Error)]
pub enum DisasterError {
    #[error("the service is {0}, not waiting for recovery shares")]
    NotWaiting(String),
    #[error(
        "member {0} holds no recovery share (it is not a recovery member of the recovered ledger)"
    )]
    NotRecoveryMember(String),
    #[error("member {0} already submitted its share")]
    AlreadySubmitted(String),
    #[error(
        "the recovered ledger holds no recovery shares: it was never opened with recovery members"
    )]
    NoShares,
    #[error(transparent)]
    Share(#[from] RecoveryError),
    #[error("the recovered ledger is not a service: {0}")]
    NotAService(String),
    #[error("endorsing the previous identity failed: {0}")]
    Endorse(#[from] covenant_crypto::CryptoError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Service(#[from] crate::ServiceError),
}

/// What [`Service::submit_recovery_share`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareOutcome {
    /// Shares in, this one included.
    pub submitted: usize,
    pub threshold: usize,
    /// This share completed the recovery: the service is Open.
    pub opened: bool,
    /// The transaction that opened the service (none before the threshold: a
    /// submitted share is kept in the recovering node's memory only, so the
    /// recovery's own transactions hold nothing private and a restart only asks
    /// for the shares again).
    pub txid: Option<TxId>,
}

/// The recovery's first transaction, written into the engine of the recovering
/// node before consensus starts: the new identity and status Recovering, the
/// previous identity and its endorsement, every old node retired, this node the
/// only trusted one and the only voter. Returns this node's Raft id.
pub fn begin(
    engine: &mut Engine,
    service: &ServiceIdentity,
    previous: &Certificate,
    node_id: &str,
    mut node_row: NodeInfo,
) -> Result<u64, DisasterError> {
    let Some(boundary) = engine.recovery_boundary() else {
        return Err(DisasterError::NotAService(
            "the engine was not opened for a recovery".into(),
        ));
    };
    let store = engine.store().clone();
    let mut info: serde_json::Value = store
        .get(SERVICE_INFO, SERVICE_INFO_KEY)
        .and_then(|v| serde_json::from_slice(&v).ok())
        .ok_or_else(|| DisasterError::NotAService("no service.info row".into()))?;
    if current(store.get(RECOVERY_SHARES, RECOVERY_SHARES_KEY)).is_none() {
        return Err(DisasterError::NoShares);
    }
    let recovery_count = info["recovery_count"].as_u64().unwrap_or(0) + 1;
    // The epoch the previous identity signed for: from the previous recovery's
    // boundary (or seqno 1) to the last transaction of the old ledger.
    let txid_at = |seqno: SeqNo| {
        let view = engine.view_at(seqno).map_or(0, |v| v.0);
        format!("{view}.{}", seqno.0)
    };
    let epoch = covenant_crypto::EndorsedEpoch {
        start_txid: txid_at(SeqNo(
            info["previous_service_identity_version"]
                .as_u64()
                .map_or(1, |v| v + 1),
        )),
        end_txid: txid_at(boundary.prev()),
    };
    info["cert"] = service.cert.to_pem().into();
    info["status"] = ServiceStatus::Recovering.as_str().into();
    info["recovery_count"] = recovery_count.into();
    info["previous_service_identity_version"] = (boundary.0 - 1).into();
    let mut tx = engine.begin();
    tx.put(SERVICE_INFO, SERVICE_INFO_KEY, info.to_string().as_bytes());
    tx.put(
        PREVIOUS_SERVICE_IDENTITY,
        b"0",
        previous.to_pem().as_bytes(),
    );
    let endorsement = service.endorse_previous(previous)?;
    tx.put(
        SERVICE_ENDORSEMENTS,
        recovery_count.to_string().as_bytes(),
        endorsement.to_pem().as_bytes(),
    );
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cose =
        covenant_crypto::endorse_previous_identity_cose(&service.key, previous, &epoch, iat)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let row = serde_json::json!({
        "endorsement": base64::Engine::encode(&b64, cose),
        "endorsing_key": base64::Engine::encode(&b64, service.cert.spki_der()),
        "endorsement_epoch_begin": epoch.start_txid,
        "endorsement_epoch_end": epoch.end_txid,
        "previous_version": store.version_of(PREVIOUS_SERVICE_IDENTITY_ENDORSEMENT, b"0").map(|v| v.0),
    });
    tx.put(
        PREVIOUS_SERVICE_IDENTITY_ENDORSEMENT,
        b"0",
        row.to_string().as_bytes(),
    );
    let mut raft_id = 0;
    for (id, mut row) in crate::nodes::node_rows(&store) {
        raft_id = raft_id.max(row.raft_id);
        if row.status != NodeStatus::Retired {
            row.status = NodeStatus::Retired;
            let v =
                serde_json::to_vec(&row).map_err(|e| DisasterError::NotAService(e.to_string()))?;
            tx.put(NODES_INFO, id.as_str().as_bytes(), &v);
        }
    }
    let raft_id = raft_id + 1;
    node_row.status = NodeStatus::Trusted;
    node_row.raft_id = raft_id;
    let v = serde_json::to_vec(&node_row).map_err(|e| DisasterError::NotAService(e.to_string()))?;
    tx.put(NODES_INFO, node_id.as_bytes(), &v);
    tx.put(
        MEMBERSHIP_MAP,
        MEMBERSHIP_KEY,
        &covenant_consensus::Membership::with_voters([raft_id]).encode(),
    );
    engine.commit_tx(tx, None)?;
    engine.emit_signature()?;
    engine.flush()?;
    Ok(raft_id)
}

impl Service {
    /// A recovery member's decrypted share (the 44 bytes `gov share --fetch` or
    /// `openssl pkeyutl` yield). Refused, with nothing kept, unless the service
    /// waits for shares, `member` is a recovery member of the recovered ledger that
    /// has not submitted yet, and this is the share issued to it. The share that
    /// reaches the threshold completes the recovery in one transaction.
    pub async fn submit_recovery_share(
        &self,
        member: String,
        share: Vec<u8>,
    ) -> Result<ShareOutcome, DisasterError> {
        self.blocking(move |s| s.submit_blocking(&member, &share))
            .await?
    }

    /// (submitted, threshold) while the service waits for recovery shares.
    pub fn recovery_progress(&self) -> Option<(usize, usize)> {
        let row = current(self.store().get(RECOVERY_SHARES, RECOVERY_SHARES_KEY))?;
        Some((crate::lock(&self.0.submitted_shares).len(), row.threshold))
    }

    fn submit_blocking(&self, member: &str, share: &[u8]) -> Result<ShareOutcome, DisasterError> {
        let share = Share::from_bytes(share)?;
        let mut submitted = crate::lock(&self.0.submitted_shares);
        let row = check_share(self.store(), &submitted, member, &share)?;
        let threshold = row.threshold;
        let mut collected: Vec<Share> = submitted.values().cloned().collect();
        collected.push(share.clone());
        if collected.len() < threshold {
            submitted.insert(member.to_string(), share);
            return Ok(ShareOutcome {
                submitted: collected.len(),
                threshold,
                opened: false,
                txid: None,
            });
        }
        // The threshold: unwrap, walk back, replay the private domain, open.
        let latest = row.recover(&collected)?;
        let txid = self.write_blocking(|e| {
            let chain = walk_back(
                (SeqNo(row.secret_version), latest),
                e.historical_secrets(),
            )?;
            e.complete_recovery(chain)?;
            let mut tx = e.begin();
            let mut info: serde_json::Value = tx
                .get(SERVICE_INFO, SERVICE_INFO_KEY)
                .and_then(|v| serde_json::from_slice(&v).ok())
                .unwrap_or_else(|| serde_json::json!({}));
            info["status"] = ServiceStatus::Open.as_str().into();
            tx.put(SERVICE_INFO, SERVICE_INFO_KEY, info.to_string().as_bytes());
            e.link_recovered_secret(&mut tx)?;
            // New shares, for this service's own secret.
            if let Err(err) = crate::recovery::settle(e, &mut tx, true) {
                tracing::warn!(error = %err, "the recovered service could not issue new recovery shares");
            }
            e.commit_tx(tx, None)
        })?;
        submitted.clear();
        Ok(ShareOutcome {
            submitted: collected.len(),
            threshold,
            opened: true,
            txid: Some(txid),
        })
    }
}

/// The checks of a submitted share; returns the shares row.
fn check_share(
    store: &covenant_kv::Store,
    submitted: &std::collections::BTreeMap<String, Share>,
    member: &str,
    share: &Share,
) -> Result<covenant_recovery::RecoveryShares, DisasterError> {
    match covenant_governance::service_status(store) {
        Some(ServiceStatus::WaitingForRecoveryShares) => {}
        other => {
            return Err(DisasterError::NotWaiting(
                other.map_or("not created".to_string(), |s| s.to_string()),
            ))
        }
    }
    let row =
        current(store.get(RECOVERY_SHARES, RECOVERY_SHARES_KEY)).ok_or(DisasterError::NoShares)?;
    if !row.encrypted_shares.contains_key(member) {
        return Err(DisasterError::NotRecoveryMember(member.to_string()));
    }
    if submitted.contains_key(member) {
        return Err(DisasterError::AlreadySubmitted(member.to_string()));
    }
    row.check_share(member, share)?;
    Ok(row)
}

/// The `serviceEndorsements` of a receipt signed with `node_cert_pem`: empty when
/// the current service endorsed that node, else the recoveries' endorsements from
/// the one that certified the node's service key up to the current service
/// (node cert ← e\[0\] ← e\[1\] ← … ← current service cert).
pub fn endorsements_for(
    store: &covenant_kv::Store,
    service: &Certificate,
    node_cert_pem: &str,
) -> Vec<String> {
    let Ok(node) = Certificate::from_pem(node_cert_pem) else {
        return Vec::new();
    };
    if node.verify_signed_by(service).is_ok() {
        return Vec::new();
    }
    let mut rows: Vec<(u64, String)> = store
        .entries(SERVICE_ENDORSEMENTS)
        .into_iter()
        .filter_map(|(k, v)| {
            let n = std::str::from_utf8(&k).ok()?.parse().ok()?;
            Some((n, String::from_utf8(v).ok()?))
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut chain = Vec::new();
    for (_, pem) in rows {
        let Ok(e) = Certificate::from_pem(&pem) else {
            break;
        };
        chain.push(pem);
        if node.verify_signed_by(&e).is_ok() {
            chain.reverse();
            return chain;
        }
    }
    Vec::new()
}
