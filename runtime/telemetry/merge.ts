/**
 * Merges the Prometheus text expositions of several processes into one: each family's HELP and TYPE
 * once, then every process's samples with a distinguishing label (e.g. worker="1"). Prometheus sums
 * across the label as usual (`sum without (worker) (...)`). A part whose label is null (the merging
 * process's own metrics) keeps its samples as they are: a family it shares with the others is still
 * written once — a second HELP or TYPE line for a name is a parse error (promtool, OpenMetrics parsers).
 */
export function mergeExpositions(
  parts: readonly { label: string | null; text: string }[],
  labelName = "worker",
): string {
  const order: string[] = [];
  const families = new Map<string, { meta: string[]; samples: string[] }>();
  for (const { label, text } of parts) {
    const value =
      label === null ? null : label.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
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
      if (value === null) {
        current.samples.push(line);
        continue;
      }
      const brace = line.indexOf("{");
      const space = line.indexOf(" ");
      current.samples.push(
        brace >= 0 && brace < space
          ? // `name{} 1` gets no comma; a label value holding ",}" is left as it is.
            `${line.slice(0, brace + 1)}${labelName}="${value}"${line.charCodeAt(brace + 1) === 125 /* } */ ? "" : ","}${line.slice(brace + 1)}`
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
