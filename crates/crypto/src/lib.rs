//! covenant's identities and cryptographic primitives.
//!
//! Everything here is built on aws-lc-rs (signatures, AES-GCM, HKDF, hashing),
//! rcgen (certificate issuance) and x509-parser (certificate reading), so that
//! the rest of covenant never touches raw key material or ASN.1.

#![forbid(unsafe_code)]

mod cert;
mod cose;
mod encryption;
mod error;
mod files;
mod hash;
mod identity;
mod ids;
mod keys;
mod secret;
mod verify;

pub use cert::Certificate;
pub use cose::{
    endorse_previous_identity_cose, verify_previous_identity_endorsement, EndorsedEpoch,
};
pub use cose::{
    parse_gov_sign1, sign_gov_sign1, verify_gov_sign1, GovMessage, COSE_SIGN1_TAG, GOV_MSG_TYPES,
    GOV_MSG_TYPES_WITH_PROPOSAL_ID, HEADER_CREATED_AT, HEADER_MSG_TYPE, HEADER_PROPOSAL_ID,
};
pub use cose::{
    sign_user_sign1, user_sign1_kid, verify_user_sign1, UserCoseMessage, USER_HEADER_CREATED_AT,
    USER_HEADER_MSG_TYPE,
};
pub use encryption::{encrypt_to_public_key, EncryptionKeyPair};
pub use error::CryptoError;
pub use files::{read_pem_file, write_private_file, write_public_file};
pub use hash::{hmac_sha256, sha256, sha256_concat, HmacSha256Key, Sha256};
pub use identity::{generate_client_identity, NodeIdentity, ServiceIdentity, SubjectAltName};
pub use ids::{colon_hex, member_id, node_id, user_fingerprint};
pub use keys::{Curve, SigningKeyPair};
pub use secret::{random_token, LedgerSecret, LedgerSecrets, NonceDomain, TAG_LEN};
pub use verify::{verify_prehashed_sha256, PublicKey};
