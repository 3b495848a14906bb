//! Identities and TLS clients: the service/node identities every engine or node test
//! generates first, and the certificates `covenant dev` writes to its directory.

use std::path::Path;
use std::sync::Arc;

use covenant_client::LedgerClient;
use covenant_crypto::{
    read_pem_file, Certificate, Curve, LedgerSecret, NodeIdentity, ServiceIdentity, SigningKeyPair,
    SubjectAltName,
};

/// A fresh P-384 service identity and a node identity it endorses (with the dev
/// SANs, so TLS to 127.0.0.1 verifies): what opening an engine or binding a node
/// needs, generated the same way by every test that does either.
pub fn service_and_node() -> (ServiceIdentity, Arc<NodeIdentity>) {
    let service = ServiceIdentity::generate(Curve::P384).unwrap();
    let node = Arc::new(
        NodeIdentity::generate(&service, Curve::P384, &SubjectAltName::dev_defaults()).unwrap(),
    );
    (service, node)
}

/// A service, its node, a ledger secret and a temporary directory for the node's
/// files: the fixture of the tests that write a ledger through the engine.
pub struct Fixture {
    pub service: ServiceIdentity,
    pub node: Arc<NodeIdentity>,
    pub secret: Arc<LedgerSecret>,
    /// Removed when the fixture is dropped.
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// Fresh identities and an empty temporary directory.
    pub fn new() -> Fixture {
        let (service, node) = service_and_node();
        Fixture {
            service,
            node,
            secret: Arc::new(LedgerSecret::generate().unwrap()),
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}

/// The certificate and key in one PEM file (as `covenant keygen` and `covenant dev`'s
/// `user0.pem` hold them).
pub fn pem_identity(pem_file: &Path) -> (Certificate, SigningKeyPair) {
    let pem = std::fs::read_to_string(pem_file).unwrap();
    (
        Certificate::from_pem(&pem).unwrap(),
        SigningKeyPair::from_pem(&pem).unwrap(),
    )
}

/// The service certificate `covenant dev` wrote to `dir` (`service_cert.pem`).
pub fn service_cert(dir: &Path) -> Certificate {
    Certificate::from_pem(&read_pem_file(&dir.join("service_cert.pem")).unwrap()).unwrap()
}

/// The certificate and key of `who` (`user0`, `member0`, …) that `covenant dev` wrote
/// to `dir` as `<who>_cert.pem` and `<who>_privk.pem`.
pub fn dev_identity(dir: &Path, who: &str) -> (Certificate, SigningKeyPair) {
    let pem = |name: String| read_pem_file(&dir.join(name)).unwrap();
    (
        Certificate::from_pem(&pem(format!("{who}_cert.pem"))).unwrap(),
        SigningKeyPair::from_pem(&pem(format!("{who}_privk.pem"))).unwrap(),
    )
}

/// A TLS client of the node on 127.0.0.1:`port` of the `covenant dev` in `dir`,
/// trusting its service certificate and presenting the certificate of `who`
/// (see [`dev_identity`]), or none.
pub fn dev_client(dir: &Path, port: u16, who: Option<&str>) -> LedgerClient {
    let id = who.map(|who| dev_identity(dir, who));
    LedgerClient::new(
        &format!("https://127.0.0.1:{port}"),
        &service_cert(dir),
        id.as_ref().map(|(c, k)| (c, k)),
    )
    .unwrap()
}
