import { createContextKey } from "@connectrpc/connect";
import type { Principal } from "../auth/tokens.js";
import type { TargetPolicy } from "../auth/policy.js";
import type { Actor } from "../credentials/credential-store.js";
import { auditActorText } from "../audit/audit-store.js";

/** The caller as handlers see it: who, and the policy that checks the organisation of what they name. */
export interface CallPrincipal extends Principal {
  readonly targets: TargetPolicy;
}

/** The authenticated caller, set by the auth interceptor before any handler runs. */
export const principalKey = createContextKey<CallPrincipal | undefined>(undefined, { description: "authenticated caller" });

/** The caller's network address, set from the socket by the server. */
export const sourceKey = createContextKey<string | null>(null, { description: "caller address" });

type Values = { get<T>(key: { id: symbol; defaultValue: T }): T };

/** The authenticated caller; reaching a handler without one is a bug (the auth interceptor denies by default). */
export function principalOf(values: Values): CallPrincipal {
  const principal = values.get(principalKey);
  if (!principal) throw new Error("handler reached without an authenticated principal");
  return principal;
}

export function actorOf(values: Values): Actor {
  const principal = principalOf(values);
  return { actor: principal.actor, source: principal.source, via: principal.via, role: principal.role };
}

/** Who acted, as an audit row names them: "alice@example.com (editor) via token:portal", or the token alone. */
export function auditActor(actor: Actor): string {
  return auditActorText(actor);
}
