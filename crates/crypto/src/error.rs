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
