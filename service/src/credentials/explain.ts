import { PROVIDER_NAMES, PROVIDERS } from "@provider-credentials/wire/providers";
import type { ProviderName, SelectionStrategyName } from "../db/entities.js";
import type { OrganizationLimit } from "../auth/tokens.js";
import type { CredentialStanding, CredentialStore } from "./credential-store.js";
import { rankCandidates, sharesOf, type KeyResolver, type ResolveScope } from "./resolver.js";
import type { StoredResolution } from "./resolution-cache.js";

/** How a credential takes part in resolutions now (CredentialStanding in the proto). */
export type StandingName = "in_use" | "standby" | "shared" | "skipped_failing" | "inactive" | "zero_weight";

export interface CredentialExplanation {
  credentialId: string;
  credentialName: string;
  standing: StandingName;
  /** 0-1. */
  share: number;
  weight: number;
  keyHint: string;
}

export interface ProviderExplanation {
  provider: ProviderName;
  strategy: SelectionStrategyName;
  /** Where ResolveKey's key comes from now; null: it answers FAILED_PRECONDITION. */
  source: "organization" | "environment" | null;
  environmentFallback: boolean;
  servingCredentialId: string | null;
  credentials: CredentialExplanation[];
  summary: string;
}

export interface Explanation {
  organizationId: string;
  resolutions: ProviderExplanation[];
}

/**
 * ExplainResolution: for each provider, ResolveKey's own candidates (KeyResolver.candidatesFor: the same load and
 * cache) ranked by ResolveKey's own ranking (rankCandidates, sharesOf), and every other credential of the
 * organisation marked inactive. Nothing here chooses a credential by itself; no key is read.
 */
export async function explainResolution(
  resolver: KeyResolver,
  credentials: CredentialStore,
  scope: ResolveScope,
  providers: readonly ProviderName[],
  organizations: OrganizationLimit,
): Promise<Explanation> {
  let organizationId: string | undefined;
  const stored: StoredResolution[] = [];
  for (const provider of providers) {
    // A team's organisation is known after the first look-up: later providers ask by organisation (the shared entry).
    const current = await resolver.candidatesFor(organizationId === undefined ? scope : { organizationId }, provider, organizations);
    organizationId = current.organizationId;
    stored.push(current);
  }
  if (organizationId === undefined) throw new Error("explainResolution needs at least one provider");
  const listed = await credentials.standings(organizationId, providers.length === 1 ? providers[0] : undefined);
  const resolutions = providers.map((provider, i) =>
    explainProvider(
      provider,
      stored[i],
      listed.filter((c) => c.provider === provider),
      resolver.hasEnvironmentFallback(provider),
    ),
  );
  return { organizationId, resolutions };
}

function explainProvider(provider: ProviderName, stored: StoredResolution, listed: CredentialStanding[], environmentFallback: boolean): ProviderExplanation {
  const ranking = rankCandidates(stored);
  const shares = sharesOf(ranking);
  const byId = new Map(listed.map((c) => [c.id, c]));
  const skipped = new Set(ranking.skipped.map((c) => c.id));
  const pool = new Set(ranking.pool.map((c) => c.id));
  const served = ranking.rule === "single" || ranking.rule === "newest" || ranking.rule === "all_failing" ? ranking.pool[0] : undefined;
  const credentials: CredentialExplanation[] = [];
  const seen = new Set<string>();
  // ResolveKey's candidates first, in its order (most recently activated first).
  for (const candidate of stored.candidates) {
    const facts = byId.get(candidate.id);
    if (!facts) continue; // deleted since the candidates were read
    seen.add(candidate.id);
    const share = shares.get(candidate.id) ?? 0;
    let standing: StandingName;
    if (served !== undefined) standing = candidate.id === served.id ? "in_use" : skipped.has(candidate.id) ? "skipped_failing" : "standby";
    else if (skipped.has(candidate.id)) standing = "skipped_failing";
    else if (pool.has(candidate.id) && share > 0) standing = "shared";
    else standing = "zero_weight";
    credentials.push({ credentialId: candidate.id, credentialName: facts.credentialName, standing, share, weight: facts.weight, keyHint: facts.keyHint });
  }
  // The rest: not handed out. Active ones beyond ResolveKey's candidates wait as standby; the others are inactive
  // (deactivated, or their roll overlap has ended and the service is about to deactivate them).
  const now = Date.now();
  for (const c of listed) {
    if (seen.has(c.id)) continue;
    const live = c.isActive && (c.deactivateAt === null || c.deactivateAt.getTime() > now);
    credentials.push({
      credentialId: c.id,
      credentialName: c.credentialName,
      standing: live ? "standby" : "inactive",
      share: 0,
      weight: c.weight,
      keyHint: c.keyHint,
    });
  }
  const source = ranking.rule !== "none" ? "organization" : environmentFallback ? "environment" : null;
  return {
    provider,
    strategy: stored.strategy,
    source,
    environmentFallback,
    servingCredentialId: served?.id ?? null,
    credentials,
    summary: summaryOf(
      provider,
      ranking.rule,
      ranking.pool.length,
      ranking.skipped.length,
      served ? byId.get(served.id)?.credentialName : undefined,
      environmentFallback,
    ),
  };
}

function summaryOf(
  provider: ProviderName,
  rule: ReturnType<typeof rankCandidates>["rule"],
  pooled: number,
  skipped: number,
  servedName: string | undefined,
  environmentFallback: boolean,
): string {
  const variables = PROVIDERS[provider].envVars.join(" / ");
  const name = servedName === undefined ? "one credential" : `"${servedName}"`;
  const skippedText = skipped === 0 ? "" : `; ${skipped} failing ${skipped === 1 ? "credential is" : "credentials are"} skipped`;
  switch (rule) {
    case "none":
      return environmentFallback
        ? `no active credential: calls get the service's ${variables} environment variable`
        : `no active credential and ${variables} is not set: ResolveKey answers FAILED_PRECONDITION`;
    case "single":
      return `${name} is the only healthy active credential: it is in use${skippedText}`;
    case "newest":
      return `newest: the most recently activated healthy credential, ${name}, is in use${skippedText}`;
    case "round_robin":
      return `round robin: calls rotate among ${pooled} healthy credentials${skippedText}`;
    case "weighted":
      return `weighted: calls are shared among ${pooled} healthy credentials in proportion to their weights${skippedText}`;
    case "all_failing":
      return `every active credential is marked failing: the most recently activated, ${name}, is handed out, flagged failing`;
  }
}

/** Every provider, in the proto's Provider order. */
export const ALL_PROVIDERS: readonly ProviderName[] = PROVIDER_NAMES;
