//! The identifier derivations of SPEC §2.

use crate::hash::sha256;

/// Node id: lowercase hex SHA-256 of the node public key's DER SubjectPublicKeyInfo.
pub fn node_id(spki_der: &[u8]) -> String {
    sha256(spki_der).to_hex()
}

/// Member id: lowercase hex SHA-256 of the member certificate's DER.
pub fn member_id(cert_der: &[u8]) -> String {
    sha256(cert_der).to_hex()
}

/// Certificate user id: SHA-256 of the certificate DER as uppercase hex pairs joined by `:`.
pub fn user_fingerprint(cert_der: &[u8]) -> String {
    colon_hex(&sha256(cert_der))
}

/// A digest as a certificate user id spells it: uppercase hex pairs joined by `:`
/// (so an id given as lowercase hex, as CCF spells it, maps to the ACL one).
pub fn colon_hex(d: &covenant_types::Digest32) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(95);
    for (i, b) in d.0.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_shape() {
        let f = user_fingerprint(b"abc");
        assert_eq!(f.len(), 95);
        assert!(f.starts_with("BA:78:16:BF:"));
        assert!(f.ends_with(":F2:00:15:AD"), "{f}");
        assert_eq!(member_id(b"abc").len(), 64);
    }
}
