// grpc.health.v1 (no token needed, so that load balancers can probe) and
// grpc.reflection.v1 (token needed; lets grpcurl / buf curl work without protos).
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create, createFileRegistry, fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { Code, createClient, createHandlerContext } from "@connectrpc/connect";
import { startTestService, FAKE_KEYS, rpcError, type TestService } from "../support/harness.js";
import { TokenStore } from "../../service/src/auth/token-store.js";
import { CredentialService, Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { Health, HealthCheckRequestSchema, HealthCheckResponse_ServingStatus as Status } from "@provider-credentials/wire/gen/grpc/health/v1/health_pb";
import {
  ServerReflection,
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
} from "@provider-credentials/wire/gen/grpc/reflection/v1/reflection_pb";
import { createHealthService, HealthState } from "../../service/src/rpc/health.js";

let t: TestService;
beforeAll(async () => {
  t = await startTestService();
});
afterAll(async () => {
  await t?.close();
});

const SERVICES = [
  "credentials.v1.AdminService",
  "credentials.v1.CredentialService",
  "credentials.v1.OrganizationService",
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
];

describe("grpc.health.v1.Health/Check", () => {
  it.each(["", "credentials.v1.CredentialService", "credentials.v1.OrganizationService", "credentials.v1.AdminService"])(
    'is SERVING for "%s" without any token',
    async (service) => {
      const health = createClient(Health, t.transport("grpc"));
      expect((await health.check({ service })).status).toBe(Status.SERVING);
    },
  );

  it("answers over gRPC-Web and Connect too, and ignores a bad token", async () => {
    for (const protocol of ["grpc-web", "connect"] as const) {
      expect((await createClient(Health, t.transport(protocol)).check({ service: "" })).status).toBe(Status.SERVING);
    }
    expect((await createClient(Health, t.transport("grpc", "garbage")).check({ service: "" })).status).toBe(Status.SERVING);
  });

  it("is NOT_FOUND for an unknown service", async () => {
    const health = createClient(Health, t.transport("grpc"));
    expect(await rpcError(health.check({ service: "credentials.v1.NoSuchService" }))).toEqual({
      code: Code.NotFound,
      message: "Health status unknown for service credentials.v1.NoSuchService",
    });
  });
});

describe("health while shutting down (a service of its own)", () => {
  let s: TestService;
  beforeAll(async () => {
    s = await startTestService();
  });
  afterAll(async () => {
    await s?.close();
  });

  it("Watch streams the current status at once, then the change to NOT_SERVING; Check agrees", async () => {
    const health = createClient(Health, s.transport("grpc"));
    const abort = new AbortController();
    const whole = health.watch({ service: "" }, { signal: abort.signal })[Symbol.asyncIterator]();
    const one = health.watch({ service: "credentials.v1.CredentialService" }, { signal: abort.signal })[Symbol.asyncIterator]();
    const unknown = health.watch({ service: "no.such.Service" }, { signal: abort.signal })[Symbol.asyncIterator]();
    try {
      expect((await whole.next()).value?.status).toBe(Status.SERVING);
      expect((await one.next()).value?.status).toBe(Status.SERVING);
      // An unknown service is not an error for Watch: it reports SERVICE_UNKNOWN.
      expect((await unknown.next()).value?.status).toBe(Status.SERVICE_UNKNOWN);

      s.service.health.setNotServing();
      expect((await whole.next()).value?.status).toBe(Status.NOT_SERVING);
      expect((await one.next()).value?.status).toBe(Status.NOT_SERVING);
      expect((await health.check({ service: "" })).status).toBe(Status.NOT_SERVING);
      expect((await health.check({ service: "credentials.v1.OrganizationService" })).status).toBe(Status.NOT_SERVING);
      // A watch started now begins with NOT_SERVING.
      const late = health.watch({ service: "" }, { signal: abort.signal })[Symbol.asyncIterator]();
      expect((await late.next()).value?.status).toBe(Status.NOT_SERVING);
    } finally {
      abort.abort();
    }
    // The other RPCs still answer while NOT_SERVING (calls in flight must finish).
    expect((await s.clients().organizations.listOrganizations({})).organizations).toEqual([]);
  });
});

describe("Watch implementation against a real HandlerContext", () => {
  const watchContext = () =>
    createHandlerContext({
      service: Health,
      method: Health.method.watch,
      protocolName: "grpc",
      requestMethod: "POST",
      url: "http://localhost/grpc.health.v1.Health/Watch",
    });

  it("does not miss a change that happens while the caller has not yet read the previous status", async () => {
    const state = new HealthState(["svc"]);
    const ctx = watchContext();
    const stream = createHealthService(state).watch(create(HealthCheckRequestSchema, { service: "svc" }), ctx);
    const watch = stream[Symbol.asyncIterator]();
    expect((await watch.next()).value).toEqual({ status: Status.SERVING });
    // The server has yielded SERVING but the transport has not asked for the next message yet.
    state.setNotServing();
    const next = await Promise.race([watch.next(), new Promise<"missed">((r) => setTimeout(() => r("missed"), 1_000))]);
    expect(next).toEqual({ done: false, value: { status: Status.NOT_SERVING } });
    ctx.abort();
    expect(await watch.next()).toMatchObject({ done: true });
  });

  it("ends when the call is cancelled", async () => {
    const state = new HealthState(["svc"]);
    const ctx = watchContext();
    const stream = createHealthService(state).watch(create(HealthCheckRequestSchema, { service: "" }), ctx);
    const watch = stream[Symbol.asyncIterator]();
    expect((await watch.next()).value).toEqual({ status: Status.SERVING });
    const pending = watch.next();
    ctx.abort();
    expect(await pending).toMatchObject({ done: true });
  });
});

type ReflectionRequest = MessageInitShape<typeof ServerReflectionRequestSchema>;

async function reflect(token: string | undefined, requests: ReflectionRequest[]): Promise<ServerReflectionResponse[]> {
  const client = createClient(ServerReflection, t.transport("grpc", token));
  async function* send() {
    for (const request of requests) yield request;
  }
  const responses: ServerReflectionResponse[] = [];
  for await (const response of client.serverReflectionInfo(send())) responses.push(response);
  return responses;
}

function descriptors(response: ServerReflectionResponse): FileDescriptorProto[] {
  if (response.messageResponse.case !== "fileDescriptorResponse") {
    throw new Error(`expected file descriptors, got ${response.messageResponse.case}: ${JSON.stringify(response.messageResponse.value)}`);
  }
  return response.messageResponse.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
}

describe("grpc.reflection.v1.ServerReflection/ServerReflectionInfo", () => {
  const listServices: ReflectionRequest = { messageRequest: { case: "listServices", value: "" } };

  it("is UNAUTHENTICATED without a good token, and open to every scope (it answers the public schema only)", async () => {
    expect(await rpcError(reflect(undefined, [listServices]))).toEqual({
      code: Code.Unauthenticated,
      message: 'missing or malformed authorization header; send "authorization: Bearer <token>"',
    });
    expect((await rpcError(reflect("garbage", [listServices]))).code).toBe(Code.Unauthenticated);
    for (const scope of ["resolve", "metrics"]) {
      const { token } = await new TokenStore(t.service.orm).create(`reflect-${scope}`, scope, "test");
      // Both ports: grpc-js's reflection and connect-node's.
      for (const protocol of ["grpc", "connect"] as const) {
        const responses: ServerReflectionResponse[] = [];
        for await (const r of createClient(ServerReflection, t.transport(protocol, token)).serverReflectionInfo(
          (async function* () {
            yield create(ServerReflectionRequestSchema, listServices);
          })(),
        ))
          responses.push(r);
        expect({ scope, protocol, case: responses[0]?.messageResponse.case }).toEqual({ scope, protocol, case: "listServicesResponse" });
      }
      // The token's scope still bounds the product's RPCs.
      expect((await rpcError(t.clients(token).organizations.listOrganizations({}))).code).toBe(Code.PermissionDenied);
    }
  });

  it("list_services names every service the server answers", async () => {
    const [response] = await reflect(t.adminToken, [listServices]);
    expect(response.messageResponse.case).toBe("listServicesResponse");
    const names = response.messageResponse.case === "listServicesResponse" ? response.messageResponse.value.service.map((s) => s.name) : [];
    expect([...names].sort()).toEqual(SERVICES);
  });

  it("file_containing_symbol returns credentials.proto with its imports, enough to call ResolveKey", async () => {
    const [response] = await reflect(t.adminToken, [
      { host: "localhost", messageRequest: { case: "fileContainingSymbol", value: "credentials.v1.CredentialService" } },
    ]);
    expect(response.validHost).toBe("localhost");
    expect(response.originalRequest?.messageRequest).toEqual({ case: "fileContainingSymbol", value: "credentials.v1.CredentialService" });
    const files = descriptors(response);
    expect(files.map((f) => f.name).sort()).toEqual(["credentials.proto", "google/protobuf/timestamp.proto"]);
    // The requested file first, then its imports (as grpc-go answers).
    expect(files[0].name).toBe("credentials.proto");
    const file = files[0];
    expect(file.package).toBe("credentials.v1");
    expect(file.dependency).toEqual(["google/protobuf/timestamp.proto"]);
    const service = file.service.find((s) => s.name === "CredentialService");
    expect(service?.method.map((m) => m.name)).toContain("ResolveKey");
    expect(service?.method.find((m) => m.name === "ResolveKey")).toMatchObject({
      inputType: ".credentials.v1.ResolveKeyRequest",
      outputType: ".credentials.v1.ResolveKeyResponse",
    });
    expect(file.service.map((s) => s.name).sort()).toEqual(["CredentialService", "OrganizationService"]);
    // What grpcurl / buf curl do with it: build a registry and find the method.
    const registry = createFileRegistry(file, (name) => files.find((f) => f.name === name));
    const resolveKey = registry.getService("credentials.v1.CredentialService")?.methods.find((m) => m.name === "ResolveKey");
    expect(resolveKey?.input.typeName).toBe("credentials.v1.ResolveKeyRequest");
    expect(resolveKey?.input.fields.map((f) => f.name)).toEqual(["organization_id", "team_id", "provider"]);
    expect(registry.getEnum("credentials.v1.Provider")?.values.map((v) => v.name)).toContain("PROVIDER_FIREWORKS");
  });

  it("answers several requests on one stream, in order: methods, messages, files, unknowns", async () => {
    const responses = await reflect(t.adminToken, [
      { messageRequest: { case: "fileContainingSymbol", value: "credentials.v1.CredentialService.ResolveKey" } },
      { messageRequest: { case: "fileContainingSymbol", value: "credentials.v1.Credential" } },
      { messageRequest: { case: "fileContainingSymbol", value: "grpc.health.v1.Health" } },
      { messageRequest: { case: "fileByFilename", value: "credentials.proto" } },
      { messageRequest: { case: "fileByFilename", value: "google/protobuf/timestamp.proto" } },
      { messageRequest: { case: "fileContainingSymbol", value: "credentials.v1.NoSuchThing" } },
      { messageRequest: { case: "fileByFilename", value: "nope.proto" } },
      listServices,
    ]);
    expect(responses).toHaveLength(8);
    expect(descriptors(responses[0]).map((f) => f.name)).toContain("credentials.proto");
    expect(descriptors(responses[1]).map((f) => f.name)).toContain("credentials.proto");
    expect(descriptors(responses[2]).map((f) => f.name)).toEqual(["grpc/health/v1/health.proto"]);
    expect(
      descriptors(responses[3])
        .map((f) => f.name)
        .sort(),
    ).toEqual(["credentials.proto", "google/protobuf/timestamp.proto"]);
    expect(descriptors(responses[4]).map((f) => f.package)).toEqual(["google.protobuf"]);
    expect(responses[5].messageResponse).toEqual({
      case: "errorResponse",
      value: expect.objectContaining({ errorCode: Code.NotFound, errorMessage: "Symbol not found: credentials.v1.NoSuchThing" }),
    });
    expect(responses[6].messageResponse).toEqual({
      case: "errorResponse",
      value: expect.objectContaining({ errorCode: 5, errorMessage: "Proto file not found: nope.proto" }),
    });
    expect(responses[7].messageResponse.case).toBe("listServicesResponse");
  });

  it("an unknown symbol is an error_response with NOT_FOUND (5), not a failed call", async () => {
    const [response] = await reflect(t.adminToken, [{ messageRequest: { case: "fileContainingSymbol", value: "no.such.Symbol" } }]);
    expect(response.messageResponse.case).toBe("errorResponse");
    if (response.messageResponse.case === "errorResponse") {
      expect(response.messageResponse.value.errorCode).toBe(5);
      expect(response.messageResponse.value.errorMessage).toBe("Symbol not found: no.such.Symbol");
    }
  });
});

// buf curl (from the @bufbuild/buf devDependency) through reflection, the way an
// operator would call the service: no local protos.
// (Asynchronous on purpose: the server runs in this process, a sync spawn would block it.)
// buf curl does not send -H headers with reflection requests: --reflect-header does.
const bufCurl = async (token: string, args: string[]) =>
  promisify(execFile)(
    "npx",
    [
      "--no-install",
      "buf",
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "-H",
      `authorization: Bearer ${token}`,
      "--reflect-header",
      `authorization: Bearer ${token}`,
      ...args,
    ],
    { timeout: 30_000 },
  );
const bufAvailable = await promisify(execFile)("npx", ["--no-install", "buf", "--version"], { timeout: 30_000 }).then(
  () => true,
  () => false,
);

describe.skipIf(!bufAvailable)("buf curl through reflection", () => {
  it("resolves a key with only the server's reflection for a schema", async () => {
    const key = FAKE_KEYS.openai();
    const { credentials, organizations } = t.clients();
    await organizations.createOrganization({ organizationId: "buf-org", name: "Buf" });
    await credentials.createCredential({ organizationId: "buf-org", provider: Provider.OPENAI, credentialName: "Buf", apiKey: key });
    const { stdout } = await bufCurl(t.adminToken, [
      "-d",
      JSON.stringify({ organization_id: "buf-org", provider: "PROVIDER_OPENAI" }),
      `http://${t.address}/${CredentialService.typeName}/ResolveKey`,
    ]);
    expect(JSON.parse(stdout)).toMatchObject({ apiKey: key, source: "KEY_SOURCE_ORGANIZATION", organizationId: "buf-org" });
  }, 60_000);

  it("shows the service's error code and message", async () => {
    const error = await bufCurl(t.adminToken, [
      "-d",
      JSON.stringify({ organization_id: "no-such-org", provider: "PROVIDER_OPENAI" }),
      `http://${t.address}/${CredentialService.typeName}/ResolveKey`,
    ]).then(
      () => undefined,
      (e: { stderr?: string }) => e,
    );
    expect(error?.stderr).toContain("not_found");
    expect(error?.stderr).toContain('organization \\"no-such-org\\" not found');
  }, 60_000);
});
