//! covenant's Rust client. For now: verifying what the service hands out, offline,
//! with nothing but the service certificate: receipts (SPEC §3) and consistency
//! proofs between two signed roots; and an HTTPS client for the ledger API that pins
//! the service certificate and authenticates with a client certificate.

#![forbid(unsafe_code)]

mod http;
mod verify;

pub use http::{ClientError, Connection, HttpResponse, LedgerClient};
pub use verify::{verify_consistency, ReceiptVerifier, VerifiedReceipt, VerifyError};
