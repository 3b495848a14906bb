// A small bank with the routes the Managed CCF preview guide (seeds/003, step 4)
// calls, written for covenant's tests: members open accounts and deposit, users
// transfer and read balances. Users are named by their CCF id (the lower-case
// SHA-256 of their certificate, as `openssl x509 -fingerprint -sha256` prints it
// once the colons go) and must be users of the service.

import { fail } from "./lib/respond.js";

const accounts = ccf.kv["bank.accounts"];
const users = ccf.kv["public:ccf.gov.users.certs"];
const key = (user, account) => ccf.strToBuf(`${user}/${account}`);

function amount(request) {
  let body;
  try {
    body = request.body.json();
  } catch (e) {
    return undefined;
  }
  return Number.isInteger(body.value) && body.value > 0 ? body : undefined;
}
function balanceOf(user, account) {
  const raw = accounts.get(key(user, account));
  return raw === undefined ? undefined : ccf.bufToJsonCompatible(raw);
}

export function open_account(request) {
  const { user_id, account_name } = request.params;
  if (!users.has(ccf.strToBuf(user_id))) {
    return fail(404, `${user_id} is not a user of this service`);
  }
  if (balanceOf(user_id, account_name) !== undefined) {
    return fail(409, `account ${account_name} of ${user_id} exists`);
  }
  accounts.set(key(user_id, account_name), ccf.jsonCompatibleToBuf(0));
  return { statusCode: 204 };
}

export function deposit(request) {
  const { user_id, account_name } = request.params;
  const body = amount(request);
  if (body === undefined) {
    return fail(400, 'the body must be {"value": <positive integer>}');
  }
  const balance = balanceOf(user_id, account_name);
  if (balance === undefined) {
    return fail(404, `no account ${account_name} of ${user_id}`);
  }
  accounts.set(key(user_id, account_name), ccf.jsonCompatibleToBuf(balance + body.value));
  return { statusCode: 204 };
}

export function transfer(request) {
  const from = request.caller.id;
  const { account_name } = request.params;
  const body = amount(request);
  if (body === undefined || typeof body.user_id_to !== "string" || typeof body.account_name_to !== "string") {
    return fail(400, 'the body must be {"value", "user_id_to", "account_name_to"}');
  }
  const have = balanceOf(from, account_name);
  const theirs = balanceOf(body.user_id_to, body.account_name_to);
  if (have === undefined || theirs === undefined) {
    return fail(404, "no such account");
  }
  if (have < body.value) {
    return fail(400, "insufficient funds");
  }
  accounts.set(key(from, account_name), ccf.jsonCompatibleToBuf(have - body.value));
  accounts.set(key(body.user_id_to, body.account_name_to), ccf.jsonCompatibleToBuf(theirs + body.value));
  return { statusCode: 204 };
}

export function balance(request) {
  const value = balanceOf(request.caller.id, request.params.account_name);
  if (value === undefined) {
    return fail(404, "no such account");
  }
  return { body: { balance: value } };
}
