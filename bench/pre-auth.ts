// `npx tsx bench/pre-auth.ts [--rounds N] [--quick]` (about 1.5 minutes; --quick about 40 s): honest ResolveKey
// calls while 2,000 unauthenticated streams are held open on each RPC port, against the same
// calls on the idle service, side by side (issue 19, item 9; docs/performance.md).
//
// One service process (core 0) on a fresh seeded database, one load generator (bench/load.ts,
// core 1: a plain grpc-js client, hot set, 16 calls in flight on the gRPC port), and an attacker
// process (this file with --attacker, core 1) that holds, on each port, 1,000 ResolveKey requests
// announcing a 64 KiB message of which half is sent (every other one without a token, the
// others each with a different well-formed unknown token) and 1,000 health watches, over
// connections of 100 streams. Rounds alternate: idle then attacked, attacked then idle, ...; the
// attacker opens its streams before the attacked case's warm-up and closes them after it. Each
// round gives p99(attacked) / p99(idle); the target (≤ 2) judges the median over rounds.
import http2 from "node:http2";
import { generateMasterKey } from "../service/src/keyring/keyring.js";
import { generateToken } from "../service/src/auth/tokens.js";
import { call, healthClient } from "./clients.js";
import { processCpuMs } from "./cpu.js";
import { openBenchDatabase } from "./database.js";
import { Histogram } from "./histogram.js";
import type { LoadCommand, LoadResult } from "./load.js";
import { cleanup, freePort, installExitHandlers, memoryMiB, sleep, startProcess, startTsx, type Managed } from "./processes.js";
import { seed } from "./seed.js";

const STREAMS_PER_PORT = 2_000;
const PER_CONNECTION = 100;
const IN_FLIGHT = 16;

// ---------------------------------------------------------------- attacker (child process)

async function attack(ports: number[], perPort: number): Promise<void> {
  const sessions: http2.ClientHttp2Session[] = [];
  const prefix = (length: number) => {
    const b = Buffer.alloc(5);
    b.writeUInt32BE(length, 1);
    return b;
  };
  const messageBytes = 64 * 1024 - 16;
  const half = Buffer.concat([prefix(messageBytes), Buffer.alloc(messageBytes / 2, 0x61)]);
  let answered = 0;
  for (const port of ports) {
    for (let opened = 0; opened < perPort; opened += PER_CONNECTION) {
      const session = http2.connect(`http://127.0.0.1:${port}`);
      session.on("error", () => undefined);
      sessions.push(session);
      const watches = opened >= perPort / 2;
      for (let i = 0; i < PER_CONNECTION; i++) {
        const token = !watches && i % 2 === 1 ? { authorization: `Bearer ${generateToken()}` } : {};
        const path = watches ? "/grpc.health.v1.Health/Watch" : "/credentials.v1.CredentialService/ResolveKey";
        const stream = session.request(
          { ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...token },
          { endStream: false },
        );
        stream.on("error", () => undefined);
        stream.on("data", () => undefined);
        stream.once("response", () => answered++);
        if (watches) stream.end(prefix(0));
        else stream.write(half);
      }
    }
  }
  await sleep(2_000);
  console.log(JSON.stringify({ type: "holding", streams: ports.length * perPort, answered, connections: sessions.length }));
  // Hold until the parent closes stdin.
  process.stdin.resume();
  process.stdin.once("end", () => {
    for (const session of sessions) session.destroy();
    process.exit(0);
  });
}

// ---------------------------------------------------------------- orchestration

/** Waits until the process uses less than 10% of a core over 500 ms (at most 30 s). */
async function settled(pid: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const before = processCpuMs(pid) ?? 0;
    await sleep(500);
    const used = (processCpuMs(pid) ?? 0) - before;
    if (used < 50) return;
  }
}

class Generator {
  private counter = 0;
  private readonly pending = new Map<string, (r: LoadResult | Error) => void>();

  constructor(readonly process: Managed) {
    process.onLine((line, stream) => {
      if (stream !== "stdout" || !line.startsWith("{")) return;
      const message = JSON.parse(line) as { type: string; id?: string; message?: string };
      const done = message.id === undefined ? undefined : this.pending.get(message.id);
      if (!done) return;
      if (message.type === "result") done(message as unknown as LoadResult);
      else if (message.type === "error") done(new Error(message.message));
      else return;
      this.pending.delete(message.id!);
    });
  }

  run(command: Omit<LoadCommand, "id">): Promise<LoadResult> {
    const id = `g-${++this.counter}`;
    return new Promise((resolve, reject) => {
      this.pending.set(id, (r) => (r instanceof Error ? reject(r) : resolve(r)));
      this.process.send(JSON.stringify({ ...command, id }));
    });
  }
}

const log = (line: string) => console.error(`[bench:pre-auth] ${line}`);

async function main(): Promise<void> {
  installExitHandlers();
  const quick = process.argv.includes("--quick");
  const roundsArg = process.argv.indexOf("--rounds");
  const rounds = roundsArg > 0 ? Number(process.argv[roundsArg + 1]) : quick ? 2 : 6;
  const warmupMs = quick ? 500 : 1_000;
  const durationMs = quick ? 1_500 : 4_000;

  const db = await openBenchDatabase(log);
  const masterKey = generateMasterKey();
  const seeded = await seed(db.url, masterKey, log);
  const [grpcPort, connectPort] = [await freePort(), await freePort()];
  const service = startProcess("service", process.execPath, ["--import", "tsx", "service/src/main.ts"], {
    core: 0,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      DATABASE_URL: db.url,
      MASTER_KEY: masterKey,
      SERVICE_ADMIN_TOKEN: generateToken(),
      HOST: "127.0.0.1",
      GRPC_PORT: String(grpcPort),
      CONNECT_PORT: String(connectPort),
      LOG_LEVEL: "warn",
      // As bench/run.ts: organisations without a credential resolve to these.
      OPENAI_API_KEY: "sk-bench-environment-fallback-openai",
      ANTHROPIC_API_KEY: "sk-ant-bench-environment-fallback",
      GEMINI_API_KEY: "AIza-bench-environment-fallback",
      FIREWORKS_API_KEY: "fw_bench-environment-fallback",
    },
  });
  const client = healthClient(`127.0.0.1:${grpcPort}`);
  for (let ready = false; !ready;) {
    if (!service.running) throw new Error(`the service exited during start-up${service.tail()}`);
    ready = await call(client, "Check", { service: "" }, undefined, 1_000).then(
      () => true,
      () => false,
    );
    if (!ready) await sleep(200);
  }
  client.close();
  log(`service ready (pid ${service.pid}): gRPC 127.0.0.1:${grpcPort}, Connect 127.0.0.1:${connectPort}`);

  const generatorProcess = startTsx("generator", "bench/load.ts", [], { core: 1, echoStderr: true });
  await generatorProcess.waitForLine((line) => line.includes('"type":"ready"'), 60_000, "ready message");
  const generator = new Generator(generatorProcess);
  const command: Omit<LoadCommand, "id"> = {
    target: `127.0.0.1:${grpcPort}`,
    protocol: "grpc",
    workload: { kind: "resolve", set: "hot" },
    token: seeded.resolveToken,
    inFlight: IN_FLIGHT,
    warmupMs,
    durationMs,
  };
  // Fill the cache and warm up.
  await generator.run({ ...command, warmupMs: 0, durationMs: quick ? 2_000 : 5_000 });

  interface Round {
    idle: LoadResult;
    attacked: LoadResult;
    ratio: number;
    rssIdleMiB: number;
    rssAttackedMiB: number;
    attacker: string;
  }
  const results: Round[] = [];
  for (let r = 0; r < rounds; r++) {
    let idle: LoadResult | undefined;
    let attacked: LoadResult | undefined;
    let rssIdle = 0;
    let rssAttacked = 0;
    let attackerLine = "";
    for (const which of r % 2 === 0 ? ["idle", "attacked"] : ["attacked", "idle"]) {
      if (which === "idle") {
        rssIdle = memoryMiB(service.pid)?.rss ?? 0;
        idle = await generator.run(command);
        continue;
      }
      const attacker = startTsx("attacker", "bench/pre-auth.ts", ["--attacker", String(grpcPort), String(connectPort), String(STREAMS_PER_PORT)], { core: 1 });
      attackerLine = await attacker.waitForLine((line) => line.includes('"type":"holding"'), 120_000, "holding line");
      rssAttacked = memoryMiB(service.pid)?.rss ?? 0;
      // Held open: measured once the service has taken in what the attacker sent (its CPU falls back below 10% of a core).
      await settled(service.pid);
      attacked = await generator.run(command);
      rssAttacked = Math.max(rssAttacked, memoryMiB(service.pid)?.rss ?? 0);
      attacker.child.stdin?.end();
      await attacker.exited;
      await sleep(1_000);
    }
    const ratio = attacked!.p99Us / idle!.p99Us;
    results.push({ idle: idle!, attacked: attacked!, ratio, rssIdleMiB: rssIdle, rssAttackedMiB: rssAttacked, attacker: attackerLine });
    log(
      `round ${r + 1}/${rounds}: idle ${idle!.callsPerSec.toFixed(0)} calls/s p99 ${(idle!.p99Us / 1000).toFixed(2)} ms | ` +
        `attacked ${attacked!.callsPerSec.toFixed(0)} calls/s p99 ${(attacked!.p99Us / 1000).toFixed(2)} ms, ${attacked!.errors} errors | ` +
        `${attacked!.errors ? `(${JSON.stringify(attacked!.errorCodes)} ${attacked!.firstError ?? ""}) ` : ""}p99 ratio ${ratio.toFixed(2)} | RSS ${rssIdle.toFixed(0)} -> ${rssAttacked.toFixed(0)} MiB | attacker ${attackerLine}`,
    );
  }
  const ratios = results.map((r) => r.ratio).sort((a, b) => a - b);
  const median = ratios.length % 2 ? ratios[(ratios.length - 1) / 2] : (ratios[ratios.length / 2 - 1] + ratios[ratios.length / 2]) / 2;
  const pooled = (pick: (r: Round) => LoadResult) => {
    const h = new Histogram();
    for (const r of results) h.add(pick(r).histogram);
    return h.percentile(0.99);
  };
  const pooledIdle = pooled((r) => r.idle);
  const pooledAttacked = pooled((r) => r.attacked);
  const errors = results.reduce((n, r) => n + r.attacked.errors + r.idle.errors, 0);
  console.log(
    [
      `| rounds | p99 idle (pooled) | p99 attacked (pooled) | ratio pooled | ratio median (min-max) | target | honest errors |`,
      `| --- | --- | --- | --- | --- | --- | --- |`,
      `| ${rounds} | ${(pooledIdle / 1000).toFixed(2)} ms | ${(pooledAttacked / 1000).toFixed(2)} ms | ${(pooledAttacked / pooledIdle).toFixed(2)} | ` +
        `${median.toFixed(2)} (${ratios[0].toFixed(2)}-${ratios[ratios.length - 1].toFixed(2)}) | ≤ 2 ${median <= 2 ? "✓" : "✗"} | ${errors} |`,
    ].join("\n"),
  );
  await cleanup();
  process.exit(0);
}

const attackerArg = process.argv.indexOf("--attacker");
if (attackerArg > 0) {
  const [grpcPort, connectPort, perPort] = process.argv.slice(attackerArg + 1, attackerArg + 4).map(Number);
  void attack([grpcPort, connectPort], perPort);
} else {
  main().catch(async (error: unknown) => {
    console.error(error);
    await cleanup();
    process.exit(1);
  });
}
