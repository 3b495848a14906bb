//! Forwarding: a write reaching a backup is sent on to the primary with the
//! caller's identity, and the primary's answer returned as is; so are reads a
//! backup cannot answer (history before its snapshot, a TxId it has not received
//! yet, and reads on a connection that already wrote). Also the gate that keeps
//! the ledger API closed until the consortium opens the service.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use covenant_governance::ServiceStatus;
use covenant_types::SeqNo;
use std::time::Duration;

use crate::error::ApiError;
use crate::http::{FORWARDED, FORWARDED_CERT, FORWARDED_COMMITTED};
use crate::peers::{connect_peer, Network};
use crate::server::PeerCert;
use crate::state::NodeState;

/// Middleware: until the consortium opens the service (`transition_service_to_open`),
/// the ledger API refuses everyone with 503 `ServiceNotOpen`.
pub async fn service_open_gate(
    State(state): State<NodeState>,
    req: Request,
    next: Next,
) -> Response {
    if req.uri().path().starts_with("/app/") {
        if let Some(status) = covenant_governance::service_status(&state.store) {
            if status != ServiceStatus::Open {
                let why = match status {
                    ServiceStatus::Recovering => "it is being recovered: nothing from before the recovery is readable until the members open it (transition_service_to_open) and enough recovery members submit their shares",
                    ServiceStatus::WaitingForRecoveryShares => "it waits for the recovery members' shares: nothing from before the recovery is readable until enough are submitted",
                    _ => "the consortium opens it with a transition_service_to_open proposal",
                };
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceNotOpen",
                    format!("the service is {status}: {why}"),
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}

/// For a request to an endpoint of the deployed JS app: whether it must run on the
/// primary (the service decides from the endpoint's properties).
fn app_endpoint_writes(state: &NodeState, req: &Request) -> Option<bool> {
    let app = state.request_app(req.extensions()).ok()??;
    covenant_service::apps::endpoint_writes(&app, req.method().as_str(), req.uri().path())
}

/// How long a read waits for this node's commit point to reach one it has already
/// shown before it is sent to the primary or refused with a retry hint.
const CATCH_UP: Duration = Duration::from_secs(1);

/// Whether a read shows this node's commit point: the ledger API and app
/// endpoints, and the commit and status routes.
fn shows_commit(path: &str) -> bool {
    path.starts_with("/app/")
        || matches!(
            path,
            "/node/commit" | "/node/tx" | "/node/state" | "/gov/commit" | "/gov/tx"
        )
}

/// Middleware: a write (`/app/*`, any method but GET/HEAD) reaching a backup is
/// forwarded to the primary with the caller's identity; the primary's answer is
/// returned as is. Reads are served locally, except on a connection that already
/// forwarded a write: those go to the primary too, so a client reads its own writes.
///
/// Reads are monotonic per node: no read shows a commit point below one this node
/// has already shown, whether it answered itself or passed on another node's answer
/// (a new primary's commit point can trail its backups' for a moment, and a lagging
/// backup's trails the primary's).
pub async fn forward_writes(State(state): State<NodeState>, req: Request, next: Next) -> Response {
    let Some(net) = state.network.clone() else {
        return next.run(req).await;
    };
    let is_write = match app_endpoint_writes(&state, &req) {
        Some(w) => w,
        None => !matches!(*req.method(), Method::GET | Method::HEAD),
    };
    if is_write || !shows_commit(req.uri().path()) {
        return route(&state, &net, req, next, is_write, false).await;
    }
    if req.headers().contains_key(FORWARDED) {
        // Another node's read: first reach what that node has shown.
        let shown = req
            .headers()
            .get(FORWARDED_COMMITTED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .map_or(SeqNo::ZERO, SeqNo);
        if !reaches(&state, shown).await {
            return not_caught_up("the node answering for the forwarding node").into_response();
        }
        let mut resp = route(&state, &net, req, next, false, false).await;
        if let Ok(v) = HeaderValue::from_str(&state.service.committed_seqno().0.to_string()) {
            resp.headers_mut().insert(FORWARDED_COMMITTED, v);
        }
        return resp;
    }
    let behind = !reaches(&state, net.relayed_commit()).await;
    if behind && !req.uri().path().starts_with("/app/") {
        return not_caught_up("this node").into_response();
    }
    route(&state, &net, req, next, false, behind).await
}

/// Waits (up to [`CATCH_UP`]) until this node's commit point is at least `seqno`.
async fn reaches(state: &NodeState, seqno: SeqNo) -> bool {
    if state.service.committed_seqno() >= seqno {
        return true;
    }
    let mut rx = state.service.subscribe_committed();
    let reached = tokio::time::timeout(CATCH_UP, rx.wait_for(|c| *c >= seqno))
        .await
        .is_ok_and(|r| r.is_ok());
    reached
}

fn not_caught_up(who: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        format!(
            "{who} has not yet caught up with a commit point it already showed; retry in a moment"
        ),
    )
}

/// Serves a request here or forwards it to the primary. `behind`: this node's
/// commit point trails one it has shown, so a read goes to the primary.
async fn route(
    state: &NodeState,
    net: &std::sync::Arc<Network>,
    req: Request,
    next: Next,
    is_write: bool,
    behind: bool,
) -> Response {
    let path = req.uri().path();
    // Governance writes carry their member's signature: the primary checks it.
    let gov_write = is_write && path.starts_with("/gov/");
    if !path.starts_with("/app/") && !gov_write {
        return next.run(req).await;
    }
    // A node that started from a snapshot lacks the history before it: reads of that
    // history go to the primary (which, as a rule, holds the whole ledger).
    let before_ledger =
        !is_write && net.first_seqno > SeqNo(1) && reads_before(req.uri(), net.first_seqno.0);
    // A TxId this node cannot place yet (it has not received it, or holds another
    // view's uncommitted entry at its seqno) is asked of the primary, which can: a
    // lagging backup must not call a committed TxId unknown.
    let unknown_here = !is_write
        && !before_ledger
        && !net.replica.status().is_primary
        && names_unknown_txid(state, req.uri());
    let session = req
        .extensions()
        .get::<crate::server::SessionForwarded>()
        .cloned();
    let sticky = session
        .as_ref()
        .is_some_and(|s| s.0.load(std::sync::atomic::Ordering::Relaxed));
    if !is_write && !sticky && !before_ledger && !unknown_here && !behind {
        return next.run(req).await;
    }
    let status = net.replica.status();
    if status.is_primary {
        if behind {
            return not_caught_up("this node").into_response();
        }
        return next.run(req).await;
    }
    if is_write {
        if let Some(s) = &session {
            s.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    if net.retired.load(std::sync::atomic::Ordering::Relaxed) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "this node was retired from the network; send requests to another node",
        )
        .into_response();
    }
    if req.headers().contains_key(FORWARDED) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the primary changed while forwarding; retry",
        )
        .into_response();
    }
    if status.leader.is_none() {
        return no_primary().into_response();
    }
    // The caller is authenticated here, before its body is read and forwarded.
    let (mut head, body) = req.into_parts();
    if let Err(e) = crate::app::authenticate_before_forwarding(state, &mut head).await {
        return e.into_response();
    }
    let req = Request::from_parts(head, body);
    // A read forwarded carries the commit point this node has shown (the answering
    // node reaches it first) and brings back the answering node's.
    let shown = (!is_write).then(|| net.relayed_commit().max(state.service.committed_seqno()));
    match forward(net, req, shown).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

fn no_primary() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        "no primary is elected at the moment; retry",
    )
}

/// Whether a ledger read names a transaction (or a range starting) before seqno
/// `first`: `/app/transactions/{txid}[/receipt|/status]` and ranged lists.
fn reads_before(uri: &axum::http::Uri, first: u64) -> bool {
    let seqno_of = |t: &str| t.split_once('.').and_then(|(_, s)| s.parse::<u64>().ok());
    let Some(rest) = uri.path().strip_prefix("/app/transactions") else {
        return false;
    };
    match rest.strip_prefix('/') {
        None if rest.is_empty() => {
            // A list starts at fromTransactionId, or at the beginning.
            let from = uri.query().unwrap_or("").split('&').find_map(|kv| {
                kv.strip_prefix("fromTransactionId=")
                    .filter(|v| !v.is_empty())
            });
            from.is_none_or(|t| seqno_of(t).is_some_and(|s| s < first))
        }
        Some(tail) => {
            let txid = tail.split('/').next().unwrap_or("");
            txid != "current" && seqno_of(txid).is_some_and(|s| s < first)
        }
        None => false,
    }
}

/// Whether a ledger read names a TxId (`/app/transactions/{txid}[/receipt|/status]`)
/// whose status on this node is Unknown.
fn names_unknown_txid(state: &NodeState, uri: &axum::http::Uri) -> bool {
    let Some(rest) = uri.path().strip_prefix("/app/transactions/") else {
        return false;
    };
    let Some(txid) = rest
        .split('/')
        .next()
        .and_then(|t| t.parse::<covenant_types::TxId>().ok())
    else {
        return false;
    };
    matches!(
        state.engine().status(txid),
        Ok(covenant_engine::TxStatus::Unknown)
    )
}

/// Idle connections kept per primary.
const MAX_IDLE: usize = 32;

async fn forward(net: &Network, req: Request, shown: Option<SeqNo>) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    // The edge capped this body at the node's max_body_bytes and refused it before
    // this point if the route needs a credential the client did not present.
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| crate::error::body_read_error(&e))?;
    let mut headers = vec![(FORWARDED.to_string(), "1".to_string())];
    if let Some(s) = shown {
        headers.push((FORWARDED_COMMITTED.to_string(), s.0.to_string()));
    }
    // End-to-end headers travel on (app handlers read them); the hop's own, and
    // the node-to-node ones (refused from clients at the edge anyway), do not.
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if matches!(
            n,
            "host"
                | "content-length"
                | "content-type"
                | "connection"
                | "transfer-encoding"
                | "keep-alive"
                | "upgrade"
                | "te"
                | "trailer"
                | "proxy-connection"
        ) || n.starts_with("x-covenant-forwarded")
        {
            continue;
        }
        if let Ok(v) = value.to_str() {
            headers.push((n.to_string(), v.to_string()));
        }
    }
    // The client's own certificate, whole: the primary runs every auth policy on it.
    if let Some(PeerCert(Some(p))) = parts.extensions.get::<PeerCert>() {
        headers.push((
            FORWARDED_CERT.into(),
            base64::engine::general_purpose::STANDARD.encode(p.0.der()),
        ));
    }
    let content_type = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    let unavailable = |e: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("forwarding to the primary failed: {e}"),
        )
    };
    // A connection to the primary; when it cannot be reached, a second look at who
    // is primary (an election may have just moved it). Nothing was sent yet, so
    // trying the new one is safe.
    let mut tried = None;
    let (leader, mut conn) = loop {
        let Some((leader, client)) = net
            .replica
            .status()
            .leader
            .filter(|l| Some(*l) != tried)
            .and_then(|l| net.peers.client(l).map(|c| (l, c)))
        else {
            return Err(no_primary());
        };
        let pooled = {
            let mut idle = net.idle.lock().unwrap_or_else(|e| e.into_inner());
            let pool = idle.entry(leader).or_default();
            let mut found = None;
            while let Some(c) = pool.pop() {
                if !c.is_closed() {
                    found = Some(c);
                    break;
                }
            }
            found
        };
        if let Some(c) = pooled {
            break (leader, c);
        }
        match connect_peer(&client).await {
            Ok(c) => break (leader, c),
            Err(e) if tried.is_some() => return Err(unavailable(e)),
            Err(e) => {
                tracing::debug!(primary = leader, error = %e, "cannot reach the primary; looking again");
                tried = Some(leader);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // No retry once sent: a write that reached the primary may have been applied
    // even if its response is lost; the client decides (as with any HTTP request).
    // The wait ends when the primary answers, or when this node learns that the
    // primary changed (it was cut off or deposed: its answer may never come).
    let request = conn.request_with_headers(
        parts.method.as_str(),
        &path,
        Some(body.to_vec()),
        &content_type,
        &headers,
    );
    let deposed = async {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if net.replica.status().leader != Some(leader) {
                return;
            }
        }
    };
    let result = tokio::select! {
        r = request => r.map_err(|e| unavailable(e.to_string())),
        () = deposed => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the primary changed while this request was forwarded to it, and it did not \
             answer: the request may or may not have taken effect; check the transaction \
             status or retry",
        )),
    };
    let resp = result?;
    {
        let mut idle = net.idle.lock().unwrap_or_else(|e| e.into_inner());
        let pool = idle.entry(leader).or_default();
        if pool.len() < MAX_IDLE {
            pool.push(conn);
        }
    }
    let mut out = Response::new(Body::from(resp.body));
    *out.status_mut() = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in resp.headers {
        if name.eq_ignore_ascii_case(FORWARDED_COMMITTED) {
            // Noted before the answer reaches the client: this node's later reads
            // show no less.
            if let Ok(s) = value.parse() {
                net.note_relayed(SeqNo(s));
            }
            continue;
        }
        if matches!(
            name.as_str(),
            "connection" | "transfer-encoding" | "content-length" | "keep-alive"
        ) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            out.headers_mut().append(n, v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_before_a_snapshot_is_recognized() {
        let before = |u: &str| reads_before(&u.parse().unwrap(), 100);
        assert!(before("/app/transactions/2.50?api-version=x"));
        assert!(before("/app/transactions/2.50/receipt"));
        assert!(!before("/app/transactions/2.150"));
        assert!(!before("/app/transactions/current?collectionId=a"));
        assert!(before("/app/transactions?api-version=x&collectionId=a"));
        assert!(before("/app/transactions?fromTransactionId=2.99"));
        assert!(!before(
            "/app/transactions?fromTransactionId=2.100&api-version=x"
        ));
        assert!(!before("/app/collections"));
        assert!(!before("/app/transactionsX/2.5"));
    }
}
