// Serves the unary and server-streaming methods of Connect-ES service implementations
// (`ServiceImpl<typeof X>`) on @grpc/grpc-js, through its public API only, so
// that internal gRPC callers (ResolveKey on every LLM call) get grpc-js's
// cheaper HTTP/2 server while every RPC keeps exactly one implementation,
// shared with the connect-node server. Unary and server-streaming methods are
// served (WatchResolutions streams); a method of another kind is not served here
// (it is logged, and its callers get UNIMPLEMENTED): connect-node serves every
// kind on the Connect port. Health and
// reflection on this port come from grpc-health-check and @grpc/reflection
// (grpc-js-health-reflection.ts).
//
// Each call runs through the same Connect interceptors as connect-node and
// gives the implementation a Connect `HandlerContext`. What a call does not use
// is not built: the context's signal, the request headers (read straight from
// the metadata until something other than get/has is asked of them) and the
// caller's address (the `addressKey` option) are made on first use
// (docs/adr/0007-grpc-js-public-api-only.md has the measurements).
//
// Differences from connect-node worth knowing:
// - The context signal aborts when the call is cancelled or hits its deadline,
//   and at the normal end of a call only if an "abort" listener is registered.
// - Interceptors must pass on the request they got or a spread copy of it
//   (`{ ...req, header }`), which is what Connect interceptors do.
// - Errors grpc-js raises itself (unknown method, oversized request, deadline)
//   do not go through the interceptors; nor does the INVALID_ARGUMENT for a
//   request that does not decode (grpc-js itself would answer INTERNAL).
import { getEventListeners } from "node:events";
import net, { isIP } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { create, type DescMessage, type DescMethod, type DescService } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  createMethodImplSpec,
  createServiceImplSpec,
  type ConnectRouter,
  type ContextKey,
  type ContextValues,
  type HandlerContext,
  type Interceptor,
  type MethodImpl,
  type MethodImplSpec,
  type StreamRequest,
  type StreamResponse,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { binaryDeserializer, binarySerializer } from "./flat-codec.js";

export interface GrpcJsServerOptions {
  /**
   * The same routes function connect-node takes (`(router) => router.service(...)`):
   * pass it to both servers and they answer the same RPCs from the same
   * implementations. Per-service handler options are not supported.
   */
  routes: (router: ConnectRouter) => void;
  /** Connect interceptors, outermost first, as for connect-node. */
  interceptors?: readonly Interceptor[];
  /**
   * The key of each call's fresh context values that holds the caller's IP
   * address without port (null when unknown), as connect-node's
   * `req.socket.remoteAddress`, read from the connection only if something asks.
   */
  addressKey?: ContextKey<string | null>;
  /** Largest request message accepted, in bytes (grpc-js default: 4 MiB); larger ones are RESOURCE_EXHAUSTED. */
  maxReceiveMessageLength?: number;
  /**
   * Further grpc-js server options (keepalive, max_connection_age_ms, ...).
   * Leave channelz on (the default): its per-call bookkeeping costs ~2 KB of
   * garbage per call, but with `"grpc.enable_channelz": 0` grpc-js 1.14's
   * forceShutdown() no longer destroys open sessions (it finds them through
   * channelz), so a forced shutdown would leave stuck calls running.
   */
  serverOptions?: grpc.ServerOptions;
  /** Where a method that cannot be served, or a call whose context cannot be built, is reported. */
  logger?: { error(details: object, message: string): void };
}

/** A grpc-js server answering the given Connect implementations. Bind it with listenGrpcJsServer(). */
export function createGrpcJsServer(options: GrpcJsServerOptions): grpc.Server {
  const server = new grpc.Server({
    ...(options.maxReceiveMessageLength === undefined ? {} : { "grpc.max_receive_message_length": options.maxReceiveMessageLength }),
    ...options.serverOptions,
  });
  const config: CallConfig = {
    interceptors: [...(options.interceptors ?? [])].reverse(),
    addressKey: options.addressKey,
    logger: options.logger,
  };
  const specs = new Map<DescService, MethodImplSpec[]>();
  for (const spec of collectRoutes(options.routes)) {
    const list = specs.get(spec.method.parent) ?? [];
    specs.set(spec.method.parent, [...list.filter((s) => s.method !== spec.method), spec]);
  }
  for (const [service, methods] of specs) {
    const full = grpcJsServiceDefinition(service);
    const handlers: grpc.UntypedServiceImplementation = {};
    for (const spec of methods) {
      if (spec.kind === "server_streaming") {
        handlers[spec.method.name] = serverStreamingHandler(spec, config);
        continue;
      }
      if (spec.kind !== "unary") {
        options.logger?.error(
          { method: `${service.typeName}/${spec.method.name}`, kind: spec.kind },
          "not served over grpc-js (only unary and server-streaming methods are); the Connect port serves it",
        );
        continue;
      }
      handlers[spec.method.name] = unaryHandler(spec, config);
    }
    // Only the methods that have a handler: routes.rpc() may register single methods of a service.
    const definition = Object.fromEntries(Object.entries(full).filter(([name]) => name in handlers));
    if (Object.keys(definition).length > 0) server.addService(definition, handlers);
  }
  return server;
}

/**
 * The grpc-js service definition of a protobuf-es service: paths, streaming
 * kinds and binary (de)serializers for both the server and clients
 * (`grpc.makeClientConstructor(definition)` gives a client of it).
 */
export function grpcJsServiceDefinition(service: DescService): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<object, object>> = {};
  for (const method of service.methods) {
    definition[method.name] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: binarySerializer(method.input),
      requestDeserialize: requestDeserializer(method.input),
      responseSerialize: binarySerializer(method.output),
      responseDeserialize: binaryDeserializer(method.output),
      originalName: method.localName,
    };
  }
  return definition;
}

/** The listeners listenGrpcJsServer opened itself (with maxConnections), closed by shutdownGrpcJsServer. */
const ownListeners = new WeakMap<grpc.Server, net.Server>();

/**
 * Binds to host:port (0 picks a free port), without TLS unless `credentials` say otherwise;
 * resolves with the port. grpc-js starts serving at once.
 *
 * With `maxConnections`, the port is a node:net server that holds at most that many connections
 * open (a connection past it is closed at once) and hands each one to grpc-js through its
 * connection injector (`Server.createConnectionInjector`): grpc-js has no such bound of its own.
 */
export function listenGrpcJsServer(
  server: grpc.Server,
  host: string,
  port: number,
  credentials: grpc.ServerCredentials = grpc.ServerCredentials.createInsecure(),
  maxConnections?: number,
): Promise<number> {
  if (maxConnections === undefined) {
    const address = isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
    return new Promise((resolve, reject) => {
      server.bindAsync(address, credentials, (error, boundPort) => (error ? reject(error) : resolve(boundPort)));
    });
  }
  const injector = server.createConnectionInjector(credentials);
  const listener = net.createServer({ noDelay: true }, (socket) => injector.injectConnection(socket));
  listener.maxConnections = maxConnections;
  return new Promise((resolve, reject) => {
    listener.once("error", (error) => {
      injector.destroy();
      reject(error);
    });
    listener.listen(port, host, () => {
      listener.removeAllListeners("error");
      listener.on("error", () => undefined);
      ownListeners.set(server, listener);
      resolve((listener.address() as net.AddressInfo).port);
    });
  });
}

/**
 * Graceful shutdown: stop accepting connections and calls (GOAWAY), let calls in
 * flight finish; after `timeoutMs` cancel whatever is still running
 * (forceShutdown).
 * Resolves with how it ended.
 */
export function shutdownGrpcJsServer(server: grpc.Server, timeoutMs: number): Promise<"graceful" | "forced"> {
  ownListeners.get(server)?.close();
  ownListeners.delete(server);
  return new Promise((resolve) => {
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      server.forceShutdown();
      resolve("forced");
    }, timeoutMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      if (settled) return;
      settled = true;
      resolve("graceful");
    });
  });
}

/**
 * The IP address of a grpc-js peer string without the port: grpc-js 1.14 gives
 * `127.0.0.1:5000` or `::ffff:127.0.0.1:5000`; older and other stacks
 * `ipv4:127.0.0.1:5000` or `ipv6:[::1]:5000`. Null when it holds no address
 * (`unknown`, Unix sockets).
 */
export function peerAddress(peer: string): string | null {
  let rest = peer.startsWith("ipv4:") || peer.startsWith("ipv6:") ? peer.slice(5) : peer;
  if (rest.startsWith("[")) {
    const end = rest.indexOf("]");
    rest = end > 0 ? rest.slice(1, end) : rest;
    return isIP(rest) ? rest : null;
  }
  const colon = rest.lastIndexOf(":");
  if (colon > 0 && /^\d{1,5}$/.test(rest.slice(colon + 1))) {
    const host = rest.slice(0, colon);
    if (isIP(host)) return host;
  }
  return isIP(rest) ? rest : null;
}

// ---------------------------------------------------------------------------

interface CallConfig {
  /** Innermost first, ready to wrap. */
  interceptors: Interceptor[];
  addressKey: GrpcJsServerOptions["addressKey"];
  logger: GrpcJsServerOptions["logger"];
}

type AnyFn = (req: UnaryRequest) => Promise<UnaryResponse>;

/** A request message that did not decode: the handler answers it with INVALID_ARGUMENT. */
class UndecodableRequest {
  constructor(readonly desc: DescMessage) {}

  error(): ConnectError {
    return new ConnectError(`request: not a valid ${this.desc.typeName} (malformed protobuf, or a string that is not UTF-8)`, Code.InvalidArgument);
  }
}

/**
 * A request deserializer that does not throw: grpc-js answers a throwing one
 * with INTERNAL, which would blame the server for the client's bad bytes.
 */
function requestDeserializer(desc: DescMessage): (bytes: Buffer) => object {
  const deserialize = binaryDeserializer(desc);
  return (bytes) => {
    try {
      return deserialize(bytes);
    } catch {
      return new UndecodableRequest(desc);
    }
  };
}

/** What a ConnectRouter registers, without building Connect's HTTP handlers. */
function collectRoutes(routes: (router: ConnectRouter) => void): MethodImplSpec[] {
  const specs: MethodImplSpec[] = [];
  const refuseOptions = (options: object | undefined) => {
    if (options !== undefined && Object.keys(options).length > 0) {
      throw new Error("createGrpcJsServer: per-service handler options are not supported; pass interceptors to createGrpcJsServer");
    }
  };
  const router: ConnectRouter = {
    handlers: [],
    service(service, implementation, options) {
      refuseOptions(options);
      specs.push(...Object.values(createServiceImplSpec(service, implementation).methods));
      return router;
    },
    rpc(method, impl, options) {
      refuseOptions(options);
      specs.push(createMethodImplSpec(method, impl as MethodImpl<typeof method>) as MethodImplSpec);
      return router;
    },
  };
  routes(router);
  return specs;
}

const RESERVED_RESPONSE_KEYS = new Set([
  "content-type",
  "content-length",
  "connection",
  "te",
  "transfer-encoding",
  "grpc-status",
  "grpc-message",
  "grpc-encoding",
  "grpc-accept-encoding",
  "grpc-timeout",
]);

/** Request metadata as fetch Headers; binary (-bin) values base64-encoded as Connect does. */
function fillHeaders(headers: Headers, metadata: grpc.Metadata): void {
  const entries = metadata.toJSON();
  for (const key in entries) {
    for (const value of entries[key]) {
      try {
        Headers.prototype.append.call(headers, key, typeof value === "string" ? value : value.toString("base64").replace(/=+$/, ""));
      } catch {
        // not a valid fetch header value: leave it out
      }
    }
  }
}

/** Names get() and has() may look up in the metadata as they are: metadata keys are lowercase tokens of these characters. */
const METADATA_KEY = /^[0-9a-z_.-]+$/;
/** Values fetch Headers keep exactly as they are (no surrounding whitespace to strip, nothing refused). */
const PLAIN_VALUE = /^(?:[!-~](?:[ -~]*[!-~])?)?$/;

/**
 * The request metadata as fetch Headers (so `instanceof Headers` holds and
 * Headers take it as init), filled from the metadata only when something other
 * than get() or has() is asked of them: the interceptors' look-ups read the
 * metadata directly, with the same answers (values Headers would normalise or
 * refuse take the filled path).
 */
class MetadataHeaders extends Headers {
  #metadata: grpc.Metadata | undefined;

  constructor(metadata: grpc.Metadata) {
    super();
    this.#metadata = metadata;
  }

  /** The values of a metadata key as Headers would hold them, or undefined when only the filled Headers can tell. */
  #direct(name: string): string[] | undefined {
    const metadata = this.#metadata;
    if (metadata === undefined || !METADATA_KEY.test(name)) return undefined;
    const values = metadata.get(name);
    const texts: string[] = [];
    for (const value of values) {
      const text = typeof value === "string" ? value : value.toString("base64").replace(/=+$/, "");
      if (!PLAIN_VALUE.test(text)) return undefined;
      texts.push(text);
    }
    return texts;
  }

  #filled(): this {
    const metadata = this.#metadata;
    if (metadata !== undefined) {
      this.#metadata = undefined;
      fillHeaders(this, metadata);
    }
    return this;
  }

  override get(name: string): string | null {
    const values = this.#direct(name);
    if (values === undefined) return this.#filled() && super.get(name);
    return values.length === 0 ? null : values.join(", ");
  }

  override has(name: string): boolean {
    const values = this.#direct(name);
    return values === undefined ? this.#filled() && super.has(name) : values.length > 0;
  }

  override append(name: string, value: string): void {
    this.#filled();
    super.append(name, value);
  }

  override set(name: string, value: string): void {
    this.#filled();
    super.set(name, value);
  }

  override delete(name: string): void {
    this.#filled();
    super.delete(name);
  }

  override getSetCookie(): string[] {
    return this.#filled() && super.getSetCookie();
  }

  override forEach(callback: (value: string, key: string, parent: Headers) => void, thisArg?: unknown): void {
    this.#filled();
    super.forEach(callback, thisArg);
  }

  override keys(): HeadersIterator<string> {
    return this.#filled() && super.keys();
  }

  override values(): HeadersIterator<string> {
    return this.#filled() && super.values();
  }

  override entries(): HeadersIterator<[string, string]> {
    return this.#filled() && super.entries();
  }

  override [Symbol.iterator](): HeadersIterator<[string, string]> {
    return this.#filled() && super[Symbol.iterator]();
  }
}

/** Headers as gRPC metadata (undefined when there is nothing to send); base64 -bin values decoded. */
function headersToMetadata(headers: Headers, into?: grpc.Metadata): grpc.Metadata | undefined {
  let metadata = into;
  headers.forEach((value, key) => {
    if (RESERVED_RESPONSE_KEYS.has(key) || key.startsWith(":")) return;
    metadata ??= new grpc.Metadata();
    try {
      if (key.endsWith("-bin")) {
        for (const part of value.split(",")) metadata.add(key, Buffer.from(part.trim(), "base64"));
      } else {
        metadata.add(key, value);
      }
    } catch {
      // not representable as gRPC metadata (key characters, non-ASCII value): leave it out
    }
  });
  return metadata;
}

/** grpc-js percent-encodes the message with encodeURI, which throws on lone surrogates. */
function wellFormed(text: string): string {
  return text.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD");
}

type GrpcCall = grpc.ServerUnaryCall<unknown, unknown>;

/** Carries the call from the request the adapter built to the innermost function; spread copies keep it. */
const CALL = Symbol("grpc-js call");
type CallRequest = UnaryRequest & { [CALL]?: Call };

/** The abort reason once the call is over (Connect aborts the context signal at the end of every call). */
const CALL_ENDED = new ConnectError("the call has ended", Code.Canceled);

/** The request's signal: the call's, made when first read (a shared accessor: no closure per request). */
const SIGNAL_ACCESSOR: PropertyDescriptor = {
  get(this: CallRequest) {
    return this[CALL]!.signal;
  },
  enumerable: true,
  configurable: true,
};

type CallResponse = UnaryResponse & { [CALL]?: Call };

/** A response's header or trailer: the call's, made when first read (shared accessors: no closure per response). */
function responseAccessor(name: "header" | "trailer"): PropertyDescriptor {
  return {
    get(this: CallResponse) {
      const call = this[CALL]!;
      return name === "header" ? call.responseHeader : call.responseTrailer;
    },
    set(this: CallResponse, value: Headers) {
      replaceResponseField(this, name, value);
    },
    enumerable: true,
    configurable: true,
  };
}

const RESPONSE_ACCESSORS: PropertyDescriptorMap = { header: responseAccessor("header"), trailer: responseAccessor("trailer") };

/** An interceptor assigned res.header or res.trailer: a plain property from now on, and the call sends what the response holds. */
function replaceResponseField(response: CallResponse, name: "header" | "trailer", value: Headers): void {
  const call = response[CALL]!;
  void call.responseHeader;
  void call.responseTrailer;
  Object.defineProperty(response, name, { value, writable: true, enumerable: true, configurable: true });
}

/** Context values whose `key` holds the caller's address, read from the connection on first use. */
class CallValues implements ContextValues {
  readonly #values = createContextValues();
  #grpcCall: GrpcCall | undefined;

  constructor(
    grpcCall: GrpcCall,
    private readonly key: ContextKey<string | null>,
  ) {
    this.#grpcCall = grpcCall;
  }

  get<T>(key: ContextKey<T>): T {
    if (key.id === this.key.id) this.#resolve();
    return this.#values.get(key);
  }

  set<T>(key: ContextKey<T>, value: T): this {
    if (key.id === this.key.id) this.#grpcCall = undefined;
    this.#values.set(key, value);
    return this;
  }

  delete(key: ContextKey<unknown>): this {
    if (key.id === this.key.id) this.#grpcCall = undefined;
    this.#values.delete(key);
    return this;
  }

  #resolve(): void {
    const grpcCall = this.#grpcCall;
    if (grpcCall === undefined) return;
    this.#grpcCall = undefined;
    this.#values.set(this.key, peerAddress(grpcCall.getPeer()));
  }
}

/**
 * One call. It is also the implementation's HandlerContext when the
 * interceptors passed the request on unchanged (the usual case): one object per
 * call instead of several.
 */
class Call implements HandlerContext {
  readonly requestHeader: Headers;
  readonly values: ContextValues;
  /** Made on first use: most calls send neither. */
  #responseHeader: Headers | undefined;
  #responseTrailer: Headers | undefined;
  readonly url: string;
  readonly service: DescService;
  readonly requestMethod = "POST";
  readonly protocolName = "grpc";
  readonly request: CallRequest;
  /** Set when the status is about to be sent: a cancellation after that is the normal end of the call. */
  ended = false;
  /** Made when the signal is first read. */
  #controller: AbortController | undefined;

  constructor(
    readonly grpcCall: GrpcCall,
    readonly method: DescMethod,
    path: string,
    config: CallConfig,
    message: unknown,
  ) {
    this.service = method.parent;
    this.requestHeader = new MetadataHeaders(grpcCall.metadata);
    this.values = config.addressKey ? new CallValues(grpcCall, config.addressKey) : createContextValues();
    this.url = `http://${grpcCall.getHost()}${path}`;
    // A plain literal without per-object accessors, plus the signal as a shared accessor:
    // spread copies of the request read it.
    const request = {
      stream: false,
      message,
      method,
      service: this.service,
      requestMethod: "POST",
      url: this.url,
      header: this.requestHeader,
      contextValues: this.values,
      [CALL]: this,
    } as unknown as CallRequest;
    Object.defineProperty(request, "signal", SIGNAL_ACCESSOR);
    this.request = request;
  }

  get responseHeader(): Headers {
    return (this.#responseHeader ??= new Headers());
  }

  get responseTrailer(): Headers {
    return (this.#responseTrailer ??= new Headers());
  }

  /**
   * Aborts when the call is cancelled (by the client, its deadline or
   * shutdown). At the normal end only if something listens. Made on first
   * use: most handlers never read it.
   */
  get signal(): AbortSignal {
    if (this.#controller !== undefined) return this.#controller.signal;
    const controller = (this.#controller = new AbortController());
    const signal = controller.signal;
    // grpc-js emits "cancelled" at the end of every call, whatever its outcome.
    if (this.grpcCall.cancelled) this.onCancelled(controller);
    else (this.grpcCall as NodeJS.EventEmitter).once("cancelled", () => this.onCancelled(controller));
    return signal;
  }

  timeoutMs(): number | undefined {
    const deadline = this.grpcCall.getDeadline();
    const at = deadline instanceof Date ? deadline.getTime() : deadline;
    return Number.isFinite(at) ? at - Date.now() : undefined;
  }

  private onCancelled(controller: AbortController): void {
    const signal = controller.signal;
    if (signal.aborted) return;
    if (this.ended) {
      if (getEventListeners(signal, "abort").length > 0) controller.abort(CALL_ENDED);
      return;
    }
    const timeout = this.timeoutMs();
    controller.abort(
      timeout !== undefined && timeout <= 0
        ? new ConnectError("the operation timed out", Code.DeadlineExceeded)
        : new ConnectError("the call was cancelled", Code.Canceled),
    );
  }

  /** The implementation's context for the request that reached it: interceptors may have replaced header, values or signal. */
  contextFor(req: UnaryRequest): HandlerContext {
    return req === this.request ? this : contextOf(this, req);
  }

  response(message: UnaryResponse["message"]): UnaryResponse {
    // header and trailer as shared accessors (spread copies read them): made only if something asks.
    const response = { stream: false, message, method: this.method, service: this.service, [CALL]: this };
    Object.defineProperties(response, RESPONSE_ACCESSORS);
    return response as unknown as UnaryResponse;
  }

  sendHeader(header: Headers): void {
    const metadata = headersToMetadata(header);
    if (metadata) this.grpcCall.sendMetadata(metadata);
  }

  trailers(trailer: Headers): grpc.Metadata | undefined {
    return headersToMetadata(trailer);
  }

  /** The status for an error: a ConnectError as it is, anything else a bare INTERNAL. */
  status(error: unknown, trailer: Headers): grpc.StatusObject {
    let e = error instanceof ConnectError ? error : new ConnectError("internal error", Code.Internal);
    const details = wellFormed(e.rawMessage);
    // Lone surrogates make encodeURI (grpc-js) and encodeURIComponent (Connect) throw.
    if (details !== e.rawMessage) e = new ConnectError(details, e.code, e.metadata, e.details as ConstructorParameters<typeof ConnectError>[3]);
    // Connect's own trailer encoding: the error's metadata, and grpc-status-details-bin for details.
    const metadata = headersToMetadata(trailer) ?? new grpc.Metadata();
    headersToMetadata(setTrailerStatus(new Headers(), e), metadata);
    return { code: e.code as number as grpc.status, details, metadata };
  }

  /** Header, message, trailers. */
  succeed(res: UnaryResponse, callback: grpc.sendUnaryData<unknown>): void {
    try {
      this.ended = true;
      // The call's own response whose header and trailer nobody asked for: nothing to send.
      const own = (res as CallResponse)[CALL] === this;
      if (!own || this.#responseHeader !== undefined) this.sendHeader(res.header);
      callback(null, res.message, own && this.#responseTrailer === undefined ? undefined : this.trailers(res.trailer));
    } catch {
      callback(INTERNAL_STATUS()); // grpc-js ignores a second status
    }
  }

  fail(error: unknown, callback: grpc.sendUnaryData<unknown>): void {
    try {
      this.ended = true;
      if (this.#responseHeader !== undefined) this.sendHeader(this.#responseHeader);
      callback(this.status(error, this.responseTrailer));
    } catch {
      callback(INTERNAL_STATUS());
    }
  }
}

/** As Connect's mergeRequest: the call's context with what the interceptors changed. */
function contextOf(call: Call, req: UnaryRequest): HandlerContext {
  return {
    method: call.method,
    service: req.service,
    requestMethod: "POST",
    protocolName: "grpc",
    url: call.url,
    requestHeader: req.header,
    responseHeader: call.responseHeader,
    responseTrailer: call.responseTrailer,
    values: req.contextValues,
    signal: req.signal,
    timeoutMs() {
      return call.timeoutMs();
    },
  };
}

function callOf(req: UnaryRequest): Call {
  const call = (req as CallRequest)[CALL];
  if (call === undefined) {
    // An interceptor built a new request object instead of passing on the one it got, or a spread copy of it.
    throw new ConnectError("grpc-js adapter: the request lost its call; interceptors must pass on req or { ...req }", Code.Internal);
  }
  return call;
}

/**
 * Wraps the innermost function in the interceptors for one call and runs it.
 * Per call, as Connect does: an interceptor may keep per-call state in its
 * outer function. (A closure per interceptor; the innermost function is shared.)
 */
function run(anyFn: AnyFn, interceptors: Interceptor[], req: UnaryRequest): Promise<UnaryResponse> {
  try {
    // Connect's interceptors take both kinds of call (unary, and server streaming: serverStreamingHandler).
    let next = anyFn as Parameters<Interceptor>[0];
    for (const interceptor of interceptors) next = interceptor(next);
    return next(req) as Promise<UnaryResponse>;
  } catch (error) {
    return Promise.reject(error);
  }
}

const INTERNAL_STATUS = (): grpc.StatusObject => ({ code: grpc.status.INTERNAL, details: "internal error", metadata: new grpc.Metadata() });

const statusOf = (error: ConnectError): grpc.StatusObject => ({
  code: error.code as number as grpc.status,
  details: error.rawMessage,
  metadata: new grpc.Metadata(),
});

function unaryHandler(spec: MethodImplSpec & { kind: "unary" }, config: CallConfig): grpc.handleUnaryCall<unknown, unknown> {
  const { impl, method } = spec;
  const path = `/${method.parent.typeName}/${method.name}`;
  const output = method.output;
  // Not an async function: an implementation that answers at once costs no await.
  const invoke: AnyFn = (req) => {
    const call = callOf(req);
    const answer = impl(req.message as never, call.contextFor(req));
    return answer instanceof Promise
      ? answer.then((message) => call.response(create(output, message)))
      : Promise.resolve(call.response(create(output, answer)));
  };
  return (grpcCall, callback) => {
    if (grpcCall.request instanceof UndecodableRequest) return callback(statusOf(grpcCall.request.error()));
    let call: Call;
    try {
      call = new Call(grpcCall, method, path, config, grpcCall.request);
    } catch (error) {
      config.logger?.error({ err: error, method: path }, "cannot build the call's context; answered INTERNAL");
      return callback(INTERNAL_STATUS());
    }
    run(invoke, config.interceptors, call.request).then(
      (res) => call.succeed(res, callback),
      (error: unknown) => call.fail(error, callback),
    );
  };
}

// ---------------------------------------------------------------------------
// Server streaming (WatchResolutions): the same Call and interceptors, with a stream request
// holding the one message, and the response's messages written as the implementation yields them.

type StreamCall = grpc.ServerWritableStream<unknown, unknown>;

async function* single(message: unknown): AsyncIterable<unknown> {
  yield message;
}

async function* created(output: DescMessage, messages: AsyncIterable<unknown>): AsyncIterable<unknown> {
  for await (const message of messages) yield create(output, message as never);
}

/** Until the stream can take more (drain), or the call is over. */
function writable(stream: StreamCall): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("cancelled", done);
      stream.off("close", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("cancelled", done);
    stream.on("close", done);
  });
}

function endWithStatus(stream: StreamCall, status: grpc.StatusObject): void {
  if (stream.cancelled || stream.destroyed || stream.writableEnded) return;
  // ServerWritableStreamImpl turns an "error" into the call's status, then ends.
  stream.emit("error", Object.assign(new Error(status.details), status));
}

function serverStreamingHandler(spec: MethodImplSpec & { kind: "server_streaming" }, config: CallConfig): grpc.handleServerStreamingCall<unknown, unknown> {
  const { impl, method } = spec;
  const path = `/${method.parent.typeName}/${method.name}`;
  const output = method.output;
  const invoke = async (req: StreamRequest): Promise<StreamResponse> => {
    const call = callOf(req as unknown as UnaryRequest);
    let input: unknown;
    for await (const message of req.message) {
      input = message;
      break;
    }
    const messages = impl(input as never, call.contextFor(req as unknown as UnaryRequest));
    const response = { stream: true, message: created(output, messages), method, service: method.parent, [CALL]: call };
    Object.defineProperties(response, RESPONSE_ACCESSORS);
    return response as unknown as StreamResponse;
  };
  return (grpcCall) => {
    if (grpcCall.request instanceof UndecodableRequest) return endWithStatus(grpcCall, statusOf(grpcCall.request.error()));
    let call: Call;
    try {
      call = new Call(grpcCall as unknown as GrpcCall, method, path, config, grpcCall.request);
    } catch (error) {
      config.logger?.error({ err: error, method: path }, "cannot build the call's context; answered INTERNAL");
      return endWithStatus(grpcCall, INTERNAL_STATUS());
    }
    const request = call.request as unknown as { stream: boolean; message: unknown };
    request.stream = true;
    request.message = single(grpcCall.request);
    const fail = (error: unknown) => {
      call.ended = true;
      try {
        if (!grpcCall.cancelled && !grpcCall.destroyed) endWithStatus(grpcCall, call.status(error, call.responseTrailer));
      } catch {
        endWithStatus(grpcCall, INTERNAL_STATUS());
      }
    };
    run(invoke as unknown as AnyFn, config.interceptors, call.request).then(async (res) => {
      const response = res as unknown as StreamResponse;
      try {
        call.sendHeader(response.header);
        for await (const message of response.message) {
          if (grpcCall.cancelled || grpcCall.destroyed) break;
          if (!grpcCall.write(message)) await writable(grpcCall);
        }
        call.ended = true;
        if (grpcCall.cancelled || grpcCall.destroyed) return;
        grpcCall.end(call.trailers(response.trailer));
      } catch (error) {
        fail(error);
      }
    }, fail);
  };
}
