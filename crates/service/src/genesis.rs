//! A new service's first transactions, written once: by `covenant dev` and a single
//! node directly into the engine, by a network's first primary through consensus.

use covenant_crypto::Certificate;
use covenant_engine::{Engine, EngineError};
use serde::{Deserialize, Serialize};

use crate::tables::{
    CONSTITUTION, CONSTITUTION_KEY, MEMBERSHIP_KEY, MEMBERSHIP_MAP, MEMBERS_CERTS,
    MEMBERS_ENCRYPTION_KEYS, MEMBERS_INFO, NODES_CODE_IDS, SERVICE_CONFIG, SERVICE_CONFIG_KEY,
    SERVICE_INFO, SERVICE_INFO_KEY, USERS_CERTS, USERS_INFO,
};
use crate::users::{roles_or_default, Role, UserId};

/// How joining nodes are admitted under the default constitution, recorded as the
/// service's `join_policy` at genesis (governance changes it with `set_join_policy`;
/// the constitution's `join_policy` export decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinPolicy {
    /// Trust at once a node whose evidence verifies (key bound, code trusted) and
    /// that presents the service's join token; others wait as Pending.
    #[default]
    Auto,
    /// Record it as Pending; a member trusts it later.
    Pending,
}

/// Everything a new service starts with.
#[derive(Debug, Clone, Default)]
pub struct Genesis {
    /// Certificate users with their ACL roles (none named: Reader).
    pub users: Vec<(Certificate, Vec<Role>)>,
    /// Members, with their encryption public key (PEM) when they hold recovery shares.
    pub members: Vec<(Certificate, Option<String>)>,
    /// The constitution script.
    pub constitution: String,
    pub join_policy: JoinPolicy,
    /// SHA-256 (hex) of the join token that lets a node be trusted without a proposal.
    pub join_token_sha256: Option<String>,
    /// A network's trusted code id (the founding binary's measurement).
    pub code_id: Option<String>,
    /// A network's founding voters (Raft ids): the first configuration.
    pub voters: Vec<u64>,
}

impl Genesis {
    /// Writes the genesis transactions. With members the service starts Opening
    /// (users are refused until the consortium opens it); without, there is no one
    /// to open it, so it starts open.
    pub fn write(&self, engine: &mut Engine) -> Result<(), EngineError> {
        for (cert, roles) in &self.users {
            add_cert_user(engine, cert, roles)?;
        }
        for (member, enc) in &self.members {
            add_member(engine, member, enc.as_deref())?;
        }
        set_constitution(engine, &self.constitution)?;
        set_service_config(engine, self.join_policy, self.join_token_sha256.as_deref())?;
        if !self.members.is_empty() {
            set_service_opening(engine)?;
        }
        if let Some(code) = &self.code_id {
            add_node_code(engine, code)?;
        }
        if !self.voters.is_empty() {
            let mut tx = engine.begin();
            let membership =
                covenant_consensus::Membership::with_voters(self.voters.iter().copied());
            tx.put(MEMBERSHIP_MAP, MEMBERSHIP_KEY, &membership.encode());
            engine.commit_tx(tx, None)?;
        }
        Ok(())
    }

    /// Whether `engine` holds a service already (its genesis was written).
    pub fn written(store: &covenant_kv::Store) -> bool {
        store.get(CONSTITUTION, CONSTITUTION_KEY).is_some()
    }
}

/// Records a consortium member (state Accepted until it acks, SPEC §5) in one transaction.
pub fn add_member(
    engine: &mut Engine,
    cert: &Certificate,
    encryption_pub_key: Option<&str>,
) -> Result<covenant_types::MemberId, EngineError> {
    let id = cert.member_id();
    let info = serde_json::json!({"status": "Accepted", "member_data": null});
    let mut tx = engine.begin();
    tx.put(MEMBERS_CERTS, id.as_bytes(), cert.to_pem().as_bytes());
    tx.put(MEMBERS_INFO, id.as_bytes(), info.to_string().as_bytes());
    if let Some(pem) = encryption_pub_key {
        tx.put(MEMBERS_ENCRYPTION_KEYS, id.as_bytes(), pem.as_bytes());
    }
    engine.commit_tx(tx, None)?;
    Ok(covenant_types::MemberId::new(id))
}

/// Records the service as Opening: users are refused (503 `ServiceNotOpen`) until
/// the consortium accepts `transition_service_to_open`.
pub fn set_service_opening(engine: &mut Engine) -> Result<(), EngineError> {
    let mut tx = engine.begin();
    let info = serde_json::json!({ "status": covenant_governance::ServiceStatus::Opening });
    tx.put(SERVICE_INFO, SERVICE_INFO_KEY, info.to_string().as_bytes());
    engine.commit_tx(tx, None)?;
    Ok(())
}

/// Records the configuration a new service starts with: its join policy and, when
/// the operator made one, the SHA-256 of the join token.
pub fn set_service_config(
    engine: &mut Engine,
    join_policy: JoinPolicy,
    join_token_sha256: Option<&str>,
) -> Result<(), EngineError> {
    let mut config = serde_json::json!({ "join_policy": join_policy });
    if let Some(d) = join_token_sha256 {
        config["join_token_sha256"] = serde_json::Value::String(d.to_string());
    }
    let mut tx = engine.begin();
    tx.put(
        SERVICE_CONFIG,
        SERVICE_CONFIG_KEY,
        config.to_string().as_bytes(),
    );
    engine.commit_tx(tx, None)?;
    Ok(())
}

/// Sets the constitution script.
pub fn set_constitution(engine: &mut Engine, script: &str) -> Result<(), EngineError> {
    let mut tx = engine.begin();
    tx.put(CONSTITUTION, CONSTITUTION_KEY, script.as_bytes());
    engine.commit_tx(tx, None)?;
    Ok(())
}

/// Adds a certificate user with `roles` (none: Reader) in one transaction, keyed
/// as CCF keys users.
pub fn add_cert_user(
    engine: &mut Engine,
    cert: &Certificate,
    roles: &[Role],
) -> Result<UserId, EngineError> {
    let user = UserId::Certificate(covenant_crypto::sha256(cert.der()));
    let id = user.ccf();
    let info = serde_json::json!({"user_data": {"assignedRoles": roles_or_default(roles)}});
    let mut tx = engine.begin();
    tx.put(USERS_CERTS, id.as_bytes(), cert.to_pem().as_bytes());
    tx.put(USERS_INFO, id.as_bytes(), info.to_string().as_bytes());
    engine.commit_tx(tx, None)?;
    Ok(user)
}

/// Trusts a code id (binary measurement, hex) for joining nodes.
pub fn add_node_code(engine: &mut Engine, measurement: &str) -> Result<(), EngineError> {
    let mut tx = engine.begin();
    tx.put(NODES_CODE_IDS, measurement.as_bytes(), b"\"AllowedToJoin\"");
    engine.commit_tx(tx, None)?;
    Ok(())
}
