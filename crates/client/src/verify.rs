use std::collections::HashSet;
use std::sync::Mutex;

use covenant_crypto::{sha256, Certificate};
use covenant_merkle::{leaf_hash, root_from_inclusion, ConsistencyProof};
use covenant_receipt::{
    claims_digest, commit_evidence_digest, parse_commit_evidence, ApplicationClaim, Receipt,
    ReceiptResponse, ReceiptState, SignatureRecord,
};
use covenant_types::{Digest32, TxId};

/// Why a receipt or proof was rejected. Each names the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("receipt is not ready (state Loading): nothing to verify yet")]
    NotReady,
    #[error("malformed receipt: {0}")]
    Malformed(String),
    #[error("transactionId {outer} does not match the commit evidence's {inner}")]
    TxIdMismatch { outer: TxId, inner: TxId },
    #[error("application claims digest {computed} does not match the receipt's claimsDigest {in_receipt}")]
    ClaimsMismatch {
        computed: String,
        in_receipt: String,
    },
    #[error("invalid application claims: {0}")]
    Claims(String),
    #[error("nodeId {in_receipt} does not match the node certificate's key ({from_cert})")]
    NodeIdMismatch {
        in_receipt: String,
        from_cert: String,
    },
    #[error("the signature does not verify over the root computed from the leaf and proof")]
    BadSignature,
    #[error("the node certificate is not endorsed by the service certificate: {0}")]
    NotEndorsed(String),
    #[error("consistency proof does not link the two signed roots")]
    Inconsistent,
}

/// What a verified receipt proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReceipt {
    pub transaction_id: TxId,
    pub root: Digest32,
    pub node_id: String,
    pub leaf: Digest32,
}

/// Verifies receipts against one service certificate.
///
/// Endorsement chains (node cert ← endorsements ← service cert) already checked are
/// remembered, so verifying many receipts from the same node costs one ECDSA
/// verification each.
pub struct ReceiptVerifier {
    service_cert: Certificate,
    endorsed: Mutex<HashSet<Digest32>>,
}

fn parse_digest(what: &str, hex: &str) -> Result<Digest32, VerifyError> {
    Digest32::from_hex(hex).map_err(|e| VerifyError::Malformed(format!("{what}: {e}")))
}

impl ReceiptVerifier {
    pub fn new(service_cert: Certificate) -> Self {
        ReceiptVerifier {
            service_cert,
            endorsed: Mutex::new(HashSet::new()),
        }
    }

    pub fn from_pem(service_cert_pem: &str) -> Result<Self, VerifyError> {
        let cert = Certificate::from_pem(service_cert_pem)
            .map_err(|e| VerifyError::Malformed(format!("service certificate: {e}")))?;
        Ok(Self::new(cert))
    }

    pub fn service_cert(&self) -> &Certificate {
        &self.service_cert
    }

    /// Verifies a full response: it must be Ready and its transactionId must be the
    /// one the commit evidence names.
    pub fn verify_response(
        &self,
        response: &ReceiptResponse,
        claims: Option<&[ApplicationClaim]>,
    ) -> Result<VerifiedReceipt, VerifyError> {
        let receipt = match (&response.receipt, response.state) {
            (Some(r), ReceiptState::Ready) => r,
            _ => return Err(VerifyError::NotReady),
        };
        let v = self.verify(receipt, claims)?;
        if v.transaction_id != response.transaction_id {
            return Err(VerifyError::TxIdMismatch {
                outer: response.transaction_id,
                inner: v.transaction_id,
            });
        }
        Ok(v)
    }

    /// SPEC §3 verification: leaf from its components, root by folding the proof,
    /// root signature under the node cert, nodeId matches the cert, node cert endorsed
    /// through `serviceEndorsements` up to the service cert. With `claims`, the
    /// claims digest must also be the one computed from them.
    pub fn verify(
        &self,
        receipt: &Receipt,
        claims: Option<&[ApplicationClaim]>,
    ) -> Result<VerifiedReceipt, VerifyError> {
        let lc = &receipt.leaf_components;
        let wsd = parse_digest("writeSetDigest", &lc.write_set_digest)?;
        let cd = parse_digest("claimsDigest", &lc.claims_digest)?;
        let (txid, _) = parse_commit_evidence(&lc.commit_evidence)
            .map_err(|e| VerifyError::Malformed(e.to_string()))?;
        if let Some(claims) = claims {
            let computed = claims_digest(claims).map_err(|e| VerifyError::Claims(e.to_string()))?;
            if computed != cd {
                return Err(VerifyError::ClaimsMismatch {
                    computed: computed.to_hex(),
                    in_receipt: lc.claims_digest.clone(),
                });
            }
        }
        let leaf = leaf_hash(&wsd, &commit_evidence_digest(&lc.commit_evidence), &cd);
        let root = root_from_inclusion(&leaf, &receipt.proof);

        let node_cert = Certificate::from_pem(&receipt.cert)
            .map_err(|e| VerifyError::Malformed(format!("cert: {e}")))?;
        let from_cert = node_cert.node_id();
        if !receipt.node_id.eq_ignore_ascii_case(&from_cert) {
            return Err(VerifyError::NodeIdMismatch {
                in_receipt: receipt.node_id.clone(),
                from_cert,
            });
        }
        let sig = base64_decode(&receipt.signature)?;
        node_cert
            .public_key()
            .verify_prehashed_sha256(&root.0, &sig)
            .map_err(|_| VerifyError::BadSignature)?;
        self.check_endorsed(&node_cert, &receipt.service_endorsements)?;
        Ok(VerifiedReceipt {
            transaction_id: txid,
            root,
            node_id: from_cert,
            leaf,
        })
    }

    /// The node cert is signed by endorsements[0], which is signed by endorsements[1],
    /// ..., and the last one (or the node cert itself if there are none) by the service cert.
    fn check_endorsed(
        &self,
        node_cert: &Certificate,
        endorsements: &[String],
    ) -> Result<(), VerifyError> {
        let mut chain_id = covenant_crypto::Sha256::new();
        chain_id.update(node_cert.der());
        let mut chain = Vec::with_capacity(endorsements.len());
        for pem in endorsements {
            let c = Certificate::from_pem(pem)
                .map_err(|e| VerifyError::Malformed(format!("serviceEndorsements: {e}")))?;
            chain_id.update(&sha256(c.der()).0);
            chain.push(c);
        }
        let chain_id = chain_id.finish();
        if self
            .endorsed
            .lock()
            .map(|s| s.contains(&chain_id))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let mut child = node_cert;
        for parent in &chain {
            child
                .verify_signed_by(parent)
                .map_err(|e| VerifyError::NotEndorsed(e.to_string()))?;
            child = parent;
        }
        child
            .verify_signed_by(&self.service_cert)
            .map_err(|e| VerifyError::NotEndorsed(e.to_string()))?;
        if let Ok(mut s) = self.endorsed.lock() {
            // Bounded: a verifier sees few distinct nodes; reset rather than grow forever.
            if s.len() > 4096 {
                s.clear();
            }
            s.insert(chain_id);
        }
        Ok(())
    }

    /// Checks a signature record on its own terms: its node signed the root, its
    /// nodeId is that node's, and the node is endorsed by the service.
    pub fn verify_signature_record(
        &self,
        record: &SignatureRecord,
        endorsements: &[String],
    ) -> Result<(), VerifyError> {
        let cert = Certificate::from_pem(&record.cert)
            .map_err(|e| VerifyError::Malformed(format!("cert: {e}")))?;
        let from_cert = cert.node_id();
        if !record.node_id.eq_ignore_ascii_case(&from_cert) {
            return Err(VerifyError::NodeIdMismatch {
                in_receipt: record.node_id.clone(),
                from_cert,
            });
        }
        let sig = record
            .signature_der()
            .map_err(|e| VerifyError::Malformed(e.to_string()))?;
        cert.public_key()
            .verify_prehashed_sha256(&record.root.0, &sig)
            .map_err(|_| VerifyError::BadSignature)?;
        self.check_endorsed(&cert, endorsements)
    }
}

fn base64_decode(s: &str) -> Result<Vec<u8>, VerifyError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| VerifyError::Malformed("signature is not base64".into()))
}

/// Verifies that the ledger signed by `new` extends the one signed by `old`
/// (nothing before `old` was rewritten): both records are genuine and endorsed, and
/// the RFC 9162 proof links their roots at their sizes.
pub fn verify_consistency(
    verifier: &ReceiptVerifier,
    old: &SignatureRecord,
    new: &SignatureRecord,
    proof: &ConsistencyProof,
) -> Result<(), VerifyError> {
    verifier.verify_signature_record(old, &[])?;
    verifier.verify_signature_record(new, &[])?;
    if proof.old_size != old.tree_size() || proof.new_size != new.tree_size() {
        return Err(VerifyError::Malformed(format!(
            "proof is for sizes {}..{}, signatures cover {}..{}",
            proof.old_size,
            proof.new_size,
            old.tree_size(),
            new.tree_size()
        )));
    }
    if covenant_merkle::verify_consistency(proof, &old.root, &new.root) {
        Ok(())
    } else {
        Err(VerifyError::Inconsistent)
    }
}
