// Load generator: a separate process that keeps a fixed number of calls in
// flight against one server, with a plain @grpc/grpc-js client (or a Connect
// client for the Connect-protocol figures), and reports calls/s, latency
// percentiles and errors as JSON lines on stdout.
//
//   node --import tsx bench/load.ts            commands as JSON lines on stdin, one result line each
//   node --import tsx bench/load.ts '<json>'   one command, then exit
//
// A command: { id, target: "127.0.0.1:50051", protocol: "grpc" | "connect",
//   workload: { kind: "health" } | { kind: "resolve", set: "hot" | "uniform" } | { kind: "resolve", set: "distinct" | "fill", count },
//   token?, inFlight, warmupMs, durationMs, seed? }
// Output lines: {"type":"ready"}, {"type":"measuring","id"} and {"type":"measured","id"} around the
// measured window, then {"type":"result",...} or {"type":"error","id","message"}.
import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";
import type * as grpc from "@grpc/grpc-js";
import { createClient, ConnectError, Code, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CredentialService, Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { bearer, codeName, credentialClient, healthClient, type ServiceClient } from "./clients.js";
import { Histogram } from "./histogram.js";
import { allPairs, DISTINCT_PERMUTATION_SEED, fillPairs, hotPairs, random, shuffled, type ResolveRequest, type Workload } from "./workload.js";

export interface LoadCommand {
  id: string;
  target: string;
  protocol: "grpc" | "connect";
  workload: Workload;
  token?: string;
  inFlight: number;
  warmupMs: number;
  durationMs: number;
  seed?: number;
  /** HTTP/2 connections to spread the calls over, round robin (grpc-js only; default 1, as most callers have). */
  channels?: number;
}

export interface LoadResult {
  type: "result";
  id: string;
  /** Calls completed in the measured window (successes and errors). */
  calls: number;
  errors: number;
  /** Error tally by gRPC/Connect code, plus BAD_RESPONSE for a success without a usable answer. */
  errorCodes: Record<string, number>;
  firstError?: string;
  wallMs: number;
  callsPerSec: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  maxUs: number;
  meanUs: number;
  histogram: ReturnType<Histogram["toJSON"]>;
  /** This generator's own CPU time (user + system) during the window. */
  cpuMs: number;
  /** Calls still unanswered after the drain timeout at the end. */
  stuck: number;
}

type Done = (errorCode: string | null, message?: string) => void;
type Invoke = (request: ResolveRequest | undefined, done: Done) => void;

const DRAIN_TIMEOUT_MS = 15_000;
const emit = (message: object) => process.stdout.write(JSON.stringify(message) + "\n");

// ---- clients, kept open across commands so that connections are reused ----

const grpcClients = new Map<string, Array<{ credentials: ServiceClient; health: ServiceClient }>>();
const connectClients = new Map<string, Client<typeof CredentialService>>();

function grpcInvoker(command: LoadCommand): Invoke {
  const channels = Math.max(1, command.channels ?? 1);
  const key = `${command.target}|${channels}`;
  let clients = grpcClients.get(key);
  if (!clients) {
    clients = Array.from({ length: channels }, () => ({
      credentials: credentialClient(command.target, channels > 1),
      health: healthClient(command.target, channels > 1),
    }));
    grpcClients.set(key, clients);
  }
  const metadata: grpc.Metadata = bearer(command.token);
  const options: grpc.CallOptions = {};
  let next = 0;
  if (command.workload.kind === "health") {
    const health = clients.map((c) => c.health);
    const request = { service: "" };
    return (_request, done) =>
      health[next++ % channels].Check(request, metadata, options, (error, response) => {
        if (error) done(codeName(error.code), error.details);
        else done(response?.status === "SERVING" ? null : "BAD_RESPONSE", `status ${String(response?.status)}`);
      });
  }
  const credentials = clients.map((c) => c.credentials);
  return (request, done) =>
    credentials[next++ % channels].ResolveKey(request!, metadata, options, (error, response) => {
      if (error) done(codeName(error.code), error.details);
      else done(typeof response?.api_key === "string" && response.api_key !== "" ? null : "BAD_RESPONSE", "empty api_key");
    });
}

const PROVIDER_ENUM: Record<string, Provider> = {
  PROVIDER_OPENAI: Provider.OPENAI,
  PROVIDER_ANTHROPIC: Provider.ANTHROPIC,
  PROVIDER_GEMINI: Provider.GEMINI,
  PROVIDER_FIREWORKS: Provider.FIREWORKS,
};

function connectInvoker(command: LoadCommand): Invoke {
  if (command.workload.kind !== "resolve") throw new Error("the Connect client only drives ResolveKey");
  let client = connectClients.get(command.target);
  if (!client) {
    client = createClient(CredentialService, createConnectTransport({ baseUrl: `http://${command.target}`, httpVersion: "2" }));
    connectClients.set(command.target, client);
  }
  const headers = { authorization: `Bearer ${command.token ?? ""}` };
  const c = client;
  return (request, done) => {
    const r = request!;
    const scope = "team_id" in r ? { case: "teamId" as const, value: r.team_id } : { case: "organizationId" as const, value: r.organization_id };
    c.resolveKey({ scope, provider: PROVIDER_ENUM[r.provider] }, { headers }).then(
      (response) => done(response.apiKey !== "" ? null : "BAD_RESPONSE", "empty apiKey"),
      (error: unknown) => {
        const e = ConnectError.from(error);
        const name = Code[e.code] as string | undefined;
        done(name ? name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase() : String(e.code), e.rawMessage);
      },
    );
  };
}

// ---- requests ----

let pairsCache: ResolveRequest[] | undefined;
const everyPair = () => (pairsCache ??= allPairs());

function requestSource(workload: Workload, seed: number): { next: () => ResolveRequest | undefined; limit?: number } {
  if (workload.kind === "health") return { next: () => undefined };
  if (workload.set === "distinct" || workload.set === "fill") {
    const list = (workload.set === "fill" ? fillPairs() : shuffled(everyPair(), DISTINCT_PERMUTATION_SEED)).slice(0, workload.count);
    let i = 0;
    return { next: () => list[i++], limit: list.length };
  }
  const list = workload.set === "hot" ? hotPairs() : everyPair();
  const rand = random(seed);
  return { next: () => list[Math.floor(rand() * list.length)] };
}

// ---- one case ----

async function run(command: LoadCommand): Promise<void> {
  const invoke = command.protocol === "connect" ? connectInvoker(command) : grpcInvoker(command);
  const source = requestSource(command.workload, command.seed ?? 1);
  const histogram = new Histogram();
  const errorCodes: Record<string, number> = {};
  let firstError: string | undefined;
  let errors = 0;
  let measuring = source.limit !== undefined; // a fixed list is measured whole, without warm-up
  let stopped = false;
  let inFlight = 0;
  let issued = 0;
  let drained: () => void = () => undefined;
  const allDone = new Promise<void>((resolve) => (drained = resolve));

  const issue = () => {
    if (stopped || (source.limit !== undefined && issued >= source.limit)) {
      if (inFlight === 0) drained();
      return;
    }
    issued++;
    inFlight++;
    const request = source.next();
    const start = performance.now();
    invoke(request, (errorCode, message) => {
      inFlight--;
      if (measuring) {
        histogram.record((performance.now() - start) * 1000);
        if (errorCode !== null) {
          errors++;
          errorCodes[errorCode] = (errorCodes[errorCode] ?? 0) + 1;
          firstError ??= `${errorCode}: ${message ?? ""}`;
        }
      }
      issue();
    });
  };

  let windowStart = performance.now();
  let cpuStart = process.cpuUsage();
  if (source.limit === undefined) {
    for (let i = 0; i < command.inFlight; i++) issue();
    await sleep(command.warmupMs);
    measuring = true;
    windowStart = performance.now();
    cpuStart = process.cpuUsage();
    emit({ type: "measuring", id: command.id });
    await sleep(command.durationMs);
    measuring = false;
    emit({ type: "measured", id: command.id });
  } else {
    emit({ type: "measuring", id: command.id });
    for (let i = 0; i < command.inFlight; i++) issue();
    await allDone;
    emit({ type: "measured", id: command.id });
  }
  const wallMs = performance.now() - windowStart;
  const cpu = process.cpuUsage(cpuStart);
  const result: LoadResult = {
    type: "result",
    id: command.id,
    calls: histogram.total,
    errors,
    errorCodes,
    firstError,
    wallMs,
    callsPerSec: histogram.total / (wallMs / 1000),
    p50Us: histogram.percentile(0.5),
    p90Us: histogram.percentile(0.9),
    p99Us: histogram.percentile(0.99),
    maxUs: histogram.max,
    meanUs: histogram.mean,
    histogram: histogram.toJSON(),
    cpuMs: (cpu.user + cpu.system) / 1000,
    stuck: 0,
  };
  // Stop issuing and let the calls in flight finish before the next command.
  stopped = true;
  if (inFlight > 0) {
    const timedOut = await Promise.race([allDone.then(() => false), sleep(DRAIN_TIMEOUT_MS).then(() => true)]);
    if (timedOut) result.stuck = inFlight;
  }
  emit(result);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function main(): Promise<void> {
  const single = process.argv[2];
  if (single) {
    const command = JSON.parse(single) as LoadCommand;
    await run(command).catch((error: unknown) => {
      emit({ type: "error", id: command.id, message: String(error) });
    });
    process.exit(0);
  }
  emit({ type: "ready" });
  // One command at a time, in order.
  let queue = Promise.resolve();
  createInterface({ input: process.stdin })
    .on("line", (line) => {
      if (line.trim() === "") return;
      let command: LoadCommand;
      try {
        command = JSON.parse(line) as LoadCommand;
      } catch {
        emit({ type: "error", id: "?", message: "unreadable command" });
        return;
      }
      queue = queue.then(() =>
        run(command).catch((error: unknown) => {
          emit({ type: "error", id: command.id, message: error instanceof Error ? error.message : String(error) });
        }),
      );
    })
    .on("close", () => void queue.then(() => process.exit(0)));
}

void main();
