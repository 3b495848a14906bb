//! A small HTTPS client for covenant nodes: TLS 1.3, the service certificate as the
//! only trust root (node certificates are endorsed by it), an optional client
//! certificate for mTLS users, one HTTP/1.1 connection per request.

use std::sync::Arc;

use covenant_crypto::{Certificate, SigningKeyPair};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Why a request could not be made (a 4xx/5xx answer is not an error here).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint {0:?}: expected https://host:port")]
    Endpoint(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("connection to {endpoint} failed: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("HTTP: {0}")]
    Http(String),
}

/// One HTTP response: status, the transaction id header if any, the body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub transaction_id: Option<String>,
    pub content_type: Option<String>,
    /// Every response header, in order (forwarding proxies pass them on).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A client of one node.
#[derive(Clone)]
pub struct LedgerClient {
    host: String,
    port: u16,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    bearer: Option<String>,
}

impl LedgerClient {
    /// `endpoint` is `https://host:port`; `identity` is the user's cert and key.
    pub fn new(
        endpoint: &str,
        service_cert: &Certificate,
        identity: Option<(&Certificate, &SigningKeyPair)>,
    ) -> Result<LedgerClient, ClientError> {
        let rest = endpoint
            .strip_prefix("https://")
            .ok_or_else(|| ClientError::Endpoint(endpoint.into()))?
            .trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_string(), p)))
            .ok_or_else(|| ClientError::Endpoint(endpoint.into()))?;
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(service_cert.der().to_vec()))
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from(cert.der().to_vec())],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_pkcs8_der().to_vec())),
                )
                .map_err(|e| ClientError::Tls(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| ClientError::Endpoint(endpoint.into()))?;
        Ok(LedgerClient {
            host,
            port,
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            bearer: None,
        })
    }

    /// Authenticates every request with `Authorization: Bearer <token>` (JWT users).
    pub fn with_bearer_token(mut self, token: &str) -> Self {
        self.bearer = Some(token.trim().to_string());
        self
    }

    /// Sends one request (on a new connection); `body` (if any) is sent as JSON.
    pub async fn request(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<HttpResponse, ClientError> {
        self.connect()
            .await?
            .request(method, path_and_query, body)
            .await
    }

    /// Sends one request with a raw body and content type (on a new connection).
    pub async fn request_raw(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> Result<HttpResponse, ClientError> {
        self.connect()
            .await?
            .request_raw(method, path_and_query, body, content_type)
            .await
    }

    /// Opens a keep-alive connection for many sequential requests (load generators,
    /// long sessions): one TLS handshake instead of one per request.
    pub async fn connect(&self) -> Result<Connection, ClientError> {
        let endpoint = format!("{}:{}", self.host, self.port);
        let connect_err = |reason: String| ClientError::Connect {
            endpoint: endpoint.clone(),
            reason,
        };
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection {
            sender,
            host: endpoint,
            bearer: self.bearer.clone(),
        })
    }
}

/// One keep-alive HTTP/1.1 connection to a node.
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    bearer: Option<String>,
}

impl Connection {
    /// Whether the peer closed this connection (a pooled connection is then dropped).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends one request (JSON body if any) and reads the whole response.
    pub async fn request(
        &mut self,
        method: &str,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<HttpResponse, ClientError> {
        self.request_raw(
            method,
            path_and_query,
            body.map(|b| b.to_string().into_bytes()),
            "application/json",
        )
        .await
    }

    pub async fn request_raw(
        &mut self,
        method: &str,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> Result<HttpResponse, ClientError> {
        self.request_with_headers(method, path_and_query, body, content_type, &[])
            .await
    }

    /// Like [`Connection::request_raw`], with extra request headers.
    pub async fn request_with_headers(
        &mut self,
        method: &str,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
        headers: &[(String, String)],
    ) -> Result<HttpResponse, ClientError> {
        self.sender
            .ready()
            .await
            .map_err(|e| ClientError::Http(format!("connection closed: {e}")))?;
        let mut req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("host", &self.host);
        if body.is_some() {
            req = req.header("content-type", content_type);
        }
        if let Some(token) = &self.bearer {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let transaction_id = header("x-ms-ccf-transaction-id");
        let content_type = header("content-type");
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes()
            .to_vec();
        Ok(HttpResponse {
            status,
            transaction_id,
            content_type,
            headers,
            body,
        })
    }
}
