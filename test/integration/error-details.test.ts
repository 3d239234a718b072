import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { startTestService, FAKE_KEYS, type TestService } from "../support/harness.js";
import { CredentialService, OrganizationService, Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { BadRequestSchema, ErrorInfoSchema } from "@provider-credentials/wire/gen/google/rpc/error_details_pb";

// Errors as data: every domain error carries google.rpc.ErrorInfo (a stable reason, the field at
// fault), bad input a google.rpc.BadRequest field violation, on every port and protocol alike.

let t: TestService;
beforeAll(async () => {
  t = await startTestService();
  await createClient(OrganizationService, t.transport("grpc", t.adminToken)).createOrganization({ organizationId: "details-org", name: "Details" });
});
afterAll(async () => {
  await t?.close();
});

async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("expected the call to fail");
}

describe.each(["grpc", "grpc-web", "connect"] as const)("error details over %s", (protocol) => {
  const credentials = () => createClient(CredentialService, t.transport(protocol, t.adminToken));

  it("bad input: INVALID_ARGUMENT with ErrorInfo and a BadRequest violation naming the field, apart from the message", async () => {
    const wrongKey = FAKE_KEYS.anthropic();
    const error = await failure(
      credentials().createCredential({ organizationId: "details-org", provider: Provider.OPENAI, credentialName: "x", apiKey: wrongKey }),
    );
    expect(error.code).toBe(Code.InvalidArgument);
    const [info] = error.findDetails(ErrorInfoSchema);
    expect({ reason: info.reason, domain: info.domain, metadata: info.metadata }).toEqual({
      reason: "INVALID_ARGUMENT",
      domain: "provider-credentials",
      metadata: { field: "api_key" },
    });
    const violations = error.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations);
    expect(violations.map((v) => v.field)).toEqual(["api_key"]);
    expect(error.rawMessage).toBe(`api_key: ${violations[0].description}`);
    // The key itself is in neither the message nor the details.
    expect(JSON.stringify([error.rawMessage, violations, info.metadata])).not.toContain(wrongKey.slice(-12));
  });

  it("a refusal with a precise reason: a duplicate name is CREDENTIAL_NAME_TAKEN on credential_name, and no BadRequest", async () => {
    const input = { organizationId: "details-org", provider: Provider.OPENAI, credentialName: `dup-${protocol}`, apiKey: FAKE_KEYS.openai() };
    await credentials().createCredential(input);
    const error = await failure(credentials().createCredential(input));
    expect(error.code).toBe(Code.AlreadyExists);
    expect(error.findDetails(ErrorInfoSchema).map((i) => [i.reason, i.metadata.field])).toEqual([["CREDENTIAL_NAME_TAKEN", "credential_name"]]);
    expect(error.findDetails(BadRequestSchema)).toEqual([]);
  });

  it("no key anywhere: FAILED_PRECONDITION with reason NO_KEY_CONFIGURED", async () => {
    const error = await failure(credentials().resolveKey({ scope: { case: "organizationId", value: "details-org" }, provider: Provider.GEMINI }));
    expect(error.code).toBe(Code.FailedPrecondition);
    expect(error.findDetails(ErrorInfoSchema).map((i) => i.reason)).toEqual(["NO_KEY_CONFIGURED"]);
  });
});
