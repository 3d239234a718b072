// The Python client (clients/python) against the real service: its unittest suites run in a
// python3 child process with the service's address and tokens in environment variables, over
// cleartext HTTP/2, TLS and mutual TLS; and its generated code is current.
//
// Needs a python3 with grpcio and protobuf (Debian 12: apt-get install python3-grpcio
// python3-protobuf; .ci/steps/python-client.sh). Without them these tests are skipped with a
// message, unless PYTHON_CLIENT_REQUIRED=1 (CI), where that fails.
import { makeTestCertificates } from "../support/certificates.js";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import { Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { tlsFromEnv } from "../../service/src/runtime/tls.js";
import { FAKE_KEYS, startTestService, type TestService } from "../support/harness.js";

const CLIENT_DIR = path.resolve("clients/python");
const REQUIRED = process.env.PYTHON_CLIENT_REQUIRED === "1";

/** The first python3 that has grpcio and protobuf: $PYTHON, python3 on PATH (maybe pyenv's), Debian's. */
function findPython(): string | undefined {
  const candidates = [process.env.PYTHON, "python3", "/usr/bin/python3"].filter((c): c is string => Boolean(c));
  return candidates.find((c) => spawnSync(c, ["-c", "import grpc, google.protobuf"], { stdio: "ignore" }).status === 0);
}
const python = findPython();
const MISSING = "no python3 with grpcio and protobuf (apt-get install python3-grpcio python3-protobuf): the Python client tests are skipped";
if (!python && !REQUIRED) console.log(`[client-python] ${MISSING}`);

const hasGenerator = spawnSync("sh", ["-c", "command -v protoc && command -v grpc_python_plugin"], { stdio: "ignore" }).status === 0;

interface PythonRun {
  code: number | null;
  output: string;
  ran: number;
  ok: boolean;
}

/** Runs `python3 -m unittest -v <modules>` in clients/python with `env`; its exit code, output and count. */
function runUnittest(modules: string[], env: Record<string, string>): Promise<PythonRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(python!, ["-m", "unittest", "-v", ...modules], {
      cwd: CLIENT_DIR,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", PYTHONDONTWRITEBYTECODE: "1", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr.on("data", (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 170_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      const ran = Number(/^Ran (\d+) tests? in /m.exec(output)?.[1] ?? 0);
      // "OK" alone: no failure, no error and nothing skipped.
      resolve({ code, output, ran, ok: /^OK$/m.test(output) });
    });
  });
}

/** A failed run shows Python's own report. */
function expectPassed(run: PythonRun, count: number): void {
  if (run.code !== 0 || !run.ok || run.ran !== count) console.error(run.output);
  expect({ code: run.code, ok: run.ok, ran: run.ran }).toEqual({ code: 0, ok: true, ran: count });
}

describe("the Python client's prerequisites", () => {
  it("finds python3 with grpcio and protobuf (required when PYTHON_CLIENT_REQUIRED=1)", () => {
    if (REQUIRED) expect(python, MISSING).toBeDefined();
  });

  it.skipIf(!hasGenerator && !REQUIRED)("has generated code that matches proto/credentials.proto", () => {
    const out = execFileSync("bash", [path.join(CLIENT_DIR, "generate.sh"), "--check"], { encoding: "utf8", stdio: "pipe" });
    expect(out).toContain("generated code is current");
  });
});

describe.skipIf(!python)("the Python client against the service over cleartext HTTP/2", () => {
  let t: TestService;
  /** A second replica of the same deployment (same database, master key and admin token). */
  let replica: TestService;
  const fallbackKey = `sk-ant-env-${randomBytes(20).toString("base64url")}`;
  const env: Record<string, string> = {};

  beforeAll(async () => {
    // The Anthropic fallback is set; Gemini's is not (no key).
    t = await startTestService({ env: { ANTHROPIC_API_KEY: fallbackKey }, failureThreshold: 3 });
    replica = await startTestService({ env: { ANTHROPIC_API_KEY: fallbackKey }, db: t.db, masterKey: t.masterKey, adminToken: t.adminToken });
    const { credentials, organizations } = t.clients();
    await organizations.createOrganization({ organizationId: "acme", name: "Acme" });
    await organizations.createTeam({ teamId: "acme-platform", organizationId: "acme", name: "Platform" });
    const key = FAKE_KEYS.openai();
    const created = await credentials.createCredential({
      organizationId: "acme",
      provider: Provider.OPENAI,
      credentialName: "main",
      apiKey: key,
      apiBase: "https://llm-proxy.acme.test/v1",
    });
    const admin = createClient(AdminService, t.transport("grpc", t.adminToken));
    const resolveToken = (await admin.createApiToken({ name: "python-gateway", scope: "resolve" })).token;
    Object.assign(env, {
      PC_URL: `http://${t.address}`,
      PC_REPLICA_URL: `http://${replica.address}`,
      PC_ADMIN_TOKEN: t.adminToken,
      PC_RESOLVE_TOKEN: resolveToken,
      PC_FALLBACK_KEY: fallbackKey,
      PC_SEED: JSON.stringify({
        organization_id: "acme",
        team_id: "acme-platform",
        openai_key: key,
        openai_credential_id: created.credential!.credentialId,
        api_base: "https://llm-proxy.acme.test/v1",
      }),
    });
  });
  afterAll(async () => {
    await replica?.close();
    await t?.close();
  });

  it("resolves every case, reports failures and successes, and never shows a key", async () => {
    expectPassed(await runUnittest(["tests.test_resolve"], env), 17);
    // The seeded key went to Python and back, but never into the service's logs.
    expect(t.logs.join("\n")).not.toContain(JSON.parse(env.PC_SEED).openai_key);
  }, 180_000);

  it("drops cached answers on the change stream's events and honours the staleness limit while it is down", async () => {
    expectPassed(await runUnittest(["tests.test_stream"], env), 14);
  }, 180_000);

  it("runs the LiteLLM proxy hook's and secret manager's logic", async () => {
    expectPassed(await runUnittest(["tests.test_litellm"], env), 7);
  }, 180_000);
});

describe.skipIf(!python)("the Python client over TLS and mutual TLS", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "pc-py-tls-"));
  const file = (name: string) => path.join(dir, name);
  let tls: TestService;
  let mtls: TestService;

  beforeAll(async () => {
    makeTestCertificates(dir);
    tls = await startTestService({ tls: tlsFromEnv({ TLS_CERT_FILE: file("server.pem"), TLS_KEY_FILE: file("server.key") }) });
    mtls = await startTestService({
      tls: tlsFromEnv({ TLS_CERT_FILE: file("server.pem"), TLS_KEY_FILE: file("server.key"), TLS_CLIENT_CA_FILE: file("ca.pem") }),
    });
  });
  afterAll(async () => {
    await Promise.all([tls?.close(), mtls?.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  it("resolves over TLS trusting the CA, and with a client certificate over mutual TLS; refuses otherwise", async () => {
    const seeded: Record<string, string> = {};
    for (const [label, svc] of [
      ["TLS", tls],
      ["MTLS", mtls],
    ] as const) {
      // The Python tests seed their data themselves, over TLS, with the admin token.
      seeded[`PC_${label}_URL`] = `https://${svc.address}`;
      seeded[`PC_${label}_ADMIN_TOKEN`] = svc.adminToken;
    }
    const run = await runUnittest(["tests.test_tls"], {
      ...seeded,
      PC_TLS_CA: file("ca.pem"),
      PC_CLIENT_CERT: file("client.pem"),
      PC_CLIENT_KEY: file("client.key"),
    });
    expectPassed(run, 4);
  }, 180_000);
});
