import type { ProviderName } from "../db/entities.js";
import { PROVIDER_NAMES } from "./providers.js";

/** An active credential ResolveKey may hand out, still encrypted. */
export interface StoredCandidate {
  id: string;
  token: string;
  keyId: string;
  /** The row's MAC over id, organisation, provider, api_base and token (Keyring.encryptBound). */
  binding: string | null;
  apiBase: string | null;
  weight: number;
  /** Marked failing by reported failures: skipped while a healthy candidate exists. */
  failing: boolean;
}

/**
 * What a resolution needs from the database: the organisation, its selection
 * strategy for the provider, and its active credentials, most recently
 * activated first (none: the environment fallback applies).
 */
export interface StoredResolution {
  organizationId: string;
  strategy: "newest" | "round_robin" | "weighted";
  candidates: readonly StoredCandidate[];
}

interface Entry {
  value: StoredResolution;
  expiresAt: number;
}

export type Scope = { organizationId: string } | { teamId: string };

export function cacheKey(scope: Scope, provider: ProviderName): string {
  return "teamId" in scope ? `t|${scope.teamId}|${provider}` : `o|${scope.organizationId}|${provider}`;
}

export interface CacheOptions {
  /** Most entries kept; the least recently used go first. 0 disables the cache. */
  maxEntries: number;
  /** A safety net: an entry older than this is reloaded even if no invalidation arrived. */
  ttlMs: number;
  /**
   * How long after the invalidation connection drops the entries cached until
   * then may still answer when the database cannot be reached (`getStale`);
   * 0 (the default) clears them at once.
   */
  outageGraceMs?: number;
}

/**
 * Resolutions by (team or organisation, provider): bounded LRU (a Map in
 * access order), a TTL as a safety net, and invalidation by organisation and
 * provider, by team, or everything. Entries hold ciphertext, never plaintext.
 *
 * A load that started before an invalidation must not write its (possibly
 * stale) result afterwards: every invalidation bumps `generation`, and `set`
 * only stores when the generation is the one the load started with.
 *
 * While invalidations cannot be heard (`suspend`), nothing is served from or
 * stored in the cache; what it held when the connection dropped is kept for
 * `outageGraceMs` only to answer when the database cannot be reached either.
 */
export class ResolutionCache {
  private readonly entries = new Map<string, Entry>();
  /** organisation id -> keys of entries that resolved to it (organisation and team scopes). */
  private readonly byOrganization = new Map<string, Set<string>>();
  private current = 0;
  private enabled: boolean;
  /** While suspended: until when the entries kept from before the drop may answer for an unreachable database. */
  private staleUntil = 0;

  constructor(private readonly options: CacheOptions) {
    this.enabled = options.maxEntries > 0;
  }

  get size(): number {
    return this.entries.size;
  }

  get generation(): number {
    return this.current;
  }

  get(key: string, now = Date.now()): StoredResolution | undefined {
    if (!this.enabled) {
      if (this.entries.size > 0 && now >= this.staleUntil) this.clear();
      return undefined;
    }
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= now) {
      this.delete(key);
      return undefined;
    }
    // Refresh recency: re-inserting moves the key to the end of the Map's order.
    this.entries.delete(key);
    this.entries.set(key, entry);
    return entry.value;
  }

  /** Stores a loaded resolution unless the cache is off or anything was invalidated since `generation`. */
  set(key: string, value: StoredResolution, generation: number, now = Date.now()): void {
    if (!this.enabled || generation !== this.current) return;
    this.delete(key);
    this.entries.set(key, { value, expiresAt: now + this.options.ttlMs });
    let keys = this.byOrganization.get(value.organizationId);
    if (!keys) this.byOrganization.set(value.organizationId, (keys = new Set()));
    keys.add(key);
    while (this.entries.size > this.options.maxEntries) {
      this.delete(this.entries.keys().next().value!);
    }
  }

  /** Everything that resolved to the organisation, for one provider or all. */
  invalidateOrganization(organizationId: string, provider?: ProviderName): void {
    this.current++;
    const keys = this.byOrganization.get(organizationId);
    if (!keys) return;
    for (const key of [...keys]) {
      if (provider === undefined || key.endsWith(`|${provider}`)) this.delete(key);
    }
  }

  /** A team moved or was deleted: its resolutions, for every provider. */
  invalidateTeam(teamId: string): void {
    this.current++;
    for (const provider of PROVIDER_NAMES) this.delete(`t|${teamId}|${provider}`);
  }

  clear(): void {
    this.current++;
    this.entries.clear();
    this.byOrganization.clear();
  }

  /**
   * The invalidation connection dropped: nothing is served from or stored in
   * the cache any more, but its entries, current as of now, are kept for
   * `getStale` during the outage grace window. The window runs from the first
   * drop: failed reconnection attempts do not extend it.
   */
  suspend(now = Date.now()): void {
    if (!this.enabled) return;
    this.enabled = false;
    this.current++; // loads in flight must not store what may already be stale
    this.staleUntil = now + (this.options.outageGraceMs ?? 0);
    if (now >= this.staleUntil) this.clear();
  }

  /**
   * For when the database cannot be reached while suspended: the entry as it
   * was when invalidations stopped arriving, within the outage grace window
   * (and its TTL); else undefined.
   */
  getStale(key: string, now = Date.now()): StoredResolution | undefined {
    if (this.enabled || this.entries.size === 0) return undefined;
    if (now >= this.staleUntil) {
      this.clear();
      return undefined;
    }
    const entry = this.entries.get(key);
    return entry && entry.expiresAt > now ? entry.value : undefined;
  }

  /** While invalidations cannot be received, nothing may be served from or stored in the cache. */
  setEnabled(enabled: boolean): void {
    this.clear();
    this.enabled = enabled && this.options.maxEntries > 0;
  }

  get maxEntries(): number {
    return this.options.maxEntries;
  }

  get isEnabled(): boolean {
    return this.enabled;
  }

  private delete(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    const keys = this.byOrganization.get(entry.value.organizationId);
    keys?.delete(key);
    if (keys?.size === 0) this.byOrganization.delete(entry.value.organizationId);
  }
}
