import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ensurePortalBuild } from "../../portal/scripts/ensure-build.js";
import { startTestService, type TestService, type TestServiceOptions } from "./harness.js";
import { freePort } from "./kit.js";

const rootDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

export interface PortalResponse {
  status: number;
  headers: Headers;
  text: string;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

export interface RequestOptions {
  /** Bearer token; default: the service's admin token. null sends no Authorization header. */
  token?: string | null;
  /** A session id to send as the pc_session cookie. */
  session?: string;
  /** A JSON body (serialised with content-type: application/json). */
  body?: unknown;
  /** A raw body, sent as it is (set the content-type yourself in headers). */
  rawBody?: string;
  /** A body streamed in chunks, without a Content-Length. */
  stream?: ReadableStream<Uint8Array>;
  headers?: Record<string, string>;
}

export interface TestPortal {
  /** e.g. http://127.0.0.1:43121; also the portal's ORIGIN. */
  url: string;
  service: TestService;
  /** SERVICE_ADMIN_TOKEN of the service, which the portal uses too. */
  adminToken: string;
  /** Every line the portal process printed. */
  output: string[];
  /** Every response body this harness has received, for leak checks. */
  bodies: string[];
  /** A request to the portal (no redirects followed); the response body is recorded. */
  request(method: string, path: string, options?: RequestOptions): Promise<PortalResponse>;
  /** Creates an administrator directly in the service. */
  createAdmin(email: string, password: string): Promise<void>;
  /** Signs in through the /login form; returns the session id from the cookie (and the raw response). */
  signIn(email: string, password: string, options?: { redirectTo?: string }): Promise<{ session: string | undefined; response: PortalResponse }>;
  close(): Promise<void>;
}

/** The value of one cookie in a response's Set-Cookie headers. */
export function cookieValue(headers: Headers, name: string): string | undefined {
  for (const line of headers.getSetCookie()) {
    const [pair] = line.split(";");
    const index = pair.indexOf("=");
    if (pair.slice(0, index).trim() === name) return pair.slice(index + 1).trim();
  }
  return undefined;
}

/** The raw Set-Cookie line for one cookie. */
export function setCookieLine(headers: Headers, name: string): string | undefined {
  return headers.getSetCookie().find((line) => line.split("=")[0].trim() === name);
}

async function waitForHealth(url: string, child: ChildProcess, output: string[]): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the portal exited with ${child.exitCode}:\n${output.join("\n")}`);
    try {
      const response = await fetch(`${url}/healthz`);
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`the portal did not become healthy:\n${output.join("\n")}`);
}

export interface TestPortalOptions extends TestServiceOptions {
  /** Extra environment for the portal process. */
  portalEnv?: NodeJS.ProcessEnv;
}

/**
 * The real thing: the service in this process on a fresh database, and the
 * built portal as its own process (`node portal/server.js`) talking to it.
 */
export async function startTestPortal(options: TestPortalOptions = {}): Promise<TestPortal> {
  await ensurePortalBuild(() => undefined);
  const service = await startTestService(options);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const output: string[] = [];
  const child = spawn(process.execPath, [path.join(rootDir, "portal", "server.js")], {
    cwd: rootDir,
    env: {
      PATH: process.env.PATH,
      PORTAL_PORT: String(port),
      HOST: "127.0.0.1",
      ORIGIN: url,
      CREDENTIALS_SERVICE_URL: `${options.tls ? "https" : "http"}://${service.address}`,
      SERVICE_ADMIN_TOKEN: service.adminToken,
      ...options.portalEnv,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const collect = (chunk: Buffer) => output.push(...chunk.toString().split("\n").filter(Boolean));
  child.stdout!.on("data", collect);
  child.stderr!.on("data", collect);
  try {
    await waitForHealth(url, child, output);
  } catch (error) {
    child.kill("SIGKILL");
    await service.close();
    throw error;
  }

  const bodies: string[] = [];
  const request = async (method: string, requestPath: string, opts: RequestOptions = {}): Promise<PortalResponse> => {
    const headers: Record<string, string> = { ...opts.headers };
    const token = opts.token === undefined ? service.adminToken : opts.token;
    if (token !== null && !("authorization" in headers)) headers.authorization = `Bearer ${token}`;
    if (opts.session !== undefined) headers.cookie = `pc_session=${opts.session}`;
    let body: string | ReadableStream<Uint8Array> | undefined = opts.rawBody ?? opts.stream;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers["content-type"] ??= "application/json";
    }
    const init: RequestInit & { duplex?: "half" } = { method, headers, body, redirect: "manual" };
    if (opts.stream) init.duplex = "half";
    const response = await fetch(`${url}${requestPath}`, init);
    const text = await response.text();
    bodies.push(text);
    let json: unknown;
    try {
      json = text === "" ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: response.status, headers: response.headers, text, json };
  };

  return {
    url,
    service,
    adminToken: service.adminToken,
    output,
    bodies,
    request,
    async createAdmin(email, password) {
      await service.service.parts.admins.create(email, password, { actor: "test", source: null });
    },
    async signIn(email, password, signInOptions = {}) {
      const form = new URLSearchParams({ email, password });
      if (signInOptions.redirectTo !== undefined) form.set("redirectTo", signInOptions.redirectTo);
      const response = await request("POST", "/login", {
        token: null,
        rawBody: form.toString(),
        // A browser's form post: without accept text/html, SvelteKit answers with its JSON action result.
        headers: { "content-type": "application/x-www-form-urlencoded", origin: url, accept: "text/html" },
      });
      return { session: cookieValue(response.headers, "pc_session"), response };
    },
    async close() {
      if (child.exitCode === null) {
        const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(timer);
      }
      await service.close();
    },
  };
}

/** One operation of the OpenAPI document the portal serves. */
export interface DocumentedOperation {
  method: string;
  path: string;
}

/** Every operation of the OpenAPI document the portal serves: a route added later is covered too. */
export async function documentedOperations(portal: TestPortal): Promise<DocumentedOperation[]> {
  const document = (await portal.request("GET", "/api/openapi.json", { token: null })).json;
  const list: DocumentedOperation[] = [];
  for (const [path, item] of Object.entries(document.paths as Record<string, Record<string, unknown>>)) {
    for (const method of Object.keys(item)) list.push({ method: method.toUpperCase(), path });
  }
  return list;
}

/**
 * A concrete URL for a documented path, its parameters filled with well-formed values: a UUID for
 * credential_id, "openai" for provider, `${prefix}-<name>` for the others (names, ids).
 */
export function concretePath(path: string, prefix: string): string {
  return `/api${path.replace(/\{([a-z_]+)\}/g, (_, name: string) =>
    name === "credential_id" ? "00000000-0000-4000-8000-000000000000" : name === "provider" ? "openai" : `${prefix}-${name.replace(/_/g, "-")}`,
  )}`;
}
