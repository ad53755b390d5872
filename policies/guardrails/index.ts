/**
 * The built-in guardrails, in the order `meshgate verify` runs and prints them. Each lives in its own
 * folder beside a suite.yaml of allowed and disallowed fixture specs (test/policies/suites.test.ts runs
 * them and fails when a folder lacks cases).
 */
import type { Guardrail } from "../types.ts";
import { adminPorts } from "./admin-ports/index.ts";
import { callsAllow } from "./calls-allow/index.ts";
import { clientAddress } from "./client-address/index.ts";
import { certificates } from "./certificates/index.ts";
import { defaultDeny } from "./default-deny/index.ts";
import { idempotentRetries } from "./idempotent-retries/index.ts";
import { observability } from "./observability/index.ts";
import { publicRateLimit } from "./public-rate-limit/index.ts";
import { references } from "./references/index.ts";
import { retryAmplification } from "./retry-amplification/index.ts";
import { routeAuth } from "./route-auth/index.ts";
import { routePrecedence } from "./route-precedence/index.ts";
import { strictMtls } from "./strict-mtls/index.ts";
import { timeoutBudget } from "./timeout-budget/index.ts";

export const GUARDRAILS: readonly Guardrail[] = Object.freeze([
  strictMtls,
  defaultDeny,
  routeAuth,
  publicRateLimit,
  clientAddress,
  routePrecedence,
  references,
  callsAllow,
  retryAmplification,
  timeoutBudget,
  idempotentRetries,
  certificates,
  observability,
  adminPorts,
]);
