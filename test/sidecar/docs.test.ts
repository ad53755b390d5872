/** docs/sidecar.md documents every sidecar error code with its status, and every denial reason. */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { INBOUND_DENY_CODES } from "../../runtime/decide/inbound.ts";
import { SidecarErrorCatalog } from "../../runtime/sidecar/errors.ts";

const doc = readFileSync(new URL("../../docs/sidecar.md", import.meta.url), "utf8");

describe("docs/sidecar.md", () => {
  it("lists_every_error_code_with_its_status_and_nothing_else", () => {
    const start = doc.indexOf("## Error codes");
    const section = doc.slice(start, doc.indexOf("\n## ", start + 1));
    const rows = [...section.matchAll(/^\| `([a-z_]+)` \| (\d{3}) \|/gm)].map((m) => [m[1], Number(m[2])]);
    expect(Object.fromEntries(rows)).toEqual(
      Object.fromEntries(Object.entries(SidecarErrorCatalog).map(([code, [status]]) => [code, status])),
    );
  });

  it("explains_every_403_denial_reason", () => {
    for (const code of INBOUND_DENY_CODES.filter((c) => c !== "bad_request_target" && c !== "bad_host"))
      expect(doc).toContain(`| \`${code}\` |`);
  });
});
