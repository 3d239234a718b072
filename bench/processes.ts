// Child processes of the benchmark: spawn (pinned to a core with taskset when
// it exists), read their output line by line, wait for readiness, sample their
// CPU time and memory from /proc, and stop every one of them at the end, on
// Ctrl-C and on errors.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import net from "node:net";
import { createInterface } from "node:readline";

export const HAS_TASKSET = spawnSync("taskset", ["-V"], { stdio: "ignore" }).status === 0;

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** CPU core to pin the process to (ignored when taskset is missing). */
  core?: number;
  /** Print the child's stderr as it comes (default: keep it for diagnostics only). */
  echoStderr?: boolean;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const HISTORY = 2_000;

export class Managed {
  readonly pid: number;
  /** The last lines of stdout and stderr, for diagnostics and readiness checks. */
  readonly history: string[] = [];
  readonly exited: Promise<Exit>;
  exit: Exit | undefined;
  private readonly listeners = new Set<(line: string, stream: "stdout" | "stderr") => void>();

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    echoStderr: boolean,
  ) {
    if (child.pid === undefined) throw new Error(`${name}: failed to start`);
    this.pid = child.pid;
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
      child.once("error", () => {
        this.exit ??= { code: -1, signal: null };
        resolve(this.exit);
      });
    });
    const read = (stream: NodeJS.ReadableStream | null, kind: "stdout" | "stderr") => {
      if (!stream) return;
      createInterface({ input: stream }).on("line", (line) => {
        this.history.push(line);
        if (this.history.length > HISTORY) this.history.splice(0, this.history.length - HISTORY);
        if (kind === "stderr" && echoStderr) console.error(`[${this.name}] ${line}`);
        for (const listener of this.listeners) listener(line, kind);
      });
    };
    read(child.stdout, "stdout");
    read(child.stderr, "stderr");
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  onLine(listener: (line: string, stream: "stdout" | "stderr") => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves with the first line (already seen or to come) that matches; rejects on exit or timeout. */
  waitForLine(match: (line: string) => boolean, timeoutMs: number, what = "a line"): Promise<string> {
    const seen = this.history.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error(`${this.name}: no ${what} within ${timeoutMs} ms${this.tail()}`)), timeoutMs);
      const off = this.onLine((line) => {
        if (match(line)) finish(undefined, line);
      });
      void this.exited.then((exit) => finish(new Error(`${this.name} exited (code ${exit.code}, signal ${exit.signal}) before ${what}${this.tail()}`)));
      let done = false;
      function finish(error: Error | undefined, line?: string) {
        if (done) return;
        done = true;
        clearTimeout(timer);
        off();
        if (error) reject(error);
        else resolve(line!);
      }
    });
  }

  send(line: string): void {
    this.child.stdin?.write(line + "\n");
  }

  /** The last lines of output, to append to an error message. */
  tail(lines = 15): string {
    const last = this.history.slice(-lines).map((line) => (line.length > 240 ? `${line.slice(0, 240)}…` : line));
    return last.length ? `\n--- last output of ${this.name} ---\n${last.join("\n")}` : "";
  }

  /** SIGTERM to the process group, SIGKILL after `graceMs`. */
  async stop(graceMs = 5_000): Promise<void> {
    if (this.running) {
      signalGroup(this.pid, "SIGTERM");
      const timer = setTimeout(() => signalGroup(this.pid, "SIGKILL"), graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    running.delete(this);
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal); // the child leads its own group (detached): this reaches its helpers too
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

const running = new Set<Managed>();

/** Starts `command args`, pinned to `options.core` when taskset exists. */
export function startProcess(name: string, command: string, args: string[], options: SpawnOptions = {}): Managed {
  const pinned = HAS_TASKSET && options.core !== undefined;
  const child = spawn(pinned ? "taskset" : command, pinned ? ["-c", String(options.core), command, ...args] : args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: ["pipe", "pipe", "pipe"],
    // Its own process group: Ctrl-C reaches only us, and we stop the children in order.
    detached: true,
  });
  const managed = new Managed(name, child, options.echoStderr ?? false);
  running.add(managed);
  void managed.exited.then(() => running.delete(managed));
  return managed;
}

/** Runs a TypeScript file of this repository in a fresh Node.js process (one process: no tsx wrapper in between). */
export function startTsx(name: string, file: string, args: string[], options: SpawnOptions = {}): Managed {
  return startProcess(name, process.execPath, ["--import", "tsx", file, ...args], options);
}

/** Stops every child still running, in parallel. */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((p) => p.stop(3_000).catch(() => undefined)));
}

const cleanups: Array<() => Promise<void>> = [];
let cleaning: Promise<void> | undefined;

/** Registers work to undo at the end (last registered runs first). */
export function onCleanup(cleanup: () => Promise<void>): void {
  cleanups.push(cleanup);
}

/** Stops every child, then runs the registered clean-ups; safe to call more than once. */
export function cleanup(): Promise<void> {
  return (cleaning ??= (async () => {
    await stopAll();
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (error) {
        console.error(`clean-up step failed: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
  })());
}

let interrupted = false;

/** True once Ctrl-C or a signal asked us to stop: failures after that are expected. */
export function isInterrupted(): boolean {
  return interrupted;
}

/** Ctrl-C, SIGTERM and crashes stop every child and the database before exiting. */
export function installExitHandlers(): void {
  const bail = (code: number, message?: string) => {
    if (code !== 1) interrupted = true;
    if (message) console.error(message);
    void cleanup().finally(() => process.exit(code));
  };
  process.once("SIGINT", () => bail(130, "\ninterrupted: stopping the benchmark's processes and database"));
  process.once("SIGTERM", () => bail(143, "terminated: stopping the benchmark's processes and database"));
  process.once("SIGHUP", () => bail(129));
  process.on("uncaughtException", (error) => bail(1, `benchmark failed: ${error.stack ?? error.message}`));
  process.on("unhandledRejection", (error) => bail(1, `benchmark failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`));
}

export { freePort } from "../test/support/kit.js";

export function isListening(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, host);
    socket.setTimeout(1_000, () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** VmRSS and VmHWM (peak) of a process, in MiB. */
export function memoryMiB(pid: number): { rss: number; peak: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
    return { rss: kib("VmRSS") / 1024, peak: kib("VmHWM") / 1024 };
  } catch {
    return undefined;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
