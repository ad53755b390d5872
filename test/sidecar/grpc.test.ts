/**
 * The gRPC answers of sidecar errors: which requests are gRPC, the HTTP → gRPC status table (gRPC's
 * http-grpc-status-mapping, as Envoy applies it to its local replies), grpc-message percent-encoding.
 */
import { describe, expect, it } from "vitest";
import { encodeGrpcMessage, grpcStatusOf, grpcTrailersOnly, isGrpc } from "../../runtime/sidecar/grpc.ts";

describe("gRPC error answers", () => {
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
});
