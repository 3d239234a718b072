/**
 * Verifies an API key against its provider by calling the provider's cheapest
 * authenticated endpoint (the model list) once, and classifies the answer.
 *
 * Self-contained: no database, no logging, no global state. The caller decides
 * what to do with the result (store it on the credential, show it, count it).
 *
 * Safety rules, all enforced here:
 * - The key travels only in the provider's auth header, never in the URL
 *   (Gemini included: `x-goog-api-key`, not `?key=`).
 * - Redirects are not followed (`redirect: "manual"`): a redirect is reported as
 *   "unexpected", so the key is never forwarded to another host.
 * - At most 64 KiB of the response body is read, used only to pick out a short
 *   error code (`providerCode`, never stored or shown), and dropped. Messages are
 *   fixed text per outcome with the HTTP status: nothing from the target's body
 *   or headers is echoed (OpenAI's own 401 message repeats the start and end of the key).
 * - With a guard (ApiBaseGuard), the api_base's host is resolved once, every
 *   address vetted, and the request connects only to a vetted address.
 * - Every message is built from fixed text plus sanitised fragments, then
 *   scrubbed of anything that overlaps the key, so no message contains the key
 *   or any part of it.
 */
import type { ProviderName } from "../db/entities.js";
import { PROVIDER_NAMES, PROVIDERS, type ProviderInfo } from "@provider-credentials/wire/providers";
import { validateApiBase } from "./validation.js";
import { pinnedFetch, refusal, type ApiBaseGuard } from "./api-base-guard.js";

export const PROVIDER_CHECK_OUTCOMES = ["valid", "invalid_key", "no_permission", "rate_limited", "unreachable", "unexpected"] as const;

export type ProviderCheckOutcome = (typeof PROVIDER_CHECK_OUTCOMES)[number];

export interface ProviderCheckResult {
  /**
   * - `valid`: the provider answered 2xx with a JSON body.
   * - `invalid_key`: the provider said the key is wrong (401; Gemini's 400/403 "API key not valid").
   * - `no_permission`: the key was refused access (403): restricted key, disabled API, region.
   * - `rate_limited`: 429 (this includes quota exhaustion, see `providerCode`, e.g. `insufficient_quota`).
   * - `unreachable`: no HTTP answer: DNS, connection refused or reset, TLS failure, timeout.
   * - `unexpected`: any other answer: 5xx, 404, other 4xx, a redirect, a 2xx that is not JSON,
   *   or an unusable api_base / key that was never sent.
   */
  outcome: ProviderCheckOutcome;
  /** The provider's HTTP status, or null when there was no HTTP answer. */
  httpStatus: number | null;
  /**
   * From just before the request to the end of the check (body read included),
   * in whole milliseconds rounded up: any check that made a request reports at least 1.
   */
  latencyMs: number;
  /** One human-readable sentence naming the provider; never contains the key or any part of it. */
  message: string;
  /** When the check started. */
  checkedAt: Date;
  /**
   * The provider's machine-readable error code when one was found and passed
   * sanitising (`invalid_api_key`, `authentication_error`, `API_KEY_INVALID`,
   * `insufficient_quota`, ...), or the network error code (`ECONNREFUSED`,
   * `ERR_SSL_WRONG_VERSION_NUMBER`, `TIMEOUT`). Useful to tell quota from rate limits.
   */
  providerCode?: string;
}

export interface ProviderCheckInput {
  provider: ProviderName;
  apiKey: string;
  /** The credential's api_base (validateApiBase's output), or null for the provider's public API. */
  apiBase: string | null;
  /** Whole-check budget: connect, headers and body. Default 10 000 ms. */
  timeoutMs?: number;
  /**
   * Cancels the check (e.g. on shutdown or when the RPC caller goes away). A
   * cancelled check rejects with `signal.reason` instead of resolving: nothing
   * was learnt about the key, so there is no result to store.
   */
  signal?: AbortSignal;
  /**
   * Where the request may go: without one, anywhere (tests of the check itself).
   * With one, a refused api_base is not called and the connection is pinned to the vetted address.
   */
  guard?: ApiBaseGuard;
  /** For tests; defaults to the global fetch (or, with a guard, a fetch pinned to the vetted address). */
  fetchImpl?: typeof fetch;
}

export const DEFAULT_PROVIDER_CHECK_TIMEOUT_MS = 10_000;

/** How much of a response body is read at most (to find an error code); the rest is discarded. */
export const MAX_CHECK_BODY_BYTES = 64 * 1024;

export const DEFAULT_API_BASES = Object.fromEntries(PROVIDER_NAMES.map((name) => [name, PROVIDERS[name].defaultApiBase])) as Readonly<
  Record<ProviderName, string>
>;

/**
 * How the model-list path is joined to a base, per provider: the first rule
 * whose `endsWith` the base path (trailing slashes removed) ends with, at a
 * segment boundary, decides what is appended; with no match, `otherwise` is.
 *
 * So an api_base that already carries the API's version segment is not given
 * it twice:
 *   openai     https://gw.example/v1          → https://gw.example/v1/models
 *              https://gw.example/openai      → https://gw.example/openai/v1/models
 *   anthropic  https://gw.example/v1          → https://gw.example/v1/models
 *   gemini     https://gw.example/v1beta      → https://gw.example/v1beta/models
 *              https://gw.example/v1          → https://gw.example/v1/models   (Gemini's stable API)
 *              https://gw.example             → https://gw.example/v1beta/models
 *   fireworks  https://api.fireworks.ai/inference/v1 → .../inference/v1/models
 *              https://api.fireworks.ai/inference    → .../inference/v1/models
 *              https://gw.example/v1          → https://gw.example/v1/models   (OpenAI-compatible gateway)
 *              https://gw.example             → https://gw.example/inference/v1/models
 * Matching is case-sensitive (URL paths are) and by whole segments
 * (`/apiv1` does not end with `/v1`). The base's query string is kept (some
 * gateways route on it), its fragment dropped. Nothing from the key is ever
 * added to the URL.
 */
const PATH_RULES: Readonly<Record<ProviderName, { rules: ReadonlyArray<{ endsWith: string; append: string }>; otherwise: string }>> = {
  openai: { rules: [{ endsWith: "/v1", append: "/models" }], otherwise: "/v1/models" },
  anthropic: { rules: [{ endsWith: "/v1", append: "/models" }], otherwise: "/v1/models" },
  gemini: {
    rules: [
      { endsWith: "/v1beta", append: "/models" },
      { endsWith: "/v1", append: "/models" },
    ],
    otherwise: "/v1beta/models",
  },
  fireworks: {
    rules: [
      { endsWith: "/v1", append: "/models" }, // covers /inference/v1
      { endsWith: "/inference", append: "/v1/models" },
    ],
    otherwise: "/inference/v1/models",
  },
};

/**
 * The URL a check calls for this provider and api_base (see PATH_RULES).
 * Throws a ServiceError (invalid_argument, field api_base) when the api_base
 * is not a usable http(s) URL.
 */
export function providerModelsUrl(provider: ProviderName, apiBase: string | null): URL {
  const base = apiBase === null ? DEFAULT_API_BASES[provider] : (validateApiBase(apiBase) ?? DEFAULT_API_BASES[provider]);
  const url = new URL(base);
  const path = url.pathname.replace(/\/+$/, "");
  const { rules, otherwise } = PATH_RULES[provider];
  const rule = rules.find((r) => path.endsWith(r.endsWith));
  url.pathname = path + (rule ? rule.append : otherwise);
  url.hash = "";
  return url;
}

/** The request headers for a check: the provider's auth style and nothing that identifies the caller's users. */
function requestHeaders(provider: ProviderName, apiKey: string): Record<string, string> {
  const common = { accept: "application/json", "user-agent": "provider-credentials-key-check/1" };
  const auth: ProviderInfo["auth"] = PROVIDERS[provider].auth;
  if ("scheme" in auth) return { ...common, [auth.header]: `${auth.scheme} ${apiKey}` };
  return { ...common, ...auth.extra, [auth.header]: apiKey };
}

/** What can go in an HTTP header value unchanged; keys are validated to this on save. */
const HEADER_SAFE_KEY = /^[\x21-\x7e]+$/;

class CheckTimeout extends Error {
  override readonly name = "CheckTimeout";
}

/**
 * Calls the provider once with the key and reports what it said. Resolves for
 * every outcome, network failures and timeouts included; rejects only when
 * `input.signal` aborts (with its reason).
 */
export async function checkProviderKey(input: ProviderCheckInput): Promise<ProviderCheckResult> {
  const { provider, apiKey } = input;
  const label = PROVIDERS[provider].label;
  const timeoutMs = input.timeoutMs ?? DEFAULT_PROVIDER_CHECK_TIMEOUT_MS;
  let fetchImpl = input.fetchImpl ?? globalThis.fetch;
  const checkedAt = new Date();
  const started = performance.now();
  input.signal?.throwIfAborted();

  const finish = (outcome: ProviderCheckOutcome, httpStatus: number | null, message: string, providerCode?: string): ProviderCheckResult => {
    const result: ProviderCheckResult = {
      outcome,
      httpStatus,
      latencyMs: Math.max(0, Math.ceil(performance.now() - started)),
      message: scrub(message, apiKey),
      checkedAt,
    };
    if (providerCode !== undefined) result.providerCode = providerCode;
    return result;
  };

  let url: URL;
  try {
    url = providerModelsUrl(provider, input.apiBase);
  } catch (error) {
    const problem = error instanceof Error ? error.message.replace(/^api_base:\s*/, "") : "is not usable";
    return finish("unexpected", null, `${label} was not called: the api_base ${problem}.`);
  }
  if (!HEADER_SAFE_KEY.test(apiKey)) {
    return finish("invalid_key", null, `${label} was not called: the key is empty or contains spaces or characters that cannot be sent in a header.`);
  }
  const where = `${label} at ${url.host}`;
  if (input.guard) {
    const vetted = await input.guard.vet(url);
    input.signal?.throwIfAborted();
    if (!vetted.ok && vetted.refused) return finish("unexpected", null, `${label} was not called: the api_base ${refusal(vetted.refused, vetted.literal)}.`);
    if (!vetted.ok) {
      const { reason, code } = networkFailure(vetted.error);
      return finish("unreachable", null, `Could not reach ${where}: ${reason}.`, code);
    }
    if (!input.fetchImpl) fetchImpl = pinnedFetch(vetted.addresses);
  }

  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new CheckTimeout()), timeoutMs);
  const signal = input.signal ? AbortSignal.any([controller.signal, input.signal]) : controller.signal;
  const callerAborted = () => input.signal?.aborted === true;
  const timedOut = `Could not reach ${where}: timed out after ${formatDuration(timeoutMs)}.`;

  try {
    let response: Response;
    try {
      response = await untilAborted(fetchImpl(url, { method: "GET", headers: requestHeaders(provider, apiKey), redirect: "manual", signal }), signal);
    } catch (error) {
      if (callerAborted()) throw input.signal?.reason;
      if (controller.signal.aborted) return finish("unreachable", null, timedOut, "TIMEOUT");
      const { reason, code } = networkFailure(error);
      return finish("unreachable", null, `Could not reach ${where}: ${reason}.`, code);
    }

    const status = response.status;
    // Node's fetch hands back the 3xx itself; a browser-style fetch an opaque redirect with status 0.
    if (response.type === "opaqueredirect" || (status >= 300 && status < 400)) {
      await discard(response);
      return finish(
        "unexpected",
        status === 0 ? null : status,
        `${where} answered with a redirect (HTTP ${status || "3xx"}); it was not followed, so the key was not sent on. Check the api_base.`,
      );
    }

    const contentType = response.headers.get("content-type") ?? "";
    if (status >= 200 && status < 300 && /\bjson\b/i.test(contentType)) {
      // Authenticated; the model list itself is not needed.
      await discard(response);
      return finish("valid", status, `${label} accepted the key (HTTP ${status}).`);
    }

    const bodyText = await readCapped(response, MAX_CHECK_BODY_BYTES, signal);
    if (callerAborted()) throw input.signal?.reason;

    if (status >= 200 && status < 300) {
      // Some servers omit the content type; a JSON body is still the API.
      if (/^\s*[[{]/.test(bodyText)) return finish("valid", status, `${label} accepted the key (HTTP ${status}).`);
      return finish(
        "unexpected",
        status,
        `${where} answered HTTP ${status} but not with JSON; ` + `the api_base may point at a web page or proxy rather than the ${label} API.`,
      );
    }

    const details = errorDetails(bodyText, apiKey);
    const code = details.code;
    const suffix = `HTTP ${status}`;

    if (status === 401 || (provider === "gemini" && (status === 400 || status === 403) && details.keyNotValid)) {
      return finish("invalid_key", status, `${label} rejected the key as invalid (${suffix}).`, code);
    }
    if (status === 403) {
      return finish("no_permission", status, `${label} refused the key access to the model list (${suffix}).`, code);
    }
    if (status === 429) {
      return finish("rate_limited", status, `${label} rate limited the key (${suffix}).`, code);
    }
    if (status >= 500) {
      return finish("unexpected", status, `${where} answered with a server error (${suffix}).`, code);
    }
    const hint = status === 404 || status === 405 ? "; check the api_base" : "";
    return finish("unexpected", status, `${where} answered with an unexpected status (${suffix})${hint}.`, code);
  } catch (error) {
    if (callerAborted()) throw input.signal?.reason;
    // Errors after the headers (a body stream failing) other than our timeout, which readCapped absorbs.
    if (controller.signal.aborted) return finish("unreachable", null, timedOut, "TIMEOUT");
    const { reason, code } = networkFailure(error);
    return finish("unreachable", null, `Could not reach ${where}: ${reason}.`, code);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The fetch's response, or a rejection as soon as the signal aborts even if
 * the fetch implementation ignores its signal: the timeout is a hard limit.
 * A response arriving after that is released.
 */
function untilAborted(pending: Promise<Response>, signal: AbortSignal): Promise<Response> {
  return new Promise<Response>((resolve, reject) => {
    const onAbort = () => {
      reject(signal.reason);
      pending.then(discard, () => undefined);
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    pending.then(
      (response) => {
        signal.removeEventListener("abort", onAbort);
        resolve(response);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

/** Releases a response body without reading it. */
async function discard(response: Response): Promise<void> {
  try {
    await response.body?.cancel();
  } catch {
    // Nothing to release.
  }
}

/**
 * Up to `cap` bytes of the body as text. Stops early (keeping what arrived)
 * when the body errors or the signal aborts: the status alone still classifies
 * the answer. The bytes are not kept beyond the returned string.
 */
async function readCapped(response: Response, cap: number, signal: AbortSignal): Promise<string> {
  const body = response.body;
  if (!body) return "";
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<"aborted">((resolve) => {
    if (signal.aborted) resolve("aborted");
    onAbort = () => resolve("aborted");
    signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    while (size < cap) {
      const next = await Promise.race([reader.read(), aborted]);
      if (next === "aborted" || next.done) break;
      const room = cap - size;
      const chunk = next.value.byteLength > room ? next.value.subarray(0, room) : next.value;
      chunks.push(chunk);
      size += chunk.byteLength;
    }
  } catch {
    // Keep what arrived.
  } finally {
    if (onAbort) signal.removeEventListener("abort", onAbort);
    reader.cancel().catch(() => undefined);
  }
  return new TextDecoder("utf-8", { fatal: false }).decode(Buffer.concat(chunks));
}

/**
 * A short, machine-readable error code from a provider's error body, and
 * whether the body says the key is not valid (Gemini). Only identifier-like
 * codes survive; free-text messages are inspected, never returned.
 *
 * Shapes: OpenAI / Fireworks `{"error":{"code":"invalid_api_key","type":...,"message":...}}`;
 * Anthropic `{"type":"error","error":{"type":"authentication_error",...}}`;
 * Gemini `{"error":{"code":400,"status":"INVALID_ARGUMENT","message":"API key not valid...",
 * "details":[{"reason":"API_KEY_INVALID",...}]}}`.
 */
function errorDetails(bodyText: string, apiKey: string): { code?: string; keyNotValid: boolean } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(bodyText);
  } catch {
    return { keyNotValid: /API key not valid|API_KEY_INVALID/i.test(bodyText) };
  }
  const error = field(parsed, "error");
  const reasons: unknown[] = [];
  const details = field(error, "details");
  if (Array.isArray(details)) for (const d of details) reasons.push(field(d, "reason"));
  const message = field(error, "message");
  const keyNotValid = reasons.includes("API_KEY_INVALID") || (typeof message === "string" && /API key not valid/i.test(message));
  const candidates = [...reasons, field(error, "code"), field(error, "status"), field(error, "type"), error];
  for (const candidate of candidates) {
    const code = sanitiseCode(candidate, apiKey);
    if (code) return { code, keyNotValid };
  }
  return { keyNotValid };
}

function field(value: unknown, name: string): unknown {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>)[name] : undefined;
}

/** Prefixes of real provider keys (and of a bearer header); a "code" starting so is not shown. */
const KEY_LIKE_PREFIX = /^(sk[-_]|AIza|fw[-_]|key[-_]|bearer)/i;

/**
 * An error code fit to show: a string of 2-48 identifier characters, starting
 * with a letter, not shaped like a key, with no more than 6 digits, sharing no
 * 6-character run with the key. Anything else is dropped.
 */
export function sanitiseCode(candidate: unknown, apiKey: string): string | undefined {
  if (typeof candidate !== "string") return undefined;
  const code = candidate.trim();
  if (!/^[A-Za-z][A-Za-z0-9_.-]{1,47}$/.test(code)) return undefined;
  if (KEY_LIKE_PREFIX.test(code)) return undefined;
  if ((code.match(/[0-9]/g)?.length ?? 0) > 6) return undefined;
  if (sharesKeyRun(code, apiKey)) return undefined;
  return code;
}

/** The length of key run that counts as "part of the key". */
const KEY_RUN = 6;

function sharesKeyRun(text: string, apiKey: string): boolean {
  if (apiKey === "") return false;
  const run = Math.min(KEY_RUN, apiKey.length);
  for (let i = 0; i + run <= apiKey.length; i++) {
    if (text.includes(apiKey.slice(i, i + run))) return true;
  }
  return false;
}

/**
 * The message with every stretch that overlaps a 6-character run of the key
 * replaced by `[redacted]`. Messages are built from fixed text and sanitised
 * fragments, so this only acts if a host name (from the api_base) slipped a
 * piece of the key through. (errors.ts maskKeys is not applied: it would
 * also mangle host names such as `fw-gateway-internal.example.com`.)
 */
export function scrub(message: string, apiKey: string): string {
  let text = message;
  if (apiKey !== "") {
    const run = Math.min(KEY_RUN, apiKey.length);
    const covered = new Uint8Array(text.length);
    for (let i = 0; i + run <= apiKey.length; i++) {
      const piece = apiKey.slice(i, i + run);
      for (let at = text.indexOf(piece); at !== -1; at = text.indexOf(piece, at + 1)) covered.fill(1, at, at + run);
    }
    if (covered.includes(1)) {
      let out = "";
      for (let i = 0; i < text.length; i++) {
        if (!covered[i]) out += text[i];
        else if (i === 0 || !covered[i - 1]) out += "[redacted]";
      }
      text = out;
    }
  }
  return text;
}

/** `10 s`, `2.5 s`, `250 ms`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = Math.round(ms / 100) / 10;
  return `${seconds} s`;
}

const NETWORK_REASONS: Readonly<Record<string, string>> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  EPIPE: "connection closed while sending",
  ENOTFOUND: "host name not found (DNS)",
  EAI_AGAIN: "DNS lookup failed (temporary)",
  EAI_FAIL: "DNS lookup failed",
  EAI_NODATA: "host name has no address (DNS)",
  ETIMEDOUT: "connection timed out",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  EADDRNOTAVAIL: "address not available",
  UND_ERR_CONNECT_TIMEOUT: "connection timed out",
  UND_ERR_HEADERS_TIMEOUT: "no response headers in time",
  UND_ERR_BODY_TIMEOUT: "response body stalled",
  UND_ERR_SOCKET: "connection closed by the server",
  UND_ERR_CLOSED: "connection closed",
};

const TLS_CERT_CODE = /^(CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|ERR_TLS_CERT_ALTNAME_INVALID|HOSTNAME_MISMATCH)/;
const TLS_CODE = /^(ERR_SSL_|ERR_TLS_|EPROTO$)/;

/**
 * A short reason for a failed request, from the error's code (undici wraps the
 * socket error as `TypeError("fetch failed", { cause })`; happy-eyeballs
 * connects may give an AggregateError). Error messages are not used: they
 * carry addresses and OpenSSL internals, not anything a user can act on.
 */
function networkFailure(error: unknown): { reason: string; code?: string } {
  const code = findCode(error);
  if (code === undefined) return { reason: "network error" };
  const known = NETWORK_REASONS[code];
  if (known) return { reason: known, code };
  if (TLS_CERT_CODE.test(code)) return { reason: `TLS certificate not accepted (${code})`, code };
  if (TLS_CODE.test(code)) return { reason: `TLS handshake failed (${code})`, code };
  return { reason: `network error (${code})`, code };
}

function findCode(error: unknown, depth = 0): string | undefined {
  if (depth > 5 || typeof error !== "object" || error === null) return undefined;
  const own = (error as { code?: unknown }).code;
  if (typeof own === "string" && /^[A-Z][A-Z0-9_]{1,47}$/.test(own)) return own;
  const fromCause = findCode((error as { cause?: unknown }).cause, depth + 1);
  if (fromCause) return fromCause;
  const errors = (error as { errors?: unknown }).errors;
  if (Array.isArray(errors)) {
    for (const inner of errors) {
      const found = findCode(inner, depth + 1);
      if (found) return found;
    }
  }
  return undefined;
}
