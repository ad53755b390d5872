/** A small spec for tests of local mode (test/local/watch*.test.ts). */
import { writeFile } from "node:fs/promises";
import { parse, stringify } from "yaml";

/** Two demo services (web calls api) behind the gateway: the smallest mesh with every kind of process. */
export const TINY = `
name: tiny
trustDomain: tiny.test
services:
  web:
    image: example/web:1
    port: 8080
    calls: [api]
    allow:
      - from: [gateway]
        methods: [GET]
        paths: [/web, /web/**]
  api:
    image: example/api:1
    port: 8080
    allow:
      - from: [web]
        methods: [GET]
        paths: [/api/**]
gateway:
  hosts: [tiny.test]
  listeners:
    - { name: http, port: 8080, protocol: http }
  routes:
    - name: web
      match: { path: /web/**, methods: [GET] }
      to: web
      public: true
      rateLimit: { requests: 100, per: 1s, key: ip }
`;

/** A spec as parsed YAML, to edit. */
export type RawSpec = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/**
 * Writes TINY edited by `edit` to `file` (the spec a `meshgate up --watch` watches) and returns the
 * watcher's output from then on, once it printed its verdict line (and the reasons after a refusal).
 */
export async function saveTiny(
  file: string,
  output: () => string,
  edit: (raw: RawSpec) => void,
): Promise<string> {
  const raw = parse(TINY) as RawSpec;
  edit(raw);
  const mark = output().length;
  await writeFile(file, stringify(raw));
  const deadline = Date.now() + 60_000;
  while (!/^\[watch\] (✓|✗|the spec changed nothing)/m.test(output().slice(mark))) {
    if (Date.now() > deadline) throw new Error(`no verdict in 60 s:\n${output().slice(mark)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  // A refusal prints its reasons on the lines after the verdict.
  await new Promise((r) => setTimeout(r, 100));
  return output().slice(mark);
}
