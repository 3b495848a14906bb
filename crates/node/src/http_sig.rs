//! HTTP-signature governance requests (draft-cavage-http-signatures-12), the form
//! CCF 1–2 members signed with `scurl.sh` and the Managed CCF preview guide still
//! uses: `Digest: SHA-256=<b64 body digest>` and
//! `Authorization: Signature keyId="…",algorithm="hs2019",headers="(request-target)
//! digest content-length",signature="<b64 DER>"`, the signature made over
//! `(request-target): <method> <path>\ndigest: …\ncontent-length: <n>`.
//!
//! `scurl.sh` names the signer by the hex SHA-256 of its certificate *file* (PEM
//! text); covenant also takes the member id (SHA-256 of the DER). It signs with
//! SHA-384 whatever the curve; SHA-256 is accepted too.

use axum::http::{header, HeaderMap};
use base64::Engine as _;
use covenant_crypto::Certificate;
use covenant_types::Digest32;

/// The parts of a `Signature` Authorization header covenant uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    pub key_id: String,
    /// Names of the signed headers, lower-case, in signing order.
    pub headers: Vec<String>,
    pub signature: Vec<u8>,
}

/// Why an HTTP-signed request is refused (all of them the caller's 4xx).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpSigError {
    #[error("the Authorization header is not an HTTP signature: {0}")]
    Malformed(String),
    #[error(
        "the signature must cover (request-target), digest and content-length; it covers {0:?}"
    )]
    Coverage(Vec<String>),
    #[error("the Digest header must be SHA-256=<base64 of the body's SHA-256>")]
    DigestMissing,
    #[error("the Digest header does not match the body")]
    DigestMismatch,
    #[error("content-length does not match the body")]
    LengthMismatch,
    #[error("the signature does not verify with the member's certificate")]
    BadSignature,
}

/// Whether the request carries an HTTP signature (an `Authorization: Signature …`).
pub fn is_signed(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("Signature "))
}

/// Parses `Signature k="v",k="v",...`; unknown parameters are ignored.
pub fn parse(value: &str) -> Result<SignatureHeader, HttpSigError> {
    let bad = |m: &str| HttpSigError::Malformed(m.to_string());
    let rest = value
        .trim()
        .strip_prefix("Signature ")
        .ok_or_else(|| bad("it does not start with \"Signature \""))?;
    let (mut key_id, mut headers, mut signature) = (None, None, None);
    let mut s = rest.trim();
    while !s.is_empty() {
        let eq = s.find('=').ok_or_else(|| bad("a parameter has no '='"))?;
        let name = s[..eq].trim().to_ascii_lowercase();
        let after = s[eq + 1..].trim_start();
        let after = after
            .strip_prefix('"')
            .ok_or_else(|| bad("parameter values must be quoted"))?;
        let end = after
            .find('"')
            .ok_or_else(|| bad("a quoted value is not closed"))?;
        let v = &after[..end];
        match name.as_str() {
            "keyid" => key_id = Some(v.to_string()),
            "headers" => {
                headers = Some(
                    v.split_ascii_whitespace()
                        .map(str::to_ascii_lowercase)
                        .collect::<Vec<_>>(),
                )
            }
            "signature" => {
                signature = Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(v)
                        .map_err(|_| bad("the signature is not base64"))?,
                )
            }
            _ => {}
        }
        s = after[end + 1..].trim_start();
        s = s.strip_prefix(',').unwrap_or(s).trim_start();
    }
    Ok(SignatureHeader {
        key_id: key_id.ok_or_else(|| bad("no keyId"))?,
        // The draft's default is "(created)"; scurl.sh always lists its headers.
        headers: headers.ok_or_else(|| bad("no headers list"))?,
        signature: signature.ok_or_else(|| bad("no signature"))?,
    })
}

/// The string the client signed, after checking that the signature covers the
/// target, the body digest and its length, and that both match `body`.
pub fn signing_string(
    sig: &SignatureHeader,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, HttpSigError> {
    for needed in ["(request-target)", "digest", "content-length"] {
        if !sig.headers.iter().any(|h| h == needed) {
            return Err(HttpSigError::Coverage(sig.headers.clone()));
        }
    }
    let digest = headers
        .get("digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("SHA-256="))
        .ok_or(HttpSigError::DigestMissing)?;
    let want = base64::engine::general_purpose::STANDARD.encode(covenant_crypto::sha256(body).0);
    if digest != want {
        return Err(HttpSigError::DigestMismatch);
    }
    let mut lines = Vec::with_capacity(sig.headers.len());
    for h in &sig.headers {
        let value = match h.as_str() {
            "(request-target)" => format!("{} {path_and_query}", method.to_ascii_lowercase()),
            "content-length" => {
                let n = body.len().to_string();
                if let Some(v) = headers.get(header::CONTENT_LENGTH) {
                    if v.to_str().ok().map(str::trim) != Some(n.as_str()) {
                        return Err(HttpSigError::LengthMismatch);
                    }
                }
                n
            }
            other => headers
                .get(other)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string())
                .ok_or_else(|| {
                    HttpSigError::Malformed(format!("signed header {other} is absent"))
                })?,
        };
        lines.push(format!("{h}: {value}"));
    }
    Ok(lines.join("\n"))
}

/// Verifies the signature over `signing` with `cert`'s key: ECDSA (DER) or RSA
/// PKCS#1 v1.5, with SHA-384 (what `scurl.sh` uses) or SHA-256.
pub fn verify(
    sig: &SignatureHeader,
    signing: &str,
    cert: &Certificate,
) -> Result<(), HttpSigError> {
    const OIDS: [&str; 4] = [
        "1.2.840.10045.4.3.3",
        "1.2.840.10045.4.3.2",
        "1.2.840.113549.1.1.12",
        "1.2.840.113549.1.1.11",
    ];
    let key = cert.public_key();
    if OIDS.iter().any(|oid| {
        key.verify_with_oid(oid, signing.as_bytes(), &sig.signature)
            .is_ok()
    }) {
        Ok(())
    } else {
        Err(HttpSigError::BadSignature)
    }
}

/// Whether `key_id` names the member whose id is `member_id` and certificate text
/// is `pem`: its id, or the SHA-256 of its certificate file (the PEM as stored,
/// with or without a final newline, LF or CRLF line ends).
pub fn key_id_names(key_id: &str, member_id: &str, pem: &str) -> bool {
    let key_id = key_id.trim().to_ascii_lowercase();
    if key_id == member_id {
        return true;
    }
    let base = pem.trim_end().to_string();
    let crlf = base.replace("\r\n", "\n").replace('\n', "\r\n");
    [
        base.clone(),
        format!("{base}\n"),
        crlf.clone(),
        format!("{crlf}\r\n"),
    ]
    .iter()
    .any(|text| covenant_crypto::sha256(text.as_bytes()).to_hex() == key_id)
}

/// What replay protection keys on: the SHA-256 of the signer and the signed
/// string. HTTP signatures carry no time, so an identical request from the same
/// member is refused for good; ECDSA signatures are malleable, so the signature
/// bytes cannot be the key. (Two members may send identical requests: the same
/// ballot file, say.)
pub fn replay_key(member_id: &str, signing: &str) -> Digest32 {
    covenant_crypto::sha256(format!("http-signature\n{member_id}\n{signing}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use covenant_crypto::{generate_client_identity, Curve};

    fn signed(
        key: &covenant_crypto::SigningKeyPair,
        cert_pem: &str,
        path: &str,
        body: &[u8],
    ) -> HeaderMap {
        let digest =
            base64::engine::general_purpose::STANDARD.encode(covenant_crypto::sha256(body).0);
        let signing = format!(
            "(request-target): post {path}\ndigest: SHA-256={digest}\ncontent-length: {}",
            body.len()
        );
        let sig =
            base64::engine::general_purpose::STANDARD.encode(key.sign(signing.as_bytes()).unwrap());
        let key_id = covenant_crypto::sha256(cert_pem.as_bytes()).to_hex();
        let mut h = HeaderMap::new();
        h.insert(
            "digest",
            HeaderValue::from_str(&format!("SHA-256={digest}")).unwrap(),
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!(
                "Signature keyId=\"{key_id}\",algorithm=\"hs2019\",headers=\"(request-target) digest content-length\",signature=\"{sig}\""
            ))
            .unwrap(),
        );
        h
    }

    #[test]
    fn a_signed_request_verifies_and_a_changed_one_does_not() {
        let (key, cert) = generate_client_identity("member0", Curve::P384).unwrap();
        let pem = cert.to_pem();
        let body = br#"{"state_digest":"00"}"#;
        let h = signed(&key, &pem, "/gov/ack", body);
        assert!(is_signed(&h));
        let sig = parse(h[header::AUTHORIZATION].to_str().unwrap()).unwrap();
        assert!(key_id_names(&sig.key_id, &cert.member_id(), &pem));
        let s = signing_string(&sig, "POST", "/gov/ack", &h, body).unwrap();
        verify(&sig, &s, &cert).unwrap();
        // Another path: the signature no longer covers what is asked.
        let other = signing_string(&sig, "POST", "/gov/proposals", &h, body).unwrap();
        assert_eq!(verify(&sig, &other, &cert), Err(HttpSigError::BadSignature));
        // Another body: the digest no longer matches.
        assert_eq!(
            signing_string(&sig, "POST", "/gov/ack", &h, b"{}"),
            Err(HttpSigError::DigestMismatch)
        );
        // Another member's certificate.
        let (_, stranger) = generate_client_identity("x", Curve::P384).unwrap();
        assert_eq!(verify(&sig, &s, &stranger), Err(HttpSigError::BadSignature));
        assert!(!key_id_names(
            &sig.key_id,
            &stranger.member_id(),
            &stranger.to_pem()
        ));
    }

    #[test]
    fn coverage_must_include_the_target_digest_and_length() {
        let sig = parse(r#"Signature keyId="a",headers="digest",signature="AA==""#).unwrap();
        assert!(matches!(
            signing_string(&sig, "POST", "/gov/ack", &HeaderMap::new(), b""),
            Err(HttpSigError::Coverage(_))
        ));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for v in [
            "Bearer x",
            "Signature keyId=a",
            "Signature keyId=\"a",
            "Signature headers=\"x\",signature=\"AA==\"",
            "Signature keyId=\"a\",headers=\"x\",signature=\"!!\"",
        ] {
            assert!(parse(v).is_err(), "{v}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = parse(&s);
            let _ = parse(&format!("Signature {s}"));
        }
    }
}
