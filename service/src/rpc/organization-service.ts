import type { ServiceImpl } from "@connectrpc/connect";
import { OrganizationService } from "@provider-credentials/wire/gen/credentials_pb";
import type { OrganizationStore } from "../organizations/organization-store.js";
import { pageSize } from "../paging.js";
import { validateId, validateName, validateNewId } from "../credentials/validation.js";
import { actorOf } from "./context.js";
import { organizationMessage, teamMessage } from "./convert.js";

/** credentials.v1.OrganizationService. */
export function createOrganizationService(organizations: OrganizationStore): ServiceImpl<typeof OrganizationService> {
  return {
    async createOrganization(req, ctx) {
      const id = validateNewId("organization_id", req.organizationId);
      const name = validateName("name", req.name);
      return { organization: organizationMessage(await organizations.createOrganization(id, name, actorOf(ctx.values))) };
    },

    async getOrganization(req) {
      const id = validateId("organization_id", req.organizationId);
      return { organization: organizationMessage(await organizations.getOrganization(id)) };
    },

    async listOrganizations(req) {
      const page = await organizations.listOrganizations(pageSize(req.pageSize), req.pageToken);
      return { organizations: page.items.map(organizationMessage), nextPageToken: page.nextPageToken };
    },

    async deleteOrganization(req, ctx) {
      await organizations.deleteOrganization(validateId("organization_id", req.organizationId), actorOf(ctx.values));
      return {};
    },

    async createTeam(req, ctx) {
      const id = validateNewId("team_id", req.teamId);
      const organizationId = validateId("organization_id", req.organizationId);
      const name = validateName("name", req.name);
      return { team: teamMessage(await organizations.createTeam(id, organizationId, name, actorOf(ctx.values))) };
    },

    async listTeams(req) {
      const organizationId = validateId("organization_id", req.organizationId);
      const page = await organizations.listTeams(organizationId, pageSize(req.pageSize), req.pageToken);
      return { teams: page.items.map(teamMessage), nextPageToken: page.nextPageToken };
    },

    async deleteTeam(req, ctx) {
      await organizations.deleteTeam(validateId("team_id", req.teamId), actorOf(ctx.values));
      return {};
    },
  };
}
