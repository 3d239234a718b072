import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FailureKind, Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { FAKE_KEYS } from "../support/harness.js";
import { refusedUrl, startFakeProvider, type FakeProvider } from "../support/fake-provider.js";
import { startTestPortal, type PortalResponse, type TestPortal } from "../support/portal-harness.js";

// Key health through the REST API (and the pages' tRPC endpoint): checking a key
// with its provider, verify-before-saving, weights, failing and rotation-due
// credentials and their filters, and the selection strategies; over real HTTP,
// portal process → service → PostgreSQL, with a fake provider on loopback so
// that nothing goes to the internet.

let portal: TestPortal;
let fake: FakeProvider;
/** Every API key this file uses; no response body or portal log line may ever contain one. */
const keys: string[] = [];

const api = (method: string, path: string, options?: Parameters<TestPortal["request"]>[2]) => portal.request(method, path, options);

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
const ORG = "org-health";
const MISSING = "00000000-0000-4000-8000-000000000000";

/** A fresh key in the provider's format, answered by the fake provider as `behaviour`. */
function key(provider: keyof typeof FAKE_KEYS, behaviour: Parameters<FakeProvider["setKey"]>[1] = "valid"): string {
  const value = FAKE_KEYS[provider]();
  keys.push(value);
  fake.setKey(value, behaviour);
  return value;
}

function expectError(response: PortalResponse, status: number, code: string, messagePattern?: RegExp) {
  expect(response.status, response.text).toBe(status);
  expect(response.headers.get("content-type")).toMatch(/^application\/json/);
  expect(response.json.code).toBe(code);
  if (messagePattern) expect(response.json.message).toMatch(messagePattern);
  expect(response.text).not.toMatch(/\bat .*\.(js|ts):\d+|stack|node_modules/i);
}

async function createCredential(name: string, apiKey: string, extra: Record<string, unknown> = {}, provider = "openai") {
  const response = await api("POST", "/api/provider-credentials/create", {
    body: { organization_id: ORG, provider, credential_name: name, api_key: apiKey, api_base: fake.baseUrl(provider as "openai"), ...extra },
  });
  expect(response.status, response.text).toBe(201);
  return response.json;
}

const names = (response: PortalResponse) => response.json.credentials.map((c: { credential_name: string }) => c.credential_name);

beforeAll(async () => {
  fake = await startFakeProvider();
  portal = await startTestPortal();
  const org = await api("POST", "/api/organizations", { body: { organization_id: ORG, name: "Health Org" } });
  expect(org.status, org.text).toBe(201);
});

afterAll(async () => {
  await portal?.close();
  await fake?.close();
});

describe("the credential's key-health fields", () => {
  it("a new credential has weight 1, no uses, no check, is healthy and not due for rotation", async () => {
    const created = await createCredential("Fresh", key("openai"));
    expect(created).toMatchObject({
      weight: 1,
      use_count: 0,
      last_check: null,
      failing: false,
      failure_streak: 0,
      rotation_due: false,
    });
    expect(created.key_set_at).toMatch(ISO);
    const got = await api("GET", `/api/provider-credentials/${created.credential_id}`);
    expect(got.json).toEqual(created);
  });

  it("use_count is a number that follows ResolveKey hand-outs (batched), next to last_used_at", async () => {
    await api("POST", "/api/organizations", { body: { organization_id: "org-usage", name: "Usage" } });
    const response = await api("POST", "/api/provider-credentials/create", {
      body: { organization_id: "org-usage", provider: "anthropic", credential_name: "Used", api_key: key("anthropic") },
    });
    const { credentials } = portal.service.clients();
    for (let i = 0; i < 3; i++) await credentials.resolveKey({ scope: { case: "organizationId", value: "org-usage" }, provider: Provider.ANTHROPIC });
    await portal.service.service.parts.resolver.flushUsage();
    const got = await api("GET", `/api/provider-credentials/${response.json.credential_id}`);
    expect(got.json.use_count).toBe(3);
    expect(typeof got.json.use_count).toBe("number");
    expect(got.json.last_used_at).toMatch(ISO);
  });
});

describe("POST /api/provider-credentials/{credential_id}/verify", () => {
  it("a key the provider accepts: 200 {check, credential}, the check stored as last_check", async () => {
    const credential = await createCredential("Good", key("openai", "valid"));
    const response = await api("POST", `/api/provider-credentials/${credential.credential_id}/verify`);
    expect(response.status, response.text).toBe(200);
    expect(Object.keys(response.json).sort()).toEqual(["check", "credential"]);
    const { check } = response.json;
    expect(Object.keys(check).sort()).toEqual(["checked_at", "http_status", "latency_ms", "message", "outcome"]);
    expect(check).toMatchObject({ outcome: "valid", http_status: 200 });
    expect(Number.isInteger(check.latency_ms)).toBe(true);
    expect(check.checked_at).toMatch(ISO);
    expect(check.message).toMatch(/accepted the key/);
    expect(response.json.credential.credential_id).toBe(credential.credential_id);
    expect(response.json.credential.last_check).toEqual(check);
    // The fake saw the key in its header, never in the URL.
    expect(fake.requests.at(-1)).toMatchObject({ path: "/openai/v1/models", answered: "valid" });
    const got = await api("GET", `/api/provider-credentials/${credential.credential_id}`);
    expect(got.json.last_check).toEqual(check);
  });

  it("works with a body-less POST, with or without a content-type, and with an empty JSON object", async () => {
    const credential = await createCredential("Bodyless", key("openai"));
    const path = `/api/provider-credentials/${credential.credential_id}/verify`;
    expect((await api("POST", path, { headers: { "content-type": "application/json" } })).status).toBe(200);
    expect((await api("POST", path, { body: {} })).status).toBe(200);
    expectError(await api("POST", path, { body: { force: true } }), 400, "bad_request", /^force: unknown field/);
  });

  it("a refused check is a result, not an error: each outcome, with the provider's status", async () => {
    const cases: Array<[Parameters<FakeProvider["setKey"]>[1], string, number | null]> = [
      ["invalid", "invalid_key", 401],
      ["forbidden", "no_permission", 403],
      ["rate_limited", "rate_limited", 429],
      ["server_error", "unexpected", 500],
    ];
    for (const [behaviour, outcome, status] of cases) {
      const apiKey = key("openai", behaviour);
      const credential = await createCredential(`Case ${behaviour}`, apiKey);
      const response = await api("POST", `/api/provider-credentials/${credential.credential_id}/verify`);
      expect(response.status, response.text).toBe(200);
      expect(response.json.check).toMatchObject({ outcome, http_status: status });
      expect(response.json.check.message).not.toContain(apiKey);
      expect(response.json.check.message).not.toContain(apiKey.slice(-8));
    }
    // No answer at all: unreachable, without an HTTP status.
    const nowhere = await api("POST", "/api/provider-credentials/create", {
      body: { organization_id: ORG, provider: "openai", credential_name: "Nowhere", api_key: key("openai"), api_base: await refusedUrl() },
    });
    const response = await api("POST", `/api/provider-credentials/${nowhere.json.credential_id}/verify`);
    expect(response.status, response.text).toBe(200);
    expect(response.json.check).toMatchObject({ outcome: "unreachable", http_status: null });
  });

  it("404 for an unknown credential, 400 naming credential_id for a malformed one, 401 without a token, 403 for a resolve token", async () => {
    expectError(await api("POST", `/api/provider-credentials/${MISSING}/verify`), 404, "not_found");
    expectError(await api("POST", "/api/provider-credentials/not-a-uuid/verify"), 400, "bad_request", /^credential_id: /);
    expectError(await api("POST", `/api/provider-credentials/${MISSING}/verify`, { token: null }), 401, "unauthorized");
    const { token } = await portal.service.service.parts.tokens.create("health-gateway", "resolve", "test");
    expectError(await api("POST", `/api/provider-credentials/${MISSING}/verify`, { token }), 403, "forbidden");
    // GET is not how a check is asked for.
    const wrong = await api("GET", `/api/provider-credentials/${MISSING}/verify`);
    expectError(wrong, 405, "method_not_allowed");
    expect(wrong.headers.get("allow")).toBe("POST");
  });
});

describe("weight and verify-before-saving on create and update", () => {
  it("create takes a weight from 0 to 1000; anything else is 400 naming weight", async () => {
    expect((await createCredential("Heavy", key("openai"), { weight: 1000 })).weight).toBe(1000);
    expect((await createCredential("Never weighted", key("openai"), { weight: 0 })).weight).toBe(0);
    for (const weight of [1001, -1, 1.5, "3", null, true]) {
      expectError(
        await api("POST", "/api/provider-credentials/create", {
          body: { organization_id: ORG, provider: "openai", credential_name: `Bad weight ${String(weight)}`, api_key: key("openai"), weight },
        }),
        400,
        "bad_request",
        /^weight: /,
      );
    }
  });

  it("create with verify: true stores a key the provider accepts", async () => {
    const created = await createCredential("Verified", key("openai", "valid"), { verify: true });
    expect(created.is_active).toBe(true);
  });

  it("create with verify: true refuses a key the provider does not accept: 409 naming api_key, nothing stored", async () => {
    for (const behaviour of ["invalid", "rate_limited"] as const) {
      const apiKey = key("openai", behaviour);
      const response = await api("POST", "/api/provider-credentials/create", {
        body: {
          organization_id: ORG,
          provider: "openai",
          credential_name: `Refused ${behaviour}`,
          api_key: apiKey,
          api_base: fake.baseUrl("openai"),
          verify: true,
        },
      });
      expectError(response, 409, "failed_precondition", /^api_key: the provider check did not pass/);
      expect(response.text).not.toContain(apiKey);
    }
    const list = await api("GET", `/api/provider-credentials/organization/${ORG}?limit=200`);
    expect(names(list).filter((name: string) => name.startsWith("Refused"))).toEqual([]);
    // verify must be a JSON boolean.
    expectError(
      await api("POST", "/api/provider-credentials/create", {
        body: { organization_id: ORG, provider: "openai", credential_name: "Stringly", api_key: key("openai"), verify: "false" },
      }),
      400,
      "bad_request",
      /^verify: /,
    );
  });

  it("update changes the weight; verify: true refuses a new key the provider does not accept and changes nothing", async () => {
    const credential = await createCredential("Rotating", key("openai", "valid"));
    const weighted = await api("PUT", `/api/provider-credentials/${credential.credential_id}`, { body: { weight: 7 } });
    expect(weighted.status, weighted.text).toBe(200);
    expect(weighted.json).toMatchObject({ weight: 7, version: 2 });
    expectError(await api("PUT", `/api/provider-credentials/${credential.credential_id}`, { body: { weight: 5000 } }), 400, "bad_request", /^weight: /);

    const badKey = key("openai", "invalid");
    const refused = await api("PUT", `/api/provider-credentials/${credential.credential_id}`, { body: { api_key: badKey, verify: true } });
    expectError(refused, 409, "failed_precondition", /^api_key: /);
    expect(refused.text).not.toContain(badKey);
    const unchanged = await api("GET", `/api/provider-credentials/${credential.credential_id}`);
    expect(unchanged.json).toMatchObject({ key_hint: credential.key_hint, version: 2 });

    const goodKey = key("openai", "valid");
    const rotated = await api("PUT", `/api/provider-credentials/${credential.credential_id}`, { body: { api_key: goodKey, verify: true } });
    expect(rotated.status, rotated.text).toBe(200);
    expect(rotated.json.key_hint).toBe(`sk-…${goodKey.slice(-4)}`);
  });
});

describe("failing and rotation-due credentials, and their list filters", () => {
  let failing: { credential_id: string };
  let old: { credential_id: string };

  beforeAll(async () => {
    await api("POST", "/api/organizations", { body: { organization_id: "org-filters", name: "Filters" } });
    const create = async (name: string, apiKey: string) => {
      const response = await api("POST", "/api/provider-credentials/create", {
        body: { organization_id: "org-filters", provider: "openai", credential_name: name, api_key: apiKey, api_base: fake.baseUrl("openai") },
      });
      expect(response.status, response.text).toBe(201);
      return response.json;
    };
    await create("Healthy", key("openai"));
    failing = await create("Failing", key("openai", "valid"));
    old = await create("Old", key("openai"));
  });

  it("three reported authentication failures mark a credential failing, with its streak", async () => {
    const { credentials } = portal.service.clients();
    for (let i = 0; i < 3; i++) await credentials.reportKeyFailure({ credentialId: failing.credential_id, kind: FailureKind.AUTHENTICATION });
    const got = await api("GET", `/api/provider-credentials/${failing.credential_id}`);
    expect(got.json).toMatchObject({ failing: true, failure_streak: 3 });
  });

  it("a key set more than ROTATION_DAYS ago is rotation_due", async () => {
    await portal.service.db.query("update provider_credentials set key_set_at = now() - interval '100 days' where id = $1", [old.credential_id]);
    const got = await api("GET", `/api/provider-credentials/${old.credential_id}`);
    expect(got.json.rotation_due).toBe(true);
    expect(Date.parse(got.json.key_set_at)).toBeLessThan(Date.now() - 99 * 86_400_000);
  });

  it("failing_only and rotation_due_only narrow the list, alone or together", async () => {
    const base = "/api/provider-credentials/organization/org-filters";
    expect(names(await api("GET", base))).toEqual(["Old", "Failing", "Healthy"]);
    expect(names(await api("GET", `${base}?failing_only=true`))).toEqual(["Failing"]);
    expect(names(await api("GET", `${base}?rotation_due_only=true`))).toEqual(["Old"]);
    expect(names(await api("GET", `${base}?rotation_due_only=true&failing_only=true`))).toEqual([]);
    expect(names(await api("GET", `${base}?rotation_due_only=false&failing_only=false`))).toHaveLength(3);
    expect(names(await api("GET", `${base}?failing_only=true&provider=anthropic`))).toEqual([]);
    expectError(await api("GET", `${base}?failing_only=maybe`), 400, "bad_request", /^failing_only: /);
    expectError(await api("GET", `${base}?rotation_due_only=1x`), 400, "bad_request", /^rotation_due_only: /);
  });

  it("a passing check clears the failing mark", async () => {
    const response = await api("POST", `/api/provider-credentials/${failing.credential_id}/verify`);
    expect(response.status, response.text).toBe(200);
    expect(response.json.check.outcome).toBe("valid");
    expect(response.json.credential).toMatchObject({ failing: false, failure_streak: 0 });
    expect(names(await api("GET", "/api/provider-credentials/organization/org-filters?failing_only=true"))).toEqual([]);
  });
});

describe("selection strategies", () => {
  const base = `/api/provider-credentials/organization/${ORG}/selection-strategies`;

  it("GET lists every provider, newest by default, never set", async () => {
    const response = await api("GET", base);
    expect(response.status, response.text).toBe(200);
    expect(Object.keys(response.json).sort()).toEqual(["organization_id", "policies"]);
    expect(response.json.organization_id).toBe(ORG);
    expect(response.json.policies).toEqual(
      ["openai", "anthropic", "gemini", "fireworks"].map((provider) => ({
        organization_id: ORG,
        provider,
        strategy: "newest",
        updated_at: null,
        updated_by: null,
      })),
    );
  });

  it("PUT .../{provider} sets one provider's strategy: 200 with who and when; GET then shows it", async () => {
    const set = await api("PUT", `${base}/openai`, { body: { strategy: "round_robin" } });
    expect(set.status, set.text).toBe(200);
    expect(Object.keys(set.json).sort()).toEqual(["organization_id", "provider", "strategy", "updated_at", "updated_by"]);
    expect(set.json).toMatchObject({ organization_id: ORG, provider: "openai", strategy: "round_robin", updated_by: "token:service-admin-token" });
    expect(set.json.updated_at).toMatch(ISO);
    const weighted = await api("PUT", `${base}/gemini`, { body: { strategy: "weighted" } });
    expect(weighted.json.strategy).toBe("weighted");
    const list = await api("GET", base);
    expect(list.json.policies.map((p: { strategy: string }) => p.strategy)).toEqual(["round_robin", "newest", "weighted", "newest"]);
    const back = await api("PUT", `${base}/openai`, { body: { strategy: "newest" } });
    expect(back.json.strategy).toBe("newest");
    // The audit log records the change.
    const events = await api("GET", `/api/audit-events?organization_id=${ORG}&limit=5`);
    expect(events.json.events.map((e: { action: string }) => e.action)).toContain("selection_strategy.set");
  });

  it("400 naming the field for an unknown strategy or provider, a missing strategy or an unknown field", async () => {
    expectError(await api("PUT", `${base}/openai`, { body: { strategy: "random" } }), 400, "bad_request", /^strategy: /);
    expectError(await api("PUT", `${base}/openai`, { body: { strategy: "ROUND_ROBIN" } }), 400, "bad_request", /^strategy: /);
    expectError(await api("PUT", `${base}/openai`), 400, "bad_request", /^strategy: Invalid option: expected one of "newest"\|"round_robin"\|"weighted"/);
    expectError(await api("PUT", `${base}/mistral`, { body: { strategy: "newest" } }), 400, "bad_request", /^provider: /);
    expectError(await api("PUT", `${base}/openai`, { body: { strategy: "newest", weight: 3 } }), 400, "bad_request", /^weight: unknown field/);
  });

  it("404 for an unknown organisation, 401 without credentials, 403 for a resolve token", async () => {
    const missing = "/api/provider-credentials/organization/org-missing/selection-strategies";
    expectError(await api("GET", missing), 404, "not_found", /org-missing/);
    expectError(await api("PUT", `${missing}/openai`, { body: { strategy: "weighted" } }), 404, "not_found", /org-missing/);
    expectError(await api("GET", base, { token: null }), 401, "unauthorized");
    expectError(await api("PUT", `${base}/openai`, { token: null, body: { strategy: "weighted" } }), 401, "unauthorized");
    const { token } = await portal.service.service.parts.tokens.create("strategy-gateway", "resolve", "test");
    expectError(await api("GET", base, { token }), 403, "forbidden");
    expectError(await api("PUT", `${base}/openai`, { token, body: { strategy: "weighted" } }), 403, "forbidden");
  });

  it("the pages' tRPC endpoint serves the same procedures", async () => {
    const input = encodeURIComponent(JSON.stringify({ organization_id: ORG }));
    const list = await api("GET", `/api/trpc/selectionStrategies.list?input=${input}`);
    expect(list.status, list.text).toBe(200);
    expect(list.json.result.data.policies).toHaveLength(4);
    const bad = await api("POST", "/api/trpc/selectionStrategies.set", { body: { organization_id: ORG, provider: "openai", strategy: "fastest" } });
    expect(bad.status).toBe(400);
    expect(bad.json.error.data).toMatchObject({ apiCode: "bad_request", httpStatus: 400 });
    expect(bad.json.error.message).toMatch(/^strategy: /);
  });
});

describe("the pages' form actions (what a browser without JavaScript posts)", () => {
  let session: string;
  const post = (path: string, fields: Record<string, string>) =>
    api("POST", path, {
      token: null,
      session,
      rawBody: new URLSearchParams(fields).toString(),
      headers: { "content-type": "application/x-www-form-urlencoded", origin: portal.url, accept: "text/html" },
    });

  beforeAll(async () => {
    await portal.createAdmin("forms@example.com", "a long form passphrase");
    session = (await portal.signIn("forms@example.com", "a long form passphrase")).session!;
  });

  it("a weight that is not a whole number from 0 to 1000 is refused at the field, before the service is asked", async () => {
    for (const weight of ["1001", "-1", "2.5", "lots"]) {
      const response = await post("/credentials/new", {
        organization_id: ORG,
        provider: "openai",
        credential_name: `Form weight ${weight}`,
        api_key: key("openai"),
        weight,
      });
      expect(response.status, weight).toBe(400);
      expect(response.text).toContain('id="weight-error"');
      expect(response.text).toContain("must be a whole number from 0 to 1000");
    }
    const list = await api("GET", `/api/provider-credentials/organization/${ORG}?limit=200`);
    expect(names(list).filter((name: string) => name.startsWith("Form weight"))).toEqual([]);
  });

  it("an empty weight takes the default; the Test action answers with a redirect back and the outcome", async () => {
    const created = await post("/credentials/new", {
      organization_id: ORG,
      provider: "openai",
      credential_name: "Form default",
      api_key: key("openai"),
      api_base: fake.baseUrl("openai"),
      weight: "",
    });
    expect(created.status, created.text).toBe(303);
    const list = await api("GET", `/api/provider-credentials/organization/${ORG}?limit=200`);
    const credential = list.json.credentials.find((c: { credential_name: string }) => c.credential_name === "Form default");
    expect(credential.weight).toBe(1);
    const tested = await post("/?/verify", { credential_id: credential.credential_id, returnTo: `/?organization=${ORG}` });
    expect(tested.status).toBe(303);
    expect(tested.headers.get("location")).toBe(`/?organization=${ORG}`);
    const flash = decodeURIComponent(
      tested.headers
        .getSetCookie()
        .find((c) => c.startsWith("pc_flash="))!
        .split(";")[0]
        .slice("pc_flash=".length),
    );
    expect(JSON.parse(flash)).toMatchObject({ kind: "success", message: expect.stringMatching(/^Test of “Form default”: Valid\. /) });
    const unknown = await post("/?/verify", { credential_id: MISSING, returnTo: `/?organization=${ORG}` });
    expect(unknown.status).toBe(303);
    const refusal = decodeURIComponent(
      unknown.headers
        .getSetCookie()
        .find((c) => c.startsWith("pc_flash="))!
        .split(";")[0]
        .slice("pc_flash=".length),
    );
    expect(JSON.parse(refusal)).toMatchObject({ kind: "error", message: expect.stringMatching(/^Could not test the credential: /) });
  });

  it("the strategy action refuses a strategy that is not on the list, and sets one that is", async () => {
    const refused = await post(`/organizations/${ORG}?/setStrategy`, { provider: "fireworks", strategy: "fastest" });
    expect(refused.status).toBe(303);
    const set = await post(`/organizations/${ORG}?/setStrategy`, { provider: "fireworks", strategy: "weighted" });
    expect(set.status).toBe(303);
    expect(set.headers.get("location")).toBe(`/organizations/${ORG}`);
    const policies = await api("GET", `/api/provider-credentials/organization/${ORG}/selection-strategies`);
    expect(policies.json.policies.find((p: { provider: string }) => p.provider === "fireworks")).toMatchObject({
      strategy: "weighted",
      updated_by: "forms@example.com",
    });
  });
});

describe("the OpenAPI document", () => {
  it("documents the new operations, fields and error statuses", async () => {
    const document = (await api("GET", "/api/openapi.json", { token: null })).json;
    const verify = document.paths["/provider-credentials/{credential_id}/verify"].post;
    expect(Object.keys(verify.responses).sort()).toEqual(["200", "400", "401", "403", "404", "413", "503"]);
    expect(verify.responses["200"].content["application/json"].schema.$ref).toBe("#/components/schemas/CredentialVerification");
    const strategies = document.paths["/provider-credentials/organization/{organization_id}/selection-strategies"].get;
    expect(Object.keys(strategies.responses).sort()).toEqual(["200", "400", "401", "403", "404", "503"]);
    const set = document.paths["/provider-credentials/organization/{organization_id}/selection-strategies/{provider}"].put;
    expect(set.parameters.map((p: { name: string }) => p.name).sort()).toEqual(["organization_id", "provider"]);
    expect(set.requestBody.content["application/json"].schema.properties.strategy.enum).toEqual(["newest", "round_robin", "weighted"]);
    expect(Object.keys(set.responses)).not.toContain("409");
    const create = document.paths["/provider-credentials/create"].post;
    expect(Object.keys(create.requestBody.content["application/json"].schema.properties)).toEqual(expect.arrayContaining(["weight", "verify"]));
    expect(Object.keys(create.responses)).toContain("409");
    const list = document.paths["/provider-credentials/organization/{organization_id}"].get;
    expect(list.parameters.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining(["rotation_due_only", "failing_only"]));
    const credential = document.components.schemas.Credential;
    expect(credential.required).toEqual(
      expect.arrayContaining(["weight", "use_count", "last_check", "failing", "failure_streak", "key_set_at", "rotation_due"]),
    );
    expect(document.components.schemas.KeyCheck.properties.outcome.enum).toEqual([
      "valid",
      "invalid_key",
      "no_permission",
      "rate_limited",
      "unreachable",
      "unexpected",
    ]);
  });
});

describe("leaks", () => {
  it("no response body and no portal log line ever contains a key", () => {
    expect(keys.length).toBeGreaterThan(15);
    for (const secret of keys) {
      for (const body of portal.bodies) expect(body.includes(secret), "a response body carries a key").toBe(false);
      for (const line of portal.output) expect(line.includes(secret), "a portal log line carries a key").toBe(false);
      expect(fake.urlsContaining(secret)).toEqual([]);
    }
  });
});
