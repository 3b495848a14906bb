//! Admitting nodes to a network and retiring them: the service-table side of a
//! join and of governance's node transitions. A node is trusted by endorsing its
//! key with the service identity, giving it a Raft id no node ever had, and adding
//! it to the configuration as a learner, in the same transaction as its row. Who
//! may ask, and the HTTP shapes, stay with the transport.

use std::net::SocketAddr;
use std::sync::Arc;

use covenant_consensus::{ConsensusError, Membership, Replica};
use covenant_crypto::{Certificate, CryptoError, NodeIdentity, ServiceIdentity, SubjectAltName};
use covenant_engine::Engine;
use covenant_kv::Tx;
use covenant_types::{NodeId, TxId};

use crate::nodes::{node_rows, NodeInfo, NodeStatus};
use crate::tables::NODES_INFO;
use crate::Service;

/// Why a node could not be admitted or retired.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// Only a node holding the service key endorses nodes.
    #[error("this node holds no service key and cannot endorse nodes")]
    NoServiceKey,
    /// The joining node's certificate does not parse.
    #[error("node certificate: {0}")]
    BadCertificate(#[source] CryptoError),
    #[error("endorsing the node certificate failed: {0}")]
    Endorse(#[source] CryptoError),
    #[error("encoding the node row failed: {0}")]
    Encode(#[from] serde_json::Error),
    /// A proposal would retire the primary itself: it hands over first.
    #[error(
        "the proposal retires this node, the primary: it hands over to another node first; retry"
    )]
    PrimaryRetiring,
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
}

/// What a node of a network was configured with that admitting others needs.
#[derive(Clone, Default)]
pub struct AdmissionConfig {
    /// The service identity with its key (`None`: this node endorses no one).
    pub identity: Option<Arc<ServiceIdentity>>,
    /// This node's Raft id.
    pub own_raft_id: u64,
    /// Raft ids of the network's configured peers (taken even before their rows exist).
    pub configured_peers: Vec<u64>,
}

/// Admitting nodes as this node of a network can ([`Service::admission`]).
pub struct Admission<'a> {
    pub service: &'a Service,
    pub replica: &'a Replica,
    pub config: &'a AdmissionConfig,
}

impl Admission<'_> {
    /// The next free Raft id: above every id in the nodes table, the configuration
    /// (applied and pending) and the configured peers. Ids are never reused:
    /// retired nodes keep theirs.
    pub fn next_raft_id(&self) -> u64 {
        let (applied, pending) = self.replica.configuration();
        let rows = node_rows(self.service.store())
            .into_iter()
            .map(|(_, i)| i.raft_id);
        let conf = members(&applied)
            .into_iter()
            .chain(pending.into_iter().flat_map(|(_, m)| members(&m)));
        rows.chain(conf)
            .chain(self.config.configured_peers.iter().copied())
            .max()
            .unwrap_or(0)
            + 1
    }

    /// The row of a node being trusted: a certificate for its key endorsed by the
    /// service (naming its address and the names it asked for), and a new Raft id.
    pub fn trusted_row(&self, row: &NodeInfo) -> Result<NodeInfo, AdmissionError> {
        let identity = self
            .config
            .identity
            .as_deref()
            .ok_or(AdmissionError::NoServiceKey)?;
        let candidate = Certificate::from_pem(&row.cert).map_err(AdmissionError::BadCertificate)?;
        let mut sans = SubjectAltName::dev_defaults();
        if let Ok(addr) = row.address.parse::<SocketAddr>() {
            sans.push(SubjectAltName::Ip(addr.ip()));
        }
        sans.extend(
            row.subject_alt_names
                .iter()
                .map(|s| SubjectAltName::parse(s)),
        );
        let endorsed = identity
            .issue_node_cert_for(&candidate, &sans, NodeIdentity::DEFAULT_VALIDITY_DAYS)
            .map_err(AdmissionError::Endorse)?;
        Ok(NodeInfo {
            status: NodeStatus::Trusted,
            raft_id: self.next_raft_id(),
            cert: endorsed.to_pem(),
            ..row.clone()
        })
    }

    /// Trusts node `node_id` (row `row`, Pending or new) in one transaction: its
    /// trusted row and the configuration with it as a learner. Asks for a snapshot
    /// the node can start from. Returns the new row and the transaction.
    pub fn trust(
        &self,
        node_id: &NodeId,
        row: &NodeInfo,
    ) -> Result<(NodeInfo, TxId), AdmissionError> {
        let trusted = self.trusted_row(row)?;
        let value = serde_json::to_vec(&trusted)?;
        let (mut target, _) = self.replica.configuration();
        target.learners.insert(trusted.raft_id);
        self.service.engine().request_snapshot();
        let txid = self.replica.change_membership(target, |tx| {
            tx.put(NODES_INFO, node_id.as_str().as_bytes(), &value);
        })?;
        Ok((trusted, txid))
    }

    /// Carries out, in transaction `tx`, what accepted proposals decided about
    /// nodes: a row set Trusted (`transition_node_to_trusted`) is endorsed, gets a
    /// Raft id and joins as a learner; a row set Retired (`remove_node`) leaves the
    /// configuration. Returns the configuration staged, to record once `tx` has its
    /// seqno (`None`: nothing changed).
    pub fn settle(
        &self,
        engine: &mut Engine,
        tx: &mut Tx,
    ) -> Result<Option<Membership>, AdmissionError> {
        let Some(rows) = tx.write_set().maps.get(NODES_INFO).cloned() else {
            return Ok(None);
        };
        let (mut target, _) = self.replica.configuration();
        let before = target.clone();
        for (key, value) in rows {
            let Some(value) = value else { continue };
            let Ok(row) = serde_json::from_slice::<NodeInfo>(&value) else {
                continue;
            };
            if row.status == NodeStatus::Trusted && row.raft_id == 0 {
                let trusted = self.trusted_row(&row)?;
                target.learners.insert(trusted.raft_id);
                tx.put(NODES_INFO, &key, &serde_json::to_vec(&trusted)?);
                engine.request_snapshot();
            } else if row.status == NodeStatus::Retired
                && row.raft_id != 0
                && target.contains(row.raft_id)
            {
                if row.raft_id == self.config.own_raft_id {
                    return Err(AdmissionError::PrimaryRetiring);
                }
                target.voters.remove(&row.raft_id);
                target.learners.remove(&row.raft_id);
            }
        }
        if target == before {
            return Ok(None);
        }
        self.replica.stage_membership(tx, &target)?;
        Ok(Some(target))
    }
}

fn members(m: &Membership) -> Vec<u64> {
    m.voters.iter().chain(&m.learners).copied().collect()
}
