//! The vocabulary of proofs (SPEC §3): what a signature transaction records, how
//! commit evidence and application claims digests are derived, and the exact JSON
//! shape of an ACL receipt. Building receipts needs the tree (engine crate);
//! verifying them needs only this crate and the client crate.

#![forbid(unsafe_code)]

mod claims;
mod evidence;
mod signature;
mod types;

pub use claims::{claims_digest, ApplicationClaim, ClaimDigestBody, LedgerEntryClaim};
pub use evidence::{
    commit_evidence, commit_evidence_digest, parse_commit_evidence, CommitEvidenceKey,
};
pub use signature::{SignatureRecord, SIGNATURES_MAP, SIGNATURE_KEY};
pub use types::{LeafComponents, Receipt, ReceiptResponse, ReceiptState};

/// Every way a receipt input is refused.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    #[error("invalid application claims: {0}")]
    Claims(String),
    #[error("invalid commit evidence {0:?}")]
    CommitEvidence(String),
    #[error("invalid signature record: {0}")]
    Signature(String),
}
