#!/usr/bin/env python3
"""Write tampered copies of covenant receipts, one alteration per file.

Usage: tamper_receipts.py OUT_DIR receipt.json [receipt.json ...]

Each alteration must make every verifier reject the receipt: a flipped hex digit in
writeSetDigest, claimsDigest, commitEvidence or a proof element, a proof step moved
to the other side, a flipped byte of the signature, and the node certificate of
another receipt's signer swapped in is left to the Rust tests (it needs a second
service). Prints the files written.
"""

import base64
import json
import os
import sys


def flip_hex(s: str, at: int) -> str:
    i = at % len(s)
    return s[:i] + ("1" if s[i] == "0" else "0") + s[i + 1 :]


def alterations(resp: dict):
    r = resp["receipt"]

    def copy():
        return json.loads(json.dumps(resp))

    t = copy()
    t["receipt"]["leafComponents"]["writeSetDigest"] = flip_hex(r["leafComponents"]["writeSetDigest"], 5)
    yield "wsd", t
    t = copy()
    t["receipt"]["leafComponents"]["claimsDigest"] = flip_hex(r["leafComponents"]["claimsDigest"], 9)
    yield "claims", t
    t = copy()
    ce = r["leafComponents"]["commitEvidence"]
    t["receipt"]["leafComponents"]["commitEvidence"] = ce[:-1] + ("0" if ce[-1] != "0" else "1")
    yield "ce", t
    if r["proof"]:
        t = copy()
        step = t["receipt"]["proof"][0]
        side = "left" if "left" in step else "right"
        step[side] = flip_hex(step[side], 3)
        yield "proof", t
        t = copy()
        step = t["receipt"]["proof"][0]
        side = "left" if "left" in step else "right"
        other = "right" if side == "left" else "left"
        step[other] = step.pop(side)
        yield "side", t
    t = copy()
    sig = bytearray(base64.b64decode(r["signature"]))
    sig[len(sig) // 2] ^= 0x01
    t["receipt"]["signature"] = base64.b64encode(bytes(sig)).decode()
    yield "sig", t


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for path in sys.argv[2:]:
        with open(path) as f:
            resp = json.load(f)
        base = os.path.splitext(os.path.basename(path))[0]
        for name, t in alterations(resp):
            p = os.path.join(out, f"{base}.{name}.json")
            with open(p, "w") as f:
                json.dump(t, f)
            print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
