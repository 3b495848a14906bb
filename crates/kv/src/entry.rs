use covenant_crypto::{sha256, LedgerSecret, NonceDomain};
use covenant_types::{Digest32, TxId};

use crate::codec::{put_bytes, Reader};
use crate::{KvError, WriteSet};

/// Version byte that starts every serialized transaction entry.
pub const ENTRY_FORMAT_VERSION: u8 = 1;

/// Bytes before the write-set section: version, flags and the two digests.
const HEADER_LEN: usize = 2 + 32 + 32;

/// A transaction as it is stored in the ledger and replicated: the public write set
/// in clear, the private write set encrypted, and the two digests that enter the
/// Merkle leaf besides the write set.
///
/// Layout: `u8 version, u8 flags (0), [32] SHA256(commitEvidence), [32] claimsDigest,
/// u32+public write set, u32+private ciphertext (empty when no private writes)`.
/// The leaf's `writeSetDigest` is SHA-256 of the write-set section (everything after
/// the two digests), so an auditor recomputes every leaf without any secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxEntry {
    pub commit_evidence_digest: Digest32,
    pub claims_digest: Digest32,
    /// Canonical serialization of the public maps' writes.
    pub public: Vec<u8>,
    /// AES-256-GCM ciphertext (+ tag) of the private maps' writes, or empty.
    pub private: Vec<u8>,
}

impl TxEntry {
    /// Builds the entry for `ws` committed as `txid`, encrypting private writes.
    /// A write set with private writes needs a ledger secret.
    pub fn seal(
        txid: TxId,
        ws: &WriteSet,
        secret: Option<&LedgerSecret>,
        commit_evidence_digest: Digest32,
        claims_digest: Digest32,
    ) -> Result<TxEntry, KvError> {
        let private = if ws.has_private() {
            let secret = secret.ok_or_else(|| {
                KvError::malformed("transaction", "private writes but no ledger secret")
            })?;
            secret.encrypt(txid, NonceDomain::Transaction, &ws.serialize_part(false))?
        } else {
            Vec::new()
        };
        Ok(TxEntry {
            commit_evidence_digest,
            claims_digest,
            public: ws.serialize_part(true),
            private,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 8 + self.public.len() + self.private.len());
        out.push(ENTRY_FORMAT_VERSION);
        out.push(0);
        out.extend_from_slice(&self.commit_evidence_digest.0);
        out.extend_from_slice(&self.claims_digest.0);
        put_bytes(&mut out, &self.public);
        put_bytes(&mut out, &self.private);
        out
    }

    /// Parses an encoded entry; the public write set is checked to be canonical.
    pub fn decode(bytes: &[u8]) -> Result<TxEntry, KvError> {
        let mut r = Reader::new(bytes, "transaction entry");
        let v = r.u8()?;
        if v != ENTRY_FORMAT_VERSION {
            return Err(KvError::malformed(
                "transaction entry",
                format!("unknown version {v}"),
            ));
        }
        let flags = r.u8()?;
        if flags != 0 {
            return Err(KvError::malformed(
                "transaction entry",
                format!("unknown flags {flags:#x}"),
            ));
        }
        let commit_evidence_digest = Digest32(r.array32()?);
        let claims_digest = Digest32(r.array32()?);
        let public = r.bytes()?.to_vec();
        let private = r.bytes()?.to_vec();
        r.finish()?;
        WriteSet::deserialize(&public)?;
        if !private.is_empty() && private.len() < covenant_crypto::TAG_LEN {
            return Err(KvError::malformed(
                "transaction entry",
                "private part shorter than its tag",
            ));
        }
        Ok(TxEntry {
            commit_evidence_digest,
            claims_digest,
            public,
            private,
        })
    }

    /// `writeSetDigest` of the leaf: SHA-256 of the encoded write-set section.
    pub fn write_set_digest(&self) -> Digest32 {
        let mut h = covenant_crypto::Sha256::new();
        h.update(&(self.public.len() as u32).to_le_bytes());
        h.update(&self.public);
        h.update(&(self.private.len() as u32).to_le_bytes());
        h.update(&self.private);
        h.finish()
    }

    /// `writeSetDigest` straight from encoded bytes, without decoding (hot path of audit).
    pub fn write_set_digest_of_encoded(bytes: &[u8]) -> Result<Digest32, KvError> {
        if bytes.len() < HEADER_LEN + 8 {
            return Err(KvError::malformed("transaction entry", "too short"));
        }
        Ok(sha256(&bytes[HEADER_LEN..]))
    }

    pub fn public_write_set(&self) -> Result<WriteSet, KvError> {
        WriteSet::deserialize(&self.public)
    }

    /// Decrypts the private writes; fails if `txid` or the secret is not the one used.
    pub fn private_write_set(
        &self,
        txid: TxId,
        secret: &LedgerSecret,
    ) -> Result<WriteSet, KvError> {
        if self.private.is_empty() {
            return Ok(WriteSet::new());
        }
        let plain = secret.decrypt(txid, NonceDomain::Transaction, &self.private)?;
        WriteSet::deserialize(&plain)
    }

    /// Public and private writes together.
    pub fn write_set(
        &self,
        txid: TxId,
        secret: Option<&LedgerSecret>,
    ) -> Result<WriteSet, KvError> {
        let mut ws = self.public_write_set()?;
        if !self.private.is_empty() {
            let secret = secret.ok_or_else(|| {
                KvError::malformed("transaction entry", "private writes need the ledger secret")
            })?;
            ws.merge(self.private_write_set(txid, secret)?);
        }
        Ok(ws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seal_encode_decode_open() {
        let secret = LedgerSecret::generate().unwrap();
        let mut ws = WriteSet::new();
        ws.put("public:meta", b"k", b"clear");
        ws.put("entries", b"1", b"secret contents");
        let t = TxId::new(2, 9);
        let e = TxEntry::seal(t, &ws, Some(&secret), Digest32([1; 32]), Digest32::ZERO).unwrap();
        let bytes = e.encode();
        // The private value is not in clear anywhere in the entry.
        assert!(!bytes.windows(15).any(|w| w == b"secret contents"));
        assert!(bytes.windows(5).any(|w| w == b"clear"));
        let back = TxEntry::decode(&bytes).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.write_set(t, Some(&secret)).unwrap(), ws);
        assert_eq!(
            TxEntry::write_set_digest_of_encoded(&bytes).unwrap(),
            e.write_set_digest()
        );
        // Wrong TxId or no secret: refused.
        assert!(back.write_set(TxId::new(2, 10), Some(&secret)).is_err());
        assert!(back.write_set(t, None).is_err());
        assert!(TxEntry::seal(t, &ws, None, Digest32::ZERO, Digest32::ZERO).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = TxEntry::decode(&bytes);
        }

        #[test]
        fn same_writes_same_bytes(vals in proptest::collection::vec(any::<u8>(), 0..50)) {
            let mut a = WriteSet::new();
            a.put("public:x", b"k", &vals);
            let e1 = TxEntry::seal(TxId::new(1, 1), &a, None, Digest32::ZERO, Digest32::ZERO).unwrap();
            let e2 = TxEntry::seal(TxId::new(1, 1), &a.clone(), None, Digest32::ZERO, Digest32::ZERO).unwrap();
            prop_assert_eq!(e1.encode(), e2.encode());
        }
    }
}
