//! COSE_Sign1 requests of users (CCF's `user_cose_sign1` app policy): the same
//! envelope as governance requests (tag 18, `alg` ES384/ES256, `kid` the signer's
//! id as lowercase hex in a bstr, embedded payload, `r||s` signature), with the
//! optional protected headers `ccf.msg.type` (tstr) and `ccf.msg.created_at` (uint).

use super::*;

/// Protected header label (text) of the user message type.
pub const USER_HEADER_MSG_TYPE: &str = "ccf.msg.type";
/// Protected header label (text) of the user message creation time, in seconds.
pub const USER_HEADER_CREATED_AT: &str = "ccf.msg.created_at";

/// A user request whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCoseMessage {
    /// The signer's id (`kid`): lowercase hex SHA-256 of its certificate's DER.
    pub kid: String,
    pub msg_type: Option<String>,
    pub created_at: Option<u64>,
    /// The signed payload.
    pub content: Vec<u8>,
}

/// The `kid` of a user envelope, to find the certificate to verify it with.
pub fn user_sign1_kid(envelope: &[u8]) -> Result<String, CryptoError> {
    let sign1 = decode(envelope)?;
    alg_and_kid(
        &sign1.protected.header,
        &[USER_HEADER_MSG_TYPE, USER_HEADER_CREATED_AT],
    )
    .map(|(_, kid)| kid)
}

/// Parses `envelope` and checks that `signer` signed it: `kid` is the signer's id,
/// `alg` its curve's, and the signature over the Sig_structure verifies.
pub fn verify_user_sign1(
    envelope: &[u8],
    signer: &Certificate,
) -> Result<UserCoseMessage, CryptoError> {
    let sign1 = decode(envelope)?;
    let h = &sign1.protected.header;
    let (alg, kid) = alg_and_kid(h, &[USER_HEADER_MSG_TYPE, USER_HEADER_CREATED_AT])?;
    let id = signer.member_id();
    if kid != id {
        return Err(CryptoError::CoseKidMismatch { kid, member_id: id });
    }
    let msg_type = match rest_value(h, USER_HEADER_MSG_TYPE) {
        None => None,
        Some(Value::Text(t)) => Some(t.clone()),
        Some(v) => return Err(wrong_type(USER_HEADER_MSG_TYPE, "a text string", v)),
    };
    let created_at = match rest_value(h, USER_HEADER_CREATED_AT) {
        None => None,
        Some(Value::Integer(i)) => Some(u64::try_from(*i).map_err(|_| {
            CryptoError::Cose(format!(
                "{USER_HEADER_CREATED_AT} must be a non-negative number of seconds"
            ))
        })?),
        Some(v) => {
            return Err(wrong_type(
                USER_HEADER_CREATED_AT,
                "an integer (seconds since the epoch)",
                v,
            ))
        }
    };
    let content = payload_of(&sign1, alg)?;
    let curve = signer.public_key().ec_curve().ok_or_else(|| {
        CryptoError::Unsupported("COSE requests need an ECDSA P-384 or P-256 key".into())
    })?;
    if curve != alg.curve() {
        return Err(CryptoError::Cose(format!(
            "alg {} does not match the signer's {curve:?} key",
            alg.name()
        )));
    }
    signer
        .public_key()
        .verify_fixed(&sign1.tbs_data(&[]), &sign1.signature)
        .map_err(|_| {
            CryptoError::BadSignature(format!(
                "the request's signature does not verify with {id}'s key"
            ))
        })?;
    Ok(UserCoseMessage {
        kid,
        msg_type,
        created_at,
        content,
    })
}

/// Signs `payload` as a user request of `cert` (for clients and tests).
pub fn sign_user_sign1(
    key: &SigningKeyPair,
    cert: &Certificate,
    msg_type: Option<&str>,
    created_at: Option<u64>,
    payload: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if key.public_key_spki_der() != cert.spki_der() {
        return Err(CryptoError::Certificate(
            "signing key does not belong to the certificate".into(),
        ));
    }
    let mut b = HeaderBuilder::new()
        .algorithm(GovAlg::for_curve(key.curve()).iana())
        .key_id(cert.member_id().into_bytes());
    if let Some(t) = msg_type {
        b = b.text_value(USER_HEADER_MSG_TYPE.to_string(), Value::Text(t.to_string()));
    }
    if let Some(at) = created_at {
        b = b.text_value(
            USER_HEADER_CREATED_AT.to_string(),
            Value::Integer(at.into()),
        );
    }
    encode_envelope(b.build(), payload, |tbs| key.sign_fixed(tbs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::generate_client_identity;

    #[test]
    fn user_requests_verify_with_their_signer_only() {
        let (key, cert) = generate_client_identity("user", Curve::P384).unwrap();
        let (_, other) = generate_client_identity("other", Curve::P256).unwrap();
        let env =
            sign_user_sign1(&key, &cert, Some("transfer"), Some(1_700_000_000), b"{}").unwrap();
        assert_eq!(user_sign1_kid(&env).unwrap(), cert.member_id());
        let m = verify_user_sign1(&env, &cert).unwrap();
        assert_eq!(
            (m.msg_type.as_deref(), m.created_at, m.content.as_slice()),
            (Some("transfer"), Some(1_700_000_000), b"{}".as_slice())
        );
        assert!(verify_user_sign1(&env, &other).is_err());
        // No optional headers is fine; a flipped payload byte is not.
        let bare = sign_user_sign1(&key, &cert, None, None, b"hello").unwrap();
        assert_eq!(verify_user_sign1(&bare, &cert).unwrap().msg_type, None);
        let mut bad = bare.clone();
        let i = bad.windows(5).position(|w| w == b"hello").unwrap();
        bad[i] ^= 1;
        assert!(matches!(
            verify_user_sign1(&bad, &cert),
            Err(CryptoError::BadSignature(_))
        ));
        assert!(verify_user_sign1(b"not cbor", &cert).is_err());
    }
}
