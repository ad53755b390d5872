import { describe, expect, it } from "vitest";
import { formatDuration, isDuration, parseDuration, parseSize } from "../../components/spec/units.ts";

describe("durations and sizes", () => {
  it.each([
    ["500ms", 500],
    ["2s", 2000],
    ["1.5s", 1500],
    ["1m30s", 90_000],
    ["24h", 86_400_000],
    ["7d", 604_800_000],
    ["10y", 315_360_000_000],
    ["1h0m5s", 3_605_000],
  ])("parses_duration_%s", (text, ms) => expect(parseDuration(text)).toBe(ms));

  it.each(["", "5", "5 s", "5sec", "-1s", "1.s", "s", "1S", "5 seconds", "1e3ms"])(
    "rejects_duration_%j",
    (text) => {
      expect(isDuration(text)).toBe(false);
      expect(() => parseDuration(text)).toThrow(/not a duration/);
    },
  );

  it.each([
    ["512B", 512],
    ["16KiB", 16_384],
    ["1MiB", 1_048_576],
    ["1.5MiB", 1_572_864],
    ["2GiB", 2_147_483_648],
    ["1KB", 1000],
    ["3MB", 3_000_000],
  ])("parses_size_%s", (text, bytes) => expect(parseSize(text)).toBe(bytes));

  it.each(["1", "1mb", "1 MiB", "MiB", "1TiB", "-1KiB"])("rejects_size_%j", (text) => {
    expect(() => parseSize(text)).toThrow(/not a size/);
  });

  it.each([
    [1500, "1500ms"],
    [60_000, "1m"],
    [86_400_000, "1d"],
    [2000, "2s"],
  ])("formats_%d_ms_as_%s", (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
    expect(parseDuration(formatDuration(ms))).toBe(ms);
  });
});
