use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf;
use covenant_types::{SeqNo, TxId};
use zeroize::{Zeroize, Zeroizing};

use crate::CryptoError;

/// Length of the AES-GCM tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;

/// A ledger secret: the AES-256-GCM key that encrypts private maps (SPEC §7).
///
/// Nonces are derived from the TxId, so a (view, seqno) pair must never be encrypted
/// twice under one secret with different contents. Raft guarantees it: a view has
/// one primary, and a seqno is assigned once per view. `domain` separates the other
/// users of the same TxId (snapshots) from transactions.
pub struct LedgerSecret {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for LedgerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LedgerSecret(..)")
    }
}

/// What a nonce is used for; part of the nonce so two uses of one TxId never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NonceDomain {
    Transaction = 0,
    Snapshot = 1,
}

struct HkdfLen(usize);

impl hkdf::KeyType for HkdfLen {
    fn len(&self) -> usize {
        self.0
    }
}

impl LedgerSecret {
    /// A fresh random secret.
    pub fn generate() -> Result<LedgerSecret, CryptoError> {
        let mut key = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(key.as_mut()).map_err(|_| CryptoError::Generation("rng".into()))?;
        Ok(LedgerSecret { key })
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<LedgerSecret, CryptoError> {
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::PrivateKey("a ledger secret is 32 bytes".into()))?;
        Ok(LedgerSecret {
            key: Zeroizing::new(key),
        })
    }

    /// The raw secret, for wrapping (recovery shares) and 0600 files only.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// A sub-key for another purpose (HKDF-SHA256, `label` as info), so the AES key
    /// itself is never used for anything but AES-GCM.
    pub fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"covenant ledger secret");
        let prk = salt.extract(self.key.as_ref());
        let mut out = Zeroizing::new([0u8; 32]);
        let info = [label];
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so neither call can fail.
        if let Ok(okm) = prk.expand(&info, HkdfLen(32)) {
            if okm.fill(out.as_mut()).is_ok() {
                return out;
            }
        }
        out.zeroize();
        out
    }

    fn nonce(txid: TxId, domain: NonceDomain) -> Result<[u8; NONCE_LEN], CryptoError> {
        // 8 bytes seqno, 4 bytes view with the domain in the top bit: unique per (TxId, domain).
        let view = u32::try_from(txid.view.0)
            .ok()
            .filter(|v| *v < (1 << 31))
            .ok_or(CryptoError::Encrypt)?;
        let mut n = [0u8; NONCE_LEN];
        n[..8].copy_from_slice(&txid.seqno.0.to_le_bytes());
        n[8..].copy_from_slice(&(view | ((domain as u32) << 31)).to_le_bytes());
        Ok(n)
    }

    fn aead(&self) -> Result<LessSafeKey, CryptoError> {
        let k =
            UnboundKey::new(&AES_256_GCM, self.key.as_ref()).map_err(|_| CryptoError::Encrypt)?;
        Ok(LessSafeKey::new(k))
    }

    /// AES-256-GCM with the IV derived from `txid` and the TxId string as associated data.
    /// Returns ciphertext followed by the 16-byte tag.
    pub fn encrypt(
        &self,
        txid: TxId,
        domain: NonceDomain,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let nonce = Nonce::assume_unique_for_key(Self::nonce(txid, domain)?);
        let aad = txid.to_string();
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        self.aead()?
            .seal_in_place_append_tag(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| CryptoError::Encrypt)?;
        Ok(buf)
    }

    /// Reverses [`LedgerSecret::encrypt`]; fails if anything (including the TxId) differs.
    pub fn decrypt(
        &self,
        txid: TxId,
        domain: NonceDomain,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let nonce = Nonce::assume_unique_for_key(
            Self::nonce(txid, domain).map_err(|_| CryptoError::Decrypt)?,
        );
        let aad = txid.to_string();
        let mut buf = ciphertext.to_vec();
        let plain = self
            .aead()
            .map_err(|_| CryptoError::Decrypt)?
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| CryptoError::Decrypt)?;
        let n = plain.len();
        buf.truncate(n);
        Ok(buf)
    }
}

impl LedgerSecret {
    /// Encrypts `previous` under this (its successor) secret, so a ledger's secrets
    /// form a chain any later one unlocks (a recovery unwraps only the latest).
    /// AES-256-GCM under a sub-key of this secret, a random IV; `iv ‖ ciphertext ‖ tag`.
    pub fn seal_previous(&self, previous: &LedgerSecret) -> Result<Vec<u8>, CryptoError> {
        let key = self.derive(b"previous ledger secret");
        let aead = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key.as_ref()).map_err(|_| CryptoError::Encrypt)?,
        );
        let mut iv = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut iv).map_err(|_| CryptoError::Generation("rng".into()))?;
        let mut buf = previous.key.to_vec();
        aead.seal_in_place_append_tag(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut buf)
            .map_err(|_| CryptoError::Encrypt)?;
        let mut out = iv.to_vec();
        out.extend_from_slice(&buf);
        buf.zeroize();
        Ok(out)
    }

    /// Reverses [`LedgerSecret::seal_previous`].
    pub fn open_previous(&self, sealed: &[u8]) -> Result<LedgerSecret, CryptoError> {
        if sealed.len() != NONCE_LEN + 32 + TAG_LEN {
            return Err(CryptoError::Decrypt);
        }
        let key = self.derive(b"previous ledger secret");
        let aead = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key.as_ref()).map_err(|_| CryptoError::Decrypt)?,
        );
        let (iv, body) = sealed.split_at(NONCE_LEN);
        let iv: [u8; NONCE_LEN] = iv.try_into().map_err(|_| CryptoError::Decrypt)?;
        let mut buf = Zeroizing::new(body.to_vec());
        let plain = aead
            .open_in_place(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut buf)
            .map_err(|_| CryptoError::Decrypt)?;
        LedgerSecret::from_bytes(plain)
    }
}

/// A fresh secret for an operator to hand out (a join token): 32 random bytes as
/// 64 lower-case hex digits.
pub fn random_token() -> Result<String, CryptoError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(bytes.as_mut()).map_err(|_| CryptoError::Generation("rng".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_previous_secret_opens_only_under_its_successor() {
        let old = LedgerSecret::generate().unwrap();
        let new = LedgerSecret::generate().unwrap();
        let sealed = new.seal_previous(&old).unwrap();
        assert_ne!(
            sealed,
            new.seal_previous(&old).unwrap(),
            "a fresh IV each time"
        );
        assert_eq!(
            new.open_previous(&sealed).unwrap().expose_bytes(),
            old.expose_bytes()
        );
        assert!(old.open_previous(&sealed).is_err());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(new.open_previous(&bad).is_err(), "byte {i}");
        }
        assert!(new.open_previous(&sealed[1..]).is_err());
    }

    #[test]
    fn secrets_apply_from_their_version_and_round_trip_as_text() {
        let a = std::sync::Arc::new(LedgerSecret::generate().unwrap());
        let b = std::sync::Arc::new(LedgerSecret::generate().unwrap());
        let mut chain = LedgerSecrets::from(a.clone());
        assert!(chain.add(SeqNo(1), b.clone()).is_err());
        chain.add(SeqNo(10), b.clone()).unwrap();
        assert!(chain.add(SeqNo(10), a.clone()).is_err());
        for (s, want) in [(0, &a), (1, &a), (9, &a), (10, &b), (99, &b)] {
            assert_eq!(
                chain.for_seqno(SeqNo(s)).expose_bytes(),
                want.expose_bytes(),
                "seqno {s}"
            );
        }
        assert_eq!(chain.latest().0, SeqNo(10));
        let back = LedgerSecrets::from_text(&chain.to_text()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back.for_seqno(SeqNo(12)).expose_bytes(), b.expose_bytes());
        // covenant's single-secret file: the secret from seqno 1.
        use base64::Engine as _;
        let one = base64::engine::general_purpose::STANDARD.encode(a.expose_bytes());
        let single = LedgerSecrets::from_text(&format!("{one}\n")).unwrap();
        assert_eq!(single.latest().0, SeqNo(1));
        for bad in ["", "2 x", "5 AAAA", &format!("2 {one}")] {
            assert!(LedgerSecrets::from_text(bad).is_err(), "{bad:?}");
        }
        assert!(!format!("{chain:?}").contains(&one));
    }

    #[test]
    fn tokens_are_fresh_hex() {
        let a = random_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(a, random_token().unwrap());
    }

    #[test]
    fn roundtrip_and_binding() {
        let s = LedgerSecret::generate().unwrap();
        let t = TxId::new(2, 35);
        let c = s.encrypt(t, NonceDomain::Transaction, b"hello").unwrap();
        assert_eq!(c.len(), 5 + TAG_LEN);
        assert_eq!(
            s.decrypt(t, NonceDomain::Transaction, &c).unwrap(),
            b"hello"
        );
        // Another TxId, another domain, a flipped byte or another secret: refused.
        assert!(s
            .decrypt(TxId::new(2, 36), NonceDomain::Transaction, &c)
            .is_err());
        assert!(s
            .decrypt(TxId::new(3, 35), NonceDomain::Transaction, &c)
            .is_err());
        assert!(s.decrypt(t, NonceDomain::Snapshot, &c).is_err());
        let mut bad = c.clone();
        bad[0] ^= 1;
        assert!(s.decrypt(t, NonceDomain::Transaction, &bad).is_err());
        let other = LedgerSecret::generate().unwrap();
        assert!(other.decrypt(t, NonceDomain::Transaction, &c).is_err());
        assert!(s.decrypt(t, NonceDomain::Transaction, &c[..3]).is_err());
    }

    #[test]
    fn derived_keys_differ_by_label() {
        let s = LedgerSecret::generate().unwrap();
        assert_ne!(*s.derive(b"a"), *s.derive(b"b"));
        assert_eq!(*s.derive(b"a"), *s.derive(b"a"));
        assert_ne!(*s.derive(b"a"), *s.expose_bytes());
    }
}

/// The ledger secrets of a ledger's life, each applying from its version (the
/// seqno it starts at) until the next one's: a rekey adds a secret, and every
/// earlier transaction stays readable under the secret of its time.
#[derive(Clone)]
pub struct LedgerSecrets {
    /// (version, secret), versions strictly ascending, the first one 1.
    chain: Vec<(SeqNo, std::sync::Arc<LedgerSecret>)>,
}

impl std::fmt::Debug for LedgerSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let versions: Vec<u64> = self.chain.iter().map(|(v, _)| v.0).collect();
        write!(f, "LedgerSecrets(versions {versions:?})")
    }
}

impl From<std::sync::Arc<LedgerSecret>> for LedgerSecrets {
    fn from(first: std::sync::Arc<LedgerSecret>) -> LedgerSecrets {
        LedgerSecrets {
            chain: vec![(SeqNo(1), first)],
        }
    }
}

impl From<LedgerSecret> for LedgerSecrets {
    fn from(first: LedgerSecret) -> LedgerSecrets {
        std::sync::Arc::new(first).into()
    }
}

impl LedgerSecrets {
    /// The secret transaction `seqno` is encrypted under (seqno 0, a snapshot's
    /// empty start, takes the first).
    pub fn for_seqno(&self, seqno: SeqNo) -> &std::sync::Arc<LedgerSecret> {
        let i = self.index_of(seqno);
        &self.chain[i].1
    }

    /// The position of the secret for `seqno` in [`LedgerSecrets::iter`].
    pub fn index_of(&self, seqno: SeqNo) -> usize {
        self.chain
            .partition_point(|(v, _)| *v <= seqno)
            .saturating_sub(1)
    }

    /// The newest secret and its version.
    pub fn latest(&self) -> (SeqNo, &std::sync::Arc<LedgerSecret>) {
        let (v, s) = &self.chain[self.chain.len() - 1];
        (*v, s)
    }

    /// Adds the secret applying from `version` on, which must come after every
    /// secret already held.
    pub fn add(
        &mut self,
        version: SeqNo,
        secret: std::sync::Arc<LedgerSecret>,
    ) -> Result<(), CryptoError> {
        let (latest, _) = self.latest();
        if version <= latest {
            return Err(CryptoError::PrivateKey(format!(
                "a ledger secret from seqno {version} cannot follow the one from seqno {latest}"
            )));
        }
        self.chain.push((version, secret));
        Ok(())
    }

    /// Forgets the secrets a rollback to `to` undoes: those from after `to + 1` (the
    /// transaction that brought them in is gone). The first secret always stays.
    pub fn rollback(&mut self, to: SeqNo) {
        let keep = to.next();
        let mut first = true;
        self.chain
            .retain(|(v, _)| std::mem::take(&mut first) || *v <= keep);
    }

    /// (version, secret), oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (SeqNo, &std::sync::Arc<LedgerSecret>)> {
        self.chain.iter().map(|(v, s)| (*v, s))
    }

    /// How many secrets.
    pub fn len(&self) -> usize {
        self.chain.len()
    }

    /// Never: a ledger has at least its first secret.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The chain as text for a 0600 file or a join response: one line per secret,
    /// `<version> <base64>`, oldest first.
    pub fn to_text(&self) -> Zeroizing<String> {
        use base64::Engine as _;
        let mut out = Zeroizing::new(String::new());
        for (v, s) in &self.chain {
            out.push_str(&v.0.to_string());
            out.push(' ');
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(s.expose_bytes()));
            out.push('\n');
        }
        out
    }

    /// Reads [`LedgerSecrets::to_text`]; a bare base64 secret (covenant's single-secret
    /// file) is the secret from seqno 1.
    pub fn from_text(text: &str) -> Result<LedgerSecrets, CryptoError> {
        use base64::Engine as _;
        let bad = |why: &str| CryptoError::PrivateKey(format!("ledger secrets: {why}"));
        let decode = |b64: &str| -> Result<std::sync::Arc<LedgerSecret>, CryptoError> {
            let raw = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|_| bad("a secret is not base64"))?,
            );
            Ok(std::sync::Arc::new(LedgerSecret::from_bytes(&raw)?))
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if let [only] = lines.as_slice() {
            if !only.trim().contains(' ') {
                return Ok(decode(only)?.into());
            }
        }
        let mut chain: Option<LedgerSecrets> = None;
        for line in lines {
            let (v, b64) = line
                .trim()
                .split_once(' ')
                .ok_or_else(|| bad("a line is not `<seqno> <base64>`"))?;
            let v: u64 = v.parse().map_err(|_| bad("a version is not a seqno"))?;
            let secret = decode(b64)?;
            match &mut chain {
                None if v == 1 => chain = Some(secret.into()),
                None => return Err(bad("the first secret must apply from seqno 1")),
                Some(c) => c.add(SeqNo(v), secret)?,
            }
        }
        chain.ok_or_else(|| bad("no secret"))
    }
}
