import type { FilterQuery } from "@mikro-orm/core";
import { isForeignKeyViolation, isUniqueViolation } from "../db/errors.js";
import type { EntityManager } from "@mikro-orm/postgresql";
import { inTransaction, type Orm } from "../db/orm.js";
import { CredentialEntity, OrganizationEntity, TeamEntity, type OrganizationRow, type TeamRow } from "../db/entities.js";
import { ServiceError } from "../errors.js";
import { recordAudit } from "../audit/audit-store.js";
import type { Actor, ChangeListener } from "../credentials/credential-store.js";
import { publishInvalidation } from "../credentials/invalidation.js";
import { decodePageToken, encodePageToken } from "../paging.js";

export interface Page<T> {
  items: T[];
  nextPageToken: string;
}

/** Organisations and teams. Deleting never takes anything else with it. */
export class OrganizationStore {
  constructor(
    private readonly orm: Orm,
    /** Called after a change that affects resolutions commits. */
    private readonly onChange: ChangeListener = () => undefined,
  ) {}

  async createOrganization(id: string, name: string, by: Actor): Promise<OrganizationRow> {
    const now = new Date();
    const row: OrganizationRow = { id, name, createdAt: now, updatedAt: now };
    await this.write(
      async (em) => {
        await em.insert(OrganizationEntity, row);
        await recordAudit(em, { ...by, action: "organization.create", organizationId: id, details: { name } });
      },
      alreadyExists("organization_id", `an organization with id "${id}" already exists`),
    );
    return row;
  }

  async getOrganization(id: string): Promise<OrganizationRow> {
    const row = await this.orm.em.fork().findOne(OrganizationEntity, { id });
    if (!row) throw organizationNotFound(id);
    return row;
  }

  async listOrganizations(limit: number, pageToken: string): Promise<Page<OrganizationRow>> {
    const after = decodePageToken<[string]>(pageToken, ["string"]);
    const where: FilterQuery<OrganizationRow> = after ? { id: { $gt: after[0] } } : {};
    return page(await this.orm.em.fork().find(OrganizationEntity, where, { orderBy: { id: "asc" }, limit: limit + 1 }), limit);
  }

  async deleteOrganization(id: string, by: Actor): Promise<void> {
    await this.write(async (em) => {
      const row = await em.findOne(OrganizationEntity, { id });
      if (!row) throw organizationNotFound(id);
      const credentials = await em.count(CredentialEntity, { organizationId: id });
      const teams = await em.count(TeamEntity, { organizationId: id });
      if (credentials > 0 || teams > 0) throw stillInUse(id, credentials, teams);
      await em.nativeDelete(OrganizationEntity, { id });
      await publishInvalidation(em, { organizationId: id });
      await recordAudit(em, { ...by, action: "organization.delete", organizationId: id, details: { name: row.name } });
    });
    this.onChange({ organizationId: id });
  }

  async createTeam(id: string, organizationId: string, name: string, by: Actor): Promise<TeamRow> {
    const now = new Date();
    const row: TeamRow = { id, organizationId, name, createdAt: now, updatedAt: now };
    await this.write(
      async (em) => {
        if ((await em.count(OrganizationEntity, { id: organizationId })) === 0) throw organizationNotFound(organizationId);
        await em.insert(TeamEntity, row);
        await recordAudit(em, { ...by, action: "team.create", organizationId, target: id, details: { name } });
      },
      alreadyExists("team_id", `a team with id "${id}" already exists`),
      organizationNotFound(organizationId),
    );
    return row;
  }

  async listTeams(organizationId: string, limit: number, pageToken: string): Promise<Page<TeamRow>> {
    const em = this.orm.em.fork();
    const after = decodePageToken<[string]>(pageToken, ["string"]);
    if (!after && (await em.count(OrganizationEntity, { id: organizationId })) === 0) throw organizationNotFound(organizationId);
    const where: FilterQuery<TeamRow> = after ? { organizationId, id: { $gt: after[0] } } : { organizationId };
    return page(await em.find(TeamEntity, where, { orderBy: { id: "asc" }, limit: limit + 1 }), limit);
  }

  async deleteTeam(id: string, by: Actor): Promise<TeamRow> {
    const deleted = await this.write(async (em) => {
      const row = await em.findOne(TeamEntity, { id });
      if (!row) throw new ServiceError("not_found", `team "${id}" not found`);
      await em.nativeDelete(TeamEntity, { id });
      await publishInvalidation(em, { teamId: id });
      await recordAudit(em, { ...by, action: "team.delete", organizationId: row.organizationId, target: id, details: { name: row.name } });
      return row;
    });
    this.onChange({ teamId: id });
    return deleted;
  }

  private async write<T>(work: (em: EntityManager) => Promise<T>, duplicate?: ServiceError, foreignKeyError?: ServiceError): Promise<T> {
    try {
      return await inTransaction(this.orm, work);
    } catch (error) {
      if (duplicate && isUniqueViolation(error)) throw duplicate;
      if (isForeignKeyViolation(error)) {
        // createTeam: the organisation was deleted meanwhile.
        if (foreignKeyError) throw foreignKeyError;
        // A credential or team was added while the organisation was being deleted.
        throw new ServiceError("failed_precondition", "the organization still has credentials or teams; delete them first");
      }
      throw error;
    }
  }
}

function page<T extends { id: string }>(rows: T[], limit: number): Page<T> {
  const items = rows.slice(0, limit);
  const last = items[items.length - 1];
  return { items, nextPageToken: rows.length > limit && last ? encodePageToken([last.id]) : "" };
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
