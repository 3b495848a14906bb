use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::parse_x509_certificate;

use crate::ids;
use crate::verify::PublicKey;
use crate::CryptoError;

/// A parsed, well-formed X.509 certificate (any supported key type).
///
/// Everything later needed (key, subject, signed bytes, signature) is extracted once
/// at construction, so accessors cannot fail and verification does not re-parse.
#[derive(Clone)]
pub struct Certificate {
    der: Vec<u8>,
    spki: Vec<u8>,
    key: PublicKey,
    subject: String,
    is_ca: bool,
    tbs: std::ops::Range<usize>,
    sig_alg_oid: String,
    signature: Vec<u8>,
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Eq for Certificate {}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Certificate({})", self.subject)
    }
}

impl Certificate {
    /// Parses one DER certificate, refusing trailing bytes and unusable keys.
    pub fn from_der(der: &[u8]) -> Result<Certificate, CryptoError> {
        let (rest, cert) =
            parse_x509_certificate(der).map_err(|e| CryptoError::Certificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CryptoError::Certificate(
                "trailing bytes after certificate".into(),
            ));
        }
        let key = PublicKey::from_parsed(cert.public_key())?;
        let tbs_bytes: &[u8] = cert.tbs_certificate.as_ref();
        // The TBS bytes are a sub-slice of `der`; keep their position, not a copy.
        let start = (tbs_bytes.as_ptr() as usize)
            .checked_sub(der.as_ptr() as usize)
            .filter(|s| s + tbs_bytes.len() <= der.len())
            .ok_or_else(|| CryptoError::Certificate("cannot locate the signed part".into()))?;
        Ok(Certificate {
            der: der.to_vec(),
            spki: cert.public_key().raw.to_vec(),
            key,
            subject: cert.subject().to_string(),
            is_ca: cert.is_ca(),
            tbs: start..start + tbs_bytes.len(),
            sig_alg_oid: cert.signature_algorithm.algorithm.to_id_string(),
            signature: cert.signature_value.data.to_vec(),
        })
    }

    /// Parses the first `CERTIFICATE` block of a PEM document.
    pub fn from_pem(pem: &str) -> Result<Certificate, CryptoError> {
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| CryptoError::Pem(format!("no certificate found: {e}")))?;
        Self::from_der(der.as_ref())
    }

    /// Parses every `CERTIFICATE` block of a PEM document (a bundle), in order.
    pub fn all_from_pem(pem: &str) -> Result<Vec<Certificate>, CryptoError> {
        let mut out = Vec::new();
        for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let der = der.map_err(|e| CryptoError::Pem(e.to_string()))?;
            out.push(Self::from_der(der.as_ref())?);
        }
        if out.is_empty() {
            return Err(CryptoError::Pem("no certificate found".into()));
        }
        Ok(out)
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn to_pem(&self) -> String {
        crate::files::pem_lf("CERTIFICATE", self.der.as_slice())
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        self.spki.clone()
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }

    /// The subject distinguished name, RFC 4514 style.
    pub fn subject(&self) -> String {
        self.subject.clone()
    }

    pub fn is_ca(&self) -> bool {
        self.is_ca
    }

    /// Node id of the certificate's key (SPEC §2).
    pub fn node_id(&self) -> String {
        ids::node_id(&self.spki)
    }

    /// Member id of this certificate (SPEC §2).
    pub fn member_id(&self) -> String {
        ids::member_id(&self.der)
    }

    /// Certificate user id of this certificate (SPEC §2).
    pub fn user_fingerprint(&self) -> String {
        ids::user_fingerprint(&self.der)
    }

    /// Checks that `issuer`'s key signed this certificate.
    ///
    /// Only the signature is checked (no validity period, no name chaining): a receipt
    /// must keep verifying long after the node certificate that signed it expired.
    pub fn verify_signed_by(&self, issuer: &Certificate) -> Result<(), CryptoError> {
        issuer
            .key
            .verify_with_oid(
                &self.sig_alg_oid,
                &self.der[self.tbs.clone()],
                &self.signature,
            )
            .map_err(|_| {
                CryptoError::BadSignature(format!(
                    "certificate {} is not signed by {}",
                    self.subject, issuer.subject
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(alg: &'static rcgen::SignatureAlgorithm, rsa: bool) -> String {
        let key = if rsa {
            rcgen::KeyPair::generate_rsa_for(alg, rcgen::RsaKeySize::_2048).unwrap()
        } else {
            rcgen::KeyPair::generate_for(alg).unwrap()
        };
        let params = rcgen::CertificateParams::new(vec!["member1".to_string()]).unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn member_and_user_certs_of_any_supported_key_parse() {
        for (alg, rsa) in [
            (&rcgen::PKCS_RSA_SHA256, true),
            (&rcgen::PKCS_ECDSA_P256_SHA256, false),
            (&rcgen::PKCS_ECDSA_P384_SHA384, false),
            (&rcgen::PKCS_ED25519, false),
        ] {
            let pem = self_signed(alg, rsa);
            let c = Certificate::from_pem(&pem).unwrap();
            c.verify_signed_by(&c).unwrap();
            assert_eq!(c.member_id().len(), 64);
            assert_eq!(c.user_fingerprint().len(), 95);
            assert_eq!(c.member_id(), crate::ids::member_id(c.der()));
            assert_eq!(Certificate::from_der(c.der()).unwrap(), c);
            assert_eq!(
                Certificate::all_from_pem(&format!("{pem}{pem}"))
                    .unwrap()
                    .len(),
                2
            );
        }
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Certificate::from_pem("nothing here").is_err());
        assert!(Certificate::from_der(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
        let pem = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256, false);
        let c = Certificate::from_pem(&pem).unwrap();
        let mut der = c.der().to_vec();
        der.push(0);
        assert!(Certificate::from_der(&der).is_err(), "trailing byte");
        let n = der.len() - 10;
        der[n] ^= 1;
        der.pop();
        // A flipped signature byte parses but no longer verifies.
        if let Ok(bad) = Certificate::from_der(&der) {
            assert!(bad.verify_signed_by(&c).is_err());
        }
    }
}
