// Responses and request parsing shared by the endpoints.
import * as ccfapp from "@microsoft/ccf-app";

export type ErrorBody = { error: { code: string; message: string } };

export function error(statusCode: number, code: string, message: string): ccfapp.Response<ErrorBody> {
  return { statusCode, body: { error: { code, message } } };
}

/** Thrown by handlers to answer with an error; see `handle`. */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Runs `f`, turning an `HttpError` it throws into its error response. */
export function handle<B>(f: () => ccfapp.Response<B>): ccfapp.Response<B | ErrorBody> {
  try {
    return f();
  } catch (e) {
    if (e instanceof HttpError) {
      return error(e.statusCode, e.code, e.message);
    }
    throw e;
  }
}

/** The caller's id (user or member certificate fingerprint, as the service reports it). */
export function callerId(request: ccfapp.Request): string {
  const caller = request.caller;
  if (caller === undefined || !("id" in caller)) {
    throw new HttpError(401, "Unauthorized", "a user or member certificate is required");
  }
  return caller.id;
}

/** `{"amount": n}` from the body, n a positive safe integer. */
export function amountOf(request: ccfapp.Request<{ amount?: unknown }>): number {
  let body: { amount?: unknown };
  try {
    body = request.body.json();
  } catch {
    throw new HttpError(400, "InvalidInput", 'the body must be JSON: {"amount": n}');
  }
  const amount = body !== null && typeof body === "object" ? body.amount : undefined;
  if (typeof amount !== "number" || !Number.isSafeInteger(amount) || amount <= 0) {
    throw new HttpError(400, "InvalidInput", "amount must be a positive integer");
  }
  return amount;
}
