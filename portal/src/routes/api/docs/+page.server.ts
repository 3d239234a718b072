import type { PageServerLoad } from "./$types";
import { openApiDocument } from "$lib/server/rest/openapi";
import { docPage } from "$lib/server/rest/docs";

// Plain HTML: no script runs on this page, and nothing loads from anywhere else.
export const csr = false;

export const load: PageServerLoad = () => ({ docs: docPage(openApiDocument()) });
