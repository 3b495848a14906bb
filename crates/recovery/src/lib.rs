//! Recovery shares (SPEC §7): the latest ledger secret is wrapped under a key
//! derived from a fresh random recovery secret, and that secret is split so that
//! any `threshold` of the recovery members, together, can rebuild the key, while
//! fewer learn nothing. Each member's share is encrypted to the RSA-OAEP key the
//! member registered. The record lives in the public ledger
//! (`public:ccf.internal.recovery_shares`), so every node, and every ledger copy,
//! carries what a consortium needs to recover the service.

#![forbid(unsafe_code)]

pub mod shamir;
pub mod wrap;

use std::collections::BTreeMap;

use base64::Engine as _;
use covenant_crypto::{EncryptionKeyPair, LedgerSecret};
use serde::{Deserialize, Serialize};

pub use shamir::{Share, MAX_SHARES, SHARE_LEN};

/// The table holding the current [`RecoveryShares`] (one row, key `"0"`).
pub const RECOVERY_SHARES: &str = "public:ccf.internal.recovery_shares";
/// The key of its single row.
pub const RECOVERY_SHARES_KEY: &[u8] = b"0";

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("the recovery threshold must be between 1 and the number of recovery members ({members}), not {threshold}")]
    Threshold { threshold: usize, members: usize },
    #[error("malformed recovery share: {0}")]
    MalformedShare(String),
    #[error("the shares do not rebuild the key that wraps the ledger secret (a wrong share, or too few)")]
    WrongShares,
    #[error("a recovery member's encryption key cannot be used: {0}")]
    MemberKey(String),
    #[error("recovery shares are issued once the service is open")]
    NotOpen,
    /// A submitted share is not the one issued to the member who sent it.
    #[error("this is not the recovery share issued to member {0}")]
    NotIssuedTo(String),
    #[error("the random number generator failed")]
    Random,
    #[error("{0}")]
    Crypto(String),
}

/// A recovery member: its id and the RSA public key (PEM) its share is encrypted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryMember {
    pub id: String,
    pub encryption_pub_key: String,
}

/// What the shares were issued for: the members (id and key), the threshold and
/// the ledger secret's version. Shares are issued again when it changes.
pub fn issued_for(members: &[RecoveryMember], threshold: usize, secret_version: u64) -> String {
    let mut sorted: Vec<&RecoveryMember> = members.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut h = covenant_crypto::Sha256::new();
    h.update(&threshold.to_le_bytes());
    h.update(&secret_version.to_le_bytes());
    for m in sorted {
        for part in [m.id.as_bytes(), m.encryption_pub_key.as_bytes()] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
    h.finish().to_hex()
}

/// The shares of one issue, as kept in the public ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryShares {
    /// The latest ledger secret under the wrapping key (base64).
    pub wrapped_latest_ledger_secret: String,
    /// Member id → its share, RSA-OAEP (SHA-256) encrypted to its key (base64).
    pub encrypted_shares: BTreeMap<String, String>,
    /// How many shares rebuild the wrapping key.
    pub threshold: usize,
    /// The version (start seqno) of the ledger secret that is wrapped.
    pub secret_version: u64,
    /// [`issued_for`] of this issue.
    pub issued_for: String,
    /// Member id → hex SHA-256 of its share (x and y, 44 bytes): a submitted share is
    /// checked on arrival, so a wrong one is refused alone instead of spoiling the
    /// combination. A share carries over 300 random bits: the digest reveals nothing.
    #[serde(default)]
    pub share_digests: BTreeMap<String, String>,
}

impl RecoveryShares {
    /// A fresh issue: a new recovery secret, its shares to `members`, the ledger
    /// secret wrapped under its key.
    pub fn issue(
        ledger_secret: &LedgerSecret,
        secret_version: u64,
        members: &[RecoveryMember],
        threshold: usize,
    ) -> Result<RecoveryShares, RecoveryError> {
        if threshold == 0 || threshold > members.len() || members.len() > MAX_SHARES {
            return Err(RecoveryError::Threshold {
                threshold,
                members: members.len(),
            });
        }
        let secret = Share::random_secret()?;
        let key = wrap::wrapping_key(&secret)?;
        let wrapped = wrap::wrap(&key, ledger_secret)?;
        let shares = shamir::split(&secret, members.len(), threshold)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut encrypted_shares = BTreeMap::new();
        let mut share_digests = BTreeMap::new();
        for (m, share) in members.iter().zip(&shares) {
            share_digests.insert(
                m.id.clone(),
                covenant_crypto::sha256(share.to_bytes().as_ref()).to_hex(),
            );
            let c = covenant_crypto::encrypt_to_public_key(
                &m.encryption_pub_key,
                share.to_bytes().as_ref(),
            )
            .map_err(|e| RecoveryError::MemberKey(format!("member {}: {e}", m.id)))?;
            encrypted_shares.insert(m.id.clone(), b64.encode(c));
        }
        Ok(RecoveryShares {
            wrapped_latest_ledger_secret: b64.encode(wrapped),
            encrypted_shares,
            threshold,
            secret_version,
            issued_for: issued_for(members, threshold, secret_version),
            share_digests,
        })
    }

    /// Checks that `share` is the one issued to `member`.
    pub fn check_share(&self, member: &str, share: &Share) -> Result<(), RecoveryError> {
        if self.share_digests.is_empty() {
            // Issued before digests were kept: only the combination can tell.
            return Ok(());
        }
        let digest = covenant_crypto::sha256(share.to_bytes().as_ref()).to_hex();
        match self.share_digests.get(member) {
            Some(d) if *d == digest => Ok(()),
            _ => Err(RecoveryError::NotIssuedTo(member.to_string())),
        }
    }

    /// The ledger secret, rebuilt from decrypted shares.
    pub fn recover(&self, shares: &[Share]) -> Result<LedgerSecret, RecoveryError> {
        let wrapped = base64::engine::general_purpose::STANDARD
            .decode(&self.wrapped_latest_ledger_secret)
            .map_err(|_| RecoveryError::Crypto("the wrapped ledger secret is not base64".into()))?;
        let secret = shamir::combine(shares)?;
        wrap::unwrap(&*wrap::wrapping_key(&secret)?, &wrapped)
    }
}

/// A member's share, decrypted with its encryption key from the base64 the
/// service hands out.
pub fn decrypt_share(key: &EncryptionKeyPair, encrypted_b64: &str) -> Result<Share, RecoveryError> {
    let c = base64::engine::general_purpose::STANDARD
        .decode(encrypted_b64.trim())
        .map_err(|_| RecoveryError::MalformedShare("the encrypted share is not base64".into()))?;
    let plain = key
        .decrypt(&c)
        .map_err(|_| RecoveryError::MalformedShare("this key does not decrypt the share".into()))?;
    Share::from_bytes(&plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> (Vec<EncryptionKeyPair>, Vec<RecoveryMember>) {
        let keys: Vec<EncryptionKeyPair> = (0..n)
            .map(|_| EncryptionKeyPair::generate().unwrap())
            .collect();
        let members = keys
            .iter()
            .enumerate()
            .map(|(i, k)| RecoveryMember {
                id: format!("{i:064x}"),
                encryption_pub_key: k.public_key_pem().unwrap(),
            })
            .collect();
        (keys, members)
    }

    #[test]
    fn two_of_three_members_recover_the_ledger_secret() {
        let (keys, members) = members(3);
        let secret = LedgerSecret::generate().unwrap();
        let issue = RecoveryShares::issue(&secret, 1, &members, 2).unwrap();
        assert_eq!(issue.encrypted_shares.len(), 3);
        let share =
            |i: usize| decrypt_share(&keys[i], &issue.encrypted_shares[&members[i].id]).unwrap();
        for pair in [[0, 1], [1, 2], [2, 0]] {
            let got = issue.recover(&[share(pair[0]), share(pair[1])]).unwrap();
            assert_eq!(got.expose_bytes(), secret.expose_bytes());
        }
        // One share is not enough, and a share of another issue does not fit.
        assert!(matches!(
            issue.recover(&[share(0)]),
            Err(RecoveryError::WrongShares)
        ));
        let other = RecoveryShares::issue(&secret, 1, &members, 2).unwrap();
        assert_ne!(
            other.wrapped_latest_ledger_secret,
            issue.wrapped_latest_ledger_secret
        );
        let foreign = decrypt_share(&keys[1], &other.encrypted_shares[&members[1].id]).unwrap();
        assert!(issue.recover(&[share(0), foreign]).is_err());
        // A member's key does not open another member's share.
        assert!(decrypt_share(&keys[0], &issue.encrypted_shares[&members[1].id]).is_err());
    }

    #[test]
    fn thresholds_outside_the_members_are_refused() {
        let (_, members) = members(2);
        let secret = LedgerSecret::generate().unwrap();
        for t in [0, 3] {
            assert!(matches!(
                RecoveryShares::issue(&secret, 1, &members, t),
                Err(RecoveryError::Threshold { .. })
            ));
        }
    }

    #[test]
    fn what_shares_are_issued_for_changes_with_members_threshold_and_secret() {
        let (_, m) = members(2);
        let base = issued_for(&m, 1, 1);
        assert_eq!(base, issued_for(&[m[1].clone(), m[0].clone()], 1, 1));
        assert_ne!(base, issued_for(&m, 2, 1));
        assert_ne!(base, issued_for(&m, 1, 2));
        assert_ne!(base, issued_for(&m[..1], 1, 1));
    }
}
