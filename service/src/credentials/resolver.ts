import { DB_HOT_PATH_TIMEOUT_MS, type Orm } from "../db/orm.js";
import { isDatabaseUnavailable } from "../db/errors.js";
import { Reachability } from "../db/reachability.js";
import type { ProviderName } from "../db/entities.js";
import { ServiceError } from "../errors.js";
import { DecryptError, refusalError, refusalOf, type Keyring } from "../keyring/index.js";
import { PROVIDERS } from "@provider-credentials/wire/providers";
import type { ServiceMetrics } from "../metrics.js";
import { outside } from "../auth/policy.js";
import type { OrganizationLimit } from "../auth/tokens.js";
import { cacheKey, organizationKey, ResolutionCache, teamLinkKey, type Scope, type StoredCandidate, type StoredResolution } from "./resolution-cache.js";

export type ResolveScope = Scope;

export interface Resolution {
  apiKey: string;
  apiBase: string | null;
  source: "organization" | "environment";
  credentialId: string | null;
  organizationId: string;
  /** The credential handed out is marked failing: it was the only active one. */
  failing: boolean;
}

interface ResolveRow {
  organization_id: string;
  strategy: StoredResolution["strategy"] | null;
  id: string | null;
  encrypted_api_key: string | null;
  key_id: string | null;
  key_binding: string | null;
  api_base: string | null;
  weight: number | null;
  failing: boolean | null;
  /** When an overlap after RollCredential ends (epoch ms, as text from the database); null: not scheduled. */
  deactivate_ms: string | null;
}

type CandidateRow = ResolveRow & { id: string; encrypted_api_key: string; key_id: string };

/** Active credentials considered per (organisation, provider); beyond this, the least recently activated are not picked. */
export const MAX_CANDIDATES = 100;

// One round trip: the scope's organisation, its selection strategy for the
// provider, and its active credentials, most recently activated first (one
// row each; one row of nulls when there are none). No row: no such scope.
const CANDIDATES = `
  left join selection_strategies st on st.organization_id = s.organization_id and st.provider = ?
  left join lateral (
    select c.id, c.encrypted_api_key, c.key_id, c.key_binding, c.api_base, c.weight, c.failing_since is not null as failing,
      (extract(epoch from c.deactivate_at) * 1000)::bigint::text as deactivate_ms
    from provider_credentials c
    where c.organization_id = s.organization_id and c.provider = ? and c.is_active
      and (c.deactivate_at is null or c.deactivate_at > now())
    order by c.activated_at desc, c.id desc
    limit ${MAX_CANDIDATES}
  ) c on true`;
const BY_ORGANIZATION = `select s.organization_id, st.strategy, c.* from (select id as organization_id from organizations where id = ?) s ${CANDIDATES}`;
const BY_TEAM = `select s.organization_id, st.strategy, c.* from (select organization_id from teams where id = ?) s ${CANDIDATES}`;

/** Round-robin positions kept per (organisation, provider); the map is cleared when it grows past this. */
const MAX_ROUND_ROBIN_POSITIONS = 100_000;

/**
 * How a selection strategy applies to an organisation's active credentials
 * for a provider now:
 * - `single`: one candidate, handed out whatever its health;
 * - `newest`: the first of `pool` (the most recently activated healthy one);
 * - `round_robin`: each of `pool` in turn;
 * - `weighted`: each of `pool` in proportion to its weight;
 * - `all_failing`: every candidate is marked failing: the most recently
 *   activated is handed out, flagged failing;
 * - `none`: no active credential (the environment fallback applies, if set).
 */
export type RankingRule = "none" | "single" | "newest" | "round_robin" | "weighted" | "all_failing";

export interface Ranking {
  rule: RankingRule;
  /** The candidates that may be handed out, in the order the rule goes by. */
  pool: StoredCandidate[];
  /** Active but marked failing, skipped while a healthy one exists. */
  skipped: StoredCandidate[];
}

/**
 * The one ranking of candidates, used by ResolveKey to pick (KeyResolver.pick)
 * and by ExplainResolution to explain: failing ones are skipped while a
 * healthy one exists; the strategy then picks among the rest. Candidates come
 * most recently activated first.
 */
export function rankCandidates(stored: Pick<StoredResolution, "strategy" | "candidates">): Ranking {
  const { candidates, strategy } = stored;
  if (candidates.length === 0) return { rule: "none", pool: [], skipped: [] };
  if (candidates.length === 1) return { rule: "single", pool: [candidates[0]], skipped: [] };
  const pool: StoredCandidate[] = [];
  const skipped: StoredCandidate[] = [];
  for (const c of candidates) (c.failing ? skipped : pool).push(c);
  if (pool.length === 0) return { rule: "all_failing", pool: [candidates[0]], skipped: candidates.slice(1) };
  if (pool.length === 1 || strategy === "newest") return { rule: pool.length === 1 ? "single" : "newest", pool, skipped };
  if (strategy === "round_robin") return { rule: "round_robin", pool, skipped };
  let total = 0;
  for (const c of pool) total += c.weight;
  // Every weight 0: the most recently activated healthy one, as if newest.
  if (total <= 0) return { rule: "newest", pool, skipped };
  return { rule: "weighted", pool, skipped };
}

/**
 * Each candidate's share of the calls under a ranking (by id): what pick()
 * hands out over many calls. Candidates not in the map get none.
 */
export function sharesOf(ranking: Ranking): Map<string, number> {
  const shares = new Map<string, number>();
  const { rule, pool } = ranking;
  if (rule === "none") return shares;
  if (rule === "round_robin") {
    for (const c of pool) shares.set(c.id, 1 / pool.length);
  } else if (rule === "weighted") {
    let total = 0;
    for (const c of pool) total += c.weight;
    for (const c of pool) shares.set(c.id, c.weight / total);
  } else {
    shares.set(pool[0].id, 1);
  }
  return shares;
}

/**
 * ResolveKey's rule: the organisation's most recently activated active
 * credential, else the provider's environment variable, else
 * FAILED_PRECONDITION. A stored key that does not decrypt is DATA_LOSS, never
 * a fall back to the environment.
 */
export class KeyResolver {
  /** Hand-outs per credential since the last flush. */
  private readonly usedSinceFlush = new Map<string, number>();
  /** Next round-robin position per organisation and provider (this replica's). */
  private readonly roundRobin = new Map<string, number>();
  private flushTimer: NodeJS.Timeout | undefined;
  /** Cache hit and miss counters, when the service exports metrics. */
  metrics: ServiceMetrics | undefined;
  /** Named prepared statements for the look-ups (DATABASE_PREPARED_STATEMENTS); off behind a pooler in transaction mode. */
  preparedStatements = true;
  /** Loads in progress, so that concurrent misses for one key share one query. */
  private readonly loading = new Map<string, { generation: number; promise: Promise<StoredResolution | undefined> }>();

  constructor(
    private readonly orm: Orm,
    private readonly keyring: Keyring,
    private readonly environmentKeys: ReadonlyMap<ProviderName, { apiKey: string; variable: string }>,
    readonly cache: ResolutionCache = new ResolutionCache({ maxEntries: 0, ttlMs: 0 }),
    /** How often last_used_at is written, in ms: uses are batched, never a write per call. */
    private readonly usageFlushMs = 10_000,
    /** Shared with the token store: whether the hot path recently found the database unreachable. */
    private readonly reachability = new Reachability(),
  ) {}

  /**
   * The key to hand out. A cache hit answers at once, without a promise (the
   * hot path: an async function and its awaits cost more than the cache
   * look-up); a miss answers with a promise. Refusals are thrown on a hit and
   * rejected on a miss.
   */
  resolve(scope: ResolveScope, provider: ProviderName, organizations: OrganizationLimit = null): Resolution | Promise<Resolution> {
    // The resolution is cached per organisation and provider, shared by the organisation and all its
    // teams; a team is cached as a link to its organisation (looked up once per call).
    const linked = "organizationId" in scope ? scope.organizationId : this.cache.organizationOf(teamLinkKey(scope.teamId));
    const cached = linked === undefined ? undefined : this.cache.get(organizationKey(linked, provider));
    if (cached) {
      this.metrics?.cacheHit();
      return this.answer(scope, provider, cached, organizations);
    }
    this.metrics?.cacheMiss();
    return this.loadOrStale(scope, provider, linked).then((stored) => this.answer(scope, provider, stored, organizations));
  }

  private answer(scope: ResolveScope, provider: ProviderName, stored: StoredResolution | undefined, organizations: OrganizationLimit): Resolution {
    // A caller limited to some organisations: anything else (whether or not it exists) is refused alike, before anything is handed out or counted.
    if (organizations !== null && (!stored || !organizations.has(stored.organizationId))) {
      throw "teamId" in scope ? outside("team_id", "team", scope.teamId) : outside("organization_id", "organization", scope.organizationId);
    }
    if (!stored) {
      throw new ServiceError("not_found", "teamId" in scope ? `team "${scope.teamId}" not found` : `organization "${scope.organizationId}" not found`);
    }
    const { organizationId } = stored;
    const credential = this.pick(stored, provider);
    if (credential) {
      // The token's HMAC and row binding were checked when it was read from the database (load).
      if (credential.admitted === null) throw refusalError(credential.refusal, credential.id, credential.keyId);
      let apiKey: string;
      try {
        apiKey = this.keyring.openAdmitted(credential.admitted);
      } catch (error) {
        if (error instanceof DecryptError) throw refusalError("decrypt", credential.id, credential.admitted.keyId);
        throw error;
      }
      this.noteUse(credential.id);
      return { apiKey, apiBase: credential.apiBase, source: "organization", credentialId: credential.id, organizationId, failing: credential.failing };
    }
    const fallback = this.environmentKeys.get(provider);
    if (fallback) {
      return { apiKey: fallback.apiKey, apiBase: null, source: "environment", credentialId: null, organizationId, failing: false };
    }
    const info = PROVIDERS[provider];
    throw new ServiceError(
      "failed_precondition",
      `organization "${organizationId}" has no active ${info.label} credential and ${info.envVars.join(" / ")} is not set`,
      undefined,
      undefined,
      "NO_KEY_CONFIGURED",
    );
  }

  /**
   * The credential to hand out: the one the ranking's rule picks among its
   * pool (rankCandidates: the same ranking ExplainResolution reports).
   */
  private pick(stored: StoredResolution, provider: ProviderName): StoredCandidate | undefined {
    const { candidates } = stored;
    if (candidates.length <= 1) return candidates[0];
    const { rule, pool } = rankCandidates(stored);
    if (rule !== "round_robin" && rule !== "weighted") return pool[0];
    if (rule === "round_robin") {
      const key = `${stored.organizationId}|${provider}`;
      const position = this.roundRobin.get(key) ?? 0;
      if (this.roundRobin.size >= MAX_ROUND_ROBIN_POSITIONS && !this.roundRobin.has(key)) this.roundRobin.clear();
      this.roundRobin.set(key, (position + 1) % pool.length);
      return pool[position % pool.length];
    }
    // weighted: each in proportion to its weight (rankCandidates made sure the weights add up to more than 0)
    let total = 0;
    for (const c of pool) total += c.weight;
    let r = Math.random() * total;
    for (const c of pool) {
      r -= c.weight;
      if (r < 0) return c;
    }
    return pool[pool.length - 1];
  }

  /**
   * What ResolveKey would work from now for the scope and provider (the same
   * load and cache), without handing anything out: for ExplainResolution.
   * Undefined: no such scope. A caller limited to some organisations is
   * refused like ResolveKey refuses it.
   */
  async candidatesFor(scope: ResolveScope, provider: ProviderName, organizations: OrganizationLimit = null): Promise<StoredResolution> {
    const linked = "organizationId" in scope ? scope.organizationId : this.cache.organizationOf(teamLinkKey(scope.teamId));
    const stored = (linked === undefined ? undefined : this.cache.get(organizationKey(linked, provider))) ?? (await this.loadOrStale(scope, provider, linked));
    if (organizations !== null && (!stored || !organizations.has(stored.organizationId))) {
      throw "teamId" in scope ? outside("team_id", "team", scope.teamId) : outside("organization_id", "organization", scope.organizationId);
    }
    if (!stored) {
      throw new ServiceError("not_found", "teamId" in scope ? `team "${scope.teamId}" not found` : `organization "${scope.organizationId}" not found`);
    }
    return stored;
  }

  /** Whether the provider's environment variable is set (never its value). */
  hasEnvironmentFallback(provider: ProviderName): boolean {
    return this.environmentKeys.has(provider);
  }

  /**
   * The database's answer; when the database cannot be reached and this
   * replica cannot hear invalidations either, what it had cached when they
   * stopped, within the cache's outage grace window.
   */
  private async loadOrStale(scope: ResolveScope, provider: ProviderName, organizationId: string | undefined): Promise<StoredResolution | undefined> {
    // The database was just found unreachable (by this call's token look-up, say): within the grace window, do not wait on it again.
    if (this.reachability.recentlyUnreachable()) {
      const stale = this.cachedStale(scope, provider);
      if (stale) return stale;
    }
    try {
      const stored = await this.load(scope, provider, organizationId);
      this.reachability.reachable();
      return stored;
    } catch (error) {
      if (!isDatabaseUnavailable(error)) throw error;
      this.reachability.unreachable();
      const stale = this.cachedStale(scope, provider);
      if (stale) return stale;
      throw error;
    }
  }

  /** What the cache held for the scope when invalidations stopped arriving (the outage grace window). */
  private cachedStale(scope: ResolveScope, provider: ProviderName): StoredResolution | undefined {
    const organizationId = "organizationId" in scope ? scope.organizationId : this.cache.organizationOfStale(teamLinkKey(scope.teamId));
    return organizationId === undefined ? undefined : this.cache.getStale(organizationKey(organizationId, provider));
  }

  /**
   * One SQL round trip. A team whose link to its organisation is cached
   * (`organizationId`) loads the organisation's resolution (shared with the
   * organisation and its other teams); an unknown team, through the team
   * (caching the link too).
   */
  private async load(scope: ResolveScope, provider: ProviderName, organizationId: string | undefined): Promise<StoredResolution | undefined> {
    if ("teamId" in scope && organizationId !== undefined) {
      const stored = await this.loadOnce({ organizationId }, provider);
      // Gone since (deleting an organisation also drops its teams' links): ask by team, whose answer names the team.
      if (stored) return stored;
    }
    return this.loadOnce(scope, provider);
  }

  /** One SQL round trip, shared by concurrent misses for the same query; unknown scopes (undefined) are not cached. */
  private loadOnce(scope: ResolveScope, provider: ProviderName): Promise<StoredResolution | undefined> {
    const key = cacheKey(scope, provider);
    const generation = this.cache.generation;
    // Join a load only if nothing was invalidated since it started: a later caller must see a later state.
    const pending = this.loading.get(key);
    if (pending && pending.generation === generation) return pending.promise;
    const promise = (async () => {
      const [sql, name, id] =
        "teamId" in scope ? [BY_TEAM, "pc_resolve_by_team", scope.teamId] : [BY_ORGANIZATION, "pc_resolve_by_organization", scope.organizationId];
      // A named statement: each pooled connection parses it once, later calls only bind and execute it. Not behind a
      // pooler in transaction mode (DATABASE_PREPARED_STATEMENTS=0): the next call may reach another server connection.
      const query = this.orm.em.getConnection().getKnex().raw(sql, [id, provider, provider]);
      const result = await (this.preparedStatements ? query.options({ name }) : query).timeout(DB_HOT_PATH_TIMEOUT_MS);
      const rows = (result as { rows: ResolveRow[] }).rows;
      const first = rows[0];
      if (!first) return undefined;
      const candidates: StoredCandidate[] = [];
      // A credential whose overlap ends (deactivate_at) is not handed out from then on, whether or not the sweeper
      // has deactivated it yet: the entry is cached no longer than the earliest end among its candidates.
      let until: number | undefined;
      for (const row of rows) {
        if (row.id === null || row.encrypted_api_key === null || row.key_id === null) continue;
        candidates.push(this.checked(row as CandidateRow, first.organization_id, provider));
        if (row.deactivate_ms !== null) until = Math.min(until ?? Infinity, Number(row.deactivate_ms));
      }
      const stored: StoredResolution = { organizationId: first.organization_id, strategy: first.strategy ?? "newest", candidates, until };
      if ("teamId" in scope)
        this.cache.set(teamLinkKey(scope.teamId), { organizationId: stored.organizationId, strategy: "newest", candidates: [] }, generation);
      this.cache.set(organizationKey(stored.organizationId, provider), stored, generation);
      return stored;
    })().finally(() => {
      if (this.loading.get(key)?.promise === promise) this.loading.delete(key);
    });
    this.loading.set(key, { generation, promise });
    return promise;
  }

  /**
   * A candidate as read from the database, its token checked once here (it
   * opens under a configured master key and is bound to its row) so that a
   * cached hit only decrypts it: the check costs a Fernet HMAC and a binding
   * MAC, made once per row read rather than once per call.
   */
  private checked(row: CandidateRow, organizationId: string, provider: ProviderName): StoredCandidate {
    const facts = { id: row.id, apiBase: row.api_base, weight: row.weight ?? 1, failing: row.failing === true };
    try {
      const admitted = this.keyring.admit({ id: row.id, organizationId, provider, apiBase: row.api_base }, row.encrypted_api_key, row.key_id, row.key_binding);
      return { ...facts, admitted, refusal: null };
    } catch (error) {
      const refusal = refusalOf(error);
      if (refusal === undefined) throw error;
      return { ...facts, admitted: null, refusal, keyId: row.key_id };
    }
  }

  private noteUse(credentialId: string): void {
    this.usedSinceFlush.set(credentialId, (this.usedSinceFlush.get(credentialId) ?? 0) + 1);
    this.flushTimer ??= setTimeout(() => void this.flushUsage(), this.usageFlushMs).unref();
  }

  /** Writes last_used_at and adds the use counts of every credential handed out since the last flush: one statement. */
  async flushUsage(): Promise<void> {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.usedSinceFlush.size === 0) return;
    const uses = [...this.usedSinceFlush];
    this.usedSinceFlush.clear();
    try {
      await this.orm.em.getConnection().execute(
        `update provider_credentials c set last_used_at = now(), use_count = c.use_count + u.n
         from unnest(string_to_array(?, ',')::uuid[], string_to_array(?, ',')::bigint[]) as u(id, n)
         where c.id = u.id`,
        [uses.map(([id]) => id).join(","), uses.map(([, n]) => n).join(",")],
      );
    } catch {
      // Usage is best effort: a failed write is retried with the next batch.
      for (const [id, n] of uses) this.usedSinceFlush.set(id, (this.usedSinceFlush.get(id) ?? 0) + n);
    }
  }
}
