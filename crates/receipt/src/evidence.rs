use covenant_crypto::{sha256, HmacSha256Key, LedgerSecret};
use covenant_types::{Digest32, TxId};

use crate::ReceiptError;

/// Derives the per-transaction commit evidence secrets from a ledger secret.
///
/// The evidence of a transaction is only revealed once it is committed: holding
/// `ce:<txid>:<hex>` proves the service disclosed that this TxId committed.
pub struct CommitEvidenceKey(HmacSha256Key);

impl CommitEvidenceKey {
    pub fn new(secret: &LedgerSecret) -> CommitEvidenceKey {
        // The derived bytes are zeroized on drop; aws-lc keeps its own copy in the key.
        CommitEvidenceKey(HmacSha256Key::new(
            secret.derive(b"covenant commit evidence").as_ref(),
        ))
    }

    /// The evidence string `ce:<view>.<seqno>:<64 hex>`.
    pub fn evidence(&self, txid: TxId) -> String {
        commit_evidence(txid, &self.0.sign(txid.to_string().as_bytes()))
    }
}

/// Formats commit evidence from its per-transaction secret.
pub fn commit_evidence(txid: TxId, secret: &Digest32) -> String {
    format!("ce:{}:{}", txid, secret.to_hex())
}

/// SHA-256 of the evidence string, the middle part of the Merkle leaf.
pub fn commit_evidence_digest(evidence: &str) -> Digest32 {
    sha256(evidence.as_bytes())
}

/// Splits `ce:<txid>:<hex>`, checking both parts.
pub fn parse_commit_evidence(evidence: &str) -> Result<(TxId, Digest32), ReceiptError> {
    let err = || ReceiptError::CommitEvidence(evidence.chars().take(120).collect());
    let rest = evidence.strip_prefix("ce:").ok_or_else(err)?;
    let (txid, hex) = rest.split_once(':').ok_or_else(err)?;
    let txid: TxId = txid.parse().map_err(|_| err())?;
    let d = Digest32::from_hex(hex).map_err(|_| err())?;
    Ok((txid, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_shape_and_determinism() {
        let s = LedgerSecret::generate().unwrap();
        let k = CommitEvidenceKey::new(&s);
        let e = k.evidence(TxId::new(2, 35));
        assert!(e.starts_with("ce:2.35:"));
        assert_eq!(e.len(), "ce:2.35:".len() + 64);
        assert_eq!(e, CommitEvidenceKey::new(&s).evidence(TxId::new(2, 35)));
        assert_ne!(e, k.evidence(TxId::new(3, 35)));
        let (t, _) = parse_commit_evidence(&e).unwrap();
        assert_eq!(t, TxId::new(2, 35));
        assert!(parse_commit_evidence("ce:2.35:abc").is_err());
        assert!(parse_commit_evidence("xx:2.35:").is_err());
    }
}
