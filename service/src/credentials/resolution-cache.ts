import type { ProviderName, SelectionStrategyName } from "../db/entities.js";
import { PROVIDER_NAMES } from "./providers.js";

/**
 * One active credential of the organisation for the provider, still
 * encrypted. Its token was checked when read from the database (it opens
 * under `keyId` and is bound to its row), or `refusal` says why it cannot be
 * served.
 */
export interface StoredCandidate {
  id: string;
  /**
   * The Fernet token's bytes, one character per byte (a latin1 string): a hit
   * decrypts them without decoding base64 (1.6 µs a call under load), and
   * they take 121 characters where the token's text takes 164.
   */
  sealed: string;
  /** The master key that opened the token when it was checked. */
  keyId: string;
  /** Why the stored key cannot be served: no configured master key opens it, or it is not bound to its row. */
  refusal: "decrypt" | "binding" | null;
  apiBase: string | null;
  /** Share under the weighted selection strategy. */
  weight: number;
  /** The key health check marked it failing. */
  failing: boolean;
}

/**
 * What a resolution needs from the database: the organisation, its selection
 * strategy for the provider, and its active credentials, most recently
 * activated first (none: the environment fallback applies).
 */
export interface StoredResolution {
  organizationId: string;
  strategy: SelectionStrategyName;
  candidates: StoredCandidate[];
}

export type Scope = { organizationId: string } | { teamId: string };

/**
 * The cache key of a (scope, provider) pair. Built with join, which gives a
 * flat string: a template literal gives a cons string, and a Map keeps the
 * cons cell as well as its flattened copy for as long as the entry lives.
 */
export function cacheKey(scope: Scope, provider: ProviderName): string {
  return "teamId" in scope ? ["t", scope.teamId, provider].join("|") : organizationKey(scope.organizationId, provider);
}

/** cacheKey() of an organisation scope, without a scope object. */
export function organizationKey(organizationId: string, provider: ProviderName): string {
  return ["o", organizationId, provider].join("|");
}

/**
 * The cache key of a team's link to its organisation: one small entry per
 * team, whatever the provider, whose `organizationId` is the team's
 * organisation. The resolution itself is the organisation's entry, shared by
 * the organisation and all its teams.
 */
export function teamLinkKey(teamId: string): string {
  return ["t", teamId].join("|");
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
 * An organisation with cached entries (organisation and team scopes that
 * resolved to it), listed through the entries themselves: no Set of keys per
 * organisation. Also the one copy of the organisation id those entries hold.
 */
class Organization {
  first: Entry | null = null;

  constructor(readonly id: string) {}
}

/**
 * One cached resolution: on the LRU list and on its organisation's list.
 * `expiresAt` is relative to the cache's epoch so that it stays a small
 * integer (stored in the object) rather than a boxed double.
 */
class Entry {
  /** Towards the least recently used end. */
  older: Entry | null = null;
  /** Towards the most recently used end. */
  newer: Entry | null = null;
  /** The organisation's other entries. */
  previousOfOrganization: Entry | null = null;
  nextOfOrganization: Entry | null = null;

  constructor(
    readonly key: string,
    readonly organization: Organization,
    readonly expiresAt: number,
    readonly strategy: SelectionStrategyName,
    /** None (environment fallback), one credential packed into a string (the common case), or several. */
    readonly candidates: string | StoredCandidate[] | null,
  ) {}

  /** A fresh object and array each time; several candidates are shared and read only, as before. */
  resolution(): StoredResolution {
    const candidates = this.candidates;
    return {
      organizationId: this.organization.id,
      strategy: this.strategy,
      candidates: candidates === null ? [] : typeof candidates === "string" ? [unpack(candidates)] : candidates.slice(),
    };
  }
}

// One candidate as one flat string: "<length>:<text>" for id, sealed token, key id
// and API base ("-:" for null), then "<weight>:", "0" or "1" for failing, and
// "-", "d" or "b" for the refusal. One string is one object for the garbage collector to visit where
// the candidate object and its three strings are four, and ~100 bytes less an
// entry; unpacking on a hit costs a few hundred nanoseconds.

function pack(candidate: StoredCandidate): string {
  const parts: Array<string | number> = [];
  for (const text of [candidate.id, candidate.sealed, candidate.keyId, candidate.apiBase]) {
    if (text === null) parts.push("-:");
    else parts.push(text.length, ":", text);
  }
  parts.push(candidate.weight, ":", candidate.failing ? "1" : "0", candidate.refusal === null ? "-" : candidate.refusal === "decrypt" ? "d" : "b");
  // join makes one flat string; "+" or a template literal would make a tree of cons strings.
  return parts.join("");
}

/** Where the unpacker reads next (unpacking is synchronous, so one cursor serves every call). */
let cursor = 0;

function unpackText(packed: string): string | null {
  let length = 0;
  for (;;) {
    const c = packed.charCodeAt(cursor++);
    if (c === 58 /* : */) break;
    if (c === 45 /* - */) {
      cursor++; // the ":" after "-"
      return null;
    }
    length = length * 10 + (c - 48);
  }
  const text = packed.slice(cursor, cursor + length);
  cursor += length;
  return text;
}

function unpack(packed: string): StoredCandidate {
  cursor = 0;
  const id = unpackText(packed)!;
  const sealed = unpackText(packed)!;
  const keyId = unpackText(packed)!;
  const apiBase = unpackText(packed);
  const end = packed.indexOf(":", cursor);
  const weight = Number(packed.slice(cursor, end));
  const failing = packed.charCodeAt(end + 1) === 49; /* 1 */
  const refusal = packed.charCodeAt(end + 2);
  return { id, sealed, keyId, refusal: refusal === 45 /* - */ ? null : refusal === 100 /* d */ ? "decrypt" : "binding", apiBase, weight, failing };
}

/** Distinct strategy names, key ids and API bases interned, at most: they repeat across many entries. */
const MAX_INTERNED = 1_000;

/**
 * Resolutions by (team or organisation, provider): bounded LRU, a TTL as a
 * safety net, and invalidation by organisation and provider, by team, or
 * everything. Entries hold ciphertext, never plaintext.
 *
 * Laid out for 100,000+ entries (see the README's Performance section): one
 * object per entry, linked into the LRU list and into its organisation's list
 * (a hit relinks pointers and writes nothing to the index Map, whose deleted
 * slots would otherwise force a rehash of the whole table every few tens of
 * thousands of hits; invalidating an organisation walks its own entries, team
 * scopes included, with no Set of keys per organisation), a single
 * credential packed into one string, and organisation ids and strategy names
 * shared between entries: ~440 bytes an entry where a Map of nested objects
 * took ~730.
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
  private readonly organizations = new Map<string, Organization>();
  private readonly interned = new Map<string, string>();
  /** Least and most recently used entries. */
  private oldest: Entry | null = null;
  private newest: Entry | null = null;
  private readonly epoch = Date.now();
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
    return this.live(key, now)?.resolution();
  }

  /** The organisation of a live entry (a team's link: see teamLinkKey), as get() finds it, without building the resolution. */
  organizationOf(key: string, now = Date.now()): string | undefined {
    return this.live(key, now)?.organization.id;
  }

  private live(key: string, now: number): Entry | undefined {
    if (!this.enabled) {
      if (this.entries.size > 0 && now >= this.staleUntil) this.clear();
      return undefined;
    }
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAt <= now - this.epoch) {
      this.remove(entry);
      return undefined;
    }
    // Refresh recency: to the most recently used end.
    if (entry !== this.newest) {
      this.unlink(entry);
      this.append(entry);
    }
    return entry;
  }

  /** Stores a loaded resolution unless the cache is off or anything was invalidated since `generation`. */
  set(key: string, value: StoredResolution, generation: number, now = Date.now()): void {
    if (!this.enabled || generation !== this.current) return;
    const existing = this.entries.get(key);
    if (existing !== undefined) this.remove(existing);
    let organization = this.organizations.get(value.organizationId);
    if (organization === undefined) {
      organization = new Organization(value.organizationId);
      this.organizations.set(organization.id, organization);
    }
    const { candidates } = value;
    const entry = new Entry(
      key,
      organization,
      now + this.options.ttlMs - this.epoch,
      this.intern(value.strategy) as SelectionStrategyName,
      candidates.length === 0 ? null : candidates.length === 1 ? pack(candidates[0]) : candidates.map((c) => this.compact(c)),
    );
    this.entries.set(key, entry);
    this.append(entry);
    entry.nextOfOrganization = organization.first;
    if (organization.first !== null) organization.first.previousOfOrganization = entry;
    organization.first = entry;
    while (this.entries.size > this.options.maxEntries && this.oldest !== null) this.remove(this.oldest);
  }

  /** Everything that resolved to the organisation, for one provider or all. */
  invalidateOrganization(organizationId: string, provider?: ProviderName): void {
    this.current++;
    const organization = this.organizations.get(organizationId);
    if (organization === undefined) return;
    const suffix = provider === undefined ? undefined : `|${provider}`;
    let entry = organization.first;
    while (entry !== null) {
      const next = entry.nextOfOrganization;
      if (suffix === undefined || entry.key.endsWith(suffix)) this.remove(entry);
      entry = next;
    }
  }

  /** A team moved or was deleted: its link to its organisation, and any resolution cached under its own key. */
  invalidateTeam(teamId: string): void {
    this.current++;
    const link = this.entries.get(teamLinkKey(teamId));
    if (link !== undefined) this.remove(link);
    for (const provider of PROVIDER_NAMES) {
      const entry = this.entries.get(cacheKey({ teamId }, provider));
      if (entry !== undefined) this.remove(entry);
    }
  }

  clear(): void {
    this.current++;
    this.entries.clear();
    this.organizations.clear();
    this.interned.clear();
    this.oldest = null;
    this.newest = null;
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
    return this.stale(key, now)?.resolution();
  }

  /** organizationOf() for getStale(): a team's link as it was when invalidations stopped arriving. */
  organizationOfStale(key: string, now = Date.now()): string | undefined {
    return this.stale(key, now)?.organization.id;
  }

  private stale(key: string, now: number): Entry | undefined {
    if (this.enabled || this.entries.size === 0) return undefined;
    if (now >= this.staleUntil) {
      this.clear();
      return undefined;
    }
    const entry = this.entries.get(key);
    return entry !== undefined && entry.expiresAt > now - this.epoch ? entry : undefined;
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

  private remove(entry: Entry): void {
    this.entries.delete(entry.key);
    this.unlink(entry);
    const organization = entry.organization;
    const { previousOfOrganization: previous, nextOfOrganization: next } = entry;
    if (previous === null) organization.first = next;
    else previous.nextOfOrganization = next;
    if (next !== null) next.previousOfOrganization = previous;
    entry.previousOfOrganization = null;
    entry.nextOfOrganization = null;
    if (organization.first === null) this.organizations.delete(organization.id);
  }

  private unlink(entry: Entry): void {
    if (entry.older === null) this.oldest = entry.newer;
    else entry.older.newer = entry.newer;
    if (entry.newer === null) this.newest = entry.older;
    else entry.newer.older = entry.older;
    entry.older = null;
    entry.newer = null;
  }

  private append(entry: Entry): void {
    entry.older = this.newest;
    if (this.newest === null) this.oldest = entry;
    else this.newest.newer = entry;
    this.newest = entry;
  }

  /** A copy of a candidate whose key id and API base are the one copy every entry shares. */
  private compact(candidate: StoredCandidate): StoredCandidate {
    return { ...candidate, keyId: this.intern(candidate.keyId), apiBase: candidate.apiBase === null ? null : this.intern(candidate.apiBase) };
  }

  /** One copy of a value many entries share (key ids, API bases, strategies). */
  private intern(value: string): string {
    const known = this.interned.get(value);
    if (known !== undefined) return known;
    if (this.interned.size < MAX_INTERNED) this.interned.set(value, value);
    return value;
  }
}
