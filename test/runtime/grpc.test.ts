/**
 * gRPC at the proxies: which requests are gRPC, the HTTP → gRPC status table of their own error answers
 * (gRPC's http-grpc-status-mapping, as Envoy applies it to its local replies; an upstream timeout is
 * DEADLINE_EXCEEDED), grpc-message percent-encoding, and the grpc-timeout deadline.
 */
import { describe, expect, it } from "vitest";
import {
  encodeGrpcMessage,
  formatGrpcTimeout,
  grpcDeadline,
  grpcStatusFor,
  grpcStatusOf,
  grpcTrailersOnly,
  isGrpc,
  parseGrpcTimeout,
} from "../../runtime/upstream/grpc.ts";

describe("gRPC at the proxies", () => {
  it.each([
    ["application/grpc", true],
    ["application/grpc+proto", true],
    ["Application/GRPC", true],
    ["application/grpc;charset=utf-8", true],
    ["application/grpc-web", false],
    ["application/grpcx", false],
    ["application/json", false],
    [undefined, false],
  ])("tells_grpc_content_type_%s", (type, expected) => {
    expect(isGrpc(type)).toBe(expected);
  });

  it.each([
    [400, 13],
    [401, 16],
    [403, 7],
    [404, 12],
    [429, 14],
    [502, 14],
    [503, 14],
    [504, 14],
    [408, 2],
    [413, 2],
    [500, 2],
  ])("maps_http_%i_to_grpc_status_%i", (http, grpc) => {
    expect(grpcStatusOf(http)).toBe(grpc);
  });

  it("percent_encodes_grpc_message_outside_printable_ascii_and_percent", () => {
    expect(encodeGrpcMessage("no rule admits spiffe://x/ns/a/sa/b")).toBe(
      "no rule admits spiffe://x/ns/a/sa/b",
    );
    expect(encodeGrpcMessage("50% done\né")).toBe("50%25 done%0A%C3%A9");
  });

  it("builds_trailers_only_headers_with_the_sidecar_code_and_reason", () => {
    expect(
      grpcTrailersOnly(7, "denied", "authz_denied", { "x-meshgate-denied": "peer_not_allowed" }),
    ).toEqual({
      "content-type": "application/grpc",
      "grpc-status": "7",
      "grpc-message": "denied",
      "x-meshgate-error": "authz_denied",
      "x-meshgate-denied": "peer_not_allowed",
    });
  });

  it.each([
    [504, "upstream_timeout", 4],
    [504, "not_cached", 14],
    [503, "upstream_connect_failure", 14],
    [403, "authz_denied", 7],
    [401, "unauthenticated", 16],
    [429, "rate_limited", 14],
  ])("answers_http_%i_%s_with_grpc_status_%i", (http, code, grpc) => {
    expect(grpcStatusFor(http, code)).toBe(grpc);
  });

  it.each([
    ["1H", 3_600_000],
    ["2M", 120_000],
    ["3S", 3000],
    ["250m", 250],
    ["1500u", 2],
    ["500u", 1],
    ["1n", 1],
    ["99999999m", 99_999_999],
    ["0m", 0],
    ["00000010S", 10_000],
  ])("parses_grpc_timeout_%s_as_%i_ms", (value, ms) => {
    expect(parseGrpcTimeout(value)).toBe(ms);
  });

  it.each([
    [undefined],
    [""],
    ["S"],
    ["10"],
    ["10s"],
    ["10 S"],
    ["-1S"],
    ["+1S"],
    ["1.5S"],
    ["123456789m"],
    ["10S, 20S"],
    ["１S"],
  ])("ignores_malformed_grpc_timeout_%s", (value) => {
    expect(parseGrpcTimeout(value)).toBeUndefined();
  });

  it.each([
    [0, "0m"],
    [250, "250m"],
    [0.2, "1m"],
    [99_999_999, "99999999m"],
    [100_000_000, "100000S"],
  ])("formats_%d_ms_as_grpc_timeout_%s", (ms, value) => {
    expect(formatGrpcTimeout(ms)).toBe(value);
    expect(parseGrpcTimeout(value)).toBeGreaterThanOrEqual(Math.ceil(ms));
  });

  it.each([
    ["a_shorter_client_deadline_wins_and_is_forwarded_as_sent", 15_000, "2S", 2000, undefined],
    ["an_equal_client_deadline_is_forwarded_as_sent", 2000, "2S", 2000, undefined],
    ["a_longer_client_deadline_is_cut_to_the_route_timeout_and_the_upstream_told", 1000, "1M", 1000, "1000m"],
    ["no_client_deadline_sends_the_route_timeout_upstream", 1000, undefined, 1000, "1000m"],
    ["a_malformed_client_deadline_is_replaced_by_the_route_timeout", 1000, "soon", 1000, "1000m"],
  ])("deadline_%s", (_claim, route, header, timeoutMs, upstreamHeader) => {
    expect(grpcDeadline(route, header)).toEqual({ timeoutMs, upstreamHeader });
  });
});
