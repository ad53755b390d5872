/**
 * Forwarding one request to a cluster, with the resilience rules shared by the gateway and the sidecar:
 * circuit breaking (max requests, max pending per endpoint), endpoint choice, per-try and total timeouts,
 * retries only when safe and only inside the cluster's retry budget (jittered backoff, preferring another
 * endpoint), passive outlier detection, and the response head handed to the caller exactly once —
 * a retryable failure's response is drained, never shown to the client.
 */
import type { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import type { RetryPlan } from "../contract/schema.ts";
import type { Endpoint, UpstreamCluster } from "./cluster.ts";
import type { CancelToken } from "./h1pool.ts";
import { BoundedDiscard } from "./discard.ts";
import { backoffMs, retryable, type AttemptFailure } from "./resilience.ts";
import { SEND_TIMEOUT_CODE } from "../net/send-timeout.ts";

export interface ForwardRequest {
  readonly method: string;
  /** Path and query sent upstream. */
  readonly path: string;
  readonly headers: Record<string, string | string[]>;
  /** A Buffer (replayable on retry), a stream (sent once, never retried after it starts), or null. */
  readonly body: Buffer | NodeJS.ReadableStream | null;
  readonly timeoutMs: number;
  /**
   * `timeoutMs` bounds the whole exchange, a streaming response included — a gRPC call's deadline
   * (gRPC over HTTP/2: the deadline is the call's, not a silence's). Otherwise, once the head is in, it
   * bounds only the silences of the body (a streaming body that keeps sending is not cut).
   */
  readonly wholeCall?: boolean;
  /**
   * How long the response may stay blocked on the caller's target (a write refused, no 'drain' since)
   * before the exchange fails with "send_timeout": the client stopped reading (nginx's send_timeout).
   * 0 or absent: none.
   */
  readonly sendTimeoutMs?: number;
  readonly retry: RetryPlan;
  /** Ring-hash key (the client address). */
  readonly hashKey: string;
  /**
   * Aborted when the client goes away: the upstream request is cancelled, and the failure it causes is
   * the client's — never counted against the upstream (outlier detection) and never retried.
   */
  readonly cancel?: CancelToken;
  /**
   * Response headers the route removes anyway (transform.response.headers.remove): an HTTP/1 pool leaves
   * them out while parsing. The caller still removes them (HTTP/2 answers keep them).
   */
  readonly dropResponseHeaders?: ReadonlySet<string> | null;
}

export interface ForwardObserver {
  /** Called once per attempt with its outcome ("success", "5xx", "connect_failure", "timeout", "reset", …). */
  attempt(cluster: string, outcome: string): void;
  retry(cluster: string, reason: string): void;
  budgetExhausted(cluster: string): void;
  overflow(cluster: string): void;
}

export type ForwardOutcome =
  | "connect_failure"
  | "timeout"
  | "reset"
  | "no_endpoint"
  | "overflow"
  | "client_aborted"
  | "body_too_large"
  | "send_timeout";

export type ForwardResult =
  | { readonly kind: "ok"; readonly endpoint: Endpoint; readonly attempts: number; readonly status: number }
  | {
      readonly kind: "error";
      readonly outcome: ForwardOutcome;
      /** True when the response head already went to the client: the caller must reset, not answer. */
      readonly headersSent: boolean;
      readonly attempts: number;
      readonly endpoint: Endpoint | null;
      readonly error: Error | null;
    };

/** Receives the response head to show the client; returns where the body goes. */
export type OnResponseHead = (
  status: number,
  headers: Record<string, string | string[] | undefined>,
  /** The body ends with the connection: its completeness cannot be verified (see H1Factory). */
  closeDelimited: boolean,
  /**
   * HTTP/2: the response is one HEADERS frame with END_STREAM (gRPC "trailers-only"); an HTTP/2
   * downstream should answer the same way (respondTrailersOnly) — gRPC clients need it.
   */
  trailersOnly: boolean,
) => Writable;

/**
 * At most this much of a retryable response's body is drained (the connection then stays reusable);
 * past it the exchange is given up — connection closed, HTTP/2 stream reset — as Envoy resets the
 * upstream stream it retries.
 */
export const DRAIN_MAX_BYTES = 64 * 1024;

function classify(
  e: Error & { code?: string },
): AttemptFailure | "client_aborted" | "body_too_large" | "send_timeout" {
  switch (e.code) {
    case "ECONNREFUSED":
    case "EHOSTUNREACH":
    case "ENETUNREACH":
    case "ENOTFOUND":
    case "EAI_AGAIN":
    case "E_RT_EGRESS_ADDRESS_REFUSED":
    case "UND_ERR_CONNECT_TIMEOUT":
      return { kind: "connect-failure" };
    case "REFUSED_STREAM":
      return { kind: "refused-stream" };
    case "UND_ERR_HEADERS_TIMEOUT":
    case "UND_ERR_BODY_TIMEOUT":
    case "UND_ERR_QUEUE_TIMEOUT":
      return { kind: "timeout" };
    case "E_BODY_TOO_LARGE":
      return "body_too_large";
    // The client stopped reading the response: its failure, never the upstream's.
    case SEND_TIMEOUT_CODE:
      return "send_timeout";
    case "UND_ERR_REQ_CONTENT_LENGTH_MISMATCH":
    case "UND_ERR_ABORTED":
    case "ECONNABORTED":
      return "client_aborted";
    default:
      // A failed TLS handshake (mTLS origination: the pool writes nothing before it completes).
      return isHandshakeFailure(e.code) ? { kind: "connect-failure" } : { kind: "reset" };
  }
}

/**
 * The codes Node gives a certificate chain OpenSSL did not verify (X509_V_ERR_* without the prefix, as
 * node's crypto_common.cc names them): the TLS the sidecar originates to an external destination fails
 * with these before a byte is sent.
 */
const CERTIFICATE_VERIFY_CODES: ReadonlySet<string> = new Set([
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_CRL",
  "UNABLE_TO_DECRYPT_CERT_SIGNATURE",
  "UNABLE_TO_DECRYPT_CRL_SIGNATURE",
  "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY",
  "CERT_SIGNATURE_FAILURE",
  "CRL_SIGNATURE_FAILURE",
  "CERT_NOT_YET_VALID",
  "CERT_HAS_EXPIRED",
  "CRL_NOT_YET_VALID",
  "CRL_HAS_EXPIRED",
  "ERROR_IN_CERT_NOT_BEFORE_FIELD",
  "ERROR_IN_CERT_NOT_AFTER_FIELD",
  "ERROR_IN_CRL_LAST_UPDATE_FIELD",
  "ERROR_IN_CRL_NEXT_UPDATE_FIELD",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "CERT_CHAIN_TOO_LONG",
  "CERT_REVOKED",
  "INVALID_CA",
  "PATH_LENGTH_EXCEEDED",
  "INVALID_PURPOSE",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "HOSTNAME_MISMATCH",
]);

/** Codes of a TLS connection that failed before it was established (OpenSSL, Node, the SVID verifier). */
function isHandshakeFailure(code: string | undefined): boolean {
  return (
    code !== undefined &&
    (code.startsWith("ERR_SSL_") ||
      code.startsWith("ERR_TLS_") ||
      code.startsWith("E_RT_PKI_") ||
      code === "E_RT_IDENTITY_UNAVAILABLE" ||
      CERTIFICATE_VERIFY_CODES.has(code))
  );
}

const outcomeOf = (f: AttemptFailure): string =>
  f.kind === "status" ? `${Math.floor(f.status / 100)}xx` : f.kind.replaceAll("-", "_");

export async function forward(
  cluster: UpstreamCluster,
  req: ForwardRequest,
  onHead: OnResponseHead,
  observer: ForwardObserver,
  now: () => number = Date.now,
): Promise<ForwardResult> {
  const name = cluster.config.name;
  const cb = cluster.config.circuitBreaker;
  if (cluster.active >= cb.maxRequests) {
    observer.overflow(name);
    return {
      kind: "error",
      outcome: "overflow",
      headersSent: false,
      attempts: 0,
      endpoint: null,
      error: null,
    };
  }
  cluster.active++;
  const start = now();
  const deadline = start + req.timeoutMs;
  cluster.budget.deposit(start);
  const plan = req.retry;
  const replayable = req.body === null || Buffer.isBuffer(req.body);
  // The pool's cancel hook for the attempt in progress: the client's token, or one of forward's own, so
  // that a drained body can be given up (see DRAIN_MAX_BYTES).
  const cancel: CancelToken = req.cancel ?? { aborted: false, onabort: null };
  let attempts = 0;
  let previous: Endpoint | undefined;
  let lastFailure: AttemptFailure | null = null;
  /** The error of the last failed attempt, reported when no endpoint is left to retry on. */
  let lastError: Error | null = null;

  /** Another attempt is allowed: plan, safety, time left, and (last, since it spends) the budget. */
  const mayRetry = (f: AttemptFailure): boolean => {
    if (attempts > plan.attempts) return false;
    if (!retryable(f, plan, req.method, replayable || untouched(req.body))) return false;
    if (deadline - now() <= 0) return false;
    if (!cluster.budget.tryWithdraw(now())) {
      observer.budgetExhausted(name);
      return false;
    }
    return true;
  };

  try {
    for (;;) {
      // The client went away (before the first attempt, e.g. while its request was authenticated or its
      // body read, or between attempts): nothing is sent on its behalf.
      if (req.cancel?.aborted)
        return {
          kind: "error",
          outcome: "client_aborted",
          headersSent: false,
          attempts,
          endpoint: null,
          error: null,
        };
      const endpoint = cluster.pick(req.hashKey, now(), previous);
      if (!endpoint) {
        observer.attempt(name, "no_endpoint");
        return {
          kind: "error",
          outcome: lastFailure ? outcomeFor(lastFailure) : "no_endpoint",
          headersSent: false,
          attempts,
          endpoint: null,
          error: lastFailure ? lastError : null,
        };
      }
      // Requests beyond the endpoint's connections wait in its queue: refuse once that queue is full.
      if (endpoint.inFlight >= cb.maxConnections + cb.maxPendingRequests) {
        observer.overflow(name);
        return { kind: "error", outcome: "overflow", headersSent: false, attempts, endpoint, error: null };
      }
      const remaining = deadline - now();
      if (remaining <= 0) {
        return { kind: "error", outcome: "timeout", headersSent: false, attempts, endpoint, error: null };
      }
      attempts++;
      const perTry =
        plan.attempts > 0 && plan.perTryTimeoutMs > 0 ? Math.min(plan.perTryTimeoutMs, remaining) : remaining;
      let discarded: AttemptFailure | null = null;
      /** The discarded body was given up: past DRAIN_MAX_BYTES, or still coming at the deadline. */
      let drainCut = false;
      let headSent = false;
      let status = 0;
      endpoint.inFlight++;
      try {
        await endpoint.pool.stream(
          {
            method: req.method,
            path: req.path,
            headers: req.headers,
            body: req.body,
            headersTimeout: perTry,
            totalTimeout: remaining,
            bodyTimeout: Math.max(1, deadline - now()),
            callTimeout: req.wholeCall === true ? Math.max(1, deadline - now()) : 0,
            sendTimeout: req.sendTimeoutMs ?? 0,
            cancel,
            dropResponseHeaders: req.dropResponseHeaders ?? null,
          },
          ({ statusCode, headers, closeDelimited, endStream }) => {
            status = statusCode;
            const failure: AttemptFailure = { kind: "status", status: statusCode };
            if (statusCode >= 500 || statusCode === 429) {
              if (mayRetry(failure)) {
                discarded = failure;
                // Drained within the deadline and DRAIN_MAX_BYTES; a silence is the body timeout's.
                return new BoundedDiscard(DRAIN_MAX_BYTES, deadline, now, () => {
                  drainCut = true;
                  cancel.onabort?.();
                });
              }
            }
            headSent = true;
            return onHead(statusCode, headers, closeDelimited === true, endStream === true);
          },
        );
        cluster.record(endpoint, status >= 500, now());
        observer.attempt(name, status >= 500 ? "5xx" : "success");
        if (discarded === null) return { kind: "ok", endpoint, attempts, status };
        lastFailure = discarded;
        lastError = null;
        observer.retry(name, outcomeOf(discarded));
      } catch (err) {
        const e = err as Error & { code?: string };
        // The 5xx's body, given up while drained, failed the attempt as the 5xx it was: its retry goes ahead.
        const cut: AttemptFailure | null = drainCut && !req.cancel?.aborted ? discarded : null;
        if (cut !== null) {
          cluster.record(endpoint, true, now());
          observer.attempt(name, outcomeOf(cut));
          lastFailure = cut;
          lastError = null;
          observer.retry(name, outcomeOf(cut));
        } else {
          // A send timeout destroys the client's side first: that is not the client leaving on its own.
          const kind = classify(e);
          const failure = kind !== "send_timeout" && req.cancel?.aborted ? "client_aborted" : kind;
          if (failure === "client_aborted" || failure === "body_too_large" || failure === "send_timeout") {
            observer.attempt(name, failure);
            return { kind: "error", outcome: failure, headersSent: headSent, attempts, endpoint, error: e };
          }
          // A wait for one of the pool's own connections (every one busy) says nothing of the endpoint's
          // health: only what the endpoint did counts towards its ejection.
          if (e.code !== "UND_ERR_QUEUE_TIMEOUT") cluster.record(endpoint, true, now());
          observer.attempt(name, outcomeOf(failure));
          // A retry already granted (the 5xx whose body was being drained) goes ahead; otherwise ask.
          if (headSent || (discarded === null && !mayRetry(failure))) {
            return {
              kind: "error",
              outcome: outcomeFor(failure),
              headersSent: headSent,
              attempts,
              endpoint,
              error: e,
            };
          }
          lastFailure = discarded ?? failure;
          lastError = e;
          observer.retry(name, outcomeOf(lastFailure));
        }
      } finally {
        endpoint.inFlight--;
      }
      previous = endpoint;
      const wait = Math.min(
        backoffMs(attempts - 1, plan.backoff, Math.random()),
        Math.max(0, deadline - now()),
      );
      if (wait > 0) await sleep(wait);
    }
  } finally {
    cluster.active--;
  }
}

/**
 * A streamed body that no attempt has read from (its connection failed before a byte was taken, e.g. a
 * refused connection or a failed mTLS handshake) can still be sent whole: a gRPC call, whose body is a
 * stream of unknown length, is then retried on connect failures like a buffered request.
 */
function untouched(body: Buffer | NodeJS.ReadableStream | null): boolean {
  if (body === null || Buffer.isBuffer(body)) return false;
  const r = body as NodeJS.ReadableStream & { readableDidRead?: boolean; readableFlowing?: boolean | null };
  return r.readableDidRead === false && r.readableFlowing !== true;
}

function outcomeFor(f: AttemptFailure): ForwardOutcome {
  if (f.kind === "connect-failure" || f.kind === "refused-stream") return "connect_failure";
  if (f.kind === "timeout") return "timeout";
  // A 5xx discarded for a retry that then found no endpoint: what is left to say is the cluster's state.
  if (f.kind === "status") return "no_endpoint";
  return "reset";
}
