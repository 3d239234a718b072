// Bad input, table-driven: malformed requests to the REST API (through the
// portal process), to the gRPC port (Connect-ES and raw @grpc/grpc-js clients)
// and to the Connect port (Connect-protocol JSON over HTTP/2). Every row must be
// refused with a clear 4xx (or the right gRPC code, never INTERNAL or UNKNOWN),
// with a message that names the field at fault, with no stack or internal text,
// and with every table exactly as it was (a checksum of each table before and
// after the row).
import http from "node:http";
import http2 from "node:http2";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { Code, createClient } from "@connectrpc/connect";
import { create, toBinary } from "@bufbuild/protobuf";
import { FAKE_KEYS, rpcError, type TestService } from "../support/harness.js";
import { startTestPortal, type TestPortal } from "../support/portal-harness.js";
import {
  CredentialAction,
  CreateCredentialRequestSchema,
  CreateOrganizationRequestSchema,
  CredentialService,
  FailureKind,
  OrganizationService,
  Provider,
  SelectionStrategy,
} from "@provider-credentials/wire/gen/credentials_pb";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import { PageTokens } from "../../service/src/paging.js";
import { createKeyring, generateMasterKey } from "../../service/src/keyring/index.js";

const PROTO_DIR = fileURLToPath(new URL("../../proto/", import.meta.url));

let portal: TestPortal;
let t: TestService;
/** Ids made in beforeAll, substituted for the placeholders in the rows' paths. */
const ids: Record<string, string> = {};
let resolveToken = "";

// ---------------------------------------------------------------- fixtures

const ORG = "org-bad";
const OPENAI = FAKE_KEYS.openai();
const ANTHROPIC = FAKE_KEYS.anthropic();
const GEMINI = FAKE_KEYS.gemini();
const FIREWORKS = FAKE_KEYS.fireworks();
const UNKNOWN_UUID = "00000000-0000-4000-8000-000000000000";
const MB = 1024 * 1024;

/** A CreateCredential body that would succeed, with some fields changed (undefined removes one). */
function credentialBody(changes: Record<string, unknown> = {}): Record<string, unknown> {
  const body: Record<string, unknown> = { organization_id: ORG, provider: "openai", credential_name: "fresh", api_key: OPENAI, ...changes };
  for (const [k, v] of Object.entries(changes)) if (v === undefined) delete body[k];
  return body;
}

/** A CreateCredential body whose credential_name is the given raw JSON text. */
const withRawName = (json: string) => JSON.stringify(credentialBody({ credential_name: "\u0001" })).replace('"\\u0001"', json);

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value), "utf8").toString("base64url");
const cursorWithNul = b64(["\u0000"]);
/** Shaped like an OpenAI key (a fixed value, never a real key): refused in every field but api_key. */
const KEY_SHAPED = "sk-proj-Zq3vN8xR2mT7bK1wY6pL4sD9fG0hJ5cA";
/** Right-to-left override: "photo\u202egnp.exe" shows as "photoexe.png". */
const RLO = "\u202e";

/** Text that must never reach a client: stacks, driver and library internals, file paths. */
const INTERNALS =
  /\bat [\w$.<>[\] ]+ \(|\.(?:js|ts|cjs|mjs):\d+|node_modules|\bstack\b|TypeError|ReferenceError|RangeError|ZodError|TRPCError|ConnectError|Exception|mikro|knex|postgres|SQLSTATE|violates|duplicate key value|\/work\/|internal|deserializ|parse binary|premature EOF/i;

function expectNoInternals(text: string): void {
  expect(text, "the answer leaks internals").not.toMatch(INTERNALS);
}

// ---------------------------------------------------------------- "nothing written"

let snapshotSql = "";

/** Every table of schema public: row count and checksum, ignoring the usage times and counts that reads may touch. */
async function snapshot(): Promise<Record<string, string>> {
  const rows = await t.db.query<{ t: string; n: number; sum: string }>(snapshotSql);
  return Object.fromEntries(rows.map((r) => [r.t, `${r.n}:${r.sum}`]));
}

async function expectNothingWritten(run: () => Promise<void>): Promise<void> {
  const before = await snapshot();
  await run();
  expect(await snapshot(), "a refused request changed the database").toEqual(before);
}

// ---------------------------------------------------------------- REST rows

interface RestRow {
  name: string;
  method: string;
  /** `:cred`, `:proxy` are replaced by the fixtures' credential ids. */
  path: string;
  body?: unknown;
  raw?: string;
  bytes?: Uint8Array;
  /** Sent in chunks without a Content-Length. */
  streamed?: boolean;
  contentType?: string;
  headers?: Record<string, string>;
  /** Bearer token: default the admin token; "resolve" for a resolve-scope token; null for none. */
  token?: string | null;
  status: number;
  /** The REST error code; default by status. */
  code?: string;
  /** The field the message must start with (`field: ...`), or a pattern the message must match. */
  field?: string | RegExp;
}

const CODE_BY_STATUS: Record<number, string> = {
  400: "bad_request",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  405: "method_not_allowed",
  409: "already_exists",
  413: "payload_too_large",
  415: "unsupported_media_type",
};

const post = (path: string, body: unknown, status: number, field?: string | RegExp, extra: Partial<RestRow> = {}): Omit<RestRow, "name"> => ({
  method: "POST",
  path,
  body,
  status,
  field,
  ...extra,
});
const put = (path: string, body: unknown, status: number, field?: string | RegExp, extra: Partial<RestRow> = {}): Omit<RestRow, "name"> => ({
  method: "PUT",
  path,
  body,
  status,
  field,
  ...extra,
});
const get = (path: string, status: number, field?: string | RegExp, extra: Partial<RestRow> = {}): Omit<RestRow, "name"> => ({
  method: "GET",
  path,
  status,
  field,
  ...extra,
});
const del = (path: string, status: number, field?: string | RegExp, extra: Partial<RestRow> = {}): Omit<RestRow, "name"> => ({
  method: "DELETE",
  path,
  status,
  field,
  ...extra,
});

const CREATE = "/api/provider-credentials/create";
/** The Origin a browser on the portal sends; SvelteKit's CSRF check wants it for form content types. */
const SAME_ORIGIN = { origin: "(portal)" };
const CRED = "/api/provider-credentials/:cred";
const LIST = `/api/provider-credentials/organization/${ORG}`;

const restRows: Array<[string, Omit<RestRow, "name">]> = [
  // ---- POST /api/provider-credentials/create: wrong types, missing fields, nulls
  ["create: credential_name is a number", post(CREATE, credentialBody({ credential_name: 42 }), 400, "credential_name")],
  ["create: credential_name is null", post(CREATE, credentialBody({ credential_name: null }), 400, "credential_name")],
  ["create: credential_name is an array", post(CREATE, credentialBody({ credential_name: ["a"] }), 400, "credential_name")],
  ["create: credential_name is an object", post(CREATE, credentialBody({ credential_name: { x: 1 } }), 400, "credential_name")],
  ["create: credential_name is a boolean", post(CREATE, credentialBody({ credential_name: true }), 400, "credential_name")],
  ["create: credential_name is missing", post(CREATE, credentialBody({ credential_name: undefined }), 400, "credential_name")],
  ["create: credential_name is empty", post(CREATE, credentialBody({ credential_name: "" }), 400, "credential_name")],
  ["create: credential_name is only spaces", post(CREATE, credentialBody({ credential_name: "   " }), 400, "credential_name")],
  ["create: credential_name of 201 characters", post(CREATE, credentialBody({ credential_name: "n".repeat(201) }), 400, "credential_name")],
  ["create: credential_name of 1001 characters", post(CREATE, credentialBody({ credential_name: "n".repeat(1001) }), 400, "credential_name")],
  ["create: credential_name with a NUL byte", post(CREATE, credentialBody({ credential_name: "a\u0000b" }), 400, "credential_name")],
  ["create: credential_name with a line break", post(CREATE, credentialBody({ credential_name: "a\nb" }), 400, "credential_name")],
  ["create: credential_name with ESC", post(CREATE, credentialBody({ credential_name: "a\u001b[31mred" }), 400, "credential_name")],
  ["create: credential_name with DEL", post(CREATE, credentialBody({ credential_name: "a\u007fb" }), 400, "credential_name")],
  ["create: credential_name with a C1 control", post(CREATE, credentialBody({ credential_name: "a\u0085b" }), 400, "credential_name")],
  ["create: credential_name with a right-to-left override", post(CREATE, credentialBody({ credential_name: `photo${RLO}gnp.exe` }), 400, "credential_name")],
  ["create: credential_name with a zero-width space", post(CREATE, credentialBody({ credential_name: "Exist\u200bing" }), 400, "credential_name")],
  ["create: credential_name with a byte order mark inside", post(CREATE, credentialBody({ credential_name: "a\ufeffb" }), 400, "credential_name")],
  ["create: credential_name holding a key", post(CREATE, credentialBody({ credential_name: KEY_SHAPED }), 400, "credential_name")],
  ["create: credential_name with a key inside", post(CREATE, credentialBody({ credential_name: `prod (${KEY_SHAPED})` }), 400, "credential_name")],
  ["create: api_base with a key in its path", post(CREATE, credentialBody({ api_base: `https://proxy.example.com/${KEY_SHAPED}/v1` }), 400, "api_base")],
  ["create: api_base with a right-to-left override", post(CREATE, credentialBody({ api_base: `https://proxy.example.com/${RLO}v1` }), 400, "api_base")],
  ["create: api_key is missing", post(CREATE, credentialBody({ api_key: undefined }), 400, "api_key")],
  ["create: api_key is null", post(CREATE, credentialBody({ api_key: null }), 400, "api_key")],
  ["create: api_key is empty", post(CREATE, credentialBody({ api_key: "" }), 400, "api_key")],
  ["create: api_key is only whitespace", post(CREATE, credentialBody({ api_key: " \t " }), 400, "api_key")],
  ["create: api_key is a number", post(CREATE, credentialBody({ api_key: 12345678901 }), 400, "api_key")],
  ["create: api_key is an array", post(CREATE, credentialBody({ api_key: [OPENAI] }), 400, "api_key")],
  ["create: api_key with an inner space", post(CREATE, credentialBody({ api_key: "sk-proj-abc def-0123456789" }), 400, "api_key")],
  ["create: api_key with an inner tab", post(CREATE, credentialBody({ api_key: "sk-proj-abc\tdef-0123456789" }), 400, "api_key")],
  ["create: api_key with an inner line break", post(CREATE, credentialBody({ api_key: "sk-proj-abc\ndef-0123456789" }), 400, "api_key")],
  ["create: api_key with a NUL byte", post(CREATE, credentialBody({ api_key: "sk-proj-abc\u0000def-0123456789" }), 400, "api_key")],
  ["create: api_key of 7 characters", post(CREATE, credentialBody({ api_key: "sk-1234" }), 400, "api_key")],
  ["create: api_key of 4097 characters", post(CREATE, credentialBody({ api_key: `sk-${"a".repeat(4094)}` }), 400, "api_key")],
  ["create: api_key of 9000 characters", post(CREATE, credentialBody({ api_key: `sk-${"a".repeat(8997)}` }), 400, "api_key")],
  ["create: api_key with Cyrillic letters", post(CREATE, credentialBody({ api_key: "sk-ключ-0123456789abcdef" }), 400, "api_key")],
  ["create: api_key with emoji", post(CREATE, credentialBody({ api_key: "sk-🔑🔑🔑🔑-0123456789abcdef" }), 400, "api_key")],
  ["create: an Anthropic key as OpenAI", post(CREATE, credentialBody({ api_key: ANTHROPIC }), 400, "api_key")],
  ["create: a Gemini key as OpenAI", post(CREATE, credentialBody({ api_key: GEMINI }), 400, "api_key")],
  ["create: an OpenAI key as Anthropic", post(CREATE, credentialBody({ provider: "anthropic" }), 400, "api_key")],
  ["create: a Fireworks key as Gemini", post(CREATE, credentialBody({ provider: "gemini", api_key: FIREWORKS }), 400, "api_key")],
  ["create: a Gemini key as Fireworks", post(CREATE, credentialBody({ provider: "fireworks", api_key: GEMINI }), 400, "api_key")],
  // ---- every provider typo
  ...[
    "OpenAI",
    "OPENAI",
    "open-ai",
    "open_ai",
    "openia",
    "opanai",
    "antropic",
    "anthropic ",
    "Anthropic",
    "gemeni",
    "gemini-pro",
    "google",
    "fireworks-ai",
    "fireworks.ai",
    "firework",
    "PROVIDER_OPENAI",
    "mistral",
    "",
    "openai\u0000",
  ].map((provider): [string, Omit<RestRow, "name">] => [
    `create: provider ${JSON.stringify(provider)}`,
    post(CREATE, credentialBody({ provider }), 400, "provider"),
  ]),
  ["create: provider is a number", post(CREATE, credentialBody({ provider: 1 }), 400, "provider")],
  ["create: provider is null", post(CREATE, credentialBody({ provider: null }), 400, "provider")],
  ["create: provider is an array", post(CREATE, credentialBody({ provider: ["openai"] }), 400, "provider")],
  ["create: provider is missing", post(CREATE, credentialBody({ provider: undefined }), 400, "provider")],
  // ---- organization_id
  ["create: organization_id is empty", post(CREATE, credentialBody({ organization_id: "" }), 400, "organization_id")],
  ["create: organization_id is a number", post(CREATE, credentialBody({ organization_id: 5 }), 400, "organization_id")],
  ["create: organization_id with a space and a bang", post(CREATE, credentialBody({ organization_id: "bad id!" }), 400, "organization_id")],
  ["create: organization_id of 65 characters", post(CREATE, credentialBody({ organization_id: "o".repeat(65) }), 400, "organization_id")],
  ["create: organization_id of 300 characters", post(CREATE, credentialBody({ organization_id: "o".repeat(300) }), 400, "organization_id")],
  ["create: organization_id is SQL", post(CREATE, credentialBody({ organization_id: "x' OR '1'='1" }), 400, "organization_id")],
  [
    "create: organization_id drops a table",
    post(CREATE, credentialBody({ organization_id: "'; drop table provider_credentials; --" }), 400, "organization_id"),
  ],
  ["create: organization_id is a path traversal", post(CREATE, credentialBody({ organization_id: "../../etc/passwd" }), 400, "organization_id")],
  ["create: organization_id is HTML", post(CREATE, credentialBody({ organization_id: "<script>alert(1)</script>" }), 400, "organization_id")],
  ["create: organization_id is not ASCII", post(CREATE, credentialBody({ organization_id: "ørg-ü" }), 400, "organization_id")],
  ["create: organization_id with an emoji", post(CREATE, credentialBody({ organization_id: "org-😀" }), 400, "organization_id")],
  ["create: organization_id with a NUL byte", post(CREATE, credentialBody({ organization_id: "org\u0000bad" }), 400, "organization_id")],
  ["create: an unknown organisation", post(CREATE, credentialBody({ organization_id: "org-nope" }), 404, /org-nope/)],
  [
    "create: an SQL-ish name for an unknown organisation",
    post(CREATE, credentialBody({ organization_id: "org-nope", credential_name: "'); delete from organizations; --" }), 404, /org-nope/),
  ],
  ["create: an HTML name with a bad key", post(CREATE, credentialBody({ credential_name: "<img src=x onerror=alert(1)>", api_key: "nope" }), 400, "api_key")],
  // ---- api_base
  ["create: api_base javascript:", post(CREATE, credentialBody({ api_base: "javascript:alert(1)" }), 400, "api_base")],
  // Not the service's own network (API_BASE_ALLOW here lists only 127.0.0.1, where the fake providers listen).
  ["create: api_base at the metadata address", post(CREATE, credentialBody({ api_base: "http://169.254.169.254/latest" }), 400, "api_base")],
  ["create: api_base at a private address", post(CREATE, credentialBody({ api_base: "http://10.0.0.1:8080/v1" }), 400, "api_base")],
  ["create: api_base at IPv6 loopback", post(CREATE, credentialBody({ api_base: "http://[::1]:8080/v1" }), 400, "api_base")],
  ["create: api_base at IPv4-mapped metadata", post(CREATE, credentialBody({ api_base: "http://[::ffff:a9fe:a9fe]/v1" }), 400, "api_base")],
  ["create: api_base at a unique-local address", post(CREATE, credentialBody({ api_base: "http://[fd00::1]/v1" }), 400, "api_base")],
  ["create: api_base with user and password", post(CREATE, credentialBody({ api_base: "https://user:hunter2@proxy.example.com/v1" }), 400, "api_base")],
  ["create: api_base with a password only", post(CREATE, credentialBody({ api_base: "https://:hunter2@proxy.example.com/v1" }), 400, "api_base")],
  ["create: api_base with a user only", post(CREATE, credentialBody({ api_base: "https://admin@proxy.example.com/v1" }), 400, "api_base")],
  ["create: api_base ftp:", post(CREATE, credentialBody({ api_base: "ftp://proxy.example.com" }), 400, "api_base")],
  ["create: api_base file:", post(CREATE, credentialBody({ api_base: "file:///etc/passwd" }), 400, "api_base")],
  ["create: api_base data:", post(CREATE, credentialBody({ api_base: "data:text/html,<script>alert(1)</script>" }), 400, "api_base")],
  ["create: api_base mailto:", post(CREATE, credentialBody({ api_base: "mailto:ops@example.com" }), 400, "api_base")],
  ["create: api_base relative", post(CREATE, credentialBody({ api_base: "proxy.example.com/v1" }), 400, "api_base")],
  ["create: api_base protocol-relative", post(CREATE, credentialBody({ api_base: "//proxy.example.com/v1" }), 400, "api_base")],
  ["create: api_base without a host", post(CREATE, credentialBody({ api_base: "http://" }), 400, "api_base")],
  ["create: api_base with a broken IPv6 host", post(CREATE, credentialBody({ api_base: "https://[::1/v1" }), 400, "api_base")],
  ["create: api_base with a space inside", post(CREATE, credentialBody({ api_base: "https://proxy.example.com/v1 evil" }), 400, "api_base")],
  ["create: api_base of 2049 characters", post(CREATE, credentialBody({ api_base: `https://proxy.example.com/${"a".repeat(2049 - 26)}` }), 400, "api_base")],
  ["create: api_base of 5000 characters", post(CREATE, credentialBody({ api_base: `https://proxy.example.com/${"a".repeat(5000)}` }), 400, "api_base")],
  ["create: api_base is a number", post(CREATE, credentialBody({ api_base: 443 }), 400, "api_base")],
  ["create: api_base is an object", post(CREATE, credentialBody({ api_base: { url: "https://proxy.example.com" } }), 400, "api_base")],
  // ---- unknown fields, duplicate keys, prototype keys
  ["create: apiKey instead of api_key", post(CREATE, credentialBody({ api_key: undefined, apiKey: OPENAI }), 400, /^(apiKey|api_key): /)],
  ["create: an extra is_active", post(CREATE, credentialBody({ is_active: false }), 400, "is_active")],
  ["create: an extra encrypted_api_key", post(CREATE, credentialBody({ encrypted_api_key: "gAAAAA" }), 400, "encrypted_api_key")],
  ["create: an extra version", post(CREATE, credentialBody({ version: 7 }), 400, "version")],
  ["create: an extra created_by", post(CREATE, credentialBody({ created_by: "someone-else" }), 400, "created_by")],
  [
    "create: __proto__",
    { method: "POST", path: CREATE, raw: JSON.stringify(credentialBody()).replace(/}$/, ',"__proto__":{"is_admin":true}}'), status: 400, field: "__proto__" },
  ],
  ["create: constructor", post(CREATE, credentialBody({ constructor: { prototype: { x: 1 } } }), 400, "constructor")],
  [
    "create: a duplicate key whose last value is wrong",
    { method: "POST", path: CREATE, raw: JSON.stringify(credentialBody()).replace(/}$/, ',"credential_name":42}'), status: 400, field: "credential_name" },
  ],
  [
    "create: a duplicate api_key whose last value is empty",
    { method: "POST", path: CREATE, raw: JSON.stringify(credentialBody()).replace(/}$/, ',"api_key":""}'), status: 400, field: "api_key" },
  ],
  [
    "create: a duplicate provider whose last value is a typo",
    { method: "POST", path: CREATE, raw: JSON.stringify(credentialBody()).replace(/}$/, ',"provider":"openia"}'), status: 400, field: "provider" },
  ],
  ["create: an empty object", post(CREATE, {}, 400, /^(organization_id|provider|credential_name|api_key): is required/)],
  [
    "create: arrays nested 30000 deep",
    { method: "POST", path: CREATE, raw: withRawName(`${"[".repeat(30_000)}${"]".repeat(30_000)}`), status: 400, field: "credential_name" },
  ],
  [
    "create: objects nested 10000 deep",
    { method: "POST", path: CREATE, raw: withRawName(`${'{"a":'.repeat(10_000)}1${"}".repeat(10_000)}`), status: 400, field: "credential_name" },
  ],
  // ---- bodies that are not a JSON object
  ["create: an array body", post(CREATE, [credentialBody()], 400, "body")],
  ["create: a string body", post(CREATE, "organization_id=org-bad", 400, "body")],
  ["create: a number body", post(CREATE, 42, 400, "body")],
  ["create: a null body", post(CREATE, null, 400, "body")],
  ["create: a boolean body", post(CREATE, true, 400, "body")],
  ["create: truncated JSON", { method: "POST", path: CREATE, raw: '{"organization_id": "org-bad", "provider": ', status: 400, field: "body" }],
  ["create: single-quoted JSON", { method: "POST", path: CREATE, raw: "{'organization_id': 'org-bad'}", status: 400, field: "body" }],
  ["create: JSON with a trailing comma", { method: "POST", path: CREATE, raw: '{"organization_id": "org-bad",}', status: 400, field: "body" }],
  ["create: JSON with NaN", { method: "POST", path: CREATE, raw: '{"organization_id": NaN}', status: 400, field: "body" }],
  ["create: JSON with a comment", { method: "POST", path: CREATE, raw: '{"organization_id": "org-bad" /* hi */}', status: 400, field: "body" }],
  ["create: two JSON documents", { method: "POST", path: CREATE, raw: `${JSON.stringify(credentialBody())}{}`, status: 400, field: "body" }],
  [
    "create: invalid UTF-8 in a string",
    {
      method: "POST",
      path: CREATE,
      bytes: Buffer.concat([
        Buffer.from('{"organization_id":"org-bad","provider":"openai","credential_name":"na'),
        Buffer.from([0xff, 0xfe, 0xc3]),
        Buffer.from(`me","api_key":"${OPENAI}"}`),
      ]),
      status: 400,
      field: "body",
    },
  ],
  [
    "create: an overlong UTF-8 encoding",
    {
      method: "POST",
      path: CREATE,
      bytes: Buffer.concat([
        Buffer.from('{"organization_id":"org-bad","provider":"openai","credential_name":"'),
        Buffer.from([0xc0, 0xaf]),
        Buffer.from(`","api_key":"${OPENAI}"}`),
      ]),
      status: 400,
      field: "body",
    },
  ],
  [
    "create: a lone surrogate encoded as UTF-8",
    {
      method: "POST",
      path: CREATE,
      bytes: Buffer.concat([
        Buffer.from('{"organization_id":"org-bad","provider":"openai","credential_name":"'),
        Buffer.from([0xed, 0xa0, 0x80]),
        Buffer.from(`","api_key":"${OPENAI}"}`),
      ]),
      status: 400,
      field: "body",
    },
  ],
  // ---- wrong content types
  [
    "create: text/plain",
    { method: "POST", path: CREATE, raw: JSON.stringify(credentialBody()), contentType: "text/plain", headers: SAME_ORIGIN, status: 415, field: "body" },
  ],
  [
    "create: a form",
    {
      method: "POST",
      path: CREATE,
      raw: new URLSearchParams({ organization_id: ORG, provider: "openai", credential_name: "x", api_key: OPENAI }).toString(),
      contentType: "application/x-www-form-urlencoded",
      headers: SAME_ORIGIN,
      status: 415,
      field: "body",
    },
  ],
  [
    "create: multipart",
    {
      method: "POST",
      path: CREATE,
      raw: '--b\r\ncontent-disposition: form-data; name="api_key"\r\n\r\nsk-x\r\n--b--\r\n',
      contentType: "multipart/form-data; boundary=b",
      headers: SAME_ORIGIN,
      status: 415,
      field: "body",
    },
  ],
  [
    "create: XML",
    { method: "POST", path: CREATE, raw: "<credential><api_key>sk-x</api_key></credential>", contentType: "application/xml", status: 415, field: "body" },
  ],
  ["create: text/html", { method: "POST", path: CREATE, raw: JSON.stringify(credentialBody()), contentType: "text/html", status: 415, field: "body" }],
  [
    "create: application/octet-stream",
    { method: "POST", path: CREATE, raw: JSON.stringify(credentialBody()), contentType: "application/octet-stream", status: 415, field: "body" },
  ],
  // A bearer-token call is not cookie-authenticated: from no origin or another one, a form type is the API's 415 too.
  [
    "create: text/plain from no origin",
    { method: "POST", path: CREATE, raw: JSON.stringify(credentialBody()), contentType: "text/plain", status: 415, field: "body" },
  ],
  [
    "create: a form from no origin",
    { method: "POST", path: CREATE, raw: "organization_id=org-bad", contentType: "application/x-www-form-urlencoded", status: 415, field: "body" },
  ],
  [
    "create: multipart from another origin",
    {
      method: "POST",
      path: CREATE,
      raw: "--b--\r\n",
      contentType: "multipart/form-data; boundary=b",
      headers: { origin: "https://evil.example" },
      status: 415,
      field: "body",
    },
  ],
  // ---- sizes
  ["create: a 1 MB body", post(CREATE, credentialBody({ credential_name: "n".repeat(MB) }), 413, "body")],
  [
    "create: a 1 MB body streamed without a length",
    { method: "POST", path: CREATE, raw: JSON.stringify(credentialBody({ credential_name: "n".repeat(MB) })), streamed: true, status: 413, field: "body" },
  ],
  [
    "create: a body of 64 KiB + 1",
    { method: "POST", path: CREATE, raw: `${JSON.stringify(credentialBody())}${" ".repeat(64 * 1024)}`.slice(0, 64 * 1024 + 1), status: 413, field: "body" },
  ],
  [
    "create: a 1 MB text/plain body",
    { method: "POST", path: CREATE, raw: "x".repeat(MB), contentType: "text/plain", headers: SAME_ORIGIN, status: 413, field: "body" },
  ],
  ["create: a 1 MB api_key", post(CREATE, credentialBody({ api_key: `sk-${"k".repeat(MB)}` }), 413, "body")],
  // ---- duplicates and conflicts
  ["create: a duplicate name, in another case", post(CREATE, credentialBody({ credential_name: "EXISTING" }), 409, "credential_name")],
  ["create: a duplicate name, in full-width letters", post(CREATE, credentialBody({ credential_name: "Ｅｘｉｓｔｉｎｇ" }), 409, "credential_name")],

  // ---- PUT /api/provider-credentials/{credential_id}
  ["update: expected_version is a string", put(CRED, { expected_version: "1" }, 400, "expected_version")],
  ["update: expected_version is 0", put(CRED, { expected_version: 0 }, 400, "expected_version")],
  ["update: expected_version is negative", put(CRED, { expected_version: -1 }, 400, "expected_version")],
  ["update: expected_version is a fraction", put(CRED, { expected_version: 1.5 }, 400, "expected_version")],
  ["update: expected_version is 2^31", put(CRED, { credential_name: "x", expected_version: 2 ** 31 }, 400, "expected_version")],
  ["update: expected_version is 1e10", put(CRED, { credential_name: "x", expected_version: 1e10 }, 400, "expected_version")],
  ["update: expected_version is 2^53", put(CRED, { credential_name: "x", expected_version: 2 ** 53 }, 400, "expected_version")],
  ["update: expected_version is null", put(CRED, { expected_version: null }, 400, "expected_version")],
  ["update: expected_version is true", put(CRED, { expected_version: true }, 400, "expected_version")],
  ["update: a stale expected_version", put(CRED, { credential_name: "renamed", expected_version: 99 }, 409, "expected_version", { code: "stale_version" })],
  ["update: credential_name is empty", put(CRED, { credential_name: "" }, 400, "credential_name")],
  ["update: credential_name with a NUL byte", put(CRED, { credential_name: "\u0000" }, 400, "credential_name")],
  ["update: credential_name of 201 characters", put(CRED, { credential_name: "n".repeat(201) }, 400, "credential_name")],
  ["update: credential_name is null", put(CRED, { credential_name: null }, 400, "credential_name")],
  ["update: credential_name with a right-to-left override", put(CRED, { credential_name: `a${RLO}b` }, 400, "credential_name")],
  ["update: credential_name holding a key", put(CRED, { credential_name: KEY_SHAPED }, 400, "credential_name")],
  ["update: a rename onto another name, in full-width letters", put(CRED, { credential_name: "Ｖｉａ ｐｒｏｘｙ" }, 409, "credential_name")],
  ["update: api_key is empty", put(CRED, { api_key: "" }, 400, "api_key")],
  ["update: api_key with inner spaces", put(CRED, { api_key: "sk-a b c d e f g h" }, 400, "api_key")],
  ["update: an Anthropic key on an OpenAI credential", put(CRED, { api_key: ANTHROPIC }, 400, "api_key")],
  ["update: api_key is null", put(CRED, { api_key: null }, 400, "api_key")],
  ["update: api_base javascript:", put(CRED, { api_base: "javascript:alert(1)" }, 400, "api_base")],
  ["update: api_base with a password", put(CRED, { api_base: "https://u:p@proxy.example.com" }, 400, "api_base")],
  ["update: api_base is a number", put(CRED, { api_base: 42 }, 400, "api_base")],
  // Changing api_base needs the key again: the stored key is never sent to a new destination.
  ["update: clearing api_base without the key", put("/api/provider-credentials/:proxy", { api_base: null }, 400, "api_key")],
  ["update: a new api_base without the key", put(CRED, { api_base: "https://attacker.example.com/v1" }, 400, "api_key")],
  ["update: api_base at a private address, with the key", put(CRED, { api_key: FAKE_KEYS.openai(), api_base: "http://192.168.0.1/v1" }, 400, "api_base")],
  ["update: a new key and a bad api_base together", put(CRED, { api_key: FAKE_KEYS.openai(), api_base: "ftp://x" }, 400, "api_base")],
  ["update: an unknown field version", put(CRED, { version: 3 }, 400, "version")],
  ["update: an unknown field is_active", put(CRED, { is_active: false }, 400, "is_active")],
  ["update: provider cannot be changed", put(CRED, { provider: "anthropic" }, 400, "provider")],
  ["update: organization_id cannot be changed", put(CRED, { organization_id: "org-busy" }, 400, "organization_id")],
  ["update: an array body", put(CRED, [{ credential_name: "x" }], 400, "body")],
  ["update: truncated JSON", { method: "PUT", path: CRED, raw: '{"credential_name": "x"', status: 400, field: "body" }],
  [
    "update: text/plain",
    { method: "PUT", path: CRED, raw: '{"credential_name": "x"}', contentType: "text/plain", headers: SAME_ORIGIN, status: 415, field: "body" },
  ],
  [
    "update: application/xml",
    { method: "PUT", path: CRED, raw: "<credential_name>x</credential_name>", contentType: "application/xml", status: 415, field: "body" },
  ],
  ["update: a 1 MB body", put(CRED, { credential_name: "n".repeat(MB) }, 413, "body")],
  ["update: an unknown credential", put(`/api/provider-credentials/${UNKNOWN_UUID}`, { credential_name: "x" }, 404, new RegExp(UNKNOWN_UUID))],
  // ---- path parameters that are not UUIDs
  ["get: credential_id not a UUID", get("/api/provider-credentials/not-a-uuid", 400, "credential_id")],
  ["get: credential_id with a bad hex digit", get("/api/provider-credentials/00000000-0000-4000-8000-00000000000g", 400, "credential_id")],
  ["get: credential_id of 37 characters", get(`/api/provider-credentials/${UNKNOWN_UUID}0`, 400, "credential_id")],
  ["get: credential_id of 300 characters", get(`/api/provider-credentials/${"a".repeat(300)}`, 400, "credential_id")],
  ["get: credential_id is NUL", get("/api/provider-credentials/%00", 400, "credential_id")],
  ["get: credential_id is a traversal", get("/api/provider-credentials/..%2F..%2Fetc%2Fpasswd", 400, "credential_id")],
  ["get: credential_id is SQL", get(`/api/provider-credentials/${encodeURIComponent("' OR 1=1 --")}`, 400, "credential_id")],
  ["get: credential_id is an emoji", get(`/api/provider-credentials/${encodeURIComponent("🔑")}`, 400, "credential_id")],
  ["get: credential_id with a leading space", get(`/api/provider-credentials/%20${UNKNOWN_UUID}`, 400, "credential_id")],
  ["get: credential_id is unknown", get(`/api/provider-credentials/${UNKNOWN_UUID}`, 404, new RegExp(UNKNOWN_UUID))],
  ["activate: credential_id not a UUID", put("/api/provider-credentials/nope/activate", undefined, 400, "credential_id")],
  ["activate: an unknown credential", put(`/api/provider-credentials/${UNKNOWN_UUID}/activate`, undefined, 404, new RegExp(UNKNOWN_UUID))],
  ["activate: an unknown body field", put("/api/provider-credentials/:cred/activate", { force: true }, 400, "force")],
  ["activate: an array body", put("/api/provider-credentials/:cred/activate", [], 400, "body")],
  [
    "deactivate: credential_id is SQL",
    put(`/api/provider-credentials/${encodeURIComponent("1; update provider_credentials set is_active=false")}/deactivate`, undefined, 400, "credential_id"),
  ],
  ["deactivate: an unknown credential", put(`/api/provider-credentials/${UNKNOWN_UUID}/deactivate`, undefined, 404, new RegExp(UNKNOWN_UUID))],
  [
    "deactivate: text/plain body",
    {
      method: "PUT",
      path: "/api/provider-credentials/:cred/deactivate",
      raw: "now",
      contentType: "text/plain",
      headers: SAME_ORIGIN,
      status: 415,
      field: "body",
    },
  ],
  ["delete: credential_id not a UUID", del("/api/provider-credentials/not-a-uuid", 400, "credential_id")],
  ["delete: credential_id is a wildcard", del("/api/provider-credentials/%25", 400, "credential_id")],
  ["delete: an unknown credential", del(`/api/provider-credentials/${UNKNOWN_UUID}`, 404, new RegExp(UNKNOWN_UUID))],

  // ---- GET /api/provider-credentials/organization/{organization_id}
  ["list: limit -1", get(`${LIST}?limit=-1`, 400, "limit")],
  ["list: limit 0", get(`${LIST}?limit=0`, 400, "limit")],
  ["list: limit -0", get(`${LIST}?limit=-0`, 400, "limit")],
  ["list: limit 1.5", get(`${LIST}?limit=1.5`, 400, "limit")],
  ["list: limit NaN", get(`${LIST}?limit=NaN`, 400, "limit")],
  ["list: limit Infinity", get(`${LIST}?limit=Infinity`, 400, "limit")],
  ["list: limit 1e400", get(`${LIST}?limit=1e400`, 400, "limit")],
  ["list: limit 10^20", get(`${LIST}?limit=100000000000000000000`, 400, "limit")],
  ["list: limit is a word", get(`${LIST}?limit=lots`, 400, "limit")],
  ["list: limit is empty", get(`${LIST}?limit=`, 400, "limit")],
  ["list: limit twice", get(`${LIST}?limit=1&limit=2`, 400, "limit")],
  ["list: limit is NUL", get(`${LIST}?limit=%00`, 400, "limit")],
  ["list: cursor with spaces", get(`${LIST}?cursor=not%20a%20cursor`, 400, "cursor")],
  ["list: cursor with percent signs", get(`${LIST}?cursor=%25%25`, 400, "cursor")],
  ["list: cursor is base64 of a word", get(`${LIST}?cursor=Zm9v`, 400, "cursor")],
  ["list: cursor of the wrong shape", get(`${LIST}?cursor=${b64(["x"])}`, 400, "cursor")],
  ["list: cursor with a huge time", get(`${LIST}?cursor=${b64([1e300, UNKNOWN_UUID])}`, 400, "cursor")],
  ["list: cursor with a negative huge time", get(`${LIST}?cursor=${b64([-1e20, UNKNOWN_UUID])}`, 400, "cursor")],
  ["list: cursor whose id is not a UUID", get(`${LIST}?cursor=${b64([0, "'; drop table x; --"])}`, 400, "cursor")],
  ["list: cursor with a NUL byte", get(`${LIST}?cursor=${b64([0, "\u0000"])}`, 400, "cursor")],
  ["list: cursor of 3000 characters", get(`${LIST}?cursor=${"A".repeat(3000)}`, 400, "cursor")],
  ["list: cursor forged (an unsigned sort key of the right shape)", get(`${LIST}?cursor=${b64([Date.now(), UNKNOWN_UUID])}`, 400, "cursor")],
  ["list: cursor edited (one byte of a real one changed)", get(`${LIST}?cursor=:editedCursor`, 400, "cursor")],
  ["list: cursor made under another MASTER_KEY", get(`${LIST}?cursor=:foreignCursor`, 400, "cursor")],
  ["list: cursor of another organisation's list", get(`${LIST}?cursor=:otherOrgCursor`, 400, "cursor")],
  ["list: cursor signed, dated in the year 10000", get(`${LIST}?cursor=:year10000Cursor`, 400, "cursor")],
  ["list: provider OPENAI", get(`${LIST}?provider=OPENAI`, 400, "provider")],
  ["list: provider typo", get(`${LIST}?provider=antropic`, 400, "provider")],
  ["list: provider empty", get(`${LIST}?provider=`, 400, "provider")],
  ["list: active_only maybe", get(`${LIST}?active_only=maybe`, 400, "active_only")],
  ["list: active_only empty", get(`${LIST}?active_only=`, 400, "active_only")],
  ["list: an unknown parameter", get(`${LIST}?colour=blue`, 400, "colour")],
  ["list: a parameter that is SQL", get(`${LIST}?${encodeURIComponent("1=1;--")}=x`, 400, /unknown field/)],
  ["list: organization_id with a bang", get("/api/provider-credentials/organization/bad!id", 400, "organization_id")],
  ["list: organization_id is NUL", get("/api/provider-credentials/organization/%00", 400, "organization_id")],
  ["list: organization_id is a traversal", get("/api/provider-credentials/organization/..%2F..%2Fetc", 400, "organization_id")],
  ["list: organization_id of 65 characters", get(`/api/provider-credentials/organization/${"o".repeat(65)}`, 400, "organization_id")],
  ["list: organization_id is not ASCII", get(`/api/provider-credentials/organization/${encodeURIComponent("ørg")}`, 400, "organization_id")],
  ["list: an unknown organisation", get("/api/provider-credentials/organization/org-nope", 404, /org-nope/)],

  // ---- organisations
  ["org create: organization_id is missing", post("/api/organizations", { name: "N" }, 400, "organization_id")],
  ["org create: organization_id is empty", post("/api/organizations", { organization_id: "", name: "N" }, 400, "organization_id")],
  ["org create: organization_id with a space", post("/api/organizations", { organization_id: "org one", name: "N" }, 400, "organization_id")],
  ["org create: organization_id of 65 characters", post("/api/organizations", { organization_id: "o".repeat(65), name: "N" }, 400, "organization_id")],
  ["org create: organization_id is Unicode", post("/api/organizations", { organization_id: "组织", name: "N" }, 400, "organization_id")],
  [
    "org create: organization_id is SQL",
    post("/api/organizations", { organization_id: "x'); drop table organizations; --", name: "N" }, 400, "organization_id"),
  ],
  ["org create: organization_id is HTML", post("/api/organizations", { organization_id: "<b>org</b>", name: "N" }, 400, "organization_id")],
  ["org create: organization_id is a number", post("/api/organizations", { organization_id: 7, name: "N" }, 400, "organization_id")],
  ["org create: organization_id with a slash", post("/api/organizations", { organization_id: "a/b", name: "N" }, 400, "organization_id")],
  ["org create: name is missing", post("/api/organizations", { organization_id: "org-new" }, 400, "name")],
  ["org create: name is empty", post("/api/organizations", { organization_id: "org-new", name: "" }, 400, "name")],
  ["org create: name is only spaces", post("/api/organizations", { organization_id: "org-new", name: "   " }, 400, "name")],
  ["org create: name of 201 characters", post("/api/organizations", { organization_id: "org-new", name: "n".repeat(201) }, 400, "name")],
  ["org create: name with a NUL byte", post("/api/organizations", { organization_id: "org-new", name: "a\u0000" }, 400, "name")],
  ["org create: name with a bell", post("/api/organizations", { organization_id: "org-new", name: "ding\u0007" }, 400, "name")],
  ["org create: name with a right-to-left override", post("/api/organizations", { organization_id: "org-new", name: `Acme${RLO}cni` }, 400, "name")],
  ["org create: name holding a key", post("/api/organizations", { organization_id: "org-new", name: KEY_SHAPED }, 400, "name")],
  [
    "org create: organization_id holding a key",
    post("/api/organizations", { organization_id: "sk-4fQ9zLm2Xc8Rt1Vb7Nk3Pq6Ws", name: "N" }, 400, "organization_id"),
  ],
  ["org list: cursor forged", get(`/api/organizations?cursor=${b64(["org-a"])}`, 400, "cursor")],
  ["org create: name is null", post("/api/organizations", { organization_id: "org-new", name: null }, 400, "name")],
  ["org create: an unknown field", post("/api/organizations", { organization_id: "org-new", name: "N", organizationId: "org-new" }, 400, "organizationId")],
  ["org create: a taken id", post("/api/organizations", { organization_id: ORG, name: "again" }, 409, /org-bad/)],
  ["org create: an array body", post("/api/organizations", [{ organization_id: "org-new", name: "N" }], 400, "body")],
  ["org create: a 1 MB body", post("/api/organizations", { organization_id: "org-new", name: "n".repeat(MB) }, 413, "body")],
  ["org list: limit -5", get("/api/organizations?limit=-5", 400, "limit")],
  ["org list: limit 1.5", get("/api/organizations?limit=1.5", 400, "limit")],
  ["org list: cursor is malformed", get("/api/organizations?cursor=not%20a%20cursor", 400, "cursor")],
  ["org list: cursor of the wrong shape", get(`/api/organizations?cursor=${b64([1])}`, 400, "cursor")],
  ["org list: cursor with a NUL byte", get(`/api/organizations?cursor=${cursorWithNul}`, 400, "cursor")],
  ["org list: an unknown parameter", get("/api/organizations?page=2", 400, "page")],
  ["org get: id with a bang", get("/api/organizations/bad!id", 400, "organization_id")],
  ["org get: id is NUL", get("/api/organizations/%00", 400, "organization_id")],
  ["org get: id is a traversal", get("/api/organizations/..%2F..%2Fetc%2Fpasswd", 400, "organization_id")],
  ["org get: id of 300 characters", get(`/api/organizations/${"o".repeat(300)}`, 400, "organization_id")],
  ["org get: an unknown organisation", get("/api/organizations/org-nope", 404, /org-nope/)],
  ["org delete: id is SQL", del(`/api/organizations/${encodeURIComponent("' or 1=1 --")}`, 400, "organization_id")],
  ["org delete: an unknown organisation", del("/api/organizations/org-nope", 404, /org-nope/)],
  ["org delete: one that still has a team", del("/api/organizations/org-busy", 409, /team/, { code: "failed_precondition" })],
  ["org delete: one that still has credentials", del(`/api/organizations/${ORG}`, 409, /credential/, { code: "failed_precondition" })],

  // ---- teams
  ["team create: team_id is missing", post(`/api/organizations/${ORG}/teams`, { name: "T" }, 400, "team_id")],
  ["team create: team_id is empty", post(`/api/organizations/${ORG}/teams`, { team_id: "", name: "T" }, 400, "team_id")],
  ["team create: team_id with a space", post(`/api/organizations/${ORG}/teams`, { team_id: "team one", name: "T" }, 400, "team_id")],
  ["team create: team_id of 65 characters", post(`/api/organizations/${ORG}/teams`, { team_id: "t".repeat(65), name: "T" }, 400, "team_id")],
  ["team create: team_id with a NUL byte", post(`/api/organizations/${ORG}/teams`, { team_id: "t\u0000", name: "T" }, 400, "team_id")],
  ["team create: team_id is a number", post(`/api/organizations/${ORG}/teams`, { team_id: 42, name: "T" }, 400, "team_id")],
  ["team create: name is missing", post(`/api/organizations/${ORG}/teams`, { team_id: "team-new" }, 400, "name")],
  ["team create: name of 201 characters", post(`/api/organizations/${ORG}/teams`, { team_id: "team-new", name: "n".repeat(201) }, 400, "name")],
  ["team create: name with a line feed", post(`/api/organizations/${ORG}/teams`, { team_id: "team-new", name: "a\nb" }, 400, "name")],
  ["team create: name with a zero-width joiner", post(`/api/organizations/${ORG}/teams`, { team_id: "team-new", name: "a\u200db" }, 400, "name")],
  ["team create: name holding a key", post(`/api/organizations/${ORG}/teams`, { team_id: "team-new", name: KEY_SHAPED }, 400, "name")],
  [
    "team create: team_id holding a key",
    post(`/api/organizations/${ORG}/teams`, { team_id: "AIzaSyB3kQ9mX2vT7nL1pR8wC4dF6gH0jK5sZ", name: "T" }, 400, "team_id"),
  ],
  ["team list: cursor forged", get(`/api/organizations/${ORG}/teams?cursor=${b64(["team-a"])}`, 400, "cursor")],
  ["team create: an unknown field", post(`/api/organizations/${ORG}/teams`, { team_id: "team-new", name: "T", teamId: "x" }, 400, "teamId")],
  ["team create: a taken team id", post(`/api/organizations/${ORG}/teams`, { team_id: "team-bad", name: "again" }, 409, /team-bad/)],
  ["team create: an unknown organisation", post("/api/organizations/org-nope/teams", { team_id: "team-new", name: "T" }, 404, /org-nope/)],
  ["team create: a bad organisation in the path", post("/api/organizations/bad!org/teams", { team_id: "team-new", name: "T" }, 400, "organization_id")],
  ["team list: limit -1", get(`/api/organizations/${ORG}/teams?limit=-1`, 400, "limit")],
  ["team list: cursor with a NUL byte", get(`/api/organizations/${ORG}/teams?cursor=${cursorWithNul}`, 400, "cursor")],
  ["team list: cursor of the wrong shape", get(`/api/organizations/${ORG}/teams?cursor=${b64([1, 2])}`, 400, "cursor")],
  ["team list: an unknown organisation", get("/api/organizations/org-nope/teams", 404, /org-nope/)],
  ["team delete: id with a bang", del("/api/teams/bad!id", 400, "team_id")],
  ["team delete: id of 65 characters", del(`/api/teams/${"t".repeat(65)}`, 400, "team_id")],
  ["team delete: id is a traversal", del("/api/teams/..%2Fteam-bad", 400, "team_id")],
  ["team delete: an unknown team", del("/api/teams/team-nope", 404, /team-nope/)],

  // ---- API tokens
  ["token create: name is missing", post("/api/tokens", { scope: "resolve" }, 400, "name")],
  ["token create: name is empty", post("/api/tokens", { name: "", scope: "resolve" }, 400, "name")],
  ["token create: name with a bang", post("/api/tokens", { name: "bad name!", scope: "resolve" }, 400, "name")],
  ["token create: name of 65 characters", post("/api/tokens", { name: "t".repeat(65), scope: "resolve" }, 400, "name")],
  ["token create: name is not ASCII", post("/api/tokens", { name: "tøken", scope: "resolve" }, 400, "name")],
  ["token create: name is a traversal", post("/api/tokens", { name: "../admin", scope: "resolve" }, 400, "name")],
  ["token create: the reserved name", post("/api/tokens", { name: "service-admin-token", scope: "admin" }, 400, "name")],
  ["token create: name holding a key", post("/api/tokens", { name: "sk-4fQ9zLm2Xc8Rt1Vb7Nk3Pq6Ws", scope: "resolve" }, 400, "name")],
  ["token create: scope root", post("/api/tokens", { name: "tok-new", scope: "root" }, 400, "scope")],
  ["token create: scope ADMIN", post("/api/tokens", { name: "tok-new", scope: "ADMIN" }, 400, "scope")],
  ["token create: scope is empty", post("/api/tokens", { name: "tok-new", scope: "" }, 400, "scope")],
  ["token create: scope is null", post("/api/tokens", { name: "tok-new", scope: null }, 400, "scope")],
  ["token create: scope is an array", post("/api/tokens", { name: "tok-new", scope: ["admin"] }, 400, "scope")],
  ["token create: an unknown field", post("/api/tokens", { name: "tok-new", scope: "resolve", token: "chosen-by-me" }, 400, "token")],
  ["token create: a taken name", post("/api/tokens", { name: "tok-bad", scope: "resolve" }, 409, /tok-bad/)],
  ["token revoke: name with a bang", del("/api/tokens/bad!name", 400, "name")],
  ["token revoke: name is NUL", del("/api/tokens/%00", 400, "name")],
  ["token revoke: an unknown token", del("/api/tokens/tok-nope", 404, /tok-nope/)],

  // ---- audit events
  ["audit: limit -1", get("/api/audit-events?limit=-1", 400, "limit")],
  ["audit: limit is a word", get("/api/audit-events?limit=all", 400, "limit")],
  ["audit: cursor is malformed", get("/api/audit-events?cursor=%2F%2F", 400, "cursor")],
  ["audit: cursor holds a word", get(`/api/audit-events?cursor=${b64(["abc"])}`, 400, "cursor")],
  ["audit: cursor holds a number", get(`/api/audit-events?cursor=${b64([5])}`, 400, "cursor")],
  ["audit: cursor forged (an unsigned event id)", get(`/api/audit-events?cursor=${b64(["5"])}`, 400, "cursor")],
  ["audit: cursor signed, holding an id of 2^63", get("/api/audit-events?cursor=:auditOverflowCursor", 400, "cursor")],
  ["audit: action is SQL", get(`/api/audit-events?action=${encodeURIComponent("x'; drop table audit_events; --")}`, 400, "action")],
  ["audit: action without a dot", get("/api/audit-events?action=credential", 400, "action")],
  ["audit: action of 200 characters", get(`/api/audit-events?action=${"a".repeat(200)}`, 400, "action")],
  ["audit: organization_id with a bang", get("/api/audit-events?organization_id=bad!", 400, "organization_id")],
  ["audit: credential_id not a UUID", get("/api/audit-events?credential_id=42", 400, "credential_id")],
  ["audit: an unknown parameter", get("/api/audit-events?who=me", 400, "who")],

  // ---- authentication, methods, routes
  ["no credentials at all", get(LIST, 401, /authentication required/, { token: null })],
  ["Basic authentication", get(LIST, 401, /^Authorization: /, { token: null, headers: { authorization: "Basic YWRtaW46YWRtaW4=" } })],
  ["an empty bearer token", get(LIST, 401, /^Authorization: /, { token: null, headers: { authorization: "Bearer " } })],
  ["a bearer token with a space inside", get(LIST, 401, /^Authorization: /, { token: null, headers: { authorization: "Bearer abc def" } })],
  ["an unknown bearer token", get(LIST, 401, /token/, { token: "pc_unknown_token_0123456789" })],
  ["a resolve-scope token", post(CREATE, credentialBody({ credential_name: "by resolver" }), 403, /scope/, { token: "resolve" })],
  ["a garbage session cookie", get(LIST, 401, /authentication required/, { token: null, headers: { cookie: "pc_session=garbage" } })],
  [
    "a session cookie on a cross-origin change",
    post(CREATE, credentialBody(), 403, /cross-origin/, {
      token: null,
      headers: { cookie: "pc_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", origin: "https://evil.example" },
    }),
  ],
  ["PATCH on a credential", { method: "PATCH", path: CRED, body: { credential_name: "x" }, status: 405, field: /PATCH/ }],
  ["POST on a credential", post(CRED, { credential_name: "x" }, 405, /POST/)],
  ["DELETE on the create path (create is not a UUID)", del(CREATE, 400, "credential_id")],
  ["an unknown endpoint", get("/api/provider-credentials/:cred/rotate", 404, /no such endpoint/)],
  ["an unknown endpoint under teams", post("/api/teams", { team_id: "x", name: "x" }, 404, /no such endpoint/)],
  ["a nested unknown endpoint", get(`/api/organizations/${ORG}/teams/team-bad`, 404, /no such endpoint/)],
];

// ---------------------------------------------------------------- gRPC rows (Connect-ES client on the gRPC port)

interface Clients {
  credentials: ReturnType<TestService["clients"]>["credentials"];
  organizations: ReturnType<TestService["clients"]>["organizations"];
  admin: ReturnType<typeof createClient<typeof AdminService>>;
}

interface GrpcRow {
  call: (c: Clients) => Promise<unknown>;
  code: Code;
  /** The field the message must start with (`field: ...`), or a pattern the message must match. */
  field?: string | RegExp;
  /** Call as: default the admin token; "none" without a token; "resolve" with a resolve-scope token; or these headers with the admin token. */
  as?: "none" | "resolve" | "unknown" | Record<string, string>;
}

const g = (call: GrpcRow["call"], code: Code, field?: string | RegExp, as?: GrpcRow["as"]): GrpcRow => ({ call, code, field, as });
const createReq = (changes: Record<string, unknown> = {}) => ({
  organizationId: ORG,
  provider: Provider.OPENAI,
  credentialName: "fresh",
  apiKey: OPENAI,
  ...changes,
});
const orgScope = (value: string) => ({ case: "organizationId" as const, value });
const teamScope = (value: string) => ({ case: "teamId" as const, value });

const grpcRows: Array<[string, GrpcRow]> = [
  [
    "CreateCredential: organization_id empty",
    g((c) => c.credentials.createCredential(createReq({ organizationId: "" })), Code.InvalidArgument, "organization_id"),
  ],
  [
    "CreateCredential: organization_id with a space",
    g((c) => c.credentials.createCredential(createReq({ organizationId: "org bad" })), Code.InvalidArgument, "organization_id"),
  ],
  [
    "CreateCredential: organization_id of 65 characters",
    g((c) => c.credentials.createCredential(createReq({ organizationId: "o".repeat(65) })), Code.InvalidArgument, "organization_id"),
  ],
  [
    "CreateCredential: organization_id with a NUL byte",
    g((c) => c.credentials.createCredential(createReq({ organizationId: "org\u0000" })), Code.InvalidArgument, "organization_id"),
  ],
  [
    "CreateCredential: organization_id is a traversal",
    g((c) => c.credentials.createCredential(createReq({ organizationId: "../../etc" })), Code.InvalidArgument, "organization_id"),
  ],
  [
    "CreateCredential: organization_id is SQL",
    g((c) => c.credentials.createCredential(createReq({ organizationId: "' or ''='" })), Code.InvalidArgument, "organization_id"),
  ],
  [
    "CreateCredential: provider unspecified",
    g((c) => c.credentials.createCredential(createReq({ provider: Provider.UNSPECIFIED })), Code.InvalidArgument, "provider"),
  ],
  [
    "CreateCredential: provider 99 (unknown enum value)",
    g((c) => c.credentials.createCredential(createReq({ provider: 99 as Provider })), Code.InvalidArgument, "provider"),
  ],
  ["CreateCredential: provider -1", g((c) => c.credentials.createCredential(createReq({ provider: -1 as Provider })), Code.InvalidArgument, "provider")],
  [
    "CreateCredential: credential_name empty",
    g((c) => c.credentials.createCredential(createReq({ credentialName: "" })), Code.InvalidArgument, "credential_name"),
  ],
  [
    "CreateCredential: credential_name only spaces",
    g((c) => c.credentials.createCredential(createReq({ credentialName: " \t " })), Code.InvalidArgument, "credential_name"),
  ],
  [
    "CreateCredential: credential_name of 201 characters",
    g((c) => c.credentials.createCredential(createReq({ credentialName: "n".repeat(201) })), Code.InvalidArgument, "credential_name"),
  ],
  [
    "CreateCredential: credential_name of 201 emoji",
    g((c) => c.credentials.createCredential(createReq({ credentialName: "🔑".repeat(201) })), Code.InvalidArgument, "credential_name"),
  ],
  [
    "CreateCredential: credential_name with a NUL byte",
    g((c) => c.credentials.createCredential(createReq({ credentialName: "a\u0000" })), Code.InvalidArgument, "credential_name"),
  ],
  [
    "CreateCredential: credential_name with a carriage return",
    g((c) => c.credentials.createCredential(createReq({ credentialName: "a\rb" })), Code.InvalidArgument, "credential_name"),
  ],
  ["CreateCredential: api_key empty", g((c) => c.credentials.createCredential(createReq({ apiKey: "" })), Code.InvalidArgument, "api_key")],
  [
    "CreateCredential: api_key with an inner space",
    g((c) => c.credentials.createCredential(createReq({ apiKey: "sk-proj abc-0123456789" })), Code.InvalidArgument, "api_key"),
  ],
  ["CreateCredential: api_key too short", g((c) => c.credentials.createCredential(createReq({ apiKey: "sk-1" })), Code.InvalidArgument, "api_key")],
  [
    "CreateCredential: api_key of 5000 characters",
    g((c) => c.credentials.createCredential(createReq({ apiKey: `sk-${"a".repeat(4997)}` })), Code.InvalidArgument, "api_key"),
  ],
  [
    "CreateCredential: api_key not ASCII",
    g((c) => c.credentials.createCredential(createReq({ apiKey: "sk-ключ-0123456789" })), Code.InvalidArgument, "api_key"),
  ],
  [
    "CreateCredential: api_key with emoji",
    g((c) => c.credentials.createCredential(createReq({ apiKey: "sk-😀😀😀😀0123456789" })), Code.InvalidArgument, "api_key"),
  ],
  [
    "CreateCredential: api_key with a NUL byte",
    g((c) => c.credentials.createCredential(createReq({ apiKey: "sk-abc\u0000def0123456" })), Code.InvalidArgument, "api_key"),
  ],
  ["CreateCredential: an Anthropic key as OpenAI", g((c) => c.credentials.createCredential(createReq({ apiKey: ANTHROPIC })), Code.InvalidArgument, "api_key")],
  [
    "CreateCredential: a Fireworks key as Gemini",
    g((c) => c.credentials.createCredential(createReq({ provider: Provider.GEMINI, apiKey: FIREWORKS })), Code.InvalidArgument, "api_key"),
  ],
  [
    "CreateCredential: api_base javascript:",
    g((c) => c.credentials.createCredential(createReq({ apiBase: "javascript:alert(1)" })), Code.InvalidArgument, "api_base"),
  ],
  [
    "CreateCredential: api_base with a password",
    g((c) => c.credentials.createCredential(createReq({ apiBase: "https://u:p@proxy.example.com" })), Code.InvalidArgument, "api_base"),
  ],
  [
    "CreateCredential: api_base ftp:",
    g((c) => c.credentials.createCredential(createReq({ apiBase: "ftp://proxy.example.com" })), Code.InvalidArgument, "api_base"),
  ],
  [
    "CreateCredential: api_base at a loopback address (0x7f.0.0.2)",
    g((c) => c.credentials.createCredential(createReq({ apiBase: "http://0x7f.0.0.2:9/v1" })), Code.InvalidArgument, "api_base"),
  ],
  [
    "CreateCredential: api_base 0.0.0.0",
    g((c) => c.credentials.createCredential(createReq({ apiBase: "http://0.0.0.0:9/v1" })), Code.InvalidArgument, "api_base"),
  ],
  ["CreateCredential: api_base relative", g((c) => c.credentials.createCredential(createReq({ apiBase: "/v1" })), Code.InvalidArgument, "api_base")],
  [
    "CreateCredential: api_base of 2049 characters",
    g((c) => c.credentials.createCredential(createReq({ apiBase: `https://p.example.com/${"a".repeat(2049 - 22)}` })), Code.InvalidArgument, "api_base"),
  ],
  [
    "CreateCredential: api_base with whitespace",
    g((c) => c.credentials.createCredential(createReq({ apiBase: "https://p.example.com/a b" })), Code.InvalidArgument, "api_base"),
  ],
  ["CreateCredential: an unknown organisation", g((c) => c.credentials.createCredential(createReq({ organizationId: "org-nope" })), Code.NotFound, /org-nope/)],
  [
    "CreateCredential: a duplicate name",
    g((c) => c.credentials.createCredential(createReq({ credentialName: "existing" })), Code.AlreadyExists, "credential_name"),
  ],
  [
    "CreateCredential: a 1 MB message",
    g((c) => c.credentials.createCredential(createReq({ credentialName: "n".repeat(MB) })), Code.ResourceExhausted, /larger than/),
  ],
  ["GetCredential: empty id", g((c) => c.credentials.getCredential({ credentialId: "" }), Code.InvalidArgument, "credential_id")],
  ["GetCredential: not a UUID", g((c) => c.credentials.getCredential({ credentialId: "123" }), Code.InvalidArgument, "credential_id")],
  ["GetCredential: SQL", g((c) => c.credentials.getCredential({ credentialId: "' or 1=1 --" }), Code.InvalidArgument, "credential_id")],
  ["GetCredential: unknown", g((c) => c.credentials.getCredential({ credentialId: UNKNOWN_UUID }), Code.NotFound, new RegExp(UNKNOWN_UUID))],
  ["ListCredentials: organization_id empty", g((c) => c.credentials.listCredentials({ organizationId: "" }), Code.InvalidArgument, "organization_id")],
  ["ListCredentials: an unknown organisation", g((c) => c.credentials.listCredentials({ organizationId: "org-nope" }), Code.NotFound, /org-nope/)],
  ["ListCredentials: page_size -1", g((c) => c.credentials.listCredentials({ organizationId: ORG, pageSize: -1 }), Code.InvalidArgument, "page_size")],
  [
    "ListCredentials: page_size -2^31",
    g((c) => c.credentials.listCredentials({ organizationId: ORG, pageSize: -(2 ** 31) }), Code.InvalidArgument, "page_size"),
  ],
  [
    "ListCredentials: page_token not base64url",
    g((c) => c.credentials.listCredentials({ organizationId: ORG, pageToken: "%%" }), Code.InvalidArgument, "page_token"),
  ],
  [
    "ListCredentials: page_token of the wrong shape",
    g((c) => c.credentials.listCredentials({ organizationId: ORG, pageToken: b64(["x"]) }), Code.InvalidArgument, "page_token"),
  ],
  [
    "ListCredentials: page_token with a huge time",
    g((c) => c.credentials.listCredentials({ organizationId: ORG, pageToken: b64([1e300, UNKNOWN_UUID]) }), Code.InvalidArgument, "page_token"),
  ],
  [
    "ListCredentials: page_token forged (an unsigned sort key of the right shape)",
    g((c) => c.credentials.listCredentials({ organizationId: ORG, pageToken: b64([Date.now(), UNKNOWN_UUID]) }), Code.InvalidArgument, "page_token"),
  ],
  [
    "ListCredentials: page_token edited",
    g((c) => c.credentials.listCredentials({ organizationId: ORG, pageToken: ids.editedCursor }), Code.InvalidArgument, "page_token"),
  ],
  [
    "ListCredentials: page_token made under another MASTER_KEY",
    g((c) => c.credentials.listCredentials({ organizationId: ORG, pageToken: ids.foreignCursor }), Code.InvalidArgument, "page_token"),
  ],
  [
    "ListCredentials: page_token of another organisation's list",
    g((c) => c.credentials.listCredentials({ organizationId: ORG, pageToken: ids.otherOrgCursor }), Code.InvalidArgument, "page_token"),
  ],
  [
    "ListCredentials: page_token signed, dated in the year 10000",
    g((c) => c.credentials.listCredentials({ organizationId: ORG, pageToken: ids.year10000Cursor }), Code.InvalidArgument, "page_token"),
  ],
  ["ListOrganizations: page_token forged", g((c) => c.organizations.listOrganizations({ pageToken: b64(["org-a"]) }), Code.InvalidArgument, "page_token")],
  [
    "ListTeams: page_token of the organisations' list",
    g((c) => c.organizations.listTeams({ organizationId: ORG, pageToken: ids.organizationsCursor }), Code.InvalidArgument, "page_token"),
  ],
  [
    "CreateCredential: credential_name with a right-to-left override",
    g((c) => c.credentials.createCredential(createReq({ credentialName: `photo${RLO}gnp.exe` })), Code.InvalidArgument, "credential_name"),
  ],
  [
    "CreateCredential: credential_name holding a key",
    g((c) => c.credentials.createCredential(createReq({ credentialName: KEY_SHAPED })), Code.InvalidArgument, "credential_name"),
  ],
  [
    "CreateCredential: a duplicate name after NFKC and case folding",
    g((c) => c.credentials.createCredential(createReq({ credentialName: "ｅｘｉｓｔｉｎｇ" })), Code.AlreadyExists, "credential_name"),
  ],
  [
    "UpdateCredential: credential_name with a left-to-right isolate",
    g((c) => c.credentials.updateCredential({ credentialId: ids.cred, credentialName: "a\u2066b" }), Code.InvalidArgument, "credential_name"),
  ],
  [
    "CreateOrganization: name with a zero-width space",
    g((c) => c.organizations.createOrganization({ organizationId: "org-new", name: "Ac\u200bme" }), Code.InvalidArgument, "name"),
  ],
  [
    "CreateOrganization: name holding a key",
    g((c) => c.organizations.createOrganization({ organizationId: "org-new", name: `key ${KEY_SHAPED}` }), Code.InvalidArgument, "name"),
  ],
  [
    "CreateTeam: name with a right-to-left override",
    g((c) => c.organizations.createTeam({ teamId: "team-new", organizationId: ORG, name: `a${RLO}b` }), Code.InvalidArgument, "name"),
  ],
  [
    "CreateTeam: team_id holding a key",
    g((c) => c.organizations.createTeam({ teamId: "fw_3Zq8Lm2Xc9Rt4Vb7Nk1Pq6Ws", organizationId: ORG, name: "T" }), Code.InvalidArgument, "team_id"),
  ],
  [
    "ListCredentials: provider 99",
    g((c) => c.credentials.listCredentials({ organizationId: ORG, provider: 99 as Provider }), Code.InvalidArgument, "provider"),
  ],
  [
    "UpdateCredential: id not a UUID",
    g((c) => c.credentials.updateCredential({ credentialId: "nope", credentialName: "x" }), Code.InvalidArgument, "credential_id"),
  ],
  [
    "UpdateCredential: expected_version 0",
    g((c) => c.credentials.updateCredential({ credentialId: ids.cred, credentialName: "x", expectedVersion: 0 }), Code.InvalidArgument, "expected_version"),
  ],
  [
    "UpdateCredential: expected_version -5",
    g((c) => c.credentials.updateCredential({ credentialId: ids.cred, credentialName: "x", expectedVersion: -5 }), Code.InvalidArgument, "expected_version"),
  ],
  [
    "UpdateCredential: a stale expected_version",
    g((c) => c.credentials.updateCredential({ credentialId: ids.cred, credentialName: "x", expectedVersion: 99 }), Code.Aborted, "expected_version"),
  ],
  [
    "UpdateCredential: credential_name empty",
    g((c) => c.credentials.updateCredential({ credentialId: ids.cred, credentialName: "" }), Code.InvalidArgument, "credential_name"),
  ],
  [
    "UpdateCredential: api_key with a space",
    g((c) => c.credentials.updateCredential({ credentialId: ids.cred, apiKey: "sk-a b c d e f g" }), Code.InvalidArgument, "api_key"),
  ],
  [
    "UpdateCredential: api_base javascript:",
    g((c) => c.credentials.updateCredential({ credentialId: ids.cred, apiBase: "javascript:void(0)" }), Code.InvalidArgument, "api_base"),
  ],
  [
    "UpdateCredential: clearing api_base without the key",
    g((c) => c.credentials.updateCredential({ credentialId: ids.proxy, apiBase: "" }), Code.InvalidArgument, "api_key"),
  ],
  [
    "UpdateCredential: a new api_base without the key, verified",
    g(
      (c) => c.credentials.updateCredential({ credentialId: ids.cred, apiBase: "https://attacker.example.com/v1", verify: true }),
      Code.InvalidArgument,
      "api_key",
    ),
  ],
  [
    "UpdateCredential: api_base at the metadata address, with the key",
    g(
      (c) => c.credentials.updateCredential({ credentialId: ids.cred, apiKey: FAKE_KEYS.openai(), apiBase: "http://169.254.169.254/latest" }),
      Code.InvalidArgument,
      "api_base",
    ),
  ],
  [
    "UpdateCredential: unknown",
    g((c) => c.credentials.updateCredential({ credentialId: UNKNOWN_UUID, credentialName: "x" }), Code.NotFound, new RegExp(UNKNOWN_UUID)),
  ],
  ["ActivateCredential: not a UUID", g((c) => c.credentials.activateCredential({ credentialId: "x" }), Code.InvalidArgument, "credential_id")],
  ["ActivateCredential: unknown", g((c) => c.credentials.activateCredential({ credentialId: UNKNOWN_UUID }), Code.NotFound, new RegExp(UNKNOWN_UUID))],
  ["DeactivateCredential: empty", g((c) => c.credentials.deactivateCredential({ credentialId: "" }), Code.InvalidArgument, "credential_id")],
  ["DeactivateCredential: unknown", g((c) => c.credentials.deactivateCredential({ credentialId: UNKNOWN_UUID }), Code.NotFound, new RegExp(UNKNOWN_UUID))],
  ["DeleteCredential: a traversal", g((c) => c.credentials.deleteCredential({ credentialId: "../../" }), Code.InvalidArgument, "credential_id")],
  ["DeleteCredential: unknown", g((c) => c.credentials.deleteCredential({ credentialId: UNKNOWN_UUID }), Code.NotFound, new RegExp(UNKNOWN_UUID))],
  ["ResolveKey: no scope", g((c) => c.credentials.resolveKey({ provider: Provider.OPENAI }), Code.InvalidArgument, "scope")],
  ["ResolveKey: provider unspecified", g((c) => c.credentials.resolveKey({ scope: orgScope(ORG) }), Code.InvalidArgument, "provider")],
  ["ResolveKey: provider 42", g((c) => c.credentials.resolveKey({ scope: orgScope(ORG), provider: 42 as Provider }), Code.InvalidArgument, "provider")],
  [
    "ResolveKey: organization_id empty",
    g((c) => c.credentials.resolveKey({ scope: orgScope(""), provider: Provider.OPENAI }), Code.InvalidArgument, "organization_id"),
  ],
  [
    "ResolveKey: team_id with a space",
    g((c) => c.credentials.resolveKey({ scope: teamScope("team x"), provider: Provider.OPENAI }), Code.InvalidArgument, "team_id"),
  ],
  [
    "ResolveKey: team_id of 65 characters",
    g((c) => c.credentials.resolveKey({ scope: teamScope("t".repeat(65)), provider: Provider.OPENAI }), Code.InvalidArgument, "team_id", "resolve"),
  ],
  [
    "ResolveKey: an unknown team",
    g((c) => c.credentials.resolveKey({ scope: teamScope("team-nope"), provider: Provider.OPENAI }), Code.NotFound, /team-nope/, "resolve"),
  ],
  [
    "ResolveKey: an unknown organisation",
    g((c) => c.credentials.resolveKey({ scope: orgScope("org-nope"), provider: Provider.OPENAI }), Code.NotFound, /org-nope/),
  ],
  [
    "ResolveKey: no key and no fallback",
    g((c) => c.credentials.resolveKey({ scope: orgScope(ORG), provider: Provider.FIREWORKS }), Code.FailedPrecondition, /FIREWORKS_API_KEY/),
  ],
  ["CreateOrganization: id empty", g((c) => c.organizations.createOrganization({ organizationId: "", name: "N" }), Code.InvalidArgument, "organization_id")],
  [
    "CreateOrganization: id with a bang",
    g((c) => c.organizations.createOrganization({ organizationId: "org!", name: "N" }), Code.InvalidArgument, "organization_id"),
  ],
  [
    "CreateOrganization: id is Unicode",
    g((c) => c.organizations.createOrganization({ organizationId: "ørg", name: "N" }), Code.InvalidArgument, "organization_id"),
  ],
  [
    "CreateOrganization: id of 65 characters",
    g((c) => c.organizations.createOrganization({ organizationId: "o".repeat(65), name: "N" }), Code.InvalidArgument, "organization_id"),
  ],
  ["CreateOrganization: name empty", g((c) => c.organizations.createOrganization({ organizationId: "org-new", name: "" }), Code.InvalidArgument, "name")],
  [
    "CreateOrganization: name of 201 characters",
    g((c) => c.organizations.createOrganization({ organizationId: "org-new", name: "n".repeat(201) }), Code.InvalidArgument, "name"),
  ],
  [
    "CreateOrganization: name with a NUL byte",
    g((c) => c.organizations.createOrganization({ organizationId: "org-new", name: "\u0000" }), Code.InvalidArgument, "name"),
  ],
  [
    "CreateOrganization: a taken id",
    g((c) => c.organizations.createOrganization({ organizationId: ORG, name: "again" }), Code.AlreadyExists, "organization_id"),
  ],
  ["GetOrganization: id with a slash", g((c) => c.organizations.getOrganization({ organizationId: "a/b" }), Code.InvalidArgument, "organization_id")],
  ["GetOrganization: unknown", g((c) => c.organizations.getOrganization({ organizationId: "org-nope" }), Code.NotFound, /org-nope/)],
  ["ListOrganizations: page_size -1", g((c) => c.organizations.listOrganizations({ pageSize: -1 }), Code.InvalidArgument, "page_size")],
  ["ListOrganizations: page_token malformed", g((c) => c.organizations.listOrganizations({ pageToken: "not a token" }), Code.InvalidArgument, "page_token")],
  [
    "ListOrganizations: page_token with a NUL byte",
    g((c) => c.organizations.listOrganizations({ pageToken: cursorWithNul }), Code.InvalidArgument, "page_token"),
  ],
  ["ListOrganizations: page_token holding a number", g((c) => c.organizations.listOrganizations({ pageToken: b64([1]) }), Code.InvalidArgument, "page_token")],
  ["DeleteOrganization: id empty", g((c) => c.organizations.deleteOrganization({ organizationId: "" }), Code.InvalidArgument, "organization_id")],
  ["DeleteOrganization: unknown", g((c) => c.organizations.deleteOrganization({ organizationId: "org-nope" }), Code.NotFound, /org-nope/)],
  ["DeleteOrganization: one with a team", g((c) => c.organizations.deleteOrganization({ organizationId: "org-busy" }), Code.FailedPrecondition, /team/)],
  ["CreateTeam: team_id empty", g((c) => c.organizations.createTeam({ teamId: "", organizationId: ORG, name: "T" }), Code.InvalidArgument, "team_id")],
  [
    "CreateTeam: team_id is HTML",
    g((c) => c.organizations.createTeam({ teamId: "<i>t</i>", organizationId: ORG, name: "T" }), Code.InvalidArgument, "team_id"),
  ],
  [
    "CreateTeam: organization_id empty",
    g((c) => c.organizations.createTeam({ teamId: "team-new", organizationId: "", name: "T" }), Code.InvalidArgument, "organization_id"),
  ],
  ["CreateTeam: name empty", g((c) => c.organizations.createTeam({ teamId: "team-new", organizationId: ORG, name: "" }), Code.InvalidArgument, "name")],
  [
    "CreateTeam: an unknown organisation",
    g((c) => c.organizations.createTeam({ teamId: "team-new", organizationId: "org-nope", name: "T" }), Code.NotFound, /org-nope/),
  ],
  ["CreateTeam: a taken id", g((c) => c.organizations.createTeam({ teamId: "team-bad", organizationId: ORG, name: "T" }), Code.AlreadyExists, "team_id")],
  ["ListTeams: organization_id with a bang", g((c) => c.organizations.listTeams({ organizationId: "bad!" }), Code.InvalidArgument, "organization_id")],
  ["ListTeams: page_size -1", g((c) => c.organizations.listTeams({ organizationId: ORG, pageSize: -1 }), Code.InvalidArgument, "page_size")],
  [
    "ListTeams: page_token with a NUL byte",
    g((c) => c.organizations.listTeams({ organizationId: ORG, pageToken: cursorWithNul }), Code.InvalidArgument, "page_token"),
  ],
  ["ListTeams: an unknown organisation", g((c) => c.organizations.listTeams({ organizationId: "org-nope" }), Code.NotFound, /org-nope/)],
  ["DeleteTeam: id empty", g((c) => c.organizations.deleteTeam({ teamId: "" }), Code.InvalidArgument, "team_id")],
  ["DeleteTeam: unknown", g((c) => c.organizations.deleteTeam({ teamId: "team-nope" }), Code.NotFound, /team-nope/)],
  ["CreateApiToken: name empty", g((c) => c.admin.createApiToken({ name: "", scope: "resolve" }), Code.InvalidArgument, "name")],
  ["CreateApiToken: name with a space", g((c) => c.admin.createApiToken({ name: "a b", scope: "resolve" }), Code.InvalidArgument, "name")],
  ["CreateApiToken: the reserved name", g((c) => c.admin.createApiToken({ name: "service-admin-token", scope: "admin" }), Code.InvalidArgument, "name")],
  ["CreateApiToken: scope root", g((c) => c.admin.createApiToken({ name: "tok-new", scope: "root" }), Code.InvalidArgument, "scope")],
  ["CreateApiToken: scope empty", g((c) => c.admin.createApiToken({ name: "tok-new", scope: "" }), Code.InvalidArgument, "scope")],
  ["CreateApiToken: a taken name", g((c) => c.admin.createApiToken({ name: "tok-bad", scope: "resolve" }), Code.AlreadyExists, "name")],
  ["RevokeApiToken: name with a bang", g((c) => c.admin.revokeApiToken({ name: "tok!" }), Code.InvalidArgument, "name")],
  ["RevokeApiToken: unknown", g((c) => c.admin.revokeApiToken({ name: "tok-nope" }), Code.NotFound, /tok-nope/)],
  ["ListAuditEvents: action is SQL", g((c) => c.admin.listAuditEvents({ action: "x'; --" }), Code.InvalidArgument, "action")],
  ["ListAuditEvents: organization_id with a bang", g((c) => c.admin.listAuditEvents({ organizationId: "x!" }), Code.InvalidArgument, "organization_id")],
  ["ListAuditEvents: credential_id not a UUID", g((c) => c.admin.listAuditEvents({ credentialId: "x" }), Code.InvalidArgument, "credential_id")],
  ["ListAuditEvents: page_size -1", g((c) => c.admin.listAuditEvents({ pageSize: -1 }), Code.InvalidArgument, "page_size")],
  ["ListAuditEvents: page_token holding a word", g((c) => c.admin.listAuditEvents({ pageToken: b64(["abc"]) }), Code.InvalidArgument, "page_token")],
  ["ListAuditEvents: page_token forged", g((c) => c.admin.listAuditEvents({ pageToken: b64(["5"]) }), Code.InvalidArgument, "page_token")],
  [
    "ListAuditEvents: page_token signed, holding an id of 2^63",
    g((c) => c.admin.listAuditEvents({ pageToken: ids.auditOverflowCursor }), Code.InvalidArgument, "page_token"),
  ],
  [
    "CreateApiToken: name holding a key",
    g((c) => c.admin.createApiToken({ name: "sk-4fQ9zLm2Xc8Rt1Vb7Nk3Pq6Ws", scope: "resolve" }), Code.InvalidArgument, "name"),
  ],
  [
    "SignIn: a source with a space",
    g((c) => c.admin.signIn({ email: "a@example.com", password: "whatever-password", source: "1.2.3.4 5.6.7.8" }), Code.InvalidArgument, "source"),
  ],
  ["GetSession: garbage", g((c) => c.admin.getSession({ sessionToken: "garbage" }), Code.Unauthenticated, /session/)],
  [
    "Reauthenticate: garbage session",
    g((c) => c.admin.reauthenticate({ sessionToken: "garbage", password: "whatever-password" }), Code.Unauthenticated, /session/),
  ],
  ["ResetTwoFactor: email not an email", g((c) => c.admin.resetTwoFactor({ email: "new" }), Code.InvalidArgument, "email")],
  ["ResetTwoFactor: email empty", g((c) => c.admin.resetTwoFactor({ email: "" }), Code.InvalidArgument, "email")],
  ["CreateAdmin: role empty", g((c) => c.admin.createAdmin({ email: "new@example.com", role: "" }), Code.InvalidArgument, "role")],
  ["CreateAdmin: role root", g((c) => c.admin.createAdmin({ email: "new@example.com", role: "root" }), Code.InvalidArgument, "role")],
  ["CreateAdmin: email not an email", g((c) => c.admin.createAdmin({ email: "new", role: "viewer" }), Code.InvalidArgument, "email")],
  [
    "CreateAdmin: organization_ids[1] with a bang",
    g((c) => c.admin.createAdmin({ email: "new@example.com", role: "viewer", organizationIds: [ORG, "x!"] }), Code.InvalidArgument, "organization_ids[1]"),
  ],
  [
    "CreateAdmin: an owner limited to organisations",
    g((c) => c.admin.createAdmin({ email: "new@example.com", role: "owner", organizationIds: [ORG] }), Code.InvalidArgument, "organization_ids"),
  ],
  [
    "CreateAdmin: a weak password",
    g((c) => c.admin.createAdmin({ email: "new@example.com", role: "viewer", password: "aaaaaaaaaaaa" }), Code.InvalidArgument, "password"),
  ],
  ["UpdateAdmin: email empty", g((c) => c.admin.updateAdmin({ email: "", role: "viewer" }), Code.InvalidArgument, "email")],
  ["UpdateAdmin: role boss", g((c) => c.admin.updateAdmin({ email: "new@example.com", role: "boss" }), Code.InvalidArgument, "role")],
  ["DeleteAdmin: email not an email", g((c) => c.admin.deleteAdmin({ email: "x" }), Code.InvalidArgument, "email")],
  ["RevokeAdminSessions: email empty", g((c) => c.admin.revokeAdminSessions({ email: "" }), Code.InvalidArgument, "email")],
  [
    "ChangePassword: garbage session",
    g((c) => c.admin.changePassword({ sessionToken: "garbage", currentPassword: "x", newPassword: "y" }), Code.Unauthenticated, /session/),
  ],
  ["no token", g((c) => c.credentials.listCredentials({ organizationId: ORG }), Code.Unauthenticated, /authorization/, "none")],
  ["an unknown token", g((c) => c.organizations.listOrganizations({}), Code.Unauthenticated, /token/, "unknown")],
  ["a resolve token creating a credential", g((c) => c.credentials.createCredential(createReq()), Code.PermissionDenied, /scope/, "resolve")],
  ["a resolve token listing tokens", g((c) => c.admin.listApiTokens({}), Code.PermissionDenied, /scope/, "resolve")],
  ["CreateCredential: weight -1", g((c) => c.credentials.createCredential(createReq({ weight: -1 })), Code.InvalidArgument, "weight")],
  ["CreateCredential: weight 1001", g((c) => c.credentials.createCredential(createReq({ weight: 1001 })), Code.InvalidArgument, "weight")],
  [
    "UpdateCredential: weight -2147483648",
    g((c) => c.credentials.updateCredential({ credentialId: ids.cred, weight: -2147483648 }), Code.InvalidArgument, "weight"),
  ],
  ["VerifyCredential: credential_id empty", g((c) => c.credentials.verifyCredential({ credentialId: "" }), Code.InvalidArgument, "credential_id")],
  ["VerifyCredential: credential_id is SQL", g((c) => c.credentials.verifyCredential({ credentialId: "' or 1=1 --" }), Code.InvalidArgument, "credential_id")],
  ["VerifyCredential: unknown credential", g((c) => c.credentials.verifyCredential({ credentialId: UNKNOWN_UUID }), Code.NotFound, /not found/)],
  ["ReportKeyFailure: kind unspecified", g((c) => c.credentials.reportKeyFailure({ credentialId: ids.cred }), Code.InvalidArgument, "kind")],
  ["ReportKeyFailure: kind 42", g((c) => c.credentials.reportKeyFailure({ credentialId: ids.cred, kind: 42 as FailureKind }), Code.InvalidArgument, "kind")],
  [
    "ReportKeyFailure: credential_id with a NUL",
    g((c) => c.credentials.reportKeyFailure({ credentialId: "\u0000", kind: FailureKind.QUOTA }), Code.InvalidArgument, "credential_id"),
  ],
  [
    "ReportKeyFailure: unknown credential",
    g((c) => c.credentials.reportKeyFailure({ credentialId: UNKNOWN_UUID, kind: FailureKind.QUOTA }), Code.NotFound, /not found/),
  ],
  ["ReportKeySuccess: no ids", g((c) => c.credentials.reportKeySuccess({ credentialIds: [] }), Code.InvalidArgument, "credential_ids")],
  [
    "ReportKeySuccess: 1001 ids",
    g((c) => c.credentials.reportKeySuccess({ credentialIds: Array<string>(1001).fill(UNKNOWN_UUID) }), Code.InvalidArgument, "credential_ids"),
  ],
  [
    "ReportKeySuccess: one id malformed",
    g((c) => c.credentials.reportKeySuccess({ credentialIds: [UNKNOWN_UUID, "🔑"] }), Code.InvalidArgument, "credential_ids[1]"),
  ],
  [
    "ReportKeySuccess: a resolve token, an overlong id",
    g((c) => c.credentials.reportKeySuccess({ credentialIds: ["a".repeat(10_000)] }), Code.InvalidArgument, "credential_ids[0]", "resolve"),
  ],
  [
    "BatchCredentialAction: action unspecified",
    g((c) => c.credentials.batchCredentialAction({ credentialIds: [UNKNOWN_UUID] }), Code.InvalidArgument, "action"),
  ],
  [
    "BatchCredentialAction: action out of range",
    g((c) => c.credentials.batchCredentialAction({ action: 42 as CredentialAction, credentialIds: [UNKNOWN_UUID] }), Code.InvalidArgument, "action"),
  ],
  [
    "BatchCredentialAction: no ids",
    g((c) => c.credentials.batchCredentialAction({ action: CredentialAction.DELETE, credentialIds: [] }), Code.InvalidArgument, "credential_ids"),
  ],
  [
    "BatchCredentialAction: 201 ids",
    g(
      (c) =>
        c.credentials.batchCredentialAction({
          action: CredentialAction.DELETE,
          credentialIds: Array.from({ length: 201 }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`),
        }),
      Code.InvalidArgument,
      "credential_ids",
    ),
  ],
  [
    "BatchCredentialAction: one id malformed",
    g(
      (c) => c.credentials.batchCredentialAction({ action: CredentialAction.DELETE, credentialIds: [ids.cred, "🔑"] }),
      Code.InvalidArgument,
      "credential_ids[1]",
    ),
  ],
  [
    "BatchCredentialAction: an id twice",
    g(
      (c) => c.credentials.batchCredentialAction({ action: CredentialAction.DELETE, credentialIds: [ids.cred, ids.cred.toUpperCase()] }),
      Code.InvalidArgument,
      "credential_ids[1]",
    ),
  ],
  [
    "BatchCredentialAction: a known id and an unknown one (nothing deleted)",
    g(
      (c) => c.credentials.batchCredentialAction({ action: CredentialAction.DELETE, credentialIds: [ids.cred, UNKNOWN_UUID] }),
      Code.NotFound,
      "credential_ids[1]",
    ),
  ],
  [
    "BatchCredentialAction: a resolve token",
    g(
      (c) => c.credentials.batchCredentialAction({ action: CredentialAction.DELETE, credentialIds: [ids.cred] }),
      Code.PermissionDenied,
      /may not call/,
      "resolve",
    ),
  ],
  ["SearchCredentials: negative page_size", g((c) => c.credentials.searchCredentials({ pageSize: -1 }), Code.InvalidArgument, "page_size")],
  ["SearchCredentials: negative offset", g((c) => c.credentials.searchCredentials({ offset: -1 }), Code.InvalidArgument, "offset")],
  ["SearchCredentials: query of 201 characters", g((c) => c.credentials.searchCredentials({ query: "q".repeat(201) }), Code.InvalidArgument, "query")],
  [
    "SearchCredentials: malformed organization_id",
    g((c) => c.credentials.searchCredentials({ organizationId: "a b" }), Code.InvalidArgument, "organization_id"),
  ],
  ["ListUncoveredOrganizations: negative offset", g((c) => c.credentials.listUncoveredOrganizations({ offset: -3 }), Code.InvalidArgument, "offset")],
  [
    "DeleteOrganization: cascade, malformed id",
    g((c) => c.organizations.deleteOrganization({ organizationId: "a/b", cascade: true }), Code.InvalidArgument, "organization_id"),
  ],
  [
    "DeleteOrganization: cascade, unknown organisation",
    g((c) => c.organizations.deleteOrganization({ organizationId: "never-existed", cascade: true }), Code.NotFound, /not found/),
  ],
  [
    "SetSelectionStrategy: strategy unspecified",
    g((c) => c.credentials.setSelectionStrategy({ organizationId: ORG, provider: Provider.OPENAI }), Code.InvalidArgument, "strategy"),
  ],
  [
    "SetSelectionStrategy: strategy 7",
    g(
      (c) => c.credentials.setSelectionStrategy({ organizationId: ORG, provider: Provider.OPENAI, strategy: 7 as SelectionStrategy }),
      Code.InvalidArgument,
      "strategy",
    ),
  ],
  [
    "SetSelectionStrategy: provider unspecified",
    g((c) => c.credentials.setSelectionStrategy({ organizationId: ORG, strategy: SelectionStrategy.WEIGHTED }), Code.InvalidArgument, "provider"),
  ],
  [
    "SetSelectionStrategy: organization_id with HTML",
    g(
      (c) => c.credentials.setSelectionStrategy({ organizationId: "<b>x</b>", provider: Provider.OPENAI, strategy: SelectionStrategy.WEIGHTED }),
      Code.InvalidArgument,
      "organization_id",
    ),
  ],
  [
    "SetSelectionStrategy: unknown organisation",
    g(
      (c) => c.credentials.setSelectionStrategy({ organizationId: "org-nobody", provider: Provider.OPENAI, strategy: SelectionStrategy.WEIGHTED }),
      Code.NotFound,
      /not found/,
    ),
  ],
  [
    "SetSelectionStrategy: a resolve token",
    g(
      (c) => c.credentials.setSelectionStrategy({ organizationId: ORG, provider: Provider.OPENAI, strategy: SelectionStrategy.WEIGHTED }),
      Code.PermissionDenied,
      /scope/,
      "resolve",
    ),
  ],
  [
    "ListSelectionStrategies: organization_id empty",
    g((c) => c.credentials.listSelectionStrategies({ organizationId: "" }), Code.InvalidArgument, "organization_id"),
  ],
  [
    "ListSelectionStrategies: unknown organisation",
    g((c) => c.credentials.listSelectionStrategies({ organizationId: "org-nobody" }), Code.NotFound, /not found/),
  ],
  [
    "a session header that is no session id",
    g((c) => c.organizations.listOrganizations({}), Code.InvalidArgument, "x-provider-credentials-session", {
      "x-provider-credentials-session": "not a session",
    }),
  ],
  [
    "an empty actor header",
    g((c) => c.credentials.createCredential(createReq()), Code.InvalidArgument, "x-provider-credentials-actor", { "x-provider-credentials-actor": "" }),
  ],
  [
    "an actor header holding a key",
    g((c) => c.credentials.createCredential(createReq()), Code.InvalidArgument, "x-provider-credentials-actor", { "x-provider-credentials-actor": KEY_SHAPED }),
  ],
  [
    "an overlong actor header",
    g((c) => c.credentials.createCredential(createReq()), Code.InvalidArgument, "x-provider-credentials-actor", {
      "x-provider-credentials-actor": "a".repeat(200),
    }),
  ],
];

// ---------------------------------------------------------------- raw grpc-js rows

interface RawRow {
  /** A method path, and the bytes of the request message (sent as they are). */
  path: string;
  bytes: () => Buffer;
  code: grpc.status;
  field?: string | RegExp;
}

/** The binary form of a message with one string field replaced by bytes that are not UTF-8. */
function withBrokenString(bytes: Uint8Array, text: string): Buffer {
  const buffer = Buffer.from(bytes);
  const at = buffer.indexOf(Buffer.from(text));
  buffer[at] = 0xff;
  buffer[at + 1] = 0xfe;
  return buffer;
}

const rawRows: Array<[string, RawRow]> = [
  [
    "CreateCredential with a credential_name that is not UTF-8",
    {
      path: "/credentials.v1.CredentialService/CreateCredential",
      bytes: () =>
        withBrokenString(
          toBinary(CreateCredentialRequestSchema, create(CreateCredentialRequestSchema, { ...createReq(), credentialName: "XXnot-utf8" })),
          "XX",
        ),
      code: grpc.status.INVALID_ARGUMENT,
      field: /^request: /,
    },
  ],
  [
    "CreateCredential with an api_key that is not UTF-8",
    {
      path: "/credentials.v1.CredentialService/CreateCredential",
      bytes: () =>
        withBrokenString(
          toBinary(CreateCredentialRequestSchema, create(CreateCredentialRequestSchema, { ...createReq(), apiKey: "sk-XXaaaaaaaaaaaaaaaa" })),
          "XX",
        ),
      code: grpc.status.INVALID_ARGUMENT,
      field: /^request: /,
    },
  ],
  [
    "CreateOrganization with a name that is not UTF-8",
    {
      path: "/credentials.v1.OrganizationService/CreateOrganization",
      bytes: () =>
        withBrokenString(toBinary(CreateOrganizationRequestSchema, create(CreateOrganizationRequestSchema, { organizationId: "org-new", name: "XX" })), "XX"),
      code: grpc.status.INVALID_ARGUMENT,
      field: /^request: /,
    },
  ],
  [
    "GetOrganization with a truncated message",
    {
      path: "/credentials.v1.OrganizationService/GetOrganization",
      bytes: () => Buffer.from([0x0a, 0x7f, 0x41]),
      code: grpc.status.INVALID_ARGUMENT,
      field: /^request: /,
    },
  ],
  [
    "GetOrganization with a wrong wire type",
    {
      path: "/credentials.v1.OrganizationService/GetOrganization",
      bytes: () => Buffer.from([0x08, 0x01]),
      code: grpc.status.INVALID_ARGUMENT,
      field: /^request: /,
    },
  ],
  [
    "ListCredentials with random bytes",
    {
      path: "/credentials.v1.CredentialService/ListCredentials",
      bytes: () => Buffer.from("ffffffffffffffffffff", "hex"),
      code: grpc.status.INVALID_ARGUMENT,
      field: /^request: /,
    },
  ],
  [
    "ResolveKey with an invalid tag",
    { path: "/credentials.v1.CredentialService/ResolveKey", bytes: () => Buffer.from([0x00, 0x00]), code: grpc.status.INVALID_ARGUMENT, field: /^request: / },
  ],
  [
    "an unknown method",
    { path: "/credentials.v1.CredentialService/ExportAllKeys", bytes: () => Buffer.alloc(0), code: grpc.status.UNIMPLEMENTED, field: /ExportAllKeys/ },
  ],
  ["an unknown service", { path: "/credentials.v2.CredentialService/GetCredential", bytes: () => Buffer.alloc(0), code: grpc.status.UNIMPLEMENTED }],
];

type LoadedClient = grpc.Client &
  Record<string, (request: object, metadata: grpc.Metadata, callback: (error: grpc.ServiceError | null, response: unknown) => void) => void>;

interface LoaderRow {
  method: string;
  request: Record<string, unknown>;
  code: grpc.status;
  field?: string | RegExp;
}

const loaderRows: Array<[string, LoaderRow]> = [
  [
    "CreateCredential with provider 42",
    {
      method: "CreateCredential",
      request: { organization_id: ORG, provider: 42, credential_name: "n", api_key: OPENAI },
      code: grpc.status.INVALID_ARGUMENT,
      field: "provider",
    },
  ],
  [
    "CreateCredential with an unknown provider name",
    {
      method: "CreateCredential",
      request: { organization_id: ORG, provider: "PROVIDER_MISTRAL", credential_name: "n", api_key: OPENAI },
      code: grpc.status.INVALID_ARGUMENT,
      field: "provider",
    },
  ],
  [
    "CreateCredential with camelCase fields only",
    {
      method: "CreateCredential",
      request: { organizationId: ORG, provider: "PROVIDER_OPENAI", credentialName: "n", apiKey: OPENAI },
      code: grpc.status.INVALID_ARGUMENT,
      field: "organization_id",
    },
  ],
  [
    "CreateCredential with an unknown api_key field",
    {
      method: "CreateCredential",
      request: { organization_id: ORG, provider: "PROVIDER_OPENAI", credential_name: "n", key: OPENAI },
      code: grpc.status.INVALID_ARGUMENT,
      field: "api_key",
    },
  ],
  [
    "ListCredentials with page_size -5",
    { method: "ListCredentials", request: { organization_id: ORG, page_size: -5 }, code: grpc.status.INVALID_ARGUMENT, field: "page_size" },
  ],
  ["ResolveKey with no scope", { method: "ResolveKey", request: { provider: "PROVIDER_OPENAI" }, code: grpc.status.INVALID_ARGUMENT, field: "scope" }],
  [
    "UpdateCredential with expected_version -1",
    {
      method: "UpdateCredential",
      request: { credential_id: UNKNOWN_UUID, credential_name: "x", expected_version: -1 },
      code: grpc.status.INVALID_ARGUMENT,
      field: "expected_version",
    },
  ],
];

// ---------------------------------------------------------------- Connect-protocol rows (JSON over HTTP/2 on the Connect port)

interface ConnectRow {
  path: string;
  body: string | Buffer;
  contentType?: string;
  /** Default: the admin token. */
  token?: string | null;
  status: number;
  /** The Connect error code; none for a bare 415. */
  code?: string;
  field?: string | RegExp;
}

const CC = "/credentials.v1.CredentialService/CreateCredential";
const GO = "/credentials.v1.OrganizationService/GetOrganization";
const LO = "/credentials.v1.OrganizationService/ListOrganizations";
const LC = "/credentials.v1.CredentialService/ListCredentials";
const ccJson = (changes: Record<string, unknown> = {}) =>
  JSON.stringify({ organizationId: ORG, provider: "PROVIDER_OPENAI", credentialName: "fresh", apiKey: OPENAI, ...changes });

const connectRows: Array<[string, ConnectRow]> = [
  ["malformed JSON", { path: CC, body: '{"organizationId": ', status: 400, code: "invalid_argument", field: /JSON/ }],
  ["single-quoted JSON", { path: GO, body: "{'organizationId': 'org-bad'}", status: 400, code: "invalid_argument", field: /JSON/ }],
  ["an array body", { path: GO, body: "[]", status: 400, code: "invalid_argument", field: /GetOrganizationRequest/ }],
  ["a string body", { path: GO, body: '"org-bad"', status: 400, code: "invalid_argument", field: /GetOrganizationRequest/ }],
  ["a null body", { path: GO, body: "null", status: 400, code: "invalid_argument" }],
  ["an empty body", { path: CC, body: "", status: 400, code: "invalid_argument" }],
  ["a wrong type for organizationId", { path: GO, body: '{"organizationId": 5}', status: 400, code: "invalid_argument", field: /organization_id/ }],
  [
    "a duplicate key",
    { path: GO, body: '{"organizationId": "org-bad", "organizationId": "org-busy"}', status: 400, code: "invalid_argument", field: /organizationId/ },
  ],
  [
    "the same field twice under both names",
    { path: GO, body: '{"organizationId": "org-bad", "organization_id": "org-busy"}', status: 400, code: "invalid_argument", field: /organization_id/ },
  ],
  [
    "an unknown field instead of a required one",
    { path: CC, body: ccJson({ organizationId: undefined, organizationID: ORG }), status: 400, code: "invalid_argument", field: /organizationID/ },
  ],
  ["page_size 1e20", { path: LO, body: '{"pageSize": 1e20}', status: 400, code: "invalid_argument", field: /page_size/ }],
  ["page_size as a word", { path: LO, body: '{"pageSize": "ten"}', status: 400, code: "invalid_argument", field: /page_size/ }],
  ["page_size 1.5", { path: LO, body: '{"pageSize": 1.5}', status: 400, code: "invalid_argument", field: /page_size/ }],
  ["page_size -1", { path: LO, body: '{"pageSize": -1}', status: 400, code: "invalid_argument", field: "page_size" }],
  ["page_token with a NUL byte", { path: LO, body: JSON.stringify({ pageToken: cursorWithNul }), status: 400, code: "invalid_argument", field: "page_token" }],
  ["a provider typo", { path: CC, body: ccJson({ provider: "PROVIDER_OPENIA" }), status: 400, code: "invalid_argument", field: /provider/i }],
  [
    "a provider in lower case, as a list filter",
    { path: LC, body: JSON.stringify({ organizationId: ORG, provider: "openai" }), status: 400, code: "invalid_argument", field: /provider/i },
  ],
  [
    "an unknown field next to a valid request",
    { path: GO, body: JSON.stringify({ organizationId: ORG, colour: "blue" }), status: 400, code: "invalid_argument", field: /colour/ },
  ],
  ["provider 99", { path: CC, body: ccJson({ provider: 99 }), status: 400, code: "invalid_argument", field: "provider" }],
  [
    "expected_version as a word",
    {
      path: "/credentials.v1.CredentialService/UpdateCredential",
      body: JSON.stringify({ credentialId: UNKNOWN_UUID, expectedVersion: "one" }),
      status: 400,
      code: "invalid_argument",
      field: /expected_version/,
    },
  ],
  [
    "a NUL byte in a name",
    {
      path: "/credentials.v1.OrganizationService/CreateOrganization",
      body: JSON.stringify({ organizationId: "org-new", name: "a\u0000" }),
      status: 400,
      code: "invalid_argument",
      field: "name",
    },
  ],
  ["text/plain", { path: GO, body: '{"organizationId": "org-bad"}', contentType: "text/plain", status: 415 }],
  ["a form", { path: CC, body: "organizationId=org-bad", contentType: "application/x-www-form-urlencoded", status: 415 }],
  ["XML", { path: GO, body: "<organizationId>org-bad</organizationId>", contentType: "application/xml", status: 415 }],
  ["a 1 MB body", { path: CC, body: ccJson({ credentialName: "n".repeat(MB) }), status: 429, code: "resource_exhausted", field: /larger than/ }],
  ["no token", { path: LC, body: JSON.stringify({ organizationId: ORG }), token: null, status: 401, code: "unauthenticated", field: /authorization/ }],
  ["an unknown method", { path: "/credentials.v1.CredentialService/ExportAllKeys", body: "{}", status: 404 }],
];

// ---------------------------------------------------------------- transports

/** A POST over HTTP/1.1 (what curl without --http2-prior-knowledge and Python's urllib send) to the Connect port. */
function http1Post(port: number, path: string, body: string | Buffer, headers: Record<string, string>): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      { host: "127.0.0.1", port, path, method: "POST", headers: { ...headers, "content-length": String(Buffer.byteLength(body)) } },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }));
        response.on("error", reject);
      },
    );
    request.on("error", reject);
    request.end(body);
  });
}

function http2Post(
  port: number,
  path: string,
  body: string | Buffer,
  headers: Record<string, string>,
): Promise<{ status: number; headers: http2.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on("error", reject);
    const request = session.request({ ":method": "POST", ":path": path, ...headers });
    let status = 0;
    let responseHeaders: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    request.on("response", (h) => {
      status = Number(h[":status"]);
      responseHeaders = h;
    });
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      session.close();
      resolve({ status, headers: responseHeaders, text: Buffer.concat(chunks).toString("utf8") });
    });
    request.on("error", (error) => {
      session.close();
      reject(error);
    });
    request.end(body);
  });
}

function rawCall(path: string, bytes: Buffer): Promise<{ code: number; details: string }> {
  const client = new grpc.Client(t.address, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${t.adminToken}`);
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      bytes,
      metadata,
      (error) => {
        client.close();
        resolve(error ? { code: error.code, details: error.details } : { code: grpc.status.OK, details: "" });
      },
    );
  });
}

let loadedClient: LoadedClient;

function loaderCall(method: string, request: object): Promise<{ code: number; details: string }> {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${t.adminToken}`);
  return new Promise((resolve) => {
    loadedClient[method](request, metadata, (error) => resolve(error ? { code: error.code, details: error.details } : { code: grpc.status.OK, details: "" }));
  });
}

function expectNamesField(message: string, field: string | RegExp | undefined): void {
  if (field === undefined) return;
  if (typeof field === "string") expect(message, "the message names the field").toMatch(new RegExp(`^${field.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: `));
  else expect(message, "the message names what is wrong").toMatch(field);
}

// ---------------------------------------------------------------- setup

beforeAll(async () => {
  portal = await startTestPortal();
  t = portal.service;
  const { credentials, organizations } = t.clients();
  const admin = createClient(AdminService, t.transport("grpc", t.adminToken));
  await organizations.createOrganization({ organizationId: ORG, name: "Bad input" });
  await organizations.createTeam({ teamId: "team-bad", organizationId: ORG, name: "Team" });
  await organizations.createOrganization({ organizationId: "org-busy", name: "Busy" });
  await organizations.createTeam({ teamId: "team-busy", organizationId: "org-busy", name: "Team" });
  ids.cred = (await credentials.createCredential(createReq({ credentialName: "Existing" }))).credential!.credentialId;
  ids.proxy = (
    await credentials.createCredential(
      createReq({ credentialName: "Via proxy", apiKey: "custom-proxy-key-0123456789", apiBase: "https://proxy.example.com/v1" }),
    )
  ).credential!.credentialId;
  // Page tokens: signed ones the service would never make (made with its MASTER_KEY), and real ones altered.
  const pages = new PageTokens(createKeyring(t.masterKey));
  ids.year10000Cursor = pages.encode("credentials", ORG, [Date.UTC(10000, 0, 1), UNKNOWN_UUID]);
  ids.auditOverflowCursor = pages.encode("audit_events", "", [(2n ** 63n).toString()]);
  ids.otherOrgCursor = pages.encode("credentials", "org-busy", [Date.now(), UNKNOWN_UUID]);
  ids.foreignCursor = new PageTokens(createKeyring(generateMasterKey())).encode("credentials", ORG, [Date.now(), UNKNOWN_UUID]);
  const real = (await credentials.listCredentials({ organizationId: ORG, pageSize: 1 })).nextPageToken;
  expect(real).not.toBe("");
  const edited = Buffer.from(real, "base64url");
  edited[edited.length - 5] ^= 0x01;
  ids.editedCursor = edited.toString("base64url");
  ids.organizationsCursor = (await organizations.listOrganizations({ pageSize: 1 })).nextPageToken;
  await admin.createApiToken({ name: "tok-bad", scope: "resolve" });
  resolveToken = (await admin.createApiToken({ name: "tok-resolver", scope: "resolve" })).token;

  const tables = await t.db.query<{ tablename: string }>("select tablename from pg_tables where schemaname = 'public' order by tablename");
  expect(tables.map((r) => r.tablename)).toEqual(expect.arrayContaining(["api_tokens", "audit_events", "organizations", "provider_credentials", "teams"]));
  snapshotSql = tables
    .map(
      ({ tablename }) =>
        `select '${tablename}' as t, count(*)::int as n, md5(coalesce(string_agg(j, E'\\n' order by j), '')) as sum ` +
        `from (select (to_jsonb(x) - 'last_used_at' - 'last_seen_at' - 'use_count')::text as j from "${tablename}" x) r`,
    )
    .join(" union all ");

  const definition = protoLoader.loadSync(`${PROTO_DIR}credentials.proto`, {
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    keepCase: true,
    includeDirs: [PROTO_DIR],
  });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    credentials: { v1: { CredentialService: new (address: string, creds: grpc.ChannelCredentials) => LoadedClient } };
  };
  loadedClient = new pkg.credentials.v1.CredentialService(t.address, grpc.credentials.createInsecure());
});

afterAll(async () => {
  loadedClient?.close();
  await portal?.close();
});

// ---------------------------------------------------------------- the tables

describe(`REST: ${restRows.length} malformed requests`, () => {
  it.each(restRows)("%s", async (_name, row) => {
    let path = row.path;
    for (const [name, value] of Object.entries(ids)) path = path.replaceAll(`:${name}`, value);
    const headers: Record<string, string> = { ...row.headers };
    if (headers.origin === "(portal)") headers.origin = portal.url;
    if (row.contentType) headers["content-type"] = row.contentType;
    else if (row.raw !== undefined || row.bytes !== undefined) headers["content-type"] ??= "application/json";
    const token = row.token === "resolve" ? resolveToken : row.token;
    const payload = row.bytes ?? (row.raw !== undefined ? new TextEncoder().encode(row.raw) : undefined);
    const stream =
      row.streamed || row.bytes
        ? new ReadableStream<Uint8Array>({
            start(controller) {
              for (let i = 0; i < payload!.length; i += 16 * 1024) controller.enqueue(payload!.subarray(i, i + 16 * 1024));
              controller.close();
            },
          })
        : undefined;
    await expectNothingWritten(async () => {
      const response = await portal.request(row.method, path, {
        token,
        headers,
        ...(stream ? { stream } : row.raw !== undefined ? { rawBody: row.raw } : row.body !== undefined ? { body: row.body } : {}),
      });
      expect(response.status, response.text.slice(0, 500)).toBe(row.status);
      expectNoInternals(response.text);
      expect(response.headers.get("content-type")).toMatch(/^application\/json/);
      expect(response.headers.get("cache-control")).toBe("no-store");
      expect(response.json).toMatchObject({ code: row.code ?? CODE_BY_STATUS[row.status], message: expect.any(String) });
      expectNamesField(response.json.message, row.field);
      if (row.status === 400 && typeof row.field === "string" && row.field !== "body") {
        expect(response.json.issues, "issues name the field").toEqual(expect.arrayContaining([expect.objectContaining({ path: row.field })]));
      }
    });
  });
});

const clientCache = new Map<string, Clients>();

/** Clients on the gRPC port calling as the row says (one HTTP/2 connection per kind of caller). */
function clientsFor(as: GrpcRow["as"]): Clients {
  const key = JSON.stringify(as ?? "admin");
  let clients = clientCache.get(key);
  if (!clients) {
    const token = as === "none" ? undefined : as === "resolve" ? resolveToken : as === "unknown" ? "pc_not_a_real_token_0123456789" : t.adminToken;
    const transport = typeof as === "object" ? t.transport("grpc", t.adminToken) : t.transport("grpc", token);
    const withHeaders = typeof as === "object" ? t.clients(t.adminToken, as) : undefined;
    clients = {
      credentials: withHeaders?.credentials ?? createClient(CredentialService, transport),
      organizations: withHeaders?.organizations ?? createClient(OrganizationService, transport),
      admin: createClient(AdminService, transport),
    };
    clientCache.set(key, clients);
  }
  return clients;
}

describe(`gRPC (Connect-ES client on the gRPC port): ${grpcRows.length} malformed calls`, () => {
  it.each(grpcRows)("%s", async (_name, row) => {
    await expectNothingWritten(async () => {
      const error = await rpcError(row.call(clientsFor(row.as)));
      expect(error.code, `${Code[error.code]}: ${error.message}`).toBe(row.code);
      expect(error.code).not.toBe(Code.Internal);
      expect(error.code).not.toBe(Code.Unknown);
      expectNamesField(error.message, row.field);
      expectNoInternals(error.message);
    });
  });
});

describe(`gRPC (raw @grpc/grpc-js on the gRPC port): ${rawRows.length + loaderRows.length} malformed calls`, () => {
  it.each(rawRows)("bytes: %s", async (_name, row) => {
    await expectNothingWritten(async () => {
      const result = await rawCall(row.path, row.bytes());
      expect(result.code, result.details).toBe(row.code);
      expectNamesField(result.details, row.field);
      expectNoInternals(result.details);
    });
  });

  it.each(loaderRows)("proto-loader: %s", async (_name, row) => {
    await expectNothingWritten(async () => {
      const result = await loaderCall(row.method, row.request);
      expect(result.code, result.details).toBe(row.code);
      expectNamesField(result.details, row.field);
      expectNoInternals(result.details);
    });
  });
});

describe(`Connect protocol (JSON over HTTP/2 on the Connect port): ${connectRows.length} malformed posts`, () => {
  it.each(connectRows)("%s", async (_name, row) => {
    await expectNothingWritten(async () => {
      const headers: Record<string, string> = { "content-type": row.contentType ?? "application/json" };
      const token = row.token === undefined ? t.adminToken : row.token;
      if (token !== null) headers.authorization = `Bearer ${token}`;
      const response = await http2Post(t.service.connectPort, row.path, row.body, headers);
      expect(response.status, response.text.slice(0, 500)).toBe(row.status);
      if (row.code) {
        const json = JSON.parse(response.text) as { code: string; message: string };
        expect(json.code).toBe(row.code);
        expectNamesField(json.message, row.field);
      }
      expectNoInternals(response.text);
    });
  });
});

describe(`Connect protocol over HTTP/1.1 on the same port: the same ${connectRows.length} malformed posts, the same answers`, () => {
  it.each(connectRows)("%s", async (_name, row) => {
    await expectNothingWritten(async () => {
      const headers: Record<string, string> = { "content-type": row.contentType ?? "application/json" };
      const token = row.token === undefined ? t.adminToken : row.token;
      if (token !== null) headers.authorization = `Bearer ${token}`;
      const response = await http1Post(t.service.connectPort, row.path, row.body, headers);
      expect(response.status, response.text.slice(0, 500)).toBe(row.status);
      if (row.code) {
        const json = JSON.parse(response.text) as { code: string; message: string };
        expect(json.code).toBe(row.code);
        expectNamesField(json.message, row.field);
      }
      expectNoInternals(response.text);
    });
  });
});

describe("huge limits are capped, not refused", () => {
  beforeAll(async () => {
    // More organisations than the largest page.
    await t.db.query(
      "insert into organizations (id, name, created_at, updated_at) select 'zz-' || lpad(i::text, 3, '0'), 'bulk', now(), now() from generate_series(1, 205) as i",
    );
  });

  it.each([
    ["REST limit 201", "/api/organizations?limit=201"],
    ["REST limit 2^31", "/api/organizations?limit=2147483648"],
    ["REST limit 2^53 - 1", "/api/organizations?limit=9007199254740991"],
  ])("%s: 200 with a page of 200, nothing written", async (_name, path) => {
    await expectNothingWritten(async () => {
      const response = await portal.request("GET", path);
      expect(response.status, response.text).toBe(200);
      expect(response.json.organizations).toHaveLength(200);
      expect(response.json.next_cursor).toEqual(expect.any(String));
    });
  });

  it("gRPC page_size 2^31 - 1: a page of 200", async () => {
    await expectNothingWritten(async () => {
      const page = await t.clients().organizations.listOrganizations({ pageSize: 2 ** 31 - 1 });
      expect(page.organizations).toHaveLength(200);
      expect(page.nextPageToken).not.toBe("");
    });
  });
});

describe("after all of it", () => {
  it(`has at least 150 rows (${restRows.length + grpcRows.length + rawRows.length + loaderRows.length + connectRows.length})`, () => {
    expect(restRows.length + grpcRows.length + rawRows.length + loaderRows.length + connectRows.length).toBeGreaterThanOrEqual(150);
  });

  it("the checksum does see a write (a control for every row above)", async () => {
    await expect(
      expectNothingWritten(async () => {
        await t.db.query("update organizations set name = name || '.' where id = $1", [ORG]);
      }),
    ).rejects.toThrow(/changed the database/);
  });

  it("no server error was logged by the service or the portal", () => {
    const serviceErrors = t.logs.filter((line) => (JSON.parse(line) as { level: number }).level >= 50);
    expect(serviceErrors).toEqual([]);
    // pino's numeric levels, as the service's: 50 error, 60 fatal.
    expect(portal.output.filter((line) => /"level":(50|60)[,}]/.test(line))).toEqual([]);
  });
});
