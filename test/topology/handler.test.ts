/**
 * The topology handler's mounting options and failure reporting, served by a real HTTP server: `root`,
 * header links (escaped; only same-server paths and http(s) URLs), a scrape target that does not answer
 * (reported down with the reason, its edges without numbers), and the scrape targets of a local plan.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { chromium, type Browser } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { loadSpecFile } from "../../components/spec/load.ts";
import type { MeshSpec } from "../../components/spec/schema.ts";
import { translate } from "../../components/translate/translate.ts";
import type { TranslateResult } from "../../components/translate/ir.ts";
import {
  createTopology,
  scrapeTargetsOf,
  type TopologyHandler,
  type TopologyOptions,
} from "../../stacks/local/topology/index.ts";
import { freePort } from "../support/gateway.ts";

let spec: MeshSpec;
let t: TranslateResult;
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  const loaded = await loadSpecFile(new URL("../../examples/shop/mesh.yaml", import.meta.url).pathname);
  if (!loaded.ok) throw new Error("shop spec invalid");
  spec = loaded.spec;
  t = translate(spec);
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function serve(
  extra: Partial<TopologyOptions> = {},
): Promise<{ url: string; topology: TopologyHandler }> {
  const topology = createTopology({ spec, infra: t.infra, runtime: t.runtime, targets: [], ...extra });
  const server = http.createServer((req, res) => {
    if (!topology(req, res)) {
      res.writeHead(404);
      res.end("admin 404");
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  cleanups.push(
    () => topology.close(),
    () => new Promise<void>((r) => server.close(() => r())),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, topology };
}

describe("mounting", () => {
  it("serves_the_page_at_the_root_and_at_topology_by_default", async () => {
    const { url } = await serve();
    for (const path of ["/", "/topology"]) {
      const r = await fetch(url + path);
      expect([r.status, (await r.text()).includes("<title>shop · meshgate topology</title>")]).toEqual([
        200,
        true,
      ]);
    }
  });

  it("leaves_the_root_to_the_admin_server_when_root_is_false", async () => {
    const { url } = await serve({ root: false });
    const r = await fetch(`${url}/`);
    expect([r.status, await r.text()]).toEqual([404, "admin 404"]);
    expect((await fetch(`${url}/topology`)).status).toBe(200);
  });

  it("shows_header_links_escaped_and_drops_other_schemes", async () => {
    const { url } = await serve({
      links: [
        { label: "processes", href: "/api/status" },
        { label: "Prometheus <9090>", href: "http://127.0.0.1:9090" },
        { label: "evil", href: "javascript:alert(1)" },
        { label: "elsewhere", href: "//evil.example/" },
      ],
    });
    const html = await (await fetch(url)).text();
    const nav = /<nav>(.*?)<\/nav>/.exec(html)![1];
    expect(nav).toBe(
      '<a href="/api/status">processes</a><a href="http://127.0.0.1:9090">Prometheus &#60;9090&#62;</a>',
    );
  });
});

describe("header link text", () => {
  // String.replace reads "$'", "$`" and "$&" in a replacement string as parts of the template: a label holding
  // one pasted a copy of the page into its own header (duplicated ids, a broken page).
  it.each([["$'"], ["$`"], ["$&"], ["$$"]])("shows_a_label_holding_%s_as_written", async (pattern) => {
    const { url } = await serve({ links: [{ label: `costs ${pattern} today`, href: "/api/status" }] });
    const html = await (await fetch(url)).text();
    const text = pattern.replace(/[&']/g, (c) => `&#${c.charCodeAt(0)};`);
    expect(/<nav>(.*?)<\/nav>/.exec(html)![1]).toBe(`<a href="/api/status">costs ${text} today</a>`);
    expect(html.match(/id="graph"/g)).toHaveLength(1);
  });
});

describe("security headers, in chromium", () => {
  // The page's one script runs by its hash: markup that got into the page anyway (a name, a label, an
  // explain answer inserted as HTML by a future change) could run no script; and no site may frame the page.
  let browser: Browser;
  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: "/usr/bin/chromium" });
  }, 30_000);
  afterAll(async () => {
    await browser?.close();
  });

  it("runs_its_own_script_but_no_injected_inline_script_or_event_handler", async () => {
    const { url } = await serve();
    const page = await browser.newPage();
    const blocked: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error" && m.text().includes("Content Security Policy")) blocked.push(m.text());
    });
    await page.goto(`${url}/topology`);
    await page.locator('g.node[data-node="orders"]').waitFor(); // the page's script drew the graph
    expect(blocked).toEqual([]);
    // Markup as an injection would add it (evaluated in the page, where the page's CSP applies to it).
    const ran = (await page.evaluate(`(async () => {
      window.injected = [];
      const script = document.createElement("script");
      script.textContent = "window.injected.push('inline script')";
      document.body.append(script);
      const div = document.createElement("div");
      div.setAttribute("onclick", "window.injected.push('event handler')");
      document.body.append(div);
      div.click();
      const img = document.createElement("img");
      img.setAttribute("onerror", "window.injected.push('onerror')");
      img.src = "data:image/png;base64,AAAA";
      document.body.append(img);
      await new Promise((r) => setTimeout(r, 200));
      return window.injected;
    })()`)) as string[];
    expect(ran).toEqual([]);
    await page.close();
  });

  it("cannot_be_framed_by_a_page_of_another_origin", async () => {
    const { url } = await serve();
    const evil = http.createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(`<!doctype html><iframe id="f" src="${url}/topology" width="800" height="600"></iframe>`);
    });
    await new Promise<void>((r) => evil.listen(0, "127.0.0.1", r));
    cleanups.push(() => new Promise<void>((r) => evil.close(() => r())));
    const r = await fetch(`${url}/topology`);
    expect([r.headers.get("x-content-type-options"), r.headers.get("x-frame-options")]).toEqual([
      "nosniff",
      "DENY", // for browsers without CSP frame-ancestors
    ]);
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${(evil.address() as AddressInfo).port}/`);
    await page.waitForTimeout(1000);
    const frame = page.frames().find((f) => f !== page.mainFrame());
    // A refused frame shows Chromium's error page, never the topology page.
    expect(frame?.url()).not.toBe(`${url}/topology`);
    expect(
      await frame
        ?.locator("#graph")
        .count()
        .catch(() => 0),
    ).toBe(0);
    await page.close();
  });
});

describe("scraping", () => {
  it("reports_a_target_that_does_not_answer_and_gives_its_edges_no_numbers", async () => {
    const closed = await freePort();
    const { topology } = await serve({
      targets: [{ workload: "orders", kind: "sidecar", adminUrl: `http://127.0.0.1:${closed}` }],
      scrapeTimeoutMs: 500,
    });
    await topology.scrape();
    await topology.scrape();
    const s = topology.state();
    expect(s.targets).toEqual([
      {
        workload: "orders",
        kind: "sidecar",
        adminUrl: `http://127.0.0.1:${closed}`,
        up: false,
        lastScrapeAt: expect.any(Number) as number,
        error: "fetch failed (ECONNREFUSED)",
        inFlight: null,
      },
    ]);
    expect(s.stats["orders->payments"]).toBeNull();
    expect(s.certificates.orders).toBeNull();
  });

  it("takes_every_gateway_and_sidecar_admin_listener_of_a_local_plan", () => {
    expect(
      scrapeTargetsOf([
        { role: "gateway", workload: "gateway", ports: { http: 8080, admin: 20000 } },
        { role: "app", workload: "orders", ports: { app: 20002 } },
        { role: "sidecar", workload: "orders", ports: { inbound: 20003, outbound: 20004, admin: 20005 } },
        { role: "prometheus", workload: null, ports: { http: 20001 } },
      ]),
    ).toEqual([
      { workload: "gateway", kind: "gateway", adminUrl: "http://127.0.0.1:20000" },
      { workload: "orders", kind: "sidecar", adminUrl: "http://127.0.0.1:20005" },
    ]);
  });
});

// POST /api/explain takes the flags of `meshgate explain`: plaintext (a pod of the caller bypassing its
// sidecar) and port (the port a service asks its sidecar for at an external destination) were refused as
// unknown fields, so the panel could not ask what the CLI answers.
describe("POST /api/explain over HTTP", () => {
  const rows: {
    claim: string;
    body: Record<string, unknown>;
    status: number;
    /** The verdict and deciding layer (200), or the error message's start (400). */
    expected: { verdict: string; layer: string } | string;
  }[] = [
    {
      claim: "a_plaintext_caller_is_refused_by_a_strict_sidecar_as_the_cli_says",
      body: { from: "orders", to: "payments", method: "POST", path: "/payments", plaintext: true },
      status: 200,
      expected: { verdict: "deny", layer: "mesh" },
    },
    {
      claim: "plaintext_false_is_the_sidecar_path",
      body: { from: "orders", to: "payments", method: "POST", path: "/payments", plaintext: false },
      status: 200,
      expected: { verdict: "allow", layer: "network" },
    },
    {
      claim: "plaintext_from_the_internet_is_refused_with_the_cli_message",
      body: { from: "internet", method: "GET", path: "/api/orders", plaintext: true },
      status: 400,
      expected: "plaintext: a plaintext caller is a pod of a service",
    },
    {
      claim: "plaintext_must_be_a_boolean",
      body: { from: "orders", to: "payments", method: "POST", path: "/payments", plaintext: "yes" },
      status: 400,
      expected: "plaintext: must be true or false",
    },
    {
      claim: "a_port_other_than_the_destinations_is_decided_as_the_cli_decides_it",
      body: { from: "payments", to: "card-processor", method: "GET", path: "/", port: 8443 },
      status: 200,
      expected: { verdict: "deny", layer: "outbound" },
    },
    {
      claim: "a_port_out_of_range_is_refused",
      body: { from: "payments", to: "card-processor", method: "GET", path: "/", port: 99999 },
      status: 400,
      expected: "port: must be a port number from 1 to 65535",
    },
  ];
  it.each(rows)("$claim", async ({ body, status, expected }) => {
    const { url } = await serve();
    const res = await fetch(`${url}/api/explain`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = (await res.json()) as { verdict: string; layer: string; error?: { message: string } };
    expect(res.status).toBe(status);
    if (typeof expected === "string") expect(answer.error?.message).toMatch(new RegExp(`^${expected}`));
    else expect({ verdict: answer.verdict, layer: answer.layer }).toEqual(expected);
  });
});
