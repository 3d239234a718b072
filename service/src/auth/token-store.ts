import { LRUCache } from "lru-cache";
import { DB_HOT_PATH_TIMEOUT_MS, type Orm } from "../db/orm.js";
import { runChange } from "../db/change.js";
import { Reachability } from "../db/reachability.js";
import { isDatabaseUnavailable } from "../db/errors.js";
import { ApiTokenEntity, type ApiTokenRow, type TokenScope } from "../db/entities.js";
import { ServiceError, invalid } from "../errors.js";
import { generateToken, hashToken, isTokenShaped, sameHash, tokenPrefix, TOKEN_SCOPES, type TokenGrant } from "./tokens.js";
import { refuseKeyShaped, validateId } from "../credentials/validation.js";

const NAME_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
export const ENV_ADMIN_TOKEN_NAME = "service-admin-token";

/** The longest overlap a rotation may give the previous secret (24 hours). */
export const MAX_ROTATION_OVERLAP_SECONDS = 86_400;
/** The most organisations one token may be limited to. */
export const MAX_TOKEN_ORGANIZATIONS = 1_000;

export interface TokenInfo {
  name: string;
  scope: TokenScope;
  createdAt: Date;
  createdBy: string | null;
  lastUsedAt: Date | null;
  /** The organisations the token may act on; null: every organisation. */
  organizationIds: string[] | null;
  /** When the token stops working; null: never. */
  expiresAt: Date | null;
  /** `pct_` and the secret's first six characters; null for tokens created before prefixes were stored. */
  prefix: string | null;
  /** During a rotation's overlap: until when the previous secret still works; null otherwise (or once it is over). */
  previousValidUntil: Date | null;
}

/** What a new token is limited to. */
export interface TokenLimits {
  /** The organisations it may act on (ids; duplicates are dropped); null, undefined or empty: every organisation. */
  organizationIds?: readonly string[] | null;
  /** When it stops working (must be in the future); null or undefined: never. */
  expiresAt?: Date | null;
}

type TokenAnswer = TokenGrant | undefined;

interface CachedToken {
  /** Undefined: the look-up found no such token (such an entry never answers, and is dropped at once). */
  info: TokenAnswer;
  /** Until when the entry answers: the cache TTL, never past validUntil. */
  expiresAt: number;
  /** From then on, a use starts one look-up in the background (the entry still answers until expiresAt). */
  refreshAt: number;
  /** When the secret stops working (the token's expiry, or the end of a rotation's overlap): never answered from then on, outage grace or not. */
  validUntil: number;
}

/** A look-up's answer for a token that does not exist: expired from the start. */
const UNKNOWN: CachedToken = { info: undefined, expiresAt: 0, refreshAt: Number.POSITIVE_INFINITY, validUntil: 0 };

/** Tokens cached per replica; past it the least recently used one goes. */
export const TOKEN_CACHE_MAX_ENTRIES = 10_000;
/** Unknown (well-shaped) tokens remembered per replica, so that repeating one costs no statement. */
export const UNKNOWN_TOKEN_CACHE_MAX_ENTRIES = 10_000;
/** Look-ups of tokens this replica has no entry for that may wait for a pooled connection at once (default). */
export const TOKEN_LOOKUP_CONCURRENCY = 2;
/** Look-ups that may queue for one of those slots; past it a call is refused with UNAVAILABLE. */
export const TOKEN_LOOKUP_QUEUE = 1_000;

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
   * Never past the token's expiry or its rotation overlap.
   */
  outageGraceMs?: number;
  /** How long a token the database does not know is refused without asking again (ms; default 2 000). */
  unknownTtlMs?: number;
  /** Concurrent look-ups of tokens without a cache entry (default TOKEN_LOOKUP_CONCURRENCY). */
  lookupConcurrency?: number;
}

/** A counting semaphore: at most `max` holders, at most `maxWaiting` waiting. */
class Slots {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(
    private readonly max: number,
    private readonly maxWaiting: number,
  ) {}

  /** Resolves once a slot is held; call the returned function exactly once to give it back. */
  async acquire(): Promise<() => void> {
    if (this.active < this.max) {
      this.active++;
      return this.release;
    }
    if (this.waiting.length >= this.maxWaiting) {
      throw new ServiceError("unavailable", "too many token look-ups in progress; try again shortly");
    }
    // The slot is handed over by release(): `active` stays as it is.
    await new Promise<void>((resolve) => this.waiting.push(resolve));
    return this.release;
  }

  private readonly release = (): void => {
    const next = this.waiting.shift();
    if (next) next();
    else this.active--;
  };
}

interface LookedUpRow {
  name: string;
  scope: TokenScope;
  organization_ids: string[] | null;
  expires_at: RawTimestamp | null;
  current: boolean;
  previous_valid_until: RawTimestamp | null;
}

/**
 * API tokens, stored as SHA-256 hashes. Authentication caches a token for a
 * few seconds so that the hot path costs no query; a revoked token stops
 * working within that window (and at once on the replica that revoked it).
 * An expiring token, or a previous secret during a rotation's overlap, is
 * never answered from the cache past its end.
 *
 * A token in use never makes a call wait for the database: once three
 * quarters of its window have passed, the next use starts one look-up in the
 * background while the cached answer still serves, and the look-up renews
 * the entry (or drops it, when the token is gone). Calls that do need the
 * database (a token not cached, or cached too long ago) share one look-up per
 * token: 64 calls in flight when an entry expires make one statement, not 64.
 *
 * What an unauthenticated caller can make the database do is bounded: a value
 * not shaped like our tokens is refused without a statement, an unknown token
 * is remembered for a moment (unknownTtlMs), and look-ups of tokens this
 * replica has no entry for take one of a few slots (lookupConcurrency), so a
 * flood of random tokens cannot hold every pooled connection. Renewals of
 * cached tokens do not take a slot.
 */
export class TokenStore {
  /**
   * Looked-up tokens, keyed by the token itself: a hit costs no SHA-256. An entry's
   * expiresAt decides whether it answers; lru-cache bounds the count
   * (TOKEN_CACHE_MAX_ENTRIES), drops an entry once the outage grace window after its
   * expiry is over too, and shares one look-up per token among concurrent callers (fetch).
   */
  private readonly cache: LRUCache<string, CachedToken, boolean>;
  /** Well-shaped tokens the database did not know, refused without a statement for unknownTtlMs. */
  private readonly unknown: LRUCache<string, true>;
  private readonly slots: Slots;
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
    this.slots = new Slots(Math.max(1, options.lookupConcurrency ?? TOKEN_LOOKUP_CONCURRENCY), TOKEN_LOOKUP_QUEUE);
    this.unknown = new LRUCache<string, true>({ max: UNKNOWN_TOKEN_CACHE_MAX_ENTRIES, ttl: Math.max(1, options.unknownTtlMs ?? 2_000) });
    this.cache = new LRUCache<string, CachedToken, boolean>({
      max: TOKEN_CACHE_MAX_ENTRIES,
      ttl: this.cacheTtlMs + this.outageGraceMs,
      // context: whether the look-up takes one of the slots (a token without a cache entry).
      fetchMethod: (token, _stale, { options: set, context }) => this.load(token, set, context),
      // A failed look-up leaves the entry it was renewing in place, for the outage grace window.
      noDeleteOnFetchRejection: true,
      // revoke() clears the cache while look-ups may be running: their callers still get
      // what the look-up found, the cache does not keep it.
      ignoreFetchAbort: true,
    });
  }

  /**
   * The token's grant when this replica looked the token up within the cache
   * TTL (and the token has not expired since), without waiting: the hot
   * path's check. Undefined: ask `authenticate`.
   */
  cached(token: string): TokenGrant | undefined {
    const cached = this.cache.get(token);
    if (cached === undefined) return undefined;
    const now = Date.now();
    if (cached.expiresAt <= now) return undefined;
    if (cached.refreshAt <= now) this.refresh(token, cached);
    return cached.info;
  }

  /** The token's grant (name, scope, organisations), or undefined when the token is unknown, revoked or expired. */
  async authenticate(token: string): Promise<TokenGrant | undefined> {
    const now = Date.now();
    const cached = this.cache.get(token);
    if (cached && cached.expiresAt > now) return cached.info;
    if (cached === undefined) {
      // SERVICE_ADMIN_TOKEN may be any string: compared (by hash) before the shape check.
      if (this.envAdminHash !== undefined && sameHash(hashToken(token), this.envAdminHash)) return this.envAdmin(token);
      if (!isTokenShaped(token) || this.unknown.has(token)) return undefined;
    }
    // The database was just found unreachable: within the grace window, answer without waiting on it again.
    const graced = cached !== undefined && now < cached.expiresAt + this.outageGraceMs && now < cached.validUntil;
    if (graced && this.reachability.recentlyUnreachable(now)) return cached.info;
    try {
      // A token seen before (its entry expired) is renewed as a cached one is: without a slot.
      return await this.lookUp(token, cached === undefined);
    } catch (error) {
      if (graced && isDatabaseUnavailable(error)) return cached.info;
      throw error;
    }
  }

  /** SERVICE_ADMIN_TOKEN's grant, cached until revoke() or eviction. */
  private envAdmin(token: string): TokenGrant {
    const info: TokenGrant = { name: ENV_ADMIN_TOKEN_NAME, scope: "admin", organizations: null };
    const forever = Number.POSITIVE_INFINITY;
    this.cache.set(token, { info, expiresAt: forever, refreshAt: forever, validUntil: forever }, { ttl: 0 });
    return info;
  }

  /** Renews an entry in use before it expires, once: a failure leaves it to expire as usual. */
  private refresh(token: string, cached: CachedToken): void {
    cached.refreshAt = Number.POSITIVE_INFINITY;
    this.lookUp(token, false).catch(() => undefined);
  }

  /**
   * Looks the token up, recording its use (one statement), and caches the
   * answer; callers asking for the same token meanwhile share the look-up.
   * `limited`: the look-up waits for one of the slots first.
   */
  private async lookUp(token: string, limited: boolean): Promise<TokenAnswer> {
    // forceRefresh: an entry still cached is renewed, not returned.
    const entry = await this.cache.fetch(token, { forceRefresh: true, context: limited });
    if (entry === UNKNOWN) {
      if (this.cache.peek(token) === UNKNOWN) this.cache.delete(token);
      this.unknown.set(token, true);
    }
    return entry?.info;
  }

  /** The cache entry for `token`, from one statement; `set` is how the cache will store it. */
  private async load(token: string, set: LRUCache.FetcherFetchOptions<string, CachedToken, boolean>, limited: boolean): Promise<CachedToken> {
    const hash = hashToken(token);
    if (this.envAdminHash !== undefined && sameHash(hash, this.envAdminHash)) {
      set.ttl = 0; // kept until revoke() or eviction
      const forever = Number.POSITIVE_INFINITY;
      return { info: { name: ENV_ADMIN_TOKEN_NAME, scope: "admin", organizations: null }, expiresAt: forever, refreshAt: forever, validUntil: forever };
    }
    let rows: LookedUpRow[];
    const release = limited ? await this.slots.acquire() : undefined;
    try {
      // The secret is the token's current one, or its previous one during a rotation's overlap; never an expired token's.
      const result = await this.orm.em
        .getConnection()
        .getKnex()
        .raw(
          `update api_tokens set last_used_at = now()
           where (token_hash = ? or (previous_token_hash = ? and previous_valid_until > now()))
             and (expires_at is null or expires_at > now())
           returning name, scope, organization_ids, expires_at, token_hash = ? as current, previous_valid_until`,
          [hash, hash, hash],
        )
        .timeout(DB_HOT_PATH_TIMEOUT_MS);
      rows = (result as { rows: LookedUpRow[] }).rows;
      this.reachability.reachable();
    } catch (error) {
      if (isDatabaseUnavailable(error)) this.reachability.unreachable();
      throw error;
    } finally {
      release?.();
    }
    const row = rows[0];
    if (!row) return UNKNOWN;
    const now = Date.now();
    const expiry = row.expires_at === null ? Number.POSITIVE_INFINITY : dateOf(row.expires_at).getTime();
    const overlapEnd = row.current ? Number.POSITIVE_INFINITY : row.previous_valid_until === null ? 0 : dateOf(row.previous_valid_until).getTime();
    const validUntil = Math.min(expiry, overlapEnd);
    return {
      info: { name: row.name, scope: row.scope, organizations: row.organization_ids ? new Set(row.organization_ids) : null },
      expiresAt: Math.min(now + this.cacheTtlMs, validUntil),
      refreshAt: now + this.refreshAfterMs,
      validUntil,
    };
  }

  /** Creates a token and returns it: the only time it is ever shown. */
  async create(name: string, scope: string, actor: string, limits: TokenLimits = {}): Promise<{ token: string; info: TokenInfo }> {
    validateName(name);
    if (name === ENV_ADMIN_TOKEN_NAME) throw invalid("name", `"${ENV_ADMIN_TOKEN_NAME}" is reserved`);
    refuseKeyShaped("name", name);
    if (!TOKEN_SCOPES.includes(scope as TokenScope)) throw invalid("scope", `must be one of: ${TOKEN_SCOPES.join(", ")}`);
    const organizations = validateOrganizationIds(limits.organizationIds);
    const expiresAt = limits.expiresAt ?? null;
    if (expiresAt !== null && (Number.isNaN(expiresAt.getTime()) || expiresAt.getTime() <= Date.now())) {
      throw invalid("expires_at", "must be in the future");
    }
    const token = generateToken();
    const info: TokenInfo = {
      name,
      scope: scope as TokenScope,
      createdAt: new Date(),
      createdBy: actor,
      lastUsedAt: null,
      organizationIds: organizations ? organizations.map(({ id }) => id) : null,
      expiresAt,
      prefix: tokenPrefix(token),
      previousValidUntil: null,
    };
    await runChange(
      this.orm,
      async ({ em, audit }) => {
        if (organizations) {
          // Locked (key share) so that none of them can be deleted before this commits.
          const ids = organizations.map(({ id }) => id);
          const found: Array<{ id: string }> = await em
            .getConnection()
            .execute(`select id from organizations where id in (${ids.map(() => "?").join(", ")}) for key share`, ids, "all", em.getTransactionContext());
          const present = new Set(found.map((row) => row.id));
          const missing = organizations.find(({ id }) => !present.has(id));
          if (missing) {
            const field = `organization_ids[${missing.index}]`;
            throw new ServiceError("not_found", `${field}: organization "${missing.id}" not found`, field);
          }
        }
        await em.insert(ApiTokenEntity, { ...info, tokenHash: hashToken(token), previousTokenHash: null });
        audit({
          actor,
          action: "token.create",
          target: name,
          details: { scope, organization_ids: info.organizationIds, expires_at: expiresAt?.toISOString() ?? null, prefix: info.prefix },
        });
      },
      { constraints: { unique: () => new ServiceError("already_exists", `name: a token named "${name}" already exists`, "name") } },
    );
    return { token, info };
  }

  async list(): Promise<TokenInfo[]> {
    const rows = await this.orm.em.fork().find(ApiTokenEntity, {}, { orderBy: { name: "asc" } });
    return rows.map((row) => tokenInfo(row));
  }

  async revoke(name: string, actor: string): Promise<void> {
    validateName(name);
    await runChange(this.orm, async ({ em, audit }) => {
      const deleted = await em.nativeDelete(ApiTokenEntity, { name });
      if (deleted === 0) throw new ServiceError("not_found", `no token named "${name}"`);
      audit({ actor, action: "token.revoke", target: name });
    });
    // Also cuts off look-ups in flight from the cache (ignoreFetchAbort above).
    this.cache.clear();
  }

  /**
   * Gives the token a new secret (same name, scope, organisations and expiry) and returns it: the only time it is
   * shown. The previous secret keeps working for `overlapSeconds` (0: stops at once; on other replicas within the
   * cache TTL); a secret kept by an earlier rotation's overlap stops at once.
   */
  async rotate(name: string, overlapSeconds: number, actor: string): Promise<{ token: string; info: TokenInfo }> {
    validateName(name);
    if (!Number.isInteger(overlapSeconds) || overlapSeconds < 0 || overlapSeconds > MAX_ROTATION_OVERLAP_SECONDS) {
      throw invalid("overlap_seconds", `must be a whole number of seconds from 0 to ${MAX_ROTATION_OVERLAP_SECONDS} (24 hours)`);
    }
    const token = generateToken();
    const info = await runChange(this.orm, async ({ em, audit }) => {
      const conn = em.getConnection();
      const ctx = em.getTransactionContext();
      const [row]: Array<{ token_hash: string; expires_at: Date | string | null }> = await conn.execute(
        "select token_hash, expires_at from api_tokens where name = ? for update",
        [name],
        "all",
        ctx,
      );
      if (!row) throw new ServiceError("not_found", `no token named "${name}"`);
      const expiredAt = row.expires_at === null ? null : dateOf(row.expires_at);
      if (expiredAt !== null && expiredAt.getTime() <= Date.now()) {
        throw new ServiceError(
          "failed_precondition",
          `name: token "${name}" expired at ${expiredAt.toISOString()}; a new secret would be expired too: create a new token`,
          "name",
        );
      }
      const previousValidUntil = overlapSeconds > 0 ? new Date(Date.now() + overlapSeconds * 1_000) : null;
      const [updated]: ApiTokenRowSql[] = await conn.execute(
        `update api_tokens set token_hash = ?, prefix = ?, previous_token_hash = ?, previous_valid_until = ?
         where name = ? returning *`,
        [hashToken(token), tokenPrefix(token), previousValidUntil ? row.token_hash : null, previousValidUntil, name],
        "all",
        ctx,
      );
      audit({
        actor,
        action: "token.rotate",
        target: name,
        details: { overlap_seconds: overlapSeconds, previous_valid_until: previousValidUntil?.toISOString() ?? null, prefix: tokenPrefix(token) },
      });
      return tokenInfo({
        name: updated.name,
        scope: updated.scope,
        createdAt: dateOf(updated.created_at),
        createdBy: updated.created_by,
        lastUsedAt: updated.last_used_at === null ? null : dateOf(updated.last_used_at),
        organizationIds: updated.organization_ids,
        expiresAt: updated.expires_at === null ? null : dateOf(updated.expires_at),
        prefix: updated.prefix,
        previousValidUntil: updated.previous_valid_until === null ? null : dateOf(updated.previous_valid_until),
      });
    });
    // The previous secret stops at once on this replica without an overlap; with one, its cache entry (if any)
    // is looked up again and then ends with the overlap.
    this.cache.clear();
    return { token, info };
  }
}

/** A timestamp from a raw statement: a Date, or (through MikroORM's connection, which leaves them to the ORM) a string. */
type RawTimestamp = Date | string;

function dateOf(value: RawTimestamp): Date {
  return value instanceof Date ? value : new Date(value);
}

interface ApiTokenRowSql {
  name: string;
  scope: TokenScope;
  created_at: RawTimestamp;
  created_by: string | null;
  last_used_at: RawTimestamp | null;
  organization_ids: string[] | null;
  expires_at: RawTimestamp | null;
  prefix: string | null;
  previous_valid_until: RawTimestamp | null;
}

function tokenInfo(row: Omit<ApiTokenRow, "tokenHash" | "previousTokenHash">): TokenInfo {
  const overlapOver = row.previousValidUntil !== null && row.previousValidUntil.getTime() <= Date.now();
  return {
    name: row.name,
    scope: row.scope,
    createdAt: row.createdAt,
    createdBy: row.createdBy,
    lastUsedAt: row.lastUsedAt,
    organizationIds: row.organizationIds && row.organizationIds.length > 0 ? [...row.organizationIds] : null,
    expiresAt: row.expiresAt,
    prefix: row.prefix,
    previousValidUntil: overlapOver ? null : row.previousValidUntil,
  };
}

function validateName(name: string): void {
  if (!NAME_PATTERN.test(name)) throw invalid("name", "must be 1-64 characters of letters, digits, '.', '_' or '-'");
}

/** The ids with the index each had in the request, duplicates dropped; null for every organisation (null, undefined or empty). */
function validateOrganizationIds(ids: readonly string[] | null | undefined): Array<{ id: string; index: number }> | null {
  if (!ids || ids.length === 0) return null;
  if (ids.length > MAX_TOKEN_ORGANIZATIONS) throw invalid("organization_ids", `must list at most ${MAX_TOKEN_ORGANIZATIONS} organisations`);
  const seen = new Set<string>();
  const out: Array<{ id: string; index: number }> = [];
  ids.forEach((id, index) => {
    validateId(`organization_ids[${index}]`, id);
    if (seen.has(id)) return;
    seen.add(id);
    out.push({ id, index });
  });
  return out;
}
