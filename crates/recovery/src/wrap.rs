//! The ledger secret wrapped under a key derived from the recovery secret: the key
//! is HKDF-SHA256 of the secret's 40 limb bytes (no salt, the same bytes as info),
//! the wrap AES-256-GCM with an all-zero IV, which is safe because every issue of
//! shares draws a fresh recovery secret, so no key ever wraps twice.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf;
use covenant_crypto::LedgerSecret;
use zeroize::Zeroizing;

use crate::shamir::Share;
use crate::RecoveryError;

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// The wrapping key of a recovery secret (x = 0).
pub fn wrapping_key(secret: &Share) -> Result<Zeroizing<[u8; 32]>, RecoveryError> {
    let ikm = secret.y_bytes();
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(ikm.as_ref());
    let info = [ikm.as_ref()];
    let mut key = Zeroizing::new([0u8; 32]);
    prk.expand(&info, Len32)
        .and_then(|okm| okm.fill(key.as_mut()))
        .map_err(|_| RecoveryError::Crypto("HKDF failed".into()))?;
    Ok(key)
}

fn aead(key: &[u8; 32]) -> Result<LessSafeKey, RecoveryError> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| RecoveryError::Crypto("AES-256-GCM key".into()))
}

/// The ledger secret encrypted under `key`: ciphertext then the 16-byte tag.
pub fn wrap(key: &[u8; 32], ledger_secret: &LedgerSecret) -> Result<Vec<u8>, RecoveryError> {
    let mut buf = ledger_secret.expose_bytes().to_vec();
    aead(key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0u8; NONCE_LEN]),
            Aad::empty(),
            &mut buf,
        )
        .map_err(|_| RecoveryError::Crypto("wrapping the ledger secret failed".into()))?;
    Ok(buf)
}

/// Reverses [`wrap`]; fails (the shares were wrong or too few) if the tag does not match.
pub fn unwrap(key: &[u8; 32], wrapped: &[u8]) -> Result<LedgerSecret, RecoveryError> {
    let mut buf = Zeroizing::new(wrapped.to_vec());
    let plain = aead(key)?
        .open_in_place(
            Nonce::assume_unique_for_key([0u8; NONCE_LEN]),
            Aad::empty(),
            buf.as_mut_slice(),
        )
        .map_err(|_| RecoveryError::WrongShares)?;
    LedgerSecret::from_bytes(plain).map_err(|e| RecoveryError::Crypto(e.to_string()))
}
