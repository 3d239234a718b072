import type { RequestHandler } from "./$types";
import { handleRestRequest } from "$lib/server/rest/rest-handler";
import { createContextInner } from "$lib/server/trpc/context";
import { serviceConnection } from "$lib/server/service-client";

/** Every REST path: authentication was resolved by hooks.server.ts; the procedures check it again. */
const rest: RequestHandler = ({ request, locals, getClientAddress }) =>
  handleRestRequest(request, createContextInner({ caller: locals.caller, connection: serviceConnection(), source: getClientAddress() }));

export const GET = rest;
export const POST = rest;
export const PUT = rest;
export const DELETE = rest;
export const fallback = rest;
