//! The error every route answers with, and how the service's errors map to it.
//! A leaf module.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use covenant_service::ServiceError;
use serde_json::json;

/// An API error: an HTTP status and the `{"error":{"code","message"}}` body every
/// covenant route answers with (SPEC §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    /// An engine failure: history this node does not hold (it started from a
    /// snapshot) is the caller's 404, anything else the node's own failure.
    pub fn engine(context: &str, err: impl Into<covenant_engine::EngineError>) -> Self {
        Self::service(context, ServiceError::from(err.into()))
    }

    /// A service failure, as the client sees it: what it can act on (another node,
    /// later, not found) with its own status; the node's own failures as 500 with
    /// the detail in the log.
    pub fn service(context: &str, err: ServiceError) -> Self {
        match err {
            ServiceError::NotHeld(seqno) => Self::new(
                StatusCode::NOT_FOUND,
                "TransactionNotHeld",
                format!(
                    "seqno {seqno} precedes this node's ledger (it started from a snapshot); \
                     ask a node that holds the whole ledger"
                ),
            ),
            ServiceError::NoSuchTx(txid) => Self::not_found(
                "InvalidTransactionId",
                format!("transaction {txid} does not exist"),
            ),
            e @ ServiceError::NotRecovered(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "PrivateStateNotRecovered",
                e.to_string(),
            ),
            e @ ServiceError::DiskFull(_) => Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "InsufficientStorage",
                e.to_string(),
            ),
            e @ ServiceError::Index(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("{e}; the node reopens it from the ledger, retry"),
            ),
            e @ ServiceError::Busy => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceBusy",
                e.to_string(),
            ),
            e @ ServiceError::Conflict { .. } => {
                Self::new(StatusCode::CONFLICT, "TransactionConflict", e.to_string())
            }
            e @ (ServiceError::NotPrimary { .. }
            | ServiceError::NotReady
            | ServiceError::ReplicationFailed(_)) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                e.to_string(),
            ),
            other => Self::internal(context, other),
        }
    }

    /// A failure of the node itself; the details go to the log, not to the client.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("{context}; see the node log"),
        )
    }
}

/// A request body that could not be read: too large (413) or broken off (400), in
/// covenant's error shape rather than the framework's plain text.
pub fn body_error(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            "PayloadTooLarge",
            "the request body exceeds the configured maximum",
        )
    } else {
        ApiError::new(
            status,
            "InvalidInput",
            format!("cannot read the request body: {rejection}"),
        )
    }
}

/// 413 for a body over `limit` bytes.
pub(crate) fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PayloadTooLarge",
        format!("request bodies are limited to {limit} bytes"),
    )
}

/// A body that could not be read: over the edge's cap (413) or broken off (400).
pub(crate) fn body_read_error(e: &axum::Error) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                "the request body exceeds the configured maximum",
            );
        }
        source = s.source();
    }
    ApiError::bad_request("InvalidInput", format!("reading the body: {e}"))
}

/// The body bytes, or the error in covenant's shape.
pub type Body = Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

/// Every error leaves the node as `{"error":{"code","message"}}`: framework
/// rejections (a malformed query or path, say) arrive as plain text and are wrapped.
pub async fn json_errors(resp: axum::response::Response) -> axum::response::Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let text = match axum::body::to_bytes(resp.into_body(), 16 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).to_string(),
        Err(_) => String::new(),
    };
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "PayloadTooLarge",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::NOT_FOUND => "ResourceNotFound",
        s if s.is_server_error() => "InternalError",
        _ => "InvalidInput",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    ApiError::new(status, code, message).into_response()
}
