// Secrets from files (docs/operations/secrets.md), end to end: the real service process, a
// command-line tool, the portal, and `npm start` handing the files on, with MASTER_KEY_FILE,
// SERVICE_ADMIN_TOKEN_FILE, DATABASE_URL_FILE (and ADMIN_PASSWORD_FILE) instead of the variables.
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { OrganizationService } from "@provider-credentials/wire/gen/credentials_pb";
import { generateMasterKey } from "../../service/src/keyring/keyring.js";
import { generateToken } from "../../service/src/auth/tokens.js";
import { createTestDatabase, type TestDatabase } from "../support/harness.js";
import { startTestPortal } from "../support/portal-harness.js";
import { cookieValue } from "../support/portal-harness.js";
import { freePort } from "../support/kit.js";

const run = promisify(execFile);
const TSX = path.resolve("node_modules/.bin/tsx");

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "pc-secret-files-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A file holding `content` and a trailing newline (as Docker secrets and `echo > file` leave one), with `mode`. */
async function secretFile(name: string, content: string, mode = 0o600): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, `${content}\n`);
  await chmod(file, mode);
  return file;
}

interface Started {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** Runs `args` under tsx with only `env` (and PATH, HOME) and waits for a line containing `ready`. */
async function startProcess(args: string[], env: NodeJS.ProcessEnv, ready: string, timeoutMs = 60_000): Promise<Started> {
  const child = spawn(TSX, args, { env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const deadline = Date.now() + timeoutMs;
  while (!output.includes(ready)) {
    if (child.exitCode !== null) throw new Error(`${args.join(" ")} exited early:\n${output}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`${args.join(" ")} not ready in ${timeoutMs / 1000} s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, output: () => output, exited };
}

async function stop(started: Started): Promise<number | null> {
  if (started.child.exitCode === null && started.child.signalCode === null) started.child.kill("SIGTERM");
  const timer = setTimeout(() => started.child.kill("SIGKILL"), 20_000);
  const code = await started.exited;
  clearTimeout(timer);
  return code;
}

describe("the service with its secrets in files", () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it("starts on MASTER_KEY_FILE, SERVICE_ADMIN_TOKEN_FILE and DATABASE_URL_FILE (0600), and accepts that admin token", async () => {
    const masterKey = generateMasterKey();
    const adminToken = generateToken();
    const adminPassword = "granite harbour, nine lanterns";
    const env = {
      DATABASE_URL_FILE: await secretFile("database_url", db.url),
      MASTER_KEY_FILE: await secretFile("master_key", masterKey),
      SERVICE_ADMIN_TOKEN_FILE: await secretFile("service_admin_token", adminToken),
      ADMIN_EMAIL: "owner@example.com",
      ADMIN_PASSWORD_FILE: await secretFile("admin_password", adminPassword),
    };
    const port = await freePort();
    const service = await startProcess(
      ["service/src/main.ts"],
      { ...env, GRPC_PORT: String(port), CONNECT_PORT: String(await freePort()) },
      "credentials service ready",
    );
    try {
      const organizations = createClient(
        OrganizationService,
        createGrpcTransport({
          baseUrl: `http://127.0.0.1:${port}`,
          interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${adminToken}`), next(req))],
        }),
      );
      await organizations.createOrganization({ organizationId: "org-from-files", name: "From files" });
      const { organizations: listed } = await organizations.listOrganizations({});
      expect(listed.map((o) => o.organizationId)).toContain("org-from-files");
      // The token with its newline would not be a token: one trailing newline was stripped.
      const wrong = createClient(
        OrganizationService,
        createGrpcTransport({
          baseUrl: `http://127.0.0.1:${port}`,
          interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${generateToken()}`), next(req))],
        }),
      );
      await expect(wrong.listOrganizations({})).rejects.toThrow();
      // The first administrator came from ADMIN_EMAIL and ADMIN_PASSWORD_FILE; the database is the one in the file.
      expect(service.output()).toContain("first administrator owner@example.com created from ADMIN_EMAIL and ADMIN_PASSWORD");
      const rows = await db.query<{ n: number }>("select count(*)::int as n from organizations where id = 'org-from-files'");
      expect(rows[0].n).toBe(1);
      // 0600 files: no warning; and no secret in the output.
      expect(service.output()).not.toContain("is readable by");
      for (const value of [masterKey, adminToken, adminPassword, db.url]) expect(service.output()).not.toContain(value);
    } finally {
      expect(await stop(service)).toBe(0);
    }

    // A command-line tool reads the same files (npm run verify-keys: the database and the master key).
    const verified = await run(TSX, ["service/src/cli/verify-keys.ts"], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, DATABASE_URL_FILE: env.DATABASE_URL_FILE, MASTER_KEY_FILE: env.MASTER_KEY_FILE },
    });
    expect(`${verified.stdout}${verified.stderr}`).not.toContain(masterKey);
  }, 120_000);

  it("warns once about a file readable by others, naming the file and its mode, never the content", async () => {
    const masterKey = generateMasterKey();
    const masterKeyFile = await secretFile("master_key_0644", masterKey, 0o644);
    const service = await startProcess(
      ["service/src/main.ts"],
      {
        DATABASE_URL_FILE: await secretFile("database_url_2", db.url),
        MASTER_KEY_FILE: masterKeyFile,
        GRPC_PORT: String(await freePort()),
        CONNECT_PORT: String(await freePort()),
      },
      "credentials service ready",
    );
    try {
      const warnings = service
        .output()
        .split("\n")
        .filter((line) => line.includes("is readable by"));
      expect(warnings).toHaveLength(1);
      const warning = JSON.parse(warnings[0]) as { level: number | string; msg: string; variable: string; file: string; mode: string };
      expect(warning).toMatchObject({ variable: "MASTER_KEY_FILE", file: masterKeyFile, mode: "0644" });
      expect(warning.msg).toContain(`MASTER_KEY_FILE: ${masterKeyFile} is readable by others (mode 0644)`);
      expect(service.output()).not.toContain(masterKey);
    } finally {
      expect(await stop(service)).toBe(0);
    }
  }, 120_000);

  it("refuses a secret set both ways, and a file it cannot read, naming them, before touching the database", async () => {
    const masterKey = generateMasterKey();
    const masterKeyFile = await secretFile("master_key_both", masterKey);
    const both = await run(TSX, ["service/src/main.ts"], {
      env: { PATH: process.env.PATH, DATABASE_URL: db.url, MASTER_KEY: masterKey, MASTER_KEY_FILE: masterKeyFile, GRPC_PORT: String(await freePort()) },
    }).catch((e: { code: number; stdout: string; stderr: string }) => e);
    expect("code" in both && both.code).toBe(1);
    expect(both.stderr).toContain("MASTER_KEY and MASTER_KEY_FILE are both set: set one of them");
    expect(`${both.stdout}${both.stderr}`).not.toContain(masterKey);

    const missing = path.join(dir, "no-such-database-url");
    const unreadable = await run(TSX, ["service/src/main.ts"], {
      env: { PATH: process.env.PATH, DATABASE_URL_FILE: missing, MASTER_KEY_FILE: masterKeyFile, GRPC_PORT: String(await freePort()) },
    }).catch((e: { code: number; stdout: string; stderr: string }) => e);
    expect("code" in unreadable && unreadable.code).toBe(1);
    expect(unreadable.stderr).toContain(`DATABASE_URL_FILE: cannot read ${missing} (ENOENT: no such file or directory)`);

    // The command-line tools apply the same rule (exit 2: a configuration problem).
    const cli = await run(TSX, ["service/src/cli/migrate.ts"], {
      env: { PATH: process.env.PATH, DATABASE_URL: db.url, DATABASE_URL_FILE: masterKeyFile },
    }).catch((e: { code: number; stdout: string; stderr: string }) => e);
    expect("code" in cli && cli.code).toBe(2);
    expect(cli.stderr).toContain("DATABASE_URL and DATABASE_URL_FILE are both set: set one of them");
    expect(`${cli.stdout}${cli.stderr}`).not.toContain(masterKey);
  }, 120_000);
});

describe("the portal with SERVICE_ADMIN_TOKEN_FILE", () => {
  it("talks to the service with the token from the file (an administrator signs in through it)", async () => {
    const adminToken = generateToken();
    const tokenFile = await secretFile("portal_token", adminToken);
    const portal = await startTestPortal({ adminToken, portalEnv: { SERVICE_ADMIN_TOKEN: "", SERVICE_ADMIN_TOKEN_FILE: tokenFile } });
    try {
      await portal.createAdmin("carol@example.com", "velvet compass under amber rain");
      const { session } = await portal.signIn("carol@example.com", "velvet compass under amber rain");
      expect(session, "a session from a sign-in the portal made with the token from the file").toBeTruthy();
      expect(portal.output.join("\n")).not.toContain("SERVICE_ADMIN_TOKEN is not set");
      expect(portal.output.join("\n")).not.toContain("is readable by");
      expect(portal.output.join("\n")).not.toContain(adminToken);
    } finally {
      await portal.close();
    }
  }, 120_000);
});

/** The environment of a process, as anyone who may read /proc/<pid>/environ sees it. */
async function environmentOf(pid: number): Promise<Map<string, string>> {
  const raw = await readFile(`/proc/${pid}/environ`, "utf8");
  return new Map(
    raw
      .split("\0")
      .filter(Boolean)
      .map((entry) => [entry.slice(0, entry.indexOf("=")), entry.slice(entry.indexOf("=") + 1)]),
  );
}

async function parentOf(pid: number): Promise<number | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => undefined);
  // pid (comm) state ppid ...: comm may hold spaces and parentheses, so read after its last ")".
  return stat === undefined ? undefined : Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

/** The pid of a process under `ancestor` (tsx runs its script in a child) whose command line ends with `script`. */
async function descendantRunning(ancestor: number, script: string): Promise<number | undefined> {
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    if (!cmdline.split("\0").some((arg) => arg.endsWith(script))) continue;
    for (let p: number | undefined = Number(entry), depth = 0; p !== undefined && p > 1 && depth < 10; p = await parentOf(p), depth++) {
      if (p === ancestor) return Number(entry);
    }
  }
  return undefined;
}

describe("npm start with its secrets in files", () => {
  let db: TestDatabase;
  let started: Started | undefined;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    if (started) await stop(started);
    await db?.drop();
  });

  it("hands SERVICE_ADMIN_TOKEN_FILE to the portal (no token, no other secret in its environment), and the portal uses it", async () => {
    const masterKey = generateMasterKey();
    const adminToken = generateToken();
    const adminPassword = "saffron glacier, eleven owls";
    const dataDir = await mkdtemp(path.join(dir, "data-"));
    const [grpcPort, connectPort, portalPort, metricsPort] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    const tokenFile = await secretFile("start_token", adminToken);
    started = await startProcess(
      ["service/src/cli/start.ts"],
      {
        DATA_DIR: dataDir,
        GRPC_PORT: String(grpcPort),
        CONNECT_PORT: String(connectPort),
        PORTAL_PORT: String(portalPort),
        METRICS_PORT: String(metricsPort),
        DATABASE_URL_FILE: await secretFile("start_database_url", db.url),
        MASTER_KEY_FILE: await secretFile("start_master_key", masterKey),
        SERVICE_ADMIN_TOKEN_FILE: tokenFile,
        ADMIN_EMAIL: "dana@example.com",
        ADMIN_PASSWORD_FILE: await secretFile("start_admin_password", adminPassword),
      },
      "Provider Credentials is running.",
      170_000,
    );
    const portalPid = await descendantRunning(started.child.pid!, path.join("portal", "server.js"));
    expect(portalPid, "the portal, a child of npm start").toBeDefined();
    const environment = await environmentOf(portalPid!);
    expect(environment.get("SERVICE_ADMIN_TOKEN_FILE")).toBe(tokenFile);
    expect(environment.has("SERVICE_ADMIN_TOKEN")).toBe(false);
    for (const name of ["DATABASE_URL_FILE", "MASTER_KEY_FILE", "ADMIN_PASSWORD_FILE", "ADMIN_EMAIL"]) expect(environment.has(name), name).toBe(false);
    const text = [...environment].map(([name, value]) => `${name}=${value}`).join("\n");
    for (const value of [masterKey, adminToken, adminPassword, db.url]) expect(text).not.toContain(value);

    // The portal signs the first administrator (from ADMIN_PASSWORD_FILE) in with the token it read from the file.
    const origin = `http://127.0.0.1:${portalPort}`;
    const response = await fetch(`${origin}/login`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", origin, accept: "text/html" },
      body: new URLSearchParams({ email: "dana@example.com", password: adminPassword }).toString(),
      redirect: "manual",
    });
    expect(cookieValue(response.headers, "pc_session"), `sign-in answered ${response.status}`).toBeTruthy();
    for (const value of [masterKey, adminToken, adminPassword, db.url]) expect(started.output()).not.toContain(value);
  }, 200_000);
});
