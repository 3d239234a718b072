// Re-creating a deleted organisation's id: refused while an API token or a portal account is still limited to it (it
// would silently reach the new organisation's keys), over gRPC and over the portal's REST API, against the real
// service and PostgreSQL. Once the tokens are revoked and the accounts changed or deleted, the id is free again.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import { Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { FAKE_KEYS, rpcError, startTestService, type TestService, rpcRefusal } from "../support/harness.js";
import { startTestPortal, type TestPortal } from "../support/portal-harness.js";

let t: TestService;
let admin: Client<typeof AdminService>;
const orgs = () => t.clients().organizations;

beforeAll(async () => {
  t = await startTestService();
  admin = createClient(AdminService, t.transport("grpc", t.adminToken));
});
afterAll(async () => {
  await t?.close();
});

const still = (id: string, named: string, remedy: string) => ({
  code: Code.FailedPrecondition,
  message: `organization_id: "${id}" is still named by ${named} limited to a deleted organization of that id; ${remedy} first`,
  reason: "ORGANIZATION_ID_STILL_NAMED",
  field: "organization_id",
});
const BOTH = "revoke the tokens and change the accounts' organisations or delete the accounts";

/** An organisation with a credential (its key returned), two tokens and a viewer account limited to it. */
async function organizationWithLimits(id: string, withTeam = false) {
  await orgs().createOrganization({ organizationId: id, name: `Org ${id}` });
  const key = FAKE_KEYS.openai();
  await t.clients().credentials.createCredential({ organizationId: id, provider: Provider.OPENAI, credentialName: "main", apiKey: key });
  if (withTeam) await orgs().createTeam({ teamId: `${id}-team`, organizationId: id, name: "Team" });
  const reader = await admin.createApiToken({ name: `${id}-reader`, scope: "admin", organizationIds: [id] });
  const gateway = await admin.createApiToken({ name: `${id}-gateway`, scope: "resolve", organizationIds: [id] });
  await admin.createAdmin({ email: `viewer@${id}.example.com`, role: "viewer", organizationIds: [id] });
  return { key, reader: reader.token, gateway: gateway.token };
}

describe("CreateOrganization of a deleted organisation's id", () => {
  it("is refused after a plain delete while tokens and an account still name it; the old token reads nothing; freed once they are gone", async () => {
    const { key, reader } = await organizationWithLimits("reuse-plain");
    // A plain delete needs an empty organisation.
    const [credential] = (await t.clients().credentials.listCredentials({ organizationId: "reuse-plain" })).credentials;
    await t.clients().credentials.deleteCredential({ credentialId: credential.credentialId });
    await orgs().deleteOrganization({ organizationId: "reuse-plain" });

    const expected = still(
      "reuse-plain",
      '2 API tokens ("reuse-plain-gateway", "reuse-plain-reader") and 1 portal account ("viewer@reuse-plain.example.com")',
      BOTH,
    );
    expect(await rpcRefusal(orgs().createOrganization({ organizationId: "reuse-plain", name: "Someone else" }))).toEqual(expected);
    // Nothing was created, nothing audited, and the message never carries a token's secret or a key.
    expect(await t.db.query("select id from organizations where id = 'reuse-plain'")).toEqual([]);
    expect(await t.db.query("select id from audit_events where action = 'organization.create' and organization_id = 'reuse-plain'")).toHaveLength(1);
    expect(expected.message).not.toContain(reader);
    expect(expected.message).not.toContain(key);

    // The old token still reaches nothing: its organisation is gone and none took its place.
    const old = t.clients(reader).organizations;
    expect((await rpcError(old.getOrganization({ organizationId: "reuse-plain" }))).code).toBe(Code.NotFound);
    expect((await old.listOrganizations({})).organizations).toEqual([]);

    // Revoking the tokens leaves the account: still refused, naming only it.
    await admin.revokeApiToken({ name: "reuse-plain-reader" });
    await admin.revokeApiToken({ name: "reuse-plain-gateway" });
    expect(await rpcError(old.listOrganizations({}))).toEqual({ code: Code.Unauthenticated, message: "invalid or revoked token" });
    expect(await rpcRefusal(orgs().createOrganization({ organizationId: "reuse-plain", name: "Someone else" }))).toEqual(
      still("reuse-plain", '1 portal account ("viewer@reuse-plain.example.com")', "change the accounts' organisations or delete the accounts"),
    );
    // A disabled account counts too: it can be enabled again.
    await admin.updateAdmin({ email: "viewer@reuse-plain.example.com", disabled: true });
    expect((await rpcRefusal(orgs().createOrganization({ organizationId: "reuse-plain", name: "Someone else" }))).reason).toBe("ORGANIZATION_ID_STILL_NAMED");

    // Changing the account's organisations (to every one, here) frees the id.
    await admin.updateAdmin({ email: "viewer@reuse-plain.example.com", organizations: { organizationIds: [] } });
    const { organization } = await orgs().createOrganization({ organizationId: "reuse-plain", name: "Someone else" });
    expect(organization).toMatchObject({ organizationId: "reuse-plain", name: "Someone else" });
  });

  it("is refused after offboarding (cascade) too, and freed by revoking the tokens and deleting the account", async () => {
    const { key, gateway } = await organizationWithLimits("reuse-cascade", true);
    expect(await orgs().deleteOrganization({ organizationId: "reuse-cascade", cascade: true })).toMatchObject({ deletedCredentials: 1, deletedTeams: 1 });

    expect(await rpcRefusal(orgs().createOrganization({ organizationId: "reuse-cascade", name: "New customer" }))).toEqual(
      still("reuse-cascade", '2 API tokens ("reuse-cascade-gateway", "reuse-cascade-reader") and 1 portal account ("viewer@reuse-cascade.example.com")', BOTH),
    );
    // The old gateway token resolves nothing.
    const scope = { case: "organizationId" as const, value: "reuse-cascade" };
    const resolved = await rpcError(t.clients(gateway).credentials.resolveKey({ scope, provider: Provider.OPENAI }));
    expect(resolved).toEqual({ code: Code.PermissionDenied, message: 'organization_id: "reuse-cascade" is not an organization this caller may access' });
    expect(resolved.message).not.toContain(key);

    await admin.revokeApiToken({ name: "reuse-cascade-reader" });
    await admin.revokeApiToken({ name: "reuse-cascade-gateway" });
    await admin.deleteAdmin({ email: "viewer@reuse-cascade.example.com" });
    await orgs().createOrganization({ organizationId: "reuse-cascade", name: "New customer" });
    // The new organisation starts empty: nothing of the old one came back.
    expect((await t.clients().credentials.listCredentials({ organizationId: "reuse-cascade" })).credentials).toEqual([]);
  });

  it("counts an expired token and names at most five of each, with how many more", async () => {
    await orgs().createOrganization({ organizationId: "reuse-many", name: "Many" });
    for (let i = 1; i <= 7; i++) await admin.createApiToken({ name: `many-${i}`, scope: "resolve", organizationIds: ["reuse-many"] });
    await t.db.query("update api_tokens set expires_at = now() - interval '1 day' where name = 'many-7'");
    await orgs().deleteOrganization({ organizationId: "reuse-many" });
    expect(await rpcRefusal(orgs().createOrganization({ organizationId: "reuse-many", name: "Many" }))).toEqual(
      still("reuse-many", '7 API tokens ("many-1", "many-2", "many-3", "many-4", "many-5" and 2 more)', "revoke the tokens"),
    );
    for (let i = 1; i <= 7; i++) await admin.revokeApiToken({ name: `many-${i}` });
    await orgs().createOrganization({ organizationId: "reuse-many", name: "Many" });
  });

  it("an id no token or account names is re-created freely; a taken id is still ALREADY_EXISTS, limits or not", async () => {
    await orgs().createOrganization({ organizationId: "reuse-free", name: "Free" });
    // Tokens and accounts limited to other organisations, or to none, do not matter.
    await admin.createApiToken({ name: "free-unlimited", scope: "admin" });
    await orgs().deleteOrganization({ organizationId: "reuse-free" });
    await orgs().createOrganization({ organizationId: "reuse-free", name: "Free again" });

    await admin.createApiToken({ name: "free-limited", scope: "resolve", organizationIds: ["reuse-free"] });
    expect(await rpcRefusal(orgs().createOrganization({ organizationId: "reuse-free", name: "Dup" }))).toEqual({
      code: Code.AlreadyExists,
      message: 'organization_id: an organization with id "reuse-free" already exists',
      reason: "ALREADY_EXISTS",
      field: "organization_id",
    });
  });
});

describe("over the portal's REST API", () => {
  let portal: TestPortal;
  beforeAll(async () => {
    portal = await startTestPortal();
  });
  afterAll(async () => {
    await portal?.close();
  });

  it("POST /api/organizations: 409 failed_precondition naming organization_id; 201 once the token is revoked", async () => {
    const api = portal.request;
    expect((await api("POST", "/api/organizations", { body: { organization_id: "rest-reuse", name: "Old customer" } })).status).toBe(201);
    const rest = createClient(AdminService, portal.service.transport("grpc", portal.adminToken));
    const { token } = await rest.createApiToken({ name: "rest-reuse-token", scope: "resolve", organizationIds: ["rest-reuse"] });
    expect((await api("DELETE", "/api/organizations/rest-reuse")).status).toBe(200);

    const refused = await api("POST", "/api/organizations", { body: { organization_id: "rest-reuse", name: "New customer" } });
    expect(refused.status, refused.text).toBe(409);
    expect(refused.headers.get("content-type")).toMatch(/^application\/json/);
    expect(refused.json).toEqual({
      code: "failed_precondition",
      message:
        'organization_id: "rest-reuse" is still named by 1 API token ("rest-reuse-token") limited to a deleted organization of that id; revoke the tokens first',
    });
    expect(refused.text).not.toContain(token);

    await rest.revokeApiToken({ name: "rest-reuse-token" });
    const created = await api("POST", "/api/organizations", { body: { organization_id: "rest-reuse", name: "New customer" } });
    expect(created.status, created.text).toBe(201);
    expect(created.json).toMatchObject({ organization_id: "rest-reuse", name: "New customer" });
  });
});
