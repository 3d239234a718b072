// Backup and restore, end to end, as docs/operations/backup.md tells an operator to do it: keys
// stored through the service, `pg_dump --format=custom`, `pg_restore` into a new database, then
// `npm run verify-keys` with the master key kept apart from the dump (exit 0), a replica started
// on the restored database resolving every key with a token made before the dump; and with the
// wrong MASTER_KEY, start-up refuses naming the fingerprint of the missing key (and verify-keys
// fails naming it too), with no key material in any output.
//
// pg_dump must not be older than the server, so this runs against the machine's PostgreSQL 15
// (BACKUP_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres) with its pg_dump and
// pg_restore, in databases of its own that it drops afterwards. Without them it is skipped with a
// message; BACKUP_TEST_REQUIRED=1 makes that a failure.
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CredentialService, Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { Health, HealthCheckResponse_ServingStatus } from "@provider-credentials/wire/gen/grpc/health/v1/health_pb";
import { createKeyring, generateMasterKey } from "../../service/src/keyring/keyring.js";
import { TokenStore } from "../../service/src/auth/token-store.js";
import { generateToken } from "../../service/src/auth/tokens.js";
import { FAKE_KEYS, startTestService } from "../support/harness.js";
import { createDatabase, freePort, type TestDatabase } from "../support/kit.js";

const run = promisify(execFile);
const TSX = path.resolve("node_modules/.bin/tsx");
const ADMIN_URL = process.env.BACKUP_DATABASE_URL || "postgres://postgres@127.0.0.1:5432/postgres";
const REQUIRED = process.env.BACKUP_TEST_REQUIRED === "1";

/** Why the test cannot run here, or undefined when it can. */
async function unavailable(): Promise<string | undefined> {
  let tools: number;
  try {
    for (const tool of ["pg_restore", "pg_dump"]) execFileSync(tool, ["--version"], { stdio: "ignore" });
    tools = Number(/(\d+)/.exec(execFileSync("pg_dump", ["--version"], { encoding: "utf8" }))![1]);
  } catch {
    return "pg_dump and pg_restore are not installed (Debian: apt-get install postgresql-client-15)";
  }
  const client = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: 3_000 });
  try {
    await client.connect();
    const server = Number((await client.query<{ v: string }>("show server_version_num")).rows[0].v) / 10_000;
    if (Math.floor(server) > tools) return `the server at ${new URL(ADMIN_URL).host} is PostgreSQL ${Math.floor(server)}, newer than pg_dump ${tools}`;
  } catch (error) {
    return `no PostgreSQL at ${new URL(ADMIN_URL).host} (${(error as Error).message}); set BACKUP_DATABASE_URL`;
  } finally {
    await client.end().catch(() => undefined);
  }
  return undefined;
}

const reason = await unavailable();
if (reason !== undefined && !REQUIRED) console.error(`backup-restore: SKIPPED, ${reason}. BACKUP_TEST_REQUIRED=1 makes this a failure.`);

interface Started {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** The service's entry point as its own process (as `npm start` runs it from source); resolves when it is ready or has exited. */
async function startReplica(env: NodeJS.ProcessEnv): Promise<Started> {
  const child = spawn(TSX, ["service/src/main.ts"], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, HOST: "127.0.0.1", LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const deadline = Date.now() + 60_000;
  while (!output.includes("credentials service ready") && child.exitCode === null) {
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`service neither ready nor stopped in 60 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, output: () => output, exited };
}

describe.skipIf(reason !== undefined && !REQUIRED)("backup and restore (pg_dump, pg_restore, verify-keys)", () => {
  const masterKey = generateMasterKey();
  const wrongKey = generateMasterKey();
  const fingerprint = createKeyring(masterKey).primaryKeyId;
  const adminToken = generateToken();
  const stored = new Map<Provider, string>();
  let resolveToken: string;
  let source: TestDatabase;
  let restored: TestDatabase;
  let dir: string;
  let dump: string;
  const replicas: ChildProcess[] = [];

  beforeAll(async () => {
    if (reason !== undefined) throw new Error(`BACKUP_TEST_REQUIRED=1 but the backup test cannot run: ${reason}`);
    dir = mkdtempSync(path.join(os.tmpdir(), "pc-backup-"));
    dump = path.join(dir, "provider-credentials.dump");
    source = await createDatabase(ADMIN_URL, { prefix: "pc_backup_src_" });
    // Keys stored through the service itself, with a resolve token for a gateway.
    const t = await startTestService({ db: source, masterKey });
    try {
      const { organizations, credentials } = t.clients();
      await organizations.createOrganization({ organizationId: "backup-org", name: "Backup" });
      for (const [provider, key] of [
        [Provider.OPENAI, FAKE_KEYS.openai()],
        [Provider.ANTHROPIC, FAKE_KEYS.anthropic()],
        [Provider.GEMINI, FAKE_KEYS.gemini()],
      ] as const) {
        await credentials.createCredential({ organizationId: "backup-org", provider, credentialName: `backup ${provider}`, apiKey: key });
        stored.set(provider, key);
      }
      resolveToken = (await new TokenStore(t.service.orm).create("backup-gateway", "resolve", "test")).token;
    } finally {
      await t.close();
    }
  });

  afterAll(async () => {
    for (const child of replicas) if (child.exitCode === null) child.kill("SIGKILL");
    await source?.drop();
    await restored?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("pg_dump --format=custom makes a file the master key is not in", async () => {
    await run("pg_dump", ["--format=custom", "--no-owner", "--no-privileges", `--file=${dump}`, source.url]);
    expect(statSync(dump).size).toBeGreaterThan(0);
    const text = execFileSync("pg_restore", ["--file=-", dump], { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
    // The dump holds ciphertext and key fingerprints, never the master key or a provider key.
    expect(text).toContain(fingerprint);
    expect(text).not.toContain(masterKey);
    for (const key of stored.values()) expect(text).not.toContain(key);
  });

  it("pg_restore into a new database, and verify-keys with the kept MASTER_KEY exits 0", async () => {
    restored = await createDatabase(ADMIN_URL, { prefix: "pc_backup_restored_" });
    await run("pg_restore", ["--no-owner", "--no-privileges", "--exit-on-error", `--dbname=${restored.url}`, dump]);
    const verified = await run(TSX, ["service/src/cli/verify-keys.ts"], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, DATABASE_URL: restored.url, MASTER_KEY: masterKey },
    });
    expect(verified.stdout).toContain("Checked 3 credential(s).");
    expect(verified.stdout).toContain(`${fingerprint}: 3 (primary key)`);
    expect(verified.stdout).toContain("Every credential decrypts with the configured MASTER_KEY and is bound to its row.");
    expect(verified.stdout + verified.stderr).not.toContain(masterKey);
  }, 60_000);

  it("a replica started on the restored database resolves every key, for a token made before the dump", async () => {
    const port = await freePort();
    const replica = await startReplica({
      DATABASE_URL: restored.url,
      MASTER_KEY: masterKey,
      SERVICE_ADMIN_TOKEN: adminToken,
      GRPC_PORT: String(port),
      CONNECT_PORT: String(await freePort()),
    });
    replicas.push(replica.child);
    expect(replica.child.exitCode, replica.output()).toBeNull();
    const transport = createGrpcTransport({
      baseUrl: `http://127.0.0.1:${port}`,
      interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${resolveToken}`), next(req))],
    });
    const health = createClient(Health, transport);
    expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const credentials: Client<typeof CredentialService> = createClient(CredentialService, transport);
    for (const [provider, key] of stored) {
      const answer = await credentials.resolveKey({ scope: { case: "organizationId", value: "backup-org" }, provider });
      expect(answer.apiKey).toBe(key);
    }
    expect(replica.output()).not.toContain(masterKey);
    replica.child.kill("SIGTERM");
    expect(await replica.exited).toBe(0);
  }, 90_000);

  it("with the wrong MASTER_KEY, start-up refuses and names the fingerprint of the key it lacks; verify-keys fails naming it", async () => {
    const replica = await startReplica({
      DATABASE_URL: restored.url,
      MASTER_KEY: wrongKey,
      SERVICE_ADMIN_TOKEN: adminToken,
      GRPC_PORT: String(await freePort()),
      CONNECT_PORT: String(await freePort()),
    });
    replicas.push(replica.child);
    expect(await replica.exited).toBe(1);
    const output = replica.output();
    expect(output).not.toContain("credentials service ready");
    expect(output).toContain(`MASTER_KEY does not hold the key(s) that encrypted stored credentials: ${fingerprint} (3 credentials)`);
    expect(output).toContain(`Configured: ${createKeyring(wrongKey).primaryKeyId}`);
    for (const secret of [masterKey, wrongKey, ...stored.values()]) expect(output).not.toContain(secret);

    const verified = await run(TSX, ["service/src/cli/verify-keys.ts"], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, DATABASE_URL: restored.url, MASTER_KEY: wrongKey },
    }).catch((error: { code: number; stdout: string; stderr: string }) => error);
    expect((verified as { code?: number }).code).toBe(1);
    expect(verified.stdout).toContain(`${fingerprint}: 3 (NOT in MASTER_KEY)`);
    for (const secret of [masterKey, wrongKey, ...stored.values()]) expect(verified.stdout + verified.stderr).not.toContain(secret);
  }, 90_000);
});
