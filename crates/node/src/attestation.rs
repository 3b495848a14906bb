//! Virtual attestation (SPEC §8): no hardware TEE, so the "quote" is evidence
//! signed by nobody whose report data is SHA-256 of the node's public key DER and
//! whose measurement is SHA-256 of the running binary. It lets clients run the same
//! two checks as with real hardware (key binding, trusted code), without the
//! hardware guarantee.

use std::sync::OnceLock;

use covenant_crypto::{sha256, NodeIdentity};
use serde::{Deserialize, Serialize};

/// The evidence a node presents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualQuote {
    pub node_id: String,
    /// Hex SHA-256 of the node public key DER (SubjectPublicKeyInfo).
    pub report_data: String,
    /// Hex SHA-256 of the node binary.
    pub measurement: String,
}

/// SHA-256 of the running executable, computed once.
pub fn binary_measurement() -> String {
    static M: OnceLock<String> = OnceLock::new();
    M.get_or_init(|| {
        std::env::current_exe()
            .and_then(std::fs::read)
            .map(|b| sha256(&b).to_hex())
            .unwrap_or_else(|_| sha256(b"covenant: binary unreadable").to_hex())
    })
    .clone()
}

impl VirtualQuote {
    pub fn of(node: &NodeIdentity) -> VirtualQuote {
        VirtualQuote {
            node_id: node.node_id.clone(),
            report_data: sha256(&node.key.public_key_spki_der()).to_hex(),
            measurement: binary_measurement(),
        }
    }

    /// The raw evidence bytes (JSON), hex-encoded in `enclaveQuotes`.
    pub fn raw(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}
