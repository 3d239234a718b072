import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AUDIT_ACTIONS } from "@provider-credentials/wire/audit-actions";
import { ACTOR_HEADER } from "@provider-credentials/wire/auth";
import { FAKE_KEYS } from "../support/harness.js";
import { startTestPortal, type TestPortal } from "../support/portal-harness.js";

// The audit log as people use it: every action the service writes is in the filter, filters by
// who and when, organisation names beside ids, and exports of any size as CSV and JSON.

let portal: TestPortal;
let session: string;
const OWNER = { email: "auditor@example.com", password: "correct horse battery staple audit" };
const keys: string[] = [];

const api = (method: string, path: string, body?: unknown) => portal.request(method, path, body === undefined ? {} : { body });
const page = (path: string) => portal.request("GET", path, { session, token: null });

/** Inserts audit rows straight into the database (bulk history for the export), oldest first. */
async function seedEvents(count: number, actor: string, organizationId: string, at: Date) {
  await portal.service.db.query(
    `insert into audit_events (occurred_at, actor, action, organization_id, target, details)
     select $1::timestamptz + make_interval(secs => g), $2, 'team.create', $3, 'seeded-' || g, '{}'::jsonb from generate_series(1, $4) g`,
    [at.toISOString(), actor, organizationId, count],
  );
}

/** RFC 4180 rows of a CSV text. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let quoted = false;
  const endField = () => {
    row.push(field);
    field = "";
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted && c === '"' && text[i + 1] === '"') {
      field += '"';
      i++;
    } else if (c === '"') quoted = !quoted;
    else if (quoted) field += c;
    else if (c === ",") endField();
    else if (c === "\r" && text[i + 1] === "\n") {
      endField();
      rows.push(row);
      row = [];
      i++;
    } else field += c;
  }
  if (field !== "" || row.length > 0) {
    endField();
    rows.push(row);
  }
  return rows;
}

beforeAll(async () => {
  portal = await startTestPortal();
  await portal.createAdmin(OWNER.email, OWNER.password);
  ({ session } = (await portal.signIn(OWNER.email, OWNER.password)) as { session: string });
  expect(session).toBeTruthy();
  expect((await api("POST", "/api/organizations", { organization_id: "acme", name: "Acme Corporation" })).status).toBe(201);
  expect((await api("POST", "/api/organizations", { organization_id: "globex", name: "Globex" })).status).toBe(201);
  const key = FAKE_KEYS.openai();
  keys.push(key);
  const created = await api("POST", "/api/provider-credentials/create", { organization_id: "acme", provider: "openai", credential_name: "main", api_key: key });
  expect(created.status, created.text).toBe(201);
});

afterAll(async () => {
  for (const body of portal?.bodies ?? []) for (const key of keys) expect(body).not.toContain(key);
  await portal?.close();
});

describe("the action filter", () => {
  it("offers exactly the actions the service writes, by name", async () => {
    const response = await page("/audit");
    expect(response.status).toBe(200);
    const select = /<select[^>]*id="action"[^>]*>([\s\S]*?)<\/select>/.exec(response.text)?.[1] ?? "";
    const offered = [...select.matchAll(/<option value="([^"]*)"/g)].map((m) => m[1]).filter((v) => v !== "");
    expect(offered).toEqual(Object.keys(AUDIT_ACTIONS));
    expect(select).toContain("Credential added (credential.create)");
  });

  it("every action stored so far is one of them", async () => {
    const rows = await portal.service.db.query<{ action: string }>("select distinct action from audit_events");
    expect(rows.length).toBeGreaterThan(0);
    for (const { action } of rows) expect(Object.keys(AUDIT_ACTIONS)).toContain(action);
  });

  it("refuses an action that is none, naming the field", async () => {
    const rest = await api("GET", "/api/audit-events?action=credential.explode");
    expect(rest.status).toBe(400);
    expect(rest.text).toContain("action");
    const shown = await page("/audit?action=credential.explode");
    expect(shown.status).toBe(200);
    expect(shown.text).toContain("Choose an action from the list.");
  });
});

describe("filters", () => {
  beforeAll(async () => {
    await seedEvents(3, "old.hand@example.com (editor) via token:portal", "globex", new Date("2026-01-10T12:00:00Z"));
  });

  it("by who: the start of the actor, ignoring case; % and _ are plain characters", async () => {
    const byEmail = await api("GET", "/api/audit-events?actor=OLD.HAND@");
    expect(byEmail.status, byEmail.text).toBe(200);
    expect(byEmail.json.events).toHaveLength(3);
    expect(byEmail.json.events.every((e: { actor: string }) => e.actor.startsWith("old.hand@example.com"))).toBe(true);
    expect((await api("GET", "/api/audit-events?actor=%25")).json.events).toHaveLength(0);
    expect((await api("GET", "/api/audit-events?actor=old_hand")).json.events).toHaveLength(0);
  });

  it("by date: from the first day's start to the last day's end (UTC)", async () => {
    const within = await page("/audit?from=2026-01-10&to=2026-01-10");
    expect(new Set(within.text.match(/seeded-\d+/g))).toEqual(new Set(["seeded-1", "seeded-2", "seeded-3"]));
    expect(await page("/audit?from=2026-01-11&to=2026-01-20")).toMatchObject({ status: 200 });
    expect((await page("/audit?from=2026-01-11&to=2026-01-20")).text).not.toContain("seeded-");
    const rest = await api(
      "GET",
      `/api/audit-events?occurred_after=${encodeURIComponent("2026-01-10T12:00:02Z")}&occurred_before=${encodeURIComponent("2026-01-10T12:00:03Z")}`,
    );
    expect(rest.json.events.map((e: { target: string }) => e.target)).toEqual(["seeded-2"]);
  });

  it("refuses a backwards range or a day that is none, at its field", async () => {
    expect((await page("/audit?from=2026-02-10&to=2026-02-01")).text).toContain("The last day must not be before the first.");
    expect((await page("/audit?from=2026-02-30")).text).toContain("Enter the first day as YYYY-MM-DD.");
    const rest = await api(
      "GET",
      `/api/audit-events?occurred_after=${encodeURIComponent("2026-02-10T00:00:00Z")}&occurred_before=${encodeURIComponent("2026-02-01T00:00:00Z")}`,
    );
    expect(rest.status).toBe(400);
    expect(rest.text).toContain("occurred_before");
  });

  it("shows organisation names beside their ids, and actions in words", async () => {
    const shown = await page("/audit?organization=acme");
    expect(shown.text).toContain("Acme Corporation");
    expect(shown.text).toMatch(/Credential added/);
  });
});

describe("export", () => {
  beforeAll(async () => {
    await seedEvents(450, "bulk@example.com (owner) via token:portal", "globex", new Date("2026-03-01T00:00:00Z"));
    // An actor a spreadsheet would run as a formula: an automation's label through an admin token.
    const clients = portal.service.clients(portal.adminToken, { [ACTOR_HEADER]: "=HYPERLINK(1)" });
    await clients.organizations.createTeam({ organizationId: "globex", teamId: "formula-team", name: "Formula" });
  });

  it("CSV: every filtered event across pages, one header row, formulas made inert", async () => {
    const response = await page("/audit/export?format=csv&organization=globex");
    expect(response.status, response.text.slice(0, 200)).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/csv/);
    expect(response.headers.get("content-disposition")).toMatch(/^attachment; filename="audit-events-\d{4}-\d{2}-\d{2}\.csv"$/);
    const rows = parseCsv(response.text);
    expect(rows[0]).toEqual(["event_id", "occurred_at", "actor", "action", "organization_id", "credential_id", "target", "source", "details"]);
    const events = rows.slice(1);
    const expected = await portal.service.db.query<{ n: number }>("select count(*)::int as n from audit_events where organization_id = 'globex'");
    expect(events).toHaveLength(expected[0].n);
    expect(events.length).toBeGreaterThan(450);
    expect(new Set(events.map((r) => r[0])).size).toBe(events.length);
    const formula = events.find((r) => r[6] === "formula-team");
    expect(formula?.[2]).toMatch(/^'=HYPERLINK\(1\) via token:/);
  });

  it("JSON: the same events as an array, filtered by actor and action", async () => {
    const response = await page("/audit/export?format=json&actor=bulk@&action=team.create");
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^application\/json/);
    const events = JSON.parse(response.text) as Array<{ actor: string; action: string }>;
    expect(events).toHaveLength(450);
    expect(events.every((e) => e.actor.startsWith("bulk@") && e.action === "team.create")).toBe(true);
  });

  it("refuses a format that is none, and asks a signed-out visitor to sign in", async () => {
    expect((await page("/audit/export?format=xml")).status).toBe(400);
    const signedOut = await portal.request("GET", "/audit/export?format=csv", { token: null });
    expect(signedOut.status).toBe(303);
    expect(signedOut.headers.get("location")).toMatch(/^\/login/);
  });
});
