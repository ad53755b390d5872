/**
 * Merges the Prometheus text expositions of several processes into one: each family's HELP and TYPE
 * once, then every process's samples with a distinguishing label (e.g. worker="1"). Prometheus sums
 * across the label as usual (`sum without (worker) (...)`).
 */
export function mergeExpositions(
  parts: readonly { label: string; text: string }[],
  labelName = "worker",
): string {
  const order: string[] = [];
  const families = new Map<string, { meta: string[]; samples: string[] }>();
  for (const { label, text } of parts) {
    const value = label.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
    let current: { meta: string[]; samples: string[] } | null = null;
    for (const line of text.split("\n")) {
      if (line === "") continue;
      const meta = /^# (HELP|TYPE) (\S+)/.exec(line);
      if (meta) {
        const name = meta[2]!;
        let family = families.get(name);
        if (!family) {
          family = { meta: [], samples: [] };
          families.set(name, family);
          order.push(name);
        }
        if (family.meta.length < 2 && !family.meta.some((m) => m.startsWith(`# ${meta[1]} `)))
          family.meta.push(line);
        current = family;
        continue;
      }
      if (line.startsWith("#") || !current) continue;
      const brace = line.indexOf("{");
      const space = line.indexOf(" ");
      current.samples.push(
        brace >= 0 && brace < space
          ? `${line.slice(0, brace + 1)}${labelName}="${value}",${line.slice(brace + 1)}`.replace(/,\}/, "}")
          : `${line.slice(0, space)}{${labelName}="${value}"}${line.slice(space)}`,
      );
    }
  }
  const out: string[] = [];
  for (const name of order) {
    const f = families.get(name)!;
    out.push(...f.meta, ...f.samples);
  }
  return `${out.join("\n")}\n`;
}
