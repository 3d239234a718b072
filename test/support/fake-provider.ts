/**
 * A fake LLM provider on loopback for tests: one HTTP server imitating the
 * model-list endpoints of OpenAI, Anthropic, Google Gemini and Fireworks AI,
 * answering each request according to the key it carries.
 *
 *   const fake = await startFakeProvider({ keys: { "sk-good-123456": "valid", "sk-bad-123456": "invalid" } });
 *   await checkProviderKey({ provider: "openai", apiKey: "sk-good-123456", apiBase: fake.baseUrl("openai") });
 *   expect(fake.requests[0].headers.authorization).toBe("Bearer sk-good-123456");
 *   await fake.close();
 *
 * Point the service at it with a credential's api_base: `fake.baseUrl(provider)`
 * (`http://127.0.0.1:PORT/openai`), optionally with the version segment
 * (`…/openai/v1`, `…/gemini/v1beta`, `…/fireworks/inference/v1`). Each
 * provider prefix accepts only that provider's path and auth style. The bare
 * root (`fake.url`) serves the real paths too: `/v1beta/models` is Gemini,
 * `/inference/v1/models` Fireworks, and `/v1/models` Anthropic when an
 * `x-api-key` or `anthropic-version` header is present, else OpenAI.
 *
 * Auth is checked per provider, like the real APIs, and strictly: OpenAI and
 * Fireworks `Authorization: Bearer <key>`; Anthropic `x-api-key` plus
 * `anthropic-version`; Gemini `x-goog-api-key`. A Gemini key in the query
 * (`?key=`), which the real API would accept, is refused here (400) so that a
 * key in a URL fails loudly; every request is also recorded for assertions.
 *
 * Keys not in the map get `unknownKey` (default "invalid"), as a real provider
 * treats a key it never issued.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { freePort } from "./kit.js";

export type FakeProviderName = "openai" | "anthropic" | "gemini" | "fireworks";

export const FAKE_PROVIDER_NAMES: readonly FakeProviderName[] = ["openai", "anthropic", "gemini", "fireworks"];

/** An exact answer, for cases the named behaviours do not cover (Gemini's 403 "API key not valid", a 404, a 529). */
export interface FakeResponse {
  status: number;
  headers?: Record<string, string>;
  /** A string is sent as is; anything else as JSON. */
  body?: unknown;
  /** Answer only after this many milliseconds (cancelled by close()). */
  delayMs?: number;
}

/**
 * - `valid`: 200 with the provider's model list.
 * - `invalid`: the provider's bad-key answer: OpenAI 401 `invalid_api_key` (whose message, like the
 *   real one, repeats the start and end of the key), Anthropic 401 `authentication_error`,
 *   Gemini 400 `API_KEY_INVALID`, Fireworks 401.
 * - `forbidden`: 403 in the provider's shape (restricted key, disabled API, ...).
 * - `rate_limited`: 429 with `Retry-After` (option `retryAfter`, default "7").
 * - `server_error`: 500.
 * - `slow`: answers `valid` only after `slowMs` (default 60 s): past any check timeout.
 * - `slow_body`: sends the `invalid` status and headers and the first bytes of the body, then stalls for `slowMs`.
 * - `redirect`: 302 to the same path on a second loopback server (`redirectTarget`), which records
 *   what it receives and answers 200 with a model list (so a followed redirect would look valid).
 * - `html`: 200 with an HTML page (a captive portal or a web server at a wrong api_base).
 */
export type FakeBehaviour = "valid" | "invalid" | "forbidden" | "rate_limited" | "server_error" | "slow" | "slow_body" | "redirect" | "html" | FakeResponse;

export interface RecordedRequest {
  method: string;
  /** The request target as received: path and query. */
  url: string;
  /** The path without the query. */
  path: string;
  /** Header names in lower case, as node:http gives them. */
  headers: http.IncomingHttpHeaders;
  /** The provider the fake took the request for, or null (unknown path). */
  provider: FakeProviderName | null;
  /** The key taken from the provider's auth header, or null when that header was missing. */
  key: string | null;
  /** What the fake answered: a behaviour name, `custom`, or `not_found`, `missing_auth`, `key_in_url`, ... */
  answered: string;
  at: Date;
}

export interface FakeProviderOptions {
  /** Key → behaviour. More can be added later with `setKey`. */
  keys?: Record<string, FakeBehaviour>;
  /** For keys not in the map. Default "invalid". */
  unknownKey?: FakeBehaviour;
  /** How long `slow` and `slow_body` wait. Default 60 000 ms. */
  slowMs?: number;
  /** The Retry-After value sent by `rate_limited`. Default "7". */
  retryAfter?: string;
}

export interface RedirectTarget {
  url: string;
  requests: RecordedRequest[];
  /** Whether any request it received carried `text` in a header value or its URL. */
  received(text: string): boolean;
}

export interface FakeProvider {
  /** `http://127.0.0.1:PORT`, no trailing slash. */
  url: string;
  port: number;
  /** An api_base for this provider: `http://127.0.0.1:PORT/<provider>`. */
  baseUrl(provider: FakeProviderName): string;
  /** Every request, oldest first. */
  requests: RecordedRequest[];
  /** The server `redirect` sends clients to. */
  redirectTarget: RedirectTarget;
  setKey(key: string, behaviour: FakeBehaviour): void;
  /** Forgets recorded requests (on both servers). */
  clearRequests(): void;
  /** Requests (on both servers) whose URL contains `text`: use to assert a key never travelled in a URL. */
  urlsContaining(text: string): string[];
  /** Stops both servers, dropping open connections and pending slow answers. */
  close(): Promise<void>;
}

const MODELS_PATHS: Readonly<Record<FakeProviderName, readonly string[]>> = {
  openai: ["/v1/models"],
  anthropic: ["/v1/models"],
  gemini: ["/v1beta/models", "/v1/models"],
  fireworks: ["/inference/v1/models"],
};

export async function startFakeProvider(options: FakeProviderOptions = {}): Promise<FakeProvider> {
  const keys = new Map<string, FakeBehaviour>(Object.entries(options.keys ?? {}));
  const unknownKey = options.unknownKey ?? "invalid";
  const slowMs = options.slowMs ?? 60_000;
  const retryAfterValue = options.retryAfter ?? "7";
  const timers = new Set<NodeJS.Timeout>();
  const requests: RecordedRequest[] = [];
  const targetRequests: RecordedRequest[] = [];

  const later = (fn: () => void, ms = slowMs) => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      fn();
    }, ms);
    timers.add(timer);
  };

  // The redirect target: records everything, answers like a provider that accepts any key.
  const target = http.createServer((req, res) => {
    const { path } = splitUrl(req.url);
    const provider = inferProvider(path, req.headers);
    targetRequests.push(record(req, provider ?? null, anyKey(req), "redirect_target"));
    const reply = provider ? valid(provider) : { status: 200, body: { object: "list", data: [] } };
    send(res, reply);
  });
  const targetUrl = await listen(target);

  const server = http.createServer((req, res) => {
    const { path, query } = splitUrl(req.url);
    let provider: FakeProviderName | undefined;
    let rest = path;
    const first = path.split("/")[1] as FakeProviderName;
    if (FAKE_PROVIDER_NAMES.includes(first)) {
      provider = first;
      rest = path.slice(first.length + 1);
    } else {
      provider = inferProvider(path, req.headers);
    }
    const answer = (key: string | null, answered: string, reply: FakeResponse) => {
      requests.push(record(req, provider ?? null, key, answered));
      if (reply.delayMs) later(() => send(res, reply), reply.delayMs);
      else send(res, reply);
    };

    if (!provider || !MODELS_PATHS[provider].includes(rest)) {
      return answer(null, "not_found", notFound(provider));
    }
    if (req.method !== "GET") return answer(null, "method_not_allowed", { status: 405, body: { error: "method not allowed" } });
    if (provider === "gemini" && query.has("key")) {
      return answer(
        query.get("key"),
        "key_in_url",
        geminiError(400, "INVALID_ARGUMENT", "API keys in the URL are refused by this fake; use x-goog-api-key.", "API_KEY_IN_URL"),
      );
    }
    const auth = authOf(provider, req.headers);
    if ("missing" in auth) return answer(null, auth.answered, auth.reply);
    const key = auth.key;
    const behaviour = keys.get(key) ?? unknownKey;

    if (typeof behaviour === "object") return answer(key, "custom", behaviour);
    switch (behaviour) {
      case "valid":
        return answer(key, behaviour, valid(provider));
      case "invalid":
        return answer(key, behaviour, invalid(provider, key));
      case "forbidden":
        return answer(key, behaviour, forbidden(provider));
      case "rate_limited":
        return answer(key, behaviour, rateLimited(provider, retryAfterValue));
      case "server_error":
        return answer(key, behaviour, serverError(provider));
      case "html":
        return answer(key, behaviour, {
          status: 200,
          headers: { "content-type": "text/html; charset=utf-8" },
          body: "<!doctype html><title>Sign in</title><p>Please sign in to continue.</p>",
        });
      case "redirect":
        return answer(key, behaviour, { status: 302, headers: { location: `${targetUrl}${req.url ?? "/"}` }, body: "" });
      case "slow": {
        requests.push(record(req, provider, key, behaviour));
        const reply = valid(provider);
        later(() => send(res, reply));
        return;
      }
      case "slow_body": {
        requests.push(record(req, provider, key, behaviour));
        const reply = invalid(provider, key);
        const text = bodyText(reply.body);
        res.writeHead(reply.status, { "content-type": "application/json", ...reply.headers });
        res.write(text.slice(0, 5));
        later(() => res.end(text.slice(5)));
        return;
      }
    }
  });
  const url = await listen(server);

  const closeServer = (s: http.Server) =>
    new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });

  return {
    url,
    port: Number(new URL(url).port),
    baseUrl: (provider) => `${url}/${provider}`,
    requests,
    redirectTarget: {
      url: targetUrl,
      requests: targetRequests,
      received: (text) => targetRequests.some((r) => r.url.includes(text) || Object.values(r.headers).some((v) => String(v).includes(text))),
    },
    setKey: (key, behaviour) => void keys.set(key, behaviour),
    clearRequests: () => {
      requests.length = 0;
      targetRequests.length = 0;
    },
    urlsContaining: (text) => [...requests, ...targetRequests].map((r) => r.url).filter((u) => u.includes(text)),
    close: async () => {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      await Promise.all([closeServer(server), closeServer(target)]);
    },
  };
}

/**
 * A loopback URL on which nothing listens (connections are refused): a port
 * that was just bound and released. Another process could take it in
 * between; on a test machine that is rare enough.
 */
export async function refusedUrl(): Promise<string> {
  return `http://127.0.0.1:${await freePort()}`;
}

function listen(server: http.Server): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      resolve(`http://127.0.0.1:${port}`);
    });
  });
}

function splitUrl(raw: string | undefined): { path: string; query: URLSearchParams } {
  const url = new URL(raw ?? "/", "http://fake.invalid");
  return { path: url.pathname, query: url.searchParams };
}

function inferProvider(path: string, headers: http.IncomingHttpHeaders): FakeProviderName | undefined {
  if (path === "/v1beta/models") return "gemini";
  if (path === "/inference/v1/models") return "fireworks";
  if (path === "/v1/models") return headers["x-api-key"] !== undefined || headers["anthropic-version"] !== undefined ? "anthropic" : "openai";
  return undefined;
}

function record(req: http.IncomingMessage, provider: FakeProviderName | null, key: string | null, answered: string): RecordedRequest {
  return {
    method: req.method ?? "",
    url: req.url ?? "",
    path: splitUrl(req.url).path,
    headers: { ...req.headers },
    provider,
    key,
    answered,
    at: new Date(),
  };
}

function header(headers: http.IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function bearer(headers: http.IncomingHttpHeaders): string | undefined {
  const match = /^Bearer (\S+)$/.exec(header(headers, "authorization") ?? "");
  return match?.[1];
}

/** Whatever key a request carries, in any provider's style (for the redirect target). */
function anyKey(req: http.IncomingMessage): string | null {
  return bearer(req.headers) ?? header(req.headers, "x-api-key") ?? header(req.headers, "x-goog-api-key") ?? splitUrl(req.url).query.get("key") ?? null;
}

type Auth = { key: string } | { missing: true; answered: string; reply: FakeResponse };

function authOf(provider: FakeProviderName, headers: http.IncomingHttpHeaders): Auth {
  switch (provider) {
    case "openai": {
      const key = bearer(headers);
      return key
        ? { key }
        : {
            missing: true,
            answered: "missing_auth",
            reply: openAIError(
              401,
              "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth.",
              "invalid_request_error",
              null,
            ),
          };
    }
    case "fireworks": {
      const key = bearer(headers);
      return key ? { key } : { missing: true, answered: "missing_auth", reply: fireworksError(401, "UNAUTHENTICATED", "Missing Authorization header") };
    }
    case "anthropic": {
      const key = header(headers, "x-api-key");
      if (!key) return { missing: true, answered: "missing_auth", reply: anthropicError(401, "authentication_error", "x-api-key header is required") };
      if (!header(headers, "anthropic-version")) {
        return { missing: true, answered: "missing_version", reply: anthropicError(400, "invalid_request_error", "anthropic-version: header is required") };
      }
      return { key };
    }
    case "gemini": {
      const key = header(headers, "x-goog-api-key");
      return key
        ? { key }
        : {
            missing: true,
            answered: "missing_auth",
            reply: geminiError(
              403,
              "PERMISSION_DENIED",
              "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            ),
          };
    }
  }
}

function valid(provider: FakeProviderName): FakeResponse {
  switch (provider) {
    case "openai":
      return {
        status: 200,
        body: { object: "list", data: [{ id: "gpt-4o-mini", object: "model", created: 1721172741, owned_by: "system" }] },
      };
    case "anthropic":
      return {
        status: 200,
        body: {
          data: [{ type: "model", id: "claude-3-5-haiku-20241022", display_name: "Claude Haiku 3.5", created_at: "2024-10-22T00:00:00Z" }],
          has_more: false,
          first_id: "claude-3-5-haiku-20241022",
          last_id: "claude-3-5-haiku-20241022",
        },
      };
    case "gemini":
      return {
        status: 200,
        body: { models: [{ name: "models/gemini-2.0-flash", displayName: "Gemini 2.0 Flash", supportedGenerationMethods: ["generateContent"] }] },
      };
    case "fireworks":
      return {
        status: 200,
        body: { object: "list", data: [{ id: "accounts/fireworks/models/llama-v3p1-8b-instruct", object: "model", owned_by: "fireworks" }] },
      };
  }
}

function invalid(provider: FakeProviderName, key: string): FakeResponse {
  switch (provider) {
    case "openai":
      // Like the real API, the message repeats part of the key: a check must not pass it on.
      return openAIError(
        401,
        `Incorrect API key provided: ${key.slice(0, 8)}${"*".repeat(12)}${key.slice(-4)}. You can find your API key at https://platform.openai.com/account/api-keys.`,
        "invalid_request_error",
        "invalid_api_key",
      );
    case "anthropic":
      return anthropicError(401, "authentication_error", "invalid x-api-key");
    case "gemini":
      return geminiError(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", "API_KEY_INVALID");
    case "fireworks":
      return fireworksError(401, "UNAUTHENTICATED", "The API key you provided is invalid.");
  }
}

function forbidden(provider: FakeProviderName): FakeResponse {
  switch (provider) {
    case "openai":
      return openAIError(403, "You have insufficient permissions for this operation. Missing scopes: api.model.read.", "invalid_request_error", null);
    case "anthropic":
      return anthropicError(403, "permission_error", "Your API key does not have permission to use the specified resource.");
    case "gemini":
      return geminiError(403, "PERMISSION_DENIED", "Generative Language API has not been used in this project before or it is disabled.", "SERVICE_DISABLED");
    case "fireworks":
      return fireworksError(403, "PERMISSION_DENIED", "The API key does not have access to this account.");
  }
}

function rateLimited(provider: FakeProviderName, retryAfter: string): FakeResponse {
  const reply = (() => {
    switch (provider) {
      case "openai":
        return openAIError(429, "Rate limit reached for requests.", "requests", "rate_limit_exceeded");
      case "anthropic":
        return anthropicError(429, "rate_limit_error", "Number of requests has exceeded your rate limit.");
      case "gemini":
        return geminiError(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).");
      case "fireworks":
        return fireworksError(429, "RESOURCE_EXHAUSTED", "Request rate limit exceeded.");
    }
  })();
  return { ...reply, headers: { ...reply.headers, "retry-after": retryAfter } };
}

function serverError(provider: FakeProviderName): FakeResponse {
  switch (provider) {
    case "openai":
      return openAIError(500, "The server had an error while processing your request.", "server_error", null);
    case "anthropic":
      return anthropicError(500, "api_error", "Internal server error");
    case "gemini":
      return geminiError(500, "INTERNAL", "An internal error has occurred.");
    case "fireworks":
      return fireworksError(500, "INTERNAL", "Internal server error");
  }
}

function notFound(provider: FakeProviderName | undefined): FakeResponse {
  switch (provider) {
    case "anthropic":
      return anthropicError(404, "not_found_error", "Not found");
    case "gemini":
      return geminiError(404, "NOT_FOUND", "Requested entity was not found.");
    case "fireworks":
      return fireworksError(404, "NOT_FOUND", "Not found");
    default:
      return openAIError(404, "Invalid URL", "invalid_request_error", null);
  }
}

function openAIError(status: number, message: string, type: string, code: string | null): FakeResponse {
  return { status, body: { error: { message, type, param: null, code } } };
}

function anthropicError(status: number, type: string, message: string): FakeResponse {
  return { status, body: { type: "error", error: { type, message }, request_id: "req_fake0001" } };
}

function geminiError(status: number, grpcStatus: string, message: string, reason?: string): FakeResponse {
  const details = reason
    ? [
        {
          "@type": "type.googleapis.com/google.rpc.ErrorInfo",
          reason,
          domain: "googleapis.com",
          metadata: { service: "generativelanguage.googleapis.com" },
        },
      ]
    : undefined;
  return { status, body: { error: { code: status, message, status: grpcStatus, ...(details ? { details } : {}) } } };
}

function fireworksError(status: number, code: string, message: string): FakeResponse {
  return { status, body: { error: { object: "error", type: "invalid_request_error", code, message } } };
}

function bodyText(body: unknown): string {
  if (body === undefined) return "";
  return typeof body === "string" ? body : JSON.stringify(body);
}

function send(res: http.ServerResponse, reply: FakeResponse): void {
  if (res.destroyed) return;
  const text = bodyText(reply.body);
  const headers: Record<string, string> = { ...reply.headers };
  const hasType = Object.keys(headers).some((name) => name.toLowerCase() === "content-type");
  if (!hasType && typeof reply.body !== "string" && reply.body !== undefined) headers["content-type"] = "application/json";
  res.writeHead(reply.status, headers);
  res.end(text);
}
