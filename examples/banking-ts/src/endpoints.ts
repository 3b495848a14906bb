// A small bank on covenant: members open accounts and deposit; users read their
// balance and transfer to each other. A transfer records a claim (who paid whom,
// how much) whose digest enters the ledger; GET /receipt returns the transfer's
// receipt from the historical state, for the parties to verify offline.
import * as ccfapp from "@microsoft/ccf-app";
import { account, accounts, lastTransfer, LAST, LAST_TRANSFER } from "./lib/accounts.js";
import { attach, canonical, type TransferClaim } from "./lib/claims.js";
import { amountOf, callerId, handle, HttpError } from "./lib/http.js";

type AmountBody = { amount?: unknown };

/** PUT /accounts/{user_id} (member): opens an empty account. */
export function open_account(request: ccfapp.Request) {
  return handle(() => {
    const id = request.params.user_id;
    if (accounts.has(id)) {
      throw new HttpError(409, "AccountExists", `account ${id} exists`);
    }
    accounts.set(id, { balance: 0, transfers: 0 });
    return { statusCode: 201, body: { user_id: id, balance: 0, opened_by: callerId(request) } };
  });
}

/** POST /accounts/{user_id}/deposit {"amount": n} (member). */
export function deposit(request: ccfapp.Request<AmountBody>) {
  return handle(() => {
    const id = request.params.user_id;
    const row = account(id);
    row.balance += amountOf(request);
    accounts.set(id, row);
    return { body: { user_id: id, balance: row.balance } };
  });
}

/** GET /whoami (user or member): the caller's id, i.e. its account id. */
export function whoami(request: ccfapp.Request) {
  return handle(() => ({ body: { id: callerId(request), policy: request.caller?.policy } }));
}

/** GET /balance (user): the caller's balance. */
export function balance(request: ccfapp.Request) {
  return handle(() => {
    const id = callerId(request);
    return { body: { user_id: id, balance: account(id).balance } };
  });
}

/** POST /transfer/{to} {"amount": n} (user): moves n from the caller to `to`, and
 * sets the transaction's claims digest to SHA-256 of the returned `claim`. */
export function transfer(request: ccfapp.Request<AmountBody>) {
  return handle(() => {
    const from = callerId(request);
    const to = request.params.to;
    const amount = amountOf(request);
    if (from === to) {
      throw new HttpError(400, "InvalidInput", "cannot transfer to yourself");
    }
    const src = account(from);
    const dst = account(to);
    if (src.balance < amount) {
      throw new HttpError(400, "InsufficientFunds", `balance ${src.balance} is less than ${amount}`);
    }
    src.balance -= amount;
    src.transfers += 1;
    dst.balance += amount;
    accounts.set(from, src);
    accounts.set(to, dst);
    const claim: TransferClaim = {
      kind: "covenant.banking-ts.transfer",
      version: 1,
      from,
      to,
      amount,
      sequence: src.transfers,
    };
    const text = canonical(claim);
    lastTransfer.set(LAST, text);
    const claims_digest = attach(text);
    return { body: { from, to, amount, balance: src.balance, claim: text, claims_digest } };
  });
}

/** GET /receipt (historical; transaction id in x-ms-ccf-transaction-id): the
 * receipt of a transfer the caller took part in, with its claim. */
export function receipt(request: ccfapp.Request) {
  return handle(() => {
    const me = callerId(request);
    const state = ccfapp.historicalState;
    if (state === undefined) {
      throw new HttpError(500, "InternalError", "no historical state (is the endpoint's mode historical?)");
    }
    const text = ccfapp.typedKv(state.kv[LAST_TRANSFER], ccfapp.string, ccfapp.string).get(LAST);
    if (text === undefined) {
      throw new HttpError(404, "NotATransfer", `transaction ${state.transactionId} is not a transfer`);
    }
    const claim = JSON.parse(text) as TransferClaim;
    if (claim.from !== me && claim.to !== me) {
      throw new HttpError(403, "Forbidden", "only the parties of a transfer may read its receipt");
    }
    return { body: { transactionId: state.transactionId, receipt: state.receipt, claim: text } };
  });
}
