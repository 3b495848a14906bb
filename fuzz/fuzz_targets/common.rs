//! Shared by the fuzz targets that check nothing forged verifies (`mod common;`).
use std::sync::OnceLock;

use covenant_crypto::{generate_client_identity, Certificate, Curve};

/// A member's (or user's) certificate, generated once per process.
pub fn cert() -> &'static Certificate {
    static C: OnceLock<Certificate> = OnceLock::new();
    C.get_or_init(|| match generate_client_identity("fuzz", Curve::P384) {
        Ok((_, c)) => c,
        Err(e) => panic!("cannot generate an identity: {e}"),
    })
}
