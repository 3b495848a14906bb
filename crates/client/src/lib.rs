//! covenant's Rust client. For now: verifying what the service hands out, offline,
//! with nothing but the service certificate: receipts (SPEC §3) and consistency
//! proofs between two signed roots.

mod verify;

pub use verify::{verify_consistency, ReceiptVerifier, VerifiedReceipt, VerifyError};
