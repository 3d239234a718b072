// The benchmark's data set, named deterministically so that the seeder and the
// load generators agree on every id without passing lists between processes.

/** Providers as the proto enum names them (grpc-js with `enums: String`) and as the database stores them. */
export const PROVIDERS = [
  { proto: "PROVIDER_OPENAI", db: "openai" },
  { proto: "PROVIDER_ANTHROPIC", db: "anthropic" },
  { proto: "PROVIDER_GEMINI", db: "gemini" },
  { proto: "PROVIDER_FIREWORKS", db: "fireworks" },
] as const;

export type ProviderDbName = (typeof PROVIDERS)[number]["db"];

export const SIZES = {
  organizations: 10_000,
  teams: 20_000,
  credentials: 50_000,
  /** Credentials of the one organisation used for the listing measurement. */
  listingCredentials: 10_000,
  /** Organisations used for the invalidation trials (two active OpenAI keys each). */
  invalidationOrganizations: 100,
  /** Organisations of the hot set, case (b). */
  hotOrganizations: 100,
  /**
   * Organisations used only by the memory fill (one active credential per provider each):
   * they give the cache 40,000 more organisation/provider entries than the 120,000 pairs of
   * the resolve workload do, and no other workload touches them.
   */
  memoryOrganizations: 10_000,
};

/** The cache bound of the cached service (RESOLVE_CACHE_MAX_ENTRIES) and the entries the memory target is read with. */
export const MEMORY_TARGET_ENTRIES = 100_000;

const pad = (n: number, width: number) => String(n).padStart(width, "0");

/** Organisation i, 1-based. */
export const organizationId = (i: number) => `org-${pad(i, 5)}`;
/** Team i, 1-based; team i belongs to organisation ((i - 1) mod 10,000) + 1. */
export const teamId = (i: number) => `team-${pad(i, 5)}`;
export const teamOrganization = (i: number) => ((i - 1) % SIZES.organizations) + 1;
/** Every tenth organisation has no credential at all: its calls hit the environment fallback. */
export const hasCredentials = (organization: number) => organization % 10 !== 0;

export const LISTING_ORGANIZATION = "bench-listing";
export const invalidationOrganizationId = (i: number) => `bench-inv-${pad(i, 3)}`;
/** Memory-fill organisation i, 1-based. */
export const memoryOrganizationId = (i: number) => `bench-mem-${pad(i, 5)}`;

/** A ResolveKey request as grpc-js with `keepCase: true` takes it. */
export type ResolveRequest = { organization_id: string; provider: string } | { team_id: string; provider: string };

export type Workload =
  | { kind: "health" }
  /** ResolveKey over the first `hotOrganizations` organisations x 4 providers, uniformly at random. */
  | { kind: "resolve"; set: "hot" }
  /** ResolveKey uniformly over every organisation and team x 4 providers (120,000 pairs). */
  | { kind: "resolve"; set: "uniform" }
  /** Each of the first `count` pairs of a fixed permutation of all pairs exactly once. */
  | { kind: "resolve"; set: "distinct"; count: number }
  /** Each of the first `count` pairs of fillPairs() exactly once: the cold fill before the memory reading. */
  | { kind: "resolve"; set: "fill"; count: number };

/** The seed of the fixed permutation of allPairs() that the "distinct" and "fill" workloads use. */
export const DISTINCT_PERMUTATION_SEED = 20261126;

/** Every (scope, provider) pair: 10,000 organisations and 20,000 teams, 4 providers each. */
export function allPairs(): ResolveRequest[] {
  const pairs: ResolveRequest[] = [];
  for (let i = 1; i <= SIZES.organizations; i++) {
    for (const p of PROVIDERS) pairs.push({ organization_id: organizationId(i), provider: p.proto });
  }
  for (let i = 1; i <= SIZES.teams; i++) {
    for (const p of PROVIDERS) pairs.push({ team_id: teamId(i), provider: p.proto });
  }
  return pairs;
}

/** Every (memory organisation, provider) pair: 10,000 x 4, organisation by organisation. */
export function memoryPairs(): ResolveRequest[] {
  const pairs: ResolveRequest[] = [];
  for (let i = 1; i <= SIZES.memoryOrganizations; i++) {
    for (const p of PROVIDERS) pairs.push({ organization_id: memoryOrganizationId(i), provider: p.proto });
  }
  return pairs;
}

/**
 * The cold fill's sequence: every memory-organisation pair (40,000), then every pair of
 * allPairs() in the fixed permutation (120,000), each exactly once. With a cache holding one
 * entry per organisation/provider (shared by the organisation and its teams) and one link
 * per team, all 160,000 leave 40,000 + 40,000 + 20,000 = 100,000 entries.
 */
export function fillPairs(): ResolveRequest[] {
  return [...memoryPairs(), ...shuffled(allPairs(), DISTINCT_PERMUTATION_SEED)];
}

/** The cache entries the first `count` pairs of fillPairs() make, with organisation/provider entries and team links. */
export interface FillBreakdown {
  /** Pairs resolved (the first `count` of the sequence). */
  pairs: number;
  /** Organisation/provider entries of the memory organisations. */
  memoryOrganizationResolutions: number;
  /** Organisation/provider entries of the 10,000 organisations, made by their own pairs or their teams'. */
  organizationResolutions: number;
  /** One link per team resolved, whatever the provider. */
  teamLinks: number;
  total: number;
}

export function fillBreakdown(count: number, sequence: ResolveRequest[] = fillPairs()): FillBreakdown {
  const memory = new Set<string>();
  const organizations = new Set<string>();
  const teams = new Set<string>();
  const pairs = Math.min(count, sequence.length);
  for (let k = 0; k < pairs; k++) {
    const pair = sequence[k];
    if ("team_id" in pair) {
      teams.add(pair.team_id);
      organizations.add(`${organizationId(teamOrganization(Number(pair.team_id.slice("team-".length))))}|${pair.provider}`);
    } else if (pair.organization_id.startsWith("bench-mem-")) {
      memory.add(`${pair.organization_id}|${pair.provider}`);
    } else {
      organizations.add(`${pair.organization_id}|${pair.provider}`);
    }
  }
  return {
    pairs,
    memoryOrganizationResolutions: memory.size,
    organizationResolutions: organizations.size,
    teamLinks: teams.size,
    total: memory.size + organizations.size + teams.size,
  };
}

export function hotPairs(): ResolveRequest[] {
  const pairs: ResolveRequest[] = [];
  for (let i = 1; i <= SIZES.hotOrganizations; i++) {
    for (const p of PROVIDERS) pairs.push({ organization_id: organizationId(i), provider: p.proto });
  }
  return pairs;
}

/** A small, fast, seeded PRNG (xorshift32): the same run picks the same sequence. */
export function random(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

/** Fisher-Yates with the seeded PRNG. */
export function shuffled<T>(items: T[], seed: number): T[] {
  const next = random(seed);
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}
