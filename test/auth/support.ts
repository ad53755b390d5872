/**
 * Shared parts of the authentication tests: signing keys, a real JWKS server on 127.0.0.1 that counts its
 * fetches, token builders (jose for honest tokens, raw JOSE text + node:crypto signatures for forged ones),
 * request facts, and a pino logger whose every line is captured.
 */
import { createHmac, generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { SignJWT } from "jose";
import pino, { type Logger } from "pino";
import type { AuthRequestFacts, TlsPeer } from "../../runtime/auth/index.ts";

export interface TestKey {
  readonly kid: string;
  readonly alg: "ES256" | "RS256";
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** The public JWK as a JWKS publishes it. */
  readonly jwk: Record<string, unknown>;
  /** The public key in PEM (what an HS256 confusion attack uses as the HMAC secret). */
  readonly publicPem: string;
}

export function makeKey(kid: string, alg: "ES256" | "RS256" = "ES256"): TestKey {
  const { privateKey, publicKey } =
    alg === "ES256"
      ? generateKeyPairSync("ec", { namedCurve: "P-256" })
      : generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = { ...publicKey.export({ format: "jwk" }), kid, alg, use: "sig" };
  return {
    kid,
    alg,
    privateKey,
    publicKey,
    jwk,
    publicPem: publicKey.export({ format: "pem", type: "spki" }).toString(),
  };
}

export const nowS = (): number => Math.floor(Date.now() / 1000);

/** An honest token signed with jose. */
export function signToken(
  key: TestKey,
  payload: Record<string, unknown>,
  header: Record<string, unknown> = {},
): Promise<string> {
  return new SignJWT(payload)
    .setProtectedHeader({ alg: key.alg, kid: key.kid, ...header })
    .sign(key.privateKey);
}

const b64 = (s: string | Buffer) => Buffer.from(s).toString("base64url");

/** A token from raw JOSE header and payload text (duplicate members survive), signed by `signer`. */
export function rawToken(
  headerText: string,
  payloadText: string,
  signer: (input: Buffer) => Buffer | string,
): string {
  const input = `${b64(headerText)}.${b64(payloadText)}`;
  const sig = signer(Buffer.from(input));
  return `${input}.${typeof sig === "string" ? sig : b64(sig)}`;
}

/** A JWS signature with a key (ES256 in the JOSE r‖s form). */
export const signWith = (key: TestKey) => (input: Buffer) =>
  key.alg === "ES256"
    ? sign("sha256", input, { key: key.privateKey, dsaEncoding: "ieee-p1363" })
    : sign("sha256", input, key.privateKey);

/** An HMAC-SHA256 "signature" with an arbitrary secret (the alg-confusion attack). */
export const hmacWith = (secret: string) => (input: Buffer) =>
  createHmac("sha256", secret).update(input).digest();

export interface JwksServer {
  readonly url: string;
  /** Requests served. */
  fetches: number;
  keys: Record<string, unknown>[];
  cacheControl: string | null;
  /** Answer with this status instead of the keys. */
  status: number;
  /** Delay before answering (ms). */
  delayMs: number;
  /** When set, only requests with this `Authorization` header get the keys (others 401). */
  requireAuthorization: string | null;
  /** The request target and Authorization header of each request served. */
  readonly requests: { target: string; authorization: string | undefined }[];
  close(): Promise<void>;
}

/** A JWKS endpoint on 127.0.0.1 whose key set, Cache-Control and status the test changes at will. */
export async function startJwksServer(keys: Record<string, unknown>[]): Promise<JwksServer> {
  const state = {
    fetches: 0,
    keys,
    cacheControl: null as string | null,
    status: 200,
    delayMs: 0,
    requireAuthorization: null as string | null,
    requests: [] as { target: string; authorization: string | undefined }[],
  };
  const server = http.createServer((req, res) => {
    state.fetches++;
    state.requests.push({ target: req.url ?? "", authorization: req.headers.authorization });
    setTimeout(() => {
      const refused =
        state.requireAuthorization !== null && req.headers.authorization !== state.requireAuthorization;
      if (state.status !== 200 || refused) {
        res.writeHead(refused ? 401 : state.status);
        res.end();
        return;
      }
      const body = JSON.stringify({ keys: state.keys });
      res.writeHead(200, {
        "content-type": "application/jwk-set+json",
        ...(state.cacheControl ? { "cache-control": state.cacheControl } : {}),
      });
      res.end(body);
    }, state.delayMs);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
  return Object.assign(state, {
    url,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  });
}

/** Request facts for the Authenticator, as the gateway would build them. */
export function facts(
  o: {
    headers?: Record<string, string | string[]>;
    path?: string;
    query?: string;
    method?: string;
    scheme?: "http" | "https";
    host?: string;
    authority?: string;
    clientIp?: string;
    viaTrustedProxy?: boolean;
    tls?: TlsPeer | null;
  } = {},
): AuthRequestFacts {
  const headers: Record<string, string> = {};
  const rawHeaders: string[] = [];
  for (const [k, v] of Object.entries(o.headers ?? {})) {
    for (const one of Array.isArray(v) ? v : [v]) {
      rawHeaders.push(k, one);
      const lk = k.toLowerCase();
      headers[lk] = headers[lk] === undefined ? one : `${headers[lk]}, ${one}`;
    }
  }
  return {
    method: o.method ?? "GET",
    path: o.path ?? "/",
    query: o.query ?? "",
    host: o.host ?? "127.0.0.1",
    authority: o.authority ?? o.host ?? "127.0.0.1",
    scheme: o.scheme ?? "http",
    clientIp: o.clientIp ?? "127.0.0.1",
    ...(o.viaTrustedProxy !== undefined ? { viaTrustedProxy: o.viaTrustedProxy } : {}),
    header: (n) => headers[n],
    rawHeaders,
    tls: o.tls ?? null,
  };
}

/** A pino logger whose output is kept verbatim. */
export function capturedLogger(): {
  logger: Logger;
  text: () => string;
  lines: () => Record<string, unknown>[];
} {
  let raw = "";
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      raw += chunk.toString();
      cb();
    },
  });
  return {
    logger: pino({ level: "trace" }, sink),
    text: () => raw,
    lines: () =>
      raw
        .split("\n")
        .filter((l) => l.trim())
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

/** An observer that counts what the gateway would count. */
export function countingObserver() {
  const authn = new Map<string, number>();
  const denied = new Map<string, number>();
  const jwks = new Map<string, number>();
  const inc = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
  return {
    authn,
    denied,
    jwks,
    observer: {
      authn: (mechanism: string, result: string) => inc(authn, `${mechanism}:${result}`),
      authzDenied: (route: string, reason: string) => inc(denied, `${route}:${reason}`),
      jwksFetch: (provider: string, outcome: string) => inc(jwks, `${provider}:${outcome}`),
    },
  };
}
