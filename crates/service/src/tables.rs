//! Every table (KV map) of the service, by name, in one place: the ones this
//! crate owns, and the ones owned by lower layers re-exported, so a reader finds
//! what the ledger holds without searching the tree. A `public:` prefix keeps a
//! table in clear in the ledger; every other table is encrypted with the ledger
//! secret.

/// ACL ledger entries on a private ledger: collection id → contents.
pub const ENTRIES_PRIVATE: &str = "acl.entries";
/// ACL ledger entries on a public ledger (in clear).
pub const ENTRIES_PUBLIC: &str = "public:acl.entries";
/// Per-entry claim keys (LedgerEntryV1): collection id → 32-byte key. Private even
/// on a public ledger: the key is revealed only with the entry's receipt.
pub const CLAIM_KEYS: &str = "acl.claim_keys";
/// Tags of the last entry of a collection, private ledger.
pub const TAGS_PRIVATE: &str = "acl.tags";
/// Tags of the last entry of a collection, public ledger.
pub const TAGS_PUBLIC: &str = "public:acl.tags";
/// ACL user-defined functions: function id → `{"code": ...}`.
pub const FUNCTIONS: &str = "acl.user_defined_functions";

/// CCF's map of user certificates: user id → PEM.
pub const USERS_CERTS: &str = "public:ccf.gov.users.certs";
/// CCF's map of user data: user id → `{"user_data": {...}}`.
pub const USERS_INFO: &str = "public:ccf.gov.users.info";
/// The nodes of the service: node id → a node row (JSON: status, raft_id, address, cert, ...).
pub const NODES_INFO: &str = "public:ccf.gov.nodes.info";
/// Trusted code ids (binary measurements) a joining node must present.
pub const NODES_CODE_IDS: &str = "public:ccf.gov.nodes.code_ids";
/// Governance messages already seen (COSE replay protection), by created_at.
pub const COSE_RECENT: &str = "public:ccf.gov.cose_recent";
/// HTTP-signed governance requests already seen (replay protection).
pub const HTTP_SIGNATURES_SEEN: &str = "public:ccf.gov.http_signatures_seen";

pub use covenant_app::{ENDPOINTS, MODULES, RUNTIME_OPTIONS};
pub use covenant_consensus::{MEMBERSHIP_KEY, MEMBERSHIP_MAP};
pub use covenant_governance::{
    CONSTITUTION, CONSTITUTION_KEY, JWT_ISSUERS, MEMBERS_ACKS, MEMBERS_CERTS,
    MEMBERS_ENCRYPTION_KEYS, MEMBERS_INFO, PROPOSALS, PROPOSALS_INFO, SERVICE_CONFIG,
    SERVICE_CONFIG_KEY, SERVICE_INFO, SERVICE_INFO_KEY,
};
pub use covenant_receipt::SIGNATURES_MAP;
pub use covenant_recovery::{RECOVERY_SHARES, RECOVERY_SHARES_KEY};

/// The map holding the ledger app's entries: in clear on a public ledger.
pub fn entries_map(ledger_public: bool) -> &'static str {
    if ledger_public {
        ENTRIES_PUBLIC
    } else {
        ENTRIES_PRIVATE
    }
}

/// The map holding the entries' tags: in clear on a public ledger.
pub fn tags_map(ledger_public: bool) -> &'static str {
    if ledger_public {
        TAGS_PUBLIC
    } else {
        TAGS_PRIVATE
    }
}
