import { applyActive, deleteCredentialRows, notFound, type Actor, type CredentialStore, type CredentialView } from "./credential-store.js";
import type { CredentialRow } from "../db/entities.js";
import { ServiceError } from "../errors.js";

/** What BatchCredentialAction does to each credential. */
export type CredentialActionName = "activate" | "deactivate" | "delete";

/** Most credentials one BatchCredentialAction may name. */
export const MAX_BATCH_CREDENTIALS = 200;

/**
 * BatchCredentialAction: the action on every credential named, in one change (one transaction): all of them or none.
 * The rows are locked first (in id order); the first id that names no credential fails the whole batch with
 * NOT_FOUND. Each credential is changed, invalidated and audited exactly as its single-credential RPC does
 * (applyActive, deleteCredentialRows); one already in the state asked for is left as it is, unaudited. Activated
 * credentials get activation times in the order named, strictly increasing, so the last one named is the newest.
 * `ids` are valid, distinct, lower-case UUIDs (the handler checks). Returns each credential after the change (as it
 * was, for a deletion), in the order named.
 */
export async function batchCredentialAction(
  store: CredentialStore,
  action: CredentialActionName,
  ids: readonly string[],
  by: Actor,
): Promise<CredentialView[]> {
  return store.change(async (change) => {
    const locked = await store.lockMany(change.em, ids);
    const rows: CredentialRow[] = ids.map((id, i) => {
      const row = locked.get(id);
      if (!row) throw new ServiceError("not_found", `credential_ids[${i}]: ${notFound(id).message}`, `credential_ids[${i}]`);
      return row;
    });
    if (action === "delete") {
      await deleteCredentialRows(change, rows, by);
    } else {
      let last = 0;
      for (const row of rows) {
        // Strictly later than the previous one's, even within one millisecond.
        const at = Math.max(Date.now(), last + 1);
        if (await applyActive(change, row, action === "activate", by, new Date(at))) last = at;
      }
    }
    const now = Date.now();
    return rows.map((row) => store.view(row, now));
  });
}
