/**
 * A principal's claims are shared by every request of that principal (the verified-token cache keeps one
 * frozen principal per token), so no transform may change them: a body template that places an object
 * claim whole (`${principal.claims.org}`) and an op that then writes into it (`org.role`) rewrote the
 * cached claim, and a route whose `claims` condition reads it (`org.role: admin`) admitted the token from
 * then on. Real gateway, real JWKS server, real upstream.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { claims, ISS } from "../auth/corpus.ts";
import { makeKey, signToken, startJwksServer, type JwksServer, type TestKey } from "../auth/support.ts";
import {
  gatewayConfig,
  request,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";

const RATE = { rateLimit: { requests: 100000, per: "1s" } };
let key: TestKey;
let jwks: JwksServer;
let app: Upstream;
let gw: TestGateway;

beforeAll(async () => {
  key = makeKey("k1");
  jwks = await startJwksServer([key.jwk]);
  app = await startUpstream();
  gw = await startTestGateway(
    gatewayConfig(
      [
        {
          name: "profile",
          match: { path: "/profile", methods: ["POST"] },
          to: "app",
          auth: { jwt: "main" },
          transform: {
            request: {
              body: {
                template: {
                  org: "${principal.claims.org}",
                  "org.role": "${request.header.x-role}",
                  roles: "${principal.claims.roles}",
                },
              },
            },
          },
          ...RATE,
        },
        {
          name: "admin",
          match: { path: "/admin" },
          to: "app",
          auth: { jwt: "main", claims: { "org.role": "admin" } },
          ...RATE,
        },
      ],
      { app },
      { jwt: { main: { issuer: ISS, audiences: ["api"], jwksUri: jwks.url, algorithms: ["ES256"] } } },
    ),
  );
});

afterAll(async () => {
  await gw.drain();
  await app.close();
  await jwks.close();
});

describe("a principal's claims through body templates", () => {
  it("a_template_writing_into_an_object_claim_changes_the_body_not_the_cached_claims", async () => {
    const token = await signToken(key, claims({ org: { id: "acme", role: "member" }, roles: ["reader"] }));
    const auth = { authorization: `Bearer ${token}` };
    expect((await request(`${gw.url}/admin`, { headers: auth })).status).toBe(403);
    const p = await request(`${gw.url}/profile`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json", "x-role": "admin" },
      body: "{}",
    });
    expect(p.status).toBe(200);
    // The request's own body got the template's values, the object written into.
    expect(JSON.parse(app.received.at(-1)!.body)).toEqual({
      org: { id: "acme", role: "admin" },
      roles: ["reader"],
    });
    // The cached principal still says what the token says: the claims condition still refuses it.
    expect((await request(`${gw.url}/admin`, { headers: auth })).status).toBe(403);
    const again = await request(`${gw.url}/profile`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json", "x-role": "owner" },
      body: "{}",
    });
    expect(again.status).toBe(200);
    expect(JSON.parse(app.received.at(-1)!.body).org).toEqual({ id: "acme", role: "owner" });
  });
});
