import { createContextKey } from "@connectrpc/connect";
import type { Principal } from "../auth/tokens.js";
import type { Actor } from "../credentials/credential-store.js";

/** The authenticated caller, set by the auth interceptor before any handler runs. */
export const principalKey = createContextKey<Principal | undefined>(undefined, { description: "authenticated caller" });

/** The caller's network address, set from the socket by the server. */
export const sourceKey = createContextKey<string | null>(null, { description: "caller address" });

export function actorOf(values: { get<T>(key: { id: symbol; defaultValue: T }): T }): Actor {
  const principal = values.get(principalKey);
  // The auth interceptor denies by default; reaching a handler without a principal is a bug.
  if (!principal) throw new Error("handler reached without an authenticated principal");
  return { actor: principal.actor, source: principal.source, via: principal.via };
}

/** Who acted, as an audit row names them: "alice@example.com via token:portal", or the token alone. */
export function auditActor(actor: Actor): string {
  return actor.via ? `${actor.actor} via ${actor.via}` : actor.actor;
}
