// Application claims: a transfer's claim is a canonical JSON text whose SHA-256 is
// the transaction's claims digest (ccf.rpc.setClaimsDigest), so it enters the
// transaction's Merkle leaf and every receipt for it. Whoever holds the claim text
// and the receipt can check offline that the ledger recorded exactly this transfer.
import * as ccfapp from "@microsoft/ccf-app";
import { digest } from "@microsoft/ccf-app/crypto.js";

export type TransferClaim = {
  kind: "covenant.banking-ts.transfer";
  version: 1;
  from: string;
  to: string;
  amount: number;
  /** The sender's transfer count including this one, so no two claims are equal. */
  sequence: number;
};

/** The claim's canonical text: JSON, keys in the order of `TransferClaim`, no spaces. */
export function canonical(c: TransferClaim): string {
  return JSON.stringify({
    kind: c.kind,
    version: c.version,
    from: c.from,
    to: c.to,
    amount: c.amount,
    sequence: c.sequence,
  });
}

export function hex(buf: ArrayBuffer): string {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Sets the transaction's claims digest to SHA-256(text); returns it (hex). */
export function attach(text: string): string {
  const d = digest("SHA-256", ccfapp.string.encode(text));
  ccfapp.setClaimsDigest(d);
  return hex(d);
}
