/**
 * What the admin listener's /config shows: the serving config with secrets removed — API-key hashes,
 * credentials in store URLs. Public material (JWKS public keys, issuers) stays, it helps debugging.
 */
import type { GatewayRuntimeConfig } from "../contract/schema.ts";

const REDACTED = "[redacted]";

function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.username || u.password) {
      u.username = u.username ? REDACTED : "";
      u.password = u.password ? REDACTED : "";
    }
    return u.toString();
  } catch {
    return REDACTED;
  }
}

export function redactConfig(config: GatewayRuntimeConfig): unknown {
  return {
    ...config,
    auth: {
      ...config.auth,
      apiKeys: config.auth.apiKeys && {
        ...config.auth.apiKeys,
        consumers: config.auth.apiKeys.consumers.map((c) => ({
          ...c,
          keyHashes: c.keyHashes.map(() => REDACTED),
        })),
      },
    },
    rateLimitStore:
      config.rateLimitStore.kind === "redis"
        ? { ...config.rateLimitStore, url: redactUrl(config.rateLimitStore.url) }
        : config.rateLimitStore,
    cacheStore:
      config.cacheStore.kind === "redis"
        ? { ...config.cacheStore, url: redactUrl(config.cacheStore.url) }
        : config.cacheStore,
  };
}
