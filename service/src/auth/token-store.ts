import { LRUCache } from "lru-cache";
import { DB_HOT_PATH_TIMEOUT_MS, type Orm } from "../db/orm.js";
import { runChange } from "../db/change.js";
import { Reachability } from "../db/reachability.js";
import { isDatabaseUnavailable } from "../db/errors.js";
import { ApiTokenEntity, type TokenScope } from "../db/entities.js";
import { ServiceError, invalid } from "../errors.js";
import { generateToken, hashToken, sameHash, TOKEN_SCOPES } from "./tokens.js";
import { refuseKeyShaped } from "../credentials/validation.js";

const NAME_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
export const ENV_ADMIN_TOKEN_NAME = "service-admin-token";

export interface TokenInfo {
  name: string;
  scope: TokenScope;
  createdAt: Date;
  createdBy: string | null;
  lastUsedAt: Date | null;
}

type TokenAnswer = { name: string; scope: TokenScope } | undefined;

interface CachedToken {
  /** Undefined: the look-up found no such token (such an entry never answers, and is dropped at once). */
  info: TokenAnswer;
  expiresAt: number;
  /** From then on, a use starts one look-up in the background (the entry still answers until expiresAt). */
  refreshAt: number;
}

/** A look-up's answer for a token that does not exist: expired from the start. */
const UNKNOWN: CachedToken = { info: undefined, expiresAt: 0, refreshAt: Number.POSITIVE_INFINITY };

/** Tokens cached per replica; past it the least recently used one goes. */
export const TOKEN_CACHE_MAX_ENTRIES = 10_000;

export interface TokenStoreOptions {
  /** SERVICE_ADMIN_TOKEN, accepted as an admin token when set. */
  serviceAdminToken?: string;
  /** Shared with the resolver: whether the hot path recently found the database unreachable. */
  reachability?: Reachability;
  /** How long a looked-up token is trusted without asking the database (ms). */
  cacheTtlMs?: number;
  /**
   * When the database cannot be reached, a token this replica looked up is
   * still accepted for this long after its cache entry expired (ms; default 0),
   * so that ResolveKey can answer from the resolution cache's outage grace window.
   */
  outageGraceMs?: number;
}

/**
 * API tokens, stored as SHA-256 hashes. Authentication caches a token for a
 * few seconds so that the hot path costs no query; a revoked token stops
 * working within that window (and at once on the replica that revoked it).
 *
 * A token in use never makes a call wait for the database: once three
 * quarters of its window have passed, the next use starts one look-up in the
 * background while the cached answer still serves, and the look-up renews
 * the entry (or drops it, when the token is gone). Calls that do need the
 * database (a token not cached, or cached too long ago) share one look-up per
 * token: 64 calls in flight when an entry expires make one statement, not 64.
 */
export class TokenStore {
  /**
   * Looked-up tokens, keyed by the token itself: a hit costs no SHA-256. An entry's
   * expiresAt decides whether it answers; lru-cache bounds the count
   * (TOKEN_CACHE_MAX_ENTRIES), drops an entry once the outage grace window after its
   * expiry is over too, and shares one look-up per token among concurrent callers (fetch).
   */
  private readonly cache: LRUCache<string, CachedToken>;
  private readonly envAdminHash: string | undefined;
  private readonly cacheTtlMs: number;
  private readonly refreshAfterMs: number;
  private readonly outageGraceMs: number;
  private readonly reachability: Reachability;

  constructor(
    private readonly orm: Orm,
    options: TokenStoreOptions = {},
  ) {
    this.envAdminHash = options.serviceAdminToken ? hashToken(options.serviceAdminToken) : undefined;
    this.cacheTtlMs = options.cacheTtlMs ?? 5_000;
    this.refreshAfterMs = Math.floor((this.cacheTtlMs * 3) / 4);
    this.outageGraceMs = options.outageGraceMs ?? 0;
    this.reachability = options.reachability ?? new Reachability();
    this.cache = new LRUCache<string, CachedToken>({
      max: TOKEN_CACHE_MAX_ENTRIES,
      ttl: this.cacheTtlMs + this.outageGraceMs,
      fetchMethod: (token, _stale, { options: set }) => this.load(token, set),
      // A failed look-up leaves the entry it was renewing in place, for the outage grace window.
      noDeleteOnFetchRejection: true,
      // revoke() clears the cache while look-ups may be running: their callers still get
      // what the look-up found, the cache does not keep it.
      ignoreFetchAbort: true,
    });
  }

  /**
   * The token's name and scope when this replica looked the token up within
   * the cache TTL, without waiting: the hot path's check. Undefined: ask
   * `authenticate`.
   */
  cached(token: string): { name: string; scope: TokenScope } | undefined {
    const cached = this.cache.get(token);
    if (cached === undefined) return undefined;
    const now = Date.now();
    if (cached.expiresAt <= now) return undefined;
    if (cached.refreshAt <= now) this.refresh(token, cached);
    return cached.info;
  }

  /** The token's name and scope, or undefined when the token is unknown. */
  async authenticate(token: string): Promise<{ name: string; scope: TokenScope } | undefined> {
    const now = Date.now();
    const cached = this.cache.get(token);
    if (cached && cached.expiresAt > now) return cached.info;
    // The database was just found unreachable: within the grace window, answer without waiting on it again.
    const graced = cached !== undefined && now < cached.expiresAt + this.outageGraceMs;
    if (graced && this.reachability.recentlyUnreachable(now)) return cached.info;
    try {
      return await this.lookUp(token);
    } catch (error) {
      if (graced && isDatabaseUnavailable(error)) return cached.info;
      throw error;
    }
  }

  /** Renews an entry in use before it expires, once: a failure leaves it to expire as usual. */
  private refresh(token: string, cached: CachedToken): void {
    cached.refreshAt = Number.POSITIVE_INFINITY;
    this.lookUp(token).catch(() => undefined);
  }

  /**
   * Looks the token up, recording its use (one statement), and caches the
   * answer; callers asking for the same token meanwhile share the look-up.
   */
  private async lookUp(token: string): Promise<TokenAnswer> {
    // forceRefresh: an entry still cached is renewed, not returned.
    const entry = await this.cache.fetch(token, { forceRefresh: true });
    if (entry === UNKNOWN && this.cache.peek(token) === UNKNOWN) this.cache.delete(token);
    return entry?.info;
  }

  /** The cache entry for `token`, from one statement; `set` is how the cache will store it. */
  private async load(token: string, set: LRUCache.FetcherFetchOptions<string, CachedToken>): Promise<CachedToken> {
    const hash = hashToken(token);
    if (this.envAdminHash !== undefined && sameHash(hash, this.envAdminHash)) {
      set.ttl = 0; // kept until revoke() or eviction
      return { info: { name: ENV_ADMIN_TOKEN_NAME, scope: "admin" }, expiresAt: Number.POSITIVE_INFINITY, refreshAt: Number.POSITIVE_INFINITY };
    }
    let rows: Array<{ name: string; scope: TokenScope }>;
    try {
      const result = await this.orm.em
        .getConnection()
        .getKnex()
        .raw("update api_tokens set last_used_at = now() where token_hash = ? returning name, scope", [hash])
        .timeout(DB_HOT_PATH_TIMEOUT_MS);
      rows = (result as { rows: Array<{ name: string; scope: TokenScope }> }).rows;
      this.reachability.reachable();
    } catch (error) {
      if (isDatabaseUnavailable(error)) this.reachability.unreachable();
      throw error;
    }
    const row = rows[0];
    if (!row) return UNKNOWN;
    const now = Date.now();
    return { info: { name: row.name, scope: row.scope }, expiresAt: now + this.cacheTtlMs, refreshAt: now + this.refreshAfterMs };
  }

  /** Creates a token and returns it: the only time it is ever shown. */
  async create(name: string, scope: string, actor: string): Promise<{ token: string; info: TokenInfo }> {
    if (!NAME_PATTERN.test(name)) throw invalid("name", "must be 1-64 characters of letters, digits, '.', '_' or '-'");
    if (name === ENV_ADMIN_TOKEN_NAME) throw invalid("name", `"${ENV_ADMIN_TOKEN_NAME}" is reserved`);
    refuseKeyShaped("name", name);
    if (!TOKEN_SCOPES.includes(scope as TokenScope)) throw invalid("scope", `must be one of: ${TOKEN_SCOPES.join(", ")}`);
    const token = generateToken();
    const info: TokenInfo = { name, scope: scope as TokenScope, createdAt: new Date(), createdBy: actor, lastUsedAt: null };
    await runChange(
      this.orm,
      async ({ em, audit }) => {
        await em.insert(ApiTokenEntity, { ...info, tokenHash: hashToken(token) });
        audit({ actor, action: "token.create", target: name, details: { scope } });
      },
      { constraints: { unique: () => new ServiceError("already_exists", `name: a token named "${name}" already exists`, "name") } },
    );
    return { token, info };
  }

  async list(): Promise<TokenInfo[]> {
    const rows = await this.orm.em.fork().find(ApiTokenEntity, {}, { orderBy: { name: "asc" } });
    return rows.map(({ name, scope, createdAt, createdBy, lastUsedAt }) => ({ name, scope, createdAt, createdBy, lastUsedAt }));
  }

  async revoke(name: string, actor: string): Promise<void> {
    if (!NAME_PATTERN.test(name)) throw invalid("name", "must be 1-64 characters of letters, digits, '.', '_' or '-'");
    await runChange(this.orm, async ({ em, audit }) => {
      const deleted = await em.nativeDelete(ApiTokenEntity, { name });
      if (deleted === 0) throw new ServiceError("not_found", `no token named "${name}"`);
      audit({ actor, action: "token.revoke", target: name });
    });
    // Also cuts off look-ups in flight from the cache (ignoreFetchAbort above).
    this.cache.clear();
  }
}
