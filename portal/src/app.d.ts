import type { PageAccount } from "$lib/roles";
import type { ApiError } from "$lib/server/errors";
import type { Caller, SignedInAdmin } from "$lib/server/trpc/context";

declare global {
  namespace App {
    interface Locals {
      /** The signed-in administrator of a page request (from the session cookie), or null. */
      admin: SignedInAdmin | null;
      /** Who calls an /api endpoint: a bearer token, a session, or nobody. */
      caller: Caller | null;
      /** Why an /api/trpc request has no caller; tRPC answers with it in its own error shape. */
      denial: ApiError | null;
    }
    interface Error {
      message: string;
    }
    interface PageData {
      admin?: PageAccount | null;
    }
  }
}

export {};
