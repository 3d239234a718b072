// deploy/systemd: the unit files of the service and the portal, checked against the code (every
// variable they set is a setting of the process's schema; secrets are systemd credentials feeding
// the NAME_FILE settings; the program they start is the production entry the build makes) and the
// usual hardening; then `systemd-analyze verify` on copies whose paths point at stand-ins in a
// temporary folder (verify wants the programs to exist). systemd need not be running: verify
// works without systemd as PID 1. Skipped, with a message, where systemd-analyze is missing.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { SERVICE_SETTINGS } from "../../service/src/runtime/settings.js";
import { SERVICE_SECRET_SETTINGS } from "../../service/src/runtime/secret-files.js";
import { PORTAL_SECRET_SETTINGS, PORTAL_SETTINGS } from "../../portal/src/lib/server/settings.js";

const DIR = path.resolve("deploy/systemd");
const INSTALL_DIR = "/opt/provider-credentials";

/** A unit file as section -> key -> values (a key may repeat: Environment=, LoadCredential=). */
type Unit = Map<string, Map<string, string[]>>;

function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = new Map();
      unit.set(header[1], section);
      continue;
    }
    const eq = line.indexOf("=");
    if (!section || eq < 0) throw new Error(`not a unit file line: ${line}`);
    const key = line.slice(0, eq).trim();
    section.set(key, [...(section.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return unit;
}

const read = (name: string) => readFileSync(path.join(DIR, name), "utf8");
const get = (unit: Unit, section: string, key: string) => unit.get(section)?.get(key) ?? [];
const last = (unit: Unit, section: string, key: string) => get(unit, section, key).at(-1);

/** Environment= lines as name -> value (one line may hold several NAME=value words). */
function environment(unit: Unit): Map<string, string> {
  const env = new Map<string, string>();
  for (const line of get(unit, "Service", "Environment")) {
    for (const word of line.match(/"[^"]*"|\S+/g) ?? []) {
      const assignment = word.replace(/^"|"$/g, "");
      const eq = assignment.indexOf("=");
      env.set(assignment.slice(0, eq), assignment.slice(eq + 1));
    }
  }
  return env;
}

type Schema = Record<string, { schema: { safeParse(raw: string | undefined): { success: boolean } } }>;

const UNITS = [
  {
    file: "provider-credentials.service",
    process: "service",
    settings: SERVICE_SETTINGS as Schema,
    secrets: SERVICE_SECRET_SETTINGS as readonly string[],
    // The build's output for service/src/main.ts (tsconfig.build.json: outDir dist, rootDir .).
    entry: "dist/service/src/main.js",
    source: "service/src/main.ts",
    credentials: ["database_url", "master_key", "service_admin_token"],
  },
  {
    file: "provider-credentials-portal.service",
    process: "portal",
    settings: PORTAL_SETTINGS as Schema,
    secrets: PORTAL_SECRET_SETTINGS as readonly string[],
    entry: "portal/server.js",
    source: "portal/server.js",
    credentials: ["service_admin_token"],
  },
] as const;

describe.each(UNITS)("deploy/systemd/$file", ({ file, process: proc, settings, secrets, entry, source, credentials }) => {
  const unit = parseUnit(read(file));

  it("runs as a dedicated user, hardened", () => {
    expect(last(unit, "Service", "User")).toBe("provider-credentials");
    expect(read("provider-credentials.sysusers.conf")).toMatch(/^u provider-credentials /m);
    expect(last(unit, "Service", "DynamicUser") ?? "no").toBe("no");
    const wanted: Record<string, string> = {
      NoNewPrivileges: "yes",
      ProtectSystem: "strict",
      PrivateTmp: "yes",
      ProtectHome: "yes",
      PrivateDevices: "yes",
      RestrictSUIDSGID: "yes",
      CapabilityBoundingSet: "",
      UMask: "0077",
    };
    for (const [key, value] of Object.entries(wanted)) expect(last(unit, "Service", key), key).toBe(value);
    // ProtectSystem=strict makes the whole file system read-only: nothing may need writing.
    expect(get(unit, "Service", "ReadWritePaths")).toEqual([]);
  });

  it(`starts the ${proc}'s production entry with node, from the installation`, () => {
    const exec = last(unit, "Service", "ExecStart")!;
    const words = exec.split(/\s+/);
    expect(words[0]).toBe("/usr/bin/node");
    expect(words.at(-1)).toBe(`${INSTALL_DIR}/${entry}`);
    expect(last(unit, "Service", "WorkingDirectory")).toBe(INSTALL_DIR);
    expect(existsSync(source), `${source}, which the build turns into ${entry}`).toBe(true);
    // No tsx, no npm, no compiler at run time.
    expect(exec).not.toMatch(/tsx|npm|\.ts\b/);
  });

  it(`sets only variables of the ${proc}'s settings schema, each valid; secrets only as credentials`, () => {
    const env = environment(unit);
    const known = new Set([...Object.keys(settings), ...secrets.map((s) => `${s}_FILE`), "NODE_ENV"]);
    for (const [name, value] of env) {
      expect(known.has(name), `${file} sets ${name}, which the ${proc}'s settings schema does not list`).toBe(true);
      expect(secrets.includes(name), `${name} is a secret: give it as a credential (${name}_FILE=%d/...)`).toBe(false);
      if (settings[name] && !value.includes("%")) expect(settings[name].schema.safeParse(value).success, `${name}=${value}`).toBe(true);
    }
    expect(env.get("NODE_ENV")).toBe("production");
    // Each credential loaded feeds a NAME_FILE (or a file setting) through %d, $CREDENTIALS_DIRECTORY.
    const loaded = get(unit, "Service", "LoadCredential").map((c) => c.split(":")[0]);
    for (const name of credentials) expect(loaded).toContain(name);
    for (const name of loaded) {
      const users = [...env].filter(([, value]) => value === `%d/${name}`);
      expect(users.length, `credential ${name} is loaded but no setting reads %d/${name}`).toBe(1);
    }
    const fileSettings = [...env].filter(([name]) => name.endsWith("_FILE") && secrets.includes(name.slice(0, -5)));
    for (const [name, value] of fileSettings) expect(value, name).toMatch(/^%d\/[a-z_]+$/);
    expect(fileSettings.length).toBe(credentials.length);
    if (proc === "portal") {
      // The portal never gets the database URL or the master key.
      expect(loaded).not.toContain("master_key");
      expect(loaded).not.toContain("database_url");
    }
  });
});

describe("the service unit's network settings", () => {
  it("serves TLS when it listens beyond loopback (NODE_ENV=production refuses otherwise), and the portal calls it over TLS", () => {
    const service = environment(parseUnit(read("provider-credentials.service")));
    const portal = environment(parseUnit(read("provider-credentials-portal.service")));
    expect(service.get("HOST")).toBe("0.0.0.0");
    expect(service.get("TLS_CERT_FILE")).toBeDefined();
    expect(service.get("TLS_KEY_FILE")).toBeDefined();
    expect(service.has("ALLOW_PLAINTEXT")).toBe(false);
    const url = new URL(portal.get("CREDENTIALS_SERVICE_URL")!);
    expect(url.protocol).toBe("https:");
    expect(Number(url.port)).toBe(Number(service.get("GRPC_PORT")));
    expect(portal.get("CREDENTIALS_SERVICE_CA_FILE")).toBeDefined();
  });
});

const analyze = (() => {
  try {
    execFileSync("systemd-analyze", ["--version"], { stdio: "ignore", timeout: 20_000 });
    return true;
  } catch {
    return false;
  }
})();
if (!analyze) console.error("systemd-units: `systemd-analyze verify` SKIPPED, systemd-analyze is not installed here (Debian: apt-get install systemd)");

describe.skipIf(!analyze)("systemd-analyze verify", () => {
  const root = mkdtempSync(path.join(os.tmpdir(), "pc-systemd-"));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it("accepts both units with no warning (paths pointed at stand-ins in a temporary folder)", () => {
    const install = path.join(root, "opt/provider-credentials");
    for (const { entry } of UNITS) {
      mkdirSync(path.dirname(path.join(install, entry)), { recursive: true });
      writeFileSync(path.join(install, entry), "");
    }
    const units = UNITS.map(({ file }) => {
      const text = read(file).replaceAll(INSTALL_DIR, install).replaceAll("/usr/bin/node", process.execPath);
      const copy = path.join(root, file);
      writeFileSync(copy, text);
      return copy;
    });
    const result = spawnSync("systemd-analyze", ["verify", ...units], { encoding: "utf8", cwd: root, timeout: 60_000 });
    // verify exits 0 on unknown keys and bad values but says so on stderr: those count too.
    const complaints = `${result.stdout}\n${result.stderr}`
      .split("\n")
      .filter((line) => UNITS.some(({ file }) => line.includes(file)) || /not executable|Unknown|Failed|invalid/i.test(line));
    expect(complaints).toEqual([]);
    expect(result.status, result.stderr).toBe(0);
  });
});
