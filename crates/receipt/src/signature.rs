use base64::Engine;
use covenant_crypto::Certificate;
use covenant_types::{Digest32, SeqNo, View};
use serde::{Deserialize, Serialize};

use crate::ReceiptError;

/// The public internal map that holds the latest signature (CCF's name).
pub const SIGNATURES_MAP: &str = "public:ccf.internal.signatures";
/// The single key of [`SIGNATURES_MAP`].
pub const SIGNATURE_KEY: &[u8] = b"0";

/// What a signature transaction records (SPEC §3): the primary's signature over the
/// Merkle root of every transaction before this one.
///
/// `seqno` is the signature transaction's own seqno; `root` covers seqnos
/// `1..seqno-1` (a transaction cannot sign a tree that contains itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureRecord {
    pub view: View,
    pub seqno: SeqNo,
    pub root: Digest32,
    pub node_id: String,
    /// Base64 DER ECDSA over `root` used directly as the digest.
    pub signature: String,
    /// PEM of the signing node's certificate.
    pub cert: String,
    /// Last seqno the primary knew committed when it signed.
    pub commit_seqno: SeqNo,
}

impl SignatureRecord {
    /// Number of leaves the signed root covers.
    pub fn tree_size(&self) -> u64 {
        self.seqno.0.saturating_sub(1)
    }

    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json_bytes(bytes: &[u8]) -> Result<SignatureRecord, ReceiptError> {
        serde_json::from_slice(bytes).map_err(|e| ReceiptError::Signature(e.to_string()))
    }

    pub fn signature_der(&self) -> Result<Vec<u8>, ReceiptError> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| ReceiptError::Signature("signature is not base64".into()))
    }

    /// Checks the record on its own: the cert is the node's, and it signed the root.
    /// (Whether the cert is endorsed by the service is the caller's question.)
    pub fn verify_self(&self) -> Result<Certificate, ReceiptError> {
        let cert = Certificate::from_pem(&self.cert)
            .map_err(|e| ReceiptError::Signature(e.to_string()))?;
        if cert.node_id() != self.node_id {
            return Err(ReceiptError::Signature(format!(
                "node_id {} does not match the certificate's key ({})",
                self.node_id,
                cert.node_id()
            )));
        }
        cert.public_key()
            .verify_prehashed_sha256(&self.root.0, &self.signature_der()?)
            .map_err(|e| ReceiptError::Signature(e.to_string()))?;
        Ok(cert)
    }
}
