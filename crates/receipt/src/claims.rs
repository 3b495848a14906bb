use base64::Engine;
use covenant_crypto::{hmac_sha256, sha256_concat};
use covenant_types::Digest32;
use serde::{Deserialize, Serialize};

use crate::ReceiptError;

/// An application claim attached to a transaction (ACL 2024-12-09-preview).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum ApplicationClaim {
    LedgerEntry {
        #[serde(rename = "ledgerEntry")]
        ledger_entry: LedgerEntryClaim,
    },
    ClaimDigest {
        digest: ClaimDigestBody,
    },
}

/// The contents of a ledger entry, revealed to whoever holds `secretKey`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LedgerEntryClaim {
    pub collection_id: String,
    pub contents: String,
    /// Base64 HMAC key.
    pub secret_key: String,
    pub protocol: String,
}

/// A digest computed elsewhere, with the protocol that produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimDigestBody {
    /// Hex.
    pub value: String,
    pub protocol: String,
}

impl ApplicationClaim {
    /// The claim's own digest.
    pub fn digest(&self) -> Result<Digest32, ReceiptError> {
        match self {
            ApplicationClaim::LedgerEntry { ledger_entry: e } => {
                if e.protocol != "LedgerEntryV1" {
                    return Err(ReceiptError::Claims(format!(
                        "unsupported ledger entry protocol {:?}",
                        e.protocol
                    )));
                }
                let key = base64::engine::general_purpose::STANDARD
                    .decode(&e.secret_key)
                    .map_err(|_| ReceiptError::Claims("secretKey is not base64".into()))?;
                let c = hmac_sha256(&key, e.collection_id.as_bytes());
                let m = hmac_sha256(&key, e.contents.as_bytes());
                let d = sha256_concat(&[&c.0, &m.0]);
                Ok(sha256_concat(&[e.protocol.as_bytes(), &d.0]))
            }
            ApplicationClaim::ClaimDigest { digest } => {
                let value = hex::decode(&digest.value)
                    .map_err(|_| ReceiptError::Claims("digest value is not hex".into()))?;
                Ok(sha256_concat(&[digest.protocol.as_bytes(), &value]))
            }
        }
    }
}

/// claimsDigest of a transaction: `SHA256(u32_le(count) || digest_1 || ...)`.
pub fn claims_digest(claims: &[ApplicationClaim]) -> Result<Digest32, ReceiptError> {
    let count =
        u32::try_from(claims.len()).map_err(|_| ReceiptError::Claims("too many claims".into()))?;
    let mut h = covenant_crypto::Sha256::new();
    h.update(&count.to_le_bytes());
    for c in claims {
        h.update(&c.digest()?.0);
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_test_vector() {
        let claims: Vec<ApplicationClaim> = serde_json::from_str(
            r#"[{"kind":"LedgerEntry","ledgerEntry":{"collectionId":"subledger:0",
                "contents":"Ledger entry contents at transaction id 2.15",
                "secretKey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","protocol":"LedgerEntryV1"}}]"#,
        )
        .unwrap();
        assert_eq!(
            claims_digest(&claims).unwrap().to_hex(),
            "20e42043bf7fee7b118ba2c54c554185a0e4b1b6e009178962fc1ef9a42b7ec8"
        );
    }

    #[test]
    fn claim_digest_kind_and_errors() {
        let c: ApplicationClaim = serde_json::from_str(
            r#"{"kind":"ClaimDigest","digest":{"value":"00ff","protocol":"p"}}"#,
        )
        .unwrap();
        assert_eq!(c.digest().unwrap(), sha256_concat(&[b"p", &[0x00, 0xff]]));
        let bad: ApplicationClaim = serde_json::from_str(
            r#"{"kind":"ClaimDigest","digest":{"value":"zz","protocol":"p"}}"#,
        )
        .unwrap();
        assert!(bad.digest().is_err());
        assert!(serde_json::from_str::<ApplicationClaim>(r#"{"kind":"Other"}"#).is_err());
    }
}
