import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { concretePath, documentedOperations, startTestPortal, type DocumentedOperation, type TestPortal } from "../support/portal-harness.js";

// Issue #19, items 18 and 19: a REST call is authenticated before its input is judged (a wrong
// token never learns how its request would have been validated), /api answers every error in
// its own JSON shape (a bearer-token call with a form content type gets 415, not SvelteKit's
// plain-text CSRF refusal), and cookie-authenticated cross-site changes stay refused.

let portal: TestPortal;
const ADMIN = { email: "guards-admin@example.com", password: "correct horse battery staple" };
let session: string;
let resolveToken: string;
const WRONG_TOKEN = "pc_wrong_token_0123456789abcdef0123456789";
/** A field no operation has: any request carrying it is invalid input. */
const MARKER = "not_a_field_zq";

const api = (method: string, path: string, options?: Parameters<TestPortal["request"]>[2]) => portal.request(method, path, options);

const operations = () => documentedOperations(portal);
const concrete = (path: string) => concretePath(path, "guards");

const takesBody = (method: string) => method === "POST" || method === "PUT" || method === "PATCH";

/** The operation with invalid input: an unknown field in its body, or in its query when it takes no body. */
function invalidRequest(op: DocumentedOperation, token: string | null) {
  const url = concrete(op.path);
  return takesBody(op.method) ? api(op.method, url, { token, body: { [MARKER]: 1, organization_id: 42 } }) : api(op.method, `${url}?${MARKER}=1`, { token });
}

beforeAll(async () => {
  portal = await startTestPortal();
  await portal.createAdmin(ADMIN.email, ADMIN.password);
  session = (await portal.signIn(ADMIN.email, ADMIN.password)).session!;
  const created = await api("POST", "/api/tokens", { body: { name: "guards-resolver", scope: "resolve" } });
  expect(created.status, created.text).toBe(201);
  resolveToken = created.json.token;
});

afterAll(async () => {
  await portal?.close();
});

describe("authentication before validation (item 18)", () => {
  it("every REST operation answers a wrong token with invalid input 401, without the validation's details", async () => {
    const ops = await operations();
    expect(ops.length).toBeGreaterThan(10);
    for (const op of ops) {
      const name = `${op.method} ${op.path}`;
      // The input is invalid: an admin token gets the validation's details.
      const judged = await invalidRequest(op, portal.adminToken);
      expect(judged.status, `${name} (admin token): ${judged.text}`).toBe(400);
      expect(judged.text, name).toContain(MARKER);

      const refused = await invalidRequest(op, WRONG_TOKEN);
      expect(refused.status, `${name}: ${refused.text}`).toBe(401);
      expect(refused.headers.get("content-type"), name).toMatch(/^application\/json/);
      expect(refused.json.code, name).toBe("unauthorized");
      expect(refused.json.issues, name).toBeUndefined();
      expect(refused.text, name).not.toContain(MARKER);
      expect(refused.text, name).not.toMatch(/unknown field|organization_id|is required|expected/i);

      // A token that may not call it at all is refused as such, before its input is judged.
      const forbidden = await invalidRequest(op, resolveToken);
      expect(forbidden.status, `${name} (resolve token): ${forbidden.text}`).toBe(403);
      expect(forbidden.json.issues, name).toBeUndefined();
      expect(forbidden.text, name).not.toContain(MARKER);
    }
  });

  it("what the portal judges before a procedure runs waits for the token too: body, content type, route", async () => {
    const cases: Array<[string, string, Parameters<TestPortal["request"]>[2]]> = [
      ["POST", "/api/organizations", { rawBody: "{not json", headers: { "content-type": "application/json" } }],
      ["POST", "/api/organizations", { rawBody: "[1, 2]", headers: { "content-type": "application/json" } }],
      ["POST", "/api/organizations", { rawBody: "organization_id=x", headers: { "content-type": "application/x-www-form-urlencoded" } }],
      ["GET", "/api/no-such-endpoint", {}],
      ["PATCH", "/api/organizations", { body: {} }],
    ];
    for (const [method, path, options] of cases) {
      const honest = await api(method, path, options);
      expect([400, 404, 405, 415], `${method} ${path} (admin token): ${honest.text}`).toContain(honest.status);
      const refused = await api(method, path, { ...options, token: WRONG_TOKEN });
      expect(refused.status, `${method} ${path}: ${refused.text}`).toBe(401);
      expect(refused.json.code).toBe("unauthorized");
    }
  });

  it("over tRPC too: a wrong token with invalid input is 401 in tRPC's shape, without issues", async () => {
    const refused = await api("POST", "/api/trpc/organizations.create", { token: WRONG_TOKEN, body: { [MARKER]: 1 } });
    expect(refused.status, refused.text).toBe(401);
    expect(refused.json.error.data).toMatchObject({ apiCode: "unauthorized", issues: null });
    expect(refused.text).not.toContain(MARKER);
  });

  it("honest callers are unchanged: a good token with good input succeeds, with bad input learns what is wrong", async () => {
    const created = await api("POST", "/api/organizations", { body: { organization_id: "guards-org", name: "Guards" } });
    expect(created.status, created.text).toBe(201);
    const bad = await api("POST", "/api/organizations", { body: { organization_id: "guards org!", name: "x" } });
    expect(bad.status).toBe(400);
    expect(bad.json.issues).toEqual(expect.arrayContaining([expect.objectContaining({ path: "organization_id" })]));
    const missing = await api("GET", "/api/organizations/guards-missing");
    expect(missing.status).toBe(404);
    // A signed-in administrator's page calls are authenticated by the session: bad input is judged at once.
    const viaSession = await api("POST", "/api/organizations", { token: null, session, body: { [MARKER]: 1 }, headers: { origin: portal.url } });
    expect(viaSession.status).toBe(400);
  });
});

const FORM_TYPES: Array<[string, string]> = [
  ["text/plain", JSON.stringify({ organization_id: "guards-form", name: "Form" })],
  ["application/x-www-form-urlencoded", "organization_id=guards-form&name=Form"],
  ["multipart/form-data; boundary=b", '--b\r\ncontent-disposition: form-data; name="organization_id"\r\n\r\nguards-form\r\n--b--\r\n'],
];

describe("/api errors are JSON, whatever the content type (item 19)", () => {
  it("a bearer-token call with a form content type gets 415 naming the type, from no origin or another one", async () => {
    for (const [type, body] of FORM_TYPES) {
      for (const origin of [undefined, "https://evil.example"]) {
        const headers: Record<string, string> = { "content-type": type, ...(origin ? { origin } : {}) };
        for (const [method, path] of [
          ["POST", "/api/organizations"],
          ["POST", "/api/provider-credentials/create"],
          ["PUT", "/api/provider-credentials/00000000-0000-4000-8000-000000000000"],
        ]) {
          const response = await api(method, path, { rawBody: body, headers });
          const name = `${method} ${path} as ${type} from ${origin ?? "no origin"}`;
          expect(response.status, `${name}: ${response.text}`).toBe(415);
          expect(response.headers.get("content-type"), name).toMatch(/^application\/json/);
          expect(response.json.code, name).toBe("unsupported_media_type");
          expect(response.json.message, name).toContain(`"${type.split(";")[0]}"`);
          expect(response.json.message, name).toContain("application/json");
          expect(response.text, name).not.toMatch(/form submissions are forbidden/i);
        }
      }
    }
    expect((await api("GET", "/api/organizations/guards-form")).status).toBe(404);
  });

  it("the same call as JSON from another origin works: a bearer token is not cookie-authenticated", async () => {
    const response = await api("POST", "/api/organizations", {
      body: { organization_id: "guards-bearer", name: "Bearer" },
      headers: { origin: "https://evil.example" },
    });
    expect(response.status, response.text).toBe(201);
  });

  it("other /api answers to a form post are JSON too: no credentials, an unknown route", async () => {
    const [type, body] = FORM_TYPES[1];
    const anonymous = await api("POST", "/api/organizations", { token: null, rawBody: body, headers: { "content-type": type } });
    expect(anonymous.status).toBe(401);
    expect(anonymous.json.code).toBe("unauthorized");
    const unknown = await api("POST", "/api/no-such-endpoint", { rawBody: body, headers: { "content-type": type } });
    // The body is read before the route is looked up: its content type is what is refused first.
    expect(unknown.status, unknown.text).toBe(415);
    expect(unknown.json).toEqual({ code: "unsupported_media_type", message: expect.stringContaining('"application/x-www-form-urlencoded"') });
  });
});

describe("cookie-authenticated cross-site changes stay refused (item 19)", () => {
  it("a cross-origin form post with the session cookie to /api is refused, and nothing is created", async () => {
    for (const [type, body] of FORM_TYPES) {
      for (const origin of [undefined, "https://evil.example", "null"]) {
        const response = await api("POST", "/api/organizations", {
          token: null,
          session,
          rawBody: body,
          headers: { "content-type": type, ...(origin ? { origin } : {}) },
        });
        expect(response.status, `${type} from ${origin}: ${response.text}`).toBe(403);
        expect(response.json).toEqual({ code: "forbidden", message: "cross-origin request refused" });
      }
    }
    expect((await api("GET", "/api/organizations/guards-form")).status).toBe(404);
  });

  it("a cross-origin form post with the session cookie to a page action is refused, and nothing is created", async () => {
    const form = new URLSearchParams({ organization_id: "guards-page", name: "Page" }).toString();
    for (const origin of [undefined, "https://evil.example", "null"]) {
      for (const [type, body] of [
        ["application/x-www-form-urlencoded", form],
        ["text/plain", form],
        ["multipart/form-data; boundary=b", '--b\r\ncontent-disposition: form-data; name="organization_id"\r\n\r\nguards-page\r\n--b--\r\n'],
      ]) {
        const response = await api("POST", "/organizations?/create", {
          token: null,
          session,
          rawBody: body,
          headers: { "content-type": type, accept: "text/html", ...(origin ? { origin } : {}) },
        });
        expect(response.status, `${type} from ${origin}: ${response.text.slice(0, 200)}`).toBe(403);
        expect(response.text).toBe("Cross-site POST form submissions are forbidden");
      }
    }
    // Also as use:enhance asks for it (JSON), and for sign-out.
    const enhanced = await api("POST", "/organizations?/create", {
      token: null,
      session,
      rawBody: form,
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        accept: "application/json",
        origin: "https://evil.example",
        "x-sveltekit-action": "true",
      },
    });
    expect(enhanced.status).toBe(403);
    expect(enhanced.json).toEqual({ message: "Cross-site POST form submissions are forbidden" });
    const logout = await api("POST", "/logout", {
      token: null,
      session,
      rawBody: "",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: "https://evil.example" },
    });
    expect(logout.status).toBe(403);
    expect((await api("GET", "/api/organizations/guards-page")).status).toBe(404);
    // The session still works: the cross-site sign-out did nothing.
    expect((await api("GET", "/api/organizations", { token: null, session })).status).toBe(200);
  });

  it("the same form post from the portal's own page goes through", async () => {
    const response = await api("POST", "/organizations?/create", {
      token: null,
      session,
      rawBody: new URLSearchParams({ organization_id: "guards-page", name: "Page" }).toString(),
      headers: { "content-type": "application/x-www-form-urlencoded", accept: "text/html", origin: portal.url },
    });
    expect(response.status, response.text.slice(0, 300)).toBe(303);
    expect((await api("GET", "/api/organizations/guards-page")).status).toBe(200);
  });
});
