"""A governance client that signs requests with HTTP signatures, the form CCF 1-2
members used (CCF's scurl.sh) and the Managed CCF preview guide (seeds/003) sends.

Written for covenant's tests from the published facts of that form
(draft-cavage-http-signatures-12 as CCF used it), not from scurl.sh:

- ``Digest: SHA-256=<base64 of the body's SHA-256>``;
- the signed string is three lines, ``(request-target): <method> <path>``,
  ``digest: SHA-256=<...>``, ``content-length: <n>``;
- it is signed with ECDSA over SHA-384 by the member's key (DER signature);
- ``Authorization: Signature keyId="<hex SHA-256 of the certificate file>",
  algorithm="hs2019",headers="(request-target) digest content-length",
  signature="<base64>"``.

Usage, curl-like (the options the guide passes to scurl.sh):

    http_signature.py URL --cacert CA --signing-key KEY --signing-cert CERT \
        [--data-binary @FILE | --data-binary TEXT] [-H 'Name: value'] [-X METHOD]

Prints the response body; exits 22 on an HTTP error status (as ``curl -f``),
after printing the body to stderr.
"""

import argparse
import base64
import hashlib
import http.client
import ssl
import sys
import urllib.parse

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", nargs="?")
    p.add_argument("--url", dest="url_opt")
    p.add_argument("--cacert", required=True)
    p.add_argument("--signing-key", required=True)
    p.add_argument("--signing-cert", required=True)
    p.add_argument("--data-binary", "-d", "--data", dest="data")
    p.add_argument("-H", "--header", action="append", default=[])
    p.add_argument("-X", "--request", dest="method")
    a = p.parse_args()
    if not (a.url_opt or a.url):
        p.error("give the URL (first argument, or --url)")
    url = urllib.parse.urlsplit(a.url_opt or a.url)

    if a.data is None:
        body = b""
    elif a.data.startswith("@"):
        with open(a.data[1:], "rb") as f:
            body = f.read()
    else:
        body = a.data.encode()
    method = (a.method or "POST").upper()
    target = url.path + (f"?{url.query}" if url.query else "")

    digest = "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    signed = (
        f"(request-target): {method.lower()} {target}\n"
        f"digest: {digest}\n"
        f"content-length: {len(body)}"
    )
    with open(a.signing_key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    signature = key.sign(signed.encode(), ec.ECDSA(hashes.SHA384()))
    with open(a.signing_cert, "rb") as f:
        key_id = hashlib.sha256(f.read()).hexdigest()

    headers = {
        "Digest": digest,
        "Authorization": (
            f'Signature keyId="{key_id}",algorithm="hs2019",'
            'headers="(request-target) digest content-length",'
            f'signature="{base64.b64encode(signature).decode()}"'
        ),
        "Content-Length": str(len(body)),
    }
    for h in a.header:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()

    ctx = ssl.create_default_context(cafile=a.cacert)
    conn = http.client.HTTPSConnection(url.hostname, url.port or 443, context=ctx)
    conn.request(method, target, body=body, headers=headers)
    resp = conn.getresponse()
    out = resp.read()
    if resp.status >= 400:
        sys.stderr.write(f"HTTP {resp.status}: {out.decode(errors='replace')}\n")
        return 22
    sys.stdout.write(out.decode(errors="replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
