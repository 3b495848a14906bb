//! Keeping the recovery shares current (SPEC §7): after every governance step, in
//! the step's own transaction, the shares are issued again when what they were
//! issued for changed (the active recovery members, the threshold, the ledger
//! secret) or a proposal asked for a refresh. A step that would leave the open
//! service with fewer active recovery members than the threshold is refused whole.

use covenant_engine::{Engine, EngineError, SecretRecipient};
use covenant_governance::ServiceStatus;
use covenant_kv::Tx;
use covenant_recovery::{issued_for, RecoveryError, RecoveryMember, RecoveryShares};

use crate::tables::{
    MEMBERS_ENCRYPTION_KEYS, MEMBERS_INFO, RECOVERY_SHARES, RECOVERY_SHARES_KEY, SERVICE_CONFIG,
    SERVICE_CONFIG_KEY, SERVICE_INFO, SERVICE_INFO_KEY,
};

/// The recovery threshold in force: the service configuration's (parsed)
/// `recovery_threshold`, 1 when none was set.
pub fn threshold(config: &serde_json::Value) -> usize {
    config["recovery_threshold"]
        .as_u64()
        .filter(|t| *t >= 1)
        .map_or(1, |t| usize::try_from(t).unwrap_or(usize::MAX))
}

/// The active members with an encryption key, as `tx` sees them.
pub fn active_recovery_members(tx: &mut Tx, store: &covenant_kv::Store) -> Vec<RecoveryMember> {
    let mut ids: std::collections::BTreeSet<Vec<u8>> = store
        .entries(MEMBERS_ENCRYPTION_KEYS)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    if let Some(written) = tx.write_set().maps.get(MEMBERS_ENCRYPTION_KEYS) {
        ids.extend(written.keys().cloned());
    }
    let mut out = Vec::new();
    for id in ids {
        let (Some(key), Some(info)) = (
            tx.get(MEMBERS_ENCRYPTION_KEYS, &id),
            tx.get(MEMBERS_INFO, &id),
        ) else {
            continue;
        };
        let active = serde_json::from_slice::<serde_json::Value>(&info)
            .is_ok_and(|i| i["status"] == "Active");
        if let (true, Ok(id), Ok(key)) = (active, String::from_utf8(id), String::from_utf8(key)) {
            out.push(RecoveryMember {
                id,
                encryption_pub_key: key,
            });
        }
    }
    out
}

/// The shares of the [`RECOVERY_SHARES`] row (from the store or a transaction), if any.
pub fn current(row: Option<Vec<u8>>) -> Option<RecoveryShares> {
    row.and_then(|v| serde_json::from_slice(&v).ok())
}

/// Issues shares again in `tx` if they are out of date (or `refresh`), or refuses
/// the step. Shares are issued only while the service is Open (opening the service
/// issues the first ones), as in CCF; a refresh asked for before is refused.
pub(crate) fn settle(engine: &Engine, tx: &mut Tx, refresh: bool) -> Result<(), RecoveryError> {
    let touched = [
        MEMBERS_INFO,
        MEMBERS_ENCRYPTION_KEYS,
        SERVICE_CONFIG,
        SERVICE_INFO,
    ]
    .iter()
    .any(|m| tx.write_set().maps.contains_key(*m));
    let rekeyed = engine.latest_ledger_secret().0 != engine.ledger_secrets().latest().0;
    if !touched && !refresh && !rekeyed {
        return Ok(());
    }
    let open = tx
        .get(SERVICE_INFO, SERVICE_INFO_KEY)
        .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
        .and_then(|v| serde_json::from_value::<ServiceStatus>(v["status"].clone()).ok())
        .is_none_or(|s| s == ServiceStatus::Open);
    if !open {
        return if refresh {
            Err(RecoveryError::NotOpen)
        } else {
            Ok(())
        };
    }
    let store = engine.store().clone();
    let members = active_recovery_members(tx, &store);
    let config = tx
        .get(SERVICE_CONFIG, SERVICE_CONFIG_KEY)
        .and_then(|c| serde_json::from_slice(&c).ok())
        .unwrap_or(serde_json::Value::Null);
    let t = threshold(&config);
    let previous = current(tx.get(RECOVERY_SHARES, RECOVERY_SHARES_KEY));
    if members.is_empty() && previous.is_none() && !refresh {
        // No recovery member yet: nothing to issue, nothing to keep current.
        return Ok(());
    }
    if t > members.len() {
        return Err(RecoveryError::Threshold {
            threshold: t,
            members: members.len(),
        });
    }
    // The shares wrap the latest secret: a rekey changes what they are issued for.
    let (version, secret) = engine.latest_ledger_secret();
    let wanted = issued_for(&members, t, version.0);
    if !refresh && previous.is_some_and(|p| p.issued_for == wanted) {
        return Ok(());
    }
    let shares = RecoveryShares::issue(&secret, version.0, &members, t)?;
    let row = serde_json::to_vec(&shares).map_err(|e| RecoveryError::Crypto(e.to_string()))?;
    tx.put(RECOVERY_SHARES, RECOVERY_SHARES_KEY, &row);
    Ok(())
}

/// Whether this step takes away a member the current shares were issued to: its
/// share must stop unlocking anything, so the service rekeys (as CCF does).
pub(crate) fn recovery_member_left(tx: &mut Tx, store: &covenant_kv::Store) -> bool {
    let touched = [MEMBERS_INFO, MEMBERS_ENCRYPTION_KEYS]
        .iter()
        .any(|m| tx.write_set().maps.contains_key(*m));
    if !touched {
        return false;
    }
    let Some(previous) = current(tx.get(RECOVERY_SHARES, RECOVERY_SHARES_KEY)) else {
        return false;
    };
    let now: std::collections::BTreeSet<String> = active_recovery_members(tx, store)
        .into_iter()
        .map(|m| m.id)
        .collect();
    previous.encrypted_shares.keys().any(|id| !now.contains(id))
}

/// The nodes a rekey hands the new secret to: every Trusted node (a single node,
/// which keeps no row, is its own). A trusted node without an encryption key
/// could not read what follows, so the rekey is refused.
pub(crate) fn secret_recipients(
    engine: &Engine,
    store: &covenant_kv::Store,
) -> Result<Vec<SecretRecipient>, EngineError> {
    let rows = crate::nodes::node_rows(store);
    if rows.is_empty() {
        return engine
            .encryption_recipient()
            .map(|r| vec![r])
            .ok_or_else(|| EngineError::Rekey("this node holds no encryption key".into()));
    }
    let mut out = Vec::new();
    for (id, row) in rows {
        if row.status != crate::nodes::NodeStatus::Trusted {
            continue;
        }
        let Some(key) = row.encryption_pub_key else {
            return Err(EngineError::Rekey(format!(
                "trusted node {id} has no encryption key: it could not read what a new secret seals"
            )));
        };
        out.push(SecretRecipient {
            node_id: id.as_str().to_string(),
            encryption_pub_key: key,
        });
    }
    Ok(out)
}
