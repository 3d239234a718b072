import type { RequestHandler } from "./$types";
import { error } from "@sveltejs/kit";
import { auditFilters, auditQuery, FilterError } from "$lib/server/audit-filters";
import { callerFor, describeFailure } from "$lib/server/page-actions";
import { log } from "$lib/server/log";

const COLUMNS = ["event_id", "occurred_at", "actor", "action", "organization_id", "credential_id", "target", "source", "details"] as const;

/** One CSV field (RFC 4180), with text a spreadsheet would run as a formula made inert by a leading apostrophe. */
function csvField(value: unknown): string {
  let text = value === null || value === undefined ? "" : typeof value === "string" ? value : JSON.stringify(value);
  if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/**
 * The filtered audit log as CSV or JSON, streamed a page (200 events) at a time, so that an
 * export of any size holds one page in memory. The same filters and rights as the page.
 */
export const GET: RequestHandler = async (event) => {
  const format = event.url.searchParams.get("format") ?? "csv";
  if (format !== "csv" && format !== "json") error(400, 'format: must be "csv" or "json"');
  const caller = callerFor(event);
  let query;
  try {
    query = auditQuery(auditFilters(event.url));
  } catch (thrown) {
    if (thrown instanceof FilterError) error(400, `${thrown.field}: ${thrown.message}`);
    throw thrown;
  }
  // The first page before anything is sent: a refusal is an error page, not a broken download.
  let page: Awaited<ReturnType<typeof caller.audit.list>>;
  try {
    page = await caller.audit.list({ ...query, limit: 200 });
  } catch (thrown) {
    const failure = describeFailure(thrown);
    error(failure.status, failure.message);
  }
  const encoder = new TextEncoder();
  let first = true;
  let done = false;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(encoder.encode(format === "csv" ? `${COLUMNS.join(",")}\r\n` : "["));
    },
    async pull(controller) {
      if (done) return;
      try {
        const chunk = page.events
          .map((e) => {
            if (format === "csv") return `${COLUMNS.map((c) => csvField(e[c])).join(",")}\r\n`;
            const json = `${first ? "\n" : ",\n"}${JSON.stringify(e)}`;
            first = false;
            return json;
          })
          .join("");
        if (chunk !== "") controller.enqueue(encoder.encode(chunk));
        if (!page.next_cursor) {
          done = true;
          if (format === "json") controller.enqueue(encoder.encode("\n]\n"));
          controller.close();
          return;
        }
        page = await caller.audit.list({ ...query, limit: 200, cursor: page.next_cursor });
      } catch (thrown) {
        log("error", "audit export failed part way", { code: describeFailure(thrown).code });
        controller.error(new Error("the audit export stopped part way"));
      }
    },
  });
  const day = new Date().toISOString().slice(0, 10);
  return new Response(body, {
    headers: {
      "content-type": format === "csv" ? "text/csv; charset=utf-8" : "application/json; charset=utf-8",
      "content-disposition": `attachment; filename="audit-events-${day}.${format}"`,
    },
  });
};
