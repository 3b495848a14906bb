//! The identity service (SPEC §9): `GET /ledgerIdentity/{ledgerId}` →
//! `{"ledgerId","ledgerTlsCertificate"}`, the service certificate a client pins.
//! Served apart from the ledger by `covenant identity-service` from a directory of
//! `<ledgerId>.pem` files (so it keeps answering while a ledger is down or after its
//! identity changes), and by every node for its own ledger id.

use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::ApiError;

/// A ledger id: letters, digits, `-` and `_`, 1..64 characters (a file name, safely).
pub fn valid_ledger_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(
        "LedgerNotFound",
        format!("no ledger named {id:?} is known to this identity service"),
    )
}

/// The standalone service's routes over `dir`.
pub fn router(dir: PathBuf) -> Router {
    Router::new()
        .route("/ledgerIdentity/{ledger_id}", get(from_dir))
        .fallback(|| async { ApiError::not_found("ResourceNotFound", "no such route") })
        .with_state(dir)
}

async fn from_dir(
    State(dir): State<PathBuf>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !valid_ledger_id(&id) {
        return Err(not_found(&id));
    }
    let pem = tokio::fs::read_to_string(dir.join(format!("{id}.pem")))
        .await
        .map_err(|_| not_found(&id))?;
    // Serve only what parses as a certificate: a half-written file is not an identity.
    covenant_crypto::Certificate::from_pem(&pem)
        .map_err(|e| ApiError::internal("the stored service certificate is invalid", e))?;
    Ok(Json(json!({"ledgerId": id, "ledgerTlsCertificate": pem})))
}

/// A node's own answer for its ledger id.
pub fn own(ledger_id: &str, service_cert_pem: &str, asked: &str) -> Result<Json<Value>, ApiError> {
    if asked != ledger_id {
        return Err(not_found(asked));
    }
    Ok(Json(
        json!({"ledgerId": ledger_id, "ledgerTlsCertificate": service_cert_pem}),
    ))
}
