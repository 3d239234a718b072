import { adminProcedure, router } from "../trpc.js";
import {
  batchCredentialsInput,
  createCredentialInput,
  credentialBatchOutput,
  credentialIdInput,
  credentialListOutput,
  credentialOutput,
  credentialSearchOutput,
  credentialVerificationOutput,
  deletedCredentialOutput,
  listCredentialsInput,
  searchCredentialsInput,
  updateCredentialInput,
} from "../schemas.js";
import { credentialActionEnum, credentialJson, credentialViewEnum, keyCheckJson, nextCursor, organizationRefJson, providerEnum } from "../../shapes.js";
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
        description:
          "Newest first, one page at a time (by `cursor`, or numbered pages by `offset`), with the `total` that match; " +
          "`rotation_due_only` and `failing_only` narrow it to keys due for rotation or marked failing. " +
          "404 if the organisation does not exist.",
      },
    })
    .input(listCredentialsInput)
    .output(credentialListOutput)
    .query(async ({ ctx, input }) => {
      const page = await ctx.service.credentials.listCredentials({
        organizationId: input.organization_id,
        provider: input.provider === undefined ? undefined : providerEnum(input.provider),
        activeOnly: input.active_only ?? false,
        rotationDueOnly: input.rotation_due_only ?? false,
        failingOnly: input.failing_only ?? false,
        pageSize: pageSize(input.limit),
        pageToken: input.cursor ?? "",
        offset: input.offset ?? 0,
      });
      return {
        organization_id: input.organization_id,
        credentials: page.credentials.map(credentialJson),
        next_cursor: nextCursor(page.nextPageToken),
        total: page.totalSize,
      };
    }),

  // Before `get`: trpc-to-openapi routes a request to the first procedure whose path matches, in this
  // order, and GET /provider-credentials/{credential_id} would match /provider-credentials/search too.
  search: adminProcedure
    .meta({
      openapi: {
        method: "GET",
        path: "/provider-credentials/search",
        tags,
        summary: "Search credentials across organisations",
        description:
          "Across every organisation you may read (a limited token or account: only its own). `q` matches, ignoring case, part of a credential's name, " +
          "its key hint, its organisation's id or name, or a whole credential id; `view` narrows it to a fleet view. " +
          "Ordered by organisation id, provider, name, then id; numbered pages by `limit` and `offset`, with the `total` that match.",
      },
    })
    .input(searchCredentialsInput)
    .output(credentialSearchOutput)
    .query(async ({ ctx, input }) => {
      const page = await ctx.service.credentials.searchCredentials({
        query: input.q ?? "",
        view: credentialViewEnum(input.view),
        provider: input.provider === undefined ? undefined : providerEnum(input.provider),
        organizationId: input.organization_id,
        pageSize: pageSize(input.limit),
        offset: input.offset ?? 0,
      });
      return {
        credentials: page.credentials.map(credentialJson),
        total: page.totalSize,
        organizations: page.organizations.map(organizationRefJson),
      };
    }),

  batch: adminProcedure
    .meta({
      openapi: {
        method: "POST",
        path: "/provider-credentials/batch",
        tags,
        summary: "Activate, deactivate or delete many credentials at once",
        description:
          "All of them or none, in one transaction; each credential gets its own audit event. " +
          "404 naming the first unknown id; 403 for a credential outside your organisations (whether or not it exists).",
        successDescription: "Each credential after the change (as it was, for a deletion), in the order asked.",
      },
    })
    .input(batchCredentialsInput)
    .output(credentialBatchOutput)
    .mutation(async ({ ctx, input }) => {
      const { credentials } = await ctx.service.credentials.batchCredentialAction({
        action: credentialActionEnum(input.action),
        credentialIds: input.credential_ids,
      });
      return { credentials: credentials.map(credentialJson) };
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
        description:
          "The key is encrypted before it is stored and never returned; the new credential is active. " +
          "With `verify: true` the key is first checked with the provider, and a key the provider does not accept is refused with 409 naming `api_key`.",
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
        weight: input.weight,
        verify: input.verify ?? false,
      });
      return credentialJson(credential!);
    }),

  update: adminProcedure
    .meta({
      openapi: {
        method: "PUT",
        path: "/provider-credentials/{credential_id}",
        tags,
        summary: "Change a credential's name, key, API base or weight",
        description:
          "Fields left out are unchanged; `api_base: null` clears it. With `expected_version`, a stale edit gets 409. " +
          "With `verify: true`, a new key or API base is first checked with the provider, and nothing changes unless it passes (else 409 naming `api_key`).",
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
        weight: input.weight,
        verify: input.verify ?? false,
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

  verify: adminProcedure
    .meta({
      openapi: {
        method: "POST",
        path: "/provider-credentials/{credential_id}/verify",
        tags,
        summary: "Check a credential's key with its provider",
        description:
          "Calls the provider's cheapest authenticated endpoint (its model list) with the stored key and API base, with a timeout, " +
          "and stores the result as the credential's `last_check`; a passing check clears the failing mark. No body needed. " +
          "A key the provider refuses is a result (200 with `check.outcome`), not an error.",
        successDescription: "What the check found, and the credential after it.",
      },
    })
    .input(credentialIdInput)
    .output(credentialVerificationOutput)
    .mutation(async ({ ctx, input }) => {
      const { check, credential } = await ctx.service.credentials.verifyCredential({ credentialId: input.credential_id });
      return { check: keyCheckJson(check!), credential: credentialJson(credential!) };
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
