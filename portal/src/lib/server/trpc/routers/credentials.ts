import { adminProcedure, router } from "../trpc.js";
import {
  createCredentialInput,
  credentialIdInput,
  credentialListOutput,
  credentialOutput,
  deletedCredentialOutput,
  listCredentialsInput,
  updateCredentialInput,
} from "../schemas.js";
import { credentialJson, nextCursor, providerEnum } from "../../shapes.js";
import { pageSize } from "./paging.js";

const tags = ["provider credentials"];

export const credentialsRouter = router({
  list: adminProcedure
    .meta({
      openapi: {
        method: "GET",
        path: "/provider-credentials/organization/{organization_id}",
        tags,
        summary: "List an organisation's credentials",
        description: "Newest first, one page at a time. 404 if the organisation does not exist.",
      },
    })
    .input(listCredentialsInput)
    .output(credentialListOutput)
    .query(async ({ ctx, input }) => {
      const page = await ctx.service.credentials.listCredentials({
        organizationId: input.organization_id,
        provider: input.provider === undefined ? undefined : providerEnum(input.provider),
        activeOnly: input.active_only ?? false,
        pageSize: pageSize(input.limit),
        pageToken: input.cursor ?? "",
      });
      return {
        organization_id: input.organization_id,
        credentials: page.credentials.map(credentialJson),
        next_cursor: nextCursor(page.nextPageToken),
      };
    }),

  get: adminProcedure
    .meta({ openapi: { method: "GET", path: "/provider-credentials/{credential_id}", tags, summary: "Get one credential" } })
    .input(credentialIdInput)
    .output(credentialOutput)
    .query(async ({ ctx, input }) => {
      const { credential } = await ctx.service.credentials.getCredential({ credentialId: input.credential_id });
      return credentialJson(credential!);
    }),

  create: adminProcedure
    .meta({
      successStatus: 201,
      openapi: {
        method: "POST",
        path: "/provider-credentials/create",
        tags,
        summary: "Store a new credential",
        description: "The key is encrypted before it is stored and never returned; the new credential is active.",
        successDescription: "The stored credential (active, version 1).",
      },
    })
    .input(createCredentialInput)
    .output(credentialOutput)
    .mutation(async ({ ctx, input }) => {
      const { credential } = await ctx.service.credentials.createCredential({
        organizationId: input.organization_id,
        provider: providerEnum(input.provider),
        credentialName: input.credential_name,
        apiKey: input.api_key,
        apiBase: input.api_base ?? undefined,
      });
      return credentialJson(credential!);
    }),

  update: adminProcedure
    .meta({
      openapi: {
        method: "PUT",
        path: "/provider-credentials/{credential_id}",
        tags,
        summary: "Change a credential's name, key or API base",
        description: "Fields left out are unchanged; `api_base: null` clears it. With `expected_version`, a stale edit gets 409.",
      },
    })
    .input(updateCredentialInput)
    .output(credentialOutput)
    .mutation(async ({ ctx, input }) => {
      const { credential } = await ctx.service.credentials.updateCredential({
        credentialId: input.credential_id,
        credentialName: input.credential_name,
        apiKey: input.api_key,
        // null clears: the service takes an empty string for that.
        apiBase: input.api_base === null ? "" : input.api_base,
        expectedVersion: input.expected_version,
      });
      return credentialJson(credential!);
    }),

  activate: adminProcedure
    .meta({
      openapi: {
        method: "PUT",
        path: "/provider-credentials/{credential_id}/activate",
        tags,
        summary: "Activate a credential",
        description: "Idempotent; no body needed. The most recently activated credential is the one ResolveKey hands out.",
      },
    })
    .input(credentialIdInput)
    .output(credentialOutput)
    .mutation(async ({ ctx, input }) => {
      const { credential } = await ctx.service.credentials.activateCredential({ credentialId: input.credential_id });
      return credentialJson(credential!);
    }),

  deactivate: adminProcedure
    .meta({
      openapi: {
        method: "PUT",
        path: "/provider-credentials/{credential_id}/deactivate",
        tags,
        summary: "Deactivate a credential",
        description: "Idempotent; no body needed. ResolveKey stops handing it out at once.",
      },
    })
    .input(credentialIdInput)
    .output(credentialOutput)
    .mutation(async ({ ctx, input }) => {
      const { credential } = await ctx.service.credentials.deactivateCredential({ credentialId: input.credential_id });
      return credentialJson(credential!);
    }),

  delete: adminProcedure
    .meta({ openapi: { method: "DELETE", path: "/provider-credentials/{credential_id}", tags, summary: "Delete a credential permanently" } })
    .input(credentialIdInput)
    .output(deletedCredentialOutput)
    .mutation(async ({ ctx, input }) => {
      await ctx.service.credentials.deleteCredential({ credentialId: input.credential_id });
      return { credential_id: input.credential_id, deleted: true as const };
    }),
});
