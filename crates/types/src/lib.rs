//! Identifiers shared by every covenant layer.
//!
//! A transaction is named by its [`TxId`] `"<view>.<seqno>"`: the view is the
//! Raft term in which the primary executed it, the seqno its 1-based, gapless
//! position in the service's history. Both are plain integers wrapped in
//! newtypes so that the two can never be swapped by accident.

#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Raft term in which a transaction was executed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct View(pub u64);

/// Global, 1-based, gapless position of a transaction in the ledger.
///
/// `SeqNo::ZERO` means "before the first transaction": the commit point of an
/// empty ledger, the base of a ledger that starts at genesis. Raft's log index
/// is the same number; the consensus crate converts at its boundary.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SeqNo(pub u64);

impl SeqNo {
    /// Before the first transaction.
    pub const ZERO: SeqNo = SeqNo(0);

    /// The seqno after this one.
    pub fn next(self) -> SeqNo {
        SeqNo(self.0 + 1)
    }

    /// The seqno before this one (`ZERO` stays `ZERO`).
    pub fn prev(self) -> SeqNo {
        SeqNo(self.0.saturating_sub(1))
    }

    /// How many transactions lie after `earlier` up to and including `self`
    /// (0 when `earlier` is not before `self`).
    pub fn since(self, earlier: SeqNo) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The seqno `n` transactions after this one.
    pub fn plus(self, n: u64) -> SeqNo {
        SeqNo(self.0.saturating_add(n))
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a string is not a valid TxId.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid transaction id {input:?}: expected <view>.<seqno> with both parts positive integers"
)]
pub struct TxIdParseError {
    /// The rejected input (truncated to 64 characters so that errors stay small).
    pub input: String,
}

/// A transaction identifier, `"<view>.<seqno>"` on the wire.
///
/// Views start at 1 and seqnos at 1; `0.0` is never a valid transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxId {
    pub view: View,
    pub seqno: SeqNo,
}

impl TxId {
    pub fn new(view: u64, seqno: u64) -> TxId {
        TxId {
            view: View(view),
            seqno: SeqNo(seqno),
        }
    }
}

impl PartialOrd for TxId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Transactions are ordered by seqno first: that is their position in the ledger.
impl Ord for TxId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.seqno, self.view).cmp(&(other.seqno, other.view))
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.view.0, self.seqno.0)
    }
}

fn parse_positive(part: &str) -> Option<u64> {
    // Digits only: no sign, no whitespace, no leading '+'; u64 parse rejects overflow.
    if part.is_empty() || part.len() > 20 || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse::<u64>().ok().filter(|v| *v > 0)
}

impl FromStr for TxId {
    type Err = TxIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TxIdParseError {
            input: s.chars().take(64).collect(),
        };
        let (view, seqno) = s.split_once('.').ok_or_else(err)?;
        let view = parse_positive(view).ok_or_else(err)?;
        let seqno = parse_positive(seqno).ok_or_else(err)?;
        Ok(TxId::new(view, seqno))
    }
}

impl Serialize for TxId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TxId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A SHA-256 output. Serialized as lowercase hex, as in every covenant JSON document.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest32(pub [u8; 32]);

impl Digest32 {
    pub const ZERO: Digest32 = Digest32([0u8; 32]);

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Result<Digest32, DigestParseError> {
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return Err(DigestParseError::Length(s.len()));
        }
        hex::decode_to_slice(s, &mut out).map_err(|_| DigestParseError::NotHex)?;
        Ok(Digest32(out))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest32({})", self.to_hex())
    }
}

impl fmt::Display for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl From<[u8; 32]> for Digest32 {
    fn from(b: [u8; 32]) -> Self {
        Digest32(b)
    }
}

impl AsRef<[u8]> for Digest32 {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Why a string is not a 32-byte hex digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestParseError {
    #[error("expected 64 hex digits, got {0} characters")]
    Length(usize),
    #[error("not a hex string")]
    NotHex,
}

impl Serialize for Digest32 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest32 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Digest32::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id as the tables spell it (lower-case hex).
            pub fn new(id: impl Into<String>) -> $name {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<Digest32> for $name {
            fn from(d: Digest32) -> $name {
                $name(d.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

hex_id!(
    /// A node of the service: the lower-case hex SHA-256 of its public key (DER
    /// SubjectPublicKeyInfo), as CCF names nodes. Its Raft id is another thing
    /// (a small integer given when it is trusted) and is always called `raft_id`.
    NodeId
);

hex_id!(
    /// A consortium member: the lower-case hex SHA-256 of its certificate's DER.
    MemberId
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn txid_parses_and_prints() {
        let t: TxId = "2.35".parse().unwrap();
        assert_eq!(t, TxId::new(2, 35));
        assert_eq!(t.to_string(), "2.35");
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"2.35\"");
    }

    #[test]
    fn txid_rejects_malformed() {
        for bad in [
            "",
            "2",
            "2.",
            ".3",
            "a.b",
            "2.3.4",
            "-1.3",
            "+1.3",
            " 1.3",
            "0.1",
            "1.0",
            "1.99999999999999999999999",
        ] {
            assert!(bad.parse::<TxId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn digest_hex_roundtrip() {
        let d = Digest32([0xab; 32]);
        assert_eq!(Digest32::from_hex(&d.to_hex()).unwrap(), d);
        assert!(Digest32::from_hex("zz").is_err());
        assert!(Digest32::from_hex(&"g".repeat(64)).is_err());
    }

    proptest! {
        #[test]
        fn txid_roundtrip(v in 1u64.., s in 1u64..) {
            let t = TxId::new(v, s);
            prop_assert_eq!(t.to_string().parse::<TxId>().unwrap(), t);
        }

        #[test]
        fn txid_parse_never_panics(s in ".{0,40}") {
            let _ = s.parse::<TxId>();
        }
    }
}
