// A small bank: members open accounts and deposit; users read their balance and
// transfer to each other. Every write is one ledger transaction.
import { get, put, error, amountOf } from "./lib/accounts.js";

export function open_account(request) {
  const id = request.params.user_id;
  if (get(id) !== undefined) {
    return error(409, "AccountExists", `account ${id} exists`);
  }
  put(id, { balance: 0 });
  return { statusCode: 201, body: { user_id: id, balance: 0, opened_by: request.caller.id } };
}

export function deposit(request) {
  const id = request.params.user_id;
  const row = get(id);
  if (row === undefined) {
    return error(404, "AccountNotFound", `no account ${id}`);
  }
  const { amount, failure } = amountOf(request);
  if (failure) {
    return failure;
  }
  row.balance += amount;
  put(id, row);
  return { body: { user_id: id, balance: row.balance } };
}

export function balance(request) {
  const row = get(request.caller.id);
  if (row === undefined) {
    return error(404, "AccountNotFound", "you have no account");
  }
  return { body: { balance: row.balance } };
}

export function transfer(request) {
  const from = request.caller.id;
  const to = request.params.to;
  const { amount, failure } = amountOf(request);
  if (failure) {
    return failure;
  }
  const src = get(from);
  const dst = get(to);
  if (src === undefined || dst === undefined) {
    return error(404, "AccountNotFound", "both accounts must exist");
  }
  if (from === to) {
    return error(400, "InvalidInput", "cannot transfer to yourself");
  }
  if (src.balance < amount) {
    return error(400, "InsufficientFunds", `balance ${src.balance} is less than ${amount}`);
  }
  src.balance -= amount;
  dst.balance += amount;
  put(from, src);
  put(to, dst);
  console.log(`transfer of ${amount}`);
  return { body: { from, to, amount, balance: src.balance } };
}
