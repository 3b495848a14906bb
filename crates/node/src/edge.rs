//! The first thing every request meets, before routing, forwarding or any body is
//! read: who the client is, whether the route can be reached without a credential,
//! and how many body bytes may be read at all.
//!
//! Why one place: identity and body limits decided per handler drifted apart (a
//! backup forwarded uncertified requests under its own certificate, and buffered
//! 64 MiB bodies before anything checked who sent them). Here:
//!
//! - The client's certificate is the TLS peer's, or, for a request a backup
//!   forwarded, the certificate the client presented to that backup (sent along
//!   whole, accepted only from a node endorsed by the service). Handlers and every
//!   app auth policy read that one [`PeerCert`]; a forwarded request without a
//!   client certificate has none, never the backup's.
//! - Forwarding headers from anyone but a node are refused (400), never honoured.
//! - Routes that need a credential refuse a request presenting none (no client
//!   certificate, no bearer token) with 401 before its body is read; `/internal/*`
//!   refuses everything but nodes (403) the same way.
//! - Every body is capped at the node's `max_body_bytes` (a declared length over
//!   it is refused at once with 413; a streamed one stops at the cap), consensus
//!   batches between nodes excepted.
//! - A request answered before its body was read (refused here or by a handler)
//!   has the rest of the body (up to one more cap's worth, within
//!   [`DRAIN_TIMEOUT`]) read and dropped before the answer goes out, so the client,
//!   still sending, sees the answer rather than a reset (HTTP/2 stream reset, or
//!   TCP reset under HTTP/1.1); a larger declared body is answered at once and the
//!   connection closes.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use covenant_crypto::Certificate;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::error::too_large;
use crate::error::ApiError;
use crate::http::{
    FORWARDED, FORWARDED_CERT, FORWARDED_COMMITTED, JOIN_PATH, MAX_RAFT_BODY_BYTES, RAFT_PATH,
};
use crate::server::PeerCert;
use crate::state::NodeState;

/// A header name older covenant nodes forwarded identities in; refused like the others.
const FORWARDED_USER_LEGACY: &str = "x-covenant-forwarded-user";

/// Longest a refused HTTP/2 request's remaining body is read for a clean stream end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the edge needs besides the node's state.
#[derive(Clone)]
pub struct Edge {
    pub state: NodeState,
    /// The documented request body limit (`max_body_bytes`).
    pub max_body_bytes: usize,
}

/// What a route asks of a request before its body may be read.
#[derive(Debug, PartialEq, Eq)]
enum Gate {
    /// Nothing (public reads, governance whose signature is in the body, app
    /// endpoints that take anonymous or body-signed requests).
    Open,
    /// A client certificate or a bearer token.
    Credential,
    /// A client certificate (a joining node proves its key with it).
    Certificate,
    /// A node of this service.
    Node,
}

fn gate(app: Option<&crate::state::CurrentApp>, method: &axum::http::Method, path: &str) -> Gate {
    if path.starts_with("/internal/") {
        return Gate::Node;
    }
    if path == JOIN_PATH {
        return Gate::Certificate;
    }
    if path.starts_with("/app/") || path == "/app" {
        // CCF serves these to anyone on every frontend (unless the app has its own).
        const COMMON: &[&str] = &["/app/commit", "/app/tx", "/app/api"];
        if method == axum::http::Method::GET && COMMON.contains(&path) {
            let app_endpoint = app.and_then(|a| a.0.as_deref()).and_then(|a| {
                covenant_service::apps::endpoint_needs_credential(a, method.as_str(), path)
            });
            return match app_endpoint {
                Some(true) => Gate::Credential,
                _ => Gate::Open,
            };
        }
        let endpoint = app.and_then(|a| a.0.as_deref()).and_then(|a| {
            covenant_service::apps::endpoint_needs_credential(a, method.as_str(), path)
        });
        return match endpoint {
            Some(false) => Gate::Open,
            // An app endpoint whose every policy needs one, or a built-in ledger route.
            Some(true) | None => Gate::Credential,
        };
    }
    Gate::Open
}

fn has_bearer(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION)
}

/// The client certificate a node forwarded (base64 DER), with its user id.
fn forwarded_client(headers: &HeaderMap) -> Result<PeerCert, ApiError> {
    let Some(v) = headers.get(FORWARDED_CERT) else {
        return Ok(PeerCert(None));
    };
    let bad = || {
        ApiError::bad_request(
            "InvalidInput",
            "the forwarded client certificate is malformed",
        )
    };
    let der = base64::engine::general_purpose::STANDARD
        .decode(v.as_bytes())
        .map_err(|_| bad())?;
    let cert = Certificate::from_der(&der).map_err(|_| bad())?;
    let id = covenant_crypto::sha256(cert.der());
    Ok(PeerCert(Some(Arc::new((cert, id)))))
}

/// Middleware: the edge checks above, then the rest of the stack.
pub async fn guard(State(edge): State<Edge>, mut req: Request, next: Next) -> Response {
    let transport = req
        .extensions()
        .get::<PeerCert>()
        .cloned()
        .unwrap_or_default();
    let headers = req.headers();
    let forwarded = headers.contains_key(FORWARDED)
        || headers.contains_key(FORWARDED_CERT)
        || headers.contains_key(FORWARDED_COMMITTED)
        || headers.contains_key(FORWARDED_USER_LEGACY);
    let from_node = || {
        edge.state
            .network
            .as_ref()
            .is_some_and(|n| n.is_node(&transport))
    };
    if forwarded {
        if !headers.contains_key(FORWARDED)
            || headers.contains_key(FORWARDED_USER_LEGACY)
            || !from_node()
        {
            return refusal(
                req,
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidInput",
                    "x-covenant-forwarded* headers are set only by the nodes of this service \
                     when they forward a request; send the request without them",
                ),
                edge.max_body_bytes,
            )
            .await;
        }
        match forwarded_client(req.headers()) {
            Ok(client) => {
                req.headers_mut().remove(FORWARDED_CERT);
                req.extensions_mut().insert(client);
            }
            Err(e) => return refusal(req, e, edge.max_body_bytes).await,
        }
    }
    let client = req
        .extensions()
        .get::<PeerCert>()
        .cloned()
        .unwrap_or_default();
    if req.uri().path().starts_with("/app") {
        // Looked up once here; forwarding and dispatch reuse it.
        if let Ok(app) = edge.state.service.apps().current(&edge.state.store) {
            req.extensions_mut().insert(crate::state::CurrentApp(app));
        }
    }
    let needs = gate(req.extensions().get(), req.method(), req.uri().path());
    let refused = match needs {
        Gate::Open => None,
        Gate::Credential if client.0.is_none() && !has_bearer(req.headers()) => {
            Some(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "present a client certificate or a bearer token of a ledger user",
            ))
        }
        Gate::Certificate if client.0.is_none() => Some(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "a joining node presents its own key as a TLS client certificate",
        )),
        Gate::Node if forwarded || !from_node() => Some(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "only nodes endorsed by the service identity may call /internal routes",
        )),
        _ => None,
    };
    if let Some(e) = refused {
        return refusal(req, e, edge.max_body_bytes).await;
    }
    if let Err(e) = check_query(req.uri().query()) {
        return refusal(req, e, edge.max_body_bytes).await;
    }
    let limit = if needs == Gate::Node && req.uri().path() == RAFT_PATH {
        MAX_RAFT_BODY_BYTES
    } else {
        edge.max_body_bytes
    };
    if declared_length(req.headers()).is_some_and(|n| n > limit as u64) {
        // A body a little over the limit is read and dropped so the client gets
        // its 413; a much larger one is not worth reading.
        return refusal(req, too_large(limit), limit.saturating_mul(2)).await;
    }
    let (parts, body) = req.into_parts();
    if body.is_end_stream() {
        // No body at all (most reads): nothing to cap or drain.
        return next.run(Request::from_parts(parts, body)).await;
    }
    // The handler reads through the cap; the edge keeps the body itself, so that
    // whatever the handler leaves unread (all of it, or what lies past the cap) can
    // be drained, up to one more cap's worth, before the answer goes out.
    let shared = Arc::new(Mutex::new(Some(body)));
    let capped = Body::new(http_body_util::Limited::new(
        SharedBody(shared.clone()),
        limit,
    ));
    let resp = next.run(Request::from_parts(parts, capped)).await;
    let rest = shared.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(rest) = rest {
        drain(Body::new(http_body_util::Limited::new(rest, limit))).await;
    }
    resp
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Query strings are decoded as UTF-8: a parameter that is not (`collectionId=%FF`)
/// is refused rather than silently turned into replacement characters.
fn check_query(query: Option<&str>) -> Result<(), ApiError> {
    let Some(q) = query else {
        return Ok(());
    };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        for part in [k, v] {
            // Only escapes can make invalid UTF-8 ('+' decodes to a space).
            if part.contains('%')
                && percent_encoding::percent_decode_str(part)
                    .decode_utf8()
                    .is_err()
            {
                return Err(ApiError::bad_request(
                    "InvalidInput",
                    format!(
                        "query parameter {:?} is not valid UTF-8 once percent-decoded",
                        k.get(..64).unwrap_or(k)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A refusal decided before the body was read. A body of at most `drain_cap`
/// bytes is read and dropped first, so the client sees the answer, not a reset.
async fn refusal(req: Request, error: ApiError, drain_cap: usize) -> Response {
    if declared_length(req.headers()).is_none_or(|n| n <= drain_cap as u64) {
        drain(Body::new(http_body_util::Limited::new(
            req.into_body(),
            drain_cap,
        )))
        .await;
    }
    error.into_response()
}

/// Reads and drops what is left of a body, bounded by its cap and [`DRAIN_TIMEOUT`].
async fn drain(mut body: Body) {
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                break;
            }
        }
    })
    .await;
}

/// A request body the handler reads through while the edge keeps the original.
struct SharedBody(Arc<Mutex<Option<Body>>>);

impl HttpBody for SharedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(b) => std::pin::Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.with(HttpBody::is_end_stream).unwrap_or(true)
    }

    fn size_hint(&self) -> SizeHint {
        self.with(HttpBody::size_hint).unwrap_or_default()
    }
}

impl SharedBody {
    /// `f` of the body, if the edge has not taken it back.
    fn with<R>(&self, f: impl FnOnce(&Body) -> R) -> Option<R> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_must_decode_as_utf8() {
        assert!(check_query(None).is_ok());
        assert!(check_query(Some("api-version=2022-05-13&collectionId=a%20b+c")).is_ok());
        assert!(check_query(Some("collectionId=%E2%9C%93")).is_ok());
        assert!(check_query(Some("collectionId=%FF")).is_err());
        assert!(check_query(Some("%C3=1")).is_err());
        assert!(
            check_query(Some("x=%zz")).is_ok(),
            "a stray % is literal text"
        );
    }

    proptest::proptest! {
        /// Any bytes, percent-encoded into a parameter: accepted exactly when they
        /// are UTF-8, and never a panic whatever else the query holds.
        #[test]
        fn a_parameter_passes_iff_it_is_utf8(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..48),
            junk in ".{0,40}",
        ) {
            let encoded: String = bytes.iter().map(|b| format!("%{b:02X}")).collect();
            let q = format!("api-version=2022-05-13&collectionId={encoded}");
            proptest::prop_assert_eq!(
                check_query(Some(&q)).is_ok(),
                std::str::from_utf8(&bytes).is_ok()
            );
            let _ = check_query(Some(&junk));
        }
    }
}
