/** The RuntimeConfig contract: loaded whole, validated once, frozen; any defect rejects the whole file. */
import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import {
  RuntimeConfigError,
  loadRuntimeConfig,
  runtimeConfigHash,
  sealRuntimeConfig,
  type GatewayRuntimeConfig,
  type RuntimeErrorCode,
} from "../../runtime/contract/index.ts";
import { parseSpec } from "../../components/spec/parse.ts";
import { translate } from "../../components/translate/translate.ts";

async function shopGateway(): Promise<GatewayRuntimeConfig> {
  const raw = parse(await readFile(new URL("../../examples/shop/mesh.yaml", import.meta.url), "utf8"));
  const r = parseSpec(raw);
  if (!r.ok) throw new Error("shop example invalid");
  return translate(r.spec).runtime.gateway!;
}

function rejection(text: string, kind?: "gateway" | "sidecar"): { code: RuntimeErrorCode; path?: string } {
  try {
    loadRuntimeConfig(text, kind);
  } catch (err) {
    expect(err).toBeInstanceOf(RuntimeConfigError);
    const e = err as RuntimeConfigError;
    return { code: e.code, ...(e.path ? { path: e.path } : {}) };
  }
  throw new Error("expected the config to be rejected");
}

describe("RuntimeConfig loader", () => {
  it("accepts_a_translated_config_and_freezes_it_deeply", async () => {
    const config = loadRuntimeConfig(JSON.stringify(await shopGateway()), "gateway");
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.routes[0]!.match.methods)).toBe(true);
    expect(() => {
      (config.routes as unknown as unknown[]).push({});
    }).toThrow();
  });

  it("hash_does_not_depend_on_key_order", async () => {
    const config = await shopGateway();
    const reversed = Object.fromEntries(Object.entries(config).reverse()) as GatewayRuntimeConfig;
    expect(runtimeConfigHash(reversed)).toBe(config.hash);
  });

  const table: {
    claim: string;
    edit: (c: Record<string, unknown>) => string;
    kind?: "gateway" | "sidecar";
    code: RuntimeErrorCode;
    path?: string;
  }[] = [
    {
      claim: "rejects_text_that_is_not_json",
      edit: (c) => JSON.stringify(c).slice(0, 100),
      code: "E_RT_CONFIG_JSON",
    },
    {
      claim: "rejects_an_unknown_version",
      edit: (c) => JSON.stringify({ ...c, version: 2 }),
      code: "E_RT_CONFIG_VERSION",
      path: "version",
    },
    {
      claim: "rejects_a_missing_version",
      edit: ({ version: _v, ...c }) => JSON.stringify(c),
      code: "E_RT_CONFIG_VERSION",
      path: "version",
    },
    {
      claim: "rejects_an_unknown_field_naming_it",
      edit: (c) => JSON.stringify({ ...c, listeners: [{ ...(c.listeners as object[])[0], colour: "red" }] }),
      code: "E_RT_CONFIG_INVALID",
      path: "listeners[0]",
    },
    {
      claim: "rejects_a_wrong_type_naming_the_field",
      edit: (c) => JSON.stringify({ ...c, admin: { port: "9901" } }),
      code: "E_RT_CONFIG_INVALID",
      path: "admin.port",
    },
    // Node fires a timer above 2^31−1 ms after 1 ms: a sealed config with such a timeout would time out at once.
    {
      claim: "rejects_a_timer_duration_setTimeout_cannot_hold",
      edit: ({ hash: _h, ...c }) =>
        JSON.stringify(
          sealRuntimeConfig({
            ...c,
            limits: { ...(c.limits as object), drainTimeoutMs: 2 ** 31 },
          } as unknown as Omit<GatewayRuntimeConfig, "hash">),
        ),
      code: "E_RT_CONFIG_INVALID",
      path: "limits.drainTimeoutMs",
    },
    {
      claim: "rejects_content_edited_after_sealing",
      edit: (c) => JSON.stringify({ ...c, hosts: ["evil.example"] }),
      code: "E_RT_CONFIG_HASH",
      path: "hash",
    },
    {
      claim: "rejects_a_gateway_config_given_to_a_sidecar",
      edit: (c) => JSON.stringify(c),
      kind: "sidecar",
      code: "E_RT_CONFIG_KIND",
      path: "kind",
    },
  ];

  it.each(table)("$claim", async ({ edit, kind, code, path }) => {
    const config = (await shopGateway()) as unknown as Record<string, unknown>;
    const got = rejection(edit(config), kind);
    expect(got.code).toBe(code);
    if (path) expect(got.path).toBe(path);
  });

  it("resealing_an_edited_config_makes_it_acceptable_again", async () => {
    const { hash: _h, ...rest } = await shopGateway();
    const edited = sealRuntimeConfig<GatewayRuntimeConfig>({ ...rest, hosts: ["other.example"] });
    expect(loadRuntimeConfig(JSON.stringify(edited), "gateway").hosts).toEqual(["other.example"]);
  });
});
