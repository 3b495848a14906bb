use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::files::{read_pem_file, write_private_file, write_public_file};
use crate::keys::{Curve, SigningKeyPair};
use crate::{Certificate, CryptoError};

/// Subject of the service certificate (SPEC §2).
pub const SERVICE_CN: &str = "covenant service";
/// Subject of node certificates (SPEC §2).
pub const NODE_CN: &str = "covenant node";

/// A subject alternative name for a node certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectAltName {
    Dns(String),
    Ip(IpAddr),
}

impl SubjectAltName {
    /// What every development node carries: `localhost` and `127.0.0.1`.
    pub fn dev_defaults() -> Vec<SubjectAltName> {
        vec![
            SubjectAltName::Dns("localhost".into()),
            SubjectAltName::Ip(IpAddr::from([127, 0, 0, 1])),
        ]
    }

    /// Parses `127.0.0.1` as an IP and anything else as a DNS name.
    pub fn parse(s: &str) -> SubjectAltName {
        match s.parse::<IpAddr>() {
            Ok(ip) => SubjectAltName::Ip(ip),
            Err(_) => SubjectAltName::Dns(s.to_string()),
        }
    }
}

fn random_serial() -> Result<SerialNumber, CryptoError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| CryptoError::Generation("rng".into()))?;
    bytes[0] &= 0x7f; // keep the INTEGER positive
    Ok(SerialNumber::from_slice(&bytes))
}

fn params(cn: &str, validity_days: i64) -> Result<CertificateParams, CryptoError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks of other machines that are slightly behind.
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(validity_days);
    p.serial_number = Some(random_serial()?);
    Ok(p)
}

fn gen_err(e: rcgen::Error) -> CryptoError {
    CryptoError::Generation(e.to_string())
}

/// The service identity: the trust root clients pin (SPEC §1, §2).
#[derive(Debug)]
pub struct ServiceIdentity {
    pub key: SigningKeyPair,
    pub cert: Certificate,
}

impl ServiceIdentity {
    /// Default validity of a service certificate: ten years.
    pub const DEFAULT_VALIDITY_DAYS: i64 = 3650;

    /// A new self-signed CA identity, `CN=covenant service`.
    pub fn generate(curve: Curve) -> Result<ServiceIdentity, CryptoError> {
        let key = SigningKeyPair::generate(curve)?;
        let mut p = params(SERVICE_CN, Self::DEFAULT_VALIDITY_DAYS)?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let rk = key.to_rcgen()?;
        let cert = p.self_signed(&rk).map_err(gen_err)?;
        Ok(ServiceIdentity {
            key,
            cert: Certificate::from_der(cert.der())?,
        })
    }

    /// Rebuilds an identity from its key and certificate, checking they belong together.
    pub fn from_parts(
        key: SigningKeyPair,
        cert: Certificate,
    ) -> Result<ServiceIdentity, CryptoError> {
        if key.public_key_spki_der() != cert.spki_der() {
            return Err(CryptoError::Certificate(
                "service key does not match the service certificate".into(),
            ));
        }
        Ok(ServiceIdentity { key, cert })
    }

    /// Signs `p` for `subject` with the service key. The issuer name and key identifier
    /// are read back from the real service certificate, so issued certs chain to it.
    fn sign_cert(
        &self,
        p: &CertificateParams,
        subject: &impl rcgen::PublicKeyData,
    ) -> Result<Certificate, CryptoError> {
        let rk = self.key.to_rcgen()?;
        let der = rustls_pki_types::CertificateDer::from(self.cert.der());
        let issuer = Issuer::from_ca_cert_der(&der, &rk).map_err(gen_err)?;
        let cert = p.signed_by(subject, &issuer).map_err(gen_err)?;
        Certificate::from_der(cert.der())
    }

    /// Issues a node certificate (`CN=covenant node`) for `node_key`, endorsed by this service.
    pub fn issue_node_cert(
        &self,
        node_key: &SigningKeyPair,
        sans: &[SubjectAltName],
        validity_days: i64,
    ) -> Result<Certificate, CryptoError> {
        self.issue_node_cert_to(&node_key.to_rcgen()?, sans, validity_days)
    }

    /// Issues a node certificate for the public key of `candidate` (a joining node's
    /// self-signed certificate: the service never sees the node's private key).
    pub fn issue_node_cert_for(
        &self,
        candidate: &Certificate,
        sans: &[SubjectAltName],
        validity_days: i64,
    ) -> Result<Certificate, CryptoError> {
        let (raw, alg) = candidate.public_key().rcgen_parts()?;
        self.issue_node_cert_to(&RawPublic { raw, alg }, sans, validity_days)
    }

    fn issue_node_cert_to(
        &self,
        subject: &impl rcgen::PublicKeyData,
        sans: &[SubjectAltName],
        validity_days: i64,
    ) -> Result<Certificate, CryptoError> {
        let mut p = params(NODE_CN, validity_days)?;
        p.subject_alt_names = sans
            .iter()
            .map(|s| match s {
                SubjectAltName::Dns(d) => d
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|_| CryptoError::Generation(format!("invalid DNS name {d:?}"))),
                SubjectAltName::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            })
            .collect::<Result<_, _>>()?;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        self.sign_cert(&p, subject)
    }

    /// Endorses a previous service identity (after a recovery): a certificate for the old
    /// service key, signed by this one, so old receipts chain to the new service cert.
    pub fn endorse_previous(&self, previous: &Certificate) -> Result<Certificate, CryptoError> {
        let prev_key = previous.public_key();
        let (raw, alg) = prev_key.rcgen_parts()?;
        let mut p = params(SERVICE_CN, Self::DEFAULT_VALIDITY_DAYS)?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.use_authority_key_identifier_extension = true;
        self.sign_cert(&p, &RawPublic { raw, alg })
    }

    /// Writes `service_cert.pem` and `service_key.pem` (0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), CryptoError> {
        std::fs::create_dir_all(dir).map_err(|e| CryptoError::io(dir, e))?;
        write_public_file(&dir.join("service_cert.pem"), self.cert.to_pem().as_bytes())?;
        write_private_file(&dir.join("service_key.pem"), self.key.to_pem().as_bytes())
    }

    /// Reads what [`ServiceIdentity::save`] wrote.
    pub fn load(dir: &Path) -> Result<ServiceIdentity, CryptoError> {
        let cert = Certificate::from_pem(&read_pem_file(&dir.join("service_cert.pem"))?)?;
        let key = SigningKeyPair::from_pem(&read_pem_file(&dir.join("service_key.pem"))?)?;
        Self::from_parts(key, cert)
    }
}

struct RawPublic {
    raw: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
}

impl rcgen::PublicKeyData for RawPublic {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

/// A self-signed client identity (a ledger user or a consortium member), as
/// `keygenerator.sh` makes them: any CN, P-384 by default.
pub fn generate_client_identity(
    cn: &str,
    curve: Curve,
) -> Result<(SigningKeyPair, Certificate), CryptoError> {
    let key = SigningKeyPair::generate(curve)?;
    let p = params(cn, ServiceIdentity::DEFAULT_VALIDITY_DAYS)?;
    let cert = p.self_signed(&key.to_rcgen()?).map_err(gen_err)?;
    Ok((key, Certificate::from_der(cert.der())?))
}

/// A node identity: its own key and a certificate endorsed by the service key.
#[derive(Debug)]
pub struct NodeIdentity {
    pub key: SigningKeyPair,
    pub cert: Certificate,
    /// Lowercase hex SHA-256 of the node's SubjectPublicKeyInfo (SPEC §2).
    pub node_id: String,
}

impl NodeIdentity {
    /// Default validity of a node certificate: one year.
    pub const DEFAULT_VALIDITY_DAYS: i64 = 365;

    /// A fresh node key with a certificate issued by `service`.
    pub fn generate(
        service: &ServiceIdentity,
        curve: Curve,
        sans: &[SubjectAltName],
    ) -> Result<NodeIdentity, CryptoError> {
        let key = SigningKeyPair::generate(curve)?;
        let cert = service.issue_node_cert(&key, sans, Self::DEFAULT_VALIDITY_DAYS)?;
        Self::from_parts(key, cert)
    }

    pub fn from_parts(key: SigningKeyPair, cert: Certificate) -> Result<NodeIdentity, CryptoError> {
        let spki = key.public_key_spki_der();
        if spki != cert.spki_der() {
            return Err(CryptoError::Certificate(
                "node key does not match the node certificate".into(),
            ));
        }
        Ok(NodeIdentity {
            node_id: crate::ids::node_id(&spki),
            key,
            cert,
        })
    }

    /// A certificate of the node's key signed by that key (what CCF calls the node's
    /// self-signed certificate, `/node/self_signed_certificate`): it proves
    /// possession of the key, not membership of the service.
    pub fn self_signed_cert(&self) -> Result<Certificate, CryptoError> {
        let p = params(NODE_CN, Self::DEFAULT_VALIDITY_DAYS)?;
        let cert = p.self_signed(&self.key.to_rcgen()?).map_err(gen_err)?;
        Certificate::from_der(cert.der())
    }

    /// Writes `node_cert.pem` and `node_key.pem` (0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), CryptoError> {
        std::fs::create_dir_all(dir).map_err(|e| CryptoError::io(dir, e))?;
        write_public_file(&dir.join("node_cert.pem"), self.cert.to_pem().as_bytes())?;
        write_private_file(&dir.join("node_key.pem"), self.key.to_pem().as_bytes())
    }

    pub fn load(dir: &Path) -> Result<NodeIdentity, CryptoError> {
        let cert = Certificate::from_pem(&read_pem_file(&dir.join("node_cert.pem"))?)?;
        let key = SigningKeyPair::from_pem(&read_pem_file(&dir.join("node_key.pem"))?)?;
        Self::from_parts(key, cert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_cert_chains_to_service_cert() {
        let service = ServiceIdentity::generate(Curve::P384).unwrap();
        assert!(service.cert.is_ca());
        assert!(service.cert.subject().contains("covenant service"));
        service.cert.verify_signed_by(&service.cert).unwrap();
        let node =
            NodeIdentity::generate(&service, Curve::P384, &SubjectAltName::dev_defaults()).unwrap();
        assert!(node.cert.subject().contains("covenant node"));
        assert!(!node.cert.is_ca());
        node.cert.verify_signed_by(&service.cert).unwrap();
        assert_eq!(node.node_id, node.cert.node_id());
        let other = ServiceIdentity::generate(Curve::P384).unwrap();
        assert!(node.cert.verify_signed_by(&other.cert).is_err());
    }

    #[test]
    fn a_joining_node_is_endorsed_without_revealing_its_key() {
        let service = ServiceIdentity::generate(Curve::P384).unwrap();
        let (key, candidate) =
            generate_client_identity("covenant joining node", Curve::P384).unwrap();
        let issued = service
            .issue_node_cert_for(&candidate, &SubjectAltName::dev_defaults(), 30)
            .unwrap();
        issued.verify_signed_by(&service.cert).unwrap();
        assert_eq!(issued.spki_der(), candidate.spki_der());
        let node = NodeIdentity::from_parts(key, issued).unwrap();
        assert_eq!(node.node_id, candidate.node_id());
        assert!(candidate.verify_signed_by(&service.cert).is_err());
    }

    #[test]
    fn pems_use_unix_line_endings() {
        let service = ServiceIdentity::generate(Curve::P384).unwrap();
        for pem in [
            service.cert.to_pem(),
            service.key.to_pem().to_string(),
            service.key.public_key_pem(),
        ] {
            assert!(!pem.contains('\r'), "{pem:?}");
            assert!(pem.ends_with("-----\n"));
        }
    }

    #[test]
    fn p256_identities_work_too() {
        let service = ServiceIdentity::generate(Curve::P256).unwrap();
        let node = NodeIdentity::generate(&service, Curve::P384, &[]).unwrap();
        node.cert.verify_signed_by(&service.cert).unwrap();
    }

    #[test]
    fn endorsement_of_previous_service_chains() {
        let old = ServiceIdentity::generate(Curve::P384).unwrap();
        let node = NodeIdentity::generate(&old, Curve::P384, &[]).unwrap();
        let new = ServiceIdentity::generate(Curve::P384).unwrap();
        let endorsement = new.endorse_previous(&old.cert).unwrap();
        node.cert.verify_signed_by(&endorsement).unwrap();
        endorsement.verify_signed_by(&new.cert).unwrap();
    }

    #[test]
    fn save_and_load_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let service = ServiceIdentity::generate(Curve::P384).unwrap();
        service.save(dir.path()).unwrap();
        let node =
            NodeIdentity::generate(&service, Curve::P384, &SubjectAltName::dev_defaults()).unwrap();
        node.save(dir.path()).unwrap();
        let s2 = ServiceIdentity::load(dir.path()).unwrap();
        assert_eq!(s2.cert, service.cert);
        let n2 = NodeIdentity::load(dir.path()).unwrap();
        assert_eq!(n2.node_id, node.node_id);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["service_key.pem", "node_key.pem"] {
                let m = std::fs::metadata(dir.path().join(f))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(m & 0o777, 0o600, "{f}");
            }
        }
    }

    #[test]
    fn mismatched_parts_are_refused() {
        let a = ServiceIdentity::generate(Curve::P384).unwrap();
        let b = ServiceIdentity::generate(Curve::P384).unwrap();
        assert!(ServiceIdentity::from_parts(a.key, b.cert).is_err());
    }
}
