import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { concretePath, documentedOperations, startTestPortal, type PortalResponse, type TestPortal } from "../support/portal-harness.js";

// Deny by default, CSRF, security headers, caching and error hygiene of the portal,
// over real HTTP against the built portal and a real service.

let portal: TestPortal;
const ADMIN = { email: "sec-admin@example.com", password: "correct horse battery staple" };
let session: string;

const api = (method: string, path: string, options?: Parameters<TestPortal["request"]>[2]) => portal.request(method, path, options);

const operations = () => documentedOperations(portal);
const concrete = (path: string) => concretePath(path, "sec");

function expectSecurityHeaders(response: PortalResponse, kind: "page" | "api") {
  const csp = response.headers.get("content-security-policy");
  expect(csp, "Content-Security-Policy").toBeTruthy();
  expect(csp).not.toContain("unsafe-eval");
  expect(csp).toContain("frame-ancestors 'none'");
  if (kind === "api") expect(csp).toContain("default-src 'none'");
  expect(response.headers.get("x-frame-options")).toBe("DENY");
  expect(response.headers.get("x-content-type-options")).toBe("nosniff");
  expect(response.headers.get("referrer-policy")).toMatch(/^(strict-origin-when-cross-origin|no-referrer)$/);
}

beforeAll(async () => {
  portal = await startTestPortal();
  await portal.createAdmin(ADMIN.email, ADMIN.password);
  const signedIn = await portal.signIn(ADMIN.email, ADMIN.password);
  expect(signedIn.response.status, signedIn.response.text).toBe(303);
  session = signedIn.session!;
  expect(session).toBeTruthy();
  await api("POST", "/api/organizations", { body: { organization_id: "org-sec", name: "Security" } });
});

afterAll(async () => {
  await portal?.close();
});

describe("deny by default", () => {
  it("the OpenAPI document is served without credentials: OpenAPI 3.1, base URL /api, every documented path", async () => {
    const response = await api("GET", "/api/openapi.json", { token: null });
    expect(response.status).toBe(200);
    expect(response.json.openapi).toMatch(/^3\.1\./);
    expect(response.json.servers).toEqual([{ url: "/api" }]);
    const ops = (await operations()).map((op) => `${op.method} ${op.path}`).sort();
    expect(ops).toEqual(
      [
        "GET /provider-credentials/organization/{organization_id}",
        "POST /provider-credentials/create",
        "GET /provider-credentials/{credential_id}",
        "PUT /provider-credentials/{credential_id}",
        "PUT /provider-credentials/{credential_id}/activate",
        "PUT /provider-credentials/{credential_id}/deactivate",
        "DELETE /provider-credentials/{credential_id}",
        "POST /provider-credentials/{credential_id}/verify",
        "GET /provider-credentials/organization/{organization_id}/selection-strategies",
        "PUT /provider-credentials/organization/{organization_id}/selection-strategies/{provider}",
        "GET /provider-credentials/organization/{organization_id}/resolution",
        "POST /provider-credentials/{credential_id}/roll",
        "GET /provider-credentials/search",
        "POST /provider-credentials/batch",
        "GET /organizations",
        "GET /uncovered-organizations",
        "POST /organizations/{organization_id}/offboard",
        "POST /organizations",
        "GET /organizations/{organization_id}",
        "DELETE /organizations/{organization_id}",
        "GET /organizations/{organization_id}/teams",
        "POST /organizations/{organization_id}/teams",
        "DELETE /teams/{team_id}",
        "GET /audit-events",
        "GET /tokens",
        "POST /tokens",
        "DELETE /tokens/{name}",
        "POST /tokens/{name}/rotate",
        "GET /accounts",
        "POST /accounts",
        "PUT /accounts/{email}",
        "DELETE /accounts/{email}",
        "POST /accounts/{email}/sign-out",
        "POST /accounts/{email}/reset-two-factor",
      ].sort(),
    );
    for (const item of Object.values(response.json.paths as Record<string, Record<string, { security?: unknown[] }>>)) {
      for (const operation of Object.values(item)) expect(operation.security).toEqual([{ bearerAuth: [] }, { sessionCookie: [] }]);
    }
  });

  it("every operation in the OpenAPI document answers 401 without credentials, with a bad token, or a malformed header", async () => {
    const ops = await operations();
    expect(ops.length).toBe(34);
    // Valid input for each operation that takes a body, so that only authentication can fail.
    const bodies: Record<string, unknown> = {
      "POST /provider-credentials/create": { organization_id: "org-sec", provider: "openai", credential_name: "x", api_key: "sk-proj-abcdefghijkl" },
      "PUT /provider-credentials/{credential_id}": { credential_name: "y" },
      "PUT /provider-credentials/organization/{organization_id}/selection-strategies/{provider}": { strategy: "round_robin" },
      "POST /organizations": { organization_id: "org-walk", name: "Walk" },
      "POST /organizations/{organization_id}/teams": { team_id: "team-walk", name: "Walk" },
      "POST /tokens": { name: "walk", scope: "admin" },
      "POST /accounts": { email: "walk@example.com", role: "viewer" },
      "PUT /accounts/{email}": { role: "viewer" },
      "POST /provider-credentials/{credential_id}/roll": { api_key: "sk-proj-abcdefghijklmnop" },
      "POST /provider-credentials/batch": { action: "deactivate", credential_ids: ["00000000-0000-4000-8000-000000000000"] },
      "POST /organizations/{organization_id}/offboard": { confirm_organization_id: "sec-organization-id" },
    };
    for (const op of ops) {
      const variants: Array<Record<string, string>> = [{}, { authorization: "Bearer pct_not-a-real-token" }, { authorization: "Basic dXNlcjpwYXNz" }];
      for (const headers of variants) {
        const input = bodies[`${op.method} ${op.path}`];
        const body = input === undefined ? { headers } : { headers: { ...headers, "content-type": "application/json" }, rawBody: JSON.stringify(input) };
        const response = await api(op.method, concrete(op.path), { token: null, ...body });
        expect(response.status, `${op.method} ${op.path} with ${JSON.stringify(headers)}: ${response.text}`).toBe(401);
        expect(response.json.code).toBe("unauthorized");
      }
    }
  });

  it("unknown /api paths and the tRPC endpoint are 401 without credentials too", async () => {
    expect((await api("GET", "/api/no-such-thing", { token: null })).status).toBe(401);
    const trpcQuery = await api("GET", "/api/trpc/organizations.list", { token: null });
    expect(trpcQuery.status).toBe(401);
    expect(trpcQuery.json.error.data).toMatchObject({ code: "UNAUTHORIZED", apiCode: "unauthorized" });
    expect((await api("POST", "/api/trpc/organizations.create", { token: null, body: {} })).status).toBe(401);
  });

  it("a resolve-scope token gets 403 from the REST API", async () => {
    const { token } = await portal.service.service.parts.tokens.create("gateway", "resolve", "test");
    const calls: Array<[string, string, unknown?]> = [
      ["GET", "/api/organizations"],
      ["GET", "/api/provider-credentials/organization/org-sec"],
      [
        "POST",
        "/api/provider-credentials/create",
        { organization_id: "org-sec", provider: "openai", credential_name: "x", api_key: "sk-proj-abcdefghijklmnop" },
      ],
      ["PUT", "/api/provider-credentials/00000000-0000-4000-8000-000000000000/activate"],
      ["POST", "/api/provider-credentials/00000000-0000-4000-8000-000000000000/verify"],
      ["GET", "/api/provider-credentials/organization/org-sec/selection-strategies"],
      ["PUT", "/api/provider-credentials/organization/org-sec/selection-strategies/openai", { strategy: "weighted" }],
      ["DELETE", "/api/organizations/org-sec"],
      ["GET", "/api/tokens"],
      ["GET", "/api/audit-events"],
    ];
    for (const [method, path, body] of calls) {
      const response = await api(method, path, { token, body });
      expect(response.status, `${method} ${path}: ${response.text}`).toBe(403);
      expect(response.json.code).toBe("forbidden");
    }
    // Nothing was created.
    expect((await api("GET", "/api/provider-credentials/organization/org-sec")).json.credentials).toEqual([]);
  });
});

describe("CSRF", () => {
  it("refuses a cookie-authenticated mutation without this origin: no Origin, another origin", async () => {
    for (const origin of [undefined, "https://evil.example", "http://127.0.0.1:1"]) {
      const response = await api("POST", "/api/organizations", {
        token: null,
        session,
        body: { organization_id: "org-csrf", name: "CSRF" },
        headers: origin ? { origin } : {},
      });
      expect(response.status, response.text).toBe(403);
      expect(response.json).toEqual({ code: "forbidden", message: "cross-origin request refused" });
    }
    for (const method of ["PUT", "DELETE"]) {
      const response = await api(method, "/api/provider-credentials/00000000-0000-4000-8000-000000000000", {
        token: null,
        session,
        headers: { origin: "https://evil.example" },
      });
      expect(response.status).toBe(403);
    }
    const trpc = await api("POST", "/api/trpc/organizations.create", {
      token: null,
      session,
      body: { organization_id: "org-csrf", name: "CSRF" },
      headers: { origin: "https://evil.example" },
    });
    expect(trpc.status).toBe(403);
    // In tRPC's own error shape, so that the pages' tRPC client can read it.
    expect(trpc.json.error.message).toBe("cross-origin request refused");
    expect(trpc.json.error.data).toMatchObject({ code: "FORBIDDEN", apiCode: "forbidden", httpStatus: 403 });
    expect((await api("GET", "/api/organizations/org-csrf")).status).toBe(404);
  });

  it("accepts the same mutation from the portal's own origin, and reads without an Origin", async () => {
    const created = await api("POST", "/api/organizations", {
      token: null,
      session,
      body: { organization_id: "org-csrf", name: "CSRF" },
      headers: { origin: portal.url },
    });
    expect(created.status, created.text).toBe(201);
    expect((await api("GET", "/api/organizations/org-csrf", { token: null, session })).status).toBe(200);
  });

  it("bearer-token calls need no Origin", async () => {
    const response = await api("POST", "/api/organizations", { body: { organization_id: "org-bearer", name: "Bearer" } });
    expect(response.status).toBe(201);
  });

  it("a cross-origin form post to a page (sign-in) is refused", async () => {
    const response = await api("POST", "/login", {
      token: null,
      rawBody: new URLSearchParams({ email: ADMIN.email, password: ADMIN.password }).toString(),
      headers: { "content-type": "application/x-www-form-urlencoded", origin: "https://evil.example", accept: "text/html" },
    });
    expect(response.status).toBe(403);
    expect(response.headers.get("set-cookie")).toBeNull();
  });
});

describe("headers", () => {
  it("pages carry a CSP without unsafe-eval, X-Frame-Options, Referrer-Policy and nosniff", async () => {
    const login = await api("GET", "/login", { token: null });
    expect(login.status).toBe(200);
    expectSecurityHeaders(login, "page");
    expect(login.headers.get("content-security-policy")).toMatch(/script-src 'self'( 'nonce-[^']+'| 'sha256-[^']+')*/);
    const home = await api("GET", "/", { token: null, session });
    expect(home.status).toBe(200);
    expectSecurityHeaders(home, "page");
    expect(home.headers.get("cache-control")).toBe("no-store");
    const redirect = await api("GET", "/", { token: null });
    expect(redirect.status).toBe(303);
    expectSecurityHeaders(redirect, "api");
  });

  it("static assets carry them too", async () => {
    const login = await api("GET", "/login", { token: null });
    const asset = /(?:href|src)="([^"]*_app\/immutable\/[^"]+\.(?:css|js))"/.exec(login.text)?.[1];
    expect(asset, "the login page links a built asset").toBeTruthy();
    const response = await api("GET", new URL(asset!, `${portal.url}/login`).pathname, { token: null });
    expect(response.status).toBe(200);
    expectSecurityHeaders(response, "api");
  });

  it("every /api response (success, error, document) is no-store with a strict CSP", async () => {
    const responses = [
      await api("GET", "/api/organizations"),
      await api("GET", "/api/organizations/org-missing"),
      await api("GET", "/api/organizations", { token: null }),
      await api("GET", "/api/openapi.json", { token: null }),
      await api("POST", "/api/organizations", { rawBody: "{oops", headers: { "content-type": "application/json" } }),
      await api("GET", "/api/trpc/organizations.list?input=%7B%7D"),
    ];
    for (const response of responses) {
      expect(response.headers.get("cache-control"), response.text).toBe("no-store");
      expectSecurityHeaders(response, "api");
    }
  });

  it("/api/docs renders the document as a self-contained page: no script, nothing from elsewhere", async () => {
    const response = await api("GET", "/api/docs", { token: null });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/text\/html/);
    expectSecurityHeaders(response, "page");
    expect(response.headers.get("content-security-policy")).not.toMatch(/https?:/);
    expect(response.text).toContain("/api/provider-credentials/organization/{organization_id}");
    expect(response.text).toContain("expected_version");
    expect(response.text).not.toMatch(/<script[^>]+src=/);
    expect(response.text).not.toMatch(/(src|href)="(https?:)?\/\//);
  });
});

describe("errors", () => {
  it("never a stack trace, a driver message or an internal address, even for hostile input", async () => {
    const hostile = [
      await api("POST", "/api/provider-credentials/create", { rawBody: "\u0000\u0001{", headers: { "content-type": "application/json" } }),
      await api("POST", "/api/provider-credentials/create", {
        body: { organization_id: "x".repeat(300), provider: "openai", credential_name: "x", api_key: "y" },
      }),
      await api("GET", "/api/provider-credentials/organization/org-sec?limit=99999999999999999999999"),
      await api("GET", "/api/provider-credentials/%E0%A4%A"),
      await api("PUT", "/api/provider-credentials/00000000-0000-4000-8000-000000000000", { body: { expected_version: 1e300 } }),
      await api("GET", "/api/trpc/credentials.get?input=not-json"),
      await api("POST", "/api/trpc/credentials.create", { rawBody: "{", headers: { "content-type": "application/json" } }),
    ];
    for (const response of hostile) {
      expect(response.status, response.text).toBeGreaterThanOrEqual(400);
      expect(response.status, response.text).toBeLessThan(500);
      expect(response.text).not.toMatch(/stack|node_modules|\.ts:\d+|\.js:\d+|ECONN|127\.0\.0\.1|postgres/i);
    }
  });

  it("tRPC errors carry code, message and issues, never a stack", async () => {
    const response = await api("POST", "/api/trpc/credentials.create", {
      body: { organization_id: "org-sec", provider: "openai", credential_name: "x", apiKey: "sk-abcdefgh" },
    });
    expect(response.status).toBe(400);
    const error = response.json.error;
    expect(error.message).toMatch(/apiKey: unknown field|api_key: is required/);
    expect(error.data).toMatchObject({ code: "BAD_REQUEST", apiCode: "bad_request", httpStatus: 400 });
    expect(error.data.issues).toEqual(expect.arrayContaining([{ path: "apiKey", message: "unknown field" }]));
    expect(JSON.stringify(error)).not.toMatch(/stack/);
  });
});

describe("service outage", () => {
  it("503 with a plain message when the service cannot be reached", async () => {
    const down = await startTestPortal({ portalEnv: { CREDENTIALS_SERVICE_URL: "http://127.0.0.1:9" } });
    try {
      for (const op of await operations()) {
        if (op.method !== "GET" && op.method !== "DELETE") continue;
        const response = await down.request(op.method, concrete(op.path));
        expect(response.status, `${op.method} ${op.path}: ${response.text}`).toBe(503);
        expect(response.json).toEqual({ code: "service_unavailable", message: "the credentials service is unavailable; try again shortly" });
      }
      const create = await down.request("POST", "/api/organizations", { body: { organization_id: "org-down", name: "Down" } });
      expect(create.status).toBe(503);
      const page = await down.request("GET", "/", { token: null, session: "A".repeat(43) });
      expect(page.status).toBe(503);
      const signIn = await down.signIn("x@example.com", "whatever-password");
      expect(signIn.response.status).toBe(503);
      expect(signIn.response.text).toContain("Sign-in is unavailable right now");
    } finally {
      await down.close();
    }
  });
});
