/**
 * public-rate-limit: a route anyone may call is rate limited, by a key the client cannot choose freely.
 * The spec only warns about an unlimited public route (W_SPEC_PUBLIC_ROUTE_UNLIMITED); here it is an error
 * an organization may lower.
 */
import { builtin, names } from "../support.ts";

export const publicRateLimit = builtin(
  "public-rate-limit",
  "public routes are rate limited by a key the client cannot rotate",
  ({ runtime, model }, report) => {
    const gw = runtime.gateway;
    if (!gw) return;
    const limitedPublic: string[] = [];
    for (const r of gw.routes) {
      if (!r.auth.public) continue;
      if (!r.rateLimit) {
        report(
          "E_POLICY_PUBLIC_ROUTE_UNLIMITED",
          model.routePath(r.name),
          `public route "${r.name}" has no rate limit: anyone can send it as many requests as the gateway accepts`,
          "add rateLimit: { requests: …, per: 1m, key: ip }",
        );
        continue;
      }
      limitedPublic.push(r.name);
      if (r.rateLimit.key.kind === "header") {
        report(
          "E_POLICY_RATE_LIMIT_CLIENT_KEY",
          `${model.routePath(r.name)}.rateLimit.key`,
          `public route "${r.name}" counts requests per value of the ${r.rateLimit.key.header} header, which an anonymous client sets to a new value on every request`,
          "key public limits by ip (the trusted client address) or route",
        );
      }
    }
    const store = gw.rateLimitStore;
    if (store.kind === "redis" && store.failMode === "open" && limitedPublic.length > 0) {
      report(
        "E_POLICY_RATE_LIMIT_FAIL_OPEN",
        "gateway.rateLimitStore.redis.failMode",
        `while Redis is unreachable the limits of ${limitedPublic.length} public route(s) (${names(limitedPublic)}) are not enforced`,
        "accept it knowingly (lower this code to off), or use failMode: closed",
      );
    }
  },
);
