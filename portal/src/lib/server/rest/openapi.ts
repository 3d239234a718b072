import { generateOpenApiDocument, type OpenAPIObject } from "trpc-to-openapi";
import { appRouter } from "../trpc/routers/_app.js";
import type { Meta } from "../trpc/trpc.js";
import { MAX_BODY_BYTES } from "../http/body.js";

/** The REST API is served under this prefix; the document's paths are relative to it. */
export const API_BASE = "/api";

export interface RestRoute {
  method: string;
  /** As in the document, e.g. `/provider-credentials/{credential_id}`. */
  path: string;
  pattern: RegExp;
  procedure: string;
  meta: Meta;
}

/** Every REST operation, from the procedures' metadata. */
export const restRoutes: RestRoute[] = Object.entries(appRouter._def.procedures as unknown as Record<string, { _def: { meta?: Meta } }>)
  .filter(([, procedure]) => procedure._def.meta?.openapi)
  .map(([procedure, { _def }]) => {
    const meta = _def.meta!;
    const { method, path } = meta.openapi!;
    const pattern = new RegExp(`^${path.replace(/\{[^}]+\}/g, "[^/]+")}$`);
    return { method, path, pattern, procedure, meta };
  });

const ERROR_RESPONSES: Record<string, string> = {
  "400": "Bad input: the message names the field; `issues` lists each problem.",
  "401": "No credentials, or a token or session that is not valid.",
  "403":
    "Not allowed: a `resolve`- or `metrics`-scope token, a token or account whose organisations or role do not allow it, " +
    "or a cross-origin request with a session cookie.",
  "404": "No such organisation, credential, team, token or account.",
  "409":
    "Conflict: a duplicate name, id or email, a stale `expected_version`, an organisation that still has credentials or teams, " +
    "the last enabled owner, or (with `verify: true`) a key the provider did not accept (`failed_precondition`, naming `api_key`).",
  "413": `The body is larger than ${MAX_BODY_BYTES / 1024} KiB.`,
  "503": "The credentials service is unavailable; try again shortly.",
};

/** The error statuses an operation can answer. */
function errorsFor(route: RestRoute): string[] {
  const names = route.path.includes("{") || route.path === "/provider-credentials/create" || route.path === "/provider-credentials/batch";
  // Checking a key and setting a strategy change nothing that can conflict; activation is idempotent.
  const conflictFree = /\/(activate|deactivate|verify|rotate|sign-out)$|\/selection-strategies\//.test(route.path);
  const conflicts =
    ((route.method === "POST" || route.method === "PUT") && !conflictFree) ||
    route.path === "/organizations/{organization_id}" ||
    route.path === "/accounts/{email}";
  return [
    "400",
    "401",
    "403",
    ...(names ? ["404"] : []),
    ...(conflicts && route.method !== "GET" ? ["409"] : []),
    ...(route.method === "POST" || route.method === "PUT" ? ["413"] : []),
    "503",
  ];
}

function build(): OpenAPIObject {
  const document = generateOpenApiDocument(appRouter, {
    title: "Provider Credentials API",
    version: "1.0.0",
    description:
      "Organisation-level storage of LLM provider API keys. Every operation needs an admin-scope API token " +
      "(`Authorization: Bearer <token>`) or a signed-in administrator's session cookie. Keys are never returned. " +
      'Errors are JSON `{"code", "message"}` (plus `issues` for bad input).',
    baseUrl: API_BASE,
    securitySchemes: {
      bearerAuth: { type: "http", scheme: "bearer", description: "An admin-scope API token (or SERVICE_ADMIN_TOKEN)." },
      sessionCookie: {
        type: "apiKey",
        in: "cookie",
        name: "pc_session",
        description: "A portal session (sign in at /login); mutations also need a same-origin Origin header.",
      },
    },
  });

  // One error schema and one response per status, referenced by every operation.
  document.components ??= {};
  document.components.schemas = {
    ...document.components.schemas,
    Error: {
      type: "object",
      required: ["code", "message"],
      properties: {
        code: { type: "string", description: "Machine-readable, e.g. `bad_request`, `not_found`, `already_exists`, `stale_version`." },
        message: { type: "string", description: "For people; names the field at fault." },
        issues: {
          type: "array",
          description: "Each problem with the input (400 only).",
          items: {
            type: "object",
            required: ["path", "message"],
            properties: { path: { type: "string" }, message: { type: "string" } },
          },
        },
      },
    },
  };
  document.components.responses = Object.fromEntries(
    Object.entries(ERROR_RESPONSES).map(([status, description]) => [
      `Error${status}`,
      { description, content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } } },
    ]),
  );

  for (const route of restRoutes) {
    const operation = document.paths?.[route.path]?.[route.method.toLowerCase() as "get"];
    if (!operation?.responses) continue;
    const success = operation.responses["200"];
    const responses: Record<string, unknown> = {};
    responses[String(route.meta.successStatus ?? 200)] = success;
    for (const status of errorsFor(route)) responses[status] = { $ref: `#/components/responses/Error${status}` };
    operation.responses = responses;
    // A body whose every field is optional may be left out.
    const body = operation.requestBody as { required?: boolean; content?: Record<string, { schema?: { required?: string[] } }> } | undefined;
    if (body && !body.content?.["application/json"]?.schema?.required?.length) body.required = false;
  }
  return document;
}

let cached: OpenAPIObject | undefined;

/** The OpenAPI 3.1 document of the REST API, generated from the tRPC procedures. */
export function openApiDocument(): OpenAPIObject {
  cached ??= build();
  return cached;
}
