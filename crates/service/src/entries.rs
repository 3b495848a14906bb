//! The ACL ledger application's data: entries by collection, their tags, and the
//! LedgerEntryV1 claims that bind an entry's contents into its receipt.

use base64::Engine as _;
use covenant_kv::WriteSet;
use covenant_receipt::{ApplicationClaim, LedgerEntryClaim, ReceiptResponse};
use covenant_types::{Digest32, TxId};
use serde::Serialize;

use crate::tables::{entries_map, tags_map, CLAIM_KEYS};

/// The collection of entries appended without a `collectionId`.
pub const DEFAULT_COLLECTION: &str = "subledger:0";

/// One ledger entry as the ACL API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub collection_id: String,
    pub contents: String,
    pub transaction_id: TxId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
}

impl Entry {
    /// Whether the entry carries `tag` among its comma-separated tags.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags
            .as_deref()
            .is_some_and(|t| t.split(',').any(|x| x == tag))
    }
}

/// The entry transaction `txid` (whose write set is `ws`) wrote to `collection`.
pub fn entry_in(ws: &WriteSet, txid: TxId, collection: &str, public: bool) -> Option<Entry> {
    let contents = ws
        .get(entries_map(public), collection.as_bytes())
        .flatten()?;
    Some(Entry {
        collection_id: collection.to_string(),
        contents: String::from_utf8_lossy(contents).to_string(),
        transaction_id: txid,
        tags: ws
            .get(tags_map(public), collection.as_bytes())
            .flatten()
            .map(|t| String::from_utf8_lossy(t).to_string()),
    })
}

/// A fresh LedgerEntryV1 claim key for an entry, and the claims digest that enters
/// the transaction's leaf (the key stays private until the receipt reveals it).
pub fn new_claim(collection: &str, contents: &str) -> Result<([u8; 32], Digest32), ClaimError> {
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| ClaimError::Randomness)?;
    let claim = ledger_entry_claim(collection, contents, &key);
    let digest = covenant_receipt::claims_digest(std::slice::from_ref(&claim))
        .map_err(|e| ClaimError::Digest(e.to_string()))?;
    Ok((key, digest))
}

/// Why an entry's claim could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("the system's random number generator failed")]
    Randomness,
    #[error("computing the claims digest failed: {0}")]
    Digest(String),
}

fn ledger_entry_claim(collection: &str, contents: &str, key: &[u8]) -> ApplicationClaim {
    ApplicationClaim::LedgerEntry {
        ledger_entry: LedgerEntryClaim {
            collection_id: collection.to_string(),
            contents: contents.to_string(),
            secret_key: base64::engine::general_purpose::STANDARD.encode(key),
            protocol: "LedgerEntryV1".into(),
        },
    }
}

/// The claims an entry transaction's receipt reveals: one LedgerEntryV1 claim per
/// entry it wrote with a claim key.
pub fn claims_of(ws: &WriteSet, public: bool) -> Vec<ApplicationClaim> {
    let Some(keys) = ws.maps.get(CLAIM_KEYS) else {
        return Vec::new();
    };
    keys.iter()
        .filter_map(|(collection, key)| {
            let key = key.as_ref()?;
            let contents = ws.get(entries_map(public), collection).flatten()?;
            Some(ledger_entry_claim(
                &String::from_utf8_lossy(collection),
                &String::from_utf8_lossy(contents),
                key,
            ))
        })
        .collect()
}

/// A receipt with the application claims it proves (ACL's `applicationClaims`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptWithClaims {
    #[serde(flatten)]
    pub response: ReceiptResponse,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub application_claims: Vec<ApplicationClaim>,
}
