use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::keys::Curve;
use crate::CryptoError;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_P521: &str = "1.3.132.0.35";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    P256,
    P384,
    P521,
    Rsa,
    Ed25519,
}

/// A parsed public key: enough to verify certificate and root signatures.
#[derive(Debug, Clone)]
pub struct PublicKey {
    kind: KeyKind,
    /// What aws-lc-rs expects: the EC point, the PKCS#1 RSA key, or the raw Ed25519 key.
    raw: Vec<u8>,
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, CryptoError> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| CryptoError::Certificate(format!("bad SubjectPublicKeyInfo: {e}")))?;
        if !rest.is_empty() {
            return Err(CryptoError::Certificate(
                "trailing bytes after SubjectPublicKeyInfo".into(),
            ));
        }
        Self::from_parsed(&spki)
    }

    pub(crate) fn from_parsed(spki: &SubjectPublicKeyInfo<'_>) -> Result<PublicKey, CryptoError> {
        let alg = spki.algorithm.algorithm.to_id_string();
        let kind = match alg.as_str() {
            OID_EC_PUBLIC_KEY => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string())
                    .ok_or_else(|| {
                        CryptoError::Unsupported("EC key without a named curve".into())
                    })?;
                match curve.as_str() {
                    OID_P256 => KeyKind::P256,
                    OID_P384 => KeyKind::P384,
                    OID_P521 => KeyKind::P521,
                    other => return Err(CryptoError::Unsupported(format!("EC curve {other}"))),
                }
            }
            OID_RSA => KeyKind::Rsa,
            OID_ED25519 => KeyKind::Ed25519,
            other => {
                return Err(CryptoError::Unsupported(format!(
                    "public key algorithm {other}"
                )))
            }
        };
        Ok(PublicKey {
            kind,
            raw: spki.subject_public_key.data.to_vec(),
        })
    }

    /// Verifies a certificate-style signature (`signatureAlgorithm` OID of an X.509 cert).
    pub fn verify_with_oid(
        &self,
        sig_alg_oid: &str,
        message: &[u8],
        sig: &[u8],
    ) -> Result<(), CryptoError> {
        use KeyKind::*;
        let alg: &'static dyn VerificationAlgorithm = match (self.kind, sig_alg_oid) {
            (P256, "1.2.840.10045.4.3.2") => &signature::ECDSA_P256_SHA256_ASN1,
            (P256, "1.2.840.10045.4.3.3") => &signature::ECDSA_P256_SHA384_ASN1,
            (P384, "1.2.840.10045.4.3.2") => &signature::ECDSA_P384_SHA256_ASN1,
            (P384, "1.2.840.10045.4.3.3") => &signature::ECDSA_P384_SHA384_ASN1,
            (P521, "1.2.840.10045.4.3.4") => &signature::ECDSA_P521_SHA512_ASN1,
            (Rsa, "1.2.840.113549.1.1.11") => &signature::RSA_PKCS1_2048_8192_SHA256,
            (Rsa, "1.2.840.113549.1.1.12") => &signature::RSA_PKCS1_2048_8192_SHA384,
            (Rsa, "1.2.840.113549.1.1.13") => &signature::RSA_PKCS1_2048_8192_SHA512,
            (Ed25519, OID_ED25519) => &signature::ED25519,
            (k, oid) => {
                return Err(CryptoError::Unsupported(format!(
                    "signature algorithm {oid} with a {k:?} key"
                )))
            }
        };
        UnparsedPublicKey::new(alg, &self.raw)
            .verify(message, sig)
            .map_err(|_| CryptoError::BadSignature("certificate signature does not verify".into()))
    }

    /// The curve of an ECDSA P-256 or P-384 key; `None` for every other key type.
    pub fn ec_curve(&self) -> Option<Curve> {
        match self.kind {
            KeyKind::P256 => Some(Curve::P256),
            KeyKind::P384 => Some(Curve::P384),
            _ => None,
        }
    }

    /// Verifies a fixed-width `r||s` ECDSA signature (the COSE/JOSE form) over `message`,
    /// hashed with the curve's own hash: SHA-384 on P-384, SHA-256 on P-256.
    pub fn verify_fixed(&self, message: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        let alg: &'static dyn VerificationAlgorithm = match self.kind {
            KeyKind::P256 => &signature::ECDSA_P256_SHA256_FIXED,
            KeyKind::P384 => &signature::ECDSA_P384_SHA384_FIXED,
            k => {
                return Err(CryptoError::Unsupported(format!(
                    "fixed-width ECDSA signatures need a P-256 or P-384 key, not {k:?}"
                )))
            }
        };
        UnparsedPublicKey::new(alg, &self.raw)
            .verify(message, sig)
            .map_err(|_| CryptoError::BadSignature("ECDSA signature does not verify".into()))
    }

    /// The raw key and rcgen algorithm, so a service can endorse this key (EC keys only).
    pub(crate) fn rcgen_parts(
        &self,
    ) -> Result<(Vec<u8>, &'static rcgen::SignatureAlgorithm), CryptoError> {
        match self.kind {
            KeyKind::P256 => Ok((self.raw.clone(), &rcgen::PKCS_ECDSA_P256_SHA256)),
            KeyKind::P384 => Ok((self.raw.clone(), &rcgen::PKCS_ECDSA_P384_SHA384)),
            k => Err(CryptoError::Unsupported(format!(
                "cannot endorse a {k:?} service key"
            ))),
        }
    }

    /// Verifies an ECDSA DER signature made over a 32-byte digest used directly.
    pub fn verify_prehashed_sha256(
        &self,
        digest32: &[u8; 32],
        sig_der: &[u8],
    ) -> Result<(), CryptoError> {
        let alg: &'static dyn VerificationAlgorithm = match self.kind {
            KeyKind::P256 => &signature::ECDSA_P256_SHA256_ASN1,
            KeyKind::P384 => &signature::ECDSA_P384_SHA256_ASN1,
            k => {
                return Err(CryptoError::Unsupported(format!(
                    "root signatures need an ECDSA P-256 or P-384 key, not {k:?}"
                )))
            }
        };
        let d = Digest::import_less_safe(digest32, &digest::SHA256)
            .map_err(|_| CryptoError::Signing)?;
        alg.verify_digest_sig(&self.raw, &d, sig_der)
            .map_err(|_| CryptoError::BadSignature("root signature does not verify".into()))
    }
}

/// Verifies a pre-hashed ECDSA signature against a DER SubjectPublicKeyInfo.
pub fn verify_prehashed_sha256(
    spki_der: &[u8],
    digest32: &[u8; 32],
    sig_der: &[u8],
) -> Result<(), CryptoError> {
    PublicKey::from_spki_der(spki_der)?.verify_prehashed_sha256(digest32, sig_der)
}

/// Signatures made by [`crate::keys::SigningKeyPair`] verify here (and only for what
/// was signed).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKeyPair;

    #[test]
    fn prehashed_signatures_verify_and_bind_the_digest() {
        for curve in [Curve::P384, Curve::P256] {
            let k = SigningKeyPair::generate(curve).unwrap();
            let root = [7u8; 32];
            let sig = k.sign_prehashed_sha256(&root).unwrap();
            verify_prehashed_sha256(&k.public_key_spki_der(), &root, &sig).unwrap();
            let mut other = root;
            other[31] ^= 1;
            assert!(verify_prehashed_sha256(&k.public_key_spki_der(), &other, &sig).is_err());
        }
    }

    #[test]
    fn fixed_signatures_have_the_curve_width_and_verify() {
        for (curve, len) in [(Curve::P384, 96), (Curve::P256, 64)] {
            let k = SigningKeyPair::generate(curve).unwrap();
            let sig = k.sign_fixed(b"hello").unwrap();
            assert_eq!(sig.len(), len);
            let pk = PublicKey::from_spki_der(&k.public_key_spki_der()).unwrap();
            assert_eq!(pk.ec_curve(), Some(curve));
            pk.verify_fixed(b"hello", &sig).unwrap();
            assert!(pk.verify_fixed(b"hellO", &sig).is_err());
            // A DER signature is not accepted where the fixed form is expected.
            assert!(pk
                .verify_fixed(b"hello", &k.sign(b"hello").unwrap())
                .is_err());
        }
    }
}
