// API tokens limited to organisations, expiring, recognisable by a prefix and rotatable, over real sockets
// against a real PostgreSQL; what an unauthenticated caller can make the database do; and `npm run token`.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { toJsonString } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { AdminService, ListApiTokensResponseSchema } from "@provider-credentials/wire/gen/admin_pb";
import { TokenStore } from "../../service/src/auth/token-store.js";
import { parseDuration } from "../../service/src/auth/tokens.js";
import { Reachability } from "../../service/src/db/reachability.js";
import { rpcError, startTestService, type TestService } from "../support/harness.js";

const run = promisify(execFile);
const TSX = path.resolve("node_modules/.bin/tsx");
/** SERVICE_ADMIN_TOKEN may be any string an operator chose, not shaped like generated tokens. */
const OPERATOR_ADMIN_TOKEN = "operator-chose-this-admin-secret!";

let t: TestService;
let admin: Client<typeof AdminService>;

const randomToken = () => `pct_${randomBytes(32).toString("base64url")}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The admin API as a given token. */
const adminAs = (token: string) => createClient(AdminService, t.transport("grpc", token));
/** One call that any admin token may make; refused with UNAUTHENTICATED for a token that does not work. */
const use = (token: string) => adminAs(token).listApiTokens({});

/** Every statement the service's own database client sends while counting (knex's query event). */
function countStatements(): { readonly all: string[]; stop(): void } {
  const knex = t.service.orm.em.getConnection().getKnex();
  const all: string[] = [];
  // Not the replica's own background work: the sweep for scheduled deactivations (deactivate_at) runs every second.
  const onQuery = (query: { sql?: string }) => {
    if (!/deactivate_at/.test(query.sql ?? "")) all.push(query.sql ?? "");
  };
  knex.on("query", onQuery);
  return { all, stop: () => knex.removeListener("query", onQuery) };
}

/** Runs `npm run token -- <args>` to its end against the test database. */
async function tokenCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(TSX, ["service/src/cli/token.ts", ...args], {
      env: { PATH: process.env.PATH, DATABASE_URL: t.db.url, MASTER_KEY: t.masterKey, LOG_LEVEL: "warn", npm_lifecycle_event: "token" },
      timeout: 60_000,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

beforeAll(async () => {
  t = await startTestService({ adminToken: OPERATOR_ADMIN_TOKEN });
  admin = adminAs(OPERATOR_ADMIN_TOKEN);
  const { organizations } = t.clients();
  for (const id of ["acme", "globex", "initech"]) await organizations.createOrganization({ organizationId: id, name: id });
});
afterAll(async () => {
  await t?.close();
});

describe("CreateApiToken and ListApiTokens", () => {
  it("creates a token limited to organisations with an expiry, and lists every field but the secret", async () => {
    const expiresAt = new Date(Date.now() + 3_600_000);
    const created = await admin.createApiToken({
      name: "gw-eu",
      scope: "resolve",
      organizationIds: ["acme", "globex", "acme"],
      expiresAt: timestampFromDate(expiresAt),
    });
    expect(created.token).toMatch(/^pct_[A-Za-z0-9_-]{43}$/);
    expect(created.apiToken?.prefix).toBe(created.token.slice(0, 10));
    expect(created.apiToken?.prefix).toMatch(/^pct_[A-Za-z0-9_-]{6}$/);
    expect(created.apiToken?.organizationIds).toEqual(["acme", "globex"]); // duplicates dropped
    expect(timestampDate(created.apiToken!.expiresAt!).getTime()).toBe(expiresAt.getTime());

    const listed = await admin.listApiTokens({});
    const entry = listed.apiTokens.find((x) => x.name === "gw-eu")!;
    expect(entry.scope).toBe("resolve");
    expect(entry.prefix).toBe(created.token.slice(0, 10));
    expect(entry.organizationIds).toEqual(["acme", "globex"]);
    expect(timestampDate(entry.expiresAt!).getTime()).toBe(expiresAt.getTime());
    expect(entry.previousValidUntil).toBeUndefined();
    expect(entry.lastUsedAt).toBeUndefined();
    expect(entry.createdBy).toBe("token:service-admin-token");
    const json = toJsonString(ListApiTokensResponseSchema, listed);
    expect(json).not.toContain(created.token);
    expect(json).not.toContain(created.token.slice(10));

    const [row] = await t.db.query("select organization_ids, expires_at, prefix, previous_token_hash from api_tokens where name = 'gw-eu'");
    expect(row).toEqual({ organization_ids: ["acme", "globex"], expires_at: expiresAt, prefix: created.token.slice(0, 10), previous_token_hash: null });
    const [audit] = await t.db.query<{ details: Record<string, unknown> }>(
      "select details from audit_events where action = 'token.create' and target = 'gw-eu'",
    );
    expect(audit.details).toMatchObject({ scope: "resolve", organization_ids: ["acme", "globex"], expires_at: expiresAt.toISOString() });
    expect(JSON.stringify(audit.details)).not.toContain(created.token);

    // The service itself authenticates it with its organisations.
    expect(await t.service.parts.tokens.authenticate(created.token)).toEqual({ name: "gw-eu", scope: "resolve", organizations: new Set(["acme", "globex"]) });
  });

  it("without organisations or expiry, the token acts on every organisation for ever", async () => {
    const created = await admin.createApiToken({ name: "everywhere", scope: "admin" });
    expect(created.apiToken?.organizationIds).toEqual([]);
    expect(created.apiToken?.expiresAt).toBeUndefined();
    expect(await t.service.parts.tokens.authenticate(created.token)).toEqual({ name: "everywhere", scope: "admin", organizations: null });
  });

  it("refuses bad organisations and a past expiry naming the field, and writes nothing", async () => {
    const cases: Array<[Parameters<typeof admin.createApiToken>[0], number, string]> = [
      [{ name: "bad-1", scope: "resolve", organizationIds: ["acme", "not an id"] }, Code.InvalidArgument, "organization_ids[1]: must be 1-64 characters"],
      [{ name: "bad-2", scope: "resolve", organizationIds: ["acme", ""] }, Code.InvalidArgument, "organization_ids[1]: is required"],
      [{ name: "bad-3", scope: "resolve", organizationIds: ["acme", "globex", "nope"] }, Code.NotFound, 'organization_ids[2]: organization "nope" not found'],
      [
        { name: "bad-4", scope: "resolve", expiresAt: timestampFromDate(new Date(Date.now() - 1_000)) },
        Code.InvalidArgument,
        "expires_at: must be in the future",
      ],
    ];
    for (const [request, code, message] of cases) {
      const err = await rpcError(admin.createApiToken(request));
      expect(err.code, request.name).toBe(code);
      expect(err.message, request.name).toContain(message);
    }
    expect(await t.db.query("select name from api_tokens where name like 'bad-%'")).toEqual([]);
    expect(await t.db.query("select target from audit_events where target like 'bad-%'")).toEqual([]);
  });

  it("lists a token created before prefixes were stored without one", async () => {
    await t.db.query(
      "insert into api_tokens (name, token_hash, scope, created_at) values ('legacy', encode(sha256('pct_legacy'::bytea), 'hex'), 'resolve', now())",
    );
    const entry = (await admin.listApiTokens({})).apiTokens.find((x) => x.name === "legacy")!;
    expect(entry.prefix).toBe("");
    expect(entry.organizationIds).toEqual([]);
    expect(entry.expiresAt).toBeUndefined();
  });
});

describe("expiry", () => {
  it("an expired token is refused at once, although its cache entry would still be fresh", async () => {
    const expiresAt = Date.now() + 1_500;
    const { token } = await admin.createApiToken({ name: "short", scope: "admin", expiresAt: timestampFromDate(new Date(expiresAt)) });
    expect((await use(token)).apiTokens.length).toBeGreaterThan(0); // now cached (for 5 s) by the service
    await sleep(expiresAt - Date.now() + 20);
    expect(await rpcError(use(token))).toEqual({ code: Code.Unauthenticated, message: "invalid or revoked token" });
    expect(Date.now()).toBeLessThan(expiresAt + 3_000); // well within what the cache TTL would have allowed
    // A fresh replica does not accept it either, and rotating it is refused.
    expect(await new TokenStore(t.service.orm).authenticate(token)).toBeUndefined();
    expect((await rpcError(admin.rotateApiToken({ name: "short" }))).code).toBe(Code.FailedPrecondition);
  });

  it("the outage grace window never extends past a token's expiry", async () => {
    const reachability = new Reachability(60_000);
    const store = new TokenStore(t.service.orm, { cacheTtlMs: 300, outageGraceMs: 60_000, reachability });
    const expiresAt = Date.now() + 1_000;
    const { token } = await store.create("grace-expiry", "resolve", "test", { expiresAt: new Date(expiresAt) });
    expect(await store.authenticate(token)).toMatchObject({ name: "grace-expiry" });
    await sleep(400); // the cache entry is over: with the database "unreachable", the grace window answers
    reachability.unreachable();
    expect(await store.authenticate(token)).toMatchObject({ name: "grace-expiry" });
    await sleep(expiresAt - Date.now() + 20); // expired: never from the grace window (the database is asked, and refuses)
    reachability.unreachable();
    expect(await store.authenticate(token)).toBeUndefined();
  });
});

describe("RotateApiToken", () => {
  it("without an overlap: a new secret for the same rules, and the old one refused at once", async () => {
    const created = await admin.createApiToken({ name: "rot-now", scope: "admin", organizationIds: ["initech"] });
    expect((await use(created.token)).apiTokens.length).toBeGreaterThan(0); // cached by the service
    const rotated = await admin.rotateApiToken({ name: "rot-now" });
    expect(rotated.token).toMatch(/^pct_[A-Za-z0-9_-]{43}$/);
    expect(rotated.token).not.toBe(created.token);
    expect(rotated.apiToken?.prefix).toBe(rotated.token.slice(0, 10));
    expect(rotated.apiToken?.organizationIds).toEqual(["initech"]);
    expect(rotated.apiToken?.scope).toBe("admin");
    expect(rotated.apiToken?.previousValidUntil).toBeUndefined();
    expect(toJsonString(ListApiTokensResponseSchema, await admin.listApiTokens({}))).not.toContain(rotated.token);
    expect(await rpcError(use(created.token))).toEqual({ code: Code.Unauthenticated, message: "invalid or revoked token" });
    expect((await use(rotated.token)).apiTokens.length).toBeGreaterThan(0);
    expect(await t.service.parts.tokens.authenticate(rotated.token)).toEqual({ name: "rot-now", scope: "admin", organizations: new Set(["initech"]) });
    const audit = await t.db.query<{ actor: string; details: Record<string, unknown> }>(
      "select actor, details from audit_events where action = 'token.rotate' and target = 'rot-now'",
    );
    expect(audit).toEqual([
      { actor: "token:service-admin-token", details: { overlap_seconds: 0, previous_valid_until: null, prefix: rotated.token.slice(0, 10) } },
    ]);
  });

  it("with an overlap: both secrets work until its end, then only the new one", async () => {
    const created = await admin.createApiToken({ name: "rot-overlap", scope: "admin" });
    const before = Date.now();
    const rotated = await admin.rotateApiToken({ name: "rot-overlap", overlapSeconds: 2 });
    const until = timestampDate(rotated.apiToken!.previousValidUntil!).getTime();
    expect(until).toBeGreaterThanOrEqual(before + 2_000 - 50);
    expect(until).toBeLessThanOrEqual(Date.now() + 2_000 + 50);
    expect((await use(created.token)).apiTokens.length).toBeGreaterThan(0);
    expect((await use(rotated.token)).apiTokens.length).toBeGreaterThan(0);
    expect((await admin.listApiTokens({})).apiTokens.find((x) => x.name === "rot-overlap")?.previousValidUntil).toBeDefined();
    await sleep(until - Date.now() + 50);
    expect(await rpcError(use(created.token))).toEqual({ code: Code.Unauthenticated, message: "invalid or revoked token" });
    expect((await use(rotated.token)).apiTokens.length).toBeGreaterThan(0);
    // Once the overlap is over, the listing no longer mentions it.
    expect((await admin.listApiTokens({})).apiTokens.find((x) => x.name === "rot-overlap")?.previousValidUntil).toBeUndefined();
  });

  it("another replica stops accepting the old secret within its cache TTL", async () => {
    const other = new TokenStore(t.service.orm, { cacheTtlMs: 400 });
    const created = await admin.createApiToken({ name: "rot-replica", scope: "resolve" });
    expect(await other.authenticate(created.token)).toMatchObject({ name: "rot-replica" });
    await admin.rotateApiToken({ name: "rot-replica" });
    const rotatedAt = Date.now();
    await vi.waitFor(async () => expect(other.cached(created.token) ?? (await other.authenticate(created.token))).toBeUndefined(), {
      timeout: 2_000,
      interval: 20,
    });
    expect(Date.now() - rotatedAt).toBeLessThan(400 + 300);
  });

  it("refuses a bad overlap or an unknown name, naming the field", async () => {
    await admin.createApiToken({ name: "rot-bad", scope: "resolve" });
    expect(await rpcError(admin.rotateApiToken({ name: "rot-bad", overlapSeconds: 86_401 }))).toEqual({
      code: Code.InvalidArgument,
      message: "overlap_seconds: must be a whole number of seconds from 0 to 86400 (24 hours)",
    });
    expect((await rpcError(admin.rotateApiToken({ name: "no-such-token" }))).code).toBe(Code.NotFound);
    expect((await rpcError(admin.rotateApiToken({ name: "bad name!" }))).message).toMatch(/^name: /);
    expect(await t.db.query("select target from audit_events where action = 'token.rotate' and target in ('rot-bad', 'no-such-token')")).toEqual([]);
  });
});

describe("what an unauthenticated caller can make the database do", () => {
  it("a bearer value not shaped like a token is refused without any statement; SERVICE_ADMIN_TOKEN may be any string", async () => {
    const counter = countStatements();
    try {
      for (const bad of ["nope", "pct_short", `pct_${"A".repeat(42)}`, `pct_${"A".repeat(44)}`, `pcx_${"A".repeat(43)}`, `pct_${"A".repeat(42)}!`]) {
        expect(await rpcError(use(bad)), bad).toEqual({ code: Code.Unauthenticated, message: "invalid or revoked token" });
      }
      expect(counter.all).toEqual([]);
    } finally {
      counter.stop();
    }
    // The operator's SERVICE_ADMIN_TOKEN is not shaped like ours and still works.
    expect((await use(OPERATOR_ADMIN_TOKEN)).apiTokens.length).toBeGreaterThan(0);
  });

  it("an unknown well-shaped token costs one statement, and repeating it within 2 s none", async () => {
    const unknown = randomToken();
    const counter = countStatements();
    try {
      for (let i = 0; i < 10; i++) expect((await rpcError(use(unknown))).code).toBe(Code.Unauthenticated);
      expect(counter.all.filter((sql) => sql.includes("api_tokens"))).toHaveLength(1);
      expect(counter.all).toHaveLength(1);
      await sleep(2_100); // the negative entry is over: asked again (once)
      for (let i = 0; i < 5; i++) expect((await rpcError(use(unknown))).code).toBe(Code.Unauthenticated);
      expect(counter.all).toHaveLength(2);
    } finally {
      counter.stop();
    }
  });

  it("a flood of random tokens holds at most two pooled connections, and a cached token is answered meanwhile", async () => {
    const honest = (await admin.createApiToken({ name: "honest", scope: "admin" })).token;
    expect((await use(honest)).apiTokens.length).toBeGreaterThan(0); // cached
    // Every token look-up now blocks on a lock, so look-ups in flight pile up where the database can count them.
    const locker = new pg.Client({ connectionString: t.db.url });
    await locker.connect();
    try {
      await locker.query("begin");
      await locker.query("lock table api_tokens in exclusive mode");
      const flood = Array.from({ length: 30 }, () => rpcError(use(randomToken())));
      let most = 0;
      for (let i = 0; i < 8; i++) {
        await sleep(100);
        const [{ n }] = await t.db.query<{ n: number }>(
          "select count(*)::int as n from pg_stat_activity where datname = current_database() and query like 'update api_tokens set last_used_at%' and state = 'active'",
        );
        most = Math.max(most, n);
      }
      expect(most).toBe(2);
      // The pool (5 connections in tests) still has room: a cached admin token reads the token list meanwhile.
      const started = Date.now();
      expect((await use(honest)).apiTokens.length).toBeGreaterThan(0);
      expect(Date.now() - started).toBeLessThan(1_000);
      await locker.query("rollback");
      const answers = await Promise.all(flood);
      // Refused either way: unknown (UNAUTHENTICATED) or, for those that waited out the hot-path timeout, UNAVAILABLE.
      for (const answer of answers) expect([Code.Unauthenticated, Code.Unavailable]).toContain(answer.code);
    } finally {
      await locker.end();
    }
  }, 30_000);
});

describe("npm run token", () => {
  it("parses durations", () => {
    expect(parseDuration("30m")).toBe(1_800_000);
    expect(parseDuration("12h")).toBe(43_200_000);
    expect(parseDuration("90d")).toBe(7_776_000_000);
    for (const bad of ["", "90", "0d", "1.5h", "-1d", "10s", "1w", "d"]) expect(parseDuration(bad), bad).toBeUndefined();
  });

  it("creates with organisations and an expiry, lists, rotates with an overlap and revokes", async () => {
    const created = await tokenCli(["create", "--name", "cli-gw", "--scope", "resolve", "--organizations", "acme,globex", "--expires-in", "90d"]);
    expect(created.code, created.stderr).toBe(0);
    const secret = created.stdout.trim();
    expect(secret).toMatch(/^pct_[A-Za-z0-9_-]{43}$/);
    expect(created.stderr).toContain('Created resolve token "cli-gw" (organisations acme, globex; expires ');
    const [row] = await t.db.query<{ organization_ids: string[]; expires_at: Date; created_by: string }>(
      "select organization_ids, expires_at, created_by from api_tokens where name = 'cli-gw'",
    );
    expect(row.organization_ids).toEqual(["acme", "globex"]);
    expect(Math.abs(row.expires_at.getTime() - (Date.now() + 90 * 86_400_000))).toBeLessThan(120_000);
    expect(row.created_by).toMatch(/^cli:/);

    const listed = await tokenCli(["list"]);
    expect(listed.code).toBe(0);
    const line = listed.stdout.split("\n").find((l) => l.startsWith("cli-gw "))!;
    expect(line).toContain(`${secret.slice(0, 10)}…`);
    expect(line).toContain("resolve");
    expect(line).toContain("organisations acme,globex");
    expect(line).toContain(`expires ${row.expires_at.toISOString()}`);
    expect(line).toContain("last used never");
    expect(listed.stdout).not.toContain(secret);
    expect(listed.stdout.split("\n").find((l) => l.startsWith("legacy "))).toContain("(no prefix)");

    const rotated = await tokenCli(["rotate", "cli-gw", "--overlap", "10m"]);
    expect(rotated.code, rotated.stderr).toBe(0);
    const next = rotated.stdout.trim();
    expect(next).toMatch(/^pct_[A-Za-z0-9_-]{43}$/);
    expect(next).not.toBe(secret);
    expect(rotated.stderr).toContain("The previous secret keeps working until ");
    const fresh = new TokenStore(t.service.orm);
    expect(await fresh.authenticate(secret)).toMatchObject({ name: "cli-gw" });
    expect(await fresh.authenticate(next)).toMatchObject({ name: "cli-gw", organizations: new Set(["acme", "globex"]) });
    expect((await tokenCli(["list"])).stdout).toContain("previous secret works until");

    const revoked = await tokenCli(["revoke", "cli-gw"]);
    expect(revoked.code).toBe(0);
    expect(await new TokenStore(t.service.orm).authenticate(next)).toBeUndefined();
    expect(await new TokenStore(t.service.orm).authenticate(secret)).toBeUndefined();
  }, 60_000);

  it("rotate without an overlap stops the old secret at once", async () => {
    const { token } = await new TokenStore(t.service.orm).create("cli-rot", "admin", "test");
    const rotated = await tokenCli(["rotate", "cli-rot"]);
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(rotated.stderr).toContain("The previous secret no longer works");
    expect(await new TokenStore(t.service.orm).authenticate(token)).toBeUndefined();
    expect(await new TokenStore(t.service.orm).authenticate(rotated.stdout.trim())).toMatchObject({ name: "cli-rot" });
  }, 60_000);

  it("says clearly what is wrong, and creates nothing", async () => {
    const cases: Array<[string[], number, string]> = [
      [["create", "--name", "x1", "--scope", "resolve", "--expires-in", "90x"], 2, '--expires-in: "90x" is not a duration; use a whole number and m, h or d'],
      [["create", "--name", "x2", "--scope", "resolve", "--expires-in", "0d"], 2, "--expires-in"],
      [["create", "--name", "x3", "--scope", "resolve", "--organizations", "acme,nowhere"], 1, 'Error: organization_ids[1]: organization "nowhere" not found'],
      [["create", "--name", "x4", "--scope", "resolve", "--organizations", "acme,,globex"], 1, "Error: organization_ids[1]: is required"],
      [["create", "--name", "x5", "--scope", "resolve", "--overlap", "10m"], 2, "create does not take --overlap"],
      [["rotate", "x6", "--overlap", "25h"], 2, "--overlap: at most 24h"],
      [["rotate", "no-such-token"], 1, 'Error: no token named "no-such-token"'],
      [["rotate"], 2, "rotate needs exactly one token name"],
      [["create", "--name", "x7", "--scope", "resolve", "--bogus"], 2, "Unknown option '--bogus'"],
    ];
    for (const [args, code, message] of cases) {
      const result = await tokenCli(args);
      expect(result.code, args.join(" ")).toBe(code);
      expect(result.stderr, args.join(" ")).toContain(message);
    }
    expect(await t.db.query("select name from api_tokens where name like 'x_'")).toEqual([]);
  }, 120_000);
});
