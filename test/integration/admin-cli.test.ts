import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, createClient } from "@connectrpc/connect";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import { rpcError, startTestService, type TestService } from "../support/harness.js";

// `npm run admin` as an operator runs it, against the database of a running service.

const run = promisify(execFile);
const TSX = path.resolve("node_modules/.bin/tsx");
const STRONG = "juniper kites over granite hills";

let t: TestService;

/** Runs `npm run admin -- <args>` to its end: exit code and output. */
async function adminCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(TSX, ["service/src/cli/admin.ts", ...args], {
      env: { PATH: process.env.PATH, DATABASE_URL: t.db.url, MASTER_KEY: t.masterKey, LOG_LEVEL: "warn", npm_lifecycle_event: "admin", ...env },
      timeout: 60_000,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

beforeAll(async () => {
  t = await startTestService();
});
afterAll(async () => {
  await t?.close();
});

describe("npm run admin", () => {
  it("refuses a weak ADMIN_PASSWORD naming the variable and why, without repeating it, and creates nothing", async () => {
    const cases: Array<[string, string]> = [
      ["short pass", "Error: ADMIN_PASSWORD: must be at least 12 characters"],
      ["aaaaaaaaaaaa", "Error: ADMIN_PASSWORD: is too easy to guess"],
      ["operator-long-secret-42", "Error: ADMIN_PASSWORD: must not contain the administrator's email address or the part of it before the @"],
    ];
    for (const [weak, message] of cases) {
      const result = await adminCli(["create", "--email", "operator@example.com"], { ADMIN_PASSWORD: weak });
      expect(result.code, weak).toBe(1);
      expect(result.stderr, weak).toContain(message);
      expect(result.stderr + result.stdout, weak).not.toContain(weak);
    }
    expect(await t.db.query("select email from admin_users")).toEqual([]);
    const reset = await adminCli(["reset-password", "--email", "operator@example.com"], { ADMIN_PASSWORD: "aaaaaaaaaaaa" });
    expect(reset.stderr).toContain("Error: ADMIN_PASSWORD: is too easy to guess");
  });

  it("creates with a strong ADMIN_PASSWORD, and remove ends the account's sessions but never removes the last administrator", async () => {
    expect((await adminCli(["create", "--email", "operator@example.com"], { ADMIN_PASSWORD: STRONG })).code).toBe(0);
    const second = await adminCli(["create", "--email", "helper@example.com"]);
    expect(second.code).toBe(0);
    const generated = /Password \(shown only this once\): (\S+)/.exec(second.stdout)![1];

    const client = createClient(AdminService, t.transport("grpc", t.adminToken));
    const { sessionToken } = await client.signIn({ email: "helper@example.com", password: generated, source: "127.0.0.1" });
    await client.signIn({ email: "operator@example.com", password: STRONG, source: "127.0.0.1" });

    const removed = await adminCli(["remove", "--email", "helper@example.com"]);
    expect(removed.code, removed.stderr).toBe(0);
    expect(removed.stderr).toContain("Removed administrator helper@example.com; 1 session ended.");
    expect((await rpcError(client.getSession({ sessionToken }))).code).toBe(Code.Unauthenticated);
    const [row] = await t.db.query("select actor, action, target from audit_events where action = 'admin.remove'");
    expect(row).toMatchObject({ action: "admin.remove", target: "helper@example.com" });
    expect(String(row.actor)).toMatch(/^cli:/);

    const last = await adminCli(["remove", "--email", "operator@example.com"]);
    expect(last.code).toBe(1);
    expect(last.stderr).toContain('Error: email: "operator@example.com" is the last administrator and cannot be removed; create another one first');
    const unknown = await adminCli(["remove", "--email", "nobody@example.com"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('Error: email: no administrator with email "nobody@example.com"');
    expect((await adminCli(["remove"])).code).toBe(2);
    expect((await adminCli(["list"])).stdout).toContain("operator@example.com");
  });
});
