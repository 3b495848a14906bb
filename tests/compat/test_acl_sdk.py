"""The Azure Confidential Ledger Python SDK (PyPI, pinned) against `covenant dev`.

Run by scripts/compat-acl, which passes the binary in COVENANT_BIN. Each test uses
the SDK's own flows unchanged; receipts are checked by the SDK's verify_receipt and
by ccf.receipt.
"""

import base64
import hashlib
import json
import os
import signal
import subprocess
import tempfile
import time

import pytest

import devserver
from azure.confidentialledger import (
    ConfidentialLedgerCertificateCredential,
    ConfidentialLedgerClient,
)
from azure.confidentialledger.receipt import verify_receipt
from azure.core.credentials import AccessToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
import ccf.receipt

ISSUER = "https://issuer.covenant.test"
ISSUER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwks() -> dict:
    numbers = ISSUER_KEY.public_key().public_numbers()
    as_bytes = lambda n: n.to_bytes((n.bit_length() + 7) // 8, "big")  # noqa: E731
    return {"keys": [{"kty": "RSA", "kid": "test-key", "use": "sig", "alg": "RS256",
                      "n": _b64url(as_bytes(numbers.n)), "e": _b64url(as_bytes(numbers.e))}]}


def _token(oid: str, lifetime: int = 600) -> str:
    header = {"alg": "RS256", "typ": "JWT", "kid": "test-key"}
    now = int(time.time())
    claims = {"iss": ISSUER, "oid": oid, "sub": f"sub-{oid}", "iat": now, "nbf": now - 5, "exp": now + lifetime}
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    signature = ISSUER_KEY.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


class StaticTokenCredential:
    """An azure-core TokenCredential handing out our test issuer's tokens."""

    def __init__(self, oid: str):
        self.oid = oid

    def get_token(self, *scopes, **kwargs):
        return AccessToken(_token(self.oid), int(time.time()) + 600)


# COVENANT_COMPAT_NODES=3 runs the whole suite against a 3-node network, through a
# backup (writes are forwarded to the primary).
NODES = int(os.environ.get("COVENANT_COMPAT_NODES", "1"))


@pytest.fixture(scope="module")
def dev():
    binary = os.environ["COVENANT_BIN"]
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "dev")
        jwks = os.path.join(tmp, "jwks.json")
        with open(jwks, "w") as f:
            json.dump(_jwks(), f)
        port = devserver.port_range(NODES)
        extra = ["--nodes", str(NODES)] if NODES > 1 else []
        proc, _ = devserver.start(
            [binary, "dev", "--data-dir", data, "--port", str(port), "--sig-ms-interval", "100",
             "--jwt-issuer", ISSUER, "--jwks", jwks] + extra,
            timeout=30,
        )
        if NODES > 1:
            port = devserver.backup_port(port, os.path.join(data, "service_cert.pem"))
        yield {"endpoint": f"https://127.0.0.1:{port}", "dir": data}
        out = devserver.stop(proc)
        assert ("flushed" in out) if NODES == 1 else (f"stopped {NODES} nodes" in out), out


@pytest.fixture(scope="module")
def client(dev):
    return ConfidentialLedgerClient(
        endpoint=dev["endpoint"],
        credential=ConfidentialLedgerCertificateCredential(
            certificate_path=os.path.join(dev["dir"], "user0.pem")
        ),
        ledger_certificate_path=os.path.join(dev["dir"], "service_cert.pem"),
    )


def _service_cert(dev) -> str:
    with open(os.path.join(dev["dir"], "service_cert.pem")) as f:
        return f.read()


def test_append_wait_read_and_verify_receipt(dev, client):
    poller = client.begin_create_ledger_entry({"contents": "hello from the SDK"}, polling_interval=0.1)
    created = poller.result()
    txid = created["transactionId"]
    assert created["collectionId"] == "subledger:0"

    status = client.begin_wait_for_commit(txid, polling_interval=0.1).result()
    assert status["state"] == "Committed"

    entry = client.begin_get_ledger_entry(txid, polling_interval=0.1).result()
    assert entry["state"] == "Ready"
    assert entry["entry"]["contents"] == "hello from the SDK"
    assert entry["entry"]["transactionId"] == txid

    got = client.begin_get_receipt(txid, polling_interval=0.1).result()
    assert got["state"] == "Ready" and got["transactionId"] == txid
    # The SDK's own verifier.
    verify_receipt(got["receipt"], _service_cert(dev))
    # And ccf's, independently: leaf, root, signature, endorsement.
    r = got["receipt"]
    lc = r["leafComponents"]
    leaf = hashlib.sha256(
        bytes.fromhex(lc["writeSetDigest"])
        + hashlib.sha256(lc["commitEvidence"].encode()).digest()
        + bytes.fromhex(lc["claimsDigest"])
    ).hexdigest()
    root = ccf.receipt.root(leaf, r["proof"])
    node_cert = x509.load_pem_x509_certificate(r["cert"].encode())
    ccf.receipt.verify(root, r["signature"], node_cert)
    service = x509.load_pem_x509_certificate(_service_cert(dev).encode())
    ccf.receipt.check_endorsements(node_cert, service, [])
    # Tampering is caught by the SDK.
    bad = dict(r, leafComponents=dict(lc, writeSetDigest="00" * 32))
    with pytest.raises(Exception):
        verify_receipt(bad, _service_cert(dev))


def test_collections_and_current(client):
    for i in range(3):
        client.begin_create_ledger_entry(
            {"contents": f"audit {i}"}, collection_id="audit-trail", polling_interval=0.1
        ).result()
    current = client.get_current_ledger_entry(collection_id="audit-trail")
    assert current["contents"] == "audit 2"
    assert current["collectionId"] == "audit-trail"
    ids = {c["collectionId"] for c in client.list_collections()}
    assert {"audit-trail", "subledger:0"} <= ids


def test_ranged_query_over_five_collections(client):
    collections = [f"col{i}" for i in range(5)]
    for n in range(10):
        coll = f"col{n % 5}"
        result = client.create_ledger_entry({"contents": f"{coll}-{n}"}, collection_id=coll)
        assert result["collectionId"] == coll
    # Wait for everything through the last write.
    marker = client.create_ledger_entry({"contents": "marker"}, collection_id="marker")
    client.begin_wait_for_commit(marker["transactionId"], polling_interval=0.1).result()
    for coll in collections:
        entries = list(client.list_ledger_entries(collection_id=coll))
        assert [e["contents"] for e in entries] == [f"{coll}-{n}" for n in range(10) if f"col{n % 5}" == coll]
        assert all(e["collectionId"] == coll for e in entries)
        seqnos = [int(e["transactionId"].split(".")[1]) for e in entries]
        assert seqnos == sorted(seqnos)
    # An inclusive sub-range of one collection.
    entries = list(client.list_ledger_entries(collection_id="col0"))
    first, second = entries[0]["transactionId"], entries[1]["transactionId"]
    ranged = list(
        client.list_ledger_entries(collection_id="col0", from_transaction_id=first, to_transaction_id=second)
    )
    assert [e["transactionId"] for e in ranged] == [first, second]


def test_paging_over_more_than_1000_entries(client):
    for n in range(1005):
        client.create_ledger_entry({"contents": f"p{n}"}, collection_id="paged")
    txid = client.get_current_ledger_entry(collection_id="paged")["transactionId"]
    client.begin_wait_for_commit(txid, polling_interval=0.1).result()
    entries = list(client.list_ledger_entries(collection_id="paged"))
    assert [e["contents"] for e in entries] == [f"p{n}" for n in range(1005)]


def test_users_members_constitution_quotes(client):
    fingerprint = "AB:" * 31 + "CD"
    created = client.create_or_update_user(fingerprint, {"assignedRole": "Reader"})
    assert created == {"assignedRole": "Reader", "userId": fingerprint}
    assert client.get_user(fingerprint)["assignedRole"] == "Reader"
    client.create_or_update_user(fingerprint, {"assignedRole": "Contributor"})
    assert client.get_user(fingerprint)["assignedRole"] == "Contributor"
    client.delete_user(fingerprint)
    with pytest.raises(Exception):
        client.get_user(fingerprint)

    members = list(client.list_consortium_members())
    assert len(members) == 1 and "BEGIN CERTIFICATE" in members[0]["certificate"]
    constitution = client.get_constitution()
    assert hashlib.sha256(constitution["script"].encode()).hexdigest() == constitution["digest"]
    quotes = client.get_enclave_quotes()
    node_id = quotes["currentNodeId"]
    assert quotes["enclaveQuotes"][node_id]["nodeId"] == node_id
    assert bytes.fromhex(quotes["enclaveQuotes"][node_id]["raw"])


def test_identity_service_standalone_and_on_the_node(dev):
    from azure.confidentialledger.certificate import ConfidentialLedgerCertificateClient

    service_pem = _service_cert(dev)
    # The node answers for its own ledger id.
    on_node = ConfidentialLedgerCertificateClient(
        dev["endpoint"], connection_verify=os.path.join(dev["dir"], "service_cert.pem")
    )
    assert on_node.get_ledger_identity("covenant-dev") == {
        "ledgerId": "covenant-dev",
        "ledgerTlsCertificate": service_pem,
    }
    # The standalone service, from a directory of certificates.
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "my-ledger.pem"), "w") as f:
            f.write(service_pem)
        port = devserver.port_range(1)
        proc = subprocess.Popen(
            [os.environ["COVENANT_BIN"], "identity-service", "--dir", tmp, "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            line = proc.stdout.readline()
            assert "ready" in line, line
            ids = ConfidentialLedgerCertificateClient(
                f"https://127.0.0.1:{port}", connection_verify=os.path.join(tmp, "identity_tls", "cert.pem")
            )
            got = ids.get_ledger_identity("my-ledger")
            assert got["ledgerId"] == "my-ledger"
            assert got["ledgerTlsCertificate"] == service_pem
            with pytest.raises(Exception):
                ids.get_ledger_identity("unknown-ledger")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        assert proc.returncode == 0


def test_token_credential_users(dev, client):
    oid = "7f3c1a2b-0000-4000-8000-00000000abcd"
    client.create_or_update_user(oid, {"assignedRole": "Contributor"})
    token_client = ConfidentialLedgerClient(
        endpoint=dev["endpoint"],
        credential=StaticTokenCredential(oid),
        ledger_certificate_path=os.path.join(dev["dir"], "service_cert.pem"),
    )
    created = token_client.begin_create_ledger_entry({"contents": "via a token"}, polling_interval=0.1).result()
    entry = token_client.begin_get_ledger_entry(created["transactionId"], polling_interval=0.1).result()
    assert entry["entry"]["contents"] == "via a token"
    # A valid token of someone who is not a user, and a Reader trying to write, are refused.
    stranger = ConfidentialLedgerClient(
        endpoint=dev["endpoint"],
        credential=StaticTokenCredential("not-a-user"),
        ledger_certificate_path=os.path.join(dev["dir"], "service_cert.pem"),
    )
    with pytest.raises(Exception) as refused:
        stranger.create_ledger_entry({"contents": "nope"})
    assert "401" in str(refused.value) or "Unauthorized" in str(refused.value)
    client.create_or_update_user(oid, {"assignedRole": "Reader"})
    with pytest.raises(Exception) as forbidden:
        token_client.create_ledger_entry({"contents": "nope"})
    assert "403" in str(forbidden.value) or "Forbidden" in str(forbidden.value)


def test_application_claims_verify_with_the_sdk(dev, client):
    from azure.core.rest import HttpRequest

    preview = "2024-12-09-preview"
    resp = client.send_request(
        HttpRequest("POST", f"/app/transactions?api-version={preview}&collectionId=claims",
                    json={"contents": "claimed entry"})
    )
    resp.raise_for_status()
    txid = resp.headers["x-ms-ccf-transaction-id"]
    client.begin_wait_for_commit(txid, polling_interval=0.1).result()
    got = client.send_request(HttpRequest("GET", f"/app/transactions/{txid}/receipt?api-version={preview}"))
    got.raise_for_status()
    body = got.json()
    claims = body["applicationClaims"]
    assert claims[0]["kind"] == "LedgerEntry"
    assert claims[0]["ledgerEntry"]["contents"] == "claimed entry"
    verify_receipt(body["receipt"], _service_cert(dev), application_claims=claims)
    # Altered contents no longer match the digest in the leaf.
    forged = [dict(claims[0], ledgerEntry=dict(claims[0]["ledgerEntry"], contents="forged"))]
    with pytest.raises(Exception):
        verify_receipt(body["receipt"], _service_cert(dev), application_claims=forged)


def test_ledger_users_api_and_v1_at_new_versions(client):
    """The multi-role users API (2024-08-22-preview), and the v1 route at the same
    api-version, through the SDK's own request pipeline (SDK 1.1.1 has no helper
    methods for them). ACL answers v1 with 301 there; covenant serves it, so the
    preview SDK's README user flow works as written."""
    from azure.core.rest import HttpRequest

    preview = "2024-08-22-preview"
    user = "CD:" * 31 + "EF"
    r = client.send_request(HttpRequest(
        "PATCH", f"/app/ledgerUsers/{user}?api-version={preview}",
        json={"assignedRoles": ["Reader"]}, headers={"content-type": "application/merge-patch+json"}))
    assert r.status_code == 200, r.text()
    r = client.send_request(HttpRequest(
        "PATCH", f"/app/ledgerUsers/{user}?api-version={preview}",
        json={"assignedRoles": ["Contributor"]}, headers={"content-type": "application/merge-patch+json"}))
    # The reply repeats the roles sent (as ACL's does); the user holds both.
    assert r.json() == {"assignedRoles": ["Contributor"], "userId": user}
    r = client.send_request(HttpRequest("GET", f"/app/ledgerUsers/{user}?api-version={preview}"))
    assert r.json() == {"assignedRoles": ["Reader", "Contributor"], "userId": user}
    listed = client.send_request(HttpRequest("GET", f"/app/ledgerUsers?api-version={preview}")).json()
    assert any(u["userId"] == user for u in listed["ledgerUsers"])
    # The v1 route at the new api-version: the user's highest built-in role.
    r = client.send_request(HttpRequest("GET", f"/app/users/{user}?api-version={preview}"), permit_redirects=False)
    assert r.status_code == 200
    assert r.json() == {"assignedRole": "Contributor", "userId": user}
    # The v1 API with the old api-version still works on the same user.
    assert client.get_user(user)["assignedRole"] == "Contributor"
    r = client.send_request(HttpRequest("DELETE", f"/app/ledgerUsers/{user}?api-version={preview}"))
    assert r.status_code == 204
    r = client.send_request(HttpRequest("DELETE", f"/app/ledgerUsers/nobody?api-version={preview}"))
    assert r.status_code == 204
