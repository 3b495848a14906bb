use covenant_merkle::ProofStep;
use covenant_types::TxId;
use serde::{Deserialize, Serialize};

/// The three components a verifier hashes into the transaction's leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeafComponents {
    /// Hex.
    pub claims_digest: String,
    /// `ce:<view>.<seqno>:<hex>`.
    pub commit_evidence: String,
    /// Hex.
    pub write_set_digest: String,
}

/// An ACL receipt: everything needed to check offline that a transaction is in the
/// ledger, given only the service certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// PEM of the node that signed the root.
    pub cert: String,
    pub leaf_components: LeafComponents,
    pub node_id: String,
    pub proof: Vec<ProofStep>,
    /// PEMs of previous service identities, each endorsed by the next (after recoveries).
    #[serde(default)]
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
}
