//! The accept loop: TLS handshakes run in their own tasks (a slow client cannot
//! stall others), the client certificate is handed to handlers as an extension,
//! connections are bounded per client address and in total, and slow or idle
//! clients are timed out. When the total is reached a new connection takes the
//! place of the oldest one that is still in its TLS handshake (else the oldest
//! idle one): a flood of idle sockets cannot keep real clients out.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{Extension, Router};
use covenant_crypto::Certificate;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_rustls::TlsAcceptor;

/// The client certificate of the connection a request came on, if any, with its
/// SHA-256 (the user id behind both spellings, SPEC §2) computed once per connection.
#[derive(Clone, Debug, Default)]
pub struct PeerCert(pub Option<Arc<(Certificate, covenant_types::Digest32)>>);

/// Per connection: set once a write on it was forwarded to the primary, after which
/// every request on it is forwarded (CCF's session consistency: a client reads its
/// own writes even when it talks to a backup).
#[derive(Clone, Debug, Default)]
pub struct SessionForwarded(pub Arc<std::sync::atomic::AtomicBool>);

/// Limits that protect the node from slow, idle or too many clients.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub max_connections: usize,
    /// Connections at once from one client IP address.
    pub max_connections_per_peer: usize,
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
            max_connections_per_peer: 256,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            http2: false,
        }
    }
}

/// One open connection, as the accept loop sees it.
struct ConnState {
    /// Still in the TLS handshake (the first to give way when the node is full).
    handshaking: AtomicBool,
    /// Requests being served on it (never closed while one is).
    in_flight: AtomicUsize,
    /// The client presented a certificate (a user, member or node): such idle
    /// connections give way only after anonymous ones.
    has_cert: AtomicBool,
    /// Told to close to make room for a new connection.
    evict: Notify,
}

/// Every open connection by age, and how many each client address holds.
#[derive(Default)]
struct Connections {
    next_id: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<ConnState>>>,
    per_peer: Mutex<HashMap<IpAddr, usize>>,
}

impl Connections {
    /// Registers a connection from `ip`, or `None` if that address holds `max` already.
    fn admit(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ConnSlot> {
        {
            let mut per = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
            let n = per.entry(ip).or_insert(0);
            if *n >= max {
                return None;
            }
            *n += 1;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            handshaking: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            has_cert: AtomicBool::new(false),
            evict: Notify::new(),
        });
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, state.clone());
        Some(ConnSlot {
            table: self.clone(),
            ip,
            id,
            state,
        })
    }

    /// Asks the oldest connection still in its handshake (else the oldest idle one
    /// without a client certificate, else the oldest idle one), other than
    /// `newcomer`, to close; false if every other connection is serving a request.
    fn evict_one(&self, newcomer: u64) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let others = || {
            open.iter()
                .filter(|(id, _)| **id != newcomer)
                .map(|(_, c)| c)
        };
        let idle = |c: &&Arc<ConnState>| c.in_flight.load(Ordering::Relaxed) == 0;
        let victim = others()
            .find(|c| c.handshaking.load(Ordering::Relaxed))
            .or_else(|| others().find(|c| idle(c) && !c.has_cert.load(Ordering::Relaxed)))
            .or_else(|| others().find(idle));
        match victim {
            Some(c) => {
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A connection's place in [`Connections`], given back when it closes.
struct ConnSlot {
    table: Arc<Connections>,
    ip: IpAddr,
    id: u64,
    state: Arc<ConnState>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.table
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        let mut per = self
            .table
            .per_peer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per.remove(&self.ip);
            }
        }
    }
}

/// Counts a request in flight on its connection while it lives.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn start(state: &Arc<ConnState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a new connection waits for an evicted one to give its place back.
const EVICTION_WAIT: Duration = Duration::from_millis(200);

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
    let connections = Arc::new(Connections::default());
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
        let Some(slot) = connections.admit(peer.ip(), limits.max_connections_per_peer) else {
            tracing::debug!(%peer, "per-address connection limit reached; refusing connection");
            drop(tcp);
            continue;
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) if connections.evict_one(slot.id) => {
                match tokio::time::timeout(EVICTION_WAIT, permits.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        tracing::warn!(%peer, "connection limit reached; refusing connection");
                        continue;
                    }
                }
            }
            Err(_) => {
                tracing::warn!(%peer, "connection limit reached and every connection busy; refusing connection");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let limits = limits.clone();
        let mut draining = draining.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn_state = slot.state.clone();
            let _slot = slot;
            let handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp));
            let tls = tokio::select! {
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
                _ = conn_state.evict.notified() => {
                    tracing::debug!(%peer, "closed in its TLS handshake to make room");
                    return;
                }
            };
            conn_state.handshaking.store(false, Ordering::Relaxed);
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| Certificate::from_der(c.as_ref()).ok())
                .map(|c| {
                    let id = covenant_crypto::sha256(c.der());
                    Arc::new((c, id))
                });
            conn_state.has_cert.store(cert.is_some(), Ordering::Relaxed);
            let timeout = limits.request_timeout;
            let busy = conn_state.clone();
            let app = app
                .layer(axum::middleware::from_fn(
                    move |req, next: axum::middleware::Next| {
                        let in_flight = InFlight::start(&busy);
                        async move {
                            let _in_flight = in_flight;
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
                _ = conn_state.evict.notified() => {
                    tracing::debug!(%peer, "idle connection closed to make room");
                    return;
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn each_address_gets_its_share_and_gives_it_back() {
        let t = Arc::new(Connections::default());
        let a: Vec<_> = (0..3).map(|_| t.admit(ip(2), 3).unwrap()).collect();
        assert!(
            t.admit(ip(2), 3).is_none(),
            "a fourth from the same address"
        );
        let other = t.admit(ip(3), 3);
        assert!(other.is_some(), "another address is not affected");
        drop(a);
        assert!(
            t.admit(ip(2), 3).is_some(),
            "closed connections free their places"
        );
        drop(other);
        assert_eq!(t.open.lock().unwrap().len(), 0);
    }

    #[test]
    fn eviction_takes_handshakes_first_then_anonymous_idle_then_idle() {
        let t = Arc::new(Connections::default());
        let busy = t.admit(ip(2), 9).unwrap();
        busy.state.handshaking.store(false, Ordering::Relaxed);
        let _req = InFlight::start(&busy.state);
        let user = t.admit(ip(2), 9).unwrap();
        user.state.handshaking.store(false, Ordering::Relaxed);
        user.state.has_cert.store(true, Ordering::Relaxed);
        let anon = t.admit(ip(2), 9).unwrap();
        anon.state.handshaking.store(false, Ordering::Relaxed);
        let shaking = t.admit(ip(2), 9).unwrap();
        let newcomer = t.admit(ip(2), 9).unwrap();
        let told = |s: &ConnSlot| {
            let n = s.state.evict.notified();
            tokio::pin!(n);
            // A stored notification completes the future at its first poll.
            n.as_mut().enable()
        };
        assert!(t.evict_one(newcomer.id));
        assert!(told(&shaking) && !told(&anon) && !told(&newcomer));
        drop(shaking);
        assert!(t.evict_one(newcomer.id));
        assert!(told(&anon) && !told(&user));
        drop(anon);
        assert!(t.evict_one(newcomer.id));
        assert!(told(&user) && !told(&busy));
        drop(user);
        assert!(
            !t.evict_one(newcomer.id),
            "a connection serving a request stays"
        );
    }
}
