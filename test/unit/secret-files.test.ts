// Secrets from files (docs/operations/secrets.md): the service (TypeScript) and the portal (plain
// JavaScript) each have the rule in a small module; the same cases run against both.
import { chmod, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as service from "../../service/src/runtime/secret-files.js";
import * as portal from "../../portal/src/lib/server/secret-files.js";
import { ConfigError } from "../../service/src/runtime/config.js";

const SECRET = "gAAAA-the-secret-value-0123456789abcdefghij=";

const implementations = [
  ["the service (service/src/runtime/secret-files.ts)", service, ConfigError],
  ["the portal (portal/src/lib/server/secret-files.js)", portal, portal.SecretFileError],
] as const;

describe.each(implementations)("secrets from files: %s", (_, impl, ErrorClass) => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "pc-secret-files-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function secretFile(name: string, content: string | Buffer, mode = 0o600): Promise<string> {
    const file = path.join(dir, name);
    await writeFile(file, content);
    await chmod(file, mode);
    return file;
  }

  /** The error `fn` throws, checked to be the module's configuration error and to carry no secret. */
  function refusal(fn: () => unknown): string {
    let caught: unknown;
    try {
      fn();
    } catch (error) {
      caught = error;
    }
    expect(caught, "refused").toBeInstanceOf(ErrorClass);
    const message = (caught as Error).message;
    expect(message).not.toContain(SECRET);
    expect(message).not.toContain("the-secret-value");
    return message;
  }

  it("reads NAME_FILE as NAME, stripping one trailing newline (Docker secrets, echo > file)", async () => {
    const lf = await secretFile("lf", `${SECRET}\n`);
    const crlf = await secretFile("crlf", `${SECRET}\r\n`);
    const bare = await secretFile("bare", SECRET);
    expect(
      impl.readSecretFiles({ MASTER_KEY_FILE: lf, DATABASE_URL_FILE: crlf, SERVICE_ADMIN_TOKEN_FILE: bare }, [
        "MASTER_KEY",
        "DATABASE_URL",
        "SERVICE_ADMIN_TOKEN",
      ]),
    ).toEqual({
      values: { MASTER_KEY: SECRET, DATABASE_URL: SECRET, SERVICE_ADMIN_TOKEN: SECRET },
      warnings: [],
    });
  });

  it("strips only one newline, and keeps other whitespace as the value's own", async () => {
    const two = await secretFile("two-newlines", `${SECRET}\n\n`);
    const spaced = await secretFile("spaced", ` ${SECRET} \n`);
    const { values } = impl.readSecretFiles({ A_FILE: two, B_FILE: spaced }, ["A", "B"]);
    expect(values).toEqual({ A: `${SECRET}\n`, B: ` ${SECRET} ` });
  });

  it("ignores names not listed, and NAME_FILE unset or empty", async () => {
    const file = await secretFile("unlisted", SECRET);
    expect(impl.readSecretFiles({ OTHER_FILE: file, MASTER_KEY_FILE: "" }, ["MASTER_KEY"])).toEqual({ values: {}, warnings: [] });
  });

  it("refuses NAME and NAME_FILE both set, naming both", async () => {
    const file = await secretFile("both", SECRET);
    const message = refusal(() => impl.readSecretFiles({ MASTER_KEY: SECRET, MASTER_KEY_FILE: file }, ["MASTER_KEY"]));
    expect(message).toBe("MASTER_KEY and MASTER_KEY_FILE are both set: set one of them");
    // An empty variable counts as unset (as everywhere in the settings).
    expect(impl.readSecretFiles({ MASTER_KEY: "", MASTER_KEY_FILE: file }, ["MASTER_KEY"]).values).toEqual({ MASTER_KEY: SECRET });
  });

  it("refuses a missing file, naming the variable, the file and the reason", () => {
    const missing = path.join(dir, "no-such-file");
    expect(refusal(() => impl.readSecretFiles({ DATABASE_URL_FILE: missing }, ["DATABASE_URL"]))).toBe(
      `DATABASE_URL_FILE: cannot read ${missing} (ENOENT: no such file or directory)`,
    );
  });

  it.runIf(process.getuid?.() !== 0)("refuses a file it may not read, naming the file and the reason (EACCES)", async () => {
    const file = await secretFile("unreadable", SECRET, 0o000);
    expect(refusal(() => impl.readSecretFiles({ MASTER_KEY_FILE: file }, ["MASTER_KEY"]))).toBe(
      `MASTER_KEY_FILE: cannot read ${file} (EACCES: permission denied)`,
    );
  });

  it("refuses a directory, an empty file, a file that is not UTF-8 text, and one too large", async () => {
    expect(refusal(() => impl.readSecretFiles({ MASTER_KEY_FILE: dir }, ["MASTER_KEY"]))).toBe(`MASTER_KEY_FILE: ${dir} is not a regular file`);
    const empty = await secretFile("empty", "\n");
    expect(refusal(() => impl.readSecretFiles({ MASTER_KEY_FILE: empty }, ["MASTER_KEY"]))).toBe(`MASTER_KEY_FILE: ${empty} is empty`);
    const binary = await secretFile("binary", Buffer.concat([Buffer.from(SECRET), Buffer.from([0xff, 0xfe])]));
    expect(refusal(() => impl.readSecretFiles({ MASTER_KEY_FILE: binary }, ["MASTER_KEY"]))).toBe(`MASTER_KEY_FILE: ${binary} is not UTF-8 text`);
    const nul = await secretFile("nul", `${SECRET}\0`);
    expect(refusal(() => impl.readSecretFiles({ MASTER_KEY_FILE: nul }, ["MASTER_KEY"]))).toBe(`MASTER_KEY_FILE: ${nul} holds a NUL byte`);
    const large = await secretFile("large", SECRET.repeat(Math.ceil((impl.MAX_SECRET_FILE_BYTES + 1) / SECRET.length)));
    expect(refusal(() => impl.readSecretFiles({ MASTER_KEY_FILE: large }, ["MASTER_KEY"]))).toBe(
      `MASTER_KEY_FILE: ${large} is larger than ${impl.MAX_SECRET_FILE_BYTES} bytes`,
    );
  });

  it("warns, without the content, about a file readable by others (0644) or its group (0640), and not about 0600 or 0400", async () => {
    const world = await secretFile("world", SECRET, 0o644);
    const group = await secretFile("group", SECRET, 0o640);
    const owner = await secretFile("owner", SECRET, 0o600);
    const readOnly = await secretFile("read-only", SECRET, 0o400);
    const { values, warnings } = impl.readSecretFiles(
      { MASTER_KEY_FILE: world, DATABASE_URL_FILE: group, SERVICE_ADMIN_TOKEN_FILE: owner, ADMIN_PASSWORD_FILE: readOnly },
      ["MASTER_KEY", "DATABASE_URL", "SERVICE_ADMIN_TOKEN", "ADMIN_PASSWORD"],
    );
    expect(values.MASTER_KEY).toBe(SECRET);
    expect(warnings).toEqual([
      {
        variable: "MASTER_KEY_FILE",
        file: world,
        mode: "0644",
        message: `MASTER_KEY_FILE: ${world} is readable by others (mode 0644); make it 0400 or 0600, owned by the user that runs this process`,
      },
      {
        variable: "DATABASE_URL_FILE",
        file: group,
        mode: "0640",
        message: `DATABASE_URL_FILE: ${group} is readable by its group (mode 0640); make it 0400 or 0600, owned by the user that runs this process`,
      },
    ]);
    expect(JSON.stringify(warnings)).not.toContain(SECRET);
  });

  it("follows a symbolic link (Kubernetes' ..data links) and checks the mode of the file it points to", async () => {
    const target = await secretFile("target", `${SECRET}\n`, 0o644);
    const link = path.join(dir, "link");
    await symlink(target, link);
    const { values, warnings } = impl.readSecretFiles({ MASTER_KEY_FILE: link }, ["MASTER_KEY"]);
    expect(values).toEqual({ MASTER_KEY: SECRET });
    expect(warnings.map((w) => w.mode)).toEqual(["0644"]);
  });

  it("applySecretFiles turns NAME_FILE into NAME in the environment itself, so nothing reads the file (or warns) twice", async () => {
    const file = await secretFile("apply", `${SECRET}\n`, 0o644);
    const env: Record<string, string | undefined> = { MASTER_KEY_FILE: file, GRPC_PORT: "1234" };
    expect(impl.applySecretFiles(env, ["MASTER_KEY"]).map((w) => w.variable)).toEqual(["MASTER_KEY_FILE"]);
    expect(env).toEqual({ MASTER_KEY: SECRET, GRPC_PORT: "1234" });
    expect(impl.applySecretFiles(env, ["MASTER_KEY"])).toEqual([]);
    expect(env).toEqual({ MASTER_KEY: SECRET, GRPC_PORT: "1234" });
  });
});
