//! The accept loop: TLS handshakes run in their own tasks (a slow client cannot
//! stall others), the client certificate is handed to handlers as an extension,
//! connections are bounded, and slow or idle clients are timed out.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use covenant_crypto::Certificate;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// The client certificate of the connection a request came on, if any, with its
/// user id (colon-hex fingerprint) computed once per connection.
#[derive(Clone, Debug, Default)]
pub struct PeerCert(pub Option<Arc<(Certificate, String)>>);

/// Per connection: set once a write on it was forwarded to the primary, after which
/// every request on it is forwarded (CCF's session consistency: a client reads its
/// own writes even when it talks to a backup).
#[derive(Clone, Debug, Default)]
pub struct SessionForwarded(pub Arc<std::sync::atomic::AtomicBool>);

/// Limits that protect the node from slow, idle or too many clients.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    /// Longest a request may take from headers read to response (body upload included).
    pub request_timeout: Duration,
    /// At shutdown, how long open connections get to finish their current request.
    pub drain_timeout: Duration,
    /// Also offer HTTP/2 (ALPN `h2`); HTTP/1.1 only by default.
    pub http2: bool,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            http2: false,
        }
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves. Then no new
/// connection is accepted, open ones finish their current request and close (idle
/// keep-alive ones at once), and this returns once all are gone or `drain_timeout`
/// has passed, so the caller's final flush covers every answered write.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (draining_tx, draining) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; refusing connection");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let limits = limits.clone();
        let mut draining = draining.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| Certificate::from_der(c.as_ref()).ok())
                .map(|c| {
                    let id = c.user_fingerprint();
                    Arc::new((c, id))
                });
            let timeout = limits.request_timeout;
            let app = app
                .layer(axum::middleware::from_fn(
                    move |req, next: axum::middleware::Next| async move {
                        match tokio::time::timeout(timeout, next.run(req)).await {
                            Ok(resp) => resp,
                            Err(_) => axum::response::IntoResponse::into_response(
                                crate::error::ApiError::new(
                                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                    "RequestTimeout",
                                    format!(
                                        "the request took longer than {} s",
                                        timeout.as_secs_f64()
                                    ),
                                ),
                            ),
                        }
                    },
                ))
                .layer(Extension(PeerCert(cert)))
                .layer(Extension(SessionForwarded::default()));
            let service = TowerToHyperService::new(app);
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            builder.http2().timer(TokioTimer::new());
            if !limits.http2 {
                builder = builder.http1_only();
            }
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                                _ = async {
                    while !*draining.borrow_and_update() {
                        if draining.changed().await.is_err() {
                            break;
                        }
                    }
                } => {
                    // Finish the request in flight (if any), then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = draining_tx.send(true);
    // Every connection task holds a permit: all permits back means all connections done.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain_timeout, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after the drain timeout");
    }
    Ok(())
}
