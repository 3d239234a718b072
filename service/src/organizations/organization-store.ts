import type { FilterQuery } from "@mikro-orm/core";
import type { Orm } from "../db/orm.js";
import { runChange, type Change, type ChangeListener } from "../db/change.js";
import { CredentialEntity, OrganizationEntity, TeamEntity, type OrganizationRow, type TeamRow } from "../db/entities.js";
import { ServiceError } from "../errors.js";
import type { Actor } from "../credentials/credential-store.js";
import type { PageTokens } from "../paging.js";

export interface Page<T> {
  items: T[];
  nextPageToken: string;
}

/** Organisations and teams. Deleting never takes anything else with it. */
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
        await em.insert(OrganizationEntity, row);
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

  /** The organisations, by id; only those in `within` when given (a caller limited to some). */
  async listOrganizations(limit: number, pageToken: string, within: ReadonlySet<string> | null = null): Promise<Page<OrganizationRow>> {
    const after = this.pages.decode<[string]>("organizations", "", pageToken, ["string"]);
    const where: FilterQuery<OrganizationRow> = after ? { id: { $gt: after[0] } } : {};
    if (within !== null) where.id = after ? { $gt: after[0], $in: [...within] } : { $in: [...within] };
    const rows = await this.orm.em.fork().find(OrganizationEntity, where, { orderBy: { id: "asc" }, limit: limit + 1 });
    return page(rows, limit, (last) => this.pages.encode("organizations", "", [last]));
  }

  /** The organisation of a team, or undefined when there is none (the access policy's look-up). */
  async teamOrganization(id: string): Promise<string | undefined> {
    const row = await this.orm.em.fork().findOne(TeamEntity, { id }, { fields: ["organizationId"] });
    return row?.organizationId;
  }

  async deleteOrganization(id: string, by: Actor): Promise<void> {
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
    return this.write(async ({ em, audit, invalidate }) => {
      const row = await em.findOne(TeamEntity, { id });
      if (!row) throw new ServiceError("not_found", `team "${id}" not found`);
      await em.nativeDelete(TeamEntity, { id });
      invalidate({ teamId: id, organizationId: row.organizationId, reason: "team" });
      audit({ ...by, action: "team.delete", organizationId: row.organizationId, target: id, details: { name: row.name } });
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

/** The first `limit` rows, and the token of the page after them when there is one (`token` of the last row's id). */
function page<T extends { id: string }>(rows: T[], limit: number, token: (lastId: string) => string): Page<T> {
  const items = rows.slice(0, limit);
  const last = items[items.length - 1];
  return { items, nextPageToken: rows.length > limit && last ? token(last.id) : "" };
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
