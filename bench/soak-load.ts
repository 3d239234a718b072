// The ResolveKey load of the soak: against one replica, a fixed number of
// grpc-js calls in flight (closed loop) over every organisation and team of
// the data set, each answer judged by the model (soak-model.ts).
import { performance } from "node:perf_hooks";
import type * as grpc from "@grpc/grpc-js";
import type { ServiceClient } from "./clients.js";
import { Histogram } from "./histogram.js";
import { toOutcome, type ResolveResponse } from "./soak-grpc.js";
import { PROVIDER_ENUM, random, type ErrorTally, type Pair, type Verdict } from "./soak-model.js";

export interface Target {
  request: { organization_id: string; provider: string } | { team_id: string; provider: string };
  scope: string;
  pair: Pair;
}

export function targetsOf(pairs: Iterable<Pair>, teamsOf: (organizationId: string) => string[]): Target[] {
  const targets: Target[] = [];
  for (const pair of pairs) {
    const provider = PROVIDER_ENUM[pair.provider];
    targets.push({ request: { organization_id: pair.organizationId, provider }, scope: `organization ${pair.organizationId}`, pair });
    for (const team of teamsOf(pair.organizationId)) targets.push({ request: { team_id: team, provider }, scope: `team ${team}`, pair });
  }
  return targets;
}

const DEADLINE_MS = 10_000;
const DRAIN_TIMEOUT_MS = 15_000;

export class ResolveLoad {
  calls = 0;
  /** Right answers by kind; `stale` counts those tolerated within the grace period after a change. */
  readonly outcomes = { organization: 0, environment: 0, failedPrecondition: 0, staleWithinGrace: 0, fixedPairs: 0, mutablePairs: 0 };
  errors = 0;
  readonly latency = new Histogram();
  /** Calls still unanswered when the drain gave up. */
  stuck = 0;
  /** Answers whose judgement waits for a change in flight to be answered. */
  pending = 0;
  private inFlight = 0;
  private stopping = false;
  private drained: () => void = () => undefined;
  private readonly rand: () => number;

  constructor(
    private readonly replicaName: string,
    private readonly client: ServiceClient,
    private readonly metadata: grpc.Metadata,
    private readonly targets: Target[],
    private readonly concurrency: number,
    private readonly tally: ErrorTally,
    private readonly staleGraceMs: number,
    seed: number,
  ) {
    this.rand = random(seed);
  }

  start(): void {
    for (let i = 0; i < this.concurrency; i++) this.issue();
  }

  /** Stops issuing and waits (up to 15 s) for the calls in flight. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.inFlight === 0) return;
    const done = new Promise<void>((resolve) => (this.drained = resolve));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      done.then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), DRAIN_TIMEOUT_MS))),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      this.stuck = this.inFlight;
      for (let i = 0; i < this.stuck; i++)
        this.tally.record("STUCK", `a ResolveKey call to ${this.replicaName} unanswered ${DRAIN_TIMEOUT_MS} ms after the load stopped`);
    }
  }

  private count(target: Target, verdict: Verdict): void {
    if (verdict.ok) {
      if (verdict.stale) this.outcomes.staleWithinGrace++;
      if (verdict.kind === "organization") this.outcomes.organization++;
      else if (verdict.kind === "environment") this.outcomes.environment++;
      else this.outcomes.failedPrecondition++;
      if (target.pair.fixed) this.outcomes.fixedPairs++;
      else this.outcomes.mutablePairs++;
    } else {
      this.errors++;
      this.tally.record(
        verdict.kind,
        `${target.scope}/${target.pair.provider} on ${this.replicaName}${target.pair.fixed ? " (fixed)" : ""}: ${verdict.detail}`,
      );
    }
  }

  private issue(): void {
    if (this.stopping) {
      if (this.inFlight === 0) this.drained();
      return;
    }
    const target = this.targets[Math.floor(this.rand() * this.targets.length)];
    this.inFlight++;
    const startedAt = performance.now();
    this.client.ResolveKey(target.request, this.metadata, { deadline: Date.now() + DEADLINE_MS }, (error, response) => {
      const endedAt = performance.now();
      this.inFlight--;
      this.calls++;
      this.latency.record((endedAt - startedAt) * 1000);
      const outcome = toOutcome(error, response as ResolveResponse | undefined);
      const verdict = target.pair.judgeSettled(outcome, startedAt, endedAt, this.staleGraceMs);
      if (verdict instanceof Promise) {
        this.pending++;
        void verdict.then((v) => {
          this.pending--;
          this.count(target, v);
        });
      } else {
        this.count(target, verdict);
      }
      this.issue();
    });
  }
}
