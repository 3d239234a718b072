import { fetchRequestHandler } from "@trpc/server/adapters/fetch";
import type { RequestHandler } from "./$types";
import { errorResponse, toApiError } from "$lib/server/errors";
import { readBody } from "$lib/server/http/body";
import { log } from "$lib/server/log";
import { serviceConnection } from "$lib/server/service-client";
import { createContextInner } from "$lib/server/trpc/context";
import { appRouter } from "$lib/server/trpc/routers/_app";

/** The pages' backend: tRPC over HTTP at /api/trpc/<procedure>. */
const trpc: RequestHandler = async ({ request, locals, getClientAddress }) => {
  let body: Uint8Array<ArrayBuffer> | undefined;
  if (request.method !== "GET" && request.method !== "HEAD") {
    try {
      body = await readBody(request);
    } catch (thrown) {
      return errorResponse(toApiError(thrown));
    }
  }
  const headers = new Headers(request.headers);
  headers.delete("content-length");
  const req = new Request(request.url, { method: request.method, headers, body, signal: request.signal });
  return fetchRequestHandler({
    endpoint: "/api/trpc",
    req,
    router: appRouter,
    createContext: () => createContextInner({ caller: locals.caller, denial: locals.denial, connection: serviceConnection(), source: getClientAddress() }),
    onError: ({ error, path }) => {
      const failure = toApiError(error);
      if (failure.status >= 500) log("error", "tRPC call failed", { path, code: failure.apiCode, err: failure.cause ?? error });
    },
  });
};

export const GET = trpc;
export const POST = trpc;
