/**
 * A split's choice of backend (runtime/gateway/upgrade.ts `chooseBackend`, used by plain requests and
 * WebSocket upgrades): each draw lands on the backend whose share of the integer range it falls in, and
 * a backend of weight 0 gets none — at the draws' edges too, where float arithmetic once could.
 */
import { describe, expect, it } from "vitest";
import { chooseBackend } from "../../runtime/gateway/upgrade.ts";

const JUST_BELOW_ONE = 1 - 2 ** -53;
const SPLIT = [
  { cluster: "a", weight: 30 },
  { cluster: "off", weight: 0 },
  { cluster: "b", weight: 70 },
  { cluster: "retired", weight: 0 },
];

describe("chooseBackend", () => {
  it.each([
    ["the_lowest_draw_goes_to_the_first_backend", 0, "a"],
    ["a_draw_just_below_the_first_share_goes_to_the_first_backend", 0.3 - 2 ** -52, "a"],
    ["a_draw_at_the_first_share_skips_the_weight_0_backend_after_it", 0.3, "b"],
    [
      "the_highest_draw_goes_to_the_last_backend_with_weight_not_the_weight_0_one_after_it",
      JUST_BELOW_ONE,
      "b",
    ],
  ])("%s", (_claim, draw, cluster) => {
    expect(chooseBackend(SPLIT, () => draw)).toBe(cluster);
  });

  it("never_chooses_a_backend_of_weight_0_over_every_draw_of_a_fine_grid", () => {
    const seen = new Map<string, number>();
    const steps = 100_000;
    for (let i = 0; i < steps; i++) {
      const c = chooseBackend(SPLIT, () => i / steps);
      seen.set(c, (seen.get(c) ?? 0) + 1);
    }
    expect([...seen.keys()].sort()).toEqual(["a", "b"]);
    expect(seen.get("a")).toBe(30_000); // exactly its share of an even grid
  });

  it("takes_a_lone_backend_without_a_draw", () => {
    expect(chooseBackend([{ cluster: "only", weight: 100 }], () => Number.NaN)).toBe("only");
  });
});
