//! Ledger secrets over time (SPEC §7): what a rekey transaction writes, so every
//! node learns the new secret from the ledger itself, and so a recovery that
//! unwraps only the latest secret can walk back to the first.
//!
//! A rekey at seqno `s` starts a new secret for every transaction from `s + 1` on.
//! Its transaction (still sealed under the old secret) writes two public rows:
//! - [`ENCRYPTED_LEDGER_SECRETS`]: the new secret RSA-OAEP encrypted to each
//!   trusted node's encryption key, which a backup decrypts as it applies the
//!   entry, before the next one needs it;
//! - [`HISTORICAL_ENCRYPTED_LEDGER_SECRET`]: the previous secret sealed under the
//!   new one (see [`LedgerSecret::seal_previous`]).

use std::collections::BTreeMap;

use base64::Engine as _;
use covenant_crypto::{encrypt_to_public_key, EncryptionKeyPair, LedgerSecret, LedgerSecrets};
use covenant_kv::WriteSet;
use covenant_types::SeqNo;
use serde::{Deserialize, Serialize};

use crate::EngineError;

/// The new secret of a rekey, for each node that must read what follows.
pub const ENCRYPTED_LEDGER_SECRETS: &str = "public:ccf.internal.encrypted_ledger_secrets";
/// The secret a rekey replaced, sealed under its successor.
pub const HISTORICAL_ENCRYPTED_LEDGER_SECRET: &str =
    "public:ccf.internal.historical_encrypted_ledger_secret";
/// Each disaster recovery's endorsement of the identity it recovered: recovery
/// count (decimal text) → the previous service key certified by the new one (PEM).
/// A receipt of an earlier epoch carries the chain of them (`serviceEndorsements`),
/// and the audit trusts signers of earlier epochs through them.
pub const SERVICE_ENDORSEMENTS: &str = "public:ccf.internal.service_endorsements";
/// Both tables are singletons: each rekey overwrites the row, and the ledger keeps
/// every version.
pub const REKEY_KEY: &[u8] = b"0";

/// The row of [`ENCRYPTED_LEDGER_SECRETS`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncryptedLedgerSecrets {
    /// The seqno the new secret applies from (the rekey's seqno + 1).
    pub version: u64,
    /// Node id → base64 of the secret under the node's RSA-OAEP key.
    pub encrypted_ledger_secrets: BTreeMap<String, String>,
}

/// The row of [`HISTORICAL_ENCRYPTED_LEDGER_SECRET`] (CCF's field names).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoricalSecret {
    pub previous_ledger_secret: PreviousLedgerSecret,
    /// The version of the secret that seals it.
    pub next_version: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreviousLedgerSecret {
    /// Base64 of [`LedgerSecret::seal_previous`].
    pub encrypted_data: String,
    /// The seqno the previous secret applied from.
    pub version: u64,
}

/// A node a rekey hands the new secret to: its id and its encryption public key.
#[derive(Debug, Clone)]
pub struct SecretRecipient {
    pub node_id: String,
    pub encryption_pub_key: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn rekey_error(what: impl std::fmt::Display) -> EngineError {
    EngineError::Rekey(what.to_string())
}

/// The two rows of a rekey whose new secret applies from `version`.
pub(crate) fn rekey_rows(
    secrets: &LedgerSecrets,
    new: &LedgerSecret,
    version: SeqNo,
    recipients: &[SecretRecipient],
) -> Result<(Vec<u8>, Vec<u8>), EngineError> {
    if recipients.is_empty() {
        return Err(rekey_error("no node to hand the new secret to"));
    }
    let mut out = BTreeMap::new();
    for r in recipients {
        let sealed = encrypt_to_public_key(&r.encryption_pub_key, new.expose_bytes())
            .map_err(|e| rekey_error(format!("node {}'s encryption key: {e}", r.node_id)))?;
        out.insert(r.node_id.clone(), b64().encode(sealed));
    }
    let (previous_version, previous) = secrets.latest();
    let row = EncryptedLedgerSecrets {
        version: version.0,
        encrypted_ledger_secrets: out,
    };
    Ok((
        serde_json::to_vec(&row).map_err(rekey_error)?,
        historical_row((previous_version, previous), (version, new))?,
    ))
}

/// The [`HISTORICAL_ENCRYPTED_LEDGER_SECRET`] row linking `previous` to its
/// successor `next` (each with the seqno it applies from): a rekey's, or the one a
/// recovery writes between the recovered chain and the new service's secret.
pub(crate) fn historical_row(
    (previous_version, previous): (SeqNo, &LedgerSecret),
    (next_version, next): (SeqNo, &LedgerSecret),
) -> Result<Vec<u8>, EngineError> {
    let history = HistoricalSecret {
        previous_ledger_secret: PreviousLedgerSecret {
            encrypted_data: b64().encode(next.seal_previous(previous)?),
            version: previous_version.0,
        },
        next_version: next_version.0,
    };
    serde_json::to_vec(&history).map_err(rekey_error)
}

/// The rekey row a transaction wrote, if any.
pub(crate) fn rekey_in(ws: &WriteSet) -> Result<Option<EncryptedLedgerSecrets>, EngineError> {
    match ws.get(ENCRYPTED_LEDGER_SECRETS, REKEY_KEY) {
        Some(Some(v)) => serde_json::from_slice(v)
            .map(Some)
            .map_err(|e| rekey_error(format!("unreadable rekey row: {e}"))),
        _ => Ok(None),
    }
}

/// This node's copy of the secret in a rekey row.
pub(crate) fn open_for(
    row: &EncryptedLedgerSecrets,
    node_id: &str,
    key: Option<&EncryptionKeyPair>,
) -> Result<LedgerSecret, EngineError> {
    let mine = row.encrypted_ledger_secrets.get(node_id).ok_or_else(|| {
        rekey_error(format!(
            "the ledger secret from seqno {} was not given to this node ({node_id}): \
             it must join again to read what follows",
            row.version
        ))
    })?;
    let key = key.ok_or_else(|| {
        rekey_error(format!(
            "the ledger secret from seqno {} is sealed to this node's encryption key, \
             which this process does not hold",
            row.version
        ))
    })?;
    let raw = b64()
        .decode(mine)
        .map_err(|_| rekey_error("a sealed ledger secret is not base64"))?;
    let plain = key
        .decrypt(&raw)
        .map_err(|_| rekey_error("this node's encryption key does not open its ledger secret"))?;
    Ok(LedgerSecret::from_bytes(&plain)?)
}

/// Rebuilds a ledger's whole chain of secrets from its latest one and the
/// historical rows its rekeys wrote (in any order): what a recovery does once the
/// members' shares unwrapped the latest secret. Fails on a broken link.
pub fn walk_back(
    latest: (SeqNo, LedgerSecret),
    history: &[HistoricalSecret],
) -> Result<LedgerSecrets, EngineError> {
    let by_next: BTreeMap<u64, &HistoricalSecret> =
        history.iter().map(|h| (h.next_version, h)).collect();
    let (mut version, secret) = latest;
    let mut chain = vec![(version, std::sync::Arc::new(secret))];
    while version > SeqNo(1) {
        let Some(h) = by_next.get(&version.0) else {
            return Err(rekey_error(format!(
                "no record of the secret before the one from seqno {version}"
            )));
        };
        let sealed = b64()
            .decode(&h.previous_ledger_secret.encrypted_data)
            .map_err(|_| rekey_error("a historical secret is not base64"))?;
        let (_, next) = &chain[chain.len() - 1];
        let previous = next.open_previous(&sealed).map_err(|_| {
            rekey_error(format!(
                "the secret before seqno {version} does not open under its successor"
            ))
        })?;
        let pv = SeqNo(h.previous_ledger_secret.version);
        if pv >= version {
            return Err(rekey_error("historical secrets go backwards"));
        }
        chain.push((pv, std::sync::Arc::new(previous)));
        version = pv;
    }
    chain.reverse();
    let mut it = chain.into_iter();
    let Some((_, first)) = it.next() else {
        return Err(rekey_error("no secret"));
    };
    let mut out = LedgerSecrets::from(first);
    for (v, s) in it {
        out.add(v, s)?;
    }
    Ok(out)
}
