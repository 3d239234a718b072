import type { ApiError } from "../errors.js";
import type { ServiceConnection } from "../service-client.js";

import type { AccountRole } from "../../roles.js";

export type { AccountRole };

/**
 * An administrator signed in to the portal (from AdminService.GetSession).
 * The role and organisations only decide which buttons the pages show: the
 * service decides every call itself, from the account the email names.
 */
export interface SignedInAdmin {
  adminId: string;
  email: string;
  role: AccountRole;
  /** The organisations the account is limited to; empty: every organisation. */
  organizationIds: string[];
  /** Whether the account signs in with a TOTP code. */
  twoFactorEnabled?: boolean;
  /** Owners require a second factor and the account has none: every page sends it to /account until it enrols. */
  twoFactorEnrolmentRequired?: boolean;
  /**
   * The session id (the cookie's value), sent with every call made for the account so that the service can check
   * the session's last sign-in before a sensitive action. Server-side only: never in page data.
   */
  sessionToken?: string;
}

/**
 * Who makes an API call. A session caller acts through the portal's own
 * service token, named to the service as the person; a token caller's bearer
 * token is forwarded and the service decides what it may do.
 */
export type Caller = { kind: "session"; admin: SignedInAdmin } | { kind: "token"; token: string };

export interface Context {
  /** null: nobody authenticated; every procedure then answers 401 (or `denial`). */
  caller: Caller | null;
  /** Why the request has no caller, when that is more than "no credentials" (a CSRF refusal, an outage). */
  denial: ApiError | null;
  connection: ServiceConnection;
  /** The client's address, passed to the service for its audit log. */
  source: string | null;
}

export interface CreateContextOptions {
  caller: Caller | null;
  denial?: ApiError | null;
  connection: ServiceConnection;
  source?: string | null;
}

/**
 * The context of one call, from plain values: the HTTP adapters pass what the
 * hooks resolved from the request; tests pass their own and use createCaller.
 */
export function createContextInner(options: CreateContextOptions): Context {
  return { caller: options.caller, denial: options.denial ?? null, connection: options.connection, source: options.source ?? null };
}
