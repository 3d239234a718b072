// The TypeScript client (clients/typescript) against the real service: every resolution case,
// answers kept in memory and dropped on every kind of change made through another replica,
// stream loss (connection cut, service stopped, replica restarted), the staleness limit, a token
// revoked while connected, a limited token, TLS and mutual TLS. Never timings.
import { makeTestCertificates } from "../support/certificates.js";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import { Provider, SelectionStrategy } from "@provider-credentials/wire/gen/credentials_pb";
import {
  createKeyResolver,
  InvalidArgumentError,
  NoKeyError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
  UnavailableError,
  type KeyResolver,
  type KeyResolverOptions,
} from "../../clients/typescript/src/index.js";
import { createTestDatabase, FAKE_KEYS, startTestService, type TestDatabase, type TestService } from "../support/harness.js";

const GEMINI_FALLBACK = "AIzaFallbackFromTheEnvironment0000000000";
let db: TestDatabase;
let a: TestService; // administrators change things here
let b: TestService; // the clients resolve here, through the proxy
let proxy: Proxy;
let resolveToken: string;
const resolvers: KeyResolver[] = [];

/** A TCP proxy in front of a replica: cut its connections, refuse new ones, or point it at another replica. */
interface Proxy {
  port: number;
  target: number;
  /** Destroys every open connection. */
  cut(): void;
  /** While held, new connections are closed at once. */
  held: boolean;
  close(): Promise<void>;
}

async function startProxy(target: number): Promise<Proxy> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    if (state.held) return void client.destroy();
    const upstream = net.connect(state.target, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => undefined);
    }
    client.pipe(upstream).pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const state: Proxy = {
    port: (server.address() as net.AddressInfo).port,
    target,
    held: false,
    cut: () => sockets.forEach((s) => s.destroy()),
    close: async () => {
      state.cut();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return state;
}

function resolver(options: Partial<KeyResolverOptions> = {}): KeyResolver {
  const r = createKeyResolver({
    url: `http://127.0.0.1:${proxy.port}`,
    token: resolveToken,
    cache: { maxStalenessMs: 1_000 },
    reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
    ...options,
  });
  resolvers.push(r);
  return r;
}

const admin = () => createClient(AdminService, a.transport("grpc", a.adminToken));
const org = (organizationId: string) => ({ organizationId });

async function organization(id: string, withTeam = true): Promise<void> {
  const { organizations } = a.clients();
  await organizations.createOrganization({ organizationId: id, name: id });
  if (withTeam) await organizations.createTeam({ teamId: `${id}-team`, organizationId: id, name: "T" });
}

async function credential(organizationId: string, provider = Provider.OPENAI, apiKey = FAKE_KEYS.openai(), apiBase?: string) {
  const { credential: c } = await a
    .clients()
    .credentials.createCredential({ organizationId, provider, credentialName: `k-${apiKey.slice(-6)}`, apiKey, apiBase });
  return { id: c!.credentialId, apiKey };
}

/** What a call gives, or the name of the error class it throws. */
async function outcome(r: KeyResolver, scope: { organizationId: string } | { teamId: string }, provider: string = "openai") {
  try {
    return await r.resolve(scope, provider);
  } catch (error) {
    return (error as Error).name;
  }
}

beforeAll(async () => {
  db = await createTestDatabase();
  const env = { GEMINI_API_KEY: GEMINI_FALLBACK };
  a = await startTestService({ db, env, failureThreshold: 2 });
  b = await startTestService({ db, env, adminToken: a.adminToken, masterKey: a.masterKey, failureThreshold: 2 });
  proxy = await startProxy(b.service.port);
  resolveToken = (await admin().createApiToken({ name: "gateway", scope: "resolve" })).token;
});
afterAll(async () => {
  for (const r of resolvers) r.close();
  await proxy?.close();
  await b?.close();
  await a?.close();
  await db?.drop();
});

describe("resolution cases", () => {
  it("organisation, team, fallback, no key, unknown, failing, bad provider", async () => {
    await organization("c-acme");
    const { id, apiKey } = await credential("c-acme", Provider.OPENAI, FAKE_KEYS.openai(), "https://llm-gateway.example.com/v1");
    const r = resolver();
    await r.ready();
    expect(await r.resolve(org("c-acme"), "openai")).toEqual({
      apiKey,
      apiBase: "https://llm-gateway.example.com/v1",
      credentialId: id,
      source: "organization",
      failing: false,
      organizationId: "c-acme",
    });
    expect(await r.resolve({ teamId: "c-acme-team" }, Provider.OPENAI)).toMatchObject({ apiKey, credentialId: id, organizationId: "c-acme" });
    // No Gemini credential: the service's environment fallback, with no credential id.
    expect(await r.resolve(org("c-acme"), "gemini")).toEqual({
      apiKey: GEMINI_FALLBACK,
      apiBase: undefined,
      credentialId: undefined,
      source: "environment",
      failing: false,
      organizationId: "c-acme",
    });
    await expect(r.resolve(org("c-acme"), "anthropic")).rejects.toBeInstanceOf(NoKeyError);
    await expect(r.resolve(org("c-acme"), "anthropic")).rejects.toThrow('organization "c-acme" has no active Anthropic credential');
    await expect(r.resolve(org("c-nope"), "openai")).rejects.toBeInstanceOf(NotFoundError);
    await expect(r.resolve({ teamId: "c-nope-team" }, "openai")).rejects.toBeInstanceOf(NotFoundError);
    await expect(r.resolve(org("c-acme"), "mistral")).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(r.resolve(org("not an id!"), "openai")).rejects.toBeInstanceOf(InvalidArgumentError);

    // Failing: reported through the client until the service marks it (threshold 2); the change reaches the client.
    expect(await r.reportFailure(id, "authentication")).toEqual({ failureStreak: 1, failing: false });
    expect(await r.reportFailure(id, "quota")).toEqual({ failureStreak: 2, failing: true });
    await expect.poll(async () => (await r.resolve(org("c-acme"), "openai")).failing).toBe(true);
    expect(await r.reportSuccess([id])).toEqual({ recovered: 1 });
    await expect.poll(async () => (await r.resolve(org("c-acme"), "openai")).failing).toBe(false);
  });

  it("answers again from memory, without asking the service", async () => {
    await organization("c-mem");
    const { apiKey } = await credential("c-mem");
    const r = resolver();
    await r.ready();
    await r.resolve(org("c-mem"), "openai");
    const before = r.stats();
    for (let i = 0; i < 100; i++) expect((await r.resolve(org("c-mem"), "openai")).apiKey).toBe(apiKey);
    const after = r.stats();
    expect(after.misses).toBe(before.misses);
    expect(after.hits - before.hits).toBe(100);
  });

  it("refuses what a limited token may not see", async () => {
    await organization("c-mine");
    await organization("c-theirs");
    await credential("c-theirs");
    const { token } = await admin().createApiToken({ name: "limited-gw", scope: "resolve", organizationIds: ["c-mine"] });
    const r = resolver({ token });
    await r.ready();
    await expect(r.resolve(org("c-theirs"), "openai")).rejects.toBeInstanceOf(PermissionDeniedError);
    await expect(r.resolve({ teamId: "c-theirs-team" }, "openai")).rejects.toBeInstanceOf(PermissionDeniedError);
    expect(await r.resolve(org("c-mine"), "gemini")).toMatchObject({ source: "environment" });
  });
});

describe("every kind of change made through another replica drops the answer", () => {
  it("credential rotated, deactivated, activated, deleted; strategy set; team and organisation deleted", async () => {
    await organization("c-chg");
    const one = await credential("c-chg");
    const r = resolver();
    await r.ready();
    const now = () => outcome(r, org("c-chg"));
    const viaTeam = () => outcome(r, { teamId: "c-chg-team" });
    expect(await now()).toMatchObject({ apiKey: one.apiKey });
    expect(await viaTeam()).toMatchObject({ apiKey: one.apiKey });
    const { credentials, organizations } = a.clients();

    const rotated = FAKE_KEYS.openai();
    await credentials.updateCredential({ credentialId: one.id, apiKey: rotated });
    await expect.poll(now).toMatchObject({ apiKey: rotated });
    await expect.poll(viaTeam).toMatchObject({ apiKey: rotated });

    await credentials.deactivateCredential({ credentialId: one.id });
    await expect.poll(now).toBe("NoKeyError");
    await credentials.activateCredential({ credentialId: one.id });
    await expect.poll(now).toMatchObject({ apiKey: rotated });

    // A second credential, then round robin: the change is heard and the cached answer dropped. A cached
    // answer keeps one credential under round robin (docs/integrate.md, "Caching guarantee"): it is one of the two.
    const two = await credential("c-chg");
    await expect.poll(now).toMatchObject({ apiKey: two.apiKey });
    const heard = r.stats().changes;
    const missed = r.stats().misses;
    await credentials.setSelectionStrategy({ organizationId: "c-chg", provider: Provider.OPENAI, strategy: SelectionStrategy.ROUND_ROBIN });
    await expect.poll(() => r.stats().changes).toBeGreaterThan(heard);
    expect([rotated, two.apiKey]).toContain((await r.resolve(org("c-chg"), "openai")).apiKey);
    expect(r.stats().misses).toBeGreaterThan(missed);
    await credentials.setSelectionStrategy({ organizationId: "c-chg", provider: Provider.OPENAI, strategy: SelectionStrategy.NEWEST });
    await credentials.deleteCredential({ credentialId: two.id });
    await expect.poll(now).toMatchObject({ apiKey: rotated });
    await credentials.deleteCredential({ credentialId: one.id });
    await expect.poll(now).toBe("NoKeyError");

    // The team: its answer (the environment fallback here) goes when the team does.
    expect(await outcome(r, { teamId: "c-chg-team" }, "gemini")).toMatchObject({ source: "environment" });
    await organizations.deleteTeam({ teamId: "c-chg-team" });
    await expect.poll(() => outcome(r, { teamId: "c-chg-team" }, "gemini")).toBe("NotFoundError");
    // The organisation: likewise.
    expect(await outcome(r, org("c-chg"), "gemini")).toMatchObject({ source: "environment" });
    await organizations.deleteOrganization({ organizationId: "c-chg" });
    await expect.poll(() => outcome(r, org("c-chg"), "gemini")).toBe("NotFoundError");
  });
});

describe("stream loss", () => {
  it("connection cut: serves from memory meanwhile, resumes, and hears what changed while it was away", async () => {
    await organization("c-cut");
    const one = await credential("c-cut");
    const r = resolver({ cache: { maxStalenessMs: 60_000 } });
    await r.ready();
    expect(await outcome(r, org("c-cut"))).toMatchObject({ apiKey: one.apiKey });
    const connects = r.stats().connects;
    proxy.held = true;
    proxy.cut();
    await expect.poll(() => r.stats().live).toBe(false);
    // The replica cannot be reached: the answer comes from memory, within the staleness limit.
    expect(await outcome(r, org("c-cut"))).toMatchObject({ apiKey: one.apiKey });
    const rotated = FAKE_KEYS.openai();
    await a.clients().credentials.updateCredential({ credentialId: one.id, apiKey: rotated });
    proxy.held = false;
    await expect.poll(() => r.stats().connects, { timeout: 5_000 }).toBeGreaterThan(connects);
    // Resumed: the change made while away was replayed, so the new key is served at once.
    expect(await outcome(r, org("c-cut"))).toMatchObject({ apiKey: rotated });
  });

  it("stale limit: a cached answer is served at most maxStalenessMs after the stream broke, then the service is asked", async () => {
    await organization("c-stale");
    const one = await credential("c-stale");
    const r = resolver({ cache: { maxStalenessMs: 1_000 } });
    const never = resolver({ cache: { maxStalenessMs: 0 } });
    for (const x of [r, never]) {
      await x.ready();
      expect(await outcome(x, org("c-stale"))).toMatchObject({ apiKey: one.apiKey });
    }
    proxy.held = true;
    proxy.cut();
    await expect.poll(() => r.stats().live || never.stats().live).toBe(false);
    const brokeAt = Date.now();
    // The key is deactivated; a client that cannot hear it may serve it only within its limit.
    await a.clients().credentials.deactivateCredential({ credentialId: one.id });
    const served = await outcome(r, org("c-stale"));
    if (Date.now() - brokeAt < 1_000) expect(served).toMatchObject({ apiKey: one.apiKey });
    expect(await outcome(never, org("c-stale"))).toBe("UnavailableError");
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    // Past the limit every call goes to the service, which cannot be reached: never the old key.
    expect(await outcome(r, org("c-stale"))).toBe("UnavailableError");
    proxy.held = false;
    await r.ready();
    await never.ready();
    expect(await outcome(r, org("c-stale"))).toBe("NoKeyError");
    expect(await outcome(never, org("c-stale"))).toBe("NoKeyError");
  });

  it("service stopped, then replica restarted: stale answers within the limit only, then everything is asked again", async () => {
    await organization("c-restart");
    const one = await credential("c-restart");
    const r = resolver({ cache: { maxStalenessMs: 1_000 } });
    await r.ready();
    expect(await outcome(r, org("c-restart"))).toMatchObject({ apiKey: one.apiKey });
    await b.close();
    await expect.poll(() => r.stats().live).toBe(false);
    const rotated = FAKE_KEYS.openai();
    await a.clients().credentials.updateCredential({ credentialId: one.id, apiKey: rotated });
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    expect(await outcome(r, org("c-restart"))).toBe("UnavailableError");
    // The replica comes back (a new process: its resume tokens are new): the client starts afresh.
    b = await startTestService({ db, env: { GEMINI_API_KEY: GEMINI_FALLBACK }, adminToken: a.adminToken, masterKey: a.masterKey, failureThreshold: 2 });
    proxy.target = b.service.port;
    await r.ready();
    expect(await outcome(r, org("c-restart"))).toMatchObject({ apiKey: rotated });
  });
});

describe("a token revoked while connected", () => {
  it("ends the stream, drops the answers, and every call is refused UNAUTHENTICATED", async () => {
    await organization("c-rev");
    await credential("c-rev");
    const { token } = await admin().createApiToken({ name: "to-revoke", scope: "resolve" });
    const r = resolver({ token, cache: { maxStalenessMs: 60_000 } });
    await r.ready();
    expect(await outcome(r, org("c-rev"))).toMatchObject({ source: "organization" });
    await admin().revokeApiToken({ name: "to-revoke" });
    // Within the token cache time (5 s) and the stream's recheck (1 s) on the replica that did not revoke it.
    await expect.poll(() => outcome(r, org("c-rev")), { timeout: 8_000, interval: 200 }).toBe("UnauthenticatedError");
    expect(r.stats().live).toBe(false);
    await expect(r.resolve(org("c-rev"), "openai")).rejects.toBeInstanceOf(UnauthenticatedError);
  });
});

describe("TLS", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "pc-client-tls-"));
  const file = (name: string) => path.join(dir, name);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  beforeAll(() => {
    makeTestCertificates(dir);
  });

  it("resolves over TLS, and over mutual TLS with a client certificate (refused without one)", async () => {
    await organization("c-tls", false);
    const { apiKey } = await credential("c-tls");
    const server = { certFile: file("server.pem"), keyFile: file("server.key") };
    for (const mutual of [false, true]) {
      const t = await startTestService({
        db,
        adminToken: a.adminToken,
        masterKey: a.masterKey,
        tls: {
          cert: readFileSync(server.certFile),
          key: readFileSync(server.keyFile),
          ...(mutual ? { clientCa: readFileSync(file("ca.pem")) } : {}),
        },
      });
      try {
        for (const port of [t.service.port, t.service.connectPort]) {
          const options = {
            url: `https://127.0.0.1:${port}`,
            token: resolveToken,
            tls: { ca: readFileSync(file("ca.pem")), ...(mutual ? { cert: readFileSync(file("client.pem")), key: readFileSync(file("client.key")) } : {}) },
          };
          const r = createKeyResolver(options);
          resolvers.push(r);
          await r.ready();
          expect(await r.resolve(org("c-tls"), "openai")).toMatchObject({ apiKey });
          if (mutual) {
            const anonymous = createKeyResolver({ ...options, tls: { ca: options.tls.ca }, timeoutMs: 2_000 });
            resolvers.push(anonymous);
            await expect(anonymous.resolve(org("c-tls"), "openai")).rejects.toBeInstanceOf(UnavailableError);
          }
        }
      } finally {
        await t.close();
      }
    }
  });
});
