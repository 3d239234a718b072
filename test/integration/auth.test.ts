// Authentication and authorisation of every RPC, over real sockets against a
// real PostgreSQL: bearer tokens, scopes, revocation, the actor header, and
// how tokens are stored.
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { Code, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { startTestService, FAKE_KEYS, rpcError, type TestService } from "../support/harness.js";
import {
  CredentialAction,
  CredentialService,
  FailureKind,
  KeyCheckOutcome,
  KeySource,
  OrganizationService,
  Provider,
  SelectionStrategy,
} from "@provider-credentials/wire/gen/credentials_pb";
import { TokenStore } from "../../service/src/auth/token-store.js";
import { hashToken } from "../../service/src/auth/tokens.js";

type Clients = { credentials: Client<typeof CredentialService>; organizations: Client<typeof OrganizationService> };

const ACTOR_HEADER = "x-provider-credentials-actor";
const ORG = "org-auth";
const TEAM = "team-auth";

let t: TestService;
let credentialId: string;
let resolveToken: string;
let adminToken: string;
let orgKey: string;

/** Clients that send exactly these headers, nothing added. */
function clientsWithHeaders(headers: Record<string, string>): Clients {
  const setHeaders: Interceptor = (next) => (req) => {
    for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
    return next(req);
  };
  const transport = createGrpcTransport({ baseUrl: `http://${t.address}`, interceptors: [setHeaders] });
  return { credentials: createClient(CredentialService, transport), organizations: createClient(OrganizationService, transport) };
}

/** Clients without any authorization header. */
function anonymousClients(): Clients {
  const transport = t.transport("grpc");
  return { credentials: createClient(CredentialService, transport), organizations: createClient(OrganizationService, transport) };
}

/**
 * One call per RPC of both services, with a request that an admin could make
 * successfully (so a refusal is about the caller, never about the request).
 */
const RPCS: Array<{ rpc: string; call: (c: Clients) => Promise<unknown> }> = [
  {
    rpc: "CreateCredential",
    call: (c) => c.credentials.createCredential({ organizationId: ORG, provider: Provider.ANTHROPIC, credentialName: "Denied", apiKey: FAKE_KEYS.anthropic() }),
  },
  { rpc: "GetCredential", call: (c) => c.credentials.getCredential({ credentialId }) },
  { rpc: "ListCredentials", call: (c) => c.credentials.listCredentials({ organizationId: ORG }) },
  { rpc: "UpdateCredential", call: (c) => c.credentials.updateCredential({ credentialId, credentialName: "Renamed by intruder" }) },
  { rpc: "ActivateCredential", call: (c) => c.credentials.activateCredential({ credentialId }) },
  { rpc: "DeactivateCredential", call: (c) => c.credentials.deactivateCredential({ credentialId }) },
  { rpc: "DeleteCredential", call: (c) => c.credentials.deleteCredential({ credentialId }) },
  { rpc: "ResolveKey", call: (c) => c.credentials.resolveKey({ scope: { case: "organizationId", value: ORG }, provider: Provider.OPENAI }) },
  { rpc: "VerifyCredential", call: (c) => c.credentials.verifyCredential({ credentialId }) },
  { rpc: "ReportKeyFailure", call: (c) => c.credentials.reportKeyFailure({ credentialId, kind: FailureKind.AUTHENTICATION }) },
  { rpc: "ReportKeySuccess", call: (c) => c.credentials.reportKeySuccess({ credentialIds: [credentialId] }) },
  {
    rpc: "SetSelectionStrategy",
    call: (c) => c.credentials.setSelectionStrategy({ organizationId: ORG, provider: Provider.OPENAI, strategy: SelectionStrategy.ROUND_ROBIN }),
  },
  { rpc: "ListSelectionStrategies", call: (c) => c.credentials.listSelectionStrategies({ organizationId: ORG }) },
  { rpc: "ExplainResolution", call: (c) => c.credentials.explainResolution({ scope: { case: "organizationId", value: ORG } }) },
  { rpc: "RollCredential", call: (c) => c.credentials.rollCredential({ credentialId, apiKey: FAKE_KEYS.openai() }) },
  { rpc: "SearchCredentials", call: (c) => c.credentials.searchCredentials({ query: "Prod" }) },
  { rpc: "ListUncoveredOrganizations", call: (c) => c.credentials.listUncoveredOrganizations({}) },
  { rpc: "BatchCredentialAction", call: (c) => c.credentials.batchCredentialAction({ action: CredentialAction.DEACTIVATE, credentialIds: [credentialId] }) },
  // A stream: its first message (the snapshot marker), or its error.
  { rpc: "WatchResolutions", call: (c) => firstMessage(c.credentials.watchResolutions({})) },
  { rpc: "CreateOrganization", call: (c) => c.organizations.createOrganization({ organizationId: "org-denied", name: "Denied" }) },
  { rpc: "GetOrganization", call: (c) => c.organizations.getOrganization({ organizationId: ORG }) },
  { rpc: "ListOrganizations", call: (c) => c.organizations.listOrganizations({}) },
  { rpc: "DeleteOrganization", call: (c) => c.organizations.deleteOrganization({ organizationId: "org-empty" }) },
  { rpc: "CreateTeam", call: (c) => c.organizations.createTeam({ teamId: "team-denied", organizationId: ORG, name: "Denied" }) },
  { rpc: "ListTeams", call: (c) => c.organizations.listTeams({ organizationId: ORG }) },
  { rpc: "DeleteTeam", call: (c) => c.organizations.deleteTeam({ teamId: TEAM }) },
];

/** The first message of a server stream (the stream is then closed), or its error. */
async function firstMessage<T>(stream: AsyncIterable<T>): Promise<T | undefined> {
  for await (const message of stream) return message;
  return undefined;
}

/** What the refused calls above would have changed, to show that nothing did. */
async function snapshot(): Promise<unknown> {
  return {
    organizations: await t.db.query("select id, name, updated_at from organizations order by id"),
    teams: await t.db.query("select id, organization_id, name, updated_at from teams order by id"),
    credentials: await t.db.query(
      "select id, credential_name, is_active, version, updated_at, failure_streak, failing_since, checked_at from provider_credentials order by id",
    ),
    strategies: await t.db.query("select * from selection_strategies order by organization_id, provider"),
    audit: await t.db.query("select count(*)::int as n from audit_events where action not like 'token.%'"),
  };
}

beforeAll(async () => {
  t = await startTestService();
  const { credentials, organizations } = t.clients();
  await organizations.createOrganization({ organizationId: ORG, name: "Auth Org" });
  await organizations.createOrganization({ organizationId: "org-empty", name: "Empty Org" });
  await organizations.createTeam({ teamId: TEAM, organizationId: ORG, name: "Auth Team" });
  orgKey = FAKE_KEYS.openai();
  const created = await credentials.createCredential({ organizationId: ORG, provider: Provider.OPENAI, credentialName: "Prod", apiKey: orgKey });
  credentialId = created.credential!.credentialId;
  const tokens = new TokenStore(t.service.orm);
  resolveToken = (await tokens.create("gateway", "resolve", "test")).token;
  adminToken = (await tokens.create("portal", "admin", "test")).token;
});
afterAll(async () => {
  await t?.close();
});

describe("without a valid bearer token every RPC is UNAUTHENTICATED", () => {
  const cases: Array<{ label: string; clients: () => Clients; message: RegExp }> = [
    { label: "no authorization header", clients: anonymousClients, message: /^missing or malformed authorization header/ },
    { label: "Bearer garbage", clients: () => t.clients("garbage"), message: /^invalid or revoked token$/ },
    { label: "a well-formed but unknown token", clients: () => t.clients("pct_" + "A".repeat(43)), message: /^invalid or revoked token$/ },
    { label: '"Basic x"', clients: () => clientsWithHeaders({ authorization: "Basic x" }), message: /^missing or malformed authorization header/ },
    { label: '"Bearer" alone', clients: () => clientsWithHeaders({ authorization: "Bearer" }), message: /^missing or malformed authorization header/ },
    {
      label: '"Bearer " with an empty token',
      clients: () => clientsWithHeaders({ authorization: "Bearer " }),
      message: /^missing or malformed authorization header/,
    },
    {
      label: "the token without the Bearer scheme",
      clients: () => clientsWithHeaders({ authorization: t.adminToken }),
      message: /^missing or malformed authorization header/,
    },
  ];
  for (const { label, clients, message } of cases) {
    it(`${label}: all ${RPCS.length} RPCs refused, nothing changed`, async () => {
      const before = await snapshot();
      const c = clients();
      for (const { rpc, call } of RPCS) {
        const err = await rpcError(call(c));
        expect({ rpc, code: err.code }).toEqual({ rpc, code: Code.Unauthenticated });
        expect(err.message, rpc).toMatch(message);
      }
      expect(await snapshot()).toEqual(before);
    });
  }

  it("tells the caller what header to send", async () => {
    const err = await rpcError(anonymousClients().organizations.listOrganizations({}));
    expect(err.message).toBe('missing or malformed authorization header; send "authorization: Bearer <token>"');
  });

  it("never echoes the offered token in the error", async () => {
    const offered = "pct_not-a-real-token-but-secret-looking";
    const err = await rpcError(t.clients(offered).credentials.resolveKey({ scope: { case: "organizationId", value: ORG }, provider: Provider.OPENAI }));
    expect(err.code).toBe(Code.Unauthenticated);
    expect(err.message).not.toContain(offered);
  });

  it("is also refused over the Connect and gRPC-Web protocols", async () => {
    for (const protocol of ["connect", "grpc-web"] as const) {
      const orgs = createClient(OrganizationService, t.transport(protocol));
      const err = await rpcError(orgs.listOrganizations({}));
      expect({ protocol, code: err.code }).toEqual({ protocol, code: Code.Unauthenticated });
      const garbage = createClient(OrganizationService, t.transport(protocol, "garbage"));
      expect((await rpcError(garbage.listOrganizations({}))).code).toBe(Code.Unauthenticated);
    }
  });
});

describe("a resolve-scope token", () => {
  it("may call ResolveKey, by organisation and by team", async () => {
    const { credentials } = t.clients(resolveToken);
    const byOrg = await credentials.resolveKey({ scope: { case: "organizationId", value: ORG }, provider: Provider.OPENAI });
    expect(byOrg.apiKey).toBe(orgKey);
    expect(byOrg.source).toBe(KeySource.ORGANIZATION);
    const byTeam = await credentials.resolveKey({ scope: { case: "teamId", value: TEAM }, provider: Provider.OPENAI });
    expect(byTeam.apiKey).toBe(orgKey);
    expect(byTeam.organizationId).toBe(ORG);
  });

  it("gets the ordinary errors of ResolveKey, not an auth error", async () => {
    const { credentials } = t.clients(resolveToken);
    const err = await rpcError(credentials.resolveKey({ scope: { case: "teamId", value: "no-such-team" }, provider: Provider.OPENAI }));
    expect(err).toEqual({ code: Code.NotFound, message: 'team "no-such-team" not found' });
  });

  it("may report failures and successes of the keys it resolved", async () => {
    const { credentials } = t.clients(resolveToken);
    const failed = await credentials.reportKeyFailure({ credentialId, kind: FailureKind.RATE_LIMIT });
    expect(failed).toMatchObject({ failureStreak: 0, failing: false }); // a rate limit says nothing about the key
    expect(await credentials.reportKeySuccess({ credentialIds: [credentialId] })).toMatchObject({ recovered: 0 });
  });

  const RESOLVE_SCOPE = ["ResolveKey", "ReportKeyFailure", "ReportKeySuccess", "WatchResolutions"];

  it("may watch resolutions: the stream starts with its snapshot marker", async () => {
    const first = await firstMessage(t.clients(resolveToken).credentials.watchResolutions({}));
    expect(first?.event.case).toBe("snapshot");
  });
  const others = RPCS.filter((r) => !RESOLVE_SCOPE.includes(r.rpc));
  it.each(others)("is PERMISSION_DENIED on $rpc, and nothing changes", async ({ rpc, call }) => {
    const before = await snapshot();
    const err = await rpcError(call(t.clients(resolveToken)));
    expect(err).toEqual({ code: Code.PermissionDenied, message: `token "gateway" has scope "resolve", which may not call ${rpc}` });
    expect(await snapshot()).toEqual(before);
  });

  it("covers every RPC of both services in the table above", () => {
    const all = [...CredentialService.methods, ...OrganizationService.methods].map((m) => m.name).sort();
    expect(RPCS.map((r) => r.rpc).sort()).toEqual(all);
  });
});

describe("an admin token from TokenStore", () => {
  it("works for every RPC", async () => {
    const { credentials, organizations } = t.clients(adminToken);
    const seen = new Set<string>();
    const ok = async <T>(rpc: string, call: Promise<T>): Promise<T> => {
      const result = await call;
      seen.add(rpc);
      return result;
    };
    await ok("CreateOrganization", organizations.createOrganization({ organizationId: "org-admin", name: "Admin Org" }));
    expect((await ok("GetOrganization", organizations.getOrganization({ organizationId: "org-admin" }))).organization?.name).toBe("Admin Org");
    expect((await ok("ListOrganizations", organizations.listOrganizations({}))).organizations.map((o) => o.organizationId)).toContain("org-admin");
    await ok("CreateTeam", organizations.createTeam({ teamId: "team-admin", organizationId: "org-admin", name: "Admin Team" }));
    expect((await ok("ListTeams", organizations.listTeams({ organizationId: "org-admin" }))).teams.map((x) => x.teamId)).toEqual(["team-admin"]);
    const key = FAKE_KEYS.gemini();
    const created = await ok(
      "CreateCredential",
      credentials.createCredential({ organizationId: "org-admin", provider: Provider.GEMINI, credentialName: "G", apiKey: key }),
    );
    const id = created.credential!.credentialId;
    expect(created.credential?.createdBy).toBe("token:portal");
    expect((await ok("GetCredential", credentials.getCredential({ credentialId: id }))).credential?.credentialName).toBe("G");
    expect((await ok("ListCredentials", credentials.listCredentials({ organizationId: "org-admin" }))).credentials).toHaveLength(1);
    expect((await ok("UpdateCredential", credentials.updateCredential({ credentialId: id, credentialName: "G2" }))).credential?.version).toBe(2);
    expect((await ok("DeactivateCredential", credentials.deactivateCredential({ credentialId: id }))).credential?.isActive).toBe(false);
    expect((await ok("ActivateCredential", credentials.activateCredential({ credentialId: id }))).credential?.isActive).toBe(true);
    const resolved = await ok("ResolveKey", credentials.resolveKey({ scope: { case: "teamId", value: "team-admin" }, provider: Provider.GEMINI }));
    expect(resolved.apiKey).toBe(key);
    expect((await ok("ReportKeyFailure", credentials.reportKeyFailure({ credentialId: id, kind: FailureKind.QUOTA }))).failureStreak).toBe(1);
    expect((await ok("ReportKeySuccess", credentials.reportKeySuccess({ credentialIds: [id] }))).recovered).toBe(0);
    const policy = await ok(
      "SetSelectionStrategy",
      credentials.setSelectionStrategy({ organizationId: "org-admin", provider: Provider.GEMINI, strategy: SelectionStrategy.WEIGHTED }),
    );
    expect(policy.policy?.updatedBy).toBe("token:portal");
    const policies = await ok("ListSelectionStrategies", credentials.listSelectionStrategies({ organizationId: "org-admin" }));
    expect(policies.policies.map((p) => p.strategy)).toEqual([
      SelectionStrategy.NEWEST,
      SelectionStrategy.NEWEST,
      SelectionStrategy.WEIGHTED,
      SelectionStrategy.NEWEST,
    ]);
    // Pointed at a closed loopback port, the check reports the provider unreachable (a result, not an error).
    await credentials.updateCredential({ credentialId: id, apiBase: "http://127.0.0.1:9/gemini", apiKey: key });
    const verified = await ok("VerifyCredential", credentials.verifyCredential({ credentialId: id }));
    expect(verified.check?.outcome).toBe(KeyCheckOutcome.UNREACHABLE);
    expect(verified.credential?.lastCheck?.outcome).toBe(KeyCheckOutcome.UNREACHABLE);
    const explained = await ok(
      "ExplainResolution",
      credentials.explainResolution({ scope: { case: "organizationId", value: "org-admin" }, provider: Provider.GEMINI }),
    );
    expect(explained.resolutions.map((r) => r.servingCredentialId)).toEqual([id]);
    const watched = await ok("WatchResolutions", firstMessage(credentials.watchResolutions({ organizationIds: ["org-admin"] })));
    expect(watched?.event.case).toBe("snapshot");
    const rolled = await ok("RollCredential", credentials.rollCredential({ credentialId: id, apiKey: FAKE_KEYS.gemini() }));
    expect(rolled.previous?.isActive).toBe(false);
    const found = await ok("SearchCredentials", credentials.searchCredentials({ organizationId: "org-admin" }));
    expect(found.credentials.map((c) => c.credentialId).sort()).toEqual([id, rolled.credential!.credentialId].sort());
    const uncovered = await ok("ListUncoveredOrganizations", credentials.listUncoveredOrganizations({ provider: Provider.FIREWORKS }));
    expect(uncovered.organizations.map((o) => o.organization?.organizationId)).toContain("org-admin");
    const batch = await ok(
      "BatchCredentialAction",
      credentials.batchCredentialAction({ action: CredentialAction.DELETE, credentialIds: [rolled.credential!.credentialId] }),
    );
    expect(batch.credentials.map((c) => c.credentialId)).toEqual([rolled.credential!.credentialId]);
    await ok("DeleteCredential", credentials.deleteCredential({ credentialId: id }));
    await ok("DeleteTeam", organizations.deleteTeam({ teamId: "team-admin" }));
    await ok("DeleteOrganization", organizations.deleteOrganization({ organizationId: "org-admin" }));
    expect([...seen].sort()).toEqual(RPCS.map((r) => r.rpc).sort());
  });

  it("accepts the scheme case-insensitively (bearer)", async () => {
    const { organizations } = clientsWithHeaders({ authorization: `bearer ${adminToken}` });
    expect((await organizations.getOrganization({ organizationId: ORG })).organization?.organizationId).toBe(ORG);
  });
});

describe("revocation", () => {
  it("a revoked token is refused by the running service within its 5 s cache window", async () => {
    const { token } = await new TokenStore(t.service.orm).create("short-lived", "admin", "test");
    const { organizations } = t.clients(token);
    // Used once, so that the running service has it cached.
    expect((await organizations.getOrganization({ organizationId: ORG })).organization?.organizationId).toBe(ORG);
    await new TokenStore(t.service.orm).revoke("short-lived", "test");
    const revokedAt = Date.now();
    expect(await t.db.query("select name from api_tokens where name = 'short-lived'")).toEqual([]);
    await vi.waitFor(
      async () => {
        const err = await rpcError(organizations.getOrganization({ organizationId: ORG }));
        expect(err).toEqual({ code: Code.Unauthenticated, message: "invalid or revoked token" });
      },
      { timeout: 10_000, interval: 200 },
    );
    expect(Date.now() - revokedAt).toBeLessThan(6_500);
    // And it stays refused (no stale cache entry brings it back).
    expect((await rpcError(t.clients(token).credentials.resolveKey({ scope: { case: "organizationId", value: ORG }, provider: Provider.OPENAI }))).code).toBe(
      Code.Unauthenticated,
    );
    const audit = await t.db.query<{ actor: string }>("select actor from audit_events where action = 'token.revoke' and target = 'short-lived'");
    expect(audit).toEqual([{ actor: "test" }]);
  }, 20_000);

  it("the store that revokes stops accepting the token at once", async () => {
    const store = new TokenStore(t.service.orm);
    const { token } = await store.create("instant", "resolve", "test");
    expect(await store.authenticate(token)).toEqual({ name: "instant", scope: "resolve", organizations: null });
    await store.revoke("instant", "test");
    expect(await store.authenticate(token)).toBeUndefined();
  });
});

describe(`the ${ACTOR_HEADER} header`, () => {
  it("is honoured for admin tokens: created_by and updated_by name the administrator, the audit actor names them and the token", async () => {
    const actor = "alice@example.com";
    // An admin token can claim any name: the audit row always records the token that made the claim.
    const audited = "alice@example.com via token:portal";
    const { credentials, organizations } = t.clients(adminToken, { [ACTOR_HEADER]: actor });
    await organizations.createOrganization({ organizationId: "org-actor", name: "Actor Org" });
    const created = await credentials.createCredential({
      organizationId: "org-actor",
      provider: Provider.FIREWORKS,
      credentialName: "F",
      apiKey: FAKE_KEYS.fireworks(),
    });
    expect(created.credential?.createdBy).toBe(actor);
    expect(created.credential?.updatedBy).toBe(actor);
    const row = await t.db.query("select created_by, updated_by from provider_credentials where id = $1", [created.credential!.credentialId]);
    expect(row).toEqual([{ created_by: actor, updated_by: actor }]);
    const audit = await t.db.query("select action, actor, source from audit_events where organization_id = 'org-actor' order by id");
    expect(audit).toEqual([
      { action: "organization.create", actor: audited, source: "127.0.0.1" },
      { action: "credential.create", actor: audited, source: "127.0.0.1" },
    ]);
    // Another administrator updates it: updated_by follows, created_by stays.
    const bob = t.clients(adminToken, { [ACTOR_HEADER]: "bob" }).credentials;
    const updated = await bob.updateCredential({ credentialId: created.credential!.credentialId, credentialName: "F2" });
    expect(updated.credential?.createdBy).toBe(actor);
    expect(updated.credential?.updatedBy).toBe("bob");
    expect(await t.db.query("select actor from audit_events where action = 'credential.update' and organization_id = 'org-actor'")).toEqual([
      { actor: "bob via token:portal" },
    ]);
  });

  it("without it, the admin token's own name is the actor", async () => {
    const { organizations } = t.clients(adminToken);
    await organizations.createOrganization({ organizationId: "org-no-actor", name: "No Actor" });
    expect(await t.db.query("select actor from audit_events where organization_id = 'org-no-actor'")).toEqual([{ actor: "token:portal" }]);
    await t.clients().organizations.createTeam({ teamId: "team-no-actor", organizationId: "org-no-actor", name: "T" });
    expect(await t.db.query("select actor from audit_events where target = 'team-no-actor'")).toEqual([{ actor: "token:service-admin-token" }]);
  });

  it("an invalid value is refused for admin tokens, naming the header", async () => {
    const { organizations } = t.clients(adminToken, { [ACTOR_HEADER]: "x".repeat(129) });
    const err = await rpcError(organizations.createOrganization({ organizationId: "org-bad-actor", name: "Bad" }));
    expect(err).toEqual({ code: Code.InvalidArgument, message: `${ACTOR_HEADER}: must be 1-128 printable ASCII characters` });
    expect(await t.db.query("select id from organizations where id = 'org-bad-actor'")).toEqual([]);
  });

  it("is ignored for resolve tokens: no escalation, and even an invalid value is not looked at", async () => {
    const asAdmin = t.clients(resolveToken, { [ACTOR_HEADER]: "admin" });
    expect((await rpcError(asAdmin.organizations.listOrganizations({}))).code).toBe(Code.PermissionDenied);
    const resolved = await asAdmin.credentials.resolveKey({ scope: { case: "organizationId", value: ORG }, provider: Provider.OPENAI });
    expect(resolved.apiKey).toBe(orgKey);
    const invalidActor = t.clients(resolveToken, { [ACTOR_HEADER]: "x".repeat(129) });
    const again = await invalidActor.credentials.resolveKey({ scope: { case: "organizationId", value: ORG }, provider: Provider.OPENAI });
    expect(again.apiKey).toBe(orgKey);
  });
});

describe("token storage", () => {
  it("stores tokens only as SHA-256 hashes", async () => {
    const store = new TokenStore(t.service.orm);
    const { token } = await store.create("hashed", "resolve", "test");
    const sha256 = createHash("sha256").update(token, "utf8").digest("hex");
    const rows = await t.db.query<Record<string, unknown>>("select * from api_tokens where name = 'hashed'");
    expect(rows).toHaveLength(1);
    expect(rows[0].token_hash).toBe(sha256);
    for (const value of Object.values(rows[0])) expect(String(value)).not.toContain(token);
    // Nowhere in the tokens or audit tables, under any column.
    for (const table of ["api_tokens", "audit_events"]) {
      const dump = await t.db.query<{ row: string }>(`select t::text as row from ${table} t`);
      expect(dump.length).toBeGreaterThan(0);
      for (const { row } of dump) {
        expect(row).not.toContain(token);
        expect(row).not.toContain(resolveToken);
        expect(row).not.toContain(adminToken);
        expect(row).not.toContain(t.adminToken);
      }
    }
  });

  it("sets api_tokens.last_used_at once a token is used", async () => {
    const store = new TokenStore(t.service.orm);
    const { token } = await store.create("fresh", "resolve", "test");
    const [before] = await t.db.query<{ last_used_at: Date | null; created_at: Date }>("select last_used_at, created_at from api_tokens where name = 'fresh'");
    expect(before.last_used_at).toBeNull();
    await t.clients(token).credentials.resolveKey({ scope: { case: "organizationId", value: ORG }, provider: Provider.OPENAI });
    const [after] = await t.db.query<{ last_used_at: Date | null; created_at: Date }>("select last_used_at, created_at from api_tokens where name = 'fresh'");
    expect(after.last_used_at).toBeInstanceOf(Date);
    expect(after.last_used_at!.getTime()).toBeGreaterThanOrEqual(after.created_at.getTime() - 1_000);
    expect(Math.abs(after.last_used_at!.getTime() - Date.now())).toBeLessThan(60_000);
  });

  it("a refused call with a resolve token still counts as a use of that token", async () => {
    const { token } = await new TokenStore(t.service.orm).create("denied-use", "resolve", "test");
    expect((await rpcError(t.clients(token).organizations.listOrganizations({}))).code).toBe(Code.PermissionDenied);
    const [row] = await t.db.query<{ last_used_at: Date | null }>("select last_used_at from api_tokens where name = 'denied-use'");
    expect(row.last_used_at).toBeInstanceOf(Date);
  });
});

describe("token look-ups on the hot path", () => {
  /** The `update api_tokens` statements a store sends (each is one token look-up). */
  /** Look-ups of `token` on the test service's database connection (which other stores share: theirs are not counted). */
  function countTokenLookUps(token: string): { readonly count: number; stop(): void } {
    const knex = t.service.orm.em.getConnection().getKnex();
    const hash = hashToken(token);
    let count = 0;
    const onQuery = (query: { sql?: string; bindings?: readonly unknown[] }) => {
      if (query.sql?.includes("update api_tokens set last_used_at") && query.bindings?.[0] === hash) count++;
    };
    knex.on("query", onQuery);
    return {
      get count() {
        return count;
      },
      stop: () => knex.removeListener("query", onQuery),
    };
  }

  it("calls arriving together with a token the replica has not cached share one look-up", async () => {
    const { token } = await new TokenStore(t.service.orm).create("stampede", "resolve", "test");
    const { credentials } = t.clients(token);
    const counter = countTokenLookUps(token);
    try {
      const answers = await Promise.all(
        Array.from({ length: 40 }, () => credentials.resolveKey({ scope: { case: "organizationId", value: ORG }, provider: Provider.OPENAI })),
      );
      expect(answers.map((a) => a.apiKey)).toEqual(Array.from({ length: 40 }, () => orgKey));
      expect(counter.count).toBe(1);
    } finally {
      counter.stop();
    }
  });

  it("an unknown token asked for by many calls at once is one look-up, and every call is refused", async () => {
    const unknown = `pct_${"U".repeat(43)}`;
    const { credentials } = t.clients(unknown);
    const counter = countTokenLookUps(unknown);
    try {
      const errors = await Promise.all(
        Array.from({ length: 20 }, () => rpcError(credentials.resolveKey({ scope: { case: "organizationId", value: ORG }, provider: Provider.OPENAI }))),
      );
      expect(new Set(errors.map((e) => `${e.code} ${e.message}`))).toEqual(new Set([`${Code.Unauthenticated} invalid or revoked token`]));
      expect(counter.count).toBe(1);
    } finally {
      counter.stop();
    }
  });

  it("a token in use is renewed in the background before it expires; a revoked one is dropped by that renewal", async () => {
    const store = new TokenStore(t.service.orm, { cacheTtlMs: 5_000 });
    const { token } = await store.create("renewed", "resolve", "test");
    // Only Date is faked: the database and its timers run as usual.
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() });
    const counter = countTokenLookUps(token);
    try {
      const t0 = Date.now();
      expect(await store.authenticate(token)).toEqual({ name: "renewed", scope: "resolve", organizations: null });
      expect(counter.count).toBe(1);
      // Before three quarters of the window: answered from the cache, nothing sent.
      vi.setSystemTime(t0 + 3_000);
      expect(store.cached(token)).toEqual({ name: "renewed", scope: "resolve", organizations: null });
      expect(counter.count).toBe(1);
      // After: still answered at once, and one renewal starts (not one per call).
      vi.setSystemTime(t0 + 4_000);
      expect(store.cached(token)).toEqual({ name: "renewed", scope: "resolve", organizations: null });
      expect(store.cached(token)).toEqual({ name: "renewed", scope: "resolve", organizations: null });
      await vi.waitFor(() => expect(counter.count).toBe(2), { timeout: 5_000, interval: 10 });
      // Past the first window's end the renewed entry answers without a look-up.
      vi.setSystemTime(t0 + 6_000);
      await new Promise((r) => setTimeout(r, 50));
      expect(store.cached(token)).toEqual({ name: "renewed", scope: "resolve", organizations: null });
      expect(counter.count).toBe(2);
      // Revoked elsewhere (another replica): the next renewal finds it gone and drops it at once.
      await new TokenStore(t.service.orm).revoke("renewed", "test");
      vi.setSystemTime(t0 + 8_000);
      expect(store.cached(token)).toEqual({ name: "renewed", scope: "resolve", organizations: null });
      await vi.waitFor(() => expect(store.cached(token)).toBeUndefined(), { timeout: 5_000, interval: 10 });
      expect(await store.authenticate(token)).toBeUndefined();
    } finally {
      counter.stop();
      vi.useRealTimers();
    }
  });

  it("a look-up in flight when the token is revoked on the same replica does not bring it back", async () => {
    const store = new TokenStore(t.service.orm);
    for (let round = 0; round < 5; round++) {
      const { token } = await store.create(`racing-${round}`, "resolve", "test");
      const lookUp = store.authenticate(token);
      await store.revoke(`racing-${round}`, "test");
      await lookUp;
      expect(store.cached(token)).toBeUndefined();
      expect(await store.authenticate(token)).toBeUndefined();
    }
  });
});
