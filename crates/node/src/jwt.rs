//! JWT bearer users (SPEC §4): tokens signed by a configured issuer, whose public
//! keys come from a JWKS document. The user id is the `oid` claim, else `sub`.
//! Only asymmetric algorithms are accepted (RSA, RSA-PSS, ECDSA): a symmetric key
//! in a public JWKS would let anyone mint tokens.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};

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

/// Every configured issuer.
#[derive(Clone, Debug, Default)]
pub struct JwtAuth {
    pub issuers: Vec<JwtIssuer>,
}

impl JwtAuth {
    /// Validates `token` (signature, `iss`, `exp`, `nbf`, `aud` when configured) and
    /// returns the user id it names.
    pub fn authenticate(&self, token: &str) -> Result<String, ApiError> {
        let bad = |why: &str| ApiError::unauthorized(format!("invalid bearer token: {why}"));
        let header = decode_header(token).map_err(|e| bad(&e.to_string()))?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(bad(&format!("algorithm {:?} is not accepted", header.alg)));
        }
        let mut last_error = "no configured issuer has its key".to_string();
        for issuer in &self.issuers {
            let mut validation = Validation::new(header.alg);
            validation.set_issuer(&[&issuer.issuer]);
            match &issuer.audience {
                Some(aud) => validation.set_audience(&[aud]),
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
                        return Ok(id.to_string());
                    }
                    Err(e) => last_error = e.to_string(),
                }
            }
        }
        Err(bad(&last_error))
    }
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

    fn setup() -> (JwtAuth, EncodingKey) {
        let key = SigningKeyPair::generate(Curve::P256).unwrap();
        let enc = EncodingKey::from_ec_der(&key.to_pkcs8_der());
        let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("k1".into());
        let doc = serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap();
        let issuer = JwtIssuer::from_jwks("https://issuer.test", None, &doc).unwrap();
        (
            JwtAuth {
                issuers: vec![issuer],
            },
            enc,
        )
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
        assert_eq!(auth.authenticate(&t).unwrap(), "o-1");
        let t = token(
            &enc,
            json!({"iss": "https://issuer.test", "exp": now() + 600, "sub": "s-1"}),
        );
        assert_eq!(auth.authenticate(&t).unwrap(), "s-1");
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
            let e = auth.authenticate(&t).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::UNAUTHORIZED, "{what}");
        }
        assert!(JwtIssuer::from_jwks("i", None, "{\"keys\":[]}").is_err());
        assert!(JwtIssuer::from_jwks("i", None, "not json").is_err());
    }
}
