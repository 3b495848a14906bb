//! Known-answer tests of `ccf.crypto`, run as JavaScript through `ccf` (crate-level:
//! they exercise both modules through the script surface).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::ccf::{install, KvAccess};
use crate::{call_with_host, JsError, Limits};

struct NoMaps;

impl KvAccess for NoMaps {
    fn get(&self, _: &str, _: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn set(&mut self, _: &str, _: &[u8], _: &[u8]) -> Result<(), String> {
        Err("read-only".into())
    }
    fn delete(&mut self, _: &str, _: &[u8]) -> Result<(), String> {
        Err("read-only".into())
    }
    fn entries(&self, _: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        Vec::new()
    }
}

const HELPERS: &str = r#"
const hex = (b) => Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, "0")).join("");
const unhex = (s) => new Uint8Array((s.match(/../g) || []).map((h) => parseInt(h, 16))).buffer;
const str = (s) => ccf.strToBuf(s);
const flip = (b, i) => { const c = new Uint8Array(b.slice(0)); c[i] ^= 1; return c.buffer; };
const fails = (fn) => { try { fn(); return null; } catch (e) { return `${e.name}: ${e.message}`; } };
"#;

/// Runs `export function f(...args)` in `src` with `ccf` installed.
fn run(src: &str, args: &[Value]) -> Result<Value, JsError> {
    let limits = Limits {
        // RSA key generation in an unoptimised test build.
        max_execution_time: Duration::from_secs(60),
        ..Limits::default()
    };
    let src = format!("{HELPERS}\n{src}");
    call_with_host(&limits, None, "test", &src, "f", args, |ctx| {
        install(ctx, Rc::new(RefCell::new(NoMaps)))
    })
}

fn ok(src: &str, args: &[Value]) -> Value {
    run(src, args).unwrap_or_else(|e| panic!("{e}: {:?}", e.stack()))
}

fn b64url(hex_str: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hex::decode(hex_str).unwrap())
}

#[test]
fn digests_match_fips_180_vectors() {
    let out = ok(
        r#"export function f() {
          const out = {};
          for (const alg of ["SHA-256", "SHA-384", "SHA-512"]) {
            out[alg] = [hex(ccf.crypto.digest(alg, str("abc"))), hex(ccf.crypto.digest(alg, new ArrayBuffer(0)))];
          }
          out.alias = hex(ccf.digest("SHA-256", str("abc")));
          out.view = hex(ccf.crypto.digest("SHA-256", new Uint8Array([0x61, 0x62, 0x63])));
          return out;
        }"#,
        &[],
    );
    assert_eq!(
        out,
        json!({
            "SHA-256": ["ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
            "SHA-384": ["cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7",
                        "38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b"],
            "SHA-512": ["ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
                        "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"],
            "alias": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "view": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        })
    );
}

#[test]
fn hmac_matches_rfc_4231_cases_1_and_2() {
    // The HMAC key is the `key` string's UTF-8 bytes (as in CCF and its polyfill).
    let out = ok(
        r#"export function f() {
          const cases = [["\x0b".repeat(20), "Hi There"], ["Jefe", "what do ya want for nothing?"]];
          const out = [];
          for (const [key, data] of cases) {
            for (const hash of ["SHA-256", "SHA-384", "SHA-512"]) {
              const alg = { name: "HMAC", hash };
              const mac = ccf.crypto.sign(alg, key, str(data));
              out.push([hex(mac), ccf.crypto.verifySignature(alg, key, mac, str(data)),
                        ccf.crypto.verifySignature(alg, key, flip(mac, 0), str(data))]);
            }
          }
          return out;
        }"#,
        &[],
    );
    let want = [
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6",
        "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
    ];
    let want: Vec<Value> = want.iter().map(|h| json!([h, true, false])).collect();
    assert_eq!(out, Value::Array(want));
}

#[test]
fn ecdsa_p256_verifies_the_rfc_6979_signature() {
    // RFC 6979 A.2.5: P-256 key, message "sample", SHA-256, r || s.
    let jwk = json!({
        "kty": "EC", "crv": "P-256",
        "x": b64url("60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6"),
        "y": b64url("7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299"),
        "d": b64url("C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721"),
    });
    let sig = "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716\
               F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8";
    let out = ok(
        r#"export function f(jwk, sig) {
          const c = ccf.crypto;
          const alg = { name: "ECDSA", hash: "SHA-256" };
          const priv = c.jwkToPem(jwk), pub = c.pubJwkToPem(jwk);
          const s = unhex(sig.toLowerCase());
          const mine = c.sign(alg, priv, str("sample"));
          const p384 = c.generateEcdsaKeyPair("secp384r1");
          const a384 = { name: "ECDSA", hash: "SHA-384" };
          const s384 = c.sign(a384, p384.privateKey, str("m"));
          const k1 = c.generateEcdsaKeyPair("secp256k1");
          return {
            known: c.verifySignature(alg, pub, s, str("sample")),
            flipped: c.verifySignature(alg, pub, flip(s, 40), str("sample")),
            other_data: c.verifySignature(alg, pub, s, str("Sample")),
            round_trip: [mine.byteLength, c.verifySignature(alg, pub, mine, str("sample"))],
            with_private_pem: c.verifySignature(alg, priv, s, str("sample")),
            p384: [s384.byteLength, c.verifySignature(a384, p384.publicKey, s384, str("m"))],
            k1: c.verifySignature(alg, k1.publicKey, c.sign(alg, k1.privateKey, str("m")), str("m")),
            pem_shapes: [priv.startsWith("-----BEGIN PRIVATE KEY-----\n"), pub.startsWith("-----BEGIN PUBLIC KEY-----\n")],
          };
        }"#,
        &[jwk, json!(sig)],
    );
    assert_eq!(
        out,
        json!({"known": true, "flipped": false, "other_data": false, "round_trip": [64, true],
               "with_private_pem": true, "p384": [96, true], "k1": true, "pem_shapes": [true, true]})
    );
}

#[test]
fn ed25519_matches_rfc_8032_tests_1_and_2() {
    let cases = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
    ];
    for (d, x, msg, sig) in cases {
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(x), "d": b64url(d)});
        let out = ok(
            r#"export function f(jwk, msg, sig) {
              const c = ccf.crypto;
              const alg = { name: "EdDSA" };
              const priv = c.eddsaJwkToPem(jwk), pub = c.pubEddsaJwkToPem(jwk);
              return {
                sig: hex(c.sign(alg, priv, unhex(msg))),
                ok: c.verifySignature(alg, pub, unhex(sig), unhex(msg)),
                flipped: c.verifySignature(alg, pub, flip(unhex(sig), 3), unhex(msg)),
                x: c.pubEddsaPemToJwk(pub).x,
                back: c.eddsaPemToJwk(priv, "k1"),
              };
            }"#,
            &[jwk.clone(), json!(msg), json!(sig)],
        );
        let mut back = jwk.clone();
        back["kid"] = json!("k1");
        assert_eq!(
            out,
            json!({"sig": sig, "ok": true, "flipped": false, "x": b64url(x), "back": back})
        );
    }
}

#[test]
fn rsa_pss_round_trips_and_rejects_wrong_salt_or_data() {
    let out = ok(
        r#"export function f() {
          const c = ccf.crypto;
          const { privateKey, publicKey } = c.generateRsaKeyPair(2048);
          const alg = { name: "RSA-PSS", hash: "SHA-256", saltLength: 32 };
          const sig = c.sign(alg, privateKey, str("data"));
          const s0 = c.sign({ name: "RSA-PSS", hash: "SHA-384" }, privateKey, str("data"));
          return {
            len: sig.byteLength,
            ok: c.verifySignature(alg, publicKey, sig, str("data")),
            wrong_salt: c.verifySignature({ ...alg, saltLength: 20 }, publicKey, sig, str("data")),
            tampered: c.verifySignature(alg, publicKey, sig, str("Data")),
            flipped: c.verifySignature(alg, publicKey, flip(sig, 10), str("data")),
            default_salt: c.verifySignature({ name: "RSA-PSS", hash: "SHA-384", saltLength: 0 }, publicKey, s0, str("data")),
            wrong_hash: c.verifySignature({ name: "RSA-PSS", hash: "SHA-256", saltLength: 0 }, publicKey, s0, str("data")),
            pem: [privateKey.startsWith("-----BEGIN PRIVATE KEY-----\n"), publicKey.startsWith("-----BEGIN PUBLIC KEY-----\n")],
            ecdsa_with_rsa: fails(() => c.sign({ name: "ECDSA", hash: "SHA-256" }, privateKey, str("x"))),
            eddsa_with_rsa: fails(() => c.verifySignature({ name: "EdDSA" }, publicKey, sig, str("x"))),
          };
        }"#,
        &[],
    );
    let incompatible = "Error: incompatible signing algorithm for given key type";
    assert_eq!(
        out,
        json!({"len": 256, "ok": true, "wrong_salt": false, "tampered": false, "flipped": false,
               "default_salt": true, "wrong_hash": false, "pem": [true, true],
               "ecdsa_with_rsa": incompatible, "eddsa_with_rsa": incompatible})
    );
}

#[test]
fn aes_kwp_matches_rfc_5649_section_6() {
    let out = ok(
        r#"export function f() {
          const c = ccf.crypto;
          const kek = unhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8");
          const p = { name: "AES-KWP" };
          const out = [];
          for (const key of ["c37b7e6492584340bed12207808941155068f738", "466f7250617369"]) {
            const w = c.wrapKey(unhex(key), kek, p);
            out.push([hex(w), hex(c.unwrapKey(w, kek, p))]);
          }
          const k256 = c.generateAesKey(256), k128 = c.generateAesKey(128);
          const w = c.wrapKey(unhex("00112233445566778899aabbccddeeff"), k256, p);
          out.push([k256.byteLength, k128.byteLength, c.generateAesKey(192).byteLength,
                    hex(c.unwrapKey(w, k256, p)),
                    fails(() => c.unwrapKey(w, k128, p)), fails(() => c.unwrapKey(flip(w, 5), k256, p))]);
          return out;
        }"#,
        &[],
    );
    let bad = "Error: AES-KWP unwrapping failed (wrong key or corrupted data)";
    assert_eq!(
        out,
        json!([
            [
                "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a",
                "c37b7e6492584340bed12207808941155068f738"
            ],
            ["afbeb0f07dfbf5419200f2ccb50bb24f", "466f7250617369"],
            [32, 16, 24, "00112233445566778899aabbccddeeff", bad, bad],
        ])
    );
}

#[test]
fn rsa_oaep_and_rsa_oaep_aes_kwp_round_trip() {
    let out = ok(
        r#"export function f() {
          const c = ccf.crypto;
          const { privateKey, publicKey } = c.generateRsaKeyPair(2048, 65537);
          const pub = str(publicKey), priv = str(privateKey);
          const key = c.generateAesKey(256);
          const label = str("label");
          const out = {};
          const oaep = { name: "RSA-OAEP" }, oaepL = { name: "RSA-OAEP", label };
          let w = c.wrapKey(key, pub, oaep);
          out.oaep = [w.byteLength, hex(c.unwrapKey(w, priv, oaep)) === hex(key)];
          w = c.wrapKey(key, pub, oaepL);
          out.oaep_label = [hex(c.unwrapKey(w, priv, oaepL)) === hex(key),
                            fails(() => c.unwrapKey(w, priv, { name: "RSA-OAEP", label: str("other") })),
                            fails(() => c.unwrapKey(w, priv, oaep))];
          const big = new Uint8Array(1000).fill(7).buffer;
          for (const aesKeySize of [128, 256]) {
            const p = { name: "RSA-OAEP-AES-KWP", aesKeySize }, pl = { ...p, label };
            let w2 = c.wrapKey(big, pub, p);
            const a = [w2.byteLength, hex(c.unwrapKey(w2, priv, p)) === hex(big)];
            w2 = c.wrapKey(big, pub, pl);
            a.push(hex(c.unwrapKey(w2, priv, pl)) === hex(big),
                   fails(() => c.unwrapKey(w2, priv, { ...pl, label: str("nope") })));
            out["kwp" + aesKeySize] = a;
          }
          out.alias = hex(ccf.unwrapKey(ccf.wrapKey(key, pub, oaep), priv, oaep)) === hex(key);
          return out;
        }"#,
        &[],
    );
    let bad = "Error: RSA-OAEP unwrapping failed (wrong key, label or data)";
    assert_eq!(
        out,
        json!({
            "oaep": [256, true],
            "oaep_label": [true, bad, bad],
            // 256 (RSA-OAEP of the AES key) + 1000 padded to 8 + 8.
            "kwp128": [256 + 1008, true, true, bad],
            "kwp256": [256 + 1008, true, true, bad],
            "alias": true,
        })
    );
}

#[test]
fn jwk_conversions_round_trip() {
    // SEC1 and PKCS#1 inputs are made on the Rust side from the PKCS#8 PEMs.
    let out = ok(
        r#"export function f() {
          const c = ccf.crypto;
          const out = {};
          for (const curve of ["secp256r1", "secp384r1", "secp256k1"]) {
            const k = c.generateEcdsaKeyPair(curve);
            const jwk = c.pemToJwk(k.privateKey, "kid-1"), pub = c.pubPemToJwk(k.publicKey);
            out[curve] = [jwk.kty, jwk.crv, jwk.kid, pub.x === jwk.x && pub.y === jwk.y && pub.d === undefined,
                          c.jwkToPem(jwk) === k.privateKey, c.pubJwkToPem(pub) === k.publicKey];
          }
          const r = c.generateRsaKeyPair(2048);
          const rj = c.rsaPemToJwk(r.privateKey), rp = c.pubRsaPemToJwk(r.publicKey, "r");
          out.rsa = [rj.kty, rj.e, rp.kid, rp.n === rj.n, Object.keys(rj).sort().join(","),
                     c.rsaJwkToPem(rj) === r.privateKey, c.pubRsaJwkToPem(rp) === r.publicKey];
          for (const curve of ["curve25519", "x25519"]) {
            const k = c.generateEddsaKeyPair(curve);
            const jwk = c.eddsaPemToJwk(k.privateKey), pub = c.pubEddsaPemToJwk(k.publicKey);
            out[curve] = [jwk.kty, jwk.crv, pub.x === jwk.x, jwk.kid === undefined,
                          c.eddsaJwkToPem(jwk) === k.privateKey, c.pubEddsaJwkToPem(pub) === k.publicKey];
          }
          out.keys = { ec: c.generateEcdsaKeyPair("secp256r1").privateKey, rsa: r.privateKey };
          return out;
        }"#,
        &[],
    );
    assert_eq!(
        out["secp256r1"],
        json!(["EC", "P-256", "kid-1", true, true, true])
    );
    assert_eq!(
        out["secp384r1"],
        json!(["EC", "P-384", "kid-1", true, true, true])
    );
    assert_eq!(
        out["secp256k1"],
        json!(["EC", "secp256k1", "kid-1", true, true, true])
    );
    assert_eq!(
        out["rsa"],
        json!([
            "RSA",
            "AQAB",
            "r",
            true,
            "d,dp,dq,e,kty,n,p,q,qi",
            true,
            true
        ])
    );
    assert_eq!(
        out["curve25519"],
        json!(["OKP", "Ed25519", true, true, true, true])
    );
    assert_eq!(
        out["x25519"],
        json!(["OKP", "X25519", true, true, true, true])
    );

    // The same keys as SEC1 "EC PRIVATE KEY" and PKCS#1 "RSA PRIVATE KEY".
    let inner = |pem_text: &str, tag: &str| {
        let p8 = pem::parse(pem_text).unwrap();
        let der = match tag {
            "EC PRIVATE KEY" => {
                let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
                    &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    p8.contents(),
                )
                .unwrap();
                use aws_lc_rs::encoding::AsDer;
                let sec1: aws_lc_rs::encoding::EcPrivateKeyRfc5915Der<'_> =
                    pair.private_key().as_der().unwrap();
                sec1.as_ref().to_vec()
            }
            _ => {
                use pkcs8::der::Decode;
                pkcs8::PrivateKeyInfo::from_der(p8.contents())
                    .unwrap()
                    .private_key
                    .to_vec()
            }
        };
        pem::encode(&pem::Pem::new(tag, der))
    };
    let ec = out["keys"]["ec"].as_str().unwrap();
    let rsa = out["keys"]["rsa"].as_str().unwrap();
    let legacy = ok(
        r#"export function f(ec, sec1, rsa, pkcs1) {
          const c = ccf.crypto;
          return [JSON.stringify(c.pemToJwk(ec)) === JSON.stringify(c.pemToJwk(sec1)),
                  JSON.stringify(c.rsaPemToJwk(rsa)) === JSON.stringify(c.rsaPemToJwk(pkcs1)),
                  c.jwkToPem(c.pemToJwk(sec1)) === ec,
                  c.verifySignature({ name: "ECDSA", hash: "SHA-256" }, sec1,
                                    c.sign({ name: "ECDSA", hash: "SHA-256" }, sec1, str("m")), str("m")),
                  c.verifySignature({ name: "RSA-PSS", hash: "SHA-256" }, rsa,
                                    c.sign({ name: "RSA-PSS", hash: "SHA-256" }, pkcs1, str("m")), str("m"))];
        }"#,
        &[
            json!(ec),
            json!(inner(ec, "EC PRIVATE KEY")),
            json!(rsa),
            json!(inner(rsa, "RSA PRIVATE KEY")),
        ],
    );
    assert_eq!(legacy, json!([true, true, true, true, true]));
}

#[test]
fn x509_chains_bundles_and_pem_to_id() {
    use covenant_crypto::{Curve, ServiceIdentity, SigningKeyPair, SubjectAltName};
    let ca = ServiceIdentity::generate(Curve::P384).unwrap();
    let other = ServiceIdentity::generate(Curve::P384).unwrap();
    let node_key = SigningKeyPair::generate(Curve::P256).unwrap();
    let leaf = ca
        .issue_node_cert(&node_key, &SubjectAltName::dev_defaults(), 365)
        .unwrap();
    let out = ok(
        r#"export function f(ca, other, leaf, nodeKey) {
          const c = ccf.crypto;
          const alg = { name: "ECDSA", hash: "SHA-256" };
          return {
            chain: c.isValidX509CertChain(leaf, ca),
            chain_with_ca: c.isValidX509CertChain(leaf + ca, ca),
            other_ca: c.isValidX509CertChain(leaf, other),
            either: c.isValidX509CertChain(leaf, other + ca),
            ca_itself: c.isValidX509CertChain(ca, ca),
            reversed: c.isValidX509CertChain(ca + leaf, other),
            garbage_chain: c.isValidX509CertChain("garbage", ca),
            bundle: [c.isValidX509CertBundle(ca), c.isValidX509CertBundle(ca + leaf + other),
                     c.isValidX509CertBundle("garbage"), c.isValidX509CertBundle(""),
                     c.isValidX509CertBundle(ca.replace("A", "B")),
                     c.isValidX509CertBundle(ca + nodeKey), ccf.isValidX509CertBundle(leaf)],
            cert_verify: c.verifySignature(alg, leaf, c.sign(alg, nodeKey, str("m")), str("m")),
            ids: [ccf.pemToId(leaf), ccf.pemToId(ca)],
            bad_id: fails(() => ccf.pemToId("nope")),
          };
        }"#,
        &[
            json!(ca.cert.to_pem()),
            json!(other.cert.to_pem()),
            json!(leaf.to_pem()),
            json!(node_key.to_pem().as_str()),
        ],
    );
    assert_eq!(
        out,
        json!({
            "chain": true, "chain_with_ca": true, "other_ca": false, "either": true,
            "ca_itself": true, "reversed": false, "garbage_chain": false,
            "bundle": [true, true, false, false, false, false, true],
            "cert_verify": true,
            "ids": [covenant_crypto::member_id(leaf.der()), covenant_crypto::member_id(ca.cert.der())],
            "bad_id": out["bad_id"].clone(),
        })
    );
    assert!(out["bad_id"]
        .as_str()
        .unwrap()
        .starts_with("Error: not a PEM certificate"));
}

#[test]
fn bad_inputs_throw_clear_errors() {
    let out = ok(
        r#"export function f() {
          const c = ccf.crypto;
          const ec = c.generateEcdsaKeyPair("secp256r1");
          const ed = c.generateEddsaKeyPair("curve25519");
          const x = c.generateEddsaKeyPair("x25519");
          const d = str("data");
          const garbagePem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
          return [
            fails(() => c.digest("MD5", d)),
            fails(() => c.digest("SHA-256", "not a buffer")),
            fails(() => c.sign({ name: "FOO" }, ec.privateKey, d)),
            fails(() => c.sign("ECDSA", ec.privateKey, d)),
            fails(() => c.sign({ name: "ECDSA" }, ec.privateKey, d)),
            fails(() => c.sign({ name: "ECDSA", hash: "SHA-384" }, ec.privateKey, d)),
            fails(() => c.sign({ name: "RSA-PSS", hash: "SHA-256" }, ec.privateKey, d)),
            fails(() => c.sign({ name: "EdDSA" }, x.privateKey, d)),
            fails(() => c.verifySignature({ name: "ECDSA", hash: "SHA-256" }, ed.publicKey, new ArrayBuffer(64), d)),
            fails(() => c.sign({ name: "EdDSA" }, "garbage", d)),
            fails(() => c.sign({ name: "EdDSA" }, garbagePem, d)),
            fails(() => c.verifySignature({ name: "EdDSA" }, ec.privateKey.replace("PRIVATE", "PUBLIC").replace("PRIVATE", "PUBLIC"), new ArrayBuffer(64), d)),
            fails(() => c.generateAesKey(100)),
            fails(() => c.generateRsaKeyPair(1024)),
            fails(() => c.generateRsaKeyPair(2048, 3)),
            fails(() => c.generateEcdsaKeyPair("P-521")),
            fails(() => c.generateEddsaKeyPair("ed448")),
            fails(() => c.wrapKey(d, str("short"), { name: "AES-KWP" })),
            fails(() => c.wrapKey(d, str(ec.publicKey), { name: "RSA-OAEP" })),
            fails(() => c.wrapKey(d, str(ec.publicKey), { name: "RSA-OAEP-AES-KWP", aesKeySize: 100 })),
            fails(() => c.wrapKey(d, c.generateAesKey(128), { name: "DES" })),
            fails(() => c.unwrapKey(new ArrayBuffer(3), c.generateAesKey(128), { name: "AES-KWP" })),
            fails(() => c.pubPemToJwk("garbage")),
            fails(() => c.pubPemToJwk(ed.publicKey)),
            fails(() => c.rsaPemToJwk(ec.privateKey)),
            fails(() => c.jwkToPem({ kty: "EC", crv: "P-256", x: "AAAA", y: "AAAA", d: "AAAA" })),
            fails(() => c.pubRsaJwkToPem({ kty: "RSA", n: "AQAB", e: "AQAB" })),
            fails(() => c.jwkToPem({ kty: "RSA", n: "AQAB", e: "AQAB" })),
            fails(() => c.pubJwkToPem({ kty: "EC", crv: "P-256", x: "A".repeat(43), y: "A".repeat(43) })),
            fails(() => c.pubEddsaJwkToPem({ kty: "OKP", crv: "Ed448", x: "A".repeat(43) })),
            fails(() => c.eddsaJwkToPem(null)),
          ];
        }"#,
        &[],
    );
    let want = [
        "Error: unsupported hash algorithm \"MD5\" (SHA-256, SHA-384 or SHA-512)",
        "TypeError: data must be an ArrayBuffer",
        "Error: unsupported signing algorithm \"FOO\" (ECDSA, RSA-PSS, EdDSA or HMAC)",
        "TypeError: algorithm must be an object",
        "Error: ECDSA needs algorithm.hash",
        "Error: ECDSA over P-256 is supported with SHA-256 only, not SHA-384",
        "Error: incompatible signing algorithm for given key type",
        "Error: incompatible signing algorithm for given key type",
        "Error: incompatible signing algorithm for given key type",
        "Error: not a PEM private key",
        "Error: invalid PKCS#8 private key",
        "Error: invalid public key",
        "Error: invalid AES key size 100 (128, 192 or 256 bits)",
        "Error: unsupported RSA key size 1024 (2048, 3072 or 4096 bits)",
        "Error: unsupported RSA public exponent 3 (only 65537)",
        "Error: unsupported ECDSA curve \"P-521\" (secp256r1, secp384r1 or secp256k1)",
        "Error: unsupported EdDSA curve \"ed448\" (curve25519 or x25519)",
        "Error: AES-KWP needs a 128, 192 or 256-bit wrapping key, not 40 bits",
        "Error: RSA-OAEP needs an RSA public key",
        "Error: invalid AES key size 100 (128, 192 or 256 bits)",
        "Error: unsupported wrapAlgo.name \"DES\" (RSA-OAEP, AES-KWP or RSA-OAEP-AES-KWP)",
        "Error: not an AES-KWP wrapped key (a multiple of 8 bytes, at least 16)",
        "Error: not a PEM public key or certificate",
        "Error: expected an EC key",
        "Error: expected an RSA key",
        "Error: JWK member \"x\" must be 32 bytes, not 3",
        "Error: invalid RSA public key",
        "Error: expected a JWK of kty \"EC\", not \"RSA\"",
        "Error: not a point of P-256",
        "Error: unsupported OKP curve \"Ed448\" (Ed25519 or X25519)",
        "TypeError: jwk must be an object",
    ];
    let got = out.as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let g = g
            .as_str()
            .unwrap_or_else(|| panic!("case {i} did not throw"));
        assert!(
            g.starts_with(w),
            "case {i}: {g:?} does not start with {w:?}"
        );
    }
}

#[test]
fn crypto_is_frozen_and_works_detached() {
    let out = ok(
        r#"export function f() {
          const { digest, sign, verifySignature } = ccf.crypto;
          try { ccf.crypto.digest = null; } catch (e) {}
          const alg = { name: "HMAC", hash: "SHA-256" };
          return [Object.isFrozen(ccf.crypto), typeof ccf.crypto.digest, hex(digest("SHA-256", str(""))).slice(0, 8),
                  verifySignature(alg, "k", sign(alg, "k", str("m")), str("m")),
                  ccf.generateEcdsaKeyPair === ccf.crypto.generateEcdsaKeyPair];
        }"#,
        &[],
    );
    assert_eq!(out, json!([true, "function", "e3b0c442", true, true]));
}
