//! `ccf.crypto`, the crypto host API of `@microsoft/ccf-app` (6.x), in Rust over
//! aws-lc: digests, HMAC, ECDSA / RSA-PSS / EdDSA signatures, key generation, key
//! wrapping (RSA-OAEP, AES-KWP, RSA-OAEP-AES-KWP), X.509 bundle and chain checks,
//! and PEM <-> JWK conversions.
//!
//! Formats are CCF's: keys are PEM strings (PKCS#8 `PRIVATE KEY` and SPKI `PUBLIC
//! KEY` out; SEC1 `EC PRIVATE KEY` and PKCS#1 `RSA PRIVATE KEY` also accepted in),
//! data and results are `ArrayBuffer`s, ECDSA signatures are IEEE P1363 (`r || s`),
//! JWK members are base64url without padding. A small JS wrapper ([`JS`]) checks
//! argument types (`TypeError`) and calls the natives; every other bad input (unknown
//! algorithm, wrong key type, garbage PEM) is a JS `Error` with a message, never a
//! panic. Key material is never logged.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::sync::{Mutex, OnceLock};

use aws_lc_rs::agreement;
use aws_lc_rs::digest;
use aws_lc_rs::encoding::{AsBigEndian, AsDer};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaPssSaltLength, UnparsedPublicKey,
};
use base64::Engine as _;
use pkcs8::der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, OctetStringRef};
use pkcs8::der::{Decode, Encode};
use pkcs8::spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use rquickjs::convert::List;
use rquickjs::{ArrayBuffer, Ctx, Exception, Function, Object};
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use crate::buffer::bytes;

type R<T> = Result<T, String>;

const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_K256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.10");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_X25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");

const INCOMPATIBLE: &str = "incompatible signing algorithm for given key type";

/// The JS half: type checks, defaults, object shapes. Evaluates to a function of the
/// natives object that returns the frozen `ccf.crypto`. No function uses `this`, so
/// they keep working detached (`export const sign = ccf.crypto.sign`).
pub(crate) const JS: &str = r#"
((n) => {
  const buf = (b, what) => {
    if (b instanceof ArrayBuffer) return b;
    if (ArrayBuffer.isView(b)) return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
    throw new TypeError(`${what} must be an ArrayBuffer`);
  };
  const str = (s, what) => {
    if (typeof s !== "string") throw new TypeError(`${what} must be a string`);
    return s;
  };
  const num = (x, what) => {
    if (typeof x !== "number") throw new TypeError(`${what} must be a number`);
    return x;
  };
  const obj = (o, what) => {
    if (o === null || typeof o !== "object") throw new TypeError(`${what} must be an object`);
    return o;
  };
  const opt = (v, check, what) => (v === undefined || v === null ? undefined : check(v, what));
  const algo = (a, what) => {
    obj(a, what);
    str(a.name, `${what}.name`);
    return [a.name, opt(a.hash, str, `${what}.hash`), opt(a.saltLength, num, `${what}.saltLength`)];
  };
  const wrapParams = (p) => {
    obj(p, "wrapAlgo");
    str(p.name, "wrapAlgo.name");
    return [p.name, opt(p.label, buf, "wrapAlgo.label"), opt(p.aesKeySize, num, "wrapAlgo.aesKeySize")];
  };
  const pair = ([privateKey, publicKey]) => ({ privateKey, publicKey });
  const toJwk = (json, kid) => {
    const jwk = JSON.parse(json);
    if (kid !== undefined) jwk.kid = str(kid, "kid");
    return jwk;
  };
  const pemToJwk = (kind, priv) => (pem, kid) => toJwk(n.pemToJwk(kind, priv, str(pem, "pem")), kid);
  const jwkToPem = (kind, priv) => (jwk) => n.jwkToPem(kind, priv, JSON.stringify(obj(jwk, "jwk")));
  return Object.freeze({
    digest: (alg, data) => n.digest(str(alg, "algorithm"), buf(data, "data")),
    sign: (alg, key, data) => n.sign(algo(alg, "algorithm"), str(key, "key"), buf(data, "data")),
    verifySignature: (alg, key, sig, data) =>
      n.verify(algo(alg, "algorithm"), str(key, "key"), buf(sig, "signature"), buf(data, "data")),
    generateAesKey: (size) => n.generateAesKey(num(size, "size")),
    generateRsaKeyPair: (size, exponent) =>
      pair(n.generateRsaKeyPair(num(size, "size"), exponent === undefined ? 65537 : num(exponent, "exponent"))),
    generateEcdsaKeyPair: (curve) => pair(n.generateEcdsaKeyPair(str(curve, "curve"))),
    generateEddsaKeyPair: (curve) => pair(n.generateEddsaKeyPair(str(curve, "curve"))),
    wrapKey: (key, wrappingKey, p) => n.wrapKey(buf(key, "key"), buf(wrappingKey, "wrappingKey"), wrapParams(p)),
    unwrapKey: (key, wrappingKey, p) => n.unwrapKey(buf(key, "key"), buf(wrappingKey, "wrappingKey"), wrapParams(p)),
    isValidX509CertBundle: (pem) => n.isValidX509CertBundle(str(pem, "pem")),
    isValidX509CertChain: (chain, trusted) => n.isValidX509CertChain(str(chain, "chain"), str(trusted, "trusted")),
    pubPemToJwk: pemToJwk("ec", false),
    pemToJwk: pemToJwk("ec", true),
    pubRsaPemToJwk: pemToJwk("rsa", false),
    rsaPemToJwk: pemToJwk("rsa", true),
    pubEddsaPemToJwk: pemToJwk("eddsa", false),
    eddsaPemToJwk: pemToJwk("eddsa", true),
    pubJwkToPem: jwkToPem("ec", false),
    jwkToPem: jwkToPem("ec", true),
    pubRsaJwkToPem: jwkToPem("rsa", false),
    rsaJwkToPem: jwkToPem("rsa", true),
    pubEddsaJwkToPem: jwkToPem("eddsa", false),
    eddsaJwkToPem: jwkToPem("eddsa", true),
  });
})
"#;

/// Builds the natives and returns the frozen `ccf.crypto` object.
pub(crate) fn object<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<Object<'js>> {
    let n = Object::new(ctx.clone())?;
    n.set(
        "digest",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, alg: String, data: ArrayBuffer<'js>| {
                let out = throw(&ctx, digest_of(&alg, &bytes(&data)))?;
                ArrayBuffer::new(ctx, out)
            },
        )?,
    )?;
    n.set(
        "sign",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, alg: AlgArgs, key: String, data: ArrayBuffer<'js>| {
                let (alg, key) = throw(&ctx, SigAlg::with_key(alg, key))?;
                let out = throw(&ctx, sign(alg, &key, &bytes(&data)))?;
                ArrayBuffer::new(ctx, out)
            },
        )?,
    )?;
    n.set(
        "verify",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>,
             alg: AlgArgs,
             key: String,
             sig: ArrayBuffer<'js>,
             data: ArrayBuffer<'js>| {
                let (alg, key) = throw(&ctx, SigAlg::with_key(alg, key))?;
                throw(&ctx, verify(alg, &key, &bytes(&sig), &bytes(&data)))
            },
        )?,
    )?;
    n.set(
        "generateAesKey",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, bits: f64| {
            let key = throw(&ctx, aes_bits(bits).and_then(random))?;
            ArrayBuffer::new(ctx, key.to_vec())
        })?,
    )?;
    n.set(
        "generateRsaKeyPair",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, bits: f64, exponent: f64| {
            throw(&ctx, generate_rsa(bits, exponent))
        })?,
    )?;
    n.set(
        "generateEcdsaKeyPair",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, curve: String| {
            throw(&ctx, generate_ecdsa(&curve))
        })?,
    )?;
    n.set(
        "generateEddsaKeyPair",
        Function::new(ctx.clone(), |ctx: Ctx<'js>, curve: String| {
            throw(&ctx, generate_eddsa(&curve))
        })?,
    )?;
    n.set("wrapKey", key_wrapping(ctx, wrap_key)?)?;
    n.set("unwrapKey", key_wrapping(ctx, unwrap_key)?)?;
    n.set(
        "isValidX509CertBundle",
        Function::new(ctx.clone(), |pem: String| cert_bundle(&pem).is_ok())?,
    )?;
    n.set(
        "isValidX509CertChain",
        Function::new(ctx.clone(), |chain: String, trusted: String| {
            cert_chain(&chain, &trusted).is_ok()
        })?,
    )?;
    n.set(
        "pemToJwk",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, kind: String, private: bool, pem: String| {
                let pem = Zeroizing::new(pem);
                let jwk = throw(&ctx, pem_to_jwk(&kind, private, &pem))?;
                Ok::<_, rquickjs::Error>(Zeroizing::new(jwk.to_string()).to_string())
            },
        )?,
    )?;
    n.set(
        "jwkToPem",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, kind: String, private: bool, jwk: String| {
                let jwk = Zeroizing::new(jwk);
                throw(
                    &ctx,
                    jwk_to_pem(&kind, private, &jwk).map(|p| p.to_string()),
                )
            },
        )?,
    )?;
    let make: Function = crate::bytecode::host_value(ctx, "__covenant_host/crypto", JS)?;
    make.call((n,))
}

/// `ccf.pemToId(pem)`: the member id of a certificate (lowercase hex SHA-256 of its
/// DER), as [`covenant_crypto::member_id`].
pub(crate) fn pem_to_id(pem: &str) -> R<String> {
    covenant_crypto::Certificate::from_pem(pem)
        .map(|c| c.member_id())
        .map_err(|e| format!("not a PEM certificate: {e}"))
}

fn throw<T>(ctx: &Ctx<'_>, r: R<T>) -> rquickjs::Result<T> {
    r.map_err(|m| Exception::throw_message(ctx, &m))
}

/// A signing algorithm as the JS half passes it: `[name, hash?, saltLength?]`.
type AlgArgs = List<(String, Option<String>, Option<f64>)>;

/// The wrapping parameters as the JS half passes them: `[name, label?, aesKeySize?]`.
type WrapArgs<'js> = List<(String, Option<ArrayBuffer<'js>>, Option<f64>)>;

/// `wrap_key` or `unwrap_key`: (algorithm name, key, wrapping key, label?, aesKeySize?).
type KeyWrapOp<O> = fn(&str, &[u8], &[u8], Option<&[u8]>, Option<f64>) -> R<O>;

/// `wrap_key` or `unwrap_key` as a native `(key, wrappingKey, wrapArgs) → ArrayBuffer`.
/// Both keys are zeroized once the call is done.
fn key_wrapping<'js, O: AsRef<[u8]> + 'js>(
    ctx: &Ctx<'js>,
    op: KeyWrapOp<O>,
) -> rquickjs::Result<Function<'js>> {
    Function::new(
        ctx.clone(),
        move |ctx: Ctx<'js>,
              key: ArrayBuffer<'js>,
              wrapping: ArrayBuffer<'js>,
              List((name, label, aes_size)): WrapArgs<'js>| {
            let key = Zeroizing::new(bytes(&key));
            let wrapping = Zeroizing::new(bytes(&wrapping));
            let label = label.map(|l| bytes(&l));
            let out = throw(&ctx, op(&name, &key, &wrapping, label.as_deref(), aes_size))?;
            ArrayBuffer::new(ctx, out.as_ref().to_vec())
        },
    )
}

// ---------------------------------------------------------------------------
// Algorithms

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum HashAlg {
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    fn parse(s: &str) -> R<HashAlg> {
        match s {
            "SHA-256" => Ok(HashAlg::Sha256),
            "SHA-384" => Ok(HashAlg::Sha384),
            "SHA-512" => Ok(HashAlg::Sha512),
            other => Err(format!(
                "unsupported hash algorithm {other:?} (SHA-256, SHA-384 or SHA-512)"
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            HashAlg::Sha256 => "SHA-256",
            HashAlg::Sha384 => "SHA-384",
            HashAlg::Sha512 => "SHA-512",
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            HashAlg::Sha256 => &digest::SHA256,
            HashAlg::Sha384 => &digest::SHA384,
            HashAlg::Sha512 => &digest::SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            HashAlg::Sha256 => hmac::HMAC_SHA256,
            HashAlg::Sha384 => hmac::HMAC_SHA384,
            HashAlg::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn pss_signing(self) -> signature::RsaSignatureEncoding {
        match self {
            HashAlg::Sha256 => signature::RSA_PSS_SHA256,
            HashAlg::Sha384 => signature::RSA_PSS_SHA384,
            HashAlg::Sha512 => signature::RSA_PSS_SHA512,
        }
    }

    fn pss_verification(self) -> signature::RsaParameters {
        match self {
            HashAlg::Sha256 => signature::RSA_PSS_2048_8192_SHA256,
            HashAlg::Sha384 => signature::RSA_PSS_2048_8192_SHA384,
            HashAlg::Sha512 => signature::RSA_PSS_2048_8192_SHA512,
        }
    }
}

/// A signing algorithm of the API (`{name, hash?, saltLength?}`), checked.
#[derive(Debug, Clone, Copy)]
enum SigAlg {
    Ecdsa(HashAlg),
    /// Hash and PSS salt length in bytes (CCF's default: 0).
    RsaPss(HashAlg, u16),
    EdDsa,
    Hmac(HashAlg),
}

impl SigAlg {
    /// The algorithm a `sign`/`verify` call names, and its PEM key (zeroized on drop).
    fn with_key(List((name, hash, salt)): AlgArgs, key: String) -> R<(SigAlg, Zeroizing<String>)> {
        let key = Zeroizing::new(key);
        Ok((SigAlg::parse(&name, hash.as_deref(), salt)?, key))
    }

    fn parse(name: &str, hash: Option<&str>, salt: Option<f64>) -> R<SigAlg> {
        let hash = || {
            hash.ok_or_else(|| format!("{name} needs algorithm.hash"))
                .and_then(HashAlg::parse)
        };
        match name {
            "ECDSA" => Ok(SigAlg::Ecdsa(hash()?)),
            "RSA-PSS" => {
                let salt = match salt {
                    None => 0,
                    Some(s) if s.fract() == 0.0 && (0.0..=f64::from(u16::MAX)).contains(&s) => {
                        s as u16
                    }
                    Some(s) => return Err(format!("invalid RSA-PSS saltLength {s}")),
                };
                Ok(SigAlg::RsaPss(hash()?, salt))
            }
            "EdDSA" => Ok(SigAlg::EdDsa),
            "HMAC" => Ok(SigAlg::Hmac(hash()?)),
            other => Err(format!(
                "unsupported signing algorithm {other:?} (ECDSA, RSA-PSS, EdDSA or HMAC)"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
    K256,
}

impl Curve {
    fn from_oid(oid: ObjectIdentifier) -> R<Curve> {
        match oid {
            OID_P256 => Ok(Curve::P256),
            OID_P384 => Ok(Curve::P384),
            OID_K256 => Ok(Curve::K256),
            other => Err(format!("unsupported elliptic curve {other}")),
        }
    }

    fn oid(self) -> ObjectIdentifier {
        match self {
            Curve::P256 => OID_P256,
            Curve::P384 => OID_P384,
            Curve::K256 => OID_K256,
        }
    }

    /// The JWK `crv`.
    fn jwk(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::K256 => "secp256k1",
        }
    }

    fn from_jwk(crv: &str) -> R<Curve> {
        match crv {
            "P-256" => Ok(Curve::P256),
            "P-384" => Ok(Curve::P384),
            "secp256k1" => Ok(Curve::K256),
            other => Err(format!(
                "unsupported JWK curve {other:?} (P-256, P-384 or secp256k1)"
            )),
        }
    }

    fn from_name(name: &str) -> R<Curve> {
        match name {
            "secp256r1" => Ok(Curve::P256),
            "secp384r1" => Ok(Curve::P384),
            "secp256k1" => Ok(Curve::K256),
            other => Err(format!(
                "unsupported ECDSA curve {other:?} (secp256r1, secp384r1 or secp256k1)"
            )),
        }
    }

    fn field_len(self) -> usize {
        match self {
            Curve::P256 | Curve::K256 => 32,
            Curve::P384 => 48,
        }
    }

    /// The hash ECDSA uses with this curve (aws-lc signs only these pairs).
    fn hash(self) -> HashAlg {
        match self {
            Curve::P256 | Curve::K256 => HashAlg::Sha256,
            Curve::P384 => HashAlg::Sha384,
        }
    }

    fn signing(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            Curve::K256 => &signature::ECDSA_P256K1_SHA256_FIXED_SIGNING,
        }
    }

    fn verification(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
            Curve::K256 => &signature::ECDSA_P256K1_SHA256_FIXED,
        }
    }

    fn check_hash(self, hash: HashAlg) -> R<()> {
        if hash == self.hash() {
            Ok(())
        } else {
            Err(format!(
                "ECDSA over {} is supported with {} only, not {}",
                self.jwk(),
                self.hash().name(),
                hash.name()
            ))
        }
    }

    /// Checks an uncompressed point (`04 || x || y`) is on the curve.
    fn check_point(self, point: &[u8]) -> R<()> {
        if point.len() != 1 + 2 * self.field_len() || point[0] != 4 {
            return Err(format!(
                "an {} public key must be an uncompressed point",
                self.jwk()
            ));
        }
        signature::ParsedPublicKey::new(self.verification(), point)
            .map(|_| ())
            .map_err(|_| format!("not a point of {}", self.jwk()))
    }
}

// ---------------------------------------------------------------------------
// Keys

enum Private {
    Ec(Curve, EcdsaKeyPair),
    /// PKCS#8 DER.
    Rsa(Zeroizing<Vec<u8>>),
    Ed25519(Ed25519KeyPair),
    /// The 32-byte private key.
    X25519(Zeroizing<Vec<u8>>),
}

enum Public {
    /// Uncompressed point.
    Ec(Curve, Vec<u8>),
    /// Big-endian modulus and exponent.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ed25519(Vec<u8>),
    X25519(Vec<u8>),
}

fn pem_block(text: &str, what: &str) -> R<pem::Pem> {
    pem::parse(text).map_err(|_| format!("not a PEM {what}"))
}

fn pem_text(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn rejected(what: &str) -> impl Fn(aws_lc_rs::error::KeyRejected) -> String + '_ {
    move |e| format!("invalid {what}: {e}")
}

impl Private {
    fn from_pem(text: &str) -> R<Private> {
        let block = pem_block(text, "private key")?;
        let der = Zeroizing::new(block.contents().to_vec());
        match block.tag() {
            "PRIVATE KEY" => Self::from_pkcs8(&der),
            "EC PRIVATE KEY" => {
                let key = sec1::EcPrivateKey::from_der(&der)
                    .map_err(|e| format!("invalid SEC1 EC private key: {e}"))?;
                let curve = key
                    .parameters
                    .and_then(|p| p.named_curve())
                    .ok_or("SEC1 EC private key without a named curve")?;
                let curve = Curve::from_oid(curve)?;
                let pair = EcdsaKeyPair::from_private_key_der(curve.signing(), &der)
                    .map_err(rejected("EC private key"))?;
                Ok(Private::Ec(curve, pair))
            }
            "RSA PRIVATE KEY" => {
                let pair = rsa::KeyPair::from_der(&der).map_err(rejected("RSA private key"))?;
                let pkcs8 = pair
                    .as_der()
                    .map_err(|_| "cannot re-encode the RSA private key")?;
                Ok(Private::Rsa(Zeroizing::new(pkcs8.as_ref().to_vec())))
            }
            "ENCRYPTED PRIVATE KEY" => Err("encrypted private keys are not supported".into()),
            other => Err(format!("expected a PEM private key, not {other:?}")),
        }
    }

    fn from_pkcs8(der: &[u8]) -> R<Private> {
        let info = pkcs8::PrivateKeyInfo::from_der(der)
            .map_err(|e| format!("invalid PKCS#8 private key: {e}"))?;
        match info.algorithm.oid {
            OID_EC => {
                let curve = info
                    .algorithm
                    .parameters_oid()
                    .map_err(|_| "EC private key without a named curve")?;
                let curve = Curve::from_oid(curve)?;
                let pair = EcdsaKeyPair::from_private_key_der(curve.signing(), der)
                    .map_err(rejected("EC private key"))?;
                Ok(Private::Ec(curve, pair))
            }
            OID_RSA => {
                let pair = rsa::KeyPair::from_pkcs8(der).map_err(rejected("RSA private key"))?;
                let pkcs8 = pair
                    .as_der()
                    .map_err(|_| "cannot re-encode the RSA private key")?;
                Ok(Private::Rsa(Zeroizing::new(pkcs8.as_ref().to_vec())))
            }
            OID_ED25519 => Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map(Private::Ed25519)
                .map_err(rejected("Ed25519 private key")),
            OID_X25519 => {
                let seed = OctetStringRef::from_der(info.private_key)
                    .map_err(|e| format!("invalid X25519 private key: {e}"))?;
                x25519_from_seed(seed.as_bytes()).map(|_| ())?;
                Ok(Private::X25519(Zeroizing::new(seed.as_bytes().to_vec())))
            }
            other => Err(format!("unsupported private key algorithm {other}")),
        }
    }

    fn public(&self) -> R<Public> {
        Ok(match self {
            Private::Ec(curve, pair) => Public::Ec(*curve, pair.public_key().as_ref().to_vec()),
            Private::Rsa(pkcs8) => {
                let pair = rsa::KeyPair::from_pkcs8(pkcs8).map_err(rejected("RSA private key"))?;
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                Public::Rsa { n: c.n, e: c.e }
            }
            Private::Ed25519(pair) => Public::Ed25519(pair.public_key().as_ref().to_vec()),
            Private::X25519(seed) => Public::X25519(x25519_from_seed(seed)?),
        })
    }

    fn to_pkcs8(&self) -> R<Zeroizing<Vec<u8>>> {
        let der = match self {
            Private::Ec(_, pair) => pair
                .to_pkcs8v1()
                .map_err(|_| "cannot encode the EC private key")?
                .as_ref()
                .to_vec(),
            Private::Rsa(pkcs8) => pkcs8.to_vec(),
            Private::Ed25519(pair) => pair
                .to_pkcs8v1()
                .map_err(|_| "cannot encode the Ed25519 private key")?
                .as_ref()
                .to_vec(),
            Private::X25519(seed) => {
                let inner = Zeroizing::new(
                    OctetStringRef::new(seed)
                        .and_then(|o| o.to_der())
                        .map_err(|e| e.to_string())?,
                );
                let info = pkcs8::PrivateKeyInfo::new(
                    AlgorithmIdentifierRef {
                        oid: OID_X25519,
                        parameters: None,
                    },
                    &inner,
                );
                info.to_der().map_err(|e| e.to_string())?
            }
        };
        Ok(Zeroizing::new(der))
    }

    fn to_pem(&self) -> R<Zeroizing<String>> {
        Ok(Zeroizing::new(pem_text("PRIVATE KEY", &self.to_pkcs8()?)))
    }
}

fn x25519_from_seed(seed: &[u8]) -> R<Vec<u8>> {
    let key = agreement::PrivateKey::from_private_key(&agreement::X25519, seed)
        .map_err(|_| "an X25519 private key is 32 bytes")?;
    let public = key
        .compute_public_key()
        .map_err(|_| "cannot derive the X25519 public key")?;
    Ok(public.as_ref().to_vec())
}

fn spki_der(oid: ObjectIdentifier, params: Option<AnyRef<'_>>, key: &[u8]) -> R<Vec<u8>> {
    SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid,
            parameters: params,
        },
        subject_public_key: BitStringRef::from_bytes(key).map_err(|e| e.to_string())?,
    }
    .to_der()
    .map_err(|e| e.to_string())
}

impl Public {
    /// A `PUBLIC KEY`, a `CERTIFICATE` (its key), an `RSA PUBLIC KEY`, or a private
    /// key (its public half).
    fn from_pem(text: &str) -> R<Public> {
        let block = pem_block(text, "public key or certificate")?;
        match block.tag() {
            "PUBLIC KEY" => Self::from_spki(block.contents()),
            "CERTIFICATE" => {
                let (rest, cert) = x509_parser::parse_x509_certificate(block.contents())
                    .map_err(|e| format!("invalid certificate: {e}"))?;
                if !rest.is_empty() {
                    return Err("trailing bytes after the certificate".into());
                }
                Self::from_spki(cert.public_key().raw)
            }
            "RSA PUBLIC KEY" => Self::from_pkcs1(block.contents()),
            "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY" => {
                Private::from_pem(text)?.public()
            }
            other => Err(format!(
                "expected a PEM public key or certificate, not {other:?}"
            )),
        }
    }

    fn from_pkcs1(der: &[u8]) -> R<Public> {
        let key = pkcs1::RsaPublicKey::from_der(der)
            .map_err(|e| format!("invalid RSA public key: {e}"))?;
        Ok(Public::Rsa {
            n: key.modulus.as_bytes().to_vec(),
            e: key.public_exponent.as_bytes().to_vec(),
        })
    }

    fn from_spki(der: &[u8]) -> R<Public> {
        let spki = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| format!("invalid public key: {e}"))?;
        let key = spki
            .subject_public_key
            .as_bytes()
            .ok_or("invalid public key: unused bits")?;
        match spki.algorithm.oid {
            OID_EC => {
                let curve = spki
                    .algorithm
                    .parameters_oid()
                    .map_err(|_| "EC public key without a named curve")?;
                let curve = Curve::from_oid(curve)?;
                curve.check_point(key)?;
                Ok(Public::Ec(curve, key.to_vec()))
            }
            OID_RSA => Self::from_pkcs1(key),
            OID_ED25519 if key.len() == 32 => Ok(Public::Ed25519(key.to_vec())),
            OID_X25519 if key.len() == 32 => Ok(Public::X25519(key.to_vec())),
            OID_ED25519 | OID_X25519 => Err("an EdDSA public key is 32 bytes".into()),
            other => Err(format!("unsupported public key algorithm {other}")),
        }
    }

    fn to_spki(&self) -> R<Vec<u8>> {
        match self {
            Public::Ec(curve, point) => {
                let oid = curve.oid();
                spki_der(OID_EC, Some(AnyRef::from(&oid)), point)
            }
            Public::Rsa { n, e } => {
                let c = signature::RsaPublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                };
                c.as_der()
                    .map(|d| d.as_ref().to_vec())
                    .map_err(|_| "invalid RSA public key".into())
            }
            Public::Ed25519(x) => spki_der(OID_ED25519, None, x),
            Public::X25519(x) => spki_der(OID_X25519, None, x),
        }
    }

    fn to_pem(&self) -> R<String> {
        Ok(pem_text("PUBLIC KEY", &self.to_spki()?))
    }
}

// ---------------------------------------------------------------------------
// Digests and signatures

fn digest_of(alg: &str, data: &[u8]) -> R<Vec<u8>> {
    Ok(digest::digest(HashAlg::parse(alg)?.digest(), data)
        .as_ref()
        .to_vec())
}

/// aws-lc wants a `'static` encoding per PSS salt length: one is made per (hash,
/// salt) pair ever used, and kept (at most 3 × 65536 tiny values; in practice a few).
fn pss_encoding(hash: HashAlg, salt: u16) -> &'static signature::RsaSignatureEncoding {
    type Cache = HashMap<(HashAlg, u16), &'static signature::RsaSignatureEncoding>;
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    cache.entry((hash, salt)).or_insert_with(|| {
        Box::leak(Box::new(
            hash.pss_signing()
                .with_pss_salt_length(RsaPssSaltLength::Custom(salt)),
        ))
    })
}

fn sign(alg: SigAlg, key: &str, data: &[u8]) -> R<Vec<u8>> {
    if let SigAlg::Hmac(hash) = alg {
        let key = hmac::Key::new(hash.hmac(), key.as_bytes());
        return Ok(hmac::sign(&key, data).as_ref().to_vec());
    }
    let rng = SystemRandom::new();
    match (alg, Private::from_pem(key)?) {
        (SigAlg::Ecdsa(hash), Private::Ec(curve, pair)) => {
            curve.check_hash(hash)?;
            pair.sign(&rng, data)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "ECDSA signing failed".into())
        }
        (SigAlg::RsaPss(hash, salt), Private::Rsa(pkcs8)) => {
            let pair = rsa::KeyPair::from_pkcs8(&pkcs8).map_err(rejected("RSA private key"))?;
            let max = pair
                .public_modulus_len()
                .saturating_sub(hash.digest().output_len() + 2);
            if usize::from(salt) > max {
                return Err(format!(
                    "RSA-PSS saltLength {salt} is too long for this key and hash (at most {max})"
                ));
            }
            let mut sig = vec![0; pair.public_modulus_len()];
            pair.sign(pss_encoding(hash, salt), &rng, data, &mut sig)
                .map_err(|_| "RSA-PSS signing failed")?;
            Ok(sig)
        }
        (SigAlg::EdDsa, Private::Ed25519(pair)) => Ok(pair.sign(data).as_ref().to_vec()),
        _ => Err(INCOMPATIBLE.into()),
    }
}

fn verify(alg: SigAlg, key: &str, sig: &[u8], data: &[u8]) -> R<bool> {
    if let SigAlg::Hmac(hash) = alg {
        let key = hmac::Key::new(hash.hmac(), key.as_bytes());
        return Ok(hmac::verify(&key, data, sig).is_ok());
    }
    Ok(match (alg, Public::from_pem(key)?) {
        (SigAlg::Ecdsa(hash), Public::Ec(curve, point)) => {
            curve.check_hash(hash)?;
            UnparsedPublicKey::new(curve.verification(), &point)
                .verify(data, sig)
                .is_ok()
        }
        (SigAlg::RsaPss(hash, salt), Public::Rsa { n, e }) => {
            let params = hash
                .pss_verification()
                .with_pss_salt_length(RsaPssSaltLength::Custom(salt));
            signature::RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            }
            .verify(&params, data, sig)
            .is_ok()
        }
        (SigAlg::EdDsa, Public::Ed25519(x)) => UnparsedPublicKey::new(&signature::ED25519, &x)
            .verify(data, sig)
            .is_ok(),
        _ => return Err(INCOMPATIBLE.into()),
    })
}

// ---------------------------------------------------------------------------
// Key generation

fn random(len: usize) -> R<Zeroizing<Vec<u8>>> {
    let mut key = Zeroizing::new(vec![0; len]);
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| "the random generator failed")?;
    Ok(key)
}

/// An AES key size in bits (128, 192, 256), as bytes.
fn aes_bits(bits: f64) -> R<usize> {
    match bits {
        128.0 => Ok(16),
        192.0 => Ok(24),
        256.0 => Ok(32),
        other => Err(format!(
            "invalid AES key size {other} (128, 192 or 256 bits)"
        )),
    }
}

fn generate_rsa(bits: f64, exponent: f64) -> R<Vec<String>> {
    // aws-lc generates these sizes, with exponent 65537; larger keys take long
    // enough to blow a script's time budget in native code, which cannot be
    // interrupted.
    let size = match bits {
        2048.0 => rsa::KeySize::Rsa2048,
        3072.0 => rsa::KeySize::Rsa3072,
        4096.0 => rsa::KeySize::Rsa4096,
        other => {
            return Err(format!(
                "unsupported RSA key size {other} (2048, 3072 or 4096 bits)"
            ))
        }
    };
    if exponent != 65537.0 {
        return Err(format!(
            "unsupported RSA public exponent {exponent} (only 65537)"
        ));
    }
    let pair = rsa::KeyPair::generate(size).map_err(|_| "RSA key generation failed")?;
    let pkcs8 = pair
        .as_der()
        .map_err(|_| "cannot encode the RSA private key")?;
    let public = pair
        .public_key()
        .as_der()
        .map_err(|_| "cannot encode the RSA public key")?;
    Ok(vec![
        pem_text("PRIVATE KEY", pkcs8.as_ref()),
        pem_text("PUBLIC KEY", public.as_ref()),
    ])
}

fn key_pair_pems(private: Private) -> R<Vec<String>> {
    let public = private.public()?.to_pem()?;
    Ok(vec![private.to_pem()?.to_string(), public])
}

fn generate_ecdsa(curve: &str) -> R<Vec<String>> {
    let curve = Curve::from_name(curve)?;
    let pair = EcdsaKeyPair::generate(curve.signing()).map_err(|_| "EC key generation failed")?;
    key_pair_pems(Private::Ec(curve, pair))
}

fn generate_eddsa(curve: &str) -> R<Vec<String>> {
    let private = match curve {
        "curve25519" => Private::Ed25519(
            Ed25519KeyPair::generate().map_err(|_| "Ed25519 key generation failed")?,
        ),
        "x25519" => {
            let key = agreement::PrivateKey::generate(&agreement::X25519)
                .map_err(|_| "X25519 key generation failed")?;
            let seed: aws_lc_rs::encoding::Curve25519SeedBin<'_> = key
                .as_be_bytes()
                .map_err(|_| "cannot encode the X25519 private key")?;
            Private::X25519(Zeroizing::new(seed.as_ref().to_vec()))
        }
        other => {
            return Err(format!(
                "unsupported EdDSA curve {other:?} (curve25519 or x25519)"
            ))
        }
    };
    key_pair_pems(private)
}

// ---------------------------------------------------------------------------
// Key wrapping

fn utf8(pem: &[u8]) -> R<&str> {
    std::str::from_utf8(pem).map_err(|_| "the wrapping key must be PEM text".into())
}

fn oaep_wrap(public_pem: &[u8], plaintext: &[u8], label: Option<&[u8]>) -> R<Vec<u8>> {
    let Public::Rsa { n, e } = Public::from_pem(utf8(public_pem)?)? else {
        return Err("RSA-OAEP needs an RSA public key".into());
    };
    let key: rsa::PublicEncryptingKey = signature::RsaPublicKeyComponents { n, e }
        .try_into()
        .map_err(|_| "invalid RSA public key")?;
    let key = rsa::OaepPublicEncryptingKey::new(key).map_err(|_| "invalid RSA public key")?;
    let max = key.max_plaintext_size(&rsa::OAEP_SHA256_MGF1SHA256);
    if plaintext.len() > max {
        return Err(format!(
            "RSA-OAEP with this key wraps at most {max} bytes, not {}",
            plaintext.len()
        ));
    }
    let mut out = vec![0; key.ciphertext_size()];
    let len = key
        .encrypt(&rsa::OAEP_SHA256_MGF1SHA256, plaintext, &mut out, label)
        .map_err(|_| "RSA-OAEP wrapping failed")?
        .len();
    out.truncate(len);
    Ok(out)
}

fn rsa_private(private_pem: &[u8]) -> R<rsa::PrivateDecryptingKey> {
    let Private::Rsa(pkcs8) = Private::from_pem(utf8(private_pem)?)? else {
        return Err("RSA-OAEP unwrapping needs an RSA private key".into());
    };
    rsa::PrivateDecryptingKey::from_pkcs8(&pkcs8).map_err(rejected("RSA private key"))
}

fn oaep_unwrap(
    key: rsa::PrivateDecryptingKey,
    wrapped: &[u8],
    label: Option<&[u8]>,
) -> R<Zeroizing<Vec<u8>>> {
    let key = rsa::OaepPrivateDecryptingKey::new(key).map_err(|_| "invalid RSA private key")?;
    let mut out = Zeroizing::new(vec![0; key.min_output_size()]);
    let len = key
        .decrypt(&rsa::OAEP_SHA256_MGF1SHA256, wrapped, &mut out, label)
        .map_err(|_| "RSA-OAEP unwrapping failed (wrong key, label or data)")?
        .len();
    out.truncate(len);
    Ok(out)
}

/// RFC 5649 AES key wrap with padding, with a 128, 192 or 256-bit key (aws-lc-rs's
/// `key_wrap` has no AES-192, so this calls aws-lc's `AES_{un,}wrap_key_padded`).
fn aes_kwp(kek: &[u8], input: &[u8], wrap: bool) -> R<Zeroizing<Vec<u8>>> {
    use aws_lc_sys::{
        AES_set_decrypt_key, AES_set_encrypt_key, AES_unwrap_key_padded, AES_wrap_key_padded,
        AES_KEY,
    };
    if ![16, 24, 32].contains(&kek.len()) {
        return Err(format!(
            "AES-KWP needs a 128, 192 or 256-bit wrapping key, not {} bits",
            kek.len() * 8
        ));
    }
    if wrap && (input.is_empty() || input.len() > (1 << 30)) {
        return Err("AES-KWP wraps 1 byte to 1 GiB".into());
    }
    if !wrap && (input.len() < 16 || input.len() % 8 != 0) {
        return Err("not an AES-KWP wrapped key (a multiple of 8 bytes, at least 16)".into());
    }
    let bits = (kek.len() * 8) as std::os::raw::c_uint;
    let set_key = if wrap {
        AES_set_encrypt_key
    } else {
        AES_set_decrypt_key
    };
    let op = if wrap {
        AES_wrap_key_padded
    } else {
        AES_unwrap_key_padded
    };
    let mut aes = MaybeUninit::<AES_KEY>::uninit();
    // SAFETY: `kek` is a live slice of `bits / 8` bytes; `aes` is written in full by
    // the call when it returns 0.
    let rc = unsafe { set_key(kek.as_ptr(), bits, aes.as_mut_ptr()) };
    if rc != 0 {
        return Err("invalid AES key".into());
    }
    // SAFETY: initialised by the successful call above.
    let mut aes = unsafe { aes.assume_init() };
    // Wrapping adds an 8-byte block and pads to 8; unwrapping shrinks.
    let mut out = Zeroizing::new(vec![0u8; input.len() + 16]);
    let mut out_len = 0usize;
    // SAFETY: every pointer is live for the stated length; aws-lc writes at most
    // `out.len()` bytes and sets `out_len`.
    let ok = unsafe {
        op(
            &aes,
            out.as_mut_ptr(),
            &mut out_len,
            out.len(),
            input.as_ptr(),
            input.len(),
        )
    };
    // SAFETY: AES_KEY is plain data (round keys and a count); zeroing it is valid.
    unsafe { zeroize::zeroize_flat_type(&mut aes) };
    if ok != 1 || out_len > out.len() {
        return Err(if wrap {
            "AES-KWP wrapping failed".into()
        } else {
            "AES-KWP unwrapping failed (wrong key or corrupted data)".into()
        });
    }
    out.truncate(out_len);
    Ok(out)
}

fn wrap_key(
    name: &str,
    key: &[u8],
    wrapping: &[u8],
    label: Option<&[u8]>,
    aes_size: Option<f64>,
) -> R<Vec<u8>> {
    match name {
        "RSA-OAEP" => oaep_wrap(wrapping, key, label),
        "AES-KWP" => Ok(aes_kwp(wrapping, key, true)?.to_vec()),
        "RSA-OAEP-AES-KWP" => {
            let size = aes_size.ok_or("RSA-OAEP-AES-KWP needs wrapAlgo.aesKeySize")?;
            let aes = random(aes_bits(size)?)?;
            let mut out = oaep_wrap(wrapping, &aes, label)?;
            out.extend_from_slice(&aes_kwp(&aes, key, true)?);
            Ok(out)
        }
        other => Err(format!(
            "unsupported wrapAlgo.name {other:?} (RSA-OAEP, AES-KWP or RSA-OAEP-AES-KWP)"
        )),
    }
}

fn unwrap_key(
    name: &str,
    wrapped: &[u8],
    unwrapping: &[u8],
    label: Option<&[u8]>,
    aes_size: Option<f64>,
) -> R<Zeroizing<Vec<u8>>> {
    match name {
        "RSA-OAEP" => oaep_unwrap(rsa_private(unwrapping)?, wrapped, label),
        "AES-KWP" => aes_kwp(unwrapping, wrapped, false),
        "RSA-OAEP-AES-KWP" => {
            let key = rsa_private(unwrapping)?;
            let split = key.key_size_bytes();
            if wrapped.len() <= split {
                return Err("RSA-OAEP-AES-KWP wrapped key is too short for this key".into());
            }
            let aes = oaep_unwrap(key, &wrapped[..split], label)?;
            if let Some(size) = aes_size {
                if aes_bits(size)? != aes.len() {
                    return Err("the wrapped AES key does not have wrapAlgo.aesKeySize".into());
                }
            }
            aes_kwp(&aes, &wrapped[split..], false)
        }
        other => Err(format!(
            "unsupported wrapAlgo.name {other:?} (RSA-OAEP, AES-KWP or RSA-OAEP-AES-KWP)"
        )),
    }
}

// ---------------------------------------------------------------------------
// X.509

/// The DER of every certificate of a PEM bundle (at least one; nothing else in it).
fn cert_bundle(text: &str) -> R<Vec<Vec<u8>>> {
    let blocks = pem::parse_many(text).map_err(|e| format!("invalid PEM: {e}"))?;
    if blocks.is_empty() {
        return Err("no certificate".into());
    }
    blocks
        .into_iter()
        .map(|b| {
            if b.tag() != "CERTIFICATE" {
                return Err(format!("a {:?} block is not a certificate", b.tag()));
            }
            match x509_parser::parse_x509_certificate(b.contents()) {
                Ok((&[], _)) => Ok(b.into_contents()),
                Ok(_) => Err("trailing bytes after a certificate".into()),
                Err(e) => Err(format!("invalid certificate: {e}")),
            }
        })
        .collect()
}

/// `child` names `issuer` as its issuer, `issuer` is a CA, and its key signed
/// `child`.
fn issued_by(child: &[u8], issuer: &[u8]) -> R<()> {
    let parse = |der| {
        x509_parser::parse_x509_certificate(der)
            .map(|(_, c)| c)
            .map_err(|e| format!("invalid certificate: {e}"))
    };
    let (c, i) = (parse(child)?, parse(issuer)?);
    if c.issuer().as_raw() != i.subject().as_raw() {
        return Err(format!("{} is not issued by {}", c.subject(), i.subject()));
    }
    if !i.is_ca() {
        return Err(format!("{} is not a CA", i.subject()));
    }
    let cert = |der| covenant_crypto::Certificate::from_der(der).map_err(|e| e.to_string());
    cert(child)?
        .verify_signed_by(&cert(issuer)?)
        .map_err(|e| e.to_string())
}

/// The chain (leaf first) links up, each certificate is within its validity period,
/// and one of them is, or is issued by, a trusted certificate.
fn cert_chain(chain: &str, trusted: &str) -> R<()> {
    let chain = cert_bundle(chain)?;
    let trusted = cert_bundle(trusted)?;
    for der in &chain {
        let (_, c) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
        if !c.validity().is_valid() {
            return Err(format!("{} is outside its validity period", c.subject()));
        }
    }
    for pair in chain.windows(2) {
        issued_by(&pair[0], &pair[1])?;
    }
    let anchored = chain
        .iter()
        .any(|c| trusted.iter().any(|t| c == t || issued_by(c, t).is_ok()));
    if anchored {
        Ok(())
    } else {
        Err("no certificate of the chain is or is issued by a trusted certificate".into())
    }
}

// ---------------------------------------------------------------------------
// JWK

fn b64(bytes: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A base64url member of a JWK (padding tolerated).
fn member(jwk: &Map<String, Value>, name: &str) -> R<Zeroizing<Vec<u8>>> {
    const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let s = text_member(jwk, name)?;
    LENIENT
        .decode(s)
        .map(Zeroizing::new)
        .map_err(|_| format!("JWK member {name:?} is not base64url"))
}

fn text_member<'a>(jwk: &'a Map<String, Value>, name: &str) -> R<&'a str> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("JWK member {name:?} is missing or not a string"))
}

fn fixed<'a>(bytes: &'a [u8], len: usize, name: &str) -> R<&'a [u8]> {
    if bytes.len() == len {
        Ok(bytes)
    } else {
        Err(format!(
            "JWK member {name:?} must be {len} bytes, not {}",
            bytes.len()
        ))
    }
}

fn kind_error(kind: &str) -> String {
    match kind {
        "ec" => "expected an EC key".into(),
        "rsa" => "expected an RSA key".into(),
        _ => "expected an EdDSA (Ed25519 or X25519) key".into(),
    }
}

fn public_jwk(kind: &str, public: &Public) -> R<Map<String, Value>> {
    let v = match (kind, public) {
        ("ec", Public::Ec(curve, point)) => {
            let (x, y) = point[1..].split_at(curve.field_len());
            json!({"kty": "EC", "crv": curve.jwk(), "x": b64(x), "y": b64(y)})
        }
        ("rsa", Public::Rsa { n, e }) => json!({"kty": "RSA", "n": b64(n), "e": b64(e)}),
        ("eddsa", Public::Ed25519(x)) => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(x)}),
        ("eddsa", Public::X25519(x)) => json!({"kty": "OKP", "crv": "X25519", "x": b64(x)}),
        _ => return Err(kind_error(kind)),
    };
    match v {
        Value::Object(m) => Ok(m),
        _ => Err("internal error: JWK is not an object".into()),
    }
}

fn pem_to_jwk(kind: &str, private: bool, pem: &str) -> R<Value> {
    if !private {
        return public_jwk(kind, &Public::from_pem(pem)?).map(Value::Object);
    }
    let key = Private::from_pem(pem)?;
    let mut jwk = public_jwk(kind, &key.public()?)?;
    match &key {
        Private::Ec(_, pair) => {
            let d: aws_lc_rs::encoding::EcPrivateKeyBin<'_> = pair
                .private_key()
                .as_be_bytes()
                .map_err(|_| "cannot encode the EC private key")?;
            jwk.insert("d".into(), b64(d.as_ref()));
        }
        Private::Rsa(pkcs8) => {
            let info = pkcs8::PrivateKeyInfo::from_der(pkcs8).map_err(|e| e.to_string())?;
            let k = pkcs1::RsaPrivateKey::from_der(info.private_key)
                .map_err(|e| format!("invalid RSA private key: {e}"))?;
            if k.other_prime_infos.is_some() {
                return Err("multi-prime RSA keys are not supported".into());
            }
            for (name, v) in [
                ("d", k.private_exponent),
                ("p", k.prime1),
                ("q", k.prime2),
                ("dp", k.exponent1),
                ("dq", k.exponent2),
                ("qi", k.coefficient),
            ] {
                jwk.insert(name.into(), b64(v.as_bytes()));
            }
        }
        Private::Ed25519(pair) => {
            let seed = pair.seed().map_err(|_| "cannot encode the Ed25519 key")?;
            let d: aws_lc_rs::encoding::Curve25519SeedBin<'_> = seed
                .as_be_bytes()
                .map_err(|_| "cannot encode the Ed25519 key")?;
            jwk.insert("d".into(), b64(d.as_ref()));
        }
        Private::X25519(seed) => {
            jwk.insert("d".into(), b64(seed));
        }
    }
    Ok(Value::Object(jwk))
}

fn jwk_to_pem(kind: &str, private: bool, text: &str) -> R<Zeroizing<String>> {
    let value: Value = serde_json::from_str(text).map_err(|_| "a JWK must be a JSON object")?;
    let jwk = value.as_object().ok_or("a JWK must be an object")?;
    let kty = text_member(jwk, "kty")?;
    let expected = match kind {
        "ec" => "EC",
        "rsa" => "RSA",
        _ => "OKP",
    };
    if kty != expected {
        return Err(format!("expected a JWK of kty {expected:?}, not {kty:?}"));
    }
    let public = match kind {
        "ec" => {
            let curve = Curve::from_jwk(text_member(jwk, "crv")?)?;
            let len = curve.field_len();
            let mut point = vec![4];
            point.extend_from_slice(fixed(&member(jwk, "x")?, len, "x")?);
            point.extend_from_slice(fixed(&member(jwk, "y")?, len, "y")?);
            curve.check_point(&point)?;
            if private {
                let d = member(jwk, "d")?;
                let pair = EcdsaKeyPair::from_private_key_and_public_key(
                    curve.signing(),
                    fixed(&d, len, "d")?,
                    &point,
                )
                .map_err(rejected("EC JWK"))?;
                return Private::Ec(curve, pair).to_pem();
            }
            Public::Ec(curve, point)
        }
        "rsa" => {
            let (n, e) = (member(jwk, "n")?, member(jwk, "e")?);
            let public_key = signature::RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            };
            if private {
                let m = |name| member(jwk, name);
                let (d, p, q, dp, dq, qi) =
                    (m("d")?, m("p")?, m("q")?, m("dp")?, m("dq")?, m("qi")?);
                let pair = rsa::KeyPair::from_components(&rsa::KeyPairComponents {
                    public_key,
                    d: d.as_slice(),
                    p: p.as_slice(),
                    q: q.as_slice(),
                    dP: dp.as_slice(),
                    dQ: dq.as_slice(),
                    qInv: qi.as_slice(),
                })
                .map_err(rejected("RSA JWK"))?;
                let pkcs8 = pair
                    .as_der()
                    .map_err(|_| "cannot encode the RSA private key")?;
                return Ok(Zeroizing::new(pem_text("PRIVATE KEY", pkcs8.as_ref())));
            }
            let _: rsa::PublicEncryptingKey = public_key
                .try_into()
                .map_err(|_| "invalid RSA public key")?;
            Public::Rsa {
                n: n.to_vec(),
                e: e.to_vec(),
            }
        }
        _ => {
            let x = member(jwk, "x")?;
            let x = fixed(&x, 32, "x")?;
            match text_member(jwk, "crv")? {
                "Ed25519" => {
                    if private {
                        let d = member(jwk, "d")?;
                        let pair = Ed25519KeyPair::from_seed_and_public_key(fixed(&d, 32, "d")?, x)
                            .map_err(rejected("Ed25519 JWK"))?;
                        return Private::Ed25519(pair).to_pem();
                    }
                    Public::Ed25519(x.to_vec())
                }
                "X25519" => {
                    if private {
                        let d = member(jwk, "d")?;
                        let d = fixed(&d, 32, "d")?;
                        if x25519_from_seed(d)? != x {
                            return Err("JWK members \"d\" and \"x\" do not match".into());
                        }
                        return Private::X25519(Zeroizing::new(d.to_vec())).to_pem();
                    }
                    Public::X25519(x.to_vec())
                }
                other => {
                    return Err(format!(
                        "unsupported OKP curve {other:?} (Ed25519 or X25519)"
                    ))
                }
            }
        }
    };
    public.to_pem().map(Zeroizing::new)
}
