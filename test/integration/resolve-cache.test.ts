// The ResolveKey cache: correctness across replicas, never timings.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { KeySource, Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { createTestDatabase, FAKE_KEYS, rpcError, startTestService, type TestDatabase, type TestService } from "../support/harness.js";

let db: TestDatabase;
let a: TestService; // the replica administrators talk to
let b: TestService; // the replica that serves the resolutions

beforeAll(async () => {
  db = await createTestDatabase();
  a = await startTestService({ db, env: { OPENAI_API_KEY: "sk-from-the-environment-0000" } });
  b = await startTestService({ db, adminToken: a.adminToken, masterKey: a.masterKey, env: { OPENAI_API_KEY: "sk-from-the-environment-0000" } });
});
afterAll(async () => {
  await b?.close();
  await a?.close();
  await db?.drop();
});

/** Counts the SQL statements a replica sends. */
function countQueries(t: TestService): { readonly count: number; readonly names: Array<string | undefined>; stop(): void } {
  const knex = t.service.orm.em.getConnection().getKnex();
  let count = 0;
  const names: Array<string | undefined> = [];
  const onQuery = (query: { options?: { name?: string } }) => {
    count++;
    names.push(query.options?.name);
  };
  knex.on("query", onQuery);
  return {
    get count() {
      return count;
    },
    names,
    stop: () => knex.removeListener("query", onQuery),
  };
}

const resolveOn = (t: TestService, scope: { organizationId: string } | { teamId: string }, provider = Provider.OPENAI) =>
  t.clients().credentials.resolveKey({
    scope: "teamId" in scope ? { case: "teamId", value: scope.teamId } : { case: "organizationId", value: scope.organizationId },
    provider,
  });

/** Polls replica B until `check` passes: invalidation crosses replicas asynchronously, within milliseconds. */
async function eventuallyOnB(check: () => Promise<void>): Promise<void> {
  const deadline = Date.now() + 2_000;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

describe("one SQL statement per uncached call, none per cached call", () => {
  it("counts them", async () => {
    const { organizations, credentials } = a.clients();
    await organizations.createOrganization({ organizationId: "count-org", name: "Count" });
    await organizations.createTeam({ teamId: "count-team", organizationId: "count-org", name: "T" });
    await credentials.createCredential({ organizationId: "count-org", provider: Provider.OPENAI, credentialName: "k", apiKey: FAKE_KEYS.openai() });
    const counter = countQueries(b);
    try {
      await resolveOn(b, { teamId: "count-team" });
      expect(counter.count).toBe(1);
      await resolveOn(b, { teamId: "count-team" });
      await resolveOn(b, { teamId: "count-team" });
      expect(counter.count).toBe(1);
      // The team's load cached its organisation's resolution, which the organisation shares: no query.
      await resolveOn(b, { organizationId: "count-org" });
      expect(counter.count).toBe(1);
      // No Anthropic or Gemini key and no environment fallback: FAILED_PRECONDITION, cached like any answer.
      const none = async (p: Promise<unknown>) => expect((await rpcError(p)).code).toBe(Code.FailedPrecondition);
      await none(resolveOn(b, { organizationId: "count-org" }, Provider.ANTHROPIC));
      expect(counter.count).toBe(2);
      // The team's link to its organisation is cached: its other providers load by organisation.
      await none(resolveOn(b, { teamId: "count-team" }, Provider.GEMINI));
      expect(counter.count).toBe(3);
      await none(resolveOn(b, { teamId: "count-team" }, Provider.ANTHROPIC));
      expect(counter.count).toBe(3);
      // Named (prepared once per pooled connection): PostgreSQL plans it in more time than it runs it.
      expect(counter.names).toEqual(["pc_resolve_by_team", "pc_resolve_by_organization", "pc_resolve_by_organization"]);
    } finally {
      counter.stop();
    }
  });

  it("collapses 50 concurrent misses for one key into one query", async () => {
    const { organizations, credentials } = a.clients();
    await organizations.createOrganization({ organizationId: "herd-org", name: "Herd" });
    const key = FAKE_KEYS.anthropic();
    await credentials.createCredential({ organizationId: "herd-org", provider: Provider.ANTHROPIC, credentialName: "k", apiKey: key });
    const counter = countQueries(b);
    try {
      const results = await Promise.all(Array.from({ length: 50 }, () => resolveOn(b, { organizationId: "herd-org" }, Provider.ANTHROPIC)));
      expect(results.every((r) => r.apiKey === key)).toBe(true);
      expect(counter.count).toBe(1);
    } finally {
      counter.stop();
    }
  });
});

describe("every change made on one replica is visible on the other", () => {
  it("rotation, deactivation, activation, api_base and deletion", async () => {
    const { organizations, credentials } = a.clients();
    await organizations.createOrganization({ organizationId: "x-org", name: "Cross" });
    await organizations.createTeam({ teamId: "x-team", organizationId: "x-org", name: "T" });
    const first = FAKE_KEYS.openai();
    const { credential: one } = await credentials.createCredential({
      organizationId: "x-org",
      provider: Provider.OPENAI,
      credentialName: "one",
      apiKey: first,
    });
    expect((await resolveOn(b, { teamId: "x-team" })).apiKey).toBe(first); // now cached on B

    const rotated = FAKE_KEYS.openai();
    await credentials.updateCredential({ credentialId: one!.credentialId, apiKey: rotated });
    await eventuallyOnB(async () => expect((await resolveOn(b, { teamId: "x-team" })).apiKey).toBe(rotated));

    await credentials.updateCredential({ credentialId: one!.credentialId, apiBase: "https://proxy.example.com/v1", apiKey: rotated });
    await eventuallyOnB(async () => expect((await resolveOn(b, { teamId: "x-team" })).apiBase).toBe("https://proxy.example.com/v1"));

    const second = FAKE_KEYS.openai();
    const { credential: two } = await credentials.createCredential({
      organizationId: "x-org",
      provider: Provider.OPENAI,
      credentialName: "two",
      apiKey: second,
    });
    await eventuallyOnB(async () => expect((await resolveOn(b, { teamId: "x-team" })).apiKey).toBe(second));

    await credentials.deactivateCredential({ credentialId: two!.credentialId });
    await eventuallyOnB(async () => expect((await resolveOn(b, { teamId: "x-team" })).apiKey).toBe(rotated));

    await credentials.activateCredential({ credentialId: two!.credentialId });
    await eventuallyOnB(async () => expect((await resolveOn(b, { teamId: "x-team" })).apiKey).toBe(second));

    await credentials.deleteCredential({ credentialId: two!.credentialId });
    await credentials.deactivateCredential({ credentialId: one!.credentialId });
    await eventuallyOnB(async () => {
      const r = await resolveOn(b, { teamId: "x-team" });
      expect(r.source).toBe(KeySource.ENVIRONMENT);
      expect(r.apiKey).toBe("sk-from-the-environment-0000");
    });
  });

  it("an environment fallback turns into the organisation's key as soon as one is added", async () => {
    const { organizations, credentials } = a.clients();
    await organizations.createOrganization({ organizationId: "env-org", name: "Env" });
    expect((await resolveOn(b, { organizationId: "env-org" })).source).toBe(KeySource.ENVIRONMENT);
    const key = FAKE_KEYS.openai();
    await credentials.createCredential({ organizationId: "env-org", provider: Provider.OPENAI, credentialName: "k", apiKey: key });
    await eventuallyOnB(async () => expect((await resolveOn(b, { organizationId: "env-org" })).apiKey).toBe(key));
  });

  it("a deleted team and a deleted organisation stop resolving", async () => {
    const { organizations } = a.clients();
    await organizations.createOrganization({ organizationId: "gone-org", name: "Gone" });
    await organizations.createTeam({ teamId: "gone-team", organizationId: "gone-org", name: "T" });
    expect((await resolveOn(b, { teamId: "gone-team" })).organizationId).toBe("gone-org");
    expect((await resolveOn(b, { organizationId: "gone-org" })).organizationId).toBe("gone-org");
    await organizations.deleteTeam({ teamId: "gone-team" });
    await eventuallyOnB(async () => expect((await rpcError(resolveOn(b, { teamId: "gone-team" }))).code).toBe(Code.NotFound));
    await organizations.deleteOrganization({ organizationId: "gone-org" });
    await eventuallyOnB(async () => expect((await rpcError(resolveOn(b, { organizationId: "gone-org" }))).code).toBe(Code.NotFound));
  });
});

describe("a dropped notification connection", () => {
  it("clears the cache and bypasses it until the replica has reconnected by itself", async () => {
    const { organizations, credentials } = a.clients();
    await organizations.createOrganization({ organizationId: "drop-org", name: "Drop" });
    const { credential } = await credentials.createCredential({
      organizationId: "drop-org",
      provider: Provider.OPENAI,
      credentialName: "k",
      apiKey: FAKE_KEYS.openai(),
    });
    await resolveOn(b, { organizationId: "drop-org" });
    expect(b.service.parts.cache.size).toBeGreaterThan(0);

    const listeners = () =>
      db.query<{ pid: number }>(
        "select pid from pg_stat_activity where datname = current_database() and application_name = 'provider-credentials-invalidation'",
      );
    expect((await listeners()).length).toBe(2);
    await db.query(
      "select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and application_name = 'provider-credentials-invalidation'",
    );
    // A change that no replica hears about (written behind the service's back): a replica that
    // lost its listener must not serve the old value from its cache.
    const rotated = "sk-rotated-behind-the-service-back-1234";
    await vi_waitFor(() => !b.service.parts.cache.isEnabled || b.service.parts.cache.size === 0);
    const token = a.service.parts.keyring.encryptBound(rotated, {
      id: credential!.credentialId,
      organizationId: "drop-org",
      provider: "openai",
      apiBase: null,
    });
    await db.query("update provider_credentials set encrypted_api_key = $1, key_id = $2, key_binding = $3 where id = $4", [
      token.token,
      token.keyId,
      token.binding,
      credential!.credentialId,
    ]);
    expect((await resolveOn(b, { organizationId: "drop-org" })).apiKey).toBe(rotated);
    // Reconnected by itself: both listeners are back and the cache is on again.
    await vi_waitFor(async () => (await listeners()).length === 2 && b.service.parts.cache.isEnabled, 10_000);
    await resolveOn(b, { organizationId: "drop-org" });
    expect(b.service.parts.cache.size).toBeGreaterThan(0);
  });
});

describe("bounds", () => {
  it("keeps at most the configured number of entries, least recently used out first, and honours the TTL", async () => {
    const small = await startTestService({ db, adminToken: a.adminToken, masterKey: a.masterKey, cacheMaxEntries: 3, cacheTtlMs: 200 });
    try {
      const { organizations } = a.clients();
      for (const id of ["lru-1", "lru-2", "lru-3", "lru-4"]) await organizations.createOrganization({ organizationId: id, name: id });
      for (const id of ["lru-1", "lru-2", "lru-3"]) await rpcError(resolveOn(small, { organizationId: id }, Provider.GEMINI));
      expect(small.service.parts.cache.size).toBe(3);
      await rpcError(resolveOn(small, { organizationId: "lru-1" }, Provider.GEMINI)); // lru-1 is now the most recent
      await rpcError(resolveOn(small, { organizationId: "lru-4" }, Provider.GEMINI)); // evicts lru-2
      expect(small.service.parts.cache.size).toBe(3);
      const counter = countQueries(small);
      try {
        await rpcError(resolveOn(small, { organizationId: "lru-1" }, Provider.GEMINI));
        expect(counter.count).toBe(0);
        await rpcError(resolveOn(small, { organizationId: "lru-2" }, Provider.GEMINI));
        expect(counter.count).toBe(1);
        await new Promise((r) => setTimeout(r, 250));
        await rpcError(resolveOn(small, { organizationId: "lru-1" }, Provider.GEMINI));
        expect(counter.count).toBe(2);
      } finally {
        counter.stop();
      }
    } finally {
      await small.close();
    }
  });
});

async function vi_waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}
