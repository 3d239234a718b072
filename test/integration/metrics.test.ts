// Prometheus metrics on METRICS_PORT: authenticated, counting what the
// service does, and never carrying a key or an id.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { FailureKind, KeySource, Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { TokenStore } from "../../service/src/auth/token-store.js";
import { startFakeProvider, type FakeProvider } from "../support/fake-provider.js";
import { FAKE_KEYS, rpcError, startTestService, type TestService } from "../support/harness.js";

let t: TestService;
let fake: FakeProvider;
let resolveToken: string;
let metricsToken: string;
let url: string;

/** A scrape with the given bearer token (null: none). */
async function scrape(token: string | null = metricsToken, init: RequestInit = {}): Promise<Response> {
  return fetch(url, { ...init, headers: token === null ? {} : { authorization: `Bearer ${token}` } });
}

/** The value of one series in the exposition text (0 when absent). */
function value(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = Object.fromEntries([...(match[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v) && Object.keys(have).length === Object.keys(labels).length) return Number(match[3]);
  }
  return 0;
}

beforeAll(async () => {
  fake = await startFakeProvider();
  t = await startTestService({ metricsPort: 0, env: { FIREWORKS_API_KEY: "fw_environment_fallback_key_0000" } });
  url = `http://127.0.0.1:${t.service.metricsPort}/metrics`;
  resolveToken = (await new TokenStore(t.service.orm).create("gateway", "resolve", "test")).token;
  metricsToken = (await new TokenStore(t.service.orm).create("scraper", "metrics", "test")).token;
});

afterAll(async () => {
  await t?.close();
  await fake?.close();
});

describe("GET /metrics", () => {
  it("refuses callers without a valid token, other paths and other methods", async () => {
    const none = await scrape(null);
    expect(none.status).toBe(401);
    expect(none.headers.get("www-authenticate")).toMatch(/^Bearer /);
    expect(await none.text()).not.toContain("provider_credentials_");
    expect((await scrape("pct_not-a-token")).status).toBe(401);
    expect((await fetch(url.replace("/metrics", "/"), { headers: { authorization: `Bearer ${metricsToken}` } })).status).toBe(404);
    const post = await scrape(metricsToken, { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
  });

  it("needs a metrics or admin token: a resolve token is refused (403), and a metrics token may call no RPC", async () => {
    const asResolve = await scrape(resolveToken);
    expect(asResolve.status).toBe(403);
    const refusal = await asResolve.text();
    expect(refusal).toContain('scope "resolve"');
    expect(refusal).not.toContain("provider_credentials_");
    for (const token of [metricsToken, t.adminToken]) {
      const ok = await scrape(token);
      expect(ok.status).toBe(200);
      expect(await ok.text()).toContain("provider_credentials_resolutions_total");
    }
    const { organizations, credentials } = t.clients(metricsToken);
    expect(await rpcError(organizations.listOrganizations({}))).toMatchObject({ code: Code.PermissionDenied });
    expect(await rpcError(credentials.resolveKey({ scope: { case: "organizationId", value: "metrics-org" }, provider: Provider.OPENAI }))).toMatchObject({
      code: Code.PermissionDenied,
    });
  });

  it("counts resolutions by provider, source and result, cache hits and misses, and times them", async () => {
    const { organizations, credentials } = t.clients();
    const notified = async () =>
      value(await (await scrape()).text(), "provider_credentials_cache_invalidations_total", { kind: "organization", origin: "notify" });
    const notifiedBefore = await notified();
    await organizations.createOrganization({ organizationId: "metrics-org", name: "M" });
    const apiKey = FAKE_KEYS.openai();
    const { credential } = await credentials.createCredential({ organizationId: "metrics-org", provider: Provider.OPENAI, credentialName: "m", apiKey });
    // The new credential is applied at once and heard again through NOTIFY: wait for the echo, or a
    // late one (a loaded machine) would empty the cache between the resolutions counted below.
    await expect.poll(notified, { timeout: 10_000 }).toBeGreaterThanOrEqual(notifiedBefore + 1);
    const before = await (await scrape()).text();
    for (let i = 0; i < 5; i++) await credentials.resolveKey({ scope: { case: "organizationId", value: "metrics-org" }, provider: Provider.OPENAI });
    const fallback = await credentials.resolveKey({ scope: { case: "organizationId", value: "metrics-org" }, provider: Provider.FIREWORKS });
    expect(fallback.source).toBe(KeySource.ENVIRONMENT);
    await rpcError(credentials.resolveKey({ scope: { case: "organizationId", value: "metrics-org" }, provider: Provider.GEMINI }));
    await rpcError(credentials.resolveKey({ scope: { case: "organizationId", value: "nobody" }, provider: Provider.GEMINI }));
    // A gateway limited to another organisation is refused: its own mistake, counted apart from the service's errors.
    await organizations.createOrganization({ organizationId: "metrics-other", name: "O" });
    const limited = (await new TokenStore(t.service.orm).create("limited-gateway", "resolve", "test", { organizationIds: ["metrics-other"] })).token;
    expect(
      await rpcError(t.clients(limited).credentials.resolveKey({ scope: { case: "organizationId", value: "metrics-org" }, provider: Provider.OPENAI })),
    ).toMatchObject({ code: Code.PermissionDenied });

    const response = await scrape();
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    const delta = (name: string, labels: Record<string, string> = {}) => value(text, name, labels) - value(before, name, labels);
    expect(delta("provider_credentials_resolutions_total", { provider: "openai", source: "organization", result: "ok" })).toBe(5);
    expect(delta("provider_credentials_resolutions_total", { provider: "fireworks", source: "environment", result: "ok" })).toBe(1);
    expect(delta("provider_credentials_resolutions_total", { provider: "gemini", source: "none", result: "failed_precondition" })).toBe(1);
    expect(delta("provider_credentials_resolutions_total", { provider: "gemini", source: "none", result: "not_found" })).toBe(1);
    expect(delta("provider_credentials_resolutions_total", { provider: "openai", source: "none", result: "permission_denied" })).toBe(1);
    expect(delta("provider_credentials_resolutions_total", { provider: "openai", source: "none", result: "error" })).toBe(0);
    expect(delta("provider_credentials_cache_lookups_total", { result: "miss" })).toBe(4); // the first openai call, fireworks, gemini, the unknown organisation
    expect(delta("provider_credentials_cache_lookups_total", { result: "hit" })).toBe(4); // four more openai calls (the refused one is refused before the cache)
    expect(delta("provider_credentials_resolve_duration_seconds_count", { provider: "openai" })).toBe(6); // refusals are timed too
    expect(value(text, "provider_credentials_cache_entries")).toBeGreaterThanOrEqual(3);
    expect(value(text, "provider_credentials_cache_bytes")).toBeGreaterThan(1024 * 1024); // at least one 1 MiB record buffer
    // The replica hears invalidations (deploy/prometheus/alerts.yaml alerts when this is 0).
    expect(value(text, "provider_credentials_invalidation_listener_up")).toBe(1);
    expect(value(text, "provider_credentials_process_resident_memory_bytes")).toBeGreaterThan(0);
    // Labels name providers and outcomes only: never a key, an id or an organisation.
    for (const secret of [apiKey, credential!.credentialId, "metrics-org", t.adminToken, resolveToken, metricsToken]) expect(text).not.toContain(secret);
  });

  it("counts invalidations, key checks, reported failures and health transitions", async () => {
    const { organizations, credentials } = t.clients();
    await organizations.createOrganization({ organizationId: "metrics-org-2", name: "M2" });
    const apiKey = FAKE_KEYS.anthropic();
    fake.setKey(apiKey, "valid");
    const { credential } = await credentials.createCredential({
      organizationId: "metrics-org-2",
      provider: Provider.ANTHROPIC,
      credentialName: "m",
      apiKey,
      apiBase: fake.baseUrl("anthropic"),
    });
    const id = credential!.credentialId;
    const before = await (await scrape()).text();
    await credentials.deactivateCredential({ credentialId: id });
    await credentials.activateCredential({ credentialId: id });
    await credentials.verifyCredential({ credentialId: id });
    for (let i = 0; i < 3; i++) await credentials.reportKeyFailure({ credentialId: id, kind: FailureKind.AUTHENTICATION });
    await credentials.reportKeyFailure({ credentialId: id, kind: FailureKind.RATE_LIMIT });
    await credentials.reportKeySuccess({ credentialIds: [id] });
    const text = await (await scrape()).text();
    const delta = (name: string, labels: Record<string, string> = {}) => value(text, name, labels) - value(before, name, labels);
    // Each change is applied locally at once and heard again through NOTIFY.
    expect(delta("provider_credentials_cache_invalidations_total", { kind: "organization", origin: "local" })).toBeGreaterThanOrEqual(2);
    expect(delta("provider_credentials_cache_invalidations_total", { kind: "organization", origin: "notify" })).toBeGreaterThanOrEqual(2);
    expect(delta("provider_credentials_key_checks_total", { provider: "anthropic", outcome: "valid" })).toBe(1);
    expect(delta("provider_credentials_failure_reports_total", { kind: "authentication" })).toBe(3);
    expect(delta("provider_credentials_failure_reports_total", { kind: "rate_limit" })).toBe(1);
    expect(delta("provider_credentials_health_transitions_total", { to: "failing" })).toBe(1);
    expect(delta("provider_credentials_health_transitions_total", { to: "recovered" })).toBe(1);
    expect(text).not.toContain(apiKey);
  });
});
