import { spawn, execFile, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, stat, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus } from "@provider-credentials/wire/gen/grpc/health/v1/health_pb";
import { OrganizationService } from "@provider-credentials/wire/gen/credentials_pb";
import { generateMasterKey } from "../../service/src/keyring/keyring.js";
import { createTestDatabase, type TestDatabase } from "../support/harness.js";
import { freePort } from "../support/kit.js";

const run = promisify(execFile);
const TSX = path.resolve("node_modules/.bin/tsx");

interface Started {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** Starts the service's entry point (what `npm start` runs, from source through tsx) as its own process and waits for its ready line. */
async function startProcess(env: NodeJS.ProcessEnv): Promise<Started> {
  const child = spawn(TSX, ["service/src/main.ts"], { env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const deadline = Date.now() + 60_000;
  while (!output.includes("credentials service ready")) {
    if (child.exitCode !== null) throw new Error(`service exited early:\n${output}`);
    if (Date.now() > deadline) throw new Error(`service not ready in 60 s:\n${output}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, output: () => output, exited };
}

function health(port: number) {
  return createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
}

describe("npm start on the embedded default", () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "pc-embedded-"));
  });
  afterAll(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  it("initialises PostgreSQL, generates secrets once (0600), serves health, and exits 0 on SIGTERM", async () => {
    const port = await freePort();
    const connectPort = String(await freePort());
    const first = await startProcess({ DATA_DIR: dataDir, GRPC_PORT: String(port), CONNECT_PORT: connectPort });
    expect(first.output()).toContain("first run: generated MASTER_KEY, SERVICE_ADMIN_TOKEN");
    expect(first.output()).toContain(`on 127.0.0.1:${port}`);
    const secretsFile = path.join(dataDir, "secrets.env");
    expect((await stat(secretsFile)).mode & 0o777).toBe(0o600);
    const secrets = await readFile(secretsFile, "utf8");
    const token = /^SERVICE_ADMIN_TOKEN=(.+)$/m.exec(secrets)![1];
    const masterKey = /^MASTER_KEY=(.+)$/m.exec(secrets)![1];
    // Secrets are written to the file, never to the output.
    expect(first.output()).not.toContain(token);
    expect(first.output()).not.toContain(masterKey);

    const status = await health(port).check({ service: "" });
    expect(status.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const orgs = createClient(
      OrganizationService,
      createGrpcTransport({
        baseUrl: `http://127.0.0.1:${port}`,
        interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${token}`), next(req))],
      }),
    );
    await orgs.createOrganization({ organizationId: "org-embedded", name: "Embedded" });

    // The hints it prints reach this installation, not the default .data: they carry DATA_DIR.
    expect(first.output()).toContain(`set a new one with: DATA_DIR=${dataDir} npm run admin -- reset-password --email admin@localhost`);
    expect(first.output()).toContain(`create more with: DATA_DIR=${dataDir} npm run token -- create`);
    const listed = await run(TSX, ["service/src/cli/admin.ts", "list"], { env: { PATH: process.env.PATH, HOME: process.env.HOME, DATA_DIR: dataDir } });
    expect(listed.stdout).toMatch(/^admin@localhost\s+owner\s+all organisations\s+enabled\s+last sign-in never\s+created /m);

    first.child.kill("SIGTERM");
    expect(await first.exited).toBe(0);

    // Second start: same data, same secrets, nothing generated again.
    const second = await startProcess({ DATA_DIR: dataDir, GRPC_PORT: String(port), CONNECT_PORT: connectPort });
    expect(second.output()).not.toContain("first run");
    expect(await readFile(secretsFile, "utf8")).toBe(secrets);
    const { organization } = await orgs.getOrganization({ organizationId: "org-embedded" });
    expect(organization?.name).toBe("Embedded");
    second.child.kill("SIGTERM");
    expect(await second.exited).toBe(0);
  });
});

describe("npm start with DATABASE_URL", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db.drop();
  });

  it("refuses to start without MASTER_KEY, and with a malformed one explains what a valid key looks like", async () => {
    const port = String(await freePort());
    const missing = await run(TSX, ["service/src/main.ts"], { env: { PATH: process.env.PATH, DATABASE_URL: db.url, GRPC_PORT: port } }).catch((e) => e);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("MASTER_KEY is required when DATABASE_URL is set");
    const malformed = await run(TSX, ["service/src/main.ts"], {
      env: { PATH: process.env.PATH, DATABASE_URL: db.url, GRPC_PORT: port, MASTER_KEY: "hunter2-not-a-key" },
    }).catch((e) => e);
    expect(malformed.code).toBe(1);
    expect(malformed.stderr).toContain("Invalid MASTER_KEY");
    expect(malformed.stderr).toContain("url-safe base64 of 32 bytes");
    expect(malformed.stderr).not.toContain("hunter2");
  });

  it("refuses production without DATABASE_URL", async () => {
    const result = await run(TSX, ["service/src/main.ts"], { env: { PATH: process.env.PATH, NODE_ENV: "production" } }).catch((e) => e);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("NODE_ENV=production needs DATABASE_URL and MASTER_KEY");
  });

  it("in production, refuses to listen on 0.0.0.0 without TLS, naming the settings; ALLOW_PLAINTEXT=1 starts with a warning", async () => {
    const env = {
      PATH: process.env.PATH,
      NODE_ENV: "production",
      DATABASE_URL: db.url,
      MASTER_KEY: generateMasterKey(),
      HOST: "0.0.0.0",
      GRPC_PORT: String(await freePort()),
      CONNECT_PORT: String(await freePort()),
    };
    const refused = await run(TSX, ["service/src/main.ts"], { env }).catch((e) => e);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("NODE_ENV=production refuses listening on 0.0.0.0 without TLS");
    for (const setting of ["TLS_CERT_FILE", "TLS_KEY_FILE", "HOST=127.0.0.1", "ALLOW_PLAINTEXT=1"]) expect(refused.stderr).toContain(setting);

    const started = await startProcess({ ...env, ALLOW_PLAINTEXT: "1" });
    try {
      const warning = started
        .output()
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as { level: number; msg: string })
        .find((line) => line.msg.startsWith("ALLOW_PLAINTEXT=1"));
      expect(warning).toMatchObject({ level: 40, msg: expect.stringContaining("without TLS") });
      const { status } = await health(Number(env.GRPC_PORT)).check({});
      expect(status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    } finally {
      started.child.kill("SIGTERM");
      expect(await started.exited).toBe(0);
    }
  });

  it("manages tokens from the command line, printing a token once and never again", async () => {
    const env = { PATH: process.env.PATH, DATABASE_URL: db.url, MASTER_KEY: generateMasterKey() };
    const created = await run(TSX, ["service/src/cli/token.ts", "create", "--name", "gateway", "--scope", "resolve"], { env });
    const token = created.stdout.trim();
    expect(token).toMatch(/^pct_[A-Za-z0-9_-]{43}$/);
    expect(created.stderr).toContain('Created resolve token "gateway"');
    const listed = await run(TSX, ["service/src/cli/token.ts", "list"], { env });
    expect(listed.stdout).toMatch(/^gateway\s+pct_[A-Za-z0-9_-]{6}…\s+resolve\s+organisations all\s+never expires\s+last used never$/m);
    expect(listed.stdout).toContain(`${token.slice(0, 10)}…`); // its prefix, to tell which token a leaked secret is
    expect(listed.stdout).not.toContain(token);
    const duplicate = await run(TSX, ["service/src/cli/token.ts", "create", "--name", "gateway", "--scope", "admin"], { env }).catch((e) => e);
    expect(duplicate.code).toBe(1);
    expect(duplicate.stderr).toContain('a token named "gateway" already exists');
    const badScope = await run(TSX, ["service/src/cli/token.ts", "create", "--name", "x", "--scope", "root"], { env }).catch((e) => e);
    expect(badScope.stderr).toContain("scope: must be one of: resolve, admin");
    await run(TSX, ["service/src/cli/token.ts", "revoke", "gateway"], { env });
    expect(await db.query("select name from api_tokens")).toEqual([]);
    const audit = await db.query<{ action: string; actor: string }>("select action, actor from audit_events order by id");
    expect(audit.map((a) => a.action)).toEqual(["token.create", "token.revoke"]);
    expect(audit[0].actor).toMatch(/^cli:/);
  });
});
