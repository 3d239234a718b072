// The soak's model of what ResolveKey must answer, so that every call has a
// well-defined expected outcome.
//
// - Fixed organisations are never changed after seeding: each (organisation,
//   provider) pair has exactly one right answer (its seeded key, the
//   environment fallback, or FAILED_PRECONDITION where the provider has no
//   fallback), on both replicas, for the whole run.
// - Mutable organisations are changed by the administrator loop, one change
//   at a time per pair. Each pair keeps the history of its right answers as
//   "eras": an answer is right for a call if its era overlaps the call, and
//   tolerated (counted apart) if it ended at most `staleGraceMs` before the
//   call began (another replica's cache hears of a change through PostgreSQL
//   NOTIFY, a few milliseconds later). Anything else is an error.
//
// Provider keys live in memory only: nothing here prints or serialises one.
import { randomBytes } from "node:crypto";

export const PROVIDERS = ["openai", "anthropic", "gemini", "fireworks"] as const;
export type Provider = (typeof PROVIDERS)[number];

export const PROVIDER_ENUM: Record<Provider, string> = {
  openai: "PROVIDER_OPENAI",
  anthropic: "PROVIDER_ANTHROPIC",
  gemini: "PROVIDER_GEMINI",
  fireworks: "PROVIDER_FIREWORKS",
};

/** Providers given an environment fallback key in the replicas; the others answer FAILED_PRECONDITION without a credential. */
export const ENV_PROVIDERS: readonly Provider[] = ["openai", "anthropic", "gemini"];
export const ENV_VARIABLE: Record<Provider, string> = {
  openai: "OPENAI_API_KEY",
  anthropic: "ANTHROPIC_API_KEY",
  gemini: "GEMINI_API_KEY",
  fireworks: "FIREWORKS_API_KEY",
};

/** Every key this run made up, so that any text shown can be checked for them (see redact). */
export const issuedKeys = new Set<string>();

const KEY_PREFIX: Record<Provider, string> = { openai: "sk-proj-soak", anthropic: "sk-ant-api03-soak", gemini: "AIzaSoak", fireworks: "fw_soak" };

/** A fresh fake key in the provider's documented format (see service/src/credentials/providers.ts). */
export function fakeKey(provider: Provider): string {
  const key = `${KEY_PREFIX[provider]}${randomBytes(24).toString("base64url")}`;
  issuedKeys.add(key);
  return key;
}

export type Answer =
  { kind: "organization"; credentialId: string; key: string; apiBase: string | null } | { kind: "environment"; key: string } | { kind: "failed_precondition" };

/** What a call returned, reduced to what the model compares. */
export type Outcome =
  | { kind: "organization"; credentialId: string; key: string; apiBase: string | null; organizationId: string }
  | { kind: "environment"; key: string; organizationId: string }
  | { kind: "failed_precondition" }
  | { kind: "not_found" }
  | { kind: "error"; code: string; message: string };

export interface Cred {
  id: string;
  name: string;
  key: string;
  apiBase: string | null;
  version: number;
  active: boolean;
  /** Our order of activation (creation counts): the highest active one is served. */
  activatedSeq: number;
}

interface Era {
  answer: Answer;
  /** performance.now() when the change that made this answer right was sent. */
  from: number;
  /** performance.now() when the change that ended it was answered; open while current. */
  until?: number;
}

export type Verdict = { ok: true; stale: boolean; kind: "organization" | "environment" | "failed_precondition" } | { ok: false; kind: string; detail: string };

let activationCounter = 0;
export const nextActivation = () => ++activationCounter;

export class Pair {
  readonly creds: Cred[] = [];
  private readonly eras: Era[] = [];
  /** Set while a change is in flight: the administrator loop changes one pair at a time. */
  private changing = false;
  private waiters: Array<() => void> = [];
  /** A change whose fate is unknown (transport error): any key this pair ever had is then tolerated. */
  uncertain = false;

  constructor(
    readonly organizationId: string,
    readonly provider: Provider,
    readonly fixed: boolean,
    private readonly envKey: string | undefined,
  ) {}

  get busy(): boolean {
    return this.changing;
  }

  /** A change is being sent. */
  begin(): void {
    this.changing = true;
  }

  /** The change was answered (and, if it succeeded, applied with `changed`): judgements waiting for it go on. */
  end(): void {
    this.changing = false;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /**
   * Like `judge`, but an answer that fits no era while a change is in flight
   * is judged again once that change is answered: the service may serve the
   * new state (a new credential's id, say) before its answer reaches us.
   */
  judgeSettled(outcome: Outcome, startedAt: number, endedAt: number, staleGraceMs: number): Verdict | Promise<Verdict> {
    const verdict = this.judge(outcome, startedAt, endedAt, staleGraceMs);
    if (verdict.ok || !this.changing) return verdict;
    return new Promise<void>((resolve) => this.waiters.push(resolve)).then(() => this.judge(outcome, startedAt, endedAt, staleGraceMs));
  }

  /** The answer the service must give now, from the credentials we know of. */
  expected(): Answer {
    let best: Cred | undefined;
    for (const c of this.creds) if (c.active && (!best || c.activatedSeq > best.activatedSeq)) best = c;
    if (best) return { kind: "organization", credentialId: best.id, key: best.key, apiBase: best.apiBase };
    if (this.envKey !== undefined) return { kind: "environment", key: this.envKey };
    return { kind: "failed_precondition" };
  }

  /** Called once seeding is over: the first era starts at time 0. */
  seal(): void {
    this.eras.length = 0;
    this.eras.push({ answer: this.expected(), from: 0 });
  }

  /** After a change sent at `sentAt` and answered at `answeredAt` has been applied to `creds`. */
  changed(sentAt: number, answeredAt: number, keepEraMs: number): void {
    const next = this.expected();
    const current = this.eras[this.eras.length - 1];
    if (current && sameAnswer(current.answer, next)) return;
    if (current) current.until = answeredAt;
    this.eras.push({ answer: next, from: sentAt });
    // Eras that ended long before any call still in flight could have started are of no more use.
    while (this.eras.length > 1 && (this.eras[0].until ?? Infinity) < answeredAt - keepEraMs) this.eras.shift();
  }

  /** Judges one call's outcome; `[startedAt, endedAt]` in performance.now() time. */
  judge(outcome: Outcome, startedAt: number, endedAt: number, staleGraceMs: number): Verdict {
    if (outcome.kind === "error") return { ok: false, kind: outcome.code, detail: outcome.message };
    if ((outcome.kind === "organization" || outcome.kind === "environment") && outcome.organizationId !== this.organizationId) {
      return { ok: false, kind: "WRONG_ORGANIZATION", detail: `answered for organisation "${outcome.organizationId}"` };
    }
    if (outcome.kind === "not_found") return { ok: false, kind: "NOT_FOUND", detail: "an existing scope was not found" };
    let staleMatch = false;
    let oldMatch: Era | undefined;
    for (let i = this.eras.length - 1; i >= 0; i--) {
      const era = this.eras[i];
      if (!matches(era.answer, outcome)) continue;
      if (era.from <= endedAt && (era.until === undefined || era.until >= startedAt)) {
        return { ok: true, stale: false, kind: era.answer.kind };
      }
      if (era.until !== undefined && era.until + staleGraceMs >= startedAt) staleMatch = true;
      else oldMatch ??= era;
    }
    if (staleMatch) return { ok: true, stale: true, kind: outcome.kind as "organization" | "environment" | "failed_precondition" };
    if (this.uncertain && outcome.kind === "organization" && this.creds.some((c) => c.id === outcome.credentialId && c.key === outcome.key)) {
      return { ok: true, stale: true, kind: "organization" };
    }
    const expected = this.expected();
    if (oldMatch) {
      return {
        ok: false,
        kind: "STALE",
        detail: `served ${describe(outcome)} more than ${staleGraceMs} ms after it stopped being right (now ${describe(expected)})`,
      };
    }
    if (outcome.kind === "failed_precondition") return { ok: false, kind: "FAILED_PRECONDITION", detail: `expected ${describe(expected)}` };
    const kind =
      outcome.kind === "organization" && expected.kind === "organization" && outcome.credentialId === expected.credentialId ? "WRONG_KEY" : "WRONG_ANSWER";
    return { ok: false, kind, detail: `served ${describe(outcome)}, expected ${describe(expected)}` };
  }
}

function sameAnswer(a: Answer, b: Answer): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === "organization" && b.kind === "organization") return a.credentialId === b.credentialId && a.key === b.key && a.apiBase === b.apiBase;
  if (a.kind === "environment" && b.kind === "environment") return a.key === b.key;
  return true;
}

function matches(answer: Answer, outcome: Outcome): boolean {
  if (answer.kind !== outcome.kind) return false;
  if (answer.kind === "organization" && outcome.kind === "organization") {
    return answer.credentialId === outcome.credentialId && answer.key === outcome.key && answer.apiBase === outcome.apiBase;
  }
  if (answer.kind === "environment" && outcome.kind === "environment") return answer.key === outcome.key;
  return true;
}

/** A description without key material: which credential, never its key. */
function describe(answer: Answer | Outcome): string {
  switch (answer.kind) {
    case "organization":
      return `credential ${answer.credentialId}${answer.apiBase ? " (with api_base)" : ""}`;
    case "environment":
      return "the environment fallback key";
    case "failed_precondition":
      return "FAILED_PRECONDITION";
    case "not_found":
      return "NOT_FOUND";
    case "error":
      return answer.code;
  }
}

// ---------------------------------------------------------------- the data set

export interface OrgSpec {
  id: string;
  fixed: boolean;
  teams: string[];
}

/**
 * Fixed pairs cycle through these seeding patterns (20 slots): no credential,
 * one active, one active behind a proxy (api_base), two active (the later one
 * is served), an active one and a newer deactivated one (the older is served).
 */
export type Pattern = "none" | "one" | "api_base" | "two_active" | "newer_inactive";
const FIXED_CYCLE: Pattern[] = [
  ...Array<Pattern>(10).fill("none"),
  ...Array<Pattern>(4).fill("one"),
  ...Array<Pattern>(2).fill("api_base"),
  ...Array<Pattern>(2).fill("two_active"),
  ...Array<Pattern>(2).fill("newer_inactive"),
];
const MUTABLE_CYCLE: Pattern[] = ["none", "one", "one", "none"];

export function patternOf(org: OrgSpec, orgIndex: number, providerIndex: number): Pattern {
  if (org.fixed) return FIXED_CYCLE[((orgIndex * PROVIDERS.length + providerIndex) * 7) % FIXED_CYCLE.length];
  return MUTABLE_CYCLE[(orgIndex + providerIndex) % MUTABLE_CYCLE.length];
}

export function dataSet(organizations: number, mutableShare = 0.2): OrgSpec[] {
  const mutable = Math.max(1, Math.round(organizations * mutableShare));
  const orgs: OrgSpec[] = [];
  for (let i = 0; i < organizations; i++) {
    const fixed = i >= mutable;
    const id = fixed ? `soak-fixed-${String(i - mutable + 1).padStart(4, "0")}` : `soak-mutable-${String(i + 1).padStart(4, "0")}`;
    orgs.push({ id, fixed, teams: [`${id}-team-a`, `${id}-team-b`] });
  }
  return orgs;
}

/** Deterministic pseudo-random numbers (mulberry32). */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Replaces any of `secrets` found in `text` (a service log line, an error message) before it is shown. */
export function redact(text: string, secrets: Iterable<string> = issuedKeys): string {
  let out = text;
  for (const s of secrets) if (s.length >= 8 && out.includes(s)) out = out.split(s).join("[REDACTED KEY]");
  return out;
}

/** Errors by kind, with the first few examples (redacted). */
export class ErrorTally {
  readonly byKind: Record<string, number> = {};
  readonly examples: string[] = [];
  total = 0;

  record(kind: string, detail: string): void {
    this.total++;
    this.byKind[kind] = (this.byKind[kind] ?? 0) + 1;
    if (this.examples.length < 12) this.examples.push(redact(`${kind}: ${detail}`).slice(0, 400));
  }
}
