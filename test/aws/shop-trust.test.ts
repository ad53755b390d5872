/**
 * The shop example behind an ALB on the AWS stack's network: X-Forwarded-For is believed from the
 * public subnets (where an internet-facing ALB has its nodes) and never from the private subnets the
 * pods take their addresses from — a pod that could name a client address would pass the
 * `partner-bulk-orders` route's `clientIps`.
 */
import { describe, expect, it } from "vitest";
import { subnetCidrs } from "../../components/aws/network.ts";
import { loadSpecFile } from "../../components/spec/load.ts";
import { inRanges, parseCidr, type IpRange } from "../../runtime/decide/authorize.ts";

async function trusted(file: string): Promise<IpRange[]> {
  const r = await loadSpecFile(file);
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return (r.spec.gateway?.clientIp?.trustedProxies ?? []).map((c) => parseCidr(c)!);
}

/** The first, a middle and the last address of an IPv4 CIDR. */
function samples(cidr: string): string[] {
  const [addr, bits] = cidr.split("/") as [string, string];
  const base = addr.split(".").reduce((n, o) => n * 256 + Number(o), 0);
  const size = 2 ** (32 - Number(bits));
  const ip = (n: number) => [24, 16, 8, 0].map((s) => (n >>> s) & 255).join(".");
  return [ip(base), ip(base + size / 2), ip(base + size - 1)];
}

const { public: publicSubnets, private: privateSubnets } = subnetCidrs("10.0.0.0/16", 3);

describe.each(["examples/shop/mesh.yaml", "examples/shop/mesh.ts"])("%s", (file) => {
  it.each(privateSubnets)("trusts_no_address_of_the_pod_subnet_%s", async (cidr) => {
    const ranges = await trusted(file);
    for (const ip of samples(cidr)) expect(inRanges(ranges, ip), ip).toBe(false);
  });

  it.each(publicSubnets)("trusts_the_alb_subnet_%s", async (cidr) => {
    const ranges = await trusted(file);
    for (const ip of samples(cidr)) expect(inRanges(ranges, ip), ip).toBe(true);
  });

  it("trusts_the_machine_itself_for_local_mode", async () => {
    expect(inRanges(await trusted(file), "127.0.0.1")).toBe(true);
  });
});
