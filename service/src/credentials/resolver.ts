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
    select c.id, c.encrypted_api_key, c.key_id, c.key_binding, c.api_base, c.weight, c.failing_since is not null as failing
    from provider_credentials c
    where c.organization_id = s.organization_id and c.provider = ? and c.is_active
    order by c.activated_at desc, c.id desc
    limit ${MAX_CANDIDATES}
  ) c on true`;
const BY_ORGANIZATION = `select s.organization_id, st.strategy, c.* from (select id as organization_id from organizations where id = ?) s ${CANDIDATES}`;
const BY_TEAM = `select s.organization_id, st.strategy, c.* from (select organization_id from teams where id = ?) s ${CANDIDATES}`;

/** Round-robin positions kept per (organisation, provider); the map is cleared when it grows past this. */
const MAX_ROUND_ROBIN_POSITIONS = 100_000;

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
   * The credential to hand out: among the healthy candidates (all of them,
   * flagged, when every one is failing), the one the strategy picks.
   */
  private pick(stored: StoredResolution, provider: ProviderName): StoredCandidate | undefined {
    const { candidates } = stored;
    if (candidates.length <= 1) return candidates[0];
    let pool = candidates.filter((c) => !c.failing);
    if (pool.length === 0) pool = [candidates[0]];
    if (pool.length === 1 || stored.strategy === "newest") return pool[0];
    if (stored.strategy === "round_robin") {
      const key = `${stored.organizationId}|${provider}`;
      const position = this.roundRobin.get(key) ?? 0;
      if (this.roundRobin.size >= MAX_ROUND_ROBIN_POSITIONS && !this.roundRobin.has(key)) this.roundRobin.clear();
      this.roundRobin.set(key, (position + 1) % pool.length);
      return pool[position % pool.length];
    }
    // weighted
    let total = 0;
    for (const c of pool) total += c.weight;
    if (total <= 0) return pool[0];
    let r = Math.random() * total;
    for (const c of pool) {
      r -= c.weight;
      if (r < 0) return c;
    }
    return pool[pool.length - 1];
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
      // A named statement: each pooled connection parses it once, later calls only bind and execute it.
      const result = await this.orm.em.getConnection().getKnex().raw(sql, [id, provider, provider]).options({ name }).timeout(DB_HOT_PATH_TIMEOUT_MS);
      const rows = (result as { rows: ResolveRow[] }).rows;
      const first = rows[0];
      if (!first) return undefined;
      const candidates: StoredCandidate[] = [];
      for (const row of rows) {
        if (row.id === null || row.encrypted_api_key === null || row.key_id === null) continue;
        candidates.push(this.checked(row as CandidateRow, first.organization_id, provider));
      }
      const stored: StoredResolution = { organizationId: first.organization_id, strategy: first.strategy ?? "newest", candidates };
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
