import { json } from "@sveltejs/kit";
import type { RequestHandler } from "./$types";
import { openApiDocument } from "$lib/server/rest/openapi";

/** The OpenAPI 3.1 document of the REST API, generated from the tRPC procedures. */
export const GET: RequestHandler = () => json(openApiDocument());
