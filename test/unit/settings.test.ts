import { chmod, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { loadSettings, SECRET_SETTINGS, SERVICE_SETTINGS } from "../../service/src/runtime/settings.js";
import { ConfigError } from "../../service/src/runtime/config.js";
import { PROVIDERS } from "@provider-credentials/wire/providers";
import { CONFIGURATION_DOC, renderConfigurationDoc } from "../../scripts/config-docs.js";
import { loadPortalSettings, PORTAL_SECRET_SETTINGS, PORTAL_SETTINGS, PortalConfigError } from "../../portal/src/lib/server/settings.js";

/** A 0600 file holding `content`, in a fresh folder. */
async function secretFile(content: string): Promise<{ file: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), "pc-settings-"));
  const file = path.join(dir, "secret");
  await writeFile(file, content);
  await chmod(file, 0o600);
  return { file, remove: () => rm(dir, { recursive: true, force: true }) };
}

describe("the service's settings (service/src/runtime/settings.ts)", () => {
  it("docs/configuration.md is what the schema generates (npm run docs:config)", async () => {
    const current = await readFile(CONFIGURATION_DOC, "utf8");
    expect(renderConfigurationDoc(current), "docs/configuration.md is stale: run npm run docs:config").toBe(current);
  });

  it("gives the documented defaults when nothing is set", () => {
    const s = loadSettings({});
    expect([s.GRPC_PORT, s.CONNECT_PORT, s.DB_POOL_SIZE, s.SHUTDOWN_TIMEOUT_MS, s.RESOLVE_CACHE_MAX_ENTRIES, s.METRICS_PORT, s.HOST]).toEqual([
      50051,
      50052,
      10,
      10_000,
      100_000,
      undefined,
      undefined,
    ]);
    // A portal session lasts at most 7 days after sign-in unless configured otherwise.
    expect(s.ADMIN_SESSION_LIFETIME_HOURS).toBe(168);
    expect(loadSettings({ ADMIN_SESSION_LIFETIME_HOURS: "24" }).ADMIN_SESSION_LIFETIME_HOURS).toBe(24);
    expect(loadSettings({ GRPC_PORT: "", METRICS_PORT: "0", RESOLVE_CACHE_MAX_ENTRIES: "0" })).toMatchObject({
      GRPC_PORT: 50051,
      METRICS_PORT: 0,
      RESOLVE_CACHE_MAX_ENTRIES: 0,
    });
  });

  it.each([
    [{ GRPC_PORT: "abc" }, "GRPC_PORT must be a port number between 0 and 65535"],
    [{ CONNECT_PORT: "70000" }, "CONNECT_PORT must be a port number between 0 and 65535"],
    [{ DB_POOL_SIZE: "0" }, "DB_POOL_SIZE must be a positive integer"],
    [{ SHUTDOWN_TIMEOUT_MS: "1.5" }, "SHUTDOWN_TIMEOUT_MS must be a positive integer"],
    [{ RESOLVE_CACHE_OUTAGE_GRACE_MS: "-1" }, "RESOLVE_CACHE_OUTAGE_GRACE_MS must be zero or a positive integer"],
    [{ LOG_LEVEL: "loud" }, "LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent"],
    [{ ADMIN_SESSION_LIFETIME_HOURS: "0" }, "ADMIN_SESSION_LIFETIME_HOURS must be a whole number of hours between 1 and 8784"],
    [{ ADMIN_SESSION_LIFETIME_HOURS: "7d" }, "ADMIN_SESSION_LIFETIME_HOURS must be a whole number of hours between 1 and 8784"],
  ])("refuses %o, naming the variable and its rule", (env, message) => {
    expect(() => loadSettings(env)).toThrow(ConfigError);
    expect(() => loadSettings(env)).toThrow(message);
  });

  it("takes every secret, and only secrets, from NAME_FILE too, and documents each NAME_FILE", async () => {
    // A setting named like a secret must be listed (SERVICE_SECRET_SETTINGS in secret-files.ts) ...
    const looksSecret = Object.keys(SERVICE_SETTINGS).filter((name) => /(API_KEY|MASTER_KEY|TOKEN|PASSWORD|^DATABASE_\w*URL)$/.test(name));
    expect([...SECRET_SETTINGS].sort()).toEqual(looksSecret.sort());
    expect(SECRET_SETTINGS).toEqual(expect.arrayContaining(["DATABASE_URL", "MASTER_KEY", "SERVICE_ADMIN_TOKEN", "ADMIN_PASSWORD", "OPENAI_API_KEY"]));
    for (const provider of Object.values(PROVIDERS)) for (const variable of provider.envVars) expect(SECRET_SETTINGS).toContain(variable);
    // ... and its NAME_FILE is in the generated table.
    const doc = await readFile(CONFIGURATION_DOC, "utf8");
    for (const name of SECRET_SETTINGS) expect(doc).toContain(`\`${name}_FILE\``);
  });

  it("reads a secret from NAME_FILE (one trailing newline stripped), and refuses it set both ways", async () => {
    const { file, remove } = await secretFile("postgres://u:secret-password@db.internal:5432/credentials\n");
    try {
      expect(loadSettings({ DATABASE_URL_FILE: file }).DATABASE_URL).toBe("postgres://u:secret-password@db.internal:5432/credentials");
      expect(() => loadSettings({ DATABASE_URL: "postgres://x", DATABASE_URL_FILE: file })).toThrow(
        new ConfigError("DATABASE_URL and DATABASE_URL_FILE are both set: set one of them"),
      );
      expect(() => loadSettings({ MASTER_KEY_FILE: `${file}.missing` })).toThrow(
        new ConfigError(`MASTER_KEY_FILE: cannot read ${file}.missing (ENOENT: no such file or directory)`),
      );
    } finally {
      await remove();
    }
  });

  it("documents every variable the service reads (outside its command-line tools) and every provider's fallback variable", async () => {
    const names = new Set<string>();
    const dir = path.resolve("service/src");
    for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
      const file = path.join(entry.parentPath, entry.name);
      if (!entry.isFile() || !file.endsWith(".ts") || file.includes(`${path.sep}gen${path.sep}`) || file.includes(`${path.sep}cli${path.sep}`)) continue;
      const source = await readFile(file, "utf8");
      for (const match of source.matchAll(/\benv\.([A-Z][A-Z0-9_]+)/g)) names.add(match[1]);
      for (const match of source.matchAll(/\b(TLS_[A-Z_]+): /g)) names.add(match[1]);
    }
    for (const provider of Object.values(PROVIDERS)) for (const variable of provider.envVars) names.add(variable);
    expect(names.size).toBeGreaterThan(10);
    const missing = [...names].filter((name) => !(name in SERVICE_SETTINGS));
    expect(missing, "read by the service but not in SERVICE_SETTINGS (so not documented)").toEqual([]);
  });
});

describe("the portal's settings (portal/src/lib/server/settings.js)", () => {
  it("docs/configuration.md carries the portal's table as the schema generates it", async () => {
    const current = await readFile(CONFIGURATION_DOC, "utf8");
    expect(current).toContain("| `CREDENTIALS_SERVICE_URL` | `http://127.0.0.1:50051` |");
    expect(renderConfigurationDoc(current), "docs/configuration.md is stale: run npm run docs:config").toBe(current);
  });

  it("gives the documented defaults when nothing is set", () => {
    const s = loadPortalSettings({});
    expect([s.PORTAL_PORT, s.HOST, s.CREDENTIALS_SERVICE_URL, s.SHUTDOWN_TIMEOUT_MS, s.LOG_LEVEL, s.ORIGIN]).toEqual([
      3000,
      undefined,
      undefined,
      10_000,
      "info",
      undefined,
    ]);
    expect(loadPortalSettings({ PORTAL_PORT: "0", ORIGIN: "", CREDENTIALS_SERVICE_URL: "https://credentials.internal:50051" })).toMatchObject({
      PORTAL_PORT: 0,
      ORIGIN: undefined,
      CREDENTIALS_SERVICE_URL: "https://credentials.internal:50051",
    });
  });

  it.each([
    [{ PORTAL_PORT: "http" }, "PORTAL_PORT must be a port number between 0 and 65535"],
    [{ SHUTDOWN_TIMEOUT_MS: "0" }, "SHUTDOWN_TIMEOUT_MS must be a positive integer"],
    [{ XFF_DEPTH: "two" }, "XFF_DEPTH must be a positive integer"],
    [{ CREDENTIALS_SERVICE_URL: "127.0.0.1:50051" }, "CREDENTIALS_SERVICE_URL must be an http:// or https:// URL"],
    [{ ORIGIN: "credentials.example.com" }, "ORIGIN must be an http:// or https:// URL"],
    [{ LOG_LEVEL: "verbose" }, "LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent"],
  ])("refuses %o, naming the variable and its rule", (env, message) => {
    expect(() => loadPortalSettings(env)).toThrow(PortalConfigError);
    expect(() => loadPortalSettings(env)).toThrow(message);
  });

  it("takes SERVICE_ADMIN_TOKEN (and DATABASE_URL) from NAME_FILE too, refusing one set both ways", async () => {
    expect([...PORTAL_SECRET_SETTINGS].sort()).toEqual(["DATABASE_URL", "SERVICE_ADMIN_TOKEN"]);
    const { file, remove } = await secretFile(`pc_admin_${"s".repeat(40)}\n`);
    try {
      expect(loadPortalSettings({ SERVICE_ADMIN_TOKEN_FILE: file }).SERVICE_ADMIN_TOKEN).toBe(`pc_admin_${"s".repeat(40)}`);
      expect(() => loadPortalSettings({ SERVICE_ADMIN_TOKEN: "pc_admin_x", SERVICE_ADMIN_TOKEN_FILE: file })).toThrow(
        new PortalConfigError("SERVICE_ADMIN_TOKEN and SERVICE_ADMIN_TOKEN_FILE are both set: set one of them"),
      );
      expect(() => loadPortalSettings({ SERVICE_ADMIN_TOKEN_FILE: `${file}.missing` })).toThrow(PortalConfigError);
      expect(() => loadPortalSettings({ SERVICE_ADMIN_TOKEN_FILE: `${file}.missing` })).toThrow(`SERVICE_ADMIN_TOKEN_FILE: cannot read ${file}.missing`);
    } finally {
      await remove();
    }
  });

  it("documents every variable the portal reads (portal/server.js, its sources and scripts)", async () => {
    const names = new Set<string>();
    const files = [path.resolve("portal/server.js")];
    for (const dir of ["portal/src", "portal/scripts"]) {
      for (const entry of await readdir(path.resolve(dir), { recursive: true, withFileTypes: true })) {
        if (entry.isFile() && /\.(ts|js|svelte)$/.test(entry.name)) files.push(path.join(entry.parentPath, entry.name));
      }
    }
    for (const file of files) {
      const source = await readFile(file, "utf8");
      // Reads only: `process.env.PORT = ...` hands a value to adapter-node.
      for (const match of source.matchAll(/\benv\.([A-Z][A-Z0-9_]+)\b(?!\s*=[^=])/g)) names.add(match[1]);
      for (const match of source.matchAll(/\$env\/(?:static|dynamic)\/(?:private|public)/g)) names.add(match[0]);
    }
    expect(names.size).toBeGreaterThan(0);
    const missing = [...names].filter((name) => !(name in PORTAL_SETTINGS));
    expect(missing, "read by the portal but not in PORTAL_SETTINGS (so not documented)").toEqual([]);
  });
});
