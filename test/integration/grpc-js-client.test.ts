// A plain @grpc/grpc-js client that knows nothing but proto/*.proto, as a
// client in another language would: it must be able to use the service and
// must see errors as ordinary gRPC status codes.
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { startTestService, FAKE_KEYS, rpcError, type TestService } from "../support/harness.js";
import { Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { TokenStore } from "../../service/src/auth/token-store.js";

const PROTO_DIR = fileURLToPath(new URL("../../proto/", import.meta.url));
const LOADER_OPTIONS = { longs: String, enums: String, defaults: true, oneofs: true };

type Callback = (error: grpc.ServiceError | null, response: unknown) => void;
type UnaryMethod = (request: object, metadata: grpc.Metadata, options: grpc.CallOptions, callback: Callback) => grpc.ClientUnaryCall;
type ServiceClient = grpc.Client & Record<string, UnaryMethod>;
type ClientConstructor = new (address: string, credentials: grpc.ChannelCredentials) => ServiceClient;

function load(file: string, keepCase: boolean): grpc.GrpcObject {
  const definition = protoLoader.loadSync(`${PROTO_DIR}${file}`, { ...LOADER_OPTIONS, keepCase, includeDirs: [PROTO_DIR] });
  return grpc.loadPackageDefinition(definition);
}

function serviceCtor(root: grpc.GrpcObject, path: string): ClientConstructor {
  let node: unknown = root;
  for (const part of path.split(".")) node = (node as Record<string, unknown>)[part];
  if (typeof node !== "function") throw new Error(`${path} is not a service in the loaded proto`);
  return node as ClientConstructor;
}

function bearer(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set("authorization", `Bearer ${token}`);
  return md;
}

/** A unary call as a promise of the response (plain object). */
function call<T = Record<string, unknown>>(client: ServiceClient, method: string, request: object, metadata = new grpc.Metadata()): Promise<T> {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + 10_000 }, (error, response) => (error ? reject(error) : resolve(response as T)));
  });
}

/** The status a call fails with: numeric code and message (grpc-js `details`). */
async function status(promise: Promise<unknown>): Promise<{ code: number; details: string }> {
  try {
    await promise;
  } catch (error) {
    const e = error as grpc.ServiceError;
    return { code: e.code, details: e.details };
  }
  throw new Error("expected the call to fail, but it succeeded");
}

let t: TestService;
let credentials: ServiceClient;
let organizations: ServiceClient;
let admin: grpc.Metadata;
const clients: grpc.Client[] = [];

beforeAll(async () => {
  t = await startTestService();
  const root = load("credentials.proto", true);
  credentials = new (serviceCtor(root, "credentials.v1.CredentialService"))(t.address, grpc.credentials.createInsecure());
  organizations = new (serviceCtor(root, "credentials.v1.OrganizationService"))(t.address, grpc.credentials.createInsecure());
  clients.push(credentials, organizations);
  admin = bearer(t.adminToken);
});
afterAll(async () => {
  for (const client of clients) client.close();
  await t?.close();
});

describe("credentials.v1 with snake_case fields (keepCase: true)", () => {
  const key = FAKE_KEYS.anthropic();
  let credentialId = "";

  it("creates an organisation, a team and an Anthropic credential", async () => {
    const org = await call<{ organization: Record<string, unknown> }>(
      organizations,
      "CreateOrganization",
      { organization_id: "grpcjs-org", name: "grpc-js Org" },
      admin,
    );
    expect(org.organization).toMatchObject({ organization_id: "grpcjs-org", name: "grpc-js Org" });
    expect(org.organization.created_at).toMatchObject({ seconds: expect.stringMatching(/^\d+$/) });

    const team = await call<{ team: Record<string, unknown> }>(
      organizations,
      "CreateTeam",
      { team_id: "grpcjs-team", organization_id: "grpcjs-org", name: "Team" },
      admin,
    );
    expect(team.team).toMatchObject({ team_id: "grpcjs-team", organization_id: "grpcjs-org", name: "Team" });

    const created = await call<{ credential: Record<string, unknown> }>(
      credentials,
      "CreateCredential",
      { organization_id: "grpcjs-org", provider: "PROVIDER_ANTHROPIC", credential_name: "Claude", api_key: key },
      admin,
    );
    expect(created.credential).toMatchObject({
      organization_id: "grpcjs-org",
      provider: "PROVIDER_ANTHROPIC",
      credential_name: "Claude",
      is_active: true,
      key_hint: `sk-ant-…${key.slice(-4)}`,
      version: 1,
      created_by: "token:service-admin-token",
    });
    expect(created.credential.credential_id).toMatch(/^[0-9a-f-]{36}$/);
    // The key is not in the response, under any field.
    expect(JSON.stringify(created)).not.toContain(key);
    expect(JSON.stringify(created)).not.toContain(key.slice(-12));
    credentialId = String(created.credential.credential_id);
  });

  it("resolves by team and by organisation", async () => {
    const byTeam = await call<Record<string, unknown>>(credentials, "ResolveKey", { team_id: "grpcjs-team", provider: "PROVIDER_ANTHROPIC" }, admin);
    expect(byTeam).toMatchObject({ api_key: key, source: "KEY_SOURCE_ORGANIZATION", credential_id: credentialId, organization_id: "grpcjs-org" });
    const byOrg = await call<Record<string, unknown>>(credentials, "ResolveKey", { organization_id: "grpcjs-org", provider: "PROVIDER_ANTHROPIC" }, admin);
    expect(byOrg).toMatchObject({ api_key: key, source: "KEY_SOURCE_ORGANIZATION", credential_id: credentialId, organization_id: "grpcjs-org" });
  });

  it("a resolve-scope token works from grpc-js too", async () => {
    const { token } = await new TokenStore(t.service.orm).create("grpcjs-gateway", "resolve", "test");
    const resolved = await call<Record<string, unknown>>(credentials, "ResolveKey", { team_id: "grpcjs-team", provider: "PROVIDER_ANTHROPIC" }, bearer(token));
    expect(resolved.api_key).toBe(key);
    expect(await status(call(credentials, "ListCredentials", { organization_id: "grpcjs-org" }, bearer(token)))).toEqual({
      code: grpc.status.PERMISSION_DENIED,
      details: 'token "grpcjs-gateway" has scope "resolve", which may not call ListCredentials',
    });
  });

  it("lists and gets the credential with all fields, still without the key", async () => {
    const list = await call<{ credentials: Array<Record<string, unknown>>; next_page_token: string }>(
      credentials,
      "ListCredentials",
      { organization_id: "grpcjs-org" },
      admin,
    );
    expect(list.credentials.map((c) => c.credential_id)).toEqual([credentialId]);
    expect(list.next_page_token).toBe("");
    const got = await call<{ credential: Record<string, unknown> }>(credentials, "GetCredential", { credential_id: credentialId }, admin);
    expect(got.credential).toMatchObject({ credential_id: credentialId, provider: "PROVIDER_ANTHROPIC", is_active: true });
    expect(JSON.stringify(got)).not.toContain(key);
  });

  it("errors arrive as gRPC status codes with the service's message", async () => {
    expect(await status(call(organizations, "GetOrganization", { organization_id: "nope" }, admin))).toEqual({
      code: grpc.status.NOT_FOUND,
      details: 'organization "nope" not found',
    });
    expect(grpc.status.NOT_FOUND).toBe(5);

    const invalid = await status(
      call(
        credentials,
        "CreateCredential",
        { organization_id: "grpcjs-org", provider: "PROVIDER_ANTHROPIC", credential_name: "Bad", api_key: "sk-proj-not-an-anthropic-key" },
        admin,
      ),
    );
    expect(invalid.code).toBe(3);
    expect(invalid.details).toMatch(/^api_key: Anthropic keys start with "sk-ant-"/);

    const noName = await status(call(organizations, "CreateOrganization", { organization_id: "grpcjs-2", name: "" }, admin));
    expect(noName).toEqual({ code: grpc.status.INVALID_ARGUMENT, details: "name: is required" });

    const noProvider = await status(call(credentials, "ResolveKey", { organization_id: "grpcjs-org" }, admin));
    expect(noProvider.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(noProvider.details).toMatch(/^provider: must be one of PROVIDER_OPENAI/);

    const noScope = await status(call(credentials, "ResolveKey", { provider: "PROVIDER_ANTHROPIC" }, admin));
    expect(noScope).toEqual({ code: grpc.status.INVALID_ARGUMENT, details: "scope: set organization_id or team_id" });

    const duplicate = await status(call(organizations, "CreateTeam", { team_id: "grpcjs-team", organization_id: "grpcjs-org", name: "Again" }, admin));
    expect(duplicate).toEqual({ code: grpc.status.ALREADY_EXISTS, details: 'team_id: a team with id "grpcjs-team" already exists' });

    const noFallback = await status(call(credentials, "ResolveKey", { organization_id: "grpcjs-org", provider: "PROVIDER_OPENAI" }, admin));
    expect(noFallback).toEqual({
      code: grpc.status.FAILED_PRECONDITION,
      details: 'organization "grpcjs-org" has no active OpenAI credential and OPENAI_API_KEY is not set',
    });
  });

  it("messages with reserved, non-ASCII and % characters arrive unmangled in grpc-js and Connect alike", async () => {
    const name = "Zürich 100%41, ok? a/b #1 ✓";
    const request = { organization_id: "grpcjs-org", provider: "PROVIDER_ANTHROPIC", credential_name: name, api_key: FAKE_KEYS.anthropic() };
    await call(credentials, "CreateCredential", request, admin);
    const expected = `credential_name: a credential named "${name}" already exists for this organization and provider`;
    expect(await status(call(credentials, "CreateCredential", { ...request, api_key: FAKE_KEYS.anthropic() }, admin))).toEqual({
      code: grpc.status.ALREADY_EXISTS,
      details: expected,
    });
    const viaConnect = await rpcError(
      t
        .clients()
        .credentials.createCredential({ organizationId: "grpcjs-org", provider: Provider.ANTHROPIC, credentialName: name, apiKey: FAKE_KEYS.anthropic() }),
    );
    expect(viaConnect).toEqual({ code: grpc.status.ALREADY_EXISTS, message: expected });
  });

  it("UNAUTHENTICATED (16) without metadata, and with a wrong token", async () => {
    const none = await status(call(organizations, "ListOrganizations", {}));
    expect(none.code).toBe(16);
    expect(none.details).toMatch(/^missing or malformed authorization header/);
    expect(await status(call(credentials, "ResolveKey", { organization_id: "grpcjs-org", provider: "PROVIDER_ANTHROPIC" }, bearer("garbage")))).toEqual({
      code: grpc.status.UNAUTHENTICATED,
      details: "invalid or revoked token",
    });
  });
});

describe("credentials.v1 with camelCase fields (keepCase: false)", () => {
  it("reads and writes the same data", async () => {
    const root = load("credentials.proto", false);
    const orgs = new (serviceCtor(root, "credentials.v1.OrganizationService"))(t.address, grpc.credentials.createInsecure());
    const creds = new (serviceCtor(root, "credentials.v1.CredentialService"))(t.address, grpc.credentials.createInsecure());
    clients.push(orgs, creds);
    await call(orgs, "CreateOrganization", { organizationId: "camel-org", name: "Camel" }, admin);
    const got = await call<{ organization: Record<string, unknown> }>(orgs, "GetOrganization", { organizationId: "camel-org" }, admin);
    expect(got.organization).toMatchObject({ organizationId: "camel-org", name: "Camel" });
    const key = FAKE_KEYS.fireworks();
    const created = await call<{ credential: Record<string, unknown> }>(
      creds,
      "CreateCredential",
      { organizationId: "camel-org", provider: "PROVIDER_FIREWORKS", credentialName: "FW", apiKey: key, apiBase: "https://proxy.example.com/v1" },
      admin,
    );
    expect(created.credential).toMatchObject({ provider: "PROVIDER_FIREWORKS", apiBase: "https://proxy.example.com/v1", isActive: true });
    const resolved = await call<Record<string, unknown>>(creds, "ResolveKey", { organizationId: "camel-org", provider: "PROVIDER_FIREWORKS" }, admin);
    expect(resolved).toMatchObject({ apiKey: key, apiBase: "https://proxy.example.com/v1", source: "KEY_SOURCE_ORGANIZATION" });
    const page = await call<{ organizations: Array<{ organizationId: string }>; nextPageToken: string }>(orgs, "ListOrganizations", { pageSize: 1 }, admin);
    expect(page.organizations).toHaveLength(1);
    expect(page.nextPageToken).not.toBe("");
  });
});

describe("grpc.health.v1 from grpc-js", () => {
  it("Check without any token returns SERVING; an unknown service is NOT_FOUND", async () => {
    const root = load("grpc/health/v1/health.proto", false);
    const health = new (serviceCtor(root, "grpc.health.v1.Health"))(t.address, grpc.credentials.createInsecure());
    clients.push(health);
    expect(await call(health, "Check", { service: "" })).toEqual({ status: "SERVING" });
    expect(await call(health, "Check", { service: "credentials.v1.CredentialService" })).toEqual({ status: "SERVING" });
    expect(await call(health, "Check", { service: "credentials.v1.OrganizationService" })).toEqual({ status: "SERVING" });
    expect(await status(call(health, "Check", { service: "no.such.Service" }))).toEqual({
      code: grpc.status.NOT_FOUND,
      details: "Health status unknown for service no.such.Service",
    });
  });
});
