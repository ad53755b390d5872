/**
 * The topology page: one HTML document with inline CSS and JS (no build step, nothing loaded from
 * elsewhere, works offline). It polls `/api/topology` every two seconds, draws the graph as SVG — nodes
 * with their certificate expiry, edges coloured allowed / denied / unused and labelled with request rate,
 * error ratio and p99 latency — lists the same numbers in a table, and runs `/api/explain` from a form.
 * Every value from the API is inserted as text (textContent / createTextNode), never as markup.
 *
 * It is served with `TOPOLOGY_CSP`: its one script runs by its hash, so markup that got into the page
 * anyway could run none (no other inline script, no event-handler attribute), and no page may frame it
 * (clickjacking the explain form from any site the operator visits).
 */
import { createHash } from "node:crypto";

const STYLE = `
:root { --ok: #2e7d32; --deny: #c62828; --unused: #9e9e9e; --ink: #1d2433; --muted: #5b6475; --line: #d8dce3; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); background: #f6f7f9; }
header { display: flex; gap: 16px; align-items: baseline; padding: 12px 20px; background: #fff; border-bottom: 1px solid var(--line); }
header h1 { font-size: 18px; margin: 0; }
header .meta { color: var(--muted); }
header nav { margin-left: auto; }
header nav a { margin-left: 12px; color: #2b59c3; }
main { display: grid; grid-template-columns: minmax(0, 1fr) 420px; gap: 16px; padding: 16px 20px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px; }
h2 { font-size: 15px; margin: 0 0 8px; }
svg { width: 100%; height: auto; display: block; }
.node rect { fill: #fff; stroke: #4a5568; stroke-width: 1.2; rx: 6; }
.node.gateway rect { fill: #eef4ff; stroke: #2b59c3; }
.node.internet rect { fill: #f3f3f3; stroke: #888; stroke-dasharray: 4 3; }
.node.external rect { fill: #fbf7ef; stroke: #8a6d3b; stroke-dasharray: 6 3; }
.node.down rect { stroke: var(--deny); stroke-width: 2; }
.node text { font-size: 12px; text-anchor: middle; }
.node .name { font-weight: 600; }
.node .cert { fill: var(--muted); font-size: 10.5px; }
.node .cert.soon { fill: #b26a00; }
.node .cert.expired { fill: var(--deny); }
.edge path { fill: none; stroke-width: 1.6; }
.edge.allowed path { stroke: var(--ok); }
.edge.denied path { stroke: var(--deny); stroke-dasharray: 6 4; }
.edge.unused path { stroke: var(--unused); stroke-dasharray: 2 3; }
.edge.live path { stroke-width: 3; }
.labels text { font-size: 10.5px; text-anchor: middle; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
.labels text.denied { fill: var(--deny); }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; }
th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid #eef0f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 0 6px; border-radius: 3px; color: #fff; font-size: 11.5px; }
.badge.allowed, .badge.allow, .badge.pass { background: var(--ok); }
.badge.denied, .badge.deny { background: var(--deny); }
.badge.unused, .badge.info { background: var(--unused); }
form { display: grid; grid-template-columns: 90px 1fr; gap: 6px 8px; align-items: center; }
form input, form select, form textarea { width: 100%; font: inherit; padding: 3px 5px; }
form textarea { height: 54px; font-family: ui-monospace, monospace; font-size: 12px; }
form button { grid-column: 2; justify-self: start; padding: 4px 14px; font: inherit; }
#explain-result { margin-top: 10px; }
#explain-result .outcome { font-size: 15px; font-weight: 600; margin-bottom: 6px; }
#explain-result code, td code { font-size: 11.5px; }
ol.steps { margin: 0; padding-left: 20px; }
ol.steps li { margin-bottom: 6px; overflow-wrap: anywhere; }
ol.steps .why { color: var(--muted); }
.error { color: var(--deny); }
.legend span { margin-right: 12px; color: var(--muted); }
.legend i { display: inline-block; width: 22px; height: 0; border-top: 2px solid; vertical-align: middle; margin-right: 4px; }
`;

const SCRIPT = String.raw`
"use strict";
const NS = "http://www.w3.org/2000/svg";
const W = 150, H = 46;
const TRANSPORTS = { passthrough: "the caller's own TLS, or plain HTTP (passthrough)", tls: "TLS by the caller's proxy (sidecar or gateway)", mtls: "mutual TLS by the caller's proxy (client certificate)" };
let last = null, built = false;
const $ = (id) => document.getElementById(id);
function el(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs || {}) e.setAttribute(k, String(attrs[k]));
  if (text !== undefined) e.textContent = text;
  return e;
}
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) e.setAttribute(k, String(attrs[k]));
  for (const c of kids) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}
function fmtRate(r) { return r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2); }
function fmtPct(x) { return (x * 100).toFixed(x > 0 && x < 0.01 ? 2 : 1) + "%"; }
function fmtLatency(s) { return s === null ? "–" : s < 1 ? (s * 1000).toFixed(s < 0.01 ? 2 : 1) + " ms" : s.toFixed(2) + " s"; }
function fmtDuration(s) {
  const neg = s < 0; s = Math.abs(Math.round(s));
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const t = d ? d + "d " + hh + "h" : hh ? hh + "h " + m + "m" : m ? m + "m " + sec + "s" : sec + "s";
  return neg ? "expired " + t + " ago" : t;
}
function certText(c) {
  if (!c) return "cert: –";
  const left = (c.expiresAt - Date.now()) / 1000;
  return left <= 0 ? "cert " + fmtDuration(left) : "cert expires in " + fmtDuration(left);
}
function statText(s) {
  if (!s) return "no data yet";
  if (s.requests === 0) return "idle";
  return fmtRate(s.rate) + "/s · " + fmtPct(s.errorRatio) + " · " + fmtLatency(s.p99);
}
function build(g) {
  const svg = $("graph");
  svg.replaceChildren();
  svg.setAttribute("viewBox", "0 0 " + g.width + " " + g.height);
  const defs = el("defs");
  for (const k of ["allowed", "denied", "unused"]) {
    const m = el("marker", { id: "arrow-" + k, viewBox: "0 0 10 10", refX: 10, refY: 5, markerUnits: "userSpaceOnUse", markerWidth: 9, markerHeight: 9, orient: "auto-start-reverse" });
    m.append(el("path", { d: "M0,0 L10,5 L0,10 z", fill: k === "allowed" ? "#2e7d32" : k === "denied" ? "#c62828" : "#9e9e9e" }));
    defs.append(m);
  }
  svg.append(defs);
  const pos = new Map(g.nodes.map((n) => [n.id, n]));
  const edges = el("g"), labels = el("g", { class: "labels" });
  g.edges.forEach((e, i) => {
    const a = pos.get(e.from), b = pos.get(e.to);
    const x1 = a.x + W / 2, y1 = a.y, x2 = b.x - W / 2, y2 = b.y;
    let d, lx, ly;
    if (b.layer > a.layer) {
      const mx = (x1 + x2) / 2;
      d = "M" + x1 + "," + y1 + " C" + mx + "," + y1 + " " + mx + "," + y2 + " " + x2 + "," + y2;
      // the label sits at t = 0.7 of the curve, near the callee: a caller's fan-out spreads its labels
      const u = 0.3, t3 = 0.7;
      lx = u * u * u * x1 + 3 * u * u * t3 * mx + 3 * u * t3 * t3 * mx + t3 * t3 * t3 * x2;
      ly = u * u * u * y1 + 3 * u * u * t3 * y1 + 3 * u * t3 * t3 * y2 + t3 * t3 * t3 * y2 - 4;
    } else {
      const top = Math.min(a.y, b.y) - H / 2 - 30 - (i % 3) * 10;
      d = "M" + a.x + "," + (a.y - H / 2) + " C" + a.x + "," + top + " " + b.x + "," + top + " " + b.x + "," + (b.y - H / 2);
      lx = (a.x + b.x) / 2; ly = top + 8;
    }
    const grp = el("g", { class: "edge " + e.status, "data-edge": e.id });
    grp.append(el("title", {}, e.from + " → " + e.to + " (" + e.status + ")" + (e.allowedBy.length ? "\nallowed by " + e.allowedBy.join(", ") : "") + "\nnumbers: " + e.source));
    grp.append(el("path", { d, "marker-end": "url(#arrow-" + e.status + ")" }));
    labels.append(el("text", { x: lx, y: ly, class: "stat " + e.status, "data-edge": e.id }, ""));
    edges.append(grp);
  });
  svg.append(edges);
  const nodes = el("g");
  for (const n of g.nodes) {
    const grp = el("g", { class: "node " + n.kind, "data-node": n.id, transform: "translate(" + (n.x - W / 2) + "," + (n.y - H / 2) + ")" });
    grp.append(el("title", {}, n.identity || (n.kind === "external" ? "outside the mesh: " + n.address + " · " + TRANSPORTS[n.transport] : "the internet")));
    grp.append(el("rect", { width: W, height: H, rx: 6 }));
    grp.append(el("text", { x: W / 2, y: n.kind === "internet" ? 28 : 19, class: "name" }, n.id));
    if (n.kind === "external") grp.append(el("text", { x: W / 2, y: 35, class: "cert" }, n.address));
    else if (n.kind !== "internet") grp.append(el("text", { x: W / 2, y: 35, class: "cert" }, "cert: –"));
    nodes.append(grp);
  }
  svg.append(nodes, labels);
  const tbody = $("edges");
  tbody.replaceChildren();
  for (const e of g.edges) {
    tbody.append(h("tr", { "data-edge": e.id },
      h("td", {}, e.from + " → " + e.to),
      h("td", {}, h("span", { class: "badge " + e.status }, e.status)),
      h("td", { class: "num rate" }, "–"), h("td", { class: "num err" }, "–"), h("td", { class: "num p99" }, "–")));
  }
  built = true;
}
function update(s) {
  if (!built) build(s.graph);
  $("meta").textContent = s.graph.nodes.filter((n) => n.kind === "gateway" || n.kind === "service").length + " workloads · mTLS " + s.graph.mtls + " · window " + s.window.seconds.toFixed(0) + " s · updated " + new Date(s.generatedAt).toLocaleTimeString();
  for (const e of s.graph.edges) {
    const st = s.stats[e.id];
    const g = document.querySelector('g.edge[data-edge="' + CSS.escape(e.id) + '"]');
    document.querySelector('text.stat[data-edge="' + CSS.escape(e.id) + '"]').textContent = st && st.requests > 0 ? statText(st) : "";
    g.classList.toggle("live", !!st && st.rate > 0);
    const row = document.querySelector('tr[data-edge="' + CSS.escape(e.id) + '"]');
    row.querySelector(".rate").textContent = st ? fmtRate(st.rate) : "–";
    row.querySelector(".err").textContent = st ? fmtPct(st.errorRatio) : "–";
    row.querySelector(".p99").textContent = st ? fmtLatency(st.p99) : "–";
    row.title = e.source;
  }
  const down = new Set(s.targets.filter((t) => t.up === false).map((t) => t.workload));
  for (const n of s.graph.nodes) {
    if (n.kind === "internet" || n.kind === "external") continue;
    const g = document.querySelector('g.node[data-node="' + CSS.escape(n.id) + '"]');
    g.classList.toggle("down", down.has(n.id));
    const c = s.certificates[n.id];
    const t = g.querySelector("text.cert");
    t.textContent = down.has(n.id) ? "proxy not answering" : certText(c);
    const left = c ? (c.expiresAt - Date.now()) / 1000 : null;
    t.setAttribute("class", "cert" + (left === null ? "" : left <= 0 ? " expired" : left < 120 ? " soon" : ""));
  }
  const tt = $("targets");
  tt.replaceChildren();
  for (const t of s.targets) {
    tt.append(h("tr", {}, h("td", {}, t.workload), h("td", {}, t.kind),
      h("td", {}, t.up === null ? "…" : t.up ? "up" : "down"),
      h("td", { class: "error" }, t.error || "")));
  }
  if (!last) fillForm(s);
  last = s;
}
function fillForm(s) {
  const caller = $("from");
  for (const c of s.explain.callers) caller.append(h("option", { value: c }, c));
  const to = $("to");
  for (const n of s.graph.nodes) if (n.kind === "service") to.append(h("option", { value: n.id }, n.id));
  const consumer = $("consumer");
  for (const c of s.explain.consumers) consumer.append(h("option", { value: c }, c));
  if (s.explain.hosts.length) $("host").value = s.explain.hosts.find((x) => !x.startsWith("*.")) || "";
  syncForm();
}
function syncForm() {
  const internet = $("from").value === "internet";
  for (const e of document.querySelectorAll(".internet-only")) e.hidden = !internet;
  for (const e of document.querySelectorAll(".mesh-only")) e.hidden = internet;
  const cred = $("credentials").value;
  for (const e of document.querySelectorAll(".token-only")) e.hidden = !internet || cred !== "token";
  for (const e of document.querySelectorAll(".key-only")) e.hidden = !internet || cred !== "apiKey";
}
async function runExplain(ev) {
  ev.preventDefault();
  const out = $("explain-result");
  const body = { from: $("from").value, method: $("method").value, path: $("path").value };
  if (body.from === "internet") {
    if ($("host").value) body.host = $("host").value;
    const cred = $("credentials").value;
    if (cred === "token") {
      let claims = {};
      const extra = $("claims").value.trim();
      if (extra) {
        try { claims = JSON.parse(extra); } catch { out.replaceChildren(h("p", { class: "error" }, "claims: not valid JSON")); return; }
      }
      if ($("sub").value) claims.sub = $("sub").value;
      if ($("scopes").value.trim()) claims.scope = $("scopes").value.trim();
      body.claims = claims;
    } else if (cred === "apiKey") body.consumer = $("consumer").value;
  } else body.to = $("to").value;
  const res = await fetch("/api/explain", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const r = await res.json();
  if (!res.ok) { out.replaceChildren(h("p", { class: "error" }, r.error ? r.error.code + ": " + r.error.message : "HTTP " + res.status)); return; }
  const head = h("div", { class: "outcome", "data-outcome": r.verdict },
    h("span", { class: "badge " + r.verdict }, r.verdict), " ",
    r.verdict === "deny" ? r.status + " " + r.code + " at " + r.layer : r.status ? r.status + " from the gateway (" + r.action + ")" : "reaches " + (r.targets.join(", ") || "its upstream"),
    r.route ? " · route " + r.route : "");
  const list = h("ol", { class: "steps" });
  for (const s of r.steps)
    list.append(h("li", { "data-layer": s.layer, "data-result": s.outcome },
      h("div", {}, h("span", { class: "badge " + s.outcome }, s.outcome), " ", h("b", {}, s.layer), " at ", s.at, " ", h("code", {}, s.rule)),
      h("div", { class: "why" }, s.detail)));
  out.replaceChildren(head, list);
}
async function poll() {
  try {
    const res = await fetch("/api/topology", { cache: "no-store" });
    if (!res.ok) throw new Error("HTTP " + res.status);
    update(await res.json());
    $("status").textContent = "";
  } catch (e) {
    $("status").textContent = "admin server not answering (" + e.message + ")";
  }
}
$("from").addEventListener("change", syncForm);
$("credentials").addEventListener("change", syncForm);
$("explain").addEventListener("submit", runExplain);
poll();
setInterval(poll, 2000);
`;

const BODY = `
<header><h1>__NAME__ · topology</h1><span class="meta" id="meta">loading…</span><span class="error" id="status"></span><nav>__LINKS__</nav></header>
<main>
  <div>
    <section>
      <div class="legend"><span><i style="border-color:#2e7d32"></i>allowed</span><span><i style="border-color:#c62828;border-top-style:dashed"></i>denied (declared, refused by the callee)</span><span><i style="border-color:#9e9e9e;border-top-style:dotted"></i>allowed, never declared</span><span>edge labels: requests/s · 5xx ratio · p99 latency over the window</span></div>
      <svg id="graph" role="img" aria-label="service graph"></svg>
    </section>
    <section style="margin-top:16px">
      <h2>Edges</h2>
      <table><thead><tr><th>edge</th><th>policy</th><th class="num">req/s</th><th class="num">5xx</th><th class="num">p99</th></tr></thead><tbody id="edges"></tbody></table>
    </section>
    <section style="margin-top:16px">
      <h2>Proxies</h2>
      <table><thead><tr><th>workload</th><th>proxy</th><th>scrape</th><th></th></tr></thead><tbody id="targets"></tbody></table>
    </section>
  </div>
  <section>
    <h2>Explain a request</h2>
    <form id="explain">
      <label for="from">caller</label><select id="from" name="from"></select>
      <label for="method">method</label><select id="method" name="method"><option>GET</option><option>POST</option><option>PUT</option><option>PATCH</option><option>DELETE</option><option>HEAD</option><option>OPTIONS</option></select>
      <label for="path">path</label><input id="path" name="path" value="/api/products" autocomplete="off">
      <label for="host" class="internet-only">host</label><input id="host" name="host" class="internet-only" autocomplete="off">
      <label for="to" class="mesh-only" hidden>to</label><select id="to" name="to" class="mesh-only" hidden></select>
      <label for="credentials" class="internet-only">credentials</label><select id="credentials" class="internet-only"><option value="none">none</option><option value="token">token claims</option><option value="apiKey">API key</option></select>
      <label for="sub" class="token-only" hidden>sub</label><input id="sub" class="token-only" hidden value="alice" autocomplete="off">
      <label for="scopes" class="token-only" hidden>scopes</label><input id="scopes" class="token-only" hidden placeholder="orders:read orders:write" autocomplete="off">
      <label for="claims" class="token-only" hidden>more claims</label><textarea id="claims" class="token-only" hidden placeholder='{"tier": "gold"}'></textarea>
      <label for="consumer" class="key-only" hidden>consumer</label><select id="consumer" class="key-only" hidden></select>
      <button type="submit" id="run">Explain</button>
    </form>
    <div id="explain-result"></div>
  </section>
</main>
`;

/** A link the page's header shows (the launcher's other pages: process status, JWKS, Prometheus, …). */
export interface PageLink {
  readonly label: string;
  /** A path on the same server, or an http(s) URL. */
  readonly href: string;
}

/**
 * The page's Content-Security-Policy: nothing loaded from elsewhere, only its own script (by hash: no other
 * inline script or handler attribute runs), fetches to its own server, and never framed.
 */
export const TOPOLOGY_CSP = [
  "default-src 'none'",
  `script-src 'sha256-${createHash("sha256").update(SCRIPT).digest("base64")}'`,
  "style-src 'unsafe-inline'",
  "connect-src 'self'",
  "img-src data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The page for a mesh called `name`, with header links (every text HTML-escaped). */
export function topologyPage(name: string, links: readonly PageLink[] = []): string {
  const safe = escapeHtml(name);
  const nav = links
    .filter((l) => /^(\/(?!\/)|https?:\/\/)/.test(l.href))
    .map((l) => `<a href="${escapeHtml(l.href)}">${escapeHtml(l.label)}</a>`)
    .join("");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${safe} · meshgate topology</title>
<style>${STYLE}</style></head>
<body>${BODY.replace("__NAME__", () => safe).replace("__LINKS__", () => nav)}<script>${SCRIPT}</script></body></html>
`;
}
