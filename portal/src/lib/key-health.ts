/** How the pages name key checks and selection strategies; safe for the browser (no server code). */

export type KeyCheckOutcomeName = "valid" | "invalid_key" | "no_permission" | "rate_limited" | "unreachable" | "unexpected";

export interface OutcomeDisplay {
  /** The badge's text. */
  label: string;
  /** The badge's colour class: `active` (green), `danger` (red), `warning` (amber), `inactive` (grey). */
  tone: "active" | "danger" | "warning" | "inactive";
}

export const OUTCOMES: Record<KeyCheckOutcomeName, OutcomeDisplay> = {
  valid: { label: "Valid", tone: "active" },
  invalid_key: { label: "Invalid key", tone: "danger" },
  no_permission: { label: "No permission", tone: "danger" },
  rate_limited: { label: "Rate limited", tone: "warning" },
  unreachable: { label: "Unreachable", tone: "warning" },
  unexpected: { label: "Unexpected", tone: "inactive" },
};

export function outcomeDisplay(outcome: string): OutcomeDisplay {
  return outcome in OUTCOMES ? OUTCOMES[outcome as KeyCheckOutcomeName] : { label: outcome, tone: "inactive" };
}

export const STRATEGY_NAMES = ["newest", "round_robin", "weighted"] as const;
export type StrategyName = (typeof STRATEGY_NAMES)[number];

export const STRATEGIES: Record<StrategyName, { label: string; description: string }> = {
  newest: { label: "Newest", description: "The most recently activated healthy key (the default)." },
  round_robin: { label: "Round robin", description: "The healthy active keys in turn." },
  weighted: { label: "Weighted", description: "A random healthy key, in proportion to its weight." },
};

export function isStrategyName(value: unknown): value is StrategyName {
  return typeof value === "string" && (STRATEGY_NAMES as readonly string[]).includes(value);
}

export function strategyLabel(name: string): string {
  return isStrategyName(name) ? STRATEGIES[name].label : name;
}

/** "1 use", "1,234 uses" (the same text on the server and in the browser, whatever their locales). */
export function uses(count: number): string {
  return `${String(count).replace(/\B(?=(\d{3})+(?!\d))/g, ",")} ${count === 1 ? "use" : "uses"}`;
}

/** A check's facts for people: "HTTP 401, 45 ms" or "no answer, 10000 ms". */
export function checkFacts(check: { http_status: number | null; latency_ms: number }): string {
  return `${check.http_status === null ? "no answer" : `HTTP ${check.http_status}`}, ${check.latency_ms} ms`;
}
