// Error answers of the seed bank (a module of its own, so the bundle has an import).
export function fail(statusCode, message) {
  return { statusCode, body: { error: { code: "BankError", message } } };
}
