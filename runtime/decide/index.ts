export { canonicalizeTarget, canonicalHost } from "./canonical.ts";
export type { CanonicalTarget, CanonicalizeOptions, TargetRejectReason } from "./canonical.ts";
export { parsePathPattern, isPatternError, matchPath, comparePatterns } from "./pattern.ts";
export type { PathPattern, PatternSegment } from "./pattern.ts";
export { Router } from "./router.ts";
export type { CompiledRoute, RouterResult, RouteQuery } from "./router.ts";
export { compileGateway, decide, methodProblem } from "./decide.ts";
export type {
  CompiledGateway,
  Decision,
  GatewayRequestFacts,
  RejectCode,
  RejectDecision,
  RouteDecision,
} from "./decide.ts";
export {
  API_KEY_PROVIDER,
  authorize,
  compileAllRouteAuth,
  compileRouteAuth,
  decideAndAuthorize,
  inRanges,
  mechanismKey,
  parseCidr,
} from "./authorize.ts";
export type {
  AuthMechanismKind,
  AuthorizedDecision,
  AuthzDecision,
  AuthzRequirement,
  CompiledRouteAuth,
  IpRange,
  Principal,
} from "./authorize.ts";
export { compileInbound, decideInbound, INBOUND_DENY_CODES, inboundDenyCodeOf } from "./inbound.ts";
export type {
  CompiledInbound,
  InboundAllow,
  InboundDecision,
  InboundDeny,
  InboundDenyCode,
  InboundFacts,
} from "./inbound.ts";
export { compileOutbound, decideOutbound } from "./outbound.ts";
export type {
  CompiledOutbound,
  OutboundDecision,
  OutboundFacts,
  OutboundReject,
  OutboundRejectCode,
  OutboundRoute,
} from "./outbound.ts";
