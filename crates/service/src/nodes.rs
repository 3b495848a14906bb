//! The nodes table: each node of the service, its status and where it is reached.

use serde::{Deserialize, Serialize};

use crate::tables::NODES_INFO;

/// A node's status in [`NODES_INFO`] (SPEC §5), spelled as CCF spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    /// Asked to join; waits for the consortium (or the join token) to trust it.
    Pending,
    /// Part of the service: replicates, and may be elected primary.
    Trusted,
    /// Removed by governance; it stops replicating.
    Retired,
}

impl NodeStatus {
    /// The status as the APIs and the constitution spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Pending => "Pending",
            NodeStatus::Trusted => "Trusted",
            NodeStatus::Retired => "Retired",
        }
    }
}

/// A node's row in [`NODES_INFO`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    pub status: NodeStatus,
    /// Its Raft id; 0 while Pending (no Raft id is given before the node is trusted).
    pub raft_id: u64,
    /// Where other nodes and clients reach it (`host:port`).
    pub address: String,
    /// Its certificate: endorsed by the service once Trusted, the node's own
    /// self-signed one while Pending.
    pub cert: String,
    /// The evidence it joined with (hex of the raw quote), if it joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<String>,
    /// Extra names (IPs or DNS names) asked for its endorsed certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// It asked with the service's join token (only such a node may be trusted
    /// without a proposal, and only unverified Pending rows count against the cap).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub join_token_verified: bool,
    /// What governance recorded about it (`set_node_data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_data: Option<serde_json::Value>,
    /// Its RSA-OAEP public key (PEM): a rekey hands it the new ledger secret
    /// sealed to it (CCF's `encryption_pub_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_pub_key: Option<String>,
}

impl NodeInfo {
    /// A row with no evidence, extra names or node data.
    pub fn new(status: NodeStatus, raft_id: u64, address: String, cert: String) -> NodeInfo {
        NodeInfo {
            status,
            raft_id,
            address,
            cert,
            quote: None,
            subject_alt_names: Vec::new(),
            join_token_verified: false,
            node_data: None,
            encryption_pub_key: None,
        }
    }

    /// A Trusted node's row (a network's founding node, or a single node shown
    /// as the service's one node).
    pub fn trusted(raft_id: u64, address: String, cert: String) -> NodeInfo {
        NodeInfo::new(NodeStatus::Trusted, raft_id, address, cert)
    }
}

/// The row of node `id`, if it has a readable one.
pub fn node_row(store: &covenant_kv::Store, id: &covenant_types::NodeId) -> Option<NodeInfo> {
    store
        .get(NODES_INFO, id.as_str().as_bytes())
        .and_then(|v| serde_json::from_slice(&v).ok())
}

/// Every readable row of the nodes table, by node id.
pub fn node_rows(store: &covenant_kv::Store) -> Vec<(covenant_types::NodeId, NodeInfo)> {
    store
        .entries(NODES_INFO)
        .into_iter()
        .filter_map(|(k, v)| {
            Some((
                covenant_types::NodeId::new(String::from_utf8(k).ok()?),
                serde_json::from_slice(&v).ok()?,
            ))
        })
        .collect()
}
