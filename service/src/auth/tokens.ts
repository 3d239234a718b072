import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { TokenScope } from "../db/entities.js";

export { TOKEN_SCOPES } from "@provider-credentials/wire/auth";
const TOKEN_PREFIX = "pct_";

/** A new API token: a recognisable prefix and 256 random bits. Shown once, stored only as its hash. */
export function generateToken(): string {
  return TOKEN_PREFIX + randomBytes(32).toString("base64url");
}

export function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

export function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, "hex");
  const y = Buffer.from(b, "hex");
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Who is calling: set once per call by the auth interceptor. */
export interface Principal {
  /** The token's name, or "service-admin-token" for SERVICE_ADMIN_TOKEN. */
  tokenName: string;
  scope: TokenScope;
  /** What audit records and created_by/updated_by name: the token, or the administrator an admin token acts for. */
  actor: string;
  /** When `actor` is an administrator an admin token named (the actor header): that token, "token:<name>"; else null. Audit rows record both. */
  via: string | null;
  /** The caller's address. */
  source: string | null;
}
