import { LockMode, type FilterQuery } from "@mikro-orm/core";
import type { EntityManager } from "@mikro-orm/postgresql";
import type { Orm } from "../db/orm.js";
import { runChange, type Change, type ChangeListener } from "../db/change.js";
import { CredentialEntity, OrganizationEntity, SelectionStrategyEntity, TeamEntity, type OrganizationRow, type TeamRow } from "../db/entities.js";
import { ServiceError } from "../errors.js";
import { deleteCredentialRows, type Actor } from "../credentials/credential-store.js";
import type { PageTokens } from "../paging.js";
import { containsPattern } from "../db/like.js";

export interface Page<T> {
  items: T[];
  nextPageToken: string;
}

/** Organisations and teams. Deleting takes nothing else with it, except a cascading DeleteOrganization (offboarding). */
export class OrganizationStore {
  constructor(
    private readonly orm: Orm,
    /** Makes and checks the lists' page tokens. */
    private readonly pages: PageTokens,
    /** Called after a change that affects resolutions commits. */
    private readonly onChange: ChangeListener = () => undefined,
  ) {}

  async createOrganization(id: string, name: string, by: Actor): Promise<OrganizationRow> {
    const now = new Date();
    const row: OrganizationRow = { id, name, createdAt: now, updatedAt: now };
    await this.write(
      async ({ em, audit }) => {
        // Inserted first: a concurrent CreateOrganization of the same id waits here (the primary key), and a token or
        // account can only be limited to an organisation that exists, so none can start naming `id` after the check.
        await em.insert(OrganizationEntity, row);
        await refuseStillNamed(em, id);
        audit({ ...by, action: "organization.create", organizationId: id, details: { name } });
      },
      () => alreadyExists("organization_id", `an organization with id "${id}" already exists`),
    );
    return row;
  }

  async getOrganization(id: string): Promise<OrganizationRow> {
    const row = await this.orm.em.fork().findOne(OrganizationEntity, { id });
    if (!row) throw organizationNotFound(id);
    return row;
  }

  /**
   * The organisations, by id; only those in `within` when given (a caller limited to some), and only those whose id
   * or name contains `query` ignoring case (taken literally; "" for all). `offset` skips that many (without a page
   * token). `totalSize` counts every match, whatever the page.
   */
  async listOrganizations(
    limit: number,
    pageToken: string,
    within: ReadonlySet<string> | null = null,
    { query = "", offset = 0 }: { query?: string; offset?: number } = {},
  ): Promise<Page<OrganizationRow> & { totalSize: number }> {
    const after = this.pages.decode<[string]>("organizations", "", pageToken, ["string"]);
    const filters: FilterQuery<OrganizationRow> = {};
    if (within !== null) filters.id = { $in: [...within] };
    if (query !== "") {
      const pattern = containsPattern(query);
      filters.$or = [{ id: { $ilike: pattern } }, { name: { $ilike: pattern } }];
    }
    const where: FilterQuery<OrganizationRow> = { ...filters };
    if (after) where.id = within !== null ? { $gt: after[0], $in: [...within] } : { $gt: after[0] };
    const [rows, totalSize] = await Promise.all([
      this.orm.em.fork().find(OrganizationEntity, where, { orderBy: { id: "asc" }, limit: limit + 1, offset: after ? undefined : offset || undefined }),
      this.orm.em.fork().count(OrganizationEntity, filters),
    ]);
    return { ...page(rows, limit, (last) => this.pages.encode("organizations", "", [last])), totalSize };
  }

  /** The organisation of a team, or undefined when there is none (the access policy's look-up). */
  async teamOrganization(id: string): Promise<string | undefined> {
    const row = await this.orm.em.fork().findOne(TeamEntity, { id }, { fields: ["organizationId"] });
    return row?.organizationId;
  }

  /**
   * Deletes an empty organisation (FAILED_PRECONDITION while it has credentials or teams). With `cascade`
   * (offboarding), in the same one change: its credentials (each audited and invalidated as DeleteCredential does),
   * its teams (each as DeleteTeam does), its selection strategies, then the organisation, whose audit event notes the
   * cascade and the counts. Returns how many credentials and teams went with it.
   */
  async deleteOrganization(id: string, by: Actor, cascade = false): Promise<{ deletedCredentials: number; deletedTeams: number }> {
    if (cascade) return this.deleteOrganizationCascade(id, by);
    await this.write(async ({ em, audit, invalidate }) => {
      const row = await em.findOne(OrganizationEntity, { id });
      if (!row) throw organizationNotFound(id);
      const credentials = await em.count(CredentialEntity, { organizationId: id });
      const teams = await em.count(TeamEntity, { organizationId: id });
      if (credentials > 0 || teams > 0) throw stillInUse(id, credentials, teams);
      await em.nativeDelete(OrganizationEntity, { id });
      invalidate({ organizationId: id, reason: "organization" });
      audit({ ...by, action: "organization.delete", organizationId: id, details: { name: row.name } });
    });
    return { deletedCredentials: 0, deletedTeams: 0 };
  }

  private deleteOrganizationCascade(id: string, by: Actor): Promise<{ deletedCredentials: number; deletedTeams: number }> {
    return this.write(async (change) => {
      const { em, audit, invalidate } = change;
      // Locked first: a credential or team being added waits for this change (its foreign key check), then fails.
      const row = await em.findOne(OrganizationEntity, { id }, { lockMode: LockMode.PESSIMISTIC_WRITE, disableIdentityMap: true });
      if (!row) throw organizationNotFound(id);
      const lock = { lockMode: LockMode.PESSIMISTIC_WRITE, orderBy: { id: "asc" }, disableIdentityMap: true } as const;
      const credentials = await em.find(CredentialEntity, { organizationId: id }, lock);
      await deleteCredentialRows(change, credentials, by);
      const teams = await em.find(TeamEntity, { organizationId: id }, lock);
      await deleteTeamRows(change, teams, by);
      const strategies = await em.nativeDelete(SelectionStrategyEntity, { organizationId: id });
      await em.nativeDelete(OrganizationEntity, { id });
      invalidate({ organizationId: id, reason: "organization" });
      audit({
        ...by,
        action: "organization.delete",
        organizationId: id,
        details: {
          name: row.name,
          cascade: true,
          deleted_credentials: credentials.length,
          deleted_teams: teams.length,
          deleted_selection_strategies: strategies,
        },
      });
      return { deletedCredentials: credentials.length, deletedTeams: teams.length };
    });
  }

  async createTeam(id: string, organizationId: string, name: string, by: Actor): Promise<TeamRow> {
    const now = new Date();
    const row: TeamRow = { id, organizationId, name, createdAt: now, updatedAt: now };
    await this.write(
      async ({ em, audit }) => {
        if ((await em.count(OrganizationEntity, { id: organizationId })) === 0) throw organizationNotFound(organizationId);
        await em.insert(TeamEntity, row);
        audit({ ...by, action: "team.create", organizationId, target: id, details: { name } });
      },
      () => alreadyExists("team_id", `a team with id "${id}" already exists`),
      () => organizationNotFound(organizationId),
    );
    return row;
  }

  async listTeams(organizationId: string, limit: number, pageToken: string): Promise<Page<TeamRow>> {
    const em = this.orm.em.fork();
    const after = this.pages.decode<[string]>("teams", organizationId, pageToken, ["string"]);
    if (!after && (await em.count(OrganizationEntity, { id: organizationId })) === 0) throw organizationNotFound(organizationId);
    const where: FilterQuery<TeamRow> = after ? { organizationId, id: { $gt: after[0] } } : { organizationId };
    const rows = await em.find(TeamEntity, where, { orderBy: { id: "asc" }, limit: limit + 1 });
    return page(rows, limit, (last) => this.pages.encode("teams", organizationId, [last]));
  }

  async deleteTeam(id: string, by: Actor): Promise<TeamRow> {
    return this.write(async (change) => {
      const row = await change.em.findOne(TeamEntity, { id });
      if (!row) throw new ServiceError("not_found", `team "${id}" not found`);
      await deleteTeamRows(change, [row], by);
      return row;
    });
  }

  /** Runs a mutation as one change (runChange), turning constraint violations into domain errors. */
  private write<T>(work: (change: Change) => Promise<T>, duplicate?: () => ServiceError, foreignKeyError?: () => ServiceError): Promise<T> {
    return runChange(this.orm, work, {
      onChange: this.onChange,
      constraints: {
        unique: duplicate,
        // createTeam: the organisation was deleted meanwhile. Otherwise a credential or team was added while the organisation was being deleted.
        foreignKey: foreignKeyError ?? (() => new ServiceError("failed_precondition", "the organization still has credentials or teams; delete them first")),
      },
    });
  }
}

/** DeleteTeam's change of teams, in `change`: deleted in one statement, each one's resolutions invalidated and its deletion audited. */
async function deleteTeamRows({ em, audit, invalidate }: Change, rows: readonly TeamRow[], by: Actor): Promise<void> {
  if (rows.length === 0) return;
  await em.nativeDelete(TeamEntity, { id: { $in: rows.map((row) => row.id) } });
  for (const row of rows) {
    invalidate({ teamId: row.id, organizationId: row.organizationId, reason: "team" });
    audit({ ...by, action: "team.delete", organizationId: row.organizationId, target: row.id, details: { name: row.name } });
  }
}

/** The first `limit` rows, and the token of the page after them when there is one (`token` of the last row's id). */
function page<T extends { id: string }>(rows: T[], limit: number, token: (lastId: string) => string): Page<T> {
  const items = rows.slice(0, limit);
  const last = items[items.length - 1];
  return { items, nextPageToken: rows.length > limit && last ? token(last.id) : "" };
}

/** How many of the holders of a deleted organisation's id a refusal names; the rest are counted. */
const NAMED_HOLDERS = 5;

/** What may be limited to organisations (an `organization_ids` column), and what names each row: API tokens and portal accounts. */
const LIMITED = { tokens: { table: "api_tokens", label: "name" }, accounts: { table: "admin_users", label: "email" } } as const;

/** Which of `ids` an API token or a portal account is still limited to (CreateOrganization refuses them; the import skips them). */
export async function stillNamedIds(em: EntityManager, ids: readonly string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const named = Object.values(LIMITED)
    .map(({ table }) => `exists (select 1 from ${table} h where wanted.id = any(h.organization_ids))`)
    .join(" or ");
  const rows = await em
    .getConnection()
    .execute<Array<{ id: string }>>(`select wanted.id from unnest(array[?]::text[]) as wanted(id) where ${named}`, [ids], "all", em.getTransactionContext());
  return new Set(rows.map((row) => row.id));
}

/**
 * Refuses (FAILED_PRECONDITION, ORGANIZATION_ID_STILL_NAMED, at organization_id) to create `id` while an API token or
 * a portal account is still limited to it: one left over from a deleted organisation of that id would silently
 * reach the new one. Every token row counts (a revoked token has none; an expired one is counted too, to be safe),
 * and every account, disabled or not (it can be enabled again).
 */
async function refuseStillNamed(em: EntityManager, id: string): Promise<void> {
  const conn = em.getConnection();
  const ctx = em.getTransactionContext();
  const holders = ({ table, label }: (typeof LIMITED)[keyof typeof LIMITED]) =>
    conn.execute<Array<{ holder: string; total: string }>>(
      `select ${label} as holder, count(*) over () as total from ${table} where ? = any(organization_ids) order by ${label} limit ${NAMED_HOLDERS}`,
      [id],
      "all",
      ctx,
    );
  const tokens = await holders(LIMITED.tokens);
  const accounts = await holders(LIMITED.accounts);
  if (tokens.length === 0 && accounts.length === 0) return;
  const list = (rows: Array<{ holder: string; total: string }>, one: string, many: string) => {
    if (rows.length === 0) return "";
    const total = Number(rows[0].total);
    const names = rows.map((row) => `"${row.holder}"`).join(", ");
    const more = total > rows.length ? ` and ${total - rows.length} more` : "";
    return `${total} ${total === 1 ? one : many} (${names}${more})`;
  };
  const named = [list(tokens, "API token", "API tokens"), list(accounts, "portal account", "portal accounts")].filter(Boolean).join(" and ");
  const remedies = [tokens.length > 0 ? "revoke the tokens" : "", accounts.length > 0 ? "change the accounts' organisations or delete the accounts" : ""]
    .filter(Boolean)
    .join(" and ");
  throw new ServiceError(
    "failed_precondition",
    `organization_id: "${id}" is still named by ${named} limited to a deleted organization of that id; ${remedies} first`,
    "organization_id",
    undefined,
    "ORGANIZATION_ID_STILL_NAMED",
  );
}

/** A duplicate id, named at its field. */
function alreadyExists(field: string, problem: string): ServiceError {
  return new ServiceError("already_exists", `${field}: ${problem}`, field);
}

function organizationNotFound(id: string): ServiceError {
  return new ServiceError("not_found", `organization "${id}" not found`);
}

function stillInUse(id: string, credentials: number, teams: number): ServiceError {
  const parts = [
    credentials > 0 ? `${credentials} credential${credentials === 1 ? "" : "s"}` : "",
    teams > 0 ? `${teams} team${teams === 1 ? "" : "s"}` : "",
  ].filter(Boolean);
  return new ServiceError(
    "failed_precondition",
    `organization "${id}" still has ${parts.join(" and ")}; delete them first, so that nothing is lost by accident`,
    undefined,
    undefined,
    "ORGANIZATION_IN_USE",
  );
}
