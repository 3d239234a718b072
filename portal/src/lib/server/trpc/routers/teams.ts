import { adminProcedure, router } from "../trpc.js";
import { createTeamInput, deletedTeamOutput, listTeamsInput, teamIdInput, teamListOutput, teamOutput } from "../schemas.js";
import { nextCursor, teamJson } from "../../shapes.js";
import { pageSize } from "./paging.js";

const tags = ["teams"];

export const teamsRouter = router({
  list: adminProcedure
    .meta({ openapi: { method: "GET", path: "/organizations/{organization_id}/teams", tags, summary: "List an organisation's teams" } })
    .input(listTeamsInput)
    .output(teamListOutput)
    .query(async ({ ctx, input }) => {
      const page = await ctx.service.organizations.listTeams({
        organizationId: input.organization_id,
        pageSize: pageSize(input.limit),
        pageToken: input.cursor ?? "",
      });
      return { organization_id: input.organization_id, teams: page.teams.map(teamJson), next_cursor: nextCursor(page.nextPageToken) };
    }),

  create: adminProcedure
    .meta({
      successStatus: 201,
      openapi: {
        method: "POST",
        path: "/organizations/{organization_id}/teams",
        tags,
        summary: "Create a team in an organisation",
        description: "409 if the team id is taken; 404 if the organisation does not exist.",
      },
    })
    .input(createTeamInput)
    .output(teamOutput)
    .mutation(async ({ ctx, input }) => {
      const { team } = await ctx.service.organizations.createTeam({ teamId: input.team_id, organizationId: input.organization_id, name: input.name });
      return teamJson(team!);
    }),

  delete: adminProcedure
    .meta({ openapi: { method: "DELETE", path: "/teams/{team_id}", tags, summary: "Delete a team" } })
    .input(teamIdInput)
    .output(deletedTeamOutput)
    .mutation(async ({ ctx, input }) => {
      await ctx.service.organizations.deleteTeam({ teamId: input.team_id });
      return { team_id: input.team_id, deleted: true as const };
    }),
});
