import type { ServiceImpl } from "@connectrpc/connect";
import { OrganizationService } from "@provider-credentials/wire/gen/credentials_pb";
import type { OrganizationStore } from "../organizations/organization-store.js";
import { pageSize } from "../paging.js";
import { validateOffset, validateSearchQuery } from "../credentials/credential-search.js";
import { validateId, validateName, validateNewId } from "../credentials/validation.js";
import { requireOrganization, requireRecentSignIn, requireUnlimited } from "../auth/policy.js";
import { actorOf, principalOf } from "./context.js";
import { organizationMessage, teamMessage } from "./convert.js";

/** credentials.v1.OrganizationService. Who may call what: auth/policy.ts (the interceptor, and the target checks here). */
export function createOrganizationService(organizations: OrganizationStore): ServiceImpl<typeof OrganizationService> {
  return {
    async createOrganization(req, ctx) {
      const id = validateNewId("organization_id", req.organizationId);
      const name = validateName("name", req.name);
      requireUnlimited(principalOf(ctx.values), "organization_id", "create organizations");
      return { organization: organizationMessage(await organizations.createOrganization(id, name, actorOf(ctx.values))) };
    },

    async getOrganization(req, ctx) {
      const id = validateId("organization_id", req.organizationId);
      requireOrganization(principalOf(ctx.values), id);
      return { organization: organizationMessage(await organizations.getOrganization(id)) };
    },

    async listOrganizations(req, ctx) {
      const query = validateSearchQuery(req.query);
      const offset = validateOffset(req.offset, req.pageToken);
      const page = await organizations.listOrganizations(pageSize(req.pageSize), req.pageToken, principalOf(ctx.values).organizations, { query, offset });
      return { organizations: page.items.map(organizationMessage), nextPageToken: page.nextPageToken, totalSize: page.totalSize };
    },

    async deleteOrganization(req, ctx) {
      const id = validateId("organization_id", req.organizationId);
      const principal = principalOf(ctx.values);
      requireOrganization(principal, id);
      // Offboarding destroys keys: made for a portal account, it needs a recent sign-in (a sensitive action).
      if (req.cascade) await requireRecentSignIn(principal, "deleting an organization with its credentials and teams");
      return organizations.deleteOrganization(id, actorOf(ctx.values), req.cascade);
    },

    async createTeam(req, ctx) {
      const id = validateNewId("team_id", req.teamId);
      const organizationId = validateId("organization_id", req.organizationId);
      const name = validateName("name", req.name);
      requireOrganization(principalOf(ctx.values), organizationId);
      return { team: teamMessage(await organizations.createTeam(id, organizationId, name, actorOf(ctx.values))) };
    },

    async listTeams(req, ctx) {
      const organizationId = validateId("organization_id", req.organizationId);
      requireOrganization(principalOf(ctx.values), organizationId);
      const page = await organizations.listTeams(organizationId, pageSize(req.pageSize), req.pageToken);
      return { teams: page.items.map(teamMessage), nextPageToken: page.nextPageToken };
    },

    async deleteTeam(req, ctx) {
      const id = validateId("team_id", req.teamId);
      const principal = principalOf(ctx.values);
      await principal.targets.team(principal, id);
      await organizations.deleteTeam(id, actorOf(ctx.values));
      return {};
    },
  };
}
