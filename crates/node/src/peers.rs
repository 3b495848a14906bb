//! A node's peers in a replicated network (SPEC §1): the network configuration,
//! where each other node is reached, and the Raft transport: messages as
//! length-prefixed frames in `POST /internal/raft` bodies over mutually
//! authenticated TLS, on the same port as the API.
//!
//! Trust: a peer is a node whose certificate is endorsed (signed) by the service key.

use covenant_types::SeqNo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use covenant_client::{Connection, LedgerClient};
use covenant_consensus::{Replica, Transport};
use covenant_crypto::{Certificate, NodeIdentity};
use covenant_service::tables::NODES_INFO;
use covenant_service::NodeStatus;
use tokio::sync::mpsc;

use crate::http::RAFT_PATH;
use crate::server::PeerCert;

/// A sender stops adding messages to a batch past this size (a batch may
/// overshoot it by one message; the receiving edge caps bodies at
/// [`crate::http::MAX_RAFT_BODY_BYTES`]).
const MAX_BATCH_BYTES: usize = 8 << 20;

/// The other nodes and this one's Raft id.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub raft_id: u64,
    /// Raft id → address of the nodes this one knows at start: every voting node of
    /// a new network (this one included), or the network a node joined. Nodes that
    /// join later are found in [`NODES_INFO`].
    pub peers: BTreeMap<u64, SocketAddr>,
    /// The address other nodes reach this one at.
    pub address: SocketAddr,
    /// Where the Raft hard state file lives.
    pub state_dir: std::path::PathBuf,
    /// Raft tick; elections after 20 ticks without a primary.
    pub tick: Duration,
    /// The service identity with its key, so that this node, as primary, can endorse
    /// joining nodes and hand the identity on; `None`: it admits no one.
    pub service: Option<Arc<covenant_crypto::ServiceIdentity>>,
}

impl NetworkConfig {
    /// A node of a network of `peers` (which must include `raft_id`); defaults for
    /// the rest (no service key: this node admits no joining node).
    pub fn new(
        raft_id: u64,
        peers: BTreeMap<u64, SocketAddr>,
        state_dir: impl Into<std::path::PathBuf>,
    ) -> NetworkConfig {
        let address = peers
            .get(&raft_id)
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        NetworkConfig {
            raft_id,
            peers,
            address,
            state_dir: state_dir.into(),
            tick: Duration::from_millis(50),
            service: None,
        }
    }
}

/// Where the other nodes are: the configured peers, then the addresses in
/// [`NODES_INFO`] (nodes that joined later), with one client per node.
pub struct PeerBook {
    own_id: u64,
    configured: BTreeMap<u64, SocketAddr>,
    store: covenant_kv::Store,
    service_cert: Certificate,
    node_cert: Certificate,
    node_key: covenant_crypto::SigningKeyPair,
    clients: std::sync::Mutex<BTreeMap<u64, (String, LedgerClient)>>,
    /// This node as it names itself to the others ([`crate::http::RAFT_SENDER_HEADER`]).
    own_address: SocketAddr,
    /// Addresses other nodes gave with their Raft messages, for nodes this one
    /// has no row of yet: a node away since before they joined must still answer
    /// a primary among them (and be sent the snapshot it needs).
    learned: std::sync::Mutex<BTreeMap<u64, SocketAddr>>,
}

impl PeerBook {
    /// The peers of `config`, reached with this node's certificate and key.
    pub fn new(
        config: &NetworkConfig,
        store: covenant_kv::Store,
        service_cert: &Certificate,
        node: &NodeIdentity,
    ) -> Result<Arc<PeerBook>, covenant_client::ClientError> {
        let node_key = covenant_crypto::SigningKeyPair::from_pem(&node.key.to_pem())
            .map_err(|e| covenant_client::ClientError::Tls(e.to_string()))?;
        Ok(Arc::new(PeerBook {
            own_id: config.raft_id,
            configured: config.peers.clone(),
            store,
            service_cert: service_cert.clone(),
            node_cert: node.cert.clone(),
            node_key,
            clients: Default::default(),
            own_address: config.address,
            learned: Default::default(),
        }))
    }

    /// The address of node `raft_id`, if known: this node's configuration first (the
    /// operator's route to that node, e.g. through a proxy), then the address the
    /// node registered.
    pub fn address(&self, raft_id: u64) -> Option<String> {
        if let Some(a) = self.configured.get(&raft_id) {
            return Some(a.to_string());
        }
        self.registered(raft_id).or_else(|| {
            self.learned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&raft_id)
                .map(|a| a.to_string())
        })
    }

    /// Records the address an endorsed node gave with its Raft messages, used
    /// only while neither the configuration nor the nodes table names one (so a
    /// node cannot redirect traffic meant for a node this one knows).
    pub fn learn(&self, raft_id: u64, address: SocketAddr) {
        if raft_id == self.own_id || raft_id == 0 || self.configured.contains_key(&raft_id) {
            return;
        }
        // Per batch of messages: the nodes table is read only for a node this
        // one neither sends to already nor learned at this address.
        let sends_to = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&raft_id);
        let same = self
            .learned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&raft_id)
            == Some(&address);
        if sends_to || same {
            return;
        }
        if self.registered(raft_id).is_none() {
            let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
            if learned.insert(raft_id, address) != Some(address) {
                tracing::info!(peer = raft_id, %address, "learned a node's address from its messages");
            }
        }
    }

    /// The address node `raft_id` registered in the nodes table.
    fn registered(&self, raft_id: u64) -> Option<String> {
        covenant_service::nodes::node_rows(&self.store)
            .into_iter()
            .map(|(_, i)| i)
            .find(|i| i.raft_id == raft_id && !i.address.is_empty())
            .map(|i| i.address)
    }

    /// The value of [`crate::http::RAFT_SENDER_HEADER`] this node sends.
    fn sender_header(&self) -> (String, String) {
        (
            crate::http::RAFT_SENDER_HEADER.to_string(),
            format!("{} {}", self.own_id, self.own_address),
        )
    }

    /// A client to node `raft_id` presenting this node's certificate (cached while
    /// the node's address stays the same).
    pub fn client(&self, raft_id: u64) -> Option<LedgerClient> {
        if raft_id == self.own_id {
            return None;
        }
        let address = self.address(raft_id)?;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((a, c)) = clients.get(&raft_id) {
            if *a == address {
                return Some(c.clone());
            }
        }
        let c = LedgerClient::new(
            &format!("https://{address}"),
            &self.service_cert,
            Some((&self.node_cert, &self.node_key)),
        )
        .ok()?;
        clients.insert(raft_id, (address, c.clone()));
        Some(c)
    }
}

/// What a networked node shares with its handlers.
pub struct Network {
    pub replica: Replica,
    pub config: NetworkConfig,
    pub service_cert: Certificate,
    /// Clients to the other nodes, presenting this node's certificate.
    pub peers: Arc<PeerBook>,
    /// Idle keep-alive connections to the primary, per Raft id (forwarded writes).
    pub(crate) idle: std::sync::Mutex<BTreeMap<u64, Vec<Connection>>>,
    /// Set once this node saw itself retired: it no longer replicates or forwards.
    pub retired: std::sync::atomic::AtomicBool,
    /// The first seqno this node's ledger holds (fixed once the engine is open):
    /// reads of earlier history go to the primary.
    pub first_seqno: SeqNo,
    /// Fingerprints of certificates already checked against the service key (an
    /// ECDSA P-384 verification per consensus request was ~3% of a 3-node bench).
    endorsed: std::sync::Mutex<std::collections::HashSet<covenant_types::Digest32>>,
    /// The highest commit point this node has shown a client through another node
    /// (reads it forwarded). Its own reads wait for its commit to reach it, so that
    /// no client sees this node's commit point go back.
    relayed: std::sync::atomic::AtomicU64,
}

impl Network {
    /// This node's part in a network: its replica, configuration and peers.
    pub fn new(
        replica: Replica,
        config: NetworkConfig,
        service_cert: Certificate,
        peers: Arc<PeerBook>,
        first_seqno: SeqNo,
    ) -> Network {
        Network {
            replica,
            config,
            service_cert,
            peers,
            retired: Default::default(),
            first_seqno,
            idle: Default::default(),
            endorsed: Default::default(),
            relayed: Default::default(),
        }
    }

    /// What this node has shown as committed through another node.
    pub fn relayed_commit(&self) -> SeqNo {
        SeqNo(self.relayed.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Records a commit point another node reported with an answer this node
    /// passes on to a client.
    pub fn note_relayed(&self, seqno: SeqNo) {
        self.relayed
            .fetch_max(seqno.0, std::sync::atomic::Ordering::AcqRel);
    }

    /// Whether `peer` is a node of this service (certificate endorsed by the service key).
    pub fn is_node(&self, peer: &PeerCert) -> bool {
        let Some(p) = peer.0.as_ref() else {
            return false;
        };
        let known = |s: &std::sync::Mutex<std::collections::HashSet<covenant_types::Digest32>>| {
            s.lock().unwrap_or_else(|e| e.into_inner()).contains(&p.1)
        };
        // A retired node keeps its endorsed certificate but takes no further part.
        // (Only the status is decoded: this runs for every consensus request.)
        #[derive(serde::Deserialize)]
        struct Status {
            status: NodeStatus,
        }
        let retired = || {
            self.peers
                .store
                .get(NODES_INFO, p.0.node_id().as_bytes())
                .and_then(|v| serde_json::from_slice::<Status>(&v).ok())
                .is_some_and(|i| i.status == NodeStatus::Retired)
        };
        if known(&self.endorsed) {
            return !retired();
        }
        if p.0.verify_signed_by(&self.service_cert).is_err() || retired() {
            return false;
        }
        let mut set = self.endorsed.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: a network has a handful of nodes; never grow without limit.
        if set.len() < 1024 {
            set.insert(p.1);
        }
        true
    }
}

/// Sends Raft messages to peers: one queue and one keep-alive connection per peer
/// (started the first time a message goes there, so nodes that join later are
/// reached too), messages batched while a request is in flight. Losing messages is
/// fine (Raft retries); blocking the Raft thread is not, so `send` never waits.
pub struct HttpTransport {
    peers: Arc<PeerBook>,
    runtime: tokio::runtime::Handle,
    queues: std::sync::Mutex<BTreeMap<u64, mpsc::UnboundedSender<Vec<u8>>>>,
}

impl HttpTransport {
    /// Peer tasks run on the current tokio runtime.
    pub fn start(peers: Arc<PeerBook>) -> Arc<HttpTransport> {
        Arc::new(HttpTransport {
            peers,
            runtime: tokio::runtime::Handle::current(),
            queues: Default::default(),
        })
    }
}

impl Transport for HttpTransport {
    fn send(&self, to: u64, message: Vec<u8>) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = queues.get(&to) {
            if q.send(message).is_ok() {
                return;
            }
            queues.remove(&to);
            return;
        }
        // Unknown address: drop (Raft resends once the node's row is replicated).
        let Some(client) = self.peers.client(to) else {
            return;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(message);
        let sender = self.peers.sender_header();
        self.runtime.spawn(peer_loop(to, client, sender, rx));
        queues.insert(to, tx);
    }
}

/// How long a node waits for a TCP and TLS connection to another node: peers are
/// on a LAN, so a slower answer means the link or the node is down.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one batch of Raft messages may take to be accepted by a peer. Longer
/// means the peer is cut off or paused: the batch is dropped (Raft resends what
/// still matters) rather than holding back every later message.
const RAFT_SEND_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) async fn connect_peer(client: &LedgerClient) -> Result<Connection, String> {
    match tokio::time::timeout(PEER_CONNECT_TIMEOUT, client.connect()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no connection within {} ms",
            PEER_CONNECT_TIMEOUT.as_millis()
        )),
    }
}

async fn peer_loop(
    id: u64,
    client: LedgerClient,
    sender: (String, String),
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let sender = [sender];
    let mut conn: Option<Connection> = None;
    let mut failing = false;
    while let Some(first) = rx.recv().await {
        let mut body = Vec::new();
        push_frame(&mut body, &first);
        while body.len() < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(m) => push_frame(&mut body, &m),
                Err(_) => break,
            }
        }
        if conn.is_none() {
            match connect_peer(&client).await {
                Ok(c) => {
                    if failing {
                        tracing::info!(peer = id, "reconnected to peer");
                    }
                    failing = false;
                    conn = Some(c);
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(peer = id, error = %e, "cannot reach peer");
                    }
                    failing = true;
                    // Drop this batch and what queued meanwhile (Raft resends what
                    // still matters) and do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    while rx.try_recv().is_ok() {}
                    continue;
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            let r = tokio::time::timeout(
                RAFT_SEND_TIMEOUT,
                c.request_with_headers(
                    "POST",
                    RAFT_PATH,
                    Some(body),
                    "application/octet-stream",
                    &sender,
                ),
            )
            .await;
            match r {
                Ok(Ok(resp)) if resp.status == 200 => {}
                Ok(Ok(resp)) => {
                    tracing::warn!(
                        peer = id,
                        status = resp.status,
                        "peer refused raft messages"
                    );
                    conn = None;
                }
                Ok(Err(_)) => conn = None,
                Err(_) => {
                    if !failing {
                        tracing::warn!(peer = id, "peer did not take raft messages in time");
                    }
                    failing = true;
                    conn = None;
                    while rx.try_recv().is_ok() {}
                }
            }
        }
    }
}

pub(crate) fn push_frame(out: &mut Vec<u8>, m: &[u8]) {
    out.extend_from_slice(&(m.len() as u32).to_le_bytes());
    out.extend_from_slice(m);
}

/// Splits a body of length-prefixed frames; `None` if it is malformed.
pub(crate) fn split_frames(mut body: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let len = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
        let frame = body.get(4..4 + len)?;
        out.push(frame.to_vec());
        body = &body[4 + len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_malformed_bodies_are_refused() {
        let mut body = Vec::new();
        push_frame(&mut body, b"one");
        push_frame(&mut body, b"");
        push_frame(&mut body, &[7; 300]);
        let frames = split_frames(&body).unwrap();
        assert_eq!(frames, vec![b"one".to_vec(), Vec::new(), vec![7; 300]]);
        for cut in 1..body.len() {
            if let Some(f) = split_frames(&body[..cut]) {
                // Only cuts at frame boundaries parse.
                assert!(f.len() < 3);
            }
        }
        assert!(split_frames(&[9, 0, 0, 0, 1]).is_none());
    }
}
