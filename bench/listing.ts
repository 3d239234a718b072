// Listing latency for an organisation with 10,000 credentials: the first page
// and the 200th page (50 per page), through the portal's REST path when the
// portal can be built and started, else through the gRPC ListCredentials RPC.
import { existsSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { bearer, call, credentialClient } from "./clients.js";
import { percentile } from "./invalidation.js";
import { freePort, isListening, sleep, startProcess, type Managed } from "./processes.js";
import { ensurePortalBuild } from "../portal/scripts/ensure-build.js";

export interface ListingResult {
  /** "rest" = GET /api/provider-credentials/organization/{id} on the portal; "grpc" = ListCredentials on the service. */
  path: "rest" | "grpc";
  pathLabel: string;
  /** Why the REST path was not measured, when it was not. */
  restUnavailable?: string;
  pageSize: number;
  repetitions: number;
  firstPage: { medianMs: number; p90Ms: number; minMs: number };
  page200: { medianMs: number; p90Ms: number; minMs: number };
  ratio: number;
  /** Sanity: page 200 held a full page of different credentials than page 1. */
  pagesLookRight: boolean;
}

type FetchPage = (cursor: string) => Promise<{ ids: string[]; next: string }>;

export interface Portal {
  baseUrl: string;
  process: Managed;
}

/**
 * Builds the portal when it is missing or stale (as npm start does) and starts
 * it. Returns the reason instead when it cannot.
 */
export async function startPortal(serviceUrl: string, adminToken: string, log: (line: string) => void): Promise<Portal | { unavailable: string }> {
  if (!existsSync("portal/server.js")) return { unavailable: "portal/server.js does not exist yet" };
  // Built when missing or stale (a build of other sources would measure other code).
  try {
    await ensurePortalBuild(log);
  } catch (error) {
    return { unavailable: `the portal could not be built: ${error instanceof Error ? error.message : String(error)}` };
  }
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const portal = startProcess("portal", process.execPath, ["portal/server.js"], {
    core: 1,
    env: {
      ...process.env,
      PORTAL_PORT: String(port),
      PORT: String(port),
      HOST: "127.0.0.1",
      ORIGIN: baseUrl,
      CREDENTIALS_SERVICE_URL: serviceUrl,
      SERVICE_ADMIN_TOKEN: adminToken,
    },
  });
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (!portal.running) return { unavailable: `the portal exited (code ${portal.exit?.code})${portal.tail(10)}` };
    if (await isListening(port)) return { baseUrl, process: portal };
    await sleep(200);
  }
  await portal.stop();
  return { unavailable: `the portal did not listen on ${port} within 30 s${portal.tail(10)}` };
}

export function restPages(baseUrl: string, organizationId: string, adminToken: string, pageSize: number): FetchPage {
  return async (cursor) => {
    const url = new URL(`/api/provider-credentials/organization/${encodeURIComponent(organizationId)}`, baseUrl);
    url.searchParams.set("limit", String(pageSize));
    if (cursor) url.searchParams.set("cursor", cursor);
    const response = await fetch(url, { headers: { authorization: `Bearer ${adminToken}`, accept: "application/json" } });
    if (!response.ok) throw new Error(`GET ${url.pathname}: HTTP ${response.status} ${(await response.text()).slice(0, 200)}`);
    const body = (await response.json()) as { credentials?: Array<{ credential_id?: string; id?: string }>; next_cursor?: string | null };
    return { ids: (body.credentials ?? []).map((c) => c.credential_id ?? c.id ?? ""), next: body.next_cursor ?? "" };
  };
}

export function grpcPages(target: string, organizationId: string, adminToken: string, pageSize: number): { fetch: FetchPage; close: () => void } {
  const client = credentialClient(target);
  const metadata = bearer(adminToken);
  return {
    fetch: async (cursor) => {
      const response = await call<{ credentials: Array<{ credential_id: string }>; next_page_token: string }>(
        client,
        "ListCredentials",
        { organization_id: organizationId, page_size: pageSize, page_token: cursor },
        metadata,
      );
      return { ids: response.credentials.map((c) => c.credential_id), next: response.next_page_token };
    },
    close: () => client.close(),
  };
}

export async function measureListing(
  fetchPage: FetchPage,
  options: { repetitions: number; pageSize: number; path: "rest" | "grpc"; pathLabel: string },
): Promise<ListingResult> {
  // The cursor of page 200: walk pages 1..199 once.
  const first = await fetchPage("");
  let cursor = first.next;
  for (let page = 2; page < 200; page++) {
    if (!cursor) throw new Error(`listing ended after ${page - 1} pages; expected at least 200`);
    cursor = (await fetchPage(cursor)).next;
  }
  const page200Cursor = cursor;
  const page200 = await fetchPage(page200Cursor);
  const pagesLookRight = first.ids.length === options.pageSize && page200.ids.length === options.pageSize && !page200.ids.some((id) => first.ids.includes(id));

  const time = async (c: string) => {
    const start = performance.now();
    await fetchPage(c);
    return performance.now() - start;
  };
  for (let i = 0; i < 3; i++) {
    await time("");
    await time(page200Cursor);
  }
  const firstTimes: number[] = [];
  const page200Times: number[] = [];
  for (let i = 0; i < options.repetitions; i++) {
    // Alternate, so that both see the same moments of a shared machine.
    firstTimes.push(await time(""));
    page200Times.push(await time(page200Cursor));
  }
  const summary = (v: number[]) => ({ medianMs: percentile(v, 0.5), p90Ms: percentile(v, 0.9), minMs: Math.min(...v) });
  const firstPage = summary(firstTimes);
  const last = summary(page200Times);
  return {
    path: options.path,
    pathLabel: options.pathLabel,
    pageSize: options.pageSize,
    repetitions: options.repetitions,
    firstPage,
    page200: last,
    ratio: last.medianMs / firstPage.medianMs,
    pagesLookRight,
  };
}
