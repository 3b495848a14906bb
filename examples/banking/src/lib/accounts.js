// Account rows: user id -> {"balance": integer}, in the private map "bank.accounts".
const accounts = () => ccf.kv["bank.accounts"];
const key = (id) => ccf.strToBuf(id);

export function get(id) {
  const raw = accounts().get(key(id));
  return raw === undefined ? undefined : ccf.bufToJsonCompatible(raw);
}

export function put(id, row) {
  accounts().set(key(id), ccf.jsonCompatibleToBuf(row));
}

export function error(statusCode, code, message) {
  return { statusCode, body: { error: { code, message } } };
}

// A positive integer amount from the request body, or an error response.
export function amountOf(request) {
  let body;
  try {
    body = request.body.json();
  } catch (e) {
    return { failure: error(400, "InvalidInput", "the body must be JSON: {\"amount\": n}") };
  }
  const amount = body && body.amount;
  if (!Number.isInteger(amount) || amount <= 0) {
    return { failure: error(400, "InvalidInput", "amount must be a positive integer") };
  }
  return { amount };
}
