import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { adminProcedure, router } from "../trpc.js";
import {
  apiTokenListOutput,
  createApiTokenInput,
  createdApiTokenOutput,
  noInput,
  revokedApiTokenOutput,
  rotateApiTokenInput,
  tokenNameInput,
} from "../schemas.js";
import { apiTokenJson } from "../../shapes.js";

const tags = ["API tokens"];

export const tokensRouter = router({
  list: adminProcedure
    .meta({
      openapi: {
        method: "GET",
        path: "/tokens",
        tags,
        summary: "List API tokens",
        description: "Names, scopes, organisations, expiry, prefixes and last use; never the tokens.",
      },
    })
    .input(noInput)
    .output(apiTokenListOutput)
    .query(async ({ ctx }) => {
      const { apiTokens } = await ctx.service.admin.listApiTokens({});
      return { tokens: apiTokens.map(apiTokenJson) };
    }),

  create: adminProcedure
    .meta({
      successStatus: 201,
      openapi: {
        method: "POST",
        path: "/tokens",
        tags,
        summary: "Create an API token",
        description:
          "The response carries the token: the only time it is shown. `organization_ids` limits it to those organisations; " +
          "`expires_at` (in the future) ends it. 409 if the name is taken.",
      },
    })
    .input(createApiTokenInput)
    .output(createdApiTokenOutput)
    .mutation(async ({ ctx, input }) => {
      const { token, apiToken } = await ctx.service.admin.createApiToken({
        name: input.name,
        scope: input.scope,
        organizationIds: input.organization_ids ?? [],
        expiresAt: input.expires_at ? timestampFromDate(new Date(input.expires_at)) : undefined,
      });
      return { ...apiTokenJson(apiToken!), token };
    }),

  rotate: adminProcedure
    .meta({
      openapi: {
        method: "POST",
        path: "/tokens/{name}/rotate",
        tags,
        summary: "Rotate an API token",
        description:
          "Gives the token a new secret with the same name, scope, organisations and expiry; the response carries it, the only time it is shown. " +
          "The previous secret stops at once, or after `overlap_seconds`. 404 if there is no token of that name.",
      },
    })
    .input(rotateApiTokenInput)
    .output(createdApiTokenOutput)
    .mutation(async ({ ctx, input }) => {
      const { token, apiToken } = await ctx.service.admin.rotateApiToken({ name: input.name, overlapSeconds: input.overlap_seconds ?? 0 });
      return { ...apiTokenJson(apiToken!), token };
    }),

  revoke: adminProcedure
    .meta({ openapi: { method: "DELETE", path: "/tokens/{name}", tags, summary: "Revoke an API token", description: "404 if there is none of that name." } })
    .input(tokenNameInput)
    .output(revokedApiTokenOutput)
    .mutation(async ({ ctx, input }) => {
      await ctx.service.admin.revokeApiToken({ name: input.name });
      return { name: input.name, revoked: true as const };
    }),
});
