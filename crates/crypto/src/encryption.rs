//! Members' RSA-OAEP encryption keys (SPEC §7): recovery shares are encrypted to
//! them. Generated here so `covenant dev` and `covenant keygen --enc` can hand
//! members their pair; used by the recovery code.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    PublicEncryptingKey, OAEP_SHA256_MGF1SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use zeroize::Zeroizing;

use crate::files::pem_lf;
use crate::CryptoError;

/// An RSA-2048 key pair for RSA-OAEP (SHA-256, MGF1-SHA-256).
pub struct EncryptionKeyPair {
    key: PrivateDecryptingKey,
}

impl std::fmt::Debug for EncryptionKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKeyPair(RSA-OAEP)")
    }
}

impl EncryptionKeyPair {
    pub fn generate() -> Result<Self, CryptoError> {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048)
            .map_err(|_| CryptoError::Generation("RSA key generation failed".into()))?;
        Ok(EncryptionKeyPair { key })
    }

    pub fn from_pem(pem: &str) -> Result<Self, CryptoError> {
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| CryptoError::Pem(format!("no private key found: {e}")))?;
        let key = PrivateDecryptingKey::from_pkcs8(der.secret_der())
            .map_err(|e| CryptoError::PrivateKey(format!("not an RSA PKCS#8 key: {e}")))?;
        Ok(EncryptionKeyPair { key })
    }

    /// PKCS#8 PEM, for a 0600 file.
    pub fn to_pem(&self) -> Result<Zeroizing<String>, CryptoError> {
        let der: Pkcs8V1Der<'static> = self.key.as_der().map_err(|_| CryptoError::Encrypt)?;
        Ok(Zeroizing::new(pem_lf("PRIVATE KEY", der.as_ref())))
    }

    /// SubjectPublicKeyInfo PEM (`PUBLIC KEY`), what a member publishes.
    pub fn public_key_pem(&self) -> Result<String, CryptoError> {
        let der: PublicKeyX509Der<'static> = self
            .key
            .public_key()
            .as_der()
            .map_err(|_| CryptoError::Encrypt)?;
        Ok(pem_lf("PUBLIC KEY", der.as_ref()))
    }

    /// Decrypts an RSA-OAEP ciphertext made for this key.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let oaep =
            OaepPrivateDecryptingKey::new(self.key.clone()).map_err(|_| CryptoError::Decrypt)?;
        let mut out = Zeroizing::new(vec![0u8; oaep.min_output_size()]);
        let n = oaep
            .decrypt(&OAEP_SHA256_MGF1SHA256, ciphertext, &mut out, None)
            .map_err(|_| CryptoError::Decrypt)?
            .len();
        out.truncate(n);
        Ok(out)
    }
}

/// RSA-OAEP encryption to a member's published `PUBLIC KEY` PEM.
pub fn encrypt_to_public_key(public_pem: &str, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let der = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(public_pem.as_bytes())
        .map_err(|e| CryptoError::Pem(format!("no public key found: {e}")))?;
    let key = PublicEncryptingKey::from_der(der.as_ref())
        .map_err(|_| CryptoError::Unsupported("not an RSA public key".into()))?;
    let oaep = OaepPublicEncryptingKey::new(key).map_err(|_| CryptoError::Encrypt)?;
    let mut out = vec![0u8; oaep.ciphertext_size()];
    let n = oaep
        .encrypt(&OAEP_SHA256_MGF1SHA256, plaintext, &mut out, None)
        .map_err(|_| CryptoError::Encrypt)?
        .len();
    out.truncate(n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oaep_roundtrip_through_pem() {
        let k = EncryptionKeyPair::generate().unwrap();
        let k2 = EncryptionKeyPair::from_pem(&k.to_pem().unwrap()).unwrap();
        let public = k.public_key_pem().unwrap();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let c = encrypt_to_public_key(&public, b"a recovery share").unwrap();
        assert_eq!(k2.decrypt(&c).unwrap().as_slice(), b"a recovery share");
        let mut bad = c.clone();
        bad[10] ^= 1;
        assert!(k.decrypt(&bad).is_err());
        let other = EncryptionKeyPair::generate().unwrap();
        assert!(other.decrypt(&c).is_err());
    }
}
