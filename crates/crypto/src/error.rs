/// Every way a cryptographic operation or an identity file can be refused.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("invalid PEM: {0}")]
    Pem(String),
    #[error("invalid certificate: {0}")]
    Certificate(String),
    #[error("invalid private key: {0}")]
    PrivateKey(String),
    #[error("unsupported key or algorithm: {0}")]
    Unsupported(String),
    #[error("signature verification failed: {0}")]
    BadSignature(String),
    #[error("signing failed")]
    Signing,
    #[error("decryption failed: ciphertext or associated data was altered, or the wrong secret was used")]
    Decrypt,
    #[error("encryption failed")]
    Encrypt,
    #[error("certificate generation failed: {0}")]
    Generation(String),
    /// A COSE_Sign1 envelope or one of its headers is malformed or not acceptable.
    #[error("invalid COSE_Sign1 governance request: {0}")]
    Cose(String),
    /// A header every governance request must carry in its protected header is absent.
    #[error("invalid COSE_Sign1 governance request: protected header {0} is missing")]
    CoseMissingHeader(&'static str),
    /// The envelope names (kid) a different member than the certificate it was checked against.
    #[error("COSE_Sign1 kid {kid} is not the signer's member id {member_id}")]
    CoseKidMismatch { kid: String, member_id: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl CryptoError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        CryptoError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
