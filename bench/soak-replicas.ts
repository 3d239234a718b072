// Service replicas for the soak, started as bench/run.ts starts the service:
// `node --import tsx service/src/main.ts` (one process, so that its pid is the
// one whose VmRSS we read), on free loopback ports, against one database.
import { performance } from "node:perf_hooks";
import { call, healthClient } from "./clients.js";
import { freePort, sleep, startTsx, type Managed } from "./processes.js";
import { redact } from "./soak-model.js";

export interface Replica {
  name: string;
  process: Managed;
  target: string;
  /** Warning and error lines the replica logged (redacted, first few). */
  logIssues: string[];
  /** How many lines at level error or fatal it logged. */
  errorLines: number;
  startMs: number;
}

/** The parent's environment minus anything that would steer the service elsewhere. */
function serviceBaseEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of Object.keys(env)) {
    if (
      /^(DATABASE_URL|MASTER_KEY|SERVICE_ADMIN_TOKEN|ADMIN_EMAIL|ADMIN_PASSWORD|DATA_DIR|EMBEDDED_PG_PORT|GRPC_PORT|CONNECT_PORT|HOST|LOG_LEVEL|RESOLVE_CACHE_.*|DB_POOL_SIZE|GOOGLE_API_KEY|.*_API_KEY|TLS_.*|NODE_ENV)$/.test(
        name,
      ) ||
      name.startsWith("SOAK_") ||
      name.startsWith("BENCH_")
    ) {
      delete env[name];
    }
  }
  return env;
}

export async function startReplica(
  name: string,
  options: { databaseUrl: string; masterKey: string; adminToken: string; envKeys: Record<string, string> },
): Promise<Replica> {
  const grpcPort = await freePort();
  const connectPort = await freePort();
  const env: NodeJS.ProcessEnv = {
    ...serviceBaseEnv(),
    ...options.envKeys,
    DATABASE_URL: options.databaseUrl,
    MASTER_KEY: options.masterKey,
    SERVICE_ADMIN_TOKEN: options.adminToken,
    HOST: "127.0.0.1",
    // The fake providers listen on loopback.
    API_BASE_ALLOW: "127.0.0.1",
    GRPC_PORT: String(grpcPort),
    CONNECT_PORT: String(connectPort),
    LOG_LEVEL: process.env.SOAK_SERVICE_LOG_LEVEL || "warn",
  };
  const started = performance.now();
  const proc = startTsx(name, "service/src/main.ts", [], { env });
  const replica: Replica = { name, process: proc, target: `127.0.0.1:${grpcPort}`, logIssues: [], errorLines: 0, startMs: 0 };
  proc.onLine((line) => {
    const level = Number(/"level":(\d+)/.exec(line)?.[1] ?? NaN);
    if (level >= 50) replica.errorLines++;
    if ((level >= 40 || (Number.isNaN(level) && /error/i.test(line))) && replica.logIssues.length < 10) {
      replica.logIssues.push(redact(line.length > 400 ? `${line.slice(0, 400)}…` : line));
    }
  });
  await waitServing(replica.target, proc);
  replica.startMs = performance.now() - started;
  return replica;
}

async function waitServing(target: string, proc: Managed, timeoutMs = 120_000): Promise<void> {
  const client = healthClient(target);
  const deadline = Date.now() + timeoutMs;
  try {
    while (Date.now() < deadline) {
      if (!proc.running) throw new Error(`${proc.name} exited (code ${proc.exit?.code}) during start-up${redact(proc.tail())}`);
      try {
        const response = await call<{ status: string }>(client, "Check", { service: "" }, undefined, 1_000);
        if (response.status === "SERVING") return;
      } catch {
        // not listening yet
      }
      await sleep(150);
    }
    throw new Error(`${proc.name} did not answer Health/Check within ${timeoutMs} ms${redact(proc.tail())}`);
  } finally {
    client.close();
  }
}
