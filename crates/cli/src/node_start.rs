//! `covenant node start --config node.toml`: a node configured by file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use covenant_crypto::{read_pem_file, Certificate, ServiceIdentity, SubjectAltName};
use covenant_engine::{Engine, EngineConfig};
use serde::Deserialize;

use crate::{dev_ledger_type, load_node_files, serve_until_signal, LedgerType, Loaded, NodeFiles};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    data_dir: PathBuf,
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    #[serde(default = "default_ledger_type")]
    ledger_type: String,
    /// Default "covenant"; a node that joined takes the network's.
    #[serde(default)]
    ledger_id: Option<String>,
    #[serde(default = "default_sig_ms")]
    sig_ms_interval: u64,
    #[serde(default = "default_sig_tx")]
    sig_tx_interval: u64,
    #[serde(default = "default_body")]
    max_body_bytes: usize,
    #[serde(default)]
    san: Vec<String>,
    #[serde(default)]
    constitution: Option<PathBuf>,
    #[serde(default)]
    users: Vec<InitialUser>,
    #[serde(default)]
    members: Vec<InitialMember>,
    #[serde(default)]
    jwt_issuers: Vec<JwtIssuerFile>,
    #[serde(default)]
    http2: bool,
    /// A snapshot of the state every this many transactions (at the next signature).
    #[serde(default = "default_snapshot_tx")]
    snapshot_tx_interval: u64,
    /// Writes are refused (507) while the ledger's disk has less free than this.
    #[serde(default = "default_min_free_mb")]
    min_free_mb: u64,
    /// How this node, as primary, admits joining nodes: "auto" or "pending".
    #[serde(default)]
    join_policy: covenant_node::JoinPolicy,
    /// A file holding the join token; its SHA-256 is recorded at genesis.
    #[serde(default)]
    join_token_file: Option<PathBuf>,
    /// Connections at once, in total and per client IP address.
    #[serde(default)]
    max_connections: Option<usize>,
    #[serde(default)]
    max_connections_per_peer: Option<usize>,
    /// Keep the service key, the ledger secrets and the node's encryption key in
    /// 0600 files of data_dir (true), or in memory only (false, the default): a
    /// restarted node then gets them back by rejoining its network, and a network
    /// that lost every node comes back by disaster recovery.
    #[serde(default)]
    secrets_at_rest: bool,
    /// Directories of archived committed ledger chunks (CCF's
    /// `ledger.read_only_directories`), read as part of the ledger, never written.
    #[serde(default)]
    ledger_read_only_directories: Vec<PathBuf>,
    /// Where committed chunks older than `archive_retention_txs` are moved (e.g.
    /// cheaper storage); read back transparently. Absent: nothing is archived.
    #[serde(default)]
    ledger_archive_directory: Option<PathBuf>,
    /// A ledger chunk file closes at the first signature after it grows past this
    /// many bytes (CCF's `ledger.chunk_size`); only closed, committed chunks can
    /// be archived.
    #[serde(default = "default_chunk_bytes")]
    ledger_chunk_bytes: u64,
    /// Committed transactions kept in data_dir/ledger when archiving.
    #[serde(default = "default_archive_retention")]
    archive_retention_txs: u64,
    /// Present for a node of a replicated network.
    #[serde(default)]
    network: Option<NetworkFile>,
}

fn default_archive_retention() -> u64 {
    1_000_000
}

fn default_chunk_bytes() -> u64 {
    5 * 1024 * 1024
}

/// What `covenant node join` leaves in the data directory once the node was admitted:
/// its Raft id and the network it joined (`network.json`).
#[derive(Debug, serde::Serialize, Deserialize)]
pub(crate) struct JoinedNetwork {
    pub raft_id: u64,
    pub peers: Vec<covenant_node::join::PeerAddress>,
    /// The ledger id the network answers `/ledgerIdentity/{ledgerId}` for.
    #[serde(default)]
    pub ledger_id: Option<String>,
}

pub(crate) const JOINED_FILE: &str = "network.json";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    /// This node's Raft id (1, 2, ...).
    node_id: u64,
    /// Every voting node, this one included.
    peers: Vec<PeerFile>,
    /// Raft's clock in milliseconds (elections after 20 ticks without a primary).
    #[serde(default = "default_tick_ms")]
    tick_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerFile {
    id: u64,
    address: SocketAddr,
}

fn default_tick_ms() -> u64 {
    50
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InitialUser {
    cert: PathBuf,
    #[serde(default)]
    roles: Vec<covenant_node::Role>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InitialMember {
    cert: PathBuf,
    /// Its RSA encryption public key (PEM file): a recovery member.
    #[serde(default)]
    encryption_pub_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtIssuerFile {
    issuer: String,
    #[serde(default)]
    jwks_file: Option<PathBuf>,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default)]
    jwks_ca: Option<PathBuf>,
    #[serde(default)]
    audience: Option<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8000))
}
fn default_ledger_type() -> String {
    "private".into()
}
fn default_sig_ms() -> u64 {
    covenant_service::defaults::SIG_MS_INTERVAL
}
fn default_sig_tx() -> u64 {
    covenant_service::defaults::SIG_TX_INTERVAL
}
fn default_body() -> usize {
    covenant_service::defaults::MAX_BODY_BYTES
}
fn default_min_free_mb() -> u64 {
    covenant_engine::DEFAULT_MIN_FREE_BYTES / (1024 * 1024)
}

fn default_snapshot_tx() -> u64 {
    10_000
}

/// How `node start` opens a node's ledger: what its configuration file decides.
pub(crate) struct LedgerSettings {
    pub sig_tx_interval: u64,
    pub snapshot_tx_interval: u64,
    pub min_free_mb: u64,
    /// A node of a replicated network (only consensus commits).
    pub networked: bool,
    /// Ledger secrets kept in `DATA_DIR/ledger_secret.key`.
    pub at_rest: bool,
}

impl LedgerSettings {
    /// A single node with secrets at rest and a configuration file's defaults.
    pub(crate) fn single_node() -> LedgerSettings {
        LedgerSettings {
            sig_tx_interval: default_sig_tx(),
            snapshot_tx_interval: default_snapshot_tx(),
            min_free_mb: default_min_free_mb(),
            networked: false,
            at_rest: true,
        }
    }

    /// The engine configuration of the node in `dir` (ledger in `dir/ledger`,
    /// snapshots in `dir/snapshots`).
    pub(crate) fn engine_config(&self, dir: &Path, service_cert: &Certificate) -> EngineConfig {
        let mut ec = EngineConfig::new(dir.join("ledger"));
        ec.sig_tx_interval = self.sig_tx_interval.max(1);
        ec.commit_on_sync = !self.networked;
        ec.snapshot_dir = Some(dir.join("snapshots"));
        ec.snapshot_tx_interval = self.snapshot_tx_interval.max(1);
        ec.min_free_bytes = self.min_free_mb.saturating_mul(1024 * 1024);
        ec.service_cert = Some(service_cert.clone());
        ec.secrets_file = self.at_rest.then(|| dir.join(crate::LEDGER_SECRETS_FILE));
        ec
    }
}

fn read_config(config_path: &Path) -> Result<NodeFile> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", config_path.display()))
}

fn resolve(config_path: &Path, p: &Path) -> PathBuf {
    let base = config_path.parent().unwrap_or_else(|| Path::new("."));
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

pub fn start(config_path: &Path) -> Result<()> {
    let paused = run(config_path, None, None)?;
    catch_up_and_run(config_path, paused)
}

/// While the node stops replicating because its primary's ledger starts after
/// its own: installs a snapshot from the network in place of its ledger, and
/// runs again from it, with the identities and secrets it held (so that this
/// needs no primary: the network may have none until this node is back). No
/// operator, same data directory.
fn catch_up_and_run(config_path: &Path, mut paused: Option<Paused>) -> Result<()> {
    // Each round that finds no snapshot waits longer before starting again (the
    // primary points again at once), from 1 s up to a minute.
    let mut backoff = std::time::Duration::from_secs(1);
    while let Some(p) = paused {
        let (files, installed) = install_from_network(config_path, &p.need, &p.peers, p.files)?;
        if installed {
            backoff = std::time::Duration::from_secs(1);
        } else {
            println!("trying again in {} s", backoff.as_secs());
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(std::time::Duration::from_secs(60));
        }
        paused = run(config_path, None, Some(files))?;
    }
    Ok(())
}

/// A node that stopped to install a snapshot, with what it starts again with.
struct Paused {
    need: covenant_node::SnapshotNeeded,
    peers: Vec<String>,
    files: NodeFiles,
}

/// Fetches a snapshot at least as new as `need` names, from `peers` (the
/// primary's first), verifies it as a joining node does (signed root,
/// endorsed signer, the ledger secret of its time), then moves this node's ledger
/// and archive aside (`<data_dir>/replaced/`, kept for the operator) and drops
/// its collection index, so the next start begins at the snapshot. Also says
/// whether a snapshot was installed.
fn install_from_network(
    config_path: &Path,
    need: &covenant_node::SnapshotNeeded,
    peers: &[String],
    mut files: NodeFiles,
) -> Result<(NodeFiles, bool)> {
    let file = read_config(config_path)?;
    let dir = resolve(config_path, &file.data_dir);
    if !file.ledger_read_only_directories.is_empty() {
        bail!(
            "the primary's ledger starts at seqno {} or later, after this node's: it needs a \
             snapshot, but its ledger_read_only_directories hold chunks of the ledger it would \
             replace. Remove them from the configuration (keep the files), and start the node again",
            need.seqno.0 + 1
        );
    }
    println!(
        "the primary's ledger starts after this node's (its snapshot is at seqno {}): installing a snapshot from the network",
        need.seqno
    );
    let runtime = crate::node_runtime()?;
    let snapshots = dir.join("snapshots");
    let mut installed = None;
    let mut asked_for_secrets = false;
    for peer in peers {
        let url = format!("https://{peer}");
        let fetched = runtime.block_on(fetch_snapshot(&url, &files.service.cert, &files.node));
        let bytes = match fetched {
            Ok(b) => b,
            Err(e) => {
                println!("no snapshot from {url}: {e:#}");
                continue;
            }
        };
        let install = |secrets: &covenant_crypto::LedgerSecrets| {
            covenant_engine::install_snapshot(&snapshots, &bytes, &files.service.cert, secrets)
        };
        let mut verified = install(&files.secrets);
        if verified.is_err() && !asked_for_secrets {
            // Sealed under the secret of a rekey this node never saw: the network
            // hands the whole chain to a trusted node (this needs a primary).
            asked_for_secrets = true;
            let joined = read_joined(&dir)?;
            let current = rejoin(
                &file,
                &dir,
                joined.as_ref(),
                files.service.cert.clone(),
                same_node(&files.node)?,
                files.encryption_key.clone(),
                "the snapshot is sealed under a ledger secret newer than this node's",
            )?;
            verified = install(&current.secrets);
            files.secrets = current.secrets;
        }
        match verified {
            Ok(txid) if txid.seqno >= need.seqno => {
                println!(
                    "received a snapshot at {txid} ({} bytes) from {url}",
                    bytes.len()
                );
                installed = Some(txid);
                break;
            }
            Ok(txid) => println!("{url} has only an older snapshot ({txid}); asking another node"),
            Err(e) => println!("the snapshot from {url} does not verify: {e}"),
        }
    }
    drop(runtime);
    let Some(txid) = installed else {
        println!("no node handed over a snapshot yet: starting as before (the primary asks again)");
        return Ok((files, false));
    };
    let aside = dir
        .join("replaced")
        .join(format!("before-snapshot-{}", txid.seqno));
    std::fs::create_dir_all(&aside).with_context(|| format!("creating {}", aside.display()))?;
    let archive = file.ledger_archive_directory.as_deref().map(|a| {
        // The archive may be on another file system: it is renamed where it is.
        let a = resolve(config_path, a);
        let name = format!(
            "{}.before-snapshot-{}",
            a.file_name().and_then(|n| n.to_str()).unwrap_or("archive"),
            txid.seqno
        );
        let to = a.with_file_name(name);
        (a, to)
    });
    for (from, to) in std::iter::once((dir.join("ledger"), aside.join("ledger"))).chain(archive) {
        if from.exists() {
            std::fs::rename(&from, &to)
                .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
            println!("moved {} to {}", from.display(), to.display());
        }
    }
    if let Some(index_dir) = dir.join(crate::INDEX_FILE).parent().filter(|d| d.exists()) {
        std::fs::remove_dir_all(index_dir)
            .with_context(|| format!("removing {}", index_dir.display()))?;
    }
    if file.secrets_at_rest {
        covenant_crypto::write_private_file(
            &dir.join(crate::LEDGER_SECRETS_FILE),
            files.secrets.to_text().as_bytes(),
        )?;
    }
    Ok((files, true))
}

/// Another handle on the node's identity (key and endorsed certificate).
fn same_node(node: &covenant_crypto::NodeIdentity) -> Result<covenant_crypto::NodeIdentity> {
    Ok(covenant_crypto::NodeIdentity::from_parts(
        covenant_crypto::SigningKeyPair::from_pem(&node.key.to_pem())?,
        node.cert.clone(),
    )?)
}

/// `covenant node recover --config node.toml --previous-service-cert old.pem`:
/// disaster recovery of a service that lost every node, from this node's ledger
/// (see docs/OPERATIONS.md).
pub fn recover(config_path: &Path, previous_service_cert: &Path) -> Result<()> {
    let paused = run(config_path, Some(previous_service_cert), None)?;
    catch_up_and_run(config_path, paused)
}

/// Prepares a recovery in `dir`: the old ledger audits against `previous`; the old
/// identities, secrets and consensus state move to `dir/before-recovery/`.
fn prepare_recovery(dir: &Path, archived: &[PathBuf], previous: &Certificate) -> Result<()> {
    let ledger = dir.join("ledger");
    if !ledger.is_dir() {
        bail!("{} holds no ledger to recover", ledger.display());
    }
    println!(
        "auditing {} against the previous service certificate",
        ledger.display()
    );
    let report = covenant_engine::audit_archived_ledger(&ledger, archived, None, previous, |_, _| {})
        .map_err(|e| {
        anyhow::anyhow!(
            "the ledger does not verify against the previous service certificate, nothing was changed: {e}"
        )
    })?;
    println!(
        "the ledger verifies: {} transactions, {} signatures",
        report.entries, report.signatures
    );
    let aside = dir.join("before-recovery");
    if aside.exists() {
        bail!(
            "{} exists: a recovery was already started here. A recovery that did not finish starts again from a copy of the original data directory",
            aside.display()
        );
    }
    std::fs::create_dir_all(&aside)?;
    for name in [
        "service_cert.pem",
        "service_key.pem",
        crate::LEDGER_SECRETS_FILE,
        "node",
        "snapshots",
        "raft_state.json",
        "commit_mark",
        JOINED_FILE,
    ] {
        let from = dir.join(name);
        if from.exists() {
            std::fs::rename(&from, aside.join(name))
                .with_context(|| format!("moving {} aside", from.display()))?;
        }
    }
    Ok(())
}

/// Runs the node until it stops, or pauses to install a snapshot. `preloaded`:
/// the identities and secrets of a node starting again after such a pause.
fn run(
    config_path: &Path,
    recovering: Option<&Path>,
    preloaded: Option<NodeFiles>,
) -> Result<Option<Paused>> {
    let file = read_config(config_path)?;
    let at = |p: &Path| resolve(config_path, p);
    let requested = match file.ledger_type.as_str() {
        "private" | "Private" => LedgerType::Private,
        "public" | "Public" => LedgerType::Public,
        other => bail!("ledger_type must be \"private\" or \"public\", not {other:?}"),
    };
    let dir = at(&file.data_dir);
    let read_only: Vec<PathBuf> = file
        .ledger_read_only_directories
        .iter()
        .map(|p| at(p))
        .collect();
    let archive_dir = file.ledger_archive_directory.as_deref().map(at);
    let archived: Vec<PathBuf> = read_only
        .iter()
        .cloned()
        .chain(archive_dir.clone().filter(|a| a.exists()))
        .collect();
    let previous = match recovering {
        Some(p) => {
            let cert = Certificate::from_pem(&read_pem_file(p)?)
                .with_context(|| format!("previous service certificate {}", p.display()))?;
            prepare_recovery(&dir, &archived, &cert)?;
            Some(cert)
        }
        None => None,
    };
    let joined = read_joined(&dir)?;
    let ledger_id = file
        .ledger_id
        .clone()
        .or_else(|| joined.as_ref().and_then(|j| j.ledger_id.clone()))
        .unwrap_or_else(|| "covenant".into());
    if !covenant_node::identity::valid_ledger_id(&ledger_id) {
        bail!("ledger_id must be 1..64 letters, digits, '-' or '_'");
    }
    let mut sans = SubjectAltName::dev_defaults();
    sans.extend(file.san.iter().map(|s| SubjectAltName::parse(s)));
    let creating = !dir.join("service_cert.pem").exists() && previous.is_none();
    // Read everything the first start needs before creating anything.
    let users: Vec<(Certificate, Vec<covenant_node::Role>)> = file
        .users
        .iter()
        .map(|u| {
            let cert = Certificate::from_pem(&read_pem_file(&at(&u.cert))?)
                .with_context(|| format!("user certificate {}", u.cert.display()))?;
            Ok((cert, u.roles.clone()))
        })
        .collect::<Result<_>>()?;
    let members: Vec<(Certificate, Option<String>)> = file
        .members
        .iter()
        .map(|m| {
            let cert = Certificate::from_pem(&read_pem_file(&at(&m.cert))?)
                .with_context(|| format!("member certificate {}", m.cert.display()))?;
            let enc = m
                .encryption_pub_key
                .as_ref()
                .map(|p| {
                    read_pem_file(&at(p))
                        .with_context(|| format!("member encryption key {}", p.display()))
                })
                .transpose()?;
            Ok((cert, enc))
        })
        .collect::<Result<_>>()?;
    let constitution = match &file.constitution {
        Some(p) => {
            std::fs::read_to_string(at(p)).with_context(|| format!("reading {}", p.display()))?
        }
        None => covenant_node::DEFAULT_CONSTITUTION.to_string(),
    };
    let mut jwt = covenant_node::jwt::JwtAuth::default();
    for j in &file.jwt_issuers {
        let source = match (&j.jwks_file, &j.jwks_url) {
            (Some(f), None) => crate::JwksSource::File(at(f)),
            (None, Some(u)) => crate::JwksSource::Url(u.clone(), j.jwks_ca.as_deref().map(&at)),
            _ => bail!(
                "jwt issuer {}: give exactly one of jwks_file and jwks_url",
                j.issuer
            ),
        };
        let doc = crate::load_jwks(&source)?;
        jwt.issuers.push(
            covenant_node::jwt::JwtIssuer::from_jwks(&j.issuer, j.audience.clone(), &doc)
                .map_err(|e| anyhow::anyhow!("the JWKS of {}: {e}", j.issuer))?,
        );
    }

    if creating && joined.is_none() && file.network.is_some() && previous.is_none() {
        bail!(
            "{} holds no node identity: a node of a network is prepared by `covenant dev --nodes N` \
             or joins one with `covenant node join --target <url> --config {}`",
            dir.display(),
            config_path.display()
        );
    }
    let at_rest = file.secrets_at_rest;
    let NodeFiles {
        service,
        node,
        secrets,
        encryption_key,
    } = match preloaded {
        Some(files) => files,
        None => match load_node_files(&dir, &sans, at_rest)? {
            Loaded::Full(files) => files,
            Loaded::NeedsSecrets {
                service_cert,
                node,
                encryption_key,
            } => rejoin(
                &file,
                &dir,
                joined.as_ref(),
                service_cert,
                node,
                encryption_key,
                "this node keeps no secrets at rest",
            )?,
        },
    };
    let own_encryption_key = encryption_key.clone();
    let ledger_type = dev_ledger_type(&dir, requested, creating)?;
    let networked = file.network.is_some() || joined.is_some() || previous.is_some();
    let mut ec = LedgerSettings {
        sig_tx_interval: file.sig_tx_interval,
        snapshot_tx_interval: file.snapshot_tx_interval,
        min_free_mb: file.min_free_mb,
        networked,
        at_rest,
    }
    .engine_config(&dir, &service.cert);
    ec.chunk_threshold_bytes = file.ledger_chunk_bytes.max(1);
    ec.read_only_dirs = read_only;
    ec.archive_dir = archive_dir;
    let node = Arc::new(node);
    let (mut engine, joined) = match &previous {
        None => (
            Engine::open_with_key(ec, node.clone(), secrets, Some(encryption_key))
                .context("opening the ledger")?,
            joined,
        ),
        Some(previous) => {
            // The fresh secret the identities came with is not this ledger's: the
            // recovered chain replaces the file once the shares are in.
            drop(secrets);
            let _ = std::fs::remove_file(dir.join(crate::LEDGER_SECRETS_FILE));
            println!("replaying the public part of the ledger");
            let mut engine =
                Engine::open_for_recovery(ec, node.clone(), Some(encryption_key.clone()))
                    .context("opening the ledger for a recovery")?;
            let mut row =
                covenant_service::NodeInfo::trusted(0, file.listen.to_string(), node.cert.to_pem());
            row.encryption_pub_key = Some(encryption_key.public_key_pem()?);
            let raft_id = covenant_service::disaster::begin(
                &mut engine,
                &service,
                previous,
                &node.node_id,
                row,
            )
            .context("starting the recovery")?;
            let joined = JoinedNetwork {
                raft_id,
                peers: vec![covenant_node::join::PeerAddress {
                    raft_id,
                    address: file.listen.to_string(),
                }],
                ledger_id: Some(ledger_id.clone()),
            };
            std::fs::write(dir.join(JOINED_FILE), serde_json::to_vec_pretty(&joined)?)?;
            println!(
                "the service is Recovering under a new identity ({}): members propose transition_service_to_open with the previous and next service identities, then the recovery members submit their shares",
                dir.join("service_cert.pem").display()
            );
            (engine, Some(joined))
        }
    };
    let (node_id, peers, tick_ms) = match (&file.network, &joined) {
        (_, Some(j)) => {
            let mut peers = std::collections::BTreeMap::new();
            for p in &j.peers {
                let a: SocketAddr = p
                    .address
                    .parse()
                    .with_context(|| format!("{}: peer address {:?}", JOINED_FILE, p.address))?;
                peers.insert(p.raft_id, a);
            }
            (j.raft_id, peers, default_tick_ms())
        }
        (Some(n), _) => {
            let peers: std::collections::BTreeMap<u64, SocketAddr> =
                n.peers.iter().map(|p| (p.id, p.address)).collect();
            if n.node_id == 0 || !peers.contains_key(&n.node_id) || peers.len() != n.peers.len() {
                bail!(
                    "[network]: node_id must be non-zero and listed once in peers, with unique ids"
                );
            }
            (n.node_id, peers, n.tick_ms)
        }
        (None, None) => (0, Default::default(), 0),
    };
    let network = networked.then(|| {
        let mut nc = covenant_node::peers::NetworkConfig::new(node_id, peers, dir.clone());
        nc.address = match &file.network {
            Some(_) if joined.is_none() => nc.address,
            _ => file.listen,
        };
        nc.tick = std::time::Duration::from_millis(tick_ms.max(1));
        nc.service = Some(Arc::new(ServiceIdentity::from_parts(
            covenant_crypto::SigningKeyPair::from_pem(&service.key.to_pem())?,
            service.cert.clone(),
        )?));
        Ok::<_, covenant_crypto::CryptoError>(nc)
    });
    let network = network.transpose()?;
    let join_token_sha256 = match &file.join_token_file {
        Some(f) => {
            let path = resolve(config_path, f);
            let token = std::fs::read_to_string(&path)
                .with_context(|| format!("reading the join token {}", path.display()))?;
            if token.trim().len() < 32 {
                bail!(
                    "{}: a join token must be at least 32 characters of secret",
                    path.display()
                );
            }
            Some(covenant_node::join::join_token_digest(&token))
        }
        None => None,
    };
    // One genesis, written here into a new single node's engine, or by a new
    // network's first primary through consensus.
    let genesis = covenant_node::Genesis {
        users: users.clone(),
        members: members.clone(),
        constitution: constitution.clone(),
        join_policy: file.join_policy,
        join_token_sha256,
        ..Default::default()
    };
    if creating && network.is_none() {
        genesis.write(&mut engine)?;
        println!(
            "created a new {ledger_type:?} service in {} with {} user(s) and {} member(s)",
            dir.display(),
            users.len(),
            members.len()
        );
    }
    let mut nc = covenant_node::NodeConfig::new(file.listen);
    nc.sig_ms_interval = file.sig_ms_interval.max(1);
    nc.index_path = Some(dir.join(crate::INDEX_FILE));
    nc.index_progress = Some(crate::index_progress());
    nc.max_body_bytes = file.max_body_bytes;
    nc.ledger_public = ledger_type == LedgerType::Public;
    nc.ledger_id = ledger_id.clone();
    nc.jwt = jwt;
    nc.limits.http2 = file.http2;
    if let Some(n) = file.max_connections {
        nc.limits.max_connections = n.max(1);
    }
    if let Some(n) = file.max_connections_per_peer {
        nc.limits.max_connections_per_peer = n.max(1);
    }
    if file.network.is_some() && joined.is_none() {
        // A new network's first primary writes it; a node that joined never does.
        nc.genesis = Some(genesis);
    }
    nc.network = network;
    if file.ledger_archive_directory.is_some() {
        nc.archive_retention_txs = Some(file.archive_retention_txs);
    }
    let detail = format!(
        "(ledger {}, service cert {})",
        ledger_id,
        dir.join("service_cert.pem").display()
    );
    let paused = serve_until_signal(nc, engine, &node, &service, "covenant node", &detail, None)?;
    let Some(covenant_node::SnapshotPause {
        need,
        peers,
        secrets,
    }) = paused
    else {
        return Ok(None);
    };
    // The engine that held the node's identity is gone with the server.
    let node = Arc::try_unwrap(node).or_else(|shared| same_node(&shared))?;
    let files = NodeFiles {
        service,
        node,
        secrets,
        encryption_key: own_encryption_key,
    };
    Ok(Some(Paused { need, peers, files }))
}

/// A node that keeps no secrets at rest, restarting: it asks its network's nodes
/// (`POST /node/join` with its endorsed certificate, as a CCF node rejoins) for the
/// service key and the ledger secrets, and registers its new encryption key.
fn rejoin(
    file: &NodeFile,
    dir: &Path,
    joined: Option<&JoinedNetwork>,
    service_cert: Certificate,
    node: covenant_crypto::NodeIdentity,
    encryption_key: Arc<covenant_crypto::EncryptionKeyPair>,
    why: &str,
) -> Result<NodeFiles> {
    let (me, peers): (u64, Vec<String>) = match (joined, &file.network) {
        (Some(j), _) => (
            j.raft_id,
            j.peers
                .iter()
                .filter(|p| p.raft_id != j.raft_id)
                .map(|p| p.address.clone())
                .collect(),
        ),
        (None, Some(n)) => (
            n.node_id,
            n.peers
                .iter()
                .filter(|p| p.id != n.node_id)
                .map(|p| p.address.to_string())
                .collect(),
        ),
        (None, None) => (0, Vec::new()),
    };
    if peers.is_empty() {
        bail!(
            "{} keeps no secrets at rest (secrets_at_rest = false) and this node has no \
             network to get them back from: bring the service back with `covenant node \
             recover` (its recovery members' shares), or run it with secrets_at_rest = true",
            dir.display()
        );
    }
    println!(
        "{why}: asking the network ({}) for the ledger secrets",
        peers.join(", ")
    );
    let request = join_request(file, &node.cert, None, &encryption_key)?;
    let runtime = crate::node_runtime()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let info = runtime.block_on(async {
        loop {
            for peer in &peers {
                let url = format!("https://{peer}");
                let asked = tokio::time::timeout(
                    std::time::Duration::from_secs(3),
                    request_admission(
                        &url,
                        &service_cert,
                        &node.cert,
                        &node.key,
                        &request,
                        &node.node_id,
                    ),
                )
                .await;
                match asked {
                    Ok(Ok((info, raft_id, _))) if raft_id == me || me == 0 => return Ok(info),
                    Ok(Ok((_, raft_id, _))) => {
                        bail!("the network knows this node as Raft node {raft_id}, not {me}")
                    }
                    Ok(Err(e)) => tracing::warn!(%peer, error = %e, "rejoining failed"),
                    Err(_) => tracing::warn!(%peer, "rejoining timed out"),
                }
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "no node of the network handed this node its secrets: if every node is \
                     gone, bring the service back with `covenant node recover`"
                );
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    })?;
    let (service, secrets) = received_secrets(&info, &service_cert)?;
    Ok(NodeFiles {
        service,
        node,
        secrets,
        encryption_key,
    })
}

/// The service identity and ledger secrets a network handed this node, checked
/// against the service certificate it pinned.
fn received_secrets(
    info: &covenant_node::join::NetworkInfo,
    pinned: &Certificate,
) -> Result<(ServiceIdentity, covenant_crypto::LedgerSecrets)> {
    let service = ServiceIdentity::from_parts(
        covenant_crypto::SigningKeyPair::from_pem(&info.service_key)?,
        Certificate::from_pem(&info.service_cert)?,
    )
    .context("the service identity received")?;
    if service.cert.der() != pinned.der() {
        bail!("the network answered with another service certificate than the one pinned");
    }
    let secrets = covenant_crypto::LedgerSecrets::from_text(&info.ledger_secrets)
        .context("the ledger secrets received")?;
    Ok((service, secrets))
}

/// The `POST /node/join` body of a node with `cert`'s key: virtual evidence for it,
/// its address and names from `file`, and its encryption key.
fn join_request(
    file: &NodeFile,
    cert: &Certificate,
    join_token: Option<String>,
    encryption_key: &covenant_crypto::EncryptionKeyPair,
) -> Result<covenant_node::join::JoinRequest> {
    let quote = covenant_node::attestation::VirtualQuote::for_key(&cert.spki_der());
    Ok(covenant_node::join::JoinRequest {
        quote_info: covenant_node::join::QuoteInfo {
            format: covenant_node::attestation::VIRTUAL_FORMAT.into(),
            quote: base64::engine::general_purpose::STANDARD.encode(quote.raw()),
            endorsements: String::new(),
        },
        node_info_network: covenant_node::join::NodeInfoNetwork {
            rpc_address: file.listen.to_string(),
        },
        subject_alt_names: file.san.clone(),
        join_token,
        public_encryption_key: Some(encryption_key.public_key_pem()?),
    })
}

fn read_joined(dir: &Path) -> Result<Option<JoinedNetwork>> {
    let path = dir.join(JOINED_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `covenant node join --target URL --config node.toml`: asks the network at `target`
/// to admit this node, waits while it is Pending, receives the service identity, its
/// endorsed certificate and the ledger secret, installs a snapshot fetched from the
/// primary, then runs as a node of the network (like `node start`). Run again after
/// an interruption it resumes; once joined it just starts.
pub fn join(
    config_path: &Path,
    target: &str,
    service_cert: Option<&Path>,
    join_token: Option<&Path>,
) -> Result<()> {
    let file = read_config(config_path)?;
    if file.network.is_some() {
        bail!(
            "{}: a joining node has no [network] section (its Raft id and peers come from the network)",
            config_path.display()
        );
    }
    let dir = resolve(config_path, &file.data_dir);
    if read_joined(&dir)?.is_some() {
        println!("{} already joined a network; starting it", dir.display());
        return start(config_path);
    }
    if dir.join("ledger").exists() && std::fs::read_dir(dir.join("ledger"))?.next().is_some() {
        bail!(
            "{} already holds a ledger; a joining node starts from an empty data directory",
            dir.display()
        );
    }
    let pin = match service_cert {
        Some(p) => p.to_path_buf(),
        None if dir.join("service_cert.pem").exists() => dir.join("service_cert.pem"),
        None => bail!("give --service-cert: the service certificate (PEM) of the network to join"),
    };
    let service_cert = Certificate::from_pem(&read_pem_file(&pin)?)
        .with_context(|| format!("service certificate {}", pin.display()))?;
    let token_path = match join_token {
        Some(p) => Some(p.to_path_buf()),
        None => pin
            .parent()
            .map(|d| d.join("join_token"))
            .filter(|p| p.exists()),
    };
    let join_token = match &token_path {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading the join token {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    if join_token.is_none() {
        println!(
            "no join token given (--join-token): this node waits as Pending until members trust it"
        );
    }
    // The node's own key, kept across attempts so polling a Pending join works.
    let node_dir = dir.join("node");
    std::fs::create_dir_all(&node_dir)
        .with_context(|| format!("creating {}", node_dir.display()))?;
    let key_path = node_dir.join("node_key.pem");
    let candidate_path = node_dir.join("candidate_cert.pem");
    let (key, candidate) = if key_path.exists() && candidate_path.exists() {
        (
            covenant_crypto::SigningKeyPair::from_pem(&read_pem_file(&key_path)?)?,
            Certificate::from_pem(&read_pem_file(&candidate_path)?)?,
        )
    } else {
        let (k, c) = covenant_crypto::generate_client_identity(
            "covenant joining node",
            covenant_crypto::Curve::P384,
        )?;
        covenant_crypto::write_private_file(&key_path, k.to_pem().as_bytes())?;
        covenant_crypto::write_public_file(&candidate_path, c.to_pem().as_bytes())?;
        (k, c)
    };
    let encryption_key = crate::load_or_create_encryption_key(&node_dir, file.secrets_at_rest)?;
    let quote = covenant_node::attestation::VirtualQuote::for_key(&candidate.spki_der());
    let request = join_request(&file, &candidate, join_token, &encryption_key)?;
    let runtime = crate::node_runtime()?;
    let (info, raft_id, primary) = runtime.block_on(request_admission(
        target,
        &service_cert,
        &candidate,
        &key,
        &request,
        &quote.node_id,
    ))?;
    // Everything the node needs, written before the snapshot is fetched with the
    // endorsed certificate; `network.json` last marks the join complete.
    let (service, secrets) = received_secrets(&info, &service_cert)?;
    let node =
        covenant_crypto::NodeIdentity::from_parts(key, Certificate::from_pem(&info.node_cert)?)
            .context("the endorsed node certificate received")?;
    node.cert
        .verify_signed_by(&service.cert)
        .context("the node certificate received is not endorsed by the service")?;
    node.save(&node_dir)?;
    if file.secrets_at_rest {
        service.save(&dir)?;
        covenant_crypto::write_private_file(
            &dir.join(crate::LEDGER_SECRETS_FILE),
            secrets.to_text().as_bytes(),
        )?;
    } else {
        // Only the certificate: the node gets the rest from its network at start.
        covenant_crypto::write_public_file(
            &dir.join("service_cert.pem"),
            service.cert.to_pem().as_bytes(),
        )?;
    }
    std::fs::write(
        dir.join("ledger_type"),
        if info.ledger_public {
            "public"
        } else {
            "private"
        },
    )?;
    let snapshot = runtime.block_on(fetch_snapshot(&primary, &service.cert, &node))?;
    let txid = covenant_engine::install_snapshot(
        &dir.join("snapshots"),
        &snapshot,
        &service.cert,
        &secrets,
    )
    .context("the snapshot received does not verify")?;
    println!(
        "received a snapshot at {txid} ({} bytes); the node replicates the ledger after it",
        snapshot.len()
    );
    let joined = JoinedNetwork {
        raft_id,
        peers: info.peers.clone(),
        ledger_id: info.ledger_id.clone(),
    };
    std::fs::write(dir.join(JOINED_FILE), serde_json::to_vec_pretty(&joined)?)?;
    let _ = std::fs::remove_file(&candidate_path);
    drop(runtime);
    start(config_path)
}

/// Posts the join request until the node is trusted, following the backups'
/// redirects to the primary. Returns the network info, the Raft id and the
/// primary's URL.
async fn request_admission(
    target: &str,
    service_cert: &Certificate,
    candidate: &Certificate,
    key: &covenant_crypto::SigningKeyPair,
    request: &covenant_node::join::JoinRequest,
    node_id: &str,
) -> Result<(covenant_node::join::NetworkInfo, u64, String)> {
    let body = serde_json::to_value(request)?;
    let mut url = target.trim_end_matches('/').to_string();
    let mut said_pending = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let client =
            covenant_client::LedgerClient::new(&url, service_cert, Some((candidate, key)))?;
        let r = client
            .request("POST", covenant_node::http::JOIN_PATH, Some(&body))
            .await;
        let retry = |why: String| -> Result<()> {
            if std::time::Instant::now() > deadline {
                bail!("joining through {url} failed: {why}");
            }
            Ok(())
        };
        match r {
            Ok(resp) if resp.status == 200 => {
                let answer: covenant_node::join::JoinResponse =
                    serde_json::from_slice(&resp.body).context("the join answer is malformed")?;
                match (answer.network_info, answer.raft_id) {
                    (Some(info), Some(raft_id)) => {
                        println!("node {node_id} is Trusted as Raft node {raft_id} by {url}");
                        return Ok((info, raft_id, url));
                    }
                    _ => {
                        if !said_pending {
                            println!(
                                "node {node_id} is {}: waiting until a member trusts it (Ctrl-C to stop; running join again resumes)",
                                answer.node_status.as_str()
                            );
                            said_pending = true;
                        }
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
            Ok(resp) if resp.status == 307 => {
                let location = resp
                    .headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("location"))
                    .map(|(_, v)| v.clone())
                    .context("a redirect without a location")?;
                let base = location
                    .strip_suffix(covenant_node::http::JOIN_PATH)
                    .unwrap_or(&location)
                    .to_string();
                println!("{url} is a backup; asking the primary at {base}");
                url = base;
            }
            Ok(resp) if resp.status == 503 => {
                retry(String::from_utf8_lossy(&resp.body).into_owned())?;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Ok(resp) => bail!(
                "the network refused the join ({}): {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            ),
            Err(e) => {
                retry(e.to_string())?;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}

/// The primary's latest committed snapshot (it takes one at its next signature if
/// it has none yet).
async fn fetch_snapshot(
    url: &str,
    service_cert: &Certificate,
    node: &covenant_crypto::NodeIdentity,
) -> Result<Vec<u8>> {
    let client =
        covenant_client::LedgerClient::new(url, service_cert, Some((&node.cert, &node.key)))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut said = false;
    loop {
        match client
            .request_raw(
                "GET",
                covenant_node::http::SNAPSHOT_PATH,
                None,
                "application/octet-stream",
            )
            .await
        {
            Ok(r) if r.status == 200 => return Ok(r.body),
            Ok(r) if r.status == 503 => {
                if !said {
                    println!("waiting for the primary to commit a snapshot...");
                    said = true;
                }
            }
            Ok(r) => bail!(
                "fetching the snapshot failed ({}): {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "snapshot fetch failed; retrying");
            }
            Err(e) => return Err(e.into()),
        }
        if std::time::Instant::now() > deadline {
            bail!("no snapshot was committed by {url} within 60 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}
