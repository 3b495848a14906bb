//! `covenant node start --config node.toml`: a node configured by file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use covenant_crypto::{read_pem_file, Certificate, SubjectAltName};
use covenant_engine::{Engine, EngineConfig};
use serde::Deserialize;

use crate::{dev_ledger_type, load_or_create_identities, serve_until_signal, LedgerType};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    data_dir: PathBuf,
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    #[serde(default = "default_ledger_type")]
    ledger_type: String,
    #[serde(default = "default_ledger_id")]
    ledger_id: String,
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
    /// Present for a node of a replicated network.
    #[serde(default)]
    network: Option<NetworkFile>,
}

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
fn default_ledger_id() -> String {
    "covenant".into()
}
fn default_sig_ms() -> u64 {
    1000
}
fn default_sig_tx() -> u64 {
    5000
}
fn default_body() -> usize {
    1 << 20
}

pub fn start(config_path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let file: NodeFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", config_path.display()))?;
    let base = config_path.parent().unwrap_or_else(|| Path::new("."));
    let at = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let requested = match file.ledger_type.as_str() {
        "private" | "Private" => LedgerType::Private,
        "public" | "Public" => LedgerType::Public,
        other => bail!("ledger_type must be \"private\" or \"public\", not {other:?}"),
    };
    if !covenant_node::identity::valid_ledger_id(&file.ledger_id) {
        bail!("ledger_id must be 1..64 letters, digits, '-' or '_'");
    }
    let dir = at(&file.data_dir);
    let mut sans = SubjectAltName::dev_defaults();
    sans.extend(file.san.iter().map(|s| SubjectAltName::parse(s)));
    let creating = !dir.join("service_cert.pem").exists();
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
    let members: Vec<Certificate> = file
        .members
        .iter()
        .map(|m| {
            Certificate::from_pem(&read_pem_file(&at(&m.cert))?)
                .with_context(|| format!("member certificate {}", m.cert.display()))
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

    let (service, node, secret) = load_or_create_identities(&dir, &sans)?;
    let ledger_type = dev_ledger_type(&dir, requested, creating)?;
    let mut ec = EngineConfig::new(dir.join("ledger"));
    ec.sig_tx_interval = file.sig_tx_interval.max(1);
    ec.commit_on_sync = file.network.is_none();
    let node = Arc::new(node);
    let mut engine =
        Engine::open(ec, node.clone(), Arc::new(secret)).context("opening the ledger")?;
    let network = match &file.network {
        None => None,
        Some(n) => {
            let peers: std::collections::BTreeMap<u64, SocketAddr> =
                n.peers.iter().map(|p| (p.id, p.address)).collect();
            if n.node_id == 0 || !peers.contains_key(&n.node_id) || peers.len() != n.peers.len() {
                bail!(
                    "[network]: node_id must be non-zero and listed once in peers, with unique ids"
                );
            }
            Some(covenant_node::network::NetworkConfig {
                node_id: n.node_id,
                peers,
                state_dir: dir.clone(),
                tick: std::time::Duration::from_millis(n.tick_ms.max(1)),
            })
        }
    };
    let genesis_users: Vec<(Certificate, Vec<covenant_node::Role>)> = users
        .iter()
        .map(|(c, r)| {
            let roles = if r.is_empty() {
                vec![covenant_node::Role::Reader]
            } else {
                r.clone()
            };
            (c.clone(), roles)
        })
        .collect();
    let genesis_members = members.clone();
    let genesis_constitution = constitution.clone();
    let genesis = covenant_node::Genesis(Arc::new(move |e: &mut Engine| {
        for (cert, roles) in &genesis_users {
            covenant_node::add_cert_user(e, cert, roles)?;
        }
        for m in &genesis_members {
            covenant_node::add_member(e, m)?;
        }
        covenant_node::set_constitution(e, &genesis_constitution)
    }));
    if creating && network.is_none() {
        for (cert, roles) in &users {
            let roles = if roles.is_empty() {
                vec![covenant_node::Role::Reader]
            } else {
                roles.clone()
            };
            covenant_node::add_cert_user(&mut engine, cert, &roles)?;
        }
        for m in &members {
            covenant_node::add_member(&mut engine, m)?;
        }
        covenant_node::set_constitution(&mut engine, &constitution)?;
        println!(
            "created a new {ledger_type:?} service in {} with {} user(s) and {} member(s)",
            dir.display(),
            users.len(),
            members.len()
        );
    }
    let mut nc = covenant_node::NodeConfig::new(file.listen);
    nc.sig_ms_interval = file.sig_ms_interval.max(1);
    nc.max_body_bytes = file.max_body_bytes;
    nc.ledger_public = ledger_type == LedgerType::Public;
    nc.ledger_id = file.ledger_id.clone();
    nc.jwt = jwt;
    nc.limits.http2 = file.http2;
    if network.is_some() {
        nc.genesis = Some(genesis);
    }
    nc.network = network;
    let detail = format!(
        "(ledger {}, service cert {})",
        file.ledger_id,
        dir.join("service_cert.pem").display()
    );
    serve_until_signal(nc, engine, &node, &service, "covenant node", &detail)
}
