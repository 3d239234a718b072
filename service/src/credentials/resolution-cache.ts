import type { ProviderName, SelectionStrategyName } from "../db/entities.js";
import type { Admitted } from "../keyring/index.js";
import { PROVIDER_NAMES } from "@provider-credentials/wire/providers";
import { NONE, readByte, readDouble, readText, readUInt32, RecordTable, seek, textBytes, writeText } from "./record-table.js";

/**
 * One active credential of the organisation for the provider, still
 * encrypted: admitted (its token was checked when read from the database: it
 * opens under a configured master key and is bound to its row), or refused
 * with the reason it cannot be served.
 */
export type StoredCandidate = CandidateFacts &
  (
    | {
        /**
         * The token's bytes (one character per byte) and the key that opened it: a hit opens them
         * without decoding base64, and they take 121 characters where the token's text takes 164.
         */
        admitted: Admitted;
        refusal: null;
      }
    | {
        admitted: null;
        /** No configured master key opens it, or it is not bound to its row. */
        refusal: "decrypt" | "binding";
        /** The key id stored with the row, for the refusal's message. */
        keyId: string;
      }
  );

interface CandidateFacts {
  id: string;
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
  /**
   * When the earliest scheduled deactivation among the candidates falls
   * (epoch ms; see RollCredential's overlap): the entry is not served from
   * then on. Not kept in the record: it bounds the entry's expiry.
   */
  until?: number;
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

const STRATEGIES: readonly SelectionStrategyName[] = ["newest", "round_robin", "weighted"];
const REFUSALS: ReadonlyArray<StoredCandidate["refusal"]> = [null, "decrypt", "binding"];

function sealedOf(c: StoredCandidate): string {
  return c.admitted === null ? "" : c.admitted.sealed;
}

function keyIdOf(c: StoredCandidate): string {
  return c.admitted === null ? c.keyId : c.admitted.keyId;
}

/** Record kinds in the table: a cached resolution (or a team's link), and an organisation heading the list of its entries. */
const ENTRY = 1;
const ORGANIZATION = 2;

/**
 * Resolutions by (team or organisation, provider): bounded LRU, a TTL as a
 * safety net, and invalidation by organisation and provider, by team, or
 * everything. Entries hold ciphertext, never plaintext.
 *
 * Laid out for 100,000+ entries outside the JavaScript heap (RecordTable; see
 * docs/adr/0002-off-heap-cache.md): an entry is a record of bytes (its key,
 * strategy and candidates, each text as Latin-1 or UTF-16), linked into the
 * LRU list and into its organisation's list through typed arrays. An
 * organisation is a record too, heading that list, so that invalidating it
 * walks its own entries (team links included) with no Set of keys. A hit
 * decodes the record into a fresh StoredResolution; nothing per entry is left
 * for the garbage collector to mark.
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
  private readonly table = new RecordTable();
  private entries = 0;
  /** Least and most recently used entries (slots). */
  private oldest = NONE;
  private newest = NONE;
  private readonly epoch = Date.now();
  private current = 0;
  private enabled: boolean;
  /** While suspended: until when the entries kept from before the drop may answer for an unreachable database. */
  private staleUntil = 0;

  constructor(private readonly options: CacheOptions) {
    this.enabled = options.maxEntries > 0;
  }

  get size(): number {
    return this.entries;
  }

  /** Bytes the entries take outside the JavaScript heap (records, links and index). */
  get bytes(): number {
    return this.table.bytes;
  }

  get generation(): number {
    return this.current;
  }

  get(key: string, now = Date.now()): StoredResolution | undefined {
    const slot = this.live(key, now);
    return slot === NONE ? undefined : this.resolution(slot);
  }

  /** The organisation of a live entry (a team's link: see teamLinkKey), as get() finds it, without building the resolution. */
  organizationOf(key: string, now = Date.now()): string | undefined {
    const slot = this.live(key, now);
    return slot === NONE ? undefined : this.organizationId(slot);
  }

  private live(key: string, now: number): number {
    if (!this.enabled) {
      if (this.entries > 0 && now >= this.staleUntil) this.clear();
      return NONE;
    }
    const slot = this.table.find(ENTRY, key);
    if (slot === NONE) return NONE;
    if (this.table.expires[slot] <= now - this.epoch) {
      this.remove(slot);
      return NONE;
    }
    // Refresh recency: to the most recently used end.
    if (slot !== this.newest) {
      this.unlink(slot);
      this.append(slot);
    }
    return slot;
  }

  /** Stores a loaded resolution unless the cache is off or anything was invalidated since `generation`. */
  set(key: string, value: StoredResolution, generation: number, now = Date.now()): void {
    if (!this.enabled || generation !== this.current) return;
    const table = this.table;
    const existing = table.find(ENTRY, key);
    if (existing !== NONE) this.remove(existing);
    let organization = table.find(ORGANIZATION, value.organizationId);
    if (organization === NONE) organization = table.add(ORGANIZATION, value.organizationId, textBytes(value.organizationId));
    const { candidates } = value;
    let bytes = textBytes(key) + 1 + 4;
    for (const c of candidates) bytes += textBytes(c.id) + textBytes(sealedOf(c)) + textBytes(keyIdOf(c)) + textBytes(c.apiBase) + 8 + 1 + 1;
    const slot = table.add(ENTRY, key, bytes);
    const buffer = table.buffer(slot);
    let at = table.bodyStart(slot);
    at = buffer.writeUInt8(STRATEGIES.indexOf(value.strategy), at);
    at = buffer.writeUInt32LE(candidates.length, at);
    for (const c of candidates) {
      at = writeText(buffer, at, c.id);
      at = writeText(buffer, at, sealedOf(c));
      at = writeText(buffer, at, keyIdOf(c));
      at = writeText(buffer, at, c.apiBase);
      at = buffer.writeDoubleLE(c.weight, at);
      at = buffer.writeUInt8(c.failing ? 1 : 0, at);
      at = buffer.writeUInt8(REFUSALS.indexOf(c.refusal), at);
    }
    table.expires[slot] = Math.min(now + this.options.ttlMs, value.until ?? Infinity) - this.epoch;
    this.entries++;
    this.append(slot);
    table.owner[slot] = organization;
    const first = table.next[organization];
    table.next[slot] = first;
    if (first !== NONE) table.previous[first] = slot;
    table.next[organization] = slot;
    while (this.entries > this.options.maxEntries && this.oldest !== NONE) this.remove(this.oldest);
  }

  /** Everything that resolved to the organisation, for one provider or all. */
  invalidateOrganization(organizationId: string, provider?: ProviderName): void {
    this.current++;
    const table = this.table;
    const organization = table.find(ORGANIZATION, organizationId);
    if (organization === NONE) return;
    const suffix = provider === undefined ? undefined : `|${provider}`;
    // The last entry removed removes the organisation's record too: its list's next links are read before.
    let slot = table.next[organization];
    while (slot !== NONE) {
      const next = table.next[slot];
      if (suffix === undefined || this.key(slot).endsWith(suffix)) this.remove(slot);
      slot = next;
    }
  }

  /** A team moved or was deleted: its link to its organisation, and any resolution cached under its own key. */
  invalidateTeam(teamId: string): void {
    this.current++;
    const link = this.table.find(ENTRY, teamLinkKey(teamId));
    if (link !== NONE) this.remove(link);
    for (const provider of PROVIDER_NAMES) {
      const slot = this.table.find(ENTRY, cacheKey({ teamId }, provider));
      if (slot !== NONE) this.remove(slot);
    }
  }

  clear(): void {
    this.current++;
    if (this.table.used > 0) this.table.reset();
    this.entries = 0;
    this.oldest = NONE;
    this.newest = NONE;
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
    const slot = this.stale(key, now);
    return slot === NONE ? undefined : this.resolution(slot);
  }

  /** organizationOf() for getStale(): a team's link as it was when invalidations stopped arriving. */
  organizationOfStale(key: string, now = Date.now()): string | undefined {
    const slot = this.stale(key, now);
    return slot === NONE ? undefined : this.organizationId(slot);
  }

  private stale(key: string, now: number): number {
    if (this.enabled || this.entries === 0) return NONE;
    if (now >= this.staleUntil) {
      this.clear();
      return NONE;
    }
    const slot = this.table.find(ENTRY, key);
    return slot !== NONE && this.table.expires[slot] > now - this.epoch ? slot : NONE;
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

  /** A fresh resolution decoded from the entry's record. */
  private resolution(slot: number): StoredResolution {
    const buffer = this.table.buffer(slot);
    seek(this.table.bodyStart(slot));
    const strategy = STRATEGIES[readByte(buffer)];
    const count = readUInt32(buffer);
    const candidates: StoredCandidate[] = [];
    for (let i = 0; i < count; i++) {
      const id = readText(buffer)!;
      const sealed = readText(buffer)!;
      const keyId = readText(buffer)!;
      const apiBase = readText(buffer);
      const weight = readDouble(buffer);
      const failing = readByte(buffer) === 1;
      const refusal = REFUSALS[readByte(buffer)];
      // The table holds only what set() was given: admitted candidates were admitted by the keyring.
      if (refusal === null) candidates.push({ id, admitted: { sealed, keyId } as Admitted, refusal, apiBase, weight, failing });
      else candidates.push({ id, admitted: null, refusal, keyId, apiBase, weight, failing });
    }
    return { organizationId: this.organizationId(slot), strategy, candidates };
  }

  private organizationId(slot: number): string {
    return this.key(this.table.owner[slot]);
  }

  private key(slot: number): string {
    seek(this.table.recordStart(slot));
    return readText(this.table.buffer(slot))!;
  }

  private remove(slot: number): void {
    const table = this.table;
    this.unlink(slot);
    const organization = table.owner[slot];
    const previous = table.previous[slot];
    const next = table.next[slot];
    if (previous === NONE) table.next[organization] = next;
    else table.next[previous] = next;
    if (next !== NONE) table.previous[next] = previous;
    table.delete(slot);
    this.entries--;
    if (table.next[organization] === NONE) table.delete(organization);
  }

  private unlink(slot: number): void {
    const table = this.table;
    const older = table.older[slot];
    const newer = table.newer[slot];
    if (older === NONE) this.oldest = newer;
    else table.newer[older] = newer;
    if (newer === NONE) this.newest = older;
    else table.older[newer] = older;
    table.older[slot] = NONE;
    table.newer[slot] = NONE;
  }

  private append(slot: number): void {
    const table = this.table;
    table.older[slot] = this.newest;
    table.newer[slot] = NONE;
    if (this.newest === NONE) this.oldest = slot;
    else table.newer[this.newest] = slot;
    this.newest = slot;
  }
}
