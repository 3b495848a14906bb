use std::collections::BTreeMap;

use crate::codec::{put_bytes, put_u32, Reader};
use crate::{is_public, KvError};

/// Version byte that starts every serialized write set.
pub const WRITE_SET_FORMAT_VERSION: u8 = 1;

/// Longest map name accepted.
pub const MAX_MAP_NAME: usize = 1024;

/// What one transaction wrote: per map, per key, the new value or `None` for a removal.
///
/// Maps and keys are ordered, so the serialization is canonical: the same writes
/// always give the same bytes (and so the same writeSetDigest and Merkle leaf).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSet {
    pub maps: BTreeMap<String, BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl WriteSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.maps.values().all(|m| m.is_empty())
    }

    pub fn put(&mut self, map: &str, key: &[u8], value: &[u8]) {
        self.maps
            .entry(map.to_string())
            .or_default()
            .insert(key.to_vec(), Some(value.to_vec()));
    }

    pub fn remove(&mut self, map: &str, key: &[u8]) {
        self.maps
            .entry(map.to_string())
            .or_default()
            .insert(key.to_vec(), None);
    }

    /// The write to `key` in `map`, if any: `Some(None)` is a removal.
    pub fn get(&self, map: &str, key: &[u8]) -> Option<Option<&[u8]>> {
        self.maps
            .get(map)
            .and_then(|m| m.get(key))
            .map(|v| v.as_deref())
    }

    /// Splits into (public maps, private maps).
    pub fn split(&self) -> (WriteSet, WriteSet) {
        let mut public = WriteSet::new();
        let mut private = WriteSet::new();
        for (name, writes) in &self.maps {
            if writes.is_empty() {
                continue;
            }
            let target = if is_public(name) {
                &mut public
            } else {
                &mut private
            };
            target.maps.insert(name.clone(), writes.clone());
        }
        (public, private)
    }

    /// Merges `other` into `self` (later writes win).
    pub fn merge(&mut self, other: WriteSet) {
        for (name, writes) in other.maps {
            self.maps.entry(name).or_default().extend(writes);
        }
    }

    /// Canonical binary form:
    /// `u8 version, u32 map count, { u32+name, u32 write count, { u32+key, u8 0=remove|1=put, [u32+value] } }`,
    /// all integers little-endian, maps and keys in byte order, empty maps omitted.
    pub fn serialize(&self) -> Vec<u8> {
        self.serialize_where(|_| true)
    }

    /// Serializes only the public (or only the private) maps, exactly as
    /// `split()` followed by `serialize()` would, without copying the writes.
    pub fn serialize_part(&self, public: bool) -> Vec<u8> {
        self.serialize_where(|name| is_public(name) == public)
    }

    /// Whether any non-empty map is private.
    pub fn has_private(&self) -> bool {
        self.maps
            .iter()
            .any(|(n, w)| !is_public(n) && !w.is_empty())
    }

    fn serialize_where(&self, keep: impl Fn(&str) -> bool) -> Vec<u8> {
        let maps: Vec<_> = self
            .maps
            .iter()
            .filter(|(n, w)| !w.is_empty() && keep(n))
            .collect();
        let size: usize = maps
            .iter()
            .map(|(n, w)| {
                8 + n.len()
                    + w.iter()
                        .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, |v| v.len()))
                        .sum::<usize>()
            })
            .sum();
        let mut out = Vec::with_capacity(5 + size);
        out.push(WRITE_SET_FORMAT_VERSION);
        put_u32(&mut out, maps.len() as u32);
        for (name, writes) in maps {
            put_bytes(&mut out, name.as_bytes());
            put_u32(&mut out, writes.len() as u32);
            for (k, v) in writes {
                put_bytes(&mut out, k);
                match v {
                    None => out.push(0),
                    Some(v) => {
                        out.push(1);
                        put_bytes(&mut out, v);
                    }
                }
            }
        }
        out
    }

    /// Parses [`WriteSet::serialize`] output, refusing anything non-canonical
    /// (unsorted or repeated maps/keys, empty maps, bad tags, trailing bytes), so that
    /// one write set has exactly one encoding.
    pub fn deserialize(bytes: &[u8]) -> Result<WriteSet, KvError> {
        let mut r = Reader::new(bytes, "write set");
        let v = r.u8()?;
        if v != WRITE_SET_FORMAT_VERSION {
            return Err(KvError::malformed(
                "write set",
                format!("unknown version {v}"),
            ));
        }
        let nmaps = r.count(8)?;
        let mut ws = WriteSet::new();
        let mut prev_name: Option<String> = None;
        for _ in 0..nmaps {
            let name = std::str::from_utf8(r.bytes()?)
                .map_err(|_| KvError::malformed("write set", "map name is not UTF-8"))?
                .to_string();
            if name.is_empty() || name.len() > MAX_MAP_NAME {
                return Err(KvError::BadMapName(name));
            }
            if prev_name.as_ref().is_some_and(|p| *p >= name) {
                return Err(KvError::malformed(
                    "write set",
                    "maps not in canonical order",
                ));
            }
            let nwrites = r.count(5)?;
            if nwrites == 0 {
                return Err(KvError::malformed("write set", "empty map"));
            }
            let mut writes = BTreeMap::new();
            let mut prev_key: Option<&[u8]> = None;
            for _ in 0..nwrites {
                let key = r.bytes()?;
                if prev_key.is_some_and(|p| p >= key) {
                    return Err(KvError::malformed(
                        "write set",
                        "keys not in canonical order",
                    ));
                }
                prev_key = Some(key);
                let value = match r.u8()? {
                    0 => None,
                    1 => Some(r.bytes()?.to_vec()),
                    t => {
                        return Err(KvError::malformed(
                            "write set",
                            format!("bad write tag {t}"),
                        ))
                    }
                };
                writes.insert(key.to_vec(), value);
            }
            ws.maps.insert(name.clone(), writes);
            prev_name = Some(name);
        }
        r.finish()?;
        Ok(ws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_ws() -> impl Strategy<Value = WriteSet> {
        proptest::collection::btree_map(
            "(public:)?[a-z.:]{1,12}",
            proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..12),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
                1..6,
            ),
            0..5,
        )
        .prop_map(|maps| WriteSet { maps })
    }

    proptest! {
        #[test]
        fn roundtrip_and_canonical(ws in arb_ws()) {
            let bytes = ws.serialize();
            let back = WriteSet::deserialize(&bytes).unwrap();
            prop_assert_eq!(&back, &ws);
            prop_assert_eq!(back.serialize(), bytes);
        }

        #[test]
        fn insertion_order_does_not_matter(ws in arb_ws()) {
            let mut rebuilt = WriteSet::new();
            for (m, writes) in ws.maps.iter().rev() {
                for (k, v) in writes.iter().rev() {
                    match v {
                        Some(v) => rebuilt.put(m, k, v),
                        None => rebuilt.remove(m, k),
                    }
                }
            }
            prop_assert_eq!(rebuilt.serialize(), ws.serialize());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = WriteSet::deserialize(&bytes);
        }

        #[test]
        fn truncation_is_refused(ws in arb_ws(), cut in any::<usize>()) {
            let bytes = ws.serialize();
            let cut = cut % bytes.len();
            prop_assert!(WriteSet::deserialize(&bytes[..cut]).is_err());
        }

                #[test]
        fn serialize_part_equals_split(ws in arb_ws()) {
            let (p, q) = ws.split();
            prop_assert_eq!(ws.serialize_part(true), p.serialize());
            prop_assert_eq!(ws.serialize_part(false), q.serialize());
            prop_assert_eq!(ws.has_private(), !q.is_empty());
        }

        #[test]
        fn split_partitions(ws in arb_ws()) {
            let (p, q) = ws.split();
            prop_assert!(p.maps.keys().all(|m| is_public(m)));
            prop_assert!(q.maps.keys().all(|m| !is_public(m)));
            let mut merged = p;
            merged.merge(q);
            let nonempty: BTreeMap<_, _> = ws.maps.into_iter().filter(|(_, w)| !w.is_empty()).collect();
            prop_assert_eq!(merged.maps, nonempty);
        }
    }

    #[test]
    fn non_canonical_is_refused() {
        let mut ws = WriteSet::new();
        ws.put("b", b"k", b"v");
        ws.put("a", b"k", b"v");
        let mut bytes = ws.serialize();
        // Swap the two one-letter map names: now "b" comes before "a".
        let a = bytes.iter().position(|&c| c == b'a').unwrap();
        let b = bytes.iter().position(|&c| c == b'b').unwrap();
        bytes.swap(a, b);
        assert!(WriteSet::deserialize(&bytes).is_err());
    }
}
