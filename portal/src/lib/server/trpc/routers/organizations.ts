import { adminProcedure, router } from "../trpc.js";
import {
  createOrganizationInput,
  deletedOrganizationOutput,
  listOrganizationsInput,
  listUncoveredOrganizationsInput,
  offboardedOrganizationOutput,
  offboardOrganizationInput,
  organizationIdInput,
  organizationListOutput,
  organizationOutput,
  uncoveredOrganizationListOutput,
} from "../schemas.js";
import { ApiError } from "../../errors.js";
import { nextCursor, organizationJson, providerEnum, uncoveredOrganizationJson } from "../../shapes.js";
import { pageSize } from "./paging.js";

const tags = ["organizations"];

export const organizationsRouter = router({
  list: adminProcedure
    .meta({
      openapi: {
        method: "GET",
        path: "/organizations",
        tags,
        summary: "List organisations",
        description:
          "By id, one page at a time (by `cursor`, or numbered pages by `offset`), with the `total` that match; " +
          "`q` keeps those whose id or name contains it, ignoring case.",
      },
    })
    .input(listOrganizationsInput)
    .output(organizationListOutput)
    .query(async ({ ctx, input }) => {
      const page = await ctx.service.organizations.listOrganizations({
        pageSize: pageSize(input.limit),
        pageToken: input.cursor ?? "",
        query: input.q ?? "",
        offset: input.offset ?? 0,
      });
      return { organizations: page.organizations.map(organizationJson), next_cursor: nextCursor(page.nextPageToken), total: page.totalSize };
    }),

  // Not under /organizations/: "uncovered" is a valid organisation id, which GET /organizations/{organization_id} must keep.
  uncovered: adminProcedure
    .meta({
      openapi: {
        method: "GET",
        path: "/uncovered-organizations",
        tags,
        summary: "List organisations whose calls to a provider would fail",
        description:
          "Those with no active credential for a provider the service has no environment fallback for, with those providers; " +
          "by id, numbered pages by `limit` and `offset`, with the `total`.",
      },
    })
    .input(listUncoveredOrganizationsInput)
    .output(uncoveredOrganizationListOutput)
    .query(async ({ ctx, input }) => {
      const page = await ctx.service.credentials.listUncoveredOrganizations({
        provider: input.provider === undefined ? undefined : providerEnum(input.provider),
        pageSize: pageSize(input.limit),
        offset: input.offset ?? 0,
      });
      return { organizations: page.organizations.map(uncoveredOrganizationJson), total: page.totalSize };
    }),

  create: adminProcedure
    .meta({
      successStatus: 201,
      openapi: {
        method: "POST",
        path: "/organizations",
        tags,
        summary: "Create an organisation",
        description:
          "409 `already_exists` if the id is taken; 409 `failed_precondition` naming `organization_id` while an API token or account " +
          "is still limited to a deleted organisation of that id (revoke the tokens, change or delete the accounts first).",
      },
    })
    .input(createOrganizationInput)
    .output(organizationOutput)
    .mutation(async ({ ctx, input }) => {
      const { organization } = await ctx.service.organizations.createOrganization({ organizationId: input.organization_id, name: input.name });
      return organizationJson(organization!);
    }),

  get: adminProcedure
    .meta({ openapi: { method: "GET", path: "/organizations/{organization_id}", tags, summary: "Get one organisation" } })
    .input(organizationIdInput)
    .output(organizationOutput)
    .query(async ({ ctx, input }) => {
      const { organization } = await ctx.service.organizations.getOrganization({ organizationId: input.organization_id });
      return organizationJson(organization!);
    }),

  delete: adminProcedure
    .meta({
      openapi: {
        method: "DELETE",
        path: "/organizations/{organization_id}",
        tags,
        summary: "Delete an organisation",
        description: "409 while it still has credentials or teams, so that nothing is lost by accident.",
      },
    })
    .input(organizationIdInput)
    .output(deletedOrganizationOutput)
    .mutation(async ({ ctx, input }) => {
      await ctx.service.organizations.deleteOrganization({ organizationId: input.organization_id });
      return { organization_id: input.organization_id, deleted: true as const };
    }),

  offboard: adminProcedure
    .meta({
      openapi: {
        method: "POST",
        path: "/organizations/{organization_id}/offboard",
        tags,
        summary: "Offboard an organisation: delete it with its credentials and teams",
        description:
          "Permanent, in one transaction, each deletion audited. `confirm_organization_id` must repeat the organisation's id exactly " +
          "(else 400 naming it), so that a wrong id is not deleted by a slip.",
        successDescription: "How many credentials and teams were deleted with it.",
      },
    })
    .input(offboardOrganizationInput)
    .output(offboardedOrganizationOutput)
    .mutation(async ({ ctx, input }) => {
      if (input.confirm_organization_id !== input.organization_id) {
        throw ApiError.invalid("confirm_organization_id", "does not match organization_id: type the organization's id to confirm");
      }
      const result = await ctx.service.organizations.deleteOrganization({ organizationId: input.organization_id, cascade: true });
      return {
        organization_id: input.organization_id,
        deleted: true as const,
        deleted_credentials: result.deletedCredentials,
        deleted_teams: result.deletedTeams,
      };
    }),
});
