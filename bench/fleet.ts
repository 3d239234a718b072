// Fleet views at scale (issue 23): numbered pages of a big organisation, SearchCredentials across every
// organisation (text, each view), the organisations' typeahead and ListUncoveredOrganizations, each against a
// target of 300 ms. Part of `npm run bench` (after the listing); alone: `npm run bench:fleet [-- --quick]`, which
// seeds the benchmark's data set (bench/seed.ts) into a fresh database first.
//
// One service process (core 0) without provider environment variables (so that ListUncoveredOrganizations has
// something to find), one plain grpc-js client here: one call at a time, the cases in turn (round k runs them all,
// so that every case sees the same moments of a shared machine). The time is the client's round trip on loopback;
// the round trip of Health/Check, measured the same way, is what the service and the transport cost without any
// query, and "server time" is the round trip less that floor.
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import pg from "pg";
import { generateMasterKey } from "../service/src/keyring/keyring.js";
import { generateToken } from "../service/src/auth/tokens.js";
import { bearer, call, healthClient, PROTO_DIR, type ServiceClient } from "./clients.js";
import { openBenchDatabase } from "./database.js";
import { percentile } from "./invalidation.js";
import { cleanup, freePort, installExitHandlers, sleep, startProcess, type Managed } from "./processes.js";
import { seed } from "./seed.js";
import { LISTING_ORGANIZATION } from "./workload.js";

/** The target for each of these calls. */
export const FLEET_TARGET_MS = 300;

export interface FleetCase {
  name: string;
  /** What the call asked. */
  request: string;
  /** total_size of its answer. */
  total: number;
  /** Items on the page. */
  returned: number;
  medianMs: number;
  p95Ms: number;
  /** The round trip less the Health/Check floor (median). */
  serverMedianMs: number;
  serverP95Ms: number;
  withinTarget: boolean;
}

export interface FleetResult {
  repetitions: number;
  /** /proc/loadavg's 1-minute figure before and after the measurement: this machine is shared. */
  loadAverage: { before: number; after: number };
  /** Health/Check's round trip (median), the floor taken off. */
  floorMs: number;
  organizations: number;
  credentials: number;
  bigOrganization: { id: string; credentials: number };
  failing: number;
  rotationDue: number;
  cases: FleetCase[];
  targetMs: number;
}

const LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_DIR] };

function clientsFor(target: string): { credentials: ServiceClient; organizations: ServiceClient } {
  const definition = grpc.loadPackageDefinition(protoLoader.loadSync(`${PROTO_DIR}credentials.proto`, LOADER_OPTIONS)) as unknown as {
    credentials: { v1: Record<string, new (address: string, credentials: grpc.ChannelCredentials) => ServiceClient> };
  };
  const { CredentialService, OrganizationService } = definition.credentials.v1;
  return {
    credentials: new CredentialService(target, grpc.credentials.createInsecure()),
    organizations: new OrganizationService(target, grpc.credentials.createInsecure()),
  };
}

/**
 * The size: the memory-fill organisations (bench-mem-*, only the memory figure uses them) are removed, which
 * leaves the 10,000 organisations and 50,000 credentials of the resolve workload, the 10,000-credential listing
 * organisation and the 100 invalidation ones. Then gives the credentials the variety the views look for: about 1 in
 * 256 marked failing, about 3 in 16 with a key set when they were created (over a year ago: rotation due). One in
 * seven is inactive already (seed.ts).
 */
export async function prepareFleetData(databaseUrl: string): Promise<{ organizations: number; credentials: number; failing: number; rotationDue: number }> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query(`delete from provider_credentials where organization_id like 'bench-mem-%'`);
    await client.query(`delete from organizations where id like 'bench-mem-%'`);
    await client.query(
      `update provider_credentials set failing_since = now() - interval '1 hour', failure_streak = 3 where right(id::text, 2) = '00' and failing_since is null`,
    );
    await client.query(`update provider_credentials set key_set_at = created_at where right(id::text, 1) in ('0', '1', '2')`);
    await client.query("vacuum analyze provider_credentials, organizations");
    const [counts] = (
      await client.query<{ organizations: string; credentials: string; failing: string; rotation_due: string }>(
        `select (select count(*) from organizations) as organizations, count(*) as credentials,
           count(*) filter (where failing_since is not null) as failing,
           count(*) filter (where key_set_at < now() - interval '90 days') as rotation_due
         from provider_credentials`,
      )
    ).rows;
    return {
      organizations: Number(counts.organizations),
      credentials: Number(counts.credentials),
      failing: Number(counts.failing),
      rotationDue: Number(counts.rotation_due),
    };
  } finally {
    await client.end();
  }
}

/** The service as npm start runs it from the sources, with no provider environment variable (no fallback). */
async function startFleetService(databaseUrl: string, masterKey: string, adminToken: string): Promise<{ process: Managed; target: string }> {
  const grpcPort = await freePort();
  const connectPort = await freePort();
  const service = startProcess("service-fleet", process.execPath, ["--import", "tsx", "service/src/main.ts"], {
    core: 0,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      DATABASE_URL: databaseUrl,
      MASTER_KEY: masterKey,
      SERVICE_ADMIN_TOKEN: adminToken,
      HOST: "127.0.0.1",
      GRPC_PORT: String(grpcPort),
      CONNECT_PORT: String(connectPort),
      LOG_LEVEL: process.env.BENCH_SERVICE_LOG_LEVEL || "warn",
    },
  });
  const target = `127.0.0.1:${grpcPort}`;
  const health = healthClient(target);
  try {
    const deadline = Date.now() + 90_000;
    for (;;) {
      if (!service.running) throw new Error(`the service exited during start-up${service.tail()}`);
      const serving = await call<{ status: string }>(health, "Check", { service: "" }, undefined, 1_000).then(
        (r) => r.status === "SERVING",
        () => false,
      );
      if (serving) break;
      if (Date.now() > deadline) throw new Error(`the service did not answer Health/Check within 90 s${service.tail()}`);
      await sleep(200);
    }
  } finally {
    health.close();
  }
  return { process: service, target };
}

interface CaseSpec {
  name: string;
  request: string;
  run: () => Promise<{ total: number; returned: number }>;
}

/** Starts a service on the database (seeded), measures every case `repetitions` times in rounds, and stops it. */
export async function runFleet(options: {
  databaseUrl: string;
  masterKey: string;
  repetitions: number;
  bigOrganization?: string;
  log: (line: string) => void;
}): Promise<FleetResult> {
  const { log } = options;
  const data = await prepareFleetData(options.databaseUrl);
  log(
    `fleet: ${data.organizations.toLocaleString("en")} organisations, ${data.credentials.toLocaleString("en")} credentials ` +
      `(${data.failing.toLocaleString("en")} failing, ${data.rotationDue.toLocaleString("en")} rotation due)`,
  );
  const adminToken = generateToken();
  const service = await startFleetService(options.databaseUrl, options.masterKey, adminToken);
  const { credentials, organizations } = clientsFor(service.target);
  const health = healthClient(service.target);
  const metadata = bearer(adminToken);
  const big = options.bigOrganization ?? LISTING_ORGANIZATION;
  try {
    type Page = { total_size: number; credentials?: unknown[]; organizations?: unknown[] };
    const ask = async (client: ServiceClient, method: string, request: object) => {
      const r = await call<Page>(client, method, request, metadata, 30_000);
      return { total: Number(r.total_size), returned: (r.credentials ?? r.organizations ?? []).length };
    };
    const bigTotal = (await ask(credentials, "ListCredentials", { organization_id: big, page_size: 50 })).total;
    const allTotal = (await ask(credentials, "SearchCredentials", { page_size: 50 })).total;
    const lastOffset = (total: number) => Math.max(0, Math.floor((total - 1) / 50) * 50);
    const search = (name: string, request: object, label: string): CaseSpec => ({
      name,
      request: label,
      run: () => ask(credentials, "SearchCredentials", { page_size: 50, ...request }),
    });
    const specs: CaseSpec[] = [
      {
        name: "ListCredentials, big organisation, first page",
        request: `${big}, offset 0, 50 a page`,
        run: () => ask(credentials, "ListCredentials", { organization_id: big, page_size: 50, offset: 0 }),
      },
      {
        name: "ListCredentials, big organisation, last page",
        request: `${big}, offset ${lastOffset(bigTotal)}`,
        run: () => ask(credentials, "ListCredentials", { organization_id: big, page_size: 50, offset: lastOffset(bigTotal) }),
      },
      search("SearchCredentials, everything, first page", {}, "no filter, offset 0"),
      search("SearchCredentials, everything, last page", { offset: lastOffset(allTotal) }, `no filter, offset ${lastOffset(allTotal)}`),
      search("SearchCredentials, text across all", { query: "key 1" }, `query "key 1"`),
      search("SearchCredentials, rare text across all", { query: "org-0421" }, `query "org-0421"`),
      search("SearchCredentials, text, last page", { query: "openai" }, `query "openai", last page`),
      search("SearchCredentials, view failing", { view: "CREDENTIAL_VIEW_FAILING" }, "FAILING"),
      search("SearchCredentials, view rotation due", { view: "CREDENTIAL_VIEW_ROTATION_DUE" }, "ROTATION_DUE"),
      search("SearchCredentials, view inactive", { view: "CREDENTIAL_VIEW_INACTIVE" }, "INACTIVE"),
      search(
        "SearchCredentials, view and text and provider",
        { view: "CREDENTIAL_VIEW_INACTIVE", query: "key", provider: "PROVIDER_GEMINI" },
        `INACTIVE, "key", Gemini`,
      ),
      {
        name: "ListOrganizations, typeahead",
        request: `query "org-04", 20 a page`,
        run: () => ask(organizations, "ListOrganizations", { query: "org-04", page_size: 20 }),
      },
      {
        name: "ListOrganizations, typeahead by name",
        request: `query "organisation org-099"`,
        run: () => ask(organizations, "ListOrganizations", { query: "organisation org-099", page_size: 20 }),
      },
      {
        name: "ListUncoveredOrganizations, every provider",
        request: "no provider, first page",
        run: () => ask(credentials, "ListUncoveredOrganizations", { page_size: 50 }),
      },
      {
        name: "ListUncoveredOrganizations, one provider, last page",
        request: "Gemini, offset 950",
        run: () => ask(credentials, "ListUncoveredOrganizations", { provider: "PROVIDER_GEMINI", page_size: 50, offset: 950 }),
      },
    ];
    // The "openai" text case's last page: its total first.
    const openaiTotal = (await ask(credentials, "SearchCredentials", { query: "openai", page_size: 50 })).total;
    const textLast = specs.find((s) => s.request.startsWith(`query "openai"`))!;
    textLast.request = `query "openai", offset ${lastOffset(openaiTotal)}`;
    textLast.run = () => ask(credentials, "SearchCredentials", { query: "openai", page_size: 50, offset: lastOffset(openaiTotal) });

    const time = async <T>(work: () => Promise<T>): Promise<{ ms: number; value: T }> => {
      const start = performance.now();
      const value = await work();
      return { ms: performance.now() - start, value };
    };
    const check = () => call(health, "Check", { service: "" });
    // Warm-up: two rounds, not counted.
    for (let i = 0; i < 2; i++) {
      await check();
      for (const spec of specs) await spec.run();
    }
    const loadBefore = loadAverage();
    const floor: number[] = [];
    const times = specs.map(() => [] as number[]);
    const answers = specs.map(() => ({ total: 0, returned: 0 }));
    for (let round = 0; round < options.repetitions; round++) {
      for (let i = 0; i < 3; i++) floor.push((await time(check)).ms);
      // Each round starts at another case, so that none always follows the same one.
      for (let k = 0; k < specs.length; k++) {
        const i = (k + round) % specs.length;
        const { ms, value } = await time(specs[i].run);
        times[i].push(ms);
        answers[i] = value;
      }
    }
    const floorMs = percentile(floor, 0.5);
    const cases = specs.map((spec, i): FleetCase => {
      const medianMs = percentile(times[i], 0.5);
      const p95Ms = percentile(times[i], 0.95);
      return {
        name: spec.name,
        request: spec.request,
        total: answers[i].total,
        returned: answers[i].returned,
        medianMs,
        p95Ms,
        serverMedianMs: Math.max(0, medianMs - floorMs),
        serverP95Ms: Math.max(0, p95Ms - floorMs),
        withinTarget: p95Ms <= FLEET_TARGET_MS,
      };
    });
    for (const c of cases) {
      log(`fleet: ${c.name} (${c.request}): total ${c.total}, median ${c.medianMs.toFixed(1)} ms, p95 ${c.p95Ms.toFixed(1)} ms`);
    }
    return {
      repetitions: options.repetitions,
      loadAverage: { before: loadBefore, after: loadAverage() },
      floorMs,
      organizations: data.organizations,
      credentials: data.credentials,
      bigOrganization: { id: big, credentials: bigTotal },
      failing: data.failing,
      rotationDue: data.rotationDue,
      cases,
      targetMs: FLEET_TARGET_MS,
    };
  } finally {
    credentials.close();
    organizations.close();
    health.close();
    await service.process.stop(10_000);
  }
}

function loadAverage(): number {
  try {
    return Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
  } catch {
    return NaN;
  }
}

/** The figures as a markdown section. */
export function fleetMarkdown(result: FleetResult): string {
  const ms = (v: number) => `${v.toFixed(1)} ms`;
  return [
    `### Fleet views (${result.organizations.toLocaleString("en")} organisations, ${result.credentials.toLocaleString("en")} credentials)`,
    "",
    `One call at a time, ${result.repetitions} repetitions of each; round trip on loopback through grpc-js, and server time = round trip − ` +
      `Health/Check's (${ms(result.floorMs)}). Target: p95 ≤ ${result.targetMs} ms. Big organisation: ${result.bigOrganization.id} ` +
      `(${result.bigOrganization.credentials.toLocaleString("en")} credentials); ${result.failing.toLocaleString("en")} failing, ` +
      `${result.rotationDue.toLocaleString("en")} rotation due. Load average (1 min) ${result.loadAverage?.before ?? "?"} before, ${result.loadAverage?.after ?? "?"} after.`,
    "",
    "| call | request | total | median | p95 | server median | server p95 | ≤ target |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ...result.cases.map(
      (c) =>
        `| ${c.name} | ${c.request} | ${c.total.toLocaleString("en")} | ${ms(c.medianMs)} | ${ms(c.p95Ms)} | ${ms(c.serverMedianMs)} | ${ms(c.serverP95Ms)} | ${c.withinTarget ? "✓" : "✗"} |`,
    ),
  ].join("\n");
}

async function main(): Promise<void> {
  installExitHandlers();
  const log = (line: string) => console.error(`[bench:fleet] ${line}`);
  const quick = process.argv.includes("--quick");
  const database = await openBenchDatabase(log);
  const masterKey = generateMasterKey();
  const seeded = await seed(database.url, masterKey, log);
  log(`seeded in ${seeded.seconds.toFixed(1)} s`);
  const result = await runFleet({ databaseUrl: database.url, masterKey, repetitions: quick ? 5 : 20, log });
  console.log(`\n${fleetMarkdown(result)}\n`);
  const failed = result.cases.filter((c) => !c.withinTarget);
  log(failed.length === 0 ? `every call within ${FLEET_TARGET_MS} ms at p95` : `over the target: ${failed.map((c) => c.name).join("; ")}`);
}

if (process.argv[1]?.endsWith("fleet.ts")) {
  main()
    .then(async () => {
      await cleanup();
      process.exit(0);
    })
    .catch(async (error: unknown) => {
      console.error(`\nbench:fleet failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
      await cleanup();
      process.exit(1);
    });
}
