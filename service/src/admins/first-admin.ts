import type { AdminStore } from "./admin-store.js";
import { ConfigError } from "../runtime/config.js";
import { ServiceError } from "../errors.js";

export const LOCAL_ADMIN_EMAIL = "admin@localhost";

/**
 * With no administrator yet: ADMIN_EMAIL and ADMIN_PASSWORD create the first
 * one, an owner; on the embedded default with neither, admin@localhost is created with a
 * generated password, returned so the caller can print it once.
 */
export async function ensureFirstAdmin(
  admins: AdminStore,
  env: NodeJS.ProcessEnv,
  embedded: boolean,
): Promise<{ email: string; generatedPassword?: string } | undefined> {
  if ((await admins.count()) > 0) return undefined;
  const by = { actor: "system:first-start", source: null };
  if (env.ADMIN_EMAIL || env.ADMIN_PASSWORD) {
    if (!env.ADMIN_EMAIL || !env.ADMIN_PASSWORD) throw new ConfigError("set both ADMIN_EMAIL and ADMIN_PASSWORD to create the first administrator");
    try {
      const { admin } = await admins.create(env.ADMIN_EMAIL, env.ADMIN_PASSWORD, by, "ADMIN_PASSWORD", { role: "owner" });
      return { email: admin.email };
    } catch (error) {
      if (error instanceof ServiceError && error.kind === "invalid_argument") {
        // Named by the variable at fault; the message never repeats the password.
        throw new ConfigError(error.field === "ADMIN_PASSWORD" ? error.message : `ADMIN_EMAIL: ${error.description}`);
      }
      throw error;
    }
  }
  if (!embedded) return undefined;
  const { admin, password } = await admins.create(LOCAL_ADMIN_EMAIL, undefined, by, "password", { role: "owner" });
  return { email: admin.email, generatedPassword: password };
}
