import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { adminProcedure, router } from "../trpc.js";
import { auditEventListOutput, listAuditEventsInput } from "../schemas.js";
import { auditEventJson, nextCursor } from "../../shapes.js";
import { pageSize } from "./paging.js";

export const auditRouter = router({
  list: adminProcedure
    .meta({
      openapi: {
        method: "GET",
        path: "/audit-events",
        tags: ["audit"],
        summary: "List audit events",
        description: "Newest first, one page at a time; filters combine with AND.",
      },
    })
    .input(listAuditEventsInput)
    .output(auditEventListOutput)
    .query(async ({ ctx, input }) => {
      const page = await ctx.service.admin.listAuditEvents({
        organizationId: input.organization_id,
        credentialId: input.credential_id,
        action: input.action,
        actor: input.actor,
        occurredAfter: input.occurred_after ? timestampFromDate(new Date(input.occurred_after)) : undefined,
        occurredBefore: input.occurred_before ? timestampFromDate(new Date(input.occurred_before)) : undefined,
        pageSize: pageSize(input.limit),
        pageToken: input.cursor ?? "",
      });
      return { events: page.events.map(auditEventJson), next_cursor: nextCursor(page.nextPageToken) };
    }),
});
