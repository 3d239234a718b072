// Cross-replica invalidation: deactivate on replica A, resolve on replica B
// until B stops serving the deactivated key; then re-activate for the next trial.
import { performance } from "node:perf_hooks";
import { bearer, call, credentialClient } from "./clients.js";
import type { InvalidationFixture } from "./seed.js";

export interface InvalidationResult {
  trials: number;
  converged: number;
  /** ms from the DeactivateCredential response on A to B's first answer without the deactivated key. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Answers from B that still carried the deactivated key after A had answered. */
  staleAnswers: number;
  /** Same, for the re-activation (B must start serving the re-activated, newest key again). */
  reactivation: { converged: number; p50Ms: number; p99Ms: number; maxMs: number };
  /** Trials where B's answer was neither key (should be none). */
  wrongAnswers: number;
  timeoutMs: number;
}

interface ResolveResponse {
  credential_id?: string;
}

export function percentile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = values.slice().sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

export async function measureInvalidation(options: {
  replicaA: string;
  replicaB: string;
  adminToken: string;
  resolveToken: string;
  fixtures: InvalidationFixture[];
  trials: number;
  timeoutMs?: number;
}): Promise<InvalidationResult> {
  const timeoutMs = options.timeoutMs ?? 2_000;
  const a = credentialClient(options.replicaA);
  const b = credentialClient(options.replicaB);
  const admin = bearer(options.adminToken);
  const resolver = bearer(options.resolveToken);
  const latencies: number[] = [];
  const reactivations: number[] = [];
  let staleAnswers = 0;
  let wrongAnswers = 0;

  const resolveOnB = async (organizationId: string) =>
    (await call<ResolveResponse>(b, "ResolveKey", { organization_id: organizationId, provider: "PROVIDER_OPENAI" }, resolver)).credential_id;

  /** Polls B until `accept` holds; the elapsed ms since `since`, or undefined on timeout. */
  const pollB = async (organizationId: string, since: number, accept: (id: string | undefined) => boolean, onReject?: (id: string | undefined) => void) => {
    while (performance.now() - since < timeoutMs) {
      const id = await resolveOnB(organizationId);
      if (accept(id)) return performance.now() - since;
      onReject?.(id);
    }
    return undefined;
  };

  try {
    for (let trial = 0; trial < options.trials; trial++) {
      const f = options.fixtures[trial % options.fixtures.length];
      // B serves the newer key, from its cache after the first call.
      const ready = await pollB(f.organizationId, performance.now(), (id) => id === f.newerCredentialId);
      if (ready === undefined) throw new Error(`replica B never served the newer key of ${f.organizationId}`);
      await resolveOnB(f.organizationId);

      await call(a, "DeactivateCredential", { credential_id: f.newerCredentialId }, admin);
      const deactivated = performance.now();
      const elapsed = await pollB(
        f.organizationId,
        deactivated,
        (id) => id !== f.newerCredentialId,
        () => staleAnswers++,
      );
      if (elapsed !== undefined) {
        latencies.push(elapsed);
        if ((await resolveOnB(f.organizationId)) !== f.olderCredentialId) wrongAnswers++;
      }

      await call(a, "ActivateCredential", { credential_id: f.newerCredentialId }, admin);
      const activated = performance.now();
      const back = await pollB(f.organizationId, activated, (id) => id === f.newerCredentialId);
      if (back !== undefined) reactivations.push(back);
    }
  } finally {
    a.close();
    b.close();
  }
  return {
    trials: options.trials,
    converged: latencies.length,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    maxMs: latencies.length ? Math.max(...latencies) : NaN,
    staleAnswers,
    reactivation: {
      converged: reactivations.length,
      p50Ms: percentile(reactivations, 0.5),
      p99Ms: percentile(reactivations, 0.99),
      maxMs: reactivations.length ? Math.max(...reactivations) : NaN,
    },
    wrongAnswers,
    timeoutMs,
  };
}
