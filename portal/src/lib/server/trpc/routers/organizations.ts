import { adminProcedure, router } from "../trpc.js";
import {
  createOrganizationInput,
  deletedOrganizationOutput,
  listOrganizationsInput,
  organizationIdInput,
  organizationListOutput,
  organizationOutput,
} from "../schemas.js";
import { nextCursor, organizationJson } from "../../shapes.js";
import { pageSize } from "./paging.js";

const tags = ["organizations"];

export const organizationsRouter = router({
  list: adminProcedure
    .meta({ openapi: { method: "GET", path: "/organizations", tags, summary: "List organisations", description: "By id, one page at a time." } })
    .input(listOrganizationsInput)
    .output(organizationListOutput)
    .query(async ({ ctx, input }) => {
      const page = await ctx.service.organizations.listOrganizations({ pageSize: pageSize(input.limit), pageToken: input.cursor ?? "" });
      return { organizations: page.organizations.map(organizationJson), next_cursor: nextCursor(page.nextPageToken) };
    }),

  create: adminProcedure
    .meta({
      successStatus: 201,
      openapi: { method: "POST", path: "/organizations", tags, summary: "Create an organisation", description: "409 if the id is taken." },
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
});
