#!/usr/bin/env python3
"""Cross-check covenant write receipts with two third-party verifiers.

Usage:
    verify_receipts.py --service-cert service.pem [--claims claims.json]
                       [--expect-fail] receipt.json [receipt.json ...]

Each receipt.json holds the Azure Confidential Ledger "get receipt" response
shape: {"receipt": {...}, "state": "Ready", "transactionId": "2.35"}
(a bare receipt object, without the outer wrapper, is accepted as well).

Every receipt is verified by two independent implementations from PyPI
(pinned in requirements.txt beside this file); nothing of theirs is copied
here, they are only called:

  ccf    -- the `ccf` package, module `ccf.receipt`:
            root(leaf_hex, proof) -> root_hex
            verify(root_hex, signature_b64, node_cert: x509.Certificate)
            check_endorsements(node_cert, service_cert, endorsements)
            `ccf.receipt` has no leaf or claims helper, so this script hashes
            the leaf (SHA-256(writeSetDigest || SHA-256(commitEvidence) ||
            claimsDigest), exactly as ccf.ledger does for snapshot receipts),
            checks nodeId == SHA-256(node SPKI DER) when nodeId is present,
            and, with --claims, recomputes the claims digest itself.
  azure  -- `azure-confidentialledger`:
            azure.confidentialledger.receipt.verify_receipt(
                receipt_dict, service_cert_pem_str, application_claims=list)

--claims names a JSON file holding the ACL applicationClaims list, e.g.
  [{"kind": "LedgerEntry", "ledgerEntry": {"collectionId": "subledger:0",
    "contents": "...", "secretKey": "<base64>", "protocol": "LedgerEntryV1"}}]
It applies to every receipt listed.

--x509-chain additionally makes the ccf side run ccf.receipt.check_cert_chain,
cryptography's X.509 path validation, which (unlike check_endorsements and
azure) checks validity dates and extensions; off by default.

Without --expect-fail every receipt must be accepted by both libraries; with
it, every receipt must be rejected by both. One line is printed per receipt
per library, then a closing line "N passed, M failed", where a check passes
when the library's verdict is the expected one. The exit status is 0 only
when every check passed.
"""

import argparse
import base64
import hashlib
import hmac
import json
import sys
import traceback

try:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
    )
    import ccf.receipt as ccf_receipt
    from azure.confidentialledger.receipt import verify_receipt as azure_verify_receipt
except ImportError as exc:  # pragma: no cover - environment problem
    sys.stderr.write(
        f"missing dependency ({exc}); install with: "
        "pip install -r tests/compat/requirements.txt\n"
    )
    sys.exit(2)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _claims_digest_hex(claims):
    """Claims digest of an ACL applicationClaims list (written for this
    script from the documented ACL algorithm; used only on the ccf side, the
    azure side computes it inside verify_receipt)."""
    if not isinstance(claims, list) or not claims:
        raise ValueError("applicationClaims must be a non-empty list")
    out = len(claims).to_bytes(4, "little")
    for claim in claims:
        kind = claim["kind"]
        if kind == "LedgerEntry":
            entry = claim["ledgerEntry"]
            protocol = entry["protocol"]
            if protocol != "LedgerEntryV1":
                raise ValueError(f"unsupported ledger entry protocol {protocol!r}")
            key = base64.b64decode(entry["secretKey"], validate=True)
            collection_mac = hmac.new(
                key, entry["collectionId"].encode("utf-8"), hashlib.sha256
            ).digest()
            contents_mac = hmac.new(
                key, entry["contents"].encode("utf-8"), hashlib.sha256
            ).digest()
            inner = _sha256(collection_mac + contents_mac)
            out += _sha256(protocol.encode("utf-8") + inner)
        elif kind == "ClaimDigest":
            digest = claim["digest"]
            out += _sha256(
                digest["protocol"].encode("utf-8") + bytes.fromhex(digest["value"])
            )
        else:
            raise ValueError(f"unknown claim kind {kind!r}")
    return hashlib.sha256(out).hexdigest()


def check_with_ccf(receipt, service_cert_pem, claims, x509_chain=False):
    """Raise on rejection. Uses ccf.receipt for root, signature and
    endorsement checks (and, with x509_chain, its X.509 policy check)."""
    node_cert = x509.load_pem_x509_certificate(receipt["cert"].encode("utf-8"))
    service_cert = x509.load_pem_x509_certificate(service_cert_pem.encode("utf-8"))
    endorsements = [
        x509.load_pem_x509_certificate(pem.encode("utf-8"))
        for pem in receipt.get("serviceEndorsements") or []
    ]

    leaf_components = receipt["leafComponents"]
    if claims is not None:
        expected = _claims_digest_hex(claims)
        if leaf_components["claimsDigest"] != expected:
            raise ValueError(
                f"claimsDigest {leaf_components['claimsDigest']} does not match "
                f"applicationClaims digest {expected}"
            )

    leaf = _sha256(
        bytes.fromhex(leaf_components["writeSetDigest"])
        + _sha256(leaf_components["commitEvidence"].encode("utf-8"))
        + bytes.fromhex(leaf_components["claimsDigest"])
    ).hex()
    root = ccf_receipt.root(leaf, receipt["proof"])
    ccf_receipt.verify(root, receipt["signature"], node_cert)

    node_id = receipt.get("nodeId")
    if node_id is not None:
        spki = node_cert.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
        if hashlib.sha256(spki).hexdigest() != node_id.lower():
            raise ValueError("nodeId is not the SHA-256 of the node certificate key")

    ccf_receipt.check_endorsements(node_cert, service_cert, endorsements)
    if x509_chain:
        ccf_receipt.check_cert_chain(node_cert, service_cert, endorsements)


def check_with_azure(receipt, service_cert_pem, claims, x509_chain=False):
    """Raise on rejection."""
    azure_verify_receipt(receipt, service_cert_pem, application_claims=claims)


LIBRARIES = (("ccf", check_with_ccf), ("azure", check_with_azure))


def _describe(exc):
    parts = []
    while exc is not None and len(parts) < 3:
        text = str(exc).splitlines()[0] if str(exc) else ""
        if len(text) > 160:
            text = text[:157] + "..."
        parts.append(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Verify covenant receipts with ccf and azure-confidentialledger."
    )
    parser.add_argument("--service-cert", required=True, help="service identity PEM")
    parser.add_argument("--claims", help="JSON file holding the applicationClaims list")
    parser.add_argument(
        "--expect-fail",
        action="store_true",
        help="every receipt must be rejected by both libraries",
    )
    parser.add_argument(
        "--x509-chain",
        action="store_true",
        help="ccf side also runs ccf.receipt.check_cert_chain (cryptography's "
        "X.509 client-verifier policy: validity dates, critical CA basicConstraints "
        "and keyCertSign on the service cert, AKI and SAN on the node cert)",
    )
    parser.add_argument("--verbose", action="store_true", help="print tracebacks")
    parser.add_argument("receipts", nargs="+", metavar="receipt.json")
    args = parser.parse_args(argv)

    with open(args.service_cert, encoding="utf-8") as f:
        service_cert_pem = f.read()
    claims = None
    if args.claims:
        with open(args.claims, encoding="utf-8") as f:
            claims = json.load(f)

    passed = failed = 0
    for path in args.receipts:
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            receipt = doc["receipt"] if isinstance(doc, dict) and "receipt" in doc else doc
        except Exception as exc:  # harness error, not a library verdict
            for name, _ in LIBRARIES:
                failed += 1
                print(f"FAIL {name:5} {path}: cannot load receipt file ({_describe(exc)})")
            continue

        for name, check in LIBRARIES:
            try:
                # Each library gets its own copy so neither can affect the other.
                check(json.loads(json.dumps(receipt)), service_cert_pem,
                      json.loads(json.dumps(claims)) if claims is not None else None,
                      x509_chain=args.x509_chain)
                accepted, reason = True, ""
            except Exception as exc:
                accepted, reason = False, _describe(exc)
                if args.verbose:
                    traceback.print_exc()
            ok = accepted != args.expect_fail
            passed += ok
            failed += not ok
            verdict = "accepted" if accepted else "rejected"
            expectation = "expected" if ok else "UNEXPECTED"
            line = f"{'ok  ' if ok else 'FAIL'} {name:5} {path}: {verdict} ({expectation})"
            if reason:
                line += f": {reason}"
            print(line)

    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
