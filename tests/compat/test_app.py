"""examples/banking-ts, a TypeScript app against @microsoft/ccf-app (npm, pinned),
deployed on `covenant dev --app` and exercised over HTTPS with client certificates.

Run by scripts/compat-app, which builds the app with rollup and passes the deployable
directory in COVENANT_APP_DIR and the binary in COVENANT_BIN; COVENANT_COMPAT_NODES=3
runs it against a 3-node network through a backup (writes are forwarded). A transfer
sets a claims digest; its historical receipt is verified offline by PyPI `ccf`
(ccf.receipt), the claims digest recomputed from the claim the app returned.
"""

import base64
import copy
import hashlib
import json
import os
import subprocess
import tempfile
import time

import pytest
import requests

import devserver
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
import ccf.receipt

NODES = int(os.environ.get("COVENANT_COMPAT_NODES", "1"))
TXID_HEADER = "x-ms-ccf-transaction-id"


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def run_cli(*args: str) -> str:
    out = subprocess.run([os.environ["COVENANT_BIN"], *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"covenant {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def cert_of(pem_path: str) -> x509.Certificate:
    with open(pem_path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def fingerprint(cert: x509.Certificate) -> str:
    """A user's fingerprint as the ACL users API takes it (SHA-256 of the DER, colon hex)."""
    return ":".join(f"{b:02X}" for b in sha256(cert.public_bytes(Encoding.DER)))


def app_id(client, cert: x509.Certificate) -> str:
    """The caller's id as the app sees it (request.caller.id), which is its account id:
    the certificate's SHA-256, in whichever hex spelling the service uses."""
    r = client("GET", "/app/whoami")
    assert r.status_code == 200, r.text
    got = r.json()["id"]
    assert got.replace(":", "").lower() == sha256(cert.public_bytes(Encoding.DER)).hex(), got
    return got


@pytest.fixture(scope="module")
def dev():
    app_dir = os.environ["COVENANT_APP_DIR"]
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "dev")
        port = devserver.port_range(NODES)
        cmd = [os.environ["COVENANT_BIN"], "dev", "--data-dir", data, "--port", str(port),
               "--sig-ms-interval", "100", "--app", app_dir]
        if NODES > 1:
            cmd += ["--nodes", str(NODES)]
        proc, lines = devserver.start(cmd)
        assert any("deployed the app" in line for line in lines), "".join(lines)
        service_cert = os.path.join(data, "service_cert.pem")
        if NODES > 1:
            port = devserver.backup_port(port, service_cert)
        try:
            yield {"endpoint": f"https://127.0.0.1:{port}", "dir": data, "tmp": tmp,
                   "service_cert": service_cert}
        finally:
            out = devserver.stop(proc)
        assert ("flushed" in out) if NODES == 1 else (f"stopped {NODES} nodes" in out), out


class Client:
    """A requests session (one kept-alive connection: session consistency on a
    backup) for one identity, against /app."""

    def __init__(self, dev, cert=None):
        self.endpoint = dev["endpoint"]
        self.session = requests.Session()
        self.session.cert = cert
        # Per request: a session's own verify loses to REQUESTS_CA_BUNDLE.
        self.verify = dev["service_cert"]

    def __call__(self, method, path, body=None, headers=None):
        kwargs = {"headers": headers or {}, "timeout": 30, "verify": self.verify}
        if body is not None:
            kwargs["data"] = body if isinstance(body, (str, bytes)) else json.dumps(body)
            kwargs["headers"]["content-type"] = "application/json"
        return self.session.request(method, self.endpoint + path, **kwargs)


def wait_until(what, f, timeout=30):
    deadline = time.time() + timeout
    while True:
        got = f()
        if got:
            return got
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def add_user(dev, name):
    keys = os.path.join(dev["tmp"], "keys")
    run_cli("keygen", "--name", name, "--dir", keys)
    cert_pem = os.path.join(keys, f"{name}_cert.pem")
    run_cli("users", "set", fingerprint(cert_of(cert_pem)), "--role", "Reader", "--endpoint", dev["endpoint"],
            "--service-cert", dev["service_cert"], "--cert", os.path.join(dev["dir"], "user0.pem"))
    client = Client(dev, (cert_pem, os.path.join(keys, f"{name}_privk.pem")))
    # users set went to the primary; this node knows the user once it has the write.
    wait_until(f"{name} to be a user here", lambda: client("GET", "/app/whoami").status_code == 200)
    return client, cert_of(cert_pem)


@pytest.fixture(scope="module")
def bank(dev):
    d = dev["dir"]
    member_pem = os.path.join(d, "member0_cert.pem")
    member = Client(dev, (member_pem, os.path.join(d, "member0_privk.pem")))
    user0 = Client(dev, os.path.join(d, "user0.pem"))
    user1, user1_cert = add_user(dev, "user1")
    user2, user2_cert = add_user(dev, "user2")
    return {
        "member": member, "user0": user0, "user1": user1, "user2": user2, "anonymous": Client(dev),
        "member_cert": cert_of(member_pem),
        "u0": app_id(user0, cert_of(os.path.join(d, "user0.pem"))), "u1": app_id(user1, user1_cert),
        "u2": app_id(user2, user2_cert), "service_cert": cert_of(dev["service_cert"]),
    }


def error_code(r):
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str), body
    return body["error"]["code"]


def test_callers_see_their_ids(bank):
    r = bank["user0"]("GET", "/app/whoami")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": bank["u0"], "policy": "user_cert"}
    assert len({bank["u0"], bank["u1"], bank["u2"]}) == 3
    r = bank["member"]("GET", "/app/whoami")
    assert r.status_code == 200, r.text
    # Member ids: the same SHA-256, lower-case hex without colons.
    assert r.json() == {"id": sha256(bank["member_cert"].public_bytes(Encoding.DER)).hex(),
                        "policy": "member_cert"}
    assert bank["anonymous"]("GET", "/app/whoami").status_code == 401


@pytest.fixture(scope="module")
def accounts(bank):
    """Accounts for user0 (100), user1 (0) and user2 (0), opened by member0."""
    member = bank["member"]
    for who in ("u0", "u1", "u2"):
        r = member("PUT", f"/app/accounts/{bank[who]}")
        assert r.status_code == 201, r.text
        assert r.json() == {"user_id": bank[who], "balance": 0,
                            "opened_by": sha256(bank["member_cert"].public_bytes(Encoding.DER)).hex()}
        assert r.headers.get(TXID_HEADER), r.headers
    r = member("POST", f"/app/accounts/{bank['u0']}/deposit", {"amount": 100})
    assert r.status_code == 200, r.text
    assert r.json() == {"user_id": bank["u0"], "balance": 100}
    return r.headers[TXID_HEADER]


def test_only_members_open_accounts_and_only_once(bank, accounts):
    r = bank["member"]("PUT", f"/app/accounts/{bank['u0']}")
    assert (r.status_code, error_code(r)) == (409, "AccountExists")
    # A user is no member: covenant's authentication answers 401.
    r = bank["user0"]("PUT", "/app/accounts/someone")
    assert r.status_code == 401, r.text
    assert "error" in r.json()
    r = bank["user0"]("POST", f"/app/accounts/{bank['u0']}/deposit", {"amount": 5})
    assert r.status_code == 401, r.text
    assert bank["anonymous"]("PUT", "/app/accounts/someone").status_code == 401


def test_deposit_errors(bank, accounts):
    member = bank["member"]
    for body in ({"amount": -5}, {"amount": 0}, {"amount": 1.5}, {"amount": "7"}, {}, [1], "not json"):
        r = member("POST", f"/app/accounts/{bank['u0']}/deposit", body)
        assert (r.status_code, error_code(r)) == (400, "InvalidInput"), (body, r.text)
    r = member("POST", "/app/accounts/nobody/deposit", {"amount": 5})
    assert (r.status_code, error_code(r)) == (404, "AccountNotFound")


@pytest.fixture(scope="module")
def transfer(bank, accounts):
    """user0 pays user1 30: the response, its claim and its transaction id."""
    r = bank["user0"]("POST", f"/app/transfer/{bank['u1']}", {"amount": 30})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in ("from", "to", "amount", "balance")} == {
        "from": bank["u0"], "to": bank["u1"], "amount": 30, "balance": 70}
    claim = json.loads(body["claim"])
    assert claim == {"kind": "covenant.banking-ts.transfer", "version": 1, "from": bank["u0"],
                     "to": bank["u1"], "amount": 30, "sequence": 1}
    assert body["claims_digest"] == hashlib.sha256(body["claim"].encode()).hexdigest()
    txid = r.headers[TXID_HEADER]
    view, seqno = (int(x) for x in txid.split("."))
    return {"body": body, "txid": txid, "seqno": seqno}


def committed_here(bank, txid):
    r = bank["anonymous"]("GET", f"/node/tx?transaction_id={txid}")
    return r.status_code == 200 and r.json().get("status") == "Committed"


def test_balances_after_a_transfer(bank, transfer):
    assert bank["user0"]("GET", "/app/balance").json() == {"user_id": bank["u0"], "balance": 70}
    # user1 has not written on its connection: its read is served by this node,
    # so wait until the transfer is committed here.
    wait_until("the transfer to commit", lambda: committed_here(bank, transfer["txid"]))
    r = bank["user1"]("GET", "/app/balance")
    assert r.status_code == 200, r.text
    assert r.json() == {"user_id": bank["u1"], "balance": 30}
    # Members have no balance endpoint (user_cert only), nor have anonymous callers.
    assert bank["member"]("GET", "/app/balance").status_code == 401
    assert bank["anonymous"]("GET", "/app/balance").status_code == 401


def test_transfer_errors(bank, transfer):
    user0 = bank["user0"]
    r = user0("POST", f"/app/transfer/{bank['u1']}", {"amount": 1000})
    assert (r.status_code, error_code(r)) == (400, "InsufficientFunds")
    for body in ({"amount": -1}, {"amount": 0}, {"amount": 2 ** 60}, {"amount": None}, "{"):
        r = user0("POST", f"/app/transfer/{bank['u1']}", body)
        assert (r.status_code, error_code(r)) == (400, "InvalidInput"), (body, r.text)
    r = user0("POST", "/app/transfer/nobody", {"amount": 1})
    assert (r.status_code, error_code(r)) == (404, "AccountNotFound")
    r = user0("POST", f"/app/transfer/{bank['u0']}", {"amount": 1})
    assert (r.status_code, error_code(r)) == (400, "InvalidInput")
    # A member is no user: covenant answers 401.
    assert bank["member"]("POST", f"/app/transfer/{bank['u1']}", {"amount": 1}).status_code == 401
    # Failed transfers wrote nothing.
    assert user0("GET", "/app/balance").json()["balance"] == 70


def fetch_receipt(client, txid, timeout=30):
    """GET /app/receipt for txid, retrying while the node answers 202 (not yet
    committed and signed) or does not know the transaction yet (a backup behind)."""
    deadline = time.time() + timeout
    while True:
        r = client("GET", "/app/receipt", headers={TXID_HEADER: txid})
        pending = r.status_code == 202 or (
            r.status_code == 404 and r.json().get("error", {}).get("code") == "TransactionPendingOrUnknown")
        if not pending:
            return r
        if r.status_code == 202:
            assert r.headers.get("retry-after"), r.headers
        if time.time() > deadline:
            raise AssertionError(f"receipt for {txid} still pending: {r.status_code} {r.text}")
        time.sleep(min(float(r.headers.get("retry-after", "0.2")), 0.5))


@pytest.fixture(scope="module")
def receipt(bank, transfer):
    r = fetch_receipt(bank["user0"], transfer["txid"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["transactionId"] == transfer["txid"]
    assert body["claim"] == transfer["body"]["claim"]
    return body["receipt"]


def leaf_of(components, claim: str) -> str:
    """The Merkle leaf, with the claims digest recomputed from the claim text."""
    claims_digest = sha256(claim.encode())
    assert components["claims_digest"] == claims_digest.hex()
    return sha256(bytes.fromhex(components["write_set_digest"])
                  + sha256(components["commit_evidence"].encode())
                  + claims_digest).hex()


def verify(receipt, claim: str, service_cert: x509.Certificate):
    """Raises unless `receipt` proves `claim` under `service_cert` (ccf.receipt)."""
    node_cert = x509.load_pem_x509_certificate(receipt["cert"].encode())
    root = ccf.receipt.root(leaf_of(receipt["leaf_components"], claim), receipt["proof"])
    ccf.receipt.verify(root, receipt["signature"], node_cert)
    ccf.receipt.check_endorsement(node_cert, service_cert)


def test_transfer_receipt_verifies_offline_with_its_claim(bank, transfer, receipt):
    assert set(receipt) >= {"signature", "cert", "proof", "leaf_components", "node_id"}, receipt
    components = receipt["leaf_components"]
    assert components["commit_evidence"].startswith(f"ce:{transfer['txid']}:"), components
    assert components["claims_digest"] == transfer["body"]["claims_digest"]
    verify(receipt, transfer["body"]["claim"], bank["service_cert"])
    # The node id is the SHA-256 of the signing node's public key (DER SPKI).
    node_cert = x509.load_pem_x509_certificate(receipt["cert"].encode())
    spki = node_cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert receipt["node_id"] == sha256(spki).hex()


def test_tampered_claims_and_receipts_fail(bank, transfer, receipt):
    claim = transfer["body"]["claim"]
    service = bank["service_cert"]
    # Another claim (more money) has another digest: not the receipt's.
    forged = claim.replace('"amount":30', '"amount":3000')
    assert forged != claim
    with pytest.raises(AssertionError):
        verify(receipt, forged, service)
    # The same forged claim with its digest swapped into the receipt: the root
    # changes, so the signature does not verify.
    swapped = copy.deepcopy(receipt)
    swapped["leaf_components"]["claims_digest"] = hashlib.sha256(forged.encode()).hexdigest()
    with pytest.raises(InvalidSignature):
        verify(swapped, forged, service)
    # A changed proof, write set digest or commit evidence, or another signature.
    tampered = []
    if receipt["proof"]:
        r = copy.deepcopy(receipt)
        side, digest = next(iter(r["proof"][0].items()))
        r["proof"][0][side] = ("0" if digest[0] != "0" else "1") + digest[1:]
        tampered.append(r)
    r = copy.deepcopy(receipt)
    r["proof"].append({"right": "00" * 32})
    tampered.append(r)
    r = copy.deepcopy(receipt)
    r["leaf_components"]["write_set_digest"] = "00" * 32
    tampered.append(r)
    r = copy.deepcopy(receipt)
    r["leaf_components"]["commit_evidence"] += "0"
    tampered.append(r)
    r = copy.deepcopy(receipt)
    sig = bytearray(base64.b64decode(r["signature"]))
    sig[-1] ^= 1
    r["signature"] = base64.b64encode(bytes(sig)).decode()
    tampered.append(r)
    for r in tampered:
        with pytest.raises(InvalidSignature):
            verify(r, claim, service)
    # A certificate the service did not endorse.
    with pytest.raises(Exception):
        ccf.receipt.check_endorsement(x509.load_pem_x509_certificate(receipt["cert"].encode()),
                                      bank["member_cert"])


def test_receipts_only_for_transfers_and_their_parties(bank, accounts, transfer, receipt):
    # The recipient gets the same receipt; a user who took no part is refused.
    r = fetch_receipt(bank["user1"], transfer["txid"])
    assert r.status_code == 200, r.text
    assert r.json()["claim"] == transfer["body"]["claim"]
    verify(r.json()["receipt"], transfer["body"]["claim"], bank["service_cert"])
    r = fetch_receipt(bank["user2"], transfer["txid"])
    assert (r.status_code, error_code(r)) == (403, "Forbidden")
    # The transaction id may come as a query parameter instead.
    r = bank["user0"]("GET", f"/app/receipt?transaction_id={transfer['txid']}")
    assert r.status_code == 200, r.text
    assert r.json()["receipt"] == receipt
    # A deposit is no transfer.
    r = fetch_receipt(bank["user0"], accounts)
    assert (r.status_code, error_code(r)) == (404, "NotATransfer")
    # Members cannot call it (user_cert), and the transaction id is required.
    assert bank["member"]("GET", "/app/receipt", headers={TXID_HEADER: transfer["txid"]}).status_code == 401
    r = bank["user0"]("GET", "/app/receipt")
    assert r.status_code == 400, r.text
    r = bank["user0"]("GET", "/app/receipt", headers={TXID_HEADER: "not-a-txid"})
    assert r.status_code == 400, r.text


def test_a_second_transfer_has_its_own_claim_and_receipt(bank, transfer, receipt):
    r = bank["user1"]("POST", f"/app/transfer/{bank['u2']}", {"amount": 12})
    assert r.status_code == 200, r.text
    body = r.json()
    assert json.loads(body["claim"])["sequence"] == 1 and body["balance"] == 18
    txid = r.headers[TXID_HEADER]
    got = fetch_receipt(bank["user2"], txid)
    assert got.status_code == 200, got.text
    second = got.json()["receipt"]
    verify(second, body["claim"], bank["service_cert"])
    # One transfer's claim does not verify against the other's receipt.
    with pytest.raises(AssertionError):
        verify(second, transfer["body"]["claim"], bank["service_cert"])
