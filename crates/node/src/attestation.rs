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

pub use covenant_service::tables::NODES_CODE_IDS;

/// `quote_info.format` of virtual evidence (CCF's name for it).
pub const VIRTUAL_FORMAT: &str = "Insecure_Virtual";

impl VirtualQuote {
    pub fn of(node: &NodeIdentity) -> VirtualQuote {
        Self::for_key(&node.key.public_key_spki_der())
    }

    /// Evidence for a node key given by its SubjectPublicKeyInfo DER (a joining node
    /// has its key before it has an endorsed certificate).
    pub fn for_key(spki_der: &[u8]) -> VirtualQuote {
        VirtualQuote {
            node_id: covenant_crypto::node_id(spki_der),
            report_data: sha256(spki_der).to_hex(),
            measurement: binary_measurement(),
        }
    }

    /// Parses evidence from its raw bytes.
    pub fn from_raw(raw: &[u8]) -> Result<VirtualQuote, String> {
        serde_json::from_slice(raw).map_err(|e| format!("virtual evidence is malformed: {e}"))
    }

    /// The checks of SPEC §8 for a node presenting key `spki_der`: the report data
    /// binds the key, and the measurement is one the service trusts.
    pub fn verify(
        &self,
        spki_der: &[u8],
        trusted: &std::collections::BTreeSet<String>,
    ) -> Result<(), String> {
        if self.report_data != sha256(spki_der).to_hex() {
            return Err("the evidence's report data is not the hash of the node's key".into());
        }
        if self.node_id != covenant_crypto::node_id(spki_der) {
            return Err("the evidence names another node id".into());
        }
        if !trusted.contains(&self.measurement) {
            return Err(format!(
                "measurement {} is not in the service's trusted code list",
                self.measurement
            ));
        }
        Ok(())
    }

    /// The raw evidence bytes (JSON), hex-encoded in `enclaveQuotes`.
    pub fn raw(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use covenant_crypto::{Curve, ServiceIdentity, SubjectAltName};

    #[test]
    fn evidence_binds_the_key_and_the_code() {
        let service = ServiceIdentity::generate(Curve::P384).unwrap();
        let node =
            NodeIdentity::generate(&service, Curve::P384, &SubjectAltName::dev_defaults()).unwrap();
        let other = NodeIdentity::generate(&service, Curve::P384, &[]).unwrap();
        let q = VirtualQuote::from_raw(&VirtualQuote::of(&node).raw()).unwrap();
        let trusted = [binary_measurement()].into_iter().collect();
        let spki = node.key.public_key_spki_der();
        q.verify(&spki, &trusted).unwrap();
        assert!(q
            .verify(&other.key.public_key_spki_der(), &trusted)
            .is_err());
        assert!(q.verify(&spki, &Default::default()).is_err());
        let mut forged = q.clone();
        forged.node_id = other.node_id.clone();
        assert!(forged.verify(&spki, &trusted).is_err());
        assert!(VirtualQuote::from_raw(b"{").is_err());
    }
}
