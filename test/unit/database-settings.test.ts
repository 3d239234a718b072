// DATABASE_LISTEN_URL and DATABASE_PREPARED_STATEMENTS (docs/operations/pgbouncer.md).
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { loadSettings, usePreparedStatements } from "../../service/src/runtime/settings.js";
import { ConfigError } from "../../service/src/runtime/config.js";

const DIRECT = "postgres://u:p@postgres:5432/credentials";
const POOLED = "postgres://u:p@pgbouncer:6432/credentials";

describe("DATABASE_LISTEN_URL", () => {
  it("is unset by default (DATABASE_URL listens), and may come from a file", async () => {
    expect(loadSettings({}).DATABASE_LISTEN_URL).toBeUndefined();
    expect(loadSettings({ DATABASE_LISTEN_URL: DIRECT }).DATABASE_LISTEN_URL).toBe(DIRECT);
    const dir = await mkdtemp(path.join(tmpdir(), "pc-listen-url-"));
    try {
      const file = path.join(dir, "listen_url");
      await writeFile(file, `${DIRECT}\n`);
      await chmod(file, 0o600);
      expect(loadSettings({ DATABASE_LISTEN_URL_FILE: file }).DATABASE_LISTEN_URL).toBe(DIRECT);
      expect(() => loadSettings({ DATABASE_LISTEN_URL_FILE: file, DATABASE_LISTEN_URL: DIRECT })).toThrow(
        "DATABASE_LISTEN_URL and DATABASE_LISTEN_URL_FILE are both set: set one of them",
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("DATABASE_PREPARED_STATEMENTS", () => {
  it("accepts 1 and 0 and refuses anything else, naming the variable", () => {
    expect(loadSettings({ DATABASE_PREPARED_STATEMENTS: "1" }).DATABASE_PREPARED_STATEMENTS).toBe(true);
    expect(loadSettings({ DATABASE_PREPARED_STATEMENTS: "0" }).DATABASE_PREPARED_STATEMENTS).toBe(false);
    expect(loadSettings({}).DATABASE_PREPARED_STATEMENTS).toBeUndefined();
    expect(() => loadSettings({ DATABASE_PREPARED_STATEMENTS: "yes" })).toThrow(ConfigError);
    expect(() => loadSettings({ DATABASE_PREPARED_STATEMENTS: "yes" })).toThrow("DATABASE_PREPARED_STATEMENTS must be 1 or 0 (or unset)");
  });

  it("defaults to on, and to off when a separate listen URL says a pooler is in front of DATABASE_URL", () => {
    const use = (env: NodeJS.ProcessEnv, databaseUrl: string) => usePreparedStatements(loadSettings(env), databaseUrl);
    expect(use({}, DIRECT)).toBe(true);
    expect(use({ DATABASE_LISTEN_URL: DIRECT }, DIRECT)).toBe(true);
    expect(use({ DATABASE_LISTEN_URL: DIRECT }, POOLED)).toBe(false);
    // Said explicitly, it wins either way (PgBouncer 1.21+ with max_prepared_statements; another pooler).
    expect(use({ DATABASE_LISTEN_URL: DIRECT, DATABASE_PREPARED_STATEMENTS: "1" }, POOLED)).toBe(true);
    expect(use({ DATABASE_PREPARED_STATEMENTS: "0" }, POOLED)).toBe(false);
  });
});
