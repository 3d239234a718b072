import { readFile, readdir } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { loadSettings, SERVICE_SETTINGS } from "../../service/src/runtime/settings.js";
import { ConfigError } from "../../service/src/runtime/config.js";
import { PROVIDERS } from "../../service/src/providers.js";
import { CONFIGURATION_DOC, renderConfigurationDoc } from "../../service/scripts/config-docs.js";

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
  ])("refuses %o, naming the variable and its rule", (env, message) => {
    expect(() => loadSettings(env)).toThrow(ConfigError);
    expect(() => loadSettings(env)).toThrow(message);
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
