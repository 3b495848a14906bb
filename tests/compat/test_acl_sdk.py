"""The Azure Confidential Ledger Python SDK (PyPI, pinned) against `covenant dev`.

Run by scripts/compat-acl, which passes the binary in COVENANT_BIN. Each test uses
the SDK's own flows unchanged; receipts are checked by the SDK's verify_receipt and
by ccf.receipt.
"""

import base64
import hashlib
import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest
from azure.confidentialledger import (
    ConfidentialLedgerCertificateCredential,
    ConfidentialLedgerClient,
)
from azure.confidentialledger.receipt import verify_receipt
from cryptography import x509
import ccf.receipt


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dev():
    binary = os.environ["COVENANT_BIN"]
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "dev")
        port = _free_port()
        proc = subprocess.Popen(
            [binary, "dev", "--data-dir", data, "--port", str(port), "--sig-ms-interval", "100"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.time() + 30
        lines = []
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "ready" in line:
                break
        else:
            proc.kill()
        if not lines or "ready" not in lines[-1]:
            proc.kill()
            pytest.fail("covenant dev did not become ready:\n" + "".join(lines))
        yield {"endpoint": f"https://127.0.0.1:{port}", "dir": data}
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "flushed" in out


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
