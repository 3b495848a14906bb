//! JWT bearer users (SPEC §4): tokens signed by a configured issuer, whose public
//! keys come from a JWKS document. The user id is the `oid` claim, else `sub`.
//! Only asymmetric algorithms are accepted (RSA, RSA-PSS, ECDSA): a symmetric key
//! in a public JWKS would let anyone mint tokens.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};

use std::sync::{Arc, Mutex};

pub use covenant_governance::{JWT_ISSUERS, JWT_ISSUER_KEYS};

use crate::error::ApiError;

const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// One trusted token issuer and its keys.
#[derive(Clone)]
pub struct JwtIssuer {
    pub issuer: String,
    /// When set, tokens must carry this `aud`.
    pub audience: Option<String>,
    keys: Vec<(Option<String>, DecodingKey)>,
}

impl std::fmt::Debug for JwtIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl JwtIssuer {
    /// Parses a JWKS document (`{"keys":[...]}`), keeping the keys it can verify with.
    pub fn from_jwks(
        issuer: &str,
        audience: Option<String>,
        jwks_json: &str,
    ) -> Result<JwtIssuer, String> {
        let set: JwkSet =
            serde_json::from_str(jwks_json).map_err(|e| format!("invalid JWKS: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            if let Ok(k) = DecodingKey::from_jwk(jwk) {
                if !matches!(
                    jwk.algorithm,
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
                ) {
                    keys.push((jwk.common.key_id.clone(), k));
                }
            }
        }
        if keys.is_empty() {
            return Err("the JWKS holds no usable public key".into());
        }
        Ok(JwtIssuer {
            issuer: issuer.to_string(),
            audience,
            keys,
        })
    }
}

/// Who a verified token names: a user id within its issuer's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtIdentity {
    /// The trusted issuer whose key verified the token.
    pub issuer: String,
    /// Its `oid` claim, else its `sub`.
    pub id: String,
}

/// The issuers tokens are checked against: those of the node's configuration and
/// those governance set (`set_jwt_issuer`, in [`JWT_ISSUERS`]).
#[derive(Clone, Debug, Default)]
pub struct JwtAuth {
    /// From the node's configuration.
    pub issuers: Vec<JwtIssuer>,
    /// Governed issuers parsed from their rows, reused while the map's version
    /// stays the same (a JWKS is parsed once, not per request).
    governed: Arc<Mutex<GovernedCache>>,
}

/// The versions ([`covenant_kv::Store::map_version`]) of the issuers map and of
/// the issuer keys map, and the issuers they make.
type GovernedCache = Option<([(usize, u64); 2], Arc<Vec<JwtIssuer>>)>;

/// The issuer of one governance row, `None` (and a warning) if it is unusable.
/// covenant's `set_jwt_issuer` keeps the keys in the row; CCF's constitution sets
/// them apart, through `ccf.setJwtPublicSigningKeys` ([`JWT_ISSUER_KEYS`]).
fn governed_issuer(store: &covenant_kv::Store, key: &[u8], row: &[u8]) -> Option<JwtIssuer> {
    #[derive(serde::Deserialize)]
    struct Row {
        #[serde(default)]
        issuer: Option<String>,
        #[serde(default)]
        jwks: Option<serde_json::Value>,
        #[serde(default)]
        audience: Option<String>,
    }
    let name = String::from_utf8_lossy(key).into_owned();
    let parsed = serde_json::from_slice::<Row>(row)
        .map_err(|e| e.to_string())
        .and_then(|r| {
            let jwks = match r.jwks {
                Some(j) => j.to_string(),
                None => store
                    .get(JWT_ISSUER_KEYS, key)
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .ok_or("the issuer has no keys")?,
            };
            JwtIssuer::from_jwks(r.issuer.as_deref().unwrap_or(&name), r.audience, &jwks)
        });
    match parsed {
        Ok(i) => Some(i),
        Err(e) => {
            tracing::warn!(issuer = %String::from_utf8_lossy(key), error = %e, "a JWT issuer set by governance is unusable; its tokens are refused");
            None
        }
    }
}

/// A governed issuer as the governance reads show it (`/gov/jwt_keys/all`,
/// `/gov/service/jwk`): its row, and its keys (the row's `jwks`, else those
/// `ccf.setJwtPublicSigningKeys` set) by kid, with a key's `x5c` certificate as PEM.
pub(crate) struct GovernedKeys {
    pub issuer: String,
    pub row: serde_json::Value,
    pub keys: Vec<GovernedKey>,
}

pub(crate) struct GovernedKey {
    pub kid: String,
    pub jwk: serde_json::Value,
    pub cert_pem: Option<String>,
}

pub(crate) fn governed_keys(store: &covenant_kv::Store) -> Vec<GovernedKeys> {
    use serde_json::Value;
    store
        .entries(JWT_ISSUERS)
        .into_iter()
        .map(|(k, row)| {
            let row: Value = serde_json::from_slice(&row).unwrap_or(Value::Null);
            let jwks = if row["jwks"].is_object() {
                row["jwks"].clone()
            } else {
                store
                    .get(JWT_ISSUER_KEYS, &k)
                    .and_then(|v| serde_json::from_slice(&v).ok())
                    .unwrap_or(Value::Null)
            };
            let keys = jwks["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|jwk| GovernedKey {
                    kid: jwk["kid"].as_str().unwrap_or_default().to_string(),
                    cert_pem: jwk["x5c"].get(0).and_then(Value::as_str).map(|c| {
                        format!("-----BEGIN CERTIFICATE-----\n{c}\n-----END CERTIFICATE-----\n")
                    }),
                    jwk: jwk.clone(),
                })
                .collect();
            GovernedKeys {
                issuer: String::from_utf8_lossy(&k).into_owned(),
                row,
                keys,
            }
        })
        .collect()
}

impl JwtAuth {
    /// Trusts `issuers` (from the node's configuration) besides the governed ones.
    pub fn new(issuers: Vec<JwtIssuer>) -> JwtAuth {
        JwtAuth {
            issuers,
            governed: Default::default(),
        }
    }

    /// The governed issuers of `store`'s current state.
    fn governed(&self, store: &covenant_kv::Store) -> Arc<Vec<JwtIssuer>> {
        let version = [
            store.map_version(JWT_ISSUERS),
            store.map_version(JWT_ISSUER_KEYS),
        ];
        let mut cache = self.governed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, issuers)) = cache.as_ref() {
            if *v == version {
                return issuers.clone();
            }
        }
        let issuers: Arc<Vec<JwtIssuer>> = Arc::new(
            store
                .entries(JWT_ISSUERS)
                .iter()
                .filter_map(|(k, row)| governed_issuer(store, k, row))
                .collect(),
        );
        *cache = Some((version, issuers.clone()));
        issuers
    }

    /// The distinct issuers trusted now (configured and governed), sorted.
    pub fn issuer_names(&self, store: &covenant_kv::Store) -> Vec<String> {
        let governed = self.governed(store);
        let mut names: Vec<String> = self
            .issuers
            .iter()
            .chain(governed.iter())
            .map(|i| i.issuer.clone())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The issuer trusted now, when exactly one is.
    pub fn single_issuer(&self, store: &covenant_kv::Store) -> Option<String> {
        let mut names = self.issuer_names(store);
        (names.len() == 1).then(|| names.remove(0))
    }

    /// Validates `token` (signature, `iss`, `exp`, `nbf`, `aud` when configured)
    /// against the configured issuers and those governance set in `store`, and
    /// returns who it names: the issuer that signed it and the `oid` (else `sub`).
    /// An id shaped like a certificate user's fingerprint is refused: an issuer
    /// speaks only for its own users, never for certificate users.
    pub fn authenticate(
        &self,
        token: &str,
        store: &covenant_kv::Store,
    ) -> Result<JwtIdentity, ApiError> {
        let bad = |why: &str| ApiError::unauthorized(format!("invalid bearer token: {why}"));
        let header = decode_header(token).map_err(|e| bad(&e.to_string()))?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(bad(&format!("algorithm {:?} is not accepted", header.alg)));
        }
        let governed = self.governed(store);
        let mut last_error = "no trusted issuer has its key".to_string();
        for issuer in self.issuers.iter().chain(governed.iter()) {
            let mut validation = Validation::new(header.alg);
            validation.set_issuer(&[&issuer.issuer]);
            match &issuer.audience {
                Some(aud) => {
                    // Without this, a token that has no `aud` at all would pass.
                    validation.set_audience(&[aud]);
                    validation.set_required_spec_claims(&["exp", "aud"]);
                }
                None => validation.validate_aud = false,
            }
            validation.validate_nbf = true;
            for (kid, key) in &issuer.keys {
                if header.kid.is_some() && kid.is_some() && header.kid != *kid {
                    continue;
                }
                match decode::<serde_json::Value>(token, key, &validation) {
                    Ok(data) => {
                        let claims = data.claims;
                        let id = claims
                            .get("oid")
                            .and_then(|v| v.as_str())
                            .or_else(|| claims.get("sub").and_then(|v| v.as_str()))
                            .filter(|s| !s.is_empty())
                            .ok_or_else(|| bad("the token has neither an oid nor a sub claim"))?;
                        if covenant_service::users::is_certificate_user_id(id)
                            || covenant_service::users::ccf_user_digest(id).is_some()
                        {
                            return Err(bad(
                                "its subject has the form of a certificate user's id; \
                                 a token issuer cannot speak for certificate users",
                            ));
                        }
                        return Ok(JwtIdentity {
                            issuer: issuer.issuer.clone(),
                            id: id.to_string(),
                        });
                    }
                    Err(e) => last_error = e.to_string(),
                }
            }
        }
        Err(bad(&last_error))
    }
}

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Fetches a JWKS document over HTTPS, trusting `ca` if given (a private identity
/// provider), else the system's roots. TLS 1.2 is allowed here: this is a client
/// talking to someone else's server, not covenant's own listener.
pub async fn fetch_jwks(
    url: &str,
    ca: Option<&covenant_crypto::Certificate>,
) -> Result<String, String> {
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper::body::Bytes;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;
    use std::time::Duration;

    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("invalid JWKS URL {url:?}: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("the JWKS URL must be https://, got {url:?}"));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("no host in {url:?}"))?
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(c) => roots
            .add(CertificateDer::from(c.der().to_vec()))
            .map_err(|e| format!("the JWKS CA certificate is unusable: {e}"))?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err("no system root certificates found; pass the issuer's CA".into());
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(host.clone()).map_err(|e| format!("bad host {host:?}: {e}"))?;
    let fetch = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let req = hyper::Request::get(path)
            .header("host", &host)
            .header("accept", "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status() != hyper::StatusCode::OK {
            return Err(format!("{url} answered {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the JWKS: {e}"))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| "the JWKS is not UTF-8".to_string())
    };
    tokio::time::timeout(Duration::from_secs(15), fetch)
        .await
        .map_err(|_| format!("fetching {url} timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use covenant_crypto::{Curve, SigningKeyPair};
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn key_and_jwks() -> (EncodingKey, String) {
        let key = SigningKeyPair::generate(Curve::P256).unwrap();
        let enc = EncodingKey::from_ec_der(&key.to_pkcs8_der());
        let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("k1".into());
        (
            enc,
            serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap(),
        )
    }

    fn setup() -> (JwtAuth, EncodingKey) {
        let (enc, doc) = key_and_jwks();
        let issuer = JwtIssuer::from_jwks("https://issuer.test", None, &doc).unwrap();
        (JwtAuth::new(vec![issuer]), enc)
    }

    fn token(enc: &EncodingKey, claims: serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        encode(&h, &claims, enc).unwrap()
    }

    #[test]
    fn valid_tokens_name_their_user() {
        let (auth, enc) = setup();
        let t = token(
            &enc,
            json!({"iss": "https://issuer.test", "exp": now() + 600, "oid": "o-1", "sub": "s-1"}),
        );
        assert_eq!(
            auth.authenticate(&t, &covenant_kv::Store::new())
                .unwrap()
                .id,
            "o-1"
        );
        let t = token(
            &enc,
            json!({"iss": "https://issuer.test", "exp": now() + 600, "sub": "s-1"}),
        );
        assert_eq!(
            auth.authenticate(&t, &covenant_kv::Store::new())
                .unwrap()
                .id,
            "s-1"
        );
        // A subject shaped like a certificate user's id never authenticates.
        let fingerprint = ["AB"; 32].join(":");
        let t = token(
            &enc,
            json!({"iss": "https://issuer.test", "exp": now() + 600, "oid": fingerprint}),
        );
        let e = auth
            .authenticate(&t, &covenant_kv::Store::new())
            .unwrap_err();
        assert!(e.message.contains("certificate user"), "{}", e.message);
    }

    #[test]
    fn bad_tokens_are_refused() {
        let (auth, enc) = setup();
        let expired = token(
            &enc,
            json!({"iss": "https://issuer.test", "exp": now() - 3600, "oid": "o"}),
        );
        let other_iss = token(
            &enc,
            json!({"iss": "https://evil.test", "exp": now() + 600, "oid": "o"}),
        );
        let no_id = token(
            &enc,
            json!({"iss": "https://issuer.test", "exp": now() + 600}),
        );
        let (_, other_key) = setup();
        let forged = token(
            &other_key,
            json!({"iss": "https://issuer.test", "exp": now() + 600, "oid": "o"}),
        );
        let hs = encode(
            &Header::new(Algorithm::HS256),
            &json!({"iss": "https://issuer.test", "exp": now() + 600, "oid": "o"}),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        for (what, t) in [
            ("expired", expired),
            ("issuer", other_iss),
            ("no id", no_id),
            ("forged", forged),
            ("hs256", hs),
            ("garbage", "a.b.c".to_string()),
        ] {
            let e = auth
                .authenticate(&t, &covenant_kv::Store::new())
                .unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::UNAUTHORIZED, "{what}");
        }
        assert!(JwtIssuer::from_jwks("i", None, "{\"keys\":[]}").is_err());
        assert!(JwtIssuer::from_jwks("i", None, "not json").is_err());
    }

    fn put(store: &covenant_kv::Store, key: &str, value: Option<&str>) {
        let mut tx = store.begin();
        match value {
            Some(v) => tx.put(JWT_ISSUERS, key.as_bytes(), v.as_bytes()),
            None => tx.remove(JWT_ISSUERS, key.as_bytes()),
        }
        store.commit(tx, covenant_types::View(1)).unwrap();
    }

    #[test]
    fn issuers_set_by_governance_are_trusted_while_their_row_stands() {
        let auth = JwtAuth::default();
        let store = covenant_kv::Store::new();
        let (enc, doc) = key_and_jwks();
        let claims = json!({"iss": "https://gov.test", "exp": now() + 600, "oid": "g-1"});
        let t = token(&enc, claims.clone());
        assert!(auth.authenticate(&t, &store).is_err(), "no issuer yet");
        let row = json!({"issuer": "https://gov.test", "jwks": serde_json::from_str::<serde_json::Value>(&doc).unwrap()});
        put(&store, "https://gov.test", Some(&row.to_string()));
        let who = auth.authenticate(&t, &store).unwrap();
        assert_eq!(
            (who.issuer.as_str(), who.id.as_str()),
            ("https://gov.test", "g-1")
        );
        assert_eq!(
            auth.single_issuer(&store).as_deref(),
            Some("https://gov.test")
        );
        // A key rotation replaces the row: old tokens stop working, new ones work.
        let (enc2, doc2) = key_and_jwks();
        let row2 = json!({"issuer": "https://gov.test", "audience": "app", "jwks": serde_json::from_str::<serde_json::Value>(&doc2).unwrap()});
        put(&store, "https://gov.test", Some(&row2.to_string()));
        assert!(auth.authenticate(&t, &store).is_err(), "rotated key");
        let mut with_aud = claims.clone();
        with_aud["aud"] = json!("app");
        assert_eq!(
            auth.authenticate(&token(&enc2, with_aud), &store)
                .unwrap()
                .id,
            "g-1"
        );
        assert!(
            auth.authenticate(&token(&enc2, claims.clone()), &store)
                .is_err(),
            "audience required"
        );
        // A corrupt row is skipped, not fatal; removal untrusts the issuer.
        put(&store, "https://bad.test", Some("{not json"));
        put(&store, "https://gov.test", None);
        let mut with_aud = claims;
        with_aud["aud"] = json!("app");
        assert!(
            auth.authenticate(&token(&enc2, with_aud), &store).is_err(),
            "removed"
        );
    }
}
