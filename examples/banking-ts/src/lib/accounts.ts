// The bank's state: private maps, typed with @microsoft/ccf-app's converters.
import * as ccfapp from "@microsoft/ccf-app";
import { HttpError } from "./http.js";

export type Account = { balance: number; transfers: number };

/** user id -> account. */
export const ACCOUNTS = "bank.accounts";
/** "last" -> the claim (canonical JSON text) of the latest transfer. A transfer
 * transaction writes it, so the transaction's historical state holds its claim. */
export const LAST_TRANSFER = "bank.last_transfer";
export const LAST = "last";

export const accounts = ccfapp.typedKv(ACCOUNTS, ccfapp.string, ccfapp.json<Account>());
export const lastTransfer = ccfapp.typedKv(LAST_TRANSFER, ccfapp.string, ccfapp.string);

export function account(id: string): Account {
  const row = accounts.get(id);
  if (row === undefined) {
    throw new HttpError(404, "AccountNotFound", `no account ${id}`);
  }
  return row;
}
