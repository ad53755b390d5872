/**
 * Checks across fields and references. They read the raw document defensively (any part may have the
 * wrong shape, which the schema reports), so they run on every spec and one run lists every error.
 */
import { isPatternError, parsePathPattern } from "../../runtime/decide/pattern.ts";
import { linearRegExp } from "../../runtime/decide/regex.ts";
import { originEntryProblem } from "../../runtime/apim/cors.ts";
import { compileTemplate, parseFieldPath } from "../../runtime/apim/template.ts";
import { reservedHeader } from "../../runtime/gateway/headers.ts";
import { ownedByTheGateway } from "../../runtime/ratelimit/key.ts";
import { compilePolicy } from "../../runtime/ratelimit/bucket.ts";
import { parseRedisUrl } from "../../runtime/redis/url.ts";
import { DEFAULT_LATENCY_BUCKETS } from "../../runtime/telemetry/metrics.ts";
import type { SpecErrorCode } from "./errors.ts";
import { isDuration, parseDuration } from "./units.ts";
import { DEFAULTS, PROXY_PORTS } from "./defaults.ts";
import { isIP } from "node:net";
import { X509Certificate } from "node:crypto";
import { compareCodeUnits } from "../../runtime/contract/canonical.ts";
import { canonicalHost as egressHost } from "../../runtime/sidecar/egress.ts";
import { cidrProblem, isPatternHost } from "../../runtime/decide/external.ts";

export type Segments = (string | number)[];

export interface Issue {
  code: SpecErrorCode;
  segments: Segments;
  message: string;
  hint: string;
}

export const RESERVED_SERVICE_NAMES = ["gateway", "internet"] as const;

// ───────────── tolerant readers ─────────────

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === "object" && !Array.isArray(v);
const obj = (v: unknown): Obj => (isObj(v) ? v : {});
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
const entries = (v: unknown): [string, unknown][] => Object.entries(obj(v));
/** Milliseconds of a duration value when it is well-formed, else undefined (the schema reports it). */
const ms = (v: unknown): number | undefined =>
  typeof v === "string" && isDuration(v) ? parseDuration(v) : undefined;

/** Membership in a list of names through a Set built once per list (lists only grow while read). */
const nameSets = new WeakMap<readonly string[], { size: number; set: Set<string> }>();
function includes(list: readonly string[], value: string): boolean {
  let cached = nameSets.get(list);
  if (!cached || cached.size !== list.length) {
    cached = { size: list.length, set: new Set(list) };
    nameSets.set(list, cached);
  }
  return cached.set.has(value);
}

// ───────────── did you mean ─────────────

function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(up + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

/** The closest candidate within a small edit distance, for "did you mean" hints. */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  const limit = Math.max(2, Math.floor(word.length / 3));
  for (const c of candidates) {
    const dist = c.toLowerCase() === word.toLowerCase() ? 0.5 : editDistance(word, c);
    if (dist < bestDistance && dist <= limit) {
      best = c;
      bestDistance = dist;
    }
  }
  return best;
}

// ───────────── the checks ─────────────

export function semanticIssues(raw: unknown): Issue[] {
  const issues: Issue[] = [];
  const add = (code: SpecErrorCode, segments: Segments, message: string, hint: string) =>
    issues.push({ code, segments, message, hint });
  /** Every entry of a list of CIDR ranges is one (E_SPEC_INVALID_CIDR at the entry, with the hint). */
  const cidrs = (list: unknown, segments: Segments, hint: string) =>
    arr(list).forEach((c, k) => {
      if (typeof c === "string" && !isCidr(c))
        add("E_SPEC_INVALID_CIDR", [...segments, k], `${JSON.stringify(c)} is not a CIDR range`, hint);
    });

  const root = obj(raw);
  const services = obj(root.services);
  const serviceNames = Object.keys(services);
  const gateway = isObj(root.gateway) ? root.gateway : undefined;
  const peers = gateway ? [...serviceNames, "gateway"] : serviceNames;

  /** Reports a name that must be one of `known`, with a did-you-mean. */
  const ref = (
    value: unknown,
    known: readonly string[],
    what: string,
    segments: Segments,
    extraHint = "",
  ) => {
    if (typeof value !== "string") return false;
    if (includes(known, value)) return true;
    const guess = closest(value, known);
    add(
      "E_SPEC_UNKNOWN_REFERENCE",
      segments,
      `unknown ${what} ${JSON.stringify(value)}${guess ? ` (did you mean ${JSON.stringify(guess)}?)` : ""}`,
      known.length
        ? `use one of: ${known.slice(0, 12).join(", ")}${known.length > 12 ? ", …" : ""}${extraHint}`
        : `define it first${extraHint}`,
    );
    return false;
  };
  const pathPattern = (value: unknown, segments: Segments): string[] | undefined => {
    if (typeof value !== "string") return undefined;
    const parsed = parsePathPattern(value);
    if (isPatternError(parsed)) {
      add(
        "E_SPEC_INVALID_PATH_PATTERN",
        segments,
        parsed.error,
        'e.g. "/orders", "/orders/{id}", "/static/**"',
      );
      return undefined;
    }
    return [...parsed.params];
  };
  /** A path the gateway sends or redirects to: literal segments and {params} the match captures. */
  const targetPath = (value: string, captured: string[] | undefined, segments: Segments, what: string) => {
    const parsed = parsePathPattern(value);
    if (isPatternError(parsed)) {
      add("E_SPEC_INVALID_PATH_PATTERN", segments, parsed.error, `write a plain path such as "/orders/{id}"`);
      return;
    }
    if (parsed.segments.some((seg) => seg.kind === "any" || seg.kind === "rest")) {
      add(
        "E_SPEC_INVALID_PATH_PATTERN",
        segments,
        `a ${what} path cannot contain * or **`,
        "write the exact path, using {params} captured by match.path",
      );
      return;
    }
    if (captured === undefined) return; // match.path itself is invalid and reported
    for (const p of parsed.params) {
      if (!captured.includes(p)) {
        add(
          "E_SPEC_REWRITE_PARAM",
          segments,
          `${what} uses {${p}} but match.path captures ${captured.length ? captured.map((c) => `{${c}}`).join(", ") : "no parameters"}`,
          "capture it in match.path (e.g. /orders/{id}) or remove it",
        );
      }
    }
  };
  const uniqueNames = (items: unknown[], base: Segments, what: string) => {
    const seen = new Map<string, number>();
    items.forEach((item, i) => {
      const n = str(obj(item).name);
      if (n === undefined) return;
      const first = seen.get(n);
      if (first !== undefined) {
        add(
          "E_SPEC_DUPLICATE_NAME",
          [...base, i, "name"],
          `${what} name ${JSON.stringify(n)} is already used at [${first}]`,
          "give every item a unique name",
        );
      } else seen.set(n, i);
    });
  };

  // Mesh-wide retry/timeout consistency and CA lifetimes.
  const mesh = obj(root.mesh);
  const meshDefaults = obj(mesh.defaults);
  const defaultTimeout = ms(meshDefaults.timeout) ?? parseDuration(DEFAULTS["mesh.defaults.timeout"].value);
  const defaultPerTry =
    ms(obj(meshDefaults.retries).perTryTimeout) ??
    parseDuration(DEFAULTS["mesh.defaults.retries.perTryTimeout"].value);
  const retryFits = (timeout: number, perTry: number, segments: Segments) => {
    if (perTry > timeout) {
      add(
        "E_SPEC_RETRY_TIMEOUT",
        segments,
        `perTryTimeout ${perTry}ms is longer than the timeout ${timeout}ms it must fit in`,
        "lower retries.perTryTimeout or raise timeout",
      );
    }
  };
  retryFits(defaultTimeout, defaultPerTry, ["mesh", "defaults", "retries", "perTryTimeout"]);

  const ca = obj(mesh.ca);
  const caMs = (key: "rootValidity" | "intermediateValidity" | "workloadTtl" | "renewBefore" | "clockSkew") =>
    ms(ca[key]) ?? parseDuration(DEFAULTS[`mesh.ca.${key}`].value);
  const [root_, inter, leaf, renew, skew] = [
    caMs("rootValidity"),
    caMs("intermediateValidity"),
    caMs("workloadTtl"),
    caMs("renewBefore"),
    caMs("clockSkew"),
  ];
  if (inter >= root_) {
    add(
      "E_SPEC_CA_LIFETIMES",
      ["mesh", "ca", "intermediateValidity"],
      "the intermediate must expire before the root that signs it",
      "make intermediateValidity shorter than rootValidity",
    );
  }
  if (leaf >= inter) {
    add(
      "E_SPEC_CA_LIFETIMES",
      ["mesh", "ca", "workloadTtl"],
      "workload SVIDs must expire before the intermediate that signs them",
      "make workloadTtl shorter than intermediateValidity",
    );
  }
  if (renew >= leaf) {
    add(
      "E_SPEC_CA_LIFETIMES",
      ["mesh", "ca", "renewBefore"],
      "renewBefore must be shorter than workloadTtl, or every SVID is always due for renewal",
      "e.g. a third of workloadTtl",
    );
  }
  if (skew * 2 >= leaf) {
    add(
      "E_SPEC_CA_LIFETIMES",
      ["mesh", "ca", "clockSkew"],
      "clockSkew must be well under workloadTtl",
      "lower clockSkew (5m is the default)",
    );
  }

  // The gateway's connection timeouts: 0s would turn one off (Node reads 0 as "none": a slowloris or an idle
  // connection held for ever), and Node refuses a request timeout shorter than the header timeout.
  const gatewayLimits = obj(obj(root.gateway).limits);
  const limitMs = (key: "headerTimeout" | "requestTimeout" | "idleTimeout") =>
    ms(gatewayLimits[key]) ?? parseDuration(DEFAULTS[`gateway.limits.${key}`].value);
  for (const key of ["headerTimeout", "requestTimeout", "idleTimeout"] as const)
    if (limitMs(key) === 0)
      add(
        "E_SPEC_GATEWAY_TIMEOUTS",
        ["gateway", "limits", key],
        `gateway.limits.${key} is 0s, which would turn it off`,
        "give it a duration above 0s (leave it out for the default)",
      );
  if (limitMs("requestTimeout") > 0 && limitMs("requestTimeout") < limitMs("headerTimeout"))
    add(
      "E_SPEC_GATEWAY_TIMEOUTS",
      ["gateway", "limits", "requestTimeout"],
      `requestTimeout ${limitMs("requestTimeout")}ms is shorter than headerTimeout ${limitMs("headerTimeout")}ms: the request timeout covers the whole request, its headers included`,
      "raise requestTimeout to at least headerTimeout, or lower headerTimeout",
    );

  // Pinned local ports: one name per port, and only where a local port exists (not a wildcard or range).
  const pins = new Map<number, string>();
  for (const [kind, group] of [
    ["services", obj(root.services)],
    ["external", obj(root.external)],
  ] as const)
    for (const [name, raw] of entries(group)) {
      const p = isObj(raw) ? raw.localPort : undefined;
      if (typeof p !== "number") continue;
      const owner = pins.get(p);
      if (owner !== undefined)
        add(
          "E_SPEC_DUPLICATE_PORT",
          [kind, name, "localPort"],
          `local port ${p} is already pinned by ${owner}`,
          "give each service and destination its own localPort, or leave it out to get one from the name",
        );
      else pins.set(p, `${kind}.${name}`);
      const host = kind === "external" && isObj(raw) ? str(raw.host) : undefined;
      if (host !== undefined && isPatternHost(host))
        add(
          "E_SPEC_LOCAL_PORT",
          [kind, name, "localPort"],
          `external "${name}" is ${host.includes("/") ? "an address range" : "a wildcard"} (${host}): it has no local port (the app names the host it wants through CONNECT or HTTP_PROXY)`,
          "remove localPort, or declare the one host the app needs as its own destination and pin that",
        );
    }

  // External destinations (before the services: their calls may name them).
  const external = obj(root.external);
  const externalNames = Object.keys(external);
  const callable = [...serviceNames, ...externalNames];
  const destinations = new Map<string, string>();
  for (const [extName, extRaw] of entries(external)) {
    if (!isObj(extRaw)) continue; // the schema reports the wrong type
    const base: Segments = ["external", extName];
    if ((RESERVED_SERVICE_NAMES as readonly string[]).includes(extName))
      add(
        "E_SPEC_RESERVED_NAME",
        base,
        `"${extName}" is reserved by meshgate`,
        `rename the destination (e.g. "${extName}-api")`,
      );
    if (includes(serviceNames, extName))
      add(
        "E_SPEC_DUPLICATE_NAME",
        base,
        `"${extName}" names both a service and an external destination`,
        "rename one: calls name either, so each name must mean one thing",
      );
    const host = str(extRaw.host);
    if (host !== undefined) {
      const problem = externalHostProblem(host);
      if (problem)
        add(
          "E_SPEC_INVALID_HOST",
          [...base, "host"],
          `${JSON.stringify(host)} ${problem}`,
          'write one lower-case DNS name such as "api.stripe.com", an IP address such as "10.0.12.7", a wildcard of a domain such as "*.s3.eu-west-1.amazonaws.com", or a CIDR range such as "10.20.0.0/16"',
        );
      else if (typeof extRaw.port === "number") {
        const key = `${isPatternHost(host) ? host : egressHost(host)}:${extRaw.port}`;
        const first = destinations.get(key);
        if (first !== undefined)
          add(
            "E_SPEC_DUPLICATE_NAME",
            [...base, "host"],
            `external "${extName}" is the same destination as external "${first}" (${key})`,
            `remove one, and allow its callers on external.${first}`,
          );
        else destinations.set(key, extName);
      }
    }
    const ca = str(extRaw.ca);
    if (ca !== undefined) {
      const problem =
        extRaw.tls !== "originate" ? "is only used when the sidecar originates TLS" : pemProblem(ca);
      if (problem)
        add(
          "E_SPEC_TLS_CONFIG",
          [...base, "ca"],
          `external "${extName}": ca ${problem}`,
          extRaw.tls !== "originate"
            ? "add tls: originate (the sidecar verifies the destination with this CA), or remove ca"
            : "give the PEM text of one or more CA certificates (-----BEGIN CERTIFICATE----- …)",
        );
    }
    if (isObj(extRaw.clientCertificate)) {
      const cert = extRaw.clientCertificate;
      const hasSecret = cert.secret !== undefined;
      const hasFiles = cert.certFile !== undefined || cert.keyFile !== undefined;
      if (extRaw.tls !== "originate")
        add(
          "E_SPEC_TLS_CONFIG",
          [...base, "clientCertificate"],
          `external "${extName}": a client certificate is only presented when the sidecar originates TLS`,
          "add tls: originate (the sidecar opens the TLS and presents the certificate), or remove clientCertificate",
        );
      else if (
        hasSecret === hasFiles ||
        (hasFiles && (cert.certFile === undefined || cert.keyFile === undefined))
      )
        add(
          "E_SPEC_TLS_CONFIG",
          [...base, "clientCertificate"],
          `external "${extName}": a client certificate needs either secret, or both certFile and keyFile`,
          "name a Kubernetes TLS secret (secret: partner-client-cert), or give both file paths",
        );
    }
    arr(extRaw.allow).forEach((ruleRaw, r) => {
      arr(obj(ruleRaw).from).forEach((f, i) => {
        const seg = [...base, "allow", r, "from", i];
        if (f === "gateway") {
          // The gateway reaches a destination a route forwards to (to: { external }).
          if (!gateway)
            add(
              "E_SPEC_UNKNOWN_REFERENCE",
              seg,
              'allow names "gateway" but the spec has no gateway',
              "add a gateway section or remove this peer",
            );
          return;
        }
        ref(f, serviceNames, "service", seg);
      });
    });
  }

  // Services.
  const serviceTimeouts = new Map<string, number>();
  for (const [svcName, svcRaw] of entries(root.services)) {
    if (!isObj(svcRaw)) continue; // the schema reports the wrong type
    const base: Segments = ["services", svcName];
    const svc = svcRaw;
    if ((RESERVED_SERVICE_NAMES as readonly string[]).includes(svcName)) {
      add(
        "E_SPEC_RESERVED_NAME",
        base,
        `"${svcName}" is reserved by meshgate`,
        `rename the service (e.g. "${svcName}-svc")`,
      );
    }
    const image = str(svc.image);
    if (image && /:latest$/.test(image)) {
      add(
        "E_SPEC_INVALID_IMAGE",
        [...base, "image"],
        `image ${JSON.stringify(image)} uses the mutable "latest" tag`,
        "pin a version tag or a sha256 digest",
      );
    }
    const calls = arr(svc.calls);
    const seenCalls = new Set<string>();
    calls.forEach((c, i) => {
      if (c === svcName) {
        add(
          "E_SPEC_SELF_REFERENCE",
          [...base, "calls", i],
          `service "${svcName}" lists itself in calls`,
          "remove it; in-process calls do not cross the mesh",
        );
        return;
      }
      if (typeof c === "string" && seenCalls.has(c)) {
        add(
          "E_SPEC_DUPLICATE_NAME",
          [...base, "calls", i],
          `"${c}" is listed twice`,
          "list each callee once",
        );
      }
      if (typeof c === "string") seenCalls.add(c);
      ref(c, callable, "service or external destination", [...base, "calls", i]);
    });
    arr(svc.allow).forEach((ruleRaw, r) => {
      const rule = obj(ruleRaw);
      arr(rule.from).forEach((f, i) => {
        const seg = [...base, "allow", r, "from", i];
        if (f === svcName) {
          add(
            "E_SPEC_SELF_REFERENCE",
            seg,
            `service "${svcName}" allows itself`,
            "remove it; a service never calls itself through the mesh",
          );
          return;
        }
        if (f === "gateway" && !gateway) {
          add(
            "E_SPEC_UNKNOWN_REFERENCE",
            seg,
            'allow names "gateway" but the spec has no gateway',
            "add a gateway section or remove this peer",
          );
          return;
        }
        ref(f, peers, "service", seg, gateway ? "" : ' (and "gateway" once a gateway is defined)');
      });
      arr(rule.paths).forEach((p, i) => pathPattern(p, [...base, "allow", r, "paths", i]));
    });
    const timeout = ms(svc.timeout) ?? defaultTimeout;
    serviceTimeouts.set(svcName, timeout);
    retryFits(timeout, ms(obj(svc.retries).perTryTimeout) ?? defaultPerTry, [
      ...base,
      "retries",
      "perTryTimeout",
    ]);
    const routes = arr(svc.routes);
    uniqueNames(routes, [...base, "routes"], "route");
    routes.forEach((rRaw, i) => {
      if (!isObj(rRaw)) return;
      const r = rRaw;
      pathPattern(obj(r.match).path, [...base, "routes", i, "match", "path"]);
      retryFits(
        ms(r.timeout) ?? timeout,
        ms(obj(r.retries).perTryTimeout) ?? ms(obj(svc.retries).perTryTimeout) ?? defaultPerTry,
        [...base, "routes", i, "retries", "perTryTimeout"],
      );
    });
    if (isObj(svc.healthCheck)) pathPattern(svc.healthCheck.path, [...base, "healthCheck", "path"]);
  }

  // Gateway.
  const routeNames: string[] = [];
  if (gateway) {
    const jwtNames = Object.keys(obj(gateway.jwt));
    const oidcNames = Object.keys(obj(gateway.oidc));
    const certNames = Object.keys(obj(gateway.clientCerts));
    const apiKeys = isObj(gateway.apiKeys) ? gateway.apiKeys : undefined;
    const consumers = Object.keys(obj(apiKeys?.consumers));
    const groups = [
      ...new Set(
        Object.values(obj(apiKeys?.consumers)).flatMap((c) =>
          arr(obj(c).groups).filter((g): g is string => typeof g === "string"),
        ),
      ),
    ];
    const gatewayHosts = arr(gateway.hosts)
      .filter((h): h is string => typeof h === "string")
      .map((h) => h.toLowerCase());

    // Client address: one way of finding it, and ranges that are ranges.
    const clientIp = isObj(gateway.clientIp) ? gateway.clientIp : undefined;
    if (clientIp) {
      cidrs(
        clientIp.trustedProxies,
        ["gateway", "clientIp", "trustedProxies"],
        'write the proxies\' range, e.g. "10.0.0.0/16" (a single address: "10.0.0.7/32")',
      );
      if (
        clientIp.trustedProxies !== undefined &&
        typeof clientIp.trustedHops === "number" &&
        clientIp.trustedHops > 0
      )
        add(
          "E_SPEC_CLIENT_IP",
          ["gateway", "clientIp", "trustedHops"],
          "trustedHops and trustedProxies both say which forwarding entries to trust",
          "keep trustedProxies (the proxies' ranges) and remove trustedHops, or the reverse",
        );
    }

    // Listeners: unique names and ports, TLS where it belongs.
    const listeners = arr(gateway.listeners);
    uniqueNames(listeners, ["gateway", "listeners"], "listener");
    const ports = new Map<number, string>([[PROXY_PORTS.gatewayAdmin, "the admin listener"]]);
    listeners.forEach((lRaw, i) => {
      if (!isObj(lRaw)) return;
      const l = lRaw;
      const p = l.port;
      if (typeof p === "number") {
        const owner = ports.get(p);
        if (owner)
          add(
            "E_SPEC_DUPLICATE_PORT",
            ["gateway", "listeners", i, "port"],
            `port ${p} is already used by ${owner}`,
            "give every listener its own port",
          );
        else ports.set(p, `listener [${i}]`);
      }
      cidrs(
        l.proxyProtocolSources,
        ["gateway", "listeners", i, "proxyProtocolSources"],
        'write the load balancers\' range, e.g. "10.0.0.0/20"',
      );
      if (l.proxyProtocolSources !== undefined && l.proxyProtocol !== true)
        add(
          "E_SPEC_PROXY_PROTOCOL",
          ["gateway", "listeners", i, "proxyProtocolSources"],
          "proxyProtocolSources only applies to a listener that reads PROXY headers",
          "set proxyProtocol: true, or remove proxyProtocolSources",
        );
      const tls = isObj(l.tls) ? l.tls : undefined;
      if (l.protocol === "https" && !tls) {
        add(
          "E_SPEC_TLS_CONFIG",
          ["gateway", "listeners", i, "tls"],
          "an https listener needs tls.certificates",
          "add tls: { certificates: [{ hosts: [...], secret: <name> }] }",
        );
      }
      if (l.protocol === "http" && tls) {
        add(
          "E_SPEC_TLS_CONFIG",
          ["gateway", "listeners", i, "tls"],
          "an http listener cannot have tls",
          "set protocol: https, or remove tls",
        );
      }
      arr(tls?.certificates).forEach((cRaw, c) => {
        const cert = obj(cRaw);
        const hasSecret = cert.secret !== undefined;
        const hasFiles = cert.certFile !== undefined || cert.keyFile !== undefined;
        if (
          hasSecret === hasFiles ||
          (hasFiles && (cert.certFile === undefined || cert.keyFile === undefined))
        ) {
          add(
            "E_SPEC_TLS_CONFIG",
            ["gateway", "listeners", i, "tls", "certificates", c],
            "a certificate needs either secret, or both certFile and keyFile",
            "name a Kubernetes TLS secret, or give both file paths",
          );
        }
      });
    });

    // JWT providers.
    for (const [jwtName, pRaw] of entries(gateway.jwt)) {
      if (!isObj(pRaw)) continue;
      const p = pRaw;
      const base: Segments = ["gateway", "jwt", jwtName];
      const hasUri = p.jwksUri !== undefined;
      const hasInline = p.jwks !== undefined;
      if (hasUri === hasInline) {
        add(
          "E_SPEC_JWT_KEYS",
          base,
          "a JWT provider needs exactly one of jwksUri or jwks",
          "give the issuer's JWKS URL, or inline public keys",
        );
      }
      const uri = str(p.jwksUri);
      if (uri !== undefined) checkUrl(uri, [...base, "jwksUri"], ["https:"], add, true);
      const iss = str(p.issuer);
      if (iss !== undefined && iss.trim() === "")
        add(
          "E_SPEC_MISSING_FIELD",
          [...base, "issuer"],
          "issuer is empty",
          "give the exact `iss` value your identity provider puts in tokens",
        );
      for (const [i, a] of arr(p.algorithms).entries()) {
        if (typeof a === "string" && (a.toLowerCase() === "none" || /^HS/i.test(a))) {
          add(
            "E_SPEC_JWT_ALGORITHM",
            [...base, "algorithms", i],
            `algorithm ${a} is refused: ${a.toLowerCase() === "none" ? "unsigned tokens" : "HMAC keys enable algorithm confusion and shared-secret leaks"}`,
            "pin an asymmetric algorithm such as ES256, RS256 or EdDSA",
          );
        }
      }
    }
    for (const [n, pRaw] of entries(gateway.oidc))
      checkUrl(str(obj(pRaw).issuer), ["gateway", "oidc", n, "issuer"], ["https:"], add, true);
    // OIDC cookies: each provider's session (and its <name>_login pending login) under its own names —
    // two providers on one cookie overwrite each other's sessions, sending the browser round both issuers.
    const cookieOwner = new Map<string, string>();
    for (const [n, pRaw] of entries(gateway.oidc)) {
      const cookie = str(obj(pRaw).cookieName) ?? "meshgate_session";
      const taken = cookieOwner.get(cookie) ?? cookieOwner.get(`${cookie}_login`);
      if (taken !== undefined)
        add(
          "E_SPEC_DUPLICATE_NAME",
          ["gateway", "oidc", n, "cookieName"],
          `cookie ${JSON.stringify(cookie)} is already used by OIDC provider ${taken} (its session or pending-login cookie)`,
          "give each OIDC provider its own cookieName (e.g. meshgate_session_<provider>)",
        );
      else {
        cookieOwner.set(cookie, n);
        cookieOwner.set(`${cookie}_login`, n);
      }
    }

    // API keys: one key, one consumer.
    const hashOwner = new Map<string, string>();
    for (const [consumer, cRaw] of entries(apiKeys?.consumers)) {
      arr(obj(cRaw).keyHashes).forEach((h, i) => {
        if (typeof h !== "string") return;
        const owner = hashOwner.get(h);
        if (owner)
          add(
            "E_SPEC_DUPLICATE_NAME",
            ["gateway", "apiKeys", "consumers", consumer, "keyHashes", i],
            `this key hash is also consumer "${owner}"'s`,
            "issue every consumer its own key",
          );
        else hashOwner.set(h, consumer);
      });
    }

    // Stores.
    const redisUrl = str(obj(obj(gateway.rateLimitStore).redis).url);
    checkRedisUrl(redisUrl, ["gateway", "rateLimitStore", "redis", "url"], add);
    const cacheRedis = str(obj(obj(obj(gateway.cache).redis)).url);
    checkRedisUrl(cacheRedis, ["gateway", "cache", "redis", "url"], add);

    // Transforms: headers the gateway owns stay out of reach; templates and field paths compile.
    const principalHeaders = new Set<string>();
    for (const [, pRaw] of entries(gateway.jwt))
      for (const h of Object.keys(obj(obj(pRaw).forwardClaims))) principalHeaders.add(h.toLowerCase());
    const reserved = (name: unknown, segments: Segments, what: string) => {
      if (typeof name !== "string") return;
      const why =
        reservedHeader(name) ??
        (principalHeaders.has(name.toLowerCase()) ? "a principal header (gateway.jwt forwardClaims)" : null);
      if (why !== null)
        add(
          "E_SPEC_RESERVED_HEADER",
          segments,
          `header ${name} cannot be ${what}: it is ${why}`,
          "choose another header; the gateway sets this one itself",
        );
    };
    // A header the gateway reads from clients: one named with "_" or "." never arrives (every request carrying
    // such a name is refused, 400 ambiguous_header_name — some stacks alias them to "-", forging headers).
    const clientHeader = (name: unknown, segments: Segments, what: string) => {
      if (typeof name !== "string" || !/[_.]/.test(name)) return;
      add(
        "E_SPEC_AMBIGUOUS_HEADER_NAME",
        segments,
        `${what} ${name} contains "_" or ".": the gateway refuses every request that carries such a header name (400 ambiguous_header_name), so it can never be sent`,
        `name it with "-" instead, e.g. ${name.replace(/[_.]/g, "-")}`,
      );
    };
    clientHeader(obj(apiKeys).header, ["gateway", "apiKeys", "header"], "API-key header");
    for (const [jwtName, pRaw] of entries(gateway.jwt))
      clientHeader(
        obj(obj(pRaw).tokenFrom).header,
        ["gateway", "jwt", jwtName, "tokenFrom", "header"],
        "token header",
      );
    const template = (value: unknown, params: string[], segments: Segments) => {
      if (typeof value !== "string") return;
      const t = compileTemplate(value, { params });
      if (!t.ok) add("E_SPEC_INVALID_TEMPLATE", segments, t.error, "see the template variables in the docs");
    };
    const fieldPath = (value: unknown, segments: Segments) => {
      if (typeof value !== "string") return;
      const f = parseFieldPath(value);
      if (!f.ok)
        add("E_SPEC_INVALID_TEMPLATE", segments, f.error, 'write a dotted path such as "customer.id"');
    };
    const checkTransforms = (r: Obj, base: Segments, params: string[]) => {
      const kind =
        r.static !== undefined
          ? "static"
          : r.redirect !== undefined
            ? "redirect"
            : r.aggregate !== undefined
              ? "aggregate"
              : "forward";
      for (const dir of ["request", "response"] as const) {
        const t = obj(obj(r.transform)[dir]);
        const tb: Segments = [...base, "transform", dir];
        const h = obj(t.headers);
        arr(h.remove).forEach((n, k) =>
          reserved(n, [...tb, "headers", "remove", k], "removed by a transform"),
        );
        for (const op of ["set", "add"] as const) {
          for (const [n, v] of entries(h[op])) {
            reserved(n, [...tb, "headers", op, n], "set by a transform");
            template(v, params, [...tb, "headers", op, n]);
          }
        }
        const b = obj(t.body);
        arr(b.drop).forEach((p, k) => fieldPath(p, [...tb, "body", "drop", k]));
        for (const [from, to] of entries(b.rename)) {
          fieldPath(from, [...tb, "body", "rename", from]);
          fieldPath(to, [...tb, "body", "rename", from]);
        }
        for (const [p] of entries(b.set)) fieldPath(p, [...tb, "body", "set", p]);
        for (const [p, v] of entries(b.template)) {
          fieldPath(p, [...tb, "body", "template", p]);
          template(v, params, [...tb, "body", "template", p]);
        }
        const hasBody = t.body !== undefined;
        const refused =
          (kind === "static" || kind === "redirect") &&
          (dir === "request" ? obj(r.transform)[dir] !== undefined : hasBody)
            ? `transform.${dir}${dir === "response" ? ".body" : ""} does not apply to ${kind} routes`
            : kind === "aggregate" && dir === "request" && hasBody
              ? "an aggregate route sends no request body: transform.request.body does not apply"
              : null;
        if (refused !== null)
          add(
            "E_SPEC_ROUTE_ACTION",
            dir === "request" && kind !== "aggregate" ? tb : [...tb, "body"],
            refused,
            "remove it, or forward the route (to or split)",
          );
      }
    };
    const methodsOf = (match: Obj): string[] =>
      arr(match.methods).filter((m): m is string => typeof m === "string");

    // Routes.
    const routes = arr(gateway.routes);
    uniqueNames(routes, ["gateway", "routes"], "route");
    routes.forEach((rRaw, i) => {
      if (!isObj(rRaw)) return;
      const r = rRaw;
      const base: Segments = ["gateway", "routes", i];
      if (typeof r.name === "string") routeNames.push(r.name);
      const match = obj(r.match);
      const params = pathPattern(match.path, [...base, "match", "path"]);
      for (const [h] of entries(match.headers))
        clientHeader(h, [...base, "match", "headers", h], "header condition on");
      arr(match.hosts).forEach((h, j) => {
        if (typeof h !== "string") return;
        const lower = h.toLowerCase();
        const served = gatewayHosts.some(
          (g) => g === lower || (g.startsWith("*.") && lower.endsWith(g.slice(1))),
        );
        if (!served)
          add(
            "E_SPEC_UNKNOWN_REFERENCE",
            [...base, "match", "hosts", j],
            `host ${JSON.stringify(h)} is not one of gateway.hosts`,
            `add it to gateway.hosts (${gatewayHosts.join(", ")})`,
          );
      });
      for (const kind of ["headers", "query"] as const) {
        for (const [k, cond] of entries(match[kind])) {
          if (!isObj(cond)) continue;
          const keys = Object.keys(cond).filter((key) => cond[key] !== undefined);
          if (keys.length !== 1) {
            add(
              "E_SPEC_INVALID_VALUE",
              [...base, "match", kind, k],
              `a ${kind === "headers" ? "header" : "query"} condition needs exactly one of exact, prefix, regex, present, absent (found ${keys.length})`,
              "keep one condition per name",
            );
          }
          if (typeof cond.regex === "string") {
            try {
              // As the router compiles it: for the linear-time engine (runtime/decide/regex.ts).
              linearRegExp(cond.regex);
            } catch (err) {
              add(
                "E_SPEC_INVALID_REGEX",
                [...base, "match", kind, k, "regex"],
                `regex does not compile: ${(err as Error).message}`,
                "fix the regular expression (JavaScript syntax, matched in linear time as RE2 does: no backreferences or lookaheads)",
              );
            }
          }
        }
      }

      // Exactly one action.
      const actions = (["to", "split", "redirect", "aggregate", "static"] as const).filter(
        (a) => r[a] !== undefined,
      );
      if (actions.length !== 1) {
        add(
          "E_SPEC_ROUTE_ACTION",
          base,
          actions.length === 0
            ? "route has no action"
            : `route has ${actions.length} actions (${actions.join(", ")})`,
          "give exactly one of to, split, redirect, aggregate, static",
        );
      }
      const forwards = r.to !== undefined || r.split !== undefined;
      const primary: string[] = [];
      /** An external destination a route calls (`to`, a split entry, an aggregate part): one host, allowing the gateway. */
      const routeExternal = (x: unknown, seg: Segments) => {
        if (ref(x, externalNames, "external destination", seg) && typeof x === "string") {
          const ext = obj(external[x]);
          const host = str(ext.host) ?? "";
          if (isPatternHost(host))
            add(
              "E_SPEC_EXTERNAL_ROUTE",
              seg,
              `external "${x}" is ${host.includes("/") ? "an address range" : "a wildcard"} (${host}): a route needs one host to forward to`,
              `declare the one host the route calls as its own external destination and forward to that`,
            );
          const allowed = arr(ext.allow).some((rule) => arr(obj(rule).from).includes("gateway"));
          if (!allowed)
            add(
              "E_SPEC_EXTERNAL_ROUTE",
              seg,
              `external "${x}" does not allow the gateway (deny by default)`,
              `add "gateway" to an allow rule of external.${x}: allow: [{ from: [gateway] }]`,
            );
        }
      };
      if (r.to !== undefined && isObj(r.to) && "external" in r.to)
        routeExternal(r.to.external, [...base, "to", "external"]);
      else if (r.to !== undefined) {
        const target = typeof r.to === "string" ? r.to : obj(r.to).service;
        const seg = typeof r.to === "string" ? [...base, "to"] : [...base, "to", "service"];
        if (ref(target, serviceNames, "service", seg) && typeof target === "string") primary.push(target);
      }
      if (Array.isArray(r.split)) {
        let sum = 0;
        const seen = new Set<string>();
        r.split.forEach((partRaw, j) => {
          const part = obj(partRaw);
          if (typeof part.weight === "number") sum += part.weight;
          const kind = "external" in part ? "external" : "service";
          const s = part[kind];
          const seg = [...base, "split", j, kind];
          if (typeof s === "string" && seen.has(s))
            add(
              "E_SPEC_DUPLICATE_NAME",
              seg,
              `${kind === "service" ? "service" : "external destination"} "${s}" appears twice in the split`,
              "merge the two entries",
            );
          if (typeof s === "string") seen.add(s);
          if (kind === "external") routeExternal(s, seg);
          else if (ref(s, serviceNames, "service", seg) && typeof s === "string") primary.push(s);
        });
        if (r.split.every((p) => typeof obj(p).weight === "number") && sum !== 100) {
          add(
            "E_SPEC_SPLIT_WEIGHTS",
            [...base, "split"],
            `split weights add up to ${sum}, not 100`,
            "adjust the weights so they total 100",
          );
        }
      }
      if (r.mirror !== undefined) {
        const m = obj(r.mirror).service;
        if (!forwards)
          add(
            "E_SPEC_ROUTE_MIRROR",
            [...base, "mirror"],
            "mirror needs a to or split action beside it",
            "add to: <service>, or remove mirror",
          );
        else if (typeof m === "string" && primary.includes(m))
          add(
            "E_SPEC_ROUTE_MIRROR",
            [...base, "mirror", "service"],
            `mirror targets "${m}", which already receives the request`,
            "mirror to a different service (e.g. a shadow deployment)",
          );
        ref(m, serviceNames, "service", [...base, "mirror", "service"]);
      }
      for (const [part, pRaw] of entries(r.aggregate)) {
        const p = obj(pRaw);
        const seg = [...base, "aggregate", part];
        if ((p.service === undefined) === (p.external === undefined))
          add(
            "E_SPEC_ROUTE_ACTION",
            seg,
            `aggregate part ${part} names ${p.service === undefined ? "neither a service nor" : "both a service and"} an external destination`,
            "give the part exactly one of service or external",
          );
        else if (p.external !== undefined) routeExternal(p.external, [...seg, "external"]);
        else ref(p.service, serviceNames, "service", [...seg, "service"]);
      }
      if (r.aggregate !== undefined && Object.keys(obj(r.aggregate)).length === 0) {
        add(
          "E_SPEC_ROUTE_ACTION",
          [...base, "aggregate"],
          "aggregate has no parts",
          "name at least one part: { <part>: { service, path } }",
        );
      }
      // `cache` too: the cache stores forwarded responses; a route the gateway answers itself (redirect,
      // static files) or assembles (aggregate) never reaches the lookup, and its cache would be ignored.
      for (const needsForward of ["rewrite", "fault", "cache"] as const) {
        if (r[needsForward] !== undefined && !forwards) {
          add(
            "E_SPEC_ROUTE_ACTION",
            [...base, needsForward],
            `${needsForward} applies only to routes that forward (to or split)`,
            `remove ${needsForward}, or forward the route`,
          );
        }
      }
      // Paths the gateway builds: literal segments and captured {params} only (no "//", "..", wildcards).
      for (const kind of ["rewrite", "redirect"] as const) {
        const target = str(obj(r[kind]).path);
        if (target !== undefined) targetPath(target, params, [...base, kind, "path"], kind);
      }
      for (const [part, pRaw] of entries(r.aggregate)) {
        const p = str(obj(pRaw).path);
        if (p !== undefined)
          targetPath(p.split("?")[0]!, params, [...base, "aggregate", part, "path"], "aggregate");
        arr(obj(pRaw).forwardHeaders).forEach((h, k) => {
          reserved(h, [...base, "aggregate", part, "forwardHeaders", k], "copied to an aggregate part");
          clientHeader(h, [...base, "aggregate", part, "forwardHeaders", k], "client header");
        });
      }
      checkTransforms(r, base, params ?? []);
      if (r.static !== undefined) {
        const st = obj(r.static);
        const bad = methodsOf(match).filter((m) => m !== "GET" && m !== "HEAD");
        if (bad.length > 0)
          add(
            "E_SPEC_ROUTE_ACTION",
            [...base, "match", "methods"],
            `a static route serves GET and HEAD only, not ${bad.join(", ")}`,
            "match methods: [GET, HEAD] (or omit methods)",
          );
        arr(st.index).forEach((n, k) => {
          if (typeof n === "string" && (n === "" || /[/\\\0]/.test(n) || n.startsWith(".")))
            add(
              "E_SPEC_INVALID_VALUE",
              [...base, "static", "index", k],
              `index ${JSON.stringify(n)} is not a plain file name`,
              'write a file name such as "index.html" (no "/", not starting with ".")',
            );
        });
        const fb = str(st.spaFallback);
        if (fb !== undefined && !/^(\/[^/.\\\0][^/\\\0]*)+$/.test(fb))
          add(
            "E_SPEC_INVALID_VALUE",
            [...base, "static", "spaFallback"],
            `spaFallback ${JSON.stringify(fb)} is not a file path under dir`,
            'write a path such as "/index.html" (no "..", no dotfiles, no trailing "/")',
          );
      }

      // Authentication: fail closed.
      const auth = isObj(r.auth) ? r.auth : undefined;
      if (!auth && r.public !== true) {
        add(
          "E_SPEC_ROUTE_WITHOUT_AUTH",
          base,
          `route ${JSON.stringify(r.name ?? i)} has no auth`,
          "add auth: { jwt: <provider> } (or apiKey, clientCert, oidc), or say public: true if anyone may call it",
        );
      }
      if (auth && r.public === true) {
        add(
          "E_SPEC_ROUTE_AUTH_AND_PUBLIC",
          [...base, "public"],
          "a route cannot be public and require auth",
          "remove public: true, or remove auth",
        );
      }
      let hasJwt = false;
      let hasApiKey = false;
      let hasOidc = false;
      if (auth) {
        const jwts = typeof auth.jwt === "string" ? [auth.jwt] : arr(auth.jwt);
        jwts.forEach((j, k) =>
          ref(
            j,
            jwtNames,
            "JWT provider",
            typeof auth.jwt === "string" ? [...base, "auth", "jwt"] : [...base, "auth", "jwt", k],
            " (from gateway.jwt)",
          ),
        );
        hasJwt = jwts.length > 0;
        hasApiKey = auth.apiKey === true;
        hasOidc = auth.oidc !== undefined;
        if (hasApiKey && !apiKeys)
          add(
            "E_SPEC_UNKNOWN_REFERENCE",
            [...base, "auth", "apiKey"],
            "apiKey is required but gateway.apiKeys is not defined",
            "define gateway.apiKeys.consumers",
          );
        if (auth.clientCert !== undefined)
          ref(
            auth.clientCert,
            certNames,
            "client-certificate provider",
            [...base, "auth", "clientCert"],
            " (from gateway.clientCerts)",
          );
        if (hasOidc)
          ref(auth.oidc, oidcNames, "OIDC provider", [...base, "auth", "oidc"], " (from gateway.oidc)");
        if (!hasJwt && !hasApiKey && !hasOidc && auth.clientCert === undefined) {
          add(
            "E_SPEC_AUTH_REQUIREMENT",
            [...base, "auth"],
            "auth names no mechanism",
            "add jwt, apiKey, clientCert or oidc",
          );
        }
        if ((auth.scopes !== undefined || auth.claims !== undefined) && !hasJwt && !hasOidc) {
          add(
            "E_SPEC_AUTH_REQUIREMENT",
            [...base, "auth", auth.scopes !== undefined ? "scopes" : "claims"],
            "scopes and claims come from tokens, but the route accepts no jwt or oidc",
            "add auth.jwt, or remove scopes/claims",
          );
        }
        if ((auth.consumers !== undefined || auth.groups !== undefined) && !hasApiKey) {
          add(
            "E_SPEC_AUTH_REQUIREMENT",
            [...base, "auth", auth.consumers !== undefined ? "consumers" : "groups"],
            "consumers and groups come from API keys, but the route does not accept apiKey",
            "add apiKey: true, or remove consumers/groups",
          );
        }
        arr(auth.consumers).forEach((c, k) =>
          ref(c, consumers, "API-key consumer", [...base, "auth", "consumers", k]),
        );
        arr(auth.groups).forEach((g, k) => ref(g, groups, "consumer group", [...base, "auth", "groups", k]));
        cidrs(auth.clientIps, [...base, "auth", "clientIps"], 'write e.g. "10.0.0.0/8" or "2001:db8::/32"');
      }
      const rl = isObj(r.rateLimit) ? r.rateLimit : undefined;
      // A header the gateway owns (X-Forwarded-For, X-Request-Id, …) is the client's to write and is
      // dropped or replaced before forwarding: keyed by it, every request could name its own bucket. The
      // principal headers and forwardClaims headers are keyed by the principal's value, so they may be.
      const rlHeader =
        typeof rl?.key === "string" && rl.key.startsWith("header:") ? rl.key.slice("header:".length) : null;
      clientHeader(rlHeader, [...base, "rateLimit", "key"], "rate limit keyed by header");
      if (rlHeader !== null && ownedByTheGateway(rlHeader))
        add(
          "E_SPEC_RESERVED_HEADER",
          [...base, "rateLimit", "key"],
          `rate limit keyed by header ${rlHeader}, which the gateway owns: the client writes its own copy (the gateway drops or replaces it), so every request could name a fresh bucket`,
          rlHeader === "x-request-id"
            ? "key by ip, subject or consumer"
            : "use key: ip, the client address the gateway believes (X-Forwarded-For as far as gateway.clientIp trusts it)",
        );
      if (rl?.key === "subject" && !hasJwt && !hasOidc)
        add(
          "E_SPEC_AUTH_REQUIREMENT",
          [...base, "rateLimit", "key"],
          "rate limit keyed by subject, but the route has no jwt or oidc auth",
          "use key: ip, or authenticate the route with jwt",
        );
      if (rl?.key === "consumer" && !hasApiKey)
        add(
          "E_SPEC_AUTH_REQUIREMENT",
          [...base, "rateLimit", "key"],
          "rate limit keyed by consumer, but the route does not accept apiKey",
          "use key: ip, or add auth.apiKey: true",
        );
      // The gateway counts limits in exact integers: refuse here what it would refuse at load.
      const rlPeriod = ms(rl?.per);
      if (rl && rlPeriod === 0)
        add(
          "E_SPEC_OUT_OF_RANGE",
          [...base, "rateLimit", "per"],
          "a rate-limit period of 0",
          "write e.g. per: 1s",
        );
      const rlBurst = rl?.burst ?? rl?.requests;
      if (
        rl &&
        rlPeriod &&
        Number.isSafeInteger(rl.requests) &&
        Number.isSafeInteger(rlBurst) &&
        (rl.requests as number) > 0 &&
        (rlBurst as number) > 0
      ) {
        const replicas =
          typeof gateway.replicas === "number" ? gateway.replicas : DEFAULTS["gateway.replicas"].value;
        const divided = rl.scope !== "replica" && gateway.rateLimitStore === undefined;
        try {
          compilePolicy(
            { requests: rl.requests as number, periodMs: rlPeriod, burst: rlBurst as number },
            divided && Number.isSafeInteger(replicas) && replicas > 0 ? replicas : 1,
          );
        } catch (err) {
          if (err instanceof RangeError)
            add(
              "E_SPEC_OUT_OF_RANGE",
              [...base, "rateLimit"],
              err.message,
              "use a shorter per, or round requests and burst",
            );
        }
      }

      // Timeouts, caching, CORS.
      const routeTimeout = ms(r.timeout) ?? serviceTimeouts.get(primaryOf(r) ?? "") ?? defaultTimeout;
      const perTry = ms(obj(r.retries).perTryTimeout);
      if (perTry !== undefined) retryFits(routeTimeout, perTry, [...base, "retries", "perTryTimeout"]);
      const methods = arr(match.methods);
      if (r.cache !== undefined && methods.length > 0 && !methods.some((m) => m === "GET" || m === "HEAD")) {
        add(
          "E_SPEC_INVALID_VALUE",
          [...base, "cache"],
          "cache applies to GET and HEAD, but the route matches neither",
          "remove cache, or match GET",
        );
      }
      const cors = obj(r.cors);
      arr(cors.headers).forEach((h, k) => clientHeader(h, [...base, "cors", "headers", k], "request header"));
      arr(cors.origins).forEach((o, k) => {
        const problem = typeof o === "string" ? originEntryProblem(o) : null;
        if (problem !== null)
          add(
            "E_SPEC_INVALID_VALUE",
            [...base, "cors", "origins", k],
            `origin ${JSON.stringify(o)}: ${problem}`,
            'write "https://app.example", "https://*.example.com" or "*"',
          );
      });
      if (cors.credentials === true && arr(cors.origins).includes("*")) {
        add(
          "E_SPEC_INVALID_VALUE",
          [...base, "cors", "origins"],
          'origins "*" cannot be combined with credentials: true (browsers refuse it)',
          "list the allowed origins explicitly",
        );
      }
    });
  }

  // Observability.
  // The generated rules read 5-minute rates (the RED recordings, the SLO ratios, the 5m short window of
  // the fast page): rate() needs two samples inside its window, so a longer scrape interval leaves them
  // empty — or empty every other evaluation — and every SLO alert silent, with nothing saying so.
  const metricsSpec = obj(obj(root.observability).metrics);
  const scrapeInterval = ms(metricsSpec.scrapeInterval);
  if (
    scrapeInterval !== undefined &&
    scrapeInterval > MAX_SCRAPE_INTERVAL_MS &&
    metricsSpec.enabled !== false &&
    metricsSpec.backend !== "none"
  )
    add(
      "E_SPEC_OUT_OF_RANGE",
      ["observability", "metrics", "scrapeInterval"],
      `scrapeInterval ${formatMs(scrapeInterval)} leaves fewer than two samples in the 5-minute windows the generated ` +
        "recording rules and SLO alerts read: their rates would be empty and no alert would ever fire",
      `use at most ${formatMs(MAX_SCRAPE_INTERVAL_MS)} (1m or less keeps a missed scrape harmless; 15s is usual)`,
    );
  const slos = arr(obj(root.observability).slos);
  uniqueNames(slos, ["observability", "slos"], "SLO");
  slos.forEach((sRaw, i) => {
    if (!isObj(sRaw)) return;
    const s = sRaw;
    const base: Segments = ["observability", "slos", i];
    const hasRoute = s.route !== undefined;
    const hasService = s.service !== undefined;
    if (hasRoute === hasService)
      add(
        "E_SPEC_SLO_TARGET",
        base,
        "an SLO needs exactly one of route or service",
        "name the gateway route or the service it measures",
      );
    if (hasRoute) ref(s.route, routeNames, "gateway route", [...base, "route"]);
    if (hasService) ref(s.service, serviceNames, "service", [...base, "service"]);
    const p99 = ms(s.latencyP99);
    if (p99 !== undefined && !DEFAULT_LATENCY_BUCKETS.includes(p99 / 1000)) {
      const bounds = DEFAULT_LATENCY_BUCKETS.map((b) => b * 1000);
      const below = bounds.filter((b) => b < p99).at(-1);
      const above = bounds.find((b) => b > p99);
      const nearest = [below, above].filter((b) => b !== undefined).map(formatMs);
      add(
        "E_SPEC_SLO_LATENCY_BUCKET",
        [...base, "latencyP99"],
        `latencyP99 ${String(s.latencyP99)} is not a bucket boundary of the request-duration histogram ` +
          "(meshgate_request_duration_seconds), so the share of slower requests cannot be counted exactly",
        `use ${nearest.join(" or ")} (the boundaries are ${bounds.map(formatMs).join(", ")})`,
      );
    }
  });
  const otlp = str(obj(obj(root.observability).tracing).otlpEndpoint);
  if (otlp !== undefined)
    checkUrl(otlp, ["observability", "tracing", "otlpEndpoint"], ["http:", "https:"], add);

  // The gateway's extra volumes: one name and one mount path each.
  const volumesBase: Segments = ["targets", "kubernetes", "gatewayVolumes"];
  const volumes = arr(obj(obj(root.targets).kubernetes).gatewayVolumes);
  uniqueNames(volumes, volumesBase, "gateway volume");
  const mounts = new Map<string, number>();
  volumes.forEach((v, i) => {
    const path = str(obj(v).mountPath)?.replace(/\/+$/, "");
    if (path === undefined) return;
    const first = mounts.get(path);
    if (first !== undefined)
      add(
        "E_SPEC_DUPLICATE_NAME",
        [...volumesBase, i, "mountPath"],
        `mount path ${JSON.stringify(path)} is already used at [${first}]`,
        "mount every volume at its own path",
      );
    else mounts.set(path, i);
  });

  return issues;
}

/** A latency for a message: `250ms`, `2.5s`. */
const formatMs = (ms: number) => (ms < 1000 ? `${ms}ms` : `${ms / 1000}s`);

/** The longest scrape interval that still puts two samples in every 5-minute rate window of the rules. */
const MAX_SCRAPE_INTERVAL_MS = 150_000;

/**
 * The service a route inherits its timeout from: `to`, or the heaviest split entry (ties by name);
 * undefined when that is an external destination.
 */
function primaryOf(r: Obj): string | undefined {
  if (typeof r.to === "string") return r.to;
  if (isObj(r.to)) return str(r.to.service);
  const parts = arr(r.split).filter(isObj);
  const target = (p: Obj) => String(p.service ?? p.external);
  parts.sort(
    (a, b) => (Number(b.weight) || 0) - (Number(a.weight) || 0) || compareCodeUnits(target(a), target(b)),
  );
  return str(parts[0]?.service);
}

/**
 * A URL as an error message may show it: whatever stands between `://` and the last `@` (a user name and a
 * password — an unparseable URL may hold a raw `/` in a token) is replaced, so no error echoes a secret.
 */
export function withoutCredentials(value: string): string {
  const start = value.indexOf("://");
  const at = value.lastIndexOf("@");
  return start >= 0 && at > start ? `${value.slice(0, start + 3)}[credentials]${value.slice(at)}` : value;
}

function checkUrl(
  value: string | undefined,
  segments: Segments,
  schemes: string[],
  add: (code: SpecErrorCode, segments: Segments, message: string, hint: string) => void,
  httpOnLoopback = false,
) {
  if (value === undefined) return;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    add(
      "E_SPEC_INVALID_URL",
      segments,
      `${JSON.stringify(withoutCredentials(value))} is not a URL`,
      `write an absolute ${schemes[0]}// URL (percent-encode "/", "@" and ":" in a user name or password)`,
    );
    return;
  }
  const loopback = ["localhost", "127.0.0.1", "[::1]"].includes(url.hostname);
  if (schemes.includes(url.protocol) || (httpOnLoopback && loopback && url.protocol === "http:")) return;
  add(
    "E_SPEC_INVALID_URL",
    segments,
    `scheme ${url.protocol.replace(/:$/, "")} is not allowed here`,
    `use ${schemes.map((s) => s.replace(/:$/, "")).join(" or ")}${httpOnLoopback ? " (plain http only on localhost)" : ""}`,
  );
}

/**
 * A Redis URL as the gateway's client reads it (runtime/redis/url.ts): besides the scheme, the path must
 * be a database number and there is no query or fragment — refused here rather than by every gateway
 * at start. The client's messages never hold the password.
 */
function checkRedisUrl(
  value: string | undefined,
  segments: Segments,
  add: (code: SpecErrorCode, segments: Segments, message: string, hint: string) => void,
) {
  if (value === undefined) return;
  let reported = false;
  checkUrl(value, segments, ["redis:", "rediss:"], (...a) => {
    reported = true;
    add(...a);
  });
  if (reported) return;
  try {
    parseRedisUrl(value);
  } catch (err) {
    add(
      "E_SPEC_INVALID_URL",
      segments,
      (err as Error).message,
      "write redis://[user:password@]host[:port][/db] with a database number and no query; rediss:// for TLS",
    );
  }
}

function isCidr(value: string): boolean {
  const slash = value.indexOf("/");
  if (slash < 0) return isIP(value) !== 0;
  const ip = value.slice(0, slash);
  const bits = value.slice(slash + 1);
  const version = isIP(ip);
  if (version === 0 || !/^(0|[1-9][0-9]{0,2})$/.test(bits)) return false;
  return Number(bits) <= (version === 4 ? 32 : 128);
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

/** Why a CA bundle is unusable: no PEM certificate in it, or one that does not parse; null when it is fine. */
function pemProblem(pem: string): string | null {
  const blocks = pem.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) return "holds no PEM certificate";
  for (const [i, block] of blocks.entries()) {
    try {
      new X509Certificate(block);
    } catch {
      return `certificate ${i + 1} of ${blocks.length} does not parse`;
    }
  }
  return null;
}

/**
 * Why a string is not an external destination's host (a DNS name, an IP address, a wildcard
 * `*.<DNS name of two labels or more>` that covers no Kubernetes Service name, or a canonical CIDR range
 * holding no loopback, link-local or unspecified address), or null.
 */
export function externalHostProblem(host: string): string | null {
  if (host.includes("/")) return cidrProblem(host);
  if (isIP(host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host) !== 0)
    return host.startsWith("[") ? "is an IPv6 address in brackets (write it without them)" : null;
  if (host !== host.toLowerCase()) return "has upper-case letters";
  if (host.startsWith("*.")) {
    const name = host.slice(2);
    if (egressHost(name) !== name || /^[0-9]+$/.test(name.slice(name.lastIndexOf(".") + 1)))
      return "is a wildcard of no DNS name";
    if (!name.includes(".")) return "is a wildcard of a top-level domain";
    if (/(^|\.)(svc|cluster\.local)$/.test(name))
      return "is a wildcard over Kubernetes Service names (mesh services are called through the mesh, by name)";
    return null;
  }
  // As the sidecar reads a CONNECT target, and written as it compares it (no trailing dot).
  if (egressHost(host) === host) return null;
  // An all-numeric last label is no DNS name (RFC 3696 §2): `10.0.0.256` and `127.1` are malformed addresses.
  return /^[0-9]+$/.test(host.slice(host.lastIndexOf(".") + 1))
    ? "is not a valid IP address"
    : "is not a DNS name or an IP address";
}
