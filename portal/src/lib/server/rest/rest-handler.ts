import type { IncomingMessage, ServerResponse } from "node:http";
import { createOpenApiNodeHttpHandler } from "trpc-to-openapi";
import { appRouter } from "../trpc/routers/_app.js";
import type { Context } from "../trpc/context.js";
import { ApiError, errorResponse, toApiError } from "../errors.js";
import { readBody } from "../http/body.js";
import { log } from "../log.js";
import { afterAuthentication } from "../token-check.js";
import { API_BASE, restRoutes } from "./openapi.js";

/**
 * The REST API: trpc-to-openapi routes each documented path to its procedure.
 * This adapter does what that library does not: it reads the body itself
 * (capped, JSON only, no body = `{}`, so a body-less PUT works with or without
 * a content-type), strips the /api prefix, and formats every error itself
 * (the library's own error bodies can carry stacks). A bearer-token request it
 * refuses is answered only after the token is checked (token-check.ts).
 */

const contexts = new WeakMap<object, Context>();
const failures = new WeakMap<object, { error: unknown; matched: boolean }>();
const successStatus = new Map(restRoutes.map((route) => [route.procedure, route.meta.successStatus ?? 200]));

const handleNode = createOpenApiNodeHttpHandler<typeof appRouter, IncomingMessage, ServerResponse>({
  router: appRouter,
  createContext: ({ req }) => {
    const context = contexts.get(req);
    if (!context) throw new Error("REST request without a context");
    return context;
  },
  responseMeta: ({ paths, errors }) => (errors.length === 0 && paths?.[0] ? { status: successStatus.get(paths[0]) ?? 200 } : {}),
  onError: ({ error, req, path }) => {
    failures.set(req, { error, matched: path !== undefined });
  },
});

const BODY_METHODS = new Set(["POST", "PUT", "PATCH"]);

function isJsonContentType(value: string | null): boolean {
  if (value === null) return true; // no content-type: take the body as JSON
  const type = value.split(";")[0].trim().toLowerCase();
  return type === "application/json" || /^application\/[a-z0-9.+-]+\+json$/.test(type);
}

/** The media type of a content-type header as it may be quoted back: printable ASCII, bounded. */
function quotedMediaType(value: string): string {
  const type = value.split(";")[0].trim().toLowerCase();
  return /^[\x21-\x7e]{1,100}$/.test(type) ? `"${type.replaceAll('"', "")}"` : "this content type";
}

/** The parsed JSON body of a POST/PUT/PATCH: `{}` when there is none. */
async function jsonBody(request: Request): Promise<Record<string, unknown>> {
  const raw = await readBody(request);
  if (raw.every((byte) => byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d)) return {};
  const contentType = request.headers.get("content-type");
  if (!isJsonContentType(contentType)) {
    throw new ApiError("unsupported_media_type", `body: ${quotedMediaType(contentType!)} is not accepted; send JSON with "content-type: application/json"`);
  }
  let text: string;
  try {
    // Not a lenient decode: bytes that are not UTF-8 would be stored as U+FFFD.
    text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
  } catch {
    throw new ApiError("bad_request", "body: is not valid UTF-8", { issues: [{ path: "body", message: "is not valid UTF-8" }] });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ApiError("bad_request", "body: is not valid JSON", { issues: [{ path: "body", message: "is not valid JSON" }] });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ApiError("bad_request", "body: must be a JSON object", { issues: [{ path: "body", message: "must be a JSON object" }] });
  }
  return value as Record<string, unknown>;
}

function routeError(method: string, path: string): ApiError {
  const allowed = restRoutes.filter((route) => route.pattern.test(path)).map((route) => route.method);
  if (allowed.length > 0) {
    const error = new ApiError("method_not_allowed", `${method} is not supported on ${API_BASE}${path}; use ${allowed.join(", ")}`);
    return Object.assign(error, { allow: allowed.join(", ") });
  }
  return new ApiError("not_found", `no such endpoint: ${method} ${API_BASE}${path}`);
}

/** Serves one REST request (`request.url` under /api) for an already-resolved context. */
export async function handleRestRequest(request: Request, context: Context): Promise<Response> {
  const url = new URL(request.url);
  const path = url.pathname.slice(API_BASE.length) || "/";
  const method = request.method === "HEAD" ? "GET" : request.method;
  try {
    const body = BODY_METHODS.has(method) ? await jsonBody(request) : undefined;
    const inner = new Request(new URL(`${path}${url.search}`, "http://portal.internal"), {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      signal: request.signal,
    });
    // trpc-to-openapi takes a pre-parsed `body` when the request has one.
    const req = new Proxy(inner, {
      get: (target, property) => (property === "body" ? body : Reflect.get(target, property, target)),
      set: (target, property, value) => Reflect.set(target, property, value, target),
    });
    contexts.set(req, context);

    const { status, payload } = await new Promise<{ status: number; payload: string }>((resolve, reject) => {
      let statusCode = 200;
      const res = {
        setHeader: () => res,
        get statusCode() {
          return statusCode;
        },
        set statusCode(code: number) {
          statusCode = code;
        },
        end: (chunk?: string) => resolve({ status: statusCode, payload: chunk ?? "" }),
      };
      handleNode(req as unknown as IncomingMessage, res as unknown as ServerResponse).catch(reject);
    });

    const failure = failures.get(req);
    if (failure) {
      const error = await afterAuthentication(context, failure.matched ? toApiError(failure.error) : routeError(method, path));
      if (error.status >= 500) log("error", "API request failed", { method, path, code: error.apiCode, err: error.cause ?? failure.error });
      const allow = (error as ApiError & { allow?: string }).allow;
      return errorResponse(error, allow ? { allow } : {});
    }
    return new Response(payload, { status, headers: { "content-type": "application/json" } });
  } catch (thrown) {
    const error = await afterAuthentication(context, toApiError(thrown));
    if (error.status >= 500) log("error", "API request failed", { method, path, code: error.apiCode, err: thrown });
    return errorResponse(error);
  }
}
