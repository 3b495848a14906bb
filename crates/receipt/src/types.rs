use covenant_merkle::ProofStep;
use covenant_types::TxId;
use serde::{Deserialize, Serialize};

/// The three components a verifier hashes into the transaction's leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeafComponents {
    /// Hex.
    #[serde(alias = "claims_digest")]
    pub claims_digest: String,
    /// `ce:<view>.<seqno>:<hex>`.
    #[serde(alias = "commit_evidence")]
    pub commit_evidence: String,
    /// Hex.
    #[serde(alias = "write_set_digest")]
    pub write_set_digest: String,
}

/// An ACL receipt: everything needed to check offline that a transaction is in the
/// ledger, given only the service certificate. CCF's snake_case spelling (the
/// receipts JS apps see in `ccf.historicalState`) reads as well.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// PEM of the node that signed the root.
    pub cert: String,
    #[serde(alias = "leaf_components")]
    pub leaf_components: LeafComponents,
    #[serde(alias = "node_id")]
    pub node_id: String,
    pub proof: Vec<ProofStep>,
    /// PEMs of previous service identities, each endorsed by the next (after recoveries).
    #[serde(default, alias = "service_endorsements")]
    pub service_endorsements: Vec<String>,
    /// Base64 DER ECDSA over the root.
    pub signature: String,
}

/// Whether a receipt can be served yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiptState {
    /// The covering signature does not exist yet, or the entry is being loaded.
    Loading,
    Ready,
}

/// The response of the receipt routes (`/app/transactions/{id}/receipt`, `/node/receipt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptResponse {
    pub receipt: Option<Receipt>,
    pub state: ReceiptState,
    pub transaction_id: TxId,
}

#[cfg(test)]
mod tests {
    use super::*;
    use covenant_types::Digest32;

    #[test]
    fn json_shape_is_acl() {
        let r = ReceiptResponse {
            receipt: Some(Receipt {
                cert: "PEM".into(),
                leaf_components: LeafComponents {
                    claims_digest: "00".into(),
                    commit_evidence: "ce:2.35:ab".into(),
                    write_set_digest: "11".into(),
                },
                node_id: "nid".into(),
                proof: vec![ProofStep::Left(Digest32::ZERO)],
                service_endorsements: vec![],
                signature: "c2ln".into(),
            }),
            state: ReceiptState::Ready,
            transaction_id: TxId::new(2, 35),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["state"], "Ready");
        assert_eq!(v["transactionId"], "2.35");
        let rc = &v["receipt"];
        for k in [
            "cert",
            "leafComponents",
            "nodeId",
            "proof",
            "serviceEndorsements",
            "signature",
        ] {
            assert!(rc.get(k).is_some(), "{k}");
        }
        assert_eq!(rc["leafComponents"]["commitEvidence"], "ce:2.35:ab");
        assert!(rc["proof"][0]["left"].is_string());
        let loading = ReceiptResponse {
            receipt: None,
            state: ReceiptState::Loading,
            transaction_id: TxId::new(2, 35),
        };
        assert_eq!(
            serde_json::to_string(&loading).unwrap(),
            r#"{"receipt":null,"state":"Loading","transactionId":"2.35"}"#
        );
    }

    #[test]
    fn ccf_snake_case_receipts_read_the_same() {
        let camel: Receipt = serde_json::from_value(serde_json::json!({
            "cert": "PEM", "nodeId": "nid", "signature": "c2ln", "proof": [{"left": "00".repeat(32)}],
            "leafComponents": {"claimsDigest": "00", "commitEvidence": "ce:2.3:ab", "writeSetDigest": "11"},
        }))
        .unwrap();
        let snake: Receipt = serde_json::from_value(serde_json::json!({
            "cert": "PEM", "node_id": "nid", "signature": "c2ln", "proof": [{"left": "00".repeat(32)}],
            "leaf_components": {"claims_digest": "00", "commit_evidence": "ce:2.3:ab", "write_set_digest": "11"},
        }))
        .unwrap();
        assert_eq!(camel, snake);
    }
}
