/**
 * A real, standards-compliant OpenID Connect issuer for the tests: oidc-provider (panva) on 127.0.0.1 with one
 * confidential client, PKCE required, and its development login/consent pages — plus a "browser" that walks
 * those pages with plain HTTP requests (a cookie jar, redirects followed by hand).
 */
import { generateKeyPairSync } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import Provider from "oidc-provider";

export interface Idp {
  readonly issuer: string;
  /** Token endpoint requests seen (code exchanges). */
  tokenRequests: number;
  close(): Promise<void>;
}

export async function startIdp(client: {
  clientId: string;
  secret: string;
  redirectUris: string[];
}): Promise<Idp> {
  const server = http.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: client.clientId,
        client_secret: client.secret,
        redirect_uris: client.redirectUris,
        grant_types: ["authorization_code"],
        response_types: ["code"],
        token_endpoint_auth_method: "client_secret_basic",
      },
    ],
    pkce: { required: () => true },
    conformIdTokenClaims: false,
    claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name"] },
    findAccount: async (_ctx: unknown, id: string) => ({
      accountId: id,
      claims: async () => ({ sub: id, email: `${id}@example.com`, email_verified: true, name: `User ${id}` }),
    }),
    cookies: { keys: ["test-cookie-key-0123456789abcdef"] },
    ttl: {
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
      AccessToken: 600,
      IdToken: 600,
      AuthorizationCode: 60,
    },
    jwks: { keys: [{ ...privateKey.export({ format: "jwk" }), kid: "idp-rsa-1", alg: "RS256", use: "sig" }] },
    features: { devInteractions: { enabled: true } },
  });
  const state = { tokenRequests: 0 };
  const callback = provider.callback();
  server.on("request", (req, res) => {
    if (req.url?.startsWith("/token")) state.tokenRequests++;
    callback(req, res);
  });
  return Object.assign(state, {
    issuer,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  });
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP request with full control (no redirects followed). */
export function fetchRaw(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = http.request(
      {
        hostname: u.hostname,
        port: u.port,
        path: u.pathname + u.search,
        method: opts.method ?? "GET",
        headers: opts.headers,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

/** A minimal cookie jar: name → value, for one site (paths ignored, deletions honoured). */
export class Jar {
  readonly cookies = new Map<string, string>();
  take(setCookie: string | string[] | undefined): void {
    for (const c of Array.isArray(setCookie) ? setCookie : setCookie ? [setCookie] : []) {
      const [pair, ...attrs] = c.split(";");
      const eq = pair!.indexOf("=");
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      const expired = attrs.some((a) => /^\s*max-age=0\s*$/i.test(a)) || value === "";
      if (expired) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }
  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; ");
  }
}

/**
 * Logs in at the issuer as `login`: from the authorization URL the gateway redirected to, through the login
 * and consent pages, to the redirect back to the client's callback. Returns that callback URL.
 */
export async function loginAtIdp(authorizationUrl: string, login: string, jar = new Jar()): Promise<string> {
  let url = authorizationUrl;
  for (let step = 0; step < 12; step++) {
    const r = await fetchRaw(url, { headers: { cookie: jar.header() } });
    jar.take(r.headers["set-cookie"]);
    if (r.status >= 300 && r.status < 400) {
      const next = new URL(r.headers.location!, url).toString();
      if (!next.startsWith(new URL(authorizationUrl).origin)) return next; // back to the client
      url = next;
      continue;
    }
    if (r.status !== 200) throw new Error(`issuer answered ${r.status} at ${url}: ${r.body.slice(0, 300)}`);
    const action = /<form[^>]*action="([^"]+)"/.exec(r.body)?.[1];
    const prompt = /name="prompt" value="([^"]+)"/.exec(r.body)?.[1];
    if (!action || !prompt) throw new Error(`no interaction form at ${url}`);
    const form = new URLSearchParams(prompt === "login" ? { prompt, login, password: "any" } : { prompt });
    const post = await fetchRaw(new URL(action.replace(/&amp;/g, "&"), url).toString(), {
      method: "POST",
      headers: { cookie: jar.header(), "content-type": "application/x-www-form-urlencoded" },
      body: form.toString(),
    });
    jar.take(post.headers["set-cookie"]);
    if (post.status < 300 || post.status >= 400)
      throw new Error(`interaction submit answered ${post.status}`);
    url = new URL(post.headers.location!, url).toString();
  }
  throw new Error("the login did not finish within 12 steps");
}
