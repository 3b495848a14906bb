use std::collections::BTreeMap;

use covenant_crypto::{LedgerSecret, NonceDomain};
use covenant_types::TxId;

use crate::codec::{put_bytes, put_u32, put_u64, Reader};
use crate::{is_public, KvError};

const MAGIC: &[u8; 4] = b"CVSN";
const VERSION: u8 = 1;

/// A key's value and the seqno that last wrote it.
pub(crate) type Versioned = (Vec<u8>, u64);
pub(crate) type Maps = BTreeMap<String, BTreeMap<Vec<u8>, Versioned>>;

/// The whole KV state at one transaction, so a node can start without replaying
/// the ledger. Private maps are encrypted under the ledger secret (nonce domain
/// `Snapshot`, so it never collides with the transaction of the same TxId).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub txid: TxId,
    pub(crate) maps: Maps,
}

fn encode_maps<'a>(
    maps: impl Iterator<Item = (&'a String, &'a BTreeMap<Vec<u8>, Versioned>)>,
) -> Vec<u8> {
    let maps: Vec<_> = maps.filter(|(_, m)| !m.is_empty()).collect();
    let mut out = Vec::new();
    put_u32(&mut out, maps.len() as u32);
    for (name, m) in maps {
        put_bytes(&mut out, name.as_bytes());
        put_u32(&mut out, m.len() as u32);
        for (k, (v, ver)) in m {
            put_bytes(&mut out, k);
            put_bytes(&mut out, v);
            put_u64(&mut out, *ver);
        }
    }
    out
}

fn decode_maps(
    bytes: &[u8],
    into: &mut Maps,
    want_public: bool,
    max_version: u64,
) -> Result<(), KvError> {
    let mut r = Reader::new(bytes, "snapshot");
    let n = r.count(8)?;
    for _ in 0..n {
        let name = std::str::from_utf8(r.bytes()?)
            .map_err(|_| KvError::malformed("snapshot", "map name is not UTF-8"))?
            .to_string();
        if is_public(&name) != want_public || into.contains_key(&name) {
            return Err(KvError::malformed(
                "snapshot",
                format!("map {name:?} misplaced or repeated"),
            ));
        }
        let count = r.count(16)?;
        let mut m = BTreeMap::new();
        for _ in 0..count {
            let k = r.bytes()?.to_vec();
            let v = r.bytes()?.to_vec();
            let ver = r.u64()?;
            if ver == 0 || ver > max_version {
                return Err(KvError::malformed(
                    "snapshot",
                    "key version outside the snapshot",
                ));
            }
            m.insert(k, (v, ver));
        }
        into.insert(name, m);
    }
    r.finish()
}

impl Snapshot {
    /// Serialized snapshot: `"CVSN", u8 version, u64 view, u64 seqno, u32+public maps,
    /// u32+encrypted private maps`. Needs the secret only if there are private maps.
    pub fn to_bytes(&self, secret: Option<&LedgerSecret>) -> Result<Vec<u8>, KvError> {
        let public = encode_maps(self.maps.iter().filter(|(n, _)| is_public(n)));
        let private_plain = encode_maps(self.maps.iter().filter(|(n, _)| !is_public(n)));
        let has_private = self
            .maps
            .iter()
            .any(|(n, m)| !is_public(n) && !m.is_empty());
        let private = if has_private {
            let s = secret.ok_or_else(|| {
                KvError::malformed("snapshot", "private maps but no ledger secret")
            })?;
            s.encrypt(self.txid, NonceDomain::Snapshot, &private_plain)?
        } else {
            Vec::new()
        };
        let mut out = Vec::with_capacity(public.len() + private.len() + 32);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        put_u64(&mut out, self.txid.view.0);
        put_u64(&mut out, self.txid.seqno.0);
        put_bytes(&mut out, &public);
        put_bytes(&mut out, &private);
        Ok(out)
    }

    pub fn from_bytes(bytes: &[u8], secret: Option<&LedgerSecret>) -> Result<Snapshot, KvError> {
        let (txid, public, private) = split(bytes)?;
        let mut maps = Maps::new();
        decode_maps(public, &mut maps, true, txid.seqno.0)?;
        if !private.is_empty() {
            let s = secret.ok_or_else(|| {
                KvError::malformed("snapshot", "private maps need the ledger secret")
            })?;
            let plain = s.decrypt(txid, NonceDomain::Snapshot, private)?;
            decode_maps(&plain, &mut maps, false, txid.seqno.0)?;
        }
        Ok(Snapshot { txid, maps })
    }

    /// Decodes only the public maps, leaving the private ciphertext unopened: what an
    /// auditor without the ledger secret can check. A separate type, so it can never
    /// be mistaken for the whole state.
    pub fn public_from_bytes(bytes: &[u8]) -> Result<PublicSnapshot, KvError> {
        let (txid, public, _) = split(bytes)?;
        let mut maps = Maps::new();
        decode_maps(public, &mut maps, true, txid.seqno.0)?;
        Ok(PublicSnapshot { txid, maps })
    }

    /// Value of `key` in `map` in this state.
    pub fn get(&self, map: &str, key: &[u8]) -> Option<&[u8]> {
        get(&self.maps, map, key)
    }
}

/// The public maps of a [`Snapshot`] (see [`Snapshot::public_from_bytes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicSnapshot {
    pub txid: TxId,
    maps: Maps,
}

impl PublicSnapshot {
    /// Value of `key` in the public map `map`.
    pub fn get(&self, map: &str, key: &[u8]) -> Option<&[u8]> {
        get(&self.maps, map, key)
    }
}

fn get<'a>(maps: &'a Maps, map: &str, key: &[u8]) -> Option<&'a [u8]> {
    maps.get(map)
        .and_then(|m| m.get(key))
        .map(|(v, _)| v.as_slice())
}

/// Header checks and framing: (TxId, public maps bytes, private ciphertext).
fn split(bytes: &[u8]) -> Result<(TxId, &[u8], &[u8]), KvError> {
    let mut r = Reader::new(bytes, "snapshot");
    if r.take(4)? != MAGIC {
        return Err(KvError::malformed("snapshot", "bad magic"));
    }
    if r.u8()? != VERSION {
        return Err(KvError::malformed("snapshot", "unknown version"));
    }
    let view = r.u64()?;
    let seqno = r.u64()?;
    if view == 0 || seqno == 0 {
        return Err(KvError::malformed("snapshot", "zero TxId"));
    }
    let txid = TxId::new(view, seqno);
    let public = r.bytes()?;
    let private = r.bytes()?;
    r.finish()?;
    Ok((txid, public, private))
}
