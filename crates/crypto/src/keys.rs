use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING,
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use zeroize::Zeroizing;

use crate::CryptoError;

/// The elliptic curves covenant issues service and node keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// The default, as in CCF: ECDSA P-384 with SHA-384 certificate signatures.
    P384,
    /// Accepted everywhere, for operators that need it.
    P256,
}

impl Curve {
    fn signing_alg(self) -> &'static EcdsaSigningAlgorithm {
        match self {
            Curve::P384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
            Curve::P256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
        }
    }

    pub(crate) fn rcgen_alg(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Curve::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Curve::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        }
    }
}

/// An ECDSA key pair that signs Merkle roots and certificates.
///
/// The PKCS#8 encoding is kept (zeroized on drop) so that the key can be handed to
/// rcgen for certificate issuance and saved to a 0600 file.
pub struct SigningKeyPair {
    curve: Curve,
    key: EcdsaKeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SigningKeyPair")
            .field("curve", &self.curve)
            .finish_non_exhaustive()
    }
}

impl SigningKeyPair {
    /// A fresh key from the system RNG.
    pub fn generate(curve: Curve) -> Result<Self, CryptoError> {
        let key = EcdsaKeyPair::generate(curve.signing_alg())
            .map_err(|_| CryptoError::Generation("key generation failed".into()))?;
        let pkcs8 = key
            .to_pkcs8v1()
            .map_err(|_| CryptoError::Generation("key serialization failed".into()))?;
        Ok(SigningKeyPair {
            curve,
            key,
            pkcs8: Zeroizing::new(pkcs8.as_ref().to_vec()),
        })
    }

    /// Loads a PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`) PEM key on P-256 or P-384.
    pub fn from_pem(pem: &str) -> Result<Self, CryptoError> {
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| CryptoError::Pem(format!("no private key found: {e}")))?;
        Self::from_der(der.secret_der())
    }

    /// Loads a DER private key (PKCS#8 or SEC1), detecting the curve.
    pub fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        for curve in [Curve::P384, Curve::P256] {
            if let Ok(key) = EcdsaKeyPair::from_private_key_der(curve.signing_alg(), der) {
                let pkcs8 = key
                    .to_pkcs8v1()
                    .map_err(|_| CryptoError::PrivateKey("cannot re-encode key".into()))?;
                return Ok(SigningKeyPair {
                    curve,
                    key,
                    pkcs8: Zeroizing::new(pkcs8.as_ref().to_vec()),
                });
            }
        }
        Err(CryptoError::PrivateKey(
            "not an ECDSA P-256 or P-384 private key".into(),
        ))
    }

    pub fn curve(&self) -> Curve {
        self.curve
    }

    /// PKCS#8 PEM, for a 0600 key file.
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(crate::files::pem_lf("PRIVATE KEY", self.pkcs8.as_slice()))
    }

    /// PKCS#8 DER, for handing the key to the TLS stack. Zeroized on drop.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        self.pkcs8.clone()
    }

    /// The DER SubjectPublicKeyInfo (what the node id is the hash of).
    pub fn public_key_spki_der(&self) -> Vec<u8> {
        // aws-lc-rs exposes the raw point; wrap it the way the certificate does.
        rcgen::PublicKeyData::subject_public_key_info(&RcgenPublic {
            raw: self.key.public_key().as_ref(),
            alg: self.curve.rcgen_alg(),
        })
    }

    /// The public key as PEM (`PUBLIC KEY`).
    pub fn public_key_pem(&self) -> String {
        crate::files::pem_lf("PUBLIC KEY", self.public_key_spki_der())
    }

    pub(crate) fn to_rcgen(&self) -> Result<rcgen::KeyPair, CryptoError> {
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(self.pkcs8.as_slice());
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, self.curve.rcgen_alg())
            .map_err(|e| CryptoError::PrivateKey(e.to_string()))
    }

    /// ECDSA over a 32-byte digest used directly (pre-hashed, no re-hash), DER-encoded.
    ///
    /// This is how signature transactions sign Merkle roots (SPEC §3), and what
    /// verifiers check with `Prehashed(SHA256)`. On P-384 the 32-byte digest is
    /// left-padded with zero bytes to the curve's hash width: ECDSA reads the digest
    /// as a big-endian integer and truncates only digests longer than the group
    /// order, so both encodings denote the same integer and the same signature.
    pub fn sign_prehashed_sha256(&self, digest32: &[u8; 32]) -> Result<Vec<u8>, CryptoError> {
        let d: Digest = match self.curve {
            Curve::P256 => Digest::import_less_safe(digest32, &digest::SHA256),
            Curve::P384 => {
                let mut padded = [0u8; 48];
                padded[16..].copy_from_slice(digest32);
                Digest::import_less_safe(&padded, &digest::SHA384)
            }
        }
        .map_err(|_| CryptoError::Signing)?;
        let sig = self.key.sign_digest(&d).map_err(|_| CryptoError::Signing)?;
        Ok(sig.as_ref().to_vec())
    }

    /// ECDSA over `message` with the curve's own hash (SHA-384 on P-384), DER-encoded.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let sig = self
            .key
            .sign(&SystemRandom::new(), message)
            .map_err(|_| CryptoError::Signing)?;
        Ok(sig.as_ref().to_vec())
    }

    /// ECDSA over `message` with the curve's own hash, as fixed-width big-endian `r||s`
    /// (96 bytes on P-384, 64 on P-256): the encoding COSE (RFC 9053 §2.1) requires,
    /// where X.509 and TLS use DER.
    pub fn sign_fixed(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let alg = match self.curve {
            Curve::P384 => &ECDSA_P384_SHA384_FIXED_SIGNING,
            Curve::P256 => &ECDSA_P256_SHA256_FIXED_SIGNING,
        };
        // aws-lc-rs fixes the signature encoding per key object; governance requests
        // are rare, so a short-lived key in the fixed encoding costs nothing that matters.
        let key = EcdsaKeyPair::from_pkcs8(alg, self.pkcs8.as_slice())
            .map_err(|_| CryptoError::Signing)?;
        let sig = key
            .sign(&SystemRandom::new(), message)
            .map_err(|_| CryptoError::Signing)?;
        Ok(sig.as_ref().to_vec())
    }
}

/// Adapter so rcgen can encode our public key as a SubjectPublicKeyInfo.
struct RcgenPublic<'a> {
    raw: &'a [u8],
    alg: &'static rcgen::SignatureAlgorithm,
}

impl rcgen::PublicKeyData for RcgenPublic<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.raw
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_roundtrip_keeps_key() {
        for curve in [Curve::P384, Curve::P256] {
            let k = SigningKeyPair::generate(curve).unwrap();
            let k2 = SigningKeyPair::from_pem(&k.to_pem()).unwrap();
            assert_eq!(k.public_key_spki_der(), k2.public_key_spki_der());
            assert_eq!(k2.curve(), curve);
        }
    }

    #[test]
    fn garbage_keys_are_refused() {
        assert!(SigningKeyPair::from_pem("not pem").is_err());
        assert!(SigningKeyPair::from_der(&[0u8; 40]).is_err());
    }
}
