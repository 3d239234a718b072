import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAKE_KEYS } from "../support/harness.js";
import { startTestPortal, type PortalResponse, type TestPortal } from "../support/portal-harness.js";

// The documented REST API over real HTTP: portal process → service → PostgreSQL,
// called with a bearer token (the service's admin token, as automation would).

let portal: TestPortal;
/** Every API key this file stores; no response body or log line may ever contain one. */
const keys: string[] = [];
/** API tokens created over REST: shown in their creation response only. */
const createdTokens: string[] = [];

const key = (provider: keyof typeof FAKE_KEYS) => {
  const value = FAKE_KEYS[provider]();
  keys.push(value);
  return value;
};

const api = (method: string, path: string, options?: Parameters<TestPortal["request"]>[2]) => portal.request(method, path, options);

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const CREDENTIAL_FIELDS = [
  "api_base",
  "created_at",
  "created_by",
  "credential_id",
  "credential_name",
  "failing",
  "failure_streak",
  "is_active",
  "key_hint",
  "key_set_at",
  "last_check",
  "last_used_at",
  "organization_id",
  "provider",
  "rotation_due",
  "updated_at",
  "updated_by",
  "use_count",
  "version",
  "weight",
];

function expectError(response: PortalResponse, status: number, code: string, messagePattern?: RegExp) {
  expect(response.status, response.text).toBe(status);
  expect(response.headers.get("content-type")).toMatch(/^application\/json/);
  expect(response.json.code).toBe(code);
  expect(typeof response.json.message).toBe("string");
  if (messagePattern) expect(response.json.message).toMatch(messagePattern);
  expect(response.text).not.toMatch(/\bat .*\.(js|ts):\d+|stack|node_modules/i);
}

async function createOrganization(id: string) {
  const response = await api("POST", "/api/organizations", { body: { organization_id: id, name: `Organisation ${id}` } });
  expect(response.status, response.text).toBe(201);
  return response.json;
}

async function createCredential(organizationId: string, name: string, provider: keyof typeof FAKE_KEYS = "openai", extra: Record<string, unknown> = {}) {
  const response = await api("POST", "/api/provider-credentials/create", {
    body: { organization_id: organizationId, provider, credential_name: name, api_key: key(provider), ...extra },
  });
  expect(response.status, response.text).toBe(201);
  return response.json;
}

beforeAll(async () => {
  portal = await startTestPortal();
  await createOrganization("org-rest");
});

afterAll(async () => {
  await portal?.close();
});

describe("organizations", () => {
  it("POST /api/organizations creates one: 201 with every field", async () => {
    const org = await createOrganization("org-new");
    expect(Object.keys(org).sort()).toEqual(["created_at", "name", "organization_id", "updated_at"]);
    expect(org).toMatchObject({ organization_id: "org-new", name: "Organisation org-new" });
    expect(org.created_at).toMatch(ISO);
  });

  it("POST /api/organizations: 409 for a taken id, 400 naming the field for a bad one or an unknown field", async () => {
    expectError(await api("POST", "/api/organizations", { body: { organization_id: "org-new", name: "again" } }), 409, "already_exists");
    const bad = await api("POST", "/api/organizations", { body: { organization_id: "bad id!", name: "x" } });
    expectError(bad, 400, "bad_request", /^organization_id: /);
    expect(bad.json.issues).toEqual([{ path: "organization_id", message: expect.any(String) }]);
    const unknown = await api("POST", "/api/organizations", { body: { organizationId: "org-x", name: "x" } });
    expectError(unknown, 400, "bad_request");
    expect(unknown.json.issues).toEqual(
      expect.arrayContaining([
        { path: "organizationId", message: "unknown field" },
        { path: "organization_id", message: "is required" },
      ]),
    );
  });

  it("GET /api/organizations/{organization_id}: 200, and 404 for an unknown one", async () => {
    const response = await api("GET", "/api/organizations/org-new");
    expect(response.status).toBe(200);
    expect(response.json.organization_id).toBe("org-new");
    expectError(await api("GET", "/api/organizations/org-nope"), 404, "not_found", /org-nope/);
  });

  it("GET /api/organizations pages with limit and cursor; limit above 200 is capped", async () => {
    await portal.service.db.query(
      "insert into organizations (id, name, created_at, updated_at) select 'zz-' || lpad(i::text, 3, '0'), 'bulk', now(), now() from generate_series(1, 205) as i",
    );
    const first = await api("GET", "/api/organizations?limit=2");
    expect(first.status).toBe(200);
    expect(Object.keys(first.json).sort()).toEqual(["next_cursor", "organizations", "total"]);
    expect(first.json.organizations).toHaveLength(2);
    expect(first.json.next_cursor).toEqual(expect.any(String));
    const second = await api("GET", `/api/organizations?limit=2&cursor=${first.json.next_cursor}`);
    expect(second.status).toBe(200);
    expect(second.json.organizations[0].organization_id > first.json.organizations[1].organization_id).toBe(true);

    const capped = await api("GET", "/api/organizations?limit=100000");
    expect(capped.status).toBe(200);
    expect(capped.json.organizations).toHaveLength(200);
    expect(capped.json.next_cursor).toEqual(expect.any(String));

    const all = await api("GET", "/api/organizations?limit=200&cursor=" + capped.json.next_cursor);
    expect(all.json.next_cursor).toBeNull();
    await portal.service.db.query("delete from organizations where id like 'zz-%'");
  });

  it("GET /api/organizations: 400 for a negative, zero or non-numeric limit and a malformed cursor", async () => {
    expectError(await api("GET", "/api/organizations?limit=-1"), 400, "bad_request", /^limit: /);
    expectError(await api("GET", "/api/organizations?limit=0"), 400, "bad_request", /^limit: /);
    expectError(await api("GET", "/api/organizations?limit=ten"), 400, "bad_request", /^limit: /);
    expectError(await api("GET", "/api/organizations?limit=1.5"), 400, "bad_request", /^limit: /);
    expectError(await api("GET", "/api/organizations?cursor=not%20a%20cursor"), 400, "bad_request", /^cursor: /);
    // Well-formed base64url that the service cannot read: its page_token message is renamed to the REST field.
    expectError(await api("GET", "/api/organizations?cursor=bm9wZQ"), 400, "bad_request", /^cursor: /);
    expectError(await api("GET", "/api/organizations?colour=blue"), 400, "bad_request", /^colour: unknown field/);
  });

  it("DELETE /api/organizations/{organization_id}: 200, 404, and 409 while it has credentials", async () => {
    await createOrganization("org-doomed");
    const deleted = await api("DELETE", "/api/organizations/org-doomed");
    expect(deleted.status).toBe(200);
    expect(deleted.json).toEqual({ organization_id: "org-doomed", deleted: true });
    expectError(await api("DELETE", "/api/organizations/org-doomed"), 404, "not_found");

    await createOrganization("org-busy");
    await createCredential("org-busy", "keeps it busy");
    expectError(await api("DELETE", "/api/organizations/org-busy"), 409, "failed_precondition", /credential/);
  });
});

describe("teams", () => {
  it("POST /api/organizations/{organization_id}/teams: 201, 409 duplicate, 404 unknown organisation, 400 bad input", async () => {
    const created = await api("POST", "/api/organizations/org-rest/teams", { body: { team_id: "team-a", name: "Team A" } });
    expect(created.status, created.text).toBe(201);
    expect(Object.keys(created.json).sort()).toEqual(["created_at", "name", "organization_id", "team_id", "updated_at"]);
    expect(created.json).toMatchObject({ team_id: "team-a", organization_id: "org-rest", name: "Team A" });
    expectError(await api("POST", "/api/organizations/org-rest/teams", { body: { team_id: "team-a", name: "again" } }), 409, "already_exists");
    expectError(await api("POST", "/api/organizations/org-nope/teams", { body: { team_id: "team-b", name: "B" } }), 404, "not_found");
    expectError(
      await api("POST", "/api/organizations/org-rest/teams", { body: { teamId: "team-c", name: "C" } }),
      400,
      "bad_request",
      /teamId: unknown field|team_id: is required/,
    );
  });

  it("GET /api/organizations/{organization_id}/teams: 200 with paging, 404 for an unknown organisation", async () => {
    await api("POST", "/api/organizations/org-rest/teams", { body: { team_id: "team-b", name: "Team B" } });
    const page = await api("GET", "/api/organizations/org-rest/teams?limit=1");
    expect(page.status).toBe(200);
    expect(Object.keys(page.json).sort()).toEqual(["next_cursor", "organization_id", "teams"]);
    expect(page.json.teams.map((t: { team_id: string }) => t.team_id)).toEqual(["team-a"]);
    const next = await api("GET", `/api/organizations/org-rest/teams?limit=1&cursor=${page.json.next_cursor}`);
    expect(next.json.teams.map((t: { team_id: string }) => t.team_id)).toEqual(["team-b"]);
    expectError(await api("GET", "/api/organizations/org-nope/teams"), 404, "not_found");
  });

  it("DELETE /api/teams/{team_id}: 200, then 404", async () => {
    const deleted = await api("DELETE", "/api/teams/team-b");
    expect(deleted.status).toBe(200);
    expect(deleted.json).toEqual({ team_id: "team-b", deleted: true });
    expectError(await api("DELETE", "/api/teams/team-b"), 404, "not_found");
  });
});

describe("provider credentials", () => {
  let credential: Record<string, unknown>;

  it("POST /api/provider-credentials/create: 201 with every field, null where unset, never the key", async () => {
    const apiKey = key("openai");
    const response = await api("POST", "/api/provider-credentials/create", {
      body: { organization_id: "org-rest", provider: "openai", credential_name: "Primary", api_key: apiKey },
    });
    expect(response.status, response.text).toBe(201);
    credential = response.json;
    expect(Object.keys(credential).sort()).toEqual(CREDENTIAL_FIELDS);
    expect(credential).toMatchObject({
      organization_id: "org-rest",
      provider: "openai",
      credential_name: "Primary",
      api_base: null,
      is_active: true,
      version: 1,
      created_by: "token:service-admin-token",
      updated_by: "token:service-admin-token",
      last_used_at: null,
    });
    expect(credential.credential_id).toMatch(UUID);
    expect(credential.created_at).toMatch(ISO);
    expect(credential.updated_at).toMatch(ISO);
    expect(credential.key_hint).toBe(`sk-…${apiKey.slice(-4)}`);
    expect(response.text).not.toContain(apiKey);
    expect(response.headers.get("cache-control")).toBe("no-store");
  });

  it("POST create with an api_base keeps it; null api_base means none", async () => {
    const withBase = await createCredential("org-rest", "Proxy", "anthropic", { api_base: "https://llm-proxy.example.com/v1" });
    expect(withBase.api_base).toBe("https://llm-proxy.example.com/v1");
    const withNull = await createCredential("org-rest", "No base", "gemini", { api_base: null });
    expect(withNull.api_base).toBeNull();
  });

  it("POST create: 409 for a duplicate name (ignoring case), 404 for an unknown organisation", async () => {
    expectError(
      await api("POST", "/api/provider-credentials/create", {
        body: { organization_id: "org-rest", provider: "openai", credential_name: "PRIMARY", api_key: key("openai") },
      }),
      409,
      "already_exists",
    );
    expectError(
      await api("POST", "/api/provider-credentials/create", {
        body: { organization_id: "org-nope", provider: "openai", credential_name: "x", api_key: key("openai") },
      }),
      404,
      "not_found",
    );
  });

  it("POST create: 400 naming the field, with issues, for bad or unknown fields (apiKey is not api_key)", async () => {
    const typo = await api("POST", "/api/provider-credentials/create", {
      body: { organization_id: "org-rest", provider: "openai", credential_name: "Typo", apiKey: key("openai") },
    });
    expectError(typo, 400, "bad_request", /apiKey|api_key/);
    expect(typo.json.issues).toEqual(
      expect.arrayContaining([
        { path: "apiKey", message: "unknown field" },
        { path: "api_key", message: "is required" },
      ]),
    );
    expectError(
      await api("POST", "/api/provider-credentials/create", {
        body: { organization_id: "org-rest", provider: "mistral", credential_name: "x", api_key: key("openai") },
      }),
      400,
      "bad_request",
      /^provider: /,
    );
    // The service's own rule, passed on with its field name: an Anthropic key offered as OpenAI.
    const wrongPrefix = await api("POST", "/api/provider-credentials/create", {
      body: { organization_id: "org-rest", provider: "openai", credential_name: "Wrong", api_key: key("gemini") },
    });
    expectError(wrongPrefix, 400, "bad_request", /^api_key: /);
    expect(wrongPrefix.json.issues[0].path).toBe("api_key");
    expectError(
      await api("POST", "/api/provider-credentials/create", {
        body: { organization_id: "org-rest", provider: "openai", credential_name: 42, api_key: key("openai") },
      }),
      400,
      "bad_request",
      /^credential_name: /,
    );
  });

  it("POST create: 400 for malformed JSON or a body that is not an object, 415 for a non-JSON body", async () => {
    const broken = await api("POST", "/api/provider-credentials/create", {
      rawBody: '{"organization_id": "org-rest", "provider": ',
      headers: { "content-type": "application/json" },
    });
    expectError(broken, 400, "bad_request", /^body: is not valid JSON/);
    expectError(
      await api("POST", "/api/provider-credentials/create", { rawBody: "[1,2,3]", headers: { "content-type": "application/json" } }),
      400,
      "bad_request",
      /^body: must be a JSON object/,
    );
    expectError(
      await api("POST", "/api/provider-credentials/create", { rawBody: "organization_id=org-rest", headers: { "content-type": "text/csv" } }),
      415,
      "unsupported_media_type",
    );
  });

  it("413 for a body over 64 KiB, declared or streamed", async () => {
    const big = { organization_id: "org-rest", provider: "openai", credential_name: "x".repeat(70 * 1024), api_key: key("openai") };
    expectError(await api("POST", "/api/provider-credentials/create", { body: big }), 413, "payload_too_large");
    const chunk = new TextEncoder().encode(`{"credential_name": "${"y".repeat(8 * 1024)}`);
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= 10) controller.close();
        else {
          sent += 1;
          controller.enqueue(chunk);
        }
      },
    });
    expectError(
      await api("PUT", `/api/provider-credentials/${credential.credential_id}`, { stream, headers: { "content-type": "application/json" } }),
      413,
      "payload_too_large",
    );
  });

  it("GET /api/provider-credentials/{credential_id}: 200, 404 unknown, 400 not a UUID", async () => {
    const response = await api("GET", `/api/provider-credentials/${credential.credential_id}`);
    expect(response.status).toBe(200);
    expect(response.json).toEqual(credential);
    expectError(await api("GET", "/api/provider-credentials/00000000-0000-4000-8000-000000000000"), 404, "not_found");
    expectError(await api("GET", "/api/provider-credentials/not-a-uuid"), 400, "bad_request", /^credential_id: /);
  });

  it("GET /api/provider-credentials/organization/{organization_id}: filters, pages, 404 and 400", async () => {
    await createOrganization("org-list");
    const a = await createCredential("org-list", "A", "openai");
    const b = await createCredential("org-list", "B", "anthropic");
    const c = await createCredential("org-list", "C", "openai");
    await api("PUT", `/api/provider-credentials/${c.credential_id}/deactivate`);

    const all = await api("GET", "/api/provider-credentials/organization/org-list");
    expect(all.status).toBe(200);
    expect(Object.keys(all.json).sort()).toEqual(["credentials", "next_cursor", "organization_id", "total"]);
    expect(all.json.total).toBe(3);
    expect(all.json.organization_id).toBe("org-list");
    expect(all.json.next_cursor).toBeNull();
    expect(all.json.credentials.map((x: { credential_name: string }) => x.credential_name)).toEqual(["C", "B", "A"]);
    for (const item of all.json.credentials) expect(Object.keys(item).sort()).toEqual(CREDENTIAL_FIELDS);

    const openai = await api("GET", "/api/provider-credentials/organization/org-list?provider=openai");
    expect(openai.json.credentials.map((x: { credential_id: string }) => x.credential_id)).toEqual([c.credential_id, a.credential_id]);
    const active = await api("GET", "/api/provider-credentials/organization/org-list?active_only=true");
    expect(active.json.credentials.map((x: { credential_id: string }) => x.credential_id)).toEqual([b.credential_id, a.credential_id]);
    const notOnlyActive = await api("GET", "/api/provider-credentials/organization/org-list?active_only=false");
    expect(notOnlyActive.json.credentials).toHaveLength(3);
    const both = await api("GET", "/api/provider-credentials/organization/org-list?provider=openai&active_only=true");
    expect(both.json.credentials.map((x: { credential_id: string }) => x.credential_id)).toEqual([a.credential_id]);

    const first = await api("GET", "/api/provider-credentials/organization/org-list?limit=2");
    expect(first.json.credentials).toHaveLength(2);
    expect(first.json.next_cursor).toEqual(expect.any(String));
    const rest = await api("GET", `/api/provider-credentials/organization/org-list?limit=2&cursor=${first.json.next_cursor}`);
    expect(rest.json.credentials.map((x: { credential_id: string }) => x.credential_id)).toEqual([a.credential_id]);
    expect(rest.json.next_cursor).toBeNull();
    const capped = await api("GET", "/api/provider-credentials/organization/org-list?limit=500");
    expect(capped.status).toBe(200);

    expectError(await api("GET", "/api/provider-credentials/organization/org-nope"), 404, "not_found");
    expectError(await api("GET", "/api/provider-credentials/organization/org-list?provider=mistral"), 400, "bad_request", /^provider: /);
    expectError(await api("GET", "/api/provider-credentials/organization/org-list?active_only=maybe"), 400, "bad_request", /^active_only: /);
    expectError(await api("GET", "/api/provider-credentials/organization/org-list?limit=-5"), 400, "bad_request", /^limit: /);
    expectError(await api("GET", "/api/provider-credentials/organization/org-list?limit=lots"), 400, "bad_request", /^limit: /);
    expectError(await api("GET", "/api/provider-credentials/organization/org-list?cursor=%25%25"), 400, "bad_request", /^cursor: /);
    expectError(await api("GET", "/api/provider-credentials/organization/org-list?cursor=Zm9v"), 400, "bad_request", /^cursor: /);
  });

  it("PUT /api/provider-credentials/{credential_id}: renames, rotates, clears api_base with null; version moves on", async () => {
    const id = credential.credential_id as string;
    const renamed = await api("PUT", `/api/provider-credentials/${id}`, { body: { credential_name: "Primary (renamed)" } });
    expect(renamed.status, renamed.text).toBe(200);
    expect(renamed.json).toMatchObject({ credential_name: "Primary (renamed)", version: 2 });
    expect(Object.keys(renamed.json).sort()).toEqual(CREDENTIAL_FIELDS);

    const newKey = key("openai");
    const rotated = await api("PUT", `/api/provider-credentials/${id}`, { body: { api_key: newKey, expected_version: 2 } });
    expect(rotated.status, rotated.text).toBe(200);
    expect(rotated.json.version).toBe(3);
    expect(rotated.json.key_hint).toBe(`sk-…${newKey.slice(-4)}`);

    const fireworksKey = key("fireworks");
    const proxied = await createCredential("org-rest", "Via proxy", "fireworks", { api_base: "https://proxy.example.com", api_key: fireworksKey });
    // Changing api_base needs the key again.
    const withoutKey = await api("PUT", `/api/provider-credentials/${proxied.credential_id}`, { body: { api_base: null } });
    expect(withoutKey.status, withoutKey.text).toBe(400);
    expect(withoutKey.json.message).toMatch(/^api_key: enter the key again to change api_base/);
    const cleared = await api("PUT", `/api/provider-credentials/${proxied.credential_id}`, { body: { api_base: null, api_key: fireworksKey } });
    expect(cleared.status, cleared.text).toBe(200);
    expect(cleared.json.api_base).toBeNull();
  });

  it("PUT update: 409 for a stale expected_version, 400 for a non-integer one or unknown fields, 404 unknown", async () => {
    const id = credential.credential_id as string;
    expectError(await api("PUT", `/api/provider-credentials/${id}`, { body: { credential_name: "Stale", expected_version: 1 } }), 409, "stale_version");
    expectError(await api("PUT", `/api/provider-credentials/${id}`, { body: { expected_version: "3" } }), 400, "bad_request", /^expected_version: /);
    expectError(await api("PUT", `/api/provider-credentials/${id}`, { body: { expected_version: 0 } }), 400, "bad_request", /^expected_version: /);
    expectError(await api("PUT", `/api/provider-credentials/${id}`, { body: { apiKey: key("openai") } }), 400, "bad_request", /^apiKey: unknown field/);
    expectError(await api("PUT", `/api/provider-credentials/${id}`, { body: { credential_name: "" } }), 400, "bad_request", /^credential_name: /);
    expectError(await api("PUT", "/api/provider-credentials/00000000-0000-4000-8000-000000000000", { body: { credential_name: "x" } }), 404, "not_found");
  });

  it("PUT .../deactivate and .../activate work with no body, with or without a content-type", async () => {
    const id = credential.credential_id as string;
    const off = await api("PUT", `/api/provider-credentials/${id}/deactivate`);
    expect(off.status, off.text).toBe(200);
    expect(off.json.is_active).toBe(false);
    expect(Object.keys(off.json).sort()).toEqual(CREDENTIAL_FIELDS);
    const on = await api("PUT", `/api/provider-credentials/${id}/activate`, { headers: { "content-type": "application/json" } });
    expect(on.status, on.text).toBe(200);
    expect(on.json.is_active).toBe(true);
    const offAgain = await api("PUT", `/api/provider-credentials/${id}/deactivate`, {
      rawBody: "",
      headers: { "content-type": "application/json", "content-length": "0" },
    });
    expect(offAgain.status, offAgain.text).toBe(200);
    const onWithEmptyObject = await api("PUT", `/api/provider-credentials/${id}/activate`, { body: {} });
    expect(onWithEmptyObject.status, onWithEmptyObject.text).toBe(200);
    expect(onWithEmptyObject.json.is_active).toBe(true);
    // Idempotent.
    expect((await api("PUT", `/api/provider-credentials/${id}/activate`)).status).toBe(200);
    expectError(await api("PUT", "/api/provider-credentials/00000000-0000-4000-8000-000000000000/activate"), 404, "not_found");
    expectError(await api("PUT", "/api/provider-credentials/00000000-0000-4000-8000-000000000000/deactivate"), 404, "not_found");
    expectError(await api("PUT", `/api/provider-credentials/${id}/activate`, { body: { force: true } }), 400, "bad_request", /^force: unknown field/);
  });

  it("DELETE /api/provider-credentials/{credential_id}: 200 {credential_id, deleted}, then 404", async () => {
    const doomed = await createCredential("org-rest", "Doomed", "openai");
    const deleted = await api("DELETE", `/api/provider-credentials/${doomed.credential_id}`);
    expect(deleted.status).toBe(200);
    expect(deleted.json).toEqual({ credential_id: doomed.credential_id, deleted: true });
    expectError(await api("GET", `/api/provider-credentials/${doomed.credential_id}`), 404, "not_found");
    expectError(await api("DELETE", `/api/provider-credentials/${doomed.credential_id}`), 404, "not_found");
  });

  it("a malformed path parameter is 400 naming it, on every path that has one", async () => {
    const calls: Array<[string, string, string, unknown?]> = [
      ["GET", "/api/provider-credentials/organization/bad!id", "organization_id"],
      ["GET", "/api/provider-credentials/not-a-uuid", "credential_id"],
      ["PUT", "/api/provider-credentials/not-a-uuid", "credential_id", { credential_name: "x" }],
      ["PUT", "/api/provider-credentials/not-a-uuid/activate", "credential_id"],
      ["PUT", "/api/provider-credentials/not-a-uuid/deactivate", "credential_id"],
      ["DELETE", "/api/provider-credentials/not-a-uuid", "credential_id"],
      ["POST", "/api/provider-credentials/not-a-uuid/verify", "credential_id"],
      ["GET", "/api/provider-credentials/organization/bad!id/selection-strategies", "organization_id"],
      ["PUT", "/api/provider-credentials/organization/bad!id/selection-strategies/openai", "organization_id", { strategy: "newest" }],
      ["PUT", "/api/provider-credentials/organization/org-rest/selection-strategies/mistral", "provider", { strategy: "newest" }],
      ["GET", "/api/organizations/bad!id", "organization_id"],
      ["DELETE", "/api/organizations/bad!id", "organization_id"],
      ["GET", "/api/organizations/bad!id/teams", "organization_id"],
      ["POST", "/api/organizations/bad!id/teams", "organization_id", { team_id: "t-1", name: "T" }],
      ["DELETE", "/api/teams/bad!id", "team_id"],
    ];
    for (const [method, path, field, body] of calls) {
      const response = await api(method, path, { body });
      expectError(response, 400, "bad_request", new RegExp(`^${field}: `));
    }
  });

  it("unknown paths are 404 and known paths with another method are 405, as JSON", async () => {
    expectError(await api("GET", "/api/nothing-here"), 404, "not_found", /no such endpoint/);
    const wrongMethod = await api("PATCH", `/api/provider-credentials/${credential.credential_id}`, { body: {} });
    expectError(wrongMethod, 405, "method_not_allowed");
    expect(wrongMethod.headers.get("allow")).toMatch(/PUT/);
  });
});

describe("API tokens", () => {
  it("POST /api/tokens: 201 with the token once; it then works as a bearer token; 409 duplicate; 400 bad scope", async () => {
    const created = await api("POST", "/api/tokens", { body: { name: "automation", scope: "admin" } });
    expect(created.status, created.text).toBe(201);
    expect(Object.keys(created.json).sort()).toEqual([
      "created_at",
      "created_by",
      "expires_at",
      "last_used_at",
      "name",
      "organization_ids",
      "prefix",
      "previous_valid_until",
      "scope",
      "token",
    ]);
    expect(created.json).toMatchObject({ name: "automation", scope: "admin", created_by: "token:service-admin-token", last_used_at: null });
    const token = created.json.token as string;
    createdTokens.push(token);
    const used = await api("GET", "/api/organizations", { token });
    expect(used.status).toBe(200);

    expectError(await api("POST", "/api/tokens", { body: { name: "automation", scope: "admin" } }), 409, "already_exists");
    expectError(await api("POST", "/api/tokens", { body: { name: "x", scope: "root" } }), 400, "bad_request", /^scope: /);
    expectError(await api("POST", "/api/tokens", { body: { name: "bad name!", scope: "admin" } }), 400, "bad_request", /^name: /);
  });

  it("GET /api/tokens lists names and scopes, never tokens; DELETE /api/tokens/{name} revokes: 200, then 404", async () => {
    const list = await api("GET", "/api/tokens");
    expect(list.status).toBe(200);
    expect(Object.keys(list.json)).toEqual(["tokens"]);
    const entry = list.json.tokens.find((t: { name: string }) => t.name === "automation");
    expect(Object.keys(entry).sort()).toEqual([
      "created_at",
      "created_by",
      "expires_at",
      "last_used_at",
      "name",
      "organization_ids",
      "prefix",
      "previous_valid_until",
      "scope",
    ]);

    const revoked = await api("DELETE", "/api/tokens/automation");
    expect(revoked.status).toBe(200);
    expect(revoked.json).toEqual({ name: "automation", revoked: true });
    expectError(await api("DELETE", "/api/tokens/automation"), 404, "not_found");
  });
});

describe("audit events", () => {
  it("GET /api/audit-events filters by organisation, credential and action, newest first, paged", async () => {
    await createOrganization("org-audit");
    const created = await createCredential("org-audit", "Audited", "openai");
    await api("PUT", `/api/provider-credentials/${created.credential_id}/deactivate`);

    const byOrg = await api("GET", "/api/audit-events?organization_id=org-audit");
    expect(byOrg.status, byOrg.text).toBe(200);
    expect(Object.keys(byOrg.json).sort()).toEqual(["events", "next_cursor"]);
    const actions = byOrg.json.events.map((e: { action: string }) => e.action);
    expect(actions.slice(0, 3)).toEqual(["credential.deactivate", "credential.create", "organization.create"]);
    const event = byOrg.json.events[0];
    expect(Object.keys(event).sort()).toEqual(
      ["action", "actor", "credential_id", "details", "event_id", "occurred_at", "organization_id", "source", "target"].sort(),
    );
    expect(event).toMatchObject({ actor: "token:service-admin-token", organization_id: "org-audit", credential_id: created.credential_id });
    expect(event.occurred_at).toMatch(ISO);

    const byCredential = await api("GET", `/api/audit-events?credential_id=${created.credential_id}&action=credential.create`);
    expect(byCredential.json.events).toHaveLength(1);
    const paged = await api("GET", "/api/audit-events?organization_id=org-audit&limit=1");
    expect(paged.json.events).toHaveLength(1);
    const next = await api("GET", `/api/audit-events?organization_id=org-audit&limit=1&cursor=${paged.json.next_cursor}`);
    expect(next.json.events[0].action).toBe("credential.create");

    expectError(await api("GET", "/api/audit-events?limit=-1"), 400, "bad_request", /^limit: /);
    expectError(await api("GET", "/api/audit-events?who=me"), 400, "bad_request", /^who: unknown field/);
  });
});

describe("leaks", () => {
  it("no response body and no portal log line ever contains a stored key or a created token", () => {
    expect(keys.length).toBeGreaterThan(10);
    expect(portal.bodies.length).toBeGreaterThan(50);
    for (const secret of keys) {
      for (const body of portal.bodies) expect(body.includes(secret), "a response body carries a key").toBe(false);
      for (const line of portal.output) expect(line.includes(secret), "a portal log line carries a key").toBe(false);
    }
    expect(createdTokens).toHaveLength(1);
    for (const token of createdTokens) {
      expect(
        portal.bodies.filter((body) => body.includes(token)),
        "a token is shown once, when it is created",
      ).toHaveLength(1);
      for (const line of portal.output) expect(line.includes(token)).toBe(false);
    }
  });
});
