import { afterAll, beforeAll, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { startTestService, FAKE_KEYS, rpcError, type TestService } from "../support/harness.js";
import { Provider, KeySource } from "../../service/src/gen/credentials_pb.js";

let t: TestService;
beforeAll(async () => { t = await startTestService(); });
afterAll(async () => { await t?.close(); });

it("creates an organisation and a credential, then resolves it", async () => {
  const { credentials, organizations } = t.clients();
  await organizations.createOrganization({ organizationId: "org-1", name: "Org One" });
  const key = FAKE_KEYS.openai();
  const { credential } = await credentials.createCredential({ organizationId: "org-1", provider: Provider.OPENAI, credentialName: "Prod", apiKey: key });
  expect(credential?.isActive).toBe(true);
  expect(credential?.keyHint).toBe(`sk-…${key.slice(-4)}`);
  const resolved = await credentials.resolveKey({ scope: { case: "organizationId", value: "org-1" }, provider: Provider.OPENAI });
  expect(resolved.apiKey).toBe(key);
  expect(resolved.source).toBe(KeySource.ORGANIZATION);
  const err = await rpcError(credentials.resolveKey({ scope: { case: "organizationId", value: "nope" }, provider: Provider.OPENAI }));
  expect(err.code).toBe(Code.NotFound);
});
