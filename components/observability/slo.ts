/**
 * Multi-window, multi-burn-rate SLO alerting as in the SRE workbook (chapter 5, "Alerting on SLOs",
 * recommendation 6): each tier alerts when a share of the error budget is spent within a long window, and
 * only while a short window (1/12 of the long one) still burns as fast, so an alert resets minutes after
 * the burn stops.
 *
 *   tier   budget spent   long window   short window   burn rate (30-day SLO)   severity
 *   fast   2 %            1 h           5 m            14.4×                    critical (page)
 *   fast   5 %            6 h           30 m           6×                       critical (page)
 *   slow   10 %           1 d           2 h            3×                       warning (ticket)
 *   slow   10 %           3 d           6 h            1×                       warning (ticket)
 *
 * The burn rate is the budget share × the SLO window / the long window, so SLO windows other than 30 days
 * keep the same budget shares (a 28-day SLO pages at 13.44× over 1 h). A tier whose long window exceeds
 * the SLO window, or whose threshold (burn rate × error budget) reaches 100 % errors, can never fire
 * usefully and is left out with a diagnostic.
 */

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

export type Speed = "fast" | "slow";
export type Severity = "critical" | "warning";

export interface BurnTier {
  readonly speed: Speed;
  readonly severity: Severity;
  /** Share of the error budget spent within the long window that triggers the tier. */
  readonly budgetShare: number;
  readonly longWindowMs: number;
  readonly shortWindowMs: number;
}

/** The workbook's four tiers (rows of the table above). */
export const BURN_TIERS: readonly BurnTier[] = [
  { speed: "fast", severity: "critical", budgetShare: 0.02, longWindowMs: HOUR, shortWindowMs: 5 * MINUTE },
  {
    speed: "fast",
    severity: "critical",
    budgetShare: 0.05,
    longWindowMs: 6 * HOUR,
    shortWindowMs: 30 * MINUTE,
  },
  { speed: "slow", severity: "warning", budgetShare: 0.1, longWindowMs: DAY, shortWindowMs: 2 * HOUR },
  { speed: "slow", severity: "warning", budgetShare: 0.1, longWindowMs: 3 * DAY, shortWindowMs: 6 * HOUR },
];

/** A tier applied to one SLO: its burn rate and the error-ratio threshold both windows must exceed. */
export interface SloTier extends BurnTier {
  readonly burnRate: number;
  /** burnRate × error budget: the error ratio above which the tier fires. */
  readonly threshold: number;
}

export interface TierPlan {
  readonly tiers: readonly SloTier[];
  /** Why tiers were left out (empty when all four apply). */
  readonly omitted: readonly string[];
}

/** Rounds away float noise (0.1 × 720 / 72 = 1.0000000000000002 → 1). */
const clean = (v: number) => Number(v.toPrecision(12));

/**
 * The tiers for an SLO with this error budget (a ratio: 0.001 for 99.9 %) and window. Pure.
 */
export function sloTiers(errorBudget: number, windowMs: number): TierPlan {
  if (!(errorBudget > 0 && errorBudget < 1))
    throw new RangeError(`error budget must be in (0, 1), got ${errorBudget}`);
  const tiers: SloTier[] = [];
  const omitted: string[] = [];
  for (const t of BURN_TIERS) {
    const burnRate = clean((t.budgetShare * windowMs) / t.longWindowMs);
    const threshold = clean(burnRate * errorBudget);
    const label = `${t.speed} burn (${clean(t.budgetShare * 100)}% of the budget in ${formatWindow(t.longWindowMs)})`;
    if (t.longWindowMs > windowMs) {
      omitted.push(`${label}: its window is longer than the SLO's ${formatWindow(windowMs)}`);
      continue;
    }
    if (threshold >= 1) {
      omitted.push(
        `${label}: it would need an error ratio of ${clean(threshold * 100)}%, which cannot happen`,
      );
      continue;
    }
    tiers.push({ ...t, burnRate, threshold });
  }
  return { tiers, omitted };
}

/** `5m`, `1h`, `3d`: the windows as the docs and alert texts write them. */
export function formatWindow(ms: number): string {
  if (ms % DAY === 0) return `${ms / DAY}d`;
  if (ms % HOUR === 0) return `${ms / HOUR}h`;
  if (ms % MINUTE === 0) return `${ms / MINUTE}m`;
  return `${ms / 1000}s`;
}

/** Every window the tiers of these SLO windows need, ascending (for the recording rules). */
export function windowsFor(plans: readonly TierPlan[]): number[] {
  const set = new Set<number>();
  for (const p of plans)
    for (const t of p.tiers) {
      set.add(t.longWindowMs);
      set.add(t.shortWindowMs);
    }
  return [...set].sort((a, b) => a - b);
}
