use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{parse_x509_certificate, X509Certificate};

use crate::ids;
use crate::verify::PublicKey;
use crate::CryptoError;

/// A parsed, well-formed X.509 certificate (any key type), kept as DER.
///
/// Parsing happens once at construction; accessors re-read the DER lazily so the
/// type stays `'static` and cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    der: Vec<u8>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Certificate({})", self.subject())
    }
}

impl Certificate {
    /// Parses one DER certificate, refusing trailing bytes.
    pub fn from_der(der: &[u8]) -> Result<Certificate, CryptoError> {
        let (rest, cert) =
            parse_x509_certificate(der).map_err(|e| CryptoError::Certificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CryptoError::Certificate(
                "trailing bytes after certificate".into(),
            ));
        }
        // Refuse keys we could not use later.
        PublicKey::from_parsed(cert.public_key())?;
        Ok(Certificate { der: der.to_vec() })
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
        pem::encode(&pem::Pem::new("CERTIFICATE", self.der.as_slice()))
    }

    fn parsed(&self) -> X509Certificate<'_> {
        // Checked in from_der, so this cannot fail; fall back to a neutral parse error path.
        match parse_x509_certificate(&self.der) {
            Ok((_, c)) => c,
            Err(_) => unreachable!("certificate DER was validated at construction"),
        }
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        self.parsed().public_key().raw.to_vec()
    }

    pub fn public_key(&self) -> Result<PublicKey, CryptoError> {
        PublicKey::from_parsed(self.parsed().public_key())
    }

    /// The subject distinguished name, RFC 4514 style.
    pub fn subject(&self) -> String {
        self.parsed().subject().to_string()
    }

    pub fn is_ca(&self) -> bool {
        self.parsed().is_ca()
    }

    /// Node id of the certificate's key (SPEC §2).
    pub fn node_id(&self) -> String {
        ids::node_id(&self.spki_der())
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
        let cert = self.parsed();
        let key = issuer.public_key()?;
        let oid = cert.signature_algorithm.algorithm.to_id_string();
        key.verify_with_oid(
            &oid,
            cert.tbs_certificate.as_ref(),
            &cert.signature_value.data,
        )
        .map_err(|_| {
            CryptoError::BadSignature(format!(
                "certificate {} is not signed by {}",
                self.subject(),
                issuer.subject()
            ))
        })
    }
}
