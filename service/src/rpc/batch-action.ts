import type { HandlerContext } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { CredentialAction, type BatchCredentialActionRequest, type BatchCredentialActionResponseSchema } from "@provider-credentials/wire/gen/credentials_pb";
import type { CredentialStore } from "../credentials/credential-store.js";
import { batchCredentialAction, MAX_BATCH_CREDENTIALS, type CredentialActionName } from "../credentials/credential-batch.js";
import { invalid } from "../errors.js";
import { validateCredentialId } from "../credentials/validation.js";
import { requireRecentSignIn } from "../auth/policy.js";
import { actorOf, principalOf } from "./context.js";
import { credentialMessage } from "./convert.js";

const ACTIONS: Partial<Record<CredentialAction, CredentialActionName>> = {
  [CredentialAction.ACTIVATE]: "activate",
  [CredentialAction.DEACTIVATE]: "deactivate",
  [CredentialAction.DELETE]: "delete",
};

/**
 * BatchCredentialAction: the request checked in full (action, then the ids: 1-200, each a UUID, no repeats), then
 * every credential's organisation against a limited caller's (the first one outside is refused, whether or not it
 * exists), then the action on all of them in one transaction (credentials/credential-batch.ts).
 */
export async function batchCredentialActionRpc(
  credentials: CredentialStore,
  req: BatchCredentialActionRequest,
  ctx: HandlerContext,
): Promise<MessageInitShape<typeof BatchCredentialActionResponseSchema>> {
  const action = ACTIONS[req.action];
  if (action === undefined) throw invalid("action", "must be one of CREDENTIAL_ACTION_ACTIVATE, CREDENTIAL_ACTION_DEACTIVATE, CREDENTIAL_ACTION_DELETE");
  if (req.credentialIds.length === 0) throw invalid("credential_ids", "must name at least one credential");
  if (req.credentialIds.length > MAX_BATCH_CREDENTIALS) {
    throw invalid("credential_ids", `must name at most ${MAX_BATCH_CREDENTIALS} credentials; ${req.credentialIds.length} were given`);
  }
  const ids = req.credentialIds.map((id, i) => validateCredentialId(id, `credential_ids[${i}]`));
  const first = new Map<string, number>();
  ids.forEach((id, i) => {
    const earlier = first.get(id);
    if (earlier !== undefined) throw invalid(`credential_ids[${i}]`, `repeats credential_ids[${earlier}]; name each credential once`);
    first.set(id, i);
  });
  const principal = principalOf(ctx.values);
  await principal.targets.credentials(principal, ids, (i) => `credential_ids[${i}]`);
  // Deleting up to 200 keys at once destroys as offboarding does: made for a portal account, it needs a recent sign-in.
  if (action === "delete") await requireRecentSignIn(principal, "deleting credentials together");
  const views = await batchCredentialAction(credentials, action, ids, actorOf(ctx.values));
  return { credentials: views.map(credentialMessage) };
}
