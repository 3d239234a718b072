import type { Orm } from "../db/orm.js";
import { CredentialEntity, OrganizationEntity, type CredentialRow, type OrganizationRow, type ProviderName } from "../db/entities.js";
import type { OrganizationLimit } from "../auth/tokens.js";
import { invalid } from "../errors.js";
import { containsPattern } from "../db/like.js";
import { UUID_PATTERN } from "./validation.js";
import type { CredentialView } from "./credential-store.js";

/**
 * The fleet queries: SearchCredentials (credentials across every organisation the caller may read) and
 * ListUncoveredOrganizations (organisations whose calls to a provider would fail now). Each is a count and a
 * page, in SQL: never a query per organisation.
 */

/** Longest search text, after trimming (SearchCredentials.query, ListOrganizations.query). */
export const SEARCH_QUERY_MAX_LENGTH = 200;

const CONTROL_CHARACTERS = /\p{Cc}/u;

/** A search text: trimmed, at most SEARCH_QUERY_MAX_LENGTH characters, no control characters; "" means no text filter. */
export function validateSearchQuery(value: string, field = "query"): string {
  const text = value.trim();
  if ([...text].length > SEARCH_QUERY_MAX_LENGTH) throw invalid(field, `must be at most ${SEARCH_QUERY_MAX_LENGTH} characters`);
  if (CONTROL_CHARACTERS.test(text)) throw invalid(field, "must not contain control characters");
  return text;
}

/** An offset (numbered pages): 0 or more, and not with a page token (the two ways of paging do not mix). */
export function validateOffset(offset: number, pageToken = "", field = "offset"): number {
  if (!Number.isInteger(offset) || offset < 0) throw invalid(field, "must be zero or a positive integer");
  if (offset > 0 && pageToken !== "") throw invalid(field, "cannot be combined with page_token: page by offset or by page token, not both");
  return offset;
}

/** What SearchCredentials filters by, validated. */
export interface SearchQuery {
  /** Trimmed; "" for none. */
  text: string;
  view: "all" | "failing" | "rotation_due" | "inactive";
  provider?: ProviderName;
  organizationId?: string;
  /** The caller's organisations (null: all). */
  within: OrganizationLimit;
  limit: number;
  offset: number;
}

export interface SearchResult {
  credentials: CredentialView[];
  total: number;
  /** The organisations of the page's credentials, by id. */
  organizations: OrganizationRow[];
}

export interface UncoveredQuery {
  /** The providers to look at, in Provider order (those without an environment fallback). */
  providers: readonly ProviderName[];
  within: OrganizationLimit;
  limit: number;
  offset: number;
}

export interface UncoveredResult {
  organizations: Array<{ organization: OrganizationRow; providers: ProviderName[] }>;
  total: number;
}

const DAY_MS = 86_400_000;

/** A credential that ResolveKey may hand out (the resolver's own rule: active, and not past a roll's overlap). */
const LIVE = `c.is_active and (c.deactivate_at is null or c.deactivate_at > now())`;

/** Organisation ids and provider names never hold a comma: a list is passed as one text parameter (knex expands arrays). */
const idList = (ids: Iterable<string>) => [...ids].join(",");

type Params = unknown[];

export class CredentialSearch {
  constructor(
    private readonly orm: Orm,
    /** ROTATION_DAYS: the rotation-due view's age. */
    private readonly rotationDays: number,
    /** What the API shows of a row (CredentialStore.view). */
    private readonly view: (row: CredentialRow) => CredentialView,
  ) {}

  /** SearchCredentials: ordered by organisation id, provider, name, id; a page of ids and the total, then their rows. */
  async search(query: SearchQuery): Promise<SearchResult> {
    if (query.within !== null && query.within.size === 0) return { credentials: [], total: 0, organizations: [] };
    const conditions: string[] = [];
    const params: Params = [];
    if (query.within !== null) {
      conditions.push(`c.organization_id = any(string_to_array(?, ','))`);
      params.push(idList(query.within));
    }
    if (query.organizationId !== undefined) {
      conditions.push(`c.organization_id = ?`);
      params.push(query.organizationId);
    }
    if (query.provider !== undefined) {
      conditions.push(`c.provider = ?`);
      params.push(query.provider);
    }
    if (query.view === "failing") conditions.push(`c.failing_since is not null`);
    else if (query.view === "inactive") conditions.push(`not (${LIVE})`);
    else if (query.view === "rotation_due") {
      conditions.push(`c.key_set_at < ?`);
      params.push(new Date(Date.now() - this.rotationDays * DAY_MS));
    }
    if (query.text !== "") {
      const pattern = containsPattern(query.text);
      // Two fields joined by chr(1), which a query cannot hold (validateSearchQuery), so a match lies within one of
      // them: one ILIKE a row instead of two. The organisations whose id or name matches are found once (a hashed
      // subplan), not joined to every credential.
      const alternatives = [
        `(c.credential_name || chr(1) || c.key_hint) ilike ?`,
        `c.organization_id in (select o.id from organizations o where (o.id || chr(1) || o.name) ilike ?)`,
      ];
      params.push(pattern, pattern);
      // The whole id, only when the text is one: a cast of anything else to uuid would fail.
      if (UUID_PATTERN.test(query.text)) {
        alternatives.push(`c.id = ?::uuid`);
        params.push(query.text.toLowerCase());
      }
      conditions.push(`(${alternatives.join(" or ")})`);
    }
    const where = conditions.length === 0 ? "" : `where ${conditions.join(" and ")}`;
    const connection = this.orm.em.getConnection();
    const order = `order by c.organization_id, c.provider, c.credential_name, c.id limit ? offset ?`;
    const count = () =>
      connection
        .execute<Array<{ total: string | number }>>(`select count(*) as total from provider_credentials c ${where}`, params)
        .then((rows) => Number(rows[0]?.total ?? 0));
    let ids: string[];
    let total: number;
    if (query.text === "" && query.view === "all") {
      // Dense (at most a provider or an organisation): the page stops early in the index's order; the count is an
      // index-only scan of its own.
      const [page, counted] = await Promise.all([
        connection.execute<Array<{ id: string }>>(`select c.id from provider_credentials c ${where} ${order}`, [...params, query.limit, query.offset]),
        count(),
      ]);
      ids = page.map((r) => r.id);
      total = counted;
    } else {
      // Sparse (a text or a view): the page has to read every match anyway, so it counts them in the same pass (an
      // index-only scan of provider_credentials_fleet_idx); counted apart only when the page is past the end.
      const page = await connection.execute<Array<{ id: string; total: string | number }>>(
        `select c.id, count(*) over () as total from provider_credentials c ${where} ${order}`,
        [...params, query.limit, query.offset],
      );
      ids = page.map((r) => r.id);
      total = page.length > 0 ? Number(page[0].total) : query.offset > 0 ? await count() : 0;
    }
    if (ids.length === 0) return { credentials: [], total, organizations: [] };
    const em = this.orm.em.fork();
    const rows = await em.find(CredentialEntity, { id: { $in: ids } }, { disableIdentityMap: true });
    const byId = new Map(rows.map((r) => [r.id, r]));
    // A credential deleted between the two reads is left out.
    const credentials = ids.flatMap((id) => {
      const row = byId.get(id);
      return row ? [this.view(row)] : [];
    });
    const organizationIds = [...new Set(credentials.map((c) => c.organizationId))];
    const organizations = await em.find(OrganizationEntity, { id: { $in: organizationIds } }, { orderBy: { id: "asc" }, disableIdentityMap: true });
    return { credentials, total, organizations };
  }

  /**
   * ListUncoveredOrganizations: the organisations that, for one of the providers, have no credential ResolveKey may
   * hand out (NOT EXISTS, an index-only probe of provider_credentials_fleet_idx), by id; each with those providers, in the order given.
   */
  async uncovered(query: UncoveredQuery): Promise<UncoveredResult> {
    if (query.providers.length === 0 || (query.within !== null && query.within.size === 0)) return { organizations: [], total: 0 };
    // Each organisation and provider without a live credential (NOT EXISTS on the index), grouped by organisation;
    // the total counted in the same pass, and apart only when the page is past the end.
    const within = query.within === null ? "" : `and o.id = any(string_to_array(?, ','))`;
    const withinParams: Params = query.within === null ? [] : [idList(query.within)];
    const from = `from organizations o
        cross join unnest(string_to_array(?, ',')) with ordinality as p(provider, ord)
        where not exists (select 1 from provider_credentials c where c.organization_id = o.id and c.provider = p.provider and ${LIVE}) ${within}`;
    const params: Params = [idList(query.providers), ...withinParams];
    const connection = this.orm.em.getConnection();
    const page = await connection.execute<
      Array<{ id: string; name: string; created_at: Date | string; updated_at: Date | string; providers: string[] | string; total: string | number }>
    >(
      `select o.id, o.name, o.created_at, o.updated_at, array_agg(p.provider order by p.ord) as providers, count(*) over () as total
       ${from} group by o.id order by o.id limit ? offset ?`,
      [...params, query.limit, query.offset],
    );
    let total = Number(page[0]?.total ?? 0);
    if (page.length === 0 && query.offset > 0) {
      const counted = await connection.execute<Array<{ total: string | number }>>(`select count(distinct o.id) as total ${from}`, params);
      total = Number(counted[0]?.total ?? 0);
    }
    return {
      total,
      organizations: page.map((r) => ({
        organization: { id: r.id, name: r.name, createdAt: new Date(r.created_at), updatedAt: new Date(r.updated_at) },
        providers: textArray(r.providers) as ProviderName[],
      })),
    };
  }
}

/** A text[] as the driver answers it: an array, or PostgreSQL's `{a,b}` text when it does not parse the type. */
function textArray(value: string[] | string): string[] {
  if (Array.isArray(value)) return value;
  const inner = value.replace(/^\{|\}$/g, "");
  return inner === "" ? [] : inner.split(",");
}
