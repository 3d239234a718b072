import { createTRPCClient, httpBatchLink } from "@trpc/client";
// Type-only: the router's types reach the browser, its code never does.
import type { AppRouter } from "$lib/server/trpc/routers/_app";

/**
 * The pages' client of the portal's own tRPC API (/api/trpc), authenticated by
 * the session cookie. Same-origin fetches carry the Origin header that the CSRF
 * check wants on mutations.
 */
export const trpc = createTRPCClient<AppRouter>({
  links: [httpBatchLink({ url: "/api/trpc" })],
});
