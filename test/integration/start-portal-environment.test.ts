import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateMasterKey } from "../../service/src/keyring/keyring.js";
import { createTestDatabase, type TestDatabase } from "../support/harness.js";
import { freePort } from "../support/kit.js";

// `npm start` runs the service and the portal as two processes. The portal holds no database
// connection and no master key: its environment, as the kernel shows it in /proc/<pid>/environ,
// carries none of the service's secrets.

const TSX = path.resolve("node_modules/.bin/tsx");

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
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    // pid (comm) state ppid ...: comm may hold spaces and parentheses, so read after its last ")".
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return undefined;
  }
}

/** The processes whose command line runs portal/server.js and that descend from `ancestor`. */
async function portalProcessesUnder(ancestor: number): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (!cmdline.split("\0").some((arg) => arg.endsWith(path.join("portal", "server.js")))) continue;
    for (let p: number | undefined = pid, depth = 0; p !== undefined && p > 1 && depth < 10; p = await parentOf(p), depth++) {
      if (p === ancestor) {
        found.push(pid);
        break;
      }
    }
  }
  return found;
}

/** `npm start` as an operator runs it, on free ports, once it has printed its whole summary. */
interface NpmStart {
  child: ChildProcess;
  ports: { grpc: number; connect: number; portal: number; metrics: number };
  /** Everything it printed so far, stdout and stderr. */
  output(): string;
  /** SIGTERM, then SIGKILL after 20 s, and wait for it to exit. */
  stop(): Promise<void>;
}

async function npmStart(env: Record<string, string | undefined>): Promise<NpmStart> {
  const [grpc, connect, portal, metrics] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  const child = spawn(TSX, ["service/src/cli/start.ts"], {
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      GRPC_PORT: String(grpc),
      CONNECT_PORT: String(connect),
      PORTAL_PORT: String(portal),
      METRICS_PORT: String(metrics),
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const run: NpmStart = {
    child,
    ports: { grpc, connect, portal, metrics },
    output: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      await exited;
      clearTimeout(timer);
    },
  };
  const deadline = Date.now() + 170_000;
  while (!output.includes("Press Ctrl-C to stop.")) {
    if (child.exitCode !== null) throw new Error(`npm start exited early:\n${output}`);
    if (Date.now() > deadline) {
      await run.stop();
      throw new Error(`npm start was not ready in time:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return run;
}

describe("npm start: the portal's environment", () => {
  let db: TestDatabase;
  let dataDir: string;
  let run: NpmStart | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = await mkdtemp(path.join(tmpdir(), "pc-start-env-"));
  });
  afterAll(async () => {
    await run?.stop();
    await db?.drop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("holds neither MASTER_KEY nor DATABASE_URL nor any other secret of the service, only what the portal reads", async () => {
    const secrets: Record<string, string> = {
      DATABASE_URL: db.url,
      MASTER_KEY: generateMasterKey(),
      OPENAI_API_KEY: `sk-proj-${"fallbackkey".repeat(4)}`,
      ANTHROPIC_API_KEY: `sk-ant-api03-${"fallbackkey".repeat(4)}`,
      ADMIN_EMAIL: "first-admin@example.com",
      ADMIN_PASSWORD: "first admin's long passphrase",
      PGPASSWORD: "a libpq password",
    };
    const serviceAdminToken = `pc_admin_${"t".repeat(40)}`;
    // As an operator runs it: the whole environment of the shell, secrets included, handed to `npm start`.
    run = await npmStart({ DATA_DIR: dataDir, SERVICE_ADMIN_TOKEN: serviceAdminToken, ...secrets });
    const { grpc: grpcPort, portal: portalPort } = run.ports;

    const portals = await portalProcessesUnder(run.child.pid!);
    expect(portals, "one portal process under npm start").toHaveLength(1);
    const environment = await environmentOf(portals[0]);

    // What it needs is there (so this reads the right process) ...
    expect(environment.get("SERVICE_ADMIN_TOKEN")).toBe(serviceAdminToken);
    expect(environment.get("PORTAL_PORT")).toBe(String(portalPort));
    expect(environment.get("CREDENTIALS_SERVICE_URL")).toBe(`http://127.0.0.1:${grpcPort}`);
    // ... and nothing of the service's: no name, and no value anywhere.
    const text = [...environment].map(([name, value]) => `${name}=${value}`).join("\n");
    for (const [name, value] of Object.entries(secrets)) {
      expect(environment.has(name), name).toBe(false);
      expect(text, `the value of ${name}`).not.toContain(value);
    }
    for (const name of ["DATA_DIR", "GRPC_PORT", "CONNECT_PORT", "METRICS_PORT"]) expect(environment.has(name), name).toBe(false);

    // And the portal works with what it has.
    const health = await fetch(`http://127.0.0.1:${portalPort}/healthz`);
    expect(health.status).toBe(200);
  }, 200_000);
});

describe("npm start with LOG_LEVEL=warn", () => {
  let dataDir: string;
  let run: NpmStart | undefined;

  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "pc-start-quiet-"));
  });
  afterAll(async () => {
    await run?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  // On the embedded default, as a first `npm start` runs: the first administrator's password is generated and shown once.
  it("still says where to sign in, with the first administrator's password, though the service logs no info line", async () => {
    run = await npmStart({ DATA_DIR: dataDir, LOG_LEVEL: "warn" });
    const output = run.output();
    const portalPort = run.ports.portal;
    // The service's info lines (its "ready" line among them) are not logged ...
    expect(output).not.toContain("credentials service ready");
    // ... yet the summary names the portal and gives the generated password, once.
    const summary = output.slice(output.indexOf("Provider Credentials is running."));
    expect(summary).toContain(`http://127.0.0.1:${portalPort}`);
    const password = /First administrator created\. Sign in to the portal as (\S+) with password: (\S+)/.exec(summary);
    expect(password, summary).not.toBeNull();
    expect(output.split(password![2]).length - 1).toBe(1);
    // And the password signs in (the /login form, as a browser posts it: a session cookie and a redirect).
    const portal = `http://127.0.0.1:${portalPort}`;
    const signIn = await fetch(`${portal}/login`, {
      method: "POST",
      redirect: "manual",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: portal, accept: "text/html" },
      body: new URLSearchParams({ email: password![1], password: password![2] }).toString(),
    });
    expect(signIn.status).toBe(303);
    expect(signIn.headers.getSetCookie().some((cookie) => cookie.startsWith("pc_session="))).toBe(true);
  }, 200_000);
});
