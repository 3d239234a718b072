// The real service pieces (stores, RPC implementations, interceptors) served by
// the grpc-js adapter instead of connect-node, called by a plain @grpc/grpc-js
// client that knows only proto/*.proto and by a Connect-ES gRPC client (the
// portal's way).
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createTestDatabase, FAKE_KEYS, rpcError, type TestDatabase } from "../support/harness.js";
import { createOrm, migrate, type Orm } from "../../service/src/db/orm.js";
import { createLogger } from "../../service/src/logger.js";
import { generateMasterKey } from "../../service/src/keyring/keyring.js";
import { generateToken } from "../../service/src/auth/tokens.js";
import { createInternalGrpcServer, createParts, MAX_REQUEST_BYTES, type ServiceParts } from "../../service/src/server.js";
import { listenGrpcJsServer, shutdownGrpcJsServer } from "../../service/src/rpc/grpc-js-server.js";
import { CredentialService, OrganizationService, Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import { Health, HealthCheckResponse_ServingStatus as Status } from "@provider-credentials/wire/gen/grpc/health/v1/health_pb";
import { ServerReflection } from "@provider-credentials/wire/gen/grpc/reflection/v1/reflection_pb";

const PROTO_DIR = fileURLToPath(new URL("../../proto/", import.meta.url));
const LOADER_OPTIONS = { longs: String, enums: String, defaults: true, oneofs: true, keepCase: true, includeDirs: [PROTO_DIR] };
const SERVICES = [
  "credentials.v1.AdminService",
  "credentials.v1.CredentialService",
  "credentials.v1.OrganizationService",
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
];

type Callback = (error: grpc.ServiceError | null, response: unknown) => void;
type UnaryMethod = (request: object, metadata: grpc.Metadata, options: grpc.CallOptions, callback: Callback) => grpc.ClientUnaryCall;
type ServiceClient = grpc.Client &
  Record<string, UnaryMethod> & {
    Watch(request: object, metadata?: grpc.Metadata): grpc.ClientReadableStream<{ status: string }>;
    ServerReflectionInfo(metadata?: grpc.Metadata): grpc.ClientDuplexStream<object, Record<string, unknown>>;
  };
type ClientConstructor = new (address: string, credentials: grpc.ChannelCredentials) => ServiceClient;

function clientOf(file: string, service: string, address: string): ServiceClient {
  let node: unknown = grpc.loadPackageDefinition(protoLoader.loadSync(`${PROTO_DIR}${file}`, LOADER_OPTIONS));
  for (const part of service.split(".")) node = (node as Record<string, unknown>)[part];
  const client = new (node as ClientConstructor)(address, grpc.credentials.createInsecure());
  openClients.push(client);
  return client;
}

function bearer(token: string, extra: Record<string, string> = {}): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set("authorization", `Bearer ${token}`);
  for (const [k, v] of Object.entries(extra)) md.set(k, v);
  return md;
}

/** A unary call: the response, or the error with its trailers. */
function call<T = Record<string, unknown>>(
  client: ServiceClient,
  method: string,
  request: object,
  metadata = new grpc.Metadata(),
  deadlineMs = 10_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + deadlineMs }, (error, response) => (error ? reject(error) : resolve(response as T)));
  });
}

async function status(promise: Promise<unknown>): Promise<{ code: number; details: string; metadata: grpc.Metadata }> {
  try {
    await promise;
  } catch (error) {
    const e = error as grpc.ServiceError;
    return { code: e.code, details: e.details, metadata: e.metadata };
  }
  throw new Error("expected the call to fail, but it succeeded");
}

interface Running {
  server: grpc.Server;
  address: string;
  transport(token?: string, headers?: Record<string, string>): Transport;
}

/** The service's grpc-js server, as startService builds it. */
async function startAdapter(orm: Orm, parts: ServiceParts): Promise<Running> {
  const server = createInternalGrpcServer(orm, parts, logger);
  const port = await listenGrpcJsServer(server, "127.0.0.1", 0);
  const address = `127.0.0.1:${port}`;
  return {
    server,
    address,
    transport(token, headers = {}) {
      const auth: Interceptor = (next) => (req) => {
        if (token !== undefined) req.header.set("authorization", `Bearer ${token}`);
        for (const [k, v] of Object.entries(headers)) req.header.set(k, v);
        return next(req);
      };
      return createGrpcTransport({ baseUrl: `http://${address}`, interceptors: [auth] });
    },
  };
}

const logs: string[] = [];
const logger = createLogger(
  "debug",
  new Writable({
    write(chunk, _encoding, done) {
      logs.push(...String(chunk).split("\n").filter(Boolean));
      done();
    },
  }),
);
const openClients: grpc.Client[] = [];
const adminToken = generateToken();
let db: TestDatabase;
let orm: Orm;
let parts: ServiceParts;
let s: Running;
let admin: grpc.Metadata;
let credentials: ServiceClient;
let organizations: ServiceClient;

beforeAll(async () => {
  db = await createTestDatabase();
  orm = await createOrm({ databaseUrl: db.url, poolSize: 5 });
  await migrate(orm, db.url);
  parts = createParts(orm, { masterKey: generateMasterKey(), serviceAdminToken: adminToken, env: {} });
  s = await startAdapter(orm, parts);
  admin = bearer(adminToken);
  credentials = clientOf("credentials.proto", "credentials.v1.CredentialService", s.address);
  organizations = clientOf("credentials.proto", "credentials.v1.OrganizationService", s.address);
});
afterAll(async () => {
  for (const client of openClients) client.close();
  if (s) await shutdownGrpcJsServer(s.server, 5_000);
  await parts?.resolver.flushUsage();
  await orm?.close(true);
  await db?.drop();
});

describe("a plain grpc-js client (proto-loader, snake_case)", () => {
  const key = FAKE_KEYS.anthropic();
  let credentialId = "";

  it("creates an organisation, a team and a credential; the caller's address reaches the audit log", async () => {
    const org = await call<{ organization: Record<string, unknown> }>(
      organizations,
      "CreateOrganization",
      { organization_id: "gj-org", name: "grpc-js Org" },
      admin,
    );
    expect(org.organization).toMatchObject({ organization_id: "gj-org", name: "grpc-js Org" });
    await call(organizations, "CreateTeam", { team_id: "gj-team", organization_id: "gj-org", name: "Team" }, admin);
    const created = await call<{ credential: Record<string, unknown> }>(
      credentials,
      "CreateCredential",
      { organization_id: "gj-org", provider: "PROVIDER_ANTHROPIC", credential_name: "Claude", api_key: key },
      admin,
    );
    expect(created.credential).toMatchObject({
      organization_id: "gj-org",
      provider: "PROVIDER_ANTHROPIC",
      is_active: true,
      version: 1,
      created_by: "token:service-admin-token",
    });
    expect(JSON.stringify(created)).not.toContain(key);
    credentialId = String(created.credential.credential_id);
    // sourceKey comes from the peer address, without "ipv4:" and port.
    const audit = await db.query<{ actor: string; source: string }>(
      "select actor, source from audit_events where action = 'credential.create' and credential_id = $1",
      [credentialId],
    );
    expect(audit).toEqual([{ actor: "token:service-admin-token", source: "127.0.0.1" }]);
  });

  it("request metadata reaches the interceptors: the actor header names who acts", async () => {
    const res = await call<{ credential: Record<string, unknown> }>(
      credentials,
      "CreateCredential",
      { organization_id: "gj-org", provider: "PROVIDER_OPENAI", credential_name: "OpenAI", api_key: FAKE_KEYS.openai() },
      bearer(adminToken, { "x-provider-credentials-actor": "alice@example.com" }),
    );
    expect(res.credential.created_by).toBe("alice@example.com");
  });

  it("ResolveKey by organisation and by team, with the admin token and with a resolve-scope token", async () => {
    const byOrg = await call(credentials, "ResolveKey", { organization_id: "gj-org", provider: "PROVIDER_ANTHROPIC" }, admin);
    expect(byOrg).toMatchObject({ api_key: key, source: "KEY_SOURCE_ORGANIZATION", credential_id: credentialId, organization_id: "gj-org" });
    const { token } = await parts.tokens.create("gj-gateway", "resolve", "test");
    const byTeam = await call(credentials, "ResolveKey", { team_id: "gj-team", provider: "PROVIDER_ANTHROPIC" }, bearer(token));
    expect(byTeam).toMatchObject({ api_key: key, source: "KEY_SOURCE_ORGANIZATION", credential_id: credentialId, organization_id: "gj-org" });
  });

  it("UNAUTHENTICATED without a token or with a wrong one; PERMISSION_DENIED for a resolve token on an admin RPC", async () => {
    const none = await status(call(organizations, "ListOrganizations", {}));
    expect(none).toMatchObject({
      code: grpc.status.UNAUTHENTICATED,
      details: 'missing or malformed authorization header; send "authorization: Bearer <token>"',
    });
    expect(await status(call(credentials, "ResolveKey", { organization_id: "gj-org", provider: "PROVIDER_ANTHROPIC" }, bearer("garbage")))).toMatchObject({
      code: grpc.status.UNAUTHENTICATED,
      details: "invalid or revoked token",
    });
    const { token } = await parts.tokens.create("gj-resolver", "resolve", "test");
    expect(await status(call(credentials, "ListCredentials", { organization_id: "gj-org" }, bearer(token)))).toMatchObject({
      code: grpc.status.PERMISSION_DENIED,
      details: 'token "gj-resolver" has scope "resolve", which may not call ListCredentials',
    });
    expect(await status(call(organizations, "CreateOrganization", { organization_id: "nope", name: "x" }, bearer(token)))).toMatchObject({
      code: grpc.status.PERMISSION_DENIED,
    });
  });

  it("domain errors arrive with their code and message intact (colons, commas, quotes, %, non-ASCII)", async () => {
    expect(await status(call(organizations, "GetOrganization", { organization_id: "nope" }, admin))).toMatchObject({
      code: grpc.status.NOT_FOUND,
      details: 'organization "nope" not found',
    });
    const invalid = await status(
      call(
        credentials,
        "CreateCredential",
        { organization_id: "gj-org", provider: "PROVIDER_ANTHROPIC", credential_name: "Bad", api_key: "sk-proj-not-anthropic" },
        admin,
      ),
    );
    expect(invalid.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(invalid.details).toMatch(/^api_key: Anthropic keys start with "sk-ant-"/);
    expect(await status(call(credentials, "ResolveKey", { provider: "PROVIDER_ANTHROPIC" }, admin))).toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: "scope: set organization_id or team_id",
    });
    expect(await status(call(credentials, "ResolveKey", { organization_id: "gj-org", provider: "PROVIDER_GEMINI" }, admin))).toMatchObject({
      code: grpc.status.FAILED_PRECONDITION,
      details: expect.stringMatching(/^organization "gj-org" has no active .*Gemini credential and GEMINI_API_KEY.* is not set$/),
    });

    const name = "Zürich 100%41, ok? a/b #1 ✓ 日本";
    const request = { organization_id: "gj-org", provider: "PROVIDER_ANTHROPIC", credential_name: name, api_key: FAKE_KEYS.anthropic() };
    await call(credentials, "CreateCredential", request, admin);
    const expected = `credential_name: a credential named "${name}" already exists for this organization and provider`;
    expect(await status(call(credentials, "CreateCredential", { ...request, api_key: FAKE_KEYS.anthropic() }, admin))).toMatchObject({
      code: grpc.status.ALREADY_EXISTS,
      details: expected,
    });
    const viaConnect = createClient(CredentialService, s.transport(adminToken));
    expect(
      await rpcError(
        viaConnect.createCredential({ organizationId: "gj-org", provider: Provider.ANTHROPIC, credentialName: name, apiKey: FAKE_KEYS.anthropic() }),
      ),
    ).toEqual({
      code: Code.AlreadyExists,
      message: expected,
    });
  });

  it("a request larger than the limit is RESOURCE_EXHAUSTED", async () => {
    const big = await status(call(organizations, "CreateOrganization", { organization_id: "big", name: "x".repeat(MAX_REQUEST_BYTES + 1) }, admin));
    expect(big.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
  });

  it("an unknown method is UNIMPLEMENTED", async () => {
    const client = new grpc.Client(s.address, grpc.credentials.createInsecure());
    openClients.push(client);
    const result = await status(
      new Promise((resolve, reject) =>
        client.makeUnaryRequest(
          "/credentials.v1.CredentialService/NoSuchMethod",
          () => Buffer.alloc(0),
          (b) => b,
          {},
          admin,
          (e, r) => (e ? reject(e) : resolve(r)),
        ),
      ),
    );
    expect(result.code).toBe(grpc.status.UNIMPLEMENTED);
  });
});

describe("a Connect-ES client over gRPC (the portal's way)", () => {
  it("creates and resolves through the same implementations", async () => {
    const orgs = createClient(OrganizationService, s.transport(adminToken));
    const creds = createClient(CredentialService, s.transport(adminToken));
    await orgs.createOrganization({ organizationId: "connect-org", name: "Connect" });
    const key = FAKE_KEYS.fireworks();
    await creds.createCredential({
      organizationId: "connect-org",
      provider: Provider.FIREWORKS,
      credentialName: "FW",
      apiKey: key,
      apiBase: "https://proxy.example.com/v1",
    });
    const resolved = await creds.resolveKey({ scope: { case: "organizationId", value: "connect-org" }, provider: Provider.FIREWORKS });
    expect(resolved).toMatchObject({ apiKey: key, apiBase: "https://proxy.example.com/v1", organizationId: "connect-org" });
    expect(await rpcError(createClient(OrganizationService, s.transport()).listOrganizations({}))).toMatchObject({ code: Code.Unauthenticated });
  });

  it("health Check answers without a token, even with a bad one; unknown services are NOT_FOUND", async () => {
    expect((await createClient(Health, s.transport()).check({ service: "" })).status).toBe(Status.SERVING);
    expect((await createClient(Health, s.transport("garbage")).check({ service: "credentials.v1.CredentialService" })).status).toBe(Status.SERVING);
    expect(await rpcError(createClient(Health, s.transport()).check({ service: "no.such.Service" }))).toEqual({
      code: Code.NotFound,
      message: "Health status unknown for service no.such.Service",
    });
    const health = clientOf("grpc/health/v1/health.proto", "grpc.health.v1.Health", s.address);
    expect(await call(health, "Check", { service: "" })).toEqual({ status: "SERVING" });
  });

  it("reflection list_services over Connect and over grpc-js; UNAUTHENTICATED without a token", async () => {
    async function* listServices() {
      yield { messageRequest: { case: "listServices" as const, value: "" } };
    }
    const responses = [];
    for await (const r of createClient(ServerReflection, s.transport(adminToken)).serverReflectionInfo(listServices())) responses.push(r);
    expect(responses).toHaveLength(1);
    const names = responses[0].messageResponse.case === "listServicesResponse" ? responses[0].messageResponse.value.service.map((x) => x.name) : [];
    expect([...names].sort()).toEqual(SERVICES);

    const denied = createClient(ServerReflection, s.transport()).serverReflectionInfo(listServices());
    expect(
      await rpcError(
        (async () => {
          for await (const _ of denied) void _;
        })(),
      ),
    ).toMatchObject({ code: Code.Unauthenticated });

    // grpc-js bidi: several requests on one stream, answered in order.
    const reflection = clientOf("grpc/reflection/v1/reflection.proto", "grpc.reflection.v1.ServerReflection", s.address);
    const stream = reflection.ServerReflectionInfo(admin);
    const received: Array<Record<string, unknown>> = [];
    const done = new Promise<void>((resolve, reject) => {
      stream.on("data", (d) => received.push(d));
      stream.on("error", reject);
      stream.on("end", resolve);
    });
    stream.write({ list_services: "" });
    stream.write({ file_containing_symbol: "credentials.v1.CredentialService" });
    stream.write({ file_by_filename: "nope.proto" });
    stream.end();
    await done;
    expect(received.map((r) => r.message_response)).toEqual(["list_services_response", "file_descriptor_response", "error_response"]);
    expect(received[2].error_response).toEqual({ error_code: 5, error_message: "Proto file not found: nope.proto" });
  });

  it("RESOURCE_EXHAUSTED after 10 failed sign-ins, with the retry-after trailer, for grpc-js and Connect", async () => {
    await parts.admins.create("bob@example.com", "correct horse battery staple", { actor: "test", source: null });
    const adminClient = clientOf("admin.proto", "credentials.v1.AdminService", s.address);
    const signedIn = await call<{ session_token: string }>(
      adminClient,
      "SignIn",
      { email: "bob@example.com", password: "correct horse battery staple", source: "198.51.100.1" },
      admin,
    );
    expect(signedIn.session_token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    for (let i = 0; i < 10; i++) {
      const failed = await status(call(adminClient, "SignIn", { email: "bob@example.com", password: `wrong ${i}`, source: "198.51.100.1" }, admin));
      expect(failed).toMatchObject({ code: grpc.status.UNAUTHENTICATED, details: "invalid email or password" });
      expect(failed.metadata.get("retry-after")).toEqual([]);
    }
    const limited = await status(call(adminClient, "SignIn", { email: "bob@example.com", password: "wrong again", source: "198.51.100.1" }, admin));
    expect(limited.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(limited.details).toBe("too many failed sign-ins; try again in 15 minutes");
    const [retryAfter] = limited.metadata.get("retry-after");
    expect(Number(retryAfter)).toBeGreaterThan(800);
    expect(Number(retryAfter)).toBeLessThanOrEqual(900);

    const viaConnect = await createClient(AdminService, s.transport(adminToken))
      .signIn({ email: "bob@example.com", password: "wrong", source: "198.51.100.1" })
      .then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    expect(viaConnect?.code).toBe(Code.ResourceExhausted);
    expect(viaConnect?.rawMessage).toBe("too many failed sign-ins; try again in 15 minutes");
    expect(Number(viaConnect?.metadata.get("retry-after"))).toBeGreaterThan(800);
  });

  it("logs nothing at error level for domain errors", () => {
    expect(logs.filter((l) => JSON.parse(l).level >= 50)).toEqual([]);
  });
});

describe("health Watch (server streaming)", () => {
  it("streams SERVING, then NOT_SERVING on change, and ends when the client cancels", async () => {
    const own = createParts(orm, { masterKey: generateMasterKey(), serviceAdminToken: adminToken, env: {} });
    const w = await startAdapter(orm, own);
    try {
      // Connect client
      const abort = new AbortController();
      const watch = createClient(Health, w.transport()).watch({ service: "" }, { signal: abort.signal })[Symbol.asyncIterator]();
      expect((await watch.next()).value?.status).toBe(Status.SERVING);

      // grpc-js client
      const health = clientOf("grpc/health/v1/health.proto", "grpc.health.v1.Health", w.address);
      const stream = health.Watch({ service: "credentials.v1.CredentialService" });
      const statuses: string[] = [];
      const ended = new Promise<grpc.StatusObject>((resolve) => {
        stream.on("error", () => undefined);
        stream.on("status", resolve);
      });
      const seen = (n: number) =>
        new Promise<void>((resolve) => {
          const check = () => statuses.length >= n && resolve();
          stream.on("data", (d) => {
            statuses.push(d.status);
            check();
          });
          check();
        });
      await seen(1);
      expect(statuses).toEqual(["SERVING"]);

      own.health.setNotServing();
      expect((await watch.next()).value?.status).toBe(Status.NOT_SERVING);
      await seen(2);
      expect(statuses).toEqual(["SERVING", "NOT_SERVING"]);

      // A cancelled watch is gone on the server: shutdown does not wait for it.
      stream.cancel();
      expect((await ended).code).toBe(grpc.status.CANCELLED);
      abort.abort();
      await expect(watch.next()).rejects.toThrow();

      // At shutdown a watch still open hears NOT_SERVING again only if it changed, and ends with OK.
      const late = health.Watch({ service: "" });
      const lateStatuses: string[] = [];
      late.on("data", (d) => lateStatuses.push(d.status));
      const lateEnded = new Promise<grpc.StatusObject>((resolve) => {
        late.on("error", () => undefined);
        late.on("status", resolve);
      });
      await vi.waitFor(() => expect(lateStatuses).toEqual(["NOT_SERVING"]));
      own.health.shutDown();
      expect((await lateEnded).code).toBe(grpc.status.OK);
      expect(await shutdownGrpcJsServer(w.server, 5_000)).toBe("graceful");
    } finally {
      w.server.forceShutdown();
    }
  });
});

describe("deadlines and shutdown (calls held up by a locked table)", () => {
  /** A fresh organisation with a credential: its first ResolveKey is not in the resolution cache and reads the database. */
  async function freshOrganization(id: string): Promise<void> {
    await call(organizations, "CreateOrganization", { organization_id: id, name: id }, admin);
    await call(
      credentials,
      "CreateCredential",
      { organization_id: id, provider: "PROVIDER_ANTHROPIC", credential_name: "Claude", api_key: FAKE_KEYS.anthropic() },
      admin,
    );
  }

  /** Holds an exclusive lock on organizations, so ResolveKey by organisation waits. */
  async function lockOrganizations(): Promise<() => Promise<void>> {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    await client.query("begin");
    await client.query("lock table organizations in access exclusive mode");
    return async () => {
      await client.query("rollback");
      await client.end();
    };
  }

  it("a client deadline reaches the server: DEADLINE_EXCEEDED for grpc-js and Connect clients", async () => {
    await freshOrganization("lock-1");
    const unlock = await lockOrganizations();
    try {
      const started = Date.now();
      const expired = await status(call(credentials, "ResolveKey", { organization_id: "lock-1", provider: "PROVIDER_ANTHROPIC" }, admin, 300));
      expect(expired.code).toBe(grpc.status.DEADLINE_EXCEEDED);
      expect(Date.now() - started).toBeLessThan(3_000);
      const viaConnect = createClient(CredentialService, s.transport(adminToken));
      expect(
        (await rpcError(viaConnect.resolveKey({ scope: { case: "organizationId", value: "lock-1" }, provider: Provider.ANTHROPIC }, { timeoutMs: 300 }))).code,
      ).toBe(Code.DeadlineExceeded);
    } finally {
      await unlock();
    }
    // The service still answers afterwards.
    expect(await call(credentials, "ResolveKey", { organization_id: "lock-1", provider: "PROVIDER_ANTHROPIC" }, admin)).toMatchObject({
      organization_id: "lock-1",
    });
  });

  it("graceful shutdown lets a call in flight finish and refuses new ones", async () => {
    await freshOrganization("lock-2");
    const g = await startAdapter(orm, parts);
    const creds = clientOf("credentials.proto", "credentials.v1.CredentialService", g.address);
    const health = clientOf("grpc/health/v1/health.proto", "grpc.health.v1.Health", g.address);
    expect(await call(health, "Check", { service: "" })).toEqual({ status: "SERVING" });
    const unlock = await lockOrganizations();
    let unlocked = false;
    try {
      const inFlight = call(creds, "ResolveKey", { organization_id: "lock-2", provider: "PROVIDER_ANTHROPIC" }, admin);
      await new Promise((r) => setTimeout(r, 200)); // the call reaches the server and waits on the lock
      const shutdown = shutdownGrpcJsServer(g.server, 10_000);
      await new Promise((r) => setTimeout(r, 100));
      // New calls are refused (GOAWAY on the open connection, nothing listening for new ones).
      expect((await status(call(health, "Check", { service: "" }, new grpc.Metadata(), 2_000))).code).toBeOneOf([
        grpc.status.UNAVAILABLE,
        grpc.status.DEADLINE_EXCEEDED,
      ]);
      await unlock();
      unlocked = true;
      expect(await inFlight).toMatchObject({ organization_id: "lock-2", source: "KEY_SOURCE_ORGANIZATION" });
      expect(await shutdown).toBe("graceful");
    } finally {
      if (!unlocked) await unlock();
      g.server.forceShutdown();
    }
  });

  it("shutdown cancels calls still running after the timeout", async () => {
    await freshOrganization("lock-3");
    const g = await startAdapter(orm, parts);
    const creds = clientOf("credentials.proto", "credentials.v1.CredentialService", g.address);
    const unlock = await lockOrganizations();
    try {
      const inFlight = status(call(creds, "ResolveKey", { organization_id: "lock-3", provider: "PROVIDER_ANTHROPIC" }, admin));
      await new Promise((r) => setTimeout(r, 200));
      expect(await shutdownGrpcJsServer(g.server, 300)).toBe("forced");
      expect((await inFlight).code).toBeOneOf([grpc.status.CANCELLED, grpc.status.UNAVAILABLE, grpc.status.INTERNAL]);
    } finally {
      await unlock();
    }
  });
});
