/**
 * Serving stale responses (RFC 5861) through the real gateway (translated spec → RuntimeConfig →
 * startGateway) in front of a real upstream on 127.0.0.1: stale-while-revalidate answers at once and
 * refreshes the entry with one background request per key; stale-if-error answers an upstream 5xx or a
 * reset with the stored response within its window, and never past it nor for a response that forbids it;
 * the route's `staleIfError` / `staleWhileRevalidate` fill in when the origin names no window.
 *
 * Stored responses are made stale on arrival by a `Date` in the past (apparent age, RFC 9111 §4.2.3), so
 * no test waits for an entry to expire.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  gatewayConfig,
  request,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";

const PUBLIC = { public: true, rateLimit: { requests: 100000, per: "1s" } };

/** What the upstream answers for a path: its Cache-Control, how old its Date says it is, and failures. */
interface Behaviour {
  cacheControl?: string;
  /** Seconds subtracted from Date (the response's apparent age). */
  ageSeconds: number;
  etag?: boolean;
  /** Answer a matching If-None-Match with 304 and this Cache-Control (fresh Date). */
  notModified?: string;
  fail?: "503" | "500" | "reset" | null;
  delayMs?: number;
}

const behaviour = new Map<string, Behaviour>();
const versions = new Map<string, number>();
let app: Upstream;
let gw: TestGateway;

const count = (url: string) => app.received.filter((r) => r.url === url).length;
/** How many 200 and 304 answers the upstream has finished sending, per URL. */
const sent = new Map<string, number>();

function answer(req: IncomingMessage, res: ServerResponse): void {
  const url = req.url ?? "/";
  const b = behaviour.get(url) ?? { ageSeconds: 0 };
  if (b.fail === "reset") return void req.socket.destroy();
  if (b.fail) {
    const out = JSON.stringify({ error: "down" });
    res.writeHead(Number(b.fail), { "content-type": "application/json", "content-length": out.length });
    return void res.end(out);
  }
  const current = versions.get(url) ?? 0;
  if (b.notModified && b.etag && req.headers["if-none-match"] === `"v${current}"`) {
    res.on("finish", () => sent.set(url, (sent.get(url) ?? 0) + 1));
    res.writeHead(304, {
      etag: `"v${current}"`,
      "cache-control": b.notModified,
      date: new Date().toUTCString(),
    });
    return void res.end();
  }
  const version = current + 1;
  versions.set(url, version);
  const out = JSON.stringify({ path: url, version });
  const headers: Record<string, string | number> = {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(out),
    date: new Date(Date.now() - b.ageSeconds * 1000).toUTCString(),
  };
  if (b.cacheControl) headers["cache-control"] = b.cacheControl;
  if (b.etag) headers.etag = `"v${version}"`;
  setTimeout(() => {
    res.on("finish", () => sent.set(url, (sent.get(url) ?? 0) + 1));
    res.writeHead(200, headers);
    res.end(out);
  }, b.delayMs ?? 0);
}

const version = (body: string) => (JSON.parse(body) as { version: number }).version;

/** Waits until the upstream has received `n` requests for `url` (a background revalidation is async). */
async function untilReceived(url: string, n: number): Promise<void> {
  for (let i = 0; i < 200 && count(url) < n; i++) await sleep(10);
  expect(count(url)).toBe(n);
}

async function metric(result: string, route: string): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const m = new RegExp(
    `meshgate_cache_requests_total\\{proxy="gateway",route="${route}",result="${result}"\\} (\\d+)`,
  ).exec(text);
  return m ? Number(m[1]) : 0;
}

beforeAll(async () => {
  app = await startUpstream((req, res) => answer(req, res));
  gw = await startTestGateway(
    gatewayConfig(
      [
        { name: "origin", match: { path: "/o/**" }, to: "app", cache: { ttl: "30s" }, ...PUBLIC },
        {
          name: "defaults",
          match: { path: "/d/**" },
          to: "app",
          cache: { ttl: "1s", staleIfError: "1m", staleWhileRevalidate: "1m" },
          ...PUBLIC,
        },
      ],
      { app },
    ),
  );
});

afterAll(async () => {
  await gw.drain();
  await app.close();
});

describe("stale-while-revalidate (RFC 5861 §3)", () => {
  it("serves_a_stale_entry_at_once_and_refreshes_it_with_one_background_request_for_a_burst", async () => {
    const url = "/o/swr";
    behaviour.set(url, { cacheControl: "max-age=1, stale-while-revalidate=60", ageSeconds: 5, delayMs: 100 });
    const first = await request(`${gw.url}${url}`);
    expect(first.headers["cache-status"]).toBe("meshgate; fwd=miss; fwd-status=200; stored");
    const before = await metric("stale_while_revalidate", "origin");
    const burst = await Promise.all(Array.from({ length: 10 }, () => request(`${gw.url}${url}`)));
    for (const r of burst) {
      expect(r.status).toBe(200);
      expect(version(r.body)).toBe(1);
      expect(r.headers["cache-status"]).toMatch(/^meshgate; hit; ttl=-\d+; detail=stale-while-revalidate$/);
      expect(Number(r.headers.age)).toBeGreaterThanOrEqual(4);
    }
    // One background request for the whole burst, answered 100 ms after the burst was served: wait until
    // the answer is sent (the upstream's timer can fire late on a loaded machine), then for the gateway
    // to store it.
    await untilReceived(url, 2);
    for (let i = 0; i < 500 && (sent.get(url) ?? 0) < 2; i++) await sleep(10);
    await sleep(150);
    expect(count(url)).toBe(2);
    const after = await request(`${gw.url}${url}`);
    expect(version(after.body)).toBe(2);
    expect(await metric("stale_while_revalidate", "origin")).toBe(before + 11);
    const access = gw.logs.filter((l) => l.event === "access" && l.path === url);
    expect(access.at(-1)!.outcome).toBe("cache_stale_while_revalidate");
  });

  it("revalidates_in_the_background_with_the_entry_validator_and_a_304_freshens_it", async () => {
    const url = "/o/swr-etag";
    behaviour.set(url, {
      cacheControl: "max-age=1, stale-while-revalidate=60",
      ageSeconds: 5,
      etag: true,
      notModified: "max-age=60",
    });
    await request(`${gw.url}${url}`);
    const stale = await request(`${gw.url}${url}`);
    expect(stale.headers["cache-status"]).toContain("detail=stale-while-revalidate");
    await untilReceived(url, 2);
    expect(app.received.filter((r) => r.url === url)[1]!.headers["if-none-match"]).toBe('"v1"');
    // Once the 304 is sent, the gateway freshens the entry.
    for (let i = 0; i < 500 && (sent.get(url) ?? 0) < 2; i++) await sleep(10);
    await sleep(150);
    const fresh = await request(`${gw.url}${url}`);
    expect(version(fresh.body)).toBe(1);
    // Freshened by the 304's max-age=60 (the stored entry said max-age=1): a busy machine may take a
    // second or two between the 304 and this request, so the claim is "about a minute", not an exact count.
    const ttl = Number(/^meshgate; hit; ttl=(\d+)$/.exec(String(fresh.headers["cache-status"]))?.[1]);
    expect(ttl).toBeGreaterThanOrEqual(50);
    expect(ttl).toBeLessThanOrEqual(60);
    expect(count(url)).toBe(2);
  });

  it("forwards_a_request_that_says_no_cache_instead_of_serving_it_stale", async () => {
    const url = "/o/swr-no-cache";
    behaviour.set(url, { cacheControl: "max-age=1, stale-while-revalidate=60", ageSeconds: 5 });
    await request(`${gw.url}${url}`);
    const r = await request(`${gw.url}${url}`, { headers: { "cache-control": "no-cache" } });
    expect(version(r.body)).toBe(2);
    expect(r.headers["cache-status"]).toBe("meshgate; fwd=stale; fwd-status=200; stored");
  });

  it("forwards_when_the_entry_is_stale_beyond_the_window", async () => {
    const url = "/o/swr-past";
    // With a validator the entry is kept past its windows (to be revalidated), so it is found and refused.
    behaviour.set(url, { cacheControl: "max-age=1, stale-while-revalidate=2", ageSeconds: 10, etag: true });
    await request(`${gw.url}${url}`);
    const r = await request(`${gw.url}${url}`);
    expect(version(r.body)).toBe(2);
    expect(r.headers["cache-status"]).toMatch(/^meshgate; fwd=stale; fwd-status=200/);
  });

  it("uses_the_route_default_window_when_the_response_names_none", async () => {
    const url = "/d/swr";
    behaviour.set(url, { ageSeconds: 5 });
    await request(`${gw.url}${url}`);
    const r = await request(`${gw.url}${url}`);
    expect(version(r.body)).toBe(1);
    expect(r.headers["cache-status"]).toContain("detail=stale-while-revalidate");
    await untilReceived(url, 2);
  });
});

describe("stale-if-error (RFC 5861 §4)", () => {
  const cases: [string, Behaviour["fail"]][] = [
    ["an_upstream_503", "503"],
    ["an_upstream_500", "500"],
    ["an_upstream_reset", "reset"],
  ];
  it.each(cases)("answers_%s_with_the_stored_response_within_its_window", async (_name, fail) => {
    const url = `/o/sie-${fail}`;
    behaviour.set(url, { cacheControl: "max-age=1, stale-if-error=60", ageSeconds: 5 });
    await request(`${gw.url}${url}`);
    behaviour.get(url)!.fail = fail;
    const before = await metric("stale_if_error", "origin");
    const r = await request(`${gw.url}${url}`);
    expect(r.status).toBe(200);
    expect(version(r.body)).toBe(1);
    const fwdStatus = fail === "reset" ? "" : `; fwd-status=${fail}`;
    expect(r.headers["cache-status"]).toMatch(
      new RegExp(`^meshgate; fwd=stale${fwdStatus}; ttl=-\\d+; detail=stale-if-error$`),
    );
    expect(r.headers["x-meshgate-error"]).toBeUndefined();
    expect(await metric("stale_if_error", "origin")).toBe(before + 1);
    const access = gw.logs.filter((l) => l.event === "access" && l.path === url);
    expect(access.at(-1)!.outcome).toBe("cache_stale_if_error");
    expect(access.at(-1)!.status).toBe(200);
    // The entry stays: a second failure is answered the same way.
    expect(version((await request(`${gw.url}${url}`)).body)).toBe(1);
  });

  it("passes_the_error_through_when_the_entry_is_stale_beyond_the_window", async () => {
    const url = "/o/sie-past";
    behaviour.set(url, { cacheControl: "max-age=1, stale-if-error=2", ageSeconds: 10, etag: true });
    await request(`${gw.url}${url}`);
    behaviour.get(url)!.fail = "503";
    expect((await request(`${gw.url}${url}`)).status).toBe(503);
    behaviour.get(url)!.fail = "reset";
    const r = await request(`${gw.url}${url}`);
    expect(r.status).toBe(502);
    expect(r.headers["x-meshgate-error"]).toBe("upstream_reset");
  });

  it("passes_the_error_through_when_the_response_says_must_revalidate", async () => {
    const url = "/o/sie-must-revalidate";
    behaviour.set(url, {
      cacheControl: "max-age=1, must-revalidate, stale-if-error=60",
      ageSeconds: 5,
      etag: true,
    });
    await request(`${gw.url}${url}`);
    behaviour.get(url)!.fail = "503";
    expect((await request(`${gw.url}${url}`)).status).toBe(503);
  });

  it("serves_stale_when_the_request_itself_says_stale_if_error", async () => {
    const url = "/o/sie-request";
    behaviour.set(url, { cacheControl: "max-age=1", ageSeconds: 5, etag: true });
    await request(`${gw.url}${url}`);
    behaviour.get(url)!.fail = "503";
    expect((await request(`${gw.url}${url}`)).status).toBe(503);
    const r = await request(`${gw.url}${url}`, { headers: { "cache-control": "stale-if-error=60" } });
    expect(r.status).toBe(200);
    expect(r.headers["cache-status"]).toContain("detail=stale-if-error");
  });

  it("uses_the_route_default_window_when_the_response_names_none", async () => {
    const url = "/d/sie";
    behaviour.set(url, { ageSeconds: 5, etag: true });
    await request(`${gw.url}${url}`, { headers: { "cache-control": "no-cache" } });
    behaviour.get(url)!.fail = "reset";
    // no-cache forces the forward; the reset is answered from the stale entry (RFC 5861: regardless of
    // other freshness information).
    const r = await request(`${gw.url}${url}`, { headers: { "cache-control": "no-cache" } });
    expect(r.status).toBe(200);
    expect(r.headers["cache-status"]).toMatch(/^meshgate; fwd=stale; ttl=-\d+; detail=stale-if-error$/);
  });
});
