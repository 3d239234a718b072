// OrganizationService end to end: validation, not-found and duplicate errors,
// paging, the refusal to delete an organisation that still owns something,
// and the audit trail.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import pg from "pg";
import { startTestService, FAKE_KEYS, rpcError, type TestService } from "../support/harness.js";
import { Provider } from "@provider-credentials/wire/gen/credentials_pb";

let t: TestService;
beforeAll(async () => {
  t = await startTestService();
});
afterAll(async () => {
  await t?.close();
});

const orgs = () => t.clients().organizations;
const creds = () => t.clients().credentials;
const ID_RULE = "must be 1-64 characters of letters, digits, '.', '_' or '-'";
const MALFORMED_TOKEN = "page_token: is malformed; pass the next_page_token of the previous page unchanged";

async function audit(action: string, where: string, params: unknown[]) {
  return t.db.query(
    `select actor, action, organization_id, credential_id, target, source, details from audit_events where action = $1 and ${where} order by id`,
    [action, ...params],
  );
}

describe("CreateOrganization", () => {
  it("creates an organisation, trims the name, and records who did it", async () => {
    const before = Date.now();
    const { organization } = await orgs().createOrganization({ organizationId: "acme.corp_1-x", name: "  Acme Corp  " });
    expect(organization?.organizationId).toBe("acme.corp_1-x");
    expect(organization?.name).toBe("Acme Corp");
    const created = timestampDate(organization!.createdAt!).getTime();
    expect(created).toBeGreaterThanOrEqual(before - 1_000);
    expect(organization?.updatedAt).toEqual(organization?.createdAt);
    expect(await t.db.query("select id, name from organizations where id = 'acme.corp_1-x'")).toEqual([{ id: "acme.corp_1-x", name: "Acme Corp" }]);
    expect(await audit("organization.create", "organization_id = $2", ["acme.corp_1-x"])).toEqual([
      {
        actor: "token:service-admin-token",
        action: "organization.create",
        organization_id: "acme.corp_1-x",
        credential_id: null,
        target: null,
        source: "127.0.0.1",
        details: { name: "Acme Corp" },
      },
    ]);
  });

  it("accepts the limits: a 64-character id and a 200-character non-ASCII name", async () => {
    const id = "a".repeat(64);
    const name = "Zürich ✓ ".repeat(20).slice(0, 200);
    expect([...name.trim()].length).toBeLessThanOrEqual(200);
    const { organization } = await orgs().createOrganization({ organizationId: id, name });
    expect(organization?.organizationId).toBe(id);
    expect(organization?.name).toBe(name.trim());
  });

  it.each([
    { organizationId: "", name: "X", message: "organization_id: is required" },
    { organizationId: "has space", name: "X", message: `organization_id: ${ID_RULE}` },
    { organizationId: "a/b", name: "X", message: `organization_id: ${ID_RULE}` },
    { organizationId: "é", name: "X", message: `organization_id: ${ID_RULE}` },
    { organizationId: "a".repeat(65), name: "X", message: `organization_id: ${ID_RULE}` },
    { organizationId: "ok-id", name: "", message: "name: is required" },
    { organizationId: "ok-id", name: " \t ", message: "name: is required" },
    { organizationId: "ok-id", name: "x".repeat(201), message: "name: must be at most 200 characters" },
    { organizationId: "ok-id", name: "bell\u0007", message: "name: must not contain control characters" },
    { organizationId: "ok-id", name: "two\nlines", message: "name: must not contain control characters" },
    // The id is checked first.
    { organizationId: "", name: "", message: "organization_id: is required" },
  ])("INVALID_ARGUMENT for id $organizationId.length chars / name $name.length chars: $message", async ({ organizationId, name, message }) => {
    const err = await rpcError(orgs().createOrganization({ organizationId, name }));
    expect(err).toEqual({ code: Code.InvalidArgument, message });
    expect(await t.db.query("select id from organizations where id = 'ok-id'")).toEqual([]);
  });

  it("ALREADY_EXISTS for a taken id, and the first one is kept", async () => {
    await orgs().createOrganization({ organizationId: "dup-org", name: "First" });
    const err = await rpcError(orgs().createOrganization({ organizationId: "dup-org", name: "Second" }));
    expect(err).toEqual({ code: Code.AlreadyExists, message: 'organization_id: an organization with id "dup-org" already exists' });
    expect((await orgs().getOrganization({ organizationId: "dup-org" })).organization?.name).toBe("First");
    expect(await audit("organization.create", "organization_id = $2", ["dup-org"])).toHaveLength(1);
  });
});

describe("GetOrganization", () => {
  it("returns what was created", async () => {
    const { organization: created } = await orgs().createOrganization({ organizationId: "get-me", name: "Get Me" });
    const { organization } = await orgs().getOrganization({ organizationId: "get-me" });
    expect(organization).toEqual(created);
  });

  it("NOT_FOUND for an unknown id", async () => {
    expect(await rpcError(orgs().getOrganization({ organizationId: "no-such-org" }))).toEqual({
      code: Code.NotFound,
      message: 'organization "no-such-org" not found',
    });
  });

  it("INVALID_ARGUMENT for a malformed or empty id", async () => {
    expect(await rpcError(orgs().getOrganization({ organizationId: "" }))).toEqual({ code: Code.InvalidArgument, message: "organization_id: is required" });
    expect(await rpcError(orgs().getOrganization({ organizationId: "no such" }))).toEqual({
      code: Code.InvalidArgument,
      message: `organization_id: ${ID_RULE}`,
    });
  });
});

describe("ListOrganizations (on a database of its own)", () => {
  let own: TestService;
  beforeAll(async () => {
    own = await startTestService();
    // Created out of order; ids whose order is the same under every collation.
    for (const id of ["gamma", "acme", "epsilon", "beta", "delta"]) {
      await own.clients().organizations.createOrganization({ organizationId: id, name: id.toUpperCase() });
    }
  });
  afterAll(async () => {
    await own?.close();
  });
  const list = (req: { pageSize?: number; pageToken?: string }) => own.clients().organizations.listOrganizations(req);
  const ALL = ["acme", "beta", "delta", "epsilon", "gamma"];

  it("lists every organisation ordered by id with the default page size", async () => {
    const page = await list({});
    expect(page.organizations.map((o) => o.organizationId)).toEqual(ALL);
    expect(page.organizations.map((o) => o.name)).toEqual(ALL.map((id) => id.toUpperCase()));
    expect(page.nextPageToken).toBe("");
  });

  it("pages 2 at a time: 2, 2, 1, then no token", async () => {
    const first = await list({ pageSize: 2 });
    expect(first.organizations.map((o) => o.organizationId)).toEqual(["acme", "beta"]);
    expect(first.nextPageToken).not.toBe("");
    const second = await list({ pageSize: 2, pageToken: first.nextPageToken });
    expect(second.organizations.map((o) => o.organizationId)).toEqual(["delta", "epsilon"]);
    expect(second.nextPageToken).not.toBe("");
    const third = await list({ pageSize: 2, pageToken: second.nextPageToken });
    expect(third.organizations.map((o) => o.organizationId)).toEqual(["gamma"]);
    expect(third.nextPageToken).toBe("");
  });

  it("a page that ends exactly at the last organisation has no next token", async () => {
    const page = await list({ pageSize: 5 });
    expect(page.organizations).toHaveLength(5);
    expect(page.nextPageToken).toBe("");
  });

  it("page sizes above the maximum are capped, not refused", async () => {
    expect((await list({ pageSize: 100_000 })).organizations.map((o) => o.organizationId)).toEqual(ALL);
  });

  it("sees organisations created between pages (keyset paging, no skipped rows)", async () => {
    const first = await list({ pageSize: 2 });
    await own.clients().organizations.createOrganization({ organizationId: "charlie", name: "C" });
    try {
      const rest = await list({ pageSize: 10, pageToken: first.nextPageToken });
      expect(rest.organizations.map((o) => o.organizationId)).toEqual(["charlie", "delta", "epsilon", "gamma"]);
    } finally {
      await own.clients().organizations.deleteOrganization({ organizationId: "charlie" });
    }
  });

  it.each([
    { pageToken: "not a token!" },
    { pageToken: "%%%" },
    { pageToken: Buffer.from("not json").toString("base64url") },
    { pageToken: Buffer.from("[1]").toString("base64url") },
    { pageToken: Buffer.from('["a","b"]').toString("base64url") },
    { pageToken: Buffer.from('{"id":"a"}').toString("base64url") },
  ])("INVALID_ARGUMENT for a malformed page_token ($pageToken)", async ({ pageToken }) => {
    expect(await rpcError(list({ pageToken }))).toEqual({ code: Code.InvalidArgument, message: MALFORMED_TOKEN });
  });

  it("INVALID_ARGUMENT for a negative page_size", async () => {
    expect(await rpcError(list({ pageSize: -1 }))).toEqual({ code: Code.InvalidArgument, message: "page_size: must be zero or a positive integer" });
  });
});

describe("DeleteOrganization", () => {
  it("is refused with FAILED_PRECONDITION while the organisation has credentials or teams, and nothing is deleted", async () => {
    await orgs().createOrganization({ organizationId: "busy", name: "Busy" });
    await orgs().createTeam({ teamId: "busy-team", organizationId: "busy", name: "Team" });
    const a = await creds().createCredential({ organizationId: "busy", provider: Provider.OPENAI, credentialName: "A", apiKey: FAKE_KEYS.openai() });
    const b = await creds().createCredential({ organizationId: "busy", provider: Provider.ANTHROPIC, credentialName: "B", apiKey: FAKE_KEYS.anthropic() });
    // An inactive credential still counts: deleting would lose its key.
    await creds().deactivateCredential({ credentialId: b.credential!.credentialId });

    const snapshot = async () => ({
      org: await t.db.query("select * from organizations where id = 'busy'"),
      teams: await t.db.query("select * from teams where organization_id = 'busy'"),
      credentials: await t.db.query("select id, encrypted_api_key from provider_credentials where organization_id = 'busy' order by id"),
    });
    const before = await snapshot();
    const reason = (what: string) => `organization "busy" still has ${what}; delete them first, so that nothing is lost by accident`;

    expect(await rpcError(orgs().deleteOrganization({ organizationId: "busy" }))).toEqual({
      code: Code.FailedPrecondition,
      message: reason("2 credentials and 1 team"),
    });
    expect(await snapshot()).toEqual(before);

    await creds().deleteCredential({ credentialId: a.credential!.credentialId });
    expect(await rpcError(orgs().deleteOrganization({ organizationId: "busy" }))).toEqual({
      code: Code.FailedPrecondition,
      message: reason("1 credential and 1 team"),
    });

    await orgs().deleteTeam({ teamId: "busy-team" });
    expect(await rpcError(orgs().deleteOrganization({ organizationId: "busy" }))).toEqual({ code: Code.FailedPrecondition, message: reason("1 credential") });
    expect((await orgs().getOrganization({ organizationId: "busy" })).organization?.name).toBe("Busy");

    await orgs().createTeam({ teamId: "busy-team-2", organizationId: "busy", name: "Team 2" });
    await orgs().createTeam({ teamId: "busy-team-3", organizationId: "busy", name: "Team 3" });
    await creds().deleteCredential({ credentialId: b.credential!.credentialId });
    expect(await rpcError(orgs().deleteOrganization({ organizationId: "busy" }))).toEqual({ code: Code.FailedPrecondition, message: reason("2 teams") });
    expect(await audit("organization.delete", "organization_id = $2", ["busy"])).toEqual([]);

    // Once empty, it goes.
    await orgs().deleteTeam({ teamId: "busy-team-2" });
    await orgs().deleteTeam({ teamId: "busy-team-3" });
    await orgs().deleteOrganization({ organizationId: "busy" });
    expect(await rpcError(orgs().getOrganization({ organizationId: "busy" }))).toEqual({ code: Code.NotFound, message: 'organization "busy" not found' });
    expect(await t.db.query("select id from organizations where id = 'busy'")).toEqual([]);
    expect(await audit("organization.delete", "organization_id = $2", ["busy"])).toEqual([
      {
        actor: "token:service-admin-token",
        action: "organization.delete",
        organization_id: "busy",
        credential_id: null,
        target: null,
        source: "127.0.0.1",
        details: { name: "Busy" },
      },
    ]);
  });

  it("NOT_FOUND for an unknown organisation, INVALID_ARGUMENT for a malformed id", async () => {
    expect(await rpcError(orgs().deleteOrganization({ organizationId: "never-was" }))).toEqual({
      code: Code.NotFound,
      message: 'organization "never-was" not found',
    });
    expect(await rpcError(orgs().deleteOrganization({ organizationId: "" }))).toEqual({ code: Code.InvalidArgument, message: "organization_id: is required" });
    expect(await audit("organization.delete", "organization_id = $2", ["never-was"])).toEqual([]);
  });

  it("the id can be used again after deletion", async () => {
    await orgs().createOrganization({ organizationId: "phoenix", name: "Old" });
    await orgs().deleteOrganization({ organizationId: "phoenix" });
    const { organization } = await orgs().createOrganization({ organizationId: "phoenix", name: "New" });
    expect(organization?.name).toBe("New");
  });
});

describe("teams", () => {
  beforeAll(async () => {
    await orgs().createOrganization({ organizationId: "team-org", name: "Team Org" });
    await orgs().createOrganization({ organizationId: "other-org", name: "Other Org" });
    await orgs().createOrganization({ organizationId: "no-teams", name: "No Teams" });
  });

  it("CreateTeam creates a team, trims its name, and audits it", async () => {
    const { team } = await orgs().createTeam({ teamId: "alpha", organizationId: "team-org", name: " Alpha " });
    expect(team?.teamId).toBe("alpha");
    expect(team?.organizationId).toBe("team-org");
    expect(team?.name).toBe("Alpha");
    expect(team?.createdAt).toBeDefined();
    expect(team?.updatedAt).toEqual(team?.createdAt);
    expect(await t.db.query("select id, organization_id, name from teams where id = 'alpha'")).toEqual([
      { id: "alpha", organization_id: "team-org", name: "Alpha" },
    ]);
    expect(await audit("team.create", "target = $2", ["alpha"])).toEqual([
      {
        actor: "token:service-admin-token",
        action: "team.create",
        organization_id: "team-org",
        credential_id: null,
        target: "alpha",
        source: "127.0.0.1",
        details: { name: "Alpha" },
      },
    ]);
  });

  it("CreateTeam: NOT_FOUND for an unknown organisation, and no team is stored", async () => {
    expect(await rpcError(orgs().createTeam({ teamId: "orphan", organizationId: "no-such-org", name: "Orphan" }))).toEqual({
      code: Code.NotFound,
      message: 'organization "no-such-org" not found',
    });
    expect(await t.db.query("select id from teams where id = 'orphan'")).toEqual([]);
    expect(await audit("team.create", "target = $2", ["orphan"])).toEqual([]);
  });

  it("CreateTeam: ALREADY_EXISTS for a taken team id, in the same or another organisation", async () => {
    await orgs().createTeam({ teamId: "taken", organizationId: "team-org", name: "Taken" });
    const message = 'team_id: a team with id "taken" already exists';
    expect(await rpcError(orgs().createTeam({ teamId: "taken", organizationId: "team-org", name: "Again" }))).toEqual({ code: Code.AlreadyExists, message });
    expect(await rpcError(orgs().createTeam({ teamId: "taken", organizationId: "other-org", name: "Elsewhere" }))).toEqual({
      code: Code.AlreadyExists,
      message,
    });
    expect(await t.db.query("select organization_id, name from teams where id = 'taken'")).toEqual([{ organization_id: "team-org", name: "Taken" }]);
  });

  it.each([
    { teamId: "", organizationId: "team-org", name: "X", message: "team_id: is required" },
    { teamId: "bad id", organizationId: "team-org", name: "X", message: `team_id: ${ID_RULE}` },
    { teamId: "t".repeat(65), organizationId: "team-org", name: "X", message: `team_id: ${ID_RULE}` },
    { teamId: "ok-team", organizationId: "", name: "X", message: "organization_id: is required" },
    { teamId: "ok-team", organizationId: "bad org", name: "X", message: `organization_id: ${ID_RULE}` },
    { teamId: "ok-team", organizationId: "team-org", name: "", message: "name: is required" },
    { teamId: "ok-team", organizationId: "team-org", name: "n".repeat(201), message: "name: must be at most 200 characters" },
  ])("CreateTeam: INVALID_ARGUMENT $message", async ({ teamId, organizationId, name, message }) => {
    expect(await rpcError(orgs().createTeam({ teamId, organizationId, name }))).toEqual({ code: Code.InvalidArgument, message });
    expect(await t.db.query("select id from teams where id = 'ok-team'")).toEqual([]);
  });

  it("ListTeams pages 2 at a time over 5 teams, ordered by id, only the organisation's own", async () => {
    await orgs().createOrganization({ organizationId: "paged-org", name: "Paged" });
    for (const id of ["p-echo", "p-alpha", "p-delta", "p-bravo", "p-charlie"]) {
      await orgs().createTeam({ teamId: id, organizationId: "paged-org", name: id });
    }
    await orgs().createTeam({ teamId: "p-foreign", organizationId: "other-org", name: "Not mine" });
    const seen: string[][] = [];
    let pageToken = "";
    do {
      const page = await orgs().listTeams({ organizationId: "paged-org", pageSize: 2, pageToken });
      expect(page.teams.every((x) => x.organizationId === "paged-org")).toBe(true);
      seen.push(page.teams.map((x) => x.teamId));
      pageToken = page.nextPageToken;
    } while (pageToken !== "" && seen.length < 10);
    expect(seen).toEqual([["p-alpha", "p-bravo"], ["p-charlie", "p-delta"], ["p-echo"]]);
    const all = await orgs().listTeams({ organizationId: "paged-org" });
    expect(all.teams.map((x) => x.name)).toEqual(["p-alpha", "p-bravo", "p-charlie", "p-delta", "p-echo"]);
    expect(all.nextPageToken).toBe("");
  });

  it("ListTeams: an organisation without teams has an empty list; an unknown one is NOT_FOUND", async () => {
    expect(await orgs().listTeams({ organizationId: "no-teams" })).toMatchObject({ teams: [], nextPageToken: "" });
    expect(await rpcError(orgs().listTeams({ organizationId: "no-such-org" }))).toEqual({
      code: Code.NotFound,
      message: 'organization "no-such-org" not found',
    });
    expect(await rpcError(orgs().listTeams({ organizationId: "" }))).toEqual({ code: Code.InvalidArgument, message: "organization_id: is required" });
  });

  it("ListTeams: malformed page_token and negative page_size are INVALID_ARGUMENT", async () => {
    expect(await rpcError(orgs().listTeams({ organizationId: "team-org", pageToken: "garbage!" }))).toEqual({
      code: Code.InvalidArgument,
      message: MALFORMED_TOKEN,
    });
    expect(await rpcError(orgs().listTeams({ organizationId: "team-org", pageSize: -5 }))).toEqual({
      code: Code.InvalidArgument,
      message: "page_size: must be zero or a positive integer",
    });
  });

  it("DeleteTeam deletes and audits; NOT_FOUND for an unknown team", async () => {
    await orgs().createTeam({ teamId: "doomed", organizationId: "team-org", name: "Doomed" });
    await orgs().deleteTeam({ teamId: "doomed" });
    expect(await t.db.query("select id from teams where id = 'doomed'")).toEqual([]);
    expect((await orgs().listTeams({ organizationId: "team-org" })).teams.map((x) => x.teamId)).not.toContain("doomed");
    expect(await audit("team.delete", "target = $2", ["doomed"])).toEqual([
      {
        actor: "token:service-admin-token",
        action: "team.delete",
        organization_id: "team-org",
        credential_id: null,
        target: "doomed",
        source: "127.0.0.1",
        details: { name: "Doomed" },
      },
    ]);
    expect(await rpcError(orgs().deleteTeam({ teamId: "doomed" }))).toEqual({ code: Code.NotFound, message: 'team "doomed" not found' });
    expect(await rpcError(orgs().deleteTeam({ teamId: "never-was" }))).toEqual({ code: Code.NotFound, message: 'team "never-was" not found' });
    expect(await rpcError(orgs().deleteTeam({ teamId: "" }))).toEqual({ code: Code.InvalidArgument, message: "team_id: is required" });
    expect(await audit("team.delete", "target = $2", ["never-was"])).toEqual([]);
  });

  it("a deleted team no longer resolves keys", async () => {
    const key = FAKE_KEYS.openai();
    await creds().createCredential({ organizationId: "team-org", provider: Provider.OPENAI, credentialName: "K", apiKey: key });
    await orgs().createTeam({ teamId: "resolver", organizationId: "team-org", name: "Resolver" });
    const scope = { case: "teamId" as const, value: "resolver" };
    expect((await creds().resolveKey({ scope, provider: Provider.OPENAI })).apiKey).toBe(key);
    await orgs().deleteTeam({ teamId: "resolver" });
    expect(await rpcError(creds().resolveKey({ scope, provider: Provider.OPENAI }))).toEqual({ code: Code.NotFound, message: 'team "resolver" not found' });
  });

  it("CreateTeam racing with the deletion of its organisation answers NOT_FOUND", async () => {
    await orgs().createOrganization({ organizationId: "vanishing", name: "Vanishing" });
    // Another session deletes the organisation but has not committed yet: the
    // service still sees it, and its insert waits on the row lock.
    const other = new pg.Client({ connectionString: t.db.url });
    await other.connect();
    try {
      await other.query("begin");
      await other.query("delete from organizations where id = 'vanishing'");
      const pending = rpcError(orgs().createTeam({ teamId: "late-team", organizationId: "vanishing", name: "Late" }));
      // Wait until the service's insert is blocked on the deleting transaction.
      const deadline = Date.now() + 10_000;
      for (;;) {
        const waiting = await t.db.query(
          "select 1 from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and query ilike 'insert into \"teams\"%'",
        );
        if (waiting.length > 0) break;
        if (Date.now() > deadline) throw new Error("the service's insert never blocked");
        await new Promise((r) => setTimeout(r, 50));
      }
      await other.query("commit");
      expect(await pending).toEqual({ code: Code.NotFound, message: 'organization "vanishing" not found' });
    } finally {
      await other.end();
    }
    expect(await t.db.query("select id from teams where id = 'late-team'")).toEqual([]);
  });

  it("DeleteOrganization racing with a team being added answers FAILED_PRECONDITION and deletes nothing", async () => {
    await orgs().createOrganization({ organizationId: "gaining", name: "Gaining" });
    const other = new pg.Client({ connectionString: t.db.url });
    await other.connect();
    try {
      // Another session adds a team but has not committed yet: the service counts no teams.
      await other.query("begin");
      await other.query("insert into teams (id, organization_id, name, created_at, updated_at) values ('sneaky', 'gaining', 'Sneaky', now(), now())");
      const pending = rpcError(orgs().deleteOrganization({ organizationId: "gaining" }));
      const deadline = Date.now() + 10_000;
      for (;;) {
        const waiting = await t.db.query(
          "select 1 from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and query ilike 'delete from \"organizations\"%'",
        );
        if (waiting.length > 0) break;
        if (Date.now() > deadline) throw new Error("the service's delete never blocked");
        await new Promise((r) => setTimeout(r, 50));
      }
      await other.query("commit");
      const got = await pending;
      expect(got).toEqual({ code: Code.FailedPrecondition, message: "the organization still has credentials or teams; delete them first" });
    } finally {
      await other.end();
    }
    expect(await t.db.query("select id from organizations where id = 'gaining'")).toEqual([{ id: "gaining" }]);
    expect(await t.db.query("select id from teams where organization_id = 'gaining'")).toEqual([{ id: "sneaky" }]);
    expect(await audit("organization.delete", "organization_id = $2", ["gaining"])).toEqual([]);
  });
});
