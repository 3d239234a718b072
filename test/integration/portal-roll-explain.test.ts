import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { FAKE_KEYS } from "../support/harness.js";
import { startTestPortal, type TestPortal } from "../support/portal-harness.js";

// Which key is live and "Roll key" through the portal: the REST paths, the credentials list's marking (from the
// service's ExplainResolution, checked against what ResolveKey actually hands out) and the roll page without JavaScript.

let portal: TestPortal;
const ORG = "org-roll";
/** Every key this file stores: no response or log line may contain one. */
const keys: string[] = [];
const newKey = () => {
  const value = FAKE_KEYS.openai();
  keys.push(value);
  return value;
};

const api = (method: string, path: string, options?: Parameters<TestPortal["request"]>[2]) => portal.request(method, path, options);

async function createCredential(name: string, extra: Record<string, unknown> = {}): Promise<string> {
  const response = await api("POST", "/api/provider-credentials/create", {
    body: { organization_id: ORG, provider: "openai", credential_name: name, api_key: newKey(), ...extra },
  });
  expect(response.status, response.text).toBe(201);
  return response.json.credential_id as string;
}

const served = async () =>
  (await portal.service.clients().credentials.resolveKey({ scope: { case: "organizationId", value: ORG }, provider: Provider.OPENAI })).credentialId;

function flashOf(headers: Headers): { kind: string; message: string } {
  const cookie = headers
    .getSetCookie()
    .find((c) => c.startsWith("pc_flash="))!
    .split(";")[0]
    .slice("pc_flash=".length);
  return JSON.parse(decodeURIComponent(cookie)) as { kind: string; message: string };
}

/** The standing badge of a credential's row in the list's HTML. */
function rowStanding(html: string, id: string): string | undefined {
  const row = html.split("<tr").find((part) => part.includes(`data-credential-id="${id}"`));
  return row?.match(/data-standing="([a-z_]+)"/)?.[1];
}

beforeAll(async () => {
  portal = await startTestPortal();
  const created = await api("POST", "/api/organizations", { body: { organization_id: ORG, name: "Roll Org" } });
  expect(created.status, created.text).toBe(201);
});

afterAll(async () => {
  const everything = [...portal.bodies, ...portal.output].join("\n");
  for (const key of keys) expect(everything).not.toContain(key);
  await portal?.close();
});

describe("REST", () => {
  it("GET .../organization/{organization_id}/resolution: the standing of each credential, as ResolveKey serves", async () => {
    const first = await createCredential("first");
    const second = await createCredential("second");
    await api("PUT", `/api/provider-credentials/${second}/deactivate`);
    await api("PUT", `/api/provider-credentials/${second}/activate`);
    await api("PUT", `/api/provider-credentials/${first}`, { body: { api_key: newKey() } });
    const response = await api("GET", `/api/provider-credentials/organization/${ORG}/resolution?provider=openai`);
    expect(response.status, response.text).toBe(200);
    const [openai] = response.json.resolutions;
    expect(openai).toMatchObject({ provider: "openai", strategy: "newest", source: "organization", environment_fallback: false });
    expect(openai.serving_credential_id).toBe(await served());
    expect(openai.serving_credential_id).toBe(second);
    expect(openai.credentials.map((c: { credential_id: string; standing: string; share: number }) => [c.credential_id, c.standing, c.share])).toEqual([
      [second, "in_use", 1],
      [first, "standby", 0],
    ]);
    expect(Object.keys(openai.credentials[0]).sort()).toEqual(["credential_id", "credential_name", "key_hint", "share", "standing", "weight"]);

    const all = await api("GET", `/api/provider-credentials/organization/${ORG}/resolution`);
    expect(all.json.resolutions.map((r: { provider: string }) => r.provider)).toEqual(["openai", "anthropic", "gemini", "fireworks"]);
    expect((await api("GET", `/api/provider-credentials/organization/no-such-org/resolution`)).status).toBe(404);
    const badProvider = await api("GET", `/api/provider-credentials/organization/${ORG}/resolution?provider=nope`);
    expect(badProvider.status).toBe(400);
    expect(badProvider.text).toContain("provider");
  });

  it("POST .../{credential_id}/roll: the new credential in use, the old one renamed and deactivating; bad input named", async () => {
    const old = await createCredential("rolled by rest", { weight: 4 });
    const response = await api("POST", `/api/provider-credentials/${old}/roll`, { body: { api_key: newKey(), overlap_seconds: 600 } });
    expect(response.status, response.text).toBe(200);
    const { credential, previous, previous_deactivates_at } = response.json;
    expect(credential).toMatchObject({ credential_name: "rolled by rest", weight: 4, is_active: true });
    expect(previous).toMatchObject({ credential_id: old, is_active: true });
    expect(previous.credential_name).toMatch(/^rolled by rest \(replaced \d{4}-\d{2}-\d{2}\)$/);
    expect(new Date(previous_deactivates_at).getTime() - Date.now()).toBeGreaterThan(500_000);

    for (const [body, field] of [
      [{ api_key: newKey(), overlap_seconds: 86_401 }, "overlap_seconds"],
      [{ api_key: newKey(), overlap_seconds: "60" }, "overlap_seconds"],
      [{ overlap_seconds: 0 }, "api_key"],
      [{ api_key: newKey(), apiKey: "x" }, "apiKey"],
    ] as const) {
      const refused = await api("POST", `/api/provider-credentials/${credential.credential_id}/roll`, { body });
      expect(refused.status, JSON.stringify(body)).toBe(400);
      expect(refused.text).toContain(field);
    }
    const stale = await api("POST", `/api/provider-credentials/${credential.credential_id}/roll`, { body: { api_key: newKey(), expected_version: 99 } });
    expect(stale.status).toBe(409);
    expect((await api("POST", `/api/provider-credentials/00000000-0000-4000-8000-000000000000/roll`, { body: { api_key: newKey() } })).status).toBe(404);
  });

  it("both are in the OpenAPI document", async () => {
    const document = (await api("GET", "/api/openapi.json")).json;
    expect(document.paths["/provider-credentials/organization/{organization_id}/resolution"]?.get).toBeDefined();
    expect(document.paths["/provider-credentials/{credential_id}/roll"]?.post).toBeDefined();
  });
});

describe("pages (no JavaScript)", () => {
  let session: string;
  const page = (path: string) => api("GET", path, { token: null, session, headers: { accept: "text/html" } });
  const post = (path: string, fields: Record<string, string>) =>
    api("POST", path, {
      token: null,
      session,
      rawBody: new URLSearchParams(fields).toString(),
      headers: { "content-type": "application/x-www-form-urlencoded", origin: portal.url, accept: "text/html" },
    });

  beforeAll(async () => {
    await portal.createAdmin("roller@example.com", "quiet marble harbour seventeen");
    session = (await portal.signIn("roller@example.com", "quiet marble harbour seventeen")).session!;
  });

  it("the list marks the row ResolveKey serves as In use, the others Standby or Inactive, with weights, strategy and fallback", async () => {
    const html = (await page(`/?organization=${ORG}&provider=openai`)).text;
    const inUse = await served();
    expect(rowStanding(html, inUse!)).toBe("in_use");
    const standings = [...html.matchAll(/data-standing="([a-z_]+)"/g)].map((m) => m[1]);
    expect(standings.filter((s) => s === "in_use")).toHaveLength(1);
    expect(html).toContain(">In use<");
    expect(html).toContain(">Standby<");
    // Weights in their own column.
    expect(html).toMatch(/<th scope="col"[^>]*>Weight<\/th>/);
    expect(html).toMatch(/data-testid="weight">4</);
    expect(html).toContain('data-testid="key-selection"');
    expect(html).toMatch(/data-testid="strategy">Newest</);
    expect(html).toContain("no environment fallback");
    expect(html).toMatch(/href="\/credentials\/[0-9a-f-]+\/roll\?returnTo=/);
  });

  it("Roll key: the page, a refusal at the field, then the roll; the list then marks the new key in use", async () => {
    const old = await createCredential("rolled by page");
    const form = await page(`/credentials/${old}/roll`);
    expect(form.status).toBe(200);
    expect(form.text).toContain("Roll the key of “rolled by page”");
    for (const value of ["0", "600", "3600", "86400"]) expect(form.text).toContain(`name="overlap_seconds" value="${value}"`);

    const missingKey = await post(`/credentials/${old}/roll`, { api_key: "", overlap_seconds: "0", returnTo: `/?organization=${ORG}` });
    expect(missingKey.status).toBe(400);
    expect(missingKey.text).toContain('id="api_key-error"');

    const rolled = await post(`/credentials/${old}/roll`, {
      api_key: newKey(),
      api_base: "",
      current_api_base: "",
      overlap_seconds: "3600",
      expected_version: "1",
      returnTo: `/?organization=${ORG}`,
    });
    expect(rolled.status, rolled.text).toBe(303);
    expect(rolled.headers.get("location")).toBe(`/?organization=${ORG}`);
    expect(flashOf(rolled.headers)).toMatchObject({ kind: "success", message: expect.stringMatching(/is stored as “rolled by page” and active now/) });

    const newest = await served();
    expect(newest).not.toBe(old);
    const html = (await page(`/?organization=${ORG}&provider=openai`)).text;
    expect(rowStanding(html, newest!)).toBe("in_use");
    expect(rowStanding(html, old)).toBe("standby");
  });
});
