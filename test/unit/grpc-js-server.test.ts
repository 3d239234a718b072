// The grpc-js adapter on its own: a test service with all four method kinds
// (only unary ones are served), built from a descriptor at runtime, served on
// loopback and called by grpc-js and Connect-ES clients. (The real services are in test/integration/grpc-js-server.test.ts.)
import http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import * as grpc from "@grpc/grpc-js";
import { create, createFileRegistry, toBinary, type DescService } from "@bufbuild/protobuf";
import {
  file_google_protobuf_wrappers,
  FileDescriptorProtoSchema,
  Int32ValueSchema,
  StringValueSchema,
  type Int32Value,
  type StringValue,
} from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, createContextKey, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  createGrpcJsServer,
  grpcJsServiceDefinition,
  listenGrpcJsServer,
  peerAddress,
  shutdownGrpcJsServer,
  type GrpcJsServerOptions,
} from "../../service/src/rpc/grpc-js-server.js";

const registry = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: "test.proto",
    package: "test.v1",
    syntax: "proto3",
    dependency: ["google/protobuf/wrappers.proto"],
    service: [
      {
        name: "Test",
        method: [
          { name: "Unary", inputType: ".google.protobuf.StringValue", outputType: ".google.protobuf.StringValue" },
          { name: "ServerStream", inputType: ".google.protobuf.Int32Value", outputType: ".google.protobuf.Int32Value", serverStreaming: true },
          { name: "ClientStream", inputType: ".google.protobuf.Int32Value", outputType: ".google.protobuf.Int32Value", clientStreaming: true },
          { name: "Bidi", inputType: ".google.protobuf.StringValue", outputType: ".google.protobuf.StringValue", clientStreaming: true, serverStreaming: true },
          { name: "Missing", inputType: ".google.protobuf.StringValue", outputType: ".google.protobuf.StringValue" },
        ],
      },
    ],
  }),
  (name) => (name === "google/protobuf/wrappers.proto" ? file_google_protobuf_wrappers : undefined),
);
const TestService = registry.getService("test.v1.Test") as DescService;

const callerKey = createContextKey<string | null>(null);
const seen: { ctx?: HandlerContext; interceptorHeader?: Headers; endReason?: unknown } = {};
/** Why the signal of each "wait <id>" call aborted. */
const waitReasons = new Map<string, unknown>();

function createGate() {
  let open = () => {};
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}
let gate: ReturnType<typeof createGate> | undefined;

const impl = {
  async unary(req: StringValue, ctx: HandlerContext) {
    seen.ctx = ctx;
    const space = req.value.indexOf(" ");
    const [command, arg] = space < 0 ? [req.value, ""] : [req.value.slice(0, space), req.value.slice(space + 1)];
    switch (command) {
      case "echo":
        ctx.responseHeader.set("x-header", "h1");
        ctx.responseHeader.set("x-data-bin", Buffer.from([0, 1, 2, 255]).toString("base64"));
        ctx.responseTrailer.set("x-trailer", "t1");
        ctx.signal.addEventListener("abort", () => (seen.endReason = ctx.signal.reason));
        return { value: `${arg}|${ctx.values.get(callerKey)}` };
      case "connect-error":
        ctx.responseTrailer.set("x-trailer", "before the error");
        throw new ConnectError(arg, Code.ResourceExhausted, { "retry-after": "42" }, [{ desc: StringValueSchema, value: { value: "detail" } }]);
      case "plain-error":
        throw new Error("secret: SELECT * FROM keys");
      case "surrogate":
        throw new ConnectError("bad \uD800 half", Code.InvalidArgument);
      case "wait":
        await new Promise<void>((resolve) => {
          if (ctx.signal.aborted) return resolve();
          ctx.signal.addEventListener("abort", () => resolve());
        });
        waitReasons.set(arg, ctx.signal.reason);
        return { value: "late" };
      case "gate":
        await gate?.promise;
        return { value: "through the gate" };
      default:
        return { value: req.value };
    }
  },
  async *serverStream(req: Int32Value) {
    for (let i = 1; i <= req.value; i++) yield { value: i };
  },
};

/** Records what the outermost interceptor saw, replaces the request by a copy (as interceptors may), and adds a response header. */
const recording: Interceptor = (next) => async (req) => {
  seen.interceptorHeader = req.header;
  const header = new Headers(req.header);
  header.set("x-added-by-interceptor", "yes");
  const res = await next({ ...req, header });
  res.header.set("x-intercepted", req.method.name);
  return res;
};

const denying: Interceptor = (next) => async (req) => {
  if (req.header.get("x-deny") !== null) throw new ConnectError("denied by interceptor", Code.PermissionDenied);
  return next(req);
};

/** Replaces the response's header or trailer the ways an interceptor may: a spread copy, or an assignment. */
const reshaping: Interceptor = (next) => async (req) => {
  const how = req.header.get("x-reshape");
  const res = await next(req);
  if (how === "spread-header") return { ...res, header: new Headers({ "x-spread": "1" }) };
  if (how === "assign-trailer") {
    (res as { trailer: Headers }).trailer = new Headers({ "x-assigned": "2" });
    res.header.set("x-after-assign", "3");
  }
  return res;
};

/** What the adapter reported (methods it cannot serve, calls it could not build). */
const reported: Array<{ details: object; message: string }> = [];

const options: GrpcJsServerOptions = {
  routes: (router) => void router.service(TestService, impl as never),
  logger: { error: (details, message) => void reported.push({ details, message }) },
  interceptors: [recording, denying, reshaping],
  maxReceiveMessageLength: 1024,
  addressKey: callerKey,
};

let server: grpc.Server;
let address: string;
type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;
let client: Client;
const TestClient = grpc.makeClientConstructor(grpcJsServiceDefinition(TestService), "Test") as unknown as new (
  address: string,
  credentials: grpc.ChannelCredentials,
) => Client;

beforeAll(async () => {
  server = createGrpcJsServer(options);
  address = `127.0.0.1:${await listenGrpcJsServer(server, "127.0.0.1", 0)}`;
  client = new TestClient(address, grpc.credentials.createInsecure());
});
afterAll(async () => {
  client?.close();
  if (server) await shutdownGrpcJsServer(server, 1_000);
});

interface UnaryResult {
  error?: grpc.ServiceError;
  value?: string;
  header?: grpc.Metadata;
  trailer?: grpc.Metadata;
}

function unary(
  value: string,
  metadata = new grpc.Metadata(),
  callOptions: grpc.CallOptions = { deadline: Date.now() + 5_000 },
  onCall?: (call: grpc.ClientUnaryCall) => void,
): Promise<UnaryResult> {
  return new Promise((resolve) => {
    const result: UnaryResult = {};
    const call = client.Unary(create(StringValueSchema, { value }), metadata, callOptions, (error: grpc.ServiceError | null, response?: StringValue) => {
      if (error) result.error = error;
      else result.value = response?.value;
    }) as grpc.ClientUnaryCall;
    call.on("metadata", (md) => (result.header = md));
    call.on("status", (status: grpc.StatusObject) => {
      result.trailer = status.metadata;
      // The callback runs before "status"; resolve after both.
      setImmediate(() => resolve(result));
    });
    onCall?.(call);
  });
}

const connect = () =>
  createClient(TestService, createGrpcTransport({ baseUrl: `http://${address}` })) as unknown as {
    unary(req: { value: string }, options?: { onHeader?(h: Headers): void; onTrailer?(h: Headers): void; timeoutMs?: number }): Promise<StringValue>;
    serverStream(req: { value: number }): AsyncIterable<Int32Value>;
    clientStream(requests: AsyncIterable<{ value: number }>): Promise<Int32Value>;
    bidi(requests: AsyncIterable<{ value: string }>): AsyncIterable<StringValue>;
  };

describe("peerAddress", () => {
  it.each([
    ["127.0.0.1:5000", "127.0.0.1"],
    ["::ffff:127.0.0.1:5000", "::ffff:127.0.0.1"],
    ["::1:5000", "::1"],
    ["ipv4:10.0.0.1:443", "10.0.0.1"],
    ["ipv6:[::1]:443", "::1"],
    ["[2001:db8::1]:80", "2001:db8::1"],
    ["10.0.0.1", "10.0.0.1"],
    ["unknown", null],
    ["unix:/tmp/sock", null],
  ])("%s -> %s", (peer, expected) => {
    expect(peerAddress(peer)).toBe(expected);
  });
});

describe("grpcJsServiceDefinition", () => {
  it("has one entry per method with the gRPC path and streaming kinds", () => {
    const definition = grpcJsServiceDefinition(TestService);
    expect(Object.fromEntries(Object.entries(definition).map(([name, d]) => [name, [d.path, d.requestStream, d.responseStream, d.originalName]]))).toEqual({
      Unary: ["/test.v1.Test/Unary", false, false, "unary"],
      ServerStream: ["/test.v1.Test/ServerStream", false, true, "serverStream"],
      ClientStream: ["/test.v1.Test/ClientStream", true, false, "clientStream"],
      Bidi: ["/test.v1.Test/Bidi", true, true, "bidi"],
      Missing: ["/test.v1.Test/Missing", false, false, "missing"],
    });
    const bytes = definition.Unary.responseSerialize(create(StringValueSchema, { value: "x" }));
    expect(definition.Unary.requestDeserialize(bytes)).toEqual(create(StringValueSchema, { value: "x" }));
  });
});

describe("unary", () => {
  it("passes metadata, context and the caller's address to interceptors and implementation; sends headers and trailers", async () => {
    const md = new grpc.Metadata();
    md.set("authorization", "Bearer abc:def");
    md.set("x-data-bin", Buffer.from([1, 2, 3, 250]));
    const result = await unary("echo hello", md, { deadline: Date.now() + 5_000 });
    expect(result.error).toBeUndefined();
    expect(result.value).toBe("hello|127.0.0.1");
    expect(seen.interceptorHeader?.get("authorization")).toBe("Bearer abc:def");
    expect(seen.interceptorHeader?.get("x-data-bin")).toBe(Buffer.from([1, 2, 3, 250]).toString("base64").replace(/=+$/, ""));
    const ctx = seen.ctx!;
    expect(ctx.requestHeader.get("x-added-by-interceptor")).toBe("yes");
    expect(ctx.requestHeader.get("authorization")).toBe("Bearer abc:def");
    expect({ service: ctx.service.typeName, method: ctx.method.name, protocol: ctx.protocolName, verb: ctx.requestMethod }).toEqual({
      service: "test.v1.Test",
      method: "Unary",
      protocol: "grpc",
      verb: "POST",
    });
    expect(ctx.url).toMatch(/^http:\/\/.+\/test\.v1\.Test\/Unary$/);
    expect(ctx.timeoutMs()).toBeGreaterThan(3_000);
    expect(ctx.timeoutMs()).toBeLessThanOrEqual(5_000);
    // As with Connect, the signal aborts when the call is over (here: because something listens).
    await vi.waitFor(() => expect(seen.endReason).toBeInstanceOf(ConnectError));
    expect(ctx.signal.aborted).toBe(true);
    expect(result.header?.get("x-header")).toEqual(["h1"]);
    expect(result.header?.get("x-intercepted")).toEqual(["Unary"]);
    expect(result.header?.get("x-data-bin")).toEqual([Buffer.from([0, 1, 2, 255])]);
    expect(result.trailer?.get("x-trailer")).toEqual(["t1"]);
  });

  it("sends no response header or trailer metadata when nothing set any; interceptors may replace them by spreading or assigning", async () => {
    const plain = await unary("plain");
    expect(plain.value).toBe("plain");
    // Only what the recording interceptor adds; nothing else.
    expect(Object.keys(plain.header?.getMap() ?? {}).filter((k) => k.startsWith("x-"))).toEqual(["x-intercepted"]);
    expect(Object.keys(plain.trailer?.getMap() ?? {}).filter((k) => k.startsWith("x-"))).toEqual([]);
    const spread = new grpc.Metadata();
    spread.set("x-reshape", "spread-header");
    const spreadResult = await unary("echo spread", spread);
    expect(spreadResult.header?.get("x-spread")).toEqual(["1"]);
    expect(spreadResult.header?.get("x-header")).toEqual([]); // the implementation's header was replaced
    expect(spreadResult.trailer?.get("x-trailer")).toEqual(["t1"]); // its trailer came along in the copy
    const assign = new grpc.Metadata();
    assign.set("x-reshape", "assign-trailer");
    const assignResult = await unary("plain", assign);
    expect(assignResult.trailer?.get("x-assigned")).toEqual(["2"]);
    expect(assignResult.header?.get("x-after-assign")).toEqual(["3"]);
  });

  it("has no timeout without a deadline", async () => {
    await unary("echo x", new grpc.Metadata(), {});
    expect(seen.ctx?.timeoutMs()).toBeUndefined();
  });

  it("the same over a Connect client", async () => {
    let header: Headers | undefined;
    let trailer: Headers | undefined;
    const res = await connect().unary({ value: "echo ünï, code: 1" }, { onHeader: (h) => (header = h), onTrailer: (t) => (trailer = t) });
    expect(res.value).toBe("ünï, code: 1|127.0.0.1");
    expect(header?.get("x-header")).toBe("h1");
    expect(trailer?.get("x-trailer")).toBe("t1");
  });

  it("a ConnectError keeps its code, message, metadata and details; trailers set before it are sent too", async () => {
    const message = "too many: 100%, wait ✓ 日本";
    const result = await unary(`connect-error ${message}`);
    expect(result.error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(result.error?.details).toBe(message);
    expect(result.error?.metadata.get("retry-after")).toEqual(["42"]);
    expect(result.error?.metadata.get("x-trailer")).toEqual(["before the error"]);

    const error = await connect()
      .unary({ value: `connect-error ${message}` })
      .then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    expect(error?.code).toBe(Code.ResourceExhausted);
    expect(error?.rawMessage).toBe(message);
    expect(error?.metadata.get("retry-after")).toBe("42");
    expect(error?.findDetails(StringValueSchema)).toEqual([create(StringValueSchema, { value: "detail" })]);
  });

  it('any other error is INTERNAL "internal error", never its message', async () => {
    const result = await unary("plain-error");
    expect({ code: result.error?.code, details: result.error?.details }).toEqual({ code: grpc.status.INTERNAL, details: "internal error" });
    expect(JSON.stringify(result.error?.metadata.toJSON())).not.toContain("SELECT");
  });

  it("a message with a lone surrogate does not break the status", async () => {
    const result = await unary("surrogate");
    expect({ code: result.error?.code, details: result.error?.details }).toEqual({ code: grpc.status.INVALID_ARGUMENT, details: "bad \uFFFD half" });
  });

  it("an error from an interceptor is the call's status", async () => {
    const md = new grpc.Metadata();
    md.set("x-deny", "1");
    const result = await unary("echo x", md);
    expect({ code: result.error?.code, details: result.error?.details }).toEqual({ code: grpc.status.PERMISSION_DENIED, details: "denied by interceptor" });
  });

  it("a method left out of the implementation is UNIMPLEMENTED", async () => {
    const error = await new Promise<grpc.ServiceError | null>((resolve) =>
      client.Missing(create(StringValueSchema, { value: "" }), (e: grpc.ServiceError | null) => resolve(e)),
    );
    expect({ code: error?.code, details: error?.details }).toEqual({ code: grpc.status.UNIMPLEMENTED, details: "test.v1.Test.Missing is not implemented" });
  });

  it("a request over maxReceiveMessageLength is RESOURCE_EXHAUSTED", async () => {
    const result = await unary("x".repeat(2_000));
    expect(result.error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
  });

  it("the deadline aborts the signal with DEADLINE_EXCEEDED and the client gets DEADLINE_EXCEEDED", async () => {
    // A raw HTTP/2 gRPC request with grpc-timeout, from a client that does not cancel on its own:
    // the server's deadline is what ends the call.
    const session = http2.connect(`http://${address}`);
    try {
      const body = toBinary(StringValueSchema, create(StringValueSchema, { value: "wait raw" }));
      const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, body.length]), body]);
      const stream = session.request({
        ":method": "POST",
        ":path": "/test.v1.Test/Unary",
        "content-type": "application/grpc",
        te: "trailers",
        "grpc-timeout": "200m",
      });
      const trailers = new Promise<http2.IncomingHttpHeaders>((resolve) => {
        stream.on("trailers", resolve);
        stream.on("response", (headers) => headers["grpc-status"] !== undefined && resolve(headers));
      });
      stream.end(frame);
      stream.resume();
      expect((await trailers)["grpc-status"]).toBe(String(grpc.status.DEADLINE_EXCEEDED));
    } finally {
      session.close();
    }
    await vi.waitFor(() => expect(waitReasons.get("raw")).toBeInstanceOf(ConnectError));
    expect((waitReasons.get("raw") as ConnectError).code).toBe(Code.DeadlineExceeded);

    // grpc-js and Connect clients also cancel at their deadline: whichever reaches the server first is the reason.
    const result = await unary("wait grpc-js", new grpc.Metadata(), { deadline: Date.now() + 200 });
    expect(result.error?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    await vi.waitFor(() => expect((waitReasons.get("grpc-js") as ConnectError | undefined)?.code).toBeOneOf([Code.DeadlineExceeded, Code.Canceled]));
    // Over Connect (grpc-timeout header) too.
    const error = await connect()
      .unary({ value: "wait connect" }, { timeoutMs: 200 })
      .then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    expect(error?.code).toBe(Code.DeadlineExceeded);
    await vi.waitFor(() => expect((waitReasons.get("connect") as ConnectError | undefined)?.code).toBeOneOf([Code.DeadlineExceeded, Code.Canceled]));
  });

  it("answers malformed requests as grpc-js does: no message, two messages, a cut-off message, bytes that are not the message, a bad grpc-timeout; the compressed flag without an encoding and gzip work", async () => {
    const body = Buffer.from(toBinary(StringValueSchema, create(StringValueSchema, { value: "raw" })));
    const frame = (flag: number, bytes: Buffer) => Buffer.concat([Buffer.from([flag, 0, 0, 0, bytes.length]), bytes]);
    const raw = async (payload: Buffer, extra: http2.OutgoingHttpHeaders = {}) => {
      const session = http2.connect(`http://${address}`);
      try {
        const stream = session.request({ ":method": "POST", ":path": "/test.v1.Test/Unary", "content-type": "application/grpc", te: "trailers", ...extra });
        const data: Buffer[] = [];
        stream.on("data", (chunk: Buffer) => data.push(chunk));
        stream.end(payload);
        const status = await new Promise<{ code?: string; message?: string }>((resolve) => {
          stream.on("trailers", (t) => resolve({ code: t["grpc-status"] as string, message: decodeURIComponent(t["grpc-message"] as string) }));
          stream.on(
            "response",
            (h) => h["grpc-status"] !== undefined && resolve({ code: h["grpc-status"] as string, message: decodeURIComponent(h["grpc-message"] as string) }),
          );
        });
        return { ...status, body: Buffer.concat(data) };
      } finally {
        session.close();
      }
    };
    expect(await raw(frame(0, body))).toMatchObject({
      code: "0",
      body: frame(0, Buffer.from(toBinary(StringValueSchema, create(StringValueSchema, { value: "raw" })))),
    });
    expect(await raw(Buffer.alloc(0))).toMatchObject({
      code: String(grpc.status.UNIMPLEMENTED),
      message: expect.stringMatching(/^Received no request message/),
    });
    expect(await raw(Buffer.concat([frame(0, body), frame(0, body)]))).toMatchObject({
      code: String(grpc.status.UNIMPLEMENTED),
      message: expect.stringMatching(/^Received a second request message/),
    });
    expect(await raw(frame(0, Buffer.from([0x0a, 0x05, 0x61])))).toMatchObject({
      code: String(grpc.status.INVALID_ARGUMENT),
      message: expect.stringMatching(/^request: not a valid google\.protobuf\.StringValue/),
    });
    expect(await raw(frame(1, body))).toMatchObject({ code: "0" }); // the compressed flag without an encoding: read as identity
    expect(await raw(frame(0, body).subarray(0, 6))).toMatchObject({
      code: String(grpc.status.UNIMPLEMENTED),
      message: expect.stringMatching(/^Received no request message/),
    });
    expect(await raw(frame(0, body), { "grpc-timeout": "soon" })).toMatchObject({
      code: String(grpc.status.INTERNAL),
      message: 'Invalid grpc-timeout value "soon"',
    });
    const { gzipSync } = await import("node:zlib");
    expect(await raw(frame(1, gzipSync(body)), { "grpc-encoding": "gzip" })).toMatchObject({ code: "0" });
  });

  it("the client cancelling aborts the signal with CANCELED", async () => {
    const result = await unary("wait cancel", new grpc.Metadata(), {}, (call) => setTimeout(() => call.cancel(), 100));
    expect(result.error?.code).toBe(grpc.status.CANCELLED);
    await vi.waitFor(() => expect(waitReasons.get("cancel")).toBeInstanceOf(ConnectError));
    expect((waitReasons.get("cancel") as ConnectError).code).toBe(Code.Canceled);
  });
});

describe("methods of other kinds", () => {
  it("server streaming is served: every message in order, then OK", async () => {
    const stream = client.ServerStream(create(Int32ValueSchema, { value: 3 })) as grpc.ClientReadableStream<Int32Value>;
    const values: number[] = [];
    stream.on("data", (message: Int32Value) => values.push(message.value));
    const status = await new Promise<grpc.StatusObject>((resolve) => stream.on("status", resolve));
    expect(status.code).toBe(grpc.status.OK);
    expect(values).toEqual([1, 2, 3]);
    const viaConnect: number[] = [];
    for await (const message of connect().serverStream({ value: 2 })) viaConnect.push(message.value);
    expect(viaConnect).toEqual([1, 2]);
  });

  it("client and bidirectional streaming are not served: each is reported once when the server is built, and its callers get UNIMPLEMENTED", async () => {
    expect(reported.map((r) => [r.message, r.details])).toEqual(
      ["ClientStream", "Bidi"].map((name) => [
        "not served over grpc-js (only unary and server-streaming methods are); the Connect port serves it",
        { method: `test.v1.Test/${name}`, kind: { ClientStream: "client_streaming", Bidi: "bidi_streaming" }[name] },
      ]),
    );
    const summed = await connect()
      .clientStream(
        (async function* () {
          yield { value: 1 };
        })(),
      )
      .then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    expect(summed?.code).toBe(Code.Unimplemented);
  });
});

describe("routes and shutdown", () => {
  it("takes a ConnectRouter routes function (service and rpc) like connect-node", async () => {
    const s = createGrpcJsServer({
      routes: (router) => {
        router.service(TestService, { unary: (req: StringValue) => ({ value: `service:${req.value}` }) } as never);
        router.rpc(TestService.method.missing, ((req: StringValue) => ({ value: `rpc:${req.value}` })) as never);
      },
    });
    const port = await listenGrpcJsServer(s, "127.0.0.1", 0);
    const c = new TestClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    try {
      const ask = (method: string) =>
        new Promise<string>((resolve, reject) =>
          c[method](create(StringValueSchema, { value: "x" }), (e: grpc.ServiceError | null, r?: StringValue) => (e ? reject(e) : resolve(r!.value))),
        );
      expect(await ask("Unary")).toBe("service:x");
      expect(await ask("Missing")).toBe("rpc:x");
      const stream = c.ServerStream(create(Int32ValueSchema, { value: 1 })) as grpc.ClientReadableStream<Int32Value>;
      stream.on("error", () => undefined);
      const streamStatus = await new Promise<grpc.StatusObject>((resolve) => stream.on("status", resolve));
      // Registered by the routes function with no implementation: UNIMPLEMENTED, as connect-node answers it.
      expect(streamStatus.code).toBe(grpc.status.UNIMPLEMENTED);
    } finally {
      c.close();
      s.forceShutdown();
    }
    expect(() => createGrpcJsServer({ routes: (router) => void router.service(TestService, {}, { readMaxBytes: 10 }) })).toThrow(/per-service handler options/);
  });

  it("shutdown waits for a call in flight, then forces after the timeout", async () => {
    const s = createGrpcJsServer(options);
    const port = await listenGrpcJsServer(s, "127.0.0.1", 0);
    const c = new TestClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const ask = (value: string) =>
      new Promise<string>((resolve, reject) =>
        c.Unary(create(StringValueSchema, { value }), (e: grpc.ServiceError | null, r?: StringValue) => (e ? reject(e) : resolve(r!.value))),
      );
    try {
      expect(await ask("ping")).toBe("ping");
      gate = createGate();
      const inFlight = ask("gate");
      await new Promise((r) => setTimeout(r, 100));
      const shutdown = shutdownGrpcJsServer(s, 5_000);
      await new Promise((r) => setTimeout(r, 100));
      gate.open();
      expect(await inFlight).toBe("through the gate");
      expect(await shutdown).toBe("graceful");
    } finally {
      c.close();
    }

    const s2 = createGrpcJsServer(options);
    const port2 = await listenGrpcJsServer(s2, "127.0.0.1", 0);
    const c2 = new TestClient(`127.0.0.1:${port2}`, grpc.credentials.createInsecure());
    try {
      gate = createGate();
      const stuck = new Promise<grpc.ServiceError | null>((resolve) =>
        c2.Unary(create(StringValueSchema, { value: "gate" }), (e: grpc.ServiceError | null) => resolve(e)),
      );
      await new Promise((r) => setTimeout(r, 100));
      expect(await shutdownGrpcJsServer(s2, 200)).toBe("forced");
      expect((await stuck)?.code).toBeOneOf([grpc.status.CANCELLED, grpc.status.UNAVAILABLE, grpc.status.INTERNAL]);
    } finally {
      gate.open();
      c2.close();
    }
  });
});
